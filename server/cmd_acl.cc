// `cairn-server acl set`: a role of a user or token on a datastore.

#include <iostream>
#include <memory>
#include <string>

#include "server/admin_cli.h"
#include "server/auth_store.h"
#include "server/authorizer.h"

namespace cairn::server {
namespace {

struct AclCommand {
  CLI::App* set = nullptr;
  std::string store, role, auth;

  void Add(CLI::App& app) {
    auto* acl = app.add_subcommand("acl", "manage roles");
    acl->require_subcommand(1);
    set = acl->add_subcommand("set", "grant a role on a datastore");
    set->add_option("--store", store, "datastore name or *")->required();
    set->add_option("--role", role, "Admin|Backup|Reader|Audit")->required();
    set->add_option("--auth", auth, "USER or USER!TOKEN")->required();
  }

  int Execute(const Admin& admin) {
    auto parsed_role = ParseRole(role);
    if (!parsed_role.ok()) return FailCommand(parsed_role.status());
    if (Status s = admin.auth->SetAcl(store, auth, *parsed_role); !s.ok()) return FailCommand(s);
    std::cout << auth << " has role " << role << " on " << store << "\n";
    return 0;
  }
};

}  // namespace

void AddAclCommands(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<AclCommand>();
  c->Add(app);
  commands->push_back({c->set, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
}

}  // namespace cairn::server
