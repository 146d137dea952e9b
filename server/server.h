#pragma once

// cairn-server: owns the datastores, the catalog, users and tokens, the
// sessions, and the HTTPS listener that maps the API (server/API.md) onto them.
//
// Data directory layout:
//   <data>/cairn.db          SQLite catalog: datastores, groups, snapshots (storage/catalog.h)
//   <data>/auth.db           users, tokens, ACL (server/auth_store.h)
//   <data>/server.db         tasks, jobs, settings, remotes (server/task_log.h,
//                            server/job_scheduler.h, server/remotes.h)
//   <data>/tasks/<id>.log    task logs
//   <data>/tls/{cert,key}.pem the server's self-signed identity
//   <data>/admin.token       the first admin token, mode 0600, written once
//   <data>/server.json       where the running server listens (server/running_server.h)
//   <data>/stores/default/   the default datastore (others live where `datastore create` puts them)
//
// Thread safety: Start/Stop from one thread; request handlers run on the
// listener's thread pool and only use thread-safe members.

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "server/auth_store.h"
#include "server/group_usage.h"
#include "server/http_gate.h"
#include "server/job_scheduler.h"
#include "server/login_limiter.h"
#include "server/maintenance.h"
#include "server/notifier.h"
#include "server/overdue.h"
#include "server/remotes.h"
#include "server/server_db.h"
#include "server/service.h"
#include "server/session_manager.h"
#include "server/task_log.h"
#include "server/task_runner.h"
#include "server/tls.h"
#include "server/web_sessions.h"
#include "storage/blob.h"
#include "storage/catalog.h"
#include "storage/datastore.h"
#include "storage/mutex.h"
#include "storage/time_zone.h"

namespace cairn::server {

// Request body limits by endpoint (the gate answers 413 above them without
// reading the body): chunk and blob uploads, index uploads, everything else.
inline constexpr uint64_t kMaxChunkBodyBytes = storage::kMaxBlobFileSize;
inline constexpr uint64_t kMaxIndexBodyBytes = kMaxIndexUploadBytes;  // server/backup_session.h
inline constexpr uint64_t kMaxJsonBodyBytes = uint64_t{1} << 20;

// The web UI's folder compiled in: the source tree's web/ for a build tree
// (CMake's CAIRN_WEB_DIR), the installed one for a package.
std::string DefaultWebDir();

struct ServerOptions {
  std::string data_dir;             // created if missing
  std::string host = "127.0.0.1";
  int port = 8107;                  // 0 picks a free port
  GateLimits gate;                  // connections: timeouts, counts, workers
  TaskRunnerOptions tasks;          // background work: workers, queue, per token
  SessionLimits session_limits;     // backup and reader sessions per token
  int64_t idle_timeout_seconds = 900;
  int64_t web_session_idle_seconds = kDefaultWebSessionIdleSeconds;  // web UI logins
  bool sync_chunks = true;          // fsync every new chunk before its rename
  std::string time_zone = "UTC";    // prune periods (storage/time_zone.h names)
  NotifierOptions notify;           // where overdue groups are announced (none by default)
  int overdue_check_seconds = 60;   // how often overdue groups are looked for
  std::string web_dir = DefaultWebDir();  // the UI's static files; empty: no UI
  int64_t usage_settle_ms = 5000;   // quiet time before unique bytes are recomputed
  // The certificate and key clients see (PEM; the certificate file may hold
  // the chain). Both empty: a self-signed pair in <data>/tls, made on first
  // start. The printed fingerprint is always the served certificate's.
  std::string tls_cert, tls_key;
};

// What the first start prints.
struct StartupInfo {
  std::string url;
  std::string fingerprint;
  std::string admin_token;  // "admin!default:SECRET" on first start, empty after
};

class Server {
 public:
  // Opens or initialises the data directory: TLS identity, databases, the
  // default datastore and the first admin token on first start. Leftover
  // staging folders of every datastore are removed (Datastore::Open).
  static Result<std::unique_ptr<Server>> Open(const ServerOptions& options, StartupInfo* info);
  ~Server();

  // Binds and serves on background threads. Returns once listening.
  Status Start();
  // Stops accepting, aborts running sessions; returns when the listener is done.
  void Stop();
  int port() const { return bound_port_; }
  // What the connection gate holds now (all zero before Start).
  GateCounts connection_counts() const;

