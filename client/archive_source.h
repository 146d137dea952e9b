#pragma once

// ArchiveSource: random read access to one disk archive of a snapshot, the
// data behind `cairn map` (client/nbd_export.h, client/MAP.md).
//
// Open() opens a reader session on the server, reads the manifest (which
// must be that of the snapshot asked for), checks an encrypted snapshot's
// key and signature exactly as RestoreArchive does (client/restore.h), and
// reads the archive's fixed index (checked against the manifest's size and
// checksum). `TYPE/ID/latest` names the newest snapshot of the group.
//
// Read() serves bytes from the chunks: a chunk is fetched on first use
// through the reader session, decoded (decrypted with the key), its length
// and digest checked against the index — a chunk that fails any check is
// Corruption and no byte of it is ever returned — and kept in a bounded LRU
// cache in memory (keyed by digest: equal chunks are fetched once). All-zero
// chunks (the index's zero digest) are never fetched. Reads that walk
// forward (chunk i read while chunk i-1 is cached) make background threads
// prefetch the next chunks. A chunk two readers want at once is fetched
// once; the second waits for the first.
//
// Sessions time out on the server when idle (900 s by default): a keepalive
// thread asks for the manifest every minute while nothing else was asked.
// Close() (and the destructor) stops the threads and ends the reader session.
//
// Thread safety: every method may be called from any number of threads at
// once, except Close() and the destructor.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "client/api_client.h"
#include "storage/crypt_config.h"
#include "storage/fixed_index.h"
#include "storage/status.h"

namespace cairn::client {

struct ArchiveSourceOptions {
  uint64_t cache_bytes = 256ull << 20;  // LRU cache of decoded chunks; at least 2 chunks kept
  int fetch_connections = 4;            // concurrent chunk fetches (reads + prefetch)
  int prefetch_chunks = 8;              // read-ahead window after a sequential read; 0 = none
  // As RestoreOptions::key: the key for an encrypted snapshot (called once
  // in Open with the fingerprint the manifest names), or null.
  std::function<Result<std::shared_ptr<const storage::CryptConfig>>(const std::string& fingerprint)>
      key;
};

struct ArchiveSourceStats {
  uint64_t reads = 0;             // Read() calls
  uint64_t chunk_fetches = 0;     // chunks fetched from the server (prefetch included)
  uint64_t prefetches = 0;        // of which by read-ahead
  uint64_t cache_hits = 0;        // chunk lookups answered from the cache
  uint64_t zero_chunk_reads = 0;  // chunk lookups of all-zero chunks
  uint64_t bytes_downloaded = 0;  // blob bytes fetched
  uint64_t failed_fetches = 0;    // fetches that failed (transport or a check)
};

class ArchiveSource {
 public:
  // NotFound for an unknown snapshot or archive (or a group without
  // snapshots for `…/latest`), PermissionDenied without the right key,
  // Corruption for a manifest or index that does not check out,
  // InvalidArgument for a `.blob` archive. `archive` may omit ".fidx".
  static Result<std::unique_ptr<ArchiveSource>> Open(const Repository& repo,
                                                     const std::string& snapshot,
                                                     const std::string& archive,
                                                     const ArchiveSourceOptions& options);
  ~ArchiveSource();
  ArchiveSource(const ArchiveSource&) = delete;
  ArchiveSource& operator=(const ArchiveSource&) = delete;

  uint64_t size() const;
  uint64_t chunk_size() const;
  const std::string& snapshot() const;  // resolved: never "…/latest"
  const std::string& archive() const;   // with ".fidx"
  const std::string& fingerprint() const;  // "" for a plain snapshot

  // Copies [offset, offset + length) into `out` (resized to `length`).
  // REQUIRES: offset + length <= size(). Corruption when a chunk is missing
  // on the server or fails its checks; IOError for the transport; `out` is
  // then unspecified (the caller must not hand it out).
  Status Read(uint64_t offset, uint64_t length, std::string* out);

  // True when the chunk holding byte `offset` is all zeros by the index.
  bool IsZeroChunk(uint64_t chunk) const;
  uint64_t ChunkOf(uint64_t offset) const { return offset / chunk_size(); }

  ArchiveSourceStats stats() const;

  // Stops prefetching and the keepalive and ends the reader session (best
  // effort). Idempotent. REQUIRES: no Read() in progress.
  void Close();

  class Impl;

 private:
  explicit ArchiveSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Resolves "TYPE/ID/latest" (and "NS:TYPE/ID/latest") to the newest
// snapshot of that group the caller can see; any other name is returned
// unchanged. NotFound when the group has no snapshot.
Result<std::string> ResolveSnapshotName(const Repository& repo, const std::string& snapshot);

}  // namespace cairn::client
