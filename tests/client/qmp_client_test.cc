#include "client/qmp_client.h"

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

#include "tests/client/qemu_testutil.h"

namespace cairn::client {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing::kQemuTimeout;
using testing::Qcow2Blockdev;
using testing::QemuVm;
using testing::RunCommand;
using testing::ShortTempDir;

constexpr const char* kGreeting =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"test\"}, \"capabilities\": [\"oob\"]}}\r\n";

// The QEMU side of a connection, scripted by a test.
class FakePeer {
 public:
  explicit FakePeer(int fd) : fd_(fd) {}
  void Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }
  // Sends `data` a few bytes at a time with pauses: partial reads.
  void SendTrickle(const std::string& data, size_t step) {
    for (size_t i = 0; i < data.size(); i += step) {
      Send(data.substr(i, step));
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  // The next command line from the client; null on EOF or after 10 s.
  json ReadCommand() {
    for (;;) {
      size_t eol = buf_.find("\r\n");
      if (eol != std::string::npos) {
        json j = json::parse(buf_.substr(0, eol), nullptr, false);
        buf_.erase(0, eol + 2);
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
  static std::string Answer(const json& cmd, const json& ret) {
    return json{{"return", ret}, {"id", cmd["id"]}}.dump() + "\r\n";
  }
  // Greeting and the qmp_capabilities exchange.
  void Negotiate() {
    Send(kGreeting);
    json c = ReadCommand();
    EXPECT_EQ(c.value("execute", ""), "qmp_capabilities");
    Send(Answer(c, json::object()));
  }
  void Close() {
    ::close(fd_);
    fd_ = -1;
  }
  ~FakePeer() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_;
  std::string buf_;
};

// Listens on a unix socket and runs `script` on the first connection.
class FakeQmpServer {
 public:
  FakeQmpServer(const std::string& path, std::function<void(FakePeer&)> script,
                milliseconds listen_after = milliseconds(0)) {
    thread_ = std::thread([=] {
      std::this_thread::sleep_for(listen_after);
      int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
      if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
          ::listen(lfd, 1) != 0) {
        ADD_FAILURE() << "fake server cannot listen on " << path;
        ::close(lfd);
        return;
      }
      pollfd p{lfd, POLLIN, 0};
      if (::poll(&p, 1, 10000) == 1) {
        FakePeer peer(::accept(lfd, nullptr, nullptr));
        script(peer);
      }
      ::close(lfd);
    });
  }
  ~FakeQmpServer() { thread_.join(); }

 private:
  std::thread thread_;
};

class QmpClientFakeTest : public ::testing::Test {
 protected:
  std::string Path() { return dir_.Join("qmp.sock"); }
  Result<std::unique_ptr<QmpClient>> Connect(QmpClient::Options o = {}) {
    o.connect_wait = std::chrono::seconds(10);
    if (o.timeout == QmpClient::Options().timeout) o.timeout = std::chrono::seconds(10);
    return QmpClient::Connect(Path(), o);
  }
  ShortTempDir dir_;
};

TEST_F(QmpClientFakeTest, PartialReadsAndEventsBeforeTheAnswer) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.SendTrickle(kGreeting, 1);
    json c = p.ReadCommand();
    p.SendTrickle(FakePeer::Answer(c, json::object()), 3);
    c = p.ReadCommand();
    EXPECT_EQ(c.value("execute", ""), "query-thing");
    EXPECT_EQ(c["arguments"], json({{"x", 1}}));
    std::string both =
        "{\"event\": \"E1\", \"data\": {\"n\": 1}, \"timestamp\": {\"seconds\": 1}}\r\n" +
        FakePeer::Answer(c, {{"ok", true}}) + "{\"event\": \"E2\", \"data\": {\"n\": 2}}\r\n";
    p.SendTrickle(both, 7);
    p.ReadCommand();  // until the client hangs up
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->version().major, 7);
  EXPECT_EQ((*c)->version().minor, 2);
  EXPECT_EQ((*c)->version().micro, 22);
  EXPECT_EQ((*c)->greeting()["capabilities"], json::array({"oob"}));
  auto r = (*c)->Execute("query-thing", {{"x", 1}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, json({{"ok", true}}));
  auto e1 = (*c)->WaitEvent("E1", milliseconds(1000));
  ASSERT_TRUE(e1.ok()) << e1.status().ToString();
  EXPECT_EQ((*e1)["data"]["n"], 1);
  auto e2 = (*c)->WaitEvent("E2", milliseconds(5000));  // arrives after the answer
  ASSERT_TRUE(e2.ok()) << e2.status().ToString();
  EXPECT_EQ((*e2)["data"]["n"], 2);
}

TEST_F(QmpClientFakeTest, SeveralObjectsInOneReadPrettyPrintingAndStringsWithBraces) {
  const std::string tricky = "a}b{c\"d\\e[f]\r\n\u00e9 {\"event\": \"fake\"}";
  FakeQmpServer server(Path(), [&](FakePeer& p) {
    p.Send(kGreeting);
    json c = p.ReadCommand();
    // The answer, then two events, in one write; the answer pretty-printed.
    p.Send(json{{"return", json::object()}, {"id", c["id"]}}.dump(2) + "\n" +
           json{{"event", "A"}, {"data", {{"s", tricky}}}}.dump() + "\r\n" +
           json{{"event", "B"}, {"data", {{"list", {1, 2, {{"x", "]"}}}}}}}.dump(4));
    c = p.ReadCommand();
    p.Send(FakePeer::Answer(c, tricky));
    p.ReadCommand();
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("echo");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, tricky);
  auto events = (*c)->TakeEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["event"], "A");
  EXPECT_EQ(events[0]["data"]["s"], tricky);
  EXPECT_EQ(events[1]["event"], "B");
  EXPECT_TRUE((*c)->TakeEvents().empty());
}

TEST_F(QmpClientFakeTest, QemuErrorsBecomeStatusWithTheMessage) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.Negotiate();
    json c = p.ReadCommand();
    p.Send(json{{"error",
                 {{"class", "CommandNotFound"}, {"desc", "The command nope has not been found"}}},
                {"id", c["id"]}}
               .dump() +
           "\r\n");
    c = p.ReadCommand();
    p.Send(json{{"error", {{"class", "GenericError"}, {"desc", "Bitmap 'b' already exists"}}},
                {"id", c["id"]}}
               .dump() +
           "\r\n");
    c = p.ReadCommand();
    p.Send(json{{"error", {{"class", "GenericError"}, {"desc", "raw"}}}, {"id", c["id"]}}.dump() +
           "\r\n");
    c = p.ReadCommand();
    p.Send(json{{"error", "not an object"}, {"id", c["id"]}}.dump() + "\r\n");
    p.ReadCommand();
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("nope");
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_EQ(r.status().message(), "nope: The command nope has not been found [CommandNotFound]");
  r = (*c)->Execute("block-dirty-bitmap-add", {{"node", "n"}, {"name", "b"}});
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("Bitmap 'b' already exists"), std::string::npos);
  auto raw = (*c)->ExecuteRaw("x", json::object(), milliseconds(5000));
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ((*raw)["error"]["class"], "GenericError");
  r = (*c)->Execute("y");
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  EXPECT_TRUE((*c)->status().ok()) << "QEMU errors do not break the connection";
}

TEST_F(QmpClientFakeTest, TimeoutKeepsTheConnectionAndDropsTheLateAnswer) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.Negotiate();
    json slow = p.ReadCommand();  // not answered in time
    json next = p.ReadCommand();
    p.Send(FakePeer::Answer(slow, "late") + FakePeer::Answer(next, "fresh"));
    p.ReadCommand();
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*c)->Execute("slow", json::object(), milliseconds(200));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(r.status().IsIOError()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("timed out"), std::string::npos);
  EXPECT_GE(took, milliseconds(190));
  EXPECT_LT(took, milliseconds(3000));
  EXPECT_TRUE((*c)->status().ok());
  r = (*c)->Execute("next");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "fresh");
}

