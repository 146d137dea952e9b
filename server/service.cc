#include "server/service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <ctime>

#include "server/overdue.h"
#include "server/password_hash.h"
#include "server/server.h"
#include "server/sync.h"

namespace cairn::server {
namespace {

using storage::GroupRef;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// Ends a maintenance task: OK (or the given failure), its summary, and its
// structured result.
TaskOutcome Outcome(Status s, std::string summary, nlohmann::json result) {
  return TaskOutcome{std::move(s), std::move(summary), std::move(result)};
}

// "USER" or "USER!TOKEN", each part a valid name; InvalidArgument otherwise.
Status ValidateAuthId(const std::string& auth_id) {
  const size_t bang = auth_id.find('!');
  const bool ok =
      bang == std::string::npos
          ? storage::ValidateName(storage::NameKind::kStore, auth_id).ok()
          : storage::ValidateName(storage::NameKind::kStore, auth_id.substr(0, bang)).ok() &&
                storage::ValidateName(storage::NameKind::kStore, auth_id.substr(bang + 1)).ok();
  if (!ok) return Status::InvalidArgument("auth id must be USER or USER!TOKEN (names of A-Z a-z 0-9 _ . -)");
  return Status::OK();
}

// What HashPassword refuses, checked before anything is stored.
Status CheckPasswordShape(const std::string& password) {
  if (password.empty()) return Status::InvalidArgument("the password is empty");
  if (password.size() > kMaxPasswordBytes) {
    return Status::InvalidArgument("the password is longer than " +
                                   std::to_string(kMaxPasswordBytes) + " bytes");
  }
  return Status::OK();
}

}  // namespace

Result<Principal> Service::Authenticate(const Credentials& creds, WebSession* session) {
  return AuthenticateRequest(*server_->auth(), *server_->web_sessions(), creds,
                             static_cast<int64_t>(std::time(nullptr)), session);
}

Result<StoreCaller> Service::OnStore(const Principal& p, const std::string& store_name) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store_name));
  StoreCaller c;
  c.principal = p;
  c.roles = server_->auth()->RolesOn(p, store_name);
  if (c.roles.empty()) return Status::PermissionDenied("no access to datastore " + store_name);
  CAIRN_ASSIGN_OR_RETURN(c.store, server_->Store(store_name));
  CAIRN_ASSIGN_OR_RETURN(c.sync, server_->Sync(store_name));
  c.store_name = store_name;
  return c;
}

bool Service::Owns(const StoreCaller& c, const GroupRef& group) {
  auto owner = c.store->GetOwner(group);
  return owner.ok() && OwnsGroup(c.principal, *owner);
}

Status Service::CheckGroup(const StoreCaller& c, Action action, const GroupRef& group) {
  const Authorizer auth = c.authorizer();
  const bool owner = auth.NeedsOwner(action) && Owns(c, group);
  return auth.Check(action, owner).WithContext(group.ToString());
}

// ---------------------------------------------------------------------------
// Datastores, groups, snapshots

std::vector<DatastoreUsage> Service::ListDatastores(const Principal& p) {
  std::vector<DatastoreUsage> out;
  for (const auto& name : server_->StoreNames()) {
    DatastoreUsage u;
    u.roles = server_->auth()->RolesOn(p, name);
    if (u.roles.empty()) continue;
    auto store = server_->Store(name);
    if (!store.ok()) continue;
    u.name = name;
    struct statvfs vfs;
    if (::statvfs((*store)->path().c_str(), &vfs) == 0) {
      const uint64_t block = vfs.f_frsize;
      u.total = static_cast<uint64_t>(vfs.f_blocks) * block;
      u.used = *u.total - static_cast<uint64_t>(vfs.f_bfree) * block;
      u.avail = static_cast<uint64_t>(vfs.f_bavail) * block;
    }
    // Summed by the background pass, not here: on 600k snapshots a SUM
    // over the catalog takes ~100 ms and holds the catalog's lock.
    u.logical_bytes = server_->usage()->LogicalBytes(name);
    if (Authorizer(u.roles).Allows(Action::kGcStatus)) {
      if (auto gc = storage::LastGcResult(**store); gc.ok()) u.last_gc = *gc;
      if (auto v = server_->tasks()->LastFinished("verify", name); v.ok()) u.last_verify = *v;
    }
    auto stale_after = server_->settings()->StaleAfter(name);
    u.stale_after = stale_after.ok() ? *stale_after : kDefaultStaleAfterSeconds;
    out.push_back(std::move(u));
  }
  return out;
}

