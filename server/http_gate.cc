#include "server/http_gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "storage/mutex.h"

namespace cairn::server {

HttpCore::~HttpCore() {
  if (stream_guard_fd_ >= 0) ::close(stream_guard_fd_);
}

Status HttpCore::EnableStreaming() {
  int fd = -1;
  set_socket_options([&fd](socket_t sock) { fd = sock; });
  const int port = bind_to_any_port("127.0.0.1");
  set_socket_options([](socket_t) {});
  if (port < 0 || fd < 0) return Status::IOError("cannot bind the core's guard socket");
  ::shutdown(fd, SHUT_RDWR);  // stops listening: connections are refused
  stream_guard_fd_ = fd;
  return Status::OK();
}

bool HttpCore::ServeOne(httplib::Stream& stream, bool close, bool* connection_closed) {
  bool closed = false;
  bool ok = process_request(stream, close, closed,
                            [](httplib::Request&) {});
  *connection_closed = closed;
  return ok;
}

const std::string* RequestHead::Find(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k.size() == name.size() &&
        std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return &v;
    }
  }
  return nullptr;
}

namespace {

using Clock = std::chrono::steady_clock;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsTokenChar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

const char* Reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// Why a head cannot be served: a status and a message; status 0 = fine.
struct Verdict {
  int status = 0;
  std::string message;
};

// Parses the head in buf[0, head_len) (it ends with CRLFCRLF).
Verdict ParseHead(std::string_view text, const GateLimits& limits, RequestHead* head) {
  const Verdict bad{400, "malformed request head"};
  size_t eol = text.find("\r\n");
  std::string_view line = text.substr(0, eol);
  // request-line = method SP request-target SP HTTP-version
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return bad;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return bad;
  head->method = std::string(line.substr(0, sp1));
  head->target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  head->version = std::string(line.substr(sp2 + 1));
  for (char c : head->method) {
    if (!IsTokenChar(c)) return bad;
  }
  if (head->target.empty() || head->target[0] != '/') return bad;
  for (char c : head->target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return bad;
  }
  if (head->version != "HTTP/1.1" && head->version != "HTTP/1.0") {
    return {400, "only HTTP/1.1 and HTTP/1.0 are served"};
  }
  head->path = head->target.substr(0, head->target.find('?'));
  size_t pos = eol + 2;
  while (pos < text.size()) {
    size_t end = text.find("\r\n", pos);
    if (end == std::string_view::npos) return bad;
    if (end == pos) break;  // the empty line
    std::string_view h = text.substr(pos, end - pos);
    pos = end + 2;
    if (h.front() == ' ' || h.front() == '\t') return {400, "folded header lines are refused"};
    size_t colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad;
    std::string_view name = h.substr(0, colon);
    for (char c : name) {
      if (!IsTokenChar(c)) return bad;
    }
    std::string_view value = Trim(h.substr(colon + 1));
    for (char c : value) {
      auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return bad;
    }
    if (static_cast<int>(head->headers.size()) >= limits.max_headers) {
      return {431, "more than " + std::to_string(limits.max_headers) + " header fields"};
    }
    head->headers.emplace_back(std::string(name), std::string(value));
  }
  return {};
}

// The framing of the body: Content-Length, chunked, or none. Anything
// ambiguous is refused (request smuggling lives in the ambiguity).
struct Framing {
  bool chunked = false;
  uint64_t length = 0;  // when !chunked
};

Verdict CheckFraming(const RequestHead& head, Framing* framing) {
  std::optional<std::string> length_text;
  int te_count = 0;
  std::string te;
  for (const auto& [k, v] : head.headers) {
    std::string name = Lower(k);
    if (name == "content-length") {
      if (length_text && *length_text != v) return {400, "conflicting Content-Length headers"};
      length_text = v;
    } else if (name == "transfer-encoding") {
      ++te_count;
      te = Lower(v);
    } else if (name == "content-encoding") {
      if (Lower(v) != "identity") {
        return {415, "Content-Encoding on requests is not accepted (send the body as it is)"};
      }
    }
  }
  if (te_count > 0) {
    if (te_count > 1 || te != "chunked") {
      return {400, "the only Transfer-Encoding accepted is chunked"};
    }
    if (length_text) return {400, "Content-Length and Transfer-Encoding together"};
    if (head.version == "HTTP/1.0") return {400, "Transfer-Encoding in HTTP/1.0"};
    framing->chunked = true;
    return {};
  }
  if (length_text) {
    const std::string& s = *length_text;
    if (s.empty() || s.size() > 18 ||
        !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return {400, "Content-Length must be a decimal number"};
    }
    framing->length = std::stoull(s);
  }
  return {};
}

std::string ErrorJson(const std::string& message, const std::string& code) {
  return nlohmann::json{{"error", message}, {"code", code}}.dump();
}

// kQueued: admitted, waiting for its share of the workers (not watched, no
// deadline); kWorker: a worker has it or will take it next.
enum class Phase { kHandshake, kHead, kQueued, kWorker, kClosing, kDraining };

// After a refusal the loop reads and discards what the peer still sends (a
// lingering close; raw bytes, neither decrypted nor kept), up to: 1 MiB in
// general, the declared body up to a chunk's size (17 MiB), and up to 64 MiB
// of an authenticated request's oversized body.
constexpr uint64_t kDrainBytes = 1 << 20;
constexpr uint64_t kDrainBodyBytes = uint64_t{17} << 20;
constexpr uint64_t kMaxDrainBytes = uint64_t{64} << 20;

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  std::string addr;
  int port = 0;
  uint64_t seq = 0;
  Phase phase = Phase::kHandshake;
  bool admitted = false;     // had a request admitted at least once
  bool idle = false;         // admitted; waiting for the first byte of the next request
  int64_t deadline_ms = 0;
  uint32_t events = 0;       // current epoll interest (0: not registered)
  std::string in;            // bytes read and not consumed yet
  std::string out;           // a refusal still to be written
  uint64_t drained = 0;      // bytes discarded after a refusal
  uint64_t drain_limit = 0;
  // Set for the worker: the head's length and the body budget.
  size_t head_len = 0;
  uint64_t body_limit = 0;   // the endpoint's limit on the (decoded) body
  uint64_t body_budget = 0;  // bytes after the head (chunked: framing included)
  bool chunked = false;
  bool close_after = false;  // set by the worker: do not keep alive
  bool stranger = false;     // served an anonymous admission without ever being admitted
  // Whose share of the workers the current request uses: "u:" + user, or
  // "a:" + address for a request without a user (anonymous_share).
  std::string share;
  bool anonymous_share = false;
};

