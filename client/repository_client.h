#pragma once

// The typed client of a cairn-server repository: one method per API call the
// command line (and any other tool) needs, each returning checked, typed
// values. Endpoints and their JSON: server/API.md.
//
// Every answer is checked field by field before it is used: a body that is
// not JSON, is nested deeper than 64 levels, lacks a field or has one of the
// wrong type is Corruption("server answer: …") — never an exception. HTTP
// errors keep the codes HttpResponse::ToStatus gives them (InvalidArgument
// for 400, NotFound for 404, …); transport failures are IOError. Every URL is built here, with each
// path segment and query value percent-encoded.
//
// The Parse* functions are the answer checks on their own (no transport), so
// that they can be tested with hand-made answers.
//
// Maintenance (prune, gc, verify) runs as server tasks: the POST answers
// 202 {"task": ID}, and the task's JSON carries the structured result once
// it has ended (`"result"`, null while it runs). The methods that run one
// wait for the task and check its result.
//
// Thread safety: like ApiClient, one RepositoryClient per thread.
//
// (The name: `Repository` is the connection settings in api_client.h.)

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "storage/gc.h"
#include "storage/prune.h"
#include "storage/status.h"

namespace cairn::client {

// A checked answer: the typed value and the JSON it was read from (what
// `--output json` prints, so the server's keys pass through as they came).
template <typename T>
struct Answer {
  T value;
  nlohmann::json json;
};

struct DatastoreUsage {
  uint64_t total = 0;  // bytes of the filesystem
  uint64_t used = 0;
  uint64_t avail = 0;
};

struct DatastoreInfo {
  std::string name;
  std::optional<DatastoreUsage> usage;  // absent when the server could not stat it
};

struct GroupInfo {
  std::string group;  // "vm/100" or "ns:vm/100"
  std::string ns;
  std::string type;
  std::string id;
  std::optional<std::string> owner;  // null when the owner file is unreadable
  uint64_t snapshots = 0;
  std::optional<int64_t> last;  // newest snapshot's time; none without snapshots
};

struct ArchiveInfo {
  std::string name;
  uint64_t size = 0;
  std::string csum;  // hex
};

struct SnapshotVerifyState {
  std::string state;  // "ok" or "failed"
  int64_t time = 0;
  std::string task;  // may be empty
};

struct SnapshotInfo {
  std::string snapshot;  // "vm/100/2026-11-21T17:50:38Z"
  // Non-empty when the server could not read the manifest; then only
  // `snapshot` is set.
  std::string error;

  std::string ns;
  std::string type;
  std::string id;
  int64_t time = 0;
  std::string time_text;
  uint64_t size = 0;
  std::vector<ArchiveInfo> archives;
  bool is_protected = false;
  std::string notes;
  std::optional<SnapshotVerifyState> verify;  // none before the first verification
  std::optional<std::string> owner;
  nlohmann::json client;  // the client info the backup stored (free-form)
  // Made with client-side encryption, by the key of this fingerprint
  // (servers before encryption send neither field: plain).
  bool encrypted = false;
  std::optional<std::string> fingerprint;
};

enum class TaskState { kRunning, kOk, kWarnings, kFailed };
// "running", "ok", "warnings", "failed".
const char* TaskStateName(TaskState state);

struct TaskInfo {
  std::string id;
  std::string kind;  // "verify", "prune", "gc", …
  std::string store;
  std::string auth_id;
  int64_t start = 0;
  std::optional<int64_t> end;  // none while running
  TaskState state = TaskState::kRunning;
  std::string summary;
  // The task's structured result: null while it runs, or when it produced
  // none (a failure before it had one; a server without results).
  nlohmann::json result;
};

// The Status a failed task ended with, read back from its summary (the
// server writes Status::ToString(), "NotFound: no group vm/9"): the code it
// names, or IOError, with a message naming the task.
Status TaskFailure(const TaskInfo& task);

// One snapshot in a prune report.
struct PruneEntry {
  std::string snapshot;
  int64_t time = 0;
  bool keep = false;
  std::string reason;  // "keep-last" … "keep-yearly", "protected", "keep-all", "in use", "remove"
  bool is_protected = false;
  bool removed = false;
  std::string error;  // why a removal failed; empty otherwise
};

// What a prune did (or would do, in a dry run).
struct PruneReport {
  std::string group;
  std::string options;  // "--keep-last 1 --keep-daily 7"
  std::string time_zone;
  bool dry_run = false;
  uint64_t kept = 0;
  uint64_t removed = 0;
  uint64_t failed = 0;
  std::vector<PruneEntry> snapshots;  // newest first
};

struct VerifyFailureInfo {
  std::string snapshot;
  std::vector<std::string> reasons;
  bool state_written = false;
};

struct BadChunkInfo {
  std::string digest;
  std::string kind;
  std::string problem;
  std::string renamed_to;
  std::vector<std::string> used_by;  // snapshots
};

// A verification's counts and findings (storage::VerifyResult's JSON).
struct VerifyReport {
  uint64_t snapshots_checked = 0;
  uint64_t snapshots_ok = 0;
  uint64_t snapshots_failed = 0;
  uint64_t snapshots_skipped = 0;
  uint64_t snapshots_vanished = 0;
  uint64_t chunks_checked = 0;
  uint64_t chunks_bad = 0;
  uint64_t chunks_corrupt = 0;
  uint64_t chunks_missing = 0;
  uint64_t chunks_unreadable = 0;
  uint64_t chunks_renamed = 0;
  uint64_t bytes_read = 0;
  uint64_t decoded_bytes = 0;
  uint64_t logical_bytes = 0;
  int64_t duration_ms = 0;
  bool cancelled = false;
  std::vector<VerifyFailureInfo> failed;
  std::vector<BadChunkInfo> bad_chunks;
  std::vector<std::string> warnings;
};

struct VerifyRequest {
  std::string target;  // "vm/1/TIME", "vm/1", or "" for the whole datastore
  bool ignore_verified = false;
  std::optional<uint64_t> outdated_after_days;
};

// A maintenance task that has ended, and its result when it produced one.
// `result` is set exactly when task.result is not null (task.result holds
// its JSON). A task that ended ok or with warnings always has one (else the
// method that waited for it answers Corruption); a failed task may not.
template <typename T>
struct TaskRun {
  TaskInfo task;
  std::optional<T> result;
};

// Receives a task's log one line at a time, without its '\n'.
using LogLineFn = std::function<void(std::string_view line)>;

// --- Answer checks (Corruption "server answer: …" on any mismatch) ---
Result<std::vector<DatastoreInfo>> ParseDatastores(const nlohmann::json& j);
Result<std::vector<GroupInfo>> ParseGroups(const nlohmann::json& j);
Result<SnapshotInfo> ParseSnapshotInfo(const nlohmann::json& j);
Result<std::vector<SnapshotInfo>> ParseSnapshots(const nlohmann::json& j);
Result<TaskInfo> ParseTaskInfo(const nlohmann::json& j);
Result<std::vector<TaskInfo>> ParseTasks(const nlohmann::json& j);
// {"task": ID} of a started task.
Result<std::string> ParseTaskStarted(const nlohmann::json& j);
Result<PruneReport> ParsePruneReport(const nlohmann::json& j);
Result<storage::GcResult> ParseGcResult(const nlohmann::json& j);
Result<VerifyReport> ParseVerifyReport(const nlohmann::json& j);
// The bytes of an answer as JSON: Corruption when they are not JSON or are
// nested deeper than 64 levels.
Result<nlohmann::json> ParseAnswerBody(std::string_view body);

class RepositoryClient {
 public:
  // Talks to `repo`'s server and datastore (repo.store).
  explicit RepositoryClient(const Repository& repo);