TEST_F(QmpClientFakeTest, AnswerWithoutIdIsTakenAsTheAnswer) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.Negotiate();
    p.ReadCommand();
    p.Send("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n");
    p.ReadCommand();
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("garbled");
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("JSON parse error"), std::string::npos);
}

TEST_F(QmpClientFakeTest, HangUpBreaksTheClientForGood) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.Negotiate();
    p.ReadCommand();
    p.Close();
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("query-status");
  EXPECT_TRUE(r.status().IsIOError()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("closed"), std::string::npos) << r.status().ToString();
  EXPECT_FALSE((*c)->status().ok());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ((*c)->Execute("again").status().ToString(), r.status().ToString());
  EXPECT_EQ((*c)->WaitEvent("X", milliseconds(5000)).status().ToString(), r.status().ToString());
  EXPECT_EQ((*c)->Poll().ToString(), r.status().ToString());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(1000));
}

struct BadInput {
  const char* name;
  std::string bytes;  // sent as the answer to a command
  bool corruption;    // Corruption (else IOError)
};

void PrintTo(const BadInput& in, std::ostream* os) { *os << in.name; }

class QmpClientBadInputTest : public QmpClientFakeTest,
                              public ::testing::WithParamInterface<BadInput> {};

TEST_P(QmpClientBadInputTest, IsAClearErrorNotACrash) {
  const BadInput& in = GetParam();
  FakeQmpServer server(Path(), [&](FakePeer& p) {
    p.Negotiate();
    p.ReadCommand();
    p.Send(in.bytes);
    p.ReadCommand();  // until the client hangs up
  });
  QmpClient::Options o;
  o.max_message_bytes = 4096;
  o.timeout = milliseconds(2000);
  auto c = Connect(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("cmd");
  ASSERT_FALSE(r.ok());
  if (in.corruption) {
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    EXPECT_FALSE((*c)->status().ok());
  } else {
    EXPECT_TRUE(r.status().IsIOError()) << r.status().ToString();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, QmpClientBadInputTest,
    ::testing::Values(
        BadInput{"NotJson", "hello there\r\n", true},
        BadInput{"TopLevelArray", "[1, 2, 3]\r\n", true},
        BadInput{"TopLevelNumber", "42\r\n", true},
        BadInput{"Unbalanced", "{\"return\": [1, 2}\r\n", true},
        BadInput{"BadEscape", "{\"return\": \"\\x\"}\r\n", true},
        BadInput{"BadUtf8", "{\"return\": \"\xff\xfe\"}\r\n", true},
        BadInput{"NeitherEventNorAnswer", "{\"foo\": 1}\r\n", true},
        BadInput{"TooLarge", "{\"return\": \"" + std::string(5000, 'a') + "\"}\r\n", true},
        BadInput{"EndlessObject", "{\"return\": \"" + std::string(5000, 'a'), true},
        BadInput{"TooDeep", std::string(100, '[') + std::string(100, ']'), true},
        BadInput{"DeepInsideObject",
                 "{\"return\": " + std::string(100, '[') + std::string(100, ']') + "}\r\n", true},
        BadInput{"NulInString", std::string("{\"return\": \"a\0b\"}\r\n", 19), true},
        BadInput{"NulBetweenMessages", std::string("{\"event\": \"E\"}\0{\"return\": 1}\r\n", 30),
                 true},
        BadInput{"MismatchedBrackets", "{\"return\": [1, 2}]}\r\n", true},
        BadInput{"HalfAnswerThenSilence", "{\"return\": ", false}),
    [](const ::testing::TestParamInfo<BadInput>& i) { return std::string(i.param.name); });

TEST_F(QmpClientFakeTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 40; ++round) {
    std::string junk(static_cast<size_t>(rng() % 200), '\0');
    for (char& ch : junk) ch = "{}[]\"\\:, ae0\r\n\xff"[rng() % 15];
    std::string path = dir_.Join("r" + std::to_string(round) + ".sock");
    FakeQmpServer server(path, [&](FakePeer& p) {
      if (round % 2 == 0) {
        p.Send(junk);
      } else {
        p.Negotiate();
        p.ReadCommand();
        p.Send(junk);
      }
      std::this_thread::sleep_for(milliseconds(50));
    });
    QmpClient::Options o;
    o.timeout = milliseconds(300);
    o.connect_wait = std::chrono::seconds(10);
    auto c = QmpClient::Connect(path, o);
    if (c.ok()) {
      auto r = (*c)->Execute("cmd");
      (void)(*c)->WaitEvent("X", milliseconds(10));
      (void)r;
    }
  }
}

TEST_F(QmpClientFakeTest, WaitEventPredicateTimeoutAndQueueBound) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.Negotiate();
    json c = p.ReadCommand();
    std::string events;
    for (int i = 0; i < 6; ++i) {
      events += json{{"event", "JOB"}, {"data", {{"id", "j" + std::to_string(i)}}}}.dump() + "\r\n";
    }
    p.Send(events + FakePeer::Answer(c, json::object()));
    p.ReadCommand();
  });
  QmpClient::Options o;
  o.max_queued_events = 4;
  auto c = Connect(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE((*c)->Execute("go").ok());
  EXPECT_EQ((*c)->dropped_events(), 2u);  // j0 and j1
  auto e = (*c)->WaitEvent(
      "JOB", [](const json& ev) { return ev["data"]["id"] == "j4"; }, milliseconds(1000));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)["data"]["id"], "j4");
  auto t0 = std::chrono::steady_clock::now();
  auto none = (*c)->WaitEvent(
      "JOB", [](const json& ev) { return ev["data"]["id"] == "j0"; }, milliseconds(300));
  EXPECT_TRUE(none.status().IsIOError()) << none.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(3000));
  auto rest = (*c)->TakeEvents();
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_EQ(rest[0]["data"]["id"], "j2");
  EXPECT_EQ(rest[1]["data"]["id"], "j3");
  EXPECT_EQ(rest[2]["data"]["id"], "j5");
}

