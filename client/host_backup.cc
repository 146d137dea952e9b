#include "client/host_backup.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "client/backup_hook.h"
#include "client/domain_backup.h"
#include "client/notify_send.h"
#include "client/qmp_client.h"
#include "client/storage_daemon.h"
#include "client/subprocess.h"
#include "client/vm_backup.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// One VM of the run, as the config and libvirt's listing name it.
struct VmTask {
  std::string label;  // the table's "vm": the id, or the domain's name
  std::string kind;   // "qemu", "image", "domain"
  std::string id;     // "" for a domain whose id BackupDomain picks
  const QemuVmEntry* qemu = nullptr;
  const ImageEntry* image = nullptr;
  std::string domain;                     // domain name
  const DomainEntry* domain_entry = nullptr;  // its [[domain]] overrides, if any
  std::string error;  // known before the run: the VM fails without being tried
  const VmOverrides& overrides() const {
    static const VmOverrides kNone;
    if (qemu != nullptr) return qemu->overrides;
    if (image != nullptr) return image->overrides;
    if (domain_entry != nullptr) return domain_entry->overrides;
    return kNone;
  }
  std::string group() const { return id.empty() ? "" : "vm/" + id; }
};

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// The libvirt part of the list: every domain of the URI but the excluded.
void CollectDomains(const BackupConfig& c, std::vector<VmTask>* tasks) {
  std::set<std::string> taken;
  for (const auto& t : *tasks) taken.insert(t.id);
  auto names = ListDomains(c.libvirt_uri);
  if (!names.ok()) {
    VmTask t;
    t.label = "libvirt " + c.libvirt_uri;
    t.kind = "domain";
    t.error = "cannot list the domains: " + names.status().message();
    tasks->push_back(std::move(t));
    return;
  }
  for (const auto& e : c.domains) {
    if (!Contains(*names, e.name)) {
      VmTask t;
      t.label = e.name;
      t.kind = "domain";
      t.error = "[[domain]] " + e.name + ": no such domain on " + c.libvirt_uri;
      tasks->push_back(std::move(t));
    }
  }
  for (const auto& name : *names) {
    if (Contains(c.libvirt_exclude, name)) continue;
    VmTask t;
    t.label = name;
    t.kind = "domain";
    t.domain = name;
    for (const auto& e : c.domains) {
      if (e.name == name) t.domain_entry = &e;
    }
    if (t.domain_entry != nullptr && !t.domain_entry->id.empty()) {
      t.id = t.domain_entry->id;
    } else if (storage::ValidateName(storage::NameKind::kBackupId, name).ok()) {
      t.id = name;
    }
    if (!t.id.empty() && !taken.insert(t.id).second) {
      t.error = "its group vm/" + t.id +
                " is another VM's of the config (set an id in a [[domain]] section)";
    }
    tasks->push_back(std::move(t));
  }
}

// Every VM in the config's order: [[qemu]], [[image]], then libvirt's.
std::vector<VmTask> CollectVms(const BackupConfig& c) {
  std::vector<VmTask> tasks;
  for (const auto& e : c.qemu) {
    VmTask t;
    t.label = t.id = e.id;
    t.kind = "qemu";
    t.qemu = &e;
    tasks.push_back(std::move(t));
  }
  for (const auto& e : c.images) {
    VmTask t;
    t.label = t.id = e.id;
    t.kind = "image";
    t.image = &e;
    tasks.push_back(std::move(t));
  }
  if (c.libvirt) CollectDomains(c, &tasks);
  return tasks;
}

// A VM's (or the job's) log file; lines from several threads.
class LogFile {
 public:
  void Open(const std::string& path) {
    path_ = path;
    std::ofstream out(path_, std::ios::trunc);
    if (!out) path_.clear();
  }
  const std::string& path() const { return path_; }
  void Line(const std::string& line) {
    if (path_.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::ofstream out(path_, std::ios::app);
    std::time_t now = std::time(nullptr);
    out << storage::FormatSnapshotTime(now) << " " << line << "\n";
  }

 private:
  std::mutex mu_;
  std::string path_;
};

// A disk named in skip-disks: by node name, guest device, file or archive.
bool Skipped(const VmOverrides& o, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (!n.empty() && Contains(o.skip_disks, n)) return true;
  }
  return false;
}

