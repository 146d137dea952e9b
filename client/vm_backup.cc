#include "client/vm_backup.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "client/guest_agent.h"
#include "client/nbd_sink.h"
#include "storage/digest.h"
#include "storage/names.h"

namespace cairn::client {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kGranularity = storage::kChunkSize;

// Set by SIGINT/SIGTERM while a backup runs: the run stops cleanly (jobs
// cancelled, bitmaps merged back, session aborted).
std::atomic<bool> g_interrupted{false};

extern "C" void OnSignal(int) { g_interrupted.store(true); }

// InterruptScope's bookkeeping: how many scopes are open, and the handlers
// the first one replaced.
std::mutex g_scope_mu;
int g_scopes = 0;
struct sigaction g_old_int = {}, g_old_term = {};

const std::set<std::string>& FormatDrivers() {
  static const std::set<std::string> drivers = {"qcow2", "raw",  "qed",       "vmdk", "vhdx",
                                                "vpc",   "vdi",  "parallels", "luks", "qcow"};
  return drivers;
}

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string out;
  const char* hex = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    unsigned v = rd() & 0xff;
    out += hex[v >> 4];
    out += hex[v & 15];
  }
  return out;
}

BitmapInfo ParseBitmap(const json& b) {
  BitmapInfo info;
  info.name = b.value("name", "");
  info.recording = b.value("recording", false);
  info.busy = b.value("busy", false);
  info.persistent = b.value("persistent", false);
  info.inconsistent = b.value("inconsistent", false);
  info.granularity = b.value("granularity", uint64_t{0});
  info.count = b.value("count", uint64_t{0});
  return info;
}

// The client info the newest snapshot recorded for `archive`, or null.
json RecordedDisk(const json& previous, const std::string& archive) {
  if (!previous.is_object()) return nullptr;
  auto client = previous.find("client");
  if (client == previous.end() || !client->is_object()) return nullptr;
  auto disks = client->find("disks");
  if (disks == client->end() || !disks->is_object()) return nullptr;
  auto d = disks->find(archive);
  if (d == disks->end() || !d->is_object()) return nullptr;
  return *d;
}

std::string RecordedBitmap(const json& previous, const std::string& archive) {
  json d = RecordedDisk(previous, archive);
  if (!d.is_object()) return "";
  auto b = d.find("bitmap");
  return b != d.end() && b->is_string() ? b->get<std::string>() : "";
}

Status RemoveBitmap(QmpClient& qmp, const std::string& node, const std::string& name) {
  return qmp.Execute("block-dirty-bitmap-remove", {{"node", node}, {"name", name}}).status();
}

// Merges `from` into `into`, enables `into`, removes `from` — one
// transaction, so no write is lost from tracking whatever happens.
Status MergeBack(QmpClient& qmp, const std::string& node, const std::string& into,
                 const std::vector<std::string>& from) {
  json actions = json::array();
  if (!from.empty()) {
    actions.push_back({{"type", "block-dirty-bitmap-merge"},
                       {"data", {{"node", node}, {"target", into}, {"bitmaps", from}}}});
  }
  actions.push_back(
      {{"type", "block-dirty-bitmap-enable"}, {"data", {{"node", node}, {"name", into}}}});
  for (const auto& f : from) {
    actions.push_back(
        {{"type", "block-dirty-bitmap-remove"}, {"data", {{"node", node}, {"name", f}}}});
  }
  return qmp.Execute("transaction", {{"actions", actions}}).status();
}

