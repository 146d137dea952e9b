#pragma once

// Manifest: a snapshot's `index.json`.
//
// The protected part (type, id, time, archives, client info) is fixed when the
// snapshot is committed and covered by `protected-sha256`, the SHA-256 of its
// canonical JSON (keys sorted, no whitespace, the checksum field left out).
// The `unprotected` part (verify state, notes, protected flag) may be
// rewritten later without touching that checksum. Full description:
// storage/FORMAT.md.
//
// Thread safety: plain values.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr size_t kMaxManifestSize = 1024 * 1024;

struct ArchiveInfo {
  std::string name;      // validated archive name, e.g. "drive0.fidx"
  uint64_t size = 0;     // image bytes for ".fidx"; file bytes for ".blob"
  Digest csum;           // ".fidx": the index's digest-list checksum; ".blob": SHA-256 of the file
  auto operator<=>(const ArchiveInfo&) const = default;
};

struct VerifyState {
  std::string state;  // "ok" or "failed"
  int64_t time = 0;   // seconds since the epoch
  std::string task;   // id of the task that set it, may be empty
  auto operator<=>(const VerifyState&) const = default;
};

// A snapshot made with client-side encryption (storage/FORMAT.md,
// "Manifest" and "Encryption keys"): which key, and the client's signature
// over the protected facts (ManifestSigningText), which only the key's holder
// can make or check. The server checks only the shapes.
struct CryptInfo {
  std::string fingerprint;  // "1f:2e:…": 8 bytes as lowercase hex pairs joined by ':'
  std::string signature;    // 64 lowercase hex, or empty when the client sent none
  auto operator<=>(const CryptInfo&) const = default;
};

// Whether `text` has the shape of a key fingerprint (8 lowercase hex pairs
// joined by ':').
bool IsKeyFingerprint(std::string_view text);

struct Manifest {
  // Protected part.
  std::string backup_type;
  std::string backup_id;
  int64_t backup_time = 0;
  std::vector<ArchiveInfo> archives;
  nlohmann::json client = nlohmann::json::object();  // client info, bitmap and consistency facts
  std::optional<CryptInfo> crypt;  // set for an encrypted snapshot

  // Unprotected part.
  std::optional<VerifyState> verify;
  std::string notes;
  bool is_protected = false;

  // Whether chunks of `kind` may belong to this snapshot: an encrypted
  // snapshot (crypt set) holds only the encrypted kinds, any other only
  // plain and zstd (storage/FORMAT.md, "Which kinds prove their digest").
  bool AllowsChunkKind(BlobKind kind) const;
  bool encrypted() const { return crypt.has_value(); }

  // Sum of archive sizes.
  uint64_t TotalSize() const;
  const ArchiveInfo* FindArchive(std::string_view name) const;

  // Serialises, computing protected-sha256; pretty-printed (indent 2) with a
  // final newline. Never fails. The result Parse()s back to an equal Manifest
  // only if every name is valid, backup_time is in 1970..9999, `client` is an
  // object nested at most 32 levels deep (counting the manifest itself) and
  // strings are valid UTF-8 (invalid bytes are written as U+FFFD): writers of
  // outside input should Parse() their own ToJson() before committing it.
  std::string ToJson() const;
  // Parses and checks: size <= kMaxManifestSize, valid JSON without duplicate
  // keys and at most 32 levels deep, no unknown keys outside `client`, exact
  // types, every name valid, verify state "ok"/"failed", archive names unique,
  // protected-sha256 matches. Every failure is Corruption (never
  // InvalidArgument): the text is a file or an upload, not a caller's argument.
  static Result<Manifest> Parse(std::string_view text);
};

// The text an encrypted snapshot's signature covers (storage/FORMAT.md,
// "Manifest signature"): type, id, time, the key's fingerprint and every
// archive's name, size and checksum, archives sorted by name. The client
// signs it with CryptConfig::Sign before finishing a backup and checks it
// before restoring, so a server cannot swap or drop archives unnoticed.
// REQUIRES: crypt is set (its fingerprint is part of the text).
std::string ManifestSigningText(const Manifest& m);

}  // namespace cairn::storage
