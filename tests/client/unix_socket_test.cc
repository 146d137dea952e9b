#include "client/unix_socket.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/client/qemu_testutil.h"

namespace cairn::client {
namespace {

using std::chrono::milliseconds;
using testing::ShortTempDir;
using Clock = std::chrono::steady_clock;

// Closes a descriptor at scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// A non-blocking socketpair, both ends close-on-exec.
void Pair(Fd* a, Fd* b) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
  a->fd = sv[0];
  b->fd = sv[1];
}

// A listening unix socket at `path` with a backlog of `backlog`.
int Listen(const std::string& path, int backlog) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  EXPECT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::listen(fd, backlog), 0);
  return fd;
}

TEST(UnixSocketTest, PollTimeoutMs) {
  EXPECT_EQ(PollTimeoutMs(kNoDeadline), -1);
  EXPECT_EQ(PollTimeoutMs(Clock::now() - milliseconds(1)), 0);
  // Rounded up: 10.5 ms left waits 11 ms (10 if the test was descheduled).
  int up = PollTimeoutMs(Clock::now() + std::chrono::microseconds(10500));
  EXPECT_GE(up, 10);
  EXPECT_LE(up, 11);
  int ms = PollTimeoutMs(Clock::now() + milliseconds(500));
  EXPECT_GT(ms, 400);
  EXPECT_LE(ms, 501);
  EXPECT_EQ(PollTimeoutMs(Clock::now() + std::chrono::hours(24 * 365)), 1 << 30);
}

TEST(UnixSocketTest, PathLimits) {
  EXPECT_FALSE(IsUnixSocketPath(""));
  EXPECT_TRUE(IsUnixSocketPath("/tmp/x"));
  EXPECT_TRUE(IsUnixSocketPath(std::string(sizeof(sockaddr_un{}.sun_path) - 1, 'a')));
  EXPECT_FALSE(IsUnixSocketPath(std::string(sizeof(sockaddr_un{}.sun_path), 'a')));
  EXPECT_TRUE(ConnectUnixSocket("", kNoDeadline).status().IsInvalidArgument());
}

TEST(UnixSocketTest, ConnectsNonBlockingAndCloseOnExec) {
  ShortTempDir dir;
  const std::string path = dir.Join("s");
  Fd listener(Listen(path, 4));
  auto fd = ConnectUnixSocket(path, Clock::now() + milliseconds(1000));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  Fd client(*fd);
  EXPECT_NE(::fcntl(client.fd, F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(client.fd, F_GETFD) & FD_CLOEXEC, 0);
  Fd server(::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  ASSERT_GE(server.fd, 0);

  ASSERT_EQ(*SocketSendAll(client.fd, "ping", Clock::now() + milliseconds(1000)),
            SocketEnd::kDone);
  char buf[4];
  ASSERT_EQ(*SocketRecvFull(server.fd, buf, 4, Clock::now() + milliseconds(1000)),
            SocketEnd::kDone);
  EXPECT_EQ(std::string(buf, 4), "ping");
}

TEST(UnixSocketTest, ConnectFailures) {
  ShortTempDir dir;
  // Nothing there: NotFound at once, with the path in the message.
  auto r = ConnectUnixSocket(dir.Join("absent"), Clock::now() + milliseconds(1000));
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("connect " + dir.Join("absent")), std::string::npos);

  // A socket file nobody listens on: refused at once.
  const std::string dead = dir.Join("dead");
  {
    Fd l(Listen(dead, 1));
  }
  auto start = Clock::now();
  EXPECT_FALSE(ConnectUnixSocket(dead, Clock::now() + milliseconds(5000)).ok());
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(UnixSocketTest, FullBacklogWaitsUntilTheDeadline) {
  ShortTempDir dir;
  const std::string path = dir.Join("s");
  Fd listener(Listen(path, 0));
  // Fill the backlog (never accepted) until a connect would block.
  std::vector<std::unique_ptr<Fd>> queued;
  for (int i = 0; i < 8; ++i) {
    auto fd = ConnectUnixSocket(path, Clock::now());
    if (!fd.ok()) break;
    queued.push_back(std::make_unique<Fd>(*fd));
  }
  auto start = Clock::now();
  auto r = ConnectUnixSocket(path, Clock::now() + milliseconds(200));
  ASSERT_FALSE(r.ok());
  EXPECT_GE(Clock::now() - start, milliseconds(150));
  EXPECT_LT(Clock::now() - start, milliseconds(3000));

  // A slot that comes free while it waits lets it in.
  std::thread accepter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    Fd a(::accept(listener.fd, nullptr, nullptr));
  });
  auto later = ConnectUnixSocket(path, Clock::now() + milliseconds(5000));
  accepter.join();
  EXPECT_TRUE(later.ok()) << later.status().ToString();
  if (later.ok()) ::close(*later);
}

