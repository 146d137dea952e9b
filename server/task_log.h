#pragma once

// Tasks: every job run and every verification, prune or GC started by hand.
// A task has an id, a kind, a store, who started it, start and end time, a
// state (running, ok, warnings, failed), a one-line summary, and a log file
// that can be read while the task runs and after it ended (also after a
// restart).
//
// Rows live in <data>/server.db (table `tasks`), logs in <data>/tasks/<id>.log.
// At open, tasks left "running" by a server that died are marked failed.
//
// Thread safety: TaskLog and Task are thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

using storage::Result;
using storage::Status;

enum class TaskState { kRunning, kOk, kWarnings, kFailed };
const char* TaskStateName(TaskState state);

struct TaskInfo {
  std::string id;  // "<start UTC YYYYMMDDTHHMMSSZ>-<kind>-<8 hex>"
  std::string kind;
  std::string store;
  std::string auth_id;
  int64_t start = 0;
  int64_t end = 0;  // 0 while running
  TaskState state = TaskState::kRunning;
  std::string summary;
  // The structured result of a finished task (a prune report, a GC or
  // verify result); null while running and for tasks that give none.
  nlohmann::json result;
  nlohmann::json ToJson() const;
};

class TaskLog;

// A running task. Finish() once; destroying an unfinished task finishes it
// as failed.
class Task {
 public:
  ~Task();
  const std::string& id() const { return id_; }
  // Appends "<UTC time> <line>" to the log file, flushed at once.
  void Log(std::string_view line);
  // As Log, prefixed "WARNING: "; the task ends as `warnings` (unless failed).
  void Warn(std::string_view line);
  // Ends the task: failed when `status` is not OK, else ok or warnings;
  // `result` is kept with it (TaskInfo::result).
  void Finish(const Status& status, const std::string& summary,
              nlohmann::json result = nullptr);

 private:
  friend class TaskLog;
  Task(TaskLog* log, TaskInfo info, int fd)
      : log_(log), id_(info.id), info_(std::move(info)), fd_(fd) {}
  void WriteLine(std::string_view line) CAIRN_REQUIRES(mu_);

  TaskLog* const log_;
  const std::string id_;  // info_.id, which never changes: readable without mu_
  Mutex mu_;
  TaskInfo info_ CAIRN_GUARDED_BY(mu_);
  int fd_ CAIRN_GUARDED_BY(mu_);
  bool warned_ CAIRN_GUARDED_BY(mu_) = false;
  bool finished_ CAIRN_GUARDED_BY(mu_) = false;
};

class TaskLog {
 public:
  static Result<std::unique_ptr<TaskLog>> Open(const std::string& data_dir);
  ~TaskLog();

  // Starts a task and its log file. REQUIRES: the TaskLog outlives the Task.
  Result<std::shared_ptr<Task>> Start(const std::string& kind, const std::string& store,
                                      const std::string& auth_id);
  // Newest first, at most `limit`.
  Result<std::vector<TaskInfo>> List(size_t limit);
  // NotFound for an unknown or malformed id.
  Result<TaskInfo> Get(const std::string& id);
  // The finished task of `kind` on `store` that ended last; NotFound when
  // there is none.
  Result<TaskInfo> LastFinished(const std::string& kind, const std::string& store);
  // Log bytes from `offset`, at most `max`; empty at or past the end (any
  // offset). NotFound for an unknown task. Messages name no file.
  Result<std::string> ReadLog(const std::string& id, uint64_t offset, uint64_t max);
  // Removes finished tasks (rows and logs) that ended before `before`.
  // Returns how many.
  Result<size_t> Trim(int64_t before);

  // The path of a task's log file.
  std::string LogPath(const std::string& id) const;

 private:
  friend class Task;
  TaskLog(sqlite3* db, std::string dir) : db_(db), dir_(std::move(dir)) {}
  Status Save(const TaskInfo& info);

  Mutex mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(mu_);
  const std::string dir_;
};

// True for ids TaskLog makes (safe to use in a path).
bool ValidTaskId(std::string_view id);

}  // namespace cairn::server