// Cancels Cairn's block jobs left in QEMU and waits until they are gone.
Status CancelStrayJobs(QmpClient& qmp, std::vector<std::string>* actions) {
  CAIRN_ASSIGN_OR_RETURN(json jobs, qmp.Execute("query-jobs"));
  if (!jobs.is_array()) return Status::Corruption("query-jobs: not an array");
  for (const auto& j : jobs) {
    std::string id = j.value("id", "");
    if (!StartsWith(id, kJobPrefix)) continue;
    std::string status = j.value("status", "");
    if (status == "concluded") {
      (void)qmp.Execute("job-dismiss", {{"id", id}});
    } else if (status != "null") {
      (void)qmp.Execute("job-cancel", {{"id", id}});
    }
    actions->push_back("cancelled leftover job " + id + " (" + status + ")");
  }
  // Wait for them to disappear.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(json now, qmp.Execute("query-jobs"));
    bool left = false;
    for (const auto& j : now) {
      std::string id = j.value("id", "");
      if (!StartsWith(id, kJobPrefix)) continue;
      if (j.value("status", "") == "concluded") {
        (void)qmp.Execute("job-dismiss", {{"id", id}});
      }
      left = true;
    }
    if (!left) return Status::OK();
    if (Clock::now() > deadline) return Status::IOError("leftover Cairn jobs did not end in 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Re-reads the bitmaps of `disk` from QEMU.
Status RefreshBitmaps(QmpClient& qmp, DiskInfo* disk) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<DiskInfo> all, ListDisks(qmp, {disk->node}));
  disk->bitmaps = all.at(0).bitmaps;
  return Status::OK();
}


}  // namespace

Result<std::vector<DiskInfo>> ListDisks(QmpClient& qmp, const std::vector<std::string>& only) {
  CAIRN_ASSIGN_OR_RETURN(json nodes, qmp.Execute("query-named-block-nodes", {{"flat", true}}));
  if (!nodes.is_array()) return Status::Corruption("query-named-block-nodes: not an array");
  // Guest devices name the root node of their drive; a node with an
  // auto-generated name ("#block123", from -drive) is called after its device.
  std::map<std::string, std::string> device_of;
  if (auto block = qmp.Execute("query-block"); block.ok() && block->is_array()) {
    for (const auto& b : *block) {
      auto ins = b.find("inserted");
      if (ins == b.end() || !ins->is_object()) continue;
      std::string dev = b.value("device", "");
      if (dev.empty()) dev = b.value("qdev", "");
      device_of[ins->value("node-name", "")] = dev;
    }
  }
  std::vector<DiskInfo> disks;
  std::set<std::string> found;
  for (const auto& n : nodes) {
    if (!n.is_object()) continue;
    DiskInfo d;
    d.node = n.value("node-name", "");
    d.driver = n.value("drv", "");
    if (d.node.empty() || !FormatDrivers().contains(d.driver) || n.value("ro", true)) continue;
    d.filename = n.value("file", "");
    if (auto img = n.find("image"); img != n.end() && img->is_object()) {
      d.size = img->value("virtual-size", uint64_t{0});
    }
    d.device = device_of.contains(d.node) ? device_of[d.node] : "";
    std::string name = d.node;
    if (name[0] == '#') name = d.device;
    if (name.empty()) continue;  // an internal node with no name a user could give
    if (!only.empty() && std::find(only.begin(), only.end(), d.node) == only.end() &&
        std::find(only.begin(), only.end(), d.device) == only.end()) {
      continue;
    }
    d.archive = name + ".fidx";
    if (!storage::ValidateName(storage::NameKind::kArchive, d.archive).ok()) continue;
    if (auto bms = n.find("dirty-bitmaps"); bms != n.end() && bms->is_array()) {
      for (const auto& b : *bms) {
        BitmapInfo info = ParseBitmap(b);
        if (info.name.empty()) continue;  // a job's internal bitmap
        // A libvirt checkpoint's bitmap (client/domain_backup.h) is not ours
        // to merge or remove: libvirt's checkpoint metadata names it.
        if (StartsWith(info.name, kBitmapPrefix) && !StartsWith(info.name, kCheckpointPrefix)) {
          d.bitmaps.push_back(info);
        } else {
          d.others.push_back(info.name);
        }
      }
    }
    found.insert(d.node);
    if (!d.device.empty()) found.insert(d.device);
    disks.push_back(std::move(d));
  }
  std::sort(disks.begin(), disks.end(),
            [](const DiskInfo& a, const DiskInfo& b) { return a.archive < b.archive; });
  for (const auto& o : only) {
    if (!found.contains(o)) {
      return Status::NotFound("no writable disk named '" + o +
                              "' (query-named-block-nodes lists the format nodes)");
    }
  }
  return disks;
}

