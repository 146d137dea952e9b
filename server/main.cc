// cairn-server: the command line. `run` serves; the other commands administer
// the data directory (users, tokens, ACLs, datastores, reindex).
//
// Each subcommand is a struct below that registers its options (Add) and does
// its work (Execute); main registers them in help order, parses, dispatches.

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <semaphore>
#include <string>

#include "server/admin_cli.h"
#include "server/maintenance.h"
#include "server/server.h"
#include "server/sync.h"
#include "storage/env.h"

namespace {

using cairn::server::AuthStore;
using cairn::server::GateLimits;
using cairn::server::Server;
using cairn::server::ServerOptions;
using cairn::storage::Result;
using cairn::storage::Status;

std::binary_semaphore g_stop{0};

extern "C" void OnSignal(int) { g_stop.release(); }

std::string DefaultDataDir() {
  const char* env = std::getenv("CAIRN_DATA");
  return env && *env ? env : "./cairn-data";
}

int Fail(const Status& s) {
  std::cerr << "cairn-server: " << s.ToString() << "\n";
  return 1;
}

// "HOST:PORT" or "[V6]:PORT".
bool ParseListen(const std::string& text, std::string* host, int* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  *host = text.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  try {
    *port = std::stoi(text.substr(colon + 1));
  } catch (...) {
    return false;
  }
  return !host->empty() && *port >= 0 && *port <= 65535;
}

int Run(ServerOptions opts, const std::string& listen) {
  const std::string data = opts.data_dir;
  if (!ParseListen(listen, &opts.host, &opts.port)) {
    std::cerr << "cairn-server: --listen must be ADDR:PORT\n";
    return 2;
  }
  cairn::server::StartupInfo info;
  auto server = Server::Open(opts, &info);
  if (!server.ok()) return Fail(server.status());
  Status s = (*server)->Start();
  if (!s.ok()) return Fail(s);
  std::string host = opts.host.find(':') != std::string::npos ? "[" + opts.host + "]" : opts.host;
  std::cout << "cairn-server listening on https://" << host << ":" << (*server)->port() << "/\n"
            << "data directory: " << data << "\n"
            << "certificate fingerprint (SHA-256): " << info.fingerprint << "\n";
  if (!info.admin_token.empty()) {
    std::cout << "admin API token (shown once, also in " << data << "/admin.token):\n  "
              << info.admin_token << "\n";
  }
  std::cout.flush();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  g_stop.acquire();
  spdlog::info("shutting down: aborting running sessions");
  (*server)->Stop();
  return 0;
}

// "--keep-last" … "--keep-yearly", in PruneOptions order.
constexpr const char* kKeepNames[6] = {"--keep-last",   "--keep-hourly",  "--keep-daily",
                                       "--keep-weekly", "--keep-monthly", "--keep-yearly"};

// What the administration commands work on: the data directory itself, with
// its catalog and auth store open (both created if missing).
struct Admin {
  cairn::storage::Env* env = nullptr;
  std::string data;
  std::unique_ptr<cairn::storage::Catalog> catalog;
  std::unique_ptr<AuthStore> auth;
};

Status OpenAdmin(const std::string& data, Admin* admin) {
  admin->env = cairn::storage::Env::Default();
  admin->data = data;
  CAIRN_RETURN_IF_ERROR(cairn::storage::CreateDirAll(admin->env, data));
  CAIRN_ASSIGN_OR_RETURN(admin->catalog,
                         cairn::storage::Catalog::Open(cairn::storage::JoinPath(data, "cairn.db")));
  CAIRN_ASSIGN_OR_RETURN(admin->auth, AuthStore::Open(cairn::storage::JoinPath(data, "auth.db")));
  return Status::OK();
}

// Opens the datastore in `path` for an offline command; `busy_hint` says
// what to do when the server holds it.
Result<std::unique_ptr<cairn::storage::Datastore>> OpenStore(const Admin& admin,
                                                             const std::string& path,
                                                             const std::string& busy_hint) {
  auto store = cairn::storage::Datastore::Open(admin.env, path);
  if (!store.ok()) return store.status().WithContext("open " + path + " " + busy_hint);
  return store;
}

// --- run ---

// Overdue backups and where they are announced (server/overdue.h); when a
// group is overdue is set by `datastore set --stale-after`.
void AddNotifyOptions(CLI::App* cmd, ServerOptions& opts) {
  cmd->add_option("--overdue-check-interval", opts.overdue_check_seconds,
                  "seconds between looks for overdue groups (default 60)")
      ->check(CLI::Range(1, 86400));
  cmd->add_option("--notify-webhook", opts.notify.webhook_url,
                  "https:// URL that gets a JSON POST for each overdue group");
  cmd->add_option("--notify-webhook-ca", opts.notify.webhook_ca_file,
                  "PEM file of the CAs the webhook's certificate must chain to "
                  "(default: the system's)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--notify-mail", opts.notify.mail_to,
                  "address mailed through the local sendmail for each overdue group");
}

struct RunCommand {
  CLI::App* cmd = nullptr;
  std::string listen = "127.0.0.1:8107";
  ServerOptions opts;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("run", "serve the API over HTTPS");
    GateLimits& gate = opts.gate;
    cmd->add_option("--listen", listen, "address and port (port 0 picks a free one)");
    cmd->add_option("--threads", gate.workers, "request worker threads (default 16)")
        ->check(CLI::Range(2, 256));
    cmd->add_option("--session-timeout", opts.idle_timeout_seconds,
                    "abort a session after this many idle seconds (default 900)")
        ->check(CLI::Range(int64_t{1}, int64_t{86400}));
    cmd->add_option("--web-dir", opts.web_dir,
                    "folder of the web UI's static files (default: " + opts.web_dir + ")");
    cmd->add_option("--session-idle", opts.web_session_idle_seconds,
                    "log a web UI session out after this many idle seconds (default 7200)")
        ->check(CLI::Range(int64_t{1}, int64_t{365} * 86400));
    cmd->add_option("--time-zone", opts.time_zone,
                    "zone for prune periods: UTC, +02:00, Europe/Vienna");
    cmd->add_option("--usage-settle-ms", opts.usage_settle_ms,
                    "quiet time after a change before groups' unique bytes are recomputed "
                    "(default 5000)")
        ->check(CLI::Range(int64_t{0}, int64_t{3'600'000}));
    // Connection limits (server/API.md, "Limits"); timeouts in milliseconds.
    cmd->add_option("--handshake-timeout-ms", gate.handshake_timeout_ms,
                    "time for the TLS handshake (default 10000)")
        ->check(CLI::Range(100, 600'000));
    cmd->add_option("--header-timeout-ms", gate.header_timeout_ms,
                    "time from a request's first byte to the end of its headers (default 10000)")
        ->check(CLI::Range(100, 600'000));
    cmd->add_option("--idle-timeout-ms", gate.idle_timeout_ms,
                    "keep-alive: time for the next request to start (default 30000)")
        ->check(CLI::Range(100, 3'600'000));
    cmd->add_option(
           "--io-timeout-ms", gate.io_timeout_ms,
           "longest wait for body bytes or for the client to take the answer (default 60000)")
        ->check(CLI::Range(100, 3'600'000));
    cmd->add_option("--max-connections", gate.max_connections,
                    "open connections in total (default 4096)")
        ->check(CLI::Range(16, 1'000'000));
    cmd->add_option("--max-unauthenticated-per-address", gate.max_unadmitted_per_address,
                    "connections per client address that have not had a request admitted; the "
                    "oldest is dropped for a new one (default 512)")
        ->check(CLI::Range(1, 1'000'000));
    cmd->add_option("--max-connections-per-address", gate.max_admitted_per_address,
                    "authenticated connections per client address (default 512)")
        ->check(CLI::Range(1, 1'000'000));
    cmd->add_option("--max-tasks-per-token", opts.tasks.max_per_token,
                    "queued or running tasks (prune, GC, verify) one token may start (default 2)")
        ->check(CLI::Range(1, 1000));
    cmd->add_option("--task-workers", opts.tasks.workers,
                    "threads that run prune, GC, verify and jobs (default 4)")
        ->check(CLI::Range(1, 64));
    cmd->add_option("--max-backups-per-token", opts.session_limits.backups_per_token,
                    "backup sessions one token may hold at once (default 8)")
        ->check(CLI::Range(1, 10000));
    cmd->add_option("--max-readers-per-token", opts.session_limits.readers_per_token,
                    "reader sessions one token may hold at once (default 16)")
        ->check(CLI::Range(1, 10000));
    AddNotifyOptions(cmd, opts);
  }

  int Execute(const std::string& data) {
    opts.data_dir = data;
    return Run(opts, listen);
  }
};

// --- datastore create | list | set ---

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
        ->check(CLI::Range(int64_t{0}, cairn::server::kMaxStaleAfterSeconds));
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
    if (Status s = cairn::storage::Datastore::Create(admin.env, path); !s.ok()) return Fail(s);
    if (!sync_level.empty()) {
      auto level = cairn::storage::ParseSyncLevel(sync_level);
      Status s = level.ok() ? cairn::storage::Datastore::SetSyncLevel(admin.env, path, *level)
                            : level.status();
      if (!s.ok()) return Fail(s);
    }
    if (Status s = admin.catalog->AddDatastore(name, path); !s.ok()) return Fail(s);
    std::cout << "datastore " << name << " created at " << path
              << " (a running server sees it after a restart)\n";
    return 0;
  }

  int Set(const Admin& admin) {
    if (auto row = admin.catalog->GetDatastore(set_name); !row.ok()) return Fail(row.status());
    auto settings = cairn::server::StoreSettings::Open(admin.data);
    if (!settings.ok()) return Fail(settings.status());
    if (!sync_level.empty()) {
      if (!set_group.empty()) return Fail(Status::InvalidArgument("--group goes with --stale-after alone"));
      auto level = cairn::storage::ParseSyncLevel(sync_level);
      Status s = level.ok() ? cairn::storage::Datastore::SetSyncLevel(admin.env,
                                                                      admin.catalog->GetDatastore(set_name)->path,
                                                                      *level)
                            : level.status();
      if (!s.ok()) return Fail(s);
      std::cout << "datastore " << set_name << ": sync-level " << sync_level
                << " (a running server uses it after a restart)\n";
      if (verify_new.empty() && stale_after < 0) return 0;
    }
    if (verify_new.empty() && stale_after < 0) {
      return Fail(Status::InvalidArgument("nothing to set: give --verify-new, --stale-after or --sync-level"));
    }
    if (!set_group.empty()) {
      if (stale_after < 0 || !verify_new.empty()) {
        return Fail(Status::InvalidArgument("--group goes with --stale-after alone"));
      }
      auto group = cairn::storage::GroupRef::Parse(set_group);
      if (!group.ok()) return Fail(group.status());
      if (Status s = (*settings)->SetGroupStaleAfter(set_name, *group, stale_after); !s.ok()) {
        return Fail(s);
      }
      std::cout << "group " << set_group << " of " << set_name << ": stale-after "
                << stale_after << " s\n";
      return 0;
    }
    if (!verify_new.empty()) {
      if (Status s = (*settings)->SetVerifyNew(set_name, verify_new == "on"); !s.ok()) return Fail(s);
      std::cout << "datastore " << set_name << ": verify-new " << verify_new << "\n";
    }
    if (stale_after >= 0) {
      if (Status s = (*settings)->SetStaleAfter(set_name, stale_after); !s.ok()) return Fail(s);
      std::cout << "datastore " << set_name << ": stale-after " << stale_after << " s\n";
    }
    return 0;
  }

  int List(const Admin& admin) {
    auto rows = admin.catalog->ListDatastores();
    if (!rows.ok()) return Fail(rows.status());
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

// --- user add | passwd, token create, acl set ---

// One line from the terminal with echo off (the line is not shown).
Result<std::string> ReadHidden(const std::string& prompt) {
  if (!::isatty(STDIN_FILENO)) {
    return Status::InvalidArgument("no terminal to read the password from; use --password-file");
  }
  std::cerr << prompt << std::flush;
  termios old_mode{};
  ::tcgetattr(STDIN_FILENO, &old_mode);
  termios quiet = old_mode;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  std::string line;
  bool ok = static_cast<bool>(std::getline(std::cin, line));
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old_mode);
  if (!ok) return Status::InvalidArgument("no password read");
  return line;
}

// The new password: the first line of `file`, or typed twice at the terminal.
Result<std::string> NewPassword(const std::string& file) {
  std::string password;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return Status::NotFound("cannot read " + file);
    std::getline(in, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
  } else {
    CAIRN_ASSIGN_OR_RETURN(password, ReadHidden("New password: "));
    CAIRN_ASSIGN_OR_RETURN(std::string again, ReadHidden("Repeat it: "));
    if (again != password) return Status::InvalidArgument("the passwords differ; nothing changed");
  }
  if (password.empty()) return Status::InvalidArgument("the password is empty; nothing changed");
  return password;
}

struct UserCommand {
  CLI::App* add = nullptr;
  CLI::App* passwd = nullptr;
  std::string name;
  std::string password_file;

  void Add(CLI::App& app) {
    auto* user = app.add_subcommand("user", "manage users");
    user->require_subcommand(1);
    add = user->add_subcommand("add", "add a user");
    add->add_option("NAME", name)->required();
    passwd = user->add_subcommand("passwd", "set a user's password (for the web UI's login)");
    passwd->add_option("NAME", name)->required();
    passwd->add_option("--password-file", password_file,
                       "take the password from this file's first line (default: ask twice)");
  }

  int Execute(const Admin& admin) {
    if (Status s = admin.auth->AddUser(name); !s.ok()) return Fail(s);
    std::cout << "user " << name << " added\n";
    return 0;
  }

  // Works while the server runs (auth.db is shared in WAL mode); the user's
  // web sessions end at their next request (their credential stamp changed).
  int Passwd(const Admin& admin) {
    auto password = NewPassword(password_file);
    if (!password.ok()) return Fail(password.status());
    if (Status s = admin.auth->SetPassword(name, *password); !s.ok()) return Fail(s);
    std::cout << "password of " << name << " set\n";
    return 0;
  }
};

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
    if (!secret.ok()) return Fail(secret.status());
    std::cout << id << ":" << *secret << "\n";
    return 0;
  }
};

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
    auto parsed_role = cairn::server::ParseRole(role);
    if (!parsed_role.ok()) return Fail(parsed_role.status());
    if (Status s = admin.auth->SetAcl(store, auth, *parsed_role); !s.ok()) return Fail(s);
    std::cout << auth << " has role " << role << " on " << store << "\n";
    return 0;
  }
};

