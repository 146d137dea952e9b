// cairn-server: the command line. `run` serves; the other commands administer
// the data directory (users, tokens, ACLs, datastores, jobs, reindex, …).
// Each command lives in its server/cmd_*.cc (server/admin_cli.h); this file
// only wires them, reads the settings file and maps parse errors to exit
// codes: 0 done, 1 failed, 2 a bad command line or argument.

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "server/admin_cli.h"

namespace {

std::string DefaultDataDir() {
  const char* env = std::getenv("CAIRN_DATA");
  return env && *env ? env : "./cairn-data";
}

// Parses the command line; an exit code when the program should end now
// (help, version, a bad command line). CLI11 looks at --help before it
// checks for arguments nobody takes: those are refused here even then, so
// that `… --help` is a check that a command line parses.
std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const bool help = dynamic_cast<const CLI::CallForHelp*>(&e) != nullptr ||
                      dynamic_cast<const CLI::CallForAllHelp*>(&e) != nullptr;
    if (help && !app.remaining(true).empty()) {
      std::cerr << "cairn-server: the following arguments were not expected:";
      for (const std::string& a : app.remaining(true)) std::cerr << " " << a;
      std::cerr << "\nRun with --help for more information.\n";
      return 2;
    }
    // CLI11's own codes (105, 106, 109, …) are not the documented ones.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  using cairn::server::AdminCommand;
  // A client that hangs up mid-answer must cost an error on that
  // connection, not the server (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  cairn::server::SetUpLogging();
  CLI::App app{"cairn-server: the Cairn backup server"};
  app.require_subcommand(1);
  // Global options may come after the subcommand too (`run --data DIR`):
  // every subcommand inherits fallthrough.
  app.fallthrough();
  app.set_version_flag("--version", "cairn-server " CAIRN_VERSION);
  app.footer(
      "Exit status: 0 done, 1 failed, 2 a bad command line or argument.\n"
      "Settings file: /etc/cairn/server.conf for an installed server (key = value, each key a "
      "long option of `run` or `data`); command-line options override it.");
  std::string data = DefaultDataDir();
  std::string config_file = cairn::server::DefaultConfigFile();
  app.add_option("--data", data, "data directory (default $CAIRN_DATA or ./cairn-data)");
  app.add_option("--config", config_file,
                 "settings file (default /etc/cairn/server.conf when installed and present)")
      ->check(CLI::ExistingFile);

  // Registered in the order the help lists them.
  std::vector<AdminCommand> commands;
  cairn::server::ConfigUse config;
  cairn::server::AddRunCommand(app, &commands, &config);
  CLI::App* run = commands.back().app;
  cairn::server::AddDatastoreCommands(app, &commands);
  cairn::server::AddUserCommands(app, &commands);
  cairn::server::AddTokenCommands(app, &commands);
  cairn::server::AddAclCommands(app, &commands);
  cairn::server::AddReindexCommand(app, &commands);
  cairn::server::AddPruneCommand(app, &commands);
  cairn::server::AddGcCommand(app, &commands);
  cairn::server::AddJobCommands(app, &commands);
  cairn::server::AddVerifyCommand(app, &commands);
  // Offsite copies: remotes and sync/push jobs.
  cairn::server::AddRemoteCommands(app, &commands);
  cairn::server::AddSyncJobCommands(app, "sync", &commands);
  cairn::server::AddSyncJobCommands(app, "push", &commands);

  if (auto code = Parse(app, argc, argv)) return *code;
  if (!config_file.empty()) {
    auto s = cairn::server::ApplyConfigFile(config_file, &app, run, &config);
    if (!s.ok()) return cairn::server::FailCommand(s);
  }
  for (const AdminCommand& c : commands) {
    if (c.app->parsed()) return c.run(data);
  }
  return 0;
}