DiskPlan PlanDisk(const DiskInfo& disk, const json& previous, bool force_full) {
  DiskPlan plan;
  std::vector<const BitmapInfo*> usable;
  for (const auto& b : disk.bitmaps) {
    if (!b.inconsistent) usable.push_back(&b);
  }
  // The bitmap kept for merge-back: the single consistent one.
  if (usable.size() == 1) plan.bitmap = usable[0]->name;
  if (force_full) {
    plan.reason = "--full was given";
    return plan;
  }
  json recorded = RecordedDisk(previous, disk.archive);
  if (usable.empty()) {
    if (!disk.removed_inconsistent.empty()) {
      plan.reason = "bitmap " + disk.removed_inconsistent +
                    " was inconsistent (QEMU ended without saving it) and was removed";
    } else if (recorded.is_object() && !recorded.value("persistent", true)) {
      plan.reason = "no bitmap: the " + disk.driver +
                    " disk's bitmap is transient and is lost when QEMU stops (it restarted "
                    "since the last backup)";
    } else if (recorded.is_object()) {
      plan.reason = "no Cairn bitmap on node " + disk.node + " (it was removed, or QEMU lost it)";
    } else {
      plan.reason = "no bitmap yet: first backup of this disk";
    }
    return plan;
  }
  if (usable.size() > 1) {
    plan.reason = "more than one Cairn bitmap on the node";
    return plan;
  }
  const BitmapInfo& b = *usable[0];
  if (!previous.is_object()) {
    plan.reason = "the server has no usable snapshot of this VM (none yet, or the newest failed verification)";
    return plan;
  }
  const std::string prev = previous.value("snapshot", "");
  if (!recorded.is_object()) {
    plan.reason = "the last snapshot " + prev + " has no archive " + disk.archive;
    return plan;
  }
  if (recorded.value("bitmap", "") != b.name) {
    plan.reason = "bitmap " + b.name + " does not belong to the last snapshot " + prev +
                  " (which recorded " + recorded.value("bitmap", std::string("none")) + ")";
    return plan;
  }
  bool archive_found = false;
  if (auto archives = previous.find("archives"); archives != previous.end() && archives->is_array()) {
    for (const auto& a : *archives) {
      if (a.value("name", "") == disk.archive) {
        archive_found = true;
        if (a.value("size", uint64_t{0}) != disk.size) {
          plan.reason = "the disk's size changed since " + prev;
          return plan;
        }
      }
    }
  }
  if (!archive_found) {
    plan.reason = "the last snapshot " + prev + " has no archive " + disk.archive;
    return plan;
  }
  if (!b.recording) {
    plan.reason = "bitmap " + b.name + " is disabled: it may have missed writes";
    return plan;
  }
  if (b.granularity != kGranularity) {
    plan.reason = "bitmap " + b.name + " has granularity " + std::to_string(b.granularity);
    return plan;
  }
  plan.incremental = true;
  plan.reason = "bitmap " + b.name + " holds every write since " + prev;
  return plan;
}

