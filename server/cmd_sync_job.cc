// `cairn-server sync-job add|list|remove|run` (pull from a remote) and
// `push-job …` (push to one): jobs of kind "sync" and "push" in the jobs
// table (server/job_scheduler.h), run by server/sync.h. They work on the
// data directory, also while the server runs (it reads the jobs table every
// second); `run` goes through the running server when there is one.
// Also RunJobAndWait, which `job run` shares.

#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "server/admin_cli.h"
#include "server/job_scheduler.h"
#include "server/maintenance.h"
#include "server/remotes.h"
#include "server/running_server.h"
#include "server/sync.h"
#include "storage/catalog.h"
#include "storage/env.h"
#include "storage/names.h"

namespace cairn::server {
namespace {

struct SyncJobFlags {
  JobConfig job;
  std::string remote, remote_store, owner;
  std::vector<std::string> groups;
  bool remove_vanished = false;
  double rate_limit = 0;
  bool disabled = false;
  std::string output = "text";
  std::string id;
};

// A job's log read while it grows; each new piece goes to `out`.
class LogFollower {
 public:
  LogFollower(TaskLog* log, std::string id, std::ostream* out)
      : log_(log), id_(std::move(id)), out_(out) {}
  void Poll() {
    while (true) {
      auto text = log_->ReadLog(id_, offset_, 1 << 20);
      if (!text.ok() || text->empty()) return;
      offset_ += text->size();
      *out_ << *text << std::flush;
    }
  }

