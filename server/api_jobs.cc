// Routes: changing jobs (add, change, remove) and previews of calendar
// events. Listing jobs and running one now are in api_tasks.cc.

#include <ctime>

#include "server/api_common.h"

namespace cairn::server::api {
namespace {

// The fields of a job in a request body; InvalidArgument for any other key
// or a field of the wrong type.
Result<JobPatch> JobPatchFromJson(const json& body) {
  for (const auto& [key, value] : body.items()) {
    if (key != "id" && key != "kind" && key != "store" && key != "schedule" &&
        key != "options" && key != "enabled") {
      return Status::InvalidArgument("a job has no field \"" + key + "\"");
    }
  }
  JobPatch patch;
  CAIRN_ASSIGN_OR_RETURN(patch.kind, OptionalString(body, "kind"));
  CAIRN_ASSIGN_OR_RETURN(patch.store, OptionalString(body, "store"));
  CAIRN_ASSIGN_OR_RETURN(patch.schedule, OptionalString(body, "schedule"));
  if (auto it = body.find("options"); it != body.end()) {
    if (!it->is_object() && !it->is_null()) {
      return Status::InvalidArgument("options must be an object");
    }
    patch.options = *it;
  }
  CAIRN_ASSIGN_OR_RETURN(patch.enabled, BoolField(body, "enabled"));
  return patch;
}

json JobJson(Service& service, const JobConfig& job) {
  json o = job.ToJson();
  auto next = service.NextJobRun(job);
  o["next-run"] = next ? json(*next) : json(nullptr);
  return o;
}

}  // namespace

void RegisterJobRoutes(Service* service, httplib::Server* http) {
  http->Post("/api/v1/jobs", Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(JobPatch patch, JobPatchFromJson(body));
    JobConfig job;
    CAIRN_ASSIGN_OR_RETURN(job.id, StringField(body, "id"));
    job.kind = patch.kind.value_or("");
    job.store = patch.store.value_or("");
    job.schedule = patch.schedule.value_or("");
    job.options = patch.options.value_or(json::object());
    job.enabled = patch.enabled.value_or(true);
    CAIRN_ASSIGN_OR_RETURN(JobConfig added, service->AddJob(p, std::move(job)));
    SendJson(res, 201, JobJson(*service, added));
    return Status::OK();
  }));

  http->Put(R"(/api/v1/jobs/([^/]+))", Wrap([service](const httplib::Request& req,
                                                       httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    CAIRN_ASSIGN_OR_RETURN(JobPatch patch, JobPatchFromJson(body));
    const std::string id = req.matches[1];
    if (auto it = body.find("id"); it != body.end() && *it != id) {
      return Status::InvalidArgument("a job's id cannot be changed");
    }
    CAIRN_ASSIGN_OR_RETURN(JobConfig job, service->UpdateJob(p, id, patch));
    SendJson(res, 200, JobJson(*service, job));
    return Status::OK();
  }));

  http->Delete(R"(/api/v1/jobs/([^/]+))", Wrap([service](const httplib::Request& req,
                                                          httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    const std::string id = req.matches[1];
    CAIRN_RETURN_IF_ERROR(service->RemoveJob(p, id));
    SendJson(res, 200, {{"deleted", id}});
    return Status::OK();
  }));

  // The next runs of a schedule, as `cairn-server job next` prints them.
  http->Get("/api/v1/calendar/next", Wrap([service](const httplib::Request& req,
                                                     httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::string schedule, Param(req, "schedule"));
    CAIRN_ASSIGN_OR_RETURN(auto count, NumberParam(req, "count", 100));
    CAIRN_ASSIGN_OR_RETURN(auto from, NumberParam(req, "from", 253402300799));
    const int64_t start =
        from ? static_cast<int64_t>(*from) : static_cast<int64_t>(std::time(nullptr));
    CAIRN_ASSIGN_OR_RETURN(std::vector<int64_t> next,
                           service->NextRuns(p, schedule, start, static_cast<int>(count.value_or(5))));
    SendJson(res, 200, {{"next", next}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
