#include "client/nbd_export.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "client/nbd_protocol.h"
#include "client/nbd_sink.h"
#include "client/unix_socket.h"

namespace cairn::client {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMaxOptionBytes = 16 * 1024;
constexpr int kMaxOptionsPerConnection = 128;
constexpr size_t kRequestHeaderBytes = kNbdRequestHeaderBytes;
constexpr uint32_t kMaxPayload = 32u << 20;
constexpr uint32_t kPreferredBlock = 4096;
constexpr int kMaxLoggedRejections = 16;

// Protocol numbers client/nbd_sink.h does not name (doc/proto.md).
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kReplyTypeOffsetData = 1;
constexpr uint16_t kReplyTypeBlockStatus = 5;
constexpr uint16_t kReplyTypeError = (1 << 15) | 1;
constexpr uint16_t kTransSendDf = 1 << 7;
constexpr uint16_t kTransSendCache = 1 << 10;
constexpr uint32_t kStateHole = 1;
constexpr uint32_t kStateZero = 2;
constexpr uint32_t kAllocationContextId = 1;
constexpr const char* kAllocationContext = "base:allocation";

void PutU16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v >> 8));
  s->push_back(static_cast<char>(v));
}
void PutU32(std::string* s, uint32_t v) {
  PutU16(s, static_cast<uint16_t>(v >> 16));
  PutU16(s, static_cast<uint16_t>(v));
}
void PutU64(std::string* s, uint64_t v) {
  PutU32(s, static_cast<uint32_t>(v >> 32));
  PutU32(s, static_cast<uint32_t>(v));
}
uint16_t GetU16(const unsigned char* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t GetU32(const unsigned char* p) { return (uint32_t{GetU16(p)} << 16) | GetU16(p + 2); }
uint64_t GetU64(const unsigned char* p) { return (uint64_t{GetU32(p)} << 32) | GetU32(p + 4); }

// A structured reply chunk's header.
std::string ChunkHeader(uint16_t flags, uint16_t type, const unsigned char* cookie,
                        uint32_t length) {
  std::string h;
  PutU32(&h, kStructuredReplyMagic);
  PutU16(&h, flags);
  PutU16(&h, type);
  h.append(reinterpret_cast<const char*>(cookie), 8);
  PutU32(&h, length);
  return h;
}

}  // namespace

struct NbdExport::Session {
  bool no_zeroes = false;
  bool structured = false;
  bool allocation = false;  // base:allocation selected
};

NbdExport::NbdExport(const NbdExportOptions& options, ArchiveSource* source)
    : options_(options), source_(source) {}

NbdExport::~NbdExport() { Stop(); }

Result<std::unique_ptr<NbdExport>> NbdExport::Start(const NbdExportOptions& options,
                                                    ArchiveSource* source) {
  if (source == nullptr) return Status::InvalidArgument("NbdExport: no source");
  const bool unix_socket = !options.socket_path.empty();
  if (unix_socket == (options.listen_port >= 0)) {
    return Status::InvalidArgument("NbdExport: give a socket path or a TCP address, not both");
  }
  if (unix_socket && !IsUnixSocketPath(options.socket_path)) {
    return Status::InvalidArgument("NbdExport: socket path too long: " + options.socket_path);
  }
  if (options.max_connections < 1 || options.listen_port > 65535) {
    return Status::InvalidArgument("NbdExport: bad max_connections or port");
  }
  std::unique_ptr<NbdExport> e(new NbdExport(options, source));
  e->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e->wake_fd_ < 0) return Status::FromErrno("eventfd", errno);
  if (unix_socket) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Status::FromErrno("socket", errno);
    e->listen_fd_ = fd;
    (void)::fchmod(fd, 0600);  // the mode bind() gives the file
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno == EADDRINUSE) {
        return Status::AlreadyExists("socket path exists: " + options.socket_path);
      }
      return Status::FromErrno("bind " + options.socket_path, errno);
    }
    e->socket_created_ = true;
    if (::chmod(options.socket_path.c_str(), 0600) != 0) {
      return Status::FromErrno("chmod " + options.socket_path, errno);
    }
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(options.listen_port);
    const char* host = options.listen_host.empty() ? "127.0.0.1" : options.listen_host.c_str();
    if (int rc = ::getaddrinfo(host, port.c_str(), &hints, &res); rc != 0) {
      return Status::InvalidArgument("listen address " + std::string(host) + ": " +
                                     ::gai_strerror(rc));
    }
    int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      ::freeaddrinfo(res);
      return Status::FromErrno("socket", errno);
    }
    e->listen_fd_ = fd;
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = ::bind(fd, res->ai_addr, res->ai_addrlen);
    int err = errno;
    ::freeaddrinfo(res);
    if (rc != 0) return Status::FromErrno("bind " + std::string(host) + ":" + port, err);
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      e->port_ = ntohs(bound.ss_family == AF_INET6
                           ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    }
  }
  if (::listen(e->listen_fd_, 16) != 0) return Status::FromErrno("listen", errno);
  e->accept_thread_ = std::thread([p = e.get()] { p->AcceptLoop(); });
  return e;
}

