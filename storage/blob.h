#pragma once

// Blob codec: the envelope of every chunk and small file in a datastore.
//
//   magic (8 bytes, one per kind) · CRC32C of everything after it (4 bytes LE)
//   · [IV (12) · GCM tag (16), encrypted kinds only] · payload
//
// Byte-level description: storage/FORMAT.md. The encrypted kinds are parsed
// here (the server checks CRC and size without the key); encrypting and
// decrypting is storage/crypt_config.h, which builds its envelopes with
// CompressForBlob and BuildEncryptedBlob so this file stays the only code that
// knows the byte layout.
//
// Readers parse without copying (ParseBlob → BlobView) and decode from the
// view; writers of many blobs keep one BlobEncoder each.
//
// Thread safety: all free functions are thread-safe (zstd contexts are per
// thread); a BlobEncoder is used by one thread at a time.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "storage/status.h"

struct ZSTD_CCtx_s;  // <zstd.h>

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

// The zstd level writers use (FORMAT.md: "zstd level 1"). Readers accept any.
inline constexpr int kBlobZstdLevel = 1;

// Magic bytes for a kind: "CRNBLOBp", "CRNBLOBz", "CRNBLOBe", "CRNBLOBE".
std::string_view BlobMagic(BlobKind kind);
// "plain", "zstd", "encrypted", "encrypted+zstd".
const char* BlobKindName(BlobKind kind);

// The kind named by the first kBlobMagicSize bytes of `head`, without any
// other check (no length, no CRC): for a glance at a file's head. nullopt
// when `head` is shorter or the magic is unknown.
std::optional<BlobKind> PeekBlobKind(std::string_view head);

// The largest blob that can hold a payload of at most `max_payload` bytes of
// plaintext (plain, zstd at its worst case, or encrypted, whose ciphertext
// is as long as its plaintext), capped at kMaxBlobFileSize. For callers that
// refuse to read larger files before reading them.
uint64_t MaxBlobSizeFor(uint64_t max_payload);

// A checked blob envelope: views into the bytes it was parsed from, which
// must outlive it. Nothing is copied or decoded.
struct BlobView {
  BlobKind kind = BlobKind::kPlain;
  // AES-256-GCM IV (kBlobIvSize bytes) and tag (kBlobTagSize bytes) for the
  // encrypted kinds; empty for the others.
  std::string_view iv;
  std::string_view tag;
  // Plain: the data itself. zstd: one zstd frame. Encrypted kinds: the
  // ciphertext.
  std::string_view payload;

  bool encrypted() const {
    return kind == BlobKind::kEncrypted || kind == BlobKind::kEncryptedZstd;
  }
};

// Whether an encrypted-kind blob's ciphertext length fits the plaintext
// `size` it is said to hold — the only size check possible without the key:
// CRNBLOBe: ciphertext length == size; CRNBLOBE: 0 < ciphertext length < size
// (a writer keeps the zstd form only when strictly smaller). False for the
// other kinds.
bool EncryptedSizeFits(const BlobView& blob, uint64_t size);
// The same rule from a kind and a ciphertext length (for callers that kept
// only those).
bool EncryptedSizeFits(BlobKind kind, uint64_t ciphertext_length, uint64_t size);

// Checks length, magic and CRC32C (in that order, FORMAT.md "Blob") and
// returns the view. Corruption for anything that is not a well-formed
// envelope. Does not look into the payload.
Result<BlobView> ParseBlob(std::string_view blob);

// The kind, after the checks of ParseBlob.
Result<BlobKind> CheckBlob(std::string_view blob);

// Decodes the payload of a parsed blob into *payload: plain is copied, zstd
// decompressed with a hard limit of `max_payload` bytes (a frame without a
// content size, declaring more, with trailing bytes or not decoding to its
// declared size is Corruption — never a crash or an allocation larger than
// `max_payload`). Encrypted kinds give InvalidArgument (a key is needed).
// *payload is replaced whole (empty after an error); its capacity is reused,
// so a caller decoding many chunks keeps one string and pays no zero-fill.
Status DecodeBlobPayload(const BlobView& blob, std::string* payload,
                         size_t max_payload = kMaxBlobPayload);

// ParseBlob and DecodeBlobPayload.
Status DecodeBlob(std::string_view blob, std::string* payload,
                  size_t max_payload = kMaxBlobPayload);

