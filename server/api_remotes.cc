// Routes: remotes, the other servers sync jobs talk to (Admin on "*" only).
// The service (server/service.h, "Remotes") checks the role; RemoteStore
// keeps them. No answer ever carries a remote token's secret.

#include "server/api_common.h"

namespace cairn::server::api {

void RegisterRemoteRoutes(Service* service, httplib::Server* http) {
  http->Get("/api/v1/remotes", Wrap([service](const httplib::Request& req,
                                               httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::vector<Remote> remotes, service->ListRemotes(p));
    json out = json::array();
    for (const auto& r : remotes) out.push_back(r.ToJson());
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Post("/api/v1/remotes", Wrap([service](const httplib::Request& req,
                                                httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_RETURN_IF_ERROR(OnlyKeys(body, {"name", "url", "fingerprint", "token"}));
    CAIRN_ASSIGN_OR_RETURN(std::string name, RequiredString(body, "name"));
    CAIRN_ASSIGN_OR_RETURN(std::string url, RequiredString(body, "url"));
    CAIRN_ASSIGN_OR_RETURN(std::string fingerprint, RequiredString(body, "fingerprint"));
    CAIRN_ASSIGN_OR_RETURN(std::string token, RequiredString(body, "token"));
    CAIRN_ASSIGN_OR_RETURN(Remote remote, service->AddRemote(p, name, url, fingerprint, token));
    SendJson(res, 201, remote.ToJson());
    return Status::OK();
  }));

  http->Delete(R"(/api/v1/remotes/([^/]+))", Wrap([service](const httplib::Request& req,
                                                             httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    const std::string name = req.matches[1];
    CAIRN_RETURN_IF_ERROR(service->RemoveRemote(p, name));
    SendJson(res, 200, {{"deleted", name}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
