#pragma once

// Garbage collection of a datastore's chunks: mark and sweep, safe beside
// running backups, restores and verification.
//
// Mark. The digests of every fixed index (.fidx archive) of every committed
// snapshot, plus the digests that running backup sessions may reference
// without uploading them (GcSessions::known). A snapshot whose manifest or
// index cannot be read aborts the GC before anything is swept: chunks are
// never deleted because an index was unreadable. The error names every such
// snapshot (the first ten, and how many more).
//
// Sweep. Every prefix folder `.chunks/0000` … `.chunks/ffff` (a missing one is
// empty). A chunk file that is unmarked and whose mtime is older than the
// cutoff is deleted; an unmarked one at or after the cutoff is "pending" (it
// may be freed by a later GC). Marked chunks are only stat()ed (for their
// size), never touched. For every folder that holds an unmarked chunk the
// sweep holds ChunkStore::PrefixMutex(prefix) while it re-reads the mtime of
// each candidate and deletes it: an upload's "exists → refresh mtime" (which
// holds the same lock) therefore happens either wholly before the decision
// (the GC sees the new mtime and keeps the chunk) or after the delete (the
// upload finds no file and stores the chunk again).
// `<digest>.<n>.bad` files (put aside by verify) are kept and counted while
// their digest is marked, and removed when it is not. Temp files
// (`<digest>.tmp.…`, left by a crashed insert) older than
// GcOptions::temp_max_age_seconds are removed. Anything else is left alone.
//
// The cutoff:
//   cutoff = min(GC start, start of the oldest running session) − grace − 1 s
// where GC start is taken (after the GC lock) *before* GcOptions::sessions is
// asked for the running sessions. Why that is safe beside running backups:
//   * a chunk a backup uploads or refreshes gets mtime ≥ that session's start;
//   * a session running when `sessions` is asked is covered by oldest_start;
//     one that starts later starts after GC start: either way its chunks are
//     at or after the cutoff, so the sweep cannot delete them;
//   * a session's chunks that it references without uploading are those of
//     its group's previous snapshot: in `known` or in an index the mark reads
//     (the server never prunes the base of a running backup), or — if that
//     snapshot was committed during this GC — themselves uploaded/refreshed
//     by that earlier session, i.e. not older than the cutoff, or marked.
//   * the extra second absorbs file timestamps that lag the clock by a tick.
// The grace (default 5 min) guards against clock steps and callers that
// register sessions late; with grace 0 the rule above is still safe.
// REQUIRES of the caller (the server): a session is registered before it
// touches any chunk and unregistered only after its snapshot is committed (or
// aborted); the base snapshot of a running backup is not deleted.
//
// Memory. Marks are 8-byte digest prefixes (Digest::Prefix64) in one
// std::vector<uint64_t>, sorted and deduplicated whenever it has doubled
// since the last compaction, so it holds at most about 2 × 8 bytes per
// distinct referenced chunk (16 MiB per million chunks) however many
// snapshots share them; indexes are read one at a time. A false match (an
// unreferenced chunk whose prefix equals a referenced one's: odds about
// n / 2^64 per chunk) only keeps that garbage chunk until a later GC, never
// deletes anything: a mark can only ever keep a chunk.
//
// Concurrency. One GC per datastore at a time: `<store>/.gc.lock`
// (Env::LockFile); a second GC gets Busy. Backups, restores and verify keep
// running. A crash or error in the middle leaves a consistent store (only
// garbage was removed); the next GC completes the work. Deletes are not
// fsynced: a delete lost in a crash only leaves garbage for the next GC.
//
// Thread safety: CollectGarbage may be called from any thread; it calls
// `sessions` and `progress` on that thread.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/datastore.h"
#include "storage/digest.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr char kGcLockFile[] = ".gc.lock";
inline constexpr int64_t kDefaultGcGraceSeconds = int64_t{5} * 60;

enum class GcPhase { kMark, kSweep };
// "mark" / "sweep".
const char* GcPhaseName(GcPhase phase);

// What running backup sessions of the datastore need kept.
struct GcSessions {
  // Digests a running session may put into its index without uploading them
  // (SessionManager::KnownDigests).
  std::vector<Digest> known;
  // Start (seconds since the epoch) of the oldest running session; 0 = none.
  int64_t oldest_start = 0;
};

