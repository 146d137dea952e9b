#include "server/job_scheduler.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

#include "server/server_db.h"
#include "storage/names.h"
#include "storage/sqlite_db.h"

namespace cairn::server {
namespace {

using storage::Stmt;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

constexpr char kColumns[] = "id, kind, store, schedule, options, enabled, created, last_run";

Result<JobConfig> RowToJob(Stmt& st) {
  JobConfig j;
  j.id = st.ColText(0);
  j.kind = st.ColText(1);
  j.store = st.ColText(2);
  j.schedule = st.ColText(3);
  j.options = nlohmann::json::parse(st.ColText(4), nullptr, false);
  if (!j.options.is_object()) return Status::Corruption("job " + j.id + " has malformed options");
  j.enabled = st.ColInt(5) != 0;
  j.created = st.ColInt(6);
  j.last_run = st.ColInt(7);
  return j;
}

}  // namespace

nlohmann::json JobConfig::ToJson() const {
  return {{"id", id},           {"kind", kind},       {"store", store},
          {"schedule", schedule}, {"options", options}, {"enabled", enabled},
          {"created", created},   {"last-run", last_run == 0 ? nlohmann::json() : nlohmann::json(last_run)}};
}

Result<std::unique_ptr<JobScheduler>> JobScheduler::Open(const std::string& data_dir,
                                                         TaskRunner* tasks, JobRunner runner,
                                                         TimeZone tz) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db, OpenServerDb(data_dir));
  return std::unique_ptr<JobScheduler>(new JobScheduler(db, tasks, std::move(runner), std::move(tz)));
}

JobScheduler::~JobScheduler() {
  Stop();
  sqlite3_close(db_);
}

Status ValidateJob(const JobConfig& job) {
  if (!storage::ValidateName(storage::NameKind::kStore, job.id).ok()) {
    return Status::InvalidArgument("job id must be 1-32 of A-Z a-z 0-9 _ . - (not starting with . or -)");
  }
  if (job.kind != "prune" && job.kind != "gc" && job.kind != "verify" && job.kind != "sync" &&
      job.kind != "push") {
    return Status::InvalidArgument("job kind must be prune, gc, verify, sync or push");
  }
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, job.store));
  auto event = CalendarEvent::Parse(job.schedule);
  if (!event.ok()) return event.status().WithContext("schedule");
  if (!job.options.is_object()) return Status::InvalidArgument("job options must be an object");
  return Status::OK();
}

