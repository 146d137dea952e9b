#include "client/encryption_key.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "storage/crc32c.h"
#include "storage/env.h"
#include "storage/json_bounds.h"

namespace cairn::client {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr size_t kSaltSize = 16;
constexpr size_t kWrapIvSize = 12;
constexpr size_t kWrapTagSize = 16;
constexpr size_t kMaxKeyFileSize = 64 * 1024;
constexpr size_t kMaxPassphraseFileSize = 64 * 1024;
constexpr size_t kMaxPassphraseLength = 4096;
constexpr size_t kPaperLineChars = 64;
constexpr int kMasterKeyBits = 3072;
constexpr int kMinMasterKeyBits = 2048;
constexpr int kMasterPemIterations = 600000;
constexpr int kMasterPemSaltSize = 16;
constexpr std::string_view kPaperBegin = "-----BEGIN CAIRN PAPERKEY-----";
constexpr std::string_view kPaperEnd = "-----END CAIRN PAPERKEY-----";
constexpr std::string_view kFingerprintPrefix = "fingerprint:";

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// A string that wipes itself: for derived keys and plaintext keys in
// temporaries.
struct Secret {
  std::string bytes;
  explicit Secret(size_t n = 0) : bytes(n, '\0') {}
  ~Secret() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
};

unsigned char* U(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }
const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// The first queued OpenSSL error, for messages; clears the queue.
std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

std::string ToHex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Hex of exactly `size` bytes; false for any other length or a non-hex char.
bool FromHex(std::string_view hex, size_t size, std::string* out) {
  if (hex.size() != 2 * size) return false;
  out->assign(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    int hi = HexDigit(hex[2 * i]);
    int lo = HexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<char>(hi << 4 | lo);
  }
  return true;
}

// "xx:xx:xx:xx:xx:xx:xx:xx", lowercase hex.
bool IsFingerprint(std::string_view fp) {
  if (fp.size() != 23) return false;
  for (size_t i = 0; i < fp.size(); ++i) {
    if (i % 3 == 2) {
      if (fp[i] != ':') return false;
    } else if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f'))) {
      return false;
    }
  }
  return true;
}

Status RandomBytes(size_t n, std::string* out) {
  out->assign(n, '\0');
  if (RAND_bytes(U(*out), static_cast<int>(n)) != 1) {
    return Status::IOError("cannot get random bytes: " + OpenSslError());
  }
  return Status::OK();
}

// --- Base64 (RFC 4648, standard alphabet, with padding) ---

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 |
                 static_cast<uint8_t>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

int B64Value(char c) {
  const char* p = std::strchr(kB64, c);
  return c != '\0' && p != nullptr ? static_cast<int>(p - kB64) : -1;
}

// Strict: a multiple of 4 characters, '=' only as the last one or two.
bool Base64Decode(std::string_view in, std::string* out) {
  out->clear();
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int pad = 0;
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      char c = in[i + j];
      int d = 0;
      if (c == '=' && last && j >= 2) {
        ++pad;
      } else {
        if (pad > 0) return false;  // data after padding
        d = B64Value(c);
        if (d < 0) return false;
      }
      v = v << 6 | static_cast<uint32_t>(d);
    }
    out->push_back(static_cast<char>(v >> 16));
    if (pad < 2) out->push_back(static_cast<char>(v >> 8));
    if (pad < 1) out->push_back(static_cast<char>(v));
  }
  return true;
}

// --- AES-256-GCM of small secrets (the wrapped key) ---

Status GcmSeal(std::string_view key, std::string_view iv, std::string_view aad,
               std::string_view plaintext, std::string* ciphertext, std::string* tag) {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  ciphertext->assign(plaintext.size(), '\0');
  tag->assign(kWrapTagSize, '\0');
  int len = 0;
  int fin = 0;
  bool ok = ctx != nullptr &&
            EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()),
                                nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, U(key), U(iv)) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) ==
                1 &&
            EVP_EncryptUpdate(ctx.get(), U(*ciphertext), &len, U(plaintext),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx.get(), U(*ciphertext) + len, &fin) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kWrapTagSize),
                                U(*tag)) == 1;
  if (!ok) return Status::IOError("AES-256-GCM encryption failed: " + OpenSslError());
  return Status::OK();
}

