#pragma once

// NbdReader: reads one NBD export with libnbd (Debian's libnbd-dev) into an
// NbdSinkHandler (an ArchiveWriter), the way QEMU's backup job pushes into
// NbdSink — used for libvirt's pull-mode backups (client/domain_backup.h).
//
// Two modes:
//  - full: the "base:allocation" meta context; extents with the zero flag go
//    to OnZero and are never read, the rest is read and goes to OnWrite.
//    Every byte of the export is covered exactly once.
//  - dirty: a "qemu:dirty-bitmap:NAME" context; every 4 MiB chunk (the
//    archive's chunk size) that holds a dirty extent is read whole and goes
//    to OnWrite (an incremental ArchiveWriter keeps the other chunks).
//
// Reads are pipelined: up to `in_flight` 4 MiB requests are outstanding on
// the one connection; handler calls are made in offset order from the
// calling thread. Errors: IOError with libnbd's message (connection,
// missing meta context, read), or the handler's error. `cancel`, when set,
// stops the read with IOError.

#include <atomic>
#include <cstdint>
#include <string>

#include "client/nbd_sink.h"
#include "storage/status.h"

namespace cairn::client {

struct NbdReadOptions {
  std::string socket_path;   // unix socket of the NBD server
  std::string export_name;   // e.g. "vda"
  std::string meta_context;  // "base:allocation" or "qemu:dirty-bitmap:backup-vda"
  bool dirty = false;        // meta_context is a dirty bitmap (see above)
  uint64_t chunk_size = 4u << 20;
  int in_flight = 4;
  const std::atomic<bool>* cancel = nullptr;
};

struct NbdReadStats {
  std::atomic<uint64_t> bytes_read{0};    // payload read over NBD
  std::atomic<uint64_t> bytes_zero{0};    // reported as zero, not read
  std::atomic<uint64_t> chunks_dirty{0};  // dirty mode: chunks read
  uint64_t export_size = 0;
};

// Reads the export; `expected_size` (when not 0) must match its size.
Status ReadNbdExport(const NbdReadOptions& options, uint64_t expected_size,
                     NbdSinkHandler* handler, NbdReadStats* stats);

}  // namespace cairn::client