void NbdExport::Stop() {
  MutexLock lock(&stop_mu_);
  if (wake_fd_ < 0) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));  // never read: wakes every poll
  if (accept_thread_.joinable()) accept_thread_.join();
  for (Connection& c : connections_) {
    if (c.thread.joinable()) c.thread.join();
  }
  connections_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  if (socket_created_) ::unlink(options_.socket_path.c_str());
  socket_created_ = false;
  ::close(wake_fd_);
  wake_fd_ = -1;
}

std::string NbdExport::Uri() const {
  if (!options_.socket_path.empty()) return "nbd+unix:///?socket=" + options_.socket_path;
  std::string host = options_.listen_host.empty() ? "127.0.0.1" : options_.listen_host;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "nbd://" + host + ":" + std::to_string(port_) + "/";
}

NbdExportStats NbdExport::stats() const {
  MutexLock lock(&stats_mu_);
  return stats_;
}

void NbdExport::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

uint16_t NbdExport::TransmissionFlags() const {
  return nbd::kTransHasFlags | nbd::kTransReadOnly | nbd::kTransSendFlush | kTransSendDf |
         nbd::kTransCanMultiConn | kTransSendCache;
}

void NbdExport::AcceptLoop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      Log("map: poll: " + std::string(std::strerror(errno)));
      return;
    }
    if (p[1].revents != 0) return;
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->done) {
        it->thread.join();
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    if ((p[0].revents & POLLIN) == 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
      Log("map: accept: " + std::string(std::strerror(errno)));
      pollfd w{wake_fd_, POLLIN, 0};
      ::poll(&w, 1, 100);
      continue;
    }
    if (connections_.size() >= static_cast<size_t>(options_.max_connections)) {
      ::close(fd);
      Log("map: refused a connection: " + std::to_string(options_.max_connections) +
          " already open");
      continue;
    }
    if (options_.socket_path.empty()) {
      int one = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    Connection& c = connections_.emplace_back();
    c.fd = fd;
    c.thread = std::thread([this, &c] { Serve(&c); });
  }
}

void NbdExport::Serve(Connection* conn) {
  Session session;
  bool transmit = false;
  Status s = Handshake(conn->fd, &session, &transmit);
  if (s.ok() && transmit) {
    {
      MutexLock lock(&stats_mu_);
      ++stats_.connections;
    }
    s = Transmit(conn->fd, session);
  }
  if (!s.ok() && !stopping_) {
    if (!s.IsIOError()) {
      MutexLock lock(&stats_mu_);
      ++stats_.protocol_errors;
    }
    Log("map: connection ended: " + s.message());
  }
  conn->done = true;
  ::close(conn->fd);
}

Status NbdExport::ReadFull(int fd, void* buf, size_t n, Clock::time_point deadline,
                           bool* clean_eof) {
  if (clean_eof != nullptr) *clean_eof = false;
  size_t got = 0;
  CAIRN_ASSIGN_OR_RETURN(SocketEnd end, SocketRecvFull(fd, buf, n, deadline, wake_fd_, &got));
  switch (end) {
    case SocketEnd::kDone:
      return Status::OK();
    case SocketEnd::kClosed:
      if (got == 0 && clean_eof != nullptr) *clean_eof = true;
      return Status::IOError(got == 0 ? "connection closed" : "connection closed mid-message");
    case SocketEnd::kTimedOut:
      return Status::IOError("timed out reading from the client");
    case SocketEnd::kWoken:
      break;
  }
  return Status::IOError("export stopped");
}

