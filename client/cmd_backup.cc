// cairn backup vm --qmp SOCKET --id ID / cairn backup image --id ID FILE… /
// cairn backup domain NAME: back up a running VM over QMP, the image files of
// a shut-off one (through qemu-storage-daemon), or a libvirt domain
// (client/domain_backup.h), and print the summary. With --encrypt
// [--keyfile F] [--passphrase-file P] [--master-pubkey PEM] every chunk is
// encrypted with the key file's key (client/backup_upload.h).

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>

#include "client/cli.h"
#include "client/domain_backup.h"
#include "client/encryption_key.h"
#include "client/storage_daemon.h"
#include "client/vm_backup.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

using nlohmann::json;

struct BackupFlags {
  std::string qmp_socket, id, guest_agent, backup_time;
  std::vector<std::string> drives, image_files;
  bool require_freeze = false, full = false;
  int connections = 3;
  double rate_limit_mb = 0;
  double agent_timeout = 10;
  bool encrypt = false;
  KeyOptions key;
  std::string master_pubkey;
  // backup domain
  std::string domain, uri = "qemu:///system";
  std::vector<std::string> domain_disks;
  bool quiesce = false, require_quiesce = false, dry_run = false;
};

// --encrypt: the key (and, with --master-pubkey, its copy for the master key).
Status SetUpEncryption(const BackupFlags& flags, UploadOptions* upload) {
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey key, LoadKey(flags.key));
  CAIRN_ASSIGN_OR_RETURN(storage::CryptConfig crypt, key.Config());
  upload->crypt = std::make_shared<const storage::CryptConfig>(std::move(crypt));
  if (!flags.master_pubkey.empty()) {
    CAIRN_ASSIGN_OR_RETURN(std::string pem, ReadSmallFile(flags.master_pubkey));
    Result<std::string> sealed =
        EncryptKeyForMaster(pem, key.key, key.fingerprint, key.created);
    if (!sealed.ok()) return sealed.status().WithContext("--master-pubkey " + flags.master_pubkey);
    upload->master_key = std::move(sealed).value();
  }
  return Status::OK();
}

// --backup-time: "2026-11-21T10:00:00Z" or seconds since the epoch.
Result<int64_t> ParseBackupTime(const std::string& text) {
  if (auto t = storage::ParseSnapshotTime(text); t.ok()) return *t;
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size() && seconds >= 0) {
    return seconds;
  }
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

// The one-line summary of a backup (BackupVm's summary).
void PrintSummary(const json& s) {
  std::cout << "snapshot " << s.value("snapshot", "") << ": " << s.value("mode", "");
  std::string why;
  if (auto disks = s.find("disks"); disks != s.end() && disks->is_array()) {
    for (const auto& d : *disks) {
      why += (why.empty() ? "" : "; ") + d.value("archive", "") + " " + d.value("mode", "") + ": " +
             d.value("reason", "");
    }
  }
  std::cout << " (" << why << "), " << s.value("consistency", "") << "-consistent, read "
            << HumanSize(s.value("bytes-read", uint64_t{0})) << ", dirty "
            << s.value("chunks-dirty", uint64_t{0}) << " chunks, uploaded "
            << s.value("chunks-uploaded", uint64_t{0}) << " chunks ("
            << HumanSize(s.value("bytes-uploaded", uint64_t{0})) << "), reused "
            << s.value("chunks-reused", uint64_t{0}) + s.value("chunks-known", uint64_t{0})
            << " chunks, " << s.value("seconds", 0.0) << " s, "
            << Rate(s.value("mb-per-s", 0.0) * 1e6);
  if (s.value("encrypted", false)) {
    std::cout << ", encrypted with key " << s.value("fingerprint", "");
  }
  std::cout << "\n";
}

