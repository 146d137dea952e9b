// Verification, tasks and scheduled jobs through the real server: a flipped
// byte in a chunk is found, renamed aside and fails exactly the snapshots
// that use it; the next backup heals the store; jobs run on schedule and
// their task logs survive a restart.

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <thread>

#include "storage/digest.h"
#include "storage/env.h"
#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

class ServerVerifyJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  }

  // Waits for a task to end; returns its JSON.
  json WaitTask(const std::string& id) {
    for (int i = 0; i < 600; ++i) {
      auto r = admin_->Get("/api/v1/tasks/" + id);
      if (r.status == 200 && r.Json()["state"] != "running") return r.Json();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "task " << id << " did not end";
    return json();
  }

  std::map<std::string, std::string> VerifyStates() {
    std::map<std::string, std::string> out;
    auto r = admin_->Get("/api/v1/datastores/default/snapshots");
    for (const auto& s : r.Json()) {
      out[s["snapshot"].get<std::string>()] =
          s["verify"].is_object() ? s["verify"]["state"].get<std::string>() : "none";
    }
    return out;
  }

  std::string ChunkPath(const storage::Digest& d) {
    return dir_.path() + "/stores/default/.chunks/" + d.ToHex().substr(0, 4) + "/" + d.ToHex();
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
};

TEST_F(ServerVerifyJobsTest, FlippedByteIsFoundRenamedAsideAndHealedByTheNextBackup) {
  std::string a = MakeImage(3, 31), b = MakeImage(3, 32);
  std::string s1 = BackupImage(*admin_, "vm/1", T("2026-07-01T00:00:00Z"), a);
  std::string s2 = BackupImage(*admin_, "vm/1", T("2026-07-02T00:00:00Z"), a);
  std::string s3 = BackupImage(*admin_, "vm/2", T("2026-07-01T00:00:00Z"), b);
  ASSERT_FALSE(s1.empty() || s2.empty() || s3.empty());
  // Chunk 0 of image a is random and only in vm/1's snapshots.
  storage::Digest bad = storage::Sha256(ChunkOf(a, 0));
  {
    std::fstream f(ChunkPath(bad), std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekp(1000);
    char c;
    f.seekg(1000);
    f.get(c);
    f.seekp(1000);
    f.put(static_cast<char>(c ^ 0x40));
  }
  auto v = admin_->PostJson("/api/v1/datastores/default/verify", json::object());
  ASSERT_EQ(v.status, 202) << v.body;
  json task = WaitTask(v.Json()["task"]);
  EXPECT_EQ(task["state"], "failed") << task.dump();
  auto states = VerifyStates();
  EXPECT_EQ(states[s1], "failed");
  EXPECT_EQ(states[s2], "failed");
  EXPECT_EQ(states[s3], "ok");
  EXPECT_TRUE(storage::Env::Default()->Stat(ChunkPath(bad)).status().IsNotFound());
  EXPECT_TRUE(storage::Env::Default()->Stat(ChunkPath(bad) + ".0.bad").ok());
  auto log = admin_->Get("/api/v1/tasks/" + task["id"].get<std::string>() + "/log");
  EXPECT_NE(log.body.find(bad.ToHex()), std::string::npos) << log.body;

  // The next backup of vm/1 gets no base and sends every chunk: healed.
  json started = StartBackup(*admin_, "vm/1", T("2026-07-03T00:00:00Z"));
  EXPECT_TRUE(started["previous"].is_null()) << started.dump();
  std::string sid = started["session"];
  EXPECT_EQ(UploadImage(*admin_, sid, "drive0.fidx", a, {}), ChunkCount(a));
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);
  v = admin_->PostJson("/api/v1/datastores/default/verify", json::object());
  ASSERT_EQ(v.status, 202);
  task = WaitTask(v.Json()["task"]);
  EXPECT_EQ(task["state"], "ok") << task.dump();
  for (const auto& [snap, state] : VerifyStates()) EXPECT_EQ(state, "ok") << snap;
  EXPECT_EQ(Restore(*admin_, "vm/1/2026-07-03T00:00:00Z", "drive0.fidx"), a);
  EXPECT_EQ(Restore(*admin_, s1, "drive0.fidx"), a);
}

TEST_F(ServerVerifyJobsTest, ReaderMayVerifyBackupOnlyItsOwnAndBadInputIsRefused) {
  std::string a = MakeImage(2, 33);
  ASSERT_NE(BackupImage(*admin_, "vm/1", T("2026-07-01T00:00:00Z"), a), "");
  ASSERT_EQ(RunServerCommand(dir_.path(), {"user", "add", "rita"}).exit_code, 0);
  auto tok = RunServerCommand(dir_.path(), {"token", "create", "rita!r"});
  ASSERT_EQ(RunServerCommand(dir_.path(), {"acl", "set", "--store", "default", "--role", "Reader",
                                           "--auth", "rita!r"}).exit_code, 0);
  ApiClient rita(server_->port(), tok.output.substr(0, tok.output.find('\n')));
  auto v = rita.PostJson("/api/v1/datastores/default/verify", {{"target", "vm/1"}});
  ASSERT_EQ(v.status, 202) << v.body;
  EXPECT_EQ(WaitTask(v.Json()["task"])["state"], "ok");
  // Her own task is visible to her.
  auto tasks = rita.Get("/api/v1/tasks");
  ASSERT_EQ(tasks.status, 200);
  EXPECT_EQ(tasks.Json().size(), 1u) << tasks.body;
  EXPECT_EQ(admin_->PostJson("/api/v1/datastores/default/verify", {{"target", "vm/.."}}).status, 400);
  EXPECT_EQ(admin_->PostJson("/api/v1/datastores/default/verify",
                             {{"ignore-verified", "yes"}}).status, 400);
  EXPECT_EQ(admin_->Get("/api/v1/tasks/..%2F..%2Fetc").status, 404);
}

TEST_F(ServerVerifyJobsTest, ScheduledJobRunsAndItsLogSurvivesARestart) {
  std::string a = MakeImage(2, 34);
  ASSERT_NE(BackupImage(*admin_, "vm/1", T("2026-07-01T00:00:00Z"), a), "");
  // Added with the admin command while the server runs: the scheduler reads
  // the jobs table every second.
  auto add = RunServerCommand(dir_.path(), {"job", "add", "often", "--kind", "verify", "--store",
                                            "default", "--schedule", "*:*:0/2"});
  ASSERT_EQ(add.exit_code, 0) << add.output;
  json task;
  for (int i = 0; i < 100 && task.is_null(); ++i) {
    for (const auto& t : admin_->Get("/api/v1/tasks").Json()) {
      if (t["kind"] == "verify" && t["auth-id"] == "scheduler" && t["state"] != "running") task = t;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(task.is_null()) << "the job did not run";
  EXPECT_EQ(task["state"], "ok");
  auto jobs = admin_->Get("/api/v1/jobs");
  ASSERT_EQ(jobs.Json().size(), 1u);
  EXPECT_FALSE(jobs.Json()[0]["last-run"].is_null());
  // Run on demand.
  auto run = admin_->Post("/api/v1/jobs/often/run", "");
  EXPECT_TRUE(run.status == 202 || run.status == 409) << run.body;
  ASSERT_EQ(RunServerCommand(dir_.path(), {"job", "remove", "often"}).exit_code, 0);

  const std::string id = task["id"];
  std::string before = admin_->Get("/api/v1/tasks/" + id + "/log").body;
  EXPECT_NE(before.find("TASK ok"), std::string::npos) << before;
  server_->Stop(SIGTERM);
  server_ = ServerProcess::Start(dir_.path());
  ASSERT_NE(server_, nullptr);
  admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
  auto after = admin_->Get("/api/v1/tasks/" + id + "/log");
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(after.body, before);
}

TEST_F(ServerVerifyJobsTest, VerifyNewSnapshotsRightAfterBackup) {
  std::string a = MakeImage(2, 36);
  std::string before = BackupImage(*admin_, "vm/6", T("2026-07-01T00:00:00Z"), a);
  auto set = RunServerCommand(dir_.path(), {"datastore", "set", "default", "--verify-new", "on"});
  ASSERT_EQ(set.exit_code, 0) << set.output;
  std::string after = BackupImage(*admin_, "vm/6", T("2026-07-02T00:00:00Z"), a);
  std::map<std::string, std::string> states;
  for (int i = 0; i < 100 && states[after] != "ok"; ++i) {
    states = VerifyStates();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(states[after], "ok");
  EXPECT_EQ(states[before], "none");  // made before the setting: not verified
  EXPECT_NE(RunServerCommand(dir_.path(), {"datastore", "set", "nosuch", "--verify-new", "on"}).exit_code, 0);
}

TEST_F(ServerVerifyJobsTest, ClientVerifyFollowsTheTask) {
  std::string a = MakeImage(2, 35);
  ASSERT_NE(BackupImage(*admin_, "vm/5", T("2026-07-01T00:00:00Z"), a), "");
  std::vector<std::string> env = {
      "CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
      "CAIRN_TOKEN=" + server_->AdminToken(), "CAIRN_FINGERPRINT=" + server_->fingerprint()};
  auto r = RunBinary("client/cairn", {"--output", "json", "verify", "vm/5"}, env, dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json j = json::parse(r.output.substr(r.output.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["snapshots-ok"], 1);
  auto t = RunBinary("client/cairn", {"tasks"}, env, dir_.path());
  EXPECT_EQ(t.exit_code, 0);
  EXPECT_NE(t.output.find("verify"), std::string::npos) << t.output;
}

}  // namespace
}  // namespace cairn::testing