 private:
  TaskLog* const log_;
  const std::string id_;
  std::ostream* const out_;
  uint64_t offset_ = 0;
};

// In this process: the store is opened here (Busy when a server holds it).
int RunHere(const std::string& data, const std::string& id, bool json) {
  auto tasks = TaskLog::Open(data);
  if (!tasks.ok()) return FailCommand(tasks.status());
  auto catalog = storage::Catalog::Open(storage::JoinPath(data, "cairn.db"));
  if (!catalog.ok()) return FailCommand(catalog.status());
  auto remotes = RemoteStore::Open(data);
  if (!remotes.ok()) return FailCommand(remotes.status());
  storage::Catalog* cat = catalog->get();
  RemoteStore* rs = remotes->get();
  auto runner = [cat, rs](const JobConfig& j, Task& task) -> TaskOutcome {
    auto opened = OpenOffline(cat, j.store, "is the server running?");
    if (!opened.ok()) return {opened.status(), "", nullptr};
    MaintenanceContext ctx;
    ctx.store = opened->store.get();
    ctx.store_name = j.store;
    if (IsSyncJobKind(j.kind)) return RunSyncJob(ctx, rs, j, task);
    return {RunJob(ctx, j, task), "", nullptr};
  };
  // Declared before the scheduler: the scheduler (destroyed first) waits
  // for its runs, which run here.
  TaskRunner task_runner(tasks->get(), {.workers = 1});
  auto jobs = JobScheduler::Open(data, &task_runner, runner, storage::TimeZone::Utc());
  if (!jobs.ok()) return FailCommand(jobs.status());
  auto task_id = (*jobs)->RunNow(id, "root@cli");
  if (!task_id.ok()) return FailCommand(task_id.status());
  LogFollower follow(tasks->get(), *task_id, json ? &std::cerr : &std::cout);
  while (true) {
    auto info = (*tasks)->Get(*task_id);
    follow.Poll();
    if (!info.ok() || info->state != TaskState::kRunning) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  (*jobs)->Stop();
  follow.Poll();
  auto info = (*tasks)->Get(*task_id);
  if (!info.ok()) return FailCommand(info.status());
  if (json) std::cout << info->ToJson().dump(2) << "\n";
  return info->state != TaskState::kFailed ? 0 : 1;
}

int RunThrough(const std::string& data, const RunningServer& server, const std::string& id,
               bool json) {
  auto jobs_store = [&]() -> Result<std::string> {
    TaskRunner none(nullptr, {.workers = 1});
    CAIRN_ASSIGN_OR_RETURN(auto jobs, JobScheduler::Open(data, &none, nullptr,
                                                         storage::TimeZone::Utc()));
    CAIRN_ASSIGN_OR_RETURN(JobConfig job, jobs->Get(id));
    return job.store;
  }();
  if (!jobs_store.ok()) return FailCommand(jobs_store.status());
  auto auth = AuthStore::Open(storage::JoinPath(data, "auth.db"));
  if (!auth.ok()) return FailCommand(auth.status());
  std::ostream& out = json ? std::cerr : std::cout;
  out << "running job " << id << " on the server at " << server.host << ":" << server.port
      << " (pid " << server.pid << ")\n";
  auto task = RunJobOnServer(data, server, auth->get(), id, *jobs_store,
                             [&out](std::string_view line) { out << line << "\n" << std::flush; });
  if (!task.ok()) return FailCommand(task.status());
  if (json) {
    nlohmann::json j = {{"id", task->id}, {"kind", task->kind}, {"store", task->store},
                        {"state", client::TaskStateName(task->state)}, {"summary", task->summary},
                        {"result", task->result}};
    std::cout << j.dump(2) << "\n";
  }
  return task->state != client::TaskState::kFailed ? 0 : 1;
}

// Opens the jobs table for add, list and remove (no run happens here).
struct JobsTable {
  std::unique_ptr<TaskRunner> none = std::make_unique<TaskRunner>(nullptr, TaskRunnerOptions{.workers = 1});
  std::unique_ptr<JobScheduler> jobs;
};

Result<JobsTable> OpenJobs(const std::string& data) {
  JobsTable t;
  CAIRN_ASSIGN_OR_RETURN(t.jobs, JobScheduler::Open(data, t.none.get(), nullptr,
                                                    storage::TimeZone::Utc()));
  return t;
}

int AddJob(const std::string& data, const std::string& kind, SyncJobFlags f) {
  nlohmann::json opts = {{"remote", f.remote}, {"remote-store", f.remote_store}};
  if (!f.groups.empty()) opts["groups"] = f.groups;
  if (f.remove_vanished) opts["remove-vanished"] = true;
  if (f.rate_limit != 0) opts["rate-limit"] = f.rate_limit;
  if (!f.owner.empty()) {
    if (kind != "sync") return FailCommand(Status::InvalidArgument("--owner is for sync jobs"));
    opts["owner"] = f.owner;
  }
  f.job.kind = kind;
  f.job.enabled = !f.disabled;
  auto checked = JobOptionsFromJson(kind, opts);
  if (!checked.ok()) return FailCommand(checked.status());
  f.job.options = *checked;
  auto catalog = storage::Catalog::Open(storage::JoinPath(data, "cairn.db"));
  if (!catalog.ok()) return FailCommand(catalog.status());
  if (auto row = (*catalog)->GetDatastore(f.job.store); !row.ok()) return FailCommand(row.status());
  auto remotes = RemoteStore::Open(data);
  if (!remotes.ok()) return FailCommand(remotes.status());
  if (auto r = (*remotes)->Get(f.remote); !r.ok()) return FailCommand(r.status());
  auto t = OpenJobs(data);
  if (!t.ok()) return FailCommand(t.status());
  if (Status s = t->jobs->Add(f.job); !s.ok()) return FailCommand(s);
  auto added = t->jobs->Get(f.job.id);
  auto next = added.ok() ? t->jobs->NextRun(*added) : std::nullopt;
  std::cout << kind << " job " << f.job.id << " added; next run "
            << (next ? storage::FormatSnapshotTime(*next) : "never") << "\n";
  return 0;
}

int ListJobs(const std::string& data, const std::string& kind, const SyncJobFlags& f) {
  auto t = OpenJobs(data);
  if (!t.ok()) return FailCommand(t.status());
  auto all = t->jobs->List();
  if (!all.ok()) return FailCommand(all.status());
  nlohmann::json out = nlohmann::json::array();
  for (const auto& j : *all) {
    if (j.kind != kind) continue;
    auto next = t->jobs->NextRun(j);
    nlohmann::json o = j.ToJson();
    o["next-run"] = next ? nlohmann::json(*next) : nlohmann::json(nullptr);
    out.push_back(o);
    if (f.output == "json") continue;
    const std::string remote = j.options.value("remote", "") + ":" + j.options.value("remote-store", "");
    std::cout << j.id << "\t" << (kind == "sync" ? remote + " -> " + j.store : j.store + " -> " + remote)
              << "\t" << j.schedule << (j.enabled ? "" : " (disabled)") << "\tnext "
              << (next ? storage::FormatSnapshotTime(*next) : "never") << "\t" << j.options.dump()
              << "\n";
  }
  if (f.output == "json") std::cout << out.dump(2) << "\n";
  return 0;
}

int RemoveJob(const std::string& data, const std::string& kind, const std::string& id) {
  auto t = OpenJobs(data);
  if (!t.ok()) return FailCommand(t.status());
  auto job = t->jobs->Get(id);
  if (!job.ok()) return FailCommand(job.status());
  if (job->kind != kind) {
    return FailCommand(Status::InvalidArgument("job " + id + " is a " + job->kind +
                                               " job; remove it with `job remove`"));
  }
  if (Status s = t->jobs->Remove(id); !s.ok()) return FailCommand(s);
  std::cout << kind << " job " << id << " removed\n";
  return 0;
}

}  // namespace

int FailCommand(const storage::Status& s) {
  std::cerr << "cairn-server: " << s.ToString() << "\n";
  return s.IsInvalidArgument() ? 2 : 1;
}

int RunJobAndWait(const std::string& data, const std::string& id, bool json) {
  auto server = FindRunningServer(data);
  if (!server.ok()) return FailCommand(server.status());
  if (*server) return RunThrough(data, **server, id, json);
  return RunHere(data, id, json);
}

void AddSyncJobCommands(CLI::App& app, const std::string& kind,
                        std::vector<AdminCommand>* commands) {
  auto f = std::make_shared<SyncJobFlags>();
  const bool pull = kind == "sync";
  auto* top = app.add_subcommand(pull ? "sync-job" : "push-job",
                                 pull ? "jobs that pull snapshots from a remote server"
                                      : "jobs that push snapshots to a remote server");
  top->require_subcommand(1);
  auto* add = top->add_subcommand("add", "add a job (a running server picks it up)");
  add->add_option("ID", f->job.id)->required();
  add->add_option("--remote", f->remote, "the remote (cairn-server remote add)")->required();
  add->add_option("--remote-store", f->remote_store,
                  pull ? "datastore on the remote to copy from" : "datastore on the remote to copy to")
      ->required();
  add->add_option("--store", f->job.store,
                  pull ? "local datastore to copy into" : "local datastore to copy from")
      ->required();
  add->add_option("--group", f->groups, "only this group ([NS:]TYPE/ID; repeatable)");
  add->add_flag("--remove-vanished", f->remove_vanished,
                pull ? "delete local snapshots the remote no longer has (never protected ones)"
                     : "delete remote snapshots this server no longer has (needs a token that may)");
  add->add_option("--rate-limit", f->rate_limit, "MB/s of chunk blobs moved, at most");
  if (pull) {
    add->add_option("--owner", f->owner,
                    "local owner of the groups it copies (USER or USER!TOKEN; default admin)");
  }
  add->add_option("--schedule", f->job.schedule, "calendar event: daily, 'sat 02:00', '*:0/15'")
      ->required();
  add->add_flag("--disabled", f->disabled, "add it disabled: it runs only by hand");
  auto* list = top->add_subcommand("list", "list these jobs");
  list->add_option("--output", f->output)->check(CLI::IsMember({"text", "json"}));
  auto* remove = top->add_subcommand("remove", "remove a job");
  remove->add_option("ID", f->id)->required();
  auto* run = top->add_subcommand(
      "run", "run a job now and wait for it (through the running server when there is one)");
  run->add_option("ID", f->id)->required();
  run->add_option("--output", f->output, "json: print the task and its result at the end")
      ->check(CLI::IsMember({"text", "json"}));
  commands->push_back({add, [f, kind](const std::string& d) { return AddJob(d, kind, *f); }});
  commands->push_back({list, [f, kind](const std::string& d) { return ListJobs(d, kind, *f); }});
  commands->push_back({remove, [f, kind](const std::string& d) { return RemoveJob(d, kind, f->id); }});
  commands->push_back({run, [f](const std::string& d) {
                         return RunJobAndWait(d, f->id, f->output == "json");
                       }});
}

}  // namespace cairn::server