// --- reindex, prune, gc, verify (offline: the server must be stopped) ---

struct ReindexCommand {
  CLI::App* cmd = nullptr;
  std::string store;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("reindex", "rebuild a datastore's catalog rows from its folder");
    cmd->add_option("STORE", store)->required();
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return Fail(row.status());
    auto ds = OpenStore(admin, row->path, "(is the server running? stop it first)");
    if (!ds.ok()) return Fail(ds.status());
    cairn::storage::ReindexReport report;
    if (Status s = admin.catalog->Reindex(store, **ds, &report); !s.ok()) return Fail(s);
    // Rebuilt with the store locked: in step until someone opens it again.
    if (Status s = admin.catalog->SetInStep(store, true); !s.ok()) return Fail(s);
    std::cout << "reindexed " << store << ": " << report.groups << " groups, " << report.snapshots
              << " snapshots\n";
    for (const auto& [ref, st] : report.skipped) {
      std::cout << "  skipped " << ref.ToString() << ": " << st.ToString() << "\n";
    }
    return report.skipped.empty() ? 0 : 1;
  }
};

struct PruneCommand {
  CLI::App* cmd = nullptr;
  std::string store, group;
  std::optional<uint64_t> keep[6];
  bool dry_run = false;
  std::string output = "text", tz = "UTC";

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("prune", "prune one group (server stopped; else use the API)");
    cmd->add_option("STORE", store)->required();
    cmd->add_option("GROUP", group, "e.g. vm/100 or ns/a:vm/100")->required();
    for (int i = 0; i < 6; ++i) cmd->add_option(kKeepNames[i], keep[i]);
    cmd->add_flag("--dry-run", dry_run, "show what would be removed, remove nothing");
    cmd->add_option("--time-zone", tz, "zone of the periods (default UTC)");
    cmd->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return Fail(row.status());
    auto parsed_group = cairn::storage::GroupRef::Parse(group);
    if (!parsed_group.ok()) return Fail(parsed_group.status());
    auto zone = cairn::storage::TimeZone::Parse(tz);
    if (!zone.ok()) return Fail(zone.status());
    cairn::storage::PruneOptions o;
    o.keep_last = keep[0];
    o.keep_hourly = keep[1];
    o.keep_daily = keep[2];
    o.keep_weekly = keep[3];
    o.keep_monthly = keep[4];
    o.keep_yearly = keep[5];
    auto ds = cairn::server::OpenOffline(admin.catalog.get(), store,
                                         "is the server running? then prune through the API");
    if (!ds.ok()) return Fail(ds.status());
    auto report = cairn::server::PruneGroup(*ds->store, store, *parsed_group, o, *zone, dry_run,
                                            nullptr);
    if (!report.ok()) return Fail(report.status());
    if (output == "json") {
      std::cout << report->ToJson().dump(2) << "\n";
    } else {
      std::cout << report->ToText();
    }
    return report->failed == 0 ? 0 : 1;
  }
};

