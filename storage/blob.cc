#include "storage/blob.h"

#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "storage/crc32c.h"

namespace cairn::storage {
namespace {

constexpr char kMagicPlain[] = "CRNBLOBp";
constexpr char kMagicZstd[] = "CRNBLOBz";
constexpr char kMagicEncrypted[] = "CRNBLOBe";
constexpr char kMagicEncryptedZstd[] = "CRNBLOBE";

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One context per thread: creating one per call costs more than compressing
// a small chunk.
ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> ctx(ZSTD_createCCtx());
  return ctx.get();
}
ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> ctx(ZSTD_createDCtx());
  return ctx.get();
}

void PutLE32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetLE32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

// Writes magic and CRC32C into the first kBlobHeaderSize bytes of *blob,
// whose payload is in place after them. The one place a header is written.
void Seal(std::string* blob, BlobKind kind) {
  std::memcpy(blob->data(), BlobMagic(kind).data(), kBlobMagicSize);
  std::string_view rest(blob->data() + kBlobHeaderSize, blob->size() - kBlobHeaderSize);
  PutLE32(blob->data() + kBlobMagicSize, Crc32c(rest));
}

// Payloads of kProbeMinSize bytes or more are probed before zstd runs over
// them whole: kProbePieces pieces of kProbePieceSize bytes, spread evenly from
// the first byte to the last, are compressed one by one, and unless together
// they shrink below 97% of their size the payload is stored plain. On random
// or already compressed data zstd level 1 spends 0.6 ms per 4 MiB only to
// give up, and the blob then takes a second pass (bench/README.md, issue 11);
// the probe compresses 1/64 of that. A payload whose compressible bytes all
// lie between the pieces is stored plain: that costs space (at most what zstd
// would have saved), never correctness.
constexpr size_t kProbeMinSize = 256 * 1024;
constexpr size_t kProbePieces = 8;
constexpr size_t kProbePieceSize = 8 * 1024;

bool WorthCompressing(ZSTD_CCtx* cctx, int level, const char* data, size_t length) {
  if (length < kProbeMinSize) return true;
  std::array<char, ZSTD_COMPRESSBOUND(kProbePieceSize)> out;
  const size_t stride = (length - kProbePieceSize) / (kProbePieces - 1);
  size_t compressed = 0;
  for (size_t i = 0; i < kProbePieces; ++i) {
    size_t n = ZSTD_compressCCtx(cctx, out.data(), out.size(), data + i * stride,
                                 kProbePieceSize, level);
    if (ZSTD_isError(n)) return true;  // the whole attempt decides
    compressed += n;
  }
  return compressed * 100 < kProbePieces * kProbePieceSize * 97;
}

// zstd's frame of `data` in `dst` (room for ZSTD_compressBound(length)
// bytes): its size, or 0 when it is not smaller than `data`.
// ZSTD_compressCCtx writes the content size into the frame header, which
// readers require.
size_t FrameInto(ZSTD_CCtx* cctx, int level, const char* data, size_t length, char* dst) {
  size_t n = ZSTD_compressCCtx(cctx, dst, ZSTD_compressBound(length), data, length, level);
  return ZSTD_isError(n) || n >= length ? 0 : n;
}

// The zstd frame of the `length` bytes at `data`, at `offset` in *out (which
// is resized to offset + frame size), when WorthCompressing and strictly
// smaller than `length`; false otherwise (*out's size then unspecified). The
// one place every writer of zstd blobs decides. REQUIRES: length > 0.
bool CompressInto(ZSTD_CCtx* cctx, int level, const char* data, size_t length, size_t offset,
                  std::string* out) {
  if (!WorthCompressing(cctx, level, data, length)) return false;
  out->resize(offset + ZSTD_compressBound(length));
  const size_t n = FrameInto(cctx, level, data, length, out->data() + offset);
  out->resize(offset + n);
  return n != 0;
}