Result<std::vector<storage::GroupRow>> Service::ListGroups(const StoreCaller& c) {
  CAIRN_RETURN_IF_ERROR(c.sync->Refresh());
  CAIRN_ASSIGN_OR_RETURN(auto rows, server_->catalog()->ListGroups(c.store_name));
  const Authorizer auth = c.authorizer();
  std::vector<storage::GroupRow> out;
  for (auto& row : rows) {
    // Owners come from the catalog row here: one lookup for the whole list.
    const bool owner = !row.owner.empty() && OwnsGroup(c.principal, row.owner);
    if (auth.Allows(Action::kList, owner)) out.push_back(std::move(row));
  }
  return out;
}

namespace {

std::string AsciiLower(std::string s) {
  for (char& ch : s) {
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  }
  return s;
}

}  // namespace

Result<std::vector<GroupSummary>> Service::ListGroupSummaries(const StoreCaller& c,
                                                              const std::string& search) {
  if (search.size() > 200) return Status::InvalidArgument("search text over 200 bytes");
  CAIRN_ASSIGN_OR_RETURN(auto rows, ListGroups(c));
  if (!search.empty()) {
    CAIRN_ASSIGN_OR_RETURN(auto with_notes,
                           server_->catalog()->GroupsWithNotesContaining(c.store_name, search));
    const std::string needle = AsciiLower(search);
    std::erase_if(rows, [&](const storage::GroupRow& row) {
      return AsciiLower(row.group.ToString()).find(needle) == std::string::npos &&
             !with_notes.contains(row.group);
    });
  }
  CAIRN_ASSIGN_OR_RETURN(StaleLimits limits, server_->settings()->StaleLimitsOf(c.store_name));
  const UniqueBytes unique = server_->usage()->Get(c.store_name);
  const int64_t now = Now();
  std::vector<GroupSummary> out;
  out.reserve(rows.size());
  for (auto& row : rows) {
    GroupSummary g;
    const std::string name = row.group.ToString();
    if (auto it = unique.find(name); it != unique.end()) g.unique_bytes = it->second;
    g.stale_after = limits.For(name);
    // The rule the overdue announcements use: a group with no snapshot yet
    // (its first backup may be running) is not stale.
    g.stale = IsOverdue(row.last_snapshot, g.stale_after, now);
    g.row = std::move(row);
    out.push_back(std::move(g));
  }
  return out;
}

Result<SnapshotListing> Service::ListSnapshots(const StoreCaller& c,
                                               const std::optional<GroupRef>& group,
                                               const storage::SnapshotPage& page) {
  CAIRN_RETURN_IF_ERROR(c.sync->Refresh());
  storage::Catalog* catalog = server_->catalog();
  SnapshotListing out;
  if (group) {
    CAIRN_RETURN_IF_ERROR(CheckGroup(c, Action::kList, *group));
    GroupSnapshots g;
    CAIRN_ASSIGN_OR_RETURN(g.snapshots, catalog->ListSnapshots(c.store_name, *group, page));
    CAIRN_ASSIGN_OR_RETURN(out.total, catalog->CountSnapshots(c.store_name, *group));
    auto owner = c.store->GetOwner(*group);
    if (out.total == 0 && !owner.ok()) return Status::NotFound("no group " + group->ToString());
    if (owner.ok()) g.owner = *owner;
    out.groups.push_back(std::move(g));
    return out;
  }
  // Every visible group, each in the page's order; the page applies to each.
  CAIRN_ASSIGN_OR_RETURN(auto groups, ListGroups(c));
  for (auto& g : groups) {
    GroupSnapshots gs;
    gs.owner = std::move(g.owner);
    CAIRN_ASSIGN_OR_RETURN(gs.snapshots, catalog->ListSnapshots(c.store_name, g.group, page));
    out.total += g.snapshot_count;
    out.groups.push_back(std::move(gs));
  }
  return out;
}

Result<storage::SnapshotRow> Service::Row(const StoreCaller& c, const SnapshotRef& ref) {
  CAIRN_RETURN_IF_ERROR(c.sync->Refresh());
  auto row = server_->catalog()->GetSnapshot(c.store_name, ref);
  if (row.status().IsNotFound()) return Status::NotFound("no snapshot " + ref.ToString());
  return row;
}

