// The job scheduler and the task log, with a runner the tests control.

#include "server/job_scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "storage/env.h"
#include "storage/names.h"

namespace cairn::server {
namespace {

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

class JobSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cairn-jobs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Open();
  }
  void TearDown() override {
    scheduler_.reset();
    runner_.reset();
    tasks_.reset();
    (void)storage::RemoveAll(storage::Env::Default(), dir_);
  }
  void Open() {
    scheduler_.reset();
    runner_.reset();
    tasks_.reset();
    auto t = TaskLog::Open(dir_);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tasks_ = std::move(*t);
    runner_ = std::make_unique<TaskRunner>(tasks_.get(), TaskRunnerOptions{});
    auto s = JobScheduler::Open(
        dir_, runner_.get(),
        [this](const JobConfig& job, Task& task) {
          runs_++;
          task.Log("running " + job.id);
          if (job.options.value("block", false)) gate_open_.wait();
          if (job.options.value("fail", false)) {
            return TaskOutcome{Status::IOError("the job failed on purpose"), "", nullptr};
          }
          if (job.options.value("warn", false)) task.Warn("something to look at");
          return TaskOutcome{Status::OK(), "", nullptr};
        },
        TimeZone::Utc());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    scheduler_ = std::move(*s);
  }
  // Waits until no job is running (the runner threads end quickly).
  void Settle() {
    for (int i = 0; i < 200; ++i) {
      auto list = tasks_->List(100);
      bool running = false;
      for (const auto& t : *list) running |= t.state == TaskState::kRunning;
      if (!running) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "tasks did not finish";
  }

  std::string dir_;
  std::unique_ptr<TaskLog> tasks_;
  std::unique_ptr<TaskRunner> runner_;
  std::unique_ptr<JobScheduler> scheduler_;
  std::atomic<int> runs_{0};
  std::promise<void> gate_;
  std::shared_future<void> gate_open_ = gate_.get_future().share();
};

TEST_F(JobSchedulerTest, AddListRemoveAndBadInput) {
  JobConfig j{"nightly-gc", "gc", "default", "daily"};
  ASSERT_TRUE(scheduler_->Add(j).ok());
  EXPECT_TRUE(scheduler_->Add(j).IsAlreadyExists());
  EXPECT_TRUE(scheduler_->Add({"x", "defrag", "default", "daily"}).IsInvalidArgument());
  EXPECT_TRUE(scheduler_->Add({"y", "gc", "default", "every tuesday"}).IsInvalidArgument());
  EXPECT_TRUE(scheduler_->Add({"../z", "gc", "default", "daily"}).IsInvalidArgument());
  EXPECT_TRUE(scheduler_->Add({"z", "gc", "a/b", "daily"}).IsInvalidArgument());
  auto list = scheduler_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].schedule, "daily");
  EXPECT_TRUE(scheduler_->Remove("nightly-gc").ok());
  EXPECT_TRUE(scheduler_->Remove("nightly-gc").IsNotFound());
}

TEST_F(JobSchedulerTest, RunsWhenDueAndAMissedRunHappensOnce) {
  JobConfig j{"hourly-prune", "prune", "default", "hourly"};
  j.created = T("2026-01-01T00:10:00Z");
  ASSERT_TRUE(scheduler_->Add(j).ok());
  EXPECT_TRUE(scheduler_->Tick(T("2026-01-01T00:59:59Z")).empty());
  EXPECT_EQ(scheduler_->Tick(T("2026-01-01T01:00:00Z")), std::vector<std::string>{"hourly-prune"});
  Settle();
  EXPECT_TRUE(scheduler_->Tick(T("2026-01-01T01:30:00Z")).empty());
  // The server was down from 01:30 to 06:20: five runs were missed; one runs.
  Open();
  EXPECT_EQ(scheduler_->Tick(T("2026-01-01T06:20:00Z")).size(), 1u);
  Settle();
  EXPECT_TRUE(scheduler_->Tick(T("2026-01-01T06:20:01Z")).empty());
  EXPECT_TRUE(scheduler_->Tick(T("2026-01-01T06:59:59Z")).empty());
  EXPECT_EQ(scheduler_->Tick(T("2026-01-01T07:00:00Z")).size(), 1u);
  Settle();
  EXPECT_EQ(runs_.load(), 3);
  auto job = scheduler_->Get("hourly-prune");
  EXPECT_EQ(job->last_run, T("2026-01-01T07:00:00Z"));
}

