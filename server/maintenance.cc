#include "server/maintenance.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "server/session_manager.h"
#include "server/sync.h"
#include "storage/env.h"

namespace cairn::server {
namespace {

// One task log line per line of `text`.
void LogLines(Task& task, const std::string& text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    task.Log(text.substr(pos, nl - pos));
    pos = nl == std::string::npos ? text.size() : nl + 1;
  }
}

}  // namespace

nlohmann::json PruneReport::ToJson() const {
  nlohmann::json snaps = nlohmann::json::array();
  for (const auto& e : entries) {
    nlohmann::json j = {{"snapshot", e.ref.ToString()}, {"time", e.ref.time},
                        {"keep", e.keep}, {"reason", e.reason},
                        {"protected", e.is_protected}, {"removed", e.removed}};
    if (!e.error.empty()) j["error"] = e.error;
    snaps.push_back(j);
  }
  return {{"group", group.ToString()}, {"options", options}, {"time-zone", time_zone},
          {"dry-run", dry_run}, {"kept", kept}, {"removed", removed}, {"failed", failed},
          {"snapshots", snaps}};
}

std::string PruneReport::ToText() const {
  std::string out = fmt::format("prune {} {}{} (periods in time zone {})\n", group.ToString(),
                                options.empty() ? "(no keep option: keeping everything)" : options,
                                dry_run ? " --dry-run" : "", time_zone);
  for (const auto& e : entries) {
    out += fmt::format("{:<7} {}  {}{}\n", e.keep ? "keep" : (dry_run ? "remove" : "removed"),
                       e.ref.ToString(), e.reason, e.error.empty() ? "" : "  ERROR: " + e.error);
  }
  out += fmt::format("{} kept, {} {}{}\n", kept, removed, dry_run ? "to remove" : "removed",
                     failed ? fmt::format(", {} failed", failed) : "");
  return out;
}

Result<PruneReport> PruneGroup(storage::Datastore& store, const std::string& store_name, const storage::GroupRef& group,
                               const storage::PruneOptions& options,
                               const storage::TimeZone& tz, bool dry_run,
                               SessionManager* sessions) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<SnapshotRef> refs, store.ListSnapshots(group));
  std::vector<storage::PruneInput> inputs;
  for (const auto& ref : refs) {
    auto m = store.ReadManifest(ref);
    // A manifest that does not read cannot be known unprotected: keep it.
    inputs.push_back({ref.time, !m.ok() || m->is_protected});
  }
  PruneReport report;
  report.group = group;
  report.options = options.ToString();
  report.time_zone = tz.name();
  report.dry_run = dry_run;
  for (const auto& d : storage::ComputePrune(inputs, options, tz)) {
    PruneEntry e;
    e.ref = SnapshotRef{group, d.time};
    e.keep = d.keep;
    e.is_protected = d.is_protected;
    e.reason = storage::PruneReasonName(d.reason);
    if (!e.keep && dry_run && sessions && sessions->IsInUse(store_name, e.ref)) {
      e.keep = true;
      e.reason = "in use";
    }
    if (!e.keep && !dry_run) {
      Status s = DeleteSnapshotIfUnused(store, store_name, sessions, e.ref);
      if (s.ok()) {
        e.removed = true;
      } else if (s.code() == Status::Code::kConflict) {
        e.keep = true;
        e.reason = "in use";
      } else {
        e.error = s.ToString();
      }
    }
    if (e.keep) {
      ++report.kept;
    } else if (!e.error.empty()) {
      ++report.failed;
    } else {
      ++report.removed;
    }
    report.entries.push_back(std::move(e));
  }
  return report;
}

Status DeleteSnapshotIfUnused(storage::Datastore& store, const std::string& store_name,
                              SessionManager* sessions, const SnapshotRef& ref) {
  if (sessions) CAIRN_RETURN_IF_ERROR(sessions->BeginDelete(store_name, ref));
  Status s = store.DeleteSnapshot(ref);
  if (sessions) sessions->EndDelete(store_name, ref);
  return s;
}

Result<OfflineStore> OpenOffline(storage::Catalog* catalog, const std::string& store_name,
                                 const std::string& hint) {
  CAIRN_ASSIGN_OR_RETURN(storage::DatastoreRow row, catalog->GetDatastore(store_name));
  OfflineStore out;
  auto store = storage::Datastore::Open(storage::Env::Default(), row.path);
  if (!store.ok()) return store.status().WithContext("open " + row.path + " (" + hint + ")");
  out.store = std::move(*store);
  CAIRN_ASSIGN_OR_RETURN(out.sync, storage::CatalogSync::Attach(
                                       catalog, store_name, out.store.get(),
                                       [](const Status& s) {
                                         std::fprintf(stderr, "warning: %s\n", s.ToString().c_str());
                                       }));
  return out;
}

