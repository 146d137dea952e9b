#pragma once

// The logic of one backup session (DESIGN §3), with no HTTP in it.
//
// A session writes one new snapshot of one group. Chunks are verified and
// stored as they arrive; an index may reference only digests this session has
// proven to hold — uploaded here, or known from the previous snapshot's index
// fetched through PreviousIndex(). Finish() commits the snapshot (one rename);
// Abort(), or destroying an unfinished session, removes its staging folder and
// nothing else. Chunks it stored stay: they are content-addressed, and GC
// decides about them.
//
// Thread safety: all methods are thread-safe. Chunk uploads run in parallel
// (verification happens outside the session lock); index, blob, finish and
// abort are serialised.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/chunk_store.h"
#include "storage/datastore.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"
#include "storage/mutex.h"
#include "storage/names.h"

namespace cairn::server {

// The largest fixed index a backup may upload or read as its base (64 MiB:
// about 2 million chunks, 8 TiB of disk at 4 MiB chunks).
inline constexpr uint64_t kMaxIndexUploadBytes = storage::kMaxFixedIndexFileSize;

using storage::Digest;
using storage::Result;
using storage::SnapshotRef;
using storage::Status;

struct BackupStats {
  uint64_t chunks_uploaded = 0;   // chunk uploads accepted (new or existing)
  uint64_t chunks_new = 0;        // of those, written as new files
  uint64_t bytes_uploaded = 0;    // blob bytes received for chunks
  uint64_t chunks_known = 0;      // digests registered from the previous snapshot
  uint64_t chunks_referenced = 0; // digests in the indexes written
  uint64_t archives = 0;
};

class BackupSession {
 public:
  // REQUIRES: `store` outlives the session.
  // `fingerprint`: set for an encrypted session (the client's key; it takes
  // encrypted chunks only, storage/FORMAT.md "Which kinds prove their
  // digest"). `previous_fingerprint`: the previous snapshot's key, unset
  // when it is plain; its index is offered only when the two agree.
  BackupSession(std::string id, std::string store_name, storage::Datastore* store, SnapshotRef ref,
                std::optional<SnapshotRef> previous, std::unique_ptr<storage::StagedSnapshot> staged,
                int64_t start_time, std::optional<std::string> fingerprint = std::nullopt,
                std::optional<std::string> previous_fingerprint = std::nullopt);
  ~BackupSession();

  const std::string& id() const { return id_; }
  const std::string& store_name() const { return store_name_; }
  const SnapshotRef& ref() const { return ref_; }
  const std::optional<SnapshotRef>& previous() const { return previous_; }
  int64_t start_time() const { return start_time_; }
  const std::optional<std::string>& fingerprint() const { return fingerprint_; }
  bool encrypted() const { return fingerprint_.has_value(); }

  // The previous snapshot's index `archive` (".fidx") as stored; its digests
  // become known to this session. NotFound without a previous snapshot or
  // without that archive; Conflict when the previous snapshot was made with
  // another key, or one of the two is encrypted and the other not (its
  // chunks are of another domain: the client must send everything).
  Result<std::string> PreviousIndex(const std::string& archive);

  // Verifies and stores one chunk (see ChunkStore::InsertBlob; an encrypted
  // session inserts into the encrypted domain); registers its digest.
  // Corruption for a blob that does not match digest and size,
  // InvalidArgument for a kind of the other domain, Conflict for an
  // encrypted chunk whose digest names a verified chunk (not registered).
  Result<storage::InsertResult> UploadChunk(const Digest& digest, uint64_t size,
                                            std::string_view blob);

  // Stores a fixed index after checking it parses and that every digest in it
  // is known to this session. InvalidArgument naming the first unknown digest.
  Status WriteIndex(const std::string& archive, std::string_view bytes);

  // Stores a small file (VM config, client log); must be a valid blob.
  Status WriteBlob(const std::string& archive, std::string_view bytes);

  // Commits: fsyncs the chunk folders this session touched, writes the
  // manifest and renames the snapshot into place. Conflict when finished or
  // aborted already; InvalidArgument when no archive was written, and when
  // `crypt` is missing in an encrypted session (or names another key) or
  // given in a plain one.
  Result<storage::Manifest> Finish(const nlohmann::json& client,
                                   std::optional<storage::CryptInfo> crypt = std::nullopt);

  // Removes the staged snapshot. Idempotent.
  void Abort();

  // True once Finish or Abort ran (the session accepts nothing more).
  bool closed();
  BackupStats stats();
  // Digests known to this session (uploaded or from the previous index); GC
  // marks them so it never frees a chunk a running backup relies on.
  std::vector<Digest> KnownDigests();

  // Seconds since the epoch of the last request; the manager aborts idle sessions.
  int64_t last_active() const { return last_active_.load(); }
  void Touch(int64_t now) { last_active_.store(now); }

 private:
  Status CheckOpenLocked() const CAIRN_REQUIRES(mu_);

  const std::string id_;
  const std::string store_name_;
  storage::Datastore* const store_;
  const SnapshotRef ref_;
  const std::optional<SnapshotRef> previous_;
  const int64_t start_time_;
  const std::optional<std::string> fingerprint_;
  const std::optional<std::string> previous_fingerprint_;
  std::atomic<int64_t> last_active_;
  storage::DirtyFolders dirty_;

  Mutex mu_;
  std::unique_ptr<storage::StagedSnapshot> staged_ CAIRN_GUARDED_BY(mu_);
  std::unordered_set<Digest, storage::DigestHash> known_ CAIRN_GUARDED_BY(mu_);
  std::vector<storage::ArchiveInfo> archives_ CAIRN_GUARDED_BY(mu_);
  BackupStats stats_ CAIRN_GUARDED_BY(mu_);
  bool closed_ CAIRN_GUARDED_BY(mu_) = false;
};

}  // namespace cairn::server
