// The typed repository client (client/repository_client.h) against the real
// server: every call it makes, with the answers checked by its parsers.
// VerifyPruneAndGcResults needs the server's task results (`"result"` in
// GET /tasks/{id}, prune and gc answering 202 with a task).

#include "client/repository_client.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using client::RepositoryClient;
using client::TaskState;

class RepositoryClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    ApiClient admin(server_->port(), server_->AdminToken());
    std::string img = MakeImage(2, 77);
    for (const char* t : {"2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", "2026-05-03T00:00:00Z"}) {
      ASSERT_NE(BackupImage(admin, "vm/42", *storage::ParseSnapshotTime(t), img), "");
    }
    std::string token_file = dir_.path() + "/token";
    std::ofstream(token_file) << server_->AdminToken() << "\n";
    auto repo = client::Repository::Resolve(
        "https://127.0.0.1:" + std::to_string(server_->port()) + "/default", token_file,
        server_->fingerprint());
    ASSERT_TRUE(repo.ok()) << repo.status().ToString();
    client_ = std::make_unique<RepositoryClient>(*repo);
    client_->set_poll_interval(std::chrono::milliseconds(50));
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<RepositoryClient> client_;
};

TEST_F(RepositoryClientTest, DatastoresGroupsSnapshots) {
  auto stores = client_->ListDatastores();
  ASSERT_TRUE(stores.ok()) << stores.status().ToString();
  ASSERT_EQ(stores->value.size(), 1u);
  EXPECT_EQ(stores->value[0].name, "default");
  EXPECT_TRUE(stores->json.is_array());

  auto groups = client_->ListGroups();
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  ASSERT_EQ(groups->value.size(), 1u);
  EXPECT_EQ(groups->value[0].group, "vm/42");
  EXPECT_EQ(groups->value[0].snapshots, 3u);
  EXPECT_EQ(groups->value[0].last, *storage::ParseSnapshotTime("2026-05-03T00:00:00Z"));

  auto snaps = client_->ListSnapshots("vm/42");
  ASSERT_TRUE(snaps.ok()) << snaps.status().ToString();
  ASSERT_EQ(snaps->value.size(), 3u);
  const std::string first = "vm/42/2026-05-01T00:00:00Z";
  EXPECT_EQ(snaps->value[0].snapshot, first);
  EXPECT_EQ(snaps->value[0].time_text, "2026-05-01T00:00:00Z");
  EXPECT_FALSE(snaps->value[0].archives.empty());
  EXPECT_TRUE(client_->ListSnapshots("vm/43").status().IsNotFound());
  // The group goes into the query escaped: this is one (invalid) name, not
  // a second parameter.
  EXPECT_TRUE(client_->ListSnapshots("vm/42&group=vm/1").status().IsInvalidArgument());

  auto prot = client_->SetProtected(first, true);
  ASSERT_TRUE(prot.ok()) << prot.status().ToString();
  EXPECT_TRUE(prot->is_protected);
  EXPECT_TRUE(client_->DeleteSnapshot(first).IsConflict());
  auto notes = client_->SetNotes(first, "before the upgrade & co");
  ASSERT_TRUE(notes.ok()) << notes.status().ToString();
  EXPECT_EQ(notes->notes, "before the upgrade & co");
  ASSERT_TRUE(client_->SetProtected(first, false).ok());
  EXPECT_TRUE(client_->DeleteSnapshot(first).ok());
  auto left = client_->ListSnapshots();
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->value.size(), 2u);
}

TEST_F(RepositoryClientTest, WaitTaskStreamsTheWholeLog) {
  auto id = client_->StartVerify({"vm/42", false, std::nullopt});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  std::vector<std::string> lines;
  auto task = client_->WaitTask(*id, [&](std::string_view l) { lines.emplace_back(l); });
  ASSERT_TRUE(task.ok()) << task.status().ToString();
  EXPECT_EQ(task->state, TaskState::kOk);
  EXPECT_EQ(task->kind, "verify");
  EXPECT_TRUE(task->end.has_value());
  ASSERT_FALSE(lines.empty());
  // The last line the task wrote is there.
  EXPECT_NE(lines.back().find("TASK ok"), std::string::npos) << lines.back();

  std::vector<std::string> again;
  ASSERT_TRUE(
      client_->ReadWholeTaskLog(*id, [&](std::string_view l) { again.emplace_back(l); }).ok());
  EXPECT_EQ(again, lines);
  auto past = client_->ReadTaskLog(*id, 1ull << 40);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(*past, "");

  auto tasks = client_->ListTasks(10);
  ASSERT_TRUE(tasks.ok()) << tasks.status().ToString();
  ASSERT_FALSE(tasks->value.empty());
  EXPECT_EQ(tasks->value[0].id, *id);
  EXPECT_TRUE(client_->GetTask("no-such-task").status().IsNotFound());
}

// Needs the server change: prune and gc as tasks, results in the task JSON.
TEST_F(RepositoryClientTest, VerifyPruneAndGcResults) {
  auto verify = client_->Verify({"vm/42", false, std::nullopt});
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  ASSERT_TRUE(verify->result.has_value());
  EXPECT_EQ(verify->result->snapshots_ok, 3u);
  EXPECT_EQ(verify->result->chunks_bad, 0u);

  storage::PruneOptions keep_one;
  keep_one.keep_last = 1;
  auto dry = client_->Prune("vm/42", keep_one, true);
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  ASSERT_TRUE(dry->result.has_value());
  EXPECT_TRUE(dry->result->dry_run);
  EXPECT_EQ(dry->result->kept, 1u);
  EXPECT_EQ(dry->result->removed, 2u);
  auto real = client_->Prune("vm/42", keep_one, false);
  ASSERT_TRUE(real.ok()) << real.status().ToString();
  ASSERT_TRUE(real->result.has_value());
  EXPECT_EQ(real->task.kind, "prune");
  EXPECT_EQ(real->result->removed, 2u);
  ASSERT_EQ(real->result->snapshots.size(), 3u);
  EXPECT_EQ(real->result->snapshots[0].reason, "keep-last");

  auto gc = client_->Gc(true);
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  ASSERT_TRUE(gc->result.has_value());
  EXPECT_TRUE(gc->result->dry_run);
  EXPECT_EQ(gc->task.kind, "gc");
  auto status = client_->GcStatus();  // a dry run keeps no status
  EXPECT_TRUE(status.status().IsNotFound()) << status.status().ToString();
  ASSERT_TRUE(client_->Gc(false).ok());
  status = client_->GcStatus();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_FALSE(status->value.dry_run);
}

}  // namespace
}  // namespace cairn::testing