Result<storage::GcResult> RunGarbageCollection(storage::Datastore& store,
                                               const std::string& store_name,
                                               SessionManager* sessions,
                                               storage::GcOptions options) {
  if (sessions != nullptr) {
    // Asked by GC after it took its start time (storage/gc.h says why).
    options.sessions = [sessions, store_name] {
      storage::GcSessions out;
      out.known = sessions->KnownDigests(store_name, &out.oldest_start);
      return out;
    };
  }
  return storage::CollectGarbage(store, options);
}

std::string GcResultText(const storage::GcResult& r) {
  auto mib = [](uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); };
  return fmt::format(
      "garbage collection{}: {} snapshots, {} indexes marked\n"
      "  on disk:  {} chunks, {:.1f} MiB\n"
      "  removed:  {} chunks, {:.1f} MiB\n"
      "  pending:  {} chunks, {:.1f} MiB (unreferenced, inside the grace period)\n"
      "  bad:      {} chunks kept, {} removed\n"
      "  dedup factor {:.2f} ({:.1f} MiB logical), {} ms (mark {} ms, sweep {} ms)\n",
      r.dry_run ? " (dry run)" : "", r.snapshots, r.indexes, r.disk_chunks, mib(r.disk_bytes),
      r.removed_chunks, mib(r.removed_bytes), r.pending_chunks, mib(r.pending_bytes),
      r.bad_chunks, r.bad_removed, r.dedup_factor, mib(r.logical_bytes), r.duration_ms,
      r.mark_ms, r.sweep_ms);
}

Result<storage::VerifyResult> RunVerify(const MaintenanceContext& ctx, const std::string& target,
                                        const nlohmann::json& options, Task* task) {
  std::vector<SnapshotRef> snapshots;
  if (target.empty()) {
    CAIRN_ASSIGN_OR_RETURN(snapshots, storage::SnapshotsToVerify(*ctx.store));
  } else if (auto ref = SnapshotRef::Parse(target); ref.ok()) {
    snapshots.push_back(*ref);
  } else {
    CAIRN_ASSIGN_OR_RETURN(storage::GroupRef g, storage::GroupRef::Parse(target));
    CAIRN_ASSIGN_OR_RETURN(snapshots, storage::SnapshotsToVerify(*ctx.store, g));
  }
  storage::VerifyOptions vo;
  vo.ignore_verified = options.value("ignore-verified", false);
  if (auto it = options.find("outdated-after-days"); it != options.end() && it->is_number_unsigned()) {
    vo.outdated_after_days = it->get<int64_t>();
  }
  // Worker threads are the server's choice, never a request's.
  vo.threads = ctx.verify_threads;
  vo.cancel = ctx.cancel;
  if (task != nullptr) {
    vo.task = task->id();
    vo.log = [task](const std::string& line) { task->Log(line); };
    task->Log(fmt::format("verifying {} snapshot(s) of {}", snapshots.size(),
                          target.empty() ? "datastore " + ctx.store_name : target));
  }
  CAIRN_ASSIGN_OR_RETURN(storage::VerifyResult r, storage::Verify(*ctx.store, snapshots, vo));
  if (task != nullptr) {
    for (const auto& w : r.warnings) task->Warn(w);
    task->Log(fmt::format("{} ok, {} failed, {} skipped; {} chunks checked, {} bad; {} ms",
                          r.snapshots_ok, r.snapshots_failed, r.snapshots_skipped, r.chunks_checked,
                          r.chunks_bad, r.duration_ms));
  }
  return r;
}

