#pragma once

// The client's half of a backup session: chunk assembly, hashing,
// compression and parallel upload (DESIGN.md §4, server/API.md "Backup
// session").
//
// UploadSession owns one server backup session and a pool of upload workers,
// each with its own HTTPS connection. For every disk the caller opens an
// ArchiveWriter, which is the NbdSinkHandler QEMU's backup job pushes into:
// it splits requests at 4 MiB chunk edges, keeps partly filled chunks until
// every byte of them has arrived, then queues the chunk for the workers
// (SHA-256, skip if the server already has the digest, zstd, POST). A chunk
// that only ever received zeros takes no buffer at all.
//
// Memory: chunk buffers come from one pool per session (`max_buffers`, 4 MiB
// each) shared by all archives. A handler call that needs a buffer while all
// are queued or uploading waits for one (back-pressure on QEMU) — and so it
// does, rather than take another, while 2 × `connections` chunks are queued
// or uploading, which keeps the workers busy; the rest of the pool is for
// partly filled chunks. When every buffer is held by a partly filled chunk,
// no wait can help, and the call fails (the NBD request gets EIO, QEMU's job
// fails, nothing is committed).
//
// Chunks not written by QEMU: in a full archive every chunk must be covered
// exactly once (Close() fails otherwise); in an incremental archive the
// chunks QEMU did not send keep the previous snapshot's digest.
//
// Encryption (UploadOptions::crypt; storage/FORMAT.md "Blob", DESIGN.md §2):
// the session is started as an encrypted one; every chunk's digest is the
// key's keyed digest (CryptConfig::ChunkDigest; all-zero chunks
// CryptConfig::ZeroChunkDigest, still recognised without hashing and sent
// once) and its blob is AES-256-GCM (CryptConfig::EncryptBlob); blob archives
// written through WriteBlob are encrypted too. Finish() signs the manifest
// (storage/manifest.h ManifestSigningText) so that a restore notices a server
// that swapped an archive or a chunk. The previous snapshot's indexes are
// used (incremental archives, chunks the server holds) only when it was
// taken with the same key, or both are plain (CryptChange); otherwise every
// archive is read and uploaded in full. Without `crypt` nothing of this runs
// and the plain path is unchanged.
//
// Thread safety: an ArchiveWriter's handler methods are called by one NbdSink
// (serialized); several ArchiveWriters of one session may run at once from
// different sinks. UploadSession's own methods are called from one thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "client/nbd_sink.h"
#include "storage/crypt_config.h"
#include "storage/status.h"

namespace cairn::client {

struct UploadOptions {
  int connections = 3;     // upload workers, one HTTPS connection each
  int max_buffers = 20;    // 4 MiB chunk buffers per session (RSS bound)
  int zstd_level = 1;
  // Upload bandwidth cap in bytes per second over all workers (blob bytes
  // sent); 0 = none.
  uint64_t rate_limit = 0;
  // Client-side encryption with this key; null = a plain backup.
  std::shared_ptr<const storage::CryptConfig> crypt;
  // With `crypt`: the payload of the plain blob archive `master-key.blob`
  // (client/encryption_key.h EncryptKeyForMaster: the key encrypted for a
  // master public key), written at Finish(); empty = none.
  std::string master_key;
};

// The archive that holds UploadOptions::master_key.
inline constexpr const char* kMasterKeyArchive = "master-key.blob";

// Why the previous snapshot of a backup start answer (its "previous": null
// or {"snapshot", ..., "crypt": null | {"mode", "fingerprint"}}) cannot be
// used by a backup encrypted with `crypt` (null = plain): "" when it can
// (same key fingerprint, or both plain) or there is none; else a sentence
// that starts with "key changed: full upload", "encryption turned on: full
// upload" or "encryption turned off: full upload".
std::string CryptChange(const nlohmann::json& previous, const storage::CryptConfig* crypt);

// Counters, updated as work is done; read at any time (for the progress line).
struct UploadStats {
  std::atomic<uint64_t> bytes_received{0};   // WRITE payload + WRITE_ZEROES length from QEMU
  std::atomic<uint64_t> chunks_dirty{0};     // chunks QEMU sent (complete)
  std::atomic<uint64_t> chunks_zero{0};      // of those, all zero
  std::atomic<uint64_t> chunks_known{0};     // of those, digest already on the server: not sent
  std::atomic<uint64_t> chunks_uploaded{0};  // POSTed
  std::atomic<uint64_t> bytes_uploaded{0};   // blob bytes POSTed
  std::atomic<uint64_t> chunks_reused{0};    // taken from the previous index without being sent
};

class ArchiveWriter;

class UploadSession {
 public:
  // Starts a backup session of `group` ("vm/ID") at `backup_time` (unix
  // seconds; nullopt = the server's now). The server's answer (session,
  // snapshot, time, previous) is available as start_info(). Errors: the
  // server's (Conflict when a backup of the group runs or the time is not
  // later than the newest snapshot, PermissionDenied, ...) or IOError.
  static Result<std::unique_ptr<UploadSession>> Start(const Repository& repo,
                                                      const std::string& group,
                                                      std::optional<int64_t> backup_time,
                                                      const UploadOptions& options);
  // Aborts the server session unless Finish() succeeded; joins the workers.
  ~UploadSession();

