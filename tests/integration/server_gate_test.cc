// The connection gate against the real cairn-server on loopback: malformed
// framing answered at once, bodies of unauthenticated requests never read,
// stalled connections holding no worker and closed on time, and the limit
// on running tasks per token (issue 17, items 5-7 and limits).

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/backup_api_testutil.h"
#include "tests/integration/raw_tls_testutil.h"
#include "tests/integration/server_process_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class ServerGateTest : public ::testing::Test {
 protected:
  void StartServer(const std::vector<std::string>& args = {}) {
    server_ = ServerProcess::Start(dir_.path(), args);
    ASSERT_NE(server_, nullptr);
    token_ = server_->AdminToken();
  }

  // Sends `request` on a new connection and reads the answer; *ms gets the
  // time from the last byte sent to the answer.
  std::string Exchange(const std::string& request, int64_t* ms = nullptr) {
    auto c = RawTls::Connect(server_->port());
    if (!c) return "";
    if (!c->Send(request)) return "";
    const int64_t t0 = NowMs();
    std::string a = c->ReadAnswer(5000);
    if (ms) *ms = NowMs() - t0;
    return a;
  }

  json Status() {
    ApiClient api(server_->port(), token_);
    auto r = api.Get("/api/v1/status");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.Json();
  }

  // Polls the status until `pred` holds or `timeout_ms` passes.
  template <typename Pred>
  json WaitStatus(Pred pred, int timeout_ms) {
    const int64_t deadline = NowMs() + timeout_ms;
    json s;
    while (NowMs() < deadline) {
      s = Status();
      if (pred(s["connections"])) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return s;
  }

  std::string Auth() const { return "Authorization: CairnToken " + token_ + "\r\n"; }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::string token_;
};

struct FramingCase {
  const char* name;
  std::string head_tail;  // headers after the request line and Host, without the final CRLF
  std::string body;       // what is sent after the head
  int status;             // with a valid token
};

