#pragma once

// Blob codec: the envelope of every chunk and small file in a datastore.
//
//   magic (8 bytes, one per kind) · CRC32C of everything after it (4 bytes LE)
//   · [IV (12) · GCM tag (16), encrypted kinds only] · payload
//
// Byte-level description: storage/FORMAT.md. The encrypted kinds are reserved:
// their layout is fixed here so the server can check CRC and size without the
// key, but this library does not encrypt or decrypt yet.
//
// Thread safety: all functions are thread-safe (zstd contexts are per thread).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "storage/status.h"

namespace cairn::storage {

enum class BlobKind : uint8_t { kPlain, kZstd, kEncrypted, kEncryptedZstd };

inline constexpr size_t kBlobMagicSize = 8;
inline constexpr size_t kBlobHeaderSize = kBlobMagicSize + 4;  // magic + CRC32C
inline constexpr size_t kBlobIvSize = 12;
inline constexpr size_t kBlobTagSize = 16;
// The largest payload a blob may declare or decode to: anything larger is
// Corruption, whatever its header claims.
inline constexpr size_t kMaxBlobPayload = 16 * 1024 * 1024;
// The largest blob file of any kind: the largest payload in its envelope.
inline constexpr uint64_t kMaxBlobFileSize =
    kMaxBlobPayload + kBlobHeaderSize + kBlobIvSize + kBlobTagSize;

// Magic bytes for a kind: "CRNBLOBp", "CRNBLOBz", "CRNBLOBe", "CRNBLOBE".
std::string_view BlobMagic(BlobKind kind);
// "plain", "zstd", "encrypted", "encrypted+zstd".
const char* BlobKindName(BlobKind kind);

// Encodes `payload`: with `compress`, zstd level 1, falling back to plain when
// compression does not make it smaller. REQUIRES: payload.size() <= kMaxBlobPayload.
std::string EncodeBlob(std::string_view payload, bool compress = true);

// The kind from the magic, after checking the CRC and the minimum size.
// Corruption for anything that is not a well-formed envelope.
Result<BlobKind> CheckBlob(std::string_view blob);

// Decodes an unencrypted blob: checks magic and CRC, decompresses with a hard
// limit of `max_payload` bytes. Corruption for any malformed input — never a
// crash or an allocation larger than `max_payload`. Encrypted kinds give
// InvalidArgument (a key is needed).
Status DecodeBlob(std::string_view blob, std::string* payload,
                  size_t max_payload = kMaxBlobPayload);

}  // namespace cairn::storage