class HostRun {
 public:
  HostRun(const Repository& repo, const BackupConfig& config, const HostBackupOptions& options)
      : repo_(repo),
        config_(config),
        options_(options),
        hook_(options.hook.empty() ? config.hook : options.hook,
              std::chrono::seconds(config.hook_timeout)) {}

  json Run();

 private:
  void Note(const std::string& line) {
    std::lock_guard<std::mutex> lock(note_mu_);
    if (options_.note) options_.note(line);
  }
  std::map<std::string, std::string> BaseEnv() const;
  void OpenLogs(const std::vector<VmTask>& tasks);
  json RunOne(const VmTask& task, LogFile* log);
  Result<json> Backup(const VmTask& task, LogFile* log);
  Result<json> BackupQemu(const VmTask& task, VmBackupOptions o);
  Result<json> BackupImage(const VmTask& task, VmBackupOptions o, LogFile* log);
  Result<json> BackupLibvirt(const VmTask& task, LogFile* log);
  UploadOptions Upload(const VmOverrides& o) const;

  const Repository& repo_;
  const BackupConfig& config_;
  const HostBackupOptions& options_;
  BackupHook hook_;
  std::mutex note_mu_;
  std::string log_dir_;
  LogFile job_log_;
  std::vector<std::unique_ptr<LogFile>> vm_logs_;
};

std::map<std::string, std::string> HostRun::BaseEnv() const {
  return {{"CAIRN_REPOSITORY", "https://" + repo_.host + ":" + std::to_string(repo_.port) + "/" +
                                   repo_.store},
          {"CAIRN_STORE", repo_.store},
          {"CAIRN_LOG_FILE", job_log_.path()}};
}