// Thread-local per request, for the error handler: why the worker's body
// read failed (0: it did not; 400 malformed chunked framing; 413 over the
// endpoint's limit) and that limit.
thread_local int t_body_error = 0;
thread_local uint64_t t_body_limit = 0;

// Follows chunked framing (RFC 9112 7.1) over the body bytes as httplib
// reads them, so that a malformed or oversized chunk-size line fails the
// request at once instead of leaving httplib waiting for a body that will
// never come (strtoul reads "-5" as 2^64-5).
class ChunkedCheck {
 public:
  explicit ChunkedCheck(uint64_t limit) : limit_(limit) {}

  // 0 while the bytes are well-formed, else 400 or 413.
  int Feed(const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const char c = p[i];
      switch (state_) {
        case State::kSize: {
          int d = Hex(c);
          if (d >= 0) {
            if (++digits_ > 16) return 400;
            size_ = size_ * 16 + static_cast<uint64_t>(d);
            if (total_ + size_ > limit_) return 413;
          } else if (digits_ > 0 && c == ';') {
            state_ = State::kExt;
          } else if (digits_ > 0 && c == '\r') {
            state_ = State::kSizeLf;
          } else {
            return 400;
          }
          break;
        }
        case State::kExt:
          if (c == '\r') {
            state_ = State::kSizeLf;
          } else if (++ext_ > 256) {
            return 400;
          }
          break;
        case State::kSizeLf:
          if (c != '\n') return 400;
          total_ += size_;
          state_ = size_ == 0 ? State::kTrailer : State::kData;
          line_ = 0;
          break;
        case State::kData: {
          uint64_t take = std::min<uint64_t>(size_, n - i);
          size_ -= take;
          i += static_cast<size_t>(take) - 1;
          if (size_ == 0) state_ = State::kDataCr;
          break;
        }
        case State::kDataCr:
          if (c != '\r') return 400;
          state_ = State::kDataLf;
          break;
        case State::kDataLf:
          if (c != '\n') return 400;
          state_ = State::kSize;
          size_ = 0;
          digits_ = 0;
          ext_ = 0;
          break;
        case State::kTrailer:
          // Trailer lines end with an empty line.
          if (c == '\n') {
            if (line_ == 0) state_ = State::kDone;
            line_ = 0;
          } else if (c != '\r') {
            ++line_;
          }
          if (++trailer_ > 8192) return 400;
          break;
        case State::kDone:
          break;
      }
    }
    return 0;
  }

 private:
  enum class State { kSize, kExt, kSizeLf, kData, kDataCr, kDataLf, kTrailer, kDone };
  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  const uint64_t limit_;
  State state_ = State::kSize;
  uint64_t size_ = 0;
  uint64_t total_ = 0;
  int digits_ = 0;
  int ext_ = 0;
  size_t line_ = 0;
  size_t trailer_ = 0;
};

}  // namespace

