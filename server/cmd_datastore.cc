// `cairn-server datastore create|list|set`: the datastores of the data
// directory (their rows in cairn.db, their settings in server.db).

#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "server/admin_cli.h"
#include "server/server_db.h"
#include "storage/datastore.h"
#include "storage/names.h"

namespace cairn::server {
namespace {

constexpr const char* kSyncLevelHelp =
    "how new chunks are made durable before a snapshot commits: file (fsync each), "
    "filesystem (one syncfs before the commit), none (unsafe: tests only)";

struct DatastoreCommand {
  CLI::App* create = nullptr;
  CLI::App* list = nullptr;
  CLI::App* set = nullptr;
  std::string name, path;
  std::string output = "text";
  std::string set_name, verify_new, set_group;
  std::string sync_level;    // "": not given (storage/FORMAT.md "Sync level")
  int64_t stale_after = -1;  // -1: not given

  void Add(CLI::App& app) {
    auto* ds = app.add_subcommand("datastore", "manage datastores");
    ds->require_subcommand(1);
    create = ds->add_subcommand("create", "create and register a datastore");
    create->add_option("NAME", name)->required();
    create->add_option("PATH", path)->required();
    create->add_option("--sync-level", sync_level, kSyncLevelHelp)
        ->check(CLI::IsMember({"file", "filesystem", "none"}));
    list = ds->add_subcommand("list", "list datastores");
    list->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
    set = ds->add_subcommand("set", "change a datastore setting");
    set->add_option("NAME", set_name)->required();
    set->add_option("--verify-new", verify_new, "verify each new snapshot right after its backup")
        ->check(CLI::IsMember({"on", "off"}));
    set->add_option("--stale-after", stale_after,
                    "seconds after its newest snapshot that a group counts as stale (default "
                    "93600; with --group, 0 returns the group to the store's value)")
        ->check(CLI::Range(int64_t{0}, kMaxStaleAfterSeconds));
    set->add_option("--group", set_group, "set --stale-after for this group only ([NS:]TYPE/ID)");
    set->add_option("--sync-level", sync_level, kSyncLevelHelp)
        ->check(CLI::IsMember({"file", "filesystem", "none"}));
  }

  bool parsed() const { return create->parsed() || list->parsed() || set->parsed(); }

  int Execute(const Admin& admin) {
    if (create->parsed()) return Create(admin);
    if (set->parsed()) return Set(admin);
    return List(admin);
  }

  int Create(const Admin& admin) {
    if (Status s = storage::Datastore::Create(admin.env, path); !s.ok()) return FailCommand(s);
    if (!sync_level.empty()) {
      auto level = cairn::storage::ParseSyncLevel(sync_level);
      Status s = level.ok() ? cairn::storage::Datastore::SetSyncLevel(admin.env, path, *level)
                            : level.status();
      if (!s.ok()) return FailCommand(s);
    }
    if (Status s = admin.catalog->AddDatastore(name, path); !s.ok()) return FailCommand(s);
    std::cout << "datastore " << name << " created at " << path
              << " (a running server opens it at its first use)\n";
    return 0;
  }

  int Set(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(set_name);
    if (!row.ok()) return FailCommand(row.status());
    auto settings = StoreSettings::Open(admin.data);
    if (!settings.ok()) return FailCommand(settings.status());
    if (!sync_level.empty()) {
      if (!set_group.empty()) {
        return FailCommand(Status::InvalidArgument("--group goes with --stale-after alone"));
      }
      auto level = storage::ParseSyncLevel(sync_level);
      Status s = level.ok() ? storage::Datastore::SetSyncLevel(admin.env, row->path, *level)
                            : level.status();
      if (!s.ok()) return FailCommand(s);
      std::cout << "datastore " << set_name << ": sync-level " << sync_level
                << " (a running server uses it after a restart)\n";
      if (verify_new.empty() && stale_after < 0) return 0;
    }
    if (verify_new.empty() && stale_after < 0) {
      return FailCommand(
          Status::InvalidArgument("nothing to set: give --verify-new, --stale-after or --sync-level"));
    }
    if (!set_group.empty()) {
      if (stale_after < 0 || !verify_new.empty()) {
        return FailCommand(Status::InvalidArgument("--group goes with --stale-after alone"));
      }
      auto group = storage::GroupRef::Parse(set_group);
      if (!group.ok()) return FailCommand(group.status());
      if (Status s = (*settings)->SetGroupStaleAfter(set_name, *group, stale_after); !s.ok()) {
        return FailCommand(s);
      }
      std::cout << "group " << set_group << " of " << set_name << ": stale-after "
                << stale_after << " s\n";
      return 0;
    }
    if (!verify_new.empty()) {
      if (Status s = (*settings)->SetVerifyNew(set_name, verify_new == "on"); !s.ok()) return FailCommand(s);
      std::cout << "datastore " << set_name << ": verify-new " << verify_new << "\n";
    }
    if (stale_after >= 0) {
      if (Status s = (*settings)->SetStaleAfter(set_name, stale_after); !s.ok()) return FailCommand(s);
      std::cout << "datastore " << set_name << ": stale-after " << stale_after << " s\n";
    }
    return 0;
  }

  int List(const Admin& admin) {
    auto rows = admin.catalog->ListDatastores();
    if (!rows.ok()) return FailCommand(rows.status());
    if (output == "json") {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : *rows) out.push_back({{"name", r.name}, {"path", r.path}});
      std::cout << out.dump(2) << "\n";
    } else {
      for (const auto& r : *rows) std::cout << r.name << "\t" << r.path << "\n";
    }
    return 0;
  }
};

}  // namespace

void AddDatastoreCommands(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<DatastoreCommand>();
  c->Add(app);
  auto run = [c](const std::string& data) {
    return WithAdmin(data, [&](const Admin& admin) { return c->Execute(admin); });
  };
  for (CLI::App* sub : {c->create, c->list, c->set}) commands->push_back({sub, run});
}

}  // namespace cairn::server