Status Service::DeleteSnapshot(const StoreCaller& c, const SnapshotRef& ref) {
  CAIRN_RETURN_IF_ERROR(c.authorizer().Check(Action::kDelete));
  CAIRN_RETURN_IF_ERROR(DeleteSnapshotIfUnused(*c.store, c.store_name, server_->sessions(), ref));
  server_->usage()->MarkDirty(c.store_name);
  return Status::OK();
}

Result<storage::SnapshotRow> Service::SetProtected(const StoreCaller& c, const SnapshotRef& ref,
                                                   bool on) {
  CAIRN_RETURN_IF_ERROR(c.authorizer().Check(Action::kProtect));
  CAIRN_RETURN_IF_ERROR(c.store->SetProtected(ref, on));
  return Row(c, ref);
}

Result<storage::SnapshotRow> Service::SetNotes(const StoreCaller& c, const SnapshotRef& ref,
                                               const std::string& notes) {
  CAIRN_RETURN_IF_ERROR(CheckGroup(c, Action::kNotes, ref.group));
  if (notes.size() > 64 * 1024) return Status::InvalidArgument("notes longer than 64 KiB");
  CAIRN_RETURN_IF_ERROR(c.store->SetNotes(ref, notes));
  return Row(c, ref);
}

// ---------------------------------------------------------------------------
// Maintenance

Result<std::string> Service::StartPrune(const StoreCaller& c, const GroupRef& group,
                                        const storage::PruneOptions& options, bool dry_run) {
  CAIRN_RETURN_IF_ERROR(c.authorizer().Check(Action::kPrune));
  // An unknown group is refused now, not as a failed task.
  CAIRN_RETURN_IF_ERROR(c.store->ListSnapshots(group).status());
  CAIRN_ASSIGN_OR_RETURN(MaintenanceContext ctx, server_->Maintenance(c.store_name));
  const std::string who = c.principal.auth_id;
  GroupUsage* usage = server_->usage();
  return server_->runner()->Submit(
      "prune", c.store_name, who, [ctx, group, options, dry_run, who, usage](Task& task) {
        auto report = PruneGroup(*ctx.store, ctx.store_name, group, options, ctx.tz, dry_run,
                                 ctx.sessions);
        if (!dry_run) usage->MarkDirty(ctx.store_name);
        if (!report.ok()) return Outcome(report.status(), "", nullptr);
        task.Log(report->ToText());
        spdlog::info("prune {} by {}: {} kept, {} removed{}", group.ToString(), who, report->kept,
                     report->removed, dry_run ? " (dry run)" : "");
        return Outcome(report->failed == 0 ? Status::OK() : Status::IOError("some removals failed"),
                       fmt::format("{} kept, {} removed", report->kept, report->removed),
                       report->ToJson());
      });
}

Result<std::string> Service::StartGc(const StoreCaller& c, const storage::GcOptions& options) {
  CAIRN_RETURN_IF_ERROR(c.authorizer().Check(Action::kRunGc));
  CAIRN_ASSIGN_OR_RETURN(MaintenanceContext ctx, server_->Maintenance(c.store_name));
  spdlog::info("garbage collection of {} started by {}", c.store_name, c.principal.auth_id);
  GroupUsage* usage = server_->usage();
  return server_->runner()->Submit(
      "gc", c.store_name, c.principal.auth_id, [ctx, options, usage](Task& task) {
        auto r = RunGarbageCollection(*ctx.store, ctx.store_name, ctx.sessions, options);
        if (!options.dry_run) usage->MarkDirty(ctx.store_name);
        if (!r.ok()) return Outcome(r.status(), "", nullptr);
        task.Log(GcResultText(*r));
        spdlog::info("garbage collection of {}: removed {} chunks, {} pending", ctx.store_name,
                     r->removed_chunks, r->pending_chunks);
        return Outcome(Status::OK(),
                       fmt::format("removed {} chunks, {} pending", r->removed_chunks,
                                   r->pending_chunks),
                       r->ToJson());
      });
}

Result<storage::GcResult> Service::GcStatus(const StoreCaller& c) {
  CAIRN_RETURN_IF_ERROR(c.authorizer().Check(Action::kGcStatus));
  return storage::LastGcResult(*c.store);
}

