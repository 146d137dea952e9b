#pragma once

// Backup of a running VM's disks over QMP (DESIGN.md §4, client/INGEST.md):
// persistent dirty bitmaps, one transaction for every disk, drive-backup into
// an NbdSink per disk, ArchiveWriter → UploadSession → the server.
//
// The bitmap invariant: each disk has at most one bitmap of Cairn's (name
// prefix "cairn-"), and after a committed snapshot it covers every write
// since that snapshot. Its name is recorded in the snapshot's manifest
// (client info "disks"), so the next run knows whether it may read only the
// dirty chunks: the bitmap's name must be the one the group's newest snapshot
// recorded for that disk, the size unchanged, and the bitmap consistent and
// recording, and the snapshot taken with the same encryption key (or both
// plain). Anything else is a full read (chunks the server holds are still
// not uploaded, unless the key changed), and the reason is reported.
//
// No state is kept on the host: QEMU holds the bitmaps (in the qcow2 file for
// persistent ones), the server holds which bitmap each snapshot belongs to.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "client/backup_upload.h"
#include "client/qmp_client.h"
#include "storage/status.h"

namespace cairn::client {

inline constexpr const char* kBitmapPrefix = "cairn-";
inline constexpr const char* kJobPrefix = "cairn-";
// libvirt checkpoints made by `cairn backup domain` (and their bitmaps, which
// libvirt names after them): left alone by the QMP path.
inline constexpr const char* kCheckpointPrefix = "cairn-cp-";

// A bitmap as query-named-block-nodes shows it.
struct BitmapInfo {
  std::string name;
  bool recording = false;
  bool busy = false;
  bool persistent = false;
  bool inconsistent = false;
  uint64_t granularity = 0;
  uint64_t count = 0;  // dirty bytes
};

// A disk: a writable format node (qcow2, raw, ...).
struct DiskInfo {
  std::string node;     // node name
  std::string device;   // guest device / drive id when the node has an auto name
  std::string archive;  // "<name>.fidx"
  std::string driver;   // "qcow2", "raw", ...
  std::string filename;
  uint64_t size = 0;                 // virtual size in bytes
  std::vector<BitmapInfo> bitmaps;   // Cairn's own only
  std::vector<std::string> others;   // names of other tools' bitmaps (left alone)
  std::string removed_inconsistent;  // set by RepairDisks: the bitmap it had to remove
  bool persistent_bitmaps() const { return driver == "qcow2"; }
};

// Lists the VM's disks: every writable format node with a usable name.
// `only` (node names or device ids) restricts the list; a name in it that is
// not a disk is NotFound.
Result<std::vector<DiskInfo>> ListDisks(QmpClient& qmp, const std::vector<std::string>& only);

// What the next backup of `disk` will do, given the group's newest snapshot
// (the "previous" of a backup start, or null) — {incremental, reason}.
// Encryption is not looked at here: BackupVm makes an incremental plan full
// when CryptChange (client/backup_upload.h) says the key changed.
struct DiskPlan {
  bool incremental = false;
  std::string reason;
  std::string bitmap;  // the bitmap the run builds on ("" = none to keep)
};
DiskPlan PlanDisk(const DiskInfo& disk, const nlohmann::json& previous, bool force_full);

// Repairs what an earlier run that was killed left behind: Cairn's block
// jobs still present (cancelled), inconsistent bitmaps (removed: QEMU cannot
// use or clear them), and two or more Cairn bitmaps on one disk (the one the
// newest snapshot recorded is kept, with the others merged into it when it
// was disabled by the killed run; if none was recorded, all are removed).
// `previous` as for PlanDisk. Appends one line per action to *actions.
Status RepairDisks(QmpClient& qmp, std::vector<DiskInfo>* disks, const nlohmann::json& previous,
                   std::vector<std::string>* actions);

// Removes every Cairn bitmap and job (`cairn cleanup`).
Status Cleanup(QmpClient& qmp, std::vector<std::string>* actions);

struct VmBackupOptions {
  std::string qmp_socket;
  std::string id;                   // the group is vm/<id>
  std::vector<std::string> drives;  // empty = every writable disk
  // Archive base names by node (backup image names archives after files).
  std::vector<std::pair<std::string, std::string>> archive_names;
  std::string guest_agent;  // qemu-ga socket; "" = none
  bool require_freeze = false;
  std::chrono::milliseconds agent_timeout{10000};
  bool full = false;
  std::optional<int64_t> backup_time;
  UploadOptions upload;
  // Called about 4 times a second while the jobs run, and once at the end.
  std::function<void(const nlohmann::json&)> progress;
  // Lines worth telling the user (repairs, fallbacks, warnings).
  std::function<void(const std::string&)> note;
};

// SIGINT and SIGTERM while a backup runs end it cleanly ("interrupted by a
// signal": jobs cancelled, bitmaps merged back, session aborted). A scope
// installs that handler for its lifetime; scopes nest and may overlap in
// several threads (`cairn backup all --jobs N`): the first one installs the
// handler, the last one restores what was there before. BackupVm opens one
// itself. Thread-safe.
class InterruptScope {
 public:
  InterruptScope();
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
};
// Whether SIGINT or SIGTERM arrived since the outermost open scope began.
bool Interrupted();

// Runs one backup. The summary (as printed by `cairn backup --output json`):
// {"snapshot", "mode": "incremental"|"full"|"mixed", "consistency",
//  "encrypted": bool, "fingerprint": FP | null, "crypt-change" (only when
//  the previous snapshot's key differs: CryptChange, also each disk's reason),
//  "disks": [{"node", "archive", "size", "mode", "reason", "bytes-read",
//             "chunks-dirty", "chunks-uploaded", "chunks-reused", ...}],
//  "bytes-read", "chunks-dirty", "chunks-uploaded", "bytes-uploaded",
//  "chunks-reused", "chunks-known", "seconds", "mb-per-s", "server": {...}}
// OK only when the server committed the snapshot.
Result<nlohmann::json> BackupVm(const Repository& repo, const VmBackupOptions& options);

// `cairn bitmaps`: each disk, its bitmaps and what the next backup would do.
Result<nlohmann::json> DescribeBitmaps(const Repository* repo, const std::string& qmp_socket,
                                       const std::string& id);

}  // namespace cairn::client
