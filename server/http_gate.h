#pragma once

// The connection gate: cairn-server's front door.
//
// cpp-httplib serves a connection on one worker thread with blocking reads,
// so a client that stalls in the TLS handshake, in its request headers or in
// a body holds a worker for as long as its read timeout allows, and 16 such
// clients make the server unreachable; it also reads a body (and inflates a
// gzip one) before any handler can refuse it. The gate keeps every
// connection that is not serving an admitted request in one event loop
// (epoll, non-blocking OpenSSL), where a stalled connection costs a few KiB
// and no thread. It does the handshake, reads a request head, checks its
// framing (Content-Length, Transfer-Encoding, Content-Encoding) and asks the
// server's admission function (authentication, body limit of the endpoint).
// Only an admitted request reaches a worker, which runs httplib's request
// processing (routing, handlers, the answer) on the already-open TLS
// connection; after the answer the connection goes back to the loop to wait
// for its next request. Refusals (400, 401, 413, 415, 431, 503) are written by
// the loop itself, without reading the body.
//
// Bounds (all in GateLimits, documented in server/API.md "Limits"): time for
// the handshake, for a request head, for a keep-alive connection to start its
// next request, and for each step of body or answer progress; connections in
// total and per client address. An address with too many connections that
// have not had a request admitted loses its oldest one: a flood from one
// address cannot lock out a client that authenticates from the same address.
// A worker blocks while its request's body or answer moves, so workers are
// shared out: one user holds at most max_workers_per_user of them, and
// requests without a user at most a few per address and in all; a request
// over its share waits in the gate (no thread, no deadline) for one of its
// own kind to end. A client that stalls can then only delay itself.
//
// Thread safety: Start/Stop from one thread; counts() from any thread.

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/tls.h"
#include "storage/status.h"

namespace cairn::server {

struct GateLimits {
  int workers = 16;                      // threads serving admitted requests
  int handshake_timeout_ms = 10'000;     // accept -> TLS handshake done
  int header_timeout_ms = 10'000;        // first byte of a request -> end of its head
  int idle_timeout_ms = 30'000;          // keep-alive: answer sent -> next request starts
  int io_timeout_ms = 60'000;            // longest wait for body bytes or for the peer to take answer bytes
  int max_connections = 4096;            // open connections in total
  int max_unadmitted_per_address = 512;  // connections that never had a request admitted
  int max_admitted_per_address = 512;    // connections that did
  // Workers one user may hold at once (all their tokens and web sessions
  // together); 0: half the workers. A request over it waits for one of that
  // user's requests to end, so a client that stalls its bodies or answers
  // delays only itself.
  int max_workers_per_user = 0;
  // Workers that requests without a user (login, the static web UI, the
  // version) may hold: per client address (0: an eighth of the workers, at
  // least 1) and in all (0: a quarter, at least 1).
  int max_anonymous_workers_per_address = 0;
  int max_anonymous_workers = 0;
  size_t max_head_bytes = 16 * 1024;     // request line and headers
  int max_headers = 100;
};

// The head of a request as the gate read it. Header names keep their case;
// Find() compares without it.
struct RequestHead {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // target up to '?'
  std::string version;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string remote_addr;

  // The first header called `name` (any case), or null.
  const std::string* Find(std::string_view name) const;
};

// The server's answer to a request head: admitted with a body limit, or
// refused with a status and a message (sent as {"error","code"} JSON).
// An anonymous admission (a request anybody may make: the static UI, the
// login) serves the request but does not make a stranger's connection an
// admitted one: such a connection is closed after its answer, so strangers
// cannot park idle connections where only authenticated clients may.
// `user` names whose share of the workers the request uses; empty: the
// share of requests without a user, per client address.
struct Admission {
  int status = 0;  // 0: admitted
  std::string message;
  std::string code;
  uint64_t body_limit = 0;
  bool anonymous = false;
  std::string user;

  static Admission Admit(uint64_t body_limit, std::string user) {
    return {0, "", "", body_limit, false, std::move(user)};
  }
  static Admission AdmitAnonymous(uint64_t body_limit) { return {0, "", "", body_limit, true, ""}; }
  static Admission Refuse(int status, std::string message, std::string code) {
    return {status, std::move(message), std::move(code), 0, false, ""};
  }
};
using AdmitFn = std::function<Admission(const RequestHead&)>;

// What the gate holds now, and what it has done since it started.
struct GateCounts {
  int64_t open = 0;        // every connection the gate holds
  int64_t handshake = 0;   // in the TLS handshake
  int64_t unadmitted = 0;  // handshake or head, never had a request admitted
  int64_t idle = 0;        // admitted before, waiting for the next request
  int64_t active = 0;      // a worker serves a request on it (or it waits for one)
  int64_t queued = 0;      // of those: waiting because its user's (or address's) share is in use
  uint64_t accepted = 0;
  uint64_t refused = 0;    // requests answered by the gate (4xx/503)
  uint64_t timed_out = 0;  // closed for a handshake, head or idle timeout
  uint64_t evicted = 0;    // closed to make room (per address or in total)
};

// httplib's request processing, run by the gate's workers on one request.
class HttpCore : public httplib::Server {
 public:
  ~HttpCore() override;
  // Reads one request from `stream`, routes it and writes the answer
  // (saying "Connection: close" when `close` is set). False when the
  // connection must be closed.
  bool ServeOne(httplib::Stream& stream, bool close, bool* connection_closed);
  // Lets answers with a content provider (streamed bodies) be written.
  // httplib writes such a body only while its server "runs", i.e. while it
  // holds a listening socket (Server::write_content_with_provider checks it
  // between writes); the core never listens — the gate accepts. So this binds
  // a loopback socket and shuts it down at once: httplib sees a socket,
  // nothing can connect to it. Without it a streamed body is never written.
  Status EnableStreaming();

 private:
  int stream_guard_fd_ = -1;
};

class HttpGate {
 public:
  // `core` (routes registered, outlives the gate) serves admitted requests;
  // `admit` is called on the loop thread and must not block for long.
  static Result<std::unique_ptr<HttpGate>> Create(const TlsPaths& tls, GateLimits limits,
                                                  HttpCore* core, AdmitFn admit);
  ~HttpGate();

  // Binds host:port (0: any free port); returns the bound port.
  Result<int> Bind(const std::string& host, int port);
  // Headers added to every answer the gate writes itself (its refusals).
  // REQUIRES: before Start.
  void SetAnswerHeaders(std::vector<std::pair<std::string, std::string>> headers);
  // Starts the loop and the workers. REQUIRES: Bind succeeded.
  void Start();
  // Closes the listener and every connection; returns when all threads are done.
  void Stop();

  GateCounts counts() const;
  // Loads the certificate and key again (SIGHUP): new connections get them,
  // open ones keep the old. On failure nothing changes.
  Status ReloadCertificate(const TlsPaths& tls);

  // The error handler the core should use: JSON errors, and 413 for a chunked
  // body that outgrew its endpoint's limit (a worker's read fails then).
  static void InstallErrorHandler(HttpCore* core);

  class Impl;

 private:
  explicit HttpGate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::server
