#pragma once

// Datastore maintenance that the API and the admin command line share:
// applying a prune to one group (selection: storage/prune.h).
//
// Thread safety: functions are thread-safe as far as Datastore and Catalog are.

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/catalog.h"
#include "storage/datastore.h"
#include "storage/gc.h"
#include "storage/verify.h"
#include "server/job_scheduler.h"
#include "server/session_manager.h"
#include "server/task_log.h"
#include "storage/prune.h"

namespace cairn::server {

using storage::Result;
using storage::SnapshotRef;
using storage::Status;

struct PruneEntry {
  SnapshotRef ref;
  bool keep = false;
  bool is_protected = false;
  std::string reason;  // "keep-daily", "protected", "keep-all", "remove", "in use"
  bool removed = false;  // actually deleted (not in a dry run)
  std::string error;     // why a removal failed, empty otherwise
};

struct PruneReport {
  storage::GroupRef group;
  std::string options;    // PruneOptions::ToString()
  std::string time_zone;  // name of the zone the periods were computed in
  bool dry_run = false;
  std::vector<PruneEntry> entries;  // newest first
  size_t kept = 0;
  size_t removed = 0;
  size_t failed = 0;

  nlohmann::json ToJson() const;
  // One line per snapshot: "keep   vm/100/2026-…Z  keep-daily".
  std::string ToText() const;
};

// Selects with ComputePrune and, unless `dry_run`, deletes every snapshot
// marked remove. With `sessions` (may be null offline), each deletion is
// claimed first (SessionManager::BeginDelete): a snapshot in use (base of a
// running backup, open in a reader) is kept and reported as "in use", and no
// session can start to use one while it is deleted (the catalog learns of
// each deletion from the datastore's observer). NotFound for an unknown group.
// A deletion that fails is reported in its entry; the others go on.
Result<PruneReport> PruneGroup(storage::Datastore& store, const std::string& store_name, const storage::GroupRef& group,
                               const storage::PruneOptions& options,
                               const storage::TimeZone& tz, bool dry_run,
                               SessionManager* sessions);

// Deletes one snapshot unless a session uses it (Conflict), claimed for the
// whole deletion so that no session can start to use it meanwhile.
Status DeleteSnapshotIfUnused(storage::Datastore& store, const std::string& store_name,
                              SessionManager* sessions, const SnapshotRef& ref);

// Runs a GC of `store` (storage/gc.h) with the digests and start time of the
// running backups from `sessions` (may be null: no running sessions, as for
// the offline admin command); CollectGarbage keeps the result as the store's
// last GC status (unless a dry run).
Result<storage::GcResult> RunGarbageCollection(storage::Datastore& store,
                                               const std::string& store_name,
                                               class SessionManager* sessions,
                                               storage::GcOptions options);
using storage::LastGcResult;
// Human-readable summary, several lines.
std::string GcResultText(const storage::GcResult& r);

// An admin command's hold on one datastore while the server is stopped: the
// store opened (its lock refuses a running server's store: Busy) with its
// catalog sync attached, so the catalog follows every change as it does in
// the server. `hint` is added to an open error.
struct OfflineStore {
  std::unique_ptr<storage::Datastore> store;
  std::unique_ptr<storage::CatalogSync> sync;  // destroyed first: detaches
};
Result<OfflineStore> OpenOffline(storage::Catalog* catalog, const std::string& store_name,
                                 const std::string& hint);

// Everything a maintenance run needs from the server (or from the offline
// admin command, where `sessions` is null).
struct MaintenanceContext {
  storage::Datastore* store = nullptr;
  std::string store_name;
  class SessionManager* sessions = nullptr;  // may be null
  storage::TimeZone tz = storage::TimeZone::Utc();
  const std::atomic<bool>* cancel = nullptr;
  // Verify worker threads (storage::VerifyOptions::threads; 0 = one per
  // core). Set by the server, never taken from a request.
  int verify_threads = 0;
};

// Verifies `target` (a snapshot "vm/1/TIME", a group "vm/1", or "" for the
// whole store) with `options` ({"ignore-verified": bool,
// "outdated-after-days": N}; other keys are ignored) and ctx.verify_threads
// worker threads; logs findings to `task`.
Result<storage::VerifyResult> RunVerify(const MaintenanceContext& ctx, const std::string& target,
                                        const nlohmann::json& options, Task* task);

// Runs one job: prune (options: "group" (optional: every group), keep-…),
// gc (options: "grace-seconds") or verify (options: "target", and those of
// RunVerify). A verification that finds damage is an error (the task fails,
// so it is seen).
Status RunJob(const MaintenanceContext& ctx, const JobConfig& job, Task& task);

// Reads keep-last … keep-yearly (non-negative integers) from a JSON object;
// InvalidArgument for anything else.
Result<storage::PruneOptions> PruneOptionsFromJson(const nlohmann::json& j);

// The options a job of `kind` runs with, checked and rebuilt from `j` (an
// object; null for none): prune takes "group" and keep-last … keep-yearly;
// gc "grace-seconds" (0..604800); verify "target" (a group, a snapshot or ""),
// "ignore-verified" and "outdated-after-days" (0..1000000); sync and push
// those of SyncOptions::FromJson (server/sync.h). InvalidArgument for
// another key, a wrong type or value, or an unknown kind.
Result<nlohmann::json> JobOptionsFromJson(const std::string& kind, const nlohmann::json& j);

}  // namespace cairn::server
