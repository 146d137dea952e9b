#include "server/service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <ctime>

#include "server/server.h"

namespace cairn::server {
namespace {

using storage::GroupRef;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// Ends a maintenance task: OK (or the given failure), its summary, and its
// structured result.
TaskOutcome Outcome(Status s, std::string summary, nlohmann::json result) {
  return TaskOutcome{std::move(s), std::move(summary), std::move(result)};
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
    if (server_->auth()->RolesOn(p, name).empty()) continue;
    auto store = server_->Store(name);
    if (!store.ok()) continue;
    DatastoreUsage u{name, {}, {}, {}};
    struct statvfs vfs;
    if (::statvfs((*store)->path().c_str(), &vfs) == 0) {
      const uint64_t block = vfs.f_frsize;
      u.total = static_cast<uint64_t>(vfs.f_blocks) * block;
      u.used = *u.total - static_cast<uint64_t>(vfs.f_bfree) * block;
      u.avail = static_cast<uint64_t>(vfs.f_bavail) * block;
    }
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
  return DeleteSnapshotIfUnused(*c.store, c.store_name, server_->sessions(), ref);
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
  return server_->runner()->Submit(
      "prune", c.store_name, who, [ctx, group, options, dry_run, who](Task& task) {
        auto report = PruneGroup(*ctx.store, ctx.store_name, group, options, ctx.tz, dry_run,
                                 ctx.sessions);
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
  return server_->runner()->Submit(
      "gc", c.store_name, c.principal.auth_id, [ctx, options](Task& task) {
        auto r = RunGarbageCollection(*ctx.store, ctx.store_name, ctx.sessions, options);
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

// ---------------------------------------------------------------------------
// Backup sessions

Result<StartBackupResult> Service::StartBackup(const StoreCaller& c, const GroupRef& group,
                                               std::optional<int64_t> time) {
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
                                                          c.principal.auth_id, Now()));
  spdlog::info("backup {} of {} started by {}", started.session->id(),
               started.session->ref().ToString(), c.principal.auth_id);
  return started;
}

Result<std::shared_ptr<BackupSession>> Service::Backup(const Principal& p, const std::string& id) {
  return server_->sessions()->GetBackup(id, p.auth_id, Now());
}

Result<FinishedBackup> Service::FinishBackup(const std::shared_ptr<BackupSession>& s,
                                             nlohmann::json client) {
  // The catalog learns of the commit from the datastore (CatalogSync).
  CAIRN_RETURN_IF_ERROR(s->Finish(std::move(client)).status());
  FinishedBackup out{s->ref(), s->stats()};
  server_->sessions()->EndBackup(s->id());
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

}  // namespace cairn::server
