#pragma once

// The service layer: every operation of the API as a typed call, with the
// domain logic and the role policy (server/authorizer.h) that used to live in
// the HTTP handlers. The HTTP layer (server/api_*.cc) only parses a request,
// calls one of these and maps the answer (or the Status) to HTTP.
//
// Reads of groups and snapshots are served from the catalog
// (storage/catalog.h), kept in step with each datastore by its CatalogSync;
// the datastore folder stays the truth. Maintenance (prune, GC, verify, job
// runs) goes to the task runner (server/task_runner.h): those calls return a
// task id at once.
//
// Thread safety: thread-safe; one Service serves every request thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/authorizer.h"
#include "server/image_download.h"
#include "server/maintenance.h"
#include "server/remotes.h"
#include "server/request_auth.h"
#include "server/session_manager.h"
#include "server/task_log.h"
#include "storage/catalog.h"

namespace cairn::server {

class Server;

// A caller on one datastore: who, with which roles, and the store.
struct StoreCaller {
  Principal principal;
  RoleSet roles;
  std::string store_name;
  storage::Datastore* store = nullptr;
  storage::CatalogSync* sync = nullptr;
  Authorizer authorizer() const { return Authorizer(roles); }
};

// One datastore as the caller sees it. Everything comes from what is kept
// already (statvfs, the catalog, .gc-status.json, the task log): nothing
// walks the folders or the chunk store.
struct DatastoreUsage {
  std::string name;
  RoleSet roles;                               // the caller's roles there
  std::optional<uint64_t> total, used, avail;  // unset when statvfs fails
  // Sum of every snapshot's size, as of the last background pass
  // (GroupUsage::LogicalBytes); unset before the first since start.
  std::optional<uint64_t> logical_bytes;
  // The last GC's result and the last finished verify task: unset when there
  // is none, or when the caller may not see them (neither Admin nor Audit).
  std::optional<storage::GcResult> last_gc;
  std::optional<TaskInfo> last_verify;
  int64_t stale_after = 0;                     // seconds (StoreSettings::StaleAfter)
};

// A group as the listing shows it: its catalog row, what deleting it would
// free (unset until computed: server/group_usage.h), and whether its newest
// snapshot is older than its stale-after (its own, else its store's).
struct GroupSummary {
  storage::GroupRow row;
  std::optional<uint64_t> unique_bytes;
  int64_t stale_after = 0;
  bool stale = false;  // also true for a group without snapshots
};

// Snapshots of one group, with the group's owner ("" for none).
struct GroupSnapshots {
  std::string owner;
  std::vector<storage::SnapshotRow> snapshots;
};

// A listing: a page of each group's snapshots, and how many there are in all.
struct SnapshotListing {
  std::vector<GroupSnapshots> groups;
  int64_t total = 0;
};

struct FinishedBackup {
  SnapshotRef ref;
  BackupStats stats;
};

// What PUT /jobs/{id} changes: the fields that are set.
struct JobPatch {
  std::optional<std::string> kind, store, schedule;
  std::optional<nlohmann::json> options;
  std::optional<bool> enabled;
};

class Service {
 public:
  explicit Service(Server* server) : server_(server) {}

  // Who sends a request with `creds` (server/request_auth.h): by its
  // Authorization header, else by its session cookie (with the CSRF rule).
  // `session` receives the web session when the cookie counted.
  Result<Principal> Authenticate(const Credentials& creds, WebSession* session = nullptr);
  // The caller on `store_name`: InvalidArgument for a bad name,
  // PermissionDenied without any role there, NotFound for an unknown store.
  Result<StoreCaller> OnStore(const Principal& p, const std::string& store_name);

  // --- Datastores, groups, snapshots ---
  std::vector<DatastoreUsage> ListDatastores(const Principal& p);
  // The groups the caller may see, with their summary.
  Result<std::vector<storage::GroupRow>> ListGroups(const StoreCaller& c);
  // ListGroups with each group's unique bytes and staleness; cached values
  // only, never computed here. With `search`, only the groups whose name
  // contains it or that have a snapshot whose notes do (ASCII case folded;
  // InvalidArgument over 200 bytes).
  Result<std::vector<GroupSummary>> ListGroupSummaries(const StoreCaller& c,
                                                       const std::string& search = "");
  // One group's snapshots (PermissionDenied when the caller may not see it),
  // or with no group every snapshot of every group it may see.
  Result<SnapshotListing> ListSnapshots(const StoreCaller& c,
                                        const std::optional<storage::GroupRef>& group,
                                        const storage::SnapshotPage& page);
  // Deletes `ref` unless protected or in use, with one claim across the
  // check and the delete (DeleteSnapshotIfUnused).
  Status DeleteSnapshot(const StoreCaller& c, const SnapshotRef& ref);
  // Set a snapshot's protection or notes; the row as it is now.
  Result<storage::SnapshotRow> SetProtected(const StoreCaller& c, const SnapshotRef& ref, bool on);
  Result<storage::SnapshotRow> SetNotes(const StoreCaller& c, const SnapshotRef& ref,
                                        const std::string& notes);

  // --- Maintenance: each returns the id of the task that runs it ---
  Result<std::string> StartPrune(const StoreCaller& c, const storage::GroupRef& group,
                                 const storage::PruneOptions& options, bool dry_run);
  Result<std::string> StartGc(const StoreCaller& c, const storage::GcOptions& options);
  Result<storage::GcResult> GcStatus(const StoreCaller& c);
  // `target`: "" (the store), a group or a snapshot; `options` as RunVerify.
  Result<std::string> StartVerify(const StoreCaller& c, const std::string& target,
                                  const nlohmann::json& options);

