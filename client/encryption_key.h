#pragma once

// Client-side encryption keys: the key file (plain or wrapped with a
// passphrase through scrypt), its paper form, the RSA master key that can
// recover a key from a snapshot, and where passphrases come from.
// Byte-level description: storage/FORMAT.md, "Encryption keys".
//
// Every parser here takes outside bytes (a file a hostile or careless hand
// may have written): bad JSON, wrong types, bad hex or base64, wrong lengths
// give Corruption or InvalidArgument with a message that names what is wrong,
// never an exception or a crash.
//
// Thread safety: plain functions without shared state, except that
// ReadPassphrase may prompt on the terminal (one caller at a time).

#include <cstdint>
#include <string>
#include <string_view>

#include "storage/crypt_config.h"
#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

// An unlocked key: what a backup or restore needs.
struct EncryptionKey {
  std::string key;          // storage::kEncryptionKeySize raw bytes
  int64_t created = 0;      // Unix seconds
  std::string fingerprint;  // storage::CryptConfig's, "1f:2e:…"

  EncryptionKey() = default;
  EncryptionKey(const EncryptionKey&) = default;
  EncryptionKey& operator=(const EncryptionKey&) = default;
  EncryptionKey(EncryptionKey&&) = default;
  EncryptionKey& operator=(EncryptionKey&&) = default;
  ~EncryptionKey();  // wipes `key`

  // The chunk-level crypto of this key.
  Result<storage::CryptConfig> Config() const;
};

// A fresh random key (RAND_bytes) created at `created` (Unix seconds).
// IOError when the random generator fails.
Result<EncryptionKey> GenerateEncryptionKey(int64_t created);

// The key of `raw` bytes (kEncryptionKeySize of them, InvalidArgument
// otherwise) with its fingerprint computed: for a key recovered through the
// master key, or read back from elsewhere.
Result<EncryptionKey> EncryptionKeyFromRaw(std::string_view raw, int64_t created);

enum class KeyKdf { kNone, kScrypt };
// "none", "scrypt".
const char* KeyKdfName(KeyKdf kdf);
// InvalidArgument for anything but "none" and "scrypt".
Result<KeyKdf> ParseKeyKdf(std::string_view name);

// scrypt cost parameters. N a power of two ≥ 2; the memory scrypt needs,
// 128·N·r bytes, at most kMaxScryptMemory; 1 ≤ r ≤ 64, 1 ≤ p ≤ 64.
struct ScryptParams {
  uint64_t n = 32768;
  uint32_t r = 8;
  uint32_t p = 1;
};
inline constexpr uint64_t kMaxScryptMemory = uint64_t{1} << 30;  // 1 GiB
// InvalidArgument naming the parameter that is out of range.
Status CheckScryptParams(const ScryptParams& params);

// A key file as stored (FORMAT.md "Encryption keys", "Key file"): the key in
// the clear (kdf none) or wrapped with AES-256-GCM under a key scrypt derives
// from a passphrase (kdf scrypt). All byte fields are raw bytes here and hex
// in the file.
struct KeyFile {
  KeyKdf kdf = KeyKdf::kNone;
  int64_t created = 0;
  std::string fingerprint;
  std::string key;  // kdf none: the raw key; empty otherwise
  // kdf scrypt only; empty / default otherwise.
  ScryptParams scrypt;
  std::string salt;     // 16 bytes
  std::string iv;       // 12 bytes
  std::string tag;      // 16 bytes
  std::string wrapped;  // 32 bytes: the encrypted key

  ~KeyFile();  // wipes `key`
  KeyFile() = default;
  KeyFile(const KeyFile&) = default;
  KeyFile& operator=(const KeyFile&) = default;
  KeyFile(KeyFile&&) = default;
  KeyFile& operator=(KeyFile&&) = default;

  // The file's JSON text (indented, ending in a newline).
  std::string ToJson() const;
  // Parses and checks a key file's text: JSON of at most 64 KiB, version 1,
  // every field present with its type, hex of the right length, a
  // fingerprint of the form "xx:…" (23 chars), scrypt parameters in range.
  // Corruption naming the field otherwise. Does not check the fingerprint
  // against the key (UnlockKey does: kdf scrypt needs the passphrase).
  static Result<KeyFile> Parse(std::string_view text);
};

// The key file of `key`: kdf none stores it in the clear (`passphrase`
// ignored); kdf scrypt wraps it under a fresh salt and IV with the key scrypt
// derives from `passphrase` (InvalidArgument when it is empty, or the params
// are out of range).
Result<KeyFile> LockKey(const EncryptionKey& key, KeyKdf kdf, std::string_view passphrase,
                        const ScryptParams& params = {});

// The key in `file`. kdf scrypt: PermissionDenied("wrong passphrase for key
// <fp>") when the passphrase does not open it. Corruption when the key does
// not have the fingerprint the file states.
Result<EncryptionKey> UnlockKey(const KeyFile& file, std::string_view passphrase);