struct GcCommand {
  CLI::App* cmd = nullptr;
  std::string store, output = "text";
  bool dry_run = false;
  int64_t grace = cairn::storage::kDefaultGcGraceSeconds;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("gc",
                             "collect garbage in a datastore (server stopped; else use the API)");
    cmd->add_option("STORE", store)->required();
    cmd->add_flag("--dry-run", dry_run, "count what would be removed, remove nothing");
    cmd->add_option("--grace-seconds", grace,
                    "keep unreferenced chunks younger than this (default 300)")
        ->check(CLI::Range(int64_t{0}, int64_t{604800}));
    cmd->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return Fail(row.status());
    auto ds = cairn::server::OpenOffline(
        admin.catalog.get(), store, "is the server running? then run GC through the API: cairn gc");
    if (!ds.ok()) return Fail(ds.status());
    cairn::storage::GcOptions options;
    options.dry_run = dry_run;
    options.grace_seconds = grace;
    const bool tty = ::isatty(2);
    if (tty) {
      options.progress = [](cairn::storage::GcPhase phase, uint64_t done, uint64_t total) {
        std::fprintf(stderr, "\r%-5s %llu/%llu   ", cairn::storage::GcPhaseName(phase),
                     static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
      };
    }
    auto r = cairn::server::RunGarbageCollection(*ds->store, store, nullptr, options);
    if (tty) std::fprintf(stderr, "\r\033[K");
    if (!r.ok()) return Fail(r.status());
    if (output == "json") {
      std::cout << r->ToJson().dump(2) << "\n";
    } else {
      std::cout << cairn::server::GcResultText(*r);
    }
    return 0;
  }
};