  const Repository& repo() const { return api_.repo(); }

  Result<Answer<std::vector<DatastoreInfo>>> ListDatastores();
  Result<Answer<std::vector<GroupInfo>>> ListGroups();
  // Every snapshot the caller may see, or those of one group ("vm/100").
  Result<Answer<std::vector<SnapshotInfo>>> ListSnapshots(
      const std::optional<std::string>& group = std::nullopt);
  Status DeleteSnapshot(const std::string& snapshot);
  Result<SnapshotInfo> SetProtected(const std::string& snapshot, bool is_protected);
  Result<SnapshotInfo> SetNotes(const std::string& snapshot, const std::string& notes);

  // Each starts a task and returns its id.
  Result<std::string> StartPrune(const std::string& group, const storage::PruneOptions& options,
                                 bool dry_run);
  Result<std::string> StartGc(bool dry_run);
  Result<std::string> StartVerify(const VerifyRequest& request);

  // Start the task and wait for it (WaitTask); `on_log_line` as there.
  Result<TaskRun<PruneReport>> Prune(const std::string& group, const storage::PruneOptions& options,
                                     bool dry_run);
  Result<TaskRun<storage::GcResult>> Gc(bool dry_run);
  Result<TaskRun<VerifyReport>> Verify(const VerifyRequest& request,
                                       const LogLineFn& on_log_line = nullptr);
  // Wait for a task that StartPrune/StartGc/StartVerify started and check its result.
  Result<TaskRun<PruneReport>> WaitPrune(const std::string& task_id);
  Result<TaskRun<storage::GcResult>> WaitGc(const std::string& task_id);
  Result<TaskRun<VerifyReport>> WaitVerify(const std::string& task_id,
                                           const LogLineFn& on_log_line = nullptr);

  // The last GC result kept for the datastore; NotFound before the first GC.
  Result<Answer<storage::GcResult>> GcStatus();

  // The newest `limit` tasks the caller may see, newest first.
  Result<Answer<std::vector<TaskInfo>>> ListTasks(int limit = 100);
  Result<TaskInfo> GetTask(const std::string& id);
  // The log from byte `offset` (at most 1 MiB; empty at or past its end).
  Result<std::string> ReadTaskLog(const std::string& id, uint64_t offset);
  // Polls the task every `poll_interval()` until it is no longer running
  // and returns its final info (with its result). With `on_log_line`,
  // streams its whole log to it from the start, the last line included.
  Result<TaskInfo> WaitTask(const std::string& id, const LogLineFn& on_log_line = nullptr);
  // The log as it is now, from its start, line by line; does not wait.
  Status ReadWholeTaskLog(const std::string& id, const LogLineFn& on_log_line);

  std::chrono::milliseconds poll_interval() const { return poll_interval_; }
  void set_poll_interval(std::chrono::milliseconds interval) { poll_interval_ = interval; }

 private:
  Result<nlohmann::json> Call(Result<HttpResponse> response);
  template <typename T, typename Parse>
  Result<TaskRun<T>> FinishedRun(const TaskInfo& task, Parse parse);

  ApiClient api_;
  std::chrono::milliseconds poll_interval_{500};
};

}  // namespace cairn::client
