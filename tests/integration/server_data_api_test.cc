// The data endpoints the web UI reads and edits (issue 15), against the real
// server on loopback: datastore summaries, jobs and calendar previews,
// groups' unique bytes and staleness, image downloads, access management.
// Each endpoint: role checks, and bad input answered 4xx with nothing changed.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

class ServerDataApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path(), {"--usage-settle-ms", "100"});
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  }

  std::string AddToken(const std::string& user, const std::string& role) {
    return AddUserToken(dir_.path(), user, role);
  }
  std::unique_ptr<ApiClient> ClientAs(const std::string& user, const std::string& role) {
    return std::make_unique<ApiClient>(server_->port(), AddToken(user, role));
  }
  json Store(ApiClient& c) {
    auto r = c.Get("/api/v1/datastores");
    EXPECT_EQ(r.status, 200) << r.body;
    json all = r.Json();
    EXPECT_EQ(all.size(), 1u) << all.dump();
    return all.empty() ? json() : all[0];
  }
  std::string ChunkPath(const storage::Digest& d) {
    return dir_.path() + "/stores/default/.chunks/" + d.ToHex().substr(0, 4) + "/" + d.ToHex();
  }
  // Flips one byte in the middle of a file.
  static bool FlipByte(const std::string& path) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    if (!f.good()) return false;
    f.seekg(1000);
    char c;
    f.get(c);
    f.seekp(1000);
    f.put(static_cast<char>(c ^ 0x40));
    return f.good();
  }
  json Jobs() {
    auto r = admin_->Get("/api/v1/jobs");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.Json();
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
};

// ---------------------------------------------------------------------------
// GET /datastores

TEST_F(ServerDataApiTest, DatastoreSummaryBeforeAnyGcOrVerify) {
  json s = Store(*admin_);
  EXPECT_EQ(s["name"], "default");
  EXPECT_EQ(s["roles"], json::array({"Admin"}));
  ASSERT_TRUE(s["usage"].is_object()) << s.dump();
  EXPECT_GT(s["usage"]["total"].get<uint64_t>(), 0u);
  EXPECT_GE(s["usage"]["total"].get<uint64_t>(), s["usage"]["used"].get<uint64_t>());
  EXPECT_TRUE(s["chunks"].is_null());
  EXPECT_TRUE(s["chunk_bytes"].is_null());
  EXPECT_TRUE(s["dedup"].is_null());
  EXPECT_TRUE(s["last_gc"].is_null());
  EXPECT_TRUE(s["last_verify"].is_null());
  EXPECT_EQ(s["stale_after"], 93600);
}

