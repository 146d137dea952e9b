// Races between sessions and deletion (issue 16): a snapshot a session is
// about to use must not be deleted between the session's look and its use.
// The hook runs exactly where the old code looked (IsInUse) without holding
// anything: there, a delete slipped in and removed the base of a backup, or
// the snapshot a reader was opening. Checked by making PinLocked record
// nothing (the old behaviour): BaseIsPinnedBeforeItIsRead and
// ReaderPinsBeforeItOpens then fail.

#include "server/session_manager.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>

#include "server/maintenance.h"
#include "storage/env.h"
#include "tests/storage/datastore_testutil.h"

namespace cairn::server {
namespace {

using storage::Datastore;
using storage::FixedIndexWriter;
using storage::GroupRef;

class SessionManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cairn-sessions-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/store";
    ASSERT_TRUE(storage::TestDatastores::Create(path_).ok());
    auto store = Datastore::Open(storage::Env::Default(), path_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void TearDown() override {
    sessions_.SetPinnedHookForTesting(nullptr);
    sessions_.Shutdown();  // sessions point into the store
    store_.reset();
    (void)storage::RemoveAll(storage::Env::Default(), dir_);
  }

  SnapshotRef Commit(int64_t time) {
    SnapshotRef ref{group_, time};
    FixedIndexWriter w(4096, 4096);
    storage::Digest d;
    EXPECT_TRUE(store_->chunk_store()->InsertData(std::string(4096, 'x'), &d, nullptr).ok());
    EXPECT_TRUE(w.Set(0, d).ok());
    Status s = storage::CommitTestSnapshot(*store_, ref, w);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return ref;
  }

  std::string dir_, path_;
  std::unique_ptr<Datastore> store_;
  GroupRef group_{{}, "vm", "1"};
  SessionManager sessions_{900};
};

// (c) A delete arriving while StartBackup reads its base: refused, and the
// base the session was offered still exists.
TEST_F(SessionManagerTest, BaseIsPinnedBeforeItIsRead) {
  SnapshotRef base = Commit(1000);
  Status during;
  sessions_.SetPinnedHookForTesting([&](const SnapshotRef& ref) {
    during = DeleteSnapshotIfUnused(*store_, "s", &sessions_, ref);
  });
  auto started = sessions_.StartBackup("s", store_.get(), group_, 2000, "a!b", 2000);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(during.code(), Status::Code::kConflict) << during.ToString();
  ASSERT_TRUE(started->session->previous().has_value());
  EXPECT_EQ(*started->session->previous(), base);
  EXPECT_TRUE(store_->ReadManifest(base).ok());
  // While the backup runs its base stays; once it ended, it can go.
  sessions_.SetPinnedHookForTesting(nullptr);
  EXPECT_EQ(DeleteSnapshotIfUnused(*store_, "s", &sessions_, base).code(),
            Status::Code::kConflict);
  sessions_.EndBackup(started->session->id());
  EXPECT_TRUE(DeleteSnapshotIfUnused(*store_, "s", &sessions_, base).ok());
}

// Two backups of a group in the same second: the second one, given no
// time, waits for the next second instead of failing with Conflict; an
// explicit time that is not later than the last snapshot still fails.
TEST_F(SessionManagerTest, SameSecondBackupTakesTheNextSecond) {
  const int64_t now = std::time(nullptr);
  Commit(now);
  auto explicit_time = sessions_.StartBackup("s", store_.get(), group_, now, "a!b", now);
  EXPECT_EQ(explicit_time.status().code(), Status::Code::kConflict)
      << explicit_time.status().ToString();
  auto started = sessions_.StartBackup("s", store_.get(), group_, std::nullopt, "a!b", now);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->session->ref().time, now + 1);
  // system_clock, as the wait does: time(2) reads a coarse clock that may
  // lag it by a few milliseconds.
  EXPECT_GE(std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count(),
            now + 1)
      << "the snapshot time is ahead of the clock";
  sessions_.EndBackup(started->session->id());
}

// (a) A delete arriving while a reader opens the snapshot: refused.
TEST_F(SessionManagerTest, ReaderPinsBeforeItOpens) {
  SnapshotRef ref = Commit(1000);
  Status during;
  sessions_.SetPinnedHookForTesting([&](const SnapshotRef& r) {
    during = DeleteSnapshotIfUnused(*store_, "s", &sessions_, r);
  });
  auto reader = sessions_.StartReader("s", store_.get(), ref, "a!b", 1000);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ(during.code(), Status::Code::kConflict) << during.ToString();
  EXPECT_TRUE(store_->ReadManifest(ref).ok());
  sessions_.SetPinnedHookForTesting(nullptr);
  sessions_.EndReader((*reader)->id());
  EXPECT_TRUE(DeleteSnapshotIfUnused(*store_, "s", &sessions_, ref).ok());
  EXPECT_FALSE(store_->ReadManifest(ref).ok());
}

// While a delete holds its claim, no session can start to use the snapshot.
TEST_F(SessionManagerTest, ClaimedSnapshotCannotBePinned) {
  SnapshotRef ref = Commit(1000);
  ASSERT_TRUE(sessions_.BeginDelete("s", ref).ok());
  EXPECT_EQ(sessions_.BeginDelete("s", ref).code(), Status::Code::kConflict);
  auto reader = sessions_.StartReader("s", store_.get(), ref, "a!b", 1000);
  EXPECT_TRUE(reader.status().IsNotFound()) << reader.status().ToString();
  auto started = sessions_.StartBackup("s", store_.get(), group_, 2000, "a!b", 2000);
  ASSERT_TRUE(started.ok());
  EXPECT_FALSE(started->session->previous().has_value()) << "a base being deleted was offered";
  sessions_.EndBackup(started->session->id());
  sessions_.EndDelete("s", ref);
  auto again = sessions_.StartReader("s", store_.get(), ref, "a!b", 1000);
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

// Many readers and deleters at once: every reader that opened the snapshot
// finds it whole, and the snapshot is deleted exactly when nobody uses it.
TEST_F(SessionManagerTest, ReadersAndDeletesRace) {
  for (int round = 0; round < 20; ++round) {
    SnapshotRef ref = Commit(1000 + round);
    std::atomic<int> opened{0}, broken{0}, deleted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 20; ++i) {
          auto r = sessions_.StartReader("s", store_.get(), ref, "a!b", 1000);
          if (!r.ok()) continue;
          ++opened;
          if (!(*r)->ReadArchive("drive0.fidx").ok()) ++broken;
          sessions_.EndReader((*r)->id());
        }
      });
    }
    threads.emplace_back([&] {
      for (int i = 0; i < 200 && deleted == 0; ++i) {
        if (DeleteSnapshotIfUnused(*store_, "s", &sessions_, ref).ok()) ++deleted;
        std::this_thread::yield();
      }
    });
    for (auto& t : threads) t.join();
    EXPECT_EQ(broken, 0) << "a reader lost its snapshot while it was open";
    EXPECT_FALSE(sessions_.IsInUse("s", ref));
  }
}

}  // namespace
}  // namespace cairn::server