Status JobScheduler::Add(JobConfig job) {
  CAIRN_RETURN_IF_ERROR(ValidateJob(job));
  if (job.created == 0) job.created = Now();
  MutexLock lock(&db_mu_);
  Stmt st(db_, "INSERT INTO jobs (id, kind, store, schedule, options, enabled, created, last_run) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  st.Text(1, job.id).Text(2, job.kind).Text(3, job.store).Text(4, job.schedule)
      .Text(5, job.options.dump()).Int(6, job.enabled ? 1 : 0).Int(7, job.created)
      .Int(8, job.last_run);
  Status s = st.Run();
  if (s.IsConflict()) return Status::AlreadyExists("job " + job.id + " exists already");
  return s;
}

Status JobScheduler::Update(const JobConfig& job) {
  CAIRN_RETURN_IF_ERROR(ValidateJob(job));
  MutexLock lock(&db_mu_);
  Stmt st(db_, "UPDATE jobs SET kind = ?, store = ?, schedule = ?, options = ?, enabled = ? "
               "WHERE id = ?");
  st.Text(1, job.kind).Text(2, job.store).Text(3, job.schedule).Text(4, job.options.dump())
      .Int(5, job.enabled ? 1 : 0).Text(6, job.id);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("no job " + job.id);
  return Status::OK();
}

Status JobScheduler::Remove(const std::string& id) {
  MutexLock lock(&db_mu_);
  Stmt st(db_, "DELETE FROM jobs WHERE id = ?");
  st.Text(1, id);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("no job " + id);
  return Status::OK();
}

Result<std::vector<JobConfig>> JobScheduler::List() {
  MutexLock lock(&db_mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs ORDER BY id";
  Stmt st(db_, sql.c_str());
  std::vector<JobConfig> out;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(JobConfig j, RowToJob(st));
    out.push_back(std::move(j));
  }
  return out;
}

Result<JobConfig> JobScheduler::Get(const std::string& id) {
  MutexLock lock(&db_mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?";
  Stmt st(db_, sql.c_str());
  st.Text(1, id);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no job " + id);
  return RowToJob(st);
}

std::optional<int64_t> JobScheduler::NextRun(const JobConfig& job) const {
  auto event = CalendarEvent::Parse(job.schedule);
  if (!event.ok()) return std::nullopt;
  return event->Next(job.last_run != 0 ? job.last_run : job.created, tz_);
}

Status JobScheduler::SetLastRun(const std::string& id, int64_t when) {
  MutexLock lock(&db_mu_);
  Stmt st(db_, "UPDATE jobs SET last_run = ? WHERE id = ?");
  st.Int(1, when).Text(2, id);
  return st.Run();
}

Result<std::string> JobScheduler::Launch(const JobConfig& job, const std::string& auth_id,
                                         int64_t now) {
  {
    MutexLock lock(&mu_);
    if (stopping_) return Status::Busy("the server is stopping");
    if (running_.contains(job.id)) return Status::Conflict("job " + job.id + " is running already");
    running_.insert(job.id);
  }
  auto task_id = runner_pool_->Submit(
      job.kind, job.store, auth_id,
      [this, job](Task& t) -> TaskOutcome {
        t.Log("job " + job.id + " (" + job.schedule + ")");
        TaskOutcome out = runner_(job, t);
        if (!out.status.ok()) spdlog::warn("job {} failed: {}", job.id, out.status.ToString());
        if (out.summary.empty()) out.summary = "job " + job.id + " done";
        return out;
      },
      [this, id = job.id] {
        MutexLock lock(&mu_);
        running_.erase(id);
        cv_.SignalAll();
      });
  if (!task_id.ok()) {
    MutexLock lock(&mu_);
    running_.erase(job.id);
    return task_id.status();
  }
  // The last run is recorded at start: a job that crashes the server is not
  // started again in a loop, and a missed run happens once.
  (void)SetLastRun(job.id, now);
  return task_id;
}

Result<std::string> JobScheduler::RunNow(const std::string& id, const std::string& auth_id) {
  CAIRN_ASSIGN_OR_RETURN(JobConfig job, Get(id));
  return Launch(job, auth_id, Now());
}

std::vector<std::string> JobScheduler::Tick(int64_t now) {
  std::vector<std::string> started;
  auto jobs = List();
  if (!jobs.ok()) {
    spdlog::error("scheduler cannot read jobs: {}", jobs.status().ToString());
    return started;
  }
  for (const auto& job : *jobs) {
    if (!job.enabled) continue;
    auto next = NextRun(job);
    if (!next || *next > now) continue;
    {
      MutexLock lock(&mu_);
      if (running_.contains(job.id)) continue;  // never two runs at once
    }
    auto r = Launch(job, "scheduler", now);
    if (r.ok()) {
      started.push_back(job.id);
    } else if (!r.status().IsConflict()) {
      spdlog::error("job {} could not start: {}", job.id, r.status().ToString());
    }
  }
  return started;
}

void JobScheduler::Start() {
  thread_ = std::thread([this] {
    mu_.Lock();
    while (!stopping_) {
      mu_.Unlock();
      Tick(Now());
      mu_.Lock();
      // Sleeps a second, or until Stop.
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      while (!stopping_) {
        const auto left = until - std::chrono::steady_clock::now();
        if (left <= left.zero()) break;
        cv_.WaitFor(&mu_, left);
      }
    }
    mu_.Unlock();
  });
}

void JobScheduler::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
  // The runs themselves are the task runner's; Stop waits for them to end.
  MutexLock lock(&mu_);
  while (!running_.empty()) cv_.Wait(&mu_);
}

}  // namespace cairn::server
