// Listings are served from the catalog (issue 16): after backups, protection,
// notes, a delete, a prune and a verify through the real server, the groups
// and snapshots it lists equal what it lists after the catalog was rebuilt
// from the folder alone (`cairn-server reindex`). A server killed with
// changes it had no chance to record reindexes at its next start. Pages of
// one group's snapshots.

#include <gtest/gtest.h>
#include <signal.h>

#include "storage/env.h"
#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

class ServerListingTest : public ::testing::Test {
 protected:
  void SetUp() override { Restart(); }
  void Restart() {
    admin_.reset();
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  }
  // Both views, as the API answers them.
  json Listing() {
    auto groups = admin_->Get("/api/v1/datastores/default/groups");
    auto snaps = admin_->Get("/api/v1/datastores/default/snapshots");
    EXPECT_EQ(groups.status, 200) << groups.body;
    EXPECT_EQ(snaps.status, 200) << snaps.body;
    return {{"groups", groups.Json()}, {"snapshots", snaps.Json()}};
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
};

TEST_F(ServerListingTest, ListingEqualsAFreshReindex) {
  const std::string img = MakeImage(2, 5);
  for (const char* t : {"2026-04-01T10:00:00Z", "2026-04-02T10:00:00Z", "2026-04-03T10:00:00Z"}) {
    ASSERT_NE(BackupImage(*admin_, "vm/1", T(t), img), "");
  }
  for (const char* t : {"2026-04-01T11:00:00Z", "2026-04-02T11:00:00Z", "2026-04-03T11:00:00Z"}) {
    ASSERT_NE(BackupImage(*admin_, "vm/2", T(t), MakeImage(1, 9)), "");
  }
  ASSERT_NE(BackupImage(*admin_, "ct/web", T("2026-04-04T00:00:00Z"), img), "");
  const std::string q = "?snapshot=";
  ASSERT_EQ(admin_->Put("/api/v1/datastores/default/snapshots/protected" + q +
                            Q("vm/1/2026-04-01T10:00:00Z"), {{"protected", true}}).status, 200);
  ASSERT_EQ(admin_->Put("/api/v1/datastores/default/snapshots/notes" + q +
                            Q("vm/2/2026-04-03T11:00:00Z"), {{"notes", "before \"the\" upgrade"}})
                .status, 200);
  ASSERT_EQ(admin_->Delete("/api/v1/datastores/default/snapshots" + q +
                           Q("vm/1/2026-04-02T10:00:00Z")).status, 200);
  auto pruned = admin_->PostTask("/api/v1/datastores/default/prune",
                                 {{"group", "vm/2"}, {"keep-last", 1}});
  ASSERT_EQ(pruned.status, 200) << pruned.body;
  EXPECT_EQ(pruned.Json()["removed"], 2);
  auto verified = admin_->PostTask("/api/v1/datastores/default/verify", {{"target", "vm/1"}});
  ASSERT_EQ(verified.status, 200) << verified.body;
  EXPECT_EQ(verified.Json()["snapshots-ok"], 2);

  const json before = Listing();
  ASSERT_EQ(before["groups"].size(), 3u);
  ASSERT_EQ(before["snapshots"].size(), 4u);
  for (const auto& s : before["snapshots"]) {
    if (s["id"] == "1") {
      EXPECT_EQ(s["verify"]["state"], "ok") << s.dump();
    }
    if (s["id"] == "2") {
      EXPECT_EQ(s["notes"], "before \"the\" upgrade");
    }
  }
  for (const auto& g : before["groups"]) {
    if (g["group"] != "vm/1") continue;
    EXPECT_EQ(g["snapshots"], 2) << g.dump();
    EXPECT_EQ(g["size"], 2 * img.size());
    EXPECT_EQ(g["last"], T("2026-04-03T10:00:00Z"));
  }

  server_->Stop(SIGTERM);
  auto reindex = RunServerCommand(dir_.path(), {"reindex", "default"});
  ASSERT_EQ(reindex.exit_code, 0) << reindex.output;
  Restart();
  EXPECT_EQ(Listing(), before);
}

TEST_F(ServerListingTest, AKilledServerReindexesAtItsNextStart) {
  const std::string img = MakeImage(1, 3);
  const std::string a = BackupImage(*admin_, "vm/5", T("2026-05-01T00:00:00Z"), img);
  const std::string b = BackupImage(*admin_, "vm/5", T("2026-05-02T00:00:00Z"), img);
  ASSERT_NE(a, "");
  ASSERT_NE(b, "");
  ASSERT_EQ(Listing()["snapshots"].size(), 2u);
  // Killed: it never recorded its catalog as in step. What then changed in
  // the folder (here: a delete whose catalog update a crash would have lost)
  // is seen after the restart.
  server_->Stop(SIGKILL);
  ASSERT_TRUE(storage::RemoveAll(storage::Env::Default(),
                                 dir_.path() + "/stores/default/vm/5/2026-05-01T00:00:00Z").ok());
  Restart();
  const json after = Listing();
  ASSERT_EQ(after["snapshots"].size(), 1u) << after.dump();
  EXPECT_EQ(after["snapshots"][0]["snapshot"], b);
  EXPECT_NE(server_->Log().find("catalog rebuilt from the folder"), std::string::npos);
}

TEST_F(ServerListingTest, OneGroupPageByPage) {
  const std::string img = MakeImage(1, 4);
  std::vector<std::string> snaps;
  for (int day = 1; day <= 5; ++day) {
    snaps.push_back(BackupImage(*admin_, "vm/9", T("2026-06-01T00:00:00Z") + day * 86400, img));
  }
  auto page = [&](const std::string& params) {
    auto r = admin_->Get("/api/v1/datastores/default/snapshots?group=vm/9" + params);
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<std::string> out;
    for (const auto& s : r.Json()) out.push_back(s["snapshot"]);
    return out;
  };
  EXPECT_EQ(page(""), snaps);
  EXPECT_EQ(page("&limit=2"), (std::vector<std::string>{snaps[0], snaps[1]}));
  EXPECT_EQ(page("&limit=2&offset=2"), (std::vector<std::string>{snaps[2], snaps[3]}));
  EXPECT_EQ(page("&limit=2&order=desc"), (std::vector<std::string>{snaps[4], snaps[3]}));
  EXPECT_EQ(page("&offset=4&order=desc"), (std::vector<std::string>{snaps[0]}));
  EXPECT_TRUE(page("&offset=9").empty());
  for (const char* bad : {"&limit=-1", "&limit=x", "&order=up", "&offset=1e3"}) {
    EXPECT_EQ(admin_->Get(std::string("/api/v1/datastores/default/snapshots?group=vm/9") + bad)
                  .status, 400) << bad;
  }
  EXPECT_EQ(admin_->Get("/api/v1/datastores/default/snapshots?group=vm/404").status, 404);
}

}  // namespace
}  // namespace cairn::testing
