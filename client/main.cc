// cairn: the host-side client — backup of VMs and image files, restore, and
// the repository commands (snapshots, prune, gc, verify, tasks).

#include <unistd.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <thread>

#include "client/api_client.h"
#include "client/restore.h"
#include "client/storage_daemon.h"
#include "client/vm_backup.h"
#include "storage/names.h"

namespace {

using cairn::client::ApiClient;
using cairn::client::Repository;
using cairn::storage::Status;
using nlohmann::json;

int Fail(const Status& s) {
  std::cerr << "cairn: " << s.message() << "\n";
  return s.IsInvalidArgument() ? 2 : 1;
}

// Runs a request and turns transport and HTTP errors into one Status.
cairn::storage::Result<json> Call(cairn::storage::Result<cairn::client::HttpResponse> r) {
  if (!r.ok()) return r.status();
  if (Status s = r->ToStatus(); !s.ok()) return s;
  json j = r->Json();
  if (j.is_discarded()) return Status::Corruption("server answered with malformed JSON");
  return j;
}

std::string HumanSize(uint64_t bytes) {
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

std::string Rate(double bytes_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB/s", bytes_per_s / 1e6);
  return buf;
}

// "2026-11-21T10:00:00Z" or seconds → unix seconds.
cairn::storage::Result<int64_t> ParseTime(const std::string& text) {
  std::tm tm = {};
  const char* end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end != nullptr && *end == '\0') return static_cast<int64_t>(::timegm(&tm));
  char* e = nullptr;
  long long v = std::strtoll(text.c_str(), &e, 10);
  if (!text.empty() && e != nullptr && *e == '\0' && v >= 0) return static_cast<int64_t>(v);
  return Status::InvalidArgument("--backup-time wants YYYY-MM-DDTHH:MM:SSZ (UTC): " + text);
}

// The progress line on a terminal: read, dirty, uploaded, rate, ETA.
void ShowProgress(const json& p) {
  static bool drawn = false;
  if (p.value("final", false)) {
    if (drawn) std::fprintf(stderr, "\r\033[K");
    drawn = false;
    return;
  }
  std::string line = "read " + HumanSize(p.value("bytes-read", uint64_t{0})) + " of " +
                     HumanSize(p.value("bytes-total", uint64_t{0})) + ", dirty " +
                     std::to_string(p.value("chunks-dirty", uint64_t{0})) + " chunks, uploaded " +
                     HumanSize(p.value("bytes-uploaded", uint64_t{0})) + ", " +
                     Rate(p.value("bytes-per-s", 0.0));
  if (p.contains("eta-seconds")) {
    line += ", ETA " + std::to_string(static_cast<int64_t>(p.value("eta-seconds", 0.0))) + " s";
  }
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  drawn = true;
}

// The one-line summary of a backup.
void PrintSummary(const json& s) {
  std::cout << "snapshot " << s.value("snapshot", "") << ": " << s.value("mode", "");
  std::string why;
  for (const auto& d : s["disks"]) {
    why += (why.empty() ? "" : "; ") + d.value("archive", "") + " " + d.value("mode", "") + ": " +
           d.value("reason", "");
  }
  std::cout << " (" << why << "), " << s.value("consistency", "") << "-consistent, read "
            << HumanSize(s.value("bytes-read", uint64_t{0})) << ", dirty "
            << s.value("chunks-dirty", uint64_t{0}) << " chunks, uploaded "
            << s.value("chunks-uploaded", uint64_t{0}) << " chunks ("
            << HumanSize(s.value("bytes-uploaded", uint64_t{0})) << "), reused "
            << s.value("chunks-reused", uint64_t{0}) + s.value("chunks-known", uint64_t{0})
            << " chunks, " << s.value("seconds", 0.0) << " s, "
            << Rate(s.value("mb-per-s", 0.0) * 1e6) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  // A server that drops a connection is an error on that request, never
  // the end of the client (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn: back up QEMU/KVM virtual machines to a cairn-server"};
  app.require_subcommand(1);
  std::string repo, token_file, fingerprint, output = "text";
  app.add_option("--repo", repo, "https://HOST:PORT/STORE (or $CAIRN_REPO)");
  app.add_option("--token-file", token_file, "file holding USER!TOKEN:SECRET (or $CAIRN_TOKEN)");
  app.add_option("--fingerprint", fingerprint, "server certificate SHA-256 (or $CAIRN_FINGERPRINT)");
  app.add_option("--output", output, "text or json")->check(CLI::IsMember({"text", "json"}));

  auto* snapshots = app.add_subcommand("snapshots", "list snapshots");
  std::string snap_id;
  snapshots->add_option("--id", snap_id, "only the group vm/ID");

  auto* prune = app.add_subcommand("prune", "remove snapshots of a group by retention options");
  std::string prune_group;
  std::optional<uint64_t> keep[6];
  bool dry_run = false;
  prune->add_option("GROUP", prune_group, "vm/ID, or NS:vm/ID")->required();
  const char* keep_names[6] = {"--keep-last",   "--keep-hourly",  "--keep-daily",
                               "--keep-weekly", "--keep-monthly", "--keep-yearly"};
  for (int i = 0; i < 6; ++i) prune->add_option(keep_names[i], keep[i]);
  prune->add_flag("--dry-run", dry_run, "show keep/remove for each snapshot, remove nothing");

  auto* gc = app.add_subcommand("gc", "collect garbage in the datastore (Admin token)");
  bool gc_dry_run = false;
  bool gc_status = false;
  gc->add_flag("--dry-run", gc_dry_run, "count what would be removed, remove nothing");
  gc->add_flag("--status", gc_status, "show the last result instead of running one");

  auto* verify = app.add_subcommand("verify", "verify a snapshot, a group, or the whole datastore");
  std::string verify_target;
  bool verify_ignore = false;
  std::optional<uint64_t> verify_outdated;
  verify->add_option("TARGET", verify_target, "vm/ID/TIME, vm/ID, or nothing for everything");
  verify->add_flag("--ignore-verified", verify_ignore, "skip snapshots verified recently");
  verify->add_option("--outdated-after", verify_outdated, "days after which to verify again");

  auto* tasks = app.add_subcommand("tasks", "list recent tasks");
  auto* task = app.add_subcommand("task", "one task");
  task->require_subcommand(1);
  auto* task_log = task->add_subcommand("log", "print a task's log");
  std::string task_id;
  bool follow = false;
  task_log->add_option("ID", task_id)->required();
  task_log->add_flag("--follow", follow, "keep printing until the task ends");

  auto* backup = app.add_subcommand("backup", "back up a running VM or the disks of a shut-off one");
  backup->require_subcommand(1);
  auto* backup_vm = backup->add_subcommand("vm", "back up a running VM over QMP");
  auto* backup_image = backup->add_subcommand("image", "back up image files of a shut-off VM");
  std::string qmp_socket, backup_id, guest_agent, backup_time;
  std::vector<std::string> drives, image_files;
  bool require_freeze = false, full = false;
  int connections = 3;
  double rate_limit_mb = 0;
  backup_vm->add_option("--qmp", qmp_socket, "QEMU's QMP socket")->required();
  backup_vm->add_option("--drive", drives, "a disk's node name (default: every writable disk)");
  backup_vm->add_option("--guest-agent", guest_agent, "qemu-ga socket: freeze the guest's file systems");
  backup_vm->add_flag("--require-freeze", require_freeze, "fail when the guest cannot be frozen");
  double agent_timeout = 10;
  backup_vm->add_option("--agent-timeout", agent_timeout, "seconds to wait for each guest agent answer")
      ->check(CLI::Range(0.1, 3600.0));
  backup_image->add_option("FILE", image_files, "image files")->required();
  for (auto* c : {backup_vm, backup_image}) {
    c->add_option("--id", backup_id, "the VM's id: snapshots go to the group vm/ID")->required();
    c->add_flag("--full", full, "read every disk whole, whatever the bitmaps say");
    c->add_option("--backup-time", backup_time, "the snapshot's time (YYYY-MM-DDTHH:MM:SSZ; default now)");
    c->add_option("--connections", connections, "parallel upload connections")->check(CLI::Range(1, 16));
    c->add_option("--rate-limit", rate_limit_mb, "upload cap in MB/s (0 = none)")->check(CLI::NonNegativeNumber);
  }

  auto* restore = app.add_subcommand("restore", "restore a disk archive of a snapshot");
  std::string restore_snapshot, restore_archive, restore_target, restore_format = "raw";
  restore->add_option("SNAPSHOT", restore_snapshot, "vm/ID/YYYY-MM-DDTHH:MM:SSZ")->required();
  restore->add_option("ARCHIVE", restore_archive, "disk archive, e.g. disk0 or disk0.fidx")->required();
  restore->add_option("TARGET", restore_target, "file or block device to write")->required();
  restore->add_option("--format", restore_format, "raw or qcow2")
      ->check(CLI::IsMember({"raw", "qcow2"}));

  auto* bitmaps = app.add_subcommand("bitmaps", "each disk's bitmap and whether the next backup is incremental");
  std::string bitmaps_qmp, bitmaps_id;
  bitmaps->add_option("--qmp", bitmaps_qmp, "QEMU's QMP socket")->required();
  bitmaps->add_option("--id", bitmaps_id, "the VM's id, to check against the server's snapshots");
  auto* cleanup = app.add_subcommand("cleanup", "remove Cairn's bitmaps and leftover jobs from a VM");
  std::string cleanup_qmp;
  cleanup->add_option("--qmp", cleanup_qmp, "QEMU's QMP socket")->required();

  CLI11_PARSE(app, argc, argv);

  if (cleanup->parsed()) {
    auto qmp = cairn::client::QmpClient::Connect(cleanup_qmp);
    if (!qmp.ok()) return Fail(qmp.status());
    std::vector<std::string> actions;
    Status s = cairn::client::Cleanup(**qmp, &actions);
    if (output == "json") {
      std::cout << json({{"actions", actions}}).dump(2) << "\n";
    } else {
      for (const auto& a : actions) std::cout << a << "\n";
      if (actions.empty()) std::cout << "nothing of Cairn's on this VM\n";
    }
    return s.ok() ? 0 : Fail(s);
  }

  auto resolved = Repository::Resolve(repo, token_file, fingerprint);
  if (bitmaps->parsed()) {
    if (!bitmaps_id.empty() && !resolved.ok()) return Fail(resolved.status());
    auto j = cairn::client::DescribeBitmaps(resolved.ok() ? &*resolved : nullptr, bitmaps_qmp,
                                            bitmaps_id);
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    for (const auto& d : *j) {
      std::cout << d.value("node", "") << " (" << d.value("driver", "") << ", "
                << HumanSize(d.value("size", uint64_t{0})) << ") archive " << d.value("archive", "")
                << "\n";
      for (const auto& b : d["bitmaps"]) {
        std::cout << "  bitmap " << b.value("name", "") << "  "
                  << (b.value("recording", false) ? "recording" : "disabled")
                  << (b.value("persistent", false) ? ", persistent" : ", transient")
                  << (b.value("inconsistent", false) ? ", INCONSISTENT" : "") << ", dirty "
                  << HumanSize(b.value("dirty-bytes", uint64_t{0})) << "\n";
      }
      if (d["bitmaps"].empty()) std::cout << "  no Cairn bitmap\n";
      std::cout << "  next backup: " << d.value("next", "") << " — " << d.value("reason", "") << "\n";
    }
    return 0;
  }
  if (!resolved.ok()) return Fail(resolved.status());
  ApiClient api(*resolved);

  if (backup_vm->parsed() || backup_image->parsed()) {
    if (Status s = cairn::storage::ValidateName(cairn::storage::NameKind::kBackupId, backup_id);
        !s.ok()) {
      return Fail(s);
    }
    cairn::client::VmBackupOptions o;
    o.id = backup_id;
    o.full = full;
    o.upload.connections = connections;
    o.upload.rate_limit = static_cast<uint64_t>(rate_limit_mb * 1e6);
    if (!backup_time.empty()) {
      auto t = ParseTime(backup_time);
      if (!t.ok()) return Fail(t.status());
      o.backup_time = *t;
    }
    if (output != "json" && ::isatty(2)) o.progress = ShowProgress;
    o.note = [](const std::string& line) { std::cerr << "cairn: " << line << "\n"; };
    std::unique_ptr<cairn::client::StorageDaemon> daemon;
    if (backup_image->parsed()) {
      auto d = cairn::client::StorageDaemon::Start(image_files);
      if (!d.ok()) return Fail(d.status());
      daemon = std::move(d).value();
      o.qmp_socket = daemon->qmp_socket();
      for (const auto& img : daemon->images()) o.drives.push_back(img.node);
    } else {
      o.qmp_socket = qmp_socket;
      o.drives = drives;
      o.guest_agent = guest_agent;
      o.require_freeze = require_freeze;
      o.agent_timeout = std::chrono::milliseconds(static_cast<int64_t>(agent_timeout * 1000));
    }
    auto summary = cairn::client::BackupVm(*resolved, o);
    if (daemon) {
      // The bitmaps reach the qcow2 files when the daemon quits.
      Status stopped = daemon->Stop();
      if (!stopped.ok() && summary.ok()) {
        std::cerr << "cairn: warning: " << stopped.message()
                  << " (the snapshot is committed; the next backup may read everything)\n";
      }
    }
    if (!summary.ok()) return Fail(summary.status());
    if (output == "json") {
      std::cout << summary->dump() << "\n";
    } else {
      PrintSummary(*summary);
    }
    return 0;
  }

  if (restore->parsed()) {
    cairn::client::RestoreOptions ro;
    ro.format = restore_format;
    if (output != "json" && ::isatty(2)) {
      ro.progress = [](uint64_t done, uint64_t total) {
        std::fprintf(stderr, "\r\033[Krestored %s of %s", HumanSize(done).c_str(),
                     HumanSize(total).c_str());
        if (done >= total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
      };
    }
    auto r = cairn::client::RestoreArchive(*resolved, restore_snapshot, restore_archive,
                                           restore_target, ro);
    if (!r.ok()) return Fail(r.status());
    json j = {{"snapshot", restore_snapshot}, {"archive", restore_archive},
              {"target", restore_target},     {"format", restore_format},
              {"size", r->image_size},        {"chunks", r->chunks},
              {"zero-chunks", r->zero_chunks}, {"bytes-downloaded", r->bytes_downloaded},
              {"seconds", r->seconds},
              {"mb-per-s", r->seconds > 0 ? static_cast<double>(r->image_size) / 1e6 / r->seconds : 0.0}};
    if (output == "json") {
      std::cout << j.dump() << "\n";
    } else {
      std::cout << "restored " << restore_snapshot << " " << restore_archive << " to "
                << restore_target << " (" << restore_format << "): " << HumanSize(r->image_size)
                << ", " << r->chunks << " chunks (" << r->zero_chunks << " zero), "
                << r->seconds << " s, " << Rate(j["mb-per-s"].get<double>() * 1e6) << "\n";
    }
    return 0;
  }

  if (snapshots->parsed()) {
    std::string path = api.StorePath("/snapshots");
    if (!snap_id.empty()) {
      if (Status s = cairn::storage::ValidateName(cairn::storage::NameKind::kBackupId, snap_id);
          !s.ok()) {
        return Fail(s);
      }
      path += "?group=" + ApiClient::Escape("vm/" + snap_id);
    }
    auto j = Call(api.Get(path));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    for (const auto& s : *j) {
      if (s.contains("error")) {
        std::cout << s.value("snapshot", "?") << "  ERROR " << s["error"].get<std::string>() << "\n";
        continue;
      }
      std::string verify_state = s["verify"].is_object() ? s["verify"]["state"].get<std::string>() : "-";
      std::cout << s["snapshot"].get<std::string>() << "  " << HumanSize(s["size"].get<uint64_t>())
                << "  verify:" << verify_state << (s["protected"].get<bool>() ? "  protected" : "")
                << "\n";
    }
    return 0;
  }

  if (prune->parsed()) {
    json body = {{"group", prune_group}, {"dry-run", dry_run}};
    for (int i = 0; i < 6; ++i) {
      if (keep[i]) body[std::string(keep_names[i]).substr(2)] = *keep[i];
    }
    auto j = Call(api.PostJson(api.StorePath("/prune"), body));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
    } else {
      std::cout << "prune " << (*j)["group"].get<std::string>() << " "
                << (*j)["options"].get<std::string>() << (dry_run ? " (dry run)" : "")
                << ", periods in time zone " << (*j)["time-zone"].get<std::string>() << "\n";
      for (const auto& s : (*j)["snapshots"]) {
        const char* verdict = s["keep"].get<bool>() ? "keep" : (dry_run ? "remove" : "removed");
        std::cout << "  " << verdict << "  " << s["snapshot"].get<std::string>() << "  "
                  << s["reason"].get<std::string>();
        if (s.contains("error")) std::cout << "  ERROR: " << s["error"].get<std::string>();
        std::cout << "\n";
      }
      std::cout << (*j)["kept"] << " kept, " << (*j)["removed"]
                << (dry_run ? " to remove" : " removed") << "\n";
    }
    return (*j)["failed"].get<int>() == 0 ? 0 : 1;
  }
  if (gc->parsed()) {
    auto j = gc_status ? Call(api.Get(api.StorePath("/gc")))
                       : Call(api.PostJson(api.StorePath("/gc"), {{"dry-run", gc_dry_run}}));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    const json& r = *j;
    auto n = [&](const char* k) { return r.value(k, uint64_t{0}); };
    std::cout << "garbage collection" << (r.value("dry-run", false) ? " (dry run)" : "") << "\n"
              << "  on disk:  " << n("disk-chunks") << " chunks, " << HumanSize(n("disk-bytes")) << "\n"
              << "  removed:  " << n("removed-chunks") << " chunks, " << HumanSize(n("removed-bytes")) << "\n"
              << "  pending:  " << n("pending-chunks") << " chunks, " << HumanSize(n("pending-bytes")) << "\n"
              << "  bad:      " << n("bad-chunks") << "\n"
              << "  dedup factor " << r.value("dedup-factor", 0.0) << ", " << n("duration-ms")
              << " ms\n";
    return 0;
  }
  if (tasks->parsed()) {
    auto j = Call(api.Get("/api/v1/tasks?limit=50"));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    for (const auto& t : *j) {
      std::cout << t["id"].get<std::string>() << "  " << t["state"].get<std::string>() << "  "
                << t["auth-id"].get<std::string>() << "  " << t["summary"].get<std::string>() << "\n";
    }
    return 0;
  }
  // Prints a task's log from the start; with `wait`, until it ends. Returns
  // the task's final state.
  auto print_log = [&](const std::string& id, bool wait, bool print) -> cairn::storage::Result<std::string> {
    uint64_t offset = 0;
    while (true) {
      auto r = api.Get("/api/v1/tasks/" + ApiClient::Escape(id) + "/log?offset=" + std::to_string(offset));
      if (!r.ok()) return r.status();
      if (Status s = r->ToStatus(); !s.ok()) return s;
      if (print) std::cout << r->body << std::flush;
      offset += r->body.size();
      auto info = Call(api.Get("/api/v1/tasks/" + ApiClient::Escape(id)));
      if (!info.ok()) return info.status();
      std::string state = (*info)["state"].get<std::string>();
      if (state != "running" && r->body.empty()) return state;
      if (!wait && r->body.empty()) return state;
      if (r->body.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  };
  if (task_log->parsed()) {
    auto state = print_log(task_id, follow, true);
    if (!state.ok()) return Fail(state.status());
    return 0;
  }
  if (verify->parsed()) {
    json body = {{"target", verify_target}, {"ignore-verified", verify_ignore}};
    if (verify_outdated) body["outdated-after-days"] = *verify_outdated;
    auto started = Call(api.PostJson(api.StorePath("/verify"), body));
    if (!started.ok()) return Fail(started.status());
    std::string id = (*started)["task"];
    if (output != "json") std::cerr << "verification task " << id << "\n";
    auto state = print_log(id, true, output != "json");
    if (!state.ok()) return Fail(state.status());
    if (output == "json") {
      // The task's log ends with "RESULT {json}".
      auto log = api.Get("/api/v1/tasks/" + ApiClient::Escape(id) + "/log");
      if (log.ok()) {
        size_t pos = log->body.rfind(" RESULT ");
        if (pos != std::string::npos) {
          size_t end = log->body.find('\n', pos);
          std::cout << json::parse(log->body.substr(pos + 8, end - pos - 8), nullptr, false).dump(2)
                    << "\n";
        }
      }
    }
    return *state == "ok" ? 0 : 1;
  }
  return 0;
}
