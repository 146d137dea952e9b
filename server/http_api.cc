// The HTTP layer: maps requests onto the session logic and the datastore, and
// Status codes onto HTTP status codes. Every handler authenticates, checks the
// caller's role on the datastore, validates every name before use, and
// answers errors as {"error": message, "code": name}. Described in server/API.md.

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <stdlib.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <ctime>
#include <mutex>

#include "server/maintenance.h"
#include "server/path_scrub.h"
#include "server/server.h"
#include "storage/blob.h"
#include "storage/json_bounds.h"

namespace cairn::server {
namespace {

using nlohmann::json;
using storage::GroupRef;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

int HttpCode(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk: return 200;
    case Status::Code::kNotFound: return 404;
    case Status::Code::kInvalidArgument: return 400;
    case Status::Code::kCorruption: return 400;  // only client data reaches here as Corruption
    case Status::Code::kPermissionDenied: return 403;
    case Status::Code::kConflict: return 409;
    case Status::Code::kAlreadyExists: return 409;
    case Status::Code::kBusy: return 503;
    case Status::Code::kIOError: return 500;
    case Status::Code::kUnauthenticated: return 401;
    case Status::Code::kTooManyRequests: return 429;
  }
  return 500;
}

void SendJson(httplib::Response& res, int code, const json& body) {
  res.status = code;
  res.set_content(body.dump(), "application/json");
}

// A 5xx is a server fault: the client learns only that, the log gets the
// details. Other errors carry their message, with server paths scrubbed.
void SendError(const httplib::Request& req, httplib::Response& res, const Status& s) {
  int code = HttpCode(s);
  if (code >= 500) {
    spdlog::error("{} {} failed: {}", req.method, req.path, s.ToString());
    SendJson(res, code, {{"error", "internal error; see the server log"},
                         {"code", Status::CodeName(s.code())}});
    return;
  }
  SendJson(res, code, {{"error", ScrubPaths(s.message())}, {"code", Status::CodeName(s.code())}});
}

json ConnectionsJson(const GateCounts& c) {
  return {{"open", c.open},         {"handshake", c.handshake}, {"unauthenticated", c.unadmitted},
          {"idle", c.idle},         {"active", c.active},       {"accepted", c.accepted},
          {"refused", c.refused},   {"timed-out", c.timed_out}, {"evicted", c.evicted}};
}

// JSON request bodies: depth and size are refused on the raw bytes, before a
// value is built (storage/json_bounds.h says why).
constexpr storage::JsonLimits kBodyLimits{/*max_depth=*/64, /*max_size=*/1024 * 1024};
// Client info stored in a manifest at finish (the object itself is level 1).
constexpr storage::JsonLimits kClientInfoLimits{/*max_depth=*/16, /*max_size=*/64 * 1024};

// Parses a JSON request body; InvalidArgument for anything but an object, or
// a body nested deeper than 64 levels or larger than 1 MiB.
Result<json> ParseBody(const httplib::Request& req) {
  if (req.body.empty()) return json::object();
  auto j = storage::ParseJsonBounded(req.body, kBodyLimits);
  if (!j.ok()) return Status::InvalidArgument("body: " + j.status().message());
  if (!j->is_object()) return Status::InvalidArgument("body must be a JSON object");
  return std::move(j).value();
}

// A string field of a JSON object; `fallback` when absent, InvalidArgument when not a string.
Result<std::string> StringField(const json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) return Status::InvalidArgument(std::string(key) + " must be a string");
  return it->get<std::string>();
}

Result<std::string> Param(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return Status::InvalidArgument(std::string("missing parameter ") + name);
  return req.get_param_value(name);
}

struct Caller {
  Principal principal;
  RoleSet roles;
  storage::Datastore* store = nullptr;
  std::string store_name;
};

// The handler context: authentication and datastore lookup done once.
class Api {
 public:
  explicit Api(Server* server) : server_(server) {}

  Result<Principal> Authenticate(const httplib::Request& req) {
    std::string header = req.get_header_value("Authorization");
    if (header.empty()) return Status::Unauthenticated("missing Authorization header");
    return server_->auth()->Authenticate(header);
  }

