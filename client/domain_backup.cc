#include "client/domain_backup.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "client/libvirt_domain.h"
#include "client/nbd_reader.h"
#include "client/storage_daemon.h"
#include "client/vm_backup.h"
#include "storage/names.h"

namespace cairn::client {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTempPrefix = "/tmp/cairn-domain-";

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

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

std::string StateName(int state) {
  switch (state) {
    case VIR_DOMAIN_RUNNING: return "running";
    case VIR_DOMAIN_BLOCKED: return "blocked";
    case VIR_DOMAIN_PAUSED: return "paused";
    case VIR_DOMAIN_SHUTDOWN: return "shutting down";
    case VIR_DOMAIN_SHUTOFF: return "shut off";
    case VIR_DOMAIN_CRASHED: return "crashed";
    case VIR_DOMAIN_PMSUSPENDED: return "suspended";
    default: return "unknown";
  }
}

// What is known of the domain before anything is touched.
struct DomainFacts {
  VirConnection conn;
  VirDomain dom;
  DomainXml xml;
  std::string id;
  bool active = false;
  std::string state;
  std::vector<DomainDisk> disks;    // to back up
  std::vector<DomainDisk> skipped;  // with .skip set
};

Result<DomainFacts> Inspect(const DomainBackupOptions& o) {
  DomainFacts f;
  CAIRN_ASSIGN_OR_RETURN(f.conn, VirOpen(o.uri));
  CAIRN_ASSIGN_OR_RETURN(f.dom, VirLookup(f.conn.get(), o.domain));
  int state = 0, reason = 0;
  if (Virt().virDomainGetState(f.dom.get(), &state, &reason, 0) < 0) return VirError("domain state");
  f.state = StateName(state);
  f.active = Virt().virDomainIsActive(f.dom.get()) == 1;
  char* text = Virt().virDomainGetXMLDesc(f.dom.get(), 0);
  if (text == nullptr) return VirError("domain XML of " + o.domain);
  std::string xml(text);
  ::free(text);
  CAIRN_ASSIGN_OR_RETURN(f.xml, ParseDomainXml(xml));
  f.id = o.id;
  if (f.id.empty()) {
    f.id = storage::ValidateName(storage::NameKind::kBackupId, f.xml.name).ok() ? f.xml.name
                                                                                 : f.xml.uuid;
  }
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kBackupId, f.id));
  std::set<std::string> asked(o.disks.begin(), o.disks.end());
  for (auto& d : f.xml.disks) {
    if (!asked.empty() && !asked.contains(d.target)) {
      if (d.skip.empty()) d.skip = "not selected with --disk";
    }
    asked.erase(d.target);
    if (d.skip.empty()) {
      virDomainBlockInfo info;
      if (Virt().virDomainGetBlockInfo(f.dom.get(), d.target.c_str(), &info, 0) < 0) {
        return VirError("size of disk " + d.target);
      }
      d.size = info.capacity;
      if (d.size == 0) d.skip = "size 0";
    }
    (d.skip.empty() ? f.disks : f.skipped).push_back(d);
  }
  if (!asked.empty()) {
    return Status::NotFound("domain " + f.xml.name + " has no disk " + *asked.begin());
  }
  if (f.disks.empty()) return Status::NotFound("domain " + f.xml.name + " has no disk to back up");
  return f;
}

// Cairn's checkpoints of the domain: name → disks with a bitmap.
Result<std::map<std::string, std::vector<std::string>>> CairnCheckpoints(virDomainPtr dom) {
  virDomainCheckpointPtr* cps = nullptr;
  int n = Virt().virDomainListAllCheckpoints(dom, &cps, 0);
  if (n < 0) return VirError("list checkpoints");
  std::map<std::string, std::vector<std::string>> out;
  Status s = Status::OK();
  for (int i = 0; i < n; ++i) {
    std::string name = Virt().virDomainCheckpointGetName(cps[i]);
    if (s.ok() && StartsWith(name, kCheckpointPrefix)) {
      char* x = Virt().virDomainCheckpointGetXMLDesc(cps[i], 0);
      if (x == nullptr) {
        s = VirError("checkpoint " + name);
      } else {
        auto disks = ParseCheckpointDisks(x);
        ::free(x);
        if (disks.ok()) {
          out[name] = std::move(disks).value();
        } else {
          s = disks.status();
        }
      }
    }
    Virt().virDomainCheckpointFree(cps[i]);
  }
  ::free(cps);
  if (!s.ok()) return s;
  return out;
}

