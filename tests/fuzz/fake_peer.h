#pragma once

// A peer on a unix socket for the stream fuzzers (QMP, qemu-ga): it serves
// one connection per Serve() from a helper thread, sends the fuzz input (made
// by `reply` from the client's first bytes when `read_first`), closes its
// sending side and reads until the client hangs up. The client under test
// then sees exactly the input followed by end of stream, as from a real but
// hostile QEMU or guest agent.

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

class FakePeer {
 public:
  explicit FakePeer(const char* name) {
    signal(SIGPIPE, SIG_IGN);
    path_ = "/tmp/cairn-fuzz-" + std::string(name) + "-" + std::to_string(getpid()) + ".sock";
    unlink(path_.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(listen_fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    FUZZ_CHECK(path_.size() < sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    FUZZ_CHECK(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    FUZZ_CHECK(listen(listen_fd_, 4) == 0);
  }
  ~FakePeer() {
    close(listen_fd_);
    unlink(path_.c_str());
  }
  FakePeer(const FakePeer&) = delete;
  FakePeer& operator=(const FakePeer&) = delete;

  const std::string& path() const { return path_; }

  // Runs `client` (which connects to path() once) against the peer.
  void Serve(bool read_first, const std::function<std::string(const std::string&)>& reply,
             const std::function<void()>& client) {
    std::thread peer([&] {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::string first;
      if (read_first) {
        char buf[4096];
        while (first.find('\n') == std::string::npos && Wait(fd)) {
          const ssize_t n = recv(fd, buf, sizeof(buf), 0);
          if (n <= 0) break;
          first.append(buf, static_cast<size_t>(n));
        }
      }
      const std::string out = reply(first);
      for (size_t off = 0; off < out.size();) {
        const ssize_t n = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      shutdown(fd, SHUT_WR);
      char buf[4096];
      while (Wait(fd) && recv(fd, buf, sizeof(buf), 0) > 0) {
      }
      close(fd);
    });
    client();
    peer.join();
  }

 private:
  // Readable within 5 s (the client always connects and ends promptly: it
  // sees end of stream after the input).
  static bool Wait(int fd) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 5000) > 0;
  }

  std::string path_;
  int listen_fd_ = -1;
};

}  // namespace cairn::fuzz
