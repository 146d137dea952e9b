#include "client/guest_agent.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/client/fake_guest_agent.h"
#include "tests/client/qemu_testutil.h"

namespace cairn::client {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing::FakeGuestAgent;
using testing::ShortTempDir;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kTimeout{5000};

// One connection of a scripted agent: the test decides every byte.
class PeerConn {
 public:
  explicit PeerConn(int fd) : fd_(fd) {}
  void Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }
  // The next command (one line; a leading 0xFF is dropped); null on EOF or
  // after 10 s.
  json ReadCommand() {
    for (;;) {
      size_t eol = buf_.find('\n');
      if (eol != std::string::npos) {
        std::string line = buf_.substr(0, eol);
        buf_.erase(0, eol + 1);
        if (!line.empty() && line[0] == '\xff') line.erase(0, 1);
        json j = json::parse(line, nullptr, false);
        return j.is_discarded() ? json() : j;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) return json();
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) return json();
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  // Reads the sync command and answers it: `before`, 0xFF, the answer.
  void AnswerSync(const std::string& before = "", const std::string& after_sentinel = "") {
    json c = ReadCommand();
    if (c.is_null()) return;
    Send(before + "\xff" + after_sentinel + json{{"return", c["arguments"]["id"]}}.dump() + "\n");
  }

 private:
  int fd_;
  std::string buf_;
};

// A single-connection agent whose bytes are scripted by the test.
class ScriptedAgent {
 public:
  ScriptedAgent(const std::string& path, std::function<void(PeerConn&)> script) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    thread_ = std::thread([this, script = std::move(script)] {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) return;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      PeerConn conn(fd);
      script(conn);
      ::close(fd);
    });
  }
  ~ScriptedAgent() {
    thread_.join();
    ::close(listen_fd_);
  }

 private:
  int listen_fd_ = -1;
  std::thread thread_;
};

class GuestAgentTest : public ::testing::Test {
 protected:
  std::string Path() const { return dir_.Join("qga.sock"); }
  ShortTempDir dir_;
};

std::unique_ptr<GuestAgent> MustConnect(const std::string& path) {
  auto agent = GuestAgent::Connect(path, kTimeout);
  EXPECT_TRUE(agent.ok()) << agent.status().ToString();
  return agent.ok() ? std::move(agent).value() : nullptr;
}

// --- The fake itself ---

// Sends `bytes` to the fake on a raw connection and returns what comes back
// until `want` bytes have come (or 5 s have passed).
std::string RawExchange(const std::string& path, const std::string& bytes,
                        const std::string& want) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "(connect failed)";
  }
  EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
  std::string out;
  auto deadline = Clock::now() + kTimeout;
  while (out.size() < want.size()) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

void ExpectExchange(const std::string& path, const std::string& bytes, const std::string& want) {
  EXPECT_EQ(RawExchange(path, bytes, want), want) << "for " << bytes;
}

TEST_F(GuestAgentTest, FakeAnswersLikeQemuGa) {
  FakeGuestAgent fake(Path());
  // What Debian's qemu-ga 7.2.22 sent for these bytes (client/INGEST.md §8).
  const std::string stray =
      "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray "
      "'\\uFFFD'\"}}\n";
  ExpectExchange(Path(),
                 "\xff{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": 1234}}\n",
                 stray + "\xff{\"return\": 1234}\n");
  // A partial command, then 0xFF: one parse error covers both.
  ExpectExchange(Path(),
                 "{\"execute\": \"guest-ping\", \"arguments\": {\"foo\"\xff"
                 "{\"execute\": \"guest-ping\"}",
                 stray + "{\"return\": {}}\n");
  ExpectExchange(Path(), "{\"execute\": \"guest-ping\", \"id\": 7}\n",
                 "{\"return\": {}, \"id\": 7}\n");
  ExpectExchange(Path(), "{\"execute\": \"guest-nope\"}\n",
                 "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command "
                 "guest-nope has not been found\"}}\n");
  ExpectExchange(Path(), "{\"execute\": \"guest-sync-delimited\", \"arguments\": {}}",
                 "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'id' is "
                 "missing\"}}\n");
  ExpectExchange(Path(), "{\"execute\": \"guest-fsfreeze-status\"}\n",
                 "{\"return\": \"thawed\"}\n");
  EXPECT_EQ(fake.connections(), 6);
  EXPECT_EQ(fake.parse_errors(), 2);
}