json RecordedClient(const json& previous) {
  if (!previous.is_object()) return nullptr;
  auto c = previous.find("client");
  return c != previous.end() && c->is_object() ? *c : json(nullptr);
}

struct DiskDecision {
  bool incremental = false;
  std::string reason;
};

// The running-domain plan of one disk, given the newest snapshot.
DiskDecision PlanRunningDisk(const DomainDisk& d, const json& previous,
                             const std::map<std::string, std::vector<std::string>>& checkpoints,
                             bool full) {
  if (full) return {false, "--full was given"};
  if (d.format != "qcow2") {
    return {false, "a " + (d.format.empty() ? std::string("raw") : d.format) +
                       " disk: libvirt keeps no checkpoint bitmap of it, full every time"};
  }
  if (!previous.is_object()) {
    return {false, "the server has no usable snapshot of this VM (none yet, or the newest "
                   "failed verification)"};
  }
  const std::string prev = previous.value("snapshot", "");
  json client = RecordedClient(previous);
  const std::string archive = d.target + ".fidx";
  json recorded = client.is_object() && client.value("disks", json()).is_object()
                      ? client["disks"].value(archive, json())
                      : json();
  if (!recorded.is_object()) return {false, "the last snapshot " + prev + " has no archive " + archive};
  std::string cp = client.value("checkpoint", "");
  if (cp.empty() || !recorded.value("checkpoint", false)) {
    return {false, "the last snapshot " + prev + " was not taken through a libvirt checkpoint"};
  }
  auto it = checkpoints.find(cp);
  if (it == checkpoints.end()) {
    return {false, "checkpoint " + cp + " of the last snapshot " + prev +
                       " is gone from the domain"};
  }
  if (std::find(it->second.begin(), it->second.end(), d.target) == it->second.end()) {
    return {false, "checkpoint " + cp + " holds no bitmap of " + d.target};
  }
  bool size_ok = false;
  if (auto a = previous.find("archives"); a != previous.end() && a->is_array()) {
    for (const auto& x : *a) {
      if (x.value("name", "") == archive) size_ok = x.value("size", uint64_t{0}) == d.size;
    }
  }
  if (!size_ok) return {false, "the disk's size changed since " + prev};
  return {true, "checkpoint " + cp + " holds every write since " + prev};
}

// The newest usable snapshot of the group as a backup start would give it
// (from the snapshot list), or null with a note.
json NewestSnapshot(const Repository& repo, const std::string& group, std::string* note) {
  ApiClient api(repo);
  auto r = api.Get(api.StorePath("/snapshots?group=" + ApiClient::Escape(group)));
  if (!r.ok() || !r->ToStatus().ok()) {
    *note = "could not ask the server: " + (r.ok() ? r->ToStatus().message() : r.status().message());
    return nullptr;
  }
  json list = r->Json();
  const json* newest = nullptr;
  if (list.is_array()) {
    for (const auto& s : list) {
      if (newest == nullptr || s.value("time", int64_t{0}) > newest->value("time", int64_t{0})) {
        newest = &s;
      }
    }
  }
  if (newest == nullptr) return nullptr;
  json verify = newest->value("verify", json());
  if (verify.is_object() && verify.value("state", "") == "failed") {
    *note = "the newest snapshot failed verification";
    return nullptr;
  }
  return *newest;
}

json SkippedJson(const std::vector<DomainDisk>& skipped) {
  json out = json::array();
  for (const auto& d : skipped) out.push_back({{"target", d.target}, {"reason", d.skip}});
  return out;
}

}  // namespace