class HttpGate::Impl {
 public:
  Impl(GateLimits limits, HttpCore* core, AdmitFn admit)
      : limits_(limits),
        core_(core),
        admit_(std::move(admit)),
        user_cap_(Share(limits.max_workers_per_user, limits.workers, 2)),
        address_cap_(Share(limits.max_anonymous_workers_per_address, limits.workers, 8)),
        anonymous_cap_(Share(limits.max_anonymous_workers, limits.workers, 4)) {}

  ~Impl() {
    {
      MutexLock lock(&ctx_mu_);
      if (ctx_) SSL_CTX_free(ctx_);
    }
    for (int fd : {listen_fd_, epoll_fd_, wake_fd_, stop_fd_}) {
      if (fd >= 0) ::close(fd);
    }
  }

  void SetAnswerHeaders(std::string lines) { answer_headers_ = std::move(lines); }

  // A TLS context with the certificate (chain) and key of `tls`.
  static Result<SSL_CTX*> NewContext(const TlsPaths& tls) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return Status::IOError("cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Clients do not resume sessions; tickets would be work and memory for nothing.
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, tls.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      SSL_CTX_free(ctx);
      return Status::IOError("cannot load the TLS certificate " + tls.cert + " or key " +
                             tls.key);
    }
    return ctx;
  }

  // New connections use the new context; open ones keep theirs (an SSL
  // holds a reference to its context).
  Status ReloadCertificate(const TlsPaths& tls) {
    CAIRN_ASSIGN_OR_RETURN(SSL_CTX * fresh, NewContext(tls));
    SSL_CTX* old;
    {
      MutexLock lock(&ctx_mu_);
      old = ctx_;
      ctx_ = fresh;
    }
    if (old) SSL_CTX_free(old);
    return Status::OK();
  }

  Status Init(const TlsPaths& tls) {
    CAIRN_ASSIGN_OR_RETURN(SSL_CTX * ctx, NewContext(tls));
    {
      MutexLock lock(&ctx_mu_);
      ctx_ = ctx;
    }
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0 || stop_fd_ < 0) return Status::IOError("epoll/eventfd failed");
    return Status::OK();
  }

  Result<int> Bind(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0 || !res) {
      return Status::IOError("cannot resolve " + host);
    }
    int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = fd >= 0 && ::bind(fd, res->ai_addr, res->ai_addrlen) == 0 &&
              ::listen(fd, SOMAXCONN) == 0;
    ::freeaddrinfo(res);
    if (!ok) {
      if (fd >= 0) ::close(fd);
      return Status::IOError("cannot listen on " + host + ":" + std::to_string(port));
    }
    listen_fd_ = fd;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }

  void Start() {
    Watch(listen_fd_, EPOLLIN, nullptr);
    Watch(wake_fd_, EPOLLIN, nullptr);
    loop_ = std::thread([this] { Loop(); });
    for (int i = 0; i < limits_.workers; ++i) workers_.emplace_back([this] { Work(); });
  }

  void Stop() {
    if (stopping_.exchange(true)) return;
    uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof(one));
    (void)!::write(wake_fd_, &one, sizeof(one));
    {
      MutexLock lock(&queue_mu_);
      for (Worker* w : idle_workers_) w->cv.Signal();
    }
    if (loop_.joinable()) loop_.join();
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    // Connections handed back after the loop ended.
    MutexLock lock(&queue_mu_);
    for (Conn* c : returned_) FreeConn(c);
    returned_.clear();
    for (Conn* c : ready_) FreeConn(c);
    ready_.clear();
  }

  GateCounts counts() const {
    GateCounts c;
    c.open = open_.load();
    c.handshake = handshake_.load();
    c.unadmitted = unadmitted_.load();
    c.idle = idle_.load();
    c.active = active_.load();
    c.queued = queued_.load();
    c.accepted = accepted_.load();
    c.refused = refused_.load();
    c.timed_out = timed_out_.load();
    c.evicted = evicted_.load();
    return c;
  }

 private:
  // --- the event loop (one thread: every member below up to the worker
  // section is touched by it only) ---

  void Watch(int fd, uint32_t events, Conn* c) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = c ? static_cast<void*>(c) : reinterpret_cast<void*>(static_cast<intptr_t>(fd) + 1);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }

  void Interest(Conn* c, uint32_t events) {
    if (c->events == events) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = c;
    ::epoll_ctl(epoll_fd_, c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
  }

  void Unwatch(Conn* c) {
    if (c->events != 0) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
    c->events = 0;
  }

  void Loop() {
    std::vector<epoll_event> events(256);
    int64_t last_sweep = NowMs();
    while (!stopping_.load()) {
      int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 100);
      for (int i = 0; i < n; ++i) {
        void* p = events[i].data.ptr;
        if (p == reinterpret_cast<void*>(static_cast<intptr_t>(listen_fd_) + 1)) {
          AcceptAll();
        } else if (p == reinterpret_cast<void*>(static_cast<intptr_t>(wake_fd_) + 1)) {
          uint64_t v;
          (void)!::read(wake_fd_, &v, sizeof(v));
          TakeReturned();
        } else {
          Conn* c = static_cast<Conn*>(p);
          if (conns_.count(c)) Step(c);
        }
      }
      int64_t now = NowMs();
      if (now - last_sweep >= 100) {
        last_sweep = now;
        Sweep(now);
      }
    }
    // Connections a worker holds are freed by the worker (or by Stop()).
    for (Conn* c : std::vector<Conn*>(conns_.begin(), conns_.end())) {
      if (c->phase != Phase::kWorker) Close(c);
    }
  }

  void AcceptAll() {
    for (;;) {
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
          // Out of descriptors: make room by dropping the oldest stranger.
          if (!EvictOldest("")) return;
          continue;
        }
        return;  // EAGAIN
      }
      char host[INET6_ADDRSTRLEN] = "";
      int port = 0;
      if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
      } else if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
      }
      AddConnection(fd, host, port);
    }
  }

  void AddConnection(int fd, const std::string& addr, int port) {
    if (open_.load() >= limits_.max_connections && !EvictOldest("")) {
      ::close(fd);
      evicted_.fetch_add(1);
      return;
    }
    auto& per = per_address_[addr];
    if (static_cast<int>(per.unadmitted.size()) >= limits_.max_unadmitted_per_address) {
      EvictOldest(addr);
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto* c = new Conn;
    c->fd = fd;
    c->addr = addr;
    c->port = port;
    c->seq = ++seq_;
    {
      MutexLock lock(&ctx_mu_);
      c->ssl = SSL_new(ctx_);
    }
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    c->phase = Phase::kHandshake;
    c->deadline_ms = NowMs() + limits_.handshake_timeout_ms;
    conns_.insert(c);
    by_seq_[c->seq] = c;
    per_address_[addr].unadmitted.insert(c->seq);
    open_.fetch_add(1);
    handshake_.fetch_add(1);
    unadmitted_.fetch_add(1);
    accepted_.fetch_add(1);
    Interest(c, EPOLLIN);
    Step(c);
  }

  // Closes the oldest connection that never had a request admitted, from
  // `addr` (or from anywhere when empty). False when there is none.
  bool EvictOldest(const std::string& addr) {
    uint64_t seq = 0;
    if (addr.empty()) {
      for (const auto& [s, c] : by_seq_) {
        if (!c->admitted) {
          seq = s;
          break;
        }
      }
    } else {
      auto it = per_address_.find(addr);
      if (it != per_address_.end() && !it->second.unadmitted.empty()) {
        seq = *it->second.unadmitted.begin();
      }
    }
    if (seq == 0) return false;
    evicted_.fetch_add(1);
    Close(by_seq_[seq]);
    return true;
  }

  void Close(Conn* c) {
    Unwatch(c);
    if (c->phase == Phase::kHandshake) handshake_.fetch_sub(1);
    if (c->idle) idle_.fetch_sub(1);
    auto pit = per_address_.find(c->addr);
    if (pit != per_address_.end()) {
      if (c->admitted) {
        --pit->second.admitted;
      } else {
        pit->second.unadmitted.erase(c->seq);
        unadmitted_.fetch_sub(1);
      }
      if (pit->second.admitted == 0 && pit->second.unadmitted.empty()) per_address_.erase(pit);
    }
    conns_.erase(c);
    by_seq_.erase(c->seq);
    open_.fetch_sub(1);
    FreeConn(c);
  }

  static void FreeConn(Conn* c) {
    if (c->ssl) SSL_free(c->ssl);
    if (c->fd >= 0) ::close(c->fd);
    delete c;
  }

  void Sweep(int64_t now) {
    std::vector<Conn*> late;
    for (Conn* c : conns_) {
      if (c->phase != Phase::kWorker && c->phase != Phase::kQueued && now >= c->deadline_ms) {
        late.push_back(c);
      }
    }
    for (Conn* c : late) {
      if (c->phase == Phase::kHandshake || c->phase == Phase::kHead) timed_out_.fetch_add(1);
      Close(c);
    }
  }

  // Advances a connection as far as it can go without blocking.
  void Step(Conn* c) {
    switch (c->phase) {
      case Phase::kHandshake: {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_READ) return Interest(c, EPOLLIN);
          if (e == SSL_ERROR_WANT_WRITE) return Interest(c, EPOLLOUT);
          return Close(c);
        }
        handshake_.fetch_sub(1);
        c->phase = Phase::kHead;
        c->deadline_ms = NowMs() + limits_.header_timeout_ms;
        return ReadHead(c);
      }
      case Phase::kHead:
        return ReadHead(c);
      case Phase::kClosing:
        return WriteRefusal(c);
      case Phase::kDraining:
        return Drain(c);
      case Phase::kQueued:
      case Phase::kWorker:
        return;
    }
  }

  void ReadHead(Conn* c) {
    char buf[16 * 1024];
    for (;;) {
      size_t end = c->in.find("\r\n\r\n");
      if (end != std::string::npos) return Dispatch(c, end + 4);
      if (c->in.size() > limits_.max_head_bytes) {
        return Refuse(c, 431, "request head larger than " + std::to_string(limits_.max_head_bytes) +
                                  " bytes", "Http");
      }
      ERR_clear_error();
      int n = SSL_read(c->ssl, buf, sizeof(buf));
      if (n <= 0) {
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) return Interest(c, EPOLLIN);
        if (e == SSL_ERROR_WANT_WRITE) return Interest(c, EPOLLOUT);
        return Close(c);
      }
      if (c->idle) {
        // The next request has started: its head must arrive in time.
        c->idle = false;
        idle_.fetch_sub(1);
        c->deadline_ms = NowMs() + limits_.header_timeout_ms;
      }
      c->in.append(buf, static_cast<size_t>(n));
    }
  }

  void Dispatch(Conn* c, size_t head_len) {
    if (head_len > limits_.max_head_bytes) {
      return Refuse(c, 431, "request head larger than " + std::to_string(limits_.max_head_bytes) +
                                " bytes", "Http");
    }
    RequestHead head;
    head.remote_addr = c->addr;
    Verdict v = ParseHead(std::string_view(c->in).substr(0, head_len), limits_, &head);
    Framing framing;
    if (v.status == 0) v = CheckFraming(head, &framing);
    if (v.status != 0) return Refuse(c, v.status, v.message, "Http");
    // A client that sends a (chunk-sized) body before it reads the answer
    // gets the refusal rather than a reset.
    const uint64_t drain =
        framing.chunked ? kDrainBytes : std::min(framing.length + 64 * 1024, kDrainBodyBytes);
    Admission a;
    try {
      a = admit_(head);
    } catch (const std::exception& e) {
      spdlog::error("admission of {} {}: {}", head.method, head.path, e.what());
      a = Admission::Refuse(500, "internal error; see the server log", "Internal");
    }
    if (a.status != 0) return Refuse(c, a.status, a.message, a.code, std::max(drain, kDrainBytes));
    if (!framing.chunked && framing.length > a.body_limit) {
      // An authenticated client that sends the body before it reads the
      // answer would see a reset instead of the 413: the loop discards (not
      // decrypts, not stores) up to kMaxDrainBytes of it.
      return Refuse(c, 413, "request body of " + std::to_string(framing.length) +
                                " bytes exceeds this endpoint's limit of " +
                                std::to_string(a.body_limit), "Http",
                    std::min<uint64_t>(framing.length + 64 * 1024, kMaxDrainBytes));
    }
    // A stranger's anonymous request is served on a connection closed after
    // it (c->stranger); it still counts as admitted while a worker has it,
    // so eviction never closes it under the worker.
    c->stranger = a.anonymous && !c->admitted;
    if (!c->admitted) {
      auto& per = per_address_[c->addr];
      if (per.admitted >= limits_.max_admitted_per_address) {
        return Refuse(c, 503, "too many connections from " + c->addr, "Busy");
      }
      per.unadmitted.erase(c->seq);
      ++per.admitted;
      unadmitted_.fetch_sub(1);
      c->admitted = true;
    }
    c->head_len = head_len;
    c->chunked = framing.chunked;
    c->body_limit = a.body_limit;
    // A chunked body's framing counts too; an eighth on top covers any sane
    // chunk size.
    c->body_budget = framing.chunked ? a.body_limit + a.body_limit / 8 + 64 * 1024 : framing.length;
    c->anonymous_share = a.user.empty();
    c->share = c->anonymous_share ? "a:" + c->addr : "u:" + a.user;
    Unwatch(c);
    active_.fetch_add(1);
    WorkerShare& share = shares_[c->share];
    if (!HasRoom(*c, share)) {
      c->phase = Phase::kQueued;
      share.waiting.push_back(c);
      queued_.fetch_add(1);
      return;
    }
    Run(c, share);
  }

  // --- shares of the workers (loop thread only) ---

  struct WorkerShare {
    int running = 0;
    std::deque<Conn*> waiting;  // kQueued, oldest first
  };

  // `configured`, or workers / `divisor` (at least 1) when it is 0.
  static int Share(int configured, int workers, int divisor) {
    return configured > 0 ? configured : std::max(1, workers / divisor);
  }

  bool HasRoom(const Conn& c, const WorkerShare& share) const {
    if (!c.anonymous_share) return share.running < user_cap_;
    return share.running < address_cap_ && anonymous_running_ < anonymous_cap_;
  }

  // The worker's turn is over for `c`: its share may start a waiting request;
  // an anonymous slot freed may start one of any address.
  void Release(Conn* c) {
    auto it = shares_.find(c->share);
    if (it == shares_.end()) return;
    --it->second.running;
    if (c->anonymous_share) --anonymous_running_;
    StartWaiting(it->first);
    if (c->anonymous_share && anonymous_running_ < anonymous_cap_) {
      std::vector<std::string> keys;
      for (const auto& [key, share] : shares_) {
        if (!share.waiting.empty() && share.waiting.front()->anonymous_share) keys.push_back(key);
      }
      for (const auto& key : keys) StartWaiting(key);
    }
    // Shares with nothing running or waiting are dropped.
    for (auto sit = shares_.begin(); sit != shares_.end();) {
      sit = sit->second.running == 0 && sit->second.waiting.empty() ? shares_.erase(sit)
                                                                     : std::next(sit);
    }
  }

  void StartWaiting(const std::string& key) {
    auto it = shares_.find(key);
    if (it == shares_.end()) return;
    WorkerShare& share = it->second;
    while (!share.waiting.empty() && HasRoom(*share.waiting.front(), share)) {
      Conn* next = share.waiting.front();
      share.waiting.pop_front();
      queued_.fetch_sub(1);
      Run(next, share);
    }
  }

  // Hands `c` to a worker (or to the ready queue when none is free).
  void Run(Conn* c, WorkerShare& share) {
    ++share.running;
    if (c->anonymous_share) ++anonymous_running_;
    c->phase = Phase::kWorker;
    MutexLock lock(&queue_mu_);
    if (idle_workers_.empty()) {
      ready_.push_back(c);
      return;
    }
    // The worker that went idle last takes it: the threads that serve stay
    // few and warm, and so do their per-thread buffers and malloc arenas
    // (handing requests round-robin to all 16 once cost 3x the peak RSS).
    Worker* w = idle_workers_.back();
    idle_workers_.pop_back();
    w->conn = c;
    w->cv.Signal();
  }

  // Answers `status` without reading the body, then closes the connection.
  void Refuse(Conn* c, int status, const std::string& message, const std::string& code,
              uint64_t drain = kDrainBytes) {
    c->drain_limit = drain;
    refused_.fetch_add(1);
    std::string body = ErrorJson(message, code);
    c->out = "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) +
             "\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\nConnection: close\r\n";
    if (status == 401) c->out += "WWW-Authenticate: CairnToken\r\n";
    c->out += answer_headers_;
    c->out += "\r\n" + body;
    c->in.clear();
    c->phase = Phase::kClosing;
    c->deadline_ms = NowMs() + (drain > kDrainBytes ? 10'000 : 2000);
    WriteRefusal(c);
  }

  void WriteRefusal(Conn* c) {
    while (!c->out.empty()) {
      ERR_clear_error();
      int n = SSL_write(c->ssl, c->out.data(), static_cast<int>(c->out.size()));
      if (n <= 0) {
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) return Interest(c, EPOLLOUT);
        if (e == SSL_ERROR_WANT_READ) return Interest(c, EPOLLIN);
        return Close(c);
      }
      c->out.erase(0, static_cast<size_t>(n));
    }
    // Lingering close: a peer still sending its body would otherwise get a
    // reset that can destroy the answer before it reads it.
    SSL_shutdown(c->ssl);
    ::shutdown(c->fd, SHUT_WR);
    c->phase = Phase::kDraining;
    Interest(c, EPOLLIN);
    Drain(c);
  }

  void Drain(Conn* c) {
    char buf[16 * 1024];
    for (;;) {
      ssize_t n = ::recv(c->fd, buf, sizeof(buf), 0);
      if (n > 0) {
        c->drained += static_cast<size_t>(n);
        if (c->drained > c->drain_limit) return Close(c);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      return Close(c);
    }
  }

  void TakeReturned() {
    std::deque<Conn*> back;
    {
      MutexLock lock(&queue_mu_);
      back.swap(returned_);
    }
    for (Conn* c : back) {
      active_.fetch_sub(1);
      Release(c);
      if (c->close_after) {
        Close(c);
        continue;
      }
      c->close_after = false;
      c->phase = Phase::kHead;
      c->idle = c->in.empty();
      if (c->idle) idle_.fetch_add(1);
      c->deadline_ms = NowMs() + (c->idle ? limits_.idle_timeout_ms : limits_.header_timeout_ms);
      Interest(c, EPOLLIN);
      // Bytes may already wait in our buffer or inside OpenSSL, where epoll
      // cannot see them.
      Step(c);
    }
  }

  // --- workers ---

  class WorkerStream;

  struct Worker {
    CondVar cv;
    // Handed over by Dispatch; read and written under the Impl's queue_mu_.
    // Not CAIRN_GUARDED_BY: an annotation on a member of this nested struct
    // cannot name a member of the enclosing Impl object.
    Conn* conn = nullptr;
  };

  void Work() {
    Worker self;
    for (;;) {
      Conn* c = nullptr;
      {
        MutexLock lock(&queue_mu_);
        if (ready_.empty() && !stopping_.load()) {
          idle_workers_.push_back(&self);
          while (!stopping_.load() && self.conn == nullptr) self.cv.Wait(&queue_mu_);
          std::erase(idle_workers_, &self);
        }
        if (stopping_.load()) {
          if (self.conn) FreeConn(self.conn);
          return;
        }
        if (self.conn) {
          c = self.conn;
          self.conn = nullptr;
        } else {
          c = ready_.front();
          ready_.pop_front();
        }
      }
      Serve(c);
      MutexLock lock(&queue_mu_);
      if (stopping_.load()) {
        FreeConn(c);
        continue;
      }
      returned_.push_back(c);
      uint64_t one = 1;
      (void)!::write(wake_fd_, &one, sizeof(one));
    }
  }

  void Serve(Conn* c);

  struct PerAddress {
    std::set<uint64_t> unadmitted;  // by age
    int admitted = 0;
  };

  const GateLimits limits_;
  HttpCore* const core_;
  const AdmitFn admit_;
  const int user_cap_;       // workers one user may hold
  const int address_cap_;    // workers anonymous requests of one address may hold
  const int anonymous_cap_;  // workers all anonymous requests may hold
  std::string answer_headers_;  // "Name: value\r\n"…; set before Start, then only read
  Mutex ctx_mu_;
  SSL_CTX* ctx_ CAIRN_GUARDED_BY(ctx_mu_) = nullptr;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int stop_fd_ = -1;  // readable once Stop() began; workers poll it with their socket
  std::atomic<bool> stopping_{false};
  std::thread loop_;
  std::vector<std::thread> workers_;

  // Loop thread only.
  std::set<Conn*> conns_;
  std::map<uint64_t, Conn*> by_seq_;
  std::unordered_map<std::string, PerAddress> per_address_;
  std::unordered_map<std::string, WorkerShare> shares_;  // by Conn::share
  int anonymous_running_ = 0;
  uint64_t seq_ = 0;

  Mutex queue_mu_;
  // Waiting workers, last idle at the back.
  std::vector<Worker*> idle_workers_ CAIRN_GUARDED_BY(queue_mu_);
  std::deque<Conn*> ready_ CAIRN_GUARDED_BY(queue_mu_);     // admitted, no worker free yet
  std::deque<Conn*> returned_ CAIRN_GUARDED_BY(queue_mu_);  // served, back to the loop

  std::atomic<int64_t> open_{0}, handshake_{0}, unadmitted_{0}, idle_{0}, active_{0}, queued_{0};
  std::atomic<uint64_t> accepted_{0}, refused_{0}, timed_out_{0}, evicted_{0};
};