  // Authenticates and resolves the store named in the path; the caller must
  // hold at least one role there.
  Result<Caller> ForStore(const httplib::Request& req, const std::string& store_name) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Authenticate(req));
    CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store_name));
    Caller c;
    c.principal = p;
    c.roles = server_->auth()->RolesOn(p, store_name);
    if (c.roles.empty()) return Status::PermissionDenied("no access to datastore " + store_name);
    CAIRN_ASSIGN_OR_RETURN(c.store, server_->Store(store_name));
    c.store_name = store_name;
    return c;
  }

  // May the caller see (list) this group? Admin, Reader, Audit: every group;
  // Backup: only its own.
  bool CanSee(const Caller& c, const GroupRef& g) {
    if (c.roles.Has(Role::kAdmin) || c.roles.Has(Role::kReader) || c.roles.Has(Role::kAudit)) {
      return true;
    }
    return c.roles.Has(Role::kBackup) && OwnedBy(c, g);
  }
  // May the caller read this group's data?
  bool CanRead(const Caller& c, const GroupRef& g) {
    if (c.roles.Has(Role::kAdmin) || c.roles.Has(Role::kReader)) return true;
    return c.roles.Has(Role::kBackup) && OwnedBy(c, g);
  }
  bool OwnedBy(const Caller& c, const GroupRef& g) {
    auto owner = c.store->GetOwner(g);
    return owner.ok() && OwnsGroup(c.principal, *owner);
  }

  json SnapshotJson(const Caller& c, const SnapshotRef& ref, const storage::Manifest& m) {
    json archives = json::array();
    for (const auto& a : m.archives) {
      archives.push_back({{"name", a.name}, {"size", a.size}, {"csum", a.csum.ToHex()}});
    }
    json j = {{"snapshot", ref.ToString()},
              {"ns", storage::FormatNamespace(ref.group.ns)},
              {"type", ref.group.type},
              {"id", ref.group.id},
              {"time", ref.time},
              {"time-text", storage::FormatSnapshotTime(ref.time)},
              {"size", m.TotalSize()},
              {"archives", archives},
              {"protected", m.is_protected},
              {"notes", m.notes},
              {"client", m.client}};
    if (m.verify) {
      j["verify"] = {{"state", m.verify->state}, {"time", m.verify->time}, {"task", m.verify->task}};
    } else {
      j["verify"] = nullptr;
    }
    auto owner = c.store->GetOwner(ref.group);
    j["owner"] = owner.ok() ? json(*owner) : json(nullptr);
    return j;
  }

  Server* server() { return server_; }

 private:
  Server* server_;
};

// Wraps a handler: exceptions become a 500 with a logged message (the only
// place exceptions are caught), Status errors become their HTTP code.
template <typename Fn>
void Run(const httplib::Request& req, httplib::Response& res, const Fn& fn) {
  try {
    Status s = fn();
    if (!s.ok()) SendError(req, res, s);
  } catch (const std::exception& e) {
    spdlog::error("{} {}: unhandled exception: {}", req.method, req.path, e.what());
    SendJson(res, 500, {{"error", "internal error; see the server log"}, {"code", "Internal"}});
  }
}

template <typename Fn>
httplib::Server::Handler Wrap(Fn fn) {
  return [fn](const httplib::Request& req, httplib::Response& res) {
    Run(req, res, [&] { return fn(req, res); });
  };
}

// Reads the request body into *body (cleared first), reserving Content-Length
// up front. The gate (server/http_gate.h) has refused a body over the limit
// before anything was read; as a backstop, a body over `limit` is read to its
// end and discarded, and refused as Corruption like any other oversized
// chunk. A body that cannot be read (connection closed early) is
// InvalidArgument.
Status ReadBody(const httplib::Request& req, const httplib::ContentReader& reader, uint64_t limit,
                std::string* body) {
  body->clear();
  const std::string length_text = req.get_header_value("Content-Length");
  uint64_t length = 0;
  auto [ptr, ec] =
      std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
  (void)ptr;
  if (ec == std::errc() && length <= limit) body->reserve(length);
  bool over = false;
  const bool ok = reader([&](const char* data, size_t n) {
    if (over || body->size() + n > limit) {
      over = true;
      return true;  // keep reading: the connection must reach the next request
    }
    body->append(data, n);
    return true;
  });
  if (over) {
    std::string().swap(*body);
    return Status::Corruption("chunk blob exceeds the limit of " + std::to_string(limit) +
                              " bytes");
  }
  if (!ok) return Status::InvalidArgument("could not read the request body");
  return Status::OK();
}

}  // namespace

