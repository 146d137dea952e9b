#pragma once

// NbdSink: a write-only NBD server on a unix socket, the target QEMU's backup
// job pushes a disk into (see client/INGEST.md for what QEMU 7.2 sends).
//
// One export of a fixed size. Fixed-newstyle handshake: NBD_OPT_GO and
// NBD_OPT_INFO (answered with NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE),
// NBD_OPT_EXPORT_NAME, NBD_OPT_LIST, NBD_OPT_ABORT; every other option gets
// NBD_REP_ERR_UNSUP (so no structured replies, no TLS, no meta contexts).
// Transmission: simple replies only.
//   WRITE          → handler.OnWrite (payload ≤ max_write_bytes)
//   WRITE_ZEROES   → handler.OnZero (NO_HOLE / FAST_ZERO flags ignored: the
//                    range reads as zeros either way)
//   TRIM           → handler.OnZero (not advertised; a trimmed range may read
//                    as anything, zeros included, and zeros are what a backup
//                    of it should hold)
//   FLUSH          → handler.OnFlush
//   FUA flag       → OnFlush after the write (FUA is not advertised either)
//   DISC           → the connection ends
//   READ, CACHE, BLOCK_STATUS, anything else → EINVAL (a backup target is
//                    never read; a READ means the caller set QEMU up wrongly)
// Validation: a request outside the export → ENOSPC (writes) or EINVAL; length
// 0 → EINVAL; unknown command flags → EINVAL; a handler error → EIO (QEMU's
// job then fails with an error event instead of hanging). A bad request magic,
// a WRITE longer than max_write_bytes, an oversized option or a handshake
// that breaks the protocol → the connection is dropped; nothing allocates more
// than max_write_bytes per connection.
//
// Threads: Start() runs an accept thread; each connection is served on its own
// thread (at most max_connections at once; more are closed at once).
// Handler calls are serialized by the sink — never two at once, even across
// connections — and within one connection they are made in request order,
// each before the reply to its request is sent. The handler therefore needs
// no locking of its own against the sink, but it runs on a sink thread. A
// handler call may block (that is the back-pressure on QEMU); it must not
// call Stop() or destroy the sink.
//
// Ownership: the sink does not own the handler, which must outlive it. The
// sink creates the socket file (mode 0600) and removes it in Stop().

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "storage/mutex.h"
#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

// NBD protocol numbers (https://github.com/NetworkBlockDevice/nbd doc/proto.md).
namespace nbd {
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;  // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454f5054ull;  // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x3e889045565a9ull;
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;

// Handshake flags (server) and client flags.
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;

// Option replies.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepErrUnsup = 0x80000001;
inline constexpr uint32_t kRepErrPolicy = 0x80000002;
inline constexpr uint32_t kRepErrInvalid = 0x80000003;
inline constexpr uint32_t kRepErrUnknown = 0x80000006;

// NBD_REP_INFO types.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
inline constexpr uint16_t kTransHasFlags = 1 << 0;
inline constexpr uint16_t kTransReadOnly = 1 << 1;
inline constexpr uint16_t kTransSendFlush = 1 << 2;
inline constexpr uint16_t kTransSendFua = 1 << 3;
inline constexpr uint16_t kTransSendTrim = 1 << 5;
inline constexpr uint16_t kTransSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kTransCanMultiConn = 1 << 8;

// Commands and command flags.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagDf = 1 << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Error values in replies (fixed by the protocol, not the host's errno).
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;
}  // namespace nbd

// Receives what QEMU writes. See NbdSink for when and on which thread the
// calls are made. A non-OK Status fails that one request with EIO.
class NbdSinkHandler {
 public:
  virtual ~NbdSinkHandler() = default;
  // `data` is valid only during the call. REQUIRES (checked by the sink):
  // data non-empty, offset + data.size() <= export size.
  virtual Status OnWrite(uint64_t offset, std::string_view data) = 0;
  // The range [offset, offset + length) reads as zeros. Same REQUIRES.
  virtual Status OnZero(uint64_t offset, uint64_t length) = 0;
  // Everything acknowledged so far must be kept (QEMU sends this when its
  // job completes and when a write asked for FUA).
  virtual Status OnFlush() = 0;
};