// Item 7: each malformed length or transfer coding gets its 4xx in under a
// second, with and without a token, and the server keeps serving.
TEST_F(ServerGateTest, MalformedFramingIsAnsweredAtOnce) {
  StartServer();
  const std::string line = "POST /api/v1/datastores/default/verify HTTP/1.1\r\nHost: x\r\n";
  const std::vector<FramingCase> cases = {
      {"length -1", "Content-Length: -1\r\n", "", 400},
      {"length 1 TiB, 2 bytes sent", "Content-Length: 1099511627776\r\n", "{}", 413},
      {"length 47abc", "Content-Length: 47abc\r\n", "{}", 400},
      {"two lengths", "Content-Length: 2\r\nContent-Length: 3\r\n", "{}", 400},
      {"gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", "2\r\n{}\r\n0\r\n\r\n", 400},
      {"length and chunked", "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "{}", 400},
      {"chunk size -5", "Transfer-Encoding: chunked\r\n", "-5\r\n", 400},
      {"chunk size 7fffffffffffffff", "Transfer-Encoding: chunked\r\n", "7fffffffffffffff\r\n", 413},
      {"chunk size not hex", "Transfer-Encoding: chunked\r\n", "zz\r\n", 400},
      {"gzip body", "Content-Encoding: gzip\r\nContent-Length: 2\r\n", "{}", 415},
      {"folded header", "X-A: 1\r\n folded\r\nContent-Length: 2\r\n", "{}", 400},
  };
  for (const auto& c : cases) {
    for (bool with_token : {true, false}) {
      std::string req = line + c.head_tail + (with_token ? Auth() : "") + "\r\n" + c.body;
      int64_t ms = 0;
      std::string answer = Exchange(req, &ms);
      // The head's framing is checked first (400, 415); a well-formed head
      // without a token is a 401, and its body is never read.
      int want = c.status;
      const bool body_case = c.head_tail == "Transfer-Encoding: chunked\r\n";
      if (!with_token && (c.status == 413 || body_case)) want = 401;
      EXPECT_EQ(StatusOf(answer), want) << c.name << (with_token ? " (token)" : " (no token)")
                                        << "\n" << answer;
      EXPECT_LT(ms, 1000) << c.name;
      EXPECT_EQ(answer.find("/tmp"), std::string::npos) << answer;
    }
  }
  // A chunked body within the limit still works, and so does the server.
  std::string ok = Exchange("POST /api/v1/datastores/default/verify HTTP/1.1\r\nHost: x\r\n" + Auth() +
                            "Transfer-Encoding: chunked\r\n\r\n11\r\n{\"target\":\"vm/9\"}\r\n0\r\n\r\n");
  EXPECT_EQ(StatusOf(ok), 202) << ok;
  ApiClient api(server_->port(), token_);
  EXPECT_EQ(api.Get("/api/v1/version").status, 200);
}

// Item 5: without a token neither a huge chunked body nor a gzip bomb is
// read or inflated: the answer is 401 and the server's peak RSS barely moves.
TEST_F(ServerGateTest, UnauthenticatedBodiesAreNotRead) {
  StartServer();
  ApiClient api(server_->port(), token_);
  ASSERT_EQ(api.Get("/api/v1/status").status, 200);
  const int64_t hwm0 = ProcessKib(server_->pid(), "VmHWM");
  ASSERT_GT(hwm0, 0);

  // 80 MiB chunked, no token.
  {
    auto c = RawTls::Connect(server_->port());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->Send("POST /api/v1/backup/0123456789abcdef0123456789abcdef/chunk HTTP/1.1\r\n"
                        "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    const std::string piece = "100000\r\n" + std::string(1 << 20, 'a') + "\r\n";
    size_t sent = 0;
    for (int i = 0; i < 80 && c->Send(piece); ++i) sent += piece.size();
    std::string answer = c->ReadAnswer(3000);
    // Either the 401 arrived or the server dropped us before the end.
    if (!answer.empty()) {
      EXPECT_EQ(StatusOf(answer), 401) << answer;
    }
    EXPECT_LT(sent, 80u * piece.size()) << "the whole 80 MiB were taken";
  }
  // A gzip bomb: ~100 KB inflating to 100 MiB, with and without a token:
  // refused (415) for its Content-Encoding before anything is inflated.
  std::string bomb;
  {
    FILE* p = ::popen("head -c 104857600 /dev/zero | gzip -9 -c", "r");
    ASSERT_NE(p, nullptr);
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) bomb.append(buf, n);
    ASSERT_EQ(::pclose(p), 0);
    ASSERT_LT(bomb.size(), 200u * 1024);
  }
  for (bool with_token : {false, true}) {
    std::string req = "POST /api/v1/datastores/default/verify HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                      "Content-Length: " + std::to_string(bomb.size()) + "\r\n" +
                      (with_token ? Auth() : "") + "\r\n" + bomb;
    std::string answer = Exchange(req);
    EXPECT_EQ(StatusOf(answer), 415) << answer;
  }
  const int64_t hwm1 = ProcessKib(server_->pid(), "VmHWM");
  std::printf("server peak RSS: %lld KiB before, %lld KiB after the 80 MiB body and the bomb\n",
              static_cast<long long>(hwm0), static_cast<long long>(hwm1));
  EXPECT_LT(hwm1 - hwm0, 16 * 1024) << "peak RSS grew by " << (hwm1 - hwm0) << " KiB";
  EXPECT_EQ(api.Get("/api/v1/status").status, 200);
}

// Items 6: connections stalled in the handshake or in their head hold no
// worker (two workers here, forty stalled connections), and are closed at
// their timeout; the counts go back to idle.
TEST_F(ServerGateTest, StalledConnectionsHoldNoWorkerAndTimeOut) {
  StartServer({"--threads", "2", "--handshake-timeout-ms", "1500", "--header-timeout-ms", "1500"});
  std::vector<int> tcp;
  std::vector<std::unique_ptr<RawTls>> heads;
  for (int i = 0; i < 20; ++i) {
    tcp.push_back(TcpConnect(server_->port()));
    ASSERT_GE(tcp.back(), 0);
    auto c = RawTls::Connect(server_->port());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->Send("POST /api/v1/datastores/default/backup HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 100\r\n"));
    heads.push_back(std::move(c));
  }
  const int64_t t0 = NowMs();
  json s = Status();
  EXPECT_LT(NowMs() - t0, 1000);
  EXPECT_GE(s["connections"]["unauthenticated"].get<int64_t>(), 40) << s.dump();
  EXPECT_GE(s["connections"]["handshake"].get<int64_t>(), 20) << s.dump();
  // Every stalled connection is closed by the server.
  for (int fd : tcp) EXPECT_TRUE(PeerClosed(fd, 5000));
  for (auto& c : heads) EXPECT_TRUE(PeerClosed(c->fd(), 5000));
  s = WaitStatus([](const json& c) { return c["unauthenticated"] == 0 && c["handshake"] == 0; },
                 5000);
  EXPECT_EQ(s["connections"]["unauthenticated"], 0) << s.dump();
  EXPECT_EQ(s["connections"]["handshake"], 0) << s.dump();
  EXPECT_GE(s["connections"]["timed-out"].get<int64_t>(), 40) << s.dump();
  for (int fd : tcp) ::close(fd);
}

