#pragma once

// Live restore (client/MAP.md "Live restore"): a VM already runs on a qcow2
// overlay whose backing file is a `cairn map` export; LiveRestore copies the
// VM's disk — the snapshot plus whatever the VM wrote since — to a local
// raw file while the VM keeps running, then switches the VM onto it.
//
// Steps, all through the VM's QMP socket:
//  1. find the disk node (`node`, or the one node whose backing file is an
//     NBD URI) and check its size is the archive's (`expected_size`);
//  2. create `<target>.cairn-live.<pid>` (0600) at that size and
//     blockdev-add it as a raw node;
//  3. blockdev-mirror node → target, sync=full, copy-mode=background (the
//     default; write-blocking lost a guest write made at the job's start on
//     QEMU 7.2 in tests/integration/map_test.sh, so it is not used), an
//     optional speed limit (and then a smaller buf-size, so the start does
//     not burst past it);
//  4. poll query-block-jobs (progress) until the job is ready;
//  5. block-job-complete: QEMU switches every user of the node onto the
//     target (BLOCK_JOB_COMPLETED without an error);
//  6. rename the file to `target` (QEMU keeps its descriptor), fsync the
//     folder; blockdev-del the old node (closing the NBD connection to the
//     export; a node QEMU does not let go of is reported in `notes`).
// A failure before step 5 cancels the job, deletes the target node and the
// file: `target` is untouched and the VM stays on the export. A failure
// after it is reported but the VM already runs on the new file.
//
// Not thread-safe; uses the QMP connection exclusively (QMP serves one
// client per socket: give the VM a second -qmp socket for this).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "storage/status.h"

namespace cairn::client {

struct LiveRestoreOptions {
  std::string qmp_socket;
  std::string node;  // "" = the node whose backing is an NBD export
  std::string target;  // a new raw file (an existing file is replaced at the switch)
  uint64_t expected_size = 0;  // the archive's size; 0 = not checked
  uint64_t speed = 0;          // mirror limit in bytes/s; 0 = none
  std::chrono::milliseconds timeout{std::chrono::hours(24)};
  // (bytes copied, bytes total), a few times a second, from the calling thread.
  std::function<void(uint64_t, uint64_t)> progress;
};

struct LiveRestoreResult {
  std::string node;         // the node that was mirrored
  std::string target_node;  // the node the VM now runs on
  uint64_t size = 0;
  double seconds = 0;
  std::vector<std::string> notes;
};

// See above. InvalidArgument for a node that is not there or has the wrong
// size, or a target that exists and is not a regular file; IOError/QEMU's
// error for the job (with the job's error message).
storage::Result<LiveRestoreResult> LiveRestore(const LiveRestoreOptions& options);

}  // namespace cairn::client
