#include "server/task_log.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <regex>

#include "server/path_scrub.h"
#include "server/server_db.h"
#include "storage/env.h"
#include "storage/names.h"
#include "storage/sqlite_db.h"

namespace cairn::server {
namespace {

using storage::Stmt;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

std::string UtcStamp(int64_t t, bool compact) {
  std::string s = storage::FormatSnapshotTime(t);  // YYYY-MM-DDTHH:MM:SSZ
  if (!compact) return s;
  std::string out;
  for (char c : s) {
    if (c != '-' && c != ':') out += c;
  }
  return out;
}

Result<TaskState> ParseState(const std::string& s) {
  for (TaskState st : {TaskState::kRunning, TaskState::kOk, TaskState::kWarnings, TaskState::kFailed}) {
    if (s == TaskStateName(st)) return st;
  }
  return Status::Corruption("unknown task state " + s);
}

Result<TaskInfo> RowToInfo(Stmt& st) {
  TaskInfo t;
  t.id = st.ColText(0);
  t.kind = st.ColText(1);
  t.store = st.ColText(2);
  t.auth_id = st.ColText(3);
  t.start = st.ColInt(4);
  t.end = st.ColInt(5);
  CAIRN_ASSIGN_OR_RETURN(t.state, ParseState(st.ColText(6)));
  t.summary = st.ColText(7);
  // Written by Finish from a json value; unreadable text (a damaged
  // database) reads as no result rather than failing the listing.
  if (std::string text = st.ColText(8); !text.empty()) {
    t.result = nlohmann::json::parse(text, nullptr, false);
    if (t.result.is_discarded()) t.result = nullptr;
  }
  return t;
}

constexpr char kColumns[] = "id, kind, store, auth_id, start, end, state, summary, result";

}  // namespace

const char* TaskStateName(TaskState state) {
  switch (state) {
    case TaskState::kRunning: return "running";
    case TaskState::kOk: return "ok";
    case TaskState::kWarnings: return "warnings";
    case TaskState::kFailed: return "failed";
  }
  return "?";
}

bool ValidTaskId(std::string_view id) {
  static const std::regex re(R"(\d{8}T\d{6}Z-[a-z]{1,16}-[0-9a-f]{8})");
  return id.size() < 64 && std::regex_match(id.begin(), id.end(), re);
}

nlohmann::json TaskInfo::ToJson() const {
  return {{"id", id},       {"kind", kind},   {"store", store},
          {"auth-id", auth_id}, {"start", start}, {"end", end == 0 ? nlohmann::json() : nlohmann::json(end)},
          {"state", TaskStateName(state)}, {"summary", summary}, {"result", result}};
}

Task::~Task() {
  bool finished;
  {
    MutexLock lock(&mu_);
    finished = finished_;
  }
  if (!finished) Finish(Status::IOError("the task ended without a result"), "aborted");
  MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

void Task::WriteLine(std::string_view line) {
  std::string text = UtcStamp(Now(), false) + " " + std::string(line) + "\n";
  if (fd_ < 0) return;
  // One write per line on an O_APPEND file: readers never see half a line
  // from this writer, and nothing is buffered in the process.
  ssize_t n = ::write(fd_, text.data(), text.size());
  (void)n;  // a full disk must not fail the task's real work
}

// Task logs are read by clients: server paths are scrubbed as lines are
// written (later, offsets into the log would shift).
void Task::Log(std::string_view line) {
  MutexLock lock(&mu_);
  WriteLine(ScrubPaths(std::string(line)));
}

void Task::Warn(std::string_view line) {
  MutexLock lock(&mu_);
  warned_ = true;
  WriteLine("WARNING: " + ScrubPaths(std::string(line)));
}

void Task::Finish(const Status& status, const std::string& summary, nlohmann::json result) {
  TaskInfo info;
  {
    MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    info_.end = Now();
    info_.state = !status.ok() ? TaskState::kFailed : warned_ ? TaskState::kWarnings : TaskState::kOk;
    info_.summary = ScrubPaths(status.ok() ? summary : status.ToString());
    info_.result = std::move(result);
    WriteLine(std::string("TASK ") + TaskStateName(info_.state) + ": " + info_.summary);
    if (fd_ >= 0) ::fsync(fd_);
    info = info_;
  }
  (void)log_->Save(info);
}

Result<std::unique_ptr<TaskLog>> TaskLog::Open(const std::string& data_dir) {
  std::string dir = storage::JoinPath(data_dir, "tasks");
  CAIRN_RETURN_IF_ERROR(storage::CreateDirAll(storage::Env::Default(), dir));
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db, OpenServerDb(data_dir));
  std::unique_ptr<TaskLog> log(new TaskLog(db, dir));
  // Tasks a dead server left running did not finish.
  Stmt st(db, "UPDATE tasks SET state = 'failed', end = ?, "
              "summary = 'the server stopped while the task ran' WHERE state = 'running'");
  st.Int(1, Now());
  CAIRN_RETURN_IF_ERROR(st.Run());
  return log;
}

TaskLog::~TaskLog() { sqlite3_close(db_); }

std::string TaskLog::LogPath(const std::string& id) const { return storage::JoinPath(dir_, id + ".log"); }

Status TaskLog::Save(const TaskInfo& t) {
  MutexLock lock(&mu_);
  Stmt st(db_, "INSERT INTO tasks (id, kind, store, auth_id, start, end, state, summary, result) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
               "end = excluded.end, state = excluded.state, summary = excluded.summary, "
               "result = excluded.result");
  st.Text(1, t.id).Text(2, t.kind).Text(3, t.store).Text(4, t.auth_id).Int(5, t.start)
      .Int(6, t.end).Text(7, TaskStateName(t.state)).Text(8, t.summary)
      .Text(9, t.result.is_null() ? std::string()
                                  : t.result.dump(-1, ' ', false,
                                                  nlohmann::json::error_handler_t::replace));
  return st.Run();
}

Result<std::shared_ptr<Task>> TaskLog::Start(const std::string& kind, const std::string& store,
                                             const std::string& auth_id) {
  unsigned char r[4];
  if (RAND_bytes(r, sizeof(r)) != 1) return Status::IOError("RAND_bytes failed");
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
  TaskInfo info;
  info.start = Now();
  info.id = UtcStamp(info.start, true) + "-" + kind + "-" + hex;
  if (!ValidTaskId(info.id)) return Status::InvalidArgument("bad task kind " + kind);
  info.kind = kind;
  info.store = store;
  info.auth_id = auth_id;
  int fd = ::open(LogPath(info.id).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(LogPath(info.id), errno);
  CAIRN_RETURN_IF_ERROR(Save(info));
  std::shared_ptr<Task> task(new Task(this, info, fd));
  task->Log("TASK started: " + kind + (store.empty() ? "" : " on " + store) + " by " + auth_id);
  return task;
}

Result<std::vector<TaskInfo>> TaskLog::List(size_t limit) {
  MutexLock lock(&mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM tasks ORDER BY start DESC, id DESC LIMIT ?";
  Stmt st(db_, sql.c_str());
  st.Int(1, static_cast<int64_t>(limit));
  std::vector<TaskInfo> out;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(TaskInfo t, RowToInfo(st));
    out.push_back(std::move(t));
  }
  return out;
}

Result<TaskInfo> TaskLog::LastFinished(const std::string& kind, const std::string& store) {
  MutexLock lock(&mu_);
  std::string sql = std::string("SELECT ") + kColumns +
                    " FROM tasks WHERE kind = ? AND store = ? AND state != 'running' "
                    "ORDER BY end DESC, id DESC LIMIT 1";
  Stmt st(db_, sql.c_str());
  st.Text(1, kind).Text(2, store);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no finished " + kind + " task on " + store);
  return RowToInfo(st);
}

Result<TaskInfo> TaskLog::Get(const std::string& id) {
  if (!ValidTaskId(id)) return Status::NotFound("no task " + id);
  MutexLock lock(&mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM tasks WHERE id = ?";
  Stmt st(db_, sql.c_str());
  st.Text(1, id);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no task " + id);
  return RowToInfo(st);
}

Result<std::string> TaskLog::ReadLog(const std::string& id, uint64_t offset, uint64_t max) {
  CAIRN_ASSIGN_OR_RETURN(TaskInfo info, Get(id));
  // Errors name the task, never the file: their messages reach clients.
  const std::string what = "log of task " + info.id;
  int fd = ::open(LogPath(info.id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(what, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(what, err);
  }
  // At or past the end (any offset, up to 2^64-1): nothing to read yet.
  if (offset >= static_cast<uint64_t>(st.st_size)) {
    ::close(fd);
    return std::string();
  }
  std::string out(static_cast<size_t>(std::min<uint64_t>(max, 4 << 20)), '\0');
  ssize_t n = ::pread(fd, out.data(), out.size(), static_cast<off_t>(offset));
  int err = errno;
  ::close(fd);
  if (n < 0) return Status::FromErrno(what, err);
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<size_t> TaskLog::Trim(int64_t before) {
  std::vector<std::string> ids;
  {
    MutexLock lock(&mu_);
    Stmt st(db_, "SELECT id FROM tasks WHERE state != 'running' AND end < ?");
    st.Int(1, before);
    while (true) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      ids.push_back(st.ColText(0));
    }
    Stmt del(db_, "DELETE FROM tasks WHERE state != 'running' AND end < ?");
    del.Int(1, before);
    CAIRN_RETURN_IF_ERROR(del.Run());
  }
  for (const auto& id : ids) {
    if (ValidTaskId(id)) ::unlink(LogPath(id).c_str());
  }
  return ids.size();
}

}  // namespace cairn::server