Status RepairDisks(QmpClient& qmp, std::vector<DiskInfo>* disks, const json& previous,
                   std::vector<std::string>* actions) {
  CAIRN_RETURN_IF_ERROR(CancelStrayJobs(qmp, actions));
  for (auto& d : *disks) {
    CAIRN_RETURN_IF_ERROR(RefreshBitmaps(qmp, &d));
    for (const auto& b : d.bitmaps) {
      if (!b.inconsistent) continue;
      CAIRN_RETURN_IF_ERROR(RemoveBitmap(qmp, d.node, b.name));
      d.removed_inconsistent = b.name;
      actions->push_back("removed inconsistent bitmap " + b.name + " of " + d.node +
                         " (QEMU ended without saving it)");
    }
    std::erase_if(d.bitmaps, [](const BitmapInfo& b) { return b.inconsistent; });
    if (d.bitmaps.size() <= 1) continue;
    // A killed run leaves the old bitmap disabled and the new one recording.
    const std::string recorded = RecordedBitmap(previous, d.archive);
    auto keep = std::find_if(d.bitmaps.begin(), d.bitmaps.end(),
                             [&](const BitmapInfo& b) { return b.name == recorded; });
    std::vector<std::string> rest;
    for (const auto& b : d.bitmaps) {
      if (keep == d.bitmaps.end() || b.name != keep->name) rest.push_back(b.name);
    }
    if (keep == d.bitmaps.end()) {
      for (const auto& r : rest) CAIRN_RETURN_IF_ERROR(RemoveBitmap(qmp, d.node, r));
      actions->push_back("removed " + std::to_string(rest.size()) + " Cairn bitmaps of " +
                         d.node + ": none belongs to the last snapshot");
    } else if (keep->recording) {
      // The commit went through but the old bitmap was not removed.
      for (const auto& r : rest) CAIRN_RETURN_IF_ERROR(RemoveBitmap(qmp, d.node, r));
      actions->push_back("removed stale bitmaps of " + d.node + " left by a run that committed");
    } else {
      CAIRN_RETURN_IF_ERROR(MergeBack(qmp, d.node, keep->name, rest));
      actions->push_back("merged the bitmaps of an interrupted run back into " + keep->name +
                         " on " + d.node);
    }
    CAIRN_RETURN_IF_ERROR(RefreshBitmaps(qmp, &d));
  }
  return Status::OK();
}

Status Cleanup(QmpClient& qmp, std::vector<std::string>* actions) {
  CAIRN_RETURN_IF_ERROR(CancelStrayJobs(qmp, actions));
  CAIRN_ASSIGN_OR_RETURN(std::vector<DiskInfo> disks, ListDisks(qmp, {}));
  for (const auto& d : disks) {
    for (const auto& b : d.bitmaps) {
      CAIRN_RETURN_IF_ERROR(RemoveBitmap(qmp, d.node, b.name));
      actions->push_back("removed bitmap " + b.name + " of " + d.node);
    }
  }
  return Status::OK();
}

namespace {

// One disk of a running backup.
struct DiskRun {
  DiskInfo disk;
  DiskPlan plan;
  std::string new_bitmap;
  std::string job_id;
  ArchiveWriter* writer = nullptr;
  std::unique_ptr<NbdSink> sink;
  uint64_t to_read = 0;  // bytes QEMU will send
  bool job_done = false;
  std::string job_error;
};

class Backup {
 public:
  Backup(const Repository& repo, const VmBackupOptions& options)
      : repo_(repo), options_(options) {}

  Result<json> Run();

 private:
  void Note(const std::string& line) {
    if (options_.note) options_.note(line);
  }
  Status Prepare();
  Status Freeze();
  void Thaw();
  Status StartJobs();
  Status WaitJobs();
  // After a failure: cancel jobs still running, then merge every disk's new
  // bitmap back into its old one.
  void Undo();
  json Progress(bool final) const;
  json DiskSummary(const DiskRun& r) const;

