#pragma once

// ChunkStore: content-addressed chunk files in `<datastore>/.chunks/`.
//
//   .chunks/<first 4 hex of digest>/<64 hex digest>        one blob each
//   .chunks/<prefix>/<digest>.<n>.bad                       renamed aside by verify
//
// A chunk is written as a unique temp file → fsync (when `sync`) → rename to
// its name. A chunk that exists already is never rewritten: its mtime is set
// to now (GC's sweep relies on that) — the one exception is a file of a kind
// that proves nothing about its digest (encrypted, or not a blob at all),
// which a verified (plain or zstd) insert of the same digest replaces. The folder entries of new chunks are
// made durable by SyncFolders(), called once per backup session at finish.
//
// Thread safety: all methods are thread-safe. Concurrent inserts of the same
// digest leave one good file. Insert's "exists → refresh" and a GC sweep of the
// same prefix folder are serialised by a striped lock (PrefixMutex).

#include <bitset>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "storage/mutex.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr size_t kChunkPrefixCount = 65536;

// Which prefix folders got new entries and need an fsync. One per session.
// Thread safety: Add and Take may be called from several threads.
class DirtyFolders {
 public:
  void Add(uint16_t prefix);
  // Returns the set and clears it.
  std::bitset<kChunkPrefixCount> Take();

 private:
  Mutex mu_;
  std::bitset<kChunkPrefixCount> bits_ CAIRN_GUARDED_BY(mu_);
};

// How a new chunk is made durable before a snapshot may reference it
// (storage/FORMAT.md, "Sync level"). A datastore setting (`sync-level` in
// `.cairn-datastore`).
enum class SyncLevel {
  // fsync of every new chunk file before its rename; SyncFolders() fsyncs
  // the prefix folders that got new entries.
  kFile,
  // No per-chunk fsync; SyncFolders() is one syncfs(2) of the datastore's
  // file system, which makes every chunk written before it durable.
  kFilesystem,
  // No fsync of chunks at all: a power loss may leave a committed snapshot
  // that names chunks which are gone or empty. Unsafe; tests and throwaway
  // stores only.
  kNone,
};
// "file", "filesystem", "none".
const char* SyncLevelName(SyncLevel level);
// InvalidArgument for anything but the three names.
Result<SyncLevel> ParseSyncLevel(std::string_view name);

struct ChunkStoreOptions {
  SyncLevel sync_level = SyncLevel::kFile;
  // false: no per-chunk fdatasync even at kFile (benchmarks, the server's
  // test-only --no-sync); SyncFolders still follows sync_level.
  bool sync = true;
  bool sync_each_chunk() const { return sync && sync_level == SyncLevel::kFile; }
};

// Which kinds of chunk an insert deals in (storage/FORMAT.md, "Which kinds
// prove their digest"). A plain backup inserts into kVerified (plain, zstd:
// the store proves each digest); an encrypted backup, or a sync copying an
// encrypted snapshot, into kEncrypted (CRNBLOBe/CRNBLOBE: only CRC and size
// can be checked). The domains never mix under one digest: an encrypted
// insert never registers, displaces or shadows a verified chunk; a verified
// insert replaces an encrypted or unreadable file stored under its digest.
enum class ChunkDomain { kVerified, kEncrypted };

struct ChunkStats {
  uint64_t chunks = 0;
  uint64_t bytes = 0;  // blob bytes on disk
  uint64_t bad = 0;    // files renamed aside as bad
};

enum class InsertResult { kInserted, kExisted };

class ChunkStore {
 public:
  // Creates `<dir>/.chunks` (durably); OK when it exists already. The 65536
  // prefix folders are made on first use, each durably, by the first insert
  // into it (storage/FORMAT.md says why).
  static Status Create(Env* env, const std::string& datastore_dir);
  // REQUIRES: Create() has run on the folder. NotFound otherwise.
  static Result<std::unique_ptr<ChunkStore>> Open(Env* env, const std::string& datastore_dir,
                                                  ChunkStoreOptions options = {});

