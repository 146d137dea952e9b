#pragma once

// Raw connections to the real server for requests no well-behaved client
// sends: malformed heads, stalled handshakes, bodies that never end. Every
// wait is bounded by the timeout given.

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace cairn::testing {

// A TCP connection to 127.0.0.1:port, nothing sent; -1 on failure.
int TcpConnect(int port);

// True when the peer has closed `fd` (EOF or reset) within `timeout_ms`;
// data that arrives first is read and dropped.
bool PeerClosed(int fd, int timeout_ms);

class RawTls {
 public:
  // TCP connect and TLS handshake (no certificate check: the tests' own
  // self-signed server). Null on failure.
  static std::unique_ptr<RawTls> Connect(int port, int timeout_ms = 5000);
  ~RawTls();

  // Writes all of `data`; false when the connection failed.
  bool Send(std::string_view data);
  // Reads one answer: its head and, when it has Content-Length, its body.
  // Returns what arrived before the peer closed or `timeout_ms` passed.
  std::string ReadAnswer(int timeout_ms);
  int fd() const { return fd_; }

 private:
  RawTls() = default;
  bool WaitFor(short events, int64_t deadline_ms);
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

// The status code of an answer ("HTTP/1.1 413 ..." -> 413), 0 when there is none.
int StatusOf(const std::string& answer);

// The server process's VmHWM (peak RSS) and VmRSS in KiB from /proc.
int64_t ProcessKib(int pid, const char* field);

}  // namespace cairn::testing
