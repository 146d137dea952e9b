#include "storage/fixed_index.h"

#include <openssl/rand.h>

#include <cstring>

#include "storage/crc32c.h"

namespace cairn::storage {
namespace {

constexpr size_t kMagicSize = 8;
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderSize = 12;
constexpr size_t kOffUuid = 16;
constexpr size_t kOffCtime = 32;
constexpr size_t kOffImageSize = 40;
constexpr size_t kOffChunkSize = 48;
constexpr size_t kOffChecksum = 56;
constexpr size_t kOffReserved = 88;
constexpr size_t kOffCrc = 124;
static_assert(kOffCrc + 4 == kFixedIndexHeaderSize);
static_assert(sizeof(kFixedIndexMagic) == kMagicSize + 1);

void PutLE32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void PutLE64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetLE32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}
uint64_t GetLE64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

Status Bad(std::string_view why) { return Status::Corruption("fixed index: " + std::string(why)); }

Digest HashList(std::string_view list) {
  Sha256Hasher h;
  h.Update(list);
  return h.Finish();
}

uint64_t LengthOf(uint64_t i, uint64_t image_size, uint64_t chunk_size) {
  uint64_t start = i * chunk_size;
  return image_size - start < chunk_size ? image_size - start : chunk_size;
}

}  // namespace

Status ValidateFixedIndexGeometry(uint64_t image_size, uint64_t chunk_size) {
  if (chunk_size == 0 || (chunk_size & (chunk_size - 1)) != 0 ||
      chunk_size > kMaxFixedIndexChunkSize) {
    return Status::InvalidArgument("chunk size " + std::to_string(chunk_size) +
                                   " is not a power of two up to 16 MiB");
  }
  if (FixedIndexChunkCount(image_size, chunk_size) > kMaxFixedIndexChunks) {
    return Status::InvalidArgument("image of " + std::to_string(image_size) +
                                   " bytes needs more than " +
                                   std::to_string(kMaxFixedIndexChunks) + " chunks");
  }
  return Status::OK();
}

uint64_t FixedIndexChunkCount(uint64_t image_size, uint64_t chunk_size) {
  // Not (image_size + chunk_size - 1) / chunk_size: that wraps near 2^64.
  return image_size / chunk_size + (image_size % chunk_size != 0 ? 1 : 0);
}

// --- FixedIndex ---

Result<FixedIndex> FixedIndex::Parse(std::string_view bytes) {
  // Refuse before copying: a hostile length must not cost an allocation.
  if (bytes.size() > kMaxFixedIndexFileSize) return Bad("larger than any valid index");
  return ParseOwned(std::string(bytes));
}

Result<FixedIndex> FixedIndex::Read(Env* env, const std::string& path) {
  std::string data;
  CAIRN_RETURN_IF_ERROR(env->ReadFile(path, &data, kMaxFixedIndexFileSize));
  auto index = ParseOwned(std::move(data));
  if (!index.ok()) return index.status().WithContext(path);
  return index;
}

Result<FixedIndex> FixedIndex::ParseOwned(std::string data) {
  if (data.size() > kMaxFixedIndexFileSize) return Bad("larger than any valid index");
  if (data.size() < kFixedIndexHeaderSize) return Bad("truncated header");
  const char* h = data.data();
  if (std::memcmp(h, kFixedIndexMagic, kMagicSize) != 0) return Bad("bad magic");
  uint32_t version = GetLE32(h + kOffVersion);
  if (version != kFixedIndexVersion) return Bad("unsupported version " + std::to_string(version));
  if (GetLE32(h + kOffHeaderSize) != kFixedIndexHeaderSize) return Bad("bad header size");
  if (Crc32c(std::string_view(h, kOffCrc)) != GetLE32(h + kOffCrc)) {
    return Bad("header checksum mismatch");
  }
  // The CRC covers them, but non-zero reserved bytes mean a writer that
  // knows a format this reader does not.
  for (size_t i = kOffReserved; i < kOffCrc; ++i) {
    if (h[i] != 0) return Bad("reserved header bytes are not zero");
  }

  FixedIndex index;
  index.image_size_ = GetLE64(h + kOffImageSize);
  index.chunk_size_ = GetLE64(h + kOffChunkSize);
  Status geometry = ValidateFixedIndexGeometry(index.image_size_, index.chunk_size_);
  if (!geometry.ok()) return Bad(geometry.message());
  index.chunk_count_ = FixedIndexChunkCount(index.image_size_, index.chunk_size_);
  // Cannot overflow: chunk_count_ <= kMaxFixedIndexChunks.
  uint64_t expected = kFixedIndexHeaderSize + kDigestSize * index.chunk_count_;
  if (data.size() < expected) return Bad("truncated digest list");
  if (data.size() > expected) return Bad("trailing bytes after the digest list");

  std::memcpy(index.uuid_.data(), h + kOffUuid, index.uuid_.size());
  index.ctime_ = static_cast<int64_t>(GetLE64(h + kOffCtime));
  std::memcpy(index.checksum_.bytes.data(), h + kOffChecksum, kDigestSize);
  std::string_view list(h + kFixedIndexHeaderSize, data.size() - kFixedIndexHeaderSize);
  if (HashList(list) != index.checksum_) return Bad("digest list checksum mismatch");
  index.data_ = std::move(data);
  return index;
}

