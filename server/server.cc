#include "server/server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>

#include <fmt/format.h>

#include "server/request_auth.h"
#include "server/running_server.h"
#include "server/sync.h"
#include "storage/env.h"

namespace cairn::server {
namespace {

constexpr char kDefaultStore[] = "default";
constexpr char kAdminUser[] = "admin";
constexpr char kAdminToken[] = "admin!default";
constexpr int64_t kTaskRetentionDays = 30;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// The largest body the endpoint of `head` takes.
uint64_t BodyLimit(const RequestHead& head) {
  if (head.method == "POST" && StartsWith(head.path, "/api/v1/backup/")) {
    if (EndsWith(head.path, "/chunk") || EndsWith(head.path, "/blob")) return kMaxChunkBodyBytes;
    if (EndsWith(head.path, "/index")) return kMaxIndexBodyBytes;
  }
  return kMaxJsonBodyBytes;
}

// Every connection is a descriptor: a flood of them must meet the gate's
// limits, not the process's (often 1024).
void RaiseDescriptorLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Open(const ServerOptions& options, StartupInfo* info) {
  std::unique_ptr<Server> s(new Server(options));
  auto tz = storage::TimeZone::Parse(options.time_zone);
  if (!tz.ok()) return tz.status().WithContext("time zone " + options.time_zone);
  s->tz_ = *tz;
  storage::Env* env = storage::Env::Default();
  const std::string& data = options.data_dir;
  CAIRN_RETURN_IF_ERROR(storage::CreateDirAll(env, data));
  ::chmod(data.c_str(), 0700);
  CAIRN_RETURN_IF_ERROR(storage::CreateDirAll(env, storage::JoinPath(data, "tls")));
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return Status::InvalidArgument("tls-cert and tls-key go together");
  }
  if (!options.tls_cert.empty()) {
    s->tls_ = {options.tls_cert, options.tls_key};
  } else {
    s->tls_ = {storage::JoinPath(data, "tls/cert.pem"), storage::JoinPath(data, "tls/key.pem")};
    CAIRN_RETURN_IF_ERROR(EnsureSelfSignedCertificate(s->tls_));
  }
  CAIRN_ASSIGN_OR_RETURN(s->auth_, AuthStore::Open(storage::JoinPath(data, "auth.db")));
  CAIRN_ASSIGN_OR_RETURN(s->catalog_, storage::Catalog::Open(storage::JoinPath(data, "cairn.db")));