void RegisterRoutes(Server* server, httplib::Server* http) {
  auto api = std::make_shared<Api>(server);
  // Folders whose paths error messages must never show (ScrubPaths): the
  // data folder (the parent of the task logs' folder) and every datastore.
  AddServerPath(storage::DirName(storage::DirName(server->tasks()->LogPath("x"))));
  for (const auto& name : server->StoreNames()) {
    if (auto store = server->Store(name); store.ok()) AddServerPath((*store)->path());
  }

  http->Get("/api/v1/version", Wrap([](const httplib::Request&, httplib::Response& res) {
    SendJson(res, 200, {{"name", "cairn-server"}, {"version", "0.1.0"}, {"api", 1}});
    return Status::OK();
  }));

  http->Get("/api/v1/status", Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    auto* s = api->server();
    SendJson(res, 200, {{"auth-id", p.auth_id},
                        {"uptime", Now() - s->start_time()},
                        {"backup-sessions", s->sessions()->backup_count()},
                        {"reader-sessions", s->sessions()->reader_count()},
                        {"connections", ConnectionsJson(s->connection_counts())}});
    return Status::OK();
  }));

  http->Get("/api/v1/datastores", Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    json out = json::array();
    for (const auto& name : api->server()->StoreNames()) {
      if (api->server()->auth()->RolesOn(p, name).empty()) continue;
      auto store = api->server()->Store(name);
      if (!store.ok()) continue;
      json j = {{"name", name}};
      struct statvfs vfs;
      if (::statvfs((*store)->path().c_str(), &vfs) == 0) {
        uint64_t total = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
        uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
        uint64_t free_all = static_cast<uint64_t>(vfs.f_bfree) * vfs.f_frsize;
        j["usage"] = {{"total", total}, {"used", total - free_all}, {"avail", avail}};
      }
      out.push_back(j);
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Get(R"(/api/v1/datastores/([^/]+)/groups)",
            Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    CAIRN_ASSIGN_OR_RETURN(std::vector<GroupRef> groups, c.store->ListGroups());
    json out = json::array();
    for (const auto& g : groups) {
      if (!api->CanSee(c, g)) continue;
      auto snaps = c.store->ListSnapshots(g);
      auto owner = c.store->GetOwner(g);
      json j = {{"group", g.ToString()}, {"ns", storage::FormatNamespace(g.ns)},
                {"type", g.type}, {"id", g.id},
                {"owner", owner.ok() ? json(*owner) : json(nullptr)},
                {"snapshots", snaps.ok() ? snaps->size() : 0}};
      j["last"] = snaps.ok() && !snaps->empty() ? json(snaps->back().time) : json(nullptr);
      out.push_back(j);
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Get(R"(/api/v1/datastores/([^/]+)/snapshots)",
            Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    std::vector<GroupRef> groups;
    if (req.has_param("group")) {
      CAIRN_ASSIGN_OR_RETURN(GroupRef g, GroupRef::Parse(req.get_param_value("group")));
      groups.push_back(g);
    } else {
      CAIRN_ASSIGN_OR_RETURN(groups, c.store->ListGroups());
    }
    json out = json::array();
    for (const auto& g : groups) {
      if (!api->CanSee(c, g)) {
        if (req.has_param("group")) return Status::PermissionDenied("no access to group " + g.ToString());
        continue;
      }
      auto snaps = c.store->ListSnapshots(g);
      if (!snaps.ok()) {
        if (snaps.status().IsNotFound() && !req.has_param("group")) continue;
        return snaps.status();
      }
      for (const auto& ref : *snaps) {
        auto m = c.store->ReadManifest(ref);
        if (!m.ok()) {
          out.push_back({{"snapshot", ref.ToString()}, {"error", ScrubPaths(m.status().ToString())}});
          continue;
        }
        out.push_back(api->SnapshotJson(c, ref, *m));
      }
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  // Snapshot changes: delete (Admin), protect/unprotect and notes (Admin, or
  // the owner with the Backup role for notes only).
  http->Delete(R"(/api/v1/datastores/([^/]+)/snapshots)",
               Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    CAIRN_ASSIGN_OR_RETURN(std::string text, Param(req, "snapshot"));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotRef::Parse(text));
    if (!c.roles.Has(Role::kAdmin)) return Status::PermissionDenied("deleting snapshots needs the Admin role");
    CAIRN_RETURN_IF_ERROR(DeleteSnapshotIfUnused(*c.store, api->server()->catalog(), c.store_name,
                                                 api->server()->sessions(), ref));
    SendJson(res, 200, {{"deleted", ref.ToString()}});
    return Status::OK();
  }));

  http->Put(R"(/api/v1/datastores/([^/]+)/snapshots/(protected|notes))",
            Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    const std::string what = req.matches[2];
    CAIRN_ASSIGN_OR_RETURN(std::string text, Param(req, "snapshot"));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotRef::Parse(text));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    bool owner_may = what == "notes" && c.roles.Has(Role::kBackup) && api->OwnedBy(c, ref.group);
    if (!c.roles.Has(Role::kAdmin) && !owner_may) {
      return Status::PermissionDenied("changing " + what + " needs the Admin role");
    }
    if (what == "protected") {
      auto it = body.find("protected");
      if (it == body.end() || !it->is_boolean()) return Status::InvalidArgument("protected must be a boolean");
      CAIRN_RETURN_IF_ERROR(c.store->SetProtected(ref, it->get<bool>()));
    } else {
      CAIRN_ASSIGN_OR_RETURN(std::string notes, StringField(body, "notes"));
      if (notes.size() > 64 * 1024) return Status::InvalidArgument("notes longer than 64 KiB");
      CAIRN_RETURN_IF_ERROR(c.store->SetNotes(ref, notes));
    }
    CAIRN_ASSIGN_OR_RETURN(storage::Manifest m, c.store->ReadManifest(ref));
    (void)api->server()->catalog()->UpsertSnapshot(c.store_name, ref, m);
    SendJson(res, 200, api->SnapshotJson(c, ref, m));
    return Status::OK();
  }));

  // Prune one group (Admin only: the Backup role may never remove snapshots).
  http->Post(R"(/api/v1/datastores/([^/]+)/prune)",
             Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    if (!c.roles.Has(Role::kAdmin)) return Status::PermissionDenied("pruning needs the Admin role");
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string group_text, StringField(body, "group"));
    CAIRN_ASSIGN_OR_RETURN(GroupRef group, GroupRef::Parse(group_text));
    CAIRN_ASSIGN_OR_RETURN(storage::PruneOptions options, PruneOptionsFromJson(body));
    bool dry_run = false;
    if (auto it = body.find("dry-run"); it != body.end() && !it->is_null()) {
      if (!it->is_boolean()) return Status::InvalidArgument("dry-run must be a boolean");
      dry_run = it->get<bool>();
    }
    auto* sessions = api->server()->sessions();
    const std::string store_name = c.store_name;
    CAIRN_ASSIGN_OR_RETURN(std::shared_ptr<Task> task,
                           api->server()->tasks()->Start("prune", store_name, c.principal.auth_id));
    auto result =
        PruneGroup(*c.store, api->server()->catalog(), store_name, group, options,
                   api->server()->time_zone(), dry_run, sessions);
    if (!result.ok()) {
      task->Finish(result.status(), "");
      return result.status();
    }
    const PruneReport& report = *result;
    task->Log(report.ToText());
    task->Finish(report.failed == 0 ? Status::OK() : Status::IOError("some removals failed"),
                 fmt::format("{} kept, {} removed", report.kept, report.removed));
    spdlog::info("prune {} by {}: {} kept, {} removed{}", group.ToString(), c.principal.auth_id,
                 report.kept, report.removed, dry_run ? " (dry run)" : "");
    json out = report.ToJson();
    out["task"] = task->id();
    SendJson(res, 200, out);
    return Status::OK();
  }));

  // Garbage collection (Admin): run now, or read the last result.
  http->Post(R"(/api/v1/datastores/([^/]+)/gc)",
             Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    if (!c.roles.Has(Role::kAdmin)) return Status::PermissionDenied("garbage collection needs the Admin role");
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    storage::GcOptions options;
    if (auto it = body.find("dry-run"); it != body.end() && !it->is_null()) {
      if (!it->is_boolean()) return Status::InvalidArgument("dry-run must be a boolean");
      options.dry_run = it->get<bool>();
    }
    if (auto it = body.find("grace-seconds"); it != body.end() && !it->is_null()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() > 7 * 86400) {
        return Status::InvalidArgument("grace-seconds must be a whole number up to 604800");
      }
      options.grace_seconds = it->get<int64_t>();
    }
    spdlog::info("garbage collection of {} started by {}", c.store_name, c.principal.auth_id);
    CAIRN_ASSIGN_OR_RETURN(std::shared_ptr<Task> task,
                           api->server()->tasks()->Start("gc", c.store_name, c.principal.auth_id));
    auto result = RunGarbageCollection(*c.store, c.store_name, api->server()->sessions(), options);
    if (!result.ok()) {
      task->Finish(result.status(), "");
      return result.status();
    }
    const storage::GcResult& r = *result;
    task->Log(GcResultText(r));
    task->Finish(Status::OK(), fmt::format("removed {} chunks, {} pending", r.removed_chunks,
                                           r.pending_chunks));
    spdlog::info("garbage collection of {}: removed {} chunks, {} pending", c.store_name,
                 r.removed_chunks, r.pending_chunks);
    json out = r.ToJson();
    out["task"] = task->id();
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Get(R"(/api/v1/datastores/([^/]+)/gc)",
            Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    if (!c.roles.Has(Role::kAdmin) && !c.roles.Has(Role::kAudit)) {
      return Status::PermissionDenied("the GC status needs the Admin or Audit role");
    }
    CAIRN_ASSIGN_OR_RETURN(storage::GcResult r, LastGcResult(*c.store));
    SendJson(res, 200, r.ToJson());
    return Status::OK();
  }));

  // Verification runs as a background task; the answer names it.
  http->Post(R"(/api/v1/datastores/([^/]+)/verify)",
             Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string target, StringField(body, "target"));
    // Admin and Reader may verify what they can read; Backup its own groups.
    if (target.empty()) {
      if (!c.roles.Has(Role::kAdmin) && !c.roles.Has(Role::kReader)) {
        return Status::PermissionDenied("verifying a whole datastore needs the Admin or Reader role");
      }
    } else {
      auto ref = SnapshotRef::Parse(target);
      GroupRef group;
      if (ref.ok()) {
        group = ref->group;
      } else {
        CAIRN_ASSIGN_OR_RETURN(group, GroupRef::Parse(target));
      }
      if (!api->CanRead(c, group)) return Status::PermissionDenied("no read access to " + target);
    }
    // Only the validated fields go into the task, never the body itself;
    // other keys are ignored (verify's threads are the server's choice).
    json options = json::object();
    if (auto it = body.find("ignore-verified"); it != body.end()) {
      if (!it->is_boolean()) return Status::InvalidArgument("ignore-verified must be a boolean");
      options["ignore-verified"] = it->get<bool>();
    }
    if (auto it = body.find("outdated-after-days"); it != body.end()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() > 1000000) {
        return Status::InvalidArgument("outdated-after-days must be a whole number up to 1000000");
      }
      options["outdated-after-days"] = it->get<uint64_t>();
    }
    CAIRN_ASSIGN_OR_RETURN(MaintenanceContext ctx, api->server()->Maintenance(c.store_name));
    CAIRN_ASSIGN_OR_RETURN(
        std::string task_id,
        api->server()->StartBackgroundTask(
            "verify", c.store_name, c.principal.auth_id,
            [ctx, target, options](Task& task) -> Status {
              CAIRN_ASSIGN_OR_RETURN(storage::VerifyResult r,
                                     RunVerify(ctx, target, options, &task));
              task.Log("RESULT " + r.ToJson().dump());
              if (r.snapshots_failed > 0) {
                return Status::Corruption(fmt::format("{} snapshot(s) failed verification",
                                                      r.snapshots_failed));
              }
              return Status::OK();
            }));
    SendJson(res, 202, {{"task", task_id}});
    return Status::OK();
  }));

  // --- Tasks and jobs ---
  // Tasks: Admin and Audit see every task; others the tasks they started.
  auto may_see_task = [api](const Principal& p, const TaskInfo& t) {
    if (t.auth_id == p.auth_id) return true;
    RoleSet roles = api->server()->auth()->RolesOn(p, t.store.empty() ? "*" : t.store);
    return roles.Has(Role::kAdmin) || roles.Has(Role::kAudit);
  };

  http->Get("/api/v1/tasks", Wrap([api, may_see_task](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    size_t limit = 100;
    if (req.has_param("limit")) {
      try {
        limit = std::clamp<size_t>(std::stoul(req.get_param_value("limit")), 1, 10000);
      } catch (...) {
        return Status::InvalidArgument("limit must be a number");
      }
    }
    CAIRN_ASSIGN_OR_RETURN(std::vector<TaskInfo> tasks, api->server()->tasks()->List(limit));
    json out = json::array();
    for (const auto& t : tasks) {
      if (may_see_task(p, t)) out.push_back(t.ToJson());
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Get(R"(/api/v1/tasks/([^/]+))",
            Wrap([api, may_see_task](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    CAIRN_ASSIGN_OR_RETURN(TaskInfo t, api->server()->tasks()->Get(req.matches[1]));
    if (!may_see_task(p, t)) return Status::NotFound("no task " + t.id);
    SendJson(res, 200, t.ToJson());
    return Status::OK();
  }));

  // The log from `offset`; X-Task-State says whether more may come.
  http->Get(R"(/api/v1/tasks/([^/]+)/log)",
            Wrap([api, may_see_task](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    CAIRN_ASSIGN_OR_RETURN(TaskInfo t, api->server()->tasks()->Get(req.matches[1]));
    if (!may_see_task(p, t)) return Status::NotFound("no task " + t.id);
    uint64_t offset = 0;
    if (req.has_param("offset")) {
      const std::string v = req.get_param_value("offset");
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), offset);
      if (ec != std::errc() || end != v.data() + v.size()) return Status::InvalidArgument("bad offset");
    }
    CAIRN_ASSIGN_OR_RETURN(std::string text, api->server()->tasks()->ReadLog(t.id, offset, 1 << 20));
    res.status = 200;
    res.set_header("X-Task-State", TaskStateName(t.state));
    res.set_content(text, "text/plain; charset=utf-8");
    return Status::OK();
  }));

  http->Get("/api/v1/jobs", Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    CAIRN_ASSIGN_OR_RETURN(std::vector<JobConfig> jobs, api->server()->jobs()->List());
    json out = json::array();
    for (const auto& j : jobs) {
      RoleSet roles = api->server()->auth()->RolesOn(p, j.store);
      if (!roles.Has(Role::kAdmin) && !roles.Has(Role::kAudit)) continue;
      json o = j.ToJson();
      auto next = api->server()->jobs()->NextRun(j);
      o["next-run"] = next ? json(*next) : json(nullptr);
      out.push_back(o);
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Post(R"(/api/v1/jobs/([^/]+)/run)", Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    CAIRN_ASSIGN_OR_RETURN(JobConfig job, api->server()->jobs()->Get(req.matches[1]));
    if (!api->server()->auth()->RolesOn(p, job.store).Has(Role::kAdmin)) {
      return Status::PermissionDenied("running a job needs the Admin role");
    }
    CAIRN_ASSIGN_OR_RETURN(std::string task_id, api->server()->jobs()->RunNow(job.id, p.auth_id));
    SendJson(res, 202, {{"task", task_id}});
    return Status::OK();
  }));

  // --- Backup sessions ---
  http->Post(R"(/api/v1/datastores/([^/]+)/backup)",
             Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    if (!c.roles.Has(Role::kAdmin) && !c.roles.Has(Role::kBackup)) {
      return Status::PermissionDenied("backups need the Backup or Admin role");
    }
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string group_text, StringField(body, "group"));
    CAIRN_ASSIGN_OR_RETURN(GroupRef group, GroupRef::Parse(group_text));
    std::optional<int64_t> time;
    if (auto it = body.find("time"); it != body.end() && !it->is_null()) {
      if (it->is_number_integer()) {
        time = it->get<int64_t>();
      } else if (it->is_string()) {
        CAIRN_ASSIGN_OR_RETURN(time, storage::ParseSnapshotTime(it->get<std::string>()));
      } else {
        return Status::InvalidArgument("time must be seconds or YYYY-MM-DDTHH:MM:SSZ");
      }
      if (*time < 0 || *time > 253402300799) return Status::InvalidArgument("time out of range");
    }
    // The group's owner is whoever backs it up first; others (but Admin) may
    // not. A new group's owner is decided by an exclusive create, so of two
    // tokens starting its first backup at once exactly one becomes the owner,
    // and only the owner gets the session.
    auto owner = c.store->GetOwner(group);
    if (!owner.ok() && owner.status().IsNotFound()) {
      owner = c.store->SetOwnerIfAbsent(group, c.principal.auth_id);
      if (owner.ok() && *owner == c.principal.auth_id) {
        (void)api->server()->catalog()->SetGroupOwner(c.store_name, group, c.principal.auth_id);
      }
    }
    if (!owner.ok()) return owner.status();
    if (!OwnsGroup(c.principal, *owner) && !c.roles.Has(Role::kAdmin)) {
      return Status::PermissionDenied("group " + group.ToString() + " belongs to another owner");
    }
    CAIRN_ASSIGN_OR_RETURN(StartBackupResult started,
                           api->server()->sessions()->StartBackup(
                               c.store_name, c.store, group, time, c.principal.auth_id, Now()));
    const auto& s = started.session;
    json j = {{"session", s->id()}, {"snapshot", s->ref().ToString()}, {"time", s->ref().time}};
    if (s->previous() && started.previous_manifest) {
      const auto& pm = *started.previous_manifest;
      json archives = json::array();
      for (const auto& a : pm.archives) {
        archives.push_back({{"name", a.name}, {"size", a.size}, {"csum", a.csum.ToHex()}});
      }
      j["previous"] = {{"snapshot", s->previous()->ToString()},
                       {"time", s->previous()->time},
                       {"archives", archives},
                       {"verify", pm.verify ? json(pm.verify->state) : json(nullptr)},
                       {"client", pm.client}};
    } else {
      j["previous"] = nullptr;
    }
    spdlog::info("backup {} of {} started by {}", s->id(), s->ref().ToString(), c.principal.auth_id);
    SendJson(res, 201, j);
    return Status::OK();
  }));

  auto backup_session = [api](const httplib::Request& req) -> Result<std::shared_ptr<BackupSession>> {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    return api->server()->sessions()->GetBackup(req.matches[1], p.auth_id, Now());
  };

  http->Get(R"(/api/v1/backup/([0-9a-f]{32})/previous-index)",
            Wrap([backup_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string archive, Param(req, "archive"));
    CAIRN_ASSIGN_OR_RETURN(std::string bytes, s->PreviousIndex(archive));
    res.status = 200;
    res.set_content(bytes, "application/octet-stream");
    return Status::OK();
  }));

  // The chunk body is read here rather than into req.body: httplib grows
  // req.body by doubling in 4 KiB appends, which copies every chunk once more
  // and leaves ~12 MiB of heap per worker thread. The buffer is per thread,
  // sized from Content-Length, and the whole body is always read so the
  // keep-alive connection stays in step.
  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/chunk)",
             [backup_session](const httplib::Request& req, httplib::Response& res,
                              const httplib::ContentReader& reader) {
    thread_local std::string body;
    Status read = ReadBody(req, reader, kMaxChunkBodyBytes, &body);
    Run(req, res, [&]() -> Status {
      CAIRN_RETURN_IF_ERROR(read);
      CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
      CAIRN_ASSIGN_OR_RETURN(std::string digest_hex, Param(req, "digest"));
      CAIRN_ASSIGN_OR_RETURN(storage::Digest digest, storage::Digest::FromHex(digest_hex));
      CAIRN_ASSIGN_OR_RETURN(std::string size_text, Param(req, "size"));
      uint64_t size = 0;
      auto [ptr, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
      if (ec != std::errc() || ptr != size_text.data() + size_text.size() ||
          size > storage::kMaxBlobPayload) {
        return Status::InvalidArgument("size must be a decimal number up to 16 MiB");
      }
      CAIRN_ASSIGN_OR_RETURN(storage::InsertResult r, s->UploadChunk(digest, size, body));
      SendJson(res, r == storage::InsertResult::kInserted ? 201 : 200,
               {{"digest", digest_hex}, {"stored", r == storage::InsertResult::kInserted}});
      return Status::OK();
    });
    // Keep a buffer for the usual 4 MiB chunk; give back anything larger.
    if (body.capacity() > storage::kChunkSize + 64 * 1024) std::string().swap(body);
  });

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/index)",
             Wrap([backup_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string archive, Param(req, "archive"));
    CAIRN_RETURN_IF_ERROR(s->WriteIndex(archive, req.body));
    SendJson(res, 200, {{"archive", archive}});
    return Status::OK();
  }));

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/blob)",
             Wrap([backup_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string archive, Param(req, "archive"));
    CAIRN_RETURN_IF_ERROR(s->WriteBlob(archive, req.body));
    SendJson(res, 200, {{"archive", archive}});
    return Status::OK();
  }));

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/finish)",
             Wrap([api, backup_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    json client = json::object();
    if (auto it = body.find("client"); it != body.end() && !it->is_null()) {
      if (!it->is_object()) return Status::InvalidArgument("client must be an object");
      // Bounded before it is stored: the body's own bound (64 levels) is
      // far more than a manifest should carry. Checked on its text, which
      // dump() (at most 64 deep) makes safely.
      Status bound = storage::CheckJsonBounds(
          it->dump(-1, ' ', false, json::error_handler_t::replace), kClientInfoLimits);
      if (!bound.ok()) return Status::InvalidArgument("client info: " + bound.message());
      client = std::move(*it);
    }
    CAIRN_ASSIGN_OR_RETURN(storage::Manifest m, s->Finish(client));
    BackupStats st = s->stats();
    api->server()->sessions()->EndBackup(s->id());
    // The catalog is an index; a failure here is repaired by reindex and
    // must not turn a committed backup into an error.
    Status cs = api->server()->catalog()->UpsertSnapshot(s->store_name(), s->ref(), m);
    if (!cs.ok()) spdlog::warn("catalog update for {} failed: {}", s->ref().ToString(), cs.ToString());
    // "Verify new snapshots right after backup", when the store asks for it.
    if (auto verify_new = api->server()->settings()->VerifyNew(s->store_name());
        verify_new.ok() && *verify_new) {
      auto ctx = api->server()->Maintenance(s->store_name());
      if (ctx.ok()) {
        const std::string target = s->ref().ToString();
        (void)api->server()->StartBackgroundTask(
            "verify", s->store_name(), "verify-new", [ctx = *ctx, target](Task& task) -> Status {
              CAIRN_ASSIGN_OR_RETURN(storage::VerifyResult r,
                                     RunVerify(ctx, target, json::object(), &task));
              return r.snapshots_failed == 0 ? Status::OK()
                                             : Status::Corruption("the new snapshot failed verification");
            });
      }
    }
    spdlog::info("backup {} committed {}: {} chunks uploaded ({} new), {} bytes", s->id(),
                 s->ref().ToString(), st.chunks_uploaded, st.chunks_new, st.bytes_uploaded);
    SendJson(res, 200, {{"snapshot", s->ref().ToString()},
                        {"stats", {{"chunks-uploaded", st.chunks_uploaded},
                                   {"chunks-new", st.chunks_new},
                                   {"bytes-uploaded", st.bytes_uploaded},
                                   {"chunks-known", st.chunks_known},
                                   {"chunks-referenced", st.chunks_referenced},
                                   {"archives", st.archives}}}});
    return Status::OK();
  }));

  http->Get(R"(/api/v1/backup/([0-9a-f]{32})/stats)",
            Wrap([backup_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
    BackupStats st = s->stats();
    SendJson(res, 200, {{"chunks-uploaded", st.chunks_uploaded}, {"chunks-new", st.chunks_new},
                        {"bytes-uploaded", st.bytes_uploaded}, {"chunks-known", st.chunks_known},
                        {"chunks-referenced", st.chunks_referenced}, {"archives", st.archives}});
    return Status::OK();
  }));

  http->Post(R"(/api/v1/backup/([0-9a-f]{32})/abort)",
             Wrap([api, backup_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto s, backup_session(req));
    api->server()->sessions()->EndBackup(s->id());
    SendJson(res, 200, {{"aborted", s->id()}});
    return Status::OK();
  }));

  // --- Reader sessions ---
  http->Post(R"(/api/v1/datastores/([^/]+)/reader)",
             Wrap([api](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Caller c, api->ForStore(req, req.matches[1]));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string text, StringField(body, "snapshot"));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotRef::Parse(text));
    if (!api->CanRead(c, ref.group)) {
      return Status::PermissionDenied("no read access to group " + ref.group.ToString());
    }
    CAIRN_ASSIGN_OR_RETURN(auto r, api->server()->sessions()->StartReader(
                                       c.store_name, c.store, ref, c.principal.auth_id, Now()));
    json j = api->SnapshotJson(c, ref, r->manifest());
    j["session"] = r->id();
    SendJson(res, 201, j);
    return Status::OK();
  }));

  auto reader_session = [api](const httplib::Request& req) -> Result<std::shared_ptr<ReaderSession>> {
    CAIRN_ASSIGN_OR_RETURN(Principal p, api->Authenticate(req));
    return api->server()->sessions()->GetReader(req.matches[1], p.auth_id, Now());
  };

  http->Get(R"(/api/v1/reader/([0-9a-f]{32})/manifest)",
            Wrap([reader_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, reader_session(req));
    res.status = 200;
    res.set_content(r->manifest().ToJson(), "application/json");
    return Status::OK();
  }));

  http->Get(R"(/api/v1/reader/([0-9a-f]{32})/archive)",
            Wrap([reader_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, reader_session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string name, Param(req, "archive"));
    CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kArchive, name));
    CAIRN_ASSIGN_OR_RETURN(std::string bytes, r->ReadArchive(name));
    res.status = 200;
    res.set_content(bytes, "application/octet-stream");
    return Status::OK();
  }));

  http->Get(R"(/api/v1/reader/([0-9a-f]{32})/chunk)",
            Wrap([reader_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, reader_session(req));
    CAIRN_ASSIGN_OR_RETURN(std::string hex, Param(req, "digest"));
    CAIRN_ASSIGN_OR_RETURN(storage::Digest digest, storage::Digest::FromHex(hex));
    CAIRN_ASSIGN_OR_RETURN(std::string blob, r->ReadChunk(digest));
    res.status = 200;
    res.set_content(blob, "application/octet-stream");
    return Status::OK();
  }));

  http->Delete(R"(/api/v1/reader/([0-9a-f]{32}))",
               Wrap([api, reader_session](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(auto r, reader_session(req));
    api->server()->sessions()->EndReader(r->id());
    SendJson(res, 200, {{"closed", r->id()}});
    return Status::OK();
  }));

  // Errors httplib answers itself (no route, unreadable body) get their JSON
  // from the gate's error handler (HttpGate::InstallErrorHandler).
}

}  // namespace cairn::server
