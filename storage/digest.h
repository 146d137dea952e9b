#pragma once

// SHA-256 digests of chunk plaintext, their hex form, and the all-zero chunk.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "storage/status.h"

namespace cairn::storage {

inline constexpr size_t kDigestSize = 32;
// Fixed chunk size for disk images; the last chunk of an image may be shorter.
inline constexpr size_t kChunkSize = 4 * 1024 * 1024;

struct Digest {
  std::array<uint8_t, kDigestSize> bytes{};

  auto operator<=>(const Digest&) const = default;
  // 64 lowercase hex characters.
  std::string ToHex() const;
  // Accepts exactly 64 lowercase hex characters; InvalidArgument otherwise.
  static Result<Digest> FromHex(std::string_view hex);
  // The first 8 bytes as a big-endian integer (sorting, hashing, GC marks).
  uint64_t Prefix64() const;
};

struct DigestHash {
  size_t operator()(const Digest& d) const { return static_cast<size_t>(d.Prefix64()); }
};

// SHA-256 through OpenSSL EVP, which uses the CPU's SHA extensions when present.
// Thread-safe.
Digest Sha256(std::string_view data);

// Incremental SHA-256 (for checksums over a list of digests and the like).
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(std::string_view data);
  Digest Finish();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

// True when every byte of `data` is zero. Much faster than hashing.
bool IsAllZero(std::string_view data);

// SHA-256 of `size` zero bytes; cached for kChunkSize. Thread-safe.
Digest ZeroChunkDigest(size_t size = kChunkSize);

}  // namespace cairn::storage
