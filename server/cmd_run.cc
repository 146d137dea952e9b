// `cairn-server run`: serves the API over HTTPS until SIGINT/SIGTERM; SIGHUP
// (`systemctl reload`) re-reads the settings file and the certificate and
// opens datastores created since.

#include <atomic>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <semaphore>
#include <string>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "server/admin_cli.h"
#include "server/server.h"

namespace cairn::server {
namespace {

// Released once per signal (a binary semaphore must not be released twice).
std::counting_semaphore<1 << 20> g_signalled{0};
std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};

extern "C" void OnStop(int) {
  g_stop = true;
  g_signalled.release();
}
extern "C" void OnReload(int) {
  g_reload = true;
  g_signalled.release();
}

// The settings `systemctl reload` (SIGHUP) changes in a running server;
// the others (listen, threads, data, …) need a restart.
constexpr const char* kReloadable[] = {"log-level", "tls-cert", "tls-key"};

// SIGHUP: the settings file read again (what the command line gave stays),
// the log level and the certificate applied, and datastores created since
// opened. A bad file or certificate is logged and changes nothing.
void Reload(Server& server, const ConfigUse& config, std::string* log_level) {
  std::map<std::string, std::string> values;
  if (!config.path.empty()) {
    auto items = ReadConfigFile(config.path);
    if (!items.ok()) {
      spdlog::error("reload: {}; nothing changed", items.status().ToString());
      return;
    }
    for (const auto& [key, value] : *items) values[key] = value;
  }
  for (const char* key : kReloadable) {
    if (values.contains(key) && config.from_flags.contains(key)) {
      spdlog::warn("reload: {} is set on the command line; the file's value is not used", key);
    }
  }
  auto from_file = [&](const char* key) {
    return config.from_flags.contains(key) || !values.contains(key) ? std::string() : values[key];
  };
  if (std::string level = from_file("log-level"); !level.empty() && level != *log_level) {
    if (Status s = SetLogLevel(level); !s.ok()) {
      spdlog::error("reload: {}", s.ToString());
    } else {
      *log_level = level;
      spdlog::info("reload: log level {}", level);
    }
  }
  auto fingerprint = server.ReloadCertificate();
  if (!fingerprint.ok()) {
    spdlog::error("reload: certificate: {}; the old one stays", fingerprint.status().ToString());
  } else {
    spdlog::info("reload: certificate fingerprint (SHA-256) {}", *fingerprint);
  }
  if (Status s = server.OpenNewStores(); !s.ok()) spdlog::error("reload: {}", s.ToString());
  spdlog::info("reloaded; datastores: {}", fmt::join(server.StoreNames(), ", "));
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

int Run(ServerOptions opts, const std::string& listen, const ConfigUse& config,
        std::string log_level) {
  const std::string data = opts.data_dir;
  if (!ParseListen(listen, &opts.host, &opts.port)) {
    std::cerr << "cairn-server: --listen must be ADDR:PORT\n";
    return 2;
  }
  StartupInfo info;
  auto server = Server::Open(opts, &info);
  if (!server.ok()) return FailCommand(server.status());
  Status s = (*server)->Start();
  if (!s.ok()) return FailCommand(s);
  std::string host = opts.host.find(':') != std::string::npos ? "[" + opts.host + "]" : opts.host;
  std::cout << "cairn-server listening on https://" << host << ":" << (*server)->port() << "/\n"
            << "data directory: " << data << "\n"
            << "certificate fingerprint (SHA-256): " << info.fingerprint << "\n";
  if (!info.admin_token.empty()) {
    std::cout << "admin API token (shown once, also in " << data << "/admin.token):\n  "
              << info.admin_token << "\n";
  }
  std::cout.flush();
  std::signal(SIGINT, OnStop);
  std::signal(SIGTERM, OnStop);
  std::signal(SIGHUP, OnReload);
  while (true) {
    g_signalled.acquire();
    if (g_stop) break;
    if (g_reload.exchange(false)) Reload(**server, config, &log_level);
  }
  spdlog::info("shutting down: aborting running sessions");
  (*server)->Stop();
  return 0;
}

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
  std::string log_level = "info";
  ServerOptions opts;
  const ConfigUse* config = nullptr;

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
    cmd->add_option("--max-workers-per-user", gate.max_workers_per_user,
                    "worker threads one user's requests may hold at once; more wait "
                    "(default: half of --threads)")
        ->check(CLI::Range(1, 256));
    cmd->add_option("--max-anonymous-workers-per-address", gate.max_anonymous_workers_per_address,
                    "worker threads requests without a user (login, web UI files) from one "
                    "address may hold (default: an eighth of --threads)")
        ->check(CLI::Range(1, 256));
    cmd->add_option("--max-anonymous-workers", gate.max_anonymous_workers,
                    "worker threads all requests without a user may hold (default: a quarter "
                    "of --threads)")
        ->check(CLI::Range(1, 256));
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
    cmd->add_option("--tls-cert", opts.tls_cert,
                    "PEM certificate (chain) to serve, e.g. from your own CA (default: a "
                    "self-signed one made in DATA/tls); reloaded on SIGHUP")
        ->check(CLI::ExistingFile);
    cmd->add_option("--tls-key", opts.tls_key, "PEM private key of --tls-cert")
        ->check(CLI::ExistingFile);
    cmd->add_option("--log-level", log_level, "trace, debug, info, warn, error or off (default info)")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  }

  int Execute(const std::string& data) {
    opts.data_dir = data;
    if (Status s = SetLogLevel(log_level); !s.ok()) return FailCommand(s);
    return Run(opts, listen, *config, log_level);
  }
};

}  // namespace

void AddRunCommand(CLI::App& app, std::vector<AdminCommand>* commands, const ConfigUse* config) {
  auto c = std::make_shared<RunCommand>();
  c->config = config;
  c->Add(app);
  commands->push_back({c->cmd, [c](const std::string& data) { return c->Execute(data); }});
}

}  // namespace cairn::server
