#pragma once

// Jobs: prune, gc, verify, sync and push runs on calendar schedules
// (server/calendar_event.h; sync and push: server/sync.h),
// stored in <data>/server.db (table `jobs`) so the admin command line can add
// and remove them while the server runs.
//
// The scheduler thread wakes every second, reads the jobs, and starts each
// enabled job whose next run after its last run (or after its creation) is
// due. A job missed while the server was down is due at start-up and runs
// once: its last run then becomes now. A job never runs twice at once (a due
// job that is still running waits). Each run is a task (server/task_log.h);
// a run that fails is logged in its task and the scheduler goes on.
//
// Thread safety: all methods are thread-safe.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/calendar_event.h"
#include "server/task_runner.h"
#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

struct JobConfig {
  std::string id;        // [A-Za-z0-9_][A-Za-z0-9_.-]{0,31}
  std::string kind;      // "prune", "gc", "verify", "sync" (pull) or "push"
  std::string store;
  std::string schedule;  // calendar event, e.g. "daily", "sat 02:00"
  nlohmann::json options = nlohmann::json::object();  // kind-specific (keep-…, group, …)
  bool enabled = true;
  int64_t created = 0;
  int64_t last_run = 0;  // 0: never
  nlohmann::json ToJson() const;
};

// OK when `job` could be added: id, kind, store name and schedule valid,
// options an object. (Which options a kind takes: JobOptionsFromJson.)
Status ValidateJob(const JobConfig& job);

// Runs one job; its log goes to `task`, and it ends with the task's status,
// summary (empty: "job ID done") and structured result (null for none).
// Provided by the server.
using JobRunner = std::function<TaskOutcome(const JobConfig& job, Task& task)>;

class JobScheduler {
 public:
  // Runs go to `tasks`, which must outlive the scheduler's runs (stop the
  // scheduler first, or the runner: queued runs then end as failed).
  static Result<std::unique_ptr<JobScheduler>> Open(const std::string& data_dir,
                                                    TaskRunner* tasks, JobRunner runner,
                                                    TimeZone tz);
  ~JobScheduler();

  // InvalidArgument for a bad id, kind, schedule or store name;
  // AlreadyExists for a taken id.
  Status Add(JobConfig job);
  // Replaces kind, store, schedule, options and enabled of job `job.id`
  // (created and last run stay). InvalidArgument as Add; NotFound for an
  // unknown id.
  Status Update(const JobConfig& job);
  // NotFound for an unknown id.
  Status Remove(const std::string& id);
  Result<std::vector<JobConfig>> List();
  Result<JobConfig> Get(const std::string& id);
  // The next run of a job after its last run (or creation); none if never.
  std::optional<int64_t> NextRun(const JobConfig& job) const;

  // Starts a run of `id` now, in the background. Conflict while it runs.
  // Returns the task id.
  Result<std::string> RunNow(const std::string& id, const std::string& auth_id);

  // Starts / stops the scheduler thread. Stop waits for running jobs (they
  // run on the task runner).
  void Start();
  void Stop();

  // One scheduling pass at `now` (the thread calls this every second;
  // tests call it with chosen times). Returns the ids started.
  std::vector<std::string> Tick(int64_t now);

 private:
  JobScheduler(sqlite3* db, TaskRunner* tasks, JobRunner runner, TimeZone tz)
      : db_(db), runner_pool_(tasks), runner_(std::move(runner)), tz_(std::move(tz)) {}
  Result<std::string> Launch(const JobConfig& job, const std::string& auth_id, int64_t now);
  Status SetLastRun(const std::string& id, int64_t when);

  Mutex db_mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(db_mu_);
  TaskRunner* const runner_pool_;
  const JobRunner runner_;
  const TimeZone tz_;

  Mutex mu_;
  std::set<std::string> running_ CAIRN_GUARDED_BY(mu_);
  CondVar cv_;  // running_ shrank, or stopping_
  bool stopping_ CAIRN_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cairn::server
