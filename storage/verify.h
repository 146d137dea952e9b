#pragma once

// Verification: reads back what a datastore holds and proves it intact.
//
// For each snapshot chosen by the caller, in the caller's order:
//   1. index.json is read and parsed (Manifest::Parse checks protected-sha256
//      and that it names this snapshot);
//   2. with `ignore_verified`, a snapshot whose verify state is "ok" and not
//      outdated is skipped here (nothing more is read);
//   3. every archive the manifest lists is read: a ".fidx" is fully checked
//      by FixedIndex (header CRC, length, SHA-256 over the digest list) and
//      its checksum and image size must equal the manifest's ArchiveInfo; a
//      ".blob" must have exactly the manifest's size and SHA-256;
//   4. every distinct chunk the snapshot's indexes reference and that this
//      run has not checked yet is read and checked, by a pool of threads, in
//      digest order (the order of the chunk folders on disk): the blob's
//      envelope and CRC, then (unencrypted) it is decoded and its SHA-256
//      must equal its digest; encrypted chunks (no key here) are checked by
//      CRC and by the length of their ciphertext region only;
//   5. every reference of the indexes is then checked against the chunk's
//      result: the chunk is good and its size equals ChunkLength(i);
//   6. the snapshot's verify state ("ok" when all of the above held,
//      "failed" otherwise; time Env::NowSeconds(), task options.task) is
//      written into index.json (Datastore::SetVerifyState), whose observer
//      (the server's catalog) learns it from there.
// Each chunk is checked at most once per run: the results of the chunks
// checked so far are kept (about 64 bytes per distinct chunk), and a later
// snapshot referencing a chunk found bad fails without reading it again.
//
// What counts as a bad chunk, and what is done with it:
//   * corrupt — the file is there and read fine but fails a check (envelope,
//     CRC, decode, digest; encrypted: ciphertext length). It is read a second
//     time and, if it fails again, renamed aside with ChunkStore::MarkBad
//     (`<digest>.<n>.bad`) so it is never served again and the next upload
//     of the digest stores a good copy. A chunk whose content matches its
//     digest is never renamed: if an index gives it another size, the index
//     is what is wrong, and only that snapshot fails.
//   * missing — no file: nothing is renamed.
//   * unreadable — an I/O error (not NotFound) while reading: nothing is
//     renamed, since the file may be fine; the snapshot fails all the same
//     (what cannot be read back now cannot be restored now).
// A snapshot that references a bad chunk, or whose manifest or an archive is
// damaged or missing, is "failed". A snapshot whose index.json cannot be read
// or parsed cannot hold a state: it is reported (state_written = false), and
// to the datastore's observer (Datastore::ReportDamage).
//
// Concurrency. Safe beside backups, restores, prune and GC of the same
// datastore: verify writes nothing but MarkBad renames (under the chunk
// store's stripe lock, like inserts and GC's deletes) and verify states
// (Datastore's read-modify-write of the unprotected part). A snapshot deleted
// while it is verified is counted as `vanished`, not failed. Verify never
// refreshes a chunk's mtime and never deletes anything.
//
// Memory. Chunk buffers are bounded by `max_buffer_bytes` (at most that many
// bytes of chunk data in flight: threads beyond what fits wait their turn);
// the snapshot being verified holds its indexes (32 bytes per chunk) and its
// list of distinct digests; the chunk results ~64 bytes per distinct chunk.
//
// Thread safety: Verify may be called from any thread. It runs its own worker
// threads; every callback (progress, log) is called on the calling thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/datastore.h"
#include "storage/digest.h"
#include "storage/names.h"
#include "storage/status.h"

namespace cairn::storage {

// Default bound on the chunk data held in flight by the worker threads.
inline constexpr uint64_t kDefaultVerifyBufferBytes = uint64_t{128} << 20;

struct VerifyProgress {
  uint64_t snapshots_done = 0;   // checked, skipped or vanished
  uint64_t snapshots_total = 0;  // snapshots asked for
  uint64_t chunks_done = 0;      // distinct chunks checked so far
  // Distinct chunks known to need checking so far: grows as snapshots are
  // opened (their indexes are read one snapshot at a time).
  uint64_t chunks_total = 0;
  uint64_t bytes_read = 0;  // chunk blob bytes read so far
};

struct VerifyOptions {
  // Worker threads reading, decoding and hashing; 0 = hardware concurrency.
  int threads = 0;
  // Bound on chunk buffers in flight (read blob + decoded data per chunk).
  // At least one chunk is always in flight, whatever the value.
  uint64_t max_buffer_bytes = kDefaultVerifyBufferBytes;

