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

struct ChunkStoreOptions {
  // fsync each new chunk file before its rename. Off only in benchmarks.
  bool sync = true;
  // Accept encrypted-kind blobs (CRNBLOBe/CRNBLOBE) in InsertBlob. Off on
  // the server: such a blob proves nothing about its digest, and until
  // client-side encryption keeps encrypted chunks in a domain of their own
  // (storage/FORMAT.md, "Chunk store") accepting one would let a session
  // register a digest whose data it does not hold. Only tests that need an
  // encrypted-kind chunk on disk turn it on.
  bool allow_encrypted = false;
};

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

  // Server path: stores `blob` under `digest` after checking it — CRC, decode,
  // SHA-256 of the plaintext equals `digest`, plaintext size equals
  // `expected_size`. Corruption on any mismatch; nothing is written then.
  // Encrypted kinds: InvalidArgument unless options.allow_encrypted, then
  // CRC and `expected_size` against the blob's payload length only.
  // An existing chunk only gets its mtime refreshed — unless this blob is a
  // verified kind (plain, zstd) and the existing file is not (an encrypted
  // kind, or no valid magic): then this blob replaces it (temp, fsync,
  // rename) and the result is kInserted.
  // `dirty` (may be null) collects folders to fsync at session finish: the
  // folder of a new chunk, and that of an existing chunk whose entry may not
  // be durable yet (made by another session, or before this Open).
  Result<InsertResult> InsertBlob(const Digest& digest, std::string_view blob,
                                  uint64_t expected_size, DirtyFolders* dirty);

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
  // fsyncs every prefix folder named in `dirty`, clearing it.
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

 private:
  // What Refresh found under a digest.
  enum class Existing {
    kAbsent,
    kVerified,    // exists (mtime refreshed); counts as stored
    kUnverified,  // exists, but its kind proves nothing: a verified insert replaces it
  };

  ChunkStore(Env* env, std::string chunks_dir, ChunkStoreOptions options);
  // Refreshes the mtime of an existing chunk. With `verified` (the caller
  // holds a verified blob), also reads the existing file's magic: anything
  // but plain or zstd is kUnverified. Without it, any file is kVerified.
  Result<Existing> Refresh(const Digest& digest, DirtyFolders* dirty, bool verified);
  // True when the file at `path` starts with the magic of plain or zstd.
  Result<bool> IsVerifiedKind(const std::string& path);
  Result<InsertResult> Store(const Digest& digest, std::string_view blob, DirtyFolders* dirty,
                             bool verified);

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
