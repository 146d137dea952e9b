// Garbage collection through the real server and its command lines: after a
// prune, GC frees exactly the chunks no index references, every remaining
// snapshot restores identical, the last result is kept, roles are checked.

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "storage/env.h"
#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

class ServerGcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    // Three images that share their zero and text chunks: 4 chunks each,
    // chunk 0 random (unique per image), 1 text, 2 zero, 3 random (unique).
    for (uint32_t i = 0; i < 3; ++i) images_.push_back(MakeImage(4, 100 + i));
    snaps_.push_back(BackupImage(*admin_, "vm/1", T("2026-06-01T00:00:00Z"), images_[0]));
    snaps_.push_back(BackupImage(*admin_, "vm/1", T("2026-06-02T00:00:00Z"), images_[1]));
    snaps_.push_back(BackupImage(*admin_, "vm/1", T("2026-06-03T00:00:00Z"), images_[2]));
    for (const auto& s : snaps_) ASSERT_NE(s, "");
  }

  size_t ChunkFiles() {
    size_t n = 0;
    std::vector<std::string> prefixes, names;
    storage::Env* env = storage::Env::Default();
    std::string root = dir_.path() + "/stores/default/.chunks";
    if (!env->ListDir(root, &prefixes).ok()) return 0;
    for (const auto& p : prefixes) {
      if (!env->ListDir(root + "/" + p, &names).ok()) continue;
      for (const auto& name : names) n += name.size() == 64;
    }
    return n;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::vector<std::string> images_;
  std::vector<std::string> snaps_;
};

TEST_F(ServerGcTest, PruneThenGcFreesExactlyTheUnreferencedChunks) {
  // 3 images x 2 unique random chunks + 1 shared text + 1 shared zero chunk.
  ASSERT_EQ(ChunkFiles(), 8u);
  EXPECT_EQ(admin_->Get("/api/v1/datastores/default/gc").status, 404);  // none yet
  auto pr = admin_->PostTask("/api/v1/datastores/default/prune", {{"group", "vm/1"}, {"keep-last", 1}});
  ASSERT_EQ(pr.status, 200) << pr.body;
  // Inside the grace period nothing goes: the 4 freed chunks are pending.
  auto r1 = admin_->PostTask("/api/v1/datastores/default/gc", json::object());
  ASSERT_EQ(r1.status, 200) << r1.body;
  EXPECT_EQ(r1.Json()["removed-chunks"], 0);
  EXPECT_EQ(r1.Json()["pending-chunks"], 4);
  EXPECT_EQ(ChunkFiles(), 8u);
  // Without grace they are removed; a dry run first counts them only.
  // GC's cutoff is its start second minus grace minus 1 s: wait until the
  // chunks are older than that.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  auto dry = admin_->PostTask("/api/v1/datastores/default/gc", {{"grace-seconds", 0}, {"dry-run", true}});
  ASSERT_EQ(dry.status, 200) << dry.body;
  EXPECT_EQ(dry.Json()["removed-chunks"], 4);
  EXPECT_EQ(ChunkFiles(), 8u);
  auto r2 = admin_->PostTask("/api/v1/datastores/default/gc", {{"grace-seconds", 0}});
  ASSERT_EQ(r2.status, 200) << r2.body;
  EXPECT_EQ(r2.Json()["removed-chunks"], 4);
  EXPECT_EQ(r2.Json()["disk-chunks"], 4);
  EXPECT_EQ(ChunkFiles(), 4u);
  EXPECT_EQ(Restore(*admin_, snaps_[2], "drive0.fidx"), images_[2]);
  // The last result is kept and served.
  auto last = admin_->Get("/api/v1/datastores/default/gc");
  ASSERT_EQ(last.status, 200);
  EXPECT_EQ(last.Json()["removed-chunks"], 4);
}

TEST_F(ServerGcTest, RunningBackupKeepsTheChunksItRelies) {
  ASSERT_EQ(admin_->PostTask("/api/v1/datastores/default/prune", {{"group", "vm/1"}, {"keep-last", 1}}).status,
            200);
  // A new session uploads image 0 again (chunks that just became garbage)
  // but has not finished: GC with no grace must keep them. The wait makes
  // image 1's chunks older than the cutoff (session start - 1 s).
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  std::string sid = StartBackup(*admin_, "vm/2", T("2026-06-04T00:00:00Z"))["session"];
  UploadImage(*admin_, sid, "drive0.fidx", images_[0], {});
  auto r = admin_->PostTask("/api/v1/datastores/default/gc", {{"grace-seconds", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["removed-chunks"], 2);  // only image 1's two unique chunks
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);
  EXPECT_EQ(Restore(*admin_, "vm/2/2026-06-04T00:00:00Z", "drive0.fidx"), images_[0]);
  EXPECT_EQ(Restore(*admin_, snaps_[2], "drive0.fidx"), images_[2]);
}

TEST_F(ServerGcTest, OnlyAdminRunsGcAndCommandLinesWork) {
  ASSERT_EQ(RunServerCommand(dir_.path(), {"user", "add", "carol"}).exit_code, 0);
  auto tok = RunServerCommand(dir_.path(), {"token", "create", "carol!t"});
  ASSERT_EQ(RunServerCommand(dir_.path(), {"acl", "set", "--store", "default", "--role", "Backup",
                                           "--auth", "carol!t"}).exit_code, 0);
  ApiClient carol(server_->port(), tok.output.substr(0, tok.output.find('\n')));
  EXPECT_EQ(carol.PostTask("/api/v1/datastores/default/gc", json::object()).status, 403);

  // The client command line, with an Admin token.
  std::vector<std::string> env = {
      "CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
      "CAIRN_TOKEN=" + server_->AdminToken(), "CAIRN_FINGERPRINT=" + server_->fingerprint()};
  auto c = RunBinary("client/cairn", {"--output", "json", "gc"}, env, dir_.path());
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_EQ(json::parse(c.output)["disk-chunks"], 8);

  // The admin command line, offline.
  server_->Stop(SIGTERM);
  auto s = RunServerCommand(dir_.path(), {"gc", "default", "--output", "json"});
  ASSERT_EQ(s.exit_code, 0) << s.output;
  json j = json::parse(s.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << s.output;
  EXPECT_EQ(j["disk-chunks"], 8);
  EXPECT_EQ(j["removed-chunks"], 0);
}

}  // namespace
}  // namespace cairn::testing
