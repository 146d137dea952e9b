#include "client/nbd_sink.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "client/qmp_client.h"
#include "tests/client/qemu_testutil.h"

namespace cairn::client {
namespace {

using json = nlohmann::json;
using testing::kQemuTimeout;
using testing::Qcow2Blockdev;
using testing::QemuVm;
using testing::ReadWholeFile;
using testing::RunCommand;
using testing::ShortTempDir;
using testing::WriteWholeFile;

constexpr uint64_t kMiB = 1 << 20;

// ---------------------------------------------------------------------------
// A handler that rebuilds the image and records every call.

struct Call {
  char kind;  // 'W' write, 'Z' zero, 'F' flush
  uint64_t offset;
  uint64_t length;
};

class RecordingHandler : public NbdSinkHandler {
 public:
  explicit RecordingHandler(uint64_t size) : image_(size, '\0') {}
  explicit RecordingHandler(std::string image) : image_(std::move(image)) {}

  Status OnWrite(uint64_t offset, std::string_view data) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({'W', offset, data.size()});
    if (fail_ && fail_(calls_.back())) return Status::IOError("injected write failure");
    EXPECT_LE(offset + data.size(), image_.size());
    std::memcpy(image_.data() + offset, data.data(), data.size());
    return Status::OK();
  }
  Status OnZero(uint64_t offset, uint64_t length) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({'Z', offset, length});
    if (fail_ && fail_(calls_.back())) return Status::IOError("injected zero failure");
    EXPECT_LE(offset + length, image_.size());
    std::memset(image_.data() + offset, 0, length);
    return Status::OK();
  }
  Status OnFlush() override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({'F', 0, 0});
    return Status::OK();
  }

  void FailWhen(std::function<bool(const Call&)> f) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_ = std::move(f);
  }
  std::string image() {
    std::lock_guard<std::mutex> lock(mu_);
    return image_;
  }
  std::vector<Call> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::string image_;
  std::vector<Call> calls_;
  std::function<bool(const Call&)> fail_;
};

// Collects the sink's log lines.
struct LogLines {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(std::string_view)> Sink() {
    return [this](std::string_view l) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(l);
    };
  }
  std::string Joined() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

// ---------------------------------------------------------------------------
// A hand-written NBD client for protocol tests.

std::string Be16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string Be32(uint32_t v) {
  return Be16(static_cast<uint16_t>(v >> 16)) + Be16(static_cast<uint16_t>(v));
}
std::string Be64(uint64_t v) {
  return Be32(static_cast<uint32_t>(v >> 32)) + Be32(static_cast<uint32_t>(v));
}
uint64_t Get(const std::string& s, size_t at, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

std::string OptionRequest(uint32_t opt, const std::string& data) {
  return Be64(nbd::kOptMagic) + Be32(opt) + Be32(static_cast<uint32_t>(data.size())) + data;
}
std::string GoData(const std::string& name, const std::vector<uint16_t>& infos) {
  std::string d =
      Be32(static_cast<uint32_t>(name.size())) + name + Be16(static_cast<uint16_t>(infos.size()));
  for (uint16_t i : infos) d += Be16(i);
  return d;
}
std::string Request(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset,
                    uint32_t length) {
  return Be32(nbd::kRequestMagic) + Be16(flags) + Be16(type) + Be64(cookie) + Be64(offset) +
         Be32(length);
}

class RawClient {
 public:
  static std::unique_ptr<RawClient> Connect(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      return nullptr;
    }
    return std::unique_ptr<RawClient>(new RawClient(fd));
  }
  ~RawClient() { ::close(fd_); }

  bool Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // Exactly n bytes within 10 s, or "" (EOF, error or timeout).
  std::string Recv(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (got < n) {
      pollfd p{fd_, POLLIN, 0};
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
      if (ms <= 0 || ::poll(&p, 1, ms) <= 0) return "";
      ssize_t r = ::recv(fd_, out.data() + got, n - got, 0);
      if (r <= 0) return "";
      got += static_cast<size_t>(r);
    }
    return out;
  }
  // True when the server closes the connection within 10 s.
  bool ClosedByServer() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t r = ::recv(fd_, buf, sizeof(buf), 0);
      if (r <= 0) return true;
    }
    return false;
  }

  struct OptReply {
    uint32_t option = 0;
    uint32_t type = 0;
    std::string data;
  };
  bool ReadOptReply(OptReply* r) {
    std::string h = Recv(20);
    if (h.size() != 20 || Get(h, 0, 8) != nbd::kOptReplyMagic) return false;
    r->option = static_cast<uint32_t>(Get(h, 8, 4));
    r->type = static_cast<uint32_t>(Get(h, 12, 4));
    uint32_t len = static_cast<uint32_t>(Get(h, 16, 4));
    r->data = len ? Recv(len) : "";
    return r->data.size() == len;
  }

  // Reads the server's greeting and sends the client flags.
  bool Hello(uint32_t client_flags = nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes) {
    std::string h = Recv(18);
    if (h.size() != 18 || Get(h, 0, 8) != nbd::kNbdMagic || Get(h, 8, 8) != nbd::kOptMagic) {
      return false;
    }
    server_flags_ = static_cast<uint16_t>(Get(h, 16, 2));
    return Send(Be32(client_flags));
  }

  struct ExportInfo {
    uint64_t size = 0;
    uint16_t flags = 0;
    uint32_t min_block = 0, preferred_block = 0, max_block = 0;
  };
  // Sends GO/INFO and reads replies up to the ACK (true) or an error (false,
  // *error set).
  bool Go(uint32_t opt, const std::string& name, ExportInfo* info, uint32_t* error = nullptr) {
    if (!Send(OptionRequest(opt, GoData(name, {nbd::kInfoBlockSize})))) return false;
    for (;;) {
      OptReply r;
      if (!ReadOptReply(&r) || r.option != opt) return false;
      if (r.type == nbd::kRepAck) return true;
      if (r.type & 0x80000000u) {
        if (error) *error = r.type;
        return false;
      }
      if (r.type != nbd::kRepInfo || r.data.size() < 2) return false;
      uint16_t kind = static_cast<uint16_t>(Get(r.data, 0, 2));
      if (kind == nbd::kInfoExport && r.data.size() == 12) {
        info->size = Get(r.data, 2, 8);
        info->flags = static_cast<uint16_t>(Get(r.data, 10, 2));
      } else if (kind == nbd::kInfoBlockSize && r.data.size() == 14) {
        info->min_block = static_cast<uint32_t>(Get(r.data, 2, 4));
        info->preferred_block = static_cast<uint32_t>(Get(r.data, 6, 4));
        info->max_block = static_cast<uint32_t>(Get(r.data, 10, 4));
      }
    }
  }

  // Sends a request and reads the simple reply: the error value, or -1 when
  // the reply is missing or malformed.
  int64_t Call(uint16_t type, uint64_t offset, uint32_t length, const std::string& payload = "",
               uint16_t flags = 0) {
    uint64_t cookie = ++cookie_;
    if (!Send(Request(type, flags, cookie, offset, length) + payload)) return -1;
    std::string r = Recv(16);
    if (r.size() != 16 || Get(r, 0, 4) != nbd::kSimpleReplyMagic || Get(r, 8, 8) != cookie) {
      return -1;
    }
    return static_cast<int64_t>(Get(r, 4, 4));
  }

  uint16_t server_flags() const { return server_flags_; }
  int fd() const { return fd_; }

 private:
  explicit RawClient(int fd) : fd_(fd) {}
  int fd_;
  uint16_t server_flags_ = 0;
  uint64_t cookie_ = 1000;
};

class NbdSinkProtocolTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 8 * kMiB;

  void SetUp() override {
    options_.socket_path = dir_.Join("nbd.sock");
    options_.export_size = kSize;
    options_.log = log_.Sink();
  }
  void StartSink() {
    auto s = NbdSink::Start(options_, &handler_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    sink_ = std::move(s).value();
  }
  std::unique_ptr<RawClient> ConnectGo() {
    auto c = RawClient::Connect(options_.socket_path);
    EXPECT_NE(c, nullptr);
    if (!c) return nullptr;
    EXPECT_TRUE(c->Hello());
    RawClient::ExportInfo info;
    EXPECT_TRUE(c->Go(nbd::kOptGo, "", &info));
    return c;
  }

  ShortTempDir dir_;
  NbdSinkOptions options_;
  LogLines log_;
  RecordingHandler handler_{kSize};
  std::unique_ptr<NbdSink> sink_;
};

TEST_F(NbdSinkProtocolTest, GoAdvertisesExportAndBlockSizesThenServesWrites) {
  StartSink();
  auto c = RawClient::Connect(options_.socket_path);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Hello());
  EXPECT_EQ(c->server_flags(), nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  RawClient::ExportInfo info;
  ASSERT_TRUE(c->Go(nbd::kOptGo, "", &info));
  EXPECT_EQ(info.size, kSize);
  EXPECT_EQ(info.flags, nbd::kTransHasFlags | nbd::kTransSendFlush | nbd::kTransSendWriteZeroes);
  EXPECT_EQ(info.min_block, 1u);
  EXPECT_EQ(info.preferred_block, 4096u);
  EXPECT_EQ(info.max_block, 32u << 20);

  std::string data(65536, 'x');
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 4096, 65536, data), 0);
  EXPECT_EQ(c->Call(nbd::kCmdWriteZeroes, 5000, 100, "", nbd::kCmdFlagNoHole), 0);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, kSize - 3, 3, "end"), 0);
  EXPECT_EQ(c->Call(nbd::kCmdFlush, 0, 0), 0);
  ASSERT_TRUE(c->Send(Request(nbd::kCmdDisc, 0, 1, 0, 0)));
  EXPECT_TRUE(c->ClosedByServer());

  std::string expect(kSize, '\0');
  std::memset(expect.data() + 4096, 'x', 65536);
  std::memset(expect.data() + 5000, 0, 100);
  std::memcpy(expect.data() + kSize - 3, "end", 3);
  EXPECT_TRUE(handler_.image() == expect);
  auto calls = handler_.calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[1].kind, 'Z');
  EXPECT_EQ(calls[1].offset, 5000u);
  EXPECT_EQ(calls[1].length, 100u);
  EXPECT_EQ(calls[3].kind, 'F');

  sink_->Stop();
  NbdSinkStats st = sink_->stats();
  EXPECT_EQ(st.connections, 1u);
  EXPECT_EQ(st.writes, 2u);
  EXPECT_EQ(st.write_bytes, 65536u + 3);
  EXPECT_EQ(st.zeroes, 1u);
  EXPECT_EQ(st.no_hole_zeroes, 1u);
  EXPECT_EQ(st.flushes, 1u);
  EXPECT_EQ(st.disconnects, 1u);
  EXPECT_EQ(st.error_replies, 0u);
  EXPECT_EQ(st.protocol_errors, 0u);
  struct stat sb;
  EXPECT_NE(::stat(options_.socket_path.c_str(), &sb), 0) << "Stop() leaves the socket file";
}

TEST_F(NbdSinkProtocolTest, UnknownOptionsAreUnsupportedAndInfoPrecedesGo) {
  StartSink();
  auto c = RawClient::Connect(options_.socket_path);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Hello());
  for (uint32_t opt :
       {nbd::kOptStructuredReply, nbd::kOptStartTls, nbd::kOptSetMetaContext, uint32_t{12345}}) {
    ASSERT_TRUE(c->Send(OptionRequest(opt, opt == 12345 ? "junk" : "")));
    RawClient::OptReply r;
    ASSERT_TRUE(c->ReadOptReply(&r));
    EXPECT_EQ(r.option, opt);
    EXPECT_EQ(r.type, nbd::kRepErrUnsup);
  }
  // LIST names the one export.
  ASSERT_TRUE(c->Send(OptionRequest(nbd::kOptList, "")));
  RawClient::OptReply r;
  ASSERT_TRUE(c->ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepServer);
  EXPECT_EQ(r.data, Be32(0));
  ASSERT_TRUE(c->ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepAck);
  // Malformed GO data.
  ASSERT_TRUE(c->Send(OptionRequest(nbd::kOptGo, Be32(100) + "ab")));
  ASSERT_TRUE(c->ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepErrInvalid);
  // A name other than the export's.
  RawClient::ExportInfo info;
  uint32_t error = 0;
  EXPECT_FALSE(c->Go(nbd::kOptInfo, "other", &info, &error));
  EXPECT_EQ(error, nbd::kRepErrUnknown);
  // INFO answers without entering transmission; GO then does.
  ASSERT_TRUE(c->Go(nbd::kOptInfo, "", &info));
  EXPECT_EQ(info.size, kSize);
  ASSERT_TRUE(c->Go(nbd::kOptGo, "", &info));
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 0, 2, "hi"), 0);
  EXPECT_EQ(handler_.image().substr(0, 2), "hi");
}

