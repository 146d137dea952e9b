// `cairn-server prune STORE GROUP`: prunes one group offline (server stopped;
// else `cairn prune` through the API).

#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "server/admin_cli.h"
#include "server/maintenance.h"
#include "storage/names.h"

namespace cairn::server {
namespace {

struct PruneCommand {
  CLI::App* cmd = nullptr;
  std::string store, group;
  std::optional<uint64_t> keep[6];
  bool dry_run = false;
  std::string output = "text", tz = "UTC";

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("prune", "prune one group (server stopped; else use the API)");
    cmd->add_option("STORE", store)->required();
    cmd->add_option("GROUP", group, "e.g. vm/100 or ns/a:vm/100")->required();
    for (int i = 0; i < 6; ++i) cmd->add_option(kKeepNames[i], keep[i]);
    cmd->add_flag("--dry-run", dry_run, "show what would be removed, remove nothing");
    cmd->add_option("--time-zone", tz, "zone of the periods (default UTC)");
    cmd->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return FailCommand(row.status());
    auto parsed_group = storage::GroupRef::Parse(group);
    if (!parsed_group.ok()) return FailCommand(parsed_group.status());
    auto zone = storage::TimeZone::Parse(tz);
    if (!zone.ok()) return FailCommand(zone.status());
    storage::PruneOptions o;
    o.keep_last = keep[0];
    o.keep_hourly = keep[1];
    o.keep_daily = keep[2];
    o.keep_weekly = keep[3];
    o.keep_monthly = keep[4];
    o.keep_yearly = keep[5];
    auto ds = OpenOffline(admin.catalog.get(), store,
                                         "is the server running? then prune through the API");
    if (!ds.ok()) return FailCommand(ds.status());
    auto report = PruneGroup(*ds->store, store, *parsed_group, o, *zone, dry_run,
                                            nullptr);
    if (!report.ok()) return FailCommand(report.status());
    if (output == "json") {
      std::cout << report->ToJson().dump(2) << "\n";
    } else {
      std::cout << report->ToText();
    }
    return report->failed == 0 ? 0 : 1;
  }
};

}  // namespace

void AddPruneCommand(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<PruneCommand>();
  c->Add(app);
  commands->push_back({c->cmd, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
}

}  // namespace cairn::server