TEST_F(QmpClientFakeTest, ConnectFailures) {
  QmpClient::Options o;
  o.timeout = milliseconds(500);
  auto missing = QmpClient::Connect(dir_.Join("missing.sock"), o);
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().ToString();
  auto too_long = QmpClient::Connect("/tmp/" + std::string(200, 'q'), o);
  EXPECT_TRUE(too_long.status().IsInvalidArgument()) << too_long.status().ToString();
  {
    FakeQmpServer server(Path(), [](FakePeer& p) {
      p.Send("{\"hello\": 1}\r\n");
      p.ReadCommand();
    });
    auto c = Connect();
    EXPECT_TRUE(c.status().IsCorruption()) << c.status().ToString();
  }
  {  // a peer that accepts and says nothing
    std::string path = dir_.Join("silent.sock");
    FakeQmpServer server(path, [](FakePeer& p) { p.ReadCommand(); });
    o.connect_wait = std::chrono::seconds(10);
    auto t0 = std::chrono::steady_clock::now();
    auto c = QmpClient::Connect(path, o);
    EXPECT_TRUE(c.status().IsIOError()) << c.status().ToString();
    EXPECT_NE(c.status().message().find("greeting"), std::string::npos);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  }
}

// Seen with QEMU 7.2 on a loaded machine: a RESUME event on the socket before
// the greeting. It is an event like any other, not a broken peer.
TEST_F(QmpClientFakeTest, EventsBeforeTheGreetingAreQueued) {
  FakeQmpServer server(Path(), [](FakePeer& p) {
    p.Send("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n");
    p.Negotiate();
    p.ReadCommand();
  });
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->version().major, 7);
  auto e = (*c)->WaitEvent("RESUME", milliseconds(1000));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
}