TEST_F(NbdSinkProtocolTest, ExportNameOptionWithAndWithoutZeroPadding) {
  StartSink();
  for (bool no_zeroes : {false, true}) {
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(
        c->Hello(nbd::kClientFlagFixedNewstyle | (no_zeroes ? nbd::kClientFlagNoZeroes : 0)));
    ASSERT_TRUE(c->Send(OptionRequest(nbd::kOptExportName, "")));
    std::string r = c->Recv(no_zeroes ? 10 : 134);
    ASSERT_EQ(r.size(), no_zeroes ? 10u : 134u);
    EXPECT_EQ(Get(r, 0, 8), kSize);
    if (!no_zeroes) {
      EXPECT_EQ(r.substr(10), std::string(124, '\0'));
    }
    EXPECT_EQ(c->Call(nbd::kCmdFlush, 0, 0), 0);
  }
  // A wrong name cannot be refused politely: the connection is dropped.
  auto c = RawClient::Connect(options_.socket_path);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Hello());
  ASSERT_TRUE(c->Send(OptionRequest(nbd::kOptExportName, "nope")));
  EXPECT_TRUE(c->ClosedByServer());
}

TEST_F(NbdSinkProtocolTest, AbortIsAcknowledgedAndCloses) {
  StartSink();
  auto c = RawClient::Connect(options_.socket_path);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Hello());
  ASSERT_TRUE(c->Send(OptionRequest(nbd::kOptAbort, "")));
  RawClient::OptReply r;
  ASSERT_TRUE(c->ReadOptReply(&r));
  EXPECT_EQ(r.type, nbd::kRepAck);
  EXPECT_TRUE(c->ClosedByServer());
  EXPECT_EQ(sink_->stats().connections, 0u);
}

TEST_F(NbdSinkProtocolTest, BadRequestsGetErrorRepliesAndTheConnectionGoesOn) {
  StartSink();
  auto c = ConnectGo();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Call(nbd::kCmdRead, 0, 4096), nbd::kEinval);
  // Beyond the end: the payload is consumed, the reply is ENOSPC.
  EXPECT_EQ(c->Call(nbd::kCmdWrite, kSize - 1, 2, "ab"), nbd::kEnospc);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, ~uint64_t{0} - 1, 4, "abcd"), nbd::kEnospc);  // wraps
  EXPECT_EQ(c->Call(nbd::kCmdWriteZeroes, kSize, 1), nbd::kEnospc);
  EXPECT_EQ(c->Call(nbd::kCmdWriteZeroes, 0, 0), nbd::kEinval);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 0, 0), nbd::kEinval);
  EXPECT_EQ(c->Call(nbd::kCmdTrim, kSize - 1, 5), nbd::kEinval);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 0, 1, "z", 0x8000), nbd::kEinval);  // unknown flag
  EXPECT_EQ(c->Call(nbd::kCmdBlockStatus, 0, 4096), nbd::kEinval);
  EXPECT_EQ(c->Call(nbd::kCmdCache, 0, 4096), nbd::kEinval);
  EXPECT_EQ(c->Call(77, 0, 4096), nbd::kEinval);
  // Still in step after all that.
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 10, 3, "abc"), 0);
  EXPECT_EQ(c->Call(nbd::kCmdTrim, 10, 1), 0);  // trimmed = reads as zeros
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 20, 1, "q", nbd::kCmdFlagFua), 0);
  std::string img = handler_.image();
  EXPECT_EQ(img.substr(10, 3), std::string("\0bc", 3));
  EXPECT_EQ(img[20], 'q');
  EXPECT_EQ(img[kSize - 1], '\0');
  auto calls = handler_.calls();
  ASSERT_EQ(calls.size(), 4u);  // write, zero (trim), write, flush (FUA)
  EXPECT_EQ(calls[3].kind, 'F');
  NbdSinkStats st = sink_->stats();
  EXPECT_EQ(st.error_replies, 11u);
  EXPECT_EQ(st.reads_refused, 1u);
  EXPECT_EQ(st.trims, 1u);
  EXPECT_EQ(st.fua_requests, 1u);
  EXPECT_EQ(st.handler_errors, 0u);
  EXPECT_NE(log_.Joined().find("READ refused"), std::string::npos) << log_.Joined();
}

TEST_F(NbdSinkProtocolTest, HandlerErrorBecomesEio) {
  StartSink();
  handler_.FailWhen([](const Call& c) { return c.offset == 4096; });
  auto c = ConnectGo();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 0, 4, "abcd"), 0);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 4096, 4, "abcd"), nbd::kEio);
  EXPECT_EQ(c->Call(nbd::kCmdWriteZeroes, 4096, 4), nbd::kEio);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 8192, 4, "abcd"), 0);
  NbdSinkStats st = sink_->stats();
  EXPECT_EQ(st.handler_errors, 2u);
  EXPECT_NE(st.last_error.find("injected"), std::string::npos) << st.last_error;
}

TEST_F(NbdSinkProtocolTest, ProtocolViolationsDropTheConnection) {
  options_.io_timeout = std::chrono::milliseconds(300);
  StartSink();
  {  // bad request magic
    auto c = ConnectGo();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Send(std::string(28, 'A')));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // a WRITE larger than the maximum: dropped before any payload is read
    auto c = ConnectGo();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Send(Request(nbd::kCmdWrite, 0, 1, 0, 0xffffffffu)));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // a header cut short, then silence: io_timeout
    auto c = ConnectGo();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Send(Request(nbd::kCmdWrite, 0, 1, 0, 100).substr(0, 10)));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // payload cut short
    auto c = ConnectGo();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Send(Request(nbd::kCmdWrite, 0, 1, 0, 100) + "short"));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // unknown client flags
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Hello(0x80));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // not fixed newstyle
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Hello(0));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // bad option magic
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Hello());
    ASSERT_TRUE(c->Send(std::string(16, 'B')));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // an option claiming 4 GiB of data
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Hello());
    ASSERT_TRUE(c->Send(Be64(nbd::kOptMagic) + Be32(nbd::kOptGo) + Be32(0xffffffffu)));
    EXPECT_TRUE(c->ClosedByServer());
  }
  {  // connects and says nothing: the handshake times out
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(c->ClosedByServer());
  }
  EXPECT_TRUE(handler_.calls().empty());
  NbdSinkStats st = sink_->stats();
  // Timeouts are not protocol errors; the other six are.
  EXPECT_EQ(st.protocol_errors, 6u) << log_.Joined();
  EXPECT_NE(log_.Joined().find("timed out"), std::string::npos);
  // The sink still serves a well-behaved client.
  auto c = ConnectGo();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 0, 1, "k"), 0);
}

