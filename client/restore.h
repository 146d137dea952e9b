#pragma once

// Restore of one disk archive from a snapshot (DESIGN.md §4 "Restore"):
// a reader session, the fixed index, chunks fetched in parallel on several
// connections, each chunk's SHA-256 checked against the index before a byte
// of it is written, and a sparse image: all-zero chunks are holes.
//
// Formats: raw (the file, or a block device, written in place; a regular
// file is created or truncated to the image size first) and qcow2 (a sparse
// raw image is written to a temporary file next to the target, then
// converted with `qemu-img convert -O qcow2`, and removed).
//
// The target is written under a temporary name and renamed into place only
// when every chunk was verified, so a failed restore never leaves a target
// that looks complete (a block device is written in place; a failure then
// says so).

#include <cstdint>
#include <functional>
#include <string>

#include "client/api_client.h"
#include "storage/status.h"

namespace cairn::client {

struct RestoreOptions {
  std::string format = "raw";  // "raw" or "qcow2"
  int connections = 4;
  // Called from the restoring thread with (bytes done, bytes total) at most
  // a few times per second, and once at the end.
  std::function<void(uint64_t, uint64_t)> progress;
};

struct RestoreResult {
  uint64_t image_size = 0;
  uint64_t chunks = 0;
  uint64_t zero_chunks = 0;       // written as holes, not fetched
  uint64_t bytes_downloaded = 0;  // blob bytes fetched
  double seconds = 0;
};

// Restores `archive` ("disk0.fidx", or without ".fidx") of `snapshot`
// ("vm/100/2026-11-21T10:00:00Z") to `target`. Errors: NotFound for an
// unknown snapshot or archive, Corruption when a chunk does not match its
// digest (nothing is left at `target` then), IOError for the target or the
// transport, InvalidArgument for a bad format.
Result<RestoreResult> RestoreArchive(const Repository& repo, const std::string& snapshot,
                                     const std::string& archive, const std::string& target,
                                     const RestoreOptions& options);

}  // namespace cairn::client
