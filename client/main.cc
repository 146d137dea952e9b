// cairn: the host-side client — backup of VMs and image files, restore, and
// the repository commands (snapshots, prune, gc, verify, tasks). Each
// command lives in its client/cmd_*.cc; this file only wires them.

#include <CLI/CLI.hpp>

#include <csignal>
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
  GlobalOptions global;
  app.add_option("--repo", global.repo, "https://HOST:PORT/STORE (or $CAIRN_REPO)");
  app.add_option("--token-file", global.token_file,
                 "file holding USER!TOKEN:SECRET (or $CAIRN_TOKEN)");
  app.add_option("--fingerprint", global.fingerprint,
                 "server certificate SHA-256 (or $CAIRN_FINGERPRINT)");
  app.add_option("--output", global.output, "text or json")->check(CLI::IsMember({"text", "json"}));

  std::vector<Command> commands;
  cairn::client::AddSnapshotsCommand(app, global, &commands);
  cairn::client::AddPruneCommand(app, global, &commands);
  cairn::client::AddGcCommand(app, global, &commands);
  cairn::client::AddVerifyCommand(app, global, &commands);
  cairn::client::AddTaskCommands(app, global, &commands);
  cairn::client::AddBackupCommands(app, global, &commands);
  cairn::client::AddRestoreCommand(app, global, &commands);
  cairn::client::AddMapCommand(app, global, &commands);
  cairn::client::AddFilesCommands(app, global, &commands);
  cairn::client::AddBitmapCommands(app, global, &commands);
  cairn::client::AddKeyCommands(app, global, &commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11's own exit codes (105, 106, 109, …) are not the documented ones:
    // every bad command line is 2 (client/cli.h); --help stays 0.
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (const Command& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return 0;
}