// The connection as httplib sees it while a worker serves one request: the
// bytes the loop already read first (the head and maybe some body), then the
// TLS connection, every wait bounded by io_timeout and cut short by Stop().
class HttpGate::Impl::WorkerStream : public httplib::Stream {
 public:
  WorkerStream(Conn* c, const GateLimits& limits, int stop_fd)
      : c_(c), limits_(limits), stop_fd_(stop_fd), chunks_(c->body_limit) {}

  bool is_readable() const override { return !failed_; }
  bool is_writable() const override { return !failed_; }

  ssize_t read(char* ptr, size_t size) override {
    if (failed_ || body_failed_) return -1;
    // Head and body: no more than the budget the loop granted. Without
    // Content-Length or chunked framing a request has no body (RFC 9112
    // 6.3), so its end reads as end of stream; a chunked body that outgrows
    // its budget fails the request (413).
    const uint64_t allowed = c_->head_len + c_->body_budget;
    if (consumed_ >= allowed) {
      if (!c_->chunked) return 0;
      return BodyError(413);
    }
    size = static_cast<size_t>(std::min<uint64_t>(size, allowed - consumed_));
    if (pos_ < c_->in.size()) {
      size_t n = std::min(size, c_->in.size() - pos_);
      std::memcpy(ptr, c_->in.data() + pos_, n);
      pos_ += n;
      return Took(ptr, n);
    }
    int n = Retry([&] { return SSL_read(c_->ssl, ptr, ClampInt(size)); });
    return n > 0 ? Took(ptr, static_cast<size_t>(n)) : -1;
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (failed_) return -1;
    if (size == 0) return 0;
    int n = Retry([&] { return SSL_write(c_->ssl, ptr, ClampInt(size)); });
    return n > 0 ? n : -1;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_->addr;
    port = c_->port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip.clear();
    port = 0;
  }
  int socket() const override { return c_->fd; }

