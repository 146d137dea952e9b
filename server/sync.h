#pragma once

// Sync between two cairn-servers (DESIGN §7 "Offsite"): a pull copies
// snapshots of a remote datastore into a local one, a push copies local
// snapshots into a remote datastore. Both are job kinds ("sync", "push")
// of the job scheduler; each run is a task with a log and a SyncReport as
// its result. The protocol in prose: server/API.md, "Sync jobs".
//
// Which snapshots: per group of the source (or only the `groups` given),
// every snapshot newer than the target's newest snapshot of that group,
// oldest first. A run that stops part-way therefore leaves each group with a
// consistent prefix of the source's history, and the next run resumes after
// the newest snapshot copied. Snapshots that failed verification on the
// source are skipped (a later good one is copied; the failed one never is).
//
// Each snapshot is copied through the target's backup-session rules: pull
// commits through a local BackupSession (SessionManager::StartBackup: one
// backup per group, the time must be later than the group's newest, chunks
// checked by ChunkStore::InsertBlob — digest and size for plain chunks, CRC
// and size for encrypted ones — folders fsynced, then staging → manifest →
// rename → catalog), push through the remote's backup API. The manifest's
// protected part (type, id, time, archives, client info, crypt) arrives
// unchanged; the unprotected part (verify state, protection) starts empty,
// notes are copied. Only chunks the target lacks travel: a pull first takes
// the local previous snapshot's digests, then the chunks already in the
// local store (a killed run's downloads), and fetches the rest; a push
// sends what the remote's previous snapshot does not hold. A chunk the
// target refuses (a damaged or tampered chunk of the source) fails that
// snapshot — nothing of it is committed — and the run goes on with the next
// group (later snapshots of the same group would break the prefix rule).
//
// Thread safety: one run per call; the functions are thread-safe as far as
// the datastore and session manager are.

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/job_scheduler.h"
#include "server/maintenance.h"
#include "server/remotes.h"
#include "server/task_log.h"
#include "storage/names.h"

namespace cairn::server {

// What a sync or push job runs with (its options, checked).
struct SyncOptions {
  std::string remote;        // RemoteStore name
  std::string remote_store;  // the datastore on the remote
  std::vector<storage::GroupRef> groups;  // empty: every group of the source
  bool remove_vanished = false;
  double rate_limit_mbps = 0;  // MB/s (10^6 bytes) of chunk blobs moved; 0 = none
  // Pull: the local owner of groups the sync creates, and the only owner
  // whose groups it writes into. Push: unused (the remote token owns).
  std::string owner = "admin";
  int connections = 4;  // parallel chunk transfers (not an option)

  // From a job's options {"remote", "remote-store", "groups": [...],
  // "remove-vanished", "rate-limit", "owner" (sync only)}. InvalidArgument
  // for a missing remote or remote-store, an unknown key, a bad group or
  // owner, a rate limit outside 0 < MB/s <= 100000.
  static Result<SyncOptions> FromJson(const std::string& kind, const nlohmann::json& j);
  nlohmann::json ToJson(const std::string& kind) const;
};

// What happened to one snapshot of the source.
struct SyncedSnapshot {
  std::string snapshot;
  std::string action;  // "copied", "skipped" (failed verification), "failed", "removed", "kept"
  std::string reason;  // why skipped, failed or kept; empty otherwise
};

// The structured result of a run (a task's `result`).
struct SyncReport {
  std::string direction;  // "pull" or "push"
  std::string remote, remote_store, store;
  uint64_t groups = 0;
  uint64_t snapshots_copied = 0;
  uint64_t snapshots_present = 0;  // on the target already (not newer than its newest)
  uint64_t snapshots_skipped = 0;  // failed verification on the source
  uint64_t snapshots_failed = 0;
  uint64_t snapshots_removed = 0;  // --remove-vanished
  uint64_t snapshots_kept = 0;     // vanished but protected (or in use), kept
  uint64_t chunks_fetched = 0;     // chunks that travelled (downloaded or uploaded)
  uint64_t chunks_local = 0;       // pull: taken from the local store instead (no transfer)
  uint64_t chunks_known = 0;       // in the target's previous snapshot: nothing to do
  uint64_t bytes_fetched = 0;      // blob bytes that travelled
  uint64_t data_bytes = 0;         // chunk (plaintext) bytes that travelled
  int64_t duration_ms = 0;         // the whole run
  int64_t transfer_ms = 0;         // time spent moving chunks
  std::vector<SyncedSnapshot> snapshots;  // copied, skipped, failed, removed, kept
  std::vector<std::string> errors;        // group-level failures, and what stopped the run
  bool aborted = false;  // the run stopped early (remote unreachable, token refused, cancelled)

  // MB/s (10^6 bytes) of chunk data moved, over transfer_ms.
  double MegabytesPerSecond() const;
  nlohmann::json ToJson() const;
  // "3 copied, 1 skipped, 0 removed; 12 chunks fetched (48.0 MiB, 95.1 MB/s)".
  std::string Summary() const;
};

// Pull: copies snapshots of `remote`'s datastore options.remote_store into
// ctx.store. `job_id` names the run's backup sessions; `task` (may be null)
// gets progress lines. An error here means nothing was done (the groups
// could not be listed); failures of single snapshots and groups are in the
// report (snapshots_failed, errors), and a failure that ends the run early
// (remote unreachable, token refused, cancelled) sets `aborted` too.
Result<SyncReport> RunPull(const MaintenanceContext& ctx, const Remote& remote,
                           const SyncOptions& options, const std::string& job_id, Task* task);

// Push: copies snapshots of ctx.store into `remote`'s datastore
// options.remote_store through its backup API (the remote token needs the
// Backup role there; --remove-vanished needs one that may delete).
Result<SyncReport> RunPush(const MaintenanceContext& ctx, const Remote& remote,
                           const SyncOptions& options, const std::string& job_id, Task* task);

// Runs a job of kind "sync" or "push": reads its remote from `remotes`,
// runs it, and ends with the report as the result. Failed when the run
// failed or any snapshot or group failed.
TaskOutcome RunSyncJob(const MaintenanceContext& ctx, RemoteStore* remotes, const JobConfig& job,
                       Task& task);

inline bool IsSyncJobKind(const std::string& kind) { return kind == "sync" || kind == "push"; }

// Conflict naming the jobs that use remote `name` (a remote in use cannot
// be removed); OK when none does.
Status CheckRemoteUnused(const std::vector<JobConfig>& jobs, const std::string& name);

}  // namespace cairn::server
