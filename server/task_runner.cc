#include "server/task_runner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace cairn::server {

TaskRunner::TaskRunner(TaskLog* log, TaskRunnerOptions options)
    : log_(log), options_(options) {
  const int n = options_.workers < 1 ? 1 : options_.workers;
  workers_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) workers_.emplace_back([this] { Work(); });
}

TaskRunner::~TaskRunner() { Stop(); }

Result<std::string> TaskRunner::Submit(const std::string& kind, const std::string& store,
                                       const std::string& auth_id, TaskFn fn,
                                       std::function<void()> on_done) {
  const bool per_token = auth_id.find('!') != std::string::npos;
  std::shared_ptr<Task> task;
  {
    MutexLock lock(&mu_);
    if (stopping_) return Status::Busy("the server is stopping");
    if (queue_.size() >= options_.max_queued) {
      return Status::Busy(fmt::format("{} tasks are waiting already; try again later",
                                      queue_.size()));
    }
    if (per_token && per_token_[auth_id] >= options_.max_per_token) {
      return Status::TooManyRequests(fmt::format(
          "{} already runs {} task(s), the most one token may", auth_id, options_.max_per_token));
    }
    // The row is made under the lock so that the limits above hold exactly.
    CAIRN_ASSIGN_OR_RETURN(task, log_->Start(kind, store, auth_id));
    if (per_token) ++per_token_[auth_id];
    queue_.push_back({task, per_token ? auth_id : std::string(), std::move(fn), std::move(on_done)});
  }
  cv_.Signal();
  return task->id();
}

void TaskRunner::Work() {
  while (true) {
    Item item;
    {
      MutexLock lock(&mu_);
      while (!stopping_ && queue_.empty()) cv_.Wait(&mu_);
      if (queue_.empty()) return;  // stopping, nothing left
      item = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    Execute(item);
    MutexLock lock(&mu_);
    --running_;
  }
}

void TaskRunner::Execute(Item& item) {
  TaskOutcome out;
  if (cancel_.load()) {
    out.status = Status::Busy("the server stopped before the task ran");
  } else {
    try {
      out = item.fn(*item.task);
    } catch (const std::exception& e) {
      out.status = Status::IOError(std::string("exception: ") + e.what());
    }
  }
  if (!out.status.ok()) spdlog::warn("task {} failed: {}", item.task->id(), out.status.ToString());
  // The slot and the job are free before the task shows as finished: whoever
  // sees it finished may start the next one at once.
  if (item.on_done) item.on_done();
  Release(item.auth_id);
  item.task->Finish(out.status, out.summary.empty() ? "done" : out.summary, std::move(out.result));
  item.task.reset();
}

void TaskRunner::Release(const std::string& auth_id) {
  if (auth_id.empty()) return;
  MutexLock lock(&mu_);
  if (--per_token_[auth_id] <= 0) per_token_.erase(auth_id);
}

void TaskRunner::Stop() {
  std::deque<Item> dropped;
  {
    MutexLock lock(&mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    cancel_.store(true);
    dropped.swap(queue_);
  }
  cv_.SignalAll();
  for (Item& item : dropped) {
    if (item.on_done) item.on_done();
    item.task->Finish(Status::Busy("the server stopped before the task ran"), "");
  }
  std::vector<std::thread> workers;
  {
    MutexLock lock(&mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.join();
}

size_t TaskRunner::queued() {
  MutexLock lock(&mu_);
  return queue_.size();
}

size_t TaskRunner::running() {
  MutexLock lock(&mu_);
  return running_;
}

}  // namespace cairn::server
