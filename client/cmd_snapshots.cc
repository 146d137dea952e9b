// cairn snapshots [--id ID]: the snapshots of the datastore, or of vm/ID,
// the newest first (in JSON too).

#include <algorithm>
#include <iostream>
#include <memory>
#include <numeric>

#include "client/cli.h"
#include "client/repository_client.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

struct SnapshotsFlags {
  std::string id;
};

// The time part of "vm/100/2026-11-21T17:50:38Z": ISO 8601 in UTC, so it
// sorts as text (also for an entry whose manifest could not be read).
std::string_view TimeOf(const std::string& snapshot) {
  size_t slash = snapshot.rfind('/');
  return slash == std::string::npos ? std::string_view(snapshot)
                                    : std::string_view(snapshot).substr(slash + 1);
}

// Newest first; the server lists them oldest first, group by group.
void SortNewestFirst(Answer<std::vector<SnapshotInfo>>* answer) {
  std::vector<SnapshotInfo>& list = answer->value;
  std::vector<size_t> order(list.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&list](size_t a, size_t b) {
    auto ta = TimeOf(list[a].snapshot), tb = TimeOf(list[b].snapshot);
    if (ta != tb) return ta > tb;
    return list[a].snapshot > list[b].snapshot;
  });
  std::vector<SnapshotInfo> sorted;
  sorted.reserve(list.size());
  for (size_t i : order) sorted.push_back(std::move(list[i]));
  list = std::move(sorted);
  nlohmann::json* array = answer->json.is_array() ? &answer->json : nullptr;
  if (!array && answer->json.is_object() && answer->json.contains("snapshots")) {
    array = &answer->json["snapshots"];
  }
  if (array && array->is_array() && array->size() == order.size()) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i : order) out.push_back(std::move((*array)[i]));
    *array = std::move(out);
  }
}

int RunSnapshots(const GlobalOptions& global, const SnapshotsFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RepositoryClient client(*repo);
  std::optional<std::string> group;
  if (!flags.id.empty()) {
    if (Status s = storage::ValidateName(storage::NameKind::kBackupId, flags.id); !s.ok()) {
      return Fail(s);
    }
    group = "vm/" + flags.id;
  }
  auto snapshots = client.ListSnapshots(group);
  if (!snapshots.ok()) return Fail(snapshots.status());
  SortNewestFirst(&*snapshots);
  if (global.json()) {
    std::cout << snapshots->json.dump(2) << "\n";
    return 0;
  }
  for (const SnapshotInfo& s : snapshots->value) {
    if (!s.error.empty()) {
      std::cout << s.snapshot << "  ERROR " << s.error << "\n";
      continue;
    }
    std::cout << s.snapshot << "  " << HumanSize(s.size)
              << "  verify:" << (s.verify ? s.verify->state : "-")
              << (s.is_protected ? "  protected" : "")
              << (s.encrypted ? "  encrypted:" + s.fingerprint.value_or("?") : "") << "\n";
  }
  return 0;
}

}  // namespace

void AddSnapshotsCommand(CLI::App& app, const GlobalOptions& global,
                         std::vector<Command>* commands) {
  auto flags = std::make_shared<SnapshotsFlags>();
  auto* cmd = app.add_subcommand("snapshots", "list snapshots");
  cmd->add_option("--id", flags->id, "only the group vm/ID");
  commands->push_back({cmd, [&global, flags] { return RunSnapshots(global, *flags); }});
}

}  // namespace cairn::client