  const Repository& repo_;
  const VmBackupOptions& options_;
  std::unique_ptr<QmpClient> qmp_;
  std::unique_ptr<UploadSession> session_;
  std::unique_ptr<GuestAgent> agent_;
  std::string tmpdir_;
  std::vector<DiskRun> runs_;
  bool jobs_started_ = false;
  bool frozen_ = false;
  std::string consistency_ = "crash";
  std::string crypt_change_;  // CryptChange of the previous snapshot
  Clock::time_point start_ = Clock::now();
};

Status Backup::Prepare() {
  QmpClient::Options qo;
  qo.timeout = std::chrono::seconds(30);
  CAIRN_ASSIGN_OR_RETURN(qmp_, QmpClient::Connect(options_.qmp_socket, qo));
  CAIRN_ASSIGN_OR_RETURN(std::vector<DiskInfo> disks, ListDisks(*qmp_, options_.drives));
  if (disks.empty()) return Status::NotFound("the VM has no writable disk to back up");
  for (auto& d : disks) {
    for (const auto& [node, name] : options_.archive_names) {
      if (node == d.node) d.archive = name + ".fidx";
    }
    if (d.size == 0) return Status::InvalidArgument("disk " + d.node + " has size 0");
  }
  CAIRN_ASSIGN_OR_RETURN(session_, UploadSession::Start(repo_, "vm/" + options_.id,
                                                        options_.backup_time, options_.upload));
  const json& previous = session_->start_info()["previous"];
  std::vector<std::string> actions;
  CAIRN_RETURN_IF_ERROR(RepairDisks(*qmp_, &disks, previous, &actions));
  for (const auto& a : actions) Note(a);
  const std::string snapshot_time = std::to_string(session_->start_info().value("time", int64_t{0}));
  crypt_change_ = CryptChange(previous, options_.upload.crypt.get());
  for (auto& d : disks) {
    DiskRun r;
    r.plan = PlanDisk(d, previous, options_.full);
    if (!crypt_change_.empty()) {
      // The previous snapshot's digests are another key's (DESIGN.md §4:
      // a full read). plan.bitmap stays: the full-read path keeps the
      // bitmap invariant like any other.
      r.plan.reason = options_.full ? r.plan.reason + "; " + crypt_change_ : crypt_change_;
      r.plan.incremental = false;
    }
    r.new_bitmap = std::string(kBitmapPrefix) + snapshot_time + "-" + RandomHex(4);
    r.job_id = std::string(kJobPrefix) + RandomHex(4) + "-" + d.node;
    if (r.job_id.find('#') != std::string::npos) r.job_id = std::string(kJobPrefix) + RandomHex(8);
    r.disk = std::move(d);
    runs_.push_back(std::move(r));
  }
  char tmpl[] = "/tmp/cairn-backup-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return Status::FromErrno("mkdtemp", errno);
  tmpdir_ = tmpl;
  for (size_t i = 0; i < runs_.size(); ++i) {
    DiskRun& r = runs_[i];
    CAIRN_ASSIGN_OR_RETURN(r.writer, session_->OpenArchive(r.disk.archive, r.disk.size,
                                                           r.plan.incremental));
    NbdSinkOptions so;
    so.socket_path = tmpdir_ + "/nbd" + std::to_string(i) + ".sock";
    so.export_size = r.disk.size;
    so.max_write_bytes = 32u << 20;
    CAIRN_ASSIGN_OR_RETURN(r.sink, NbdSink::Start(so, r.writer));
    if (r.plan.incremental) {
      for (const auto& b : r.disk.bitmaps) {
        if (b.name == r.plan.bitmap) r.to_read = std::min<uint64_t>(b.count, r.disk.size);
      }
    } else {
      r.to_read = r.disk.size;
    }
  }
  return Status::OK();
}

Status Backup::Freeze() {
  if (options_.guest_agent.empty()) return Status::OK();
  auto agent = GuestAgent::Connect(options_.guest_agent, options_.agent_timeout);
  Status s = agent.status();
  if (s.ok()) {
    agent_ = std::move(agent).value();
    // A guest left frozen by a killed run is thawed first.
    auto st = agent_->FreezeStatus(options_.agent_timeout);
    if (st.ok() && *st == "frozen") {
      Note("guest was frozen (left by an earlier run?): thawing it first");
      (void)agent_->Thaw(options_.agent_timeout);
    }
    auto n = agent_->Freeze(options_.agent_timeout);
    frozen_ = true;  // thaw whatever happened: a timed-out freeze may still complete
    s = n.status();
    if (s.ok()) consistency_ = "application";
  }
  if (!s.ok()) {
    Thaw();
    if (options_.require_freeze) {
      return Status::IOError("guest agent: could not freeze the guest's file systems: " +
                             s.message());
    }
    Note("guest agent: freeze failed (" + s.message() + "); the backup is crash-consistent");
  }
  return Status::OK();
}

void Backup::Thaw() {
  if (!frozen_) return;
  frozen_ = false;
  Status s = Status::OK();
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!agent_) {
      auto a = GuestAgent::Connect(options_.guest_agent, options_.agent_timeout);
      if (!a.ok()) {
        s = a.status();
        continue;
      }
      agent_ = std::move(a).value();
    }
    auto t = agent_->Thaw(options_.agent_timeout);
    if (t.ok()) return;
    s = t.status();
    agent_.reset();  // unusable after a timeout: reconnect
  }
  Note("guest agent: THAW FAILED (" + s.message() + "); the guest may still be frozen");
}

