#include "server/api_common.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "server/path_scrub.h"
#include "storage/json_bounds.h"

namespace cairn::server::api {
namespace {

// JSON request bodies: depth and size are refused on the raw bytes, before a
// value is built (storage/json_bounds.h says why).
constexpr storage::JsonLimits kBodyLimits{/*max_depth=*/64, /*max_size=*/1024 * 1024};

// The error text of a 507: what happened and what the operator must do.
constexpr char kNoSpaceMessage[] =
    "the server's disk is full (no space left on device); free space on the server and retry";

// A full file system reaches here as an IOError: from the Env as
// Status::FromErrno's "<path>: <strerror(ENOSPC or EDQUOT)>" and from SQLite
// as SQLITE_FULL's "database or disk is full". (The server never calls
// setlocale, so strerror speaks the C locale's English.)
bool IsNoSpace(const Status& s) {
  if (!s.IsIOError()) return false;
  const std::string& m = s.message();
  const std::string texts[] = {std::strerror(ENOSPC), std::strerror(EDQUOT),
                               "database or disk is full"};
  for (const std::string& text : texts) {
    if (m.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

int HttpCode(const Status& s) {
  if (IsNoSpace(s)) return 507;  // Insufficient Storage
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
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void SendBytes(httplib::Response& res, std::string bytes, const char* content_type) {
  res.status = 200;
  res.body = std::move(bytes);
  res.set_header("Content-Type", content_type);
}

void SendError(const httplib::Request& req, httplib::Response& res, const Status& s) {
  int code = HttpCode(s);
  if (code == 507) {
    // Not a fault of the server's code: the operator has to free space. The
    // caller learns that in plain words (the path stays in the log).
    spdlog::error("{} {} failed: {}", req.method, req.path, s.ToString());
    SendJson(res, code, {{"error", kNoSpaceMessage}, {"code", "NoSpace"}});
    return;
  }
  if (code >= 500) {
    spdlog::error("{} {} failed: {}", req.method, req.path, s.ToString());
    SendJson(res, code, {{"error", "internal error; see the server log"},
                         {"code", Status::CodeName(s.code())}});
    return;
  }
  SendJson(res, code, {{"error", ScrubPaths(s.message())}, {"code", Status::CodeName(s.code())}});
}

Result<json> ParseBody(const httplib::Request& req) {
  if (req.body.empty()) return json::object();
  auto j = storage::ParseJsonBounded(req.body, kBodyLimits);
  if (!j.ok()) return Status::InvalidArgument("body: " + j.status().message());
  if (!j->is_object()) return Status::InvalidArgument("body must be a JSON object");
  return std::move(j).value();
}

Result<std::string> StringField(const json& j, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) return Status::InvalidArgument(std::string(key) + " must be a string");
  return it->get<std::string>();
}

Result<std::string> RequiredString(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return Status::InvalidArgument(std::string(key) + " must be a string");
  }
  return it->get<std::string>();
}

Result<std::optional<std::string>> OptionalString(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return std::optional<std::string>();
  if (!it->is_string()) return Status::InvalidArgument(std::string(key) + " must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

Status OnlyKeys(const json& body, std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || key == a;
    if (!known) return Status::InvalidArgument("unknown field \"" + key + "\"");
  }
  return Status::OK();
}

Result<std::optional<bool>> BoolField(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean()) return Status::InvalidArgument(std::string(key) + " must be a boolean");
  return std::optional<bool>(it->get<bool>());
}

Result<std::string> Param(const httplib::Request& req, const char* name) {
  if (!req.has_param(name)) return Status::InvalidArgument(std::string("missing parameter ") + name);
  return req.get_param_value(name);
}

Result<std::optional<uint64_t>> NumberParam(const httplib::Request& req, const char* name,
                                            uint64_t max) {
  if (!req.has_param(name)) return std::optional<uint64_t>();
  const std::string v = req.get_param_value(name);
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n > max) {
    return Status::InvalidArgument(std::string(name) + " must be a whole number up to " +
                                   std::to_string(max));
  }
  return std::optional<uint64_t>(n);
}

void Run(const httplib::Request& req, httplib::Response& res, const std::function<Status()>& fn) {
  try {
    Status s = fn();
    if (!s.ok()) SendError(req, res, s);
  } catch (const std::exception& e) {
    spdlog::error("{} {}: unhandled exception: {}", req.method, req.path, e.what());
    SendJson(res, 500, {{"error", "internal error; see the server log"}, {"code", "Internal"}});
  }
}

httplib::Server::Handler Wrap(Handler fn) {
  return [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
    Run(req, res, [&] { return fn(req, res); });
  };
}

Credentials CredentialsOf(const httplib::Request& req) {
  Credentials c;
  if (auto it = req.headers.find("Authorization"); it != req.headers.end()) {
    c.authorization = &it->second;
  }
  if (auto it = req.headers.find("Cookie"); it != req.headers.end()) {
    c.session_id = CookieValue(it->second, kSessionCookie);
  }
  if (auto it = req.headers.find(kCsrfHeader); it != req.headers.end()) c.csrf = &it->second;
  c.method = req.method;
  return c;
}

Result<Principal> Caller(Service& service, const httplib::Request& req) {
  return service.Authenticate(CredentialsOf(req));
}

Result<StoreCaller> StoreFromPath(Service& service, const httplib::Request& req) {
  CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(service, req));
  return service.OnStore(p, req.matches[1]);
}

json ArchivesJson(const std::vector<storage::ArchiveInfo>& archives) {
  json out = json::array();
  for (const auto& a : archives) {
    out.push_back({{"name", a.name}, {"size", a.size}, {"csum", a.csum.ToHex()}});
  }
  return out;
}

json SnapshotJson(const storage::SnapshotRow& row, const std::string& owner) {
  const SnapshotRef& ref = row.ref;
  if (!row.error.empty()) {
    return {{"snapshot", ref.ToString()}, {"error", ScrubPaths(row.error)}};
  }
  json client = json::parse(row.client, nullptr, false);
  json j = {{"snapshot", ref.ToString()},
            {"ns", storage::FormatNamespace(ref.group.ns)},
            {"type", ref.group.type},
            {"id", ref.group.id},
            {"time", ref.time},
            {"time-text", storage::FormatSnapshotTime(ref.time)},
            {"size", row.size},
            {"archives", ArchivesJson(row.archives)},
            {"protected", row.is_protected},
            {"notes", row.notes},
            {"client", client.is_discarded() ? json::object() : client},
            {"encrypted", !row.key_fingerprint.empty()},
            {"fingerprint",
             row.key_fingerprint.empty() ? json(nullptr) : json(row.key_fingerprint)}};
  if (row.verify) {
    j["verify"] = {{"state", row.verify->state}, {"time", row.verify->time}, {"task", row.verify->task}};
  } else {
    j["verify"] = nullptr;
  }
  j["owner"] = owner.empty() ? json(nullptr) : json(owner);
  return j;
}

json GroupJson(const storage::GroupRow& row) {
  const storage::GroupRef& g = row.group;
  return {{"group", g.ToString()},
          {"ns", storage::FormatNamespace(g.ns)},
          {"type", g.type},
          {"id", g.id},
          {"owner", row.owner.empty() ? json(nullptr) : json(row.owner)},
          {"snapshots", row.snapshot_count},
          {"last", row.snapshot_count > 0 ? json(row.last_snapshot) : json(nullptr)},
          {"size", row.size}};
}

}  // namespace cairn::server::api