TEST_F(ServerDataApiTest, DatastoreSummaryAfterGcAndVerify) {
  const std::string img = MakeImage(3, 7);
  // Two snapshots of one image: twice the logical bytes on the same chunks.
  ASSERT_NE(BackupImage(*admin_, "vm/1", T("2026-05-01T10:00:00Z"), img), "");
  ASSERT_NE(BackupImage(*admin_, "vm/1", T("2026-05-02T10:00:00Z"), img), "");
  auto gc = admin_->PostTask("/api/v1/datastores/default/gc", {{"grace-seconds", 0}});
  ASSERT_EQ(gc.status, 200) << gc.body;
  auto verified = admin_->PostTask("/api/v1/datastores/default/verify", {{"target", "vm/1"}});
  ASSERT_EQ(verified.status, 200) << verified.body;

  // dedup needs the background pass that sums the snapshots' sizes.
  json s = Store(*admin_);
  for (int i = 0; i < 300 && s["dedup"].is_null(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s = Store(*admin_);
  }
  const json g = gc.Json();
  EXPECT_EQ(s["chunks"], g["disk-chunks"]);
  EXPECT_EQ(s["chunk_bytes"], g["disk-bytes"]);
  EXPECT_GT(s["chunks"].get<uint64_t>(), 0u);
  EXPECT_EQ(s["last_gc"], g);
  // Logical bytes come from the catalog: both snapshots, so 2 × the image.
  EXPECT_NEAR(s["dedup"].get<double>(),
              2.0 * img.size() / g["disk-bytes"].get<double>(), 1e-9);
  ASSERT_TRUE(s["last_verify"].is_object()) << s.dump();
  EXPECT_EQ(s["last_verify"]["state"], "ok");
  auto tasks = admin_->Get("/api/v1/tasks").Json();
  std::string verify_task;
  for (const auto& t : tasks) {
    if (t["kind"] == "verify" && verify_task.empty()) verify_task = t["id"];
  }
  EXPECT_EQ(s["last_verify"]["task"], verify_task);
  EXPECT_GT(s["last_verify"]["time"].get<int64_t>(), 0);

  // Audit sees GC and verify; Reader and Backup see their roles and usage only.
  auto audit = ClientAs("aude", "Audit");
  json a = Store(*audit);
  EXPECT_EQ(a["roles"], json::array({"Audit"}));
  EXPECT_EQ(a["chunks"], s["chunks"]);
  EXPECT_EQ(a["last_verify"], s["last_verify"]);
  for (const char* role : {"Reader", "Backup"}) {
    auto c = ClientAs(std::string("u") + role, role);
    json r = Store(*c);
    EXPECT_EQ(r["roles"], json::array({role}));
    EXPECT_TRUE(r["usage"].is_object());
    EXPECT_TRUE(r["chunks"].is_null()) << r.dump();
    EXPECT_TRUE(r["last_gc"].is_null());
    EXPECT_TRUE(r["last_verify"].is_null());
  }
}

TEST_F(ServerDataApiTest, DatastoreShowsAFailedVerifyAsFailed) {
  const std::string img = MakeImage(2, 3);
  ASSERT_NE(BackupImage(*admin_, "vm/9", T("2026-05-01T10:00:00Z"), img), "");
  // Damage one chunk on disk: the next verify fails.
  ASSERT_TRUE(FlipByte(ChunkPath(storage::Sha256(ChunkOf(img, 0)))));
  auto verified = admin_->PostTask("/api/v1/datastores/default/verify", {{"target", ""}});
  ASSERT_EQ(verified.status, 500) << verified.body;
  json s = Store(*admin_);
  ASSERT_TRUE(s["last_verify"].is_object()) << s.dump();
  EXPECT_EQ(s["last_verify"]["state"], "failed");
}

TEST_F(ServerDataApiTest, StaleAfterIsSetPerDatastore) {
  auto set = RunServerCommand(dir_.path(), {"datastore", "set", "default", "--stale-after", "7200"});
  ASSERT_EQ(set.exit_code, 0) << set.output;
  EXPECT_EQ(Store(*admin_)["stale_after"], 7200);
  // Out of range, or nothing to set: refused, nothing changed.
  for (auto args : {std::vector<std::string>{"datastore", "set", "default", "--stale-after", "5"},
                    std::vector<std::string>{"datastore", "set", "default"},
                    std::vector<std::string>{"datastore", "set", "nosuch", "--stale-after", "600"}}) {
    EXPECT_NE(RunServerCommand(dir_.path(), args).exit_code, 0) << args.back();
  }
  EXPECT_EQ(Store(*admin_)["stale_after"], 7200);
  // verify-new alone leaves stale-after as it is.
  ASSERT_EQ(RunServerCommand(dir_.path(), {"datastore", "set", "default", "--verify-new", "on"})
                .exit_code, 0);
  EXPECT_EQ(Store(*admin_)["stale_after"], 7200);
}

// ---------------------------------------------------------------------------
// Jobs and calendar previews

TEST_F(ServerDataApiTest, JobsAreAddedChangedAndRemoved) {
  const json job = {{"id", "nightly-gc"}, {"kind", "gc"}, {"store", "default"},
                    {"schedule", "daily"}, {"options", {{"grace-seconds", 60}}}};
  auto added = admin_->PostJson("/api/v1/jobs", job);
  ASSERT_EQ(added.status, 201) << added.body;
  EXPECT_EQ(added.Json()["schedule"], "daily");
  EXPECT_EQ(added.Json()["enabled"], true);
  EXPECT_EQ(added.Json()["options"], json({{"grace-seconds", 60}}));
  EXPECT_GT(added.Json()["next-run"].get<int64_t>(), 0);
  ASSERT_EQ(Jobs().size(), 1u);
  EXPECT_EQ(admin_->PostJson("/api/v1/jobs", job).status, 409);

  auto changed = admin_->Put("/api/v1/jobs/nightly-gc", {{"schedule", "sat 02:00"},
                                                         {"enabled", false}});
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(changed.Json()["schedule"], "sat 02:00");
  EXPECT_EQ(changed.Json()["enabled"], false);
  EXPECT_EQ(changed.Json()["options"], json({{"grace-seconds", 60}}));
  EXPECT_EQ(changed.Json()["created"], added.Json()["created"]);
  // A job added through the API runs like one added by the CLI.
  auto run = admin_->PostTask("/api/v1/jobs/nightly-gc/run", json::object());
  ASSERT_EQ(run.status, 200) << run.body;

  auto verify = admin_->PostJson("/api/v1/jobs", {{"id", "weekly-verify"}, {"kind", "verify"},
                                                  {"store", "default"}, {"schedule", "sun 03:00"},
                                                  {"options", {{"ignore-verified", true},
                                                               {"outdated-after-days", 30}}}});
  ASSERT_EQ(verify.status, 201) << verify.body;
  auto prune = admin_->PostJson("/api/v1/jobs", {{"id", "prune-1"}, {"kind", "prune"},
                                                 {"store", "default"}, {"schedule", "*:0/30"},
                                                 {"options", {{"group", "vm/1"}, {"keep-last", 3}}}});
  ASSERT_EQ(prune.status, 201) << prune.body;
  ASSERT_EQ(Jobs().size(), 3u);

  ASSERT_EQ(admin_->Delete("/api/v1/jobs/prune-1").status, 200);
  EXPECT_EQ(admin_->Delete("/api/v1/jobs/prune-1").status, 404);
  EXPECT_EQ(admin_->Put("/api/v1/jobs/prune-1", {{"enabled", true}}).status, 404);
  EXPECT_EQ(Jobs().size(), 2u);
}

TEST_F(ServerDataApiTest, BadJobsAreRefusedAndChangeNothing) {
  ASSERT_EQ(admin_->PostJson("/api/v1/jobs", {{"id", "j1"}, {"kind", "gc"}, {"store", "default"},
                                              {"schedule", "daily"}}).status, 201);
  const json before = Jobs();
  const json base = {{"id", "j2"}, {"kind", "gc"}, {"store", "default"}, {"schedule", "daily"}};
  struct Case { const char* key; json value; int code; };
  const Case cases[] = {
      {"schedule", "fortnightly", 400},       {"schedule", "", 400},
      {"schedule", 5, 400},                   {"kind", "frobnicate", 400},
      {"id", "../x", 400},                    {"id", "", 400},
      {"store", "nosuch", 404},               {"store", "../etc", 400},
      {"options", {{"keep-last", 1}}, 400},   {"options", {{"grace-seconds", -1}}, 400},
      {"options", "x", 400},                  {"enabled", "yes", 400},
      {"colour", "red", 400},
  };
  for (const Case& c : cases) {
    json body = base;
    body[c.key] = c.value;
    auto r = admin_->PostJson("/api/v1/jobs", body);
    EXPECT_EQ(r.status, c.code) << body.dump() << " → " << r.body;
    EXPECT_TRUE(r.Json().contains("error")) << r.body;
  }
  json verify = base;
  verify["kind"] = "verify";
  verify["options"] = {{"target", "vm/../1"}};
  EXPECT_EQ(admin_->PostJson("/api/v1/jobs", verify).status, 400);
  json prune = base;
  prune["kind"] = "prune";
  prune["options"] = {{"keep-daily", 100001}};
  EXPECT_EQ(admin_->PostJson("/api/v1/jobs", prune).status, 400);
  EXPECT_EQ(admin_->Post("/api/v1/jobs", "{not json").status, 400);

  EXPECT_EQ(admin_->Put("/api/v1/jobs/j1", {{"schedule", "25:00"}}).status, 400);
  EXPECT_EQ(admin_->Put("/api/v1/jobs/j1", {{"kind", "prune"}, {"options", {{"grace-seconds", 1}}}})
                .status, 400);
  EXPECT_EQ(admin_->Put("/api/v1/jobs/j1", {{"id", "j9"}}).status, 400);
  EXPECT_EQ(admin_->Put("/api/v1/jobs/j1", {{"store", "nosuch"}}).status, 404);
  EXPECT_EQ(Jobs(), before);
}

TEST_F(ServerDataApiTest, OnlyAdminsChangeJobs) {
  ASSERT_EQ(admin_->PostJson("/api/v1/jobs", {{"id", "j1"}, {"kind", "gc"}, {"store", "default"},
                                              {"schedule", "daily"}}).status, 201);
  const json before = Jobs();
  for (const char* role : {"Backup", "Reader", "Audit"}) {
    auto c = ClientAs(std::string("u") + role, role);
    EXPECT_EQ(c->PostJson("/api/v1/jobs", {{"id", "j2"}, {"kind", "gc"}, {"store", "default"},
                                           {"schedule", "daily"}}).status, 403) << role;
    EXPECT_EQ(c->Put("/api/v1/jobs/j1", {{"enabled", false}}).status, 403) << role;
    EXPECT_EQ(c->Delete("/api/v1/jobs/j1").status, 403) << role;
    EXPECT_EQ(c->Get("/api/v1/calendar/next?schedule=daily").status, 403) << role;
  }
  ApiClient nobody(server_->port(), "");
  EXPECT_EQ(nobody.Delete("/api/v1/jobs/j1").status, 401);
  EXPECT_EQ(Jobs(), before);
}

TEST_F(ServerDataApiTest, CalendarNextRuns) {
  // 1800000000 is 2027-01-15T08:00:00Z.
  auto r = admin_->Get("/api/v1/calendar/next?schedule=daily&count=3&from=1800000000");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["next"], json::array({1800057600, 1800144000, 1800230400}));
  r = admin_->Get("/api/v1/calendar/next?schedule=" + Q("*:0/15") + "&from=1800000000");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["next"].size(), 5u);
  EXPECT_EQ(r.Json()["next"][0], 1800000000 + 900);
  // A date in the past never fires again.
  r = admin_->Get("/api/v1/calendar/next?schedule=" + Q("2020-01-01 00:00"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["next"], json::array());
  r = admin_->Get("/api/v1/calendar/next?schedule=fortnightly");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.Json()["error"].get<std::string>().find("invalid calendar event"), std::string::npos)
      << r.body;
  EXPECT_EQ(admin_->Get("/api/v1/calendar/next").status, 400);
  EXPECT_EQ(admin_->Get("/api/v1/calendar/next?schedule=daily&count=0").status, 400);
  EXPECT_EQ(admin_->Get("/api/v1/calendar/next?schedule=daily&count=101").status, 400);
  EXPECT_EQ(admin_->Get("/api/v1/calendar/next?schedule=daily&from=-1").status, 400);
}