Status Backup::StartJobs() {
  json actions = json::array();
  for (const auto& r : runs_) {
    actions.push_back({{"type", "block-dirty-bitmap-add"},
                       {"data",
                        {{"node", r.disk.node},
                         {"name", r.new_bitmap},
                         {"persistent", r.disk.persistent_bitmaps()},
                         {"granularity", kGranularity}}}});
    if (!r.plan.bitmap.empty()) {
      actions.push_back({{"type", "block-dirty-bitmap-disable"},
                         {"data", {{"node", r.disk.node}, {"name", r.plan.bitmap}}}});
    }
    json backup = {{"job-id", r.job_id},
                   {"device", r.disk.node},
                   {"target", r.sink->Uri()},
                   {"mode", "existing"},
                   {"format", "raw"}};
    if (r.plan.incremental) {
      backup["sync"] = "bitmap";
      backup["bitmap"] = r.plan.bitmap;
      backup["bitmap-mode"] = "never";
    } else {
      backup["sync"] = "full";
    }
    actions.push_back({{"type", "drive-backup"}, {"data", backup}});
  }
  Status s = qmp_->Execute("transaction", {{"actions", actions}}).status();
  // The point in time is taken: thaw at once, whatever the answer.
  Thaw();
  if (!s.ok()) return s;
  jobs_started_ = true;
  return Status::OK();
}

json Backup::Progress(bool final) const {
  const auto& st = session_->stats();
  uint64_t total = 0;
  for (const auto& r : runs_) total += r.to_read;
  double secs = std::chrono::duration<double>(Clock::now() - start_).count();
  uint64_t read = st.bytes_received.load();
  double rate = secs > 0 ? static_cast<double>(read) / secs : 0;
  json p = {{"bytes-total", total},
            {"bytes-read", read},
            {"chunks-dirty", st.chunks_dirty.load()},
            {"chunks-uploaded", st.chunks_uploaded.load()},
            {"bytes-uploaded", st.bytes_uploaded.load()},
            {"seconds", secs},
            {"bytes-per-s", rate},
            {"final", final}};
  if (rate > 0 && total > read) p["eta-seconds"] = static_cast<double>(total - read) / rate;
  return p;
}

Status Backup::WaitJobs() {
  auto last_progress = Clock::now();
  for (;;) {
    bool all = true;
    for (const auto& r : runs_) all = all && r.job_done;
    if (all) break;
    if (g_interrupted.load()) return Status::IOError("interrupted by a signal");
    auto ev = qmp_->WaitEvent(
        "BLOCK_JOB_COMPLETED",
        [&](const json& e) {
          std::string dev = e.value("data", json::object()).value("device", "");
          return std::any_of(runs_.begin(), runs_.end(),
                             [&](const DiskRun& r) { return r.job_id == dev; });
        },
        std::chrono::milliseconds(250));
    if (!ev.ok() && !qmp_->status().ok()) {
      return Status::IOError("lost the QMP connection to QEMU: " + qmp_->status().message());
    }
    // One read may bring the ends of several jobs: look at every queued
    // event, not just the one waited for. A job cancelled by someone else
    // ends with BLOCK_JOB_CANCELLED.
    std::vector<json> events;
    if (ev.ok()) events.push_back(std::move(ev).value());
    for (auto& e : qmp_->TakeEvents()) events.push_back(std::move(e));
    for (const auto& e : events) {
      const std::string name = e.value("event", "");
      if (name != "BLOCK_JOB_COMPLETED" && name != "BLOCK_JOB_CANCELLED") continue;
      const json data = e.value("data", json::object());
      for (auto& r : runs_) {
        if (r.job_id != data.value("device", "")) continue;
        r.job_done = true;
        if (name == "BLOCK_JOB_CANCELLED") {
          r.job_error = "the job was cancelled";
        } else if (data.contains("error")) {
          r.job_error = data.value("error", "error");
        }
      }
    }
    if (options_.progress && Clock::now() - last_progress > std::chrono::milliseconds(250)) {
      options_.progress(Progress(false));
      last_progress = Clock::now();
    }
  }
  Status upload = session_->error();
  for (const auto& r : runs_) {
    if (!r.job_error.empty()) {
      std::string msg = "QEMU's backup job for " + r.disk.node + " failed: " + r.job_error;
      if (!upload.ok()) msg += " (the cause: " + upload.message() + ")";
      return Status::IOError(msg);
    }
  }
  return upload;
}