  bool failed() const { return failed_; }
  // Drops what this request consumed from the loop's buffer, keeping bytes
  // of a next request that came along.
  void Consume() { c_->in.erase(0, std::min(pos_, c_->in.size())); }

 private:
  static int ClampInt(size_t n) { return static_cast<int>(std::min<size_t>(n, 1 << 30)); }

  // Runs an SSL_read or SSL_write until it moves bytes, waiting (bounded) for
  // the socket whenever OpenSSL asks to; fails the stream on any error.
  template <typename Op>
  int Retry(const Op& op) {
    for (;;) {
      ERR_clear_error();
      int n = op();
      if (n > 0) return n;
      int e = SSL_get_error(c_->ssl, n);
      const bool ready = (e == SSL_ERROR_WANT_READ && Wait(POLLIN)) ||
                         (e == SSL_ERROR_WANT_WRITE && Wait(POLLOUT));
      if (!ready) {
        Fail();
        return -1;
      }
    }
  }

  // Counts `n` bytes handed to httplib, checking the chunked framing of the
  // body part.
  ssize_t Took(const char* p, size_t n) {
    const uint64_t before = consumed_;
    consumed_ += n;
    if (c_->chunked && consumed_ > c_->head_len) {
      const size_t skip = before >= c_->head_len ? 0 : static_cast<size_t>(c_->head_len - before);
      if (int e = chunks_.Feed(p + skip, n - skip); e != 0) return BodyError(e);
    }
    return static_cast<ssize_t>(n);
  }