// CompressInto (the same decision) for the string a BlobEncoder reuses for
// every blob: growing it from the last frame's size to the bound would
// zero-fill megabytes per chunk (resize() must), so the frame is made in the
// thread's scratch buffer, which nothing fills, and only its bytes are copied.
bool CompressIntoReused(ZSTD_CCtx* cctx, int level, const char* data, size_t length,
                        size_t offset, std::string* out) {
  if (!WorthCompressing(cctx, level, data, length)) return false;
  thread_local std::unique_ptr<char[]> scratch;
  thread_local size_t scratch_size = 0;
  if (const size_t bound = ZSTD_compressBound(length); scratch_size < bound) {
    scratch.reset(new char[bound]);
    scratch_size = bound;
  }
  const size_t n = FrameInto(cctx, level, data, length, scratch.get());
  if (n == 0) return false;
  out->resize(offset + n);
  std::memcpy(out->data() + offset, scratch.get(), n);
  return true;
}

// Builds the blob of `payload` in *out (reusing its capacity): zstd with
// `cctx` when asked and CompressInto takes it, else plain. A null `cctx` with
// `compress` is IOError.
Status EncodeInto(ZSTD_CCtx* cctx, int level, std::string_view payload, bool compress,
                  std::string* out) {
  if (compress && !payload.empty()) {
    if (cctx == nullptr) return Status::IOError("cannot create a zstd context");
    if (CompressInto(cctx, level, payload.data(), payload.size(), kBlobHeaderSize, out)) {
      Seal(out, BlobKind::kZstd);
      return Status::OK();
    }
  }
  // Not compressible (or not asked to): store as is.
  out->resize(kBlobHeaderSize + payload.size());
  if (!payload.empty()) std::memcpy(out->data() + kBlobHeaderSize, payload.data(), payload.size());
  Seal(out, BlobKind::kPlain);
  return Status::OK();
}

}  // namespace

std::string_view BlobMagic(BlobKind kind) {
  switch (kind) {
    case BlobKind::kPlain: return {kMagicPlain, kBlobMagicSize};
    case BlobKind::kZstd: return {kMagicZstd, kBlobMagicSize};
    case BlobKind::kEncrypted: return {kMagicEncrypted, kBlobMagicSize};
    case BlobKind::kEncryptedZstd: return {kMagicEncryptedZstd, kBlobMagicSize};
  }
  return {};
}

const char* BlobKindName(BlobKind kind) {
  switch (kind) {
    case BlobKind::kPlain: return "plain";
    case BlobKind::kZstd: return "zstd";
    case BlobKind::kEncrypted: return "encrypted";
    case BlobKind::kEncryptedZstd: return "encrypted+zstd";
  }
  return "?";
}

std::optional<BlobKind> PeekBlobKind(std::string_view head) {
  if (head.size() < kBlobMagicSize) return std::nullopt;
  std::string_view magic = head.substr(0, kBlobMagicSize);
  for (BlobKind kind : {BlobKind::kPlain, BlobKind::kZstd, BlobKind::kEncrypted,
                        BlobKind::kEncryptedZstd}) {
    if (magic == BlobMagic(kind)) return kind;
  }
  return std::nullopt;
}

uint64_t MaxBlobSizeFor(uint64_t max_payload) {
  max_payload = std::min<uint64_t>(max_payload, kMaxBlobPayload);
  const uint64_t zstd = ZSTD_compressBound(static_cast<size_t>(max_payload)) + kBlobHeaderSize;
  const uint64_t other = max_payload + kBlobHeaderSize + kBlobIvSize + kBlobTagSize;
  return std::min(kMaxBlobFileSize, std::max(zstd, other));
}

Result<BlobView> ParseBlob(std::string_view blob) {
  if (blob.size() < kBlobHeaderSize) return Status::Corruption("blob shorter than its header");
  std::optional<BlobKind> kind = PeekBlobKind(blob);
  if (!kind) return Status::Corruption("blob has an unknown magic");
  BlobView view;
  view.kind = *kind;
  std::string_view rest = blob.substr(kBlobHeaderSize);
  if (view.encrypted()) {
    if (rest.size() < kBlobIvSize + kBlobTagSize) {
      return Status::Corruption("encrypted blob shorter than its header");
    }
    view.iv = rest.substr(0, kBlobIvSize);
    view.tag = rest.substr(kBlobIvSize, kBlobTagSize);
    view.payload = rest.substr(kBlobIvSize + kBlobTagSize);
  } else {
    view.payload = rest;
  }
  if (Crc32c(rest) != GetLE32(blob.data() + kBlobMagicSize)) {
    return Status::Corruption("blob CRC32C mismatch");
  }
  return view;
}