Result<std::string> Service::StartVerify(const StoreCaller& c, const std::string& target,
                                         const nlohmann::json& options) {
  if (target.empty()) {
    CAIRN_RETURN_IF_ERROR(c.authorizer().Check(Action::kVerifyStore));
  } else {
    auto ref = SnapshotRef::Parse(target);
    GroupRef group;
    if (ref.ok()) {
      group = ref->group;
    } else {
      CAIRN_ASSIGN_OR_RETURN(group, GroupRef::Parse(target));
    }
    CAIRN_RETURN_IF_ERROR(CheckGroup(c, Action::kRead, group));
  }
  CAIRN_ASSIGN_OR_RETURN(MaintenanceContext ctx, server_->Maintenance(c.store_name));
  return server_->runner()->Submit(
      "verify", c.store_name, c.principal.auth_id, [ctx, target, options](Task& task) {
        auto r = RunVerify(ctx, target, options, &task);
        if (!r.ok()) return Outcome(r.status(), "", nullptr);
        Status s = r->snapshots_failed == 0
                       ? Status::OK()
                       : Status::Corruption(fmt::format("{} snapshot(s) failed verification",
                                                        r->snapshots_failed));
        return Outcome(s, fmt::format("{} ok, {} failed", r->snapshots_ok, r->snapshots_failed),
                       r->ToJson());
      });
}

// ---------------------------------------------------------------------------
// Tasks and jobs

bool Service::MaySeeTask(const Principal& p, const TaskInfo& t) {
  if (t.auth_id == p.auth_id) return true;
  RoleSet roles = server_->auth()->RolesOn(p, t.store.empty() ? "*" : t.store);
  return Authorizer(roles).Allows(Action::kSeeTasks);
}

Result<std::vector<TaskInfo>> Service::ListTasks(const Principal& p, size_t limit) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<TaskInfo> tasks, server_->tasks()->List(limit));
  std::erase_if(tasks, [&](const TaskInfo& t) { return !MaySeeTask(p, t); });
  return tasks;
}

Result<TaskInfo> Service::GetTask(const Principal& p, const std::string& id) {
  CAIRN_ASSIGN_OR_RETURN(TaskInfo t, server_->tasks()->Get(id));
  if (!MaySeeTask(p, t)) return Status::NotFound("no task " + t.id);
  return t;
}

Result<std::string> Service::ReadTaskLog(const Principal& p, const TaskInfo& task,
                                         uint64_t offset) {
  if (!MaySeeTask(p, task)) return Status::NotFound("no task " + task.id);
  return server_->tasks()->ReadLog(task.id, offset, 1 << 20);
}

Result<std::vector<std::pair<JobConfig, std::optional<int64_t>>>> Service::ListJobs(
    const Principal& p) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<JobConfig> jobs, server_->jobs()->List());
  std::vector<std::pair<JobConfig, std::optional<int64_t>>> out;
  for (auto& j : jobs) {
    if (!Authorizer(server_->auth()->RolesOn(p, j.store)).Allows(Action::kListJobs)) continue;
    auto next = server_->jobs()->NextRun(j);
    out.emplace_back(std::move(j), next);
  }
  return out;
}

Result<std::string> Service::RunJob(const Principal& p, const std::string& id) {
  CAIRN_ASSIGN_OR_RETURN(JobConfig job, server_->jobs()->Get(id));
  CAIRN_RETURN_IF_ERROR(Authorizer(server_->auth()->RolesOn(p, job.store)).Check(Action::kRunJob));
  return server_->jobs()->RunNow(job.id, p.auth_id);
}

Status Service::CheckJobStore(const Principal& p, const std::string& store) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store));
  CAIRN_RETURN_IF_ERROR(
      Authorizer(server_->auth()->RolesOn(p, store)).Check(Action::kEditJobs).WithContext(store));
  return server_->Store(store).status();
}

Status Service::CheckSyncJob(const Principal& p, const JobConfig& job) {
  if (!IsSyncJobKind(job.kind)) return Status::OK();
  CAIRN_RETURN_IF_ERROR(Authorizer(server_->auth()->RolesOn(p, "*"))
                            .Check(Action::kAccess)
                            .WithContext("sync and push jobs use a remote's credentials"));
  CAIRN_ASSIGN_OR_RETURN(SyncOptions o, SyncOptions::FromJson(job.kind, job.options));
  return server_->remotes()->Get(o.remote).status();
}

