#pragma once

// Fixed index `<archive>.fidx`: the digest of every chunk of a disk image.
//
// Layout (all integers little-endian; byte-exact in storage/FORMAT.md):
//   offset  size  field
//        0     8  magic "CRNFIDX1"
//        8     4  u32 format version (1)
//       12     4  u32 header size (128)
//       16    16  uuid (random, RFC 4122 version 4)
//       32     8  i64 creation time, seconds since the Unix epoch
//       40     8  u64 image size in bytes
//       48     8  u64 chunk size in bytes (power of two, 1 .. 16 MiB)
//       56    32  SHA-256 over the digest list (the "checksum")
//       88    36  reserved, zero
//      124     4  u32 CRC32C of bytes 0..123
//      128  32*n  digest list, n = ceil(image size / chunk size)
// Chunk i covers image bytes [i*chunk, min((i+1)*chunk, image size)); the
// last chunk may be short. An empty image has no digests.
//
// The file is built whole in memory and handed to the caller, who writes it
// durably (WriteFileAtomic: temp name, fsync, rename).
//
// Thread safety: FixedIndex is immutable after Parse/Read and may be shared
// between threads. A FixedIndexWriter is used by one thread at a time.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "storage/digest.h"
#include "storage/env.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr char kFixedIndexMagic[] = "CRNFIDX1";  // 8 bytes, no NUL on disk
inline constexpr uint32_t kFixedIndexVersion = 1;
inline constexpr size_t kFixedIndexHeaderSize = 128;
inline constexpr uint64_t kMaxFixedIndexChunkSize = uint64_t{16} << 20;
// 2^21 chunks: 8 TiB of disk at 4 MiB chunks. Why not more: FORMAT.md,
// "Fixed index", "Limits".
inline constexpr uint64_t kMaxFixedIndexChunks = uint64_t{1} << 21;
// The size limit of an index file (64 MiB + 128 bytes): bounds every
// allocation made for an index, and is the one cap on index size everywhere
// (readers, the server's upload body, the client's geometry check).
inline constexpr uint64_t kMaxFixedIndexFileSize =
    kFixedIndexHeaderSize + kDigestSize * kMaxFixedIndexChunks;

using Uuid = std::array<uint8_t, 16>;

// OK when an index can describe an image of `image_size` bytes in chunks of
// `chunk_size`: chunk size a power of two in 1 .. kMaxFixedIndexChunkSize and
// at most kMaxFixedIndexChunks chunks. InvalidArgument otherwise. Callers
// check sizes that come from outside with this before making a writer.
Status ValidateFixedIndexGeometry(uint64_t image_size, uint64_t chunk_size);

// Number of chunks: ceil(image_size / chunk_size). REQUIRES: chunk_size > 0.
uint64_t FixedIndexChunkCount(uint64_t image_size, uint64_t chunk_size);

// A parsed, fully checked index.
class FixedIndex {
 public:
  // Corruption for anything not exactly a version-1 index: wrong magic or
  // version, header size, header CRC, non-zero reserved bytes, bad chunk
  // size, too many chunks, file length not header + 32 * chunk count
  // (truncated or trailing bytes), or a digest list not matching the checksum.
  static Result<FixedIndex> Parse(std::string_view bytes);
  // Env::ReadFile (at most kMaxFixedIndexFileSize bytes) and Parse.
  // NotFound when absent; IOError from the Env; Corruption as for Parse.
  static Result<FixedIndex> Read(Env* env, const std::string& path);

  uint64_t image_size() const { return image_size_; }
  uint64_t chunk_size() const { return chunk_size_; }
  uint64_t chunk_count() const { return chunk_count_; }
  // REQUIRES: i < chunk_count().
  Digest digest(uint64_t i) const;
  // Bytes of the image that chunk i covers (chunk_size, or less for the
  // last). REQUIRES: i < chunk_count().
  uint64_t ChunkLength(uint64_t i) const;
  const Uuid& uuid() const { return uuid_; }
  int64_t ctime() const { return ctime_; }
  // SHA-256 over the digest list: what a manifest's ArchiveInfo.csum holds.
  const Digest& checksum() const { return checksum_; }
  // The file's bytes, exactly as parsed.
  const std::string& bytes() const { return data_; }

 private:
  FixedIndex() = default;
  static Result<FixedIndex> ParseOwned(std::string data);

  std::string data_;
  uint64_t image_size_ = 0;
  uint64_t chunk_size_ = 0;
  uint64_t chunk_count_ = 0;
  Uuid uuid_{};
  int64_t ctime_ = 0;
  Digest checksum_;
};

// Collects the digests of an image's chunks, in any order, and produces the
// index file. QEMU sends the image out of order, so chunks complete in any
// order too.
class FixedIndexWriter {
 public:
  // With a geometry that ValidateFixedIndexGeometry refuses, nothing is
  // allocated and every call (Set, CopyFrom, Finish) returns that
  // InvalidArgument; status() tells it up front.
  explicit FixedIndexWriter(uint64_t image_size, uint64_t chunk_size = kChunkSize);

  Status status() const { return geometry_; }
  uint64_t image_size() const { return image_size_; }
  uint64_t chunk_size() const { return chunk_size_; }
  uint64_t chunk_count() const { return chunk_count_; }
  // REQUIRES: i < chunk_count().
  uint64_t ChunkLength(uint64_t i) const;

  // Sets (or replaces) the digest of chunk `chunk_index`.
  // InvalidArgument when the index is out of range.
  Status Set(uint64_t chunk_index, const Digest& digest);
  // For an incremental backup: takes every digest of `previous`, so only the
  // chunks that changed need Set afterwards. InvalidArgument (and nothing
  // changes) when image size or chunk size differ — a resized disk is read
  // in full instead.
  Status CopyFrom(const FixedIndex& previous);
  // True when every chunk has a digest.
  bool Complete() const { return geometry_.ok() && set_count_ == chunk_count_; }
  // The whole index file with a fresh random uuid and the given creation
  // time. InvalidArgument when a chunk has no digest yet (naming the first
  // one); IOError if the random generator fails. The writer stays usable.
  Result<std::string> Finish(int64_t ctime) const;

 private:
  Status geometry_;
  uint64_t image_size_;
  uint64_t chunk_size_;
  uint64_t chunk_count_ = 0;
  std::string digests_;    // chunk_count_ * kDigestSize bytes
  std::vector<bool> set_;  // which slots hold a digest
  uint64_t set_count_ = 0;
};

}  // namespace cairn::storage