// --- Against the fake qemu-ga ---

TEST_F(GuestAgentTest, ConnectSyncsSkippingTheParseErrorOfItsOwn0xFF) {
  FakeGuestAgent fake(Path());
  ASSERT_TRUE(fake.listening());
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  // The agent answered the client's 0xFF with an error before the sync
  // answer; the client skipped it.
  EXPECT_EQ(fake.parse_errors(), 1);
  auto r = agent->Execute("guest-ping", json::object(), kTimeout);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, json::object());
  EXPECT_EQ(fake.command_names(), (std::vector<std::string>{"guest-sync-delimited", "guest-ping"}));
  auto sync_args = fake.commands()[0].arguments;
  ASSERT_TRUE(sync_args["id"].is_number_integer());
  EXPECT_GT(sync_args["id"].get<int64_t>(), 0);
}

TEST_F(GuestAgentTest, SyncSkipsStaleBytesAndForeignIds) {
  FakeGuestAgent fake(Path());
  // What an earlier client may have left: a whole stale answer, a stale
  // sync answer (its own 0xFF and another id), a half-written answer with
  // bytes that are not JSON at all.
  fake.SetStaleBeforeSync(std::string("{\"return\": 2}\n") + "\xff{\"return\": 4242}\n" +
                          "{\"return\": {\"half\": [1, 2" + "\x01\x02 }}}]]] garbage");
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto n = agent->Freeze(kTimeout);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 2);
}

TEST_F(GuestAgentTest, SyncAgainOnTheSameConnection) {
  FakeGuestAgent fake(Path());
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  fake.SetStaleBeforeSync("{\"return\": 17}\n");
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  EXPECT_EQ(fake.parse_errors(), 3);
  EXPECT_EQ(fake.connections(), 1);
  EXPECT_TRUE(agent->Execute("guest-ping", nullptr, kTimeout).ok());
}

TEST_F(GuestAgentTest, FreezeStatusThawAndRecordedOrder) {
  FakeGuestAgent fake(Path());
  fake.SetFileSystems(3);
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);

  auto status = agent->FreezeStatus(kTimeout);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(*status, "thawed");

  auto frozen = agent->Freeze(kTimeout);
  ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
  EXPECT_EQ(*frozen, 3);
  EXPECT_TRUE(fake.frozen());
  status = agent->FreezeStatus(kTimeout);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(*status, "frozen");

  // qemu-ga refuses a second freeze while frozen; the agent stays usable.
  auto again = agent->Freeze(kTimeout);
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.status().IsInvalidArgument()) << again.status().ToString();
  EXPECT_NE(again.status().message().find("[CommandNotFound]"), std::string::npos);

  auto thawed = agent->Thaw(kTimeout);
  ASSERT_TRUE(thawed.ok()) << thawed.status().ToString();
  EXPECT_EQ(*thawed, 3);
  EXPECT_FALSE(fake.frozen());
  thawed = agent->Thaw(kTimeout);  // already thawed: nothing to do
  ASSERT_TRUE(thawed.ok());
  EXPECT_EQ(*thawed, 0);

  EXPECT_EQ(fake.freeze_count(), 1);
  EXPECT_EQ(fake.thaw_count(), 2);
  auto cmds = fake.commands();
  ASSERT_EQ(cmds.size(), 7u);
  EXPECT_EQ(cmds[2].name, "guest-fsfreeze-freeze");
  EXPECT_EQ(cmds[5].name, "guest-fsfreeze-thaw");
  for (size_t i = 1; i < cmds.size(); ++i) EXPECT_LE(cmds[i - 1].at, cmds[i].at);
}

TEST_F(GuestAgentTest, StartsFrozenGuestCanBeThawed) {
  FakeGuestAgent fake(Path());
  fake.SetFrozen(true);
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto status = agent->FreezeStatus(kTimeout);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(*status, "frozen");
  auto n = agent->Thaw(kTimeout);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_FALSE(fake.frozen());
}

