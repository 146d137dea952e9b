// `cairn-server verify STORE [TARGET]`: verification offline (server stopped;
// else `cairn verify` through the API).

#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "server/admin_cli.h"
#include "server/maintenance.h"

namespace cairn::server {
namespace {

struct VerifyCommand {
  CLI::App* cmd = nullptr;
  std::string store, target, output = "text";
  bool ignore = false;
  std::optional<int64_t> outdated;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("verify", "verify a datastore (server stopped; else use the API)");
    cmd->add_option("STORE", store)->required();
    cmd->add_option("TARGET", target, "a snapshot or group (default: everything)");
    cmd->add_flag("--ignore-verified", ignore);
    cmd->add_option("--outdated-after", outdated, "days");
    cmd->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return FailCommand(row.status());
    auto ds = OpenOffline(
        admin.catalog.get(), store, "is the server running? then verify through the API: cairn verify");
    if (!ds.ok()) return FailCommand(ds.status());
    MaintenanceContext ctx;
    ctx.store = ds->store.get();
    ctx.store_name = store;
    nlohmann::json opts = {{"ignore-verified", ignore}};
    if (outdated) opts["outdated-after-days"] = *outdated;
    auto r = RunVerify(ctx, target, opts, nullptr);
    if (!r.ok()) return FailCommand(r.status());
    if (output == "json") {
      std::cout << r->ToJson().dump(2) << "\n";
    } else {
      std::cout << "verified " << r->snapshots_checked << " snapshot(s): " << r->snapshots_ok
                << " ok, " << r->snapshots_failed << " failed, " << r->snapshots_skipped
                << " skipped; " << r->chunks_checked << " chunks checked, " << r->chunks_bad
                << " bad, " << r->duration_ms << " ms\n";
      for (const auto& f : r->failed) {
        std::cout << "  FAILED " << f.ref.ToString() << ": "
                  << (f.reasons.empty() ? "" : f.reasons.front()) << "\n";
      }
    }
    return r->snapshots_failed == 0 ? 0 : 1;
  }
};

}  // namespace

void AddVerifyCommand(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<VerifyCommand>();
  c->Add(app);
  commands->push_back({c->cmd, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
}

}  // namespace cairn::server
