// Routes: users, API tokens and roles (Admin on "*" only). The service
// (server/service.h, "Access") checks the role; AuthStore keeps them.

#include "server/api_common.h"

namespace cairn::server::api {

void RegisterAccessRoutes(Service* service, httplib::Server* http) {
  http->Get("/api/v1/access/users", Wrap([service](const httplib::Request& req,
                                                    httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::vector<std::string> users, service->ListUsers(p));
    json out = json::array();
    for (const auto& u : users) out.push_back({{"user", u}});
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Post("/api/v1/access/users", Wrap([service](const httplib::Request& req,
                                                     httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_RETURN_IF_ERROR(OnlyKeys(body, {"user", "password"}));
    CAIRN_ASSIGN_OR_RETURN(std::string user, RequiredString(body, "user"));
    std::optional<std::string> password;
    if (body.contains("password") && !body["password"].is_null()) {
      CAIRN_ASSIGN_OR_RETURN(password, RequiredString(body, "password"));
    }
    CAIRN_RETURN_IF_ERROR(service->AddUser(p, user, password));
    SendJson(res, 201, {{"user", user}});
    return Status::OK();
  }));

  http->Put(R"(/api/v1/access/users/([^/]+)/password)",
            Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_RETURN_IF_ERROR(OnlyKeys(body, {"password"}));
    CAIRN_ASSIGN_OR_RETURN(std::string password, RequiredString(body, "password"));
    const std::string user = req.matches[1];
    CAIRN_RETURN_IF_ERROR(service->SetPassword(p, user, password));
    SendJson(res, 200, {{"user", user}});
    return Status::OK();
  }));

  http->Get("/api/v1/access/tokens", Wrap([service](const httplib::Request& req,
                                                     httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::vector<std::string> tokens, service->ListTokens(p));
    json out = json::array();
    for (const auto& t : tokens) out.push_back({{"auth_id", t}, {"user", t.substr(0, t.find('!'))}});
    SendJson(res, 200, out);
    return Status::OK();
  }));

  // The secret is in this answer only; the server keeps its hash.
  http->Post("/api/v1/access/tokens", Wrap([service](const httplib::Request& req,
                                                      httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_RETURN_IF_ERROR(OnlyKeys(body, {"auth_id"}));
    CAIRN_ASSIGN_OR_RETURN(std::string auth_id, RequiredString(body, "auth_id"));
    CAIRN_ASSIGN_OR_RETURN(std::string secret, service->CreateToken(p, auth_id));
    res.set_header("Cache-Control", "no-store");
    SendJson(res, 201, {{"auth_id", auth_id}, {"secret", secret}});
    return Status::OK();
  }));

  http->Delete(R"(/api/v1/access/tokens/([^/]+))",
               Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    const std::string auth_id = req.matches[1];
    CAIRN_RETURN_IF_ERROR(service->DeleteToken(p, auth_id));
    SendJson(res, 200, {{"deleted", auth_id}});
    return Status::OK();
  }));

  http->Get("/api/v1/access/acl", Wrap([service](const httplib::Request& req,
                                                  httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::vector<AclEntry> acl, service->ListAcl(p));
    json out = json::array();
    for (const auto& e : acl) {
      out.push_back({{"store", e.store}, {"auth_id", e.auth_id}, {"role", RoleName(e.role)}});
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  // {"store", "auth_id", "role"}: grants (replacing a role there); "role":
  // null removes the entry.
  http->Put("/api/v1/access/acl", Wrap([service](const httplib::Request& req,
                                                  httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_RETURN_IF_ERROR(OnlyKeys(body, {"store", "auth_id", "role"}));
    CAIRN_ASSIGN_OR_RETURN(std::string store, RequiredString(body, "store"));
    CAIRN_ASSIGN_OR_RETURN(std::string auth_id, RequiredString(body, "auth_id"));
    if (!body.contains("role")) return Status::InvalidArgument("role must be given (null removes)");
    std::optional<Role> role;
    if (!body["role"].is_null()) {
      CAIRN_ASSIGN_OR_RETURN(std::string name, RequiredString(body, "role"));
      CAIRN_ASSIGN_OR_RETURN(role, ParseRole(name));
    }
    CAIRN_RETURN_IF_ERROR(service->SetAcl(p, store, auth_id, role));
    SendJson(res, 200, {{"store", store}, {"auth_id", auth_id},
                        {"role", role ? json(RoleName(*role)) : json(nullptr)}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
