#include "server/maintenance.h"

#include <fmt/format.h>

namespace cairn::server {

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

Result<PruneReport> PruneGroup(storage::Datastore& store, storage::Catalog* catalog,
                               const std::string& store_name, const storage::GroupRef& group,
                               const storage::PruneOptions& options,
                               const storage::TimeZone& tz, bool dry_run,
                               const std::function<bool(const SnapshotRef&)>& in_use) {
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
    if (!e.keep && in_use && in_use(e.ref)) {
      e.keep = true;
      e.reason = "in use";
    }
    if (!e.keep && !dry_run) {
      Status s = store.DeleteSnapshot(e.ref);
      if (s.ok()) {
        e.removed = true;
        if (catalog) (void)catalog->RemoveSnapshot(store_name, e.ref);
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

}  // namespace cairn::server
