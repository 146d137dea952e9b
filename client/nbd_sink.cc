#include "client/nbd_sink.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "client/unix_socket.h"

namespace cairn::client {
namespace {

using Clock = std::chrono::steady_clock;

// Export names are at most 4096 bytes by the protocol; GO/INFO add a few
// bytes more. Anything longer is not a client worth serving.
constexpr uint32_t kMaxOptionBytes = 16 * 1024;
constexpr int kMaxOptionsPerConnection = 128;
// A confused client can be refused thousands of times a second; the log gets
// the first few of each connection and a count at the end.
constexpr int kMaxLoggedRejections = 16;
constexpr size_t kRequestHeaderBytes = 28;

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
const unsigned char* Bytes(const std::string& s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string OptionName(uint32_t opt) {
  switch (opt) {
    case nbd::kOptExportName:
      return "NBD_OPT_EXPORT_NAME";
    case nbd::kOptAbort:
      return "NBD_OPT_ABORT";
    case nbd::kOptList:
      return "NBD_OPT_LIST";
    case nbd::kOptStartTls:
      return "NBD_OPT_STARTTLS";
    case nbd::kOptInfo:
      return "NBD_OPT_INFO";
    case nbd::kOptGo:
      return "NBD_OPT_GO";
    case nbd::kOptStructuredReply:
      return "NBD_OPT_STRUCTURED_REPLY";
    case nbd::kOptListMetaContext:
      return "NBD_OPT_LIST_META_CONTEXT";
    case nbd::kOptSetMetaContext:
      return "NBD_OPT_SET_META_CONTEXT";
    default:
      return "option " + std::to_string(opt);
  }
}

std::string CommandName(uint16_t type) {
  switch (type) {
    case nbd::kCmdRead:
      return "READ";
    case nbd::kCmdWrite:
      return "WRITE";
    case nbd::kCmdDisc:
      return "DISC";
    case nbd::kCmdFlush:
      return "FLUSH";
    case nbd::kCmdTrim:
      return "TRIM";
    case nbd::kCmdCache:
      return "CACHE";
    case nbd::kCmdWriteZeroes:
      return "WRITE_ZEROES";
    case nbd::kCmdBlockStatus:
      return "BLOCK_STATUS";
    default:
      return "command " + std::to_string(type);
  }
}

Clock::time_point After(std::chrono::milliseconds d) {
  return d.count() > 0 ? Clock::now() + d : kNoDeadline;
}

bool IsPowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

NbdSink::NbdSink(const NbdSinkOptions& options, NbdSinkHandler* handler)
    : options_(options), handler_(handler) {}

NbdSink::~NbdSink() { Stop(); }

Result<std::unique_ptr<NbdSink>> NbdSink::Start(const NbdSinkOptions& options,
                                                NbdSinkHandler* handler) {
  if (handler == nullptr) return Status::InvalidArgument("NbdSink: no handler");
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("NbdSink: socket path empty or too long: " +
                                   options.socket_path);
  }
  if (options.export_size == 0) return Status::InvalidArgument("NbdSink: export size 0");
  // The payload buffer is max_write_bytes; keep it to what the protocol
  // recommends clients never exceed without asking (32 MiB).
  if (options.max_write_bytes < 512 || options.max_write_bytes > (32u << 20)) {
    return Status::InvalidArgument("NbdSink: max_write_bytes must be 512..32 MiB");
  }
  if (!IsPowerOfTwo(options.preferred_block) || options.preferred_block < 512 ||
      options.preferred_block > options.max_write_bytes) {
    return Status::InvalidArgument(
        "NbdSink: preferred_block must be a power of two in 512..max_write_bytes");
  }
  if (options.max_connections < 1 || options.io_timeout.count() <= 0) {
    return Status::InvalidArgument("NbdSink: max_connections and io_timeout must be positive");
  }
  if (options.export_name.size() > 4096) {
    return Status::InvalidArgument("NbdSink: export name longer than 4096 bytes");
  }
  // Uri() puts both into a URI unescaped; QEMU must read back what was meant.
  for (const std::string* text : {&options.socket_path, &options.export_name}) {
    for (char c : *text) {
      if (static_cast<unsigned char>(c) <= ' ' || std::strchr("%?&#\"'<>\\", c) != nullptr) {
        return Status::InvalidArgument(
            "NbdSink: character not allowed in socket path or export "
            "name: " +
            *text);
      }
    }
  }

  std::unique_ptr<NbdSink> sink(new NbdSink(options, handler));
  sink->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sink->wake_fd_ < 0) return Status::FromErrno("eventfd", errno);

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  sink->listen_fd_ = fd;
  // On Linux the mode of an unbound unix socket becomes the mode of the file
  // bind() creates: no window in which another user could connect.
  (void)::fchmod(fd, 0600);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    if (err == EADDRINUSE) {
      return Status::AlreadyExists("NbdSink: socket path exists: " + options.socket_path);
    }
    return Status::FromErrno("bind " + options.socket_path, err);
  }
  sink->socket_created_ = true;  // from here on, Stop() removes the file
  if (::chmod(options.socket_path.c_str(), 0600) != 0 || ::listen(fd, 8) != 0) {
    return Status::FromErrno("listen " + options.socket_path, errno);
  }
  sink->accept_thread_ = std::thread([s = sink.get()] { s->AcceptLoop(); });
  return sink;
}

