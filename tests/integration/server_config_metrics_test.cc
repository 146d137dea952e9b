// The service side of the real cairn-server (issue 12): GET /metrics checked
// with promtool and against what was backed up; who may read it; a
// datastore created while the server runs serves at once; the settings file
// (flags win over it; an unknown key stops the start); SIGHUP loads a new
// certificate (the fingerprint the server shows changes, clients see it).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <regex>
#include <thread>

#include "server/tls.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// `promtool check metrics` on `page`: "" when it passes, else its output.
std::string Promtool(const std::string& dir, const std::string& page) {
  const std::string path = dir + "/metrics.txt";
  WriteFile(path, page);
  const std::string cmd = "promtool check metrics < " + path + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return "cannot run promtool";
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  int status = ::pclose(p);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  return "promtool failed (status " + std::to_string(status) + "):\n" + out;
}

// The value of the sample `name{labels}` on `page`; -1 when absent.
double Sample(const std::string& page, const std::string& series) {
  size_t pos = page.find("\n" + series + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(page.substr(pos + series.size() + 2));
}

TEST(ServerMetricsTest, MetricsPassPromtoolAndShowTheBackup) {
  TempDir dir;
  auto server = ServerProcess::Start(dir.path());
  ASSERT_TRUE(server);
  ApiClient admin(server->port(), server->AdminToken());
  const std::string img = MakeImage(3, 7);
  const int64_t t = 1'800'000'000;
  std::string snapshot = BackupImage(admin, "vm/100", t, img);
  ASSERT_FALSE(snapshot.empty());
  ASSERT_EQ(admin.PostTask("/api/v1/datastores/default/gc", json::object()).status, 200);

  auto r = admin.Get("/metrics");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Promtool(dir.path(), r.body), "");
  EXPECT_EQ(Sample(r.body, R"(cairn_group_last_backup_timestamp_seconds{store="default",group="vm/100"})"),
            static_cast<double>(t))
      << r.body;
  EXPECT_EQ(Sample(r.body, R"(cairn_group_snapshots{store="default",group="vm/100"})"), 1);
  EXPECT_GE(Sample(r.body, R"(cairn_datastore_chunks{store="default"})"), 3) << r.body;
  EXPECT_EQ(Sample(r.body, R"(cairn_datastore_last_gc_success{store="default"})"), 1);
  EXPECT_GT(Sample(r.body, R"(cairn_datastore_total_bytes{store="default"})"), 0);
  EXPECT_GT(Sample(r.body, R"(cairn_tasks{kind="gc",state="ok"})"), 0) << r.body;
  // The chunks went up through the backup endpoints and were counted
  // (compressed: fewer bytes than the image, but some).
  EXPECT_GT(Sample(r.body, "cairn_upload_bytes_total"), 0);
  EXPECT_GT(Sample(r.body, R"(cairn_http_requests_total{endpoint="backup",code="200"})"), 0)
      << r.body;
  EXPECT_NE(r.body.find(R"(cairn_http_request_duration_seconds_bucket{endpoint="backup",le="+Inf"})"),
            std::string::npos);

  // A Backup token may not read them; an Audit token may.
  ApiClient backup(server->port(), AddUserToken(dir.path(), "bob", "Backup"));
  EXPECT_EQ(backup.Get("/metrics").status, 403);
  ApiClient audit(server->port(), AddUserToken(dir.path(), "metrics", "Audit"));
  auto a = audit.Get("/metrics");
  EXPECT_EQ(a.status, 200) << a.body;
  ApiClient nobody(server->port(), "");
  EXPECT_EQ(nobody.Get("/metrics").status, 401);
}

