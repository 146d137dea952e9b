#pragma once

// Backup of a libvirt domain (issue 10, client/INGEST.md "libvirt domains").
//
// Running domain: libvirt's pull-mode backup API. virDomainBackupBegin with a
// new checkpoint (kCheckpointPrefix "cairn-cp-<time>-<hex>", client/vm_backup.h;
// one bitmap per qcow2 disk)
// exports the point-in-time disks over NBD on a unix socket in a private
// temporary directory (scratch files there too); the client reads them with
// libnbd (client/nbd_reader.h) into the ArchiveWriters of one UploadSession:
// for an incremental only the chunks the "qemu:dirty-bitmap:backup-<disk>"
// meta context reports dirty since the checkpoint the group's newest
// snapshot recorded (manifest client info "checkpoint"), for a full the
// "base:allocation" extents (holes and zeros are never read).
//
// Checkpoint bookkeeping: every run creates a checkpoint; the snapshot's
// manifest records it; after the server committed, Cairn's older checkpoints
// are deleted (never another tool's). A failed run deletes the checkpoint it
// made (best effort); one left by a killed run is harmless (libvirt computes
// an incremental from any earlier checkpoint) and is deleted after the next
// commit. A backup job left by a killed client (its socket is in a
// "/tmp/cairn-domain-<pid>-*" directory of a dead process) is aborted at the
// start of the next run. Any doubt → a full read with the reason.
//
// Shut-off domain: its disk images go through qemu-storage-daemon and
// BackupVm (client/storage_daemon.h, client/vm_backup.h), archives named
// after the disk targets, incremental from one offline backup to the next.
//
// Thread safety: one call at a time per domain; the functions keep no state.

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