Result<std::vector<std::string>> ListDomains(const std::string& uri) {
  CAIRN_ASSIGN_OR_RETURN(VirConnection conn, VirOpen(uri));
  virDomainPtr* doms = nullptr;
  int n = Virt().virConnectListAllDomains(conn.get(), &doms, 0);
  if (n < 0) return VirError("list domains of " + uri);
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) {
    const char* name = Virt().virDomainGetName(doms[i]);
    if (name != nullptr) names.emplace_back(name);
    Virt().virDomainFree(doms[i]);
  }
  ::free(doms);
  std::sort(names.begin(), names.end());
  return names;
}

Result<json> PlanDomainBackup(const Repository* repo, const DomainBackupOptions& options) {
  CAIRN_ASSIGN_OR_RETURN(DomainFacts f, Inspect(options));
  json previous = nullptr;
  std::string note;
  if (repo != nullptr) {
    previous = NewestSnapshot(*repo, "vm/" + f.id, &note);
  } else {
    note = "no repository to ask";
  }
  std::map<std::string, std::vector<std::string>> checkpoints;
  if (f.active) {
    CAIRN_ASSIGN_OR_RETURN(checkpoints, CairnCheckpoints(f.dom.get()));
  }
  json disks = json::array();
  for (const auto& d : f.disks) {
    DiskDecision p;
    if (repo == nullptr) {
      p = {false, note};
    } else if (f.active) {
      p = PlanRunningDisk(d, previous, checkpoints, options.full);
      if (!p.incremental && !note.empty()) p.reason += " (" + note + ")";
    } else {
      // Shut off: BackupVm on the image decides from its bitmaps; a
      // previous offline snapshot of the disk is what makes it incremental.
      json c = RecordedClient(previous);
      json rec = c.is_object() ? c.value("disks", json::object()).value(d.target + ".fidx", json())
                               : json();
      if (options.full) {
        p = {false, "--full was given"};
      } else if (rec.is_object() && !rec.value("bitmap", "").empty() && d.format == "qcow2") {
        p = {true, "shut off: bitmap " + rec.value("bitmap", "") + " in the image, if it is still there"};
      } else {
        p = {false, "shut off, and the last snapshot was not an offline backup of this qcow2 disk"};
      }
    }
    disks.push_back({{"target", d.target},
                     {"archive", d.target + ".fidx"},
                     {"mode", p.incremental ? "incremental" : "full"},
                     {"reason", p.reason}});
  }
  return json{{"domain", f.xml.name}, {"id", f.id},         {"group", "vm/" + f.id},
              {"state", f.state},     {"disks", disks},     {"skipped", SkippedJson(f.skipped)}};
}

namespace {

// One disk of a running domain's backup.
struct DiskRun {
  DomainDisk disk;
  DiskDecision plan;
  ArchiveWriter* writer = nullptr;
  std::string export_name, export_bitmap;
  NbdReadStats stats;
  Status status = Status::OK();
};

class RunningBackup {
 public:
  RunningBackup(const Repository& repo, const DomainBackupOptions& options, DomainFacts& facts,
                double inspect_seconds)
      : repo_(repo), o_(options), f_(facts) {
    phases_["inspect"] = inspect_seconds;
  }
  Result<json> Run();