  // The body broke a rule: no more reading, but the answer (written by the
  // error handler) still goes out before the connection closes.
  ssize_t BodyError(int status) {
    t_body_error = status;
    body_failed_ = true;
    return -1;
  }

  ssize_t Fail() {
    failed_ = true;
    return -1;
  }

  bool Wait(short what) {
    pollfd fds[2] = {{c_->fd, what, 0}, {stop_fd_, POLLIN, 0}};
    for (;;) {
      int r = ::poll(fds, 2, limits_.io_timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;  // timeout or error
      if (fds[1].revents) return false;
      return true;
    }
  }

  Conn* c_;
  const GateLimits& limits_;
  int stop_fd_;
  size_t pos_ = 0;         // next unread byte of c_->in
  uint64_t consumed_ = 0;  // bytes of this request handed to httplib
  bool failed_ = false;       // the connection broke
  bool body_failed_ = false;  // the body broke a rule (t_body_error)
  ChunkedCheck chunks_;
};

void HttpGate::Impl::Serve(Conn* c) {
  t_body_error = 0;
  t_body_limit = c->body_limit;
  WorkerStream stream(c, limits_, stop_fd_);
  bool closed = false;
  bool ok = false;
  try {
    ok = core_->ServeOne(stream, c->stranger, &closed);
  } catch (const std::exception& e) {
    spdlog::error("request from {} failed: {}", c->addr, e.what());
  }
  stream.Consume();
  c->close_after = !ok || closed || c->stranger || stream.failed() || t_body_error != 0;
}

// --- HttpGate ---

HttpGate::HttpGate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpGate::~HttpGate() { Stop(); }

Result<std::unique_ptr<HttpGate>> HttpGate::Create(const TlsPaths& tls, GateLimits limits,
                                                   HttpCore* core, AdmitFn admit) {
  auto impl = std::make_unique<Impl>(limits, core, std::move(admit));
  CAIRN_RETURN_IF_ERROR(impl->Init(tls));
  // The answers are written by our own stream, with our own timeouts.
  core->set_keep_alive_timeout(std::max(1, limits.idle_timeout_ms / 1000));
  return std::unique_ptr<HttpGate>(new HttpGate(std::move(impl)));
}

Result<int> HttpGate::Bind(const std::string& host, int port) { return impl_->Bind(host, port); }
void HttpGate::SetAnswerHeaders(std::vector<std::pair<std::string, std::string>> headers) {
  std::string lines;
  for (const auto& [name, value] : headers) lines += name + ": " + value + "\r\n";
  impl_->SetAnswerHeaders(std::move(lines));
}

void HttpGate::Start() { impl_->Start(); }
Status HttpGate::ReloadCertificate(const TlsPaths& tls) { return impl_->ReloadCertificate(tls); }
void HttpGate::Stop() {
  if (impl_) impl_->Stop();
}
GateCounts HttpGate::counts() const { return impl_->counts(); }

void HttpGate::InstallErrorHandler(HttpCore* core) {
  core->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (t_body_error == 413) {
      res.status = 413;
      res.set_content(ErrorJson("chunked request body exceeds this endpoint's limit of " +
                                    std::to_string(t_body_limit) + " bytes",
                                "Http"),
                      "application/json");
      return;
    }
    if (t_body_error == 400) {
      res.status = 400;
      res.set_content(ErrorJson("malformed chunked request body", "Http"), "application/json");
      return;
    }
    if (!res.body.empty()) return;
    const char* msg = res.status == 404   ? "no such endpoint"
                      : res.status == 413 ? "request body too large"
                      : res.status == 405 ? "method not allowed"
                                          : "bad request";
    res.set_content(ErrorJson(msg, "Http"), "application/json");
  });
}

}  // namespace cairn::server