TEST_F(GuestAgentTest, AgentErrorIsInvalidArgumentWithDesc) {
  FakeGuestAgent fake(Path());
  fake.FailFreeze("failed to freeze /: Operation not supported");
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto n = agent->Freeze(kTimeout);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(n.status().IsInvalidArgument()) << n.status().ToString();
  EXPECT_EQ(n.status().message(),
            "guest-fsfreeze-freeze: failed to freeze /: Operation not supported [GenericError]");
  EXPECT_FALSE(fake.frozen());
  // An agent error keeps the stream in sync.
  auto status = agent->FreezeStatus(kTimeout);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(*status, "thawed");

  auto unknown = agent->Execute("guest-no-such-command", json::object(), kTimeout);
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(unknown.status().IsInvalidArgument());
  EXPECT_NE(unknown.status().message().find("[CommandNotFound]"), std::string::npos);

  auto bad_args = agent->Execute("guest-ping", json::array({1}), kTimeout);
  EXPECT_TRUE(bad_args.status().IsInvalidArgument());
}

TEST_F(GuestAgentTest, HangTimesOutWithinTheTimeoutAndNeedsANewConnection) {
  FakeGuestAgent fake(Path());
  fake.HangOnFreeze(/*takes_effect=*/true);
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);

  auto start = Clock::now();
  auto n = agent->Freeze(milliseconds(200));
  auto took = Clock::now() - start;
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(n.status().IsIOError()) << n.status().ToString();
  EXPECT_GE(took, milliseconds(200));
  EXPECT_LT(took, milliseconds(2000));

  // Out of sync: nothing runs until a Sync() succeeds.
  auto ping = agent->Execute("guest-ping", json::object(), kTimeout);
  ASSERT_FALSE(ping.ok());
  EXPECT_TRUE(ping.status().IsIOError());
  EXPECT_NE(ping.status().message().find("Sync()"), std::string::npos);
  EXPECT_EQ(fake.command_names().back(), "guest-fsfreeze-freeze");

  // The stuck agent does not answer a sync on this connection either.
  start = Clock::now();
  Status s = agent->Sync(milliseconds(200));
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_LT(Clock::now() - start, milliseconds(2000));

  // A new connection reaches an agent that works again; the freeze had
  // taken effect after all, so the guest must be thawed.
  agent.reset();
  fake.ClearBehavior("guest-fsfreeze-freeze");
  agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto status = agent->FreezeStatus(kTimeout);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(*status, "frozen");
  auto thawed = agent->Thaw(kTimeout);
  ASSERT_TRUE(thawed.ok()) << thawed.status().ToString();
  EXPECT_FALSE(fake.frozen());
  EXPECT_EQ(fake.connections(), 2);
}

TEST_F(GuestAgentTest, LateAnswerAfterATimeoutIsDroppedBySync) {
  FakeGuestAgent fake(Path());
  FakeGuestAgent::Behavior slow;
  slow.delay = milliseconds(400);
  slow.times = 1;
  fake.SetBehavior("guest-fsfreeze-freeze", slow);
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto n = agent->Freeze(milliseconds(50));
  EXPECT_TRUE(n.status().IsIOError()) << n.status().ToString();
  // The freeze answer ({"return": 2}) arrives before the sync answer and
  // must not be taken for it, nor for the status answer.
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  auto status = agent->FreezeStatus(kTimeout);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(*status, "frozen");
  EXPECT_TRUE(agent->Thaw(kTimeout).ok());
}

TEST_F(GuestAgentTest, DelayWithinTheTimeoutIsFine) {
  FakeGuestAgent fake(Path());
  FakeGuestAgent::Behavior slow;
  slow.delay = milliseconds(100);
  fake.SetBehavior("guest-fsfreeze-thaw", slow);
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto n = agent->Thaw(kTimeout);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 0);
}

TEST_F(GuestAgentTest, SyncTimeoutOnConnect) {
  FakeGuestAgent fake(Path());
  FakeGuestAgent::Behavior hang;
  hang.hang = true;
  fake.SetBehavior("guest-sync-delimited", hang);
  auto start = Clock::now();
  auto agent = GuestAgent::Connect(Path(), milliseconds(200));
  ASSERT_FALSE(agent.ok());
  EXPECT_TRUE(agent.status().IsIOError()) << agent.status().ToString();
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
}

