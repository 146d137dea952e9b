#include "server/image_download.h"

#include <algorithm>

#include "server/session_manager.h"
#include "storage/blob.h"
#include "storage/digest.h"

namespace cairn::server {

Result<std::unique_ptr<ImageDownload>> ImageDownload::Open(std::shared_ptr<ReaderSession> reader,
                                                           SessionManager* sessions,
                                                           const std::string& archive) {
  constexpr std::string_view kSuffix = ".fidx";
  if (archive.size() <= kSuffix.size() ||
      archive.compare(archive.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
    sessions->EndReader(reader->id());
    return Status::InvalidArgument("only disk images (.fidx archives) can be downloaded");
  }
  auto bytes = reader->ReadArchive(archive);
  auto index = bytes.ok() ? storage::FixedIndex::Parse(*bytes)
                          : Result<storage::FixedIndex>(bytes.status());
  if (!index.ok()) {
    sessions->EndReader(reader->id());
    return index.status().WithContext(archive);
  }
  return std::unique_ptr<ImageDownload>(
      new ImageDownload(std::move(reader), sessions, archive, std::move(*index)));
}

ImageDownload::~ImageDownload() { sessions_->EndReader(reader_->id()); }

std::string ImageDownload::FileName() const {
  const storage::SnapshotRef& ref = reader_->ref();
  std::string disk = archive_.substr(0, archive_.size() - 5);
  std::string name = ref.ToString() + "-" + disk + ".img";
  std::replace(name.begin(), name.end(), '/', '-');
  std::replace(name.begin(), name.end(), ':', '-');
  return name;
}

Result<std::string> ImageDownload::Chunk(uint64_t i, int64_t now) {
  reader_->Touch(now);  // a long download keeps its session alive
  const storage::Digest digest = index_.digest(i);
  const uint64_t length = index_.ChunkLength(i);
  if (digest == storage::ZeroChunkDigest(length)) return std::string(length, '\0');
  CAIRN_ASSIGN_OR_RETURN(std::string blob, reader_->ReadChunk(digest));
  const std::string what = "chunk " + digest.ToHex() + " of " + reader_->ref().ToString();
  std::string plain;
  if (Status s = storage::DecodeBlob(blob, &plain); !s.ok()) {
    return Status::Corruption(what + " does not decode: " + s.message());
  }
  if (plain.size() != length || storage::Sha256(plain) != digest) {
    return Status::Corruption(what + " does not match its digest; verify the snapshot");
  }
  return plain;
}

}  // namespace cairn::server
