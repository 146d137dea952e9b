#include "client/unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace cairn::client {
namespace {

enum class Wait { kReady, kTimedOut, kWoken };

// Waits until `fd` has `events` (or an error or hangup, which the next
// send/recv reports), the deadline passes, or `wake_fd` is readable.
Result<Wait> WaitFor(int fd, short events, SocketDeadline deadline, int wake_fd) {
  const int ms = PollTimeoutMs(deadline);
  if (ms == 0) return Wait::kTimedOut;
  pollfd p[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
  const nfds_t n = wake_fd >= 0 ? 2 : 1;
  if (::poll(p, n, ms) < 0) {
    if (errno == EINTR) return Wait::kReady;  // the caller tries again
    return Status::FromErrno("poll", errno);
  }
  if (n == 2 && p[1].revents != 0) return Wait::kWoken;
  return Wait::kReady;
}

SocketEnd EndOf(Wait w) { return w == Wait::kWoken ? SocketEnd::kWoken : SocketEnd::kTimedOut; }

}  // namespace

int PollTimeoutMs(SocketDeadline deadline) {
  if (deadline == kNoDeadline) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left.count() + 1, int64_t{1} << 30));
}

bool IsUnixSocketPath(std::string_view path) {
  return !path.empty() && path.size() < sizeof(sockaddr_un{}.sun_path);
}

Result<int> ConnectUnixSocket(const std::string& path, SocketDeadline deadline) {
  if (!IsUnixSocketPath(path)) {
    return Status::InvalidArgument("unix socket path empty or too long: " + path);
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Status::FromErrno("socket", errno);
    // Non-blocking: a unix socket connects at once or fails (no
    // EINPROGRESS, no EINTR), so nothing here can block past the deadline.
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    const int err = errno;
    ::close(fd);
    // EAGAIN: the backlog is full; unix sockets do not finish such a connect
    // in the background, so try again.
    if (err == EAGAIN && PollTimeoutMs(deadline) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    return Status::FromErrno("connect " + path, err);
  }
}

Result<SocketEnd> SocketSendAll(int fd, std::string_view data, SocketDeadline deadline,
                                int wake_fd, size_t* sent) {
  size_t done = 0;
  if (sent != nullptr) *sent = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      if (sent != nullptr) *sent = done;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      return Status::FromErrno("send", n == 0 ? EPIPE : errno);
    }
    Result<Wait> w = WaitFor(fd, POLLOUT, deadline, wake_fd);
    if (!w.ok()) return w.status();
    if (*w != Wait::kReady) return EndOf(*w);
  }
  return SocketEnd::kDone;
}

Result<SocketEnd> SocketRecvSome(int fd, void* buf, size_t size, size_t* received,
                                 SocketDeadline deadline, int wake_fd) {
  *received = 0;
  for (;;) {
    ssize_t n = ::recv(fd, buf, size, 0);
    if (n > 0) {
      *received = static_cast<size_t>(n);
      return SocketEnd::kDone;
    }
    if (n == 0) return SocketEnd::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Status::FromErrno("recv", errno);
    Result<Wait> w = WaitFor(fd, POLLIN, deadline, wake_fd);
    if (!w.ok()) return w.status();
    if (*w != Wait::kReady) return EndOf(*w);
  }
}

Result<SocketEnd> SocketRecvFull(int fd, void* buf, size_t size, SocketDeadline deadline,
                                 int wake_fd, size_t* received) {
  auto* out = static_cast<char*>(buf);
  size_t got = 0;
  if (received != nullptr) *received = 0;
  while (got < size) {
    size_t n = 0;
    Result<SocketEnd> end = SocketRecvSome(fd, out + got, size - got, &n, deadline, wake_fd);
    if (!end.ok() || *end != SocketEnd::kDone) return end;
    got += n;
    if (received != nullptr) *received = got;
  }
  return SocketEnd::kDone;
}

}  // namespace cairn::client