  // Server path: stores `blob` under `digest` after checking it. Nothing is
  // written (not even an mtime) when a check fails.
  // kVerified: plain or zstd only (an encrypted kind is InvalidArgument);
  //   CRC, decode, SHA-256 of the plaintext equals `digest`, plaintext size
  //   equals `expected_size` (Corruption on a mismatch). An existing chunk
  //   gets its mtime refreshed — unless it is not a verified kind (an
  //   encrypted kind, or no valid magic): then this blob replaces it (temp,
  //   fsync, rename) and the result is kInserted.
  // kEncrypted: the encrypted kinds only (plain or zstd is InvalidArgument);
  //   CRC and EncryptedSizeFits(`expected_size`). A verified chunk stored
  //   under `digest` is Conflict (nothing changed, nothing to register); an
  //   encrypted one gets its mtime refreshed (kExisted); a file without a
  //   valid magic is replaced.
  // `dirty` (may be null) collects folders to fsync at session finish: the
  // folder of a new chunk, and that of an existing chunk whose entry may not
  // be durable yet (made by another session, or before this Open).
  Result<InsertResult> InsertBlob(const Digest& digest, std::string_view blob,
                                  uint64_t expected_size, DirtyFolders* dirty,
                                  ChunkDomain domain = ChunkDomain::kVerified);

  // Local path: hashes (all-zero data is recognised without hashing),
  // compresses and stores `data`. Returns the digest through `*digest`.
  // Replaces an unverified existing file like InsertBlob.
  Result<InsertResult> InsertData(std::string_view data, Digest* digest, DirtyFolders* dirty);

  // The stored blob, unchecked. NotFound when absent.
  Result<std::string> ReadBlob(const Digest& digest);
  // The plaintext, after checking CRC and that its SHA-256 equals `digest`
  // (Corruption otherwise).
  Result<std::string> ReadChunk(const Digest& digest);

  Result<bool> Exists(const Digest& digest);
  // Renames the chunk aside to `<digest>.<n>.bad` (n = first free number).
  Status MarkBad(const Digest& digest);
  // Makes every chunk named in `dirty` durable, clearing it; call before a
  // snapshot that references them is committed. kFile: fsyncs each prefix
  // folder named there. kFilesystem: one syncfs of the store's file system
  // (the chunk files' contents and names). kNone: clears `dirty`, nothing
  // more. On an error `dirty` keeps what is still unsynced.
  Status SyncFolders(DirtyFolders* dirty);

  // Calls `fn` for every good chunk file (not temp, not bad). Stops at, and
  // returns, the first non-OK status `fn` returns.
  Status ForEach(const std::function<Status(const Digest&, const FileInfo&)>& fn);
  Result<ChunkStats> Stats();

  // The stripe lock that guards `prefix`'s folder; GC holds it while it
  // decides and deletes, Insert while it decides "exists → refresh".
  Mutex* PrefixMutex(uint16_t prefix);

  std::string ChunkPath(const Digest& digest) const;
  std::string PrefixDir(uint16_t prefix) const;
  Env* env() const { return env_; }
  SyncLevel sync_level() const { return options_.sync_level; }

 private:
  // What Refresh found under a digest.
  enum class Existing {
    kAbsent,
    kSameDomain,   // exists in the caller's domain (mtime refreshed); counts as stored
    kReplaceable,  // exists, but the caller's blob takes its place (see InsertBlob)
  };

  ChunkStore(Env* env, std::string chunks_dir, ChunkStoreOptions options);
  // Looks at an existing chunk for an insert into `domain`: reads its magic
  // and, when it belongs to `domain`, refreshes its mtime (kSameDomain). A
  // file of the other domain is kReplaceable for a verified insert and
  // Conflict for an encrypted one; a file without a valid magic is
  // kReplaceable for both.
  Result<Existing> Refresh(const Digest& digest, DirtyFolders* dirty, ChunkDomain domain);
  // What the file at `path` holds, by its magic: the domain, or nullopt
  // when it is not a blob of any known kind. NotFound when absent.
  Result<std::optional<ChunkDomain>> StoredDomain(const std::string& path);
  Result<InsertResult> Store(const Digest& digest, std::string_view blob, DirtyFolders* dirty,
                             ChunkDomain domain);

  static constexpr size_t kStripes = 1024;

  Env* const env_;
  const std::string chunks_dir_;
  const ChunkStoreOptions options_;
  std::unique_ptr<Mutex[]> stripes_;
  // Per prefix folder: renames into it so far, and how many of them a
  // finished fsync of the folder covers. They differ while a new entry may
  // not be durable. Guarded by the prefix's stripe (PrefixMutex), which the
  // thread-safety analysis cannot name: it checks none of this.
  std::unique_ptr<uint32_t[]> inserted_gen_;
  std::unique_ptr<uint32_t[]> synced_gen_;
};

// The prefix folder number of a digest: its first two bytes.
inline uint16_t DigestPrefix(const Digest& d) {
  return static_cast<uint16_t>(d.bytes[0] << 8 | d.bytes[1]);
}

}  // namespace cairn::storage