Result<BlobKind> CheckBlob(std::string_view blob) {
  CAIRN_ASSIGN_OR_RETURN(BlobView view, ParseBlob(blob));
  return view.kind;
}

Status DecodeBlobPayload(const BlobView& blob, std::string* payload, size_t max_payload) {
  const std::string_view body = blob.payload;
  switch (blob.kind) {
    case BlobKind::kPlain:
      payload->clear();
      if (body.size() > max_payload) return Status::Corruption("blob payload exceeds the limit");
      payload->assign(body);
      return Status::OK();
    case BlobKind::kZstd: {
      // The frame header must state the size; a frame that does not, or that
      // claims more than the limit, is refused before anything is allocated.
      unsigned long long size = ZSTD_getFrameContentSize(body.data(), body.size());
      if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
        payload->clear();
        return Status::Corruption("zstd blob has no valid frame content size");
      }
      if (size > max_payload) {
        payload->clear();
        return Status::Corruption("zstd blob declares a size over the limit");
      }
      if (ZSTD_findFrameCompressedSize(body.data(), body.size()) != body.size()) {
        payload->clear();
        return Status::Corruption("zstd blob has trailing or missing bytes");
      }
      // Not cleared first: resize() zero-fills only the bytes beyond the
      // string's current size, and a reused 4 MiB buffer (the server's check
      // of every upload, restore, verify) then costs no memset per chunk.
      // zstd overwrites every byte it reports.
      payload->resize(static_cast<size_t>(size));
      size_t n = ZSTD_decompressDCtx(ThreadDCtx(), payload->data(), payload->size(), body.data(),
                                     body.size());
      if (ZSTD_isError(n) || n != size) {
        payload->clear();
        return Status::Corruption(std::string("zstd blob does not decode: ") +
                                  (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "size mismatch"));
      }
      return Status::OK();
    }
    case BlobKind::kEncrypted:
    case BlobKind::kEncryptedZstd:
      payload->clear();
      return Status::InvalidArgument("blob is encrypted; a key is needed to decode it");
  }
  payload->clear();
  return Status::Corruption("blob kind not handled");
}

Status DecodeBlob(std::string_view blob, std::string* payload, size_t max_payload) {
  Result<BlobView> view = ParseBlob(blob);
  if (!view.ok()) {
    payload->clear();
    return view.status();
  }
  return DecodeBlobPayload(*view, payload, max_payload);
}

bool CompressForBlob(std::string_view payload, int zstd_level, std::string* frame) {
  if (payload.empty()) return false;
  ZSTD_CCtx* cctx = ThreadCCtx();
  return cctx != nullptr &&
         CompressInto(cctx, zstd_level, payload.data(), payload.size(), 0, frame);
}

Result<std::string> BuildEncryptedBlob(
    BlobKind kind, size_t ciphertext_size,
    const std::function<Status(const EncryptedBlobParts& parts)>& fill) {
  if (kind != BlobKind::kEncrypted && kind != BlobKind::kEncryptedZstd) {
    return Status::InvalidArgument("BuildEncryptedBlob needs an encrypted kind");
  }
  if (ciphertext_size > kMaxBlobPayload) {
    return Status::InvalidArgument("encrypted blob payload exceeds the limit");
  }
  std::string blob(kBlobHeaderSize + kBlobIvSize + kBlobTagSize + ciphertext_size, '\0');
  auto* base = reinterpret_cast<uint8_t*>(blob.data());
  EncryptedBlobParts parts{
      .iv = {base + kBlobHeaderSize, kBlobIvSize},
      .tag = {base + kBlobHeaderSize + kBlobIvSize, kBlobTagSize},
      .ciphertext = {base + kBlobHeaderSize + kBlobIvSize + kBlobTagSize, ciphertext_size}};
  CAIRN_RETURN_IF_ERROR(fill(parts));
  Seal(&blob, kind);
  return blob;
}