// false when the tag does not match (wrong key) or OpenSSL fails.
bool GcmOpen(std::string_view key, std::string_view iv, std::string_view aad,
             std::string_view ciphertext, std::string_view tag, std::string* plaintext) {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  plaintext->assign(ciphertext.size(), '\0');
  std::string tag_copy(tag);  // OpenSSL takes a non-const pointer
  int len = 0;
  int fin = 0;
  bool ok = ctx != nullptr && tag.size() == kWrapTagSize &&
            EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()),
                                nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, U(key), U(iv)) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) ==
                1 &&
            EVP_DecryptUpdate(ctx.get(), U(*plaintext), &len, U(ciphertext),
                              static_cast<int>(ciphertext.size())) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kWrapTagSize),
                                U(tag_copy)) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), U(*plaintext) + len, &fin) == 1;
  ERR_clear_error();
  if (!ok) OPENSSL_cleanse(plaintext->data(), plaintext->size());
  return ok;
}

// The wrapping key scrypt derives from `passphrase` and `salt`.
Status ScryptDerive(std::string_view passphrase, std::string_view salt,
                    const ScryptParams& params, Secret* out) {
  CAIRN_RETURN_IF_ERROR(CheckScryptParams(params));
  // OpenSSL's own limit (32 MiB) is exactly what N=32768, r=8 needs without
  // its bookkeeping: give it what these parameters need, plus slack.
  const uint64_t maxmem = 128ull * params.r * (params.n + 2) + 128ull * params.r * params.p +
                          (uint64_t{1} << 20);
  out->bytes.assign(storage::kEncryptionKeySize, '\0');
  if (EVP_PBE_scrypt(passphrase.data(), passphrase.size(), U(salt), salt.size(), params.n,
                     params.r, params.p, maxmem, U(out->bytes), out->bytes.size()) != 1) {
    return Status::IOError("scrypt failed: " + OpenSslError());
  }
  return Status::OK();
}

// --- JSON field access that never throws ---

Status FieldError(std::string_view what, std::string_view field, std::string_view problem) {
  return Status::Corruption(std::string(what) + ": field \"" + std::string(field) + "\" " +
                            std::string(problem));
}

Result<std::string> StringField(const json& j, std::string_view what, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return FieldError(what, name, "is missing");
  if (!it->is_string()) return FieldError(what, name, "is not a string");
  return it->get<std::string>();
}

Result<int64_t> IntField(const json& j, std::string_view what, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return FieldError(what, name, "is missing");
  if (it->is_number_unsigned()) {
    uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return FieldError(what, name, "is out of range");
    return static_cast<int64_t>(v);
  }
  if (!it->is_number_integer()) return FieldError(what, name, "is not an integer");
  return it->get<int64_t>();
}

Result<std::string> HexField(const json& j, std::string_view what, const char* name,
                             size_t size) {
  CAIRN_ASSIGN_OR_RETURN(std::string hex, StringField(j, what, name));
  std::string out;
  if (!FromHex(hex, size, &out)) {
    return FieldError(what, name, "must be " + std::to_string(2 * size) + " hex characters");
  }
  return out;
}

Result<std::string> FingerprintField(const json& j, std::string_view what) {
  CAIRN_ASSIGN_OR_RETURN(std::string fp, StringField(j, what, "fingerprint"));
  if (!IsFingerprint(fp)) {
    return FieldError(what, "fingerprint", "is not of the form xx:xx:xx:xx:xx:xx:xx:xx");
  }
  return fp;
}

Result<ScryptParams> ScryptField(const json& j) {
  constexpr std::string_view kWhat = "key file";
  auto it = j.find("scrypt");
  if (it == j.end()) return FieldError(kWhat, "scrypt", "is missing");
  if (!it->is_object()) return FieldError(kWhat, "scrypt", "is not an object");
  CAIRN_ASSIGN_OR_RETURN(int64_t n, IntField(*it, "key file scrypt", "n"));
  CAIRN_ASSIGN_OR_RETURN(int64_t r, IntField(*it, "key file scrypt", "r"));
  CAIRN_ASSIGN_OR_RETURN(int64_t p, IntField(*it, "key file scrypt", "p"));
  if (n < 0 || r < 0 || p < 0 || r > UINT32_MAX || p > UINT32_MAX) {
    return Status::Corruption("key file: scrypt parameters out of range");
  }
  ScryptParams params{static_cast<uint64_t>(n), static_cast<uint32_t>(r),
                      static_cast<uint32_t>(p)};
  if (Status s = CheckScryptParams(params); !s.ok()) {
    return Status::Corruption("key file: " + s.message());
  }
  return params;
}

