#include "server/session_manager.h"

#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace cairn::server {

std::string NewSessionId() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof(b)) != 1) throw std::runtime_error("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

bool SessionManager::TakeSlotLocked(std::map<std::string, int>* counts,
                                    const std::string& auth_id, int limit) {
  int& n = (*counts)[auth_id];
  if (n >= std::max(limit, 1)) {
    if (n == 0) counts->erase(auth_id);
    return false;
  }
  ++n;
  return true;
}

void SessionManager::ReleaseSlotLocked(std::map<std::string, int>* counts,
                                       const std::string& auth_id) {
  auto it = counts->find(auth_id);
  if (it == counts->end()) return;
  if (--it->second <= 0) counts->erase(it);
}

Result<StartBackupResult> SessionManager::StartBackup(const std::string& store_name,
                                                      storage::Datastore* store,
                                                      const storage::GroupRef& group,
                                                      std::optional<int64_t> time,
                                                      const std::string& auth_id, int64_t now,
                                                      std::optional<std::string> fingerprint) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  const std::string key = store_name + "|" + group.ToString();
  const std::string id = NewSessionId();
  {
    MutexLock lock(&mu_);
    if (busy_groups_.contains(key)) {
      return Status::Conflict("a backup of " + group.ToString() + " is already running");
    }
    if (!TakeSlotLocked(&backups_per_token_, auth_id, limits_.backups_per_token)) {
      return Status::TooManyRequests(
          auth_id + " has " + std::to_string(limits_.backups_per_token) +
          " backup sessions running already (the per-token limit); finish or abort one first");
    }
    busy_groups_[key] = id;  // reserved; released below on any failure
  }
  auto release = [&] {
    MutexLock lock(&mu_);
    busy_groups_.erase(key);
    ReleaseSlotLocked(&backups_per_token_, auth_id);
  };

  StartBackupResult out;
  std::optional<SnapshotRef> previous;
  auto snaps = store->ListSnapshots(group);
  if (!snaps.ok() && !snaps.status().IsNotFound()) {
    release();
    return snaps.status();
  }
  int64_t t = time.value_or(now);
  if (snaps.ok() && !snaps->empty()) {
    const SnapshotRef& last = snaps->back();
    if (!time && t <= last.time && last.time - t <= 1) {
      // A backup in the same second as the last one (two runs back to
      // back): it waits for the next second rather than failing. The group
      // stays reserved meanwhile. An explicit time is never moved.
      std::this_thread::sleep_until(std::chrono::system_clock::time_point(
          std::chrono::seconds(last.time + 1)));
      t = last.time + 1;
    }
    if (t <= last.time) {
      release();
      return Status::Conflict("backup time " + storage::FormatSnapshotTime(t) +
                              " is not later than the group's last snapshot " +
                              storage::FormatSnapshotTime(last.time));
    }
    // The base is pinned before it is read: from here on no delete can take
    // it (one being deleted is simply not offered).
    bool pinned;
    {
      MutexLock lock(&mu_);
      pinned = PinLocked(store_name, last);
    }
    if (pinned) {
      if (pinned_hook_) pinned_hook_(last);
      auto m = store->ReadManifest(last);
      // A base that failed verification (or cannot be read, or was deleted
      // before the pin) is not offered: the client then sends every chunk,
      // which heals the store.
      if (m.ok() && !(m->verify && m->verify->state == "failed")) {
        previous = last;
        out.previous_manifest = std::move(*m);
      } else {
        Unpin(store_name, last);
      }
    }
  }
  SnapshotRef ref{group, t};
  auto staged = store->Stage(ref);
  if (!staged.ok()) {
    if (previous) Unpin(store_name, *previous);
    release();
    return staged.status();
  }
  std::optional<std::string> previous_fingerprint;
  if (out.previous_manifest && out.previous_manifest->crypt) {
    previous_fingerprint = out.previous_manifest->crypt->fingerprint;
  }
  out.session = std::make_shared<BackupSession>(id, store_name, store, ref, previous,
                                                std::move(*staged), now, std::move(fingerprint),
                                                std::move(previous_fingerprint));
  MutexLock lock(&mu_);
  backups_[id] = BackupEntry{store_name, key, auth_id, out.session};
  return out;
}

Result<std::shared_ptr<BackupSession>> SessionManager::GetBackup(const std::string& id,
                                                                 const std::string& auth_id,
                                                                 int64_t now) {
  MutexLock lock(&mu_);
  auto it = backups_.find(id);
  if (it == backups_.end() || it->second.auth_id != auth_id) {
    return Status::NotFound("no backup session " + id);
  }
  it->second.session->Touch(now);
  return it->second.session;
}

void SessionManager::EndBackup(const std::string& id) {
  std::shared_ptr<BackupSession> s;
  {
    MutexLock lock(&mu_);
    auto it = backups_.find(id);
    if (it == backups_.end()) return;
    s = it->second.session;
    busy_groups_.erase(it->second.group_key);
    ReleaseSlotLocked(&backups_per_token_, it->second.auth_id);
    if (s->previous()) UnpinLocked(it->second.store, *s->previous());
    backups_.erase(it);
  }
  s->Abort();  // no-op after a successful Finish
}

