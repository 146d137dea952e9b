#pragma once

// Every running backup and reader session of the server.
//
// Rules it enforces (DESIGN §3): one backup per group at a time (Conflict for
// a second); a new snapshot's time must be later than the group's last; the
// previous snapshot is offered as a base unless it failed verification; a
// snapshot used as a base or being read cannot be deleted (IsInUse); idle
// sessions are aborted (ReapIdle); Shutdown aborts everything. One auth id
// (token) may hold at most SessionLimits' number of backup and of reader
// sessions at once (TooManyRequests beyond), so a single token cannot take
// every staging folder, file descriptor or memory for index sets.
//
// Thread safety: all methods are thread-safe.

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/backup_session.h"
#include "server/reader_session.h"
#include "storage/datastore.h"
#include "storage/mutex.h"

namespace cairn::server {

struct StartBackupResult {
  std::shared_ptr<BackupSession> session;
  std::optional<storage::Manifest> previous_manifest;  // set when a base is offered
};

// Per-token (auth id) limits on sessions held at once. A value below 1
// means 1.
struct SessionLimits {
  int backups_per_token = 8;
  int readers_per_token = 16;
};

class SessionManager {
 public:
  explicit SessionManager(int64_t idle_timeout_seconds, SessionLimits limits = {})
      : idle_timeout_(idle_timeout_seconds), limits_(limits) {}

  // Starts a backup of `group` in `store` (named `store_name`) at `time`
  // (default `now`). Conflict when the group has a backup running or a
  // snapshot at or after that time; TooManyRequests when `auth_id` holds
  // limits.backups_per_token backup sessions already. The owner is recorded
  // by the caller. `fingerprint`: set for an encrypted backup (BackupSession).
  Result<StartBackupResult> StartBackup(const std::string& store_name, storage::Datastore* store,
                                        const storage::GroupRef& group,
                                        std::optional<int64_t> time, const std::string& auth_id,
                                        int64_t now,
                                        std::optional<std::string> fingerprint = std::nullopt);
  // NotFound for an unknown id, or one that belongs to another auth id.
  Result<std::shared_ptr<BackupSession>> GetBackup(const std::string& id,
                                                   const std::string& auth_id, int64_t now);
  // Forgets a finished or aborted session (aborting it if needed).
  void EndBackup(const std::string& id);

  // TooManyRequests when `auth_id` holds limits.readers_per_token reader
  // sessions already; otherwise as ReaderSession::Open.
  Result<std::shared_ptr<ReaderSession>> StartReader(const std::string& store_name,
                                                     storage::Datastore* store,
                                                     const SnapshotRef& ref,
                                                     const std::string& auth_id, int64_t now);
  Result<std::shared_ptr<ReaderSession>> GetReader(const std::string& id,
                                                   const std::string& auth_id, int64_t now);
  void EndReader(const std::string& id);

  // True when `ref` is the base of a running backup or open in a reader
  // (pinned). Only a hint: use BeginDelete to act on it.
  bool IsInUse(const std::string& store_name, const SnapshotRef& ref);

  // Deleting a snapshot without racing a session that starts to use it.
  // BeginDelete claims `ref`: Conflict when a session uses it (a reader has
  // it open, a backup has it as its base) or another delete claimed it.
  // While claimed, no session can pin it: StartReader answers NotFound and
  // StartBackup offers no base. Sessions pin a snapshot before they read it,
  // so check and claim are one step under the lock. EndDelete releases the
  // claim. REQUIRES for EndDelete: a successful BeginDelete of `ref`.
  Status BeginDelete(const std::string& store_name, const SnapshotRef& ref);
  void EndDelete(const std::string& store_name, const SnapshotRef& ref);

  // Tests only: called in StartBackup after the base is pinned and before
  // its manifest is read, and in StartReader after the snapshot is pinned
  // and before it is opened (where a delete used to slip in).
  void SetPinnedHookForTesting(std::function<void(const SnapshotRef&)> hook) {
    pinned_hook_ = std::move(hook);
  }
  // Digests known to running backups of `store_name`, and the start time of
  // the oldest of them (GC uses both).
  std::vector<Digest> KnownDigests(const std::string& store_name, int64_t* oldest_start);

  // Aborts sessions idle for longer than the timeout; returns how many.
  size_t ReapIdle(int64_t now);
  // Aborts every session.
  void Shutdown();

  size_t backup_count();
  size_t reader_count();

 private:
  struct BackupEntry {
    std::string store;
    std::string group_key;
    std::string auth_id;
    std::shared_ptr<BackupSession> session;
  };
  struct ReaderEntry {
    std::string store;
    std::string auth_id;
    std::shared_ptr<ReaderSession> session;
  };

  // Takes one of `auth_id`'s slots in `counts` (one of the per-token maps
  // below) unless it holds `limit` already.
  bool TakeSlotLocked(std::map<std::string, int>* counts, const std::string& auth_id, int limit)
      CAIRN_REQUIRES(mu_);
  // Gives one back.
  void ReleaseSlotLocked(std::map<std::string, int>* counts, const std::string& auth_id)
      CAIRN_REQUIRES(mu_);
  // Pins `ref` against deletion; false when a delete has claimed it.
  bool PinLocked(const std::string& store_name, const SnapshotRef& ref) CAIRN_REQUIRES(mu_);
  void UnpinLocked(const std::string& store_name, const SnapshotRef& ref) CAIRN_REQUIRES(mu_);
  void Unpin(const std::string& store_name, const SnapshotRef& ref);

  const int64_t idle_timeout_;
  const SessionLimits limits_;
  Mutex mu_;
  std::map<std::string, BackupEntry> backups_ CAIRN_GUARDED_BY(mu_);  // by session id
  std::map<std::string, std::string> busy_groups_ CAIRN_GUARDED_BY(mu_);  // "store|group" -> id
  std::map<std::string, ReaderEntry> readers_ CAIRN_GUARDED_BY(mu_);
  // Sessions held (or being started) per auth id.
  std::map<std::string, int> backups_per_token_ CAIRN_GUARDED_BY(mu_);
  std::map<std::string, int> readers_per_token_ CAIRN_GUARDED_BY(mu_);
  // "store|snapshot" -> sessions using it, and the snapshots being deleted.
  std::map<std::string, int> pins_ CAIRN_GUARDED_BY(mu_);
  std::set<std::string> deleting_ CAIRN_GUARDED_BY(mu_);
  std::function<void(const SnapshotRef&)> pinned_hook_;  // set before use, tests only
};

// A random session id: 32 hex characters.
std::string NewSessionId();

}  // namespace cairn::server
