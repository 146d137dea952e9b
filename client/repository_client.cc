#include "client/repository_client.h"

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>

#include "storage/json_bounds.h"

namespace cairn::client {
namespace {

using nlohmann::json;

Status Malformed(const std::string& what) { return Status::Corruption("server answer: " + what); }

// Reads the fields of one JSON object and remembers the first problem, so
// that a parser reads every field in a row and checks status() once.
// `where` names the object in messages ("task", "snapshots[3]").
class Fields {
 public:
  Fields(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) Fail("is not a JSON object");
  }

  std::string String(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return "";
    if (!v->is_string()) {
      Wrong(key, "a string");
      return "";
    }
    return v->get<std::string>();
  }
  std::optional<std::string> NullableString(const char* key) {
    const json* v = Find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_string()) {
      Wrong(key, "a string or null");
      return std::nullopt;
    }
    return v->get<std::string>();
  }
  uint64_t Uint(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return 0;
    // Parsed text holds a non-negative number as unsigned; a value built
    // in code may hold it as signed.
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (!v->is_number_integer() || v->get<int64_t>() < 0) {
      Wrong(key, "a whole number >= 0");
      return 0;
    }
    return static_cast<uint64_t>(v->get<int64_t>());
  }
  int64_t Int(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return 0;
    return CheckInt(key, *v);
  }
  std::optional<int64_t> NullableInt(const char* key) {
    const json* v = Find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    return CheckInt(key, *v);
  }
  bool Bool(const char* key) {
    const json* v = Find(key);
    if (v == nullptr) return false;
    if (!v->is_boolean()) {
      Wrong(key, "true or false");
      return false;
    }
    return v->get<bool>();
  }
  std::vector<std::string> Strings(const char* key) {
    std::vector<std::string> out;
    const json* v = Array(key);
    if (v == nullptr) return out;
    for (const json& s : *v) {
      if (!s.is_string()) {
        Wrong(key, "a list of strings");
        return std::vector<std::string>();
      }
      out.push_back(s.get<std::string>());
    }
    return out;
  }
  // REQUIRES (of the caller): the answer outlives the pointer.
  const json* Array(const char* key) {
    const json* v = Find(key);
    if (v != nullptr && !v->is_array()) {
      Wrong(key, "a list");
      return nullptr;
    }
    return v;
  }
  // An object, or null (nullptr) when the field is null.
  const json* NullableObject(const char* key) {
    const json* v = Find(key);
    if (v == nullptr || v->is_null()) return nullptr;
    if (!v->is_object()) {
      Wrong(key, "an object or null");
      return nullptr;
    }
    return v;
  }
  // Any JSON value (present, of any type).
  json Any(const char* key) {
    const json* v = Find(key);
    return v == nullptr ? json() : *v;
  }
  // Whether the object has `key` (any type, null included).
  bool Has(const char* key) const { return j_.is_object() && j_.contains(key); }

  // Records a problem found by the caller.
  void Fail(const std::string& what) {
    if (status_.ok()) status_ = Malformed(where_ + " " + what);
  }
  // Takes the problem of a nested object's reader; true when it had none.
  bool Take(const Fields& inner) {
    if (status_.ok()) status_ = inner.status_;
    return inner.status_.ok();
  }
  const std::string& where() const { return where_; }
  Status status() const { return status_; }

 private:
  const json* Find(const char* key) {
    if (!status_.ok()) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end()) {
      Fail(std::string("lacks \"") + key + "\"");
      return nullptr;
    }
    return &*it;
  }
  void Wrong(const char* key, const char* expected) {
    Fail(std::string("has \"") + key + "\" that is not " + expected);
  }
  int64_t CheckInt(const char* key, const json& v) {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        {
          Wrong(key, "a whole number that fits 64 bits");
          return 0;
        }
      }
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (!v.is_number_integer()) {
      Wrong(key, "a whole number");
      return 0;
    }
    return v.get<int64_t>();
  }

  const json& j_;
  std::string where_;
  Status status_;
};

