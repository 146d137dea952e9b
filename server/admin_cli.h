#pragma once

// What the command files of `cairn-server` outside main.cc (server/cmd_*.cc)
// share: how a command registers its subcommand and runs on the data
// directory, and running a job now and waiting for it. main.cc only wires
// them.
//
// Not thread-safe: the command line runs on one thread.

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "storage/status.h"

namespace cairn::server {

// A parsed subcommand and what runs it on the data directory; `run` returns
// the exit code.
struct AdminCommand {
  CLI::App* app = nullptr;
  std::function<int(const std::string& data_dir)> run;
};

// `remote add|list|remove`.
void AddRemoteCommands(CLI::App& app, std::vector<AdminCommand>* commands);
// `sync-job add|list|remove|run` (kind "sync", a pull) or `push-job …`
// (kind "push").
void AddSyncJobCommands(CLI::App& app, const std::string& kind,
                        std::vector<AdminCommand>* commands);

// Runs job `id` now and waits for it: through the server running on
// `data_dir` when there is one (POST /api/v1/jobs/ID/run, then its task),
// else in this process (the datastore must then be free). The task's log
// goes to stderr as it grows when `json` (the task's result is printed on
// stdout at the end), else to stdout. Exit code 0 when the task ended ok or
// with warnings.
int RunJobAndWait(const std::string& data_dir, const std::string& id, bool json);

// Prints "cairn-server: <message>" to stderr; returns 2 for InvalidArgument, else 1.
int FailCommand(const storage::Status& s);

}  // namespace cairn::server
