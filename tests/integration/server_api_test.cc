// End-to-end tests of cairn-server's API: the real binary on an ephemeral
// loopback port with TLS, driven over HTTPS.

#include <gtest/gtest.h>
#include <signal.h>

#include <random>
#include <set>
#include <thread>

#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "storage/fixed_index.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;
using storage::Digest;
using storage::kChunkSize;

// Every file below `dir` with its size, for "nothing changed" checks.
std::set<std::pair<std::string, uint64_t>> Tree(const std::string& dir) {
  std::set<std::pair<std::string, uint64_t>> out;
  std::vector<std::string> names;
  storage::Env* env = storage::Env::Default();
  if (!env->ListDir(dir, &names).ok()) return out;
  for (const auto& n : names) {
    std::string p = dir + "/" + n;
    auto st = env->Stat(p);
    if (!st.ok()) continue;
    if (st->is_dir) {
      auto sub = Tree(p);
      out.insert(sub.begin(), sub.end());
    } else {
      out.insert({p, st->size});
    }
  }
  return out;
}

class ServerApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  }

  std::string StorePath() const { return dir_.path() + "/stores/default"; }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
};

TEST_F(ServerApiTest, FullBackupThenRestoreIsByteIdentical) {
  std::string img = MakeImage(5, 1);
  json s = StartBackup(*admin_, "vm/100", 1800000000);
  EXPECT_TRUE(s["previous"].is_null());
  std::string sid = s["session"];
  EXPECT_EQ(UploadImage(*admin_, sid, "drive0.fidx", img, {}), 5u);
  auto fin = admin_->PostJson("/api/v1/backup/" + sid + "/finish", {{"client", {{"x", 1}}}});
  ASSERT_EQ(fin.status, 200) << fin.body;
  std::string snapshot = fin.Json()["snapshot"];
  EXPECT_EQ(snapshot, "vm/100/2027-01-15T08:00:00Z");

  auto list = admin_->Get("/api/v1/datastores/default/snapshots?group=vm/100");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.Json().size(), 1u);
  EXPECT_EQ(list.Json()[0]["size"], img.size());
  EXPECT_EQ(list.Json()[0]["owner"], "admin!default");

  EXPECT_EQ(Restore(*admin_, snapshot, "drive0.fidx"), img);
}

TEST_F(ServerApiTest, IncrementalUploadsOnlyNewChunks) {
  std::string img = MakeImage(6, 2);
  std::string sid = StartBackup(*admin_, "vm/101", 1800000000)["session"];
  UploadImage(*admin_, sid, "drive0.fidx", img, {});
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);

  std::string img2 = img;
  for (size_t i = 0; i < 1000; ++i) img2[kChunkSize + i] = 'X';  // chunk 1 changes
  json s2 = StartBackup(*admin_, "vm/101", 1800000100);
  ASSERT_FALSE(s2["previous"].is_null());
  std::string sid2 = s2["session"];
  auto prev = admin_->Get("/api/v1/backup/" + sid2 + "/previous-index?archive=drive0.fidx");
  ASSERT_EQ(prev.status, 200);
  auto pidx = storage::FixedIndex::Parse(prev.body);
  ASSERT_TRUE(pidx.ok());
  std::set<Digest> known;
  for (uint64_t i = 0; i < pidx->chunk_count(); ++i) known.insert(pidx->digest(i));
  EXPECT_EQ(UploadImage(*admin_, sid2, "drive0.fidx", img2, known), 1u);
  auto fin = admin_->PostJson("/api/v1/backup/" + sid2 + "/finish", json::object());
  ASSERT_EQ(fin.status, 200) << fin.body;
  EXPECT_EQ(fin.Json()["stats"]["chunks-uploaded"], 1);
  EXPECT_EQ(fin.Json()["stats"]["chunks-new"], 1);

  EXPECT_EQ(Restore(*admin_, "vm/101/2027-01-15T08:00:00Z", "drive0.fidx"), img);
  EXPECT_EQ(Restore(*admin_, "vm/101/2027-01-15T08:01:40Z", "drive0.fidx"), img2);
}

