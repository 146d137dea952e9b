// `cairn-server job add|list|remove|run|next`: scheduled prune, gc and
// verify jobs (the jobs table, server/job_scheduler.h).

#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "server/admin_cli.h"
#include "server/calendar_event.h"
#include "server/job_scheduler.h"
#include "server/sync.h"
#include "server/task_runner.h"
#include "storage/names.h"

namespace cairn::server {
namespace {

struct JobCommand {
  CLI::App* job = nullptr;
  CLI::App* add = nullptr;
  CLI::App* list = nullptr;
  CLI::App* remove = nullptr;
  CLI::App* run = nullptr;
  CLI::App* next = nullptr;
  JobConfig new_job;
  std::string group, target;
  std::optional<uint64_t> keep[6];
  std::optional<int64_t> outdated;
  bool ignore_verified = false;
  std::string output = "text";
  std::string id;
  std::string next_expr, next_from, next_tz = "UTC";
  int next_count = 5;

  void Add(CLI::App& app) {
    job = app.add_subcommand("job", "scheduled prune, gc and verify jobs");
    job->require_subcommand(1);
    add = job->add_subcommand("add", "add a job (a running server picks it up)");
    add->add_option("ID", new_job.id)->required();
    add->add_option("--kind", new_job.kind,
                    "prune, gc or verify (sync and push: sync-job add, push-job add)")
        ->required();
    add->add_option("--store", new_job.store)->required();
    add->add_option("--schedule", new_job.schedule, "calendar event: daily, 'sat 02:00', '*:0/15'")
        ->required();
    add->add_option("--group", group, "prune: only this group (default: every group)");
    for (int i = 0; i < 6; ++i) add->add_option(kKeepNames[i], keep[i]);
    add->add_option("--target", target, "verify: a snapshot or group (default: everything)");
    add->add_flag("--ignore-verified", ignore_verified, "verify: skip snapshots verified recently");
    add->add_option("--outdated-after", outdated,
                    "verify: days after which a verification is redone");
    list = job->add_subcommand("list", "list jobs");
    list->add_option("--output", output)->check(CLI::IsMember({"text", "json"}));
    remove = job->add_subcommand("remove", "remove a job");
    remove->add_option("ID", id)->required();
    run = job->add_subcommand(
        "run", "run a job now and wait for it (through the running server when there is one)");
    run->add_option("ID", id)->required();
    next = job->add_subcommand("next", "print the next run times of a calendar event");
    next->add_option("EXPR", next_expr)->required();
    next->add_option("--from", next_from, "start time YYYY-MM-DDTHH:MM:SSZ (default now)");
    next->add_option("--count", next_count)->check(CLI::Range(1, 1000));
    next->add_option("--time-zone", next_tz);
  }

  // `job next` needs no data directory.
  int Next() {
    auto event = CalendarEvent::Parse(next_expr);
    if (!event.ok()) return FailCommand(event.status());
    auto tz = storage::TimeZone::Parse(next_tz);
    if (!tz.ok()) return FailCommand(tz.status());
    int64_t from = std::time(nullptr);
    if (!next_from.empty()) {
      auto t = storage::ParseSnapshotTime(next_from);
      if (!t.ok()) return FailCommand(t.status());
      from = *t;
    }
    std::cout << "next runs of \"" << event->ToString() << "\" (" << tz->name() << "):\n";
    for (int64_t t : NextRuns(*event, from, next_count, *tz)) {
      std::cout << "  " << storage::FormatSnapshotTime(t) << "\n";
    }
    return 0;
  }

  int Execute(const Admin& admin) {
    if (add->parsed() && IsSyncJobKind(new_job.kind)) {
      return FailCommand(Status::InvalidArgument("add " + new_job.kind + " jobs with `" +
                                          (new_job.kind == "sync" ? "sync" : "push") +
                                          "-job add`"));
    }
    // The jobs table only: runs happen in RunJobAndWait or in the server.
    TaskRunner none(nullptr, {.workers = 1});
    auto jobs = JobScheduler::Open(admin.data, &none, nullptr,
                                                  storage::TimeZone::Utc());
    if (!jobs.ok()) return FailCommand(jobs.status());
    if (add->parsed()) return AddJob(**jobs);
    if (list->parsed()) return ListJobs(**jobs);
    if (remove->parsed()) return RemoveJob(**jobs);
    return 0;
  }

  int AddJob(JobScheduler& jobs) {
    nlohmann::json opts = nlohmann::json::object();
    if (!group.empty()) opts["group"] = group;
    for (int i = 0; i < 6; ++i) {
      if (keep[i]) opts[std::string(kKeepNames[i]).substr(2)] = *keep[i];
    }
    if (!target.empty()) opts["target"] = target;
    if (ignore_verified) opts["ignore-verified"] = true;
    if (outdated) opts["outdated-after-days"] = *outdated;
    new_job.options = opts;
    if (Status s = jobs.Add(new_job); !s.ok()) return FailCommand(s);
    auto added = jobs.Get(new_job.id);
    auto next_run = added.ok() ? jobs.NextRun(*added) : std::nullopt;
    std::cout << "job " << new_job.id << " added; next run "
              << (next_run ? storage::FormatSnapshotTime(*next_run) : "never") << "\n";
    return 0;
  }

  int ListJobs(JobScheduler& jobs) {
    auto all = jobs.List();
    if (!all.ok()) return FailCommand(all.status());
    nlohmann::json out = nlohmann::json::array();
    for (const auto& j : *all) {
      auto next_run = jobs.NextRun(j);
      nlohmann::json o = j.ToJson();
      o["next-run"] = next_run ? nlohmann::json(*next_run) : nlohmann::json(nullptr);
      out.push_back(o);
      if (output != "json") {
        std::cout << j.id << "\t" << j.kind << "\t" << j.store << "\t" << j.schedule << "\tnext "
                  << (next_run ? storage::FormatSnapshotTime(*next_run) : "never") << "\t"
                  << j.options.dump() << "\n";
      }
    }
    if (output == "json") std::cout << out.dump(2) << "\n";
    return 0;
  }

  int RemoveJob(JobScheduler& jobs) {
    if (Status s = jobs.Remove(id); !s.ok()) return FailCommand(s);
    std::cout << "job " << id << " removed\n";
    return 0;
  }
};

}  // namespace

void AddJobCommands(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<JobCommand>();
  c->Add(app);
  // `job next` needs no data directory; `job run` goes through the running
  // server when there is one.
  commands->push_back({c->next, [c](const std::string&) { return c->Next(); }});
  commands->push_back({c->run, [c](const std::string& data) {
                         return RunJobAndWait(data, c->id, false);
                       }});
  auto table = [c](const std::string& data) {
    return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
  };
  for (CLI::App* sub : {c->add, c->list, c->remove}) commands->push_back({sub, table});
}

}  // namespace cairn::server