// `file` unlocked with `old_passphrase` and locked again (fresh salt and IV)
// with `kdf` and `new_passphrase`: UnlockKey's errors, then LockKey's.
Result<KeyFile> ChangePassphrase(const KeyFile& file, std::string_view old_passphrase,
                                 KeyKdf kdf, std::string_view new_passphrase,
                                 const ScryptParams& params = {});

// ~/.config/cairn/encryption-key.json; /etc/cairn/encryption-key.json when
// running as root (euid 0). InvalidArgument when $HOME is unset or not
// absolute (a non-root user then names the file).
Result<std::string> DefaultKeyFilePath();

// Reads and parses the key file at `path` (KeyFile::Parse). NotFound naming
// the path (and `cairn key create`) when there is none.
Result<KeyFile> ReadKeyFile(const std::string& path);

// Writes `file` to `path` durably with mode 0600 (WriteSecretFile).
// AlreadyExists when `path` exists and not `overwrite`.
Status WriteKeyFile(const std::string& path, const KeyFile& file, bool overwrite);

// Writes `data` to `path` with `mode`: a temp file in the same folder created
// with that mode (0600 so no other user ever sees a secret), written,
// fsynced, then renamed over `path` — with `overwrite` — or linked to it only
// when no file is there (AlreadyExists otherwise: never replaced by accident),
// and the folder fsynced. Missing folders of `path` are made with mode 0700.
// On failure the temp file is removed and `path` is untouched.
Status WriteSecretFile(const std::string& path, std::string_view data, bool overwrite,
                       unsigned mode = 0600);

// --- Paper key ---
//
//   -----BEGIN CAIRN PAPERKEY-----
//   fingerprint: 1f:2e:…
//   <base64 of the key file JSON, 64 chars per line> <8 hex CRC32C of those chars>
//   -----END CAIRN PAPERKEY-----

// The paper form of `file` (its ToJson text), ending in a newline.
std::string RenderPaperKey(const KeyFile& file);
// Reads a paper key back. Blank lines, surrounding spaces, CR and text
// before BEGIN or after END are ignored; CRC hex in either case is accepted.
// A line whose checksum does not match gives InvalidArgument naming it
// ("paperkey data line 3 (line 5 of the text): checksum does not match —
// check that line for a typo"); missing markers, bad base64 or a fingerprint
// line that disagrees with the decoded file: InvalidArgument; the decoded
// file: KeyFile::Parse.
Result<KeyFile> ParsePaperKey(std::string_view text);

// --- Master key (RSA-3072) ---

struct MasterKeyPair {
  std::string private_pem;  // PKCS#8; encrypted (AES-256-CBC) when a passphrase is given
  std::string public_pem;   // SubjectPublicKeyInfo
};

// A fresh RSA-3072 pair. An empty `passphrase` leaves the private PEM
// unencrypted. IOError when OpenSSL fails.
Result<MasterKeyPair> GenerateMasterKey(std::string_view passphrase);

// RSA-OAEP (SHA-256, MGF1-SHA-256, no label) under the public key of
// `public_pem` of the compact JSON
// {"key":"<64 hex>","fingerprint":"<fp>","created":<unix>}: the payload of
// master-key.blob. InvalidArgument for a PEM that is not an RSA public key of
// at least 2048 bits, or a raw key that is not kEncryptionKeySize bytes.
Result<std::string> EncryptKeyForMaster(std::string_view public_pem, std::string_view raw_key,
                                        std::string_view fingerprint, int64_t created);

// The key EncryptKeyForMaster sealed. `passphrase` opens an encrypted
// private PEM (ignored for an unencrypted one): PermissionDenied when it is
// wrong or missing. Corruption when the ciphertext does not decrypt with this
// master key or its JSON is malformed, or its key does not have the
// fingerprint it states.
Result<EncryptionKey> DecryptKeyWithMaster(std::string_view private_pem,
                                           std::string_view passphrase,
                                           std::string_view ciphertext);

// --- Passphrases ---

// Where a passphrase comes from, in this order: the first line of `file`
// (when set; without its line end), the environment variable `env_var` (when
// set and present), a prompt without echo on the terminal `tty`; otherwise
// InvalidArgument ("no passphrase: use --passphrase-file, $CAIRN_KEY_PASSPHRASE
// or a terminal").
struct PassphraseSource {
  std::string file;
  std::string env_var = "CAIRN_KEY_PASSPHRASE";
  std::string tty = "/dev/tty";
};

// The passphrase from `source`. `prompt` is shown on the terminal; with
// `confirm` a prompted passphrase is asked twice and must match
// (InvalidArgument otherwise). An empty passphrase is InvalidArgument.
Result<std::string> ReadPassphrase(const PassphraseSource& source, std::string_view prompt,
                                   bool confirm);

// ReadKeyFile and UnlockKey, asking `source` for a passphrase only when the
// file has one.
Result<EncryptionKey> LoadEncryptionKey(const std::string& path, const PassphraseSource& source);

}  // namespace cairn::client