struct NbdSinkOptions {
  // Must not exist. Shorter than 108 bytes; like export_name, free of
  // spaces, control characters and %?&#"'<>\ (it goes into Uri() as is).
  std::string socket_path;
  uint64_t export_size = 0;  // bytes; REQUIRES: > 0
  // The export clients must name; "" is what `nbd+unix:///?socket=…` asks for.
  std::string export_name;
  // Largest WRITE payload accepted, advertised as the maximum block size.
  uint32_t max_write_bytes = 32u << 20;
  // Advertised preferred block size (a power of two, 512..max_write_bytes).
  uint32_t preferred_block = 4096;
  // Bound on the whole handshake, on reading the rest of a request once its
  // header began, and on sending each reply.
  std::chrono::milliseconds io_timeout{60000};
  // Bound on the wait for the next request; 0 = wait until Stop().
  std::chrono::milliseconds idle_timeout{0};
  int max_connections = 4;
  // Where the sink reports what it did and what it refused (one line per
  // call, from sink threads, never while holding a lock a handler holds).
  // Absent: nothing is reported.
  std::function<void(std::string_view)> log;
};

struct NbdSinkStats {
  uint64_t connections = 0;  // accepted and handshaken into transmission
  uint64_t refused_connections = 0;
  uint64_t writes = 0;  // WRITE requests handed to the handler
  uint64_t write_bytes = 0;
  uint64_t zeroes = 0;  // WRITE_ZEROES and TRIM handed to OnZero
  uint64_t zero_bytes = 0;
  uint64_t flushes = 0;         // FLUSH requests and FUA flags handed to OnFlush
  uint64_t trims = 0;           // TRIM requests (also counted in zeroes)
  uint64_t no_hole_zeroes = 0;  // WRITE_ZEROES with NBD_CMD_FLAG_NO_HOLE
  uint64_t fua_requests = 0;    // requests with NBD_CMD_FLAG_FUA
  uint64_t reads_refused = 0;
  uint64_t error_replies = 0;    // requests answered with an error
  uint64_t handler_errors = 0;   // of which the handler failed (EIO)
  uint64_t disconnects = 0;      // connections QEMU ended with NBD_CMD_DISC
  uint64_t protocol_errors = 0;  // connections dropped for breaking the protocol
  std::string last_error;        // the last refused request or dropped connection
};

class NbdSink {
 public:
  // Binds the socket, then starts serving. InvalidArgument for bad options,
  // IOError when the socket cannot be created (AlreadyExists if the path is
  // taken).
  static Result<std::unique_ptr<NbdSink>> Start(const NbdSinkOptions& options,
                                                NbdSinkHandler* handler);
  // Stop()s.
  ~NbdSink();
  NbdSink(const NbdSink&) = delete;
  NbdSink& operator=(const NbdSink&) = delete;

  // Stops accepting, ends every connection (a handler call in progress is
  // finished first), joins the threads and removes the socket file.
  // Idempotent. REQUIRES: not called from a handler callback.
  void Stop();

  // "nbd+unix:///<export name>?socket=<path>" — the URI QEMU's NBD client
  // opens (the form drive-backup's `target` takes, see INGEST.md).
  std::string Uri() const;
  const NbdSinkOptions& options() const { return options_; }
  NbdSinkStats stats() const;

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  NbdSink(const NbdSinkOptions& options, NbdSinkHandler* handler);

  void AcceptLoop();
  void Serve(Connection* conn);
  // Runs the option haggling; sets *transmit when the client entered
  // transmission (OK without it: the client aborted).
  Status Handshake(int fd, bool* transmit);
  Status Transmit(int fd);
  Status SendOptionReply(int fd, uint32_t option, uint32_t type, std::string_view data,
                         std::chrono::steady_clock::time_point deadline);
  Status SendExportInfo(int fd, uint32_t option, std::chrono::steady_clock::time_point deadline);
  Status ReadFull(int fd, void* buf, size_t n, std::chrono::steady_clock::time_point deadline,
                  bool* clean_eof);
  Status WriteFull(int fd, const void* buf, size_t n,
                   std::chrono::steady_clock::time_point deadline);
  uint16_t TransmissionFlags() const;
  void Log(const std::string& line) const;
  void NoteError(const std::string& what, bool protocol_error);

  const NbdSinkOptions options_;
  // Every call into the handler holds handler_mu_.
  NbdSinkHandler* const handler_ CAIRN_PT_GUARDED_BY(handler_mu_);
  int listen_fd_ = -1;
  bool socket_created_ = false;  // bind() made options_.socket_path
  int wake_fd_ = -1;             // eventfd, readable once Stop() began: wakes every poll
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::list<Connection> connections_;  // touched by the accept thread, then Stop()
  Mutex stop_mu_;                      // serializes Stop()

  Mutex handler_mu_;  // held during every handler call
  mutable Mutex stats_mu_;
  NbdSinkStats stats_ CAIRN_GUARDED_BY(stats_mu_);
};

}  // namespace cairn::client