  // Skip snapshots whose verify state is "ok" — unless `outdated_after_days`
  // is set and the state is at least that many days old (now − time ≥
  // days × 86400). A "failed" state is never skipped.
  bool ignore_verified = false;
  std::optional<int64_t> outdated_after_days;

  // Written as VerifyState::task.
  std::string task;

  // Called now and then (about every 200 ms while chunks are checked, and
  // after each snapshot). May be null.
  std::function<void(const VerifyProgress&)> progress;
  // One line per finding (bad chunk, failed snapshot, state not written),
  // without a trailing newline. May be null.
  std::function<void(const std::string&)> log;
  // When it becomes true, workers stop taking chunks and Verify returns soon
  // with `cancelled`; snapshots not finished by then get no state. May be null.
  const std::atomic<bool>* cancel = nullptr;
};

// A snapshot that failed.
struct VerifyFailure {
  SnapshotRef ref;
  // What was wrong: the first kMaxVerifyReasons findings, then a line
  // "… and N more".
  std::vector<std::string> reasons;
  // False when the state could not be written into index.json (the manifest
  // does not parse, or writing failed).
  bool state_written = false;
};

inline constexpr size_t kMaxVerifyReasons = 20;

// A chunk found bad in this run.
struct BadChunk {
  Digest digest;
  std::string kind;                  // "corrupt", "missing" or "unreadable"
  std::string problem;               // what the check found
  std::string renamed_to;            // file name of the bad copy, empty when not renamed
  std::vector<SnapshotRef> used_by;  // snapshots of this run that reference it
};

struct VerifyResult {
  uint64_t snapshots_checked = 0;  // ok + failed
  uint64_t snapshots_ok = 0;
  uint64_t snapshots_failed = 0;
  uint64_t snapshots_skipped = 0;   // ignore_verified: verified recently
  uint64_t snapshots_vanished = 0;  // deleted before or while being verified

  uint64_t chunks_checked = 0;  // distinct chunks read (or found missing)
  uint64_t chunks_bad = 0;      // corrupt + missing + unreadable
  uint64_t chunks_corrupt = 0;
  uint64_t chunks_missing = 0;
  uint64_t chunks_unreadable = 0;
  uint64_t chunks_renamed = 0;  // corrupt chunks renamed aside

  uint64_t bytes_read = 0;     // chunk blob bytes read
  uint64_t decoded_bytes = 0;  // plaintext bytes of the chunks checked
  // Sum of the image sizes of the indexes of the snapshots checked: what a
  // restore of all of them would produce (shared chunks count every time).
  uint64_t logical_bytes = 0;

  int64_t duration_ms = 0;
  bool cancelled = false;

  std::vector<VerifyFailure> failed;  // in the order they were verified
  std::vector<BadChunk> bad_chunks;   // in the order they were found
  // Things that did not make a snapshot fail but that an operator should
  // know: a state or catalog row that could not be written, a chunk that
  // read bad once and good the second time.
  std::vector<std::string> warnings;

  // Kebab-case keys: "snapshots-checked", …, "failed": [{"snapshot",
  // "reasons", "state-written"}], "bad-chunks": [{"digest", "kind",
  // "problem", "renamed-to", "used-by"}], "warnings".
  nlohmann::json ToJson() const;
};

// Verifies `snapshots` (duplicates are verified once) in the given order.
// InvalidArgument, before anything is read, for an invalid ref or bad
// options (threads < 0, a negative
// outdated_after_days). Everything found about the data is in the result,
// never an error.
Result<VerifyResult> Verify(Datastore& store, const std::vector<SnapshotRef>& snapshots,
                            const VerifyOptions& options = {});

// The snapshots of one group, newest first (verify the bases of the next
// backups first). NotFound for an unknown group.
Result<std::vector<SnapshotRef>> SnapshotsToVerify(Datastore& store, const GroupRef& group);
// Every snapshot of the datastore: groups in GroupRef order, each newest
// first. A group deleted while listing is left out.
Result<std::vector<SnapshotRef>> SnapshotsToVerify(Datastore& store);

// Whether `options` would skip a snapshot with this verify state at `now`.
bool VerifiedRecently(const std::optional<VerifyState>& state, const VerifyOptions& options,
                      int64_t now);

}  // namespace cairn::storage