  // {"session", "snapshot", "time", "previous": null | {"snapshot", "time",
  //  "archives": [{"name","size","csum"}], "verify", "client": {...}}}
  const nlohmann::json& start_info() const;

  // Opens the archive `name` ("disk0.fidx") for a disk of `image_size` bytes.
  // incremental=false: a full archive; QEMU will send every byte. When the
  //   previous snapshot has an archive of this name, its index is fetched
  //   anyway so that chunks the server holds are not sent again.
  //   Not when the previous snapshot was taken with another key (or
  //   encryption was turned on or off): CryptChange.
  // incremental=true: QEMU sends only dirty chunks; the rest come from the
  //   previous snapshot's archive `name`, which must exist with the same
  //   image size and encryption key (Conflict otherwise — Status has no
  //   FailedPrecondition; on Conflict the caller falls back to full).
  // Other errors: InvalidArgument (name not NAME.fidx, size 0 or too large),
  // AlreadyExists (name opened before), the server's or IOError.
  // The writer belongs to the session and lives until the session ends.
  Result<ArchiveWriter*> OpenArchive(const std::string& name, uint64_t image_size,
                                     bool incremental);

  // Writes the blob archive `name` ("notes.blob": NAME.blob, not
  // kMasterKeyArchive) holding `payload` (at most storage::kMaxBlobPayload
  // bytes): zstd-compressed when smaller, encrypted in an encrypted session.
  // Errors: InvalidArgument for a bad name or size, the server's or IOError.
  Status WriteBlob(const std::string& name, std::string_view payload);

  // Commits the snapshot: every archive must have been Close()d. `client`
  // goes into the manifest's client info. An encrypted session first writes
  // kMasterKeyArchive (UploadOptions::master_key, when given) and sends the
  // manifest's signature. Returns the server's answer ({"snapshot",
  // "stats": {...}}).
  Result<nlohmann::json> Finish(const nlohmann::json& client);
  // Tells the server to drop the session (best effort; also done by the
  // destructor when Finish() did not succeed).
  void Abort();

  // The server's GET /backup/{sid}/stats.
  Result<nlohmann::json> ServerStats();

  const UploadStats& stats() const;
  // The first error of any worker or writer, OK while none. Any error is
  // the whole session's: from then on every handler call and Close() of
  // every archive, and Finish(), fail with it (the snapshot cannot be
  // committed anyway, so the other disks' QEMU jobs fail fast too).
  Status error() const;

 private:
  struct Impl;
  explicit UploadSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ArchiveWriter : public NbdSinkHandler {
 public:
  ~ArchiveWriter() override;
  Status OnWrite(uint64_t offset, std::string_view data) override;
  Status OnZero(uint64_t offset, uint64_t length) override;
  Status OnFlush() override;

  // Waits until every queued chunk of this archive is stored, checks that
  // the archive is complete (see the file comment), builds the fixed index
  // and uploads it. Call after QEMU's job ended successfully. OK again when
  // called after it succeeded; handler calls after it fail.
  Status Close();

  const std::string& name() const;
  uint64_t image_size() const;
  bool incremental() const;

 private:
  friend class UploadSession;
  struct Impl;
  explicit ArchiveWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::client
