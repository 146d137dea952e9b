// cairn bitmaps --qmp SOCKET [--id ID]: each disk's bitmap and whether the
// next backup is incremental; cairn cleanup --qmp SOCKET: removes Cairn's
// bitmaps and leftover jobs from a VM.

#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/qmp_client.h"
#include "client/vm_backup.h"

namespace cairn::client {
namespace {

using nlohmann::json;

struct BitmapsFlags {
  std::string qmp, id;
};

// One disk of DescribeBitmaps' answer.
void PrintDisk(const json& d) {
  std::cout << d.value("node", "") << " (" << d.value("driver", "") << ", "
            << HumanSize(d.value("size", uint64_t{0})) << ") archive " << d.value("archive", "")
            << "\n";
  const json bitmaps = d.value("bitmaps", json::array());
  for (const auto& b : bitmaps) {
    std::cout << "  bitmap " << b.value("name", "") << "  "
              << (b.value("recording", false) ? "recording" : "disabled")
              << (b.value("persistent", false) ? ", persistent" : ", transient")
              << (b.value("inconsistent", false) ? ", INCONSISTENT" : "") << ", dirty "
              << HumanSize(b.value("dirty-bytes", uint64_t{0})) << "\n";
  }
  if (bitmaps.empty()) std::cout << "  no Cairn bitmap\n";
  std::cout << "  next backup: " << d.value("next", "") << " — " << d.value("reason", "") << "\n";
}

int RunBitmaps(const GlobalOptions& global, const BitmapsFlags& flags) {
  // The server is asked only with --id; without it a repository is optional.
  auto repo = global.Resolve();
  if (!flags.id.empty() && !repo.ok()) return Fail(repo.status());
  auto disks = DescribeBitmaps(repo.ok() ? &*repo : nullptr, flags.qmp, flags.id);
  if (!disks.ok()) return Fail(disks.status());
  if (global.json()) {
    std::cout << disks->dump(2) << "\n";
    return 0;
  }
  for (const auto& d : *disks) PrintDisk(d);
  return 0;
}

int RunCleanup(const GlobalOptions& global, const std::string& qmp_socket) {
  auto qmp = QmpClient::Connect(qmp_socket);
  if (!qmp.ok()) return Fail(qmp.status());
  std::vector<std::string> actions;
  Status s = Cleanup(**qmp, &actions);
  if (global.json()) {
    std::cout << json({{"actions", actions}}).dump(2) << "\n";
  } else {
    for (const auto& a : actions) std::cout << a << "\n";
    if (actions.empty()) std::cout << "nothing of Cairn's on this VM\n";
  }
  return s.ok() ? 0 : Fail(s);
}

}  // namespace

void AddBitmapCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<BitmapsFlags>();
  auto* bitmaps = app.add_subcommand(
      "bitmaps", "each disk's bitmap and whether the next backup is incremental");
  bitmaps->add_option("--qmp", flags->qmp, "QEMU's QMP socket")->required();
  bitmaps->add_option("--id", flags->id, "the VM's id, to check against the server's snapshots");
  commands->push_back({bitmaps, [&global, flags] { return RunBitmaps(global, *flags); }});

  auto cleanup_qmp = std::make_shared<std::string>();
  auto* cleanup =
      app.add_subcommand("cleanup", "remove Cairn's bitmaps and leftover jobs from a VM");
  cleanup->add_option("--qmp", *cleanup_qmp, "QEMU's QMP socket")->required();
  commands->push_back(
      {cleanup, [&global, cleanup_qmp] { return RunCleanup(global, *cleanup_qmp); }});
}

}  // namespace cairn::client