TEST(ServerMetricsTest, ADatastoreCreatedWhileRunningServesAtOnce) {
  TempDir dir;
  auto server = ServerProcess::Start(dir.path());
  ASSERT_TRUE(server);
  auto created = RunServerCommand(dir.path(), {"datastore", "create", "second",
                                               dir.path() + "/second-store"});
  ASSERT_EQ(created.exit_code, 0) << created.output;
  ApiClient admin(server->port(), server->AdminToken());
  auto list = admin.Get("/api/v1/datastores");
  ASSERT_EQ(list.status, 200);
  bool seen = false;
  for (const auto& d : list.Json()) seen |= d.value("name", "") == "second";
  EXPECT_TRUE(seen) << list.body;
  auto start = admin.PostJson("/api/v1/datastores/second/backup",
                              {{"group", "vm/1"}, {"time", 1'800'000'000}});
  EXPECT_EQ(start.status, 201) << start.body;
}

TEST(ServerConfigTest, FlagsWinOverTheFileAndUnknownKeysStopTheStart) {
  TempDir dir;
  const std::string conf = dir.path() + "/server.conf";
  // The file says a port that is surely taken by nothing useful: the flag
  // (ServerProcess passes --listen 127.0.0.1:0) must win; its time zone is used.
  WriteFile(conf, "# comment\nlisten = 127.0.0.1:1\ntime-zone = Europe/Vienna\nlog-level = debug\n");
  auto server = ServerProcess::Start(dir.path(), {"--config", conf});
  ASSERT_TRUE(server);
  EXPECT_NE(server->port(), 1);
  server->Stop(SIGTERM);

  WriteFile(conf, "listen = 127.0.0.1:0\nno-such-setting = 1\n");
  auto bad = RunServerCommand(dir.path(), {"--config", conf, "run"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("unknown setting no-such-setting"), std::string::npos) << bad.output;

  WriteFile(conf, "time-zone = Mars/Olympus\n");
  auto zone = RunServerCommand(dir.path(), {"--config", conf, "run", "--listen", "127.0.0.1:0"});
  EXPECT_NE(zone.exit_code, 0) << zone.output;
}

TEST(ServerConfigTest, SighupLoadsTheNewCertificate) {
  TempDir dir;
  server::TlsPaths one{dir.path() + "/one.pem", dir.path() + "/one.key"};
  server::TlsPaths two{dir.path() + "/two.pem", dir.path() + "/two.key"};
  ASSERT_TRUE(server::EnsureSelfSignedCertificate(one).ok());
  ASSERT_TRUE(server::EnsureSelfSignedCertificate(two).ok());
  auto fp_one = server::CertificateFingerprint(one.cert);
  auto fp_two = server::CertificateFingerprint(two.cert);
  ASSERT_TRUE(fp_one.ok() && fp_two.ok());
  ASSERT_NE(*fp_one, *fp_two);
  const std::string live_cert = dir.path() + "/live.pem", live_key = dir.path() + "/live.key";
  ASSERT_EQ(std::system(("cp " + one.cert + " " + live_cert + " && cp " + one.key + " " + live_key).c_str()), 0);
  const std::string conf = dir.path() + "/server.conf";
  WriteFile(conf, "tls-cert = " + live_cert + "\ntls-key = " + live_key + "\n");
  auto server = ServerProcess::Start(dir.path(), {"--config", conf});
  ASSERT_TRUE(server);
  EXPECT_EQ(server->fingerprint(), *fp_one);

  // What a client sees: the served certificate's fingerprint.
  auto served = [&] {
    auto r = RunBinary("client/cairn",
                       {"--repo", "https://127.0.0.1:" + std::to_string(server->port()) + "/default",
                        "--fingerprint", *fp_two, "snapshots"},
                       {"CAIRN_TOKEN=" + server->AdminToken()}, dir.path());
    return r;
  };
  EXPECT_NE(served().exit_code, 0) << "the second certificate is served before the reload";
  ASSERT_EQ(std::system(("cp " + two.cert + " " + live_cert + " && cp " + two.key + " " + live_key).c_str()), 0);
  ASSERT_EQ(::kill(server->pid(), SIGHUP), 0);
  bool switched = false;
  for (int i = 0; i < 50 && !switched; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    switched = served().exit_code == 0;
  }
  EXPECT_TRUE(switched) << served().output << "\n" << server->Log();
  EXPECT_NE(server->Log().find("reload: certificate fingerprint (SHA-256) " + *fp_two),
            std::string::npos)
      << server->Log();
}

// A certificate from the admin's own CA: the client trusts it through
// --ca-file (chain and host name checked), not a pinned fingerprint.
TEST(ServerConfigTest, ClientTrustsACertificateSignedByItsCaFile) {
  TempDir dir;
  const std::string d = dir.path();
  const std::string mk =
      "cd " + d + " && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
      "for ca in ca other; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
      "-nodes -keyout $ca.key -out $ca.pem -subj /CN=$ca-test-ca -days 2 || exit 1; done && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key "
      "-out srv.csr -subj /CN=127.0.0.1 && "
      "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem "
      "-days 2 -extfile san.ext";
  ASSERT_EQ(std::system(("{ " + mk + "; } >openssl.log 2>&1").c_str()), 0);
  const std::string conf = d + "/server.conf";
  WriteFile(conf, "tls-cert = " + d + "/srv.pem\ntls-key = " + d + "/srv.key\n");
  auto server = ServerProcess::Start(d, {"--config", conf});
  ASSERT_TRUE(server);
  auto snapshots = [&](const std::string& host, std::vector<std::string> trust) {
    std::vector<std::string> args{"--repo", "https://" + host + ":" + std::to_string(server->port()) +
                                                 "/default"};
    args.insert(args.end(), trust.begin(), trust.end());
    args.push_back("snapshots");
    return RunBinary("client/cairn", args, {"CAIRN_TOKEN=" + server->AdminToken()}, d);
  };
  auto ok = snapshots("127.0.0.1", {"--ca-file", d + "/ca.pem"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  auto other = snapshots("127.0.0.1", {"--ca-file", d + "/other.pem"});
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_NE(other.output.find("signed by the CA in"), std::string::npos) << other.output;
  // Right CA, wrong name: the certificate names 127.0.0.1 only.
  auto name = snapshots("localhost", {"--ca-file", d + "/ca.pem"});
  EXPECT_NE(name.exit_code, 0) << name.output;
  auto both = snapshots("127.0.0.1", {"--ca-file", d + "/ca.pem", "--fingerprint", server->fingerprint()});
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_NE(both.output.find("not both"), std::string::npos) << both.output;
  auto missing = snapshots("127.0.0.1", {"--ca-file", d + "/nope.pem"});
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  // The pin still works on the same server.
  auto pinned = snapshots("127.0.0.1", {"--fingerprint", server->fingerprint()});
  EXPECT_EQ(pinned.exit_code, 0) << pinned.output;
}

}  // namespace
}  // namespace cairn::testing