Result<JobConfig> Service::AddJob(const Principal& p, JobConfig job) {
  CAIRN_RETURN_IF_ERROR(CheckJobStore(p, job.store));
  CAIRN_ASSIGN_OR_RETURN(job.options, JobOptionsFromJson(job.kind, job.options));
  CAIRN_RETURN_IF_ERROR(CheckSyncJob(p, job));
  job.created = 0;
  job.last_run = 0;
  CAIRN_RETURN_IF_ERROR(server_->jobs()->Add(job));
  spdlog::info("job {} ({} of {}, \"{}\") added by {}", job.id, job.kind, job.store, job.schedule,
               p.auth_id);
  return server_->jobs()->Get(job.id);
}

Result<JobConfig> Service::UpdateJob(const Principal& p, const std::string& id,
                                     const JobPatch& patch) {
  CAIRN_ASSIGN_OR_RETURN(JobConfig job, server_->jobs()->Get(id));
  CAIRN_RETURN_IF_ERROR(CheckJobStore(p, job.store));
  CAIRN_RETURN_IF_ERROR(CheckSyncJob(p, job));
  if (patch.kind) job.kind = *patch.kind;
  if (patch.store) job.store = *patch.store;
  if (patch.schedule) job.schedule = *patch.schedule;
  if (patch.options) job.options = *patch.options;
  if (patch.enabled) job.enabled = *patch.enabled;
  CAIRN_RETURN_IF_ERROR(CheckJobStore(p, job.store));
  CAIRN_ASSIGN_OR_RETURN(job.options, JobOptionsFromJson(job.kind, job.options));
  CAIRN_RETURN_IF_ERROR(CheckSyncJob(p, job));
  CAIRN_RETURN_IF_ERROR(server_->jobs()->Update(job));
  spdlog::info("job {} changed by {}", id, p.auth_id);
  return server_->jobs()->Get(id);
}

Status Service::RemoveJob(const Principal& p, const std::string& id) {
  CAIRN_ASSIGN_OR_RETURN(JobConfig job, server_->jobs()->Get(id));
  CAIRN_RETURN_IF_ERROR(CheckJobStore(p, job.store));
  CAIRN_RETURN_IF_ERROR(server_->jobs()->Remove(id));
  spdlog::info("job {} removed by {}", id, p.auth_id);
  return Status::OK();
}

std::optional<int64_t> Service::NextJobRun(const JobConfig& job) {
  return server_->jobs()->NextRun(job);
}

Result<std::vector<int64_t>> Service::NextRuns(const Principal& p, const std::string& schedule,
                                               int64_t from, int count) {
  bool admin = false;
  for (const auto& name : server_->StoreNames()) {
    admin = admin || server_->auth()->RolesOn(p, name).Has(Role::kAdmin);
  }
  if (!admin) return Status::PermissionDenied("calendar previews need the Admin role");
  if (count < 1 || count > 100) return Status::InvalidArgument("count must be 1 to 100");
  CAIRN_ASSIGN_OR_RETURN(CalendarEvent event, CalendarEvent::Parse(schedule));
  return cairn::server::NextRuns(event, from, count, server_->time_zone());
}

// ---------------------------------------------------------------------------
// Access

Status Service::CheckAccessAdmin(const Principal& p) {
  return Authorizer(server_->auth()->RolesOn(p, "*")).Check(Action::kAccess);
}

Result<std::vector<std::string>> Service::ListUsers(const Principal& p) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  return server_->auth()->ListUsers();
}

Status Service::AddUser(const Principal& p, const std::string& user,
                        const std::optional<std::string>& password) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  // A bad password is refused before the user is added: nothing changes.
  if (password) CAIRN_RETURN_IF_ERROR(CheckPasswordShape(*password));
  CAIRN_RETURN_IF_ERROR(server_->auth()->AddUser(user));
  spdlog::info("user {} added by {}", user, p.auth_id);
  if (password) {
    if (Status s = server_->auth()->SetPassword(user, *password); !s.ok()) {
      spdlog::error("user {} added without a password: {}", user, s.ToString());
      return s;
    }
  }
  return Status::OK();
}

