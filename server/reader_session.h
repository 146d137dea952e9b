#pragma once

// A reader session: one committed snapshot opened for restore. It serves the
// manifest, the archive files, and only the chunks the snapshot's indexes
// reference — a reader can never fetch a chunk of a snapshot it may not read.
//
// Thread safety: immutable after Open; every method is thread-safe.

#include <atomic>
#include <memory>
#include <string>
#include <unordered_set>

#include "storage/datastore.h"
#include "storage/manifest.h"

namespace cairn::server {

using storage::Digest;
using storage::Result;
using storage::SnapshotRef;
using storage::Status;

class ReaderSession {
 public:
  // Reads the manifest and every ".fidx" archive of `ref`; Corruption when one
  // does not parse. REQUIRES: `store` outlives the session.
  static Result<std::unique_ptr<ReaderSession>> Open(std::string id, storage::Datastore* store,
                                                     const SnapshotRef& ref, int64_t now);

  const std::string& id() const { return id_; }
  const SnapshotRef& ref() const { return ref_; }
  const storage::Manifest& manifest() const { return manifest_; }

  // An archive file as stored. NotFound for a name the manifest does not list.
  Result<std::string> ReadArchive(const std::string& name);
  // The stored blob of a chunk the snapshot references. NotFound for a digest
  // the snapshot does not reference (whether or not the store has it), or
  // whose file is missing; Corruption for a blob of a kind the manifest does
  // not declare (Manifest::AllowsChunkKind). Messages name no server path.
  Result<std::string> ReadChunk(const Digest& digest);

  int64_t last_active() const { return last_active_.load(); }
  void Touch(int64_t now) { last_active_.store(now); }

 private:
  ReaderSession(std::string id, storage::Datastore* store, SnapshotRef ref, int64_t now)
      : id_(std::move(id)), store_(store), ref_(std::move(ref)), last_active_(now) {}

  const std::string id_;
  storage::Datastore* const store_;
  const SnapshotRef ref_;
  storage::Manifest manifest_;
  std::unordered_set<Digest, storage::DigestHash> referenced_;
  std::atomic<int64_t> last_active_;
};

}  // namespace cairn::server
