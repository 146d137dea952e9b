#pragma once

// Restore of one disk archive from a snapshot (DESIGN.md §4 "Restore"):
// a reader session, the fixed index, chunks fetched in parallel on several
// connections, each chunk's SHA-256 checked against the index before a byte
// of it is written, and a sparse image: all-zero chunks are holes.
//
// Formats: raw (a regular file, or a block device written in place) and
// qcow2 (a sparse raw image is written to a temporary file next to the
// target, then converted with `qemu-img convert -O qcow2`, and removed).
// QEMU sizes disks in 512-byte sectors: the qcow2 image of an image whose
// size is not a multiple of 512 is padded with zeros to the next one (real
// disks always are).
//
// The target is written under a temporary name and renamed into place only
// when every chunk was verified, so a failed restore never leaves a target
// that looks complete (a block device is written in place; a failure then
// says so).
//
// A regular-file target: a new file `<target>.tmp.<pid>.<n>` (mode 0600: it
// holds whatever the guest held) made at the image size, all holes; chunks
// are written into it, zero chunks are not; fsync, rename over `target`,
// fsync of the folder. An existing file at `target` is replaced only then.
// A block device (also through a symlink): opened O_EXCL (refused while
// mounted), at least as large as the image (else InvalidArgument; bytes
// past the image are left alone), every chunk written, zero chunks as zeros,
// fsync at the end.
//
// The index itself must match the checksum and size that the snapshot's
// manifest (GET /reader/{rid}/manifest, whose type, id and time must be the
// snapshot asked for) gives for the archive.
//
// Encrypted snapshots (the manifest has `crypt`): before any chunk is
// fetched, the key (RestoreOptions::key) must have the manifest's key
// fingerprint (PermissionDenied naming the one needed otherwise) and the
// manifest's signature must check out with it (Corruption "manifest
// signature mismatch": the server changed the snapshot); then each chunk is
// decrypted (CryptConfig::DecryptBlob) and its keyed digest compared with
// the index. The signature covers the archives' checksums, the checksums
// cover the digests, the digests the chunks: a server without the key can
// swap nothing unnoticed.
// Each distinct chunk is fetched once and written at every offset that holds
// it. Memory: about four chunks (16 MiB) per connection (the response as
// received, its copy in HttpResponse, the decoded chunk).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "client/api_client.h"
#include "storage/crypt_config.h"
#include "storage/manifest.h"
#include "storage/status.h"

namespace cairn::client {

struct RestoreOptions {
  std::string format = "raw";  // "raw" or "qcow2"
  int connections = 4;
  // Called from the restoring thread with (bytes done, bytes total) at most
  // a few times per second, and once at the end: (total, total) after a
  // successful restore only.
  std::function<void(uint64_t, uint64_t)> progress;
  // Called once, before anything is downloaded, when the snapshot is
  // encrypted, with the key fingerprint it was encrypted with: the key to
  // decrypt it, or null when none is at hand (an error is returned as it
  // is: a wrong passphrase). Unset = no key. Not called for a plain snapshot.
  std::function<Result<std::shared_ptr<const storage::CryptConfig>>(const std::string& fingerprint)>
      key;
};

struct RestoreResult {
  uint64_t image_size = 0;
  uint64_t chunks = 0;
  uint64_t zero_chunks = 0;       // not fetched: holes (zeros on a block device)
  uint64_t bytes_downloaded = 0;  // blob bytes fetched
  double seconds = 0;
  std::string fingerprint;  // the key of an encrypted snapshot; "" = plain
};

// Restores `archive` ("disk0.fidx", or without ".fidx") of `snapshot`
// ("vm/100/2026-11-21T10:00:00Z") to `target`. Errors: NotFound for an
// unknown snapshot or archive, Corruption when a chunk does not match its
// digest or size, or is missing on the server (nothing is left at `target`
// then), IOError for the target, the transport or qemu-img, InvalidArgument
// for a bad format, a `.blob` archive, or a target that is neither a regular
// file nor a block device. PermissionDenied/Unauthenticated as the server
// says. Thread-safe: uses `connections` threads of its own, each with its
// own connection, and one more for the session.
Result<RestoreResult> RestoreArchive(const Repository& repo, const std::string& snapshot,
                                     const std::string& archive, const std::string& target,
                                     const RestoreOptions& options);

// OK when `m` is encrypted with `crypt`'s key and its signature matches
// (storage::ManifestSigningText); PermissionDenied when the key's
// fingerprint differs (naming both), Corruption("manifest signature
// mismatch: …") when the signature differs or is missing.
// REQUIRES: m.crypt.
Status CheckManifestSignature(const std::string& snapshot, const storage::Manifest& m,
                              const storage::CryptConfig& crypt);

// A blob archive of a snapshot as stored (not decoded: it may be
// encrypted), with the snapshot's manifest.
struct SnapshotBlob {
  storage::Manifest manifest;
  std::string blob;  // the archive's bytes, their SHA-256 and size checked against the manifest
};
// Reads the blob archive `archive` (NAME.blob) of `snapshot` through a
// reader session. NotFound for an unknown snapshot or archive, Corruption
// when the bytes do not match the manifest (or it names another snapshot).
Result<SnapshotBlob> ReadSnapshotBlob(const Repository& repo, const std::string& snapshot,
                                      const std::string& archive);

}  // namespace cairn::client