// Reads a whole small file, pipes included (stat sizes lie for them).
Status ReadSmallFile(const std::string& path, size_t max_size, std::string* out) {
  out->clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(path, errno);
  char buf[4096];
  Status s;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = Status::FromErrno(path, errno);
      break;
    }
    if (n == 0) break;
    if (out->size() + static_cast<size_t>(n) > max_size) {
      s = Status::InvalidArgument(path + ": larger than " + std::to_string(max_size) + " bytes");
      break;
    }
    out->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  OPENSSL_cleanse(buf, sizeof(buf));
  if (!s.ok()) out->clear();
  return s;
}

// Makes the missing folders of `dir` with mode 0700.
Status MakeDirs(const std::string& dir) {
  if (dir.empty() || dir == "." || dir == "/") return Status::OK();
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    return S_ISDIR(st.st_mode) ? Status::OK()
                               : Status::InvalidArgument(dir + ": exists and is not a folder");
  }
  CAIRN_RETURN_IF_ERROR(MakeDirs(storage::DirName(dir)));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Status::FromErrno(dir, errno);
  return Status::OK();
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(path, errno);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

// Reads one line from the terminal `fd` with echo off; restores the
// terminal's settings whatever happens.
Result<std::string> PromptNoEcho(int fd, std::string_view prompt) {
  struct termios old_settings;
  if (::tcgetattr(fd, &old_settings) != 0) {
    return Status::InvalidArgument("no passphrase: the terminal cannot be set up (" +
                                   std::string(std::strerror(errno)) + ")");
  }
  struct termios quiet = old_settings;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  (void)WriteAll(fd, prompt, "terminal");
  if (::tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
    return Status::IOError("cannot turn off the terminal's echo: " +
                           std::string(std::strerror(errno)));
  }
  std::string line;
  Status s;
  for (;;) {
    char c = 0;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = Status::FromErrno("terminal", errno);
      break;
    }
    if (n == 0 || c == '\n') break;
    if (line.size() >= kMaxPassphraseLength) {
      s = Status::InvalidArgument("passphrase longer than " +
                                  std::to_string(kMaxPassphraseLength) + " characters");
      break;
    }
    line += c;
  }
  (void)::tcsetattr(fd, TCSAFLUSH, &old_settings);
  if (!s.ok()) {
    OPENSSL_cleanse(line.data(), line.size());
    return s;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

Result<std::string> PromptOnTerminal(const std::string& tty, std::string_view prompt,
                                     bool confirm) {
  const std::string none =
      "no passphrase: use --passphrase-file, $CAIRN_KEY_PASSPHRASE or run on a terminal";
  if (tty.empty()) return Status::InvalidArgument(none);
  int fd = ::open(tty.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return Status::InvalidArgument(none);
  if (!::isatty(fd)) {
    ::close(fd);
    return Status::InvalidArgument(none);
  }
  auto first = PromptNoEcho(fd, prompt);
  if (first.ok() && confirm) {
    auto again = PromptNoEcho(fd, "again: ");
    if (!again.ok()) {
      first = again.status();
    } else if (*again != *first) {
      first = Status::InvalidArgument("the passphrases do not match");
    }
  }
  ::close(fd);
  return first;
}

ordered_json MasterPayloadJson(std::string_view raw_key, std::string_view fingerprint,
                       int64_t created) {
  ordered_json j;
  j["key"] = ToHex(raw_key);
  j["fingerprint"] = std::string(fingerprint);
  j["created"] = created;
  return j;
}

int PassphraseCallback(char* buf, int size, int /*rwflag*/, void* u) {
  auto* pass = static_cast<const std::string_view*>(u);
  if (pass == nullptr || pass->empty() || pass->size() > static_cast<size_t>(size)) return 0;
  std::memcpy(buf, pass->data(), pass->size());
  return static_cast<int>(pass->size());
}

Result<Pkey> ReadRsaKey(std::string_view pem, bool is_private, std::string_view passphrase) {
  ERR_clear_error();
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return Status::IOError("out of memory");
  Pkey key(is_private ? PEM_read_bio_PrivateKey(bio.get(), nullptr, PassphraseCallback,
                                                &passphrase)
                      : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    const bool encrypted = pem.find("ENCRYPTED") != std::string_view::npos;
    std::string detail = OpenSslError();
    if (is_private && encrypted) {
      return Status::PermissionDenied(
          passphrase.empty()
              ? "the master private key is protected by a passphrase: give it"
              : "wrong passphrase for the master private key");
    }
    return Status::InvalidArgument(std::string("not a PEM ") +
                                   (is_private ? "private" : "public") + " key (" + detail + ")");
  }
  if (!EVP_PKEY_is_a(key.get(), "RSA")) {
    return Status::InvalidArgument("the master key is not an RSA key");
  }
  if (EVP_PKEY_get_bits(key.get()) < kMinMasterKeyBits) {
    return Status::InvalidArgument("the master key has fewer than " +
                                   std::to_string(kMinMasterKeyBits) + " bits");
  }
  return key;
}

bool SetOaep(EVP_PKEY_CTX* ctx) {
  return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1;
}

Result<std::string> PemOf(EVP_PKEY* key, bool is_private, std::string_view passphrase) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) return Status::IOError("out of memory");
  int ok = 0;
  if (is_private && passphrase.empty()) {
    ok = PEM_write_bio_PKCS8PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  } else if (is_private) {
    // PKCS#8 PBES2: PBKDF2-HMAC-SHA256 with a random 16-byte salt and
    // kMasterPemIterations (OpenSSL's PEM default is 2048: too cheap to guess
    // passphrases against for a key that opens every backup), AES-256-CBC.
    std::unique_ptr<PKCS8_PRIV_KEY_INFO, decltype(&PKCS8_PRIV_KEY_INFO_free)> p8(
        EVP_PKEY2PKCS8(key), PKCS8_PRIV_KEY_INFO_free);
    std::unique_ptr<X509_SIG, decltype(&X509_SIG_free)> sealed(
        p8 == nullptr ? nullptr
                      : PKCS8_encrypt_ex(-1, EVP_aes_256_cbc(), passphrase.data(),
                                         static_cast<int>(passphrase.size()), nullptr,
                                         kMasterPemSaltSize, kMasterPemIterations, p8.get(),
                                         nullptr, nullptr),
        X509_SIG_free);
    ok = sealed != nullptr ? PEM_write_bio_PKCS8(bio.get(), sealed.get()) : 0;
  } else {
    ok = PEM_write_bio_PUBKEY(bio.get(), key);
  }
  if (ok != 1) return Status::IOError("cannot write a PEM key: " + OpenSslError());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  std::string out(data, static_cast<size_t>(len));
  OPENSSL_cleanse(data, static_cast<size_t>(len));
  return out;
}