void Backup::Undo() {
  if (!qmp_ || !qmp_->status().ok()) return;
  if (jobs_started_) {
    for (auto& r : runs_) {
      if (!r.job_done) (void)qmp_->Execute("job-cancel", {{"id", r.job_id}});
    }
    std::vector<std::string> ignored;
    (void)CancelStrayJobs(*qmp_, &ignored);
    for (auto& r : runs_) {
      Status s = r.plan.bitmap.empty() ? RemoveBitmap(*qmp_, r.disk.node, r.new_bitmap)
                                       : MergeBack(*qmp_, r.disk.node, r.plan.bitmap,
                                                   {r.new_bitmap});
      if (!s.ok()) Note("could not restore the bitmaps of " + r.disk.node + ": " + s.message());
    }
  }
}

json Backup::DiskSummary(const DiskRun& r) const {
  return {{"node", r.disk.node},
          {"archive", r.disk.archive},
          {"size", r.disk.size},
          {"mode", r.plan.incremental ? "incremental" : "full"},
          {"reason", r.plan.reason},
          {"bitmap", r.new_bitmap},
          {"bytes-to-read", r.to_read}};
}

Result<json> Backup::Run() {
  InterruptScope interrupt_scope;
  Status s = Prepare();
  if (s.ok()) s = Freeze();
  if (s.ok()) s = StartJobs();
  if (s.ok()) s = WaitJobs();
  for (auto& r : runs_) {
    if (r.sink) r.sink->Stop();
  }
  if (s.ok()) {
    for (auto& r : runs_) {
      s = r.writer->Close();
      if (!s.ok()) break;
    }
  }
  json client;
  json finish;
  if (s.ok()) {
    client = {{"tool", "cairn"}, {"consistency", consistency_}, {"disks", json::object()}};
    for (const auto& r : runs_) {
      client["disks"][r.disk.archive] = {{"node", r.disk.node},
                                         {"bitmap", r.new_bitmap},
                                         {"persistent", r.disk.persistent_bitmaps()},
                                         {"size", r.disk.size},
                                         {"mode", r.plan.incremental ? "incremental" : "full"}};
    }
    auto f = session_->Finish(client);
    if (f.ok()) {
      finish = std::move(f).value();
    } else {
      s = f.status();
    }
  }
  if (!s.ok()) {
    Thaw();
    Undo();
    if (session_) session_->Abort();
  } else {
    // Committed: the new bitmaps now belong to the snapshot.
    for (const auto& r : runs_) {
      if (r.plan.bitmap.empty()) continue;
      if (Status rm = RemoveBitmap(*qmp_, r.disk.node, r.plan.bitmap); !rm.ok()) {
        Note("could not remove the old bitmap " + r.plan.bitmap + " of " + r.disk.node +
             " (the next run removes it): " + rm.message());
      }
    }
  }
  if (!tmpdir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(tmpdir_, ec);
  }
  if (!s.ok()) return s;

  const auto& st = session_->stats();
  double secs = std::chrono::duration<double>(Clock::now() - start_).count();
  json disks = json::array();
  bool any_full = false, any_incr = false;
  uint64_t size = 0;
  for (const auto& r : runs_) {
    disks.push_back(DiskSummary(r));
    (r.plan.incremental ? any_incr : any_full) = true;
    size += r.disk.size;
  }
  json summary = {
      {"snapshot", finish.value("snapshot", session_->start_info().value("snapshot", ""))},
      {"mode", any_full && any_incr ? "mixed" : any_incr ? "incremental" : "full"},
      {"consistency", consistency_},
      {"disks", disks},
      {"size", size},
      {"bytes-read", st.bytes_received.load()},
      {"chunks-dirty", st.chunks_dirty.load()},
      {"chunks-zero", st.chunks_zero.load()},
      {"chunks-known", st.chunks_known.load()},
      {"chunks-uploaded", st.chunks_uploaded.load()},
      {"bytes-uploaded", st.bytes_uploaded.load()},
      {"chunks-reused", st.chunks_reused.load()},
      {"seconds", secs},
      {"mb-per-s", secs > 0 ? static_cast<double>(size) / 1e6 / secs : 0.0},
      {"server", finish.value("stats", json::object())}};
  const storage::CryptConfig* crypt = options_.upload.crypt.get();
  summary["encrypted"] = crypt != nullptr;
  summary["fingerprint"] = crypt != nullptr ? json(crypt->fingerprint()) : json(nullptr);
  if (!crypt_change_.empty()) summary["crypt-change"] = crypt_change_;
  if (options_.progress) options_.progress(Progress(true));
  return summary;
}

}  // namespace