void HostRun::OpenLogs(const std::vector<VmTask>& tasks) {
  log_dir_ = config_.log_dir.empty() ? DefaultBackupLogDir() : config_.log_dir;
  std::error_code ec;
  std::filesystem::create_directories(log_dir_, ec);
  if (ec || !std::filesystem::is_directory(log_dir_, ec)) {
    Note("warning: no log files: cannot create log-dir " + log_dir_);
    log_dir_.clear();
  }
  if (!log_dir_.empty()) job_log_.Open(log_dir_ + "/backup-all.log");
  for (const auto& t : tasks) {
    vm_logs_.push_back(std::make_unique<LogFile>());
    std::string name = t.label;
    std::replace_if(
        name.begin(), name.end(),
        [](char c) { return !(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'); },
        '_');
    if (!log_dir_.empty()) vm_logs_.back()->Open(log_dir_ + "/" + name + ".log");
  }
}

UploadOptions HostRun::Upload(const VmOverrides& o) const {
  UploadOptions u = options_.upload;
  u.rate_limit = static_cast<uint64_t>(o.rate_limit_mb.value_or(config_.rate_limit_mb) * 1e6);
  return u;
}

Result<json> HostRun::BackupQemu(const VmTask& task, VmBackupOptions o) {
  const QemuVmEntry& e = *task.qemu;
  o.qmp_socket = e.qmp;
  QuiescePolicy q = e.overrides.quiesce.value_or(e.guest_agent.empty() ? QuiescePolicy::kNone
                                                                        : QuiescePolicy::kTry);
  if (q != QuiescePolicy::kNone) o.guest_agent = e.guest_agent;
  o.require_freeze = q == QuiescePolicy::kRequire;
  if (!e.overrides.skip_disks.empty()) {
    // QMP serves one client at a time: this connection ends before BackupVm's.
    CAIRN_ASSIGN_OR_RETURN(auto qmp, QmpClient::Connect(e.qmp));
    CAIRN_ASSIGN_OR_RETURN(std::vector<DiskInfo> disks, ListDisks(*qmp, {}));
    for (const auto& d : disks) {
      if (!Skipped(e.overrides, {d.node, d.device, d.archive.substr(0, d.archive.size() - 5)})) {
        o.drives.push_back(d.node);
      } else if (o.note) {
        o.note("disk " + d.node + " skipped (skip-disks)");
      }
    }
    if (o.drives.empty()) return Status::InvalidArgument("skip-disks skips every disk");
  }
  return BackupVm(repo_, o);
}

Result<json> HostRun::BackupImage(const VmTask& task, VmBackupOptions o, LogFile* log) {
  const ImageEntry& e = *task.image;
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<StorageDaemon> daemon, StorageDaemon::Start(e.files));
  o.qmp_socket = daemon->qmp_socket();
  for (const auto& img : daemon->images()) {
    if (Skipped(e.overrides, {img.node, img.path, std::filesystem::path(img.path).filename()})) {
      log->Line("image " + img.path + " skipped (skip-disks)");
    } else {
      o.drives.push_back(img.node);
    }
  }
  if (o.drives.empty()) return Status::InvalidArgument("skip-disks skips every image");
  auto summary = BackupVm(repo_, o);
  // The bitmaps reach the qcow2 files when the daemon quits.
  if (Status stopped = daemon->Stop(); !stopped.ok() && summary.ok()) {
    o.note("warning: " + stopped.message() +
           " (the snapshot is committed; the next backup may read everything)");
  }
  return summary;
}

Result<json> HostRun::BackupLibvirt(const VmTask& task, LogFile* log) {
  const VmOverrides& ov = task.overrides();
  DomainBackupOptions o;
  o.uri = config_.libvirt_uri;
  o.domain = task.domain;
  o.id = task.domain_entry != nullptr ? task.domain_entry->id : "";
  o.full = ov.full;
  o.quiesce = ov.quiesce.value_or(QuiescePolicy::kNone);
  o.upload = Upload(ov);
  o.note = [log](const std::string& line) { log->Line(line); };
  if (!ov.skip_disks.empty()) {
    CAIRN_ASSIGN_OR_RETURN(json plan, PlanDomainBackup(nullptr, o));
    for (const auto& d : plan.value("disks", json::array())) {
      std::string target = d.value("target", "");
      if (!Contains(ov.skip_disks, target)) o.disks.push_back(target);
    }
    if (o.disks.empty()) return Status::InvalidArgument("skip-disks skips every disk");
  }
  return BackupDomain(repo_, o);
}

Result<json> HostRun::Backup(const VmTask& task, LogFile* log) {
  if (task.kind == "domain") return BackupLibvirt(task, log);
  VmBackupOptions o;
  o.id = task.id;
  o.full = task.overrides().full;
  o.upload = Upload(task.overrides());
  const std::string label = task.label;
  o.note = [this, log, label](const std::string& line) {
    log->Line(line);
    Note("[" + label + "] " + line);
  };
  if (task.kind == "qemu") return BackupQemu(task, std::move(o));
  return BackupImage(task, std::move(o), log);
}

// "disk0.fidx incremental: bitmap …; disk1.fidx full: …" from a summary.
std::string Why(const json& summary) {
  std::string why;
  for (const auto& d : summary.value("disks", json::array())) {
    std::string name = d.value("target", d.value("archive", ""));
    why += (why.empty() ? "" : "; ") + name + " " + d.value("mode", "") + ": " +
           d.value("reason", "");
  }
  return why;
}

json HostRun::RunOne(const VmTask& task, LogFile* log) {
  const auto start = Clock::now();
  json row = {{"vm", task.label}, {"kind", task.kind}, {"group", task.group()},
              {"result", "failed"}, {"mode", ""}, {"why", ""}, {"bytes-read", 0},
              {"bytes-uploaded", 0}, {"hook-errors", json::array()}, {"log-file", log->path()}};
  if (!task.error.empty()) {
    row["error"] = task.error;
    row["seconds"] = 0.0;
    log->Line("error: " + task.error);
    return row;
  }
  std::map<std::string, std::string> env = BaseEnv();
  env["CAIRN_VM_ID"] = task.id.empty() ? task.label : task.id;
  env["CAIRN_VM_KIND"] = task.kind;
  env["CAIRN_GROUP"] = task.group();
  env["CAIRN_LOG_FILE"] = log->path();
  const std::string hook_id = env["CAIRN_VM_ID"];
  log->Line("backup of " + task.kind + " " + task.label + " starts");
  // A failing backup-start hook skips the VM (vzdump's rule).
  Status started = hook_.Run("backup-start", hook_id, env, log->path());
  Result<json> summary = started.ok() ? Backup(task, log)
                                      : Result<json>(Status::IOError(
                                            started.message() + " (the VM was skipped)"));
  row["seconds"] = std::chrono::duration<double>(Clock::now() - start).count();
  if (summary.ok()) {
    const json& s = *summary;
    row["result"] = "ok";
    row["mode"] = s.value("mode", "");
    row["why"] = Why(s);
    row["snapshot"] = s.value("snapshot", "");
    row["bytes-read"] = s.value("bytes-read", uint64_t{0});
    row["bytes-uploaded"] = s.value("bytes-uploaded", uint64_t{0});
    row["summary"] = s;
    if (task.id.empty()) row["group"] = s.value("group", "");
    env["CAIRN_GROUP"] = row["group"];
    env["CAIRN_SNAPSHOT"] = row["snapshot"];
    env["CAIRN_MODE"] = row["mode"];
    log->Line("committed " + row["snapshot"].get<std::string>() + " (" + row["mode"].get<std::string>() +
              ": " + row["why"].get<std::string>() + ")");
    Status end = hook_.Run("backup-end", hook_id, env, log->path());
    if (!end.ok()) row["hook-errors"].push_back(end.message());
  } else {
    row["error"] = summary.status().message();
    log->Line("failed: " + summary.status().message());
    env["CAIRN_ERROR"] = summary.status().message();
    Status abort = hook_.Run("backup-abort", hook_id, env, log->path());
    if (!abort.ok()) row["hook-errors"].push_back(abort.message());
  }
  for (const auto& h : row["hook-errors"]) log->Line("error: " + h.get<std::string>());
  Note("[" + task.label + "] " +
       (summary.ok() ? "committed " + row["snapshot"].get<std::string>()
                     : "failed: " + row["error"].get<std::string>()));
  return row;
}

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

json HostRun::Run() {
  InterruptScope interrupt_scope;
  const auto start = Clock::now();
  const int64_t started = static_cast<int64_t>(std::time(nullptr));
  const std::vector<VmTask> tasks = CollectVms(config_);
  OpenLogs(tasks);
  const int jobs = std::max(1, options_.jobs > 0 ? options_.jobs : config_.jobs);
  json report = {{"host", HostName()}, {"repository", BaseEnv()["CAIRN_REPOSITORY"]},
                 {"started", started}, {"jobs", jobs}, {"log-dir", log_dir_},
                 {"hook-errors", json::array()}};
  auto job_env = BaseEnv();
  job_log_.Line("backup of " + std::to_string(tasks.size()) + " VMs starts");
  if (Status s = hook_.Run("job-start", "", job_env, job_log_.path()); !s.ok()) {
    report["hook-errors"].push_back(s.message());
  }
  std::vector<json> rows(tasks.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < tasks.size(); i = next++) {
      if (Interrupted()) {
        rows[i] = {{"vm", tasks[i].label}, {"kind", tasks[i].kind}, {"group", tasks[i].group()},
                   {"result", "not run"}, {"mode", ""}, {"why", ""}, {"bytes-read", 0},
                   {"bytes-uploaded", 0}, {"seconds", 0.0}, {"hook-errors", json::array()},
                   {"error", "interrupted by a signal before it started"}};
        continue;
      }
      rows[i] = RunOne(tasks[i], vm_logs_[i].get());
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < std::min<int>(jobs, static_cast<int>(tasks.size())); ++i) {
    threads.emplace_back(worker);
  }
  worker();
  for (auto& t : threads) t.join();
  int committed = 0;
  for (const auto& r : rows) committed += r["result"] == "ok" ? 1 : 0;
  const bool interrupted = Interrupted();
  report["vms"] = rows;
  report["committed"] = committed;
  report["failed"] = static_cast<int>(rows.size()) - committed;
  report["ok"] = committed == static_cast<int>(rows.size()) && !interrupted;
  report["interrupted"] = interrupted;
  const std::string end_phase = interrupted ? "job-abort" : "job-end";
  if (Status s = hook_.Run(end_phase, "", job_env, job_log_.path()); !s.ok()) {
    report["hook-errors"].push_back(s.message());
  }
  report["seconds"] = std::chrono::duration<double>(Clock::now() - start).count();
  for (const auto& line : report["hook-errors"]) job_log_.Line("error: " + line.get<std::string>());
  job_log_.Line("\n" + ReportTable(report));
  return report;
}

// ---- dry run ----

// The newest snapshot of vm/<id> a backup would build on (as
// DescribeBitmaps finds it), or null with *note saying why.
json PreviousSnapshot(const Repository* repo, const std::string& id, std::string* note) {
  if (repo == nullptr) {
    *note = "no repository: the server's side was not checked";
    return nullptr;
  }
  ApiClient api(*repo);
  auto r = api.Get(api.StorePath("/snapshots?group=" + ApiClient::Escape("vm/" + id)));
  if (!r.ok() || !r->ToStatus().ok()) {
    *note = "could not ask the server: " + (r.ok() ? r->ToStatus().message() : r.status().message());
    return nullptr;
  }
  json list = r->Json();
  if (!list.is_array()) list = json::array();
  const json* newest = nullptr;  // points into `list`, which outlives the loop
  for (const auto& s : list) {
    if (newest == nullptr || s.value("time", int64_t{0}) > newest->value("time", int64_t{0})) {
      newest = &s;
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

// An image file as a DiskInfo, from `qemu-img info -U` (read-only, allowed
// while another process holds the image).
Result<DiskInfo> ImageDisk(const std::string& path) {
  CAIRN_ASSIGN_OR_RETURN(ProcessResult r,
                         RunProcess({"qemu-img", "info", "-U", "--output=json", path},
                                    std::chrono::seconds(60)));
  if (!r.ok) return Status::IOError("qemu-img info " + path + ": " + r.output);
  json info = json::parse(r.output, nullptr, false);
  if (!info.is_object()) return Status::Corruption("qemu-img info " + path + ": not JSON");
  DiskInfo d;
  d.node = ImageNodeName(path);
  d.archive = d.node + ".fidx";
  d.driver = info.value("format", "");
  d.filename = path;
  d.size = info.value("virtual-size", uint64_t{0});
  json spec = info.value("format-specific", json::object());
  for (const auto& b : spec.value("data", json::object()).value("bitmaps", json::array())) {
    BitmapInfo bi;
    bi.name = b.value("name", "");
    bi.granularity = b.value("granularity", uint64_t{0});
    bi.persistent = true;
    for (const auto& f : b.value("flags", json::array())) {
      if (f == "auto") bi.recording = true;
      if (f == "in-use") bi.inconsistent = true;
    }
    if (bi.name.rfind(kBitmapPrefix, 0) == 0) {
      d.bitmaps.push_back(bi);
    } else {
      d.others.push_back(bi.name);
    }
  }
  return d;
}

json PlanRow(const std::string& disk, const std::string& archive, bool incremental,
             const std::string& reason) {
  return {{"disk", disk}, {"archive", archive}, {"mode", incremental ? "incremental" : "full"},
          {"reason", reason}};
}

Status PlanQemu(const Repository* repo, const VmTask& t, json* row) {
  CAIRN_ASSIGN_OR_RETURN(json disks, DescribeBitmaps(repo, t.qemu->qmp, t.id));
  for (const auto& d : disks) {
    std::string node = d.value("node", ""), archive = d.value("archive", "");
    if (Skipped(t.overrides(), {node, archive.substr(0, archive.size() - 5)})) {
      (*row)["skipped"].push_back({{"disk", node}, {"reason", "skip-disks in the config"}});
    } else if (t.overrides().full) {
      (*row)["disks"].push_back(PlanRow(node, archive, false, "full = true in the config"));
    } else {
      (*row)["disks"].push_back(
          PlanRow(node, archive, d.value("next", "") == "incremental", d.value("reason", "")));
    }
  }
  return Status::OK();
}

Status PlanImage(const Repository* repo, const VmTask& t, json* row) {
  std::string note;
  json previous = PreviousSnapshot(repo, t.id, &note);
  for (const auto& f : t.image->files) {
    if (Skipped(t.overrides(), {ImageNodeName(f), f, std::filesystem::path(f).filename()})) {
      (*row)["skipped"].push_back({{"disk", f}, {"reason", "skip-disks in the config"}});
      continue;
    }
    CAIRN_ASSIGN_OR_RETURN(DiskInfo d, ImageDisk(f));
    DiskPlan p = PlanDisk(d, previous, t.overrides().full);
    if (t.overrides().full) p.reason = "full = true in the config";
    if (!p.incremental && !note.empty()) p.reason += " (" + note + ")";
    (*row)["disks"].push_back(PlanRow(f, d.archive, p.incremental, p.reason));
  }
  return Status::OK();
}

Status PlanLibvirt(const Repository* repo, const BackupConfig& c, const VmTask& t, json* row) {
  DomainBackupOptions o;
  o.uri = c.libvirt_uri;
  o.domain = t.domain;
  o.id = t.domain_entry != nullptr ? t.domain_entry->id : "";
  o.full = t.overrides().full;
  CAIRN_ASSIGN_OR_RETURN(json plan, PlanDomainBackup(repo, o));
  if (t.id.empty()) (*row)["group"] = plan.value("group", "");
  for (const auto& d : plan.value("disks", json::array())) {
    std::string target = d.value("target", "");
    if (Contains(t.overrides().skip_disks, target)) {
      (*row)["skipped"].push_back({{"disk", target}, {"reason", "skip-disks in the config"}});
    } else {
      (*row)["disks"].push_back(PlanRow(target, d.value("archive", ""),
                                        d.value("mode", "") == "incremental",
                                        d.value("reason", "")));
    }
  }
  for (const auto& s : plan.value("skipped", json::array())) {
    (*row)["skipped"].push_back({{"disk", s.value("target", "")}, {"reason", s.value("reason", "")}});
  }
  return Status::OK();
}

// Pads `s` to `width` columns (UTF-8 aware enough for "…" and "—").
std::string Pad(const std::string& s, size_t width) {
  size_t cols = 0;
  for (unsigned char c : s) cols += (c & 0xC0) != 0x80 ? 1 : 0;
  return cols >= width ? s : s + std::string(width - cols, ' ');
}

// Rows of cells as aligned columns; the last column is not padded.
std::string Columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      size_t cols = 0;
      for (unsigned char c : r[i]) cols += (c & 0xC0) != 0x80 ? 1 : 0;
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], cols);
    }
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += i + 1 < r.size() ? Pad(r[i], widths[i] + 2) : r[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string Size(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

Result<json> RunHostBackup(const Repository& repo, const BackupConfig& config,
                           const HostBackupOptions& options) {
  HostRun run(repo, config, options);
  return run.Run();
}

json PlanHostBackup(const Repository* repo, const BackupConfig& config) {
  json vms = json::array();
  bool ok = true;
  for (const VmTask& t : CollectVms(config)) {
    json row = {{"vm", t.label}, {"kind", t.kind}, {"group", t.group()},
                {"disks", json::array()}, {"skipped", json::array()}};
    Status s = t.error.empty() ? Status::OK() : Status::InvalidArgument(t.error);
    if (s.ok() && t.kind == "qemu") s = PlanQemu(repo, t, &row);
    if (s.ok() && t.kind == "image") s = PlanImage(repo, t, &row);
    if (s.ok() && t.kind == "domain") s = PlanLibvirt(repo, config, t, &row);
    if (!s.ok()) {
      row["error"] = s.message();
      ok = false;
    }
    vms.push_back(std::move(row));
  }
  return {{"dry-run", true}, {"ok", ok}, {"vms", vms}};
}

std::string ReportTable(const json& report) {
  std::vector<std::vector<std::string>> rows = {
      {"VM", "KIND", "RESULT", "MODE", "READ", "UPLOADED", "TIME", "WHY"}};
  for (const auto& v : report.value("vms", json::array())) {
    const bool ok = v.value("result", "") == "ok";
    char secs[32];
    std::snprintf(secs, sizeof(secs), "%.1f s", v.value("seconds", 0.0));
    std::string why = ok ? v.value("why", "") : v.value("error", "");
    for (const auto& h : v.value("hook-errors", json::array())) why += "; " + h.get<std::string>();
    rows.push_back({v.value("vm", ""), v.value("kind", ""), v.value("result", ""),
                    ok ? v.value("mode", "") : "—", ok ? Size(v.value("bytes-read", uint64_t{0})) : "—",
                    ok ? Size(v.value("bytes-uploaded", uint64_t{0})) : "—", secs, why});
  }
  std::string out = Columns(rows);
  const size_t total = report.value("vms", json::array()).size();
  out += std::to_string(report.value("committed", 0)) + " of " + std::to_string(total) +
         " VMs backed up";
  if (report.value("failed", 0) > 0) out += ", " + std::to_string(report.value("failed", 0)) + " failed";
  if (report.value("interrupted", false)) out += " (interrupted)";
  char secs[32];
  std::snprintf(secs, sizeof(secs), " in %.1f s", report.value("seconds", 0.0));
  out += secs;
  out += "\n";
  for (const auto& h : report.value("hook-errors", json::array())) {
    out += "hook: " + h.get<std::string>() + "\n";
  }
  return out;
}

std::string PlanTable(const json& plan) {
  std::vector<std::vector<std::string>> rows = {{"VM", "KIND", "DISK", "PLAN", "WHY"}};
  for (const auto& v : plan.value("vms", json::array())) {
    const std::string vm = v.value("vm", ""), kind = v.value("kind", "");
    if (v.contains("error")) rows.push_back({vm, kind, "—", "error", v.value("error", "")});
    for (const auto& d : v.value("disks", json::array())) {
      rows.push_back({vm, kind, d.value("disk", ""), d.value("mode", ""), d.value("reason", "")});
    }
    for (const auto& d : v.value("skipped", json::array())) {
      rows.push_back({vm, kind, d.value("disk", ""), "skip", d.value("reason", "")});
    }
  }
  return Columns(rows) + "dry run: nothing was backed up\n";
}

Status NotifyReport(const BackupConfig& config, const json& report) {
  if (config.notify.mail_to.empty() && config.notify.webhook_url.empty()) return Status::OK();
  const bool ok = report.value("ok", false);
  if (ok && config.notify_on_failure_only) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(Notifier notifier, Notifier::Create(config.notify));
  Notification n;
  n.event = "backup-job";
  const size_t total = report.value("vms", json::array()).size();
  n.subject = "cairn backup all on " + report.value("host", "") + ": " +
              (ok ? "all " + std::to_string(total) + " VMs backed up"
                  : std::to_string(report.value("failed", 0)) + " of " + std::to_string(total) +
                        " VMs FAILED");
  n.text = ReportTable(report);
  n.data = report;
  return notifier.Send(n);
}

}  // namespace cairn::client