// --- job add | list | remove | run | next ---

struct JobCommand {
  CLI::App* job = nullptr;
  CLI::App* add = nullptr;
  CLI::App* list = nullptr;
  CLI::App* remove = nullptr;
  CLI::App* run = nullptr;
  CLI::App* next = nullptr;
  cairn::server::JobConfig new_job;
  std::string group, target;
  std::optional<uint64_t> keep[6];
  std::optional<int64_t> outdated;
  bool ignore_verified = false;
  std::string output = "text";
  std::string id;
  std::string next_expr, next_from, next_tz = "UTC";
  int next_count = 5;

  void Add(CLI::App& app) {
    job = app.add_subcommand("job", "scheduled prune, gc and verify jobs");
    job->require_subcommand(1);
    add = job->add_subcommand("add", "add a job (a running server picks it up)");
    add->add_option("ID", new_job.id)->required();
    add->add_option("--kind", new_job.kind,
                    "prune, gc or verify (sync and push: sync-job add, push-job add)")
        ->required();
    add->add_option("--store", new_job.store)->required();
    add->add_option("--schedule", new_job.schedule, "calendar event: daily, 'sat 02:00', '*:0/15'")
        ->required();
    add->add_option("--group", group, "prune: only this group (default: every group)");
    for (int i = 0; i < 6; ++i) add->add_option(kKeepNames[i], keep[i]);
    add->add_option("--target", target, "verify: a snapshot or group (default: everything)");
    add->add_flag("--ignore-verified", ignore_verified, "verify: skip snapshots verified recently");
    add->add_option("--outdated-after", outdated,
                    "verify: days after which a verification is redone");
    list = job->add_subcommand("list", "list jobs");
    list->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
    remove = job->add_subcommand("remove", "remove a job");
    remove->add_option("ID", id)->required();
    run = job->add_subcommand(
        "run", "run a job now and wait for it (through the running server when there is one)");
    run->add_option("ID", id)->required();
    next = job->add_subcommand("next", "print the next run times of a calendar event");
    next->add_option("EXPR", next_expr)->required();
    next->add_option("--from", next_from, "start time YYYY-MM-DDTHH:MM:SSZ (default now)");
    next->add_option("--count", next_count)->check(CLI::Range(1, 1000));
    next->add_option("--time-zone", next_tz);
  }