InterruptScope::InterruptScope() {
  std::lock_guard<std::mutex> lock(g_scope_mu);
  if (g_scopes++ > 0) return;
  g_interrupted.store(false);
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptScope::~InterruptScope() {
  std::lock_guard<std::mutex> lock(g_scope_mu);
  if (--g_scopes > 0) return;
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
}

bool Interrupted() { return g_interrupted.load(); }

Result<json> BackupVm(const Repository& repo, const VmBackupOptions& options) {
  Backup backup(repo, options);
  return backup.Run();
}

Result<json> DescribeBitmaps(const Repository* repo, const std::string& qmp_socket,
                             const std::string& id) {
  CAIRN_ASSIGN_OR_RETURN(auto qmp, QmpClient::Connect(qmp_socket));
  CAIRN_ASSIGN_OR_RETURN(std::vector<DiskInfo> disks, ListDisks(*qmp, {}));
  json previous = nullptr;
  std::string note;
  if (repo != nullptr && !id.empty()) {
    ApiClient api(*repo);
    auto r = api.Get(api.StorePath("/snapshots?group=" + ApiClient::Escape("vm/" + id)));
    if (r.ok() && r->ToStatus().ok()) {
      json list = r->Json();
      // The newest snapshot that did not fail verification is what a backup
      // would build on; its client info comes from its manifest.
      const json* newest = nullptr;
      if (list.is_array()) {
        for (const auto& s : list) {
          if (newest == nullptr || s.value("time", int64_t{0}) > newest->value("time", int64_t{0})) {
            newest = &s;
          }
        }
      }
      if (newest != nullptr && newest->value("verify", json()).is_object() &&
          newest->value("verify", json()).value("state", "") == "failed") {
        note = "the newest snapshot failed verification";
      } else if (newest != nullptr) {
        previous = *newest;
      }
    } else {
      note = "could not ask the server: " + (r.ok() ? r->ToStatus().message() : r.status().message());
    }
  } else {
    note = "no repository given: the server's side was not checked";
  }
  json out = json::array();
  for (const auto& d : disks) {
    json bms = json::array();
    for (const auto& b : d.bitmaps) {
      bms.push_back({{"name", b.name},
                     {"recording", b.recording},
                     {"persistent", b.persistent},
                     {"inconsistent", b.inconsistent},
                     {"busy", b.busy},
                     {"granularity", b.granularity},
                     {"dirty-bytes", b.count}});
    }
    DiskPlan plan = PlanDisk(d, previous, false);
    if (!note.empty() && !plan.incremental) plan.reason += " (" + note + ")";
    out.push_back({{"node", d.node},
                   {"archive", d.archive},
                   {"driver", d.driver},
                   {"size", d.size},
                   {"bitmaps", bms},
                   {"other-bitmaps", d.others},
                   {"next", plan.incremental ? "incremental" : "full"},
                   {"reason", plan.reason}});
  }
  return out;
}

}  // namespace cairn::client
