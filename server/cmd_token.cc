// `cairn-server token create USER!NAME`: an API token; its secret is printed once.

#include <iostream>
#include <memory>
#include <string>

#include "server/admin_cli.h"
#include "server/auth_store.h"

namespace cairn::server {
namespace {

struct TokenCommand {
  CLI::App* create = nullptr;
  std::string id;

  void Add(CLI::App& app) {
    auto* token = app.add_subcommand("token", "manage API tokens");
    token->require_subcommand(1);
    create = token->add_subcommand("create", "create USER!NAME and print its secret once");
    create->add_option("ID", id)->required();
  }

  int Execute(const Admin& admin) {
    auto secret = admin.auth->CreateToken(id);
    if (!secret.ok()) return FailCommand(secret.status());
    std::cout << id << ":" << *secret << "\n";
    return 0;
  }
};

}  // namespace

void AddTokenCommands(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<TokenCommand>();
  c->Add(app);
  commands->push_back({c->create, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
}

}  // namespace cairn::server
