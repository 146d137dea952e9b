#pragma once

// What the command files of `cairn-server` outside main.cc (server/cmd_*.cc)
// share: how a command registers its subcommand and runs on the data
// directory, and running a job now and waiting for it. main.cc only wires
// them.
//
// Not thread-safe: the command line runs on one thread.

#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "server/auth_store.h"
#include "storage/catalog.h"
#include "storage/env.h"
#include "storage/status.h"

namespace cairn::server {

using storage::Result;
using storage::Status;

// A parsed subcommand and what runs it on the data directory; `run` returns
// the exit code.
struct AdminCommand {
  CLI::App* app = nullptr;
  std::function<int(const std::string& data_dir)> run;
};

// The settings file (/etc/cairn/server.conf): `key = value` lines, INI/TOML
// as CLI11 reads them, `#` comments. Each key is a long option of `run` or
// the global `data`, without its dashes (`listen = 0.0.0.0:8107`); an option
// given on the command line wins over the file. An unknown key is an error.
struct ConfigUse {
  std::string path;                   // "" = no file
  std::set<std::string> from_flags;   // keys given on the command line
  std::set<std::string> from_file;    // keys the file set
};

// The file used when --config is not given: /etc/cairn/server.conf for an
// installed server (/usr/bin/cairn-server) when that file exists, else "".
std::string DefaultConfigFile();
// The file's key/value pairs in order; keys with `_` read as `-`.
// InvalidArgument naming the file for a section, a list or bad syntax;
// NotFound when it does not exist.
Result<std::vector<std::pair<std::string, std::string>>> ReadConfigFile(const std::string& path);
// Applies the file's settings to the options of `top` (global) and, when it
// was parsed, `run`: each one the command line did not give. Fills `use`.
Status ApplyConfigFile(const std::string& path, CLI::App* top, CLI::App* run, ConfigUse* use);
// spdlog's level by name (trace, debug, info, warn, error, off).
Status SetLogLevel(const std::string& name);
// Logs go to stderr, one line per event; under systemd (journald adds the
// time) without a timestamp.
void SetUpLogging();

// Each adds its subcommand(s) to `app` and appends what runs them to
// `commands`; main.cc calls them in the order the help lists them. `config`
// is filled before the command runs.
void AddRunCommand(CLI::App& app, std::vector<AdminCommand>* commands, const ConfigUse* config);
// `datastore create|list|set`.
void AddDatastoreCommands(CLI::App& app, std::vector<AdminCommand>* commands);
// `user add|passwd`.
void AddUserCommands(CLI::App& app, std::vector<AdminCommand>* commands);
// `token create`.
void AddTokenCommands(CLI::App& app, std::vector<AdminCommand>* commands);
// `acl set`.
void AddAclCommands(CLI::App& app, std::vector<AdminCommand>* commands);
void AddReindexCommand(CLI::App& app, std::vector<AdminCommand>* commands);
void AddPruneCommand(CLI::App& app, std::vector<AdminCommand>* commands);
void AddGcCommand(CLI::App& app, std::vector<AdminCommand>* commands);
// `job add|list|remove|run|next`.
void AddJobCommands(CLI::App& app, std::vector<AdminCommand>* commands);
void AddVerifyCommand(CLI::App& app, std::vector<AdminCommand>* commands);
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

// What the offline administration commands work on: the data directory
// itself, with its catalog and auth store open (both created if missing).
struct Admin {
  storage::Env* env = nullptr;
  std::string data;
  std::unique_ptr<storage::Catalog> catalog;
  std::unique_ptr<AuthStore> auth;
};

// Opens `data_dir` as an Admin and runs `run` on it; the exit code of `run`,
// or of the failure to open.
int WithAdmin(const std::string& data_dir, const std::function<int(const Admin&)>& run);

// "--keep-last" … "--keep-yearly", in PruneOptions order.
inline constexpr const char* kKeepNames[6] = {"--keep-last",   "--keep-hourly",
                                              "--keep-daily",  "--keep-weekly",
                                              "--keep-monthly", "--keep-yearly"};

// Prints "cairn-server: <message>" to stderr; returns 2 for InvalidArgument, else 1.
int FailCommand(const storage::Status& s);

}  // namespace cairn::server