void NbdSink::Stop() {
  MutexLock lock(&stop_mu_);
  if (wake_fd_ < 0) return;
  stopping_ = true;
  uint64_t one = 1;
  // The eventfd is never read, so it stays readable and wakes every poll.
  (void)!::write(wake_fd_, &one, sizeof(one));
  if (accept_thread_.joinable()) accept_thread_.join();
  for (Connection& c : connections_) {
    if (c.thread.joinable()) c.thread.join();
  }
  connections_.clear();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // Only a file this sink made: a Start() that found the path taken must not
  // remove another sink's socket.
  if (socket_created_) {
    ::unlink(options_.socket_path.c_str());
    socket_created_ = false;
  }
  ::close(wake_fd_);
  wake_fd_ = -1;
}

std::string NbdSink::Uri() const {
  return "nbd+unix:///" + options_.export_name + "?socket=" + options_.socket_path;
}

NbdSinkStats NbdSink::stats() const {
  MutexLock lock(&stats_mu_);
  return stats_;
}

void NbdSink::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

void NbdSink::NoteError(const std::string& what, bool protocol_error) {
  {
    MutexLock lock(&stats_mu_);
    stats_.last_error = what;
    if (protocol_error) ++stats_.protocol_errors;
  }
  Log(what);
}

uint16_t NbdSink::TransmissionFlags() const {
  // No FUA, TRIM, multi-conn or fast-zero: QEMU then sends FLUSH for
  // durability and never relies on semantics a push target cannot give.
  return nbd::kTransHasFlags | nbd::kTransSendFlush | nbd::kTransSendWriteZeroes;
}

void NbdSink::AcceptLoop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      NoteError("NbdSink: poll on the listening socket: " + std::string(std::strerror(errno)),
                false);
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
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) continue;
      NoteError("NbdSink: accept: " + std::string(std::strerror(err)), false);
      // Out of descriptors: back off instead of spinning on a readable socket.
      pollfd w{wake_fd_, POLLIN, 0};
      ::poll(&w, 1, 100);
      continue;
    }
    if (connections_.size() >= static_cast<size_t>(options_.max_connections)) {
      {
        MutexLock lock(&stats_mu_);
        ++stats_.refused_connections;
      }
      ::close(fd);
      Log("NbdSink: refused a connection: " + std::to_string(options_.max_connections) +
          " already open");
      continue;
    }
    Connection& c = connections_.emplace_back();
    c.fd = fd;
    c.thread = std::thread([this, &c] { Serve(&c); });
  }
}

void NbdSink::Serve(Connection* conn) {
  bool transmit = false;
  Status s = Handshake(conn->fd, &transmit);
  // Connections cut by Stop() ended as asked: nothing to report.
  if (!s.ok()) {
    if (!stopping_) NoteError("NbdSink: handshake: " + s.message(), !s.IsIOError());
  } else if (transmit) {
    {
      MutexLock lock(&stats_mu_);
      ++stats_.connections;
    }
    s = Transmit(conn->fd);
    if (!s.ok() && !stopping_) NoteError("NbdSink: " + s.message(), s.IsCorruption());
  }
  // Marked done before the close a client sees, so a client that reconnects
  // at once finds the slot free.
  conn->done = true;
  ::close(conn->fd);
}