// ---------------------------------------------------------------------------
// Downloads

class ServerDownloadTest : public ServerDataApiTest {
 protected:
  // GETs a download with `token`; `got` collects the bytes that arrived
  // (also when the connection broke off). Null result: a transport error.
  httplib::Result Download(const std::string& token, const std::string& query, std::string* got) {
    httplib::SSLClient client("127.0.0.1", server_->port());
    client.enable_server_certificate_verification(false);
    client.set_read_timeout(30, 0);
    got->clear();
    return client.Get("/api/v1/datastores/default/download?" + query,
                      {{"Authorization", "CairnToken " + token}},
                      [got](const char* data, size_t n) {
                        got->append(data, n);
                        return true;
                      });
  }
  static std::string Query(const std::string& snapshot, const std::string& archive) {
    return "snapshot=" + Q(snapshot) + "&archive=" + Q(archive);
  }
  int64_t ReaderSessions() {
    return admin_->Get("/api/v1/status").Json()["reader-sessions"].get<int64_t>();
  }
};

TEST_F(ServerDownloadTest, TheImageByteForByte) {
  const std::string img = MakeImage(5, 21);  // the last chunk short
  ASSERT_TRUE(storage::IsAllZero(ChunkOf(img, 2)));
  const std::string snap = BackupImage(*admin_, "vm/1", T("2026-07-01T00:00:00Z"), img);
  ASSERT_NE(snap, "");
  // The zero chunk is never read: not on the disk (the client may not even
  // upload it), it still comes as zeros.
  const std::string zero_path = ChunkPath(storage::Sha256(ChunkOf(img, 2)));
  ::unlink(zero_path.c_str());
  ASSERT_NE(::access(zero_path.c_str(), F_OK), 0);
  std::string got;
  auto r = Download(server_->AdminToken(), Query(snap, "drive0.fidx"), &got);
  ASSERT_TRUE(r) << httplib::to_string(r.error()) << " after " << got.size() << " bytes\n" << server_->Log();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(got.size(), img.size());
  EXPECT_TRUE(got == img) << "downloaded bytes differ from the image";
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/octet-stream");
  EXPECT_EQ(r->get_header_value("Content-Disposition"),
            "attachment; filename=\"vm-1-2026-07-01T00-00-00Z-drive0.img\"");
  EXPECT_EQ(ReaderSessions(), 0);

  // Same roles as reading: Reader yes, Audit no, Backup only its own groups.
  const std::string reader = AddToken("rita", "Reader"), audit = AddToken("aude", "Audit"),
                    backup = AddToken("bob", "Backup");
  r = Download(reader, Query(snap, "drive0.fidx"), &got);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(got == img);
  for (const std::string& token : {audit, backup}) {
    r = Download(token, Query(snap, "drive0.fidx"), &got);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << got;
  }
  ApiClient bob(server_->port(), backup);
  const std::string own = BackupImage(bob, "vm/bob", T("2026-07-01T00:00:00Z"), MakeImage(2, 5));
  r = Download(backup, Query(own, "drive0.fidx"), &got);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(got == MakeImage(2, 5));
  EXPECT_EQ(ReaderSessions(), 0);
}