// An address at its limit of unauthenticated connections loses the oldest
// for each new one, so a client from the same address still gets through.
TEST_F(ServerGateTest, OldestStrangerMakesRoom) {
  StartServer({"--max-unauthenticated-per-address", "8"});
  std::vector<int> tcp;
  for (int i = 0; i < 8; ++i) {
    tcp.push_back(TcpConnect(server_->port()));
    ASSERT_GE(tcp.back(), 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  json s = Status();
  EXPECT_GE(s["connections"]["evicted"].get<int64_t>(), 1) << s.dump();
  EXPECT_TRUE(PeerClosed(tcp.front(), 2000)) << "the oldest was kept";
  EXPECT_FALSE(PeerClosed(tcp.back(), 200)) << "the newest was dropped";
  for (int fd : tcp) ::close(fd);
}

// A chunked body over the endpoint's limit is cut off with 413 as soon as
// it passes the limit, with a token (1 MiB for JSON endpoints).
TEST_F(ServerGateTest, ChunkedBodyOverLimitGets413) {
  StartServer();
  auto c = RawTls::Connect(server_->port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->Send("POST /api/v1/datastores/default/verify HTTP/1.1\r\nHost: x\r\n" + Auth() +
                      "Transfer-Encoding: chunked\r\n\r\n"));
  const std::string piece = "10000\r\n" + std::string(65536, ' ') + "\r\n";
  for (int i = 0; i < 40 && c->Send(piece); ++i) {
  }
  std::string answer = c->ReadAnswer(3000);
  EXPECT_EQ(StatusOf(answer), 413) << answer;
  ApiClient api(server_->port(), token_);
  EXPECT_EQ(api.Get("/api/v1/status").status, 200);
}

// One token may run --max-tasks-per-token verify tasks at a time, and may
// start another once its task ended.
TEST_F(ServerGateTest, RunningTasksPerTokenAreLimited) {
  StartServer({"--max-tasks-per-token", "1"});
  ApiClient admin(server_->port(), token_);
  // Enough data that a verify runs for a while: 48 chunks (~190 MiB).
  BackupImage(admin, "vm/1", 1790000000, MakeImage(48, 1));
  auto first = admin.PostJson("/api/v1/datastores/default/verify", json::object());
  ASSERT_EQ(first.status, 202) << first.body;
  auto second = admin.PostJson("/api/v1/datastores/default/verify", json::object());
  EXPECT_EQ(second.status, 429) << second.body;
  EXPECT_NE(second.body.find("admin!default"), std::string::npos) << second.body;
  const std::string id = first.Json()["task"];
  for (int i = 0; i < 600; ++i) {
    auto t = admin.Get("/api/v1/tasks/" + id);
    if (t.status == 200 && t.Json()["state"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto third = admin.PostJson("/api/v1/datastores/default/verify", json::object());
  EXPECT_EQ(third.status, 202) << third.body;
}

}  // namespace
}  // namespace cairn::testing
