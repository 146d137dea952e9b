// Remotes (parsing what an admin types, the table in server.db) and the
// options of sync and push jobs, without a network.

#include <gtest/gtest.h>

#include "server/maintenance.h"
#include "server/remotes.h"
#include "server/sync.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::server {
namespace {

using nlohmann::json;

constexpr char kFp[] =
    "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89";

TEST(MakeRemoteTest, ParsesUrlFingerprintAndToken) {
  auto r = MakeRemote("a", "https://backup.example:9000/", kFp, "sync!pull:c0ffee");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->host, "backup.example");
  EXPECT_EQ(r->port, 9000);
  EXPECT_EQ(r->fingerprint.substr(0, 5), "AB:CD");
  EXPECT_EQ(r->auth_id, "sync!pull");
  EXPECT_EQ(r->secret, "c0ffee");
  EXPECT_EQ(r->Url(), "https://backup.example:9000");
  EXPECT_EQ(r->ToJson().dump().find("c0ffee"), std::string::npos);
  client::Repository repo = r->RepositoryFor("store1");
  EXPECT_EQ(repo.token, "sync!pull:c0ffee");
  EXPECT_EQ(repo.fingerprint.size(), 64u);
  EXPECT_EQ(repo.store, "store1");

  auto v6 = MakeRemote("b", "https://[::1]", kFp, "u!t:s");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 8107);
  EXPECT_EQ(v6->Url(), "https://[::1]:8107");
}

TEST(MakeRemoteTest, RefusesBadInputWithoutRepeatingTheSecret) {
  EXPECT_TRUE(MakeRemote("../x", "https://h:1", kFp, "u!t:s").status().IsInvalidArgument());
  for (const char* url : {"http://h:1", "https://", "https://h:0", "https://h:99999",
                          "https://h:1/store", "https://h:x", "https://u@h:1", "https://[::1"}) {
    EXPECT_TRUE(MakeRemote("a", url, kFp, "u!t:s").status().IsInvalidArgument()) << url;
  }
  EXPECT_TRUE(MakeRemote("a", "https://h", "abcd", "u!t:s").status().IsInvalidArgument());
  for (const char* token : {"nosecret", "user:secret", "u!t:", "u!t:se cret", "!t:s", "u!:s"}) {
    auto r = MakeRemote("a", "https://h", kFp, token);
    EXPECT_TRUE(r.status().IsInvalidArgument()) << token;
    EXPECT_EQ(r.status().message().find("cret"), std::string::npos) << r.status().ToString();
  }
}

TEST(RemoteStoreTest, AddListGetRemove) {
  cairn::testing::TempDir dir;
  auto store = RemoteStore::Open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto a = MakeRemote("a", "https://h:1", kFp, "u!t:s1");
  auto b = MakeRemote("b", "https://h:2", kFp, "u!t:s2");
  ASSERT_TRUE((*store)->Add(*b).ok());
  ASSERT_TRUE((*store)->Add(*a).ok());
  EXPECT_EQ((*store)->Add(*a).code(), Status::Code::kAlreadyExists);
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "a");
  EXPECT_GT((*list)[0].created, 0);
  auto got = (*store)->Get("b");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->secret, "s2");
  EXPECT_EQ(got->port, 2);
  EXPECT_TRUE((*store)->Remove("a").ok());
  EXPECT_TRUE((*store)->Remove("a").IsNotFound());
  EXPECT_TRUE((*store)->Get("a").status().IsNotFound());
}

TEST(SyncOptionsTest, ChecksAndRebuildsJobOptions) {
  auto o = SyncOptions::FromJson(
      "sync", {{"remote", "a"}, {"remote-store", "default"}, {"groups", {"vm/2", "ns:vm/1", "vm/2"}},
               {"remove-vanished", true}, {"rate-limit", 12.5}, {"owner", "alice!offsite"}});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->groups.size(), 2u);
  EXPECT_TRUE(o->remove_vanished);
  EXPECT_DOUBLE_EQ(o->rate_limit_mbps, 12.5);
  EXPECT_EQ(o->owner, "alice!offsite");
  // JobOptionsFromJson stores the normal form; the owner default is written down.
  auto stored = JobOptionsFromJson("sync", {{"remote", "a"}, {"remote-store", "s"}});
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, (json{{"remote", "a"}, {"remote-store", "s"}, {"owner", "admin"}}));
  auto push = JobOptionsFromJson("push", {{"remote", "a"}, {"remote-store", "s"}});
  ASSERT_TRUE(push.ok());
  EXPECT_FALSE(push->contains("owner"));

  const json bad[] = {
      json::object(),
      {{"remote", "a"}},
      {{"remote-store", "s"}},
      {{"remote", "../a"}, {"remote-store", "s"}},
      {{"remote", "a"}, {"remote-store", "s"}, {"groups", "vm/1"}},
      {{"remote", "a"}, {"remote-store", "s"}, {"groups", {"vm/../1"}}},
      {{"remote", "a"}, {"remote-store", "s"}, {"rate-limit", 0}},
      {{"remote", "a"}, {"remote-store", "s"}, {"rate-limit", 1e9}},
      {{"remote", "a"}, {"remote-store", "s"}, {"remove-vanished", 1}},
      {{"remote", "a"}, {"remote-store", "s"}, {"owner", "a b"}},
      {{"remote", "a"}, {"remote-store", "s"}, {"keep-last", 1}},
  };
  for (const auto& j : bad) {
    EXPECT_TRUE(SyncOptions::FromJson("sync", j).status().IsInvalidArgument()) << j.dump();
  }
  EXPECT_TRUE(
      SyncOptions::FromJson("push", {{"remote", "a"}, {"remote-store", "s"}, {"owner", "x"}})
          .status()
          .IsInvalidArgument());
}

TEST(SyncOptionsTest, ARemoteInUseIsNamed) {
  JobConfig sync, other;
  sync.id = "nightly";
  sync.kind = "sync";
  sync.options = {{"remote", "a"}};
  other.id = "prune1";
  other.kind = "prune";
  other.options = {{"remote", "a"}};
  EXPECT_TRUE(CheckRemoteUnused({other}, "a").ok());
  Status s = CheckRemoteUnused({sync, other}, "a");
  EXPECT_TRUE(s.IsConflict());
  EXPECT_NE(s.message().find("nightly"), std::string::npos);
  EXPECT_TRUE(CheckRemoteUnused({sync}, "b").ok());
}

TEST(SyncReportTest, SummaryAndJson) {
  SyncReport r;
  r.direction = "pull";
  r.snapshots_copied = 3;
  r.chunks_fetched = 12;
  r.data_bytes = 48 << 20;
  r.transfer_ms = 500;
  EXPECT_EQ(r.Summary(), "3 copied, 0 skipped, 0 removed; 12 chunks fetched (48.0 MiB, 100.7 MB/s)");
  EXPECT_EQ(r.ToJson()["snapshots-copied"], 3);
  EXPECT_DOUBLE_EQ(r.ToJson()["mb-per-s"].get<double>(), r.MegabytesPerSecond());
}

}  // namespace
}  // namespace cairn::server