Status NbdSink::ReadFull(int fd, void* buf, size_t n, Clock::time_point deadline, bool* clean_eof) {
  if (clean_eof != nullptr) *clean_eof = false;
  size_t got = 0;
  Result<SocketEnd> end = SocketRecvFull(fd, buf, n, deadline, wake_fd_, &got);
  if (!end.ok()) return end.status();
  switch (*end) {
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
  return Status::IOError("sink stopped");
}

Status NbdSink::WriteFull(int fd, const void* buf, size_t n, Clock::time_point deadline) {
  Result<SocketEnd> end =
      SocketSendAll(fd, std::string_view(static_cast<const char*>(buf), n), deadline, wake_fd_);
  if (!end.ok()) return end.status();
  switch (*end) {
    case SocketEnd::kDone:
      return Status::OK();
    case SocketEnd::kTimedOut:
      return Status::IOError("timed out writing to the client");
    case SocketEnd::kWoken:
    case SocketEnd::kClosed:
      break;
  }
  return Status::IOError("sink stopped");
}

Status NbdSink::SendOptionReply(int fd, uint32_t option, uint32_t type, std::string_view data,
                                Clock::time_point deadline) {
  std::string m;
  PutU64(&m, nbd::kOptReplyMagic);
  PutU32(&m, option);
  PutU32(&m, type);
  PutU32(&m, static_cast<uint32_t>(data.size()));
  m.append(data);
  return WriteFull(fd, m.data(), m.size(), deadline);
}

Status NbdSink::SendExportInfo(int fd, uint32_t option, Clock::time_point deadline) {
  std::string info;
  PutU16(&info, nbd::kInfoExport);
  PutU64(&info, options_.export_size);
  PutU16(&info, TransmissionFlags());
  CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, option, nbd::kRepInfo, info, deadline));
  // Sent whether or not the client asked (the protocol allows it). Minimum 1:
  // QEMU never has to read-modify-write, which would mean READs we refuse.
  std::string sizes;
  PutU16(&sizes, nbd::kInfoBlockSize);
  PutU32(&sizes, 1);
  PutU32(&sizes, options_.preferred_block);
  PutU32(&sizes, options_.max_write_bytes);
  return SendOptionReply(fd, option, nbd::kRepInfo, sizes, deadline);
}