Status NbdExport::WriteFull(int fd, std::string_view data) {
  CAIRN_ASSIGN_OR_RETURN(SocketEnd end,
                         SocketSendAll(fd, data, Clock::now() + options_.io_timeout, wake_fd_));
  if (end == SocketEnd::kDone) return Status::OK();
  if (end == SocketEnd::kTimedOut) return Status::IOError("timed out writing to the client");
  return Status::IOError("export stopped");
}

Status NbdExport::SendOptionReply(int fd, uint32_t option, uint32_t type, std::string_view data,
                                  Clock::time_point) {
  std::string m;
  PutU64(&m, nbd::kOptReplyMagic);
  PutU32(&m, option);
  PutU32(&m, type);
  PutU32(&m, static_cast<uint32_t>(data.size()));
  m.append(data);
  return WriteFull(fd, m);
}

Status NbdExport::SendExportInfo(int fd, uint32_t option, Clock::time_point deadline) {
  std::string info;
  PutU16(&info, nbd::kInfoExport);
  PutU64(&info, source_->size());
  PutU16(&info, TransmissionFlags());
  CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, option, nbd::kRepInfo, info, deadline));
  std::string sizes;
  PutU16(&sizes, nbd::kInfoBlockSize);
  PutU32(&sizes, 1);
  PutU32(&sizes, kPreferredBlock);
  PutU32(&sizes, kMaxPayload);
  return SendOptionReply(fd, option, nbd::kRepInfo, sizes, deadline);
}

// LIST/SET_META_CONTEXT: u32 name length, name, u32 query count, queries
// (u32 length, text). The only context is base:allocation.
Status NbdExport::MetaContext(int fd, uint32_t opt, const std::string& data, Session* session,
                              Clock::time_point deadline) {
  auto invalid = [&](const char* why) {
    return SendOptionReply(fd, opt, nbd::kRepErrInvalid, why, deadline);
  };
  if (!session->structured) return invalid("structured replies were not negotiated");
  // The parse is client/nbd_protocol.h's (fuzzed on its own).
  Result<bool> parsed = ParseNbdMetaContext(data, opt == nbd::kOptListMetaContext);
  if (!parsed.ok()) return invalid(parsed.status().message().c_str());
  const bool match = *parsed;
  if (opt == nbd::kOptSetMetaContext) session->allocation = match;
  if (match) {
    std::string reply;
    PutU32(&reply, opt == nbd::kOptSetMetaContext ? kAllocationContextId : 0);
    reply += kAllocationContext;
    CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, kRepMetaContext, reply, deadline));
  }
  return SendOptionReply(fd, opt, nbd::kRepAck, "", deadline);
}

