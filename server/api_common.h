#pragma once

// What every file of the HTTP layer shares (server/api_*.cc): sending JSON
// and errors, parsing bodies, fields and parameters, the wrapper that turns
// a handler's Status (or an exception) into the answer, and the JSON forms
// of the service's types. The HTTP layer only parses, calls the service
// (server/service.h) and maps the answer; the API is described in
// server/API.md.

#include <httplib.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "server/service.h"

namespace cairn::server::api {

using nlohmann::json;

// Status code → HTTP status.
int HttpCode(const Status& s);

void SendJson(httplib::Response& res, int code, const json& body);
// 200 with `bytes` as the body, moved in (httplib's set_content copies):
// chunks, indexes and blobs of up to 16 MiB.
void SendBytes(httplib::Response& res, std::string bytes,
               const char* content_type = "application/octet-stream");
// A 5xx says only "internal error" (the details go to the log); other errors
// carry their message with server paths scrubbed.
void SendError(const httplib::Request& req, httplib::Response& res, const Status& s);

// A JSON object body, bounded (64 levels, 1 MiB) before it is built; {} for
// an empty body. InvalidArgument for anything else.
Result<json> ParseBody(const httplib::Request& req);
// A string field; `fallback` when absent or null, InvalidArgument when not a string.
Result<std::string> StringField(const json& j, const char* key, const std::string& fallback = "");
// A required string field; InvalidArgument when absent or not a string.
Result<std::string> RequiredString(const json& j, const char* key);
// An optional string field: unset when absent, InvalidArgument when present
// and not a string (null included).
Result<std::optional<std::string>> OptionalString(const json& j, const char* key);
// InvalidArgument for any key of `body` not in `allowed`.
Status OnlyKeys(const json& body, std::initializer_list<const char*> allowed);
// An optional boolean field; InvalidArgument when present and not a boolean.
Result<std::optional<bool>> BoolField(const json& j, const char* key);
// A required query parameter.
Result<std::string> Param(const httplib::Request& req, const char* name);
// An optional unsigned decimal query parameter up to `max`.
Result<std::optional<uint64_t>> NumberParam(const httplib::Request& req, const char* name,
                                            uint64_t max);

// Runs `fn` (returning Status) and answers its error; an exception becomes a
// logged 500 (the only place exceptions are caught).
void Run(const httplib::Request& req, httplib::Response& res,
         const std::function<Status()>& fn);

// The handler form every route uses.
using Handler = std::function<Status(const httplib::Request&, httplib::Response&)>;
httplib::Server::Handler Wrap(Handler fn);

// What `req` carries to authenticate itself (pointers into `req`).
Credentials CredentialsOf(const httplib::Request& req);
// The caller, from the request's Authorization header or session cookie
// (server/request_auth.h).
Result<Principal> Caller(Service& service, const httplib::Request& req);
// The caller on the datastore named by the first path match.
Result<StoreCaller> StoreFromPath(Service& service, const httplib::Request& req);

// JSON forms.
json SnapshotJson(const storage::SnapshotRow& row, const std::string& owner);
json GroupJson(const storage::GroupRow& row);
json ArchivesJson(const std::vector<storage::ArchiveInfo>& archives);

// Route registration, one function per api file.
void RegisterStatusRoutes(Server* server, httplib::Server* http);
void RegisterSnapshotRoutes(Service* service, httplib::Server* http);
void RegisterMaintenanceRoutes(Service* service, httplib::Server* http);
void RegisterTaskRoutes(Service* service, httplib::Server* http);
void RegisterBackupRoutes(Service* service, httplib::Server* http);
void RegisterReaderRoutes(Service* service, httplib::Server* http);
void RegisterJobRoutes(Service* service, httplib::Server* http);
void RegisterAccessRoutes(Service* service, httplib::Server* http);
void RegisterRemoteRoutes(Service* service, httplib::Server* http);
void RegisterLoginRoutes(Server* server, httplib::Server* http);
// The web UI's static files under `web_dir` (server/api_web.cc); nothing
// when it is empty.
void RegisterWebRoutes(const std::string& web_dir, httplib::Server* http);

}  // namespace cairn::server::api