// Checks that `j` is an array and parses each element with `parse`.
template <typename T, typename Parse>
Result<std::vector<T>> ParseList(const json& j, const std::string& what, Parse parse) {
  if (!j.is_array()) return Malformed(what + " is not a list");
  std::vector<T> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    Fields f(j[i], what + "[" + std::to_string(i) + "]");
    T value = parse(f);
    CAIRN_RETURN_IF_ERROR(f.status());
    out.push_back(std::move(value));
  }
  return out;
}

DatastoreInfo ReadDatastore(Fields& f) {
  DatastoreInfo d;
  d.name = f.String("name");
  // The server leaves "usage" out when it cannot stat the datastore.
  if (f.Has("usage")) {
    if (const json* u = f.NullableObject("usage")) {
      Fields uf(*u, f.where() + " usage");
      d.usage = DatastoreUsage{uf.Uint("total"), uf.Uint("used"), uf.Uint("avail")};
      f.Take(uf);
    }
  }
  return d;
}

GroupInfo ReadGroup(Fields& f) {
  GroupInfo g;
  g.group = f.String("group");
  g.ns = f.String("ns");
  g.type = f.String("type");
  g.id = f.String("id");
  g.owner = f.NullableString("owner");
  g.snapshots = f.Uint("snapshots");
  g.last = f.NullableInt("last");
  return g;
}

SnapshotInfo ReadSnapshot(Fields& f) {
  SnapshotInfo s;
  s.snapshot = f.String("snapshot");
  if (f.Has("error")) {  // a snapshot whose manifest could not be read
    s.error = f.String("error");
    return s;
  }
  s.ns = f.String("ns");
  s.type = f.String("type");
  s.id = f.String("id");
  s.time = f.Int("time");
  s.time_text = f.String("time-text");
  s.size = f.Uint("size");
  if (const json* archives = f.Array("archives")) {
    for (size_t i = 0; i < archives->size(); ++i) {
      Fields af((*archives)[i], f.where() + " archives[" + std::to_string(i) + "]");
      ArchiveInfo a{af.String("name"), af.Uint("size"), af.String("csum")};
      if (!f.Take(af)) return s;
      s.archives.push_back(std::move(a));
    }
  }
  s.is_protected = f.Bool("protected");
  s.notes = f.String("notes");
  if (const json* v = f.NullableObject("verify")) {
    Fields vf(*v, f.where() + " verify");
    SnapshotVerifyState state{vf.String("state"), vf.Int("time"), vf.String("task")};
    if (!f.Take(vf)) return s;
    s.verify = std::move(state);
  }
  s.owner = f.NullableString("owner");
  s.client = f.Any("client");
  if (f.Has("encrypted")) {
    s.encrypted = f.Bool("encrypted");
    s.fingerprint = f.NullableString("fingerprint");
  }
  return s;
}

Result<TaskState> ParseTaskState(const std::string& name) {
  for (TaskState s :
       {TaskState::kRunning, TaskState::kOk, TaskState::kWarnings, TaskState::kFailed}) {
    if (name == TaskStateName(s)) return s;
  }
  return Malformed("unknown task state \"" + name.substr(0, 32) + "\"");
}

TaskInfo ReadTask(Fields& f) {
  TaskInfo t;
  t.id = f.String("id");
  t.kind = f.String("kind");
  t.store = f.String("store");
  t.auth_id = f.String("auth-id");
  t.start = f.Int("start");
  t.end = f.NullableInt("end");
  std::string state = f.String("state");
  t.summary = f.String("summary");
  // Servers before task results do not send "result": none.
  if (f.Has("result")) t.result = f.Any("result");
  if (!f.status().ok()) return t;
  auto parsed = ParseTaskState(state);
  if (!parsed.ok()) {
    f.Fail("has an unknown \"state\"");
    return t;
  }
  t.state = *parsed;
  if (t.state == TaskState::kRunning && !t.result.is_null()) f.Fail("is running but has a result");
  return t;
}