  // --- Tasks and jobs ---
  Result<std::vector<TaskInfo>> ListTasks(const Principal& p, size_t limit);
  // NotFound also for a task the caller may not see.
  Result<TaskInfo> GetTask(const Principal& p, const std::string& id);
  Result<std::string> ReadTaskLog(const Principal& p, const TaskInfo& task, uint64_t offset);
  // Jobs on stores where the caller is Admin or Audit, with their next run.
  Result<std::vector<std::pair<JobConfig, std::optional<int64_t>>>> ListJobs(const Principal& p);
  Result<std::string> RunJob(const Principal& p, const std::string& id);
  // Adds a job (Admin on its store; the store must exist; a sync or push
  // job: Admin on "*" and a known remote). Its options are checked and
  // rebuilt by JobOptionsFromJson. The job as stored.
  Result<JobConfig> AddJob(const Principal& p, JobConfig job);
  // Changes the fields `patch` sets (Admin on the job's old and new store;
  // options are checked against the resulting kind). NotFound for an
  // unknown job.
  Result<JobConfig> UpdateJob(const Principal& p, const std::string& id, const JobPatch& patch);
  Status RemoveJob(const Principal& p, const std::string& id);
  // A job's next run (JobScheduler::NextRun).
  std::optional<int64_t> NextJobRun(const JobConfig& job);
  // The next `count` (1..100) runs of `schedule` after `from`, in the
  // server's time zone (as `cairn-server job next`). Admin on some store.
  Result<std::vector<int64_t>> NextRuns(const Principal& p, const std::string& schedule,
                                        int64_t from, int count);

  // --- Access: users, tokens, roles. Admin on "*" only (PermissionDenied) ---
  Result<std::vector<std::string>> ListUsers(const Principal& p);
  // AlreadyExists for a taken name. With a password, also sets it.
  Status AddUser(const Principal& p, const std::string& user,
                 const std::optional<std::string>& password);
  Status SetPassword(const Principal& p, const std::string& user, const std::string& password);
  Result<std::vector<std::string>> ListTokens(const Principal& p);
  // The new token's secret (shown once).
  Result<std::string> CreateToken(const Principal& p, const std::string& auth_id);
  // Also removes the token's roles. NotFound for an unknown token.
  Status DeleteToken(const Principal& p, const std::string& auth_id);
  Result<std::vector<AclEntry>> ListAcl(const Principal& p);
  // Grants `role` on `store` ("*" or a datastore) to an existing user or
  // token; no role removes the entry. NotFound for an unknown store, user,
  // token or (removing) entry.
  Status SetAcl(const Principal& p, const std::string& store, const std::string& auth_id,
                std::optional<Role> role);

  // --- Remotes (server/remotes.h). Admin on "*" only (PermissionDenied) ---
  Result<std::vector<Remote>> ListRemotes(const Principal& p);
  // The remote as stored. AlreadyExists for a taken name; InvalidArgument
  // as MakeRemote.
  Result<Remote> AddRemote(const Principal& p, const std::string& name, const std::string& url,
                           const std::string& fingerprint, const std::string& token);
  // NotFound for an unknown name; Conflict while a job uses it.
  Status RemoveRemote(const Principal& p, const std::string& name);

  // --- Backup sessions ---
  // Checks the role, makes the caller the owner of a new group (exclusive
  // create: of two first backups exactly one owns it), and starts the session.
  // `fingerprint`: the client's key for an encrypted backup (none: plain).
  Result<StartBackupResult> StartBackup(const StoreCaller& c, const storage::GroupRef& group,
                                        std::optional<int64_t> time,
                                        std::optional<std::string> fingerprint = std::nullopt);
  Result<std::shared_ptr<BackupSession>> Backup(const Principal& p, const std::string& id);
  // Commits, ends the session, and starts verify-new when the store asks.
  Result<FinishedBackup> FinishBackup(const std::shared_ptr<BackupSession>& s,
                                      nlohmann::json client,
                                      std::optional<storage::CryptInfo> crypt = std::nullopt);
  void EndBackup(const std::shared_ptr<BackupSession>& s);

  // --- Reader sessions ---
  Result<std::shared_ptr<ReaderSession>> OpenReader(const StoreCaller& c, const SnapshotRef& ref);
  Result<std::shared_ptr<ReaderSession>> Reader(const Principal& p, const std::string& id);
  void CloseReader(const std::shared_ptr<ReaderSession>& r);
  // A disk image of a snapshot for download, through a reader session (same
  // roles, same per-token limit). InvalidArgument for a bad archive name.
  Result<std::unique_ptr<ImageDownload>> OpenDownload(const StoreCaller& c, const SnapshotRef& ref,
                                                      const std::string& archive);

  Server* server() const { return server_; }

 private:
  bool Owns(const StoreCaller& c, const storage::GroupRef& group);
  // Authorizer check for `action` on `group`, looking the owner up only
  // when it matters.
  Status CheckGroup(const StoreCaller& c, Action action, const storage::GroupRef& group);
  Result<storage::SnapshotRow> Row(const StoreCaller& c, const SnapshotRef& ref);
  bool MaySeeTask(const Principal& p, const TaskInfo& t);
  // PermissionDenied unless `p` is Admin on "*".
  Status CheckAccessAdmin(const Principal& p);
  // PermissionDenied unless `p` is Admin on `store`; NotFound for an unknown store.
  Status CheckJobStore(const Principal& p, const std::string& store);
  // A sync or push job reaches out with a remote's credentials: adding or
  // changing one needs Admin on "*", and its remote must exist.
  Status CheckSyncJob(const Principal& p, const JobConfig& job);

  Server* const server_;
};

}  // namespace cairn::server
