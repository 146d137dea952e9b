#include "storage/crypt_config.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace cairn::storage {
namespace {

constexpr std::string_view kEncLabel = "cairn chunk encryption v1";
constexpr std::string_view kIdLabel = "cairn chunk digest v1";
constexpr std::string_view kSignLabel = "cairn manifest signature v1";
constexpr std::string_view kFingerprintLabel = "cairn key fingerprint v1";
constexpr size_t kFingerprintBytes = 8;

struct MacCtxDeleter {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// The HMAC algorithm, fetched once. A fetched algorithm is immutable and may
// be shared between threads; each HMAC still gets its own context.
EVP_MAC* HmacAlgorithm() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return mac;
}

// HMAC-SHA256, incremental. Failures happen only when OpenSSL is out of
// memory or broken; like Sha256 (digest.cc) they throw, because a digest has
// no error value.
class HmacSha256 {
 public:
  explicit HmacSha256(std::span<const uint8_t> key) {
    EVP_MAC* mac = HmacAlgorithm();
    if (mac != nullptr) ctx_.reset(EVP_MAC_CTX_new(mac));
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end()};
    if (ctx_ == nullptr || EVP_MAC_init(ctx_.get(), key.data(), key.size(), params) != 1) {
      throw std::runtime_error("HMAC-SHA256 init failed");
    }
  }

  void Update(std::string_view data) {
    if (EVP_MAC_update(ctx_.get(), reinterpret_cast<const unsigned char*>(data.data()),
                       data.size()) != 1) {
      throw std::runtime_error("HMAC-SHA256 update failed");
    }
  }

  Digest Finish() {
    Digest d;
    size_t len = 0;
    if (EVP_MAC_final(ctx_.get(), d.bytes.data(), &len, d.bytes.size()) != 1 ||
        len != kDigestSize) {
      throw std::runtime_error("HMAC-SHA256 final failed");
    }
    return d;
  }

 private:
  std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter> ctx_;
};

Digest Hmac(std::span<const uint8_t> key, std::string_view data) {
  HmacSha256 h(key);
  h.Update(data);
  return h.Finish();
}

template <typename Key>
Key DeriveKey(std::span<const uint8_t> key, std::string_view label) {
  Digest d = Hmac(key, label);
  Key out;
  static_assert(sizeof(out) == kDigestSize);
  std::copy(d.bytes.begin(), d.bytes.end(), out.begin());
  OPENSSL_cleanse(d.bytes.data(), d.bytes.size());
  return out;
}

Digest HmacOfZeros(std::span<const uint8_t> key, size_t length) {
  static constexpr size_t kPiece = 64 * 1024;
  static const std::string kZeros(kPiece, '\0');
  HmacSha256 h(key);
  for (size_t done = 0; done < length;) {
    size_t piece = std::min(kPiece, length - done);
    h.Update(std::string_view(kZeros).substr(0, piece));
    done += piece;
  }
  return h.Finish();
}

std::string FingerprintText(std::span<const uint8_t> key) {
  static constexpr char kHex[] = "0123456789abcdef";
  Digest d = Hmac(key, kFingerprintLabel);
  std::string out;
  for (size_t i = 0; i < kFingerprintBytes; ++i) {
    if (i > 0) out += ':';
    out += kHex[d.bytes[i] >> 4];
    out += kHex[d.bytes[i] & 0xf];
  }
  return out;
}

int IntSize(size_t n) { return static_cast<int>(n); }  // REQUIRES: n <= kMaxBlobPayload

// AES-256-GCM of `plaintext` into parts.ciphertext with a fresh IV; the tag
// authenticates `aad` too.
Status GcmEncrypt(std::span<const uint8_t> key, std::string_view aad, std::string_view plaintext,
                  const EncryptedBlobParts& parts) {
  if (RAND_bytes(parts.iv.data(), IntSize(parts.iv.size())) != 1) {
    return Status::IOError("cannot get random bytes for an IV (RAND_bytes failed)");
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok = ctx != nullptr &&
            EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, IntSize(parts.iv.size()),
                                nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), parts.iv.data()) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                              reinterpret_cast<const unsigned char*>(aad.data()),
                              IntSize(aad.size())) == 1;
  int written = 0;
  if (ok && !plaintext.empty()) {
    ok = EVP_EncryptUpdate(ctx.get(), parts.ciphertext.data(), &len,
                           reinterpret_cast<const unsigned char*>(plaintext.data()),
                           IntSize(plaintext.size())) == 1;
    written = len;
  }
  // GCM is a stream mode: Final writes nothing, but must be called for the tag.
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), parts.ciphertext.data() + written, &len) == 1 &&
       written + len == IntSize(plaintext.size()) &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, IntSize(parts.tag.size()),
                           parts.tag.data()) == 1;
  if (!ok) return Status::IOError("AES-256-GCM encryption failed");
  return Status::OK();
}