Result<std::shared_ptr<ReaderSession>> SessionManager::StartReader(const std::string& store_name,
                                                                   storage::Datastore* store,
                                                                   const SnapshotRef& ref,
                                                                   const std::string& auth_id,
                                                                   int64_t now) {
  CAIRN_RETURN_IF_ERROR(ref.Validate());
  {
    MutexLock lock(&mu_);
    if (!TakeSlotLocked(&readers_per_token_, auth_id, limits_.readers_per_token)) {
      return Status::TooManyRequests(
          auth_id + " has " + std::to_string(limits_.readers_per_token) +
          " reader sessions open already (the per-token limit); close one first");
    }
    // Pinned before it is opened, so no delete can take it from under us.
    if (!PinLocked(store_name, ref)) {
      ReleaseSlotLocked(&readers_per_token_, auth_id);
      return Status::NotFound("snapshot " + ref.ToString() + " is being deleted");
    }
  }
  if (pinned_hook_) pinned_hook_(ref);
  std::string id = NewSessionId();
  auto r = ReaderSession::Open(id, store, ref, now);
  MutexLock lock(&mu_);
  if (!r.ok()) {
    ReleaseSlotLocked(&readers_per_token_, auth_id);
    UnpinLocked(store_name, ref);
    return r.status();
  }
  std::shared_ptr<ReaderSession> shared(std::move(r).value());
  readers_[id] = ReaderEntry{store_name, auth_id, shared};
  return shared;
}

Result<std::shared_ptr<ReaderSession>> SessionManager::GetReader(const std::string& id,
                                                                 const std::string& auth_id,
                                                                 int64_t now) {
  MutexLock lock(&mu_);
  auto it = readers_.find(id);
  if (it == readers_.end() || it->second.auth_id != auth_id) {
    return Status::NotFound("no reader session " + id);
  }
  it->second.session->Touch(now);
  return it->second.session;
}

void SessionManager::EndReader(const std::string& id) {
  MutexLock lock(&mu_);
  auto it = readers_.find(id);
  if (it == readers_.end()) return;
  ReleaseSlotLocked(&readers_per_token_, it->second.auth_id);
  UnpinLocked(it->second.store, it->second.session->ref());
  readers_.erase(it);
}

namespace {
std::string PinKey(const std::string& store_name, const SnapshotRef& ref) {
  return store_name + "|" + ref.ToString();
}
}  // namespace

bool SessionManager::PinLocked(const std::string& store_name, const SnapshotRef& ref) {
  const std::string key = PinKey(store_name, ref);
  if (deleting_.contains(key)) return false;
  ++pins_[key];
  return true;
}

void SessionManager::UnpinLocked(const std::string& store_name, const SnapshotRef& ref) {
  auto it = pins_.find(PinKey(store_name, ref));
  if (it != pins_.end() && --it->second <= 0) pins_.erase(it);
}

void SessionManager::Unpin(const std::string& store_name, const SnapshotRef& ref) {
  MutexLock lock(&mu_);
  UnpinLocked(store_name, ref);
}

bool SessionManager::IsInUse(const std::string& store_name, const SnapshotRef& ref) {
  MutexLock lock(&mu_);
  return pins_.contains(PinKey(store_name, ref));
}

Status SessionManager::BeginDelete(const std::string& store_name, const SnapshotRef& ref) {
  const std::string key = PinKey(store_name, ref);
  MutexLock lock(&mu_);
  if (pins_.contains(key)) {
    return Status::Conflict("snapshot " + ref.ToString() + " is in use by a running session");
  }
  if (!deleting_.insert(key).second) {
    return Status::Conflict("snapshot " + ref.ToString() + " is being deleted already");
  }
  return Status::OK();
}

void SessionManager::EndDelete(const std::string& store_name, const SnapshotRef& ref) {
  MutexLock lock(&mu_);
  deleting_.erase(PinKey(store_name, ref));
}

std::vector<Digest> SessionManager::KnownDigests(const std::string& store_name,
                                                 int64_t* oldest_start) {
  std::vector<std::shared_ptr<BackupSession>> sessions;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, e] : backups_) {
      if (e.store == store_name) sessions.push_back(e.session);
    }
  }
  std::vector<Digest> out;
  for (const auto& s : sessions) {
    if (oldest_start && (*oldest_start == 0 || s->start_time() < *oldest_start)) {
      *oldest_start = s->start_time();
    }
    auto d = s->KnownDigests();
    out.insert(out.end(), d.begin(), d.end());
  }
  return out;
}

size_t SessionManager::ReapIdle(int64_t now) {
  std::vector<std::string> idle_backups;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, e] : backups_) {
      if (now - e.session->last_active() > idle_timeout_) idle_backups.push_back(id);
    }
    for (auto it = readers_.begin(); it != readers_.end();) {
      if (now - it->second.session->last_active() > idle_timeout_) {
        ReleaseSlotLocked(&readers_per_token_, it->second.auth_id);
        UnpinLocked(it->second.store, it->second.session->ref());
        it = readers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& id : idle_backups) EndBackup(id);
  return idle_backups.size();
}

void SessionManager::Shutdown() {
  std::vector<std::string> ids;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, e] : backups_) ids.push_back(id);
    for (const auto& [id, e] : readers_) UnpinLocked(e.store, e.session->ref());
    readers_.clear();
    readers_per_token_.clear();
  }
  for (const auto& id : ids) EndBackup(id);
}

size_t SessionManager::backup_count() {
  MutexLock lock(&mu_);
  return backups_.size();
}

size_t SessionManager::reader_count() {
  MutexLock lock(&mu_);
  return readers_.size();
}

}  // namespace cairn::server