TEST_F(ServerApiTest, BadInputGets4xxAndChangesNothing) {
  std::string img = MakeImage(2, 3);
  std::string sid = StartBackup(*admin_, "vm/102", 1800000000)["session"];
  auto before = Tree(StorePath());
  std::string chunk = ChunkOf(img, 0);
  Digest d = storage::Sha256(chunk);
  std::string blob = storage::EncodeBlob(chunk);
  std::string base = "/api/v1/backup/" + sid + "/chunk?digest=";
  auto post = [&](const std::string& digest, size_t size, const std::string& body) {
    return admin_->Post(base + digest + "&size=" + std::to_string(size), body,
                        "application/octet-stream");
  };
  struct Case {
    const char* what;
    ApiClient::Response r;
  };
  std::string bad_crc = blob;
  bad_crc[bad_crc.size() / 2] ^= 1;
  std::vector<Case> cases = {
      {"wrong digest", post(storage::Sha256("other").ToHex(), chunk.size(), blob)},
      {"wrong size", post(d.ToHex(), chunk.size() - 1, blob)},
      {"truncated body", post(d.ToHex(), chunk.size(), blob.substr(0, blob.size() / 2))},
      {"bad crc", post(d.ToHex(), chunk.size(), bad_crc)},
      {"body over 16 MiB", post(d.ToHex(), chunk.size(), std::string(17 << 20, 'a'))},
      {"size over 16 MiB", post(d.ToHex(), 17 << 20, blob)},
      {"digest not hex", post(std::string(64, 'Z'), chunk.size(), blob)},
      {"malformed json", admin_->Post("/api/v1/datastores/default/backup", "{\"group\": ")},
      {"json not object", admin_->Post("/api/v1/datastores/default/backup", "[1,2]")},
      {"unknown session",
       admin_->Post("/api/v1/backup/0123456789abcdef0123456789abcdef/chunk?digest=" + d.ToHex() +
                        "&size=1",
                    blob, "application/octet-stream")},
      {"group with ..", admin_->PostJson("/api/v1/datastores/default/backup", {{"group", "vm/.."}})},
      {"group with /", admin_->PostJson("/api/v1/datastores/default/backup", {{"group", "vm/a/b"}})},
      {"group with NUL",
       admin_->PostJson("/api/v1/datastores/default/backup", {{"group", std::string("vm/a\0b", 6)}})},
      {"store with ..", admin_->Get("/api/v1/datastores/%2e%2e/groups")},
      {"archive with ..", admin_->Post("/api/v1/backup/" + sid + "/index?archive=..%2Fx.fidx", "x",
                                       "application/octet-stream")},
      {"index garbage", admin_->Post("/api/v1/backup/" + sid + "/index?archive=d.fidx", "garbage",
                                     "application/octet-stream")},
  };
  for (const auto& c : cases) {
    EXPECT_GE(c.r.status, 400) << c.what << ": " << c.r.body;
    EXPECT_LT(c.r.status, 500) << c.what << ": " << c.r.body;
    json j = c.r.Json();
    EXPECT_TRUE(j.is_object() && j.contains("error") && !j["error"].get<std::string>().empty())
        << c.what << ": " << c.r.body;
  }
  EXPECT_EQ(Tree(StorePath()), before);

  ApiClient anonymous(server_->port(), "");
  EXPECT_EQ(anonymous.Get("/api/v1/datastores").status, 401);
  ApiClient wrong(server_->port(), "admin!default:" + std::string(64, '0'));
  EXPECT_EQ(wrong.Get("/api/v1/datastores").status, 401);
  EXPECT_EQ(wrong.Post(base + d.ToHex() + "&size=" + std::to_string(chunk.size()), blob,
                       "application/octet-stream").status, 401);
  EXPECT_EQ(Tree(StorePath()), before);
}

TEST_F(ServerApiTest, IndexWithUnregisteredDigestIsRejected) {
  std::string img = MakeImage(3, 4);
  std::string sid = StartBackup(*admin_, "vm/103", 1800000000)["session"];
  storage::FixedIndexWriter w(img.size());
  for (size_t i = 0; i < ChunkCount(img); ++i) {
    std::string chunk = ChunkOf(img, i);
    Digest d = storage::Sha256(chunk);
    ASSERT_TRUE(w.Set(i, d).ok());
    if (i == 1) continue;  // never uploaded
    auto r = admin_->Post("/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex() + "&size=" +
                              std::to_string(chunk.size()),
                          storage::EncodeBlob(chunk), "application/octet-stream");
    ASSERT_LT(r.status, 300) << r.body;
  }
  auto r = admin_->Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx", *w.Finish(1),
                        "application/octet-stream");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find(storage::Sha256(ChunkOf(img, 1)).ToHex()), std::string::npos);
  EXPECT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 400);
}

