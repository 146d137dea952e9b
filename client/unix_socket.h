#pragma once

// Unix stream socket I/O with deadlines: the one helper behind the client's
// local peers — QEMU's QMP monitor (client/qmp_client.h), qemu-ga
// (client/guest_agent.h), and QEMU as the NBD client of the sink
// (client/nbd_sink.h).
//
// The sockets are non-blocking and close-on-exec. Every wait is a poll()
// bounded by a deadline (kNoDeadline: none) that can also be cut short by an
// optional wake descriptor — one that becomes readable when its owner stops
// (an eventfd). EINTR is retried; a write to a closed peer fails with EPIPE
// instead of raising SIGPIPE (MSG_NOSIGNAL). Each transfer first tries the
// socket once even when the deadline has passed, so data that is already
// there is never reported as a timeout.
//
// How a transfer ended, if not with an error, is a SocketEnd: callers tell a
// timeout from a stop or a closed peer without parsing messages. Errors from
// the system are Status::FromErrno("send" / "recv" / "poll"); callers add
// their context.
//
// Thread safety: plain functions on a descriptor the caller owns; at most one
// thread sends and one receives on a socket at a time.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

using SocketDeadline = std::chrono::steady_clock::time_point;
inline constexpr SocketDeadline kNoDeadline = SocketDeadline::max();

// How a transfer ended when no error did.
enum class SocketEnd : uint8_t {
  kDone,      // all bytes sent / bytes received as asked
  kTimedOut,  // the deadline passed first
  kWoken,     // the wake descriptor became readable first
  kClosed,    // receiving only: the peer closed the connection (EOF)
};

// The poll() timeout until `deadline`: -1 for kNoDeadline, 0 once less than
// a millisecond is left, else the whole milliseconds left plus one (so the
// last wait does not end just before the deadline and spin), at most 2^30.
int PollTimeoutMs(SocketDeadline deadline);

// True when `path` can name a unix socket: 1 .. sizeof(sun_path) - 1 bytes.
bool IsUnixSocketPath(std::string_view path);

// A non-blocking, close-on-exec stream socket connected to the unix socket
// at `path`; the caller owns the descriptor. A full listen backlog (EAGAIN:
// Linux does not finish such a connect in the background) is retried every
// 10 ms until `deadline`; any other failure is returned at once, as
// FromErrno("connect <path>") (NotFound when nothing is there).
// InvalidArgument when !IsUnixSocketPath(path).
Result<int> ConnectUnixSocket(const std::string& path, SocketDeadline deadline);

// Sends all of `data` on non-blocking `fd`, waiting for room until
// `deadline` or until `wake_fd` (-1: none) is readable. kDone when all went
// out; on kTimedOut or kWoken a prefix may have gone out (*sent, if given,
// says how much).
Result<SocketEnd> SocketSendAll(int fd, std::string_view data, SocketDeadline deadline,
                                int wake_fd = -1, size_t* sent = nullptr);

// Receives what has arrived — at least 1 and at most `size` bytes — into
// `buf`, waiting until `deadline` or until `wake_fd` is readable when
// nothing is there yet. *received is the count (0 unless kDone).
// REQUIRES: size > 0.
Result<SocketEnd> SocketRecvSome(int fd, void* buf, size_t size, size_t* received,
                                 SocketDeadline deadline, int wake_fd = -1);

// Receives exactly `size` bytes into `buf`. kDone when all came; on any
// other end, *received (if given) says how many did (0 with kClosed is a
// clean close between messages).
Result<SocketEnd> SocketRecvFull(int fd, void* buf, size_t size, SocketDeadline deadline,
                                 int wake_fd = -1, size_t* received = nullptr);

}  // namespace cairn::client
