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
  return store_->ReadArchive(ref_, name, kMaxArchiveBytes);
}

Result<std::string> ReaderSession::ReadChunk(const Digest& digest) {
  if (!referenced_.contains(digest)) {
    return Status::NotFound("chunk " + digest.ToHex() + " is not part of snapshot " +
                            ref_.ToString());
  }
  return store_->chunk_store()->ReadBlob(digest);
}

}  // namespace cairn::server
