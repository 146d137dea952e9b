// `cairn-server gc STORE`: garbage collection offline (server stopped; else
// `cairn gc` through the API).

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "server/admin_cli.h"
#include "server/maintenance.h"

namespace cairn::server {
namespace {

struct GcCommand {
  CLI::App* cmd = nullptr;
  std::string store, output = "text";
  bool dry_run = false;
  int64_t grace = storage::kDefaultGcGraceSeconds;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("gc",
                             "collect garbage in a datastore (server stopped; else use the API)");
    cmd->add_option("STORE", store)->required();
    cmd->add_flag("--dry-run", dry_run, "count what would be removed, remove nothing");
    cmd->add_option("--grace-seconds", grace,
                    "keep unreferenced chunks younger than this (default 300)")
        ->check(CLI::Range(int64_t{0}, int64_t{604800}));
    cmd->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return FailCommand(row.status());
    auto ds = OpenOffline(
        admin.catalog.get(), store, "is the server running? then run GC through the API: cairn gc");
    if (!ds.ok()) return FailCommand(ds.status());
    storage::GcOptions options;
    options.dry_run = dry_run;
    options.grace_seconds = grace;
    const bool tty = ::isatty(2);
    if (tty) {
      options.progress = [](storage::GcPhase phase, uint64_t done, uint64_t total) {
        std::fprintf(stderr, "\r%-5s %llu/%llu   ", storage::GcPhaseName(phase),
                     static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
      };
    }
    auto r = RunGarbageCollection(*ds->store, store, nullptr, options);
    if (tty) std::fprintf(stderr, "\r\033[K");
    if (!r.ok()) return FailCommand(r.status());
    if (output == "json") {
      std::cout << r->ToJson().dump(2) << "\n";
    } else {
      std::cout << GcResultText(*r);
    }
    return 0;
  }
};

}  // namespace

void AddGcCommand(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<GcCommand>();
  c->Add(app);
  commands->push_back({c->cmd, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
}

}  // namespace cairn::server
