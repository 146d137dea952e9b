#include "client/live_restore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "client/qmp_client.h"
#include "storage/env.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr const char* kJobId = "cairn-live-restore";
constexpr const char* kTargetNode = "cairn-live-target";
constexpr auto kPollInterval = std::chrono::milliseconds(200);

// The disk node to mirror: `wanted`, or the only node whose backing file
// is an NBD URI (the overlay over the export). Sets *size.
Result<std::string> FindNode(QmpClient& qmp, const std::string& wanted, uint64_t* size) {
  CAIRN_ASSIGN_OR_RETURN(json nodes, qmp.Execute("query-named-block-nodes", {{"flat", true}}));
  std::vector<std::string> candidates;
  for (const json& n : nodes) {
    if (!n.is_object() || !n.contains("node-name") || !n["node-name"].is_string()) continue;
    const std::string name = n["node-name"].get<std::string>();
    const uint64_t vsize = n.contains("image") && n["image"].contains("virtual-size")
                               ? n["image"]["virtual-size"].get<uint64_t>()
                               : 0;
    if (!wanted.empty()) {
      if (name == wanted) {
        *size = vsize;
        return name;
      }
      continue;
    }
    const std::string backing = n.value("backing_file", std::string());
    if (backing.starts_with("nbd") || backing.starts_with("json:{\"driver\": \"nbd\"")) {
      candidates.push_back(name);
      *size = vsize;
    }
  }
  if (!wanted.empty()) return Status::InvalidArgument("the VM has no block node " + wanted);
  if (candidates.size() != 1) {
    return Status::InvalidArgument(
        std::to_string(candidates.size()) +
        " block nodes of the VM have an NBD backing file; name the disk with --node");
  }
  return candidates[0];
}

// The mirror job's entry in query-block-jobs, or null when it is gone.
Result<json> QueryJob(QmpClient& qmp) {
  CAIRN_ASSIGN_OR_RETURN(json jobs, qmp.Execute("query-block-jobs"));
  for (const json& j : jobs) {
    if (j.is_object() && j.value("device", std::string()) == kJobId) return j;
  }
  return json();
}

// The error a BLOCK_JOB_COMPLETED/ERROR event of our job carries, if any
// arrived; "" when none.
std::string JobEventError(QmpClient& qmp, bool* completed) {
  std::string error;
  for (const json& e : qmp.TakeEvents()) {
    const std::string name = e.value("event", std::string());
    const json data = e.value("data", json::object());
    if (data.value("device", std::string()) != kJobId) continue;
    if (name == "BLOCK_JOB_COMPLETED") {
      *completed = true;
      if (data.contains("error")) error = data["error"].dump();
    } else if (name == "BLOCK_JOB_ERROR") {
      error = "I/O error in the mirror job (" + data.value("operation", std::string("?")) + ")";
    }
  }
  return error;
}

// Undoes steps 2–3: cancels the job (if it runs), removes the node and file.
void Undo(QmpClient& qmp, const std::string& temp, bool node_added) {
  auto job = QueryJob(qmp);
  if (job.ok() && !job->is_null()) {
    (void)qmp.Execute("block-job-cancel", {{"device", kJobId}, {"force", true}});
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      auto j = QueryJob(qmp);
      if (!j.ok() || j->is_null()) break;
      std::this_thread::sleep_for(kPollInterval);
    }
  }
  if (node_added) (void)qmp.Execute("blockdev-del", {{"node-name", kTargetNode}});
  ::unlink(temp.c_str());
}