// Progress: phase, work done, work total. Mark counts snapshots, sweep counts
// prefix folders (total 65536). Called now and then, and once at the end of
// each phase with done == total.
using GcProgress = std::function<void(GcPhase phase, uint64_t done, uint64_t total)>;

struct GcOptions {
  // Unmarked chunks younger than this (relative to the cutoff above) stay.
  // Negative values count as 0.
  int64_t grace_seconds = kDefaultGcGraceSeconds;
  // Temp files older than this (relative to GC start) are removed.
  int64_t temp_max_age_seconds = int64_t{24} * 60 * 60;
  // Asked once, after GC start is taken and before the mark. Null: no running
  // sessions.
  std::function<GcSessions()> sessions;
  // May be null.
  GcProgress progress;
  // Count what would be removed, remove nothing.
  bool dry_run = false;
  // Threads sweeping prefix folders at once (1..16; the calling thread is
  // one of them). The sweep mostly waits: on a filesystem mounted with
  // `discard`, each unlink waits for the device to discard the file's blocks
  // (≈2 ms on the reference VM). Waits overlap across threads, so more
  // threads pay even on 2 cores: 1M chunks, 100k removed, took 231 s with 1,
  // 38 s with 2, 16 s with 4 and 11 s with 8 (bench/GC.md).
  int sweep_threads = 4;
};

struct GcResult {
  int64_t start_time = 0;  // seconds since the epoch (Env::NowSeconds)
  int64_t cutoff = 0;      // unmarked chunks with mtime before this were removed
  bool dry_run = false;

  uint64_t snapshots = 0;      // snapshots whose indexes were marked
  uint64_t indexes = 0;        // .fidx archives read
  uint64_t logical_bytes = 0;  // sum of the image sizes of those indexes
  uint64_t marked = 0;         // distinct digest prefixes marked

  uint64_t disk_chunks = 0;  // chunk files on disk after the GC (pending included)
  uint64_t disk_bytes = 0;
  uint64_t removed_chunks = 0;  // (with dry_run: would be removed)
  uint64_t removed_bytes = 0;
  uint64_t pending_chunks = 0;  // unmarked, not older than the cutoff: kept
  uint64_t pending_bytes = 0;
  uint64_t bad_chunks = 0;  // .bad files kept (their digest is still referenced)
  uint64_t bad_bytes = 0;
  uint64_t bad_removed = 0;   // .bad files of unreferenced digests, removed
  uint64_t temp_removed = 0;  // stale temp files removed

  // logical_bytes / disk_bytes; 0 when disk_bytes is 0.
  double dedup_factor = 0;

  int64_t duration_ms = 0;
  int64_t mark_ms = 0;
  int64_t sweep_ms = 0;

  // Kebab-case keys ("removed-chunks", "dedup-factor", …); see gc.cc.
  nlohmann::json ToJson() const;
  // Reads ToJson()'s form back (the server keeps the last result).
  // Corruption when a key is missing or of the wrong type.
  static Result<GcResult> FromJson(const nlohmann::json& j);
};

// The file in the datastore folder that keeps the last GC result: GcResult's
// ToJson form, written atomically (temp, fsync, rename) by CollectGarbage at
// the end of every run that is not a dry run. FORMAT.md, "GC status".
inline constexpr char kGcStatusFile[] = ".gc-status.json";

// The result kept in kGcStatusFile: NotFound before the first GC,
// Corruption when the file is not GcResult's JSON.
Result<GcResult> LastGcResult(Datastore& store);

// Runs one garbage collection on `store` (see the header comment).
// Busy when another GC holds the store's GC lock. When a snapshot cannot be
// read, returns that error (its code, e.g. Corruption or IOError, with every
// unreadable snapshot named) and nothing is removed. Other errors (listing a
// folder, deleting a file) stop the GC where it is; what was removed until
// then was garbage. A run that is not a dry run keeps its result in
// kGcStatusFile; failing to write it is an error (the run itself is done).
Result<GcResult> CollectGarbage(Datastore& store, const GcOptions& options = {});

}  // namespace cairn::storage