  // Used by request handlers (server/http_api.cc).
  AuthStore* auth() { return auth_.get(); }
  storage::Catalog* catalog() { return catalog_.get(); }
  SessionManager* sessions() { return &sessions_; }
  // The web UI's login sessions and failed-login limits (server/api_login.cc).
  WebSessions* web_sessions() { return &web_sessions_; }
  LoginLimiter* login_limiter() { return &login_limiter_; }
  // NotFound for an unknown datastore name.
  Result<storage::Datastore*> Store(const std::string& name);
  // The catalog sync of a datastore (NotFound for an unknown name).
  Result<storage::CatalogSync*> Sync(const std::string& name);
  // The typed operations the HTTP layer calls (server/service.h).
  Service* service() { return service_.get(); }
  // Every datastore's name; datastores added to the catalog since (by
  // `cairn-server datastore create`) are opened first.
  std::vector<std::string> StoreNames();
  // Opens the datastores of the catalog that are not open yet, so that a
  // datastore created while the server runs serves without a restart.
  Status OpenNewStores();
  // Reads the certificate and key files again (SIGHUP); new connections
  // use them. The new fingerprint, or the error (then nothing changed).
  Result<std::string> ReloadCertificate();
  int64_t start_time() const { return start_time_; }
  TaskLog* tasks() { return tasks_.get(); }
  StoreSettings* settings() { return settings_.get(); }
  // Other servers that sync jobs pull from or push to (server/remotes.h).
  RemoteStore* remotes() { return remotes_.get(); }
  JobScheduler* jobs() { return jobs_.get(); }
  // Groups' unique bytes, computed in the background (server/group_usage.h).
  GroupUsage* usage() { return usage_.get(); }
  // The context for maintenance on `store_name` (NotFound for an unknown store).
  Result<MaintenanceContext> Maintenance(const std::string& store_name);
  // Every group of every datastore that is overdue at `now` (server/overdue.h).
  std::vector<OverdueGroup> OverdueGroups(int64_t now);
  // Where prune, GC, verify and job runs go (server/task_runner.h).
  TaskRunner* runner() { return runner_.get(); }
  const storage::TimeZone& time_zone() const { return tz_; }
  const std::string& web_dir() const { return options_.web_dir; }

 private:
  explicit Server(ServerOptions options);
  Status OpenStores();
  Status OpenStoresLocked() CAIRN_REQUIRES(stores_mu_);
  // The gate's question for every request head: authenticated (by token or
  // session cookie, with the CSRF rule; but for the version, the login and
  // the static UI), and how large a body its endpoint takes.
  Admission AdmitRequest(const RequestHead& head);

  const ServerOptions options_;
  storage::TimeZone tz_ = storage::TimeZone::Utc();
  TlsPaths tls_;
  std::unique_ptr<AuthStore> auth_;
  std::unique_ptr<storage::Catalog> catalog_;
  SessionManager sessions_;
  WebSessions web_sessions_;
  LoginLimiter login_limiter_;
  Mutex stores_mu_;
  struct OpenStore {
    std::unique_ptr<storage::Datastore> store;
    std::unique_ptr<storage::CatalogSync> sync;  // the store's one catalog writer
  };
  std::map<std::string, OpenStore> stores_ CAIRN_GUARDED_BY(stores_mu_);
  std::unique_ptr<Service> service_;
  std::unique_ptr<TaskLog> tasks_;
  std::unique_ptr<StoreSettings> settings_;
  std::unique_ptr<RemoteStore> remotes_;
  std::unique_ptr<JobScheduler> jobs_;
  std::optional<Notifier> notifier_;
  std::unique_ptr<OverdueNotices> overdue_notices_;
  std::unique_ptr<GroupUsage> usage_;
  std::unique_ptr<TaskRunner> runner_;
  std::unique_ptr<HttpCore> core_;
  std::unique_ptr<HttpGate> gate_;
  std::thread reaper_;
  std::thread overdue_;  // looks for overdue groups (server/overdue.h)
  std::atomic<bool> stopping_{false};
  int bound_port_ = 0;
  int64_t start_time_ = 0;
};

// Registers the HTTP routes of the API on `http` (server/api_routes.cc).
void RegisterRoutes(Server* server, httplib::Server* http);

}  // namespace cairn::server