std::string EncodeBlob(std::string_view payload, bool compress) {
  std::string blob;
  // Without a context (out of memory) the blob is plain: still valid.
  ZSTD_CCtx* cctx = compress ? ThreadCCtx() : nullptr;
  (void)EncodeInto(cctx, kBlobZstdLevel, payload, cctx != nullptr, &blob);
  return blob;
}

BlobEncoder::BlobEncoder(int zstd_level) : level_(zstd_level), cctx_(ZSTD_createCCtx()) {}

BlobEncoder::~BlobEncoder() { ZSTD_freeCCtx(cctx_); }

Result<std::string_view> BlobEncoder::Encode(std::string_view payload, bool compress) {
  CAIRN_RETURN_IF_ERROR(EncodeInto(cctx_, level_, payload, compress, &out_));
  return std::string_view(out_);
}

Result<const std::string*> BlobEncoder::EncodeFramed(std::string* framed, size_t length) {
  if (cctx_ == nullptr) return Status::IOError("cannot create a zstd context");
  const char* data = framed->data() + kFrameOffset;
  if (length > 0 && CompressIntoReused(cctx_, level_, data, length, kBlobHeaderSize, &out_)) {
    Seal(&out_, BlobKind::kZstd);
    return &out_;
  }
  if (kFrameOffset + length == framed->size()) {
    // The data fills the buffer: seal it where it lies.
    Seal(framed, BlobKind::kPlain);
    return static_cast<const std::string*>(framed);
  }
  out_.resize(kBlobHeaderSize + length);
  if (length > 0) std::memcpy(out_.data() + kBlobHeaderSize, data, length);
  Seal(&out_, BlobKind::kPlain);
  return &out_;
}

Result<const std::string*> BlobEncoder::EncodeZeros(size_t length) {
  static constexpr size_t kPiece = 64 * 1024;
  static const std::array<char, kPiece> kZeros{};
  if (cctx_ == nullptr) return Status::IOError("cannot create a zstd context");
  // The pledged size puts the content size into the frame header, which
  // readers require (FORMAT.md, "Blob").
  ZSTD_CCtx_reset(cctx_, ZSTD_reset_session_and_parameters);
  size_t r = ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level_);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setPledgedSrcSize(cctx_, length);
  if (ZSTD_isError(r)) return Status::IOError(std::string("zstd: ") + ZSTD_getErrorName(r));
  out_.resize(kBlobHeaderSize + 4096);
  ZSTD_outBuffer ob{out_.data() + kBlobHeaderSize, out_.size() - kBlobHeaderSize, 0};
  for (size_t fed = 0; fed < length;) {
    size_t piece = std::min(kPiece, length - fed);
    ZSTD_inBuffer ib{kZeros.data(), piece, 0};
    ZSTD_EndDirective mode = fed + piece == length ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
      r = ZSTD_compressStream2(cctx_, &ob, &ib, mode);
      if (ZSTD_isError(r)) return Status::IOError(std::string("zstd: ") + ZSTD_getErrorName(r));
      if (mode == ZSTD_e_end ? r == 0 : ib.pos == ib.size) break;
      if (ob.pos == ob.size) {
        out_.resize(out_.size() * 2);
        ob.dst = out_.data() + kBlobHeaderSize;
        ob.size = out_.size() - kBlobHeaderSize;
      }
    }
    fed += piece;
  }
  if (ob.pos < length) {
    out_.resize(kBlobHeaderSize + ob.pos);
    Seal(&out_, BlobKind::kZstd);
  } else {  // a few zero bytes (or none): plain is smaller
    out_.assign(kBlobHeaderSize + length, '\0');
    Seal(&out_, BlobKind::kPlain);
  }
  return static_cast<const std::string*>(&out_);
}

bool EncryptedSizeFits(const BlobView& blob, uint64_t size) {
  return EncryptedSizeFits(blob.kind, blob.payload.size(), size);
}

bool EncryptedSizeFits(BlobKind kind, uint64_t ciphertext, uint64_t size) {
  switch (kind) {
    case BlobKind::kEncrypted:
      return ciphertext == size;
    case BlobKind::kEncryptedZstd:
      return ciphertext > 0 && ciphertext < size;
    default:
      return false;
  }
}

}  // namespace cairn::storage