Status RunJob(const MaintenanceContext& ctx, const JobConfig& job, Task& task) {
  if (job.kind == "prune") {
    CAIRN_ASSIGN_OR_RETURN(storage::PruneOptions po, PruneOptionsFromJson(job.options));
    std::vector<storage::GroupRef> groups;
    if (job.options.contains("group")) {
      if (!job.options["group"].is_string()) return Status::InvalidArgument("group must be a string");
      CAIRN_ASSIGN_OR_RETURN(storage::GroupRef g, storage::GroupRef::Parse(job.options["group"].get<std::string>()));
      groups.push_back(g);
    } else {
      CAIRN_ASSIGN_OR_RETURN(groups, ctx.store->ListGroups());
    }
    size_t failed = 0;
    for (const auto& g : groups) {
      auto report =
          PruneGroup(*ctx.store, ctx.store_name, g, po, ctx.tz, false, ctx.sessions);
      if (!report.ok()) {
        if (report.status().IsNotFound()) continue;  // group vanished meanwhile
        task.Warn("prune " + g.ToString() + ": " + report.status().ToString());
        ++failed;
        continue;
      }
      LogLines(task, report->ToText());
      failed += report->failed;
    }
    return failed == 0 ? Status::OK() : Status::IOError(fmt::format("{} removal(s) failed", failed));
  }
  if (job.kind == "gc") {
    storage::GcOptions go;
    if (auto it = job.options.find("grace-seconds"); it != job.options.end() && it->is_number_unsigned()) {
      go.grace_seconds = it->get<int64_t>();
    }
    CAIRN_ASSIGN_OR_RETURN(storage::GcResult r,
                           RunGarbageCollection(*ctx.store, ctx.store_name, ctx.sessions, go));
    LogLines(task, GcResultText(r));
    return Status::OK();
  }
  if (job.kind == "verify") {
    CAIRN_ASSIGN_OR_RETURN(storage::VerifyResult r,
                           RunVerify(ctx, job.options.value("target", ""), job.options, &task));
    if (r.snapshots_failed > 0) {
      return Status::Corruption(fmt::format("{} snapshot(s) failed verification", r.snapshots_failed));
    }
    return Status::OK();
  }
  return Status::InvalidArgument("unknown job kind " + job.kind);
}

Result<storage::PruneOptions> PruneOptionsFromJson(const nlohmann::json& j) {
  storage::PruneOptions o;
  const std::pair<const char*, std::optional<uint64_t>*> fields[] = {
      {"keep-last", &o.keep_last},       {"keep-hourly", &o.keep_hourly},
      {"keep-daily", &o.keep_daily},     {"keep-weekly", &o.keep_weekly},
      {"keep-monthly", &o.keep_monthly}, {"keep-yearly", &o.keep_yearly}};
  for (const auto& [key, field] : fields) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_unsigned() || it->get<uint64_t>() > 100000) {
      return Status::InvalidArgument(std::string(key) + " must be a whole number from 0 to 100000");
    }
    *field = it->get<uint64_t>();
  }
  return o;
}

namespace {

Status UnsignedUpTo(const nlohmann::json& j, const char* key, uint64_t max) {
  auto it = j.find(key);
  if (it == j.end()) return Status::OK();
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    return Status::InvalidArgument(fmt::format("{} must be a whole number from 0 to {}", key, max));
  }
  return Status::OK();
}

Status StringWhere(const nlohmann::json& j, const char* key,
                   const std::function<Status(const std::string&)>& check) {
  auto it = j.find(key);
  if (it == j.end()) return Status::OK();
  if (!it->is_string()) return Status::InvalidArgument(std::string(key) + " must be a string");
  return check(it->get<std::string>()).WithContext(key);
}

}  // namespace

Result<nlohmann::json> JobOptionsFromJson(const std::string& kind, const nlohmann::json& j) {
  if (j.is_null()) return nlohmann::json::object();
  if (!j.is_object()) return Status::InvalidArgument("job options must be an object");
  std::vector<std::string> keys;
  if (kind == "prune") {
    keys = {"group", "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly",
            "keep-yearly"};
    CAIRN_RETURN_IF_ERROR(PruneOptionsFromJson(j).status());
    CAIRN_RETURN_IF_ERROR(StringWhere(j, "group", [](const std::string& g) {
      return storage::GroupRef::Parse(g).status();
    }));
  } else if (kind == "gc") {
    keys = {"grace-seconds"};
    CAIRN_RETURN_IF_ERROR(UnsignedUpTo(j, "grace-seconds", 7 * 86400));
  } else if (kind == "verify") {
    keys = {"target", "ignore-verified", "outdated-after-days"};
    CAIRN_RETURN_IF_ERROR(StringWhere(j, "target", [](const std::string& t) {
      if (t.empty() || SnapshotRef::Parse(t).ok()) return Status::OK();
      return storage::GroupRef::Parse(t).status();
    }));
    if (auto it = j.find("ignore-verified"); it != j.end() && !it->is_boolean()) {
      return Status::InvalidArgument("ignore-verified must be true or false");
    }
    CAIRN_RETURN_IF_ERROR(UnsignedUpTo(j, "outdated-after-days", 1000000));
  } else if (kind == "sync" || kind == "push") {
    // Checked and rebuilt by the sync engine (server/sync.h).
    CAIRN_ASSIGN_OR_RETURN(SyncOptions o, SyncOptions::FromJson(kind, j));
    return o.ToJson(kind);
  } else {
    return Status::InvalidArgument("job kind must be prune, gc, verify, sync or push");
  }
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : j.items()) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      return Status::InvalidArgument("a " + kind + " job takes no option \"" + key + "\"");
    }
    if (!value.is_null()) out[key] = value;
  }
  return out;
}

}  // namespace cairn::server