Status NbdSink::Handshake(int fd, bool* transmit) {
  *transmit = false;
  const auto deadline = Clock::now() + options_.io_timeout;
  std::string hello;
  PutU64(&hello, nbd::kNbdMagic);
  PutU64(&hello, nbd::kOptMagic);
  PutU16(&hello, nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  CAIRN_RETURN_IF_ERROR(WriteFull(fd, hello.data(), hello.size(), deadline));

  unsigned char cf[4];
  CAIRN_RETURN_IF_ERROR(ReadFull(fd, cf, sizeof(cf), deadline, nullptr));
  const uint32_t client_flags = GetU32(cf);
  if ((client_flags & ~(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes)) != 0) {
    return Status::Corruption("unknown client flags " + std::to_string(client_flags));
  }
  // Plain newstyle would forbid error replies to options; every client of
  // interest (QEMU, libnbd) speaks fixed newstyle.
  if ((client_flags & nbd::kClientFlagFixedNewstyle) == 0) {
    return Status::Corruption("client does not speak fixed newstyle");
  }
  const bool no_zeroes = (client_flags & nbd::kClientFlagNoZeroes) != 0;
  Log("NbdSink: client flags " + std::to_string(client_flags));

  std::string data;
  for (int count = 0;; ++count) {
    if (count >= kMaxOptionsPerConnection) return Status::Corruption("too many options");
    unsigned char h[16];
    CAIRN_RETURN_IF_ERROR(ReadFull(fd, h, sizeof(h), deadline, nullptr));
    if (GetU64(h) != nbd::kOptMagic) return Status::Corruption("bad option magic");
    const uint32_t opt = GetU32(h + 8);
    const uint32_t len = GetU32(h + 12);
    if (len > kMaxOptionBytes) {
      return Status::Corruption(OptionName(opt) + " with " + std::to_string(len) +
                                " bytes of data");
    }
    data.resize(len);
    CAIRN_RETURN_IF_ERROR(ReadFull(fd, data.data(), len, deadline, nullptr));
    const unsigned char* d = Bytes(data);

    switch (opt) {
      case nbd::kOptExportName: {
        Log("NbdSink: option " + OptionName(opt));
        // This option cannot fail in the protocol: the only refusal is to hang up.
        if (data != options_.export_name) return Status::NotFound("no export named '" + data + "'");
        std::string reply;
        PutU64(&reply, options_.export_size);
        PutU16(&reply, TransmissionFlags());
        if (!no_zeroes) reply.append(124, '\0');
        CAIRN_RETURN_IF_ERROR(WriteFull(fd, reply.data(), reply.size(), deadline));
        *transmit = true;
        return Status::OK();
      }
      case nbd::kOptAbort:
        Log("NbdSink: option " + OptionName(opt));
        (void)SendOptionReply(fd, opt, nbd::kRepAck, "", deadline);
        return Status::OK();
      case nbd::kOptList: {
        Log("NbdSink: option " + OptionName(opt));
        if (len != 0) {
          CAIRN_RETURN_IF_ERROR(
              SendOptionReply(fd, opt, nbd::kRepErrInvalid, "LIST takes no data", deadline));
          break;
        }
        std::string server;
        PutU32(&server, static_cast<uint32_t>(options_.export_name.size()));
        server += options_.export_name;
        CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepServer, server, deadline));
        CAIRN_RETURN_IF_ERROR(SendOptionReply(fd, opt, nbd::kRepAck, "", deadline));
        break;
      }
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        // Data: u32 name length, name, u16 count, count × u16 info request.
        bool valid = len >= 6;
        uint32_t name_len = valid ? GetU32(d) : 0;
        valid = valid && name_len <= len - 6;
        uint16_t requests = valid ? GetU16(d + 4 + name_len) : 0;
        valid = valid && uint64_t{4} + name_len + 2 + 2ull * requests == len;
        std::string asked;
        for (uint16_t i = 0; valid && i < requests; ++i) {
          asked += (i ? "," : "") + std::to_string(GetU16(d + 6 + name_len + 2 * i));
        }
        Log("NbdSink: option " + OptionName(opt) +
            (valid ? " export '" + data.substr(4, name_len) + "' info requests [" + asked + "]"
                   : " (malformed)"));
        if (!valid) {
          CAIRN_RETURN_IF_ERROR(
              SendOptionReply(fd, opt, nbd::kRepErrInvalid, "malformed request", deadline));
          break;
        }
        if (data.compare(4, name_len, options_.export_name) != 0) {
          CAIRN_RETURN_IF_ERROR(
              SendOptionReply(fd, opt, nbd::kRepErrUnknown, "no such export", deadline));
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
        Log("NbdSink: option " + OptionName(opt) + " (" + std::to_string(len) +
            " bytes) refused: unsupported");
        CAIRN_RETURN_IF_ERROR(
            SendOptionReply(fd, opt, nbd::kRepErrUnsup, "not supported by this sink", deadline));
        break;
    }
  }
}