Result<KeyFile> ParseKeyFileJson(const json& j) {
  constexpr std::string_view kWhat = "key file";
  if (!j.is_object()) return Status::Corruption("key file: not a JSON object");
  CAIRN_ASSIGN_OR_RETURN(int64_t version, IntField(j, kWhat, "version"));
  if (version != 1) {
    return Status::Corruption("key file: version " + std::to_string(version) +
                              " is not supported (this cairn reads version 1)");
  }
  CAIRN_ASSIGN_OR_RETURN(std::string kdf_name, StringField(j, kWhat, "kdf"));
  auto kdf = ParseKeyKdf(kdf_name);
  if (!kdf.ok()) return Status::Corruption("key file: " + kdf.status().message());
  KeyFile f;
  f.kdf = *kdf;
  CAIRN_ASSIGN_OR_RETURN(f.created, IntField(j, kWhat, "created"));
  CAIRN_ASSIGN_OR_RETURN(f.fingerprint, FingerprintField(j, kWhat));
  if (f.kdf == KeyKdf::kNone) {
    CAIRN_ASSIGN_OR_RETURN(f.key, HexField(j, kWhat, "key", storage::kEncryptionKeySize));
    return f;
  }
  CAIRN_ASSIGN_OR_RETURN(f.scrypt, ScryptField(j));
  CAIRN_ASSIGN_OR_RETURN(f.salt,
                         HexField(*j.find("scrypt"), "key file scrypt", "salt", kSaltSize));
  CAIRN_ASSIGN_OR_RETURN(f.iv, HexField(j, kWhat, "iv", kWrapIvSize));
  CAIRN_ASSIGN_OR_RETURN(f.tag, HexField(j, kWhat, "tag", kWrapTagSize));
  CAIRN_ASSIGN_OR_RETURN(f.wrapped,
                         HexField(j, kWhat, "wrapped", storage::kEncryptionKeySize));
  return f;
}

}  // namespace

// --- EncryptionKey ---

EncryptionKey::~EncryptionKey() { OPENSSL_cleanse(key.data(), key.size()); }

Result<storage::CryptConfig> EncryptionKey::Config() const {
  return storage::CryptConfig::FromKey(key);
}

Result<EncryptionKey> GenerateEncryptionKey(int64_t created) {
  Secret raw;
  CAIRN_RETURN_IF_ERROR(RandomBytes(storage::kEncryptionKeySize, &raw.bytes));
  return EncryptionKeyFromRaw(raw.bytes, created);
}