  // `job next` needs no data directory.
  int Next() {
    auto event = cairn::server::CalendarEvent::Parse(next_expr);
    if (!event.ok()) return Fail(event.status());
    auto tz = cairn::storage::TimeZone::Parse(next_tz);
    if (!tz.ok()) return Fail(tz.status());
    int64_t from = std::time(nullptr);
    if (!next_from.empty()) {
      auto t = cairn::storage::ParseSnapshotTime(next_from);
      if (!t.ok()) return Fail(t.status());
      from = *t;
    }
    std::cout << "next runs of \"" << event->ToString() << "\" (" << tz->name() << "):\n";
    for (int64_t t : cairn::server::NextRuns(*event, from, next_count, *tz)) {
      std::cout << "  " << cairn::storage::FormatSnapshotTime(t) << "\n";
    }
    return 0;
  }

  int Execute(const Admin& admin) {
    // Through the running server when there is one (server/admin_cli.h).
    if (run->parsed()) return cairn::server::RunJobAndWait(admin.data, id, false);
    if (add->parsed() && cairn::server::IsSyncJobKind(new_job.kind)) {
      return Fail(Status::InvalidArgument("add " + new_job.kind + " jobs with `" +
                                          (new_job.kind == "sync" ? "sync" : "push") +
                                          "-job add`"));
    }
    // The jobs table only: runs happen in RunJobAndWait or in the server.
    cairn::server::TaskRunner none(nullptr, {.workers = 1});
    auto jobs = cairn::server::JobScheduler::Open(admin.data, &none, nullptr,
                                                  cairn::storage::TimeZone::Utc());
    if (!jobs.ok()) return Fail(jobs.status());
    if (add->parsed()) return AddJob(**jobs);
    if (list->parsed()) return ListJobs(**jobs);
    if (remove->parsed()) return RemoveJob(**jobs);
    return 0;
  }

