#include "storage/digest.h"

#include <openssl/evp.h>

#include <cstring>
#include <stdexcept>

namespace cairn::storage {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is rejected on purpose: one spelling per digest
}

}  // namespace

std::string Digest::ToHex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(kDigestSize * 2, '0');
  for (size_t i = 0; i < kDigestSize; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return out;
}

Result<Digest> Digest::FromHex(std::string_view hex) {
  if (hex.size() != kDigestSize * 2) {
    return Status::InvalidArgument("digest must be 64 lowercase hex characters");
  }
  Digest d;
  for (size_t i = 0; i < kDigestSize; ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("digest must be 64 lowercase hex characters");
    d.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

uint64_t Digest::Prefix64() const {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | bytes[i];
  return v;
}

Digest Sha256(std::string_view data) {
  Digest d;
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), d.bytes.data(), &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest(sha256) failed");  // only on OOM / broken OpenSSL
  }
  return d;
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr ||
      EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
  }
}

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256Hasher::Update(std::string_view data) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}

Digest Sha256Hasher::Finish() {
  Digest d;
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), d.bytes.data(), &len);
  return d;
}

bool IsAllZero(std::string_view data) {
  const char* p = data.data();
  size_t n = data.size();
  // Check the head byte by byte, then compare the buffer against itself
  // shifted by 64 bytes: memcmp is vectorised, so this runs at memory speed.
  size_t head = n < 64 ? n : 64;
  for (size_t i = 0; i < head; ++i) {
    if (p[i] != 0) return false;
  }
  if (n <= 64) return true;
  return std::memcmp(p, p + 64, n - 64) == 0;
}

Digest ZeroChunkDigest(size_t size) {
  static const Digest kFull = Sha256(std::string(kChunkSize, '\0'));
  if (size == kChunkSize) return kFull;
  return Sha256(std::string(size, '\0'));
}

}  // namespace cairn::storage