TEST_F(JobSchedulerTest, NeverTwoRunsOfOneJobAtOnce) {
  JobConfig j{"slow", "verify", "default", "*:*:0/1"};
  j.options = {{"block", true}};
  j.created = T("2026-01-01T00:00:00Z");
  ASSERT_TRUE(scheduler_->Add(j).ok());
  EXPECT_EQ(scheduler_->Tick(T("2026-01-01T00:00:05Z")).size(), 1u);
  for (int s = 6; s < 20; ++s) {
    EXPECT_TRUE(scheduler_->Tick(T("2026-01-01T00:00:00Z") + s).empty()) << s;
  }
  auto now = scheduler_->RunNow("slow", "admin!default");
  EXPECT_TRUE(now.status().IsConflict()) << now.status().ToString();
  // While it runs, its log is readable.
  auto list = tasks_->List(10);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].state, TaskState::kRunning);
  std::string log;
  for (int i = 0; i < 100 && log.find("running slow") == std::string::npos; ++i) {
    log = *tasks_->ReadLog((*list)[0].id, 0, 1 << 20);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(log.find("running slow"), std::string::npos) << log;
  gate_.set_value();
  Settle();
  EXPECT_EQ(runs_.load(), 1);
  EXPECT_TRUE(scheduler_->RunNow("slow", "admin!default").ok());
  Settle();
  EXPECT_EQ(runs_.load(), 2);
}

TEST_F(JobSchedulerTest, AFailingJobIsAFailedTaskAndTheSchedulerGoesOn) {
  JobConfig bad{"bad", "gc", "default", "*:0/10"};
  bad.options = {{"fail", true}};
  bad.created = T("2026-01-01T00:00:00Z");
  JobConfig warn{"warn", "gc", "default", "*:0/10"};
  warn.options = {{"warn", true}};
  warn.created = bad.created;
  ASSERT_TRUE(scheduler_->Add(bad).ok());
  ASSERT_TRUE(scheduler_->Add(warn).ok());
  EXPECT_EQ(scheduler_->Tick(T("2026-01-01T00:10:00Z")).size(), 2u);
  Settle();
  EXPECT_EQ(scheduler_->Tick(T("2026-01-01T00:20:00Z")).size(), 2u);
  Settle();
  auto list = tasks_->List(10);
  ASSERT_EQ(list->size(), 4u);
  int failed = 0, warnings = 0;
  for (const auto& t : *list) {
    failed += t.state == TaskState::kFailed;
    warnings += t.state == TaskState::kWarnings;
    EXPECT_NE(t.end, 0);
  }
  EXPECT_EQ(failed, 2);
  EXPECT_EQ(warnings, 2);
}

TEST_F(JobSchedulerTest, TaskLogsSurviveARestartAndRunningTasksBecomeFailed) {
  auto t = tasks_->Start("verify", "default", "admin!default");
  ASSERT_TRUE(t.ok());
  (*t)->Log("checked 10 chunks");
  std::string id = (*t)->id();
  (*t)->Finish(Status::OK(), "10 chunks ok");
  // A server that dies mid-task: a child process starts a task and exits
  // without running any destructor.
  std::string orphan_id;
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    auto log = TaskLog::Open(dir_);
    if (log.ok()) {
      auto orphan = (*log)->Start("gc", "default", "admin!default");
      if (orphan.ok()) {
        std::string orphan_id_child = (*orphan)->id();
        ssize_t n = ::write(pipe_fds[1], orphan_id_child.data(), orphan_id_child.size());
        (void)n;
        ::_exit(0);  // here, before the task's destructor could run
      }
    }
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  char buf[128];
  ssize_t n = ::read(pipe_fds[0], buf, sizeof(buf));
  ::close(pipe_fds[0]);
  ::waitpid(pid, nullptr, 0);
  ASSERT_GT(n, 0);
  orphan_id.assign(buf, static_cast<size_t>(n));
  auto orphan_info = tasks_->Get(orphan_id);
  ASSERT_TRUE(orphan_info.ok()) << orphan_info.status().ToString();
  EXPECT_EQ(orphan_info->state, TaskState::kRunning) << orphan_info->summary << "\n"
                                                     << *tasks_->ReadLog(orphan_id, 0, 4096);
  Open();
  auto info = tasks_->Get(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, TaskState::kOk);
  EXPECT_EQ(info->summary, "10 chunks ok");
  auto log = tasks_->ReadLog(id, 0, 1 << 20);
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("checked 10 chunks"), std::string::npos);
  EXPECT_NE(log->find("TASK ok: 10 chunks ok"), std::string::npos);
  EXPECT_EQ(tasks_->Get(orphan_id)->state, TaskState::kFailed);
  // Reading from an offset, bad ids.
  EXPECT_EQ(*tasks_->ReadLog(id, log->size(), 100), "");
  EXPECT_TRUE(tasks_->Get("../../etc/passwd").status().IsNotFound());
  EXPECT_TRUE(tasks_->ReadLog("x", 0, 10).status().IsNotFound());
  // Trim removes finished tasks and their logs.
  auto trimmed = tasks_->Trim(INT64_MAX);
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 2u);
  EXPECT_TRUE(tasks_->Get(id).status().IsNotFound());
  EXPECT_TRUE(storage::Env::Default()->Stat(tasks_->LogPath(id)).status().IsNotFound());
}

}  // namespace
}  // namespace cairn::server