TEST_F(GuestAgentTest, EofIsIOErrorAndFinal) {
  FakeGuestAgent fake(Path());
  FakeGuestAgent::Behavior close;
  close.close = true;
  fake.SetBehavior("guest-fsfreeze-freeze", close);
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  auto n = agent->Freeze(kTimeout);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(n.status().IsIOError()) << n.status().ToString();
  Status s = agent->Sync(kTimeout);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_TRUE(agent->Thaw(kTimeout).status().IsIOError());
}

TEST_F(GuestAgentTest, EofDuringConnect) {
  FakeGuestAgent fake(Path());
  FakeGuestAgent::Behavior close;
  close.close = true;
  fake.SetBehavior("guest-sync-delimited", close);
  auto agent = GuestAgent::Connect(Path(), kTimeout);
  ASSERT_FALSE(agent.ok());
  EXPECT_TRUE(agent.status().IsIOError()) << agent.status().ToString();
}

TEST_F(GuestAgentTest, NoSocketIsNotFound) {
  auto agent = GuestAgent::Connect(Path(), kTimeout);
  ASSERT_FALSE(agent.ok());
  EXPECT_TRUE(agent.status().IsNotFound()) << agent.status().ToString();
}

TEST_F(GuestAgentTest, NothingListeningIsIOError) {
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, Path().data(), Path().size());
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);  // the socket file stays, nobody listens
  }
  auto agent = GuestAgent::Connect(Path(), kTimeout);
  ASSERT_FALSE(agent.ok());
  EXPECT_TRUE(agent.status().IsIOError()) << agent.status().ToString();
}

TEST_F(GuestAgentTest, BadPathIsInvalidArgument) {
  EXPECT_TRUE(GuestAgent::Connect("", kTimeout).status().IsInvalidArgument());
  EXPECT_TRUE(
      GuestAgent::Connect("/tmp/" + std::string(200, 'x'), kTimeout).status().IsInvalidArgument());
}

// --- Against a scripted agent: every byte chosen by the test ---

TEST_F(GuestAgentTest, SyncDropsForeignIdsAndGarbageAfterASentinel) {
  ScriptedAgent peer(Path(), [](PeerConn& c) {
    json sync = c.ReadCommand();
    json id = sync["arguments"]["id"];
    // After a sentinel: an answer with another id, an error, then garbage
    // that is not JSON; another sentinel, then ours.
    c.Send(
        "\xff{\"return\": 1}\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n"
        "]]] not json {{");
    std::this_thread::sleep_for(milliseconds(20));
    c.Send("\xff" + json{{"return", id}}.dump() + "\n");
    json ping = c.ReadCommand();
    if (ping.value("execute", "") == "guest-ping") c.Send("{\"return\": {}}\n");
    c.ReadCommand();  // until the client closes
  });
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  EXPECT_TRUE(agent->Execute("guest-ping", json::object(), kTimeout).ok());
}

TEST_F(GuestAgentTest, SyncAnswerInTinyPiecesAndMegabytesOfStaleBytes) {
  ScriptedAgent peer(Path(), [](PeerConn& c) {
    json sync = c.ReadCommand();
    // 3 MiB of stale bytes without a sentinel: streamed away, not buffered.
    c.Send(std::string(3u << 20, '{'));
    std::string answer = "\xff" + json{{"return", sync["arguments"]["id"]}}.dump() + "\n";
    for (char ch : answer) {
      c.Send(std::string(1, ch));
      std::this_thread::sleep_for(milliseconds(1));
    }
    c.ReadCommand();
  });
  auto agent = MustConnect(Path());
  EXPECT_NE(agent, nullptr);
}

