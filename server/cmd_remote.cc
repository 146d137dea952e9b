// `cairn-server remote add|list|remove`: the other servers sync jobs talk to
// (server/remotes.h). Works on the data directory, also while the server
// runs (server.db is shared); the secret read from --token-file is stored
// and never printed.

#include <iostream>

#include "server/admin_cli.h"
#include "server/job_scheduler.h"
#include "server/remotes.h"
#include "server/sync.h"

namespace cairn::server {
namespace {

struct RemoteFlags {
  std::string name, url, fingerprint, token_file;
  std::string output = "text";
};

int AddRemote(const std::string& data, const RemoteFlags& f) {
  auto token = ReadTokenFile(f.token_file);
  if (!token.ok()) return FailCommand(token.status());
  auto remote = MakeRemote(f.name, f.url, f.fingerprint, *token);
  if (!remote.ok()) return FailCommand(remote.status());
  auto remotes = RemoteStore::Open(data);
  if (!remotes.ok()) return FailCommand(remotes.status());
  if (Status s = (*remotes)->Add(*remote); !s.ok()) return FailCommand(s);
  std::cout << "remote " << remote->name << " added: " << remote->Url() << " as "
            << remote->auth_id << " (the secret is kept in server.db and not shown again)\n";
  return 0;
}

int ListRemotes(const std::string& data, const RemoteFlags& f) {
  auto remotes = RemoteStore::Open(data);
  if (!remotes.ok()) return FailCommand(remotes.status());
  auto all = (*remotes)->List();
  if (!all.ok()) return FailCommand(all.status());
  if (f.output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : *all) out.push_back(r.ToJson());
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (const auto& r : *all) {
    std::cout << r.name << "\t" << r.Url() << "\t" << r.auth_id << "\t" << r.fingerprint << "\n";
  }
  return 0;
}

int RemoveRemote(const std::string& data, const RemoteFlags& f) {
  auto remotes = RemoteStore::Open(data);
  if (!remotes.ok()) return FailCommand(remotes.status());
  if (auto r = (*remotes)->Get(f.name); !r.ok()) return FailCommand(r.status());
  // A job that uses it keeps it: its next run would fail.
  TaskRunner none(nullptr, {.workers = 0});
  auto jobs = JobScheduler::Open(data, &none, nullptr, storage::TimeZone::Utc());
  if (!jobs.ok()) return FailCommand(jobs.status());
  auto list = (*jobs)->List();
  if (!list.ok()) return FailCommand(list.status());
  if (Status s = CheckRemoteUnused(*list, f.name); !s.ok()) return FailCommand(s);
  if (Status s = (*remotes)->Remove(f.name); !s.ok()) return FailCommand(s);
  std::cout << "remote " << f.name << " removed\n";
  return 0;
}

}  // namespace

void AddRemoteCommands(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto flags = std::make_shared<RemoteFlags>();
  auto* remote = app.add_subcommand("remote", "other cairn-servers that sync jobs talk to");
  remote->require_subcommand(1);
  auto* add = remote->add_subcommand("add", "add a remote (a running server sees it at once)");
  add->add_option("NAME", flags->name)->required();
  add->add_option("--url", flags->url, "https://HOST:PORT of the remote server")->required();
  add->add_option("--fingerprint", flags->fingerprint,
                  "SHA-256 fingerprint of its certificate (it prints it at start)")
      ->required();
  add->add_option("--token-file", flags->token_file,
                  "file whose first line is an API token of the remote: USER!TOKEN:SECRET")
      ->required();
  auto* list = remote->add_subcommand("list", "list remotes (never their secrets)");
  list->add_option("--output", flags->output)->check(CLI::IsMember({"text", "json"}));
  auto* remove = remote->add_subcommand("remove", "remove a remote no job uses");
  remove->add_option("NAME", flags->name)->required();
  commands->push_back({add, [flags](const std::string& d) { return AddRemote(d, *flags); }});
  commands->push_back({list, [flags](const std::string& d) { return ListRemotes(d, *flags); }});
  commands->push_back({remove, [flags](const std::string& d) { return RemoveRemote(d, *flags); }});
}

}  // namespace cairn::server
