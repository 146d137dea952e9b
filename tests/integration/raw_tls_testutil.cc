#include "tests/integration/raw_tls_testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>

namespace cairn::testing {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int TcpConnect(int port) {
  // Writing to a connection the server closed must fail, not kill the test.
  std::signal(SIGPIPE, SIG_IGN);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

bool PeerClosed(int fd, int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  char buf[4096];
  for (;;) {
    int64_t left = deadline - NowMs();
    if (left < 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r == 0) return false;
    if (r < 0) return errno != EINTR;
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return true;
  }
}

std::unique_ptr<RawTls> RawTls::Connect(int port, int timeout_ms) {
  std::unique_ptr<RawTls> t(new RawTls);
  t->fd_ = TcpConnect(port);
  if (t->fd_ < 0) return nullptr;
  ::fcntl(t->fd_, F_SETFL, ::fcntl(t->fd_, F_GETFL) | O_NONBLOCK);
  t->ctx_ = SSL_CTX_new(TLS_client_method());
  t->ssl_ = SSL_new(t->ctx_);
  SSL_set_fd(t->ssl_, t->fd_);
  SSL_set_connect_state(t->ssl_);
  const int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl_);
    if (r == 1) return t;
    int e = SSL_get_error(t->ssl_, r);
    if (e == SSL_ERROR_WANT_READ) {
      if (!t->WaitFor(POLLIN, deadline)) return nullptr;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      if (!t->WaitFor(POLLOUT, deadline)) return nullptr;
    } else {
      return nullptr;
    }
  }
}

RawTls::~RawTls() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
  if (fd_ >= 0) ::close(fd_);
}

bool RawTls::WaitFor(short events, int64_t deadline_ms) {
  int64_t left = deadline_ms - NowMs();
  if (left <= 0) return false;
  pollfd p{fd_, events, 0};
  return ::poll(&p, 1, static_cast<int>(left)) > 0;
}

bool RawTls::Send(std::string_view data) {
  const int64_t deadline = NowMs() + 10'000;
  while (!data.empty()) {
    ERR_clear_error();
    int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_WRITE) {
      if (!WaitFor(POLLOUT, deadline)) return false;
    } else if (e == SSL_ERROR_WANT_READ) {
      if (!WaitFor(POLLIN, deadline)) return false;
    } else {
      return false;
    }
  }
  return true;
}

std::string RawTls::ReadAnswer(int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  std::string got;
  char buf[16384];
  for (;;) {
    size_t head_end = got.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      std::string lower = got.substr(0, head_end);
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t cl = lower.find("content-length:");
      if (cl == std::string::npos) return got;
      size_t len = std::strtoul(lower.c_str() + cl + 15, nullptr, 10);
      if (got.size() >= head_end + 4 + len) return got;
    }
    ERR_clear_error();
    int n = SSL_read(ssl_, buf, sizeof(buf));
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ) {
      if (!WaitFor(POLLIN, deadline)) return got;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      if (!WaitFor(POLLOUT, deadline)) return got;
    } else {
      return got;
    }
  }
}

int StatusOf(const std::string& answer) {
  if (answer.compare(0, 5, "HTTP/") != 0) return 0;
  size_t sp = answer.find(' ');
  if (sp == std::string::npos) return 0;
  return std::atoi(answer.c_str() + sp + 1);
}

int64_t ProcessKib(int pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.compare(0, prefix.size(), prefix) == 0) {
      return std::strtoll(line.c_str() + prefix.size(), nullptr, 10);
    }
  }
  return -1;
}

}  // namespace cairn::testing