// AES-256-GCM decryption of blob.payload into *out (sized by the caller).
// false on a tag mismatch; true when the plaintext is authentic.
bool GcmDecrypt(std::span<const uint8_t> key, const BlobView& blob, std::string* out) {
  const std::string_view aad = BlobMagic(blob.kind);
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  auto* dst = reinterpret_cast<unsigned char*>(out->data());
  // The tag is set before Final, which compares it; OpenSSL wants a
  // non-const pointer but only reads it.
  std::array<uint8_t, kBlobTagSize> tag{};
  std::copy(blob.tag.begin(), blob.tag.end(), tag.begin());
  bool ok = ctx != nullptr && blob.iv.size() == kBlobIvSize &&
            blob.tag.size() == kBlobTagSize &&
            EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kBlobIvSize, nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(),
                               reinterpret_cast<const unsigned char*>(blob.iv.data())) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                              reinterpret_cast<const unsigned char*>(aad.data()),
                              IntSize(aad.size())) == 1;
  int written = 0;
  if (ok && !blob.payload.empty()) {
    ok = EVP_DecryptUpdate(ctx.get(), dst, &len,
                           reinterpret_cast<const unsigned char*>(blob.payload.data()),
                           IntSize(blob.payload.size())) == 1;
    written = len;
  }
  ok = ok &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kBlobTagSize, tag.data()) == 1 &&
       EVP_DecryptFinal_ex(ctx.get(), dst + written, &len) == 1;
  return ok;
}

}  // namespace

Result<CryptConfig> CryptConfig::FromKey(std::string_view key) {
  if (key.size() != kEncryptionKeySize) {
    return Status::InvalidArgument("an encryption key must be " +
                                   std::to_string(kEncryptionKeySize) + " bytes, not " +
                                   std::to_string(key.size()));
  }
  std::span<const uint8_t> raw(reinterpret_cast<const uint8_t*>(key.data()), key.size());
  CryptConfig c;
  c.enc_key_ = DeriveKey<Key>(raw, kEncLabel);
  c.id_key_ = DeriveKey<Key>(raw, kIdLabel);
  c.sign_key_ = DeriveKey<Key>(raw, kSignLabel);
  c.fingerprint_ = FingerprintText(raw);
  c.zero_chunk_digest_ = HmacOfZeros(c.id_key_, kChunkSize);
  return c;
}

CryptConfig::~CryptConfig() {
  OPENSSL_cleanse(enc_key_.data(), enc_key_.size());
  OPENSSL_cleanse(id_key_.data(), id_key_.size());
  OPENSSL_cleanse(sign_key_.data(), sign_key_.size());
}

Digest CryptConfig::ChunkDigest(std::string_view data) const { return Hmac(id_key_, data); }

Digest CryptConfig::ZeroChunkDigest(size_t length) const {
  if (length == kChunkSize) return zero_chunk_digest_;
  return HmacOfZeros(id_key_, length);
}

Digest CryptConfig::Sign(std::string_view text) const { return Hmac(sign_key_, text); }

Result<std::string> CryptConfig::EncryptBlob(std::string_view payload, bool compress,
                                             int zstd_level) const {
  if (payload.size() > kMaxBlobPayload) {
    return Status::InvalidArgument("blob payload exceeds the limit");
  }
  std::string frame;
  BlobKind kind = BlobKind::kEncrypted;
  std::string_view plaintext = payload;
  if (compress && CompressForBlob(payload, zstd_level, &frame)) {
    kind = BlobKind::kEncryptedZstd;
    plaintext = frame;
  }
  return BuildEncryptedBlob(kind, plaintext.size(), [&](const EncryptedBlobParts& parts) {
    return GcmEncrypt(enc_key_, BlobMagic(kind), plaintext, parts);
  });
}

Status CryptConfig::DecryptBlob(const BlobView& blob, std::string* payload,
                                size_t max_payload) const {
  payload->clear();
  if (!blob.encrypted()) {
    return Status::InvalidArgument(std::string("blob is not encrypted (kind ") +
                                   BlobKindName(blob.kind) + ")");
  }
  // Writers keep zstd only when strictly smaller, so no valid ciphertext of
  // either kind exceeds the plaintext limit: refuse before allocating.
  if (blob.payload.size() > max_payload || blob.payload.size() > kMaxBlobPayload) {
    return Status::Corruption("encrypted blob payload exceeds the limit");
  }
  const Status wrong_key = Status::Corruption("encrypted blob cannot be decrypted with key " +
                                              fingerprint_ + ": wrong key or damaged chunk");
  if (blob.kind == BlobKind::kEncrypted) {
    payload->resize(blob.payload.size());
    if (!GcmDecrypt(enc_key_, blob, payload)) {
      payload->clear();
      return wrong_key;
    }
    return Status::OK();
  }
  std::string frame(blob.payload.size(), '\0');
  if (!GcmDecrypt(enc_key_, blob, &frame)) return wrong_key;
  BlobView zstd;
  zstd.kind = BlobKind::kZstd;
  zstd.payload = frame;
  Status s = DecodeBlobPayload(zstd, payload, max_payload);
  if (!s.ok()) {
    payload->clear();
    return s.WithContext("encrypted blob (key " + fingerprint_ + ")");
  }
  return Status::OK();
}

}  // namespace cairn::storage