Status Service::SetPassword(const Principal& p, const std::string& user,
                            const std::string& password) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  CAIRN_RETURN_IF_ERROR(CheckPasswordShape(password));
  CAIRN_RETURN_IF_ERROR(server_->auth()->SetPassword(user, password));
  spdlog::info("password of {} set by {}", user, p.auth_id);
  return Status::OK();
}

Result<std::vector<std::string>> Service::ListTokens(const Principal& p) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  return server_->auth()->ListTokens();
}

Result<std::string> Service::CreateToken(const Principal& p, const std::string& auth_id) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  CAIRN_ASSIGN_OR_RETURN(std::string secret, server_->auth()->CreateToken(auth_id));
  spdlog::info("token {} created by {}", auth_id, p.auth_id);
  return secret;
}

Status Service::DeleteToken(const Principal& p, const std::string& auth_id) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  CAIRN_RETURN_IF_ERROR(server_->auth()->DeleteToken(auth_id));
  spdlog::info("token {} deleted by {}", auth_id, p.auth_id);
  return Status::OK();
}

Result<std::vector<AclEntry>> Service::ListAcl(const Principal& p) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  return server_->auth()->ListAcl();
}

Status Service::SetAcl(const Principal& p, const std::string& store, const std::string& auth_id,
                       std::optional<Role> role) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  if (store != "*") {
    CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store));
    CAIRN_RETURN_IF_ERROR(server_->Store(store).status());
  }
  CAIRN_RETURN_IF_ERROR(ValidateAuthId(auth_id));
  AuthStore* auth = server_->auth();
  const bool is_token = auth_id.find('!') != std::string::npos;
  CAIRN_ASSIGN_OR_RETURN(auto known, is_token ? auth->ListTokens() : auth->ListUsers());
  if (std::find(known.begin(), known.end(), auth_id) == known.end()) {
    return Status::NotFound(std::string(is_token ? "no token " : "no user ") + auth_id);
  }
  if (!role) {
    CAIRN_RETURN_IF_ERROR(auth->RemoveAcl(store, auth_id));
    spdlog::info("role of {} on {} removed by {}", auth_id, store, p.auth_id);
    return Status::OK();
  }
  CAIRN_RETURN_IF_ERROR(auth->SetAcl(store, auth_id, *role));
  spdlog::info("{} granted {} on {} by {}", auth_id, RoleName(*role), store, p.auth_id);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Remotes

Result<std::vector<Remote>> Service::ListRemotes(const Principal& p) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  return server_->remotes()->List();
}

Result<Remote> Service::AddRemote(const Principal& p, const std::string& name,
                                  const std::string& url, const std::string& fingerprint,
                                  const std::string& token) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  CAIRN_ASSIGN_OR_RETURN(Remote remote, MakeRemote(name, url, fingerprint, token));
  CAIRN_RETURN_IF_ERROR(server_->remotes()->Add(remote));
  spdlog::info("remote {} ({}, token {}) added by {}", name, remote.Url(), remote.auth_id,
               p.auth_id);
  return server_->remotes()->Get(name);
}