TEST_F(QmpClientFakeTest, ConnectWaitsForASocketThatAppearsLater) {
  FakeQmpServer server(
      Path(),
      [](FakePeer& p) {
        p.Negotiate();
        p.ReadCommand();
      },
      milliseconds(300));
  auto c = Connect();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
}

// ---------------------------------------------------------------------------
// With the real QEMU.

class QmpClientQemuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = dir_.Join("disk.qcow2");
    auto r = RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", image_, "16M"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    vm_ = QemuVm::Start(dir_.path(), {Qcow2Blockdev("disk0", image_)});
    ASSERT_NE(vm_, nullptr);
  }
  void TearDown() override {
    if (vm_ && HasFailure()) std::cerr << "QEMU log:\n" << vm_->Log();
  }
  QmpClient& qmp() { return vm_->qmp(); }

  ShortTempDir dir_;
  std::string image_;
  std::unique_ptr<QemuVm> vm_;
};

TEST_F(QmpClientQemuTest, GreetingVersionAndCommands) {
  EXPECT_EQ(qmp().version().major, 7);
  EXPECT_EQ(qmp().version().minor, 2);
  auto v = qmp().Execute("query-version");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ((*v)["qemu"]["major"], 7);
  auto nodes = qmp().Execute("query-named-block-nodes", {{"flat", true}});
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString();
  bool found = false;
  for (const auto& n : *nodes) {
    if (n.value("node-name", "") == "disk0") {
      found = true;
      EXPECT_EQ(n.value("drv", ""), "qcow2");
    }
  }
  EXPECT_TRUE(found) << nodes->dump();
  // query-qmp-schema is the largest answer QEMU gives; it must fit.
  auto schema = qmp().Execute("query-qmp-schema");
  ASSERT_TRUE(schema.ok()) << schema.status().ToString();
  std::cout << "query-qmp-schema: " << schema->size() << " entries, " << schema->dump().size()
            << " bytes\n";
  bool has_drive_backup = false;
  for (const auto& e : *schema) {
    if (e.value("name", "") == "drive-backup" && e.value("meta-type", "") == "command") {
      has_drive_backup = true;
    }
  }
  EXPECT_TRUE(has_drive_backup);
}