TEST_F(ServerDownloadTest, BadRequestsAreRefused) {
  const std::string snap =
      BackupImage(*admin_, "vm/1", T("2026-07-01T00:00:00Z"), MakeImage(2, 3));
  ASSERT_NE(snap, "");
  struct Case { std::string query; int code; };
  const Case cases[] = {
      {"archive=drive0.fidx", 400},
      {"snapshot=" + Q(snap), 400},
      {Query("vm/1", "drive0.fidx"), 400},
      {Query(snap, "../drive0.fidx"), 400},
      {Query(snap, "client.log.blob"), 400},
      {Query(snap, "nosuch.fidx"), 404},
      {Query("vm/1/2026-07-02T00:00:00Z", "drive0.fidx"), 404},
      {Query("vm/2/2026-07-01T00:00:00Z", "drive0.fidx"), 404},
  };
  for (const Case& c : cases) {
    std::string got;
    auto r = Download(server_->AdminToken(), c.query, &got);
    ASSERT_TRUE(r) << c.query;
    EXPECT_EQ(r->status, c.code) << c.query << " → " << got;
    EXPECT_NE(got.find("\"error\""), std::string::npos) << got;
  }
  EXPECT_EQ(ReaderSessions(), 0);
}

TEST_F(ServerDownloadTest, ACorruptChunkAbortsTheDownload) {
  const std::string img = MakeImage(6, 22);
  const std::string snap = BackupImage(*admin_, "vm/1", T("2026-07-01T00:00:00Z"), img);
  ASSERT_NE(snap, "");
  // Chunk 3 is random data and in no other chunk of the image.
  ASSERT_FALSE(storage::IsAllZero(ChunkOf(img, 3)));
  ASSERT_TRUE(FlipByte(ChunkPath(storage::Sha256(ChunkOf(img, 3)))));
  std::string got;
  auto r = Download(server_->AdminToken(), Query(snap, "drive0.fidx"), &got);
  // The answer started (200) and broke off: the client sees a transport
  // error and fewer bytes than the image, all of them right.
  EXPECT_FALSE(r) << "status " << r->status;
  EXPECT_LT(got.size(), img.size());
  EXPECT_LE(got.size(), 3 * ChunkOf(img, 0).size());
  EXPECT_TRUE(got == img.substr(0, got.size())) << "wrong bytes before the bad chunk";
  // The server is fine and its reader session is gone.
  for (int i = 0; i < 50 && ReaderSessions() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ReaderSessions(), 0);
}

