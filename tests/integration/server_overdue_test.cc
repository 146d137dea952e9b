// Overdue backups through the real server: a group whose newest snapshot is
// older than its expected interval is announced exactly once to a real HTTPS
// webhook peer (its certificate checked against the CA file given), not
// again after a restart, and again once a newer backup is overdue too.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <ctime>
#include <mutex>
#include <thread>

#include "server/tls.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

// An HTTPS server that records every POST to /hook.
class WebhookPeer {
 public:
  explicit WebhookPeer(const std::string& dir)
      : tls_{dir + "/hook-cert.pem", dir + "/hook-key.pem"} {
    EXPECT_TRUE(server::EnsureSelfSignedCertificate(tls_).ok());
    http_ = std::make_unique<httplib::SSLServer>(tls_.cert.c_str(), tls_.key.c_str());
    http_->Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      bodies_.push_back(json::parse(req.body, nullptr, false));
      res.status = 204;
    });
    port_ = http_->bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { http_->listen_after_bind(); });
    while (!http_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~WebhookPeer() {
    http_->stop();
    thread_.join();
  }
  int port() const { return port_; }
  const std::string& cert() const { return tls_.cert; }
  std::vector<json> Bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }
  // Waits up to `wait` for at least `n` bodies; returns all received.
  std::vector<json> WaitFor(size_t n, std::chrono::seconds wait) {
    const auto until = std::chrono::steady_clock::now() + wait;
    while (Bodies().size() < n && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Bodies();
  }

 private:
  server::TlsPaths tls_;
  std::unique_ptr<httplib::SSLServer> http_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<json> bodies_;
};

// Looks every second; the webhook on `port`, checked against `ca` if given.
std::vector<std::string> WebhookArgs(int port, const std::string& ca) {
  std::vector<std::string> args = {"--overdue-check-interval", "1", "--notify-webhook",
                                   "https://127.0.0.1:" + std::to_string(port) + "/hook"};
  if (!ca.empty()) args.insert(args.end(), {"--notify-webhook-ca", ca});
  return args;
}

// From now on the default store's groups are overdue a minute after their
// newest snapshot (set while the server runs: it reads the setting at every
// look). Set after the test's backups, so that no look sees half of them.
void SetStaleAfter60(const std::string& dir) {
  auto set = RunServerCommand(dir, {"datastore", "set", "default", "--stale-after", "60"});
  EXPECT_EQ(set.exit_code, 0) << set.output;
}

TEST(ServerOverdueTest, AnOverdueGroupIsAnnouncedOncePerEpisode) {
  TempDir dir;
  WebhookPeer peer(dir.path());
  ASSERT_GT(peer.port(), 0);
  const auto args = WebhookArgs(peer.port(), peer.cert());
  auto server = ServerProcess::Start(dir.path(), args);
  ASSERT_NE(server, nullptr);
  ApiClient admin(server->port(), server->AdminToken());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  const std::string img = MakeImage(2, 7);
  // vm/100's newest backup is an hour old: overdue. vm/200's is fresh, and
  // vm/300 has an hour of its own (datastore set --group).
  auto own = RunServerCommand(dir.path(), {"datastore", "set", "default", "--group", "vm/300",
                                           "--stale-after", "7200"});
  ASSERT_EQ(own.exit_code, 0) << own.output;
  BackupImage(admin, "vm/300", now - 3600, img);
  BackupImage(admin, "vm/100", now - 7200, img);
  BackupImage(admin, "vm/100", now - 3600, img);
  BackupImage(admin, "vm/200", now, img);
  SetStaleAfter60(dir.path());

  auto got = peer.WaitFor(1, std::chrono::seconds(20));
  ASSERT_EQ(got.size(), 1u) << server->Log();
  // A few more checks (one a second) announce nothing new.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  got = peer.Bodies();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["event"], "backup-overdue");
  EXPECT_EQ(got[0]["data"]["store"], "default");
  EXPECT_EQ(got[0]["data"]["group"], "vm/100");
  EXPECT_EQ(got[0]["data"]["last-backup"], now - 3600);
  EXPECT_EQ(got[0]["data"]["stale-after"], 60);
  EXPECT_NE(got[0]["subject"].get<std::string>().find("vm/100"), std::string::npos);
  // The groups listing flags the same group, and only it.
  auto groups = admin.Get("/api/v1/datastores/default/groups").Json();
  ASSERT_EQ(groups.size(), 3u);
  for (const auto& g : groups) {
    EXPECT_EQ(g["stale"], g["group"] == "vm/100") << g.dump();
  }

  // A restart does not announce it again.
  server->Stop(SIGTERM);
  server = ServerProcess::Start(dir.path(), args);
  ASSERT_NE(server, nullptr);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(peer.Bodies().size(), 1u);

  // A newer backup ends the episode; when that one is overdue too, it is
  // announced again, once.
  ApiClient admin2(server->port(), server->AdminToken());
  BackupImage(admin2, "vm/100", now - 1800, img);
  got = peer.WaitFor(2, std::chrono::seconds(20));
  ASSERT_EQ(got.size(), 2u) << server->Log();
  EXPECT_EQ(got[1]["data"]["last-backup"], now - 1800);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(peer.Bodies().size(), 2u);
}

TEST(ServerOverdueTest, AWebhookThatFailsIsTriedAgain) {
  TempDir dir;
  // A peer whose certificate the server does not trust (no CA file given,
  // and it is self-signed): every POST fails the TLS check.
  WebhookPeer untrusted(dir.path());
  auto server = ServerProcess::Start(dir.path(), WebhookArgs(untrusted.port(), ""));
  ASSERT_NE(server, nullptr);
  ApiClient admin(server->port(), server->AdminToken());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  BackupImage(admin, "vm/100", now - 3600, MakeImage(1, 3));
  SetStaleAfter60(dir.path());
  std::this_thread::sleep_for(std::chrono::seconds(4));
  EXPECT_TRUE(untrusted.Bodies().empty());
  const std::string log = server->Log();
  // Tried at every check, not just once.
  size_t tries = 0;
  for (size_t at = log.find("could not announce"); at != std::string::npos;
       at = log.find("could not announce", at + 1)) {
    ++tries;
  }
  EXPECT_GE(tries, 2u) << log;
}

TEST(ServerOverdueTest, BadNotifyOptionsStopTheStart) {
  TempDir dir;
  auto r = RunServerCommand(dir.path(), {"run", "--listen", "127.0.0.1:0", "--notify-webhook",
                                         "http://example.invalid/hook"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("https://"), std::string::npos) << r.output;
  r = RunServerCommand(dir.path(),
                       {"run", "--listen", "127.0.0.1:0", "--notify-mail", "a@b\nBcc: x@y"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("mail address"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cairn::testing
