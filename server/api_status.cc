// Routes: version, status, datastores — and RegisterRoutes, which installs
// every api file's routes.

#include <ctime>

#include "server/api_common.h"
#include "server/metrics.h"
#include "server/path_scrub.h"
#include "server/server.h"

namespace cairn::server {
namespace api {
namespace {

json ConnectionsJson(const GateCounts& c) {
  return {{"open", c.open},         {"handshake", c.handshake}, {"unauthenticated", c.unadmitted},
          {"idle", c.idle},         {"active", c.active},       {"queued", c.queued},
          {"accepted", c.accepted},
          {"refused", c.refused},   {"timed-out", c.timed_out}, {"evicted", c.evicted}};
}

json RolesJson(RoleSet roles) {
  json out = json::array();
  for (Role r : {Role::kAdmin, Role::kBackup, Role::kReader, Role::kAudit}) {
    if (roles.Has(r)) out.push_back(RoleName(r));
  }
  return out;
}

// Chunk counts are those of the last GC (the chunk store is never walked
// for a listing): null before the first GC, or for a caller who may not see it.
json DatastoreJson(const DatastoreUsage& u) {
  json j = {{"name", u.name}, {"roles", RolesJson(u.roles)}, {"chunks", nullptr},
            {"chunk_bytes", nullptr}, {"dedup", nullptr}, {"last_gc", nullptr},
            {"last_verify", nullptr}, {"stale_after", u.stale_after}};
  j["usage"] = u.total ? json{{"total", *u.total}, {"used", *u.used}, {"avail", *u.avail}}
                       : json(nullptr);
  if (u.last_gc) {
    j["chunks"] = u.last_gc->disk_chunks;
    j["chunk_bytes"] = u.last_gc->disk_bytes;
    if (u.last_gc->disk_bytes > 0 && u.logical_bytes) {
      j["dedup"] = static_cast<double>(*u.logical_bytes) / static_cast<double>(u.last_gc->disk_bytes);
    }
    j["last_gc"] = u.last_gc->ToJson();
  }
  if (u.last_verify) {
    j["last_verify"] = {{"time", u.last_verify->end},
                        {"state", u.last_verify->state == TaskState::kFailed ? "failed" : "ok"},
                        {"task", u.last_verify->id}};
  }
  return j;
}

}  // namespace

void RegisterStatusRoutes(Server* server, httplib::Server* http) {
  Service* service = server->service();
  http->Get("/api/v1/version", Wrap([](const httplib::Request&, httplib::Response& res) {
    SendJson(res, 200, {{"name", "cairn-server"}, {"version", "0.1.0"}, {"api", 1}});
    return Status::OK();
  }));

  http->Get("/api/v1/status", Wrap([server, service](const httplib::Request& req,
                                                     httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    SendJson(res, 200, {{"auth-id", p.auth_id},
                        {"uptime", now - server->start_time()},
                        {"backup-sessions", server->sessions()->backup_count()},
                        {"reader-sessions", server->sessions()->reader_count()},
                        {"tasks", {{"running", server->runner()->running()},
                                   {"queued", server->runner()->queued()}}},
                        {"connections", ConnectionsJson(server->connection_counts())}});
    return Status::OK();
  }));

  http->Get("/api/v1/datastores", Wrap([service](const httplib::Request& req,
                                                  httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    json out = json::array();
    for (const DatastoreUsage& u : service->ListDatastores(p)) out.push_back(DatastoreJson(u));
    SendJson(res, 200, out);
    return Status::OK();
  }));
}

}  // namespace api

void RegisterRoutes(Server* server, httplib::Server* http) {
  // Folders whose paths error messages must never show (ScrubPaths): the
  // data folder (the parent of the task logs' folder) and every datastore.
  AddServerPath(storage::DirName(storage::DirName(server->tasks()->LogPath("x"))));
  for (const auto& name : server->StoreNames()) {
    if (auto store = server->Store(name); store.ok()) AddServerPath((*store)->path());
  }
  Service* service = server->service();
  api::RegisterStatusRoutes(server, http);
  api::RegisterSnapshotRoutes(service, http);
  api::RegisterMaintenanceRoutes(service, http);
  api::RegisterTaskRoutes(service, http);
  api::RegisterBackupRoutes(service, http);
  api::RegisterReaderRoutes(service, http);
  api::RegisterJobRoutes(service, http);
  api::RegisterAccessRoutes(service, http);
  api::RegisterRemoteRoutes(service, http);
  api::RegisterLoginRoutes(server, http);
  api::RegisterMetricsRoutes(server, http);
  api::RegisterWebRoutes(server->web_dir(), http);
  // Errors httplib answers itself (no route, unreadable body) get their JSON
  // from the gate's error handler (HttpGate::InstallErrorHandler).
}

}  // namespace cairn::server
