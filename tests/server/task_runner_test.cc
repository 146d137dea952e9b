// The task runner: a bounded pool and queue, per-token limits, results kept
// with the task, threads joined at Stop, queued tasks failed at Stop.

#include "server/task_runner.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "storage/env.h"

namespace cairn::server {
namespace {

class TaskRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cairn-runner-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto log = TaskLog::Open(dir_);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    log_ = std::move(*log);
  }
  void TearDown() override {
    log_.reset();
    (void)storage::RemoveAll(storage::Env::Default(), dir_);
  }
  // Polls until the task ended (at most 10 s).
  TaskInfo WaitFor(const std::string& id) {
    for (int i = 0; i < 1000; ++i) {
      auto t = log_->Get(id);
      if (t.ok() && t->state != TaskState::kRunning) return *t;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "task " << id << " did not end";
    return {};
  }

  std::string dir_;
  std::unique_ptr<TaskLog> log_;
};

TEST_F(TaskRunnerTest, ResultAndSummaryAreKeptWithTheTask) {
  TaskRunner runner(log_.get(), {});
  auto id = runner.Submit("prune", "default", "admin!t", [](Task& task) {
    task.Log("working");
    return TaskOutcome{Status::OK(), "2 kept, 1 removed", {{"kept", 2}, {"removed", 1}}};
  });
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  TaskInfo t = WaitFor(*id);
  EXPECT_EQ(t.state, TaskState::kOk);
  EXPECT_EQ(t.summary, "2 kept, 1 removed");
  EXPECT_EQ(t.result["removed"], 1);
  EXPECT_EQ(t.ToJson()["result"]["kept"], 2);
  // Kept across a reopen (server.db).
  log_.reset();
  auto again = TaskLog::Open(dir_);
  ASSERT_TRUE(again.ok());
  auto back = (*again)->Get(*id);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->result["kept"], 2);
  log_ = std::move(*again);
}

TEST_F(TaskRunnerTest, FailuresAndExceptionsFailTheTask) {
  TaskRunner runner(log_.get(), {});
  auto failed = runner.Submit("gc", "default", "", [](Task&) {
    return TaskOutcome{Status::IOError("disk gone"), "", nullptr};
  });
  auto thrown = runner.Submit("gc", "default", "", [](Task&) -> TaskOutcome {
    throw std::runtime_error("boom");
  });
  ASSERT_TRUE(failed.ok() && thrown.ok());
  TaskInfo a = WaitFor(*failed), b = WaitFor(*thrown);
  EXPECT_EQ(a.state, TaskState::kFailed);
  EXPECT_NE(a.summary.find("disk gone"), std::string::npos);
  EXPECT_TRUE(a.result.is_null());
  EXPECT_EQ(b.state, TaskState::kFailed);
  EXPECT_NE(b.summary.find("boom"), std::string::npos);
}

TEST_F(TaskRunnerTest, TokenLimitQueueLimitAndBoundedWorkers) {
  std::promise<void> open;
  std::shared_future<void> gate = open.get_future().share();
  std::atomic<int> running{0}, most{0};
  auto blocked = [&](Task&) {
    int now = ++running;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    gate.wait();
    --running;
    return TaskOutcome{Status::OK(), "done", nullptr};
  };
  TaskRunner runner(log_.get(), {.workers = 2, .max_queued = 3, .max_per_token = 2});
  std::vector<std::string> ids;
  // One token: two tasks, the third is refused.
  for (int i = 0; i < 2; ++i) ids.push_back(*runner.Submit("verify", "s", "u!a", blocked));
  EXPECT_TRUE(runner.Submit("verify", "s", "u!a", blocked).status().IsTooManyRequests());
  // Internal starters have no token limit; the queue has.
  for (int i = 0; i < 10 && runner.running() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int i = 0; i < 3; ++i) {
    auto id = runner.Submit("verify", "s", "scheduler", blocked);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  EXPECT_TRUE(runner.Submit("verify", "s", "scheduler", blocked).status().IsBusy());
  EXPECT_EQ(runner.queued(), 3u);
  open.set_value();
  for (const auto& id : ids) EXPECT_EQ(WaitFor(id).state, TaskState::kOk);
  EXPECT_EQ(most.load(), 2);  // never more than the workers
  // The token's slots are free again.
  auto later = runner.Submit("verify", "s", "u!a", [](Task&) { return TaskOutcome{}; });
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ(WaitFor(*later).state, TaskState::kOk);
}

// Whoever sees a task finished may start the next one at once: its on_done
// (the scheduler's "job no longer running") and the token's slot come first.
TEST_F(TaskRunnerTest, AFinishedTaskHasFreedItsJobAndSlot) {
  TaskRunner runner(log_.get(), {.workers = 1, .max_queued = 4, .max_per_token = 1});
  std::atomic<bool> released{false};
  auto id = runner.Submit(
      "verify", "s", "u!a", [](Task&) { return TaskOutcome{}; },
      [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        released = true;
      });
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(WaitFor(*id).state, TaskState::kOk);
  EXPECT_TRUE(released.load());
  auto next = runner.Submit("verify", "s", "u!a", [](Task&) { return TaskOutcome{}; });
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(WaitFor(*next).state, TaskState::kOk);
}

TEST_F(TaskRunnerTest, StopFailsQueuedTasksAndCancelsRunningOnes) {
  TaskRunner runner(log_.get(), {.workers = 1});
  std::atomic<bool> started{false};
  auto running = runner.Submit("verify", "s", "", [&](Task&) {
    started = true;
    while (!runner.cancel()->load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return TaskOutcome{Status::Busy("cancelled"), "", nullptr};
  });
  bool on_done = false;
  auto queued = runner.Submit(
      "gc", "s", "", [](Task&) { return TaskOutcome{}; }, [&] { on_done = true; });
  ASSERT_TRUE(running.ok() && queued.ok());
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  runner.Stop();
  EXPECT_TRUE(on_done);
  EXPECT_EQ(WaitFor(*running).state, TaskState::kFailed);
  TaskInfo q = WaitFor(*queued);
  EXPECT_EQ(q.state, TaskState::kFailed);
  EXPECT_NE(q.summary.find("stopped before"), std::string::npos) << q.summary;
  EXPECT_TRUE(runner.Submit("gc", "s", "", [](Task&) { return TaskOutcome{}; }).status().IsBusy());
}

}  // namespace
}  // namespace cairn::server