TEST(UnixSocketTest, RecvSomeReturnsWhatArrivedAndTimesOut) {
  Fd a, b;
  Pair(&a, &b);
  char buf[64];
  size_t n = 99;
  auto start = Clock::now();
  auto end = SocketRecvSome(a.fd, buf, sizeof(buf), &n, Clock::now() + milliseconds(100));
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, SocketEnd::kTimedOut);
  EXPECT_EQ(n, 0u);
  EXPECT_GE(Clock::now() - start, milliseconds(90));

  ASSERT_EQ(::send(b.fd, "abc", 3, 0), 3);
  // Data that is there is returned even with a deadline in the past.
  end = SocketRecvSome(a.fd, buf, sizeof(buf), &n, Clock::now() - milliseconds(1));
  ASSERT_EQ(*end, SocketEnd::kDone);
  EXPECT_EQ(std::string(buf, n), "abc");

  // Bytes that arrive while it waits.
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(50));
    (void)!::send(b.fd, "later", 5, 0);
  });
  end = SocketRecvSome(a.fd, buf, sizeof(buf), &n, Clock::now() + milliseconds(5000));
  writer.join();
  ASSERT_EQ(*end, SocketEnd::kDone);
  EXPECT_EQ(std::string(buf, n), "later");

  ::close(b.fd);
  b.fd = -1;
  EXPECT_EQ(*SocketRecvSome(a.fd, buf, sizeof(buf), &n, kNoDeadline), SocketEnd::kClosed);
}

TEST(UnixSocketTest, RecvFullAssemblesAndReportsAShortRead) {
  Fd a, b;
  Pair(&a, &b);
  std::thread writer([&] {
    for (const char* piece : {"he", "ll", "o "}) {
      (void)!::send(b.fd, piece, 2, 0);
      std::this_thread::sleep_for(milliseconds(20));
    }
    (void)!::send(b.fd, "wo", 2, 0);
    ::close(b.fd);
    b.fd = -1;
  });
  char buf[6];
  ASSERT_EQ(*SocketRecvFull(a.fd, buf, 6, Clock::now() + milliseconds(5000)), SocketEnd::kDone);
  EXPECT_EQ(std::string(buf, 6), "hello ");
  size_t got = 0;
  auto end = SocketRecvFull(a.fd, buf, 6, Clock::now() + milliseconds(5000), -1, &got);
  writer.join();
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, SocketEnd::kClosed);
  EXPECT_EQ(got, 2u);  // "wo", then EOF mid-message
}

TEST(UnixSocketTest, WakeFdEndsAWait) {
  Fd a, b;
  Pair(&a, &b);
  Fd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_GE(wake.fd, 0);
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(50));
    uint64_t one = 1;
    (void)!::write(wake.fd, &one, sizeof(one));
  });
  char buf[8];
  auto start = Clock::now();
  auto end = SocketRecvFull(a.fd, buf, sizeof(buf), kNoDeadline, wake.fd);
  stopper.join();
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, SocketEnd::kWoken);
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
  // Still woken: the eventfd stays readable.
  EXPECT_EQ(*SocketSendAll(a.fd, std::string(64 << 20, 'x'), kNoDeadline, wake.fd),
            SocketEnd::kWoken);
}

TEST(UnixSocketTest, SendAllWaitsForRoomAndTimesOut) {
  Fd a, b;
  Pair(&a, &b);
  // Far more than the socket buffers hold: a reader drains it meanwhile.
  const std::string big(8 << 20, 'z');
  std::thread reader([&] {
    std::string got;
    char buf[65536];
    while (got.size() < big.size()) {
      size_t n = 0;
      auto end = SocketRecvSome(b.fd, buf, sizeof(buf), &n, Clock::now() + milliseconds(10000));
      if (!end.ok() || *end != SocketEnd::kDone) break;
      got.append(buf, n);
    }
    EXPECT_EQ(got.size(), big.size());
  });
  size_t sent = 0;
  auto end = SocketSendAll(a.fd, big, Clock::now() + milliseconds(10000), -1, &sent);
  reader.join();
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, SocketEnd::kDone);
  EXPECT_EQ(sent, big.size());

  // Nobody reads: the buffers fill, then the deadline passes.
  end = SocketSendAll(a.fd, big, Clock::now() + milliseconds(100), -1, &sent);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, SocketEnd::kTimedOut);
  EXPECT_GT(sent, 0u);
  EXPECT_LT(sent, big.size());

  // The peer is gone: EPIPE, not SIGPIPE.
  ::close(b.fd);
  b.fd = -1;
  auto broken = SocketSendAll(a.fd, "x", kNoDeadline);
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(broken.status().IsIOError()) << broken.status().ToString();
  EXPECT_NE(broken.status().message().find("send"), std::string::npos);
}

}  // namespace
}  // namespace cairn::client