// The options `backup vm`, `image` and `domain` share (upload, encryption,
// time, output).
Status SetUpCommon(const GlobalOptions& global, const BackupFlags& flags, UploadOptions* upload,
                   std::optional<int64_t>* backup_time,
                   std::function<void(const json&)>* progress,
                   std::function<void(const std::string&)>* note) {
  upload->connections = flags.connections;
  upload->rate_limit = static_cast<uint64_t>(flags.rate_limit_mb * 1e6);
  if (flags.encrypt) {
    // Before anything starts: a passphrase prompt must not hold a session open.
    CAIRN_RETURN_IF_ERROR(SetUpEncryption(flags, upload));
  }
  if (!flags.backup_time.empty()) {
    CAIRN_ASSIGN_OR_RETURN(*backup_time, ParseBackupTime(flags.backup_time));
  }
  if (!global.json() && ::isatty(2)) *progress = ShowProgress;
  *note = [](const std::string& line) { std::cerr << "cairn: " << line << "\n"; };
  return Status::OK();
}

int RunDomainBackup(const GlobalOptions& global, const BackupFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  if (!flags.id.empty()) {
    if (Status s = storage::ValidateName(storage::NameKind::kBackupId, flags.id); !s.ok()) {
      return Fail(s);
    }
  }
  DomainBackupOptions o;
  o.uri = flags.uri;
  o.domain = flags.domain;
  o.id = flags.id;
  o.disks = flags.domain_disks;
  o.full = flags.full;
  o.quiesce = flags.require_quiesce ? QuiescePolicy::kRequire
              : flags.quiesce       ? QuiescePolicy::kTry
                                    : QuiescePolicy::kNone;
  if (Status s = SetUpCommon(global, flags, &o.upload, &o.backup_time, &o.progress, &o.note);
      !s.ok()) {
    return Fail(s);
  }
  auto summary = flags.dry_run ? PlanDomainBackup(&*repo, o) : BackupDomain(*repo, o);
  if (!summary.ok()) return Fail(summary.status());
  if (flags.dry_run) {
    std::cout << summary->dump(global.json() ? -1 : 2) << "\n";
    return 0;
  }
  if (global.json()) {
    std::cout << summary->dump() << "\n";
  } else {
    PrintSummary(*summary);
  }
  return 0;
}

int RunBackup(const GlobalOptions& global, const BackupFlags& flags, bool image) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  if (Status s = storage::ValidateName(storage::NameKind::kBackupId, flags.id); !s.ok()) {
    return Fail(s);
  }
  VmBackupOptions o;
  o.id = flags.id;
  o.full = flags.full;
  o.upload.connections = flags.connections;
  o.upload.rate_limit = static_cast<uint64_t>(flags.rate_limit_mb * 1e6);
  if (flags.encrypt) {
    // Before anything starts: a passphrase prompt must not hold a session open.
    if (Status s = SetUpEncryption(flags, &o.upload); !s.ok()) return Fail(s);
  }
  if (!flags.backup_time.empty()) {
    auto t = ParseBackupTime(flags.backup_time);
    if (!t.ok()) return Fail(t.status());
    o.backup_time = *t;
  }
  if (!global.json() && ::isatty(2)) o.progress = ShowProgress;
  o.note = [](const std::string& line) { std::cerr << "cairn: " << line << "\n"; };
  std::unique_ptr<StorageDaemon> daemon;
  if (image) {
    auto d = StorageDaemon::Start(flags.image_files);
    if (!d.ok()) return Fail(d.status());
    daemon = std::move(d).value();
    o.qmp_socket = daemon->qmp_socket();
    for (const auto& img : daemon->images()) o.drives.push_back(img.node);
  } else {
    o.qmp_socket = flags.qmp_socket;
    o.drives = flags.drives;
    o.guest_agent = flags.guest_agent;
    o.require_freeze = flags.require_freeze;
    o.agent_timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.agent_timeout * 1000));
  }
  auto summary = BackupVm(*repo, o);
  if (daemon) {
    // The bitmaps reach the qcow2 files when the daemon quits.
    Status stopped = daemon->Stop();
    if (!stopped.ok() && summary.ok()) {
      std::cerr << "cairn: warning: " << stopped.message()
                << " (the snapshot is committed; the next backup may read everything)\n";
    }
  }
  if (!summary.ok()) return Fail(summary.status());
  if (global.json()) {
    std::cout << summary->dump() << "\n";
  } else {
    PrintSummary(*summary);
  }
  return 0;
}

}  // namespace

void AddBackupCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<BackupFlags>();
  auto* backup =
      app.add_subcommand("backup", "back up a running VM or the disks of a shut-off one");
  backup->require_subcommand(1);
  auto* vm = backup->add_subcommand("vm", "back up a running VM over QMP");
  auto* image = backup->add_subcommand("image", "back up image files of a shut-off VM");
  auto* domain = backup->add_subcommand(
      "domain", "back up a libvirt domain (running: libvirt's backup API; shut off: its images)");
  domain->add_option("NAME", flags->domain, "the domain's name or UUID")->required();
  domain->add_option("--connect,-c", flags->uri, "libvirt URI (default qemu:///system)");
  domain->add_option("--id", flags->id,
                     "the VM's id: snapshots go to the group vm/ID (default: the domain's name "
                     "if a valid id, else its UUID)");
  domain->add_option("--disk", flags->domain_disks,
                     "a disk's target name, e.g. vda (default: every eligible disk)");
  auto* quiesce = domain->add_flag("--quiesce", flags->quiesce,
                                   "freeze the guest's file systems through libvirt's guest agent");
  domain->add_flag("--require-quiesce", flags->require_quiesce,
                   "like --quiesce, but fail when the guest cannot be frozen")
      ->excludes(quiesce);
  domain->add_flag("--dry-run", flags->dry_run,
                   "print what would be backed up, full or incremental and why; touch nothing");
  vm->add_option("--qmp", flags->qmp_socket, "QEMU's QMP socket")->required();
  vm->add_option("--drive", flags->drives, "a disk's node name (default: every writable disk)");
  vm->add_option("--guest-agent", flags->guest_agent,
                 "qemu-ga socket: freeze the guest's file systems");
  vm->add_flag("--require-freeze", flags->require_freeze, "fail when the guest cannot be frozen");
  vm->add_option("--agent-timeout", flags->agent_timeout,
                 "seconds to wait for each guest agent answer")
      ->check(CLI::Range(0.1, 3600.0));
  image->add_option("FILE", flags->image_files, "image files")->required();
  for (auto* c : {vm, image}) {
    c->add_option("--id", flags->id, "the VM's id: snapshots go to the group vm/ID")->required();
  }
  for (auto* c : {vm, image, domain}) {
    c->add_flag("--full", flags->full, "read every disk whole, whatever the bitmaps say");
    c->add_option("--backup-time", flags->backup_time,
                  "the snapshot's time (YYYY-MM-DDTHH:MM:SSZ; default now)");
    c->add_option("--connections", flags->connections, "parallel upload connections")
        ->check(CLI::Range(1, 16));
    c->add_option("--rate-limit", flags->rate_limit_mb, "upload cap in MB/s (0 = none)")
        ->check(CLI::NonNegativeNumber);
    CLI::Option* encrypt =
        c->add_flag("--encrypt", flags->encrypt, "encrypt every chunk with the key file's key");
    AddKeyOptions(c, &flags->key)->needs(encrypt);
    c->add_option("--master-pubkey", flags->master_pubkey,
                  "also store the key encrypted for this master public key (PEM; "
                  "`cairn key recover` gets it back)")
        ->needs(encrypt);
  }
  commands->push_back({vm, [&global, flags] { return RunBackup(global, *flags, false); }});
  commands->push_back({image, [&global, flags] { return RunBackup(global, *flags, true); }});
  commands->push_back({domain, [&global, flags] { return RunDomainBackup(global, *flags); }});
}

}  // namespace cairn::client
