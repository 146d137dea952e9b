#pragma once

// The configuration of `cairn backup all` (default /etc/cairn/backup.conf):
// where the backups go, which VMs of the host are backed up, per-VM
// overrides, the hook script and the report's notification. The format is
// TOML-like INI read with CLI11's config reader (CLI::ConfigTOML); every
// key is then checked here, so a typo is an error, never silently ignored.
// The file format, key by key, is in packaging/backup.conf.example and the
// README ("Nightly backups of a host").
//
//   repository = "https://backup.example:8107/default"
//   token-file = "/etc/cairn/backup.token"
//   fingerprint = "AB:CD:…"
//   jobs = 1                      # VMs at a time
//   [libvirt]                     # every domain of `uri` but `exclude`
//   uri = "qemu:///system"
//   exclude = ["scratch"]
//   [[qemu]]                      # a plain QEMU VM
//   id = "100"
//   qmp = "/run/vm100.qmp"
//   [[image]]                     # image files of a shut-off VM
//   id = "200"
//   files = ["/var/lib/vms/200.qcow2"]
//   [[domain]]                    # overrides for one libvirt domain
//   name = "db01"
//   [notify]
//   mail-to = "ops@example.org"
//
// Errors are InvalidArgument naming the file, the section and the key.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/domain_backup.h"
#include "client/notify_send.h"
#include "storage/status.h"

namespace cairn::client {

inline constexpr const char* kDefaultBackupConfig = "/etc/cairn/backup.conf";

// What a VM entry may override.
struct VmOverrides {
  std::vector<std::string> skip_disks;   // node names / device ids / targets
  std::optional<QuiescePolicy> quiesce;  // none, try, require
  std::optional<double> rate_limit_mb;   // MB/s; 0 = none
  bool full = false;                     // read every disk whole
};

// [[qemu]]: a running VM started by hand or by another tool.
struct QemuVmEntry {
  std::string id;           // group vm/<id>
  std::string qmp;          // QMP socket
  std::string guest_agent;  // qemu-ga socket, "" = none
  VmOverrides overrides;
};

// [[image]]: the image files of a shut-off VM (qemu-storage-daemon).
struct ImageEntry {
  std::string id;
  std::vector<std::string> files;
  VmOverrides overrides;
};

// [[domain]]: overrides for one libvirt domain of [libvirt].
struct DomainEntry {
  std::string name;  // domain name or UUID
  std::string id;    // "" = BackupDomain's default
  VmOverrides overrides;
};

struct BackupConfig {
  std::string path;  // the file it came from ("" when parsed from text)
  std::string repository, token_file, fingerprint;
  int jobs = 1;
  std::string hook;             // script; "" = none
  int hook_timeout = 600;       // seconds per hook call
  std::string log_dir;          // "" = DefaultBackupLogDir()
  int connections = 3;          // upload connections per VM
  double rate_limit_mb = 0;     // default per VM; 0 = none
  bool encrypt = false;
  std::string keyfile, passphrase_file, master_pubkey;

  bool libvirt = false;  // a [libvirt] section is present
  std::string libvirt_uri = "qemu:///system";
  std::vector<std::string> libvirt_exclude;

  std::vector<QemuVmEntry> qemu;
  std::vector<ImageEntry> images;
  std::vector<DomainEntry> domains;

  NotifierOptions notify;          // mail-to, sendmail, webhook, webhook-ca
  bool notify_on_failure_only = false;  // notify = "failure"
};

// Parses the text of a config file; `name` is used in error messages.
Result<BackupConfig> ParseBackupConfig(std::string_view text, const std::string& name);
// Reads and parses `path`: NotFound when it does not exist.
Result<BackupConfig> LoadBackupConfig(const std::string& path);

// /var/log/cairn for root, else $XDG_STATE_HOME/cairn (~/.local/state/cairn).
std::string DefaultBackupLogDir();

}  // namespace cairn::client
