#include "server/reader_session.h"

#include "storage/fixed_index.h"

namespace cairn::server {
namespace {
constexpr uint64_t kMaxArchiveBytes = 64ull * 1024 * 1024;
}

Result<std::unique_ptr<ReaderSession>> ReaderSession::Open(std::string id,
                                                           storage::Datastore* store,
                                                           const SnapshotRef& ref, int64_t now) {
  std::unique_ptr<ReaderSession> s(new ReaderSession(std::move(id), store, ref, now));
  CAIRN_ASSIGN_OR_RETURN(s->manifest_, store->ReadManifest(ref));
  for (const auto& a : s->manifest_.archives) {
    if (a.name.size() < 5 || a.name.compare(a.name.size() - 5, 5, ".fidx") != 0) continue;
    CAIRN_ASSIGN_OR_RETURN(std::string bytes, store->ReadArchive(ref, a.name, kMaxArchiveBytes));
    auto index = storage::FixedIndex::Parse(bytes);
    if (!index.ok()) return index.status().WithContext(ref.ToString() + "/" + a.name);
    if (index->checksum() != a.csum) {
      return Status::Corruption(ref.ToString() + "/" + a.name +
                                ": index checksum differs from the manifest");
    }
    for (uint64_t i = 0; i < index->chunk_count(); ++i) s->referenced_.insert(index->digest(i));
  }
  return s;
}

Result<std::string> ReaderSession::ReadArchive(const std::string& name) {
  if (manifest_.FindArchive(name) == nullptr) {
    return Status::NotFound("snapshot " + ref_.ToString() + " has no archive " + name);
  }
  auto bytes = store_->ReadArchive(ref_, name, kMaxArchiveBytes);
  if (bytes.ok()) return bytes;
  // The storage layer's messages name files; clients get the snapshot's name.
  const Status& s = bytes.status();
  const std::string what = "archive " + name + " of snapshot " + ref_.ToString();
  if (s.IsNotFound()) return Status::NotFound(what + " is missing from the datastore");
  if (s.IsCorruption()) return Status::Corruption(what + " is larger than any archive may be");
  return s;
}

Result<std::string> ReaderSession::ReadChunk(const Digest& digest) {
  if (!referenced_.contains(digest)) {
    return Status::NotFound("chunk " + digest.ToHex() + " is not part of snapshot " +
                            ref_.ToString());
  }
  auto blob = store_->chunk_store()->ReadBlob(digest);
  const std::string what = "chunk " + digest.ToHex() + " of snapshot " + ref_.ToString();
  if (!blob.ok()) {
    const Status& s = blob.status();
    if (s.IsNotFound()) return Status::NotFound(what + " is missing from the datastore");
    if (s.IsCorruption()) return Status::Corruption(what + " is larger than any chunk may be");
    return s;
  }
  // Never serve a chunk of a kind the snapshot does not declare (an
  // encrypted-kind file under a plaintext digest): only its magic is looked
  // at here; the client checks the digest of what it gets.
  if (std::optional<storage::BlobKind> kind = storage::PeekBlobKind(*blob);
      kind && !manifest_.AllowsChunkKind(*kind)) {
    return Status::Corruption(what + " is stored as kind " + storage::BlobKindName(*kind) +
                              ", which the snapshot does not declare; verify the snapshot");
  }
  return blob;
}

}  // namespace cairn::server