Result<EncryptionKey> EncryptionKeyFromRaw(std::string_view raw, int64_t created) {
  CAIRN_ASSIGN_OR_RETURN(storage::CryptConfig config, storage::CryptConfig::FromKey(raw));
  EncryptionKey k;
  k.key.assign(raw);
  k.created = created;
  k.fingerprint = config.fingerprint();
  return k;
}

const char* KeyKdfName(KeyKdf kdf) { return kdf == KeyKdf::kScrypt ? "scrypt" : "none"; }

Result<KeyKdf> ParseKeyKdf(std::string_view name) {
  if (name == "none") return KeyKdf::kNone;
  if (name == "scrypt") return KeyKdf::kScrypt;
  return Status::InvalidArgument("unknown kdf \"" + std::string(name) +
                                 "\" (known: scrypt, none)");
}

Status CheckScryptParams(const ScryptParams& params) {
  if (params.n < 2 || (params.n & (params.n - 1)) != 0) {
    return Status::InvalidArgument("scrypt N must be a power of two of at least 2");
  }
  if (params.r < 1 || params.r > 64) return Status::InvalidArgument("scrypt r must be 1..64");
  if (params.p < 1 || params.p > 64) return Status::InvalidArgument("scrypt p must be 1..64");
  // 128·N·r without overflow: N ≤ 2^30 / (128·r) keeps it within the limit.
  if (params.n > kMaxScryptMemory / (128ull * params.r)) {
    return Status::InvalidArgument("scrypt N·r needs more than 1 GiB of memory");
  }
  return Status::OK();
}

// --- KeyFile ---

KeyFile::~KeyFile() { OPENSSL_cleanse(key.data(), key.size()); }

std::string KeyFile::ToJson(bool compact) const {
  ordered_json j;
  j["version"] = 1;
  j["kdf"] = KeyKdfName(kdf);
  j["created"] = created;
  j["fingerprint"] = fingerprint;
  if (kdf == KeyKdf::kNone) {
    j["key"] = ToHex(key);
  } else {
    j["scrypt"] = {{"n", scrypt.n}, {"r", scrypt.r}, {"p", scrypt.p}, {"salt", ToHex(salt)}};
    j["iv"] = ToHex(iv);
    j["tag"] = ToHex(tag);
    j["wrapped"] = ToHex(wrapped);
  }
  return compact ? j.dump() : j.dump(2) + "\n";
}

Result<KeyFile> KeyFile::Parse(std::string_view text) {
  auto j = storage::ParseJsonBounded(text, {.max_depth = 4, .max_size = kMaxKeyFileSize});
  if (!j.ok()) return Status::Corruption("key file is not valid JSON: " + j.status().message());
  return ParseKeyFileJson(*j);
}

Result<KeyFile> LockKey(const EncryptionKey& key, KeyKdf kdf, std::string_view passphrase,
                        const ScryptParams& params) {
  if (key.key.size() != storage::kEncryptionKeySize) {
    return Status::InvalidArgument("an encryption key must be 32 bytes");
  }
  KeyFile f;
  f.kdf = kdf;
  f.created = key.created;
  f.fingerprint = key.fingerprint;
  if (kdf == KeyKdf::kNone) {
    f.key = key.key;
    return f;
  }
  if (passphrase.empty()) return Status::InvalidArgument("an empty passphrase protects nothing");
  CAIRN_RETURN_IF_ERROR(CheckScryptParams(params));
  f.scrypt = params;
  CAIRN_RETURN_IF_ERROR(RandomBytes(kSaltSize, &f.salt));
  CAIRN_RETURN_IF_ERROR(RandomBytes(kWrapIvSize, &f.iv));
  Secret wrap_key;
  CAIRN_RETURN_IF_ERROR(ScryptDerive(passphrase, f.salt, params, &wrap_key));
  CAIRN_RETURN_IF_ERROR(GcmSeal(wrap_key.bytes, f.iv, f.fingerprint, key.key, &f.wrapped, &f.tag));
  return f;
}