TEST_F(ServerApiTest, SecondSessionOnOneGroupConflicts) {
  std::string sid = StartBackup(*admin_, "vm/104", 1800000000)["session"];
  auto r = admin_->PostJson("/api/v1/datastores/default/backup",
                            {{"group", "vm/104"}, {"time", 1800000100}});
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(admin_->Post("/api/v1/backup/" + sid + "/abort", "").status, 200);
  auto again = admin_->PostJson("/api/v1/datastores/default/backup",
                                {{"group", "vm/104"}, {"time", 1800000100}});
  EXPECT_EQ(again.status, 201) << again.body;
}

TEST_F(ServerApiTest, BackupRoleSeesAndTouchesOnlyItsOwnGroups) {
  // Admin's group.
  std::string img = MakeImage(2, 5);
  std::string sid = StartBackup(*admin_, "vm/200", 1800000000)["session"];
  UploadImage(*admin_, sid, "drive0.fidx", img, {});
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);

  ASSERT_EQ(RunServerCommand(dir_.path(), {"user", "add", "alice"}).exit_code, 0);
  auto tok = RunServerCommand(dir_.path(), {"token", "create", "alice!nightly"});
  ASSERT_EQ(tok.exit_code, 0) << tok.output;
  std::string token = tok.output.substr(0, tok.output.find('\n'));
  ASSERT_EQ(RunServerCommand(dir_.path(), {"acl", "set", "--store", "default", "--role", "Backup",
                                           "--auth", "alice!nightly"})
                .exit_code,
            0);
  ApiClient alice(server_->port(), token);

  // Her own backup works.
  std::string asid = StartBackup(alice, "vm/300", 1800000000)["session"];
  UploadImage(alice, asid, "drive0.fidx", img, {});
  ASSERT_EQ(alice.PostJson("/api/v1/backup/" + asid + "/finish", json::object()).status, 200);
  EXPECT_EQ(Restore(alice, "vm/300/2027-01-15T08:00:00Z", "drive0.fidx"), img);

  // She sees only her group.
  auto groups = alice.Get("/api/v1/datastores/default/groups");
  ASSERT_EQ(groups.status, 200);
  ASSERT_EQ(groups.Json().size(), 1u) << groups.body;
  EXPECT_EQ(groups.Json()[0]["group"], "vm/300");
  EXPECT_EQ(alice.Get("/api/v1/datastores/default/snapshots?group=vm/200").status, 403);
  // She cannot read, back up into, or delete others' groups, nor delete her own.
  EXPECT_EQ(alice.PostJson("/api/v1/datastores/default/reader",
                           {{"snapshot", "vm/200/2027-01-15T08:00:00Z"}}).status, 403);
  EXPECT_EQ(alice.PostJson("/api/v1/datastores/default/backup",
                           {{"group", "vm/200"}, {"time", 1800000100}}).status, 403);
  EXPECT_EQ(alice.Delete("/api/v1/datastores/default/snapshots?snapshot=" +
                         Q("vm/300/2027-01-15T08:00:00Z")).status, 403);
  EXPECT_EQ(alice.Delete("/api/v1/datastores/default/snapshots?snapshot=" +
                         Q("vm/200/2027-01-15T08:00:00Z")).status, 403);
  // Both snapshots are still there.
  auto all = admin_->Get("/api/v1/datastores/default/snapshots");
  EXPECT_EQ(all.Json().size(), 2u) << all.body;
  // A reader of her snapshot cannot fetch a chunk it does not reference.
  auto rr = alice.PostJson("/api/v1/datastores/default/reader",
                           {{"snapshot", "vm/300/2027-01-15T08:00:00Z"}});
  ASSERT_EQ(rr.status, 201);
  std::string rid = rr.Json()["session"];
  EXPECT_EQ(alice.Get("/api/v1/reader/" + rid + "/chunk?digest=" + storage::Sha256("x").ToHex()).status,
            404);
}

