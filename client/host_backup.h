#pragma once

// `cairn backup all`: every VM of a host that the config names
// (client/backup_config.h) — libvirt domains (BackupDomain,
// client/domain_backup.h), plain QEMU VMs (BackupVm, client/vm_backup.h)
// and image files of shut-off VMs (BackupVm on qemu-storage-daemon,
// client/storage_daemon.h) — one after another or `jobs` at a time, each
// in its own thread with its own UploadSession. One VM's failure never
// stops the others. The hook script (client/backup_hook.h) is called at
// vzdump's phases. Each VM writes its notes and its hook output to
// <log-dir>/<vm>.log (the latest run only; the job's own phases go to
// <log-dir>/backup-all.log).
//
// SIGINT/SIGTERM: the VMs running end cleanly as a single `backup vm`
// does, the VMs not started are "not run", job-abort is called.
//
// The report (RunHostBackup's value, `--output json`):
//   {"host", "repository", "started" (epoch s), "seconds", "jobs",
//    "ok": every VM committed, "interrupted": bool,
//    "committed", "failed" (counts), "hook-errors": [job-level lines],
//    "log-dir",
//    "vms": [{"vm" (id, or the domain's name), "kind": "qemu"|"image"|"domain",
//             "group", "result": "ok"|"failed"|"not run", "mode", "why",
//             "snapshot", "bytes-read", "bytes-uploaded", "seconds",
//             "error" (when not ok), "hook-errors": [...], "log-file",
//             "summary": the VM's own backup summary}]}
//
// Thread safety: the functions may be called from any one thread; they
// start and join their own worker threads.

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "client/backup_config.h"
#include "client/backup_upload.h"
#include "storage/status.h"

namespace cairn::client {

struct HostBackupOptions {
  int jobs = 0;        // > 0 overrides the config's
  std::string hook;    // "" = the config's
  // Connections, encryption, master key: the same for every VM (the rate
  // limit comes from the config and the VM's override).
  UploadOptions upload;
  // Lines for the user as they happen ("[vm] …"); called from the worker
  // threads, one call at a time.
  std::function<void(const std::string&)> note;
};

// Backs up every VM and returns the report (above). Fails only for what
// stops the whole run before any VM (none so far: per-VM problems,
// libvirt's listing included, are rows of the report).
Result<nlohmann::json> RunHostBackup(const Repository& repo, const BackupConfig& config,
                                     const HostBackupOptions& options);

// `--dry-run`: which VMs and disks would be backed up and whether each
// would be a full or an incremental read, and why — touching nothing (QMP
// queries, `qemu-img info -U`, libvirt's plan, the server's snapshot
// list). `repo` null: the server is not asked. {"dry-run": true, "ok",
// "vms": [{"vm", "kind", "group", "disks": [{"disk", "archive", "mode",
// "reason"}], "skipped": [{"disk", "reason"}], "error"}]}
nlohmann::json PlanHostBackup(const Repository* repo, const BackupConfig& config);

// The report and the plan as text tables (one row per VM, or per disk).
std::string ReportTable(const nlohmann::json& report);
std::string PlanTable(const nlohmann::json& plan);

// Sends the report as the config's [notify] says (mail and/or webhook);
// OK without sending when nothing is configured or `when = failure` and
// every VM committed. The webhook body's "event" is "backup-job" and its
// "data" the report.
Status NotifyReport(const BackupConfig& config, const nlohmann::json& report);

}  // namespace cairn::client