Result<EncryptionKey> UnlockKey(const KeyFile& file, std::string_view passphrase) {
  Secret raw;
  if (file.kdf == KeyKdf::kNone) {
    raw.bytes = file.key;
  } else {
    if (file.salt.size() != kSaltSize || file.iv.size() != kWrapIvSize ||
        file.tag.size() != kWrapTagSize || file.wrapped.size() != storage::kEncryptionKeySize) {
      return Status::Corruption("key file: wrapped key fields have wrong lengths");
    }
    Secret wrap_key;
    CAIRN_RETURN_IF_ERROR(ScryptDerive(passphrase, file.salt, file.scrypt, &wrap_key));
    if (!GcmOpen(wrap_key.bytes, file.iv, file.fingerprint, file.wrapped, file.tag, &raw.bytes)) {
      return Status::PermissionDenied("wrong passphrase for key " + file.fingerprint);
    }
  }
  if (raw.bytes.size() != storage::kEncryptionKeySize) {
    return Status::Corruption("key file: the key is not 32 bytes");
  }
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey key, EncryptionKeyFromRaw(raw.bytes, file.created));
  if (key.fingerprint != file.fingerprint) {
    return Status::Corruption("key file states fingerprint " + file.fingerprint +
                              " but its key has fingerprint " + key.fingerprint);
  }
  return key;
}

Result<KeyFile> ChangePassphrase(const KeyFile& file, std::string_view old_passphrase,
                                 KeyKdf kdf, std::string_view new_passphrase,
                                 const ScryptParams& params) {
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey key, UnlockKey(file, old_passphrase));
  return LockKey(key, kdf, new_passphrase, params);
}

// --- Files ---

Result<std::string> DefaultKeyFilePath() {
  if (::geteuid() == 0) return std::string("/etc/cairn/encryption-key.json");
  const char* home = std::getenv("HOME");
  if (home == nullptr || home[0] != '/') {
    return Status::InvalidArgument("$HOME is not set: name the key file");
  }
  return storage::JoinPath(home, ".config/cairn/encryption-key.json");
}

Result<KeyFile> ReadKeyFile(const std::string& path) {
  std::string text;
  Status s = ReadSmallFile(path, kMaxKeyFileSize, &text);
  if (s.IsNotFound()) {
    return Status::NotFound("no encryption key at " + path +
                            " (create one with `cairn key create`)");
  }
  if (s.IsInvalidArgument()) return Status::Corruption("key file " + s.message());
  CAIRN_RETURN_IF_ERROR(s);
  auto file = KeyFile::Parse(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!file.ok()) return file.status().WithContext(path);
  return file;
}

Status WriteKeyFile(const std::string& path, const KeyFile& file, bool overwrite) {
  std::string text = file.ToJson();
  Status s = WriteSecretFile(path, text, overwrite, 0600);
  OPENSSL_cleanse(text.data(), text.size());
  return s;
}