// ---------------------------------------------------------------------------
// Access: users, tokens, roles

TEST_F(ServerDataApiTest, UsersTokensAndRoles) {
  auto users = admin_->Get("/api/v1/access/users");
  ASSERT_EQ(users.status, 200) << users.body;
  EXPECT_EQ(users.Json(), json::array({{{"user", "admin"}}}));
  auto added = admin_->PostJson("/api/v1/access/users", {{"user", "carol"}});
  ASSERT_EQ(added.status, 201) << added.body;
  EXPECT_EQ(admin_->PostJson("/api/v1/access/users", {{"user", "carol"}}).status, 409);

  auto token = admin_->PostJson("/api/v1/access/tokens", {{"auth_id", "carol!ui"}});
  ASSERT_EQ(token.status, 201) << token.body;
  EXPECT_EQ(token.Json()["auth_id"], "carol!ui");
  const std::string secret = token.Json()["secret"];
  EXPECT_EQ(secret.size(), 64u);
  EXPECT_EQ(admin_->PostJson("/api/v1/access/tokens", {{"auth_id", "carol!ui"}}).status, 409);
  auto tokens = admin_->Get("/api/v1/access/tokens").Json();
  EXPECT_NE(std::find(tokens.begin(), tokens.end(), json({{"auth_id", "carol!ui"}, {"user", "carol"}})),
            tokens.end()) << tokens.dump();
  EXPECT_EQ(tokens.dump().find(secret), std::string::npos);  // shown once only

  // Without a role the token sees no datastore; with Reader it does.
  ApiClient carol(server_->port(), "carol!ui:" + secret);
  ASSERT_EQ(carol.Get("/api/v1/datastores").status, 200);
  EXPECT_EQ(carol.Get("/api/v1/datastores").Json(), json::array());
  auto granted = admin_->Put("/api/v1/access/acl",
                             {{"store", "default"}, {"auth_id", "carol!ui"}, {"role", "Reader"}});
  ASSERT_EQ(granted.status, 200) << granted.body;
  EXPECT_EQ(Store(carol)["roles"], json::array({"Reader"}));
  auto acl = admin_->Get("/api/v1/access/acl").Json();
  EXPECT_NE(std::find(acl.begin(), acl.end(),
                      json({{"store", "default"}, {"auth_id", "carol!ui"}, {"role", "Reader"}})),
            acl.end()) << acl.dump();
  // role null removes the entry.
  ASSERT_EQ(admin_->Put("/api/v1/access/acl",
                        {{"store", "default"}, {"auth_id", "carol!ui"}, {"role", nullptr}}).status,
            200);
  EXPECT_EQ(carol.Get("/api/v1/datastores").Json(), json::array());
  EXPECT_EQ(admin_->Put("/api/v1/access/acl",
                        {{"store", "default"}, {"auth_id", "carol!ui"}, {"role", nullptr}}).status,
            404);

  // Deleting a token ends its access and its roles: a new token of the same
  // name starts without any.
  ASSERT_EQ(admin_->Put("/api/v1/access/acl",
                        {{"store", "*"}, {"auth_id", "carol!ui"}, {"role", "Audit"}}).status, 200);
  ASSERT_EQ(admin_->Delete("/api/v1/access/tokens/carol!ui").status, 200);
  EXPECT_EQ(carol.Get("/api/v1/datastores").status, 401);
  EXPECT_EQ(admin_->Delete("/api/v1/access/tokens/carol!ui").status, 404);
  acl = admin_->Get("/api/v1/access/acl").Json();
  EXPECT_EQ(acl.dump().find("carol!ui"), std::string::npos) << acl.dump();
  auto again = admin_->PostJson("/api/v1/access/tokens", {{"auth_id", "carol!ui"}});
  ASSERT_EQ(again.status, 201);
  ApiClient carol2(server_->port(), "carol!ui:" + again.Json()["secret"].get<std::string>());
  EXPECT_EQ(carol2.Get("/api/v1/datastores").Json(), json::array());
}