PruneReport ReadPruneReport(Fields& f) {
  PruneReport r;
  r.group = f.String("group");
  r.options = f.String("options");
  r.time_zone = f.String("time-zone");
  r.dry_run = f.Bool("dry-run");
  r.kept = f.Uint("kept");
  r.removed = f.Uint("removed");
  r.failed = f.Uint("failed");
  if (const json* snaps = f.Array("snapshots")) {
    for (size_t i = 0; i < snaps->size(); ++i) {
      Fields sf((*snaps)[i], f.where() + " snapshots[" + std::to_string(i) + "]");
      PruneEntry e;
      e.snapshot = sf.String("snapshot");
      e.time = sf.Int("time");
      e.keep = sf.Bool("keep");
      e.reason = sf.String("reason");
      e.is_protected = sf.Bool("protected");
      e.removed = sf.Bool("removed");
      if (sf.Has("error")) e.error = sf.String("error");
      if (!f.Take(sf)) return r;
      r.snapshots.push_back(std::move(e));
    }
  }
  return r;
}

VerifyReport ReadVerifyReport(Fields& f) {
  VerifyReport r;
  r.snapshots_checked = f.Uint("snapshots-checked");
  r.snapshots_ok = f.Uint("snapshots-ok");
  r.snapshots_failed = f.Uint("snapshots-failed");
  r.snapshots_skipped = f.Uint("snapshots-skipped");
  r.snapshots_vanished = f.Uint("snapshots-vanished");
  r.chunks_checked = f.Uint("chunks-checked");
  r.chunks_bad = f.Uint("chunks-bad");
  r.chunks_corrupt = f.Uint("chunks-corrupt");
  r.chunks_missing = f.Uint("chunks-missing");
  r.chunks_unreadable = f.Uint("chunks-unreadable");
  r.chunks_renamed = f.Uint("chunks-renamed");
  r.bytes_read = f.Uint("bytes-read");
  r.decoded_bytes = f.Uint("decoded-bytes");
  r.logical_bytes = f.Uint("logical-bytes");
  r.duration_ms = f.Int("duration-ms");
  r.cancelled = f.Bool("cancelled");
  if (const json* failed = f.Array("failed")) {
    for (size_t i = 0; i < failed->size(); ++i) {
      Fields ff((*failed)[i], f.where() + " failed[" + std::to_string(i) + "]");
      VerifyFailureInfo v{ff.String("snapshot"), ff.Strings("reasons"), ff.Bool("state-written")};
      if (!f.Take(ff)) return r;
      r.failed.push_back(std::move(v));
    }
  }
  if (const json* bad = f.Array("bad-chunks")) {
    for (size_t i = 0; i < bad->size(); ++i) {
      Fields bf((*bad)[i], f.where() + " bad-chunks[" + std::to_string(i) + "]");
      BadChunkInfo c{bf.String("digest"), bf.String("kind"), bf.String("problem"),
                     bf.String("renamed-to"), bf.Strings("used-by")};
      if (!f.Take(bf)) return r;
      r.bad_chunks.push_back(std::move(c));
    }
  }
  r.warnings = f.Strings("warnings");
  return r;
}

// Parses one object with `read`.
template <typename T, typename Read>
Result<T> ParseObject(const json& j, const char* what, Read read) {
  Fields f(j, what);
  T value = read(f);
  CAIRN_RETURN_IF_ERROR(f.status());
  return value;
}

// Hands each complete line of the log to `on_line`; keeps a partial last
// line in `pending` until its end comes.
void SplitLines(std::string_view text, std::string* pending, const LogLineFn& on_line) {
  size_t start = 0;
  while (true) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) break;
    if (pending->empty()) {
      on_line(text.substr(start, nl - start));
    } else {
      pending->append(text.substr(start, nl - start));
      on_line(*pending);
      pending->clear();
    }
    start = nl + 1;
  }
  pending->append(text.substr(start));
}

// Paths of the API. Every value from outside is percent-encoded here.
std::string StorePath(const Repository& repo, std::string_view suffix) {
  return "/api/v1/datastores/" + ApiClient::Escape(repo.store) + std::string(suffix);
}
std::string SnapshotQuery(const std::string& snapshot) {
  return "?snapshot=" + ApiClient::Escape(snapshot);
}
std::string TaskPath(const std::string& id, std::string_view suffix = "") {
  return "/api/v1/tasks/" + ApiClient::Escape(id) + std::string(suffix);
}

}  // namespace

