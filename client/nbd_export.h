#pragma once

// NbdExport: a read-only NBD server that serves an ArchiveSource — the
// export behind `cairn map` (client/MAP.md). The protocol numbers are those
// of client/nbd_sink.h (namespace nbd); the sink is the write-only
// counterpart QEMU pushes backups into.
//
// Listens on a unix socket (mode 0600, removed in Stop()) or on a TCP
// address (meant for 127.0.0.1: NBD has no authentication of its own).
// One export, of the archive's size; every export name is accepted (clients
// that ask for "" — `nbd+unix:///?socket=…` — and those that name one get
// the same export; NBD_OPT_LIST lists "").
//
// Handshake: fixed newstyle (no-zeroes understood). Options:
// NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO (NBD_INFO_EXPORT and
// NBD_INFO_BLOCK_SIZE: minimum 1, preferred 4096, maximum 32 MiB),
// NBD_OPT_LIST, NBD_OPT_ABORT, NBD_OPT_STRUCTURED_REPLY,
// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT with the single
// context "base:allocation" (id 1); STARTTLS and the rest get
// NBD_REP_ERR_UNSUP.
// Transmission flags: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_DF,
// CAN_MULTI_CONN (the export never changes, so every connection sees the
// same bytes), SEND_CACHE.
//   READ          → the bytes, or EIO when a chunk cannot be fetched or fails
//                   its checks (never wrong data). Structured: one
//                   NBD_REPLY_TYPE_OFFSET_DATA chunk, or NBD_REPLY_TYPE_ERROR.
//   BLOCK_STATUS  → (structured + base:allocation only, else EINVAL) one
//                   extent per run of chunks: all-zero chunks are
//                   NBD_STATE_HOLE|NBD_STATE_ZERO, others 0. Extents end at
//                   the requested range's end; REQ_ONE gives one.
//   CACHE         → the range is read into the cache (prefetch), OK.
//   FLUSH         → OK (nothing to flush).
//   WRITE, WRITE_ZEROES, TRIM → EPERM (the payload of a WRITE is read and
//                   dropped; longer than 32 MiB: the connection is dropped).
//   DISC          → the connection ends.
// A request outside the export or of length 0 → EINVAL; READ longer than
// 32 MiB → EINVAL; bad magic → the connection is dropped.
//
// Threads: an accept thread and one thread per connection (at most
// max_connections; more are closed at once); each connection serves its
// requests in order. The source is shared (ArchiveSource is thread-safe).
// The export does not own the source, which must outlive it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "client/archive_source.h"
#include "storage/mutex.h"
#include "storage/status.h"

namespace cairn::client {

struct NbdExportOptions {
  // Exactly one of: a unix socket path (must not exist), or a TCP address.
  std::string socket_path;
  std::string listen_host;  // "127.0.0.1"; port 0 picks a free one (port())
  int listen_port = -1;
  std::chrono::milliseconds io_timeout{60000};
  int max_connections = 16;
  // One line per connection event and refused request; absent: silent.
  std::function<void(std::string_view)> log;
};

struct NbdExportStats {
  uint64_t connections = 0;
  uint64_t reads = 0;
  uint64_t read_bytes = 0;
  uint64_t read_errors = 0;  // READs answered EIO
  uint64_t block_status = 0;
  uint64_t writes_refused = 0;
  uint64_t protocol_errors = 0;
};

class NbdExport {
 public:
  // Binds and starts serving. InvalidArgument for bad options, AlreadyExists
  // for a socket path that exists, IOError for the socket calls.
  static Result<std::unique_ptr<NbdExport>> Start(const NbdExportOptions& options,
                                                  ArchiveSource* source);
  ~NbdExport();
  NbdExport(const NbdExport&) = delete;
  NbdExport& operator=(const NbdExport&) = delete;

  // Ends every connection, joins the threads, removes the socket file.
  // Idempotent.
  void Stop();

  // "nbd+unix:///?socket=PATH" or "nbd://HOST:PORT/".
  std::string Uri() const;
  int port() const { return port_; }
  NbdExportStats stats() const;

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  struct Session;  // one connection's negotiated state

  NbdExport(const NbdExportOptions& options, ArchiveSource* source);
  void AcceptLoop();
  void Serve(Connection* conn);
  Status Handshake(int fd, Session* session, bool* transmit);
  Status Transmit(int fd, const Session& session);
  Status SendOptionReply(int fd, uint32_t option, uint32_t type, std::string_view data,
                         std::chrono::steady_clock::time_point deadline);
  Status SendExportInfo(int fd, uint32_t option, std::chrono::steady_clock::time_point deadline);
  Status MetaContext(int fd, uint32_t option, const std::string& data, Session* session,
                     std::chrono::steady_clock::time_point deadline);
  Status ReadFull(int fd, void* buf, size_t n, std::chrono::steady_clock::time_point deadline,
                  bool* clean_eof);
  Status WriteFull(int fd, std::string_view data);
  std::string BlockStatus(uint64_t offset, uint32_t length, bool one) const;
  uint16_t TransmissionFlags() const;
  void Log(const std::string& line) const;

  const NbdExportOptions options_;
  ArchiveSource* const source_;
  int listen_fd_ = -1;
  int port_ = -1;
  bool socket_created_ = false;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::list<Connection> connections_;  // the accept thread's, then Stop()'s
  Mutex stop_mu_;
  mutable Mutex stats_mu_;
  NbdExportStats stats_ CAIRN_GUARDED_BY(stats_mu_);
};

}  // namespace cairn::client