TEST_F(ServerDataApiTest, PasswordsSetThroughTheApiLogIn) {
  ApiClient anyone(server_->port(), "");
  auto login = [&](const std::string& user, const std::string& password) {
    return anyone.PostJson("/api/v1/login", {{"user", user}, {"password", password}}).status;
  };
  auto added = admin_->PostJson("/api/v1/access/users", {{"user", "dora"}, {"password", "first pw"}});
  ASSERT_EQ(added.status, 201) << added.body;
  EXPECT_EQ(login("dora", "first pw"), 200);
  auto changed = admin_->Put("/api/v1/access/users/dora/password", {{"password", "second pw"}});
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(login("dora", "first pw"), 401);
  EXPECT_EQ(login("dora", "second pw"), 200);
  // Bad passwords or users change nothing: no user made, no password changed.
  EXPECT_EQ(admin_->PostJson("/api/v1/access/users", {{"user", "emil"}, {"password", ""}}).status, 400);
  EXPECT_EQ(admin_->PostJson("/api/v1/access/users",
                             {{"user", "emil"}, {"password", std::string(1025, 'x')}}).status, 400);
  EXPECT_EQ(admin_->PostJson("/api/v1/access/users", {{"user", "emil"}, {"password", 7}}).status, 400);
  EXPECT_EQ(admin_->Get("/api/v1/access/users").Json().dump().find("emil"), std::string::npos);
  EXPECT_EQ(admin_->Put("/api/v1/access/users/dora/password", {{"password", ""}}).status, 400);
  EXPECT_EQ(admin_->Put("/api/v1/access/users/dora/password", json::object()).status, 400);
  EXPECT_EQ(admin_->Put("/api/v1/access/users/nobody/password", {{"password", "x"}}).status, 404);
  EXPECT_EQ(admin_->Put("/api/v1/access/users/bad%20name/password", {{"password", "x"}}).status, 400);
  EXPECT_EQ(login("dora", "second pw"), 200);
  auto reader = ClientAs("rita", "Reader");
  EXPECT_EQ(reader->Put("/api/v1/access/users/dora/password", {{"password", "mine"}}).status, 403);
  EXPECT_EQ(login("dora", "second pw"), 200);
}