Status WriteSecretFile(const std::string& path, std::string_view data, bool overwrite,
                       unsigned mode) {
  const std::string dir = storage::DirName(path);
  CAIRN_RETURN_IF_ERROR(MakeDirs(dir));
  if (!overwrite && ::access(path.c_str(), F_OK) == 0) {
    return Status::AlreadyExists(path + " exists: not overwritten");
  }
  const std::string tmp = storage::TempName(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(tmp, errno);
  // The umask may have taken bits away; it never adds any, so nobody else
  // could open the file in between.
  Status s = ::fchmod(fd, mode) == 0 ? Status::OK() : Status::FromErrno(tmp, errno);
  if (s.ok()) s = WriteAll(fd, data, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Status::FromErrno(tmp, errno);
  if (::close(fd) != 0 && s.ok()) s = Status::FromErrno(tmp, errno);
  if (s.ok()) {
    storage::Env* env = storage::Env::Default();
    s = overwrite ? env->Rename(tmp, path) : env->RenameNoReplace(tmp, path);
    if (s.IsAlreadyExists()) s = Status::AlreadyExists(path + " exists: not overwritten");
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return storage::Env::Default()->SyncDir(dir);
}

// --- Paper key ---

std::string RenderPaperKey(const KeyFile& file) {
  std::string json_text = file.ToJson(true);
  const std::string b64 = Base64Encode(json_text);
  OPENSSL_cleanse(json_text.data(), json_text.size());
  std::string out = std::string(kPaperBegin) + "\n" + std::string(kFingerprintPrefix) + " " +
                    file.fingerprint + "\n";
  for (size_t i = 0; i < b64.size(); i += kPaperLineChars) {
    std::string_view line = std::string_view(b64).substr(i, kPaperLineChars);
    char crc[9];
    std::snprintf(crc, sizeof(crc), "%08x", storage::Crc32c(line));
    out += std::string(line) + " " + crc + "\n";
  }
  out += std::string(kPaperEnd) + "\n";
  return out;
}

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

// One data line "<base64> <8 hex>"; appends the base64 to *b64.
Status PaperDataLine(std::string_view line, size_t data_no, size_t text_no, std::string* b64) {
  const std::string where = "paperkey data line " + std::to_string(data_no) + " (line " +
                            std::to_string(text_no) + " of the text)";
  size_t space = line.find_last_of(" \t");
  std::string crc_bytes;
  if (space == std::string_view::npos || !FromHex(Trim(line.substr(space + 1)), 4, &crc_bytes)) {
    return Status::InvalidArgument(where + ": expected base64 text, a space and 8 hex digits");
  }
  std::string_view data = Trim(line.substr(0, space));
  uint32_t crc = 0;
  for (char c : crc_bytes) crc = crc << 8 | static_cast<uint8_t>(c);
  if (storage::Crc32c(data) != crc) {
    return Status::InvalidArgument(where + ": checksum does not match — check that line for a typo");
  }
  b64->append(data);
  return Status::OK();
}

}  // namespace

Result<KeyFile> ParsePaperKey(std::string_view text) {
  const std::vector<std::string_view> lines = Lines(text);
  size_t i = 0;
  while (i < lines.size() && Trim(lines[i]) != kPaperBegin) ++i;
  if (i == lines.size()) {
    return Status::InvalidArgument("no \"" + std::string(kPaperBegin) + "\" line: not a paperkey");
  }
  ++i;
  std::string fingerprint;
  std::string b64;
  size_t data_no = 0;
  bool ended = false;
  for (; i < lines.size(); ++i) {
    std::string_view line = Trim(lines[i]);
    if (line.empty()) continue;
    if (line == kPaperEnd) {
      ended = true;
      break;
    }
    if (fingerprint.empty() && line.substr(0, kFingerprintPrefix.size()) == kFingerprintPrefix) {
      fingerprint = std::string(Trim(line.substr(kFingerprintPrefix.size())));
      continue;
    }
    CAIRN_RETURN_IF_ERROR(PaperDataLine(line, ++data_no, i + 1, &b64));
  }
  if (!ended) return Status::InvalidArgument("paperkey has no \"" + std::string(kPaperEnd) + "\" line");
  if (fingerprint.empty()) return Status::InvalidArgument("paperkey has no fingerprint line");
  if (data_no == 0) return Status::InvalidArgument("paperkey has no data lines");
  Secret json_text;
  if (!Base64Decode(b64, &json_text.bytes)) {
    return Status::InvalidArgument("paperkey data is not valid base64 (a line missing?)");
  }
  auto file = KeyFile::Parse(json_text.bytes);
  if (!file.ok()) return file.status().WithContext("paperkey");
  if (file->fingerprint != fingerprint) {
    return Status::InvalidArgument("paperkey says fingerprint " + fingerprint +
                                   " but holds key " + file->fingerprint);
  }
  return file;
}

// --- Master key ---

Result<MasterKeyPair> GenerateMasterKey(std::string_view passphrase) {
  ERR_clear_error();
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  EVP_PKEY* raw = nullptr;
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), kMasterKeyBits) != 1 ||
      EVP_PKEY_generate(ctx.get(), &raw) != 1) {
    return Status::IOError("cannot generate an RSA key: " + OpenSslError());
  }
  Pkey key(raw);
  MasterKeyPair pair;
  CAIRN_ASSIGN_OR_RETURN(pair.private_pem, PemOf(key.get(), true, passphrase));
  CAIRN_ASSIGN_OR_RETURN(pair.public_pem, PemOf(key.get(), false, ""));
  return pair;
}

Result<std::string> EncryptKeyForMaster(std::string_view public_pem, std::string_view raw_key,
                                        std::string_view fingerprint, int64_t created) {
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey key, EncryptionKeyFromRaw(raw_key, created));
  if (key.fingerprint != fingerprint) {
    return Status::InvalidArgument("fingerprint " + std::string(fingerprint) +
                                   " is not the key's (" + key.fingerprint + ")");
  }
  CAIRN_ASSIGN_OR_RETURN(Pkey pub, ReadRsaKey(public_pem, false, ""));
  Secret plain;
  plain.bytes = MasterPayloadJson(raw_key, fingerprint, created).dump();
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr));
  size_t len = 0;
  if (ctx == nullptr || EVP_PKEY_encrypt_init(ctx.get()) != 1 || !SetOaep(ctx.get()) ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &len, U(std::string_view(plain.bytes)),
                       plain.bytes.size()) != 1) {
    return Status::IOError("RSA-OAEP setup failed: " + OpenSslError());
  }
  std::string out(len, '\0');
  if (EVP_PKEY_encrypt(ctx.get(), U(out), &len, U(std::string_view(plain.bytes)),
                       plain.bytes.size()) != 1) {
    return Status::IOError("RSA-OAEP encryption failed: " + OpenSslError());
  }
  out.resize(len);
  return out;
}