TEST_F(NbdSinkProtocolTest, RandomBytesNeverCrashTheSink) {
  options_.io_timeout = std::chrono::milliseconds(200);
  // Not the connection limit under test: a junk connection the client has
  // closed may still count until its thread ends, which on a loaded machine
  // is after the next round connects (SequentialReconnectsAndConnectionLimit
  // tests the limit).
  options_.max_connections = 64;
  StartSink();
  std::mt19937_64 rng(42);
  for (int round = 0; round < 60; ++round) {
    auto c = RawClient::Connect(options_.socket_path);
    ASSERT_NE(c, nullptr);
    std::string junk(static_cast<size_t>(rng() % 300), '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (round % 3 == 0) {
      // After a valid handshake, so the request parser sees the junk.
      ASSERT_TRUE(c->Hello());
      RawClient::ExportInfo info;
      ASSERT_TRUE(c->Go(nbd::kOptGo, "", &info));
      // Some valid-magic headers with random fields.
      std::string req = Request(static_cast<uint16_t>(rng() % 10), static_cast<uint16_t>(rng()),
                                rng(), rng() % (2 * kSize), static_cast<uint32_t>(rng() % 4096));
      junk = req + junk;
    } else if (round % 3 == 1) {
      c->Recv(18);
      junk = Be32(3) + Be64(nbd::kOptMagic) + Be32(static_cast<uint32_t>(rng() % 12)) +
             Be32(static_cast<uint32_t>(junk.size())) + junk;
    }
    c->Send(junk);
  }
  // Writes that landed are within bounds (RecordingHandler checks) and the
  // sink still works.
  auto c = ConnectGo();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Call(nbd::kCmdWrite, 0, 1, "k"), 0);
}

TEST_F(NbdSinkProtocolTest, SequentialReconnectsAndConnectionLimit) {
  options_.max_connections = 1;
  StartSink();
  for (int i = 0; i < 3; ++i) {
    auto c = ConnectGo();
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->Call(nbd::kCmdWrite, static_cast<uint64_t>(i), 1, "r"), 0);
    ASSERT_TRUE(c->Send(Request(nbd::kCmdDisc, 0, 1, 0, 0)));
    EXPECT_TRUE(c->ClosedByServer());
  }
  EXPECT_EQ(handler_.image().substr(0, 3), "rrr");
  auto first = ConnectGo();
  ASSERT_NE(first, nullptr);
  auto second = RawClient::Connect(options_.socket_path);
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(second->ClosedByServer());
  EXPECT_EQ(first->Call(nbd::kCmdFlush, 0, 0), 0);
  NbdSinkStats st = sink_->stats();
  EXPECT_EQ(st.connections, 4u);
  EXPECT_EQ(st.refused_connections, 1u);
  EXPECT_EQ(st.disconnects, 3u);
}