 private:
  void Note(const std::string& line) {
    if (o_.note) o_.note(line);
  }
  Status AbortStaleJob();
  Status MakeTempDir();
  void RemoveTempDir() {
    if (tmpdir_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(tmpdir_, ec);
    tmpdir_.clear();
  }
  std::string BackupXml() const;
  std::string CheckpointXml() const;
  Status Freeze();
  void Thaw();
  Status Begin();
  Status ReadDisks();
  json Progress(bool final) const;
  Result<json> Commit();
  Result<json> CommitEndingJob();
  void Undo();
  json Summary(const json& finish) const;

  const Repository& repo_;
  const DomainBackupOptions& o_;
  DomainFacts& f_;
  std::unique_ptr<UploadSession> session_;
  std::vector<std::unique_ptr<DiskRun>> runs_;
  std::map<std::string, std::vector<std::string>> checkpoints_;
  std::string base_checkpoint_;  // the incremental's base ("" = none)
  std::string checkpoint_;       // made by this run ("" = none: no qcow2 disk)
  std::string tmpdir_;
  bool job_started_ = false;
  bool frozen_ = false;
  std::string consistency_ = "crash";
  std::string crypt_change_;
  Clock::time_point start_ = Clock::now();
  // Wall seconds of each step (the summary's "phases": inspect,
  // session-start+checkpoints, backup-begin, read, commit+end-job,
  // delete-checkpoints, cleanup): where a run's fixed overhead goes.
  json phases_ = json::object();
  std::atomic<bool> cancel_{false};  // a signal, or one disk's reader failed
  Clock::time_point mark_ = start_;
  void Mark(const char* phase) {
    const auto now = Clock::now();
    phases_[phase] = std::chrono::duration<double>(now - mark_).count();
    mark_ = now;
  }
};

// A backup job of a killed Cairn: its socket is in kTempPrefix<pid>-* of a
// dead process. Aborted (and waited for); another tool's job is a Conflict.
Status RunningBackup::AbortStaleJob() {
  virDomainJobInfo info;
  if (Virt().virDomainGetJobInfo(f_.dom.get(), &info) < 0) return VirError("job info");
  if (info.type == VIR_DOMAIN_JOB_NONE) return Status::OK();
  char* x = Virt().virDomainBackupGetXMLDesc(f_.dom.get(), 0);
  if (x == nullptr) {
    return Status::Conflict("domain " + f_.xml.name + " runs another job (not a backup)");
  }
  std::string xml(x);
  ::free(x);
  CAIRN_ASSIGN_OR_RETURN(BackupJobXml job, ParseBackupJobXml(xml));
  if (!StartsWith(job.socket, kTempPrefix)) {
    return Status::Conflict("domain " + f_.xml.name + " runs a backup job of another tool (socket " +
                            job.socket + ")");
  }
  std::string rest = job.socket.substr(std::string(kTempPrefix).size());
  pid_t pid = static_cast<pid_t>(std::strtol(rest.c_str(), nullptr, 10));
  if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) == 0) {
    return Status::Conflict("another cairn (pid " + std::to_string(pid) +
                            ") is backing up domain " + f_.xml.name);
  }
  if (Virt().virDomainAbortJob(f_.dom.get()) < 0) return VirError("abort the stale backup job");
  auto deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    if (Virt().virDomainGetJobInfo(f_.dom.get(), &info) < 0) return VirError("job info");
    if (info.type == VIR_DOMAIN_JOB_NONE) break;
    if (Clock::now() > deadline) return Status::IOError("the stale backup job did not end in 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::error_code ec;
  std::filesystem::remove_all(std::filesystem::path(job.socket).parent_path(), ec);
  Note("aborted the backup job a killed cairn left on domain " + f_.xml.name);
  return Status::OK();
}

// The socket and scratch files' directory: private, owned by the user QEMU
// runs as (it binds the socket there).
Status RunningBackup::MakeTempDir() {
  std::string tmpl = std::string(kTempPrefix) + std::to_string(::getpid()) + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno("mkdtemp", errno);
  tmpdir_ = tmpl;
  if (f_.xml.dac && ::geteuid() == 0) {
    if (::chown(tmpdir_.c_str(), f_.xml.dac->first, f_.xml.dac->second) != 0) {
      return Status::FromErrno("chown " + tmpdir_, errno);
    }
  }
  return Status::OK();
}

std::string RunningBackup::BackupXml() const {
  std::string x = "<domainbackup mode='pull'>\n  <server transport='unix' socket='" +
                  XmlEscape(tmpdir_ + "/nbd.sock") + "'/>\n  <disks>\n";
  for (const auto& r : runs_) {
    const std::string t = XmlEscape(r->disk.target);
    x += "    <disk name='" + t + "' backup='yes' type='file'";
    if (r->plan.incremental) {
      x += " backupmode='incremental' incremental='" + XmlEscape(base_checkpoint_) + "'";
    } else {
      x += " backupmode='full'";
    }
    x += ">\n      <scratch file='" + XmlEscape(tmpdir_ + "/scratch-" + r->disk.target + ".qcow2") +
         "'/>\n    </disk>\n";
  }
  return x + "  </disks>\n</domainbackup>\n";
}

std::string RunningBackup::CheckpointXml() const {
  std::string x = "<domaincheckpoint>\n  <name>" + XmlEscape(checkpoint_) +
                  "</name>\n  <description>cairn backup</description>\n  <disks>\n";
  for (const auto& r : runs_) {
    if (r->disk.format != "qcow2") continue;
    x += "    <disk name='" + XmlEscape(r->disk.target) + "' checkpoint='bitmap'/>\n";
  }
  return x + "  </disks>\n</domaincheckpoint>\n";
}

Status RunningBackup::Freeze() {
  if (o_.quiesce == QuiescePolicy::kNone) return Status::OK();
  frozen_ = true;  // thaw whatever happened: a timed-out freeze may still complete
  if (Virt().virDomainFSFreeze(f_.dom.get(), nullptr, 0, 0) >= 0) {
    consistency_ = "application";
    return Status::OK();
  }
  Status s = VirError("guest agent freeze");
  Thaw();
  if (o_.quiesce == QuiescePolicy::kRequire) {
    return Status::IOError("could not freeze the guest's file systems (" + s.message() + ")");
  }
  Note("freeze failed (" + s.message() + "); the backup is crash-consistent");
  return Status::OK();
}

void RunningBackup::Thaw() {
  if (!frozen_) return;
  frozen_ = false;
  if (Virt().virDomainFSThaw(f_.dom.get(), nullptr, 0, 0) < 0 && consistency_ == "application") {
    Note("THAW FAILED (" + VirError("guest agent thaw").message() +
         "); the guest may still be frozen");
  }
}

// Starts the pull-mode job; an incremental libvirt refuses becomes a full.
Status RunningBackup::Begin() {
  bool any_qcow2 = std::any_of(runs_.begin(), runs_.end(),
                               [](const auto& r) { return r->disk.format == "qcow2"; });
  checkpoint_ = any_qcow2 ? std::string(kCheckpointPrefix) +
                                std::to_string(session_->start_info().value("time", int64_t{0})) +
                                "-" + RandomHex(4)
                          : "";
  for (int attempt = 0; attempt < 2; ++attempt) {
    CAIRN_RETURN_IF_ERROR(Freeze());
    std::string bx = BackupXml();
    std::string cx = CheckpointXml();
    int rc = Virt().virDomainBackupBegin(f_.dom.get(), bx.c_str(), any_qcow2 ? cx.c_str() : nullptr, 0);
    Status s = rc < 0 ? VirError("virDomainBackupBegin") : Status::OK();
    Thaw();  // the point in time is taken
    if (s.ok()) {
      job_started_ = true;
      return Status::OK();
    }
    bool incremental = std::any_of(runs_.begin(), runs_.end(),
                                   [](const auto& r) { return r->plan.incremental; });
    if (!incremental) return s;
    Note("libvirt refused the incremental (" + s.message() + "): reading every disk whole");
    for (auto& r : runs_) {
      if (r->plan.incremental) r->plan = {false, "libvirt refused the incremental: " + s.message()};
    }
  }
  return Status::IOError("virDomainBackupBegin failed twice");
}

json RunningBackup::Progress(bool final) const {
  const auto& st = session_->stats();
  uint64_t total = 0;
  for (const auto& r : runs_) total += r->plan.incremental ? 0 : r->disk.size;
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

// Opens the archives and reads every disk's export, one thread per disk.
Status RunningBackup::ReadDisks() {
  char* x = Virt().virDomainBackupGetXMLDesc(f_.dom.get(), 0);
  if (x == nullptr) return VirError("backup job XML");
  std::string xml(x);
  ::free(x);
  CAIRN_ASSIGN_OR_RETURN(BackupJobXml job, ParseBackupJobXml(xml));
  for (auto& r : runs_) {
    r->export_name = r->disk.target;
    r->export_bitmap = r->plan.incremental ? "backup-" + r->disk.target : "";
    for (const auto& d : job.disks) {
      if (d.target != r->disk.target) continue;
      if (!d.export_name.empty()) r->export_name = d.export_name;
      if (!d.export_bitmap.empty()) r->export_bitmap = d.export_bitmap;
    }
    CAIRN_ASSIGN_OR_RETURN(r->writer, session_->OpenArchive(r->disk.target + ".fidx", r->disk.size,
                                                            r->plan.incremental));
  }
  const std::string socket = job.socket.empty() ? tmpdir_ + "/nbd.sock" : job.socket;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  int running = static_cast<int>(runs_.size());  // guarded by mu
  for (auto& r : runs_) {
    threads.emplace_back([this, &r, &running, &socket, &mu, &cv] {
      NbdReadOptions no;
      no.socket_path = socket;
      no.export_name = r->export_name;
      no.dirty = r->plan.incremental;
      no.meta_context =
          no.dirty ? "qemu:dirty-bitmap:" + r->export_bitmap : std::string("base:allocation");
      no.cancel = &cancel_;
      r->status = ReadNbdExport(no, r->disk.size, r->writer, &r->stats);
      if (!r->status.ok()) cancel_.store(true);  // the others stop too
      std::lock_guard<std::mutex> lock(mu);
      --running;
      cv.notify_all();
    });
  }
  // The last reader's end wakes this at once; a signal (InterruptScope)
  // stops the readers within 100 ms; progress every 250 ms.
  auto last = Clock::now();
  for (std::unique_lock<std::mutex> lock(mu); running > 0;) {
    if (cv.wait_for(lock, std::chrono::milliseconds(100), [&running] { return running == 0; })) break;
    if (Interrupted()) cancel_.store(true);
    if (o_.progress && Clock::now() - last > std::chrono::milliseconds(250)) {
      lock.unlock();
      o_.progress(Progress(false));
      lock.lock();
      last = Clock::now();
    }
  }
  for (auto& t : threads) t.join();
  for (auto& r : runs_) {
    if (!r->status.ok()) return r->status.WithContext("disk " + r->disk.target);
  }
  if (Interrupted()) cancel_.store(true);
  if (cancel_.load()) return Status::IOError("interrupted by a signal");
  for (auto& r : runs_) CAIRN_RETURN_IF_ERROR(r->writer->Close());
  return session_->error();
}

// Commits the snapshot: the manifest records the checkpoint.
Result<json> RunningBackup::Commit() {
  json client = {{"tool", "cairn"},
                 {"consistency", consistency_},
                 {"domain", f_.xml.name},
                 {"uuid", f_.xml.uuid},
                 {"checkpoint", checkpoint_},
                 {"disks", json::object()}};
  for (const auto& r : runs_) {
    client["disks"][r->disk.target + ".fidx"] = {
        {"target", r->disk.target},
        {"format", r->disk.format},
        {"checkpoint", !checkpoint_.empty() && r->disk.format == "qcow2"},
        {"size", r->disk.size},
        {"mode", r->plan.incremental ? "incremental" : "full"}};
  }
  return session_->Finish(client);
}

// Every byte is read: libvirt ends the job (stops the NBD export, drops the
// scratch files) while the server commits. The new checkpoint stays either
// way; should the commit fail, Undo deletes it.
Result<json> RunningBackup::CommitEndingJob() {
  std::string ended;
  std::thread ender([this, &ended] {
    if (Virt().virDomainAbortJob(f_.dom.get()) < 0) ended = VirError("end the backup job").message();
  });
  Result<json> finish = Commit();
  ender.join();
  job_started_ = false;
  if (!ended.empty()) Note(ended);
  return finish;
}

// After a failure: end the job, drop this run's checkpoint (the base stays,
// so the next incremental still holds every write).
void RunningBackup::Undo() {
  Thaw();
  if (job_started_) {
    if (Virt().virDomainAbortJob(f_.dom.get()) < 0) Note(VirError("abort the backup job").message());
    job_started_ = false;
  }
  if (!checkpoint_.empty()) {
    virDomainCheckpointPtr cp = Virt().virDomainCheckpointLookupByName(f_.dom.get(), checkpoint_.c_str(), 0);
    if (cp != nullptr) {
      if (Virt().virDomainCheckpointDelete(cp, 0) < 0) {
        Note(VirError("delete checkpoint " + checkpoint_).message() + " (the next run deletes it)");
      }
      Virt().virDomainCheckpointFree(cp);
    }
  }
  if (session_) session_->Abort();
}

json RunningBackup::Summary(const json& finish) const {
  const auto& st = session_->stats();
  double secs = std::chrono::duration<double>(Clock::now() - start_).count();
  json disks = json::array();
  bool any_full = false, any_incr = false;
  uint64_t size = 0, nbd_read = 0;
  for (const auto& r : runs_) {
    disks.push_back({{"target", r->disk.target},
                     {"node", r->disk.target},
                     {"archive", r->disk.target + ".fidx"},
                     {"format", r->disk.format},
                     {"size", r->disk.size},
                     {"mode", r->plan.incremental ? "incremental" : "full"},
                     {"reason", r->plan.reason},
                     {"nbd-bytes-read", r->stats.bytes_read.load()},
                     {"nbd-bytes-zero", r->stats.bytes_zero.load()},
                     {"nbd-chunks-dirty", r->stats.chunks_dirty.load()}});
    (r->plan.incremental ? any_incr : any_full) = true;
    size += r->disk.size;
    nbd_read += r->stats.bytes_read.load();
  }
  json summary = {
      {"snapshot", finish.value("snapshot", session_->start_info().value("snapshot", ""))},
      {"domain", f_.xml.name},
      {"uri", o_.uri},
      {"id", f_.id},
      {"state", f_.state},
      {"checkpoint", checkpoint_.empty() ? json(nullptr) : json(checkpoint_)},
      {"base-checkpoint", base_checkpoint_.empty() ? json(nullptr) : json(base_checkpoint_)},
      {"mode", any_full && any_incr ? "mixed" : any_incr ? "incremental" : "full"},
      {"consistency", consistency_},
      {"disks", disks},
      {"skipped", SkippedJson(f_.skipped)},
      {"size", size},
      {"bytes-read", st.bytes_received.load()},
      {"nbd-bytes-read", nbd_read},
      {"chunks-dirty", st.chunks_dirty.load()},
      {"chunks-zero", st.chunks_zero.load()},
      {"chunks-known", st.chunks_known.load()},
      {"chunks-uploaded", st.chunks_uploaded.load()},
      {"bytes-uploaded", st.bytes_uploaded.load()},
      {"chunks-reused", st.chunks_reused.load()},
      {"seconds", secs},
      {"mb-per-s", secs > 0 ? static_cast<double>(size) / 1e6 / secs : 0.0},
      {"server", finish.value("stats", json::object())},
      {"phases", phases_}};
  const storage::CryptConfig* crypt = o_.upload.crypt.get();
  summary["encrypted"] = crypt != nullptr;
  summary["fingerprint"] = crypt != nullptr ? json(crypt->fingerprint()) : json(nullptr);
  if (!crypt_change_.empty()) summary["crypt-change"] = crypt_change_;
  return summary;
}

Result<json> RunningBackup::Run() {
  // The server's session starts (TLS, one round trip) while libvirt is asked
  // about jobs and checkpoints: neither needs the other's answer.
  std::optional<Result<std::unique_ptr<UploadSession>>> started;
  std::thread starter([this, &started] {
    started.emplace(UploadSession::Start(repo_, "vm/" + f_.id, o_.backup_time, o_.upload));
  });
  Status s = AbortStaleJob();
  if (s.ok()) {
    auto cps = CairnCheckpoints(f_.dom.get());
    s = cps.status();
    if (s.ok()) checkpoints_ = std::move(cps).value();
  }
  if (s.ok()) s = MakeTempDir();
  starter.join();
  Mark("session-start+checkpoints");
  if (!started->ok()) {
    RemoveTempDir();
    return started->status();
  }
  session_ = std::move(*started).value();
  const json& previous = session_->start_info()["previous"];
  crypt_change_ = CryptChange(previous, o_.upload.crypt.get());
  json client = RecordedClient(previous);
  base_checkpoint_ = client.is_object() ? client.value("checkpoint", "") : "";
  for (const auto& d : f_.disks) {
    auto r = std::make_unique<DiskRun>();
    r->disk = d;
    r->plan = PlanRunningDisk(d, previous, checkpoints_, o_.full);
    if (!crypt_change_.empty()) r->plan = {false, crypt_change_};
    runs_.push_back(std::move(r));
  }
  if (std::none_of(runs_.begin(), runs_.end(), [](const auto& r) { return r->plan.incremental; })) {
    base_checkpoint_.clear();
  }
  if (s.ok()) s = Begin();
  Mark("backup-begin");
  if (s.ok()) s = ReadDisks();
  Mark("read");
  Result<json> finish = s.ok() ? CommitEndingJob() : Result<json>(s);
  Mark("commit+end-job");
  if (!finish.ok()) {
    Undo();
  } else {
    // Committed: the new checkpoint now belongs to the snapshot, so Cairn's
    // older ones go.
    for (const auto& [name, disks] : checkpoints_) {
      if (name == checkpoint_) continue;
      virDomainCheckpointPtr cp = Virt().virDomainCheckpointLookupByName(f_.dom.get(), name.c_str(), 0);
      if (cp == nullptr || Virt().virDomainCheckpointDelete(cp, 0) < 0) {
        Note(VirError("delete old checkpoint " + name).message() + " (the next run tries again)");
      }
      if (cp != nullptr) Virt().virDomainCheckpointFree(cp);
    }
    Mark("delete-checkpoints");
  }
  RemoveTempDir();
  Mark("cleanup");
  if (!finish.ok()) return finish.status();
  json summary = Summary(*finish);
  if (o_.progress) o_.progress(Progress(true));
  return summary;
}

// Shut off: the images through qemu-storage-daemon and BackupVm.
Result<json> OfflineBackup(const Repository& repo, const DomainBackupOptions& o, DomainFacts& f) {
  std::vector<std::string> files;
  for (const auto& d : f.disks) {
    if (d.source.empty()) return Status::InvalidArgument("disk " + d.target + " has no source file");
    files.push_back(d.source);
  }
  if (o.quiesce != QuiescePolicy::kNone && o.note) {
    o.note("domain " + f.xml.name + " is shut off: nothing to quiesce");
  }
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<StorageDaemon> daemon, StorageDaemon::Start(files));
  VmBackupOptions vo;
  vo.qmp_socket = daemon->qmp_socket();
  vo.id = f.id;
  vo.full = o.full;
  vo.backup_time = o.backup_time;
  vo.upload = o.upload;
  vo.progress = o.progress;
  vo.note = o.note;
  std::map<std::string, std::string> target_of;
  for (size_t i = 0; i < daemon->images().size() && i < f.disks.size(); ++i) {
    const auto& img = daemon->images()[i];
    vo.drives.push_back(img.node);
    vo.archive_names.emplace_back(img.node, f.disks[i].target);
    target_of[img.node] = f.disks[i].target;
  }
  auto summary = BackupVm(repo, vo);
  Status stopped = daemon->Stop();
  if (!stopped.ok() && summary.ok() && o.note) {
    o.note("warning: " + stopped.message() +
           " (the snapshot is committed; the next backup may read everything)");
  }
  if (!summary.ok()) return summary.status();
  json s = std::move(summary).value();
  for (auto& d : s["disks"]) d["target"] = target_of[d.value("node", "")];
  s["domain"] = f.xml.name;
  s["uri"] = o.uri;
  s["id"] = f.id;
  s["state"] = f.state;
  s["checkpoint"] = nullptr;
  s["skipped"] = SkippedJson(f.skipped);
  if (s["consistency"] == "crash") s["consistency"] = "offline";
  return s;
}

}  // namespace

Result<json> BackupDomain(const Repository& repo, const DomainBackupOptions& options) {
  const auto start = Clock::now();
  CAIRN_ASSIGN_OR_RETURN(DomainFacts facts, Inspect(options));
  const double inspect_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (options.note) {
    for (const auto& d : facts.skipped) options.note("skipping disk " + d.target + ": " + d.skip);
  }
  if (!facts.active) return OfflineBackup(repo, options, facts);
  // The handler is shared with BackupVm and `backup all`'s other workers
  // (client/vm_backup.h): one domain's start no longer clears or replaces
  // another's.
  InterruptScope interrupt_scope;
  RunningBackup backup(repo, options, facts, inspect_seconds);
  return backup.Run();
}

}  // namespace cairn::client