Result<EncryptionKey> DecryptKeyWithMaster(std::string_view private_pem,
                                           std::string_view passphrase,
                                           std::string_view ciphertext) {
  CAIRN_ASSIGN_OR_RETURN(Pkey priv, ReadRsaKey(private_pem, true, passphrase));
  // RSA-OAEP's output is exactly the modulus' size. OpenSSL also takes a
  // shorter input (as the same number with its leading zero bytes gone), so
  // a blob cut by its first byte decrypted whenever that byte was 0.
  if (const int size = EVP_PKEY_get_size(priv.get());
      size > 0 && ciphertext.size() != static_cast<size_t>(size)) {
    return Status::Corruption("the master-key blob has " + std::to_string(ciphertext.size()) +
                              " bytes; this master key's blobs have " + std::to_string(size));
  }
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, priv.get(), nullptr));
  size_t len = 0;
  if (ctx == nullptr || EVP_PKEY_decrypt_init(ctx.get()) != 1 || !SetOaep(ctx.get()) ||
      EVP_PKEY_decrypt(ctx.get(), nullptr, &len, U(ciphertext), ciphertext.size()) != 1) {
    return Status::IOError("RSA-OAEP setup failed: " + OpenSslError());
  }
  Secret plain(len);
  if (EVP_PKEY_decrypt(ctx.get(), U(plain.bytes), &len, U(ciphertext), ciphertext.size()) != 1) {
    ERR_clear_error();
    return Status::Corruption(
        "the master-key blob does not decrypt with this master key (another master key, or "
        "damaged)");
  }
  plain.bytes.resize(len);
  constexpr std::string_view kWhat = "master-key blob";
  auto j = storage::ParseJsonBounded(plain.bytes, {.max_depth = 2, .max_size = 4096});
  if (!j.ok() || !j->is_object()) return Status::Corruption("master-key blob: not a JSON object");
  Secret raw;
  CAIRN_ASSIGN_OR_RETURN(raw.bytes, HexField(*j, kWhat, "key", storage::kEncryptionKeySize));
  CAIRN_ASSIGN_OR_RETURN(std::string fingerprint, FingerprintField(*j, kWhat));
  CAIRN_ASSIGN_OR_RETURN(int64_t created, IntField(*j, kWhat, "created"));
  if (auto it = j->find("key"); it != j->end() && it->is_string()) {
    std::string& hex = it->get_ref<std::string&>();
    OPENSSL_cleanse(hex.data(), hex.size());
  }
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey key, EncryptionKeyFromRaw(raw.bytes, created));
  if (key.fingerprint != fingerprint) {
    return Status::Corruption("master-key blob states fingerprint " + fingerprint +
                              " but its key has fingerprint " + key.fingerprint);
  }
  return key;
}

// --- Passphrases ---

Result<std::string> ReadPassphrase(const PassphraseSource& source, std::string_view prompt,
                                   bool confirm) {
  std::string pass;
  if (!source.file.empty()) {
    std::string text;
    CAIRN_RETURN_IF_ERROR(ReadSmallFile(source.file, kMaxPassphraseFileSize, &text));
    pass = text.substr(0, text.find('\n'));
    OPENSSL_cleanse(text.data(), text.size());
    if (!pass.empty() && pass.back() == '\r') pass.pop_back();
    if (pass.empty()) {
      return Status::InvalidArgument("passphrase file " + source.file + " is empty");
    }
    return pass;
  }
  if (!source.env_var.empty()) {
    if (const char* v = std::getenv(source.env_var.c_str()); v != nullptr) {
      pass = v;
      if (pass.empty()) return Status::InvalidArgument("$" + source.env_var + " is empty");
      return pass;
    }
  }
  CAIRN_ASSIGN_OR_RETURN(pass, PromptOnTerminal(source.tty, prompt, confirm));
  if (pass.empty()) return Status::InvalidArgument("empty passphrase");
  return pass;
}

Result<EncryptionKey> LoadEncryptionKey(const std::string& path, const PassphraseSource& source) {
  CAIRN_ASSIGN_OR_RETURN(KeyFile file, ReadKeyFile(path));
  if (file.kdf == KeyKdf::kNone) return UnlockKey(file, "");
  CAIRN_ASSIGN_OR_RETURN(std::string pass,
                         ReadPassphrase(source, "passphrase for key " + file.fingerprint + ": ",
                                        false));
  auto key = UnlockKey(file, pass);
  OPENSSL_cleanse(pass.data(), pass.size());
  return key;
}

}  // namespace cairn::client
