#pragma once

// Every running backup and reader session of the server.
//
// Rules it enforces (DESIGN §3): one backup per group at a time (Conflict for
// a second); a new snapshot's time must be later than the group's last; the
// previous snapshot is offered as a base unless it failed verification; a
// snapshot used as a base or being read cannot be deleted (IsInUse); idle
// sessions are aborted (ReapIdle); Shutdown aborts everything.
//
// Thread safety: all methods are thread-safe.

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/backup_session.h"
#include "server/reader_session.h"
#include "storage/datastore.h"

namespace cairn::server {

struct StartBackupResult {
  std::shared_ptr<BackupSession> session;
  std::optional<storage::Manifest> previous_manifest;  // set when a base is offered
};

class SessionManager {
 public:
  explicit SessionManager(int64_t idle_timeout_seconds) : idle_timeout_(idle_timeout_seconds) {}

  // Starts a backup of `group` in `store` (named `store_name`) at `time`
  // (default `now`). Conflict when the group has a backup running or a
  // snapshot at or after that time; the owner is recorded by the caller.
  Result<StartBackupResult> StartBackup(const std::string& store_name, storage::Datastore* store,
                                        const storage::GroupRef& group,
                                        std::optional<int64_t> time, const std::string& auth_id,
                                        int64_t now);
  // NotFound for an unknown id, or one that belongs to another auth id.
  Result<std::shared_ptr<BackupSession>> GetBackup(const std::string& id,
                                                   const std::string& auth_id, int64_t now);
  // Forgets a finished or aborted session (aborting it if needed).
  void EndBackup(const std::string& id);

  Result<std::shared_ptr<ReaderSession>> StartReader(const std::string& store_name,
                                                     storage::Datastore* store,
                                                     const SnapshotRef& ref,
                                                     const std::string& auth_id, int64_t now);
  Result<std::shared_ptr<ReaderSession>> GetReader(const std::string& id,
                                                   const std::string& auth_id, int64_t now);
  void EndReader(const std::string& id);

  // True when `ref` is the base of a running backup or open in a reader.
  bool IsInUse(const std::string& store_name, const SnapshotRef& ref);
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

  const int64_t idle_timeout_;
  std::mutex mu_;
  std::map<std::string, BackupEntry> backups_;   // GUARDED_BY(mu_), by session id
  std::map<std::string, std::string> busy_groups_;  // GUARDED_BY(mu_), "store|group" -> id
  std::map<std::string, ReaderEntry> readers_;   // GUARDED_BY(mu_)
};

// A random session id: 32 hex characters.
std::string NewSessionId();

}  // namespace cairn::server