const char* TaskStateName(TaskState state) {
  switch (state) {
    case TaskState::kRunning:
      return "running";
    case TaskState::kOk:
      return "ok";
    case TaskState::kWarnings:
      return "warnings";
    case TaskState::kFailed:
      return "failed";
  }
  return "?";
}

Status TaskFailure(const TaskInfo& task) {
  using Code = Status::Code;
  const std::string context = task.kind + " task " + task.id + " failed";
  for (Code code : {Code::kNotFound, Code::kCorruption, Code::kIOError, Code::kInvalidArgument,
                    Code::kPermissionDenied, Code::kConflict, Code::kAlreadyExists, Code::kBusy,
                    Code::kUnauthenticated, Code::kTooManyRequests}) {
    const std::string prefix = std::string(Status::CodeName(code)) + ": ";
    if (task.summary.compare(0, prefix.size(), prefix) != 0) continue;
    return Status::FromCode(code, context + ": " + task.summary.substr(prefix.size()));
  }
  return Status::IOError(context + (task.summary.empty() ? "" : ": " + task.summary));
}

Result<std::vector<DatastoreInfo>> ParseDatastores(const json& j) {
  return ParseList<DatastoreInfo>(j, "datastores", ReadDatastore);
}
Result<std::vector<GroupInfo>> ParseGroups(const json& j) {
  return ParseList<GroupInfo>(j, "groups", ReadGroup);
}
Result<SnapshotInfo> ParseSnapshotInfo(const json& j) {
  return ParseObject<SnapshotInfo>(j, "snapshot", ReadSnapshot);
}
Result<std::vector<SnapshotInfo>> ParseSnapshots(const json& j) {
  return ParseList<SnapshotInfo>(j, "snapshots", ReadSnapshot);
}
Result<TaskInfo> ParseTaskInfo(const json& j) { return ParseObject<TaskInfo>(j, "task", ReadTask); }
Result<std::vector<TaskInfo>> ParseTasks(const json& j) {
  return ParseList<TaskInfo>(j, "tasks", ReadTask);
}
Result<std::string> ParseTaskStarted(const json& j) {
  return ParseObject<std::string>(j, "started task", [](Fields& f) {
    std::string id = f.String("task");
    if (f.status().ok() && id.empty()) f.Fail("has an empty \"task\"");
    return id;
  });
}
Result<PruneReport> ParsePruneReport(const json& j) {
  return ParseObject<PruneReport>(j, "prune result", ReadPruneReport);
}
Result<storage::GcResult> ParseGcResult(const json& j) {
  auto r = storage::GcResult::FromJson(j);
  if (!r.ok()) return Malformed(r.status().message());
  return r;
}
Result<VerifyReport> ParseVerifyReport(const json& j) {
  return ParseObject<VerifyReport>(j, "verify result", ReadVerifyReport);
}

Result<json> ParseAnswerBody(std::string_view body) {
  // Bounded in depth (the value is copied and dumped, which recurses), not
  // in size: a long snapshot list is a normal answer.
  auto j = storage::ParseJsonBounded(body, storage::JsonLimits{64, body.size()});
  if (!j.ok()) return Malformed(j.status().message());
  return j;
}

RepositoryClient::RepositoryClient(const Repository& repo) : api_(repo) {}

Result<json> RepositoryClient::Call(Result<HttpResponse> response) {
  if (!response.ok()) return response.status();
  CAIRN_RETURN_IF_ERROR(response->ToStatus());
  return ParseAnswerBody(response->body);
}

Result<Answer<std::vector<DatastoreInfo>>> RepositoryClient::ListDatastores() {
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.Get("/api/v1/datastores")));
  CAIRN_ASSIGN_OR_RETURN(auto value, ParseDatastores(j));
  return Answer<std::vector<DatastoreInfo>>{std::move(value), std::move(j)};
}

Result<Answer<std::vector<GroupInfo>>> RepositoryClient::ListGroups() {
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.Get(StorePath(repo(), "/groups"))));
  CAIRN_ASSIGN_OR_RETURN(auto value, ParseGroups(j));
  return Answer<std::vector<GroupInfo>>{std::move(value), std::move(j)};
}

