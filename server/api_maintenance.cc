// Routes: prune, garbage collection and verify. Each starts a task and
// answers 202 {"task": id}; the task's result is in GET /tasks/{id}.

#include "server/api_common.h"

namespace cairn::server::api {

void RegisterMaintenanceRoutes(Service* service, httplib::Server* http) {
  http->Post(R"(/api/v1/datastores/([^/]+)/prune)",
             Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string group_text, StringField(body, "group"));
    CAIRN_ASSIGN_OR_RETURN(storage::GroupRef group, storage::GroupRef::Parse(group_text));
    CAIRN_ASSIGN_OR_RETURN(storage::PruneOptions options, PruneOptionsFromJson(body));
    CAIRN_ASSIGN_OR_RETURN(auto dry_run, BoolField(body, "dry-run"));
    CAIRN_ASSIGN_OR_RETURN(std::string task,
                           service->StartPrune(c, group, options, dry_run.value_or(false)));
    SendJson(res, 202, {{"task", task}});
    return Status::OK();
  }));

  http->Post(R"(/api/v1/datastores/([^/]+)/gc)",
             Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    storage::GcOptions options;
    CAIRN_ASSIGN_OR_RETURN(auto dry_run, BoolField(body, "dry-run"));
    options.dry_run = dry_run.value_or(false);
    if (auto it = body.find("grace-seconds"); it != body.end() && !it->is_null()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() > 7 * 86400) {
        return Status::InvalidArgument("grace-seconds must be a whole number up to 604800");
      }
      options.grace_seconds = it->get<int64_t>();
    }
    CAIRN_ASSIGN_OR_RETURN(std::string task, service->StartGc(c, options));
    SendJson(res, 202, {{"task", task}});
    return Status::OK();
  }));

  // The last GC's result (Admin, Audit).
  http->Get(R"(/api/v1/datastores/([^/]+)/gc)",
            Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(storage::GcResult r, service->GcStatus(c));
    SendJson(res, 200, r.ToJson());
    return Status::OK();
  }));

  http->Post(R"(/api/v1/datastores/([^/]+)/verify)",
             Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(std::string target, StringField(body, "target"));
    // Only the validated fields go into the task, never the body itself;
    // other keys are ignored (verify's threads are the server's choice).
    json options = json::object();
    CAIRN_ASSIGN_OR_RETURN(auto ignore_verified, BoolField(body, "ignore-verified"));
    if (ignore_verified) options["ignore-verified"] = *ignore_verified;
    if (auto it = body.find("outdated-after-days"); it != body.end()) {
      if (!it->is_number_unsigned() || it->get<uint64_t>() > 1000000) {
        return Status::InvalidArgument("outdated-after-days must be a whole number up to 1000000");
      }
      options["outdated-after-days"] = it->get<uint64_t>();
    }
    CAIRN_ASSIGN_OR_RETURN(std::string task, service->StartVerify(c, target, options));
    SendJson(res, 202, {{"task", task}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