Status Service::RemoveRemote(const Principal& p, const std::string& name) {
  CAIRN_RETURN_IF_ERROR(CheckAccessAdmin(p));
  CAIRN_RETURN_IF_ERROR(server_->remotes()->Get(name).status());
  CAIRN_ASSIGN_OR_RETURN(std::vector<JobConfig> jobs, server_->jobs()->List());
  CAIRN_RETURN_IF_ERROR(CheckRemoteUnused(jobs, name));
  CAIRN_RETURN_IF_ERROR(server_->remotes()->Remove(name));
  spdlog::info("remote {} removed by {}", name, p.auth_id);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Backup sessions

Result<StartBackupResult> Service::StartBackup(const StoreCaller& c, const GroupRef& group,
                                               std::optional<int64_t> time,
                                               std::optional<std::string> fingerprint) {
  if (!c.roles.Has(Role::kAdmin) && !c.roles.Has(Role::kBackup)) {
    return c.authorizer().Check(Action::kBackup);
  }
  CAIRN_RETURN_IF_ERROR(group.Validate());
  // The group's owner is whoever backs it up first; others (but Admin) may
  // not. A new group's owner is decided by an exclusive create, so of two
  // tokens starting its first backup at once exactly one becomes the owner,
  // and only the owner gets the session.
  auto owner = c.store->GetOwner(group);
  if (!owner.ok() && owner.status().IsNotFound()) {
    owner = c.store->SetOwnerIfAbsent(group, c.principal.auth_id);
  }
  if (!owner.ok()) return owner.status();
  CAIRN_RETURN_IF_ERROR(c.authorizer()
                            .Check(Action::kBackup, OwnsGroup(c.principal, *owner))
                            .WithContext(group.ToString()));
  CAIRN_ASSIGN_OR_RETURN(StartBackupResult started,
                         server_->sessions()->StartBackup(c.store_name, c.store, group, time,
                                                          c.principal.auth_id, Now(),
                                                          std::move(fingerprint)));
  spdlog::info("backup {} of {} started by {}", started.session->id(),
               started.session->ref().ToString(), c.principal.auth_id);
  return started;
}

Result<std::shared_ptr<BackupSession>> Service::Backup(const Principal& p, const std::string& id) {
  return server_->sessions()->GetBackup(id, p.auth_id, Now());
}

Result<FinishedBackup> Service::FinishBackup(const std::shared_ptr<BackupSession>& s,
                                             nlohmann::json client,
                                             std::optional<storage::CryptInfo> crypt) {
  // The catalog learns of the commit from the datastore (CatalogSync).
  CAIRN_RETURN_IF_ERROR(s->Finish(std::move(client), std::move(crypt)).status());
  FinishedBackup out{s->ref(), s->stats()};
  server_->sessions()->EndBackup(s->id());
  server_->usage()->MarkDirty(s->store_name());
  // "Verify new snapshots right after backup", when the store asks for it.
  if (auto verify_new = server_->settings()->VerifyNew(s->store_name());
      verify_new.ok() && *verify_new) {
    if (auto ctx = server_->Maintenance(s->store_name()); ctx.ok()) {
      const std::string target = s->ref().ToString();
      auto queued = server_->runner()->Submit(
          "verify", s->store_name(), "verify-new", [ctx = *ctx, target](Task& task) {
            auto r = RunVerify(ctx, target, nlohmann::json::object(), &task);
            if (!r.ok()) return Outcome(r.status(), "", nullptr);
            return Outcome(r->snapshots_failed == 0
                               ? Status::OK()
                               : Status::Corruption("the new snapshot failed verification"),
                           "verified", r->ToJson());
          });
      if (!queued.ok()) spdlog::warn("verify-new of {}: {}", target, queued.status().ToString());
    }
  }
  const BackupStats& st = out.stats;
  spdlog::info("backup {} committed {}: {} chunks uploaded ({} new), {} bytes", s->id(),
               s->ref().ToString(), st.chunks_uploaded, st.chunks_new, st.bytes_uploaded);
  return out;
}

void Service::EndBackup(const std::shared_ptr<BackupSession>& s) {
  server_->sessions()->EndBackup(s->id());
}

// ---------------------------------------------------------------------------
// Reader sessions

Result<std::shared_ptr<ReaderSession>> Service::OpenReader(const StoreCaller& c,
                                                           const SnapshotRef& ref) {
  CAIRN_RETURN_IF_ERROR(CheckGroup(c, Action::kRead, ref.group));
  return server_->sessions()->StartReader(c.store_name, c.store, ref, c.principal.auth_id, Now());
}

Result<std::shared_ptr<ReaderSession>> Service::Reader(const Principal& p, const std::string& id) {
  return server_->sessions()->GetReader(id, p.auth_id, Now());
}

void Service::CloseReader(const std::shared_ptr<ReaderSession>& r) {
  server_->sessions()->EndReader(r->id());
}

Result<std::unique_ptr<ImageDownload>> Service::OpenDownload(const StoreCaller& c,
                                                             const SnapshotRef& ref,
                                                             const std::string& archive) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kArchive, archive));
  CAIRN_ASSIGN_OR_RETURN(auto reader, OpenReader(c, ref));
  if (reader->manifest().crypt) {
    // The server holds no key: it cannot make the image.
    CloseReader(reader);
    return Status::InvalidArgument("snapshot " + ref.ToString() + " is encrypted with key " +
                                   reader->manifest().crypt->fingerprint +
                                   ": restore it with `cairn restore` and that key");
  }
  return ImageDownload::Open(std::move(reader), server_->sessions(), archive);
}

}  // namespace cairn::server