  int AddJob(cairn::server::JobScheduler& jobs) {
    nlohmann::json opts = nlohmann::json::object();
    if (!group.empty()) opts["group"] = group;
    for (int i = 0; i < 6; ++i) {
      if (keep[i]) opts[std::string(kKeepNames[i]).substr(2)] = *keep[i];
    }
    if (!target.empty()) opts["target"] = target;
    if (ignore_verified) opts["ignore-verified"] = true;
    if (outdated) opts["outdated-after-days"] = *outdated;
    new_job.options = opts;
    if (Status s = jobs.Add(new_job); !s.ok()) return Fail(s);
    auto added = jobs.Get(new_job.id);
    auto next_run = added.ok() ? jobs.NextRun(*added) : std::nullopt;
    std::cout << "job " << new_job.id << " added; next run "
              << (next_run ? cairn::storage::FormatSnapshotTime(*next_run) : "never") << "\n";
    return 0;
  }

  int ListJobs(cairn::server::JobScheduler& jobs) {
    auto all = jobs.List();
    if (!all.ok()) return Fail(all.status());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& j : *all) {
      auto next_run = jobs.NextRun(j);
      nlohmann::json o = j.ToJson();
      o["next-run"] = next_run ? nlohmann::json(*next_run) : nlohmann::json(nullptr);
      out.push_back(o);
      if (output != "json") {
        std::cout << j.id << "\t" << j.kind << "\t" << j.store << "\t" << j.schedule << "\tnext "
                  << (next_run ? cairn::storage::FormatSnapshotTime(*next_run) : "never") << "\t"
                  << j.options.dump() << "\n";
      }
    }
    if (output == "json") std::cout << out.dump(2) << "\n";
    return 0;
  }

  int RemoveJob(cairn::server::JobScheduler& jobs) {
    if (Status s = jobs.Remove(id); !s.ok()) return Fail(s);
    std::cout << "job " << id << " removed\n";
    return 0;
  }
};