Digest FixedIndex::digest(uint64_t i) const {
  Digest d;
  std::memcpy(d.bytes.data(), data_.data() + kFixedIndexHeaderSize + i * kDigestSize, kDigestSize);
  return d;
}

uint64_t FixedIndex::ChunkLength(uint64_t i) const { return LengthOf(i, image_size_, chunk_size_); }

// --- FixedIndexWriter ---

FixedIndexWriter::FixedIndexWriter(uint64_t image_size, uint64_t chunk_size)
    : geometry_(ValidateFixedIndexGeometry(image_size, chunk_size)),
      image_size_(image_size),
      chunk_size_(chunk_size) {
  if (!geometry_.ok()) return;
  chunk_count_ = FixedIndexChunkCount(image_size, chunk_size);
  digests_.assign(chunk_count_ * kDigestSize, '\0');
  set_.assign(chunk_count_, false);
}

uint64_t FixedIndexWriter::ChunkLength(uint64_t i) const {
  return LengthOf(i, image_size_, chunk_size_);
}

Status FixedIndexWriter::Set(uint64_t chunk_index, const Digest& digest) {
  CAIRN_RETURN_IF_ERROR(geometry_);
  if (chunk_index >= chunk_count_) {
    return Status::InvalidArgument("chunk " + std::to_string(chunk_index) + " out of range (" +
                                   std::to_string(chunk_count_) + " chunks)");
  }
  std::memcpy(digests_.data() + chunk_index * kDigestSize, digest.bytes.data(), kDigestSize);
  if (!set_[chunk_index]) {
    set_[chunk_index] = true;
    ++set_count_;
  }
  return Status::OK();
}

Status FixedIndexWriter::CopyFrom(const FixedIndex& previous) {
  CAIRN_RETURN_IF_ERROR(geometry_);
  if (previous.image_size() != image_size_ || previous.chunk_size() != chunk_size_) {
    return Status::InvalidArgument("previous index has another image or chunk size");
  }
  std::memcpy(digests_.data(), previous.bytes().data() + kFixedIndexHeaderSize, digests_.size());
  set_.assign(chunk_count_, true);
  set_count_ = chunk_count_;
  return Status::OK();
}

Result<std::string> FixedIndexWriter::Finish(int64_t ctime) const {
  CAIRN_RETURN_IF_ERROR(geometry_);
  if (set_count_ != chunk_count_) {
    uint64_t first = 0;
    while (first < chunk_count_ && set_[first]) ++first;
    return Status::InvalidArgument(
        "index incomplete: " + std::to_string(chunk_count_ - set_count_) +
        " chunks without a digest, first " + std::to_string(first));
  }
  std::string out(kFixedIndexHeaderSize, '\0');
  char* h = out.data();
  std::memcpy(h, kFixedIndexMagic, kMagicSize);
  PutLE32(h + kOffVersion, kFixedIndexVersion);
  PutLE32(h + kOffHeaderSize, kFixedIndexHeaderSize);
  Uuid uuid;
  if (RAND_bytes(uuid.data(), static_cast<int>(uuid.size())) != 1) {
    return Status::IOError("RAND_bytes failed");
  }
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0f) | 0x40);  // version 4
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::memcpy(h + kOffUuid, uuid.data(), uuid.size());
  PutLE64(h + kOffCtime, static_cast<uint64_t>(ctime));
  PutLE64(h + kOffImageSize, image_size_);
  PutLE64(h + kOffChunkSize, chunk_size_);
  Digest checksum = HashList(digests_);
  std::memcpy(h + kOffChecksum, checksum.bytes.data(), kDigestSize);
  PutLE32(h + kOffCrc, Crc32c(std::string_view(h, kOffCrc)));
  out += digests_;
  return out;
}

}  // namespace cairn::storage
