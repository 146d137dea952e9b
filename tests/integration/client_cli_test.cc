// The `cairn` command line against the real server: certificate pinning,
// credentials from flags and environment, snapshots and prune.

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

class ClientCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    img_ = MakeImage(2, 21);
    for (const char* t : {"2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", "2026-05-03T00:00:00Z"}) {
      ASSERT_NE(BackupImage(*admin_, "vm/42", *storage::ParseSnapshotTime(t), img_), "");
    }
  }

  std::vector<std::string> Env(const std::string& fingerprint) {
    return {"CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
            "CAIRN_TOKEN=" + server_->AdminToken(), "CAIRN_FINGERPRINT=" + fingerprint};
  }
  CommandResult Cairn(const std::vector<std::string>& args) {
    return RunBinary("client/cairn", args, Env(server_->fingerprint()), dir_.path());
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::string img_;
};

TEST_F(ClientCliTest, SnapshotsAsJsonAndText) {
  auto r = Cairn({"--output", "json", "snapshots", "--id", "42"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json j = json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_array()) << r.output;
  ASSERT_EQ(j.size(), 3u);
  // Newest first (issue 12's listing order).
  EXPECT_EQ(j[0]["snapshot"], "vm/42/2026-05-03T00:00:00Z");
  EXPECT_EQ(j[2]["snapshot"], "vm/42/2026-05-01T00:00:00Z");
  auto text = Cairn({"snapshots"});
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("vm/42/2026-05-03T00:00:00Z"), std::string::npos) << text.output;
}

// `restore GROUP/latest` restores the newest snapshot and names it.
TEST_F(ClientCliTest, RestoreLatestTakesTheNewestSnapshot) {
  const std::string newer = MakeImage(2, 77);
  ASSERT_NE(BackupImage(*admin_, "vm/42", *storage::ParseSnapshotTime("2026-05-04T00:00:00Z"), newer), "");
  const std::string out = dir_.path() + "/latest.raw";
  auto r = Cairn({"restore", "vm/42/latest", "drive0", out, "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json j = json::parse(r.output, nullptr, false);
  EXPECT_EQ(j.value("snapshot", ""), "vm/42/2026-05-04T00:00:00Z") << r.output;
  std::ifstream in(out, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(got == newer) << "the restored image is not the newest snapshot's";
  auto none = Cairn({"restore", "vm/7/latest", "drive0", dir_.path() + "/none.raw"});
  EXPECT_EQ(none.exit_code, 1) << none.output;
  EXPECT_NE(none.output.find("no group vm/7"), std::string::npos) << none.output;
}

TEST_F(ClientCliTest, RefusesAnUnpinnedCertificate) {
  std::string wrong = server_->fingerprint();
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  auto r = RunBinary("client/cairn", {"snapshots"}, Env(wrong), dir_.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("fingerprint"), std::string::npos) << r.output;
  // Missing pieces are named.
  auto none = RunBinary("client/cairn", {"snapshots"}, {}, dir_.path());
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.output.find("--repo"), std::string::npos) << none.output;
}

TEST_F(ClientCliTest, TokenFileAndFlags) {
  std::string token_file = dir_.path() + "/token";
  std::ofstream(token_file) << server_->AdminToken() << "\n";
  auto r = RunBinary("client/cairn",
                     {"--repo", "https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
                      "--token-file", token_file, "--fingerprint", server_->fingerprint(),
                      "--output", "json", "snapshots"},
                     {}, dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto bad = RunBinary("client/cairn",
                       {"--repo", "https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
                        "--fingerprint", server_->fingerprint(), "snapshots"},
                       {"CAIRN_TOKEN=admin!default:" + std::string(64, '0')}, dir_.path());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("401"), std::string::npos) << bad.output;
}

TEST_F(ClientCliTest, PruneDryRunThenReal) {
  auto dry = Cairn({"prune", "vm/42", "--keep-last", "1", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("remove  vm/42/2026-05-01T00:00:00Z  remove"), std::string::npos)
      << dry.output;
  EXPECT_NE(dry.output.find("keep  vm/42/2026-05-03T00:00:00Z  keep-last"), std::string::npos)
      << dry.output;
  auto real = Cairn({"--output", "json", "prune", "vm/42", "--keep-last", "1"});
  ASSERT_EQ(real.exit_code, 0) << real.output;
  EXPECT_EQ(json::parse(real.output)["removed"], 2);
  auto left = Cairn({"--output", "json", "snapshots"});
  EXPECT_EQ(json::parse(left.output).size(), 1u) << left.output;
}

}  // namespace
}  // namespace cairn::testing