Result<Answer<std::vector<SnapshotInfo>>> RepositoryClient::ListSnapshots(
    const std::optional<std::string>& group) {
  std::string path = StorePath(repo(), "/snapshots");
  if (group) path += "?group=" + ApiClient::Escape(*group);
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.Get(path)));
  CAIRN_ASSIGN_OR_RETURN(auto value, ParseSnapshots(j));
  return Answer<std::vector<SnapshotInfo>>{std::move(value), std::move(j)};
}

Status RepositoryClient::DeleteSnapshot(const std::string& snapshot) {
  CAIRN_ASSIGN_OR_RETURN(
      json j, Call(api_.Delete(StorePath(repo(), "/snapshots") + SnapshotQuery(snapshot))));
  Fields f(j, "deletion");
  (void)f.String("deleted");
  return f.status();
}

Result<SnapshotInfo> RepositoryClient::SetProtected(const std::string& snapshot,
                                                    bool is_protected) {
  CAIRN_ASSIGN_OR_RETURN(
      json j, Call(api_.Put(StorePath(repo(), "/snapshots/protected") + SnapshotQuery(snapshot),
                            {{"protected", is_protected}})));
  return ParseSnapshotInfo(j);
}

Result<SnapshotInfo> RepositoryClient::SetNotes(const std::string& snapshot,
                                                const std::string& notes) {
  CAIRN_ASSIGN_OR_RETURN(
      json j, Call(api_.Put(StorePath(repo(), "/snapshots/notes") + SnapshotQuery(snapshot),
                            {{"notes", notes}})));
  return ParseSnapshotInfo(j);
}

Result<std::string> RepositoryClient::StartPrune(const std::string& group,
                                                 const storage::PruneOptions& options,
                                                 bool dry_run) {
  json body = {{"group", group}, {"dry-run", dry_run}};
  const std::pair<const char*, const std::optional<uint64_t>*> keep[] = {
      {"keep-last", &options.keep_last},       {"keep-hourly", &options.keep_hourly},
      {"keep-daily", &options.keep_daily},     {"keep-weekly", &options.keep_weekly},
      {"keep-monthly", &options.keep_monthly}, {"keep-yearly", &options.keep_yearly}};
  for (const auto& [key, value] : keep) {
    if (*value) body[key] = **value;
  }
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.PostJson(StorePath(repo(), "/prune"), body)));
  return ParseTaskStarted(j);
}

Result<std::string> RepositoryClient::StartGc(bool dry_run) {
  CAIRN_ASSIGN_OR_RETURN(json j,
                         Call(api_.PostJson(StorePath(repo(), "/gc"), {{"dry-run", dry_run}})));
  return ParseTaskStarted(j);
}

Result<std::string> RepositoryClient::StartVerify(const VerifyRequest& request) {
  json body = {{"target", request.target}, {"ignore-verified", request.ignore_verified}};
  if (request.outdated_after_days) body["outdated-after-days"] = *request.outdated_after_days;
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.PostJson(StorePath(repo(), "/verify"), body)));
  return ParseTaskStarted(j);
}

template <typename T, typename Parse>
Result<TaskRun<T>> RepositoryClient::FinishedRun(const TaskInfo& task, Parse parse) {
  TaskRun<T> run{task, std::nullopt};
  if (task.result.is_null()) {
    if (task.state == TaskState::kFailed) return run;
    return Malformed(task.kind + " task " + task.id + " ended " + TaskStateName(task.state) +
                     " without a result");
  }
  CAIRN_ASSIGN_OR_RETURN(run.result, parse(task.result));
  return run;
}

Result<TaskRun<PruneReport>> RepositoryClient::WaitPrune(const std::string& task_id) {
  CAIRN_ASSIGN_OR_RETURN(TaskInfo task, WaitTask(task_id));
  return FinishedRun<PruneReport>(task, ParsePruneReport);
}

Result<TaskRun<storage::GcResult>> RepositoryClient::WaitGc(const std::string& task_id) {
  CAIRN_ASSIGN_OR_RETURN(TaskInfo task, WaitTask(task_id));
  return FinishedRun<storage::GcResult>(task, ParseGcResult);
}

