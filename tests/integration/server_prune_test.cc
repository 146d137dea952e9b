// Prune through the real server: dry run and real run over the API, the
// Backup role refused, snapshots in use kept, and the admin command line.

#include <gtest/gtest.h>

#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

class ServerPruneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    img_ = MakeImage(2, 11);
    // Two snapshots a day on three days, plus one a week earlier.
    for (const char* t : {"2026-03-01T10:00:00Z", "2026-03-08T09:00:00Z", "2026-03-08T21:00:00Z",
                          "2026-03-09T09:00:00Z", "2026-03-09T21:00:00Z", "2026-03-10T09:00:00Z",
                          "2026-03-10T21:00:00Z"}) {
      ASSERT_NE(BackupImage(*admin_, "vm/7", T(t), img_), "");
    }
  }

  std::vector<std::string> Listed() {
    auto r = admin_->Get("/api/v1/datastores/default/snapshots?group=vm/7");
    std::vector<std::string> out;
    for (const auto& s : r.Json()) out.push_back(s["snapshot"]);
    return out;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::string img_;
};

TEST_F(ServerPruneTest, DryRunShowsReasonsThenRealRunRemoves) {
  json req = {{"group", "vm/7"}, {"keep-last", 1}, {"keep-daily", 2}, {"dry-run", true}};
  auto r = admin_->PostTask("/api/v1/datastores/default/prune", req);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.Json();
  EXPECT_EQ(j["time-zone"], "UTC");
  ASSERT_EQ(j["snapshots"].size(), 7u);
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& s : j["snapshots"]) got.push_back({s["snapshot"], s["reason"]});
  std::vector<std::pair<std::string, std::string>> want = {
      {"vm/7/2026-03-10T21:00:00Z", "keep-last"}, {"vm/7/2026-03-10T09:00:00Z", "remove"},
      {"vm/7/2026-03-09T21:00:00Z", "keep-daily"}, {"vm/7/2026-03-09T09:00:00Z", "remove"},
      {"vm/7/2026-03-08T21:00:00Z", "keep-daily"}, {"vm/7/2026-03-08T09:00:00Z", "remove"},
      {"vm/7/2026-03-01T10:00:00Z", "remove"}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(Listed().size(), 7u);  // dry run removed nothing

  req["dry-run"] = false;
  r = admin_->PostTask("/api/v1/datastores/default/prune", req);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["removed"], 4);
  EXPECT_EQ(Listed(), (std::vector<std::string>{"vm/7/2026-03-08T21:00:00Z",
                                                "vm/7/2026-03-09T21:00:00Z",
                                                "vm/7/2026-03-10T21:00:00Z"}));
  for (const auto& s : Listed()) EXPECT_EQ(Restore(*admin_, s, "drive0.fidx"), img_);
}

TEST_F(ServerPruneTest, ProtectedAndInUseSnapshotsAreKept) {
  ASSERT_EQ(admin_->Put("/api/v1/datastores/default/snapshots/protected?snapshot=" +
                            Q("vm/7/2026-03-01T10:00:00Z"),
                        {{"protected", true}}).status,
            200);
  // A reader holds 03-08T09.
  auto rr = admin_->PostJson("/api/v1/datastores/default/reader",
                             {{"snapshot", "vm/7/2026-03-08T09:00:00Z"}});
  ASSERT_EQ(rr.status, 201);
  auto r = admin_->PostTask("/api/v1/datastores/default/prune", {{"group", "vm/7"}, {"keep-last", 1}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::map<std::string, std::string> reason;
  const json j = r.Json();
  for (const auto& s : j["snapshots"]) {
    reason[s["snapshot"].get<std::string>()] = s["reason"].get<std::string>();
  }
  EXPECT_EQ(reason["vm/7/2026-03-01T10:00:00Z"], "protected");
  EXPECT_EQ(reason["vm/7/2026-03-08T09:00:00Z"], "in use");
  EXPECT_EQ(Listed(), (std::vector<std::string>{"vm/7/2026-03-01T10:00:00Z",
                                                "vm/7/2026-03-08T09:00:00Z",
                                                "vm/7/2026-03-10T21:00:00Z"}));
}

TEST_F(ServerPruneTest, NoOptionKeepsEverythingAndBadInputIsRefused) {
  auto r = admin_->PostTask("/api/v1/datastores/default/prune", {{"group", "vm/7"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["removed"], 0);
  EXPECT_EQ(Listed().size(), 7u);
  for (const json& bad : {json{{"group", "vm/7"}, {"keep-last", -1}},
                          json{{"group", "vm/7"}, {"keep-last", "3"}},
                          json{{"group", "vm/.."}, {"keep-last", 1}},
                          json{{"group", "vm/7"}, {"keep-last", 1}, {"dry-run", "yes"}}}) {
    auto b = admin_->PostTask("/api/v1/datastores/default/prune", bad);
    EXPECT_EQ(b.status, 400) << bad.dump() << " " << b.body;
  }
  EXPECT_EQ(admin_->PostTask("/api/v1/datastores/default/prune",
                             {{"group", "vm/404"}, {"keep-last", 1}}).status,
            404);
  EXPECT_EQ(Listed().size(), 7u);
}

TEST_F(ServerPruneTest, BackupRoleMayNotPrune) {
  ASSERT_EQ(RunServerCommand(dir_.path(), {"user", "add", "bob"}).exit_code, 0);
  auto tok = RunServerCommand(dir_.path(), {"token", "create", "bob!t"});
  ASSERT_EQ(tok.exit_code, 0);
  ASSERT_EQ(RunServerCommand(dir_.path(), {"acl", "set", "--store", "default", "--role", "Backup",
                                           "--auth", "bob!t"}).exit_code, 0);
  ApiClient bob(server_->port(), tok.output.substr(0, tok.output.find('\n')));
  ASSERT_NE(BackupImage(bob, "vm/8", T("2026-03-01T10:00:00Z"), img_), "");
  ASSERT_NE(BackupImage(bob, "vm/8", T("2026-03-02T10:00:00Z"), img_), "");
  auto r = bob.PostTask("/api/v1/datastores/default/prune", {{"group", "vm/8"}, {"keep-last", 1}});
  EXPECT_EQ(r.status, 403) << r.body;
  auto list = admin_->Get("/api/v1/datastores/default/snapshots?group=vm/8");
  EXPECT_EQ(list.Json().size(), 2u);
}

TEST_F(ServerPruneTest, AdminCommandLinePrunesAStoppedServersStore) {
  // While the server runs, the datastore is locked: a clear error.
  auto busy = RunServerCommand(dir_.path(), {"prune", "default", "vm/7", "--keep-last", "2"});
  EXPECT_NE(busy.exit_code, 0);
  EXPECT_NE(busy.output.find("server running"), std::string::npos) << busy.output;
  server_->Stop(SIGTERM);
  auto dry = RunServerCommand(dir_.path(), {"prune", "default", "vm/7", "--keep-last", "2",
                                            "--dry-run", "--output", "json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  json j = json::parse(dry.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << dry.output;
  EXPECT_EQ(j["removed"], 5);
  auto real = RunServerCommand(dir_.path(), {"prune", "default", "vm/7", "--keep-last", "2"});
  ASSERT_EQ(real.exit_code, 0) << real.output;
  EXPECT_NE(real.output.find("removed vm/7/2026-03-01T10:00:00Z  remove"), std::string::npos)
      << real.output;
  server_ = ServerProcess::Start(dir_.path());
  ASSERT_NE(server_, nullptr);
  admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  EXPECT_EQ(Listed().size(), 2u);
}

}  // namespace
}  // namespace cairn::testing