  // First start: the default datastore and the admin token.
  CAIRN_ASSIGN_OR_RETURN(auto stores, s->catalog_->ListDatastores());
  if (stores.empty()) {
    std::string path = storage::JoinPath(data, "stores/default");
    CAIRN_RETURN_IF_ERROR(storage::CreateDirAll(env, storage::DirName(path)));
    CAIRN_RETURN_IF_ERROR(storage::Datastore::Create(env, path));
    CAIRN_RETURN_IF_ERROR(s->catalog_->AddDatastore(kDefaultStore, path));
  }
  CAIRN_ASSIGN_OR_RETURN(auto users, s->auth_->ListUsers());
  if (std::find(users.begin(), users.end(), kAdminUser) == users.end()) {
    CAIRN_RETURN_IF_ERROR(s->auth_->AddUser(kAdminUser));
    CAIRN_RETURN_IF_ERROR(s->auth_->SetAcl("*", kAdminUser, Role::kAdmin));
    CAIRN_RETURN_IF_ERROR(s->auth_->SetAcl("*", kAdminToken, Role::kAdmin));
    CAIRN_ASSIGN_OR_RETURN(std::string secret, s->auth_->CreateToken(kAdminToken));
    std::string line = std::string(kAdminToken) + ":" + secret;
    std::string token_path = storage::JoinPath(data, "admin.token");
    CAIRN_RETURN_IF_ERROR(storage::WriteFileAtomic(env, token_path, line + "\n", true));
    ::chmod(token_path.c_str(), 0600);
    if (info) info->admin_token = line;
  }
  CAIRN_RETURN_IF_ERROR(s->OpenStores());
  CAIRN_ASSIGN_OR_RETURN(s->tasks_, TaskLog::Open(data));
  s->runner_ = std::make_unique<TaskRunner>(s->tasks_.get(), s->options_.tasks);
  CAIRN_ASSIGN_OR_RETURN(s->settings_, StoreSettings::Open(data));
  CAIRN_ASSIGN_OR_RETURN(s->remotes_, RemoteStore::Open(data));
  NotifierOptions notify = s->options_.notify;
  notify.user_agent = "cairn-server";
  CAIRN_ASSIGN_OR_RETURN(Notifier notifier, Notifier::Create(std::move(notify)));
  s->notifier_.emplace(std::move(notifier));
  CAIRN_ASSIGN_OR_RETURN(s->overdue_notices_, OverdueNotices::Open(data));
  Server* self = s.get();
  CAIRN_ASSIGN_OR_RETURN(
      s->jobs_, JobScheduler::Open(
                    data, s->runner_.get(),
                    [self](const JobConfig& job, Task& task) -> TaskOutcome {
                      auto ctx = self->Maintenance(job.store);
                      if (!ctx.ok()) return {ctx.status(), "", nullptr};
                      TaskOutcome out = IsSyncJobKind(job.kind)
                                            ? RunSyncJob(*ctx, self->remotes(), job, task)
                                            : TaskOutcome{RunJob(*ctx, job, task), "", nullptr};
                      // A prune, GC or sync changes what groups hold alone.
                      if (job.kind != "verify") self->usage()->MarkDirty(job.store);
                      return out;
                    },
                    s->tz_));
  CAIRN_ASSIGN_OR_RETURN(
      s->usage_, GroupUsage::Open(data, s->catalog_.get(),
                                  [self](const std::string& name) { return self->Store(name); },
                                  s->options_.usage_settle_ms));
  if (info) {
    CAIRN_ASSIGN_OR_RETURN(info->fingerprint, CertificateFingerprint(s->tls_.cert));
  }
  return s;
}

Status Server::OpenStores() {
  MutexLock lock(&stores_mu_);
  return OpenStoresLocked();
}

Status Server::OpenNewStores() {
  MutexLock lock(&stores_mu_);
  return OpenStoresLocked();
}

Result<std::string> Server::ReloadCertificate() {
  CAIRN_ASSIGN_OR_RETURN(std::string fingerprint, CertificateFingerprint(tls_.cert));
  if (gate_) CAIRN_RETURN_IF_ERROR(gate_->ReloadCertificate(tls_));
  return fingerprint;
}

// Opens each datastore of the catalog that is not open yet.
Status Server::OpenStoresLocked() {
  CAIRN_ASSIGN_OR_RETURN(auto rows, catalog_->ListDatastores());
  storage::DatastoreOptions opts;
  opts.chunks.sync = options_.sync_chunks;
  for (const auto& row : rows) {
    if (stores_.contains(row.name)) continue;
    if (stopping_) break;
    auto ds = storage::Datastore::Open(storage::Env::Default(), row.path, opts);
    if (!ds.ok()) return ds.status().WithContext("datastore " + row.name);
    // The catalog follows every change of the store from here on; a store
    // the last run did not close cleanly is reindexed first.
    storage::ReindexReport report;
    const auto t0 = std::chrono::steady_clock::now();
    CAIRN_ASSIGN_OR_RETURN(
        auto sync, storage::CatalogSync::Attach(
                       catalog_.get(), row.name, ds->get(),
                       [](const Status& s) { spdlog::error("{}", s.ToString()); }, &report));
    if (report.groups >= 0) {
      spdlog::info("datastore {}: catalog rebuilt from the folder ({} groups, {} snapshots, "
                   "{} unreadable) in {} ms",
                   row.name, report.groups, report.snapshots, report.skipped.size(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - t0).count());
    }
    stores_[row.name] = OpenStore{std::move(*ds), std::move(sync)};
  }
  return Status::OK();
}

Server::Server(ServerOptions options)
    : options_(std::move(options)),
      sessions_(options_.idle_timeout_seconds, options_.session_limits),
      web_sessions_(options_.web_session_idle_seconds),
      service_(std::make_unique<Service>(this)) {}

Server::~Server() { Stop(); }

Result<storage::Datastore*> Server::Store(const std::string& name) {
  MutexLock lock(&stores_mu_);
  auto it = stores_.find(name);
  if (it == stores_.end()) {
    // Created since the start (`cairn-server datastore create`)?
    if (Status s = OpenStoresLocked(); !s.ok()) spdlog::error("opening datastores: {}", s.ToString());
    it = stores_.find(name);
  }
  if (it == stores_.end()) return Status::NotFound("no datastore " + name);
  return it->second.store.get();
}

Result<storage::CatalogSync*> Server::Sync(const std::string& name) {
  MutexLock lock(&stores_mu_);
  auto it = stores_.find(name);
  if (it == stores_.end()) return Status::NotFound("no datastore " + name);
  return it->second.sync.get();
}

Result<MaintenanceContext> Server::Maintenance(const std::string& store_name) {
  MaintenanceContext ctx;
  CAIRN_ASSIGN_OR_RETURN(ctx.store, Store(store_name));
  ctx.store_name = store_name;
  ctx.sessions = &sessions_;
  ctx.tz = tz_;
  ctx.cancel = runner_->cancel();
  return ctx;
}

std::vector<OverdueGroup> Server::OverdueGroups(int64_t now) {
  std::vector<OverdueGroup> out;
  for (const auto& name : StoreNames()) {
    auto sync = Sync(name);
    if (!sync.ok() || !(*sync)->Refresh().ok()) continue;
    auto groups = catalog_->ListGroups(name);
    auto limits = settings_->StaleLimitsOf(name);
    if (!groups.ok() || !limits.ok()) {
      spdlog::error("overdue check of {}: {}", name,
                    (groups.ok() ? limits.status() : groups.status()).ToString());
      continue;
    }
    for (const auto& row : *groups) {
      const std::string group = row.group.ToString();
      const int64_t stale_after = limits->For(group);
      if (IsOverdue(row.last_snapshot, stale_after, now)) {
        out.push_back({name, group, row.last_snapshot, stale_after});
      }
    }
  }
  return out;
}

Admission Server::AdmitRequest(const RequestHead& head) {
  if (head.path == "/api/v1/version") return Admission::Admit(0, "");
  // Routing sees the percent-decoded path: a path is the API's when either
  // form says so.
  const std::string decoded = httplib::detail::decode_url(head.path, false);
  const bool api = IsApiPath(head.path) || IsApiPath(decoded);
  if (head.method == "POST" && decoded == "/api/v1/login") {
    return Admission::AdmitAnonymous(kMaxJsonBodyBytes);
  }
  // The static web UI needs no login to be fetched; it has no body.
  if ((head.method == "GET" || head.method == "HEAD") && !api) return Admission::AdmitAnonymous(0);
  Credentials creds;
  creds.authorization = head.Find("Authorization");
  if (const std::string* cookie = head.Find("Cookie")) {
    creds.session_id = CookieValue(*cookie, kSessionCookie);
  }
  creds.csrf = head.Find(kCsrfHeader);
  creds.method = head.method;
  auto principal = AuthenticateRequest(*auth_, web_sessions_, creds, Now());
  if (!principal.ok()) {
    if (principal.status().IsUnauthenticated()) {
      return Admission::Refuse(401, principal.status().message(), "Unauthenticated");
    }
    if (principal.status().IsPermissionDenied()) {
      return Admission::Refuse(403, principal.status().message(), "PermissionDenied");
    }
    spdlog::error("authentication: {}", principal.status().ToString());
    return Admission::Refuse(503, "authentication is unavailable; see the server log", "Busy");
  }
  return Admission::Admit(BodyLimit(head), principal->user);
}

GateCounts Server::connection_counts() const { return gate_ ? gate_->counts() : GateCounts{}; }

std::vector<std::string> Server::StoreNames() {
  MutexLock lock(&stores_mu_);
  if (Status s = OpenStoresLocked(); !s.ok()) spdlog::error("opening datastores: {}", s.ToString());
  std::vector<std::string> out;
  for (const auto& [name, ds] : stores_) out.push_back(name);
  return out;
}

Status Server::Start() {
  RaiseDescriptorLimit();
  core_ = std::make_unique<HttpCore>();
  // The gate checks each endpoint's limit before a body is read; this is the
  // backstop for the largest of them.
  core_->set_payload_max_length(kMaxIndexBodyBytes);
  // Only the Keep-Alive header's "max": the gate serves any number.
  core_->set_keep_alive_max_count(100000);
  CAIRN_RETURN_IF_ERROR(core_->EnableStreaming());  // downloads stream their bodies
  RegisterRoutes(this, core_.get());
  HttpGate::InstallErrorHandler(core_.get());
  // Every answer httplib writes (handlers, 404s, errors) carries the security
  // headers; ours replace any a handler set.
  core_->set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    for (const auto& [name, value] : SecurityHeaders(IsApiPath(req.path) || IsApiPath(req.target))) {
      res.headers.erase(name);
      res.set_header(name, value);
    }
  });
  CAIRN_ASSIGN_OR_RETURN(gate_, HttpGate::Create(tls_, options_.gate, core_.get(),
                                                 [this](const RequestHead& head) {
                                                   return AdmitRequest(head);
                                                 }));
  // The gate's own refusals carry them too (as /api/ answers: they are JSON).
  gate_->SetAnswerHeaders(SecurityHeaders(/*api=*/true));
  CAIRN_ASSIGN_OR_RETURN(bound_port_, gate_->Bind(options_.host, options_.port));
  gate_->Start();
  start_time_ = Now();
  // For the admin commands that ask a running server (server/running_server.h).
  if (Status s = WriteRunningServer(options_.data_dir, options_.host, bound_port_); !s.ok()) {
    spdlog::warn("cannot write server.json: {}", s.ToString());
  }
  jobs_->Start();
  usage_->Start(StoreNames());
  reaper_ = std::thread([this] {
    int64_t last_trim = 0;
    while (!stopping_.load()) {
      for (int i = 0; i < 10 && !stopping_.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      size_t n = sessions_.ReapIdle(Now());
      if (n > 0) spdlog::warn("aborted {} idle backup session(s)", n);
      web_sessions_.ReapIdle(Now());
      // Tasks are kept for kTaskRetentionDays; trimmed once an hour.
      if (Now() - last_trim >= 3600) {
        last_trim = Now();
        auto trimmed = tasks_->Trim(last_trim - kTaskRetentionDays * 86400);
        if (trimmed.ok() && *trimmed > 0) spdlog::info("trimmed {} old task(s)", *trimmed);
      }
    }
  });
  // Overdue groups: a thread of their own, since a webhook that does not
  // answer may take its timeout for every group.
  overdue_ = std::thread([this] {
    while (!stopping_.load()) {
      const int64_t now = Now();
      AnnounceOverdue(OverdueGroups(now), *notifier_, overdue_notices_.get(), now);
      for (int i = 0; i < options_.overdue_check_seconds * 10 && !stopping_.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });
  return Status::OK();
}

void Server::Stop() {
  if (stopping_.exchange(true)) return;
  if (gate_) {
    RemoveRunningServer(options_.data_dir);
    gate_->Stop();
  }
  if (reaper_.joinable()) reaper_.join();
  if (overdue_.joinable()) overdue_.join();
  // The runner first: long tasks see its cancel flag and end early, queued
  // ones end as failed, and the scheduler's runs with them; a run the
  // scheduler tries to start meanwhile is refused.
  if (runner_) runner_->Stop();
  if (jobs_) jobs_->Stop();
  if (usage_) usage_->Stop();
  // Nothing half-committed: unfinished backups lose their staging folder.
  sessions_.Shutdown();
  // Nothing changes the stores any more: each catalog is recorded in step
  // (unless an update failed), so the next start needs no reindex.
  MutexLock lock(&stores_mu_);
  for (auto& [name, open] : stores_) {
    if (open.sync) open.sync->Detach();
  }
}

}  // namespace cairn::server