Result<TaskRun<VerifyReport>> RepositoryClient::WaitVerify(const std::string& task_id,
                                                           const LogLineFn& on_log_line) {
  CAIRN_ASSIGN_OR_RETURN(TaskInfo task, WaitTask(task_id, on_log_line));
  return FinishedRun<VerifyReport>(task, ParseVerifyReport);
}

Result<TaskRun<PruneReport>> RepositoryClient::Prune(const std::string& group,
                                                     const storage::PruneOptions& options,
                                                     bool dry_run) {
  CAIRN_ASSIGN_OR_RETURN(std::string id, StartPrune(group, options, dry_run));
  return WaitPrune(id);
}

Result<TaskRun<storage::GcResult>> RepositoryClient::Gc(bool dry_run) {
  CAIRN_ASSIGN_OR_RETURN(std::string id, StartGc(dry_run));
  return WaitGc(id);
}

Result<TaskRun<VerifyReport>> RepositoryClient::Verify(const VerifyRequest& request,
                                                       const LogLineFn& on_log_line) {
  CAIRN_ASSIGN_OR_RETURN(std::string id, StartVerify(request));
  return WaitVerify(id, on_log_line);
}

Result<Answer<storage::GcResult>> RepositoryClient::GcStatus() {
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.Get(StorePath(repo(), "/gc"))));
  CAIRN_ASSIGN_OR_RETURN(storage::GcResult value, ParseGcResult(j));
  return Answer<storage::GcResult>{value, std::move(j)};
}

Result<Answer<std::vector<TaskInfo>>> RepositoryClient::ListTasks(int limit) {
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.Get("/api/v1/tasks?limit=" + std::to_string(limit))));
  CAIRN_ASSIGN_OR_RETURN(auto value, ParseTasks(j));
  return Answer<std::vector<TaskInfo>>{std::move(value), std::move(j)};
}

Result<TaskInfo> RepositoryClient::GetTask(const std::string& id) {
  CAIRN_ASSIGN_OR_RETURN(json j, Call(api_.Get(TaskPath(id))));
  CAIRN_ASSIGN_OR_RETURN(TaskInfo task, ParseTaskInfo(j));
  if (task.id != id) return Malformed("task " + id + " answered as task " + task.id.substr(0, 64));
  return task;
}

Result<std::string> RepositoryClient::ReadTaskLog(const std::string& id, uint64_t offset) {
  CAIRN_ASSIGN_OR_RETURN(HttpResponse r,
                         api_.Get(TaskPath(id, "/log?offset=" + std::to_string(offset))));
  CAIRN_RETURN_IF_ERROR(r.ToStatus());
  return std::move(r.body);
}

Result<TaskInfo> RepositoryClient::WaitTask(const std::string& id, const LogLineFn& on_log_line) {
  uint64_t offset = 0;
  std::string pending;
  // A task's end is seen within about a tenth of its run time: the gap
  // between polls is a tenth of the time waited so far, at least 50 ms and at
  // most poll_interval_ (with a fixed 500 ms, `cairn verify` of 2 GiB took
  // 1.05 or 1.55 s depending on which side of a poll the server finished;
  // bench/README.md, issue 11).
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    // The state is read before the log: when it says the task has ended,
    // everything the task wrote is in the log that follows.
    CAIRN_ASSIGN_OR_RETURN(TaskInfo task, GetTask(id));
    std::string text;
    if (on_log_line) {
      CAIRN_ASSIGN_OR_RETURN(text, ReadTaskLog(id, offset));
      offset += text.size();
      SplitLines(text, &pending, on_log_line);
    }
    if (text.empty()) {
      if (task.state != TaskState::kRunning) {
        if (!pending.empty()) on_log_line(pending);
        return task;
      }
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      std::this_thread::sleep_for(
          std::clamp(waited / 10, std::min(poll_interval_, std::chrono::milliseconds(50)), poll_interval_));
    }
  }
}

Status RepositoryClient::ReadWholeTaskLog(const std::string& id, const LogLineFn& on_log_line) {
  uint64_t offset = 0;
  std::string pending;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(std::string text, ReadTaskLog(id, offset));
    if (text.empty()) break;
    offset += text.size();
    SplitLines(text, &pending, on_log_line);
  }
  if (!pending.empty()) on_log_line(pending);
  return Status::OK();
}

}  // namespace cairn::client
