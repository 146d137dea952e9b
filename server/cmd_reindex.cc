// `cairn-server reindex STORE`: rebuilds a datastore's catalog rows from its
// folder (server stopped).

#include <iostream>
#include <memory>
#include <string>

#include "server/admin_cli.h"
#include "storage/catalog.h"
#include "storage/datastore.h"

namespace cairn::server {
namespace {

// Opens the datastore in `path` for an offline command; `busy_hint` says
// what to do when the server holds it.
Result<std::unique_ptr<storage::Datastore>> OpenStore(const Admin& admin, const std::string& path,
                                                      const std::string& busy_hint) {
  auto store = storage::Datastore::Open(admin.env, path);
  if (!store.ok()) return store.status().WithContext("open " + path + " " + busy_hint);
  return store;
}

struct ReindexCommand {
  CLI::App* cmd = nullptr;
  std::string store;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("reindex", "rebuild a datastore's catalog rows from its folder");
    cmd->add_option("STORE", store)->required();
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return FailCommand(row.status());
    auto ds = OpenStore(admin, row->path, "(is the server running? stop it first)");
    if (!ds.ok()) return FailCommand(ds.status());
    storage::ReindexReport report;
    if (Status s = admin.catalog->Reindex(store, **ds, &report); !s.ok()) return FailCommand(s);
    // Rebuilt with the store locked: in step until someone opens it again.
    if (Status s = admin.catalog->SetInStep(store, true); !s.ok()) return FailCommand(s);
    std::cout << "reindexed " << store << ": " << report.groups << " groups, " << report.snapshots
              << " snapshots\n";
    for (const auto& [ref, st] : report.skipped) {
      std::cout << "  skipped " << ref.ToString() << ": " << st.ToString() << "\n";
    }
    return report.skipped.empty() ? 0 : 1;
  }
};

}  // namespace

void AddReindexCommand(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<ReindexCommand>();
  c->Add(app);
  commands->push_back({c->cmd, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
}

}  // namespace cairn::server