TEST_F(QmpClientQemuTest, QemuErrorsCarryQemusMessage) {
  auto r = qmp().Execute("no-such-command");
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("The command no-such-command has not been found"),
            std::string::npos)
      << r.status().ToString();
  r = qmp().Execute("block-dirty-bitmap-add", {{"node", "nonode"}, {"name", "b"}});
  EXPECT_FALSE(r.ok());
  std::cout << "bitmap on a missing node: " << r.status().ToString() << "\n";
  r = qmp().Execute("block-dirty-bitmap-add", {{"node", "disk0"}, {"bogus-arg", 1}});
  EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  std::cout << "unknown argument: " << r.status().ToString() << "\n";
  EXPECT_TRUE(qmp().status().ok());
  EXPECT_TRUE(qmp().Execute("query-status").ok());
}

TEST_F(QmpClientQemuTest, HmpAndQemuIo) {
  auto out = qmp().Hmp("info version");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_NE(out->find("7.2"), std::string::npos) << *out;
  // qemu-io's own output goes to QEMU's stdout; the HMP answer is empty.
  auto io = qmp().Hmp("qemu-io disk0 \"write -P 0xab 0 64k\"");
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  EXPECT_EQ(*io, "");
  EXPECT_TRUE(vm_->QemuIo("disk0", "read -P 0xab 0 64k"));
  EXPECT_FALSE(vm_->QemuIo("disk0", "read -P 0xac 0 64k"));    // pattern check fails
  EXPECT_FALSE(vm_->QemuIo("disk0", "write -P 0x1 32M 64k"));  // beyond the 16 MiB disk
  // HMP's own errors are in the answer text.
  auto bad = qmp().Hmp("qemu-io nonode \"read 0 1\"");
  ASSERT_TRUE(bad.ok());
  EXPECT_NE(bad->find("Cannot find device"), std::string::npos) << *bad;
}

TEST_F(QmpClientQemuTest, EventsAreQueuedAndWaitedFor) {
  ASSERT_TRUE(qmp().Execute("stop").ok());
  ASSERT_TRUE(qmp().Execute("cont").ok());
  auto stop = qmp().WaitEvent("STOP", kQemuTimeout);
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_TRUE((*stop)["timestamp"].contains("seconds"));
  auto resume = qmp().WaitEvent("RESUME", kQemuTimeout);
  ASSERT_TRUE(resume.ok()) << resume.status().ToString();
  auto t0 = std::chrono::steady_clock::now();
  auto none = qmp().WaitEvent("BLOCK_JOB_COMPLETED", milliseconds(300));
  EXPECT_TRUE(none.status().IsIOError()) << none.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_TRUE(qmp().Poll().ok());
}

}  // namespace
}  // namespace cairn::client