TEST_F(ServerDataApiTest, BadAccessRequestsChangeNothing) {
  ASSERT_EQ(admin_->PostJson("/api/v1/access/users", {{"user", "carol"}}).status, 201);
  ASSERT_EQ(admin_->PostJson("/api/v1/access/tokens", {{"auth_id", "carol!t"}}).status, 201);
  auto state = [&] {
    return json{admin_->Get("/api/v1/access/users").Json(),
                admin_->Get("/api/v1/access/tokens").Json(),
                admin_->Get("/api/v1/access/acl").Json()};
  };
  const json before = state();
  struct Case { std::string method, path; json body; int code; };
  const Case cases[] = {
      {"POST", "/api/v1/access/users", {{"user", "../x"}}, 400},
      {"POST", "/api/v1/access/users", {{"user", 5}}, 400},
      {"POST", "/api/v1/access/users", json::object(), 400},
      {"POST", "/api/v1/access/users", {{"user", "dave"}, {"admin", true}}, 400},
      {"POST", "/api/v1/access/tokens", {{"auth_id", "carol"}}, 400},
      {"POST", "/api/v1/access/tokens", {{"auth_id", "carol!../x"}}, 400},
      {"POST", "/api/v1/access/tokens", {{"auth_id", "ghost!t"}}, 404},
      {"DELETE", "/api/v1/access/tokens/carol", nullptr, 400},
      {"DELETE", "/api/v1/access/tokens/carol!nope", nullptr, 404},
      {"PUT", "/api/v1/access/acl", {{"store", "default"}, {"auth_id", "carol!t"}, {"role", "God"}}, 400},
      {"PUT", "/api/v1/access/acl", {{"store", "default"}, {"auth_id", "carol!t"}}, 400},
      {"PUT", "/api/v1/access/acl", {{"store", "nosuch"}, {"auth_id", "carol!t"}, {"role", "Admin"}}, 404},
      {"PUT", "/api/v1/access/acl", {{"store", "../x"}, {"auth_id", "carol!t"}, {"role", "Admin"}}, 400},
      {"PUT", "/api/v1/access/acl", {{"store", "default"}, {"auth_id", "ghost"}, {"role", "Admin"}}, 404},
      {"PUT", "/api/v1/access/acl", {{"store", "default"}, {"auth_id", "a!../b"}, {"role", "Admin"}}, 400},
  };
  for (const Case& c : cases) {
    ApiClient::Response r;
    if (c.method == "POST") r = admin_->PostJson(c.path, c.body);
    if (c.method == "PUT") r = admin_->Put(c.path, c.body);
    if (c.method == "DELETE") r = admin_->Delete(c.path);
    EXPECT_EQ(r.status, c.code) << c.method << " " << c.path << " " << c.body.dump() << " → " << r.body;
  }
  EXPECT_EQ(state(), before);

  // Only Admin on "*": Admin on one store, Backup, Reader, Audit are refused.
  for (const char* role : {"Admin", "Backup", "Reader", "Audit"}) {
    auto c = ClientAs(std::string("u") + role, role);
    EXPECT_EQ(c->Get("/api/v1/access/users").status, 403) << role;
    EXPECT_EQ(c->PostJson("/api/v1/access/users", {{"user", "eve"}}).status, 403) << role;
    EXPECT_EQ(c->Get("/api/v1/access/tokens").status, 403) << role;
    EXPECT_EQ(c->PostJson("/api/v1/access/tokens", {{"auth_id", "carol!x"}}).status, 403) << role;
    EXPECT_EQ(c->Delete("/api/v1/access/tokens/carol!t").status, 403) << role;
    EXPECT_EQ(c->Get("/api/v1/access/acl").status, 403) << role;
    EXPECT_EQ(c->Put("/api/v1/access/acl", {{"store", "*"}, {"auth_id", std::string("u") + role + "!t"},
                                            {"role", "Admin"}}).status, 403) << role;
  }
  ApiClient nobody(server_->port(), "");
  EXPECT_EQ(nobody.Get("/api/v1/access/users").status, 401);
  auto users = admin_->Get("/api/v1/access/users").Json();
  EXPECT_EQ(users.dump().find("eve"), std::string::npos);
  EXPECT_EQ(admin_->Get("/api/v1/access/tokens").Json().dump().find("carol!x"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Groups: unique bytes and staleness

class ServerGroupUsageTest : public ServerDataApiTest {
 protected:
  void SetUp() override {}
  void StartWith(const std::string& settle_ms) {
    server_ = ServerProcess::Start(dir_.path(), {"--usage-settle-ms", settle_ms});
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  }
  json Groups(ApiClient& c) {
    auto r = c.Get("/api/v1/datastores/default/groups");
    EXPECT_EQ(r.status, 200) << r.body;
    json by_name = json::object();
    for (const auto& g : r.Json()) by_name[g["group"].get<std::string>()] = g;
    return by_name;
  }
  // Bytes on disk of the chunks of `img` that `other` does not hold.
  uint64_t OnlyIn(const std::string& img, const std::string& other) {
    std::set<storage::Digest> theirs, counted;
    for (size_t i = 0; i < ChunkCount(other); ++i) theirs.insert(storage::Sha256(ChunkOf(other, i)));
    uint64_t bytes = 0;
    for (size_t i = 0; i < ChunkCount(img); ++i) {
      storage::Digest d = storage::Sha256(ChunkOf(img, i));
      if (theirs.count(d) || !counted.insert(d).second) continue;
      std::ifstream f(ChunkPath(d), std::ios::binary | std::ios::ate);
      EXPECT_TRUE(f.good()) << d.ToHex();
      bytes += static_cast<uint64_t>(f.tellg());
    }
    return bytes;
  }
  // Polls the listing until every group in `want` shows its unique bytes.
  bool WaitForUnique(const std::map<std::string, uint64_t>& want) {
    json groups;
    for (int i = 0; i < 300; ++i) {
      groups = Groups(*admin_);
      bool all = true;
      for (const auto& [name, bytes] : want) {
        all = all && groups.contains(name) && groups[name]["unique_bytes"] == bytes;
      }
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "unique bytes never became as expected: " << groups.dump();
    return false;
  }
};

TEST_F(ServerGroupUsageTest, UniqueBytesFollowBackupsAndDeletes) {
  StartWith("100");
  const std::string a = MakeImage(4, 11), b = MakeImage(4, 12);
  const std::string a_snap = BackupImage(*admin_, "vm/1", T("2026-06-01T00:00:00Z"), a);
  ASSERT_NE(BackupImage(*admin_, "vm/2", T("2026-06-01T00:00:00Z"), b), "");
  const std::string copy = BackupImage(*admin_, "vm/3", T("2026-06-01T00:00:00Z"), a);
  ASSERT_FALSE(a_snap.empty() || copy.empty());
  const uint64_t only_a = OnlyIn(a, b), only_b = OnlyIn(b, a);
  ASSERT_GT(only_a, 0u);
  ASSERT_GT(only_b, 0u);
  // vm/1 and vm/3 hold the same chunks: deleting either frees nothing.
  ASSERT_TRUE(WaitForUnique({{"vm/1", 0}, {"vm/2", only_b}, {"vm/3", 0}}));
  ASSERT_EQ(admin_->Delete("/api/v1/datastores/default/snapshots?snapshot=" + Q(copy)).status, 200);
  ASSERT_TRUE(WaitForUnique({{"vm/1", only_a}, {"vm/2", only_b}}));
  // The values survive a restart (server.db), before any recomputation.
  admin_.reset();
  server_.reset();
  StartWith("3600000");
  json g = Groups(*admin_);
  EXPECT_EQ(g["vm/1"]["unique_bytes"], only_a);
  EXPECT_EQ(g["vm/2"]["unique_bytes"], only_b);
}

TEST_F(ServerGroupUsageTest, UnknownUntilComputedAndNeverBlocking) {
  // A settle time of an hour: nothing is computed while the test runs.
  StartWith("3600000");
  ASSERT_NE(BackupImage(*admin_, "vm/1", T("2026-06-01T00:00:00Z"), MakeImage(2, 1)), "");
  json g = Groups(*admin_);
  ASSERT_TRUE(g.contains("vm/1")) << g.dump();
  EXPECT_TRUE(g["vm/1"].contains("unique_bytes"));
  EXPECT_TRUE(g["vm/1"]["unique_bytes"].is_null());
}

TEST_F(ServerGroupUsageTest, StaleAfterTheStoresOrTheGroupsInterval) {
  StartWith("100");
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  ASSERT_NE(BackupImage(*admin_, "vm/old", now - 100000, MakeImage(1, 1)), "");
  ASSERT_NE(BackupImage(*admin_, "vm/new", now - 1000, MakeImage(1, 2)), "");
  json g = Groups(*admin_);
  EXPECT_EQ(g["vm/old"]["stale"], true);   // 100000 s > 26 h
  EXPECT_EQ(g["vm/new"]["stale"], false);
  EXPECT_EQ(g["vm/old"]["stale_after"], 93600);
  // A group's own interval wins over the store's.
  ASSERT_EQ(RunServerCommand(dir_.path(), {"datastore", "set", "default", "--group", "vm/new",
                                           "--stale-after", "600"}).exit_code, 0);
  ASSERT_EQ(RunServerCommand(dir_.path(), {"datastore", "set", "default", "--stale-after",
                                           "200000"}).exit_code, 0);
  g = Groups(*admin_);
  EXPECT_EQ(g["vm/old"]["stale"], false);
  EXPECT_EQ(g["vm/old"]["stale_after"], 200000);
  EXPECT_EQ(g["vm/new"]["stale"], true);
  EXPECT_EQ(g["vm/new"]["stale_after"], 600);
  // Bad values are refused and change nothing; 0 returns the group to the store's.
  for (auto args : {std::vector<std::string>{"--group", "vm/../x", "--stale-after", "600"},
                    std::vector<std::string>{"--group", "vm/new", "--stale-after", "59"},
                    std::vector<std::string>{"--group", "vm/new", "--verify-new", "on"}}) {
    args.insert(args.begin(), {"datastore", "set", "default"});
    EXPECT_NE(RunServerCommand(dir_.path(), args).exit_code, 0) << args[4];
  }
  EXPECT_EQ(Groups(*admin_)["vm/new"]["stale_after"], 600);
  ASSERT_EQ(RunServerCommand(dir_.path(), {"datastore", "set", "default", "--group", "vm/new",
                                           "--stale-after", "0"}).exit_code, 0);
  EXPECT_EQ(Groups(*admin_)["vm/new"]["stale_after"], 200000);
  // A Backup token sees its own groups only, with the same fields.
  auto bob = ClientAs("bob", "Backup");
  ASSERT_NE(BackupImage(*bob, "vm/bob", now - 10, MakeImage(1, 3)), "");
  json mine = Groups(*bob);
  ASSERT_EQ(mine.size(), 1u) << mine.dump();
  EXPECT_EQ(mine["vm/bob"]["stale"], false);
  EXPECT_TRUE(mine["vm/bob"].contains("unique_bytes"));
}

}  // namespace
}  // namespace cairn::testing
