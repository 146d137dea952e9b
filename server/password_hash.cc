#include "server/password_hash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <optional>
#include <vector>

namespace cairn::server {
namespace {

constexpr char kAlgorithm[] = "scrypt";
constexpr size_t kSaltBytes = 16;
constexpr size_t kHashBytes = 32;
// scrypt's working memory is 128 * N * r bytes; a damaged record must not
// make a login allocate more than this.
constexpr uint64_t kMaxMemory = uint64_t{1} << 30;

struct Record {
  ScryptParams params;
  std::string salt;  // raw bytes
  std::string hash;  // raw bytes
};

std::string Hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

std::optional<std::string> Unhex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(hex.data() + i, hex.data() + i + 2, v, 16);
    if (ec != std::errc() || end != hex.data() + i + 2) return std::nullopt;
    out += static_cast<char>(v);
  }
  return out;
}

bool InBounds(const ScryptParams& p) {
  bool pow2 = p.n >= 2 && (p.n & (p.n - 1)) == 0;
  return pow2 && p.n <= (uint64_t{1} << 20) && p.r >= 1 && p.r <= 32 && p.p >= 1 && p.p <= 16 &&
         128 * p.n * p.r <= kMaxMemory;
}

std::optional<uint64_t> ParseNumber(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) return parts;
    start = pos + 1;
  }
}

// Nullopt for anything but a well-formed record with parameters in bounds:
// a record is only ever written by HashPassword, so anything else is damage.
std::optional<Record> ParseRecord(const std::string& text) {
  auto parts = Split(text, '$');
  if (parts.size() != 6 || parts[0] != kAlgorithm) return std::nullopt;
  auto n = ParseNumber(parts[1]), r = ParseNumber(parts[2]), p = ParseNumber(parts[3]);
  auto salt = Unhex(parts[4]), hash = Unhex(parts[5]);
  if (!n || !r || !p || !salt || !hash || salt->size() != kSaltBytes ||
      hash->size() != kHashBytes) {
    return std::nullopt;
  }
  Record rec{{*n, *r, *p}, std::move(*salt), std::move(*hash)};
  if (!InBounds(rec.params)) return std::nullopt;
  return rec;
}

bool Scrypt(std::string_view password, std::string_view salt, const ScryptParams& p,
            unsigned char* out) {
  // OpenSSL refuses more than 32 MiB unless told; InBounds caps the need.
  uint64_t maxmem = 128 * p.n * p.r + 128 * p.r * p.p + (uint64_t{1} << 20);
  return EVP_PBE_scrypt(password.data(), password.size(),
                        reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), p.n,
                        p.r, p.p, maxmem, out, kHashBytes) == 1;
}

}  // namespace

storage::Result<std::string> HashPassword(std::string_view password, const ScryptParams& params) {
  if (password.empty()) return storage::Status::InvalidArgument("the password is empty");
  if (password.size() > kMaxPasswordBytes) {
    return storage::Status::InvalidArgument("the password is longer than " +
                                            std::to_string(kMaxPasswordBytes) + " bytes");
  }
  if (!InBounds(params)) return storage::Status::InvalidArgument("scrypt parameters out of bounds");
  unsigned char salt[kSaltBytes];
  if (RAND_bytes(salt, sizeof(salt)) != 1) return storage::Status::IOError("RAND_bytes failed");
  std::string salt_bytes(reinterpret_cast<const char*>(salt), sizeof(salt));
  unsigned char hash[kHashBytes];
  if (!Scrypt(password, salt_bytes, params, hash)) {
    return storage::Status::IOError("EVP_PBE_scrypt failed");
  }
  return std::string(kAlgorithm) + "$" + std::to_string(params.n) + "$" +
         std::to_string(params.r) + "$" + std::to_string(params.p) + "$" + Hex(salt_bytes) + "$" +
         Hex(std::string_view(reinterpret_cast<const char*>(hash), sizeof(hash)));
}

bool VerifyPassword(std::string_view password, const std::string& record) {
  auto rec = ParseRecord(record);
  if (!rec || password.empty() || password.size() > kMaxPasswordBytes) return false;
  unsigned char hash[kHashBytes];
  if (!Scrypt(password, rec->salt, rec->params, hash)) return false;
  return CRYPTO_memcmp(hash, rec->hash.data(), kHashBytes) == 0;
}

bool NeedsRehash(const std::string& record, const ScryptParams& current) {
  auto rec = ParseRecord(record);
  if (!rec) return true;
  return rec->params.n < current.n || rec->params.r < current.r || rec->params.p < current.p;
}

}  // namespace cairn::server