Status NbdExport::Handshake(int fd, Session* session, bool* transmit) {
  *transmit = false;
  const auto deadline = Clock::now() + options_.io_timeout;
  std::string hello;
  PutU64(&hello, nbd::kNbdMagic);
  PutU64(&hello, nbd::kOptMagic);
  PutU16(&hello, nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  CAIRN_RETURN_IF_ERROR(WriteFull(fd, hello));
  unsigned char cf[4];
  CAIRN_RETURN_IF_ERROR(ReadFull(fd, cf, sizeof(cf), deadline, nullptr));
  const uint32_t client_flags = GetU32(cf);
  if ((client_flags & ~(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes)) != 0 ||
      (client_flags & nbd::kClientFlagFixedNewstyle) == 0) {
    return Status::Corruption("client flags " + std::to_string(client_flags) +
                              " (fixed newstyle is required)");
  }
  session->no_zeroes = (client_flags & nbd::kClientFlagNoZeroes) != 0;
  std::string data;
  for (int count = 0; count < kMaxOptionsPerConnection; ++count) {
    unsigned char h[16];
    CAIRN_RETURN_IF_ERROR(ReadFull(fd, h, sizeof(h), deadline, nullptr));
    if (GetU64(h) != nbd::kOptMagic) return Status::Corruption("bad option magic");
    const uint32_t opt = GetU32(h + 8);
    const uint32_t len = GetU32(h + 12);
    if (len > kMaxOptionBytes) return Status::Corruption("oversized option");
    data.resize(len);
    CAIRN_RETURN_IF_ERROR(ReadFull(fd, data.data(), len, deadline, nullptr));
    switch (opt) {
      case nbd::kOptExportName: {
        std::string reply;
        PutU64(&reply, source_->size());
        PutU16(&reply, TransmissionFlags());
        if (!session->no_zeroes) reply.append(124, '\0');
        CAIRN_RETURN_IF_ERROR(WriteFull(fd, reply));
        *transmit = true;
        return Status::OK();
      }
      case nbd::kOptAbort:
        (void)SendOptionReply(fd, opt, nbd::kRepAck, "", deadline);
        return Status::OK();
      case nbd::kOptList: {
        if (len != 0) {
          CAIRN_RETURN_IF_ERROR(
              SendOptionReply(fd, opt, nbd::kRepErrInvalid, "LIST takes no data", deadline));
          break;
        }
        std::string server;
        PutU32(&server, 0);  // the export "" (every name reaches it)
        CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepServer, server, deadline));
        CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepAck, "", deadline));
        break;
      }
      case nbd::kOptStructuredReply:
        if (len != 0) {
          CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepErrInvalid,
                                                "STRUCTURED_REPLY takes no data", deadline));
          break;
        }
        session->structured = true;
        CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepAck, "", deadline));
        break;
      case nbd::kOptListMetaContext:
      case nbd::kOptSetMetaContext:
        CAIRN_RETURN_IF_ERROR(MetaContext(fd, opt, data, session, deadline));
        break;
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        if (!ValidNbdInfoRequest(data)) {
          CAIRN_RETURN_IF_ERROR(
              SendOptionReply(fd, opt, nbd::kRepErrInvalid, "malformed request", deadline));
          break;
        }
        CAIRN_RETURN_IF_ERROR(SendExportInfo(fd, opt, deadline));
        CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepAck, "", deadline));
        if (opt == nbd::kOptGo) {
          *transmit = true;
          return Status::OK();
        }
        break;
      }
      default:
        CAIRN_RETURN_IF_ERROR(
            SendOptionReply(fd, opt, nbd::kRepErrUnsup, "not supported by cairn map", deadline));
        break;
    }
  }
  return Status::Corruption("too many options");
}

// Extents for [offset, offset + length): runs of zero / data chunks.
std::string NbdExport::BlockStatus(uint64_t offset, uint32_t length, bool one) const {
  std::string out;
  PutU32(&out, kAllocationContextId);
  const uint64_t cs = source_->chunk_size();
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    const bool zero = source_->IsZeroChunk(pos / cs);
    uint64_t run_end = pos;
    while (run_end < end && source_->IsZeroChunk(run_end / cs) == zero) {
      run_end = std::min(end, (run_end / cs + 1) * cs);
    }
    PutU32(&out, static_cast<uint32_t>(run_end - pos));
    PutU32(&out, zero ? kStateHole | kStateZero : 0);
    pos = run_end;
    if (one) break;
  }
  return out;
}

