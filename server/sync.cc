#include "server/sync.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <unordered_set>

#include "client/repository_client.h"
#include "server/backup_session.h"
#include "server/reader_session.h"
#include "server/session_manager.h"
#include "server/sync_remote.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"
#include "storage/mutex.h"

namespace cairn::server {
namespace {

using nlohmann::json;
using storage::GroupRef;
using Clock = std::chrono::steady_clock;

constexpr auto kProgressInterval = std::chrono::seconds(5);
constexpr double kMaxRateLimitMbps = 100000;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

double MiB(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

double Mbps(uint64_t bytes, int64_t ms) {
  return ms > 0 ? static_cast<double>(bytes) / 1e6 / (static_cast<double>(ms) / 1000.0) : 0.0;
}

bool Cancelled(const std::atomic<bool>* cancel) { return cancel != nullptr && cancel->load(); }

Status CancelledStatus() { return Status::Busy("cancelled: the server is stopping"); }

// An error that ends the whole run rather than one group: the remote cannot
// be reached or refuses the token, or the run is cancelled. (A 5xx answer
// is the remote's trouble with one request: "server answered 500: …".)
bool IsFatal(const Status& s) {
  return (s.IsIOError() && !s.message().starts_with("server answered")) ||
         s.code() == Status::Code::kUnauthenticated || s.code() == Status::Code::kBusy;
}

// Paces the chunk bytes of a run to a rate: each caller reserves its bytes'
// share of time and sleeps until its slot starts. Shared by the workers.
class RateLimiter {
 public:
  explicit RateLimiter(double bytes_per_second) : rate_(bytes_per_second) {}

  void Take(uint64_t bytes, const std::atomic<bool>* cancel) {
    if (rate_ <= 0) return;
    Clock::time_point start;
    {
      MutexLock lock(&mu_);
      const auto now = Clock::now();
      if (next_ < now) next_ = now;
      start = next_;
      next_ += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(static_cast<double>(bytes) / rate_));
    }
    while (Clock::now() < start && !Cancelled(cancel)) {
      std::this_thread::sleep_for(
          std::min<Clock::duration>(start - Clock::now(), std::chrono::milliseconds(200)));
    }
  }

 private:
  const double rate_;
  Mutex mu_;
  Clock::time_point next_ CAIRN_GUARDED_BY(mu_){};
};

// Chunks moved for one snapshot; logs a progress line every few seconds.
class Progress {
 public:
  Progress(Task* task, std::string what, size_t total)
      : task_(task), what_(std::move(what)), total_(total), start_(Clock::now()),
        last_log_(start_) {}

  void Moved(uint64_t blob_bytes, uint64_t data_bytes) {
    chunks_.fetch_add(1);
    blob_bytes_.fetch_add(blob_bytes);
    data_bytes_.fetch_add(data_bytes);
    MaybeLog();
  }
  void Local() {
    local_.fetch_add(1);
    MaybeLog();
  }
  uint64_t chunks() const { return chunks_.load(); }
  uint64_t local() const { return local_.load(); }
  uint64_t blob_bytes() const { return blob_bytes_.load(); }
  uint64_t data_bytes() const { return data_bytes_.load(); }
  int64_t ms() const { return MsSince(start_); }

 private:
  void MaybeLog() {
    if (task_ == nullptr) return;
    {
      MutexLock lock(&mu_);
      if (Clock::now() - last_log_ < kProgressInterval) return;
      last_log_ = Clock::now();
    }
    task_->Log(fmt::format("  {}: {}/{} chunks ({} moved, {} local), {:.1f} MiB, {:.1f} MB/s",
                           what_, chunks() + local(), total_, chunks(), local(), MiB(data_bytes()),
                           Mbps(data_bytes(), ms())));
  }

  Task* const task_;
  const std::string what_;
  const size_t total_;
  const Clock::time_point start_;
  std::atomic<uint64_t> chunks_{0}, local_{0}, blob_bytes_{0}, data_bytes_{0};
  Mutex mu_;
  Clock::time_point last_log_ CAIRN_GUARDED_BY(mu_);
};

// The first error of several workers.
class FirstError {
 public:
  void Set(Status s) {
    MutexLock lock(&mu_);
    if (first_.ok()) first_ = std::move(s);
    failed_.store(true);
  }
  bool failed() const { return failed_.load(); }
  Status Get() {
    MutexLock lock(&mu_);
    return first_;
  }

