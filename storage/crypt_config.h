#pragma once

// The chunk-level cryptography of one client-side encryption key: keyed chunk
// digests, encrypted blobs (AES-256-GCM), the manifest signature and the key's
// fingerprint. Byte-level description: storage/FORMAT.md, "Encryption keys".
//
// The server never holds a key: it only checks an encrypted blob's envelope
// (storage/blob.h: ParseBlob, EncryptedSizeFits). Clients encrypt and decrypt.
//
// Thread safety: a CryptConfig is a plain value (the derived keys, the
// fingerprint and one cached digest); every const method makes its own
// OpenSSL contexts, so one CryptConfig may be used from many threads at once.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr size_t kEncryptionKeySize = 32;

// The chunk-level crypto of one encryption key. Copyable; const methods are
// thread-safe (no shared OpenSSL context). The copies of the derived keys are
// wiped from memory when an object is destroyed.
class CryptConfig {
 public:
  // `key`: kEncryptionKeySize raw bytes (InvalidArgument otherwise).
  // Derived keys (HMAC-SHA256(key, label)):
  //   enc key  = label "cairn chunk encryption v1"   (AES-256-GCM)
  //   id key   = label "cairn chunk digest v1"       (keyed digests)
  //   sign key = label "cairn manifest signature v1" (manifest signature)
  //   fingerprint = first 8 bytes of HMAC-SHA256(key, "cairn key fingerprint v1"),
  //                 lowercase hex pairs joined by ':' ("1f:2e:…", 23 chars)
  // Computes ZeroChunkDigest(kChunkSize) once (a few milliseconds).
  static Result<CryptConfig> FromKey(std::string_view key);

  CryptConfig(const CryptConfig&) = default;
  CryptConfig& operator=(const CryptConfig&) = default;
  CryptConfig(CryptConfig&&) = default;
  CryptConfig& operator=(CryptConfig&&) = default;
  ~CryptConfig();

  // "1f:2e:3d:4c:5b:6a:79:88": names the key in manifests, the API and
  // error messages. Not secret.
  const std::string& fingerprint() const { return fingerprint_; }

  // HMAC-SHA256(id key, data): the digest of a chunk in an encrypted archive.
  Digest ChunkDigest(std::string_view data) const;

  // ChunkDigest of `length` zero bytes; the kChunkSize one computed once at
  // FromKey, others streamed from a small zero block (no buffer of `length`
  // zeros is made).
  Digest ZeroChunkDigest(size_t length = kChunkSize) const;

  // An encrypted blob (FORMAT.md "Blob"): payload zstd-compressed at `zstd_level`
  // when `compress` and strictly smaller -> kind CRNBLOBE, else CRNBLOBe;
  // fresh random 96-bit IV (RAND_bytes); AES-256-GCM with AAD = the 8 magic
  // bytes; 16-byte tag; CRC32C over IV|tag|ciphertext as for every blob.
  // InvalidArgument when payload.size() > kMaxBlobPayload; IOError when the
  // random generator or the cipher fails.
  Result<std::string> EncryptBlob(std::string_view payload, bool compress = true,
                                  int zstd_level = kBlobZstdLevel) const;

  // Decrypts (and decompresses, same limits as DecodeBlobPayload) a parsed
  // encrypted-kind blob into *payload (cleared on any failure). Plain kinds:
  // InvalidArgument. A GCM tag mismatch (wrong key, damaged IV, tag, ciphertext
  // or a magic swapped between e and E) is Corruption("encrypted blob cannot be
  // decrypted with key <fp>: wrong key or damaged chunk"); a ciphertext or
  // decoded payload over `max_payload` is Corruption.
  Status DecryptBlob(const BlobView& blob, std::string* payload,
                     size_t max_payload = kMaxBlobPayload) const;

  // HMAC-SHA256(sign key, text).
  Digest Sign(std::string_view text) const;

 private:
  using Key = std::array<uint8_t, kEncryptionKeySize>;

  CryptConfig() = default;

  Key enc_key_{};
  Key id_key_{};
  Key sign_key_{};
  std::string fingerprint_;
  Digest zero_chunk_digest_;
};

}  // namespace cairn::storage