TEST_F(NbdSinkProtocolTest, StopEndsIdleConnectionsPromptly) {
  StartSink();
  auto c = ConnectGo();
  ASSERT_NE(c, nullptr);
  auto half = RawClient::Connect(options_.socket_path);  // stuck in the handshake
  ASSERT_NE(half, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  sink_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_TRUE(c->ClosedByServer());
  sink_->Stop();  // idempotent
}

TEST_F(NbdSinkProtocolTest, StartRejectsBadOptions) {
  {
    NbdSinkOptions o = options_;
    o.export_size = 0;
    EXPECT_TRUE(NbdSink::Start(o, &handler_).status().IsInvalidArgument());
  }
  {
    NbdSinkOptions o = options_;
    o.socket_path = "/tmp/" + std::string(200, 'x');
    EXPECT_TRUE(NbdSink::Start(o, &handler_).status().IsInvalidArgument());
  }
  {
    NbdSinkOptions o = options_;
    o.preferred_block = 3000;
    EXPECT_TRUE(NbdSink::Start(o, &handler_).status().IsInvalidArgument());
  }
  {
    NbdSinkOptions o = options_;
    o.max_write_bytes = 64u << 20;
    EXPECT_TRUE(NbdSink::Start(o, &handler_).status().IsInvalidArgument());
  }
  EXPECT_TRUE(NbdSink::Start(options_, nullptr).status().IsInvalidArgument());
  StartSink();
  struct stat sb;
  ASSERT_EQ(::stat(options_.socket_path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  auto again = NbdSink::Start(options_, &handler_);
  EXPECT_TRUE(again.status().IsAlreadyExists()) << again.status().ToString();
  EXPECT_EQ(::stat(options_.socket_path.c_str(), &sb), 0) << "the failed Start removed the socket";
  EXPECT_NE(ConnectGo(), nullptr);
  {
    NbdSinkOptions o = options_;
    o.socket_path = dir_.Join("a?b.sock");
    EXPECT_TRUE(NbdSink::Start(o, &handler_).status().IsInvalidArgument());
    o = options_;
    o.export_name = "x&y";
    EXPECT_TRUE(NbdSink::Start(o, &handler_).status().IsInvalidArgument());
  }
}

// ---------------------------------------------------------------------------
// With the real QEMU: drive-backup into the sink.

// What a test wrote, so the reassembled image can be checked without QEMU.
class ImageModel {
 public:
  explicit ImageModel(uint64_t size) : bytes_(size, '\0') {}
  void Pattern(uint64_t off, uint64_t len, unsigned char p) {
    std::memset(bytes_.data() + off, p, len);
  }
  void Data(uint64_t off, const std::string& d) {
    std::memcpy(bytes_.data() + off, d.data(), d.size());
  }
  void Zero(uint64_t off, uint64_t len) { std::memset(bytes_.data() + off, 0, len); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// "W 65536 ×512, Z 1048576 ×40, ..." and the first requests in order.
std::string Summarize(const std::vector<Call>& calls) {
  std::map<std::pair<char, uint64_t>, int> by_size;
  for (const Call& c : calls) ++by_size[{c.kind, c.length}];
  std::string s = "requests by kind and length:";
  for (const auto& [k, n] : by_size) {
    s += " " + std::string(1, k.first) + " " + std::to_string(k.second) + " x" + std::to_string(n) +
         ";";
  }
  s += "\nin order:";
  size_t shown = 0;
  for (const Call& c : calls) {
    if (shown++ == 48) {
      s += " ...";
      break;
    }
    s += " " + std::string(1, c.kind) + "@" + std::to_string(c.offset / 1024) + "K+" +
         std::to_string(c.length / 1024) + "K";
  }
  uint64_t out_of_order = 0;
  for (size_t i = 1; i < calls.size(); ++i) {
    if (calls[i].kind != 'F' && calls[i - 1].kind != 'F' && calls[i].offset < calls[i - 1].offset) {
      ++out_of_order;
    }
  }
  s += "\nrequests starting below their predecessor: " + std::to_string(out_of_order);
  uint64_t longest = 0, straddling = 0, unaligned = 0;
  for (const Call& c : calls) {
    if (c.kind == 'F') continue;
    longest = std::max(longest, c.length);
    if (c.offset / (4 * kMiB) != (c.offset + c.length - 1) / (4 * kMiB)) ++straddling;
    if (c.offset % 65536 != 0 || c.length % 65536 != 0) ++unaligned;
  }
  // Chunks begun but not yet complete, at worst: what a chunk assembler has
  // to hold in memory for this request order.
  std::map<uint64_t, uint64_t> filled;
  size_t open = 0, most_open = 0;
  for (const Call& c : calls) {
    for (uint64_t at = c.offset; at < c.offset + c.length;) {
      uint64_t chunk = at / (4 * kMiB);
      uint64_t end = std::min(c.offset + c.length, (chunk + 1) * 4 * kMiB);
      uint64_t& f = filled[chunk];
      if (f == 0) ++open;
      f += end - at;
      if (f == 4 * kMiB) --open;  // (a short last chunk stays open; fine here)
      most_open = std::max(most_open, open);
      at = end;
    }
  }
  s += "\nmost 4 MiB chunks open at once " + std::to_string(most_open);
  s += "\nlongest request " + std::to_string(longest) + ", requests across a 4 MiB edge " +
       std::to_string(straddling) + ", requests not 64 KiB-aligned " + std::to_string(unaligned);
  return s;
}

// Merged byte ranges covered by writes and zeroes.
std::vector<std::pair<uint64_t, uint64_t>> Covered(const std::vector<Call>& calls) {
  std::vector<std::pair<uint64_t, uint64_t>> r;
  for (const Call& c : calls) {
    if (c.kind != 'F') r.push_back({c.offset, c.offset + c.length});
  }
  std::sort(r.begin(), r.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& x : r) {
    if (!merged.empty() && x.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, x.second);
    } else {
      merged.push_back(x);
    }
  }
  return merged;
}

std::string RangesToString(const std::vector<std::pair<uint64_t, uint64_t>>& r) {
  std::string s;
  for (const auto& [a, b] : r) {
    s += "[" + std::to_string(a / 1024) + "K, " + std::to_string(b / 1024) + "K) ";
  }
  return s;
}

class NbdSinkQemuTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 64 * kMiB;

  void SetUp() override {
    image_ = dir_.Join("disk.qcow2");
    auto r = RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", image_, "64M"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    StartVm();
  }
  void TearDown() override {
    if (vm_ && HasFailure())
      std::cerr << "QEMU log:\n" << vm_->Log() << "\nsink log:\n" << log_.Joined();
    sink_.reset();
    vm_.reset();  // SIGKILL
  }
  void StartVm() {
    vm_ = QemuVm::Start(dir_.path(), {Qcow2Blockdev("disk0", image_)});
    ASSERT_NE(vm_, nullptr);
  }
  void StartSink(NbdSinkHandler* handler, const std::string& name = "nbd.sock") {
    sink_.reset();
    NbdSinkOptions o;
    o.socket_path = dir_.Join(name);
    o.export_size = kSize;
    o.log = log_.Sink();
    auto s = NbdSink::Start(o, handler);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    sink_ = std::move(s).value();
  }
  QmpClient& qmp() { return vm_->qmp(); }

  // Writes through qemu-io and into the model.
  void WritePattern(uint64_t off, uint64_t len, unsigned char p) {
    char cmd[128];
    std::snprintf(cmd, sizeof(cmd), "write -P 0x%02x %llu %llu", p,
                  static_cast<unsigned long long>(off), static_cast<unsigned long long>(len));
    ASSERT_TRUE(vm_->QemuIo("disk0", cmd));
    model_.Pattern(off, len, p);
  }
  void WriteRandom(uint64_t off, uint64_t len, uint64_t seed) {
    std::string data = RandomBytes(len, seed);
    std::string file = dir_.Join("pattern-" + std::to_string(seed));
    WriteWholeFile(file, data);
    ASSERT_TRUE(vm_->QemuIo(
        "disk0", "write -s " + file + " " + std::to_string(off) + " " + std::to_string(len)));
    model_.Data(off, data);
  }
  void WriteZeroes(uint64_t off, uint64_t len) {
    ASSERT_TRUE(
        vm_->QemuIo("disk0", "write -z " + std::to_string(off) + " " + std::to_string(len)));
    model_.Zero(off, len);
  }

  // Waits for the job's BLOCK_JOB_COMPLETED event.
  json WaitJob(const std::string& job) {
    auto ev = qmp().WaitEvent(
        "BLOCK_JOB_COMPLETED",
        [&](const json& e) { return e.value("data", json::object()).value("device", "") == job; },
        kQemuTimeout);
    EXPECT_TRUE(ev.ok()) << ev.status().ToString();
    return ev.ok() ? *ev : json();
  }
  // Waits until QEMU has closed its NBD connection (the sink saw DISC).
  void WaitDisconnect(uint64_t count) {
    auto deadline = std::chrono::steady_clock::now() + kQemuTimeout;
    while (sink_->stats().disconnects < count && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(sink_->stats().disconnects, count);
  }
  // query-named-block-nodes' dirty-bitmaps of disk0's format node.
  json Bitmaps() {
    auto nodes = qmp().Execute("query-named-block-nodes", {{"flat", true}});
    EXPECT_TRUE(nodes.ok()) << nodes.status().ToString();
    if (!nodes.ok()) return json::array();
    for (const auto& n : *nodes) {
      if (n.value("node-name", "") == "disk0") return n.value("dirty-bitmaps", json::array());
    }
    return json::array();
  }
  // The image as QEMU left it, after `quit`.
  std::string ConvertedImage() {
    EXPECT_TRUE(vm_->Quit());
    std::string raw = dir_.Join("disk.raw");
    auto r = RunCommand({"qemu-img", "convert", "-O", "raw", image_, raw});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string bytes = ReadWholeFile(raw);
    ::unlink(raw.c_str());
    return bytes;
  }

  ShortTempDir dir_;
  std::string image_;
  std::unique_ptr<QemuVm> vm_;
  LogLines log_;
  std::unique_ptr<NbdSink> sink_;
  ImageModel model_{kSize};
};

TEST_F(NbdSinkQemuTest, FullDriveBackupDeliversTheWholeDisk) {
  WritePattern(0, 65536, 0xab);
  WriteRandom(1 * kMiB, 3 * kMiB, 1);
  WriteZeroes(8 * kMiB, kMiB);
  WritePattern(16 * kMiB + 4096 + 7, 1000, 0x11);    // unaligned, inside one cluster
  WriteRandom(30 * kMiB + 512 * 1024, 2 * kMiB, 2);  // straddles the 32 MiB chunk edge
  WritePattern(63 * kMiB, kMiB, 0xcd);               // the tail

  RecordingHandler handler(kSize);
  StartSink(&handler);
  auto r = qmp().Execute("drive-backup", {{"job-id", "full0"},
                                          {"device", "disk0"},
                                          {"target", sink_->Uri()},
                                          {"sync", "full"},
                                          {"mode", "existing"},
                                          {"format", "raw"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json ev = WaitJob("full0");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  EXPECT_EQ(ev["data"].value("len", uint64_t{0}), kSize) << ev.dump();
  WaitDisconnect(1);

  std::vector<Call> calls = handler.calls();
  std::cout << "full backup, 64 MiB qcow2:\n" << Summarize(calls) << "\n";
  NbdSinkStats st = sink_->stats();
  std::cout << "stats: writes " << st.writes << " (" << st.write_bytes << " B), zeroes "
            << st.zeroes << " (" << st.zero_bytes << " B, " << st.no_hole_zeroes
            << " with NO_HOLE), flushes " << st.flushes << ", fua " << st.fua_requests << ", trims "
            << st.trims << ", reads refused " << st.reads_refused << "\n";
  std::cout << "sink log:\n" << log_.Joined();
  std::cout << "QEMU log:\n" << vm_->Log();

  EXPECT_EQ(st.reads_refused, 0u);
  EXPECT_EQ(st.error_replies, 0u);
  // One FLUSH, after the last write: QEMU flushes the target when the job ends.
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back().kind, 'F');
  EXPECT_EQ(std::count_if(calls.begin(), calls.end(), [](const Call& c) { return c.kind == 'F'; }),
            1);
  // Every byte of the disk was sent exactly once as data or zeros.
  auto covered = Covered(calls);
  ASSERT_EQ(covered.size(), 1u) << RangesToString(covered);
  EXPECT_EQ(covered[0], std::make_pair(uint64_t{0}, kSize));
  uint64_t sum = 0;
  for (const Call& c : calls) sum += c.length;
  EXPECT_EQ(sum, kSize) << "overlapping requests";

  std::string image = handler.image();
  EXPECT_TRUE(image == model_.bytes()) << "reassembled image differs from what was written";
  EXPECT_TRUE(image == ConvertedImage()) << "reassembled image differs from qemu-img convert";
}

TEST_F(NbdSinkQemuTest, LegacyNbdUnixTargetSyntaxAlsoWorks) {
  WritePattern(kMiB, kMiB, 0x5a);
  RecordingHandler handler(kSize);
  StartSink(&handler);
  auto r = qmp().Execute("drive-backup", {{"job-id", "legacy"},
                                          {"device", "disk0"},
                                          {"target", "nbd:unix:" + sink_->options().socket_path},
                                          {"sync", "full"},
                                          {"mode", "existing"},
                                          {"format", "raw"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json ev = WaitJob("legacy");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  EXPECT_TRUE(handler.image() == model_.bytes());
}

// drive-backup is marked deprecated in 7.2's schema; the same push through an
// nbd node added with blockdev-add and blockdev-backup.
TEST_F(NbdSinkQemuTest, BlockdevBackupToAnNbdNodeWorksToo) {
  WriteRandom(3 * kMiB, 2 * kMiB, 30);
  WriteZeroes(20 * kMiB, kMiB);
  RecordingHandler handler(kSize);
  StartSink(&handler);
  auto r = qmp().Execute("blockdev-add",
                         {{"driver", "nbd"},
                          {"node-name", "cairn-target"},
                          {"server", {{"type", "unix"}, {"path", sink_->options().socket_path}}},
                          {"export", ""}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  r = qmp().Execute("transaction", {{"actions", json::array({{{"type", "block-dirty-bitmap-add"},
                                                              {"data",
                                                               {{"node", "disk0"},
                                                                {"name", "cairn-1"},
                                                                {"persistent", true},
                                                                {"granularity", 4 * kMiB}}}},
                                                             {{"type", "blockdev-backup"},
                                                              {"data",
                                                               {{"job-id", "bdb"},
                                                                {"device", "disk0"},
                                                                {"target", "cairn-target"},
                                                                {"sync", "full"}}}}})}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json ev = WaitJob("bdb");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  EXPECT_EQ(sink_->stats().disconnects, 0u) << "the node stays open until blockdev-del";
  ASSERT_TRUE(qmp().Execute("blockdev-del", {{"node-name", "cairn-target"}}).ok());
  WaitDisconnect(1);
  EXPECT_TRUE(handler.image() == model_.bytes());
  std::cout << "blockdev-backup:\n" << Summarize(handler.calls()) << "\nQEMU log:\n" << vm_->Log();
}

// A disk whose size is not a multiple of the 64 KiB copy cluster: the tail
// comes as a short request (the sink's minimum block size is 1).
TEST_F(NbdSinkQemuTest, OddSizedDiskTailIsSent) {
  constexpr uint64_t kOdd = 5 * kMiB + 3 * 512;
  std::string odd = dir_.Join("odd.qcow2");
  auto c = RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", odd, std::to_string(kOdd)});
  ASSERT_EQ(c.exit_code, 0) << c.output;
  ASSERT_TRUE(qmp()
                  .Execute("blockdev-add", {{"driver", "qcow2"},
                                            {"node-name", "odd0"},
                                            {"file", {{"driver", "file"}, {"filename", odd}}}})
                  .ok());
  ASSERT_TRUE(vm_->QemuIo("odd0", "write -P 0x3c " + std::to_string(kOdd - 1000) + " 1000"));
  RecordingHandler handler(kOdd);
  sink_.reset();
  NbdSinkOptions o;
  o.socket_path = dir_.Join("odd.sock");
  o.export_size = kOdd;
  o.log = log_.Sink();
  auto s = NbdSink::Start(o, &handler);
  ASSERT_TRUE(s.ok());
  sink_ = std::move(s).value();
  auto r = qmp().Execute("drive-backup", {{"job-id", "odd"},
                                          {"device", "odd0"},
                                          {"target", sink_->Uri()},
                                          {"sync", "full"},
                                          {"mode", "existing"},
                                          {"format", "raw"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json ev = WaitJob("odd");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  std::string expect(kOdd, '\0');
  std::memset(expect.data() + kOdd - 1000, 0x3c, 1000);
  EXPECT_TRUE(handler.image() == expect);
  auto calls = handler.calls();
  auto covered = Covered(calls);
  ASSERT_EQ(covered.size(), 1u);
  EXPECT_EQ(covered[0].second, kOdd);
  std::cout << "odd-sized disk:\n" << Summarize(calls) << "\n";
}

// A transaction whose backup cannot start adds no bitmap either.
TEST_F(NbdSinkQemuTest, TransactionIsAllOrNothing) {
  auto r = qmp().Execute(
      "transaction",
      {{"actions", json::array({{{"type", "block-dirty-bitmap-add"},
                                 {"data",
                                  {{"node", "disk0"},
                                   {"name", "cairn-1"},
                                   {"persistent", true},
                                   {"granularity", 4 * kMiB}}}},
                                {{"type", "drive-backup"},
                                 {"data",
                                  {{"job-id", "nosink"},
                                   {"device", "disk0"},
                                   {"target", "nbd+unix:///?socket=" + dir_.Join("absent.sock")},
                                   {"sync", "full"},
                                   {"mode", "existing"},
                                   {"format", "raw"}}}}})}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Failed to connect"), std::string::npos)
      << r.status().ToString();
  EXPECT_TRUE(Bitmaps().empty()) << Bitmaps().dump();
}

TEST_F(NbdSinkQemuTest, TargetSizeMustMatch) {
  RecordingHandler handler(kSize);
  sink_.reset();
  NbdSinkOptions o;
  o.socket_path = dir_.Join("small.sock");
  o.export_size = kSize - kMiB;
  auto s = NbdSink::Start(o, &handler);
  ASSERT_TRUE(s.ok());
  auto r = qmp().Execute("drive-backup", {{"job-id", "mismatch"},
                                          {"device", "disk0"},
                                          {"target", (*s)->Uri()},
                                          {"sync", "full"},
                                          {"mode", "existing"},
                                          {"format", "raw"}});
  EXPECT_FALSE(r.ok());
  std::cout << "size mismatch: " << r.status().ToString() << "\n";
}

TEST_F(NbdSinkQemuTest, IncrementalBackupsWithPersistentBitmapsSendOnlyDirtyChunks) {
  constexpr uint64_t kChunk = 4 * kMiB;
  WriteRandom(0, 10 * kMiB, 10);
  WritePattern(40 * kMiB, 3 * kMiB, 0x77);

  // Run 1: full read; the bitmap that tracks writes after it is added in the
  // same transaction.
  RecordingHandler full(kSize);
  StartSink(&full, "full.sock");
  auto r =
      qmp().Execute("transaction", {{"actions", json::array({{{"type", "block-dirty-bitmap-add"},
                                                              {"data",
                                                               {{"node", "disk0"},
                                                                {"name", "cairn-1"},
                                                                {"persistent", true},
                                                                {"granularity", kChunk}}}},
                                                             {{"type", "drive-backup"},
                                                              {"data",
                                                               {{"job-id", "run1"},
                                                                {"device", "disk0"},
                                                                {"target", sink_->Uri()},
                                                                {"sync", "full"},
                                                                {"mode", "existing"},
                                                                {"format", "raw"}}}}})}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json ev = WaitJob("run1");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  std::string backup1 = full.image();
  EXPECT_TRUE(backup1 == model_.bytes());
  std::cout << "bitmaps after run 1: " << Bitmaps().dump() << "\n";

  // Guest writes: chunk 1 (64 KiB), chunk 5 (1 MiB inside), chunks 7 and 8
  // (one write across the 32 MiB edge), chunk 10 (zeros written), chunk 15
  // (the last, 1 byte).
  WritePattern(5 * kMiB, 65536, 0x01);
  WriteRandom(20 * kMiB + 512 * 1024, kMiB, 11);
  WriteRandom(31 * kMiB + 512 * 1024, kMiB, 12);
  WriteZeroes(41 * kMiB, 65536);
  WritePattern(kSize - 1, 1, 0x99);
  json bm = Bitmaps();
  std::cout << "bitmaps after the writes: " << bm.dump() << "\n";

  // Run 2: incremental. New bitmap, old one frozen, backup of the old one.
  RecordingHandler incr(kSize);
  StartSink(&incr, "incr.sock");
  r = qmp().Execute("transaction",
                    {{"actions", json::array({{{"type", "block-dirty-bitmap-add"},
                                               {"data",
                                                {{"node", "disk0"},
                                                 {"name", "cairn-2"},
                                                 {"persistent", true},
                                                 {"granularity", kChunk}}}},
                                              {{"type", "block-dirty-bitmap-disable"},
                                               {"data", {{"node", "disk0"}, {"name", "cairn-1"}}}},
                                              {{"type", "drive-backup"},
                                               {"data",
                                                {{"job-id", "run2"},
                                                 {"device", "disk0"},
                                                 {"target", sink_->Uri()},
                                                 {"sync", "bitmap"},
                                                 {"bitmap", "cairn-1"},
                                                 {"bitmap-mode", "never"},
                                                 {"mode", "existing"},
                                                 {"format", "raw"}}}}})}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ev = WaitJob("run2");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  std::cout << "run 2 event: " << ev.dump() << "\n";
  std::vector<Call> calls = incr.calls();
  auto covered = Covered(calls);
  std::cout << "incremental backup:\n"
            << Summarize(calls) << "\ncovered: " << RangesToString(covered) << "\n";
  std::vector<std::pair<uint64_t, uint64_t>> dirty = {{1 * kChunk, 2 * kChunk},
                                                      {5 * kChunk, 6 * kChunk},
                                                      {7 * kChunk, 9 * kChunk},
                                                      {10 * kChunk, 11 * kChunk},
                                                      {15 * kChunk, 16 * kChunk}};
  EXPECT_EQ(covered, dirty) << RangesToString(covered);
  uint64_t sum = 0;
  for (const Call& c : calls) sum += c.length;
  EXPECT_EQ(sum, 6 * kChunk) << "overlapping requests";
  // Previous backup + what was sent = the disk now.
  std::string backup2 = backup1;
  std::string sent = incr.image();
  for (const auto& [a, b] : covered) std::memcpy(backup2.data() + a, sent.data() + a, b - a);
  EXPECT_TRUE(backup2 == model_.bytes());
  std::cout << "bitmaps after run 2: " << Bitmaps().dump() << "\n";

  // Commit: the server has run 2, so the old bitmap goes.
  ASSERT_TRUE(
      qmp().Execute("block-dirty-bitmap-remove", {{"node", "disk0"}, {"name", "cairn-1"}}).ok());

  // The new bitmap survives a QEMU restart (persistent, in the qcow2).
  WritePattern(50 * kMiB, 4096, 0x42);  // chunk 12, before the restart
  EXPECT_TRUE(vm_->Quit());
  StartVm();
  json after = Bitmaps();
  std::cout << "bitmaps after restart: " << after.dump() << "\n";
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].value("name", ""), "cairn-2");
  EXPECT_TRUE(after[0].value("persistent", false));
  EXPECT_TRUE(after[0].value("recording", false));
  EXPECT_EQ(after[0].value("count", uint64_t{0}), kChunk);
  WritePattern(60 * kMiB + 100, 100, 0x43);  // chunk 15, after the restart

  RecordingHandler incr2(kSize);
  StartSink(&incr2, "incr2.sock");
  r = qmp().Execute("transaction",
                    {{"actions", json::array({{{"type", "block-dirty-bitmap-add"},
                                               {"data",
                                                {{"node", "disk0"},
                                                 {"name", "cairn-3"},
                                                 {"persistent", true},
                                                 {"granularity", kChunk}}}},
                                              {{"type", "block-dirty-bitmap-disable"},
                                               {"data", {{"node", "disk0"}, {"name", "cairn-2"}}}},
                                              {{"type", "drive-backup"},
                                               {"data",
                                                {{"job-id", "run3"},
                                                 {"device", "disk0"},
                                                 {"target", sink_->Uri()},
                                                 {"sync", "bitmap"},
                                                 {"bitmap", "cairn-2"},
                                                 {"bitmap-mode", "never"},
                                                 {"mode", "existing"},
                                                 {"format", "raw"}}}}})}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ev = WaitJob("run3");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  covered = Covered(incr2.calls());
  std::cout << "after restart:\n"
            << Summarize(incr2.calls()) << "\ncovered: " << RangesToString(covered) << "\n";
  dirty = {{12 * kChunk, 13 * kChunk}, {15 * kChunk, 16 * kChunk}};
  EXPECT_EQ(covered, dirty) << RangesToString(covered);
  std::string backup3 = backup2;
  sent = incr2.image();
  for (const auto& [a, b] : covered) std::memcpy(backup3.data() + a, sent.data() + a, b - a);
  EXPECT_TRUE(backup3 == model_.bytes());
  EXPECT_TRUE(backup3 == ConvertedImage());
}

TEST_F(NbdSinkQemuTest, HandlerErrorFailsTheJobAndBitmapsMergeBack) {
  constexpr uint64_t kChunk = 4 * kMiB;
  WriteRandom(0, 8 * kMiB, 20);
  ASSERT_TRUE(qmp()
                  .Execute("block-dirty-bitmap-add", {{"node", "disk0"},
                                                      {"name", "cairn-1"},
                                                      {"persistent", true},
                                                      {"granularity", kChunk}})
                  .ok());
  WritePattern(0, 4096, 0x01);
  WritePattern(33 * kMiB, 4096, 0x02);

  RecordingHandler handler(kSize);
  handler.FailWhen([](const Call& c) { return c.offset >= 32 * kMiB; });
  StartSink(&handler);
  auto r = qmp().Execute(
      "transaction", {{"actions", json::array({{{"type", "block-dirty-bitmap-add"},
                                                {"data",
                                                 {{"node", "disk0"},
                                                  {"name", "cairn-2"},
                                                  {"persistent", true},
                                                  {"granularity", kChunk}}}},
                                               {{"type", "block-dirty-bitmap-disable"},
                                                {"data", {{"node", "disk0"}, {"name", "cairn-1"}}}},
                                               {{"type", "drive-backup"},
                                                {"data",
                                                 {{"job-id", "failing"},
                                                  {"device", "disk0"},
                                                  {"target", sink_->Uri()},
                                                  {"sync", "bitmap"},
                                                  {"bitmap", "cairn-1"},
                                                  {"bitmap-mode", "never"},
                                                  {"mode", "existing"},
                                                  {"format", "raw"}}}}})}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json ev = WaitJob("failing");
  std::cout << "failed job event: " << ev.dump() << "\n";
  ASSERT_TRUE(ev["data"].contains("error")) << ev.dump();
  EXPECT_GE(sink_->stats().handler_errors, 1u);
  std::cout << "events queued meanwhile: ";
  for (const auto& e : qmp().TakeEvents()) std::cout << e.value("event", "") << " ";
  std::cout << "\n";

  // A guest write while the new bitmap records.
  WritePattern(50 * kMiB, 4096, 0x03);
  // Merge-back: nothing the failed run should have saved is lost.
  r = qmp().Execute(
      "transaction",
      {{"actions",
        json::array(
            {{{"type", "block-dirty-bitmap-merge"},
              {"data",
               {{"node", "disk0"}, {"target", "cairn-1"}, {"bitmaps", json::array({"cairn-2"})}}}},
             {{"type", "block-dirty-bitmap-enable"},
              {"data", {{"node", "disk0"}, {"name", "cairn-1"}}}},
             {{"type", "block-dirty-bitmap-remove"},
              {"data", {{"node", "disk0"}, {"name", "cairn-2"}}}}})}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  json bm = Bitmaps();
  std::cout << "bitmaps after merge-back: " << bm.dump() << "\n";
  ASSERT_EQ(bm.size(), 1u);
  EXPECT_EQ(bm[0].value("name", ""), "cairn-1");
  EXPECT_TRUE(bm[0].value("recording", false));
  EXPECT_EQ(bm[0].value("count", uint64_t{0}), 3 * kChunk);  // chunks 0, 8 and 12

  // And the next run sends those three chunks.
  RecordingHandler retry(kSize);
  StartSink(&retry, "retry.sock");
  r = qmp().Execute("drive-backup", {{"job-id", "retry"},
                                     {"device", "disk0"},
                                     {"target", sink_->Uri()},
                                     {"sync", "bitmap"},
                                     {"bitmap", "cairn-1"},
                                     {"bitmap-mode", "never"},
                                     {"mode", "existing"},
                                     {"format", "raw"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ev = WaitJob("retry");
  EXPECT_FALSE(ev["data"].contains("error")) << ev.dump();
  std::vector<std::pair<uint64_t, uint64_t>> dirty = {
      {0, kChunk}, {8 * kChunk, 9 * kChunk}, {12 * kChunk, 13 * kChunk}};
  EXPECT_EQ(Covered(retry.calls()), dirty) << RangesToString(Covered(retry.calls()));
}

}  // namespace
}  // namespace cairn::client
