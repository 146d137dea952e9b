#include "storage/blob.h"

#include <zstd.h>

#include <cstring>
#include <memory>

#include "storage/crc32c.h"

namespace cairn::storage {
namespace {

constexpr char kMagicPlain[] = "CRNBLOBp";
constexpr char kMagicZstd[] = "CRNBLOBz";
constexpr char kMagicEncrypted[] = "CRNBLOBe";
constexpr char kMagicEncryptedZstd[] = "CRNBLOBE";
constexpr int kZstdLevel = 1;

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

void FinishHeader(std::string* blob, BlobKind kind) {
  std::memcpy(blob->data(), BlobMagic(kind).data(), kBlobMagicSize);
  std::string_view rest(blob->data() + kBlobHeaderSize, blob->size() - kBlobHeaderSize);
  PutLE32(blob->data() + kBlobMagicSize, Crc32c(rest));
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

std::string EncodeBlob(std::string_view payload, bool compress) {
  std::string blob;
  if (compress && !payload.empty()) {
    size_t bound = ZSTD_compressBound(payload.size());
    blob.resize(kBlobHeaderSize + bound);
    size_t n = ZSTD_compressCCtx(ThreadCCtx(), blob.data() + kBlobHeaderSize, bound,
                                 payload.data(), payload.size(), kZstdLevel);
    if (!ZSTD_isError(n) && n < payload.size()) {
      blob.resize(kBlobHeaderSize + n);
      FinishHeader(&blob, BlobKind::kZstd);
      return blob;
    }
  }
  // Not compressible (or not asked to): store as is.
  blob.resize(kBlobHeaderSize + payload.size());
  if (!payload.empty()) std::memcpy(blob.data() + kBlobHeaderSize, payload.data(), payload.size());
  FinishHeader(&blob, BlobKind::kPlain);
  return blob;
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

Result<BlobKind> CheckBlob(std::string_view blob) {
  if (blob.size() < kBlobHeaderSize) return Status::Corruption("blob shorter than its header");
  std::string_view magic = blob.substr(0, kBlobMagicSize);
  BlobKind kind;
  if (magic == BlobMagic(BlobKind::kPlain)) {
    kind = BlobKind::kPlain;
  } else if (magic == BlobMagic(BlobKind::kZstd)) {
    kind = BlobKind::kZstd;
  } else if (magic == BlobMagic(BlobKind::kEncrypted)) {
    kind = BlobKind::kEncrypted;
  } else if (magic == BlobMagic(BlobKind::kEncryptedZstd)) {
    kind = BlobKind::kEncryptedZstd;
  } else {
    return Status::Corruption("blob has an unknown magic");
  }
  if (kind == BlobKind::kEncrypted || kind == BlobKind::kEncryptedZstd) {
    if (blob.size() < kBlobHeaderSize + kBlobIvSize + kBlobTagSize) {
      return Status::Corruption("encrypted blob shorter than its header");
    }
  }
  uint32_t stored = GetLE32(blob.data() + kBlobMagicSize);
  if (Crc32c(blob.substr(kBlobHeaderSize)) != stored) {
    return Status::Corruption("blob CRC32C mismatch");
  }
  return kind;
}

Status DecodeBlob(std::string_view blob, std::string* payload, size_t max_payload) {
  payload->clear();
  auto kind = CheckBlob(blob);
  if (!kind.ok()) return kind.status();
  std::string_view body = blob.substr(kBlobHeaderSize);
  switch (*kind) {
    case BlobKind::kPlain:
      if (body.size() > max_payload) return Status::Corruption("blob payload exceeds the limit");
      payload->assign(body);
      return Status::OK();
    case BlobKind::kZstd: {
      // The frame header must state the size; a frame that does not, or that
      // claims more than the limit, is refused before anything is allocated.
      unsigned long long size = ZSTD_getFrameContentSize(body.data(), body.size());
      if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
        return Status::Corruption("zstd blob has no valid frame content size");
      }
      if (size > max_payload) return Status::Corruption("zstd blob declares a size over the limit");
      if (ZSTD_findFrameCompressedSize(body.data(), body.size()) != body.size()) {
        return Status::Corruption("zstd blob has trailing or missing bytes");
      }
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
      return Status::InvalidArgument("blob is encrypted; a key is needed to decode it");
  }
  return Status::Corruption("blob kind not handled");
}

}  // namespace cairn::storage