TEST_F(ServerApiTest, KillDashNineMidSessionLosesNothingCommitted) {
  std::string img = MakeImage(3, 6);
  std::string sid = StartBackup(*admin_, "vm/400", 1800000000)["session"];
  UploadImage(*admin_, sid, "drive0.fidx", img, {});
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);

  std::string img2 = MakeImage(3, 7);
  std::string sid2 = StartBackup(*admin_, "vm/400", 1800000100)["session"];
  UploadImage(*admin_, sid2, "drive0.fidx", img2, {});  // index written, not finished
  server_->Stop(SIGKILL);

  std::vector<std::string> staging;
  ASSERT_TRUE(storage::Env::Default()->ListDir(StorePath() + "/.staging", &staging).ok());
  EXPECT_FALSE(staging.empty()) << "the killed session should have left its staging folder";

  server_ = ServerProcess::Start(dir_.path());
  ASSERT_NE(server_, nullptr);
  admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  ASSERT_TRUE(storage::Env::Default()->ListDir(StorePath() + "/.staging", &staging).ok());
  EXPECT_TRUE(staging.empty());
  auto list = admin_->Get("/api/v1/datastores/default/snapshots?group=vm/400");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.Json().size(), 1u) << list.body;
  EXPECT_EQ(Restore(*admin_, "vm/400/2027-01-15T08:00:00Z", "drive0.fidx"), img);
}

TEST_F(ServerApiTest, BaseSnapshotCannotBeDeletedWhileASessionUsesIt) {
  std::string img = MakeImage(2, 8);
  std::string snap = BackupImage(*admin_, "vm/600", 1800000000, img);
  ASSERT_NE(snap, "");
  std::string sid = StartBackup(*admin_, "vm/600", 1800000100)["session"];
  auto del = admin_->Delete("/api/v1/datastores/default/snapshots?snapshot=" + Q(snap));
  EXPECT_EQ(del.status, 409) << del.body;
  ASSERT_EQ(admin_->Post("/api/v1/backup/" + sid + "/abort", "").status, 200);
  // Protected: still refused; unprotected: deleted.
  ASSERT_EQ(admin_->Put("/api/v1/datastores/default/snapshots/protected?snapshot=" + Q(snap),
                        {{"protected", true}}).status, 200);
  EXPECT_EQ(admin_->Delete("/api/v1/datastores/default/snapshots?snapshot=" + Q(snap)).status, 409);
  auto notes = admin_->Put("/api/v1/datastores/default/snapshots/notes?snapshot=" + Q(snap),
                           {{"notes", "before the upgrade"}});
  ASSERT_EQ(notes.status, 200) << notes.body;
  EXPECT_EQ(notes.Json()["notes"], "before the upgrade");
  EXPECT_EQ(notes.Json()["protected"], true);
  ASSERT_EQ(admin_->Put("/api/v1/datastores/default/snapshots/protected?snapshot=" + Q(snap),
                        {{"protected", false}}).status, 200);
  EXPECT_EQ(admin_->Delete("/api/v1/datastores/default/snapshots?snapshot=" + Q(snap)).status, 200);
  EXPECT_EQ(admin_->Get("/api/v1/datastores/default/snapshots?group=vm/600").Json().size(), 0u);
}

TEST(ServerSessionTimeoutTest, IdleSessionIsAbortedAndItsStagingRemoved) {
  TempDir dir;
  auto server = ServerProcess::Start(dir.path(), {"--session-timeout", "1"});
  ASSERT_NE(server, nullptr);
  ApiClient admin(server->port(), server->AdminToken());
  std::string sid = StartBackup(admin, "vm/700", 1800000000)["session"];
  std::vector<std::string> staging;
  ASSERT_TRUE(storage::Env::Default()->ListDir(dir.path() + "/stores/default/.staging", &staging).ok());
  EXPECT_EQ(staging.size(), 1u);
  std::this_thread::sleep_for(std::chrono::seconds(4));
  ASSERT_TRUE(storage::Env::Default()->ListDir(dir.path() + "/stores/default/.staging", &staging).ok());
  EXPECT_TRUE(staging.empty());
  EXPECT_EQ(admin.Get("/api/v1/backup/" + sid + "/stats").status, 404);
  // The group is free again.
  EXPECT_EQ(admin.PostJson("/api/v1/datastores/default/backup",
                           {{"group", "vm/700"}, {"time", 1800000100}}).status, 201);
}

TEST_F(ServerApiTest, SigtermAbortsRunningSessionsCleanly) {
  std::string sid = StartBackup(*admin_, "vm/500", 1800000000)["session"];
  int status = server_->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server_->Log();
  std::vector<std::string> staging;
  ASSERT_TRUE(storage::Env::Default()->ListDir(StorePath() + "/.staging", &staging).ok());
  EXPECT_TRUE(staging.empty());
}

}  // namespace
}  // namespace cairn::testing