// The answer to a ping is `bytes`; the Execute must fail with Corruption
// (or IOError), never crash, and a Sync() afterwards must bring the agent
// back.
void ExpectBadAnswerRecovers(const std::string& path, const std::string& bytes) {
  ScriptedAgent peer(path, [&bytes](PeerConn& c) {
    c.AnswerSync();
    if (c.ReadCommand().is_null()) return;
    c.Send(bytes);
    c.AnswerSync();  // the client resyncs
    json ping = c.ReadCommand();
    if (!ping.is_null()) c.Send("{\"return\": {}}\n");
    c.ReadCommand();
  });
  auto agent = MustConnect(path);
  ASSERT_NE(agent, nullptr);
  auto r = agent->Execute("guest-ping", json::object(), milliseconds(1000));
  ASSERT_FALSE(r.ok()) << "answer accepted: " << r->dump();
  EXPECT_TRUE(r.status().IsCorruption() || r.status().IsIOError()) << r.status().ToString();
  EXPECT_TRUE(agent->Execute("guest-ping", json::object(), kTimeout).status().IsIOError());
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  auto again = agent->Execute("guest-ping", json::object(), kTimeout);
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

TEST_F(GuestAgentTest, GarbageAnswerIsCorruption) { ExpectBadAnswerRecovers(Path(), "nonsense\n"); }
TEST_F(GuestAgentTest, NonObjectAnswerIsCorruption) { ExpectBadAnswerRecovers(Path(), "[1, 2]\n"); }
TEST_F(GuestAgentTest, UnbalancedAnswerIsCorruption) {
  ExpectBadAnswerRecovers(Path(), "{\"return\": ]\n");
}
TEST_F(GuestAgentTest, MalformedJsonIsCorruption) {
  ExpectBadAnswerRecovers(Path(), "{\"return\": 1 2 3}\n");
}
TEST_F(GuestAgentTest, InvalidUtf8IsCorruption) {
  ExpectBadAnswerRecovers(Path(), "{\"return\": \"a\xff\xfe\"}\n");
}
TEST_F(GuestAgentTest, AnswerWithoutReturnOrErrorIsCorruption) {
  ExpectBadAnswerRecovers(Path(), "{\"greeting\": 1}\n");
}
TEST_F(GuestAgentTest, OversizedAnswerIsCorruption) {
  ExpectBadAnswerRecovers(Path(), "{\"return\": \"" + std::string(2u << 20, 'a') + "\"}\n");
}
TEST_F(GuestAgentTest, DeepNestingIsCorruption) {
  ExpectBadAnswerRecovers(
      Path(), "{\"return\": " + std::string(100000, '[') + std::string(100000, ']') + "}\n");
}

TEST_F(GuestAgentTest, WrongTypedResultsAreCorruption) {
  ScriptedAgent peer(Path(), [](PeerConn& c) {
    const char* answers[] = {"{\"return\": \"many\"}\n", "{\"return\": 99999999999}\n",
                             "{\"return\": -1}\n", "{\"return\": \"melting\"}\n"};
    for (const char* a : answers) {
      c.AnswerSync();
      if (c.ReadCommand().is_null()) return;
      c.Send(a);
    }
    c.ReadCommand();
  });
  auto agent = MustConnect(Path());
  ASSERT_NE(agent, nullptr);
  EXPECT_TRUE(agent->Freeze(kTimeout).status().IsCorruption());
  // A well-formed answer of the wrong type leaves the stream in sync; the
  // Syncs here just follow the script.
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  EXPECT_TRUE(agent->Thaw(kTimeout).status().IsCorruption());
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  EXPECT_TRUE(agent->Thaw(kTimeout).status().IsCorruption());
  ASSERT_TRUE(agent->Sync(kTimeout).ok());
  EXPECT_TRUE(agent->FreezeStatus(kTimeout).status().IsCorruption());
}

TEST_F(GuestAgentTest, RandomBytesNeverCrash) {
  std::mt19937 rng(20240611);
  const std::string alphabet =
      "{}[]\":,\\ \n\xff"
      "0123456789abcdefreturnerror";
  for (int round = 0; round < 150; ++round) {
    std::string bytes;
    const size_t len = rng() % 300;
    for (size_t i = 0; i < len; ++i) {
      bytes.push_back(rng() % 4 == 0 ? static_cast<char>(rng() % 256)
                                     : alphabet[rng() % alphabet.size()]);
    }
    const bool before_sync = round % 2 == 0;
    std::string path = dir_.Join("r" + std::to_string(round));
    ScriptedAgent peer(path, [&](PeerConn& c) {
      if (before_sync) {
        // Hostile bytes in the sync answer, after the sentinel.
        c.ReadCommand();
        c.Send("\xff" + bytes);
        return;  // and close
      }
      c.AnswerSync();
      if (c.ReadCommand().is_null()) return;
      c.Send(bytes);
    });
    auto agent = GuestAgent::Connect(path, milliseconds(1000));
    if (!agent.ok()) continue;
    (void)(*agent)->Execute("guest-ping", json::object(), milliseconds(200));
    (void)(*agent)->Thaw(milliseconds(50));
  }
}

}  // namespace
}  // namespace cairn::client