Status NbdSink::Transmit(int fd) {
  std::string payload;
  int rejections = 0;
  constexpr uint16_t kKnownFlags = nbd::kCmdFlagFua | nbd::kCmdFlagNoHole | nbd::kCmdFlagDf |
                                   nbd::kCmdFlagReqOne | nbd::kCmdFlagFastZero;
  const uint64_t size = options_.export_size;
  for (;;) {
    unsigned char h[kRequestHeaderBytes];
    bool eof = false;
    // The first byte may take as long as QEMU likes (idle_timeout); the rest
    // of the request must follow promptly.
    Status s = ReadFull(fd, h, 1, After(options_.idle_timeout), &eof);
    if (!s.ok()) {
      if (eof) return Status::IOError("client hung up without NBD_CMD_DISC");
      return s;
    }
    CAIRN_RETURN_IF_ERROR(
        ReadFull(fd, h + 1, kRequestHeaderBytes - 1, Clock::now() + options_.io_timeout, nullptr));
    const uint32_t magic = GetU32(h);
    const uint16_t flags = GetU16(h + 4);
    const uint16_t type = GetU16(h + 6);
    const uint64_t offset = GetU64(h + 16);
    const uint32_t length = GetU32(h + 24);
    if (magic != nbd::kRequestMagic) return Status::Corruption("bad request magic");

    if (type == nbd::kCmdWrite) {
      // The payload must be consumed to stay in step; one too large to
      // buffer leaves no way but to hang up.
      if (length > options_.max_write_bytes) {
        return Status::Corruption("WRITE of " + std::to_string(length) + " bytes exceeds the " +
                                  std::to_string(options_.max_write_bytes) + "-byte maximum");
      }
      payload.resize(length);
      CAIRN_RETURN_IF_ERROR(
          ReadFull(fd, payload.data(), length, Clock::now() + options_.io_timeout, nullptr));
    }

    const bool in_bounds = length <= size && offset <= size - length;
    uint32_t error = 0;
    std::string why;
    Status handler_status;
    bool handled = false;
    if ((flags & ~kKnownFlags) != 0) {
      error = nbd::kEinval;
      why = "unknown flags " + std::to_string(flags);
    } else {
      switch (type) {
        case nbd::kCmdWrite:
        case nbd::kCmdWriteZeroes:
        case nbd::kCmdTrim:
          if (length == 0) {
            error = nbd::kEinval;
            why = "zero length";
          } else if (!in_bounds) {
            error = type == nbd::kCmdTrim ? nbd::kEinval : nbd::kEnospc;
            why = "beyond the end of the export";
          } else {
            MutexLock lock(&handler_mu_);
            handler_status = type == nbd::kCmdWrite
                                 ? handler_->OnWrite(offset, std::string_view(payload))
                                 : handler_->OnZero(offset, length);
            if (handler_status.ok() && (flags & nbd::kCmdFlagFua) != 0) {
              handler_status = handler_->OnFlush();
            }
            handled = true;
          }
          break;
        case nbd::kCmdFlush: {
          MutexLock lock(&handler_mu_);
          handler_status = handler_->OnFlush();
          handled = true;
          break;
        }
        case nbd::kCmdDisc: {
          MutexLock lock(&stats_mu_);
          ++stats_.disconnects;
          return Status::OK();
        }
        case nbd::kCmdRead:
          error = nbd::kEinval;
          why = "READ refused: the sink is a write-only backup target";
          break;
        default:
          error = nbd::kEinval;
          why = "unsupported";
          break;
      }
    }
    if (handled && !handler_status.ok()) {
      error = nbd::kEio;
      why = "handler failed: " + handler_status.message();
    }
    {
      MutexLock lock(&stats_mu_);
      if (type == nbd::kCmdRead) ++stats_.reads_refused;
      if (error != 0) {
        ++stats_.error_replies;
        if (handled) ++stats_.handler_errors;
        stats_.last_error = CommandName(type) + " " + std::to_string(offset) + "+" +
                            std::to_string(length) + ": " + why;
      } else {
        if (type == nbd::kCmdWrite) {
          ++stats_.writes;
          stats_.write_bytes += length;
        } else if (type == nbd::kCmdWriteZeroes || type == nbd::kCmdTrim) {
          ++stats_.zeroes;
          stats_.zero_bytes += length;
          if (type == nbd::kCmdTrim) ++stats_.trims;
          if ((flags & nbd::kCmdFlagNoHole) != 0) ++stats_.no_hole_zeroes;
        } else if (type == nbd::kCmdFlush) {
          ++stats_.flushes;
        }
        if ((flags & nbd::kCmdFlagFua) != 0 && type != nbd::kCmdFlush) {
          ++stats_.fua_requests;
          ++stats_.flushes;
        }
      }
    }
    if (error != 0 && ++rejections <= kMaxLoggedRejections) {
      Log("NbdSink: " + CommandName(type) + " offset " + std::to_string(offset) + " length " +
          std::to_string(length) + " flags " + std::to_string(flags) + " → error " +
          std::to_string(error) + ": " + why);
    }

    std::string reply;
    PutU32(&reply, nbd::kSimpleReplyMagic);
    PutU32(&reply, error);
    reply.append(reinterpret_cast<const char*>(h + 8), 8);  // the cookie, as sent
    CAIRN_RETURN_IF_ERROR(
        WriteFull(fd, reply.data(), reply.size(), Clock::now() + options_.io_timeout));
  }
}

}  // namespace cairn::client