// Encodes `payload`: with `compress`, zstd level kBlobZstdLevel, falling back
// to plain when compression does not make it smaller. Payloads of 256 KiB or
// more are probed first (8 pieces of 8 KiB spread over them); when those do
// not compress, zstd is not run over the whole and the blob is plain — this,
// CompressForBlob and BlobEncoder decide the same way. A fresh string per
// call; writers of many blobs use a BlobEncoder. REQUIRES: payload.size() <=
// kMaxBlobPayload.
std::string EncodeBlob(std::string_view payload, bool compress = true);

// The zstd frame of `payload` at `zstd_level`, as a zstd-kind blob's payload
// holds it (content size in the frame header), into *frame — when that is
// strictly smaller than `payload`. false (and *frame unspecified) when it is
// not, when the probe (EncodeBlob) says it would not be, when `payload` is
// empty, or when no zstd context could be made: the caller then stores the
// data uncompressed. Uses the thread's zstd context.
// REQUIRES: payload.size() <= kMaxBlobPayload.
bool CompressForBlob(std::string_view payload, int zstd_level, std::string* frame);

// The parts of an encrypted-kind blob being built, for the encryptor to fill
// in place: `iv` is kBlobIvSize bytes, `tag` kBlobTagSize, `ciphertext` the
// size asked for. They point into the blob under construction.
struct EncryptedBlobParts {
  std::span<uint8_t> iv;
  std::span<uint8_t> tag;
  std::span<uint8_t> ciphertext;
};

// Builds an encrypted-kind blob around `ciphertext_size` bytes of ciphertext
// without copying it: sizes the blob, lets `fill` write IV, tag and ciphertext
// where they belong, then writes magic and CRC32C. A non-OK status of `fill`
// is returned as is (and no blob). InvalidArgument when `kind` is not an
// encrypted kind or ciphertext_size > kMaxBlobPayload.
Result<std::string> BuildEncryptedBlob(
    BlobKind kind, size_t ciphertext_size,
    const std::function<Status(const EncryptedBlobParts& parts)>& fill);

// Writes blobs one after another, keeping its zstd context and output buffer
// between them: once it has made a blob of the largest size, it allocates
// nothing more. What an Encode* call returns stays valid until the next call
// on the same encoder (or, for a plain blob sealed in the caller's buffer,
// until the caller changes that buffer).
//
// Thread safety: one thread at a time; use one encoder per thread.
class BlobEncoder {
 public:
  // Bytes a caller leaves free in front of its data in a framed buffer
  // (EncodeFramed): the header of a plain blob goes there.
  static constexpr size_t kFrameOffset = kBlobHeaderSize;

  // Writes zstd frames at `zstd_level` (readers accept any level).
  explicit BlobEncoder(int zstd_level = kBlobZstdLevel);
  ~BlobEncoder();
  BlobEncoder(const BlobEncoder&) = delete;
  BlobEncoder& operator=(const BlobEncoder&) = delete;

  // The blob of `payload`: zstd when `compress`, the probe (EncodeBlob)
  // passes and the frame is strictly smaller, else plain (always plain when
  // empty). IOError when no zstd context could be made. REQUIRES:
  // payload.size() <= kMaxBlobPayload.
  Result<std::string_view> Encode(std::string_view payload, bool compress = true);

  // The blob of the `length` bytes at offset kFrameOffset of *framed (the
  // caller left the header's room in front of its data). zstd when strictly
  // smaller, built in the encoder's buffer; otherwise plain: sealed in place
  // in *framed when the data fills it (framed->size() == kFrameOffset +
  // length: no copy), else copied into the encoder's buffer. Returns the
  // string that holds the blob — *framed or the encoder's own — whole.
  // REQUIRES: framed->size() >= kFrameOffset + length, length <=
  // kMaxBlobPayload.
  Result<const std::string*> EncodeFramed(std::string* framed, size_t length);

  // The blob of `length` zero bytes, compressed as a stream from a small
  // zero block (no buffer of `length` zeros is made), plain when that is
  // not smaller. REQUIRES: length <= kMaxBlobPayload.
  Result<const std::string*> EncodeZeros(size_t length);

 private:
  const int level_;
  ZSTD_CCtx_s* const cctx_;  // nullptr when it could not be made
  std::string out_;          // the blob being built
};

}  // namespace cairn::storage
