// cairn-server: the command line. `run` serves; the other commands administer
// the data directory (users, tokens, ACLs, datastores, reindex).

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <csignal>
#include <ctime>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <semaphore>

#include "server/maintenance.h"
#include "server/server.h"
#include "storage/env.h"

namespace {

using cairn::server::AuthStore;
using cairn::server::GateLimits;
using cairn::server::Server;
using cairn::server::ServerOptions;
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

}  // namespace

int main(int argc, char** argv) {
  // A client that hangs up mid-answer must cost an error on that
  // connection, not the server (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn-server: the Cairn backup server"};
  app.require_subcommand(1);
  std::string data = DefaultDataDir();
  app.add_option("--data", data, "data directory (default $CAIRN_DATA or ./cairn-data)");

  auto* run = app.add_subcommand("run", "serve the API over HTTPS");
  std::string listen = "127.0.0.1:8107";
  ServerOptions server_opts;
  GateLimits& gate = server_opts.gate;
  run->add_option("--listen", listen, "address and port (port 0 picks a free one)");
  run->add_option("--threads", gate.workers, "request worker threads (default 16)")
      ->check(CLI::Range(2, 256));
  run->add_option("--session-timeout", server_opts.idle_timeout_seconds,
                  "abort a session after this many idle seconds (default 900)")
      ->check(CLI::Range(int64_t{1}, int64_t{86400}));
  run->add_option("--time-zone", server_opts.time_zone,
                  "zone for prune periods: UTC, +02:00, Europe/Vienna");
  // Connection limits (server/API.md, "Limits"); timeouts in milliseconds.
  run->add_option("--handshake-timeout-ms", gate.handshake_timeout_ms,
                  "time for the TLS handshake (default 10000)")
      ->check(CLI::Range(100, 600'000));
  run->add_option("--header-timeout-ms", gate.header_timeout_ms,
                  "time from a request's first byte to the end of its headers (default 10000)")
      ->check(CLI::Range(100, 600'000));
  run->add_option("--idle-timeout-ms", gate.idle_timeout_ms,
                  "keep-alive: time for the next request to start (default 30000)")
      ->check(CLI::Range(100, 3'600'000));
  run->add_option("--io-timeout-ms", gate.io_timeout_ms,
                  "longest wait for body bytes or for the client to take the answer (default 60000)")
      ->check(CLI::Range(100, 3'600'000));
  run->add_option("--max-connections", gate.max_connections,
                  "open connections in total (default 4096)")
      ->check(CLI::Range(16, 1'000'000));
  run->add_option("--max-unauthenticated-per-address", gate.max_unadmitted_per_address,
                  "connections per client address that have not had a request admitted; the "
                  "oldest is dropped for a new one (default 512)")
      ->check(CLI::Range(1, 1'000'000));
  run->add_option("--max-connections-per-address", gate.max_admitted_per_address,
                  "authenticated connections per client address (default 512)")
      ->check(CLI::Range(1, 1'000'000));
  run->add_option("--max-tasks-per-token", server_opts.tasks.max_per_token,
                  "queued or running tasks (prune, GC, verify) one token may start (default 2)")
      ->check(CLI::Range(1, 1000));
  run->add_option("--task-workers", server_opts.tasks.workers,
                  "threads that run prune, GC, verify and jobs (default 4)")
      ->check(CLI::Range(1, 64));
  run->add_option("--max-backups-per-token", server_opts.session_limits.backups_per_token,
                  "backup sessions one token may hold at once (default 8)")
      ->check(CLI::Range(1, 10000));
  run->add_option("--max-readers-per-token", server_opts.session_limits.readers_per_token,
                  "reader sessions one token may hold at once (default 16)")
      ->check(CLI::Range(1, 10000));

  auto* ds = app.add_subcommand("datastore", "manage datastores");
  ds->require_subcommand(1);
  auto* ds_create = ds->add_subcommand("create", "create and register a datastore");
  std::string ds_name, ds_path;
  ds_create->add_option("NAME", ds_name)->required();
  ds_create->add_option("PATH", ds_path)->required();
  auto* ds_list = ds->add_subcommand("list", "list datastores");
  std::string output = "text";
  ds_list->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));

  auto* ds_set = ds->add_subcommand("set", "change a datastore setting");
  std::string set_name;
  std::string verify_new;
  ds_set->add_option("NAME", set_name)->required();
  ds_set->add_option("--verify-new", verify_new, "verify each new snapshot right after its backup")
      ->check(CLI::IsMember({"on", "off"}))
      ->required();

  auto* user = app.add_subcommand("user", "manage users");
  user->require_subcommand(1);
  auto* user_add = user->add_subcommand("add", "add a user");
  std::string user_name;
  user_add->add_option("NAME", user_name)->required();

  auto* token = app.add_subcommand("token", "manage API tokens");
  token->require_subcommand(1);
  auto* token_create = token->add_subcommand("create", "create USER!NAME and print its secret once");
  std::string token_id;
  token_create->add_option("ID", token_id)->required();

  auto* acl = app.add_subcommand("acl", "manage roles");
  acl->require_subcommand(1);
  auto* acl_set = acl->add_subcommand("set", "grant a role on a datastore");
  std::string acl_store, acl_role, acl_auth;
  acl_set->add_option("--store", acl_store, "datastore name or *")->required();
  acl_set->add_option("--role", acl_role, "Admin|Backup|Reader|Audit")->required();
  acl_set->add_option("--auth", acl_auth, "USER or USER!TOKEN")->required();

  auto* reindex = app.add_subcommand("reindex", "rebuild a datastore's catalog rows from its folder");
  std::string reindex_store;
  reindex->add_option("STORE", reindex_store)->required();

  auto* prune = app.add_subcommand("prune", "prune one group (server stopped; else use the API)");
  std::string prune_store, prune_group;
  std::optional<uint64_t> keep[6];
  bool prune_dry_run = false;
  std::string prune_output = "text", prune_tz = "UTC";
  prune->add_option("STORE", prune_store)->required();
  prune->add_option("GROUP", prune_group, "e.g. vm/100 or ns/a:vm/100")->required();
  const char* keep_names[6] = {"--keep-last", "--keep-hourly", "--keep-daily",
                               "--keep-weekly", "--keep-monthly", "--keep-yearly"};
  for (int i = 0; i < 6; ++i) prune->add_option(keep_names[i], keep[i]);
  prune->add_flag("--dry-run", prune_dry_run, "show what would be removed, remove nothing");
  prune->add_option("--time-zone", prune_tz, "zone of the periods (default UTC)");
  prune->add_option("--output", prune_output)->check(CLI::IsMember({"text", "json"}));

  auto* gc = app.add_subcommand("gc", "collect garbage in a datastore (server stopped; else use the API)");
  std::string gc_store, gc_output = "text";
  bool gc_dry_run = false;
  int64_t gc_grace = cairn::storage::kDefaultGcGraceSeconds;
  gc->add_option("STORE", gc_store)->required();
  gc->add_flag("--dry-run", gc_dry_run, "count what would be removed, remove nothing");
  gc->add_option("--grace-seconds", gc_grace, "keep unreferenced chunks younger than this (default 300)")
      ->check(CLI::Range(int64_t{0}, int64_t{604800}));
  gc->add_option("--output", gc_output)->check(CLI::IsMember({"text", "json"}));

  auto* job = app.add_subcommand("job", "scheduled prune, gc and verify jobs");
  job->require_subcommand(1);
  auto* job_add = job->add_subcommand("add", "add a job (a running server picks it up)");
  cairn::server::JobConfig new_job;
  std::string job_group, job_target;
  std::optional<uint64_t> job_keep[6];
  std::optional<int64_t> job_outdated;
  bool job_ignore_verified = false;
  job_add->add_option("ID", new_job.id)->required();
  job_add->add_option("--kind", new_job.kind, "prune, gc or verify")->required();
  job_add->add_option("--store", new_job.store)->required();
  job_add->add_option("--schedule", new_job.schedule, "calendar event: daily, 'sat 02:00', '*:0/15'")
      ->required();
  job_add->add_option("--group", job_group, "prune: only this group (default: every group)");
  for (int i = 0; i < 6; ++i) job_add->add_option(keep_names[i], job_keep[i]);
  job_add->add_option("--target", job_target, "verify: a snapshot or group (default: everything)");
  job_add->add_flag("--ignore-verified", job_ignore_verified, "verify: skip snapshots verified recently");
  job_add->add_option("--outdated-after", job_outdated, "verify: days after which a verification is redone");
  auto* job_list = job->add_subcommand("list", "list jobs");
  job_list->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
  auto* job_remove = job->add_subcommand("remove", "remove a job");
  std::string job_id;
  job_remove->add_option("ID", job_id)->required();
  auto* job_run = job->add_subcommand("run", "run a job now (server stopped; else POST /api/v1/jobs/ID/run)");
  job_run->add_option("ID", job_id)->required();
  auto* job_next = job->add_subcommand("next", "print the next run times of a calendar event");
  std::string next_expr, next_from, next_tz = "UTC";
  int next_count = 5;
  job_next->add_option("EXPR", next_expr)->required();
  job_next->add_option("--from", next_from, "start time YYYY-MM-DDTHH:MM:SSZ (default now)");
  job_next->add_option("--count", next_count)->check(CLI::Range(1, 1000));
  job_next->add_option("--time-zone", next_tz);

  auto* verify = app.add_subcommand("verify", "verify a datastore (server stopped; else use the API)");
  std::string verify_store, verify_target, verify_output = "text";
  bool verify_ignore = false;
  std::optional<int64_t> verify_outdated;
  verify->add_option("STORE", verify_store)->required();
  verify->add_option("TARGET", verify_target, "a snapshot or group (default: everything)");
  verify->add_flag("--ignore-verified", verify_ignore);
  verify->add_option("--outdated-after", verify_outdated, "days");
  verify->add_option("--output", verify_output)->check(CLI::IsMember({"text", "json"}));

  CLI11_PARSE(app, argc, argv);

  if (job_next->parsed()) {
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

  if (run->parsed()) {
    server_opts.data_dir = data;
    return Run(server_opts, listen);
  }

  // Admin commands work on the data directory directly.
  cairn::storage::Env* env = cairn::storage::Env::Default();
  if (Status s = cairn::storage::CreateDirAll(env, data); !s.ok()) return Fail(s);
  auto catalog = cairn::storage::Catalog::Open(cairn::storage::JoinPath(data, "cairn.db"));
  if (!catalog.ok()) return Fail(catalog.status());
  auto auth = AuthStore::Open(cairn::storage::JoinPath(data, "auth.db"));
  if (!auth.ok()) return Fail(auth.status());

  if (ds_create->parsed()) {
    if (Status s = cairn::storage::Datastore::Create(env, ds_path); !s.ok()) return Fail(s);
    if (Status s = (*catalog)->AddDatastore(ds_name, ds_path); !s.ok()) return Fail(s);
    std::cout << "datastore " << ds_name << " created at " << ds_path
              << " (a running server sees it after a restart)\n";
    return 0;
  }
  if (ds_set->parsed()) {
    if (auto row = (*catalog)->GetDatastore(set_name); !row.ok()) return Fail(row.status());
    auto settings = cairn::server::StoreSettings::Open(data);
    if (!settings.ok()) return Fail(settings.status());
    if (Status s = (*settings)->SetVerifyNew(set_name, verify_new == "on"); !s.ok()) return Fail(s);
    std::cout << "datastore " << set_name << ": verify-new " << verify_new << "\n";
    return 0;
  }
  if (ds_list->parsed()) {
    auto rows = (*catalog)->ListDatastores();
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
  if (user_add->parsed()) {
    if (Status s = (*auth)->AddUser(user_name); !s.ok()) return Fail(s);
    std::cout << "user " << user_name << " added\n";
    return 0;
  }
  if (token_create->parsed()) {
    auto secret = (*auth)->CreateToken(token_id);
    if (!secret.ok()) return Fail(secret.status());
    std::cout << token_id << ":" << *secret << "\n";
    return 0;
  }
  if (acl_set->parsed()) {
    auto role = cairn::server::ParseRole(acl_role);
    if (!role.ok()) return Fail(role.status());
    if (Status s = (*auth)->SetAcl(acl_store, acl_auth, *role); !s.ok()) return Fail(s);
    std::cout << acl_auth << " has role " << acl_role << " on " << acl_store << "\n";
    return 0;
  }
  if (reindex->parsed()) {
    auto row = (*catalog)->GetDatastore(reindex_store);
    if (!row.ok()) return Fail(row.status());
    auto store = cairn::storage::Datastore::Open(env, row->path);
    if (!store.ok()) {
      return Fail(store.status().WithContext("open " + row->path +
                                             " (is the server running? stop it first)"));
    }
    cairn::storage::ReindexReport report;
    if (Status s = (*catalog)->Reindex(reindex_store, **store, &report); !s.ok()) return Fail(s);
    // Rebuilt with the store locked: in step until someone opens it again.
    if (Status s = (*catalog)->SetInStep(reindex_store, true); !s.ok()) return Fail(s);
    std::cout << "reindexed " << reindex_store << ": " << report.groups << " groups, "
              << report.snapshots << " snapshots\n";
    for (const auto& [ref, st] : report.skipped) {
      std::cout << "  skipped " << ref.ToString() << ": " << st.ToString() << "\n";
    }
    return report.skipped.empty() ? 0 : 1;
  }
  if (prune->parsed()) {
    auto row = (*catalog)->GetDatastore(prune_store);
    if (!row.ok()) return Fail(row.status());
    auto group = cairn::storage::GroupRef::Parse(prune_group);
    if (!group.ok()) return Fail(group.status());
    auto tz = cairn::storage::TimeZone::Parse(prune_tz);
    if (!tz.ok()) return Fail(tz.status());
    cairn::storage::PruneOptions o;
    o.keep_last = keep[0];
    o.keep_hourly = keep[1];
    o.keep_daily = keep[2];
    o.keep_weekly = keep[3];
    o.keep_monthly = keep[4];
    o.keep_yearly = keep[5];
    auto store = cairn::server::OpenOffline(catalog->get(), prune_store,
                                            "is the server running? then prune through the API");
    if (!store.ok()) return Fail(store.status());
    auto report = cairn::server::PruneGroup(*store->store, prune_store, *group, o, *tz,
                                            prune_dry_run, nullptr);
    if (!report.ok()) return Fail(report.status());
    if (prune_output == "json") {
      std::cout << report->ToJson().dump(2) << "\n";
    } else {
      std::cout << report->ToText();
    }
    return report->failed == 0 ? 0 : 1;
  }
  if (gc->parsed()) {
    auto row = (*catalog)->GetDatastore(gc_store);
    if (!row.ok()) return Fail(row.status());
    auto store = cairn::server::OpenOffline(
        catalog->get(), gc_store, "is the server running? then run GC through the API: cairn gc");
    if (!store.ok()) return Fail(store.status());
    cairn::storage::GcOptions options;
    options.dry_run = gc_dry_run;
    options.grace_seconds = gc_grace;
    const bool tty = ::isatty(2);
    if (tty) {
      options.progress = [](cairn::storage::GcPhase phase, uint64_t done, uint64_t total) {
        std::fprintf(stderr, "\r%-5s %llu/%llu   ", cairn::storage::GcPhaseName(phase),
                     static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
      };
    }
    auto r = cairn::server::RunGarbageCollection(*store->store, gc_store, nullptr, options);
    if (tty) std::fprintf(stderr, "\r\033[K");
    if (!r.ok()) return Fail(r.status());
    if (gc_output == "json") {
      std::cout << r->ToJson().dump(2) << "\n";
    } else {
      std::cout << cairn::server::GcResultText(*r);
    }
    return 0;
  }
  if (job->parsed()) {
    auto tasks = cairn::server::TaskLog::Open(data);
    if (!tasks.ok()) return Fail(tasks.status());
    // The offline runner opens the store itself (the server must be stopped).
    cairn::storage::Catalog* cat = catalog->get();
    auto runner = [&](const cairn::server::JobConfig& j, cairn::server::Task& task) -> Status {
      auto opened = cairn::server::OpenOffline(cat, j.store, "is the server running?");
      if (!opened.ok()) return opened.status();
      cairn::server::MaintenanceContext ctx;
      ctx.store = opened->store.get();
      ctx.store_name = j.store;
      return cairn::server::RunJob(ctx, j, task);
    };
    cairn::server::TaskRunner task_runner(tasks->get(), {.workers = 1});
    auto jobs = cairn::server::JobScheduler::Open(data, &task_runner, runner,
                                                  cairn::storage::TimeZone::Utc());
    if (!jobs.ok()) return Fail(jobs.status());
    if (job_add->parsed()) {
      nlohmann::json opts = nlohmann::json::object();
      if (!job_group.empty()) opts["group"] = job_group;
      for (int i = 0; i < 6; ++i) {
        if (job_keep[i]) opts[std::string(keep_names[i]).substr(2)] = *job_keep[i];
      }
      if (!job_target.empty()) opts["target"] = job_target;
      if (job_ignore_verified) opts["ignore-verified"] = true;
      if (job_outdated) opts["outdated-after-days"] = *job_outdated;
      new_job.options = opts;
      if (Status s = (*jobs)->Add(new_job); !s.ok()) return Fail(s);
      auto added = (*jobs)->Get(new_job.id);
      auto next = added.ok() ? (*jobs)->NextRun(*added) : std::nullopt;
      std::cout << "job " << new_job.id << " added; next run "
                << (next ? cairn::storage::FormatSnapshotTime(*next) : "never") << "\n";
      return 0;
    }
    if (job_list->parsed()) {
      auto list = (*jobs)->List();
      if (!list.ok()) return Fail(list.status());
      nlohmann::json out = nlohmann::json::array();
      for (const auto& j : *list) {
        auto next = (*jobs)->NextRun(j);
        nlohmann::json o = j.ToJson();
        o["next-run"] = next ? nlohmann::json(*next) : nlohmann::json(nullptr);
        out.push_back(o);
        if (output != "json") {
          std::cout << j.id << "\t" << j.kind << "\t" << j.store << "\t" << j.schedule << "\tnext "
                    << (next ? cairn::storage::FormatSnapshotTime(*next) : "never") << "\t"
                    << j.options.dump() << "\n";
        }
      }
      if (output == "json") std::cout << out.dump(2) << "\n";
      return 0;
    }
    if (job_remove->parsed()) {
      if (Status s = (*jobs)->Remove(job_id); !s.ok()) return Fail(s);
      std::cout << "job " << job_id << " removed\n";
      return 0;
    }
    if (job_run->parsed()) {
      auto task_id = (*jobs)->RunNow(job_id, "root@cli");
      if (!task_id.ok()) return Fail(task_id.status());
      (*jobs)->Stop();  // waits for the run
      auto info = (*tasks)->Get(*task_id);
      auto log = (*tasks)->ReadLog(*task_id, 0, 1 << 20);
      if (log.ok()) std::cout << *log;
      return info.ok() && info->state != cairn::server::TaskState::kFailed ? 0 : 1;
    }
  }
  if (verify->parsed()) {
    auto store = cairn::server::OpenOffline(
        catalog->get(), verify_store,
        "is the server running? then verify through the API: cairn verify");
    if (!store.ok()) return Fail(store.status());
    cairn::server::MaintenanceContext ctx;
    ctx.store = store->store.get();
    ctx.store_name = verify_store;
    nlohmann::json opts = {{"ignore-verified", verify_ignore}};
    if (verify_outdated) opts["outdated-after-days"] = *verify_outdated;
    auto r = cairn::server::RunVerify(ctx, verify_target, opts, nullptr);
    if (!r.ok()) return Fail(r.status());
    if (verify_output == "json") {
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
  return 0;
}
