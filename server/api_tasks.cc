// Routes: tasks (list, one, its log) and jobs (list, run now).

#include "server/api_common.h"

namespace cairn::server::api {

void RegisterTaskRoutes(Service* service, httplib::Server* http) {
  // Admin and Audit see every task of their stores; others the tasks they started.
  http->Get("/api/v1/tasks", Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(auto limit, NumberParam(req, "limit", 1'000'000));
    const size_t n = std::clamp<size_t>(limit.value_or(100), 1, 10000);
    CAIRN_ASSIGN_OR_RETURN(std::vector<TaskInfo> tasks, service->ListTasks(p, n));
    json out = json::array();
    for (const auto& t : tasks) out.push_back(t.ToJson());
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Get(R"(/api/v1/tasks/([^/]+))", Wrap([service](const httplib::Request& req,
                                                        httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(TaskInfo t, service->GetTask(p, req.matches[1]));
    SendJson(res, 200, t.ToJson());
    return Status::OK();
  }));

  // The log from `offset`; X-Task-State says whether more may come.
  http->Get(R"(/api/v1/tasks/([^/]+)/log)", Wrap([service](const httplib::Request& req,
                                                            httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(TaskInfo t, service->GetTask(p, req.matches[1]));
    CAIRN_ASSIGN_OR_RETURN(auto offset, NumberParam(req, "offset", UINT64_MAX));
    CAIRN_ASSIGN_OR_RETURN(std::string text, service->ReadTaskLog(p, t, offset.value_or(0)));
    res.status = 200;
    res.set_header("X-Task-State", TaskStateName(t.state));
    res.set_content(text, "text/plain; charset=utf-8");
    return Status::OK();
  }));

  http->Get("/api/v1/jobs", Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(auto jobs, service->ListJobs(p));
    json out = json::array();
    for (const auto& [job, next] : jobs) {
      json o = job.ToJson();
      o["next-run"] = next ? json(*next) : json(nullptr);
      out.push_back(o);
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  http->Post(R"(/api/v1/jobs/([^/]+)/run)", Wrap([service](const httplib::Request& req,
                                                           httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*service, req));
    CAIRN_ASSIGN_OR_RETURN(std::string task_id, service->RunJob(p, req.matches[1]));
    SendJson(res, 202, {{"task", task_id}});
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