Status NbdExport::Transmit(int fd, const Session& session) {
  std::string payload;
  std::string data;
  int rejections = 0;
  const uint64_t size = source_->size();
  for (;;) {
    unsigned char h[kRequestHeaderBytes];
    bool eof = false;
    Status s = ReadFull(fd, h, 1, kNoDeadline, &eof);
    if (!s.ok()) return eof ? Status::OK() : s;  // a client that hangs up is done
    CAIRN_RETURN_IF_ERROR(
        ReadFull(fd, h + 1, kRequestHeaderBytes - 1, Clock::now() + options_.io_timeout, nullptr));
    CAIRN_ASSIGN_OR_RETURN(const NbdRequestHeader request, ParseNbdRequestHeader(h));
    const uint16_t flags = request.flags;
    const uint16_t type = request.type;
    const unsigned char* cookie = request.cookie;
    const uint64_t offset = request.offset;
    const uint32_t length = request.length;
    if (type == nbd::kCmdWrite) {
      if (length > kMaxPayload) return Status::Corruption("WRITE larger than 32 MiB");
      payload.resize(length);
      CAIRN_RETURN_IF_ERROR(
          ReadFull(fd, payload.data(), length, Clock::now() + options_.io_timeout, nullptr));
    }
    if (type == nbd::kCmdDisc) return Status::OK();
    const bool in_bounds = NbdRequestInBounds(offset, length, size);
    uint32_t error = 0;
    std::string why;
    std::string reply;
    switch (type) {
      case nbd::kCmdRead: {
        if (!in_bounds || length > kMaxPayload) {
          error = nbd::kEinval;
          why = "outside the export or too long";
          break;
        }
        Status r = source_->Read(offset, length, &data);
        if (!r.ok()) {
          error = nbd::kEio;
          why = r.ToString();
          MutexLock lock(&stats_mu_);
          ++stats_.read_errors;
          break;
        }
        {
          MutexLock lock(&stats_mu_);
          ++stats_.reads;
          stats_.read_bytes += length;
        }
        if (session.structured) {
          reply = ChunkHeader(kReplyFlagDone, kReplyTypeOffsetData, cookie, 8 + length);
          PutU64(&reply, offset);
        } else {
          PutU32(&reply, nbd::kSimpleReplyMagic);
          PutU32(&reply, 0);
          reply.append(reinterpret_cast<const char*>(cookie), 8);
        }
        reply += data;
        break;
      }
      case nbd::kCmdBlockStatus:
        if (!session.structured || !session.allocation || !in_bounds) {
          error = nbd::kEinval;
          why = "no base:allocation context, or outside the export";
          break;
        }
        {
          MutexLock lock(&stats_mu_);
          ++stats_.block_status;
        }
        {
          std::string extents = BlockStatus(offset, length, (flags & nbd::kCmdFlagReqOne) != 0);
          reply = ChunkHeader(kReplyFlagDone, kReplyTypeBlockStatus, cookie,
                              static_cast<uint32_t>(extents.size()));
          reply += extents;
        }
        break;
      case nbd::kCmdCache:
        if (!in_bounds) {
          error = nbd::kEinval;
          why = "outside the export";
          break;
        }
        for (uint64_t pos = offset; pos < offset + length;) {
          const uint64_t n = std::min<uint64_t>(offset + length - pos, source_->chunk_size());
          (void)source_->Read(pos, n, &data);  // only to warm the cache
          pos += n;
        }
        break;
      case nbd::kCmdFlush:
        break;
      case nbd::kCmdWrite:
      case nbd::kCmdWriteZeroes:
      case nbd::kCmdTrim: {
        error = nbd::kEperm;
        why = "the export is read-only";
        MutexLock lock(&stats_mu_);
        ++stats_.writes_refused;
        break;
      }
      default:
        error = nbd::kEinval;
        why = "unsupported command";
        break;
    }
    if (error != 0 && ++rejections <= kMaxLoggedRejections) {
      Log("map: request " + std::to_string(type) + " offset " + std::to_string(offset) +
          " length " + std::to_string(length) + " → error " + std::to_string(error) + ": " + why);
    }
    if (error != 0 && session.structured) {
      reply = ChunkHeader(kReplyFlagDone, kReplyTypeError, cookie,
                          static_cast<uint32_t>(6 + std::min<size_t>(why.size(), 4096)));
      PutU32(&reply, error);
      PutU16(&reply, static_cast<uint16_t>(std::min<size_t>(why.size(), 4096)));
      reply.append(why, 0, 4096);
    } else if (error != 0 || reply.empty()) {
      reply.clear();
      PutU32(&reply, nbd::kSimpleReplyMagic);
      PutU32(&reply, error);
      reply.append(reinterpret_cast<const char*>(cookie), 8);
    }
    CAIRN_RETURN_IF_ERROR(WriteFull(fd, reply));
  }
}

}  // namespace cairn::client