struct VerifyCommand {
  CLI::App* cmd = nullptr;
  std::string store, target, output = "text";
  bool ignore = false;
  std::optional<int64_t> outdated;

  void Add(CLI::App& app) {
    cmd = app.add_subcommand("verify", "verify a datastore (server stopped; else use the API)");
    cmd->add_option("STORE", store)->required();
    cmd->add_option("TARGET", target, "a snapshot or group (default: everything)");
    cmd->add_flag("--ignore-verified", ignore);
    cmd->add_option("--outdated-after", outdated, "days");
    cmd->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  }

  int Execute(const Admin& admin) {
    auto row = admin.catalog->GetDatastore(store);
    if (!row.ok()) return Fail(row.status());
    auto ds = cairn::server::OpenOffline(
        admin.catalog.get(), store, "is the server running? then verify through the API: cairn verify");
    if (!ds.ok()) return Fail(ds.status());
    cairn::server::MaintenanceContext ctx;
    ctx.store = ds->store.get();
    ctx.store_name = store;
    nlohmann::json opts = {{"ignore-verified", ignore}};
    if (outdated) opts["outdated-after-days"] = *outdated;
    auto r = cairn::server::RunVerify(ctx, target, opts, nullptr);
    if (!r.ok()) return Fail(r.status());
    if (output == "json") {
      std::cout << r->ToJson().dump(2) << "\n";
    } else {
      std::cout << "verified " << r->snapshots_checked << " snapshot(s): " << r->snapshots_ok
                << " ok, " << r->snapshots_failed << " failed, " << r->snapshots_skipped
                << " skipped; " << r->chunks_checked << " chunks checked, " << r->chunks_bad
                << " bad, " << r->duration_ms << " ms\n";
      for (const auto& f : r->failed) {
        std::cout << "  FAILED " << f.ref.ToString() << ": "
                  << (f.reasons.empty() ? "" : f.reasons.front()) << "\n";
      }
    }
    return r->snapshots_failed == 0 ? 0 : 1;
  }
};

}  // namespace

int main(int argc, char** argv) {
  // A client that hangs up mid-answer must cost an error on that
  // connection, not the server (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn-server: the Cairn backup server"};
  app.require_subcommand(1);
  std::string data = DefaultDataDir();
  app.add_option("--data", data, "data directory (default $CAIRN_DATA or ./cairn-data)");

  // Registered in the order the help lists them.
  RunCommand run;
  DatastoreCommand datastore;
  UserCommand user;
  TokenCommand token;
  AclCommand acl;
  ReindexCommand reindex;
  PruneCommand prune;
  GcCommand gc;
  JobCommand job;
  VerifyCommand verify;
  run.Add(app);
  datastore.Add(app);
  user.Add(app);
  token.Add(app);
  acl.Add(app);
  reindex.Add(app);
  prune.Add(app);
  gc.Add(app);
  job.Add(app);
  verify.Add(app);
  // Offsite copies: remotes and sync/push jobs (server/cmd_remote.cc, cmd_sync_job.cc).
  std::vector<cairn::server::AdminCommand> offsite;
  cairn::server::AddRemoteCommands(app, &offsite);
  cairn::server::AddSyncJobCommands(app, "sync", &offsite);
  cairn::server::AddSyncJobCommands(app, "push", &offsite);

  CLI11_PARSE(app, argc, argv);

  for (const auto& c : offsite) {
    if (c.app->parsed()) return c.run(data);
  }

  if (job.next->parsed()) return job.Next();
  if (run.cmd->parsed()) return run.Execute(data);

  // Admin commands work on the data directory directly.
  Admin admin;
  if (Status s = OpenAdmin(data, &admin); !s.ok()) return Fail(s);
  if (datastore.parsed()) return datastore.Execute(admin);
  if (user.add->parsed()) return user.Execute(admin);
  if (user.passwd->parsed()) return user.Passwd(admin);
  if (token.create->parsed()) return token.Execute(admin);
  if (acl.set->parsed()) return acl.Execute(admin);
  if (reindex.cmd->parsed()) return reindex.Execute(admin);
  if (prune.cmd->parsed()) return prune.Execute(admin);
  if (gc.cmd->parsed()) return gc.Execute(admin);
  if (job.job->parsed()) return job.Execute(admin);
  if (verify.cmd->parsed()) return verify.Execute(admin);
  return 0;
}
