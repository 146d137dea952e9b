#pragma once

// TEMP until wt-domain merges: a copy of the interface fixed in the session
// contract between helper A (who implements it in client/domain_backup.{h,cc})
// and `cairn backup all` (client/host_backup.cc, which calls it). When
// wt-domain lands, take A's version of this file and delete
// client/domain_backup_temp.cc.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "client/backup_upload.h"
#include "storage/status.h"

namespace cairn::client {

enum class QuiescePolicy { kNone, kTry, kRequire };  // --quiesce = kTry, --require-quiesce = kRequire

struct DomainBackupOptions {
  std::string uri = "qemu:///system";
  std::string domain;               // name or UUID
  std::string id;                   // group vm/<id>; "" = domain name if a valid id, else its UUID
  std::vector<std::string> disks;   // target names (vda, sdb); empty = every eligible disk
  bool full = false;
  QuiescePolicy quiesce = QuiescePolicy::kNone;
  std::optional<int64_t> backup_time;
  UploadOptions upload;             // connections, rate_limit, crypt, ...
  std::function<void(const nlohmann::json&)> progress;
  std::function<void(const std::string&)> note;
};

// Backs up one libvirt domain (running: pull-mode backup job + checkpoint;
// shut off: its disk images through the existing qemu-storage-daemon path).
// Summary JSON as BackupVm's (client/vm_backup.h) plus "domain", "uri",
// "checkpoint" and per disk "target" and "skipped" lines. OK only when committed.
Result<nlohmann::json> BackupDomain(const Repository& repo, const DomainBackupOptions& options);

// What BackupDomain would do, touching nothing: {"domain","id","group","state",
// "disks":[{"target","archive","mode":"full"|"incremental","reason"}],"skipped":[{"target","reason"}]}.
// repo may be null (then every disk is "full", reason "no repository to ask").
Result<nlohmann::json> PlanDomainBackup(const Repository* repo, const DomainBackupOptions& options);

// Names of every domain defined on `uri` (running or not), sorted.
Result<std::vector<std::string>> ListDomains(const std::string& uri);

}  // namespace cairn::client