// Steps 3–5: mirror until ready, then complete.
Status Mirror(QmpClient& qmp, const LiveRestoreOptions& options, const std::string& node) {
  json args = {{"job-id", kJobId},  {"device", node},
               {"target", kTargetNode}, {"sync", "full"},
               {"copy-mode", "background"}};
  if (options.speed > 0) {
    args["speed"] = options.speed;
    // QEMU limits the rate only between requests: with the default 16 MiB
    // in flight a slow limit would be overshot by a burst at the start.
    const uint64_t quarter = options.speed / 4 / (64 * 1024) * (64 * 1024);
    args["buf-size"] = std::clamp<uint64_t>(quarter, 64 * 1024, 16u << 20);
  }
  CAIRN_RETURN_IF_ERROR(qmp.Execute("blockdev-mirror", args).status());
  const auto deadline = Clock::now() + options.timeout;
  for (;;) {
    if (Clock::now() > deadline) return Status::IOError("live restore timed out");
    CAIRN_ASSIGN_OR_RETURN(json job, QueryJob(qmp));
    bool completed = false;
    std::string error = JobEventError(qmp, &completed);
    if (!error.empty()) return Status::IOError("mirror job failed: " + error);
    if (job.is_null() || completed) {
      return Status::IOError("the mirror job ended before it was ready");
    }
    if (options.progress) {
      options.progress(job.value("offset", uint64_t{0}), job.value("len", uint64_t{0}));
    }
    if (job.value("ready", false)) break;
    std::this_thread::sleep_for(kPollInterval);
  }
  // Ready: the bulk is copied and guest writes are tracked; complete copies
  // what is still dirty with the guest's I/O drained, then switches over.
  CAIRN_RETURN_IF_ERROR(qmp.Execute("block-job-complete", {{"device", kJobId}}).status());
  for (;;) {
    if (Clock::now() > deadline) return Status::IOError("live restore timed out at the switch");
    bool completed = false;
    std::string error = JobEventError(qmp, &completed);
    if (!error.empty()) return Status::IOError("mirror job failed at the switch: " + error);
    if (completed) return Status::OK();
    CAIRN_ASSIGN_OR_RETURN(json job, QueryJob(qmp));
    if (job.is_null()) {
      // Gone without our seeing the event (it was taken by an earlier poll
      // in the same read): the event decides, so look once more.
      error = JobEventError(qmp, &completed);
      if (!error.empty()) return Status::IOError("mirror job failed at the switch: " + error);
      return Status::OK();
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace

Result<LiveRestoreResult> LiveRestore(const LiveRestoreOptions& options) {
  const auto start = Clock::now();
  if (options.target.empty()) return Status::InvalidArgument("no target given");
  struct stat st;
  if (::stat(options.target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(options.target +
                                   " exists and is not a regular file (live restore writes a "
                                   "raw file)");
  }
  QmpClient::Options qo;
  qo.timeout = std::chrono::seconds(60);
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp,
                         QmpClient::Connect(options.qmp_socket, qo));
  LiveRestoreResult result;
  uint64_t size = 0;
  CAIRN_ASSIGN_OR_RETURN(result.node, FindNode(*qmp, options.node, &size));
  if (size == 0) return Status::InvalidArgument("node " + result.node + " reports no size");
  if (options.expected_size != 0 && size != options.expected_size &&
      size != (options.expected_size + 511) / 512 * 512) {
    return Status::InvalidArgument("node " + result.node + " holds " + std::to_string(size) +
                                   " bytes, the archive " +
                                   std::to_string(options.expected_size));
  }
  result.size = size;
  result.target_node = kTargetNode;

  const std::string temp = options.target + ".cairn-live." + std::to_string(::getpid());
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IOError("create " + temp + ": " + std::strerror(errno));
  const bool sized = ::ftruncate(fd, static_cast<off_t>(size)) == 0;
  const int err = errno;
  ::close(fd);
  if (!sized) {
    ::unlink(temp.c_str());
    return Status::IOError("truncate " + temp + ": " + std::strerror(err));
  }
  Status added = qmp->Execute("blockdev-add", {{"driver", "raw"},
                                               {"node-name", kTargetNode},
                                               {"file", {{"driver", "file"}, {"filename", temp}}}})
                     .status();
  if (!added.ok()) {
    Undo(*qmp, temp, false);
    return added.WithContext("add the target");
  }
  (void)qmp->TakeEvents();  // only the job's events from here on
  if (Status s = Mirror(*qmp, options, result.node); !s.ok()) {
    Undo(*qmp, temp, true);
    return s.WithContext("live restore (the VM stays on the export, " + options.target +
                         " untouched)");
  }
  // The VM runs on the new file now; what follows only tidies up.
  if (::rename(temp.c_str(), options.target.c_str()) != 0) {
    return Status::IOError("the VM runs on " + temp + " but renaming it to " + options.target +
                           " failed: " + std::strerror(errno));
  }
  Status synced = storage::Env::Default()->SyncDir(storage::DirName(options.target));
  if (!synced.ok()) result.notes.push_back("fsync of the folder: " + synced.message());
  Status del = qmp->Execute("blockdev-del", {{"node-name", result.node}}).status();
  if (!del.ok()) {
    result.notes.push_back("the old node " + result.node +
                           " stays open (close it, then stop `cairn map`): " + del.message());
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (options.progress) options.progress(size, size);
  return result;
}

}  // namespace cairn::client
