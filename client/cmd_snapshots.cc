// cairn snapshots [--id ID]: the snapshots of the datastore, or of vm/ID.

#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/repository_client.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

struct SnapshotsFlags {
  std::string id;
};

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