 private:
  std::atomic<bool> failed_{false};
  Mutex mu_;
  Status first_ CAIRN_GUARDED_BY(mu_);
};

// Runs fn(worker, i) for every i < n on `workers` threads (worker in
// [0, workers)); stops at the first error or a cancel and returns it.
Status ParallelFor(size_t n, int workers, const std::atomic<bool>* cancel,
                   const std::function<Status(int, size_t)>& fn) {
  std::atomic<size_t> next{0};
  FirstError error;
  auto work = [&](int w) {
    while (!error.failed()) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      if (Cancelled(cancel)) return error.Set(CancelledStatus());
      if (Status s = fn(w, i); !s.ok()) return error.Set(std::move(s));
    }
  };
  const int count = static_cast<int>(std::min<size_t>(std::max(workers, 1), std::max<size_t>(n, 1)));
  std::vector<std::thread> threads;
  for (int w = 1; w < count; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  return error.Get();
}

// One archive of a snapshot: its bytes, and its index when it is one.
struct Archive {
  storage::ArchiveInfo info;
  std::string bytes;
  std::optional<storage::FixedIndex> index;
};

// A chunk to move: a digest and its plaintext length.
struct ChunkItem {
  storage::Digest digest;
  uint64_t size = 0;
};

bool IsIndex(const std::string& name) { return name.ends_with(".fidx"); }

// Checks each archive against the manifest that lists it: an index must
// parse, match the manifest's checksum (over its digest list) and image
// size; a blob must match its SHA-256 and size.
Status CheckArchive(const std::string& snapshot, Archive* a) {
  const std::string what = snapshot + " archive " + a->info.name;
  if (IsIndex(a->info.name)) {
    auto index = storage::FixedIndex::Parse(a->bytes);
    if (!index.ok()) return Status::Corruption(what + ": " + index.status().message());
    if (index->checksum() != a->info.csum || index->image_size() != a->info.size) {
      return Status::Corruption(what + " does not match the checksum or size in its manifest");
    }
    a->index = std::move(*index);
    return Status::OK();
  }
  if (storage::Sha256(a->bytes) != a->info.csum || a->bytes.size() != a->info.size) {
    return Status::Corruption(what + " does not match the checksum or size in its manifest");
  }
  return Status::OK();
}

// The distinct chunks of `archives`' indexes that are not in `known`, in
// index order.
std::vector<ChunkItem> MissingChunks(
    const std::vector<Archive>& archives,
    const std::unordered_set<storage::Digest, storage::DigestHash>& known, uint64_t* distinct) {
  std::unordered_set<storage::Digest, storage::DigestHash> seen;
  std::vector<ChunkItem> out;
  for (const auto& a : archives) {
    if (!a.index) continue;
    for (uint64_t i = 0; i < a.index->chunk_count(); ++i) {
      const storage::Digest d = a.index->digest(i);
      if (!seen.insert(d).second) continue;
      if (!known.contains(d)) out.push_back({d, a.index->ChunkLength(i)});
    }
  }
  *distinct = seen.size();
  return out;
}

// A manifest for the target: the source's protected part, a fresh
// unprotected part but for the notes.
storage::Manifest TargetManifest(const storage::Manifest& source) {
  storage::Manifest m = source;
  m.verify.reset();
  m.is_protected = false;
  return m;
}

void Log(Task* task, const std::string& line) {
  if (task != nullptr) task->Log(line);
}

void Warn(Task* task, const std::string& line) {
  if (task != nullptr) task->Warn(line);
}

Result<double> RateLimitFromJson(const json& v) {
  if (!v.is_number() || v.get<double>() <= 0 || v.get<double>() > kMaxRateLimitMbps) {
    return Status::InvalidArgument("rate-limit must be a number of MB/s above 0, at most 100000");
  }
  return v.get<double>();
}

// "USER" or "USER!TOKEN" with valid names.
Status CheckOwner(const std::string& owner) {
  const size_t bang = owner.find('!');
  const bool ok = bang == std::string::npos
                      ? storage::ValidateName(storage::NameKind::kStore, owner).ok()
                      : storage::ValidateName(storage::NameKind::kStore, owner.substr(0, bang)).ok() &&
                            storage::ValidateName(storage::NameKind::kStore, owner.substr(bang + 1)).ok();
  return ok ? Status::OK() : Status::InvalidArgument("owner must be USER or USER!TOKEN");
}

// Runs `group` for each group in turn, as pull and push both do: a failed
// group is logged and reported and the run goes on, unless the failure ends
// the whole run (IsFatal) or the server is stopping.
template <typename Fn>
void ForEachGroup(const std::vector<GroupRef>& groups, const std::atomic<bool>* cancel,
                  Task* task, SyncReport* report, Fn group) {
  for (const auto& g : groups) {
    if (Cancelled(cancel)) {
      report->errors.push_back(CancelledStatus().ToString());
      report->aborted = true;
      return;
    }
    ++report->groups;
    Status s = group(g);
    if (s.ok()) continue;
    Warn(task, "group " + g.ToString() + ": " + s.ToString());
    report->errors.push_back(g.ToString() + ": " + s.ToString());
    if (IsFatal(s)) {
      report->aborted = true;
      return;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Options and report

Result<SyncOptions> SyncOptions::FromJson(const std::string& kind, const json& j) {
  if (!IsSyncJobKind(kind)) return Status::InvalidArgument("not a sync job kind: " + kind);
  if (!j.is_object()) return Status::InvalidArgument("job options must be an object");
  SyncOptions o;
  for (const auto& [key, value] : j.items()) {
    if (key == "remote" || key == "remote-store") {
      if (!value.is_string()) return Status::InvalidArgument(key + " must be a string");
      (key == "remote" ? o.remote : o.remote_store) = value.get<std::string>();
    } else if (key == "groups") {
      if (!value.is_array()) return Status::InvalidArgument("groups must be a list of groups");
      for (const auto& g : value) {
        if (!g.is_string()) return Status::InvalidArgument("groups must be a list of groups");
        CAIRN_ASSIGN_OR_RETURN(GroupRef ref, GroupRef::Parse(g.get<std::string>()));
        o.groups.push_back(std::move(ref));
      }
    } else if (key == "remove-vanished") {
      if (!value.is_boolean()) return Status::InvalidArgument("remove-vanished must be true or false");
      o.remove_vanished = value.get<bool>();
    } else if (key == "rate-limit") {
      CAIRN_ASSIGN_OR_RETURN(o.rate_limit_mbps, RateLimitFromJson(value));
    } else if (key == "owner" && kind == "sync") {
      if (!value.is_string()) return Status::InvalidArgument("owner must be a string");
      o.owner = value.get<std::string>();
      CAIRN_RETURN_IF_ERROR(CheckOwner(o.owner));
    } else {
      return Status::InvalidArgument("a " + kind + " job takes no option \"" + key + "\"");
    }
  }
  if (o.remote.empty()) return Status::InvalidArgument("a " + kind + " job needs a remote");
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, o.remote).WithContext("remote"));
  if (o.remote_store.empty()) return Status::InvalidArgument("a " + kind + " job needs a remote-store");
  CAIRN_RETURN_IF_ERROR(
      storage::ValidateName(storage::NameKind::kStore, o.remote_store).WithContext("remote-store"));
  std::sort(o.groups.begin(), o.groups.end());
  o.groups.erase(std::unique(o.groups.begin(), o.groups.end()), o.groups.end());
  return o;
}

json SyncOptions::ToJson(const std::string& kind) const {
  json j = {{"remote", remote}, {"remote-store", remote_store}};
  if (!groups.empty()) {
    json g = json::array();
    for (const auto& ref : groups) g.push_back(ref.ToString());
    j["groups"] = g;
  }
  if (remove_vanished) j["remove-vanished"] = true;
  if (rate_limit_mbps > 0) j["rate-limit"] = rate_limit_mbps;
  if (kind == "sync") j["owner"] = owner;
  return j;
}

double SyncReport::MegabytesPerSecond() const { return Mbps(data_bytes, transfer_ms); }

json SyncReport::ToJson() const {
  json snaps = json::array();
  for (const auto& s : snapshots) {
    json o = {{"snapshot", s.snapshot}, {"action", s.action}};
    if (!s.reason.empty()) o["reason"] = s.reason;
    snaps.push_back(std::move(o));
  }
  return {{"direction", direction},
          {"remote", remote},
          {"remote-store", remote_store},
          {"store", store},
          {"groups", groups},
          {"snapshots-copied", snapshots_copied},
          {"snapshots-present", snapshots_present},
          {"snapshots-skipped", snapshots_skipped},
          {"snapshots-failed", snapshots_failed},
          {"snapshots-removed", snapshots_removed},
          {"snapshots-kept", snapshots_kept},
          {"chunks-fetched", chunks_fetched},
          {"chunks-local", chunks_local},
          {"chunks-known", chunks_known},
          {"bytes-fetched", bytes_fetched},
          {"data-bytes", data_bytes},
          {"duration-ms", duration_ms},
          {"transfer-ms", transfer_ms},
          {"mb-per-s", MegabytesPerSecond()},
          {"snapshots", snaps},
          {"errors", errors},
          {"aborted", aborted}};
}

std::string SyncReport::Summary() const {
  return fmt::format("{} copied, {} skipped, {} removed{}; {} chunks {} ({:.1f} MiB, {:.1f} MB/s)",
                     snapshots_copied, snapshots_skipped, snapshots_removed,
                     snapshots_failed ? fmt::format(", {} failed", snapshots_failed) : "",
                     chunks_fetched, direction == "pull" ? "fetched" : "sent", MiB(data_bytes),
                     MegabytesPerSecond());
}

// ---------------------------------------------------------------------------
// Pull

namespace {

// What a pull and a push both hold: the remote's connections (one for
// control, `connections` for chunks), the rate limit and the report.
class SyncRun {
 protected:
  SyncRun(const MaintenanceContext& ctx, SessionManager* sessions, const Remote& remote,
          const SyncOptions& options, std::string auth_id, const char* direction, Task* task)
      : ctx_(ctx), sessions_(sessions), repo_(remote.RepositoryFor(options.remote_store)),
        options_(options), auth_id_(std::move(auth_id)), task_(task), rc_(repo_), api_(repo_),
        limiter_(options.rate_limit_mbps * 1e6) {
    for (int i = 0; i < std::max(options.connections, 1); ++i) {
      workers_.push_back(std::make_unique<client::ApiClient>(repo_));
    }
    report_.direction = direction;
    report_.remote = remote.name;
    report_.remote_store = options.remote_store;
    report_.store = ctx.store_name;
  }

  const MaintenanceContext& ctx_;
  SessionManager* const sessions_;
  const client::Repository repo_;
  const SyncOptions& options_;
  const std::string auth_id_;
  Task* const task_;
  client::RepositoryClient rc_;
  client::ApiClient api_;
  std::vector<std::unique_ptr<client::ApiClient>> workers_;
  RateLimiter limiter_;
  SyncReport report_;
};

class Puller : private SyncRun {
 public:
  Puller(const MaintenanceContext& ctx, SessionManager* sessions, const Remote& remote,
         const SyncOptions& options, const std::string& job_id, Task* task)
      : SyncRun(ctx, sessions, remote, options, "sync-job:" + job_id, "pull", task) {}

  Result<SyncReport> Run() {
    const auto start = Clock::now();
    std::vector<GroupRef> groups = options_.groups;
    if (groups.empty()) {
      CAIRN_ASSIGN_OR_RETURN(auto listed, rc_.ListGroups());
      for (const auto& g : listed.value) {
        CAIRN_ASSIGN_OR_RETURN(GroupRef ref, GroupRef::Parse(g.group));
        groups.push_back(std::move(ref));
      }
    }
    Log(task_, fmt::format("pull from {}/{} ({}) into {}: {} group(s){}", repo_.host, repo_.store,
                           report_.remote, ctx_.store_name, groups.size(),
                           options_.rate_limit_mbps > 0
                               ? fmt::format(", at most {} MB/s", options_.rate_limit_mbps)
                               : ""));
    ForEachGroup(groups, ctx_.cancel, task_, &report_,
                 [this](const GroupRef& g) { return Group(g); });
    report_.duration_ms = MsSince(start);
    return report_;
  }

 private:
  // The local owner check: the group belongs to the job's owner (made so
  // when the group is new).
  Status CheckOwnerOf(const GroupRef& g) {
    auto owner = ctx_.store->GetOwner(g);
    if (!owner.ok() && owner.status().IsNotFound()) {
      owner = ctx_.store->SetOwnerIfAbsent(g, options_.owner);
    }
    if (!owner.ok()) return owner.status();
    if (*owner != options_.owner) {
      return Status::PermissionDenied("group " + g.ToString() + " belongs to " + *owner +
                                      " here, not to the job's owner " + options_.owner +
                                      ": not synced");
    }
    return Status::OK();
  }

  Status Group(const GroupRef& g) {
    std::vector<client::SnapshotInfo> remote;
    auto listed = rc_.ListSnapshots(g.ToString());
    if (listed.ok()) {
      remote = std::move(listed->value);
    } else if (!listed.status().IsNotFound()) {
      return listed.status();
    }
    std::sort(remote.begin(), remote.end(),
              [](const auto& a, const auto& b) { return a.time < b.time; });
    std::vector<SnapshotRef> local;
    if (auto l = ctx_.store->ListSnapshots(g); l.ok()) {
      local = std::move(*l);
    } else if (!l.status().IsNotFound()) {
      return l.status();
    }
    if (remote.empty() && local.empty()) return Status::OK();
    CAIRN_RETURN_IF_ERROR(CheckOwnerOf(g));
    // The resume rule: only snapshots newer than the newest one here.
    const int64_t newest = local.empty() ? INT64_MIN : local.back().time;
    std::set<int64_t> remote_times;
    for (const auto& info : remote) {
      auto ref = SnapshotRef::Parse(info.snapshot);
      if (!ref.ok() || ref->group != g) return Status::Corruption("server answer: snapshot " + info.snapshot + " is not of group " + g.ToString());
      remote_times.insert(ref->time);
      if (ref->time <= newest) {
        ++report_.snapshots_present;
        continue;
      }
      if (!info.error.empty() || (info.verify && info.verify->state == "failed")) {
        const std::string why = info.error.empty() ? "failed verification on the remote"
                                                   : "unreadable on the remote: " + info.error;
        Log(task_, "skip " + info.snapshot + ": " + why);
        ++report_.snapshots_skipped;
        report_.snapshots.push_back({info.snapshot, "skipped", why});
        continue;
      }
      if (Cancelled(ctx_.cancel)) return CancelledStatus();
      Status s = Snapshot(*ref);
      if (!s.ok()) {
        if (IsFatal(s)) return s;
        ++report_.snapshots_failed;
        report_.snapshots.push_back({info.snapshot, "failed", s.ToString()});
        Warn(task_, "snapshot " + info.snapshot + " not copied: " + s.ToString());
        // Later snapshots of the group would break the prefix rule.
        return Status::OK();
      }
    }
    if (options_.remove_vanished) RemoveVanished(g, local, remote_times);
    return Status::OK();
  }

  void RemoveVanished(const GroupRef& g, const std::vector<SnapshotRef>& local,
                      const std::set<int64_t>& remote_times) {
    for (const auto& ref : local) {
      if (remote_times.contains(ref.time)) continue;
      auto m = ctx_.store->ReadManifest(ref);
      Status s = m.ok() && m->is_protected
                     ? Status::Conflict("protected")
                     : DeleteSnapshotIfUnused(*ctx_.store, ctx_.store_name, sessions_, ref);
      if (s.ok()) {
        ++report_.snapshots_removed;
        report_.snapshots.push_back({ref.ToString(), "removed", "vanished from the remote"});
        Log(task_, "removed " + ref.ToString() + " (vanished from the remote)");
      } else {
        ++report_.snapshots_kept;
        const std::string why = m.ok() && m->is_protected ? "protected" : s.ToString();
        report_.snapshots.push_back({ref.ToString(), "kept", why});
        Log(task_, "kept " + ref.ToString() + " (vanished from the remote): " + why);
      }
    }
    (void)g;
  }

  // Reads and checks the source snapshot: manifest and archives.
  Status ReadSource(RemoteReader& reader, const SnapshotRef& ref, storage::Manifest* manifest,
                    std::vector<Archive>* archives) {
    CAIRN_ASSIGN_OR_RETURN(std::string text, reader.Manifest());
    auto parsed = storage::Manifest::Parse(text);
    if (!parsed.ok()) return parsed.status().WithContext("manifest of " + ref.ToString());
    if (parsed->backup_type != ref.group.type || parsed->backup_id != ref.group.id ||
        parsed->backup_time != ref.time) {
      return Status::Corruption("the remote's manifest of " + ref.ToString() +
                                " names another snapshot");
    }
    *manifest = std::move(*parsed);
    for (const auto& info : manifest->archives) {
      Archive a;
      a.info = info;
      CAIRN_ASSIGN_OR_RETURN(a.bytes, reader.Archive(info.name));
      CAIRN_RETURN_IF_ERROR(CheckArchive(ref.ToString(), &a));
      archives->push_back(std::move(a));
    }
    return Status::OK();
  }

  // Moves the chunks the local session does not know: from the local
  // store when it has them (a killed run's downloads), else from the remote.
  Status MoveChunks(BackupSession& session, RemoteReader& reader, const SnapshotRef& ref,
                    const std::vector<ChunkItem>& todo) {
    Progress progress(task_, ref.ToString(), todo.size());
    storage::ChunkStore* chunks = ctx_.store->chunk_store();
    Status s = ParallelFor(todo.size(), static_cast<int>(workers_.size()), ctx_.cancel,
                           [&](int w, size_t i) -> Status {
      const ChunkItem& c = todo[i];
      session.Touch(Now());
      if (auto have = chunks->Exists(c.digest); have.ok() && *have) {
        auto blob = chunks->ReadBlob(c.digest);
        if (blob.ok() && session.UploadChunk(c.digest, c.size, *blob).ok()) {
          progress.Local();
          return Status::OK();
        }
      }
      CAIRN_ASSIGN_OR_RETURN(std::string blob, reader.Chunk(*workers_[w], c.digest));
      limiter_.Take(blob.size(), ctx_.cancel);
      if (auto stored = session.UploadChunk(c.digest, c.size, blob); !stored.ok()) {
        const Status& e = stored.status();
        if (!e.IsCorruption() && !e.IsInvalidArgument() && !e.IsConflict()) return e;
        return Status::Corruption("chunk " + c.digest.ToHex() + " from the remote was refused: " +
                                  e.message());
      }
      progress.Moved(blob.size(), c.size);
      return Status::OK();
    });
    report_.chunks_fetched += progress.chunks();
    report_.chunks_local += progress.local();
    report_.bytes_fetched += progress.blob_bytes();
    report_.data_bytes += progress.data_bytes();
    report_.transfer_ms += progress.ms();
    return s;
  }

  Status Snapshot(const SnapshotRef& ref) {
    CAIRN_ASSIGN_OR_RETURN(auto reader, RemoteReader::Open(&api_, ref.ToString()));
    storage::Manifest manifest;
    std::vector<Archive> archives;
    CAIRN_RETURN_IF_ERROR(ReadSource(*reader, ref, &manifest, &archives));
    // An encrypted snapshot goes into an encrypted session: its chunks are
    // checked by CRC and size in the encrypted domain, and the key never
    // comes near this server.
    std::optional<std::string> fingerprint;
    if (manifest.crypt) fingerprint = manifest.crypt->fingerprint;
    CAIRN_ASSIGN_OR_RETURN(StartBackupResult started,
                           sessions_->StartBackup(ctx_.store_name, ctx_.store, ref.group, ref.time,
                                                  auth_id_, Now(), fingerprint));
    std::shared_ptr<BackupSession> session = started.session;
    // Ends (and, unless committed, aborts) the session on every path.
    struct End {
      SessionManager* sessions;
      std::string id;
      ~End() { sessions->EndBackup(id); }
    } end{sessions_, session->id()};
    if (started.previous_manifest) {
      for (const auto& a : started.previous_manifest->archives) {
        if (IsIndex(a.name)) (void)session->PreviousIndex(a.name);
      }
    }
    const auto known_list = session->KnownDigests();
    const std::unordered_set<storage::Digest, storage::DigestHash> known(known_list.begin(),
                                                                        known_list.end());
    uint64_t distinct = 0;
    const std::vector<ChunkItem> todo = MissingChunks(archives, known, &distinct);
    report_.chunks_known += distinct - todo.size();
    Log(task_, fmt::format("copy {}: {} archive(s), {} distinct chunks, {} in the previous "
                           "snapshot here",
                           ref.ToString(), archives.size(), distinct, distinct - todo.size()));
    CAIRN_RETURN_IF_ERROR(MoveChunks(*session, *reader, ref, todo));
    for (const auto& a : archives) {
      CAIRN_RETURN_IF_ERROR(a.index ? session->WriteIndex(a.info.name, a.bytes)
                                    : session->WriteBlob(a.info.name, a.bytes));
    }
    const storage::Manifest target = TargetManifest(manifest);
    CAIRN_ASSIGN_OR_RETURN(storage::Manifest committed, session->Finish(target.client, target.crypt));
    if (committed.archives != target.archives || committed.crypt != target.crypt) {
      Warn(task_, ref.ToString() + ": the committed manifest differs from the source's");
    }
    if (!target.notes.empty()) (void)ctx_.store->SetNotes(ref, target.notes);
    ++report_.snapshots_copied;
    report_.snapshots.push_back({ref.ToString(), "copied", ""});
    Log(task_, "copied " + ref.ToString());
    return Status::OK();
  }

};

// ---------------------------------------------------------------------------
// Push

class Pusher : private SyncRun {
 public:
  Pusher(const MaintenanceContext& ctx, SessionManager* sessions, const Remote& remote,
         const SyncOptions& options, const std::string& job_id, Task* task)
      : SyncRun(ctx, sessions, remote, options, "push-job:" + job_id, "push", task) {}

  Result<SyncReport> Run() {
    const auto start = Clock::now();
    std::vector<GroupRef> groups = options_.groups;
    if (groups.empty()) {
      CAIRN_ASSIGN_OR_RETURN(groups, ctx_.store->ListGroups());
    }
    CAIRN_ASSIGN_OR_RETURN(auto remote_groups, rc_.ListGroups());
    for (const auto& g : remote_groups.value) remote_groups_.insert(g.group);
    Log(task_, fmt::format("push from {} to {}/{} ({}): {} group(s){}", ctx_.store_name,
                           repo_.host, repo_.store, report_.remote, groups.size(),
                           options_.rate_limit_mbps > 0
                               ? fmt::format(", at most {} MB/s", options_.rate_limit_mbps)
                               : ""));
    ForEachGroup(groups, ctx_.cancel, task_, &report_,
                 [this](const GroupRef& g) { return Group(g); });
    report_.duration_ms = MsSince(start);
    return report_;
  }

 private:
  Status Group(const GroupRef& g) {
    std::vector<client::SnapshotInfo> remote;
    // A group the remote token cannot see is new there (or another owner's:
    // then the backup start says so); asking for its snapshots would be 403.
    if (remote_groups_.contains(g.ToString())) {
      auto listed = rc_.ListSnapshots(g.ToString());
      if (listed.ok()) {
        remote = std::move(listed->value);
      } else if (!listed.status().IsNotFound()) {
        return listed.status();
      }
    }
    int64_t newest = INT64_MIN;  // the resume rule: only snapshots newer than the remote's newest
    for (const auto& info : remote) newest = std::max(newest, info.time);
    std::vector<SnapshotRef> local;
    if (auto l = ctx_.store->ListSnapshots(g); l.ok()) {
      local = std::move(*l);
    } else if (!l.status().IsNotFound()) {
      return l.status();
    }
    std::set<int64_t> local_times;
    for (const auto& ref : local) {
      local_times.insert(ref.time);
      if (ref.time <= newest) {
        ++report_.snapshots_present;
        continue;
      }
      auto m = ctx_.store->ReadManifest(ref);
      if (!m.ok() || (m->verify && m->verify->state == "failed")) {
        const std::string why = m.ok() ? "failed verification here" : m.status().ToString();
        Log(task_, "skip " + ref.ToString() + ": " + why);
        ++report_.snapshots_skipped;
        report_.snapshots.push_back({ref.ToString(), "skipped", why});
        continue;
      }
      if (Cancelled(ctx_.cancel)) return CancelledStatus();
      Status s = Snapshot(ref);
      if (!s.ok()) {
        if (IsFatal(s)) return s;
        ++report_.snapshots_failed;
        report_.snapshots.push_back({ref.ToString(), "failed", s.ToString()});
        Warn(task_, "snapshot " + ref.ToString() + " not copied: " + s.ToString());
        return Status::OK();
      }
    }
    if (options_.remove_vanished) RemoveVanished(remote, local_times);
    return Status::OK();
  }

  void RemoveVanished(const std::vector<client::SnapshotInfo>& remote,
                      const std::set<int64_t>& local_times) {
    for (const auto& info : remote) {
      if (local_times.contains(info.time)) continue;
      Status s = info.is_protected ? Status::Conflict("protected")
                                   : rc_.DeleteSnapshot(info.snapshot);
      if (s.ok()) {
        ++report_.snapshots_removed;
        report_.snapshots.push_back({info.snapshot, "removed", "vanished from this server"});
        Log(task_, "removed " + info.snapshot + " on the remote (vanished here)");
      } else {
        ++report_.snapshots_kept;
        const std::string why = info.is_protected ? "protected" : s.ToString();
        report_.snapshots.push_back({info.snapshot, "kept", why});
        Log(task_, "kept " + info.snapshot + " on the remote (vanished here): " + why);
      }
    }
  }

  // The digests of the remote's previous snapshot of the group, through
  // its previous-index (which makes them known to the remote session).
  void KnownFromPrevious(RemoteBackup& backup,
                         std::unordered_set<storage::Digest, storage::DigestHash>* known) {
    const json& prev = backup.info().value("previous", json());
    if (!prev.is_object() || !prev.contains("archives") || !prev["archives"].is_array()) return;
    for (const auto& a : prev["archives"]) {
      if (!a.is_object() || !a.contains("name") || !a["name"].is_string()) continue;
      const std::string name = a["name"];
      if (!IsIndex(name)) continue;
      auto bytes = backup.PreviousIndex(name);
      if (!bytes.ok()) continue;  // none, or another key: those chunks are sent
      auto index = storage::FixedIndex::Parse(*bytes);
      if (!index.ok()) continue;
      for (uint64_t i = 0; i < index->chunk_count(); ++i) known->insert(index->digest(i));
    }
  }

  Status MoveChunks(RemoteBackup& backup, ReaderSession& reader, const SnapshotRef& ref,
                    const std::vector<ChunkItem>& todo) {
    Progress progress(task_, ref.ToString(), todo.size());
    Status s = ParallelFor(todo.size(), static_cast<int>(workers_.size()), ctx_.cancel,
                           [&](int w, size_t i) -> Status {
      const ChunkItem& c = todo[i];
      reader.Touch(Now());
      auto blob = reader.ReadChunk(c.digest);
      if (!blob.ok()) {
        return blob.status().WithContext("chunk " + c.digest.ToHex() + " of " + ref.ToString());
      }
      limiter_.Take(blob->size(), ctx_.cancel);
      auto stored = backup.UploadChunk(*workers_[w], c.digest, c.size, *blob);
      if (!stored.ok()) {
        if (stored.status().IsInvalidArgument()) {
          return Status::Corruption("the remote refused chunk " + c.digest.ToHex() +
                                    " (damaged here?): " + stored.status().message());
        }
        return stored.status();
      }
      progress.Moved(blob->size(), c.size);
      return Status::OK();
    });
    report_.chunks_fetched += progress.chunks();
    report_.bytes_fetched += progress.blob_bytes();
    report_.data_bytes += progress.data_bytes();
    report_.transfer_ms += progress.ms();
    return s;
  }

  Status Snapshot(const SnapshotRef& ref) {
    CAIRN_ASSIGN_OR_RETURN(std::shared_ptr<ReaderSession> reader,
                           sessions_->StartReader(ctx_.store_name, ctx_.store, ref, auth_id_, Now()));
    struct End {
      SessionManager* sessions;
      std::string id;
      ~End() { sessions->EndReader(id); }
    } end{sessions_, reader->id()};
    const storage::Manifest& manifest = reader->manifest();
    std::vector<Archive> archives;
    for (const auto& info : manifest.archives) {
      Archive a;
      a.info = info;
      CAIRN_ASSIGN_OR_RETURN(a.bytes, reader->ReadArchive(info.name));
      CAIRN_RETURN_IF_ERROR(CheckArchive(ref.ToString(), &a));
      archives.push_back(std::move(a));
    }
    json start_crypt;  // null: a plain session
    if (manifest.crypt) start_crypt = {{"mode", "encrypt"}, {"fingerprint", manifest.crypt->fingerprint}};
    CAIRN_ASSIGN_OR_RETURN(auto backup,
                           RemoteBackup::Start(&api_, ref.group.ToString(), ref.time, start_crypt));
    std::unordered_set<storage::Digest, storage::DigestHash> known;
    KnownFromPrevious(*backup, &known);
    uint64_t distinct = 0;
    const std::vector<ChunkItem> todo = MissingChunks(archives, known, &distinct);
    report_.chunks_known += distinct - todo.size();
    Log(task_, fmt::format("copy {}: {} archive(s), {} distinct chunks, {} in the remote's "
                           "previous snapshot",
                           ref.ToString(), archives.size(), distinct, distinct - todo.size()));
    CAIRN_RETURN_IF_ERROR(MoveChunks(*backup, *reader, ref, todo));
    for (const auto& a : archives) {
      CAIRN_RETURN_IF_ERROR(a.index ? backup->WriteIndex(a.info.name, a.bytes)
                                    : backup->WriteBlob(a.info.name, a.bytes));
    }
    json body = {{"client", manifest.client}};
    if (manifest.crypt) {
      body["crypt"] = {{"mode", "encrypt"},
                       {"fingerprint", manifest.crypt->fingerprint},
                       {"signature", manifest.crypt->signature}};
    }
    CAIRN_RETURN_IF_ERROR(backup->Finish(body).status());
    if (!manifest.notes.empty()) (void)rc_.SetNotes(ref.ToString(), manifest.notes);
    ++report_.snapshots_copied;
    report_.snapshots.push_back({ref.ToString(), "copied", ""});
    Log(task_, "copied " + ref.ToString());
    return Status::OK();
  }

  std::set<std::string> remote_groups_;  // the groups the remote token sees there
};

}  // namespace

Result<SyncReport> RunPull(const MaintenanceContext& ctx, const Remote& remote,
                           const SyncOptions& options, const std::string& job_id, Task* task) {
  // Offline (no server): the run's sessions live here.
  SessionManager local_sessions(86400);
  SessionManager* sessions = ctx.sessions != nullptr ? ctx.sessions : &local_sessions;
  Puller puller(ctx, sessions, remote, options, job_id, task);
  return puller.Run();
}

Result<SyncReport> RunPush(const MaintenanceContext& ctx, const Remote& remote,
                           const SyncOptions& options, const std::string& job_id, Task* task) {
  SessionManager local_sessions(86400);
  SessionManager* sessions = ctx.sessions != nullptr ? ctx.sessions : &local_sessions;
  Pusher pusher(ctx, sessions, remote, options, job_id, task);
  return pusher.Run();
}

Status CheckRemoteUnused(const std::vector<JobConfig>& jobs, const std::string& name) {
  std::string users;
  for (const auto& job : jobs) {
    auto it = job.options.find("remote");
    if (!IsSyncJobKind(job.kind) || it == job.options.end() || *it != name) continue;
    users += (users.empty() ? "" : ", ") + job.id;
  }
  if (users.empty()) return Status::OK();
  return Status::Conflict("remote " + name + " is used by job(s) " + users +
                          "; remove them first");
}

TaskOutcome RunSyncJob(const MaintenanceContext& ctx, RemoteStore* remotes, const JobConfig& job,
                       Task& task) {
  auto options = SyncOptions::FromJson(job.kind, job.options);
  if (!options.ok()) return {options.status(), "", nullptr};
  auto remote = remotes->Get(options->remote);
  if (!remote.ok()) return {remote.status(), "", nullptr};
  auto report = job.kind == "sync" ? RunPull(ctx, *remote, *options, job.id, &task)
                                   : RunPush(ctx, *remote, *options, job.id, &task);
  if (!report.ok()) return {report.status(), "", nullptr};
  if (report->aborted) {
    return {Status::IOError(report->errors.empty() ? "the run stopped" : report->errors.back()),
            "", report->ToJson()};
  }
  const std::string summary = report->Summary();
  task.Log(summary);
  spdlog::info("{} job {}: {}", job.kind, job.id, summary);
  Status s;
  if (report->snapshots_failed > 0 || !report->errors.empty()) {
    s = Status::IOError(fmt::format("{}: {} snapshot(s) and {} group(s) failed", summary,
                                    report->snapshots_failed, report->errors.size()));
  }
  return {s, summary, report->ToJson()};
}

}  // namespace cairn::server
