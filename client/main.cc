// cairn: the host-side client — backup of VMs and image files, restore, and
// the repository commands (snapshots, prune, gc, verify, tasks). Each
// command lives in its client/cmd_*.cc; this file only wires them.

#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  using cairn::client::Command;
  using cairn::client::GlobalOptions;
  // A server that drops a connection is an error on that request, never
  // the end of the client (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn: back up QEMU/KVM virtual machines to a cairn-server"};
  app.require_subcommand(1);
  // Global options may also come after the subcommand (`cairn backup vm …
  // --output json`): every subcommand inherits fallthrough and hands the
  // options it does not know to its parent.
  app.fallthrough();
  app.set_version_flag("--version", "cairn " CAIRN_VERSION);
  app.footer(
      "Exit status: 0 done, 1 failed, 2 a bad command line or argument, 3 `backup all` backed "
      "up some VMs and failed on others.\nGlobal options may come before or after the "
      "subcommand.");
  GlobalOptions global;
  app.add_option("--repo", global.repo, "https://HOST:PORT/STORE (or $CAIRN_REPO)");
  app.add_option("--token-file", global.token_file,
                 "file holding USER!TOKEN:SECRET (or $CAIRN_TOKEN)");
  app.add_option("--fingerprint", global.fingerprint,
                 "server certificate SHA-256 to pin (or $CAIRN_FINGERPRINT)");
  app.add_option("--ca-file", global.ca_file,
                 "trust a server certificate signed by these PEM CAs, checking the host name, "
                 "instead of pinning a fingerprint (or $CAIRN_CA_FILE)");
  app.add_option("--output", global.output, "text or json")->check(CLI::IsMember({"text", "json"}));

  std::vector<Command> commands;
  cairn::client::AddSnapshotsCommand(app, global, &commands);
  cairn::client::AddPruneCommand(app, global, &commands);
  cairn::client::AddGcCommand(app, global, &commands);
  cairn::client::AddVerifyCommand(app, global, &commands);
  cairn::client::AddTaskCommands(app, global, &commands);
  cairn::client::AddBackupCommands(app, global, &commands);
  cairn::client::AddBackupAllCommand(app, global, &commands);
  cairn::client::AddRestoreCommand(app, global, &commands);
  cairn::client::AddMapCommand(app, global, &commands);
  cairn::client::AddFilesCommands(app, global, &commands);
  cairn::client::AddBitmapCommands(app, global, &commands);
  cairn::client::AddKeyCommands(app, global, &commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 looks at --help before it checks for arguments nobody takes:
    // those are refused even then, so `… --help` checks that a line parses.
    const bool help = dynamic_cast<const CLI::CallForHelp*>(&e) != nullptr ||
                      dynamic_cast<const CLI::CallForAllHelp*>(&e) != nullptr;
    if (help && !app.remaining(true).empty()) {
      std::cerr << "cairn: the following arguments were not expected:";
      for (const std::string& a : app.remaining(true)) std::cerr << " " << a;
      std::cerr << "\nRun with --help for more information.\n";
      return 2;
    }
    // CLI11's own exit codes (105, 106, 109, …) are not the documented ones:
    // every bad command line is 2 (client/cli.h); --help stays 0.
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (const Command& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return 0;
}
