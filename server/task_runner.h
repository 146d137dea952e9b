#pragma once

// TaskRunner: the one place where the server runs background work — prune,
// GC, verify, job runs (sync later). A bounded pool: a fixed number of worker
// threads, started with the runner and joined at Stop, take tasks from a
// bounded queue. Submit creates the task (its row and log, server/task_log.h)
// and returns its id at once, so every maintenance request answers 202 with
// the id; the task's structured result is kept with it (TaskInfo::result).
//
// Limits: at most `max_queued` tasks wait (Busy beyond), and one token
// (an auth id with a '!'; internal starters such as the scheduler have none)
// has at most `max_per_token` tasks queued or running (TooManyRequests).
//
// Thread safety: all methods are thread-safe.

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/task_log.h"
#include "storage/mutex.h"

namespace cairn::server {

// What a task's work ends with.
struct TaskOutcome {
  Status status;             // not OK: the task failed
  std::string summary;       // one line, for an OK status
  nlohmann::json result;     // structured result, null for none
};

using TaskFn = std::function<TaskOutcome(Task& task)>;

struct TaskRunnerOptions {
  int workers = 4;
  size_t max_queued = 256;
  int max_per_token = 2;
};

class TaskRunner {
 public:
  TaskRunner(TaskLog* log, TaskRunnerOptions options);
  ~TaskRunner();  // Stop()
  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  // Creates the task and queues `fn`; `on_done` (may be empty) runs on the
  // worker after `fn`, before the task is marked finished (and the token's
  // slot is free by then too). Busy while stopping or with a full
  // queue; TooManyRequests over the token's limit. An exception from `fn`
  // fails the task with its message.
  Result<std::string> Submit(const std::string& kind, const std::string& store,
                             const std::string& auth_id, TaskFn fn,
                             std::function<void()> on_done = {});

  // Set once Stop began: long tasks check it and end early.
  const std::atomic<bool>* cancel() const { return &cancel_; }

  // Stops taking tasks, fails the queued ones ("the server stopped before
  // the task ran"), waits for the running ones and joins the workers.
  void Stop();

  size_t queued();
  size_t running();

 private:
  struct Item {
    std::shared_ptr<Task> task;
    std::string auth_id;
    TaskFn fn;
    std::function<void()> on_done;
  };
  void Work();
  void Execute(Item& item);
  void Release(const std::string& auth_id);

  TaskLog* const log_;
  const TaskRunnerOptions options_;
  std::atomic<bool> cancel_{false};
  Mutex mu_;
  CondVar cv_;
  std::deque<Item> queue_ CAIRN_GUARDED_BY(mu_);
  std::map<std::string, int> per_token_ CAIRN_GUARDED_BY(mu_);  // queued + running
  size_t running_ CAIRN_GUARDED_BY(mu_) = 0;
  bool stopping_ CAIRN_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;       // set in the constructor, joined by Stop
};

}  // namespace cairn::server
