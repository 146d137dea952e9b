// ComputeUniqueBytes and GroupUsage on a real datastore and catalog: which
// chunks count as a group's own, their size on disk, snapshots deleted
// between the listing and the read, and the cache kept in server.db.

#include "server/group_usage.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <thread>

#include "storage/chunk_store.h"
#include "storage/env.h"
#include "storage/names.h"
#include "tests/storage/datastore_testutil.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::server {
namespace {

using storage::Digest;

class GroupUsageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    path_ = storage::JoinPath(dir_, "store");
    ASSERT_TRUE(storage::TestDatastores::Create(path_).ok());
    auto ds = storage::Datastore::Open(storage::Env::Default(), path_);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    store_ = std::move(*ds);
    auto cat = storage::Catalog::Open(storage::JoinPath(dir_, "cairn.db"));
    ASSERT_TRUE(cat.ok());
    catalog_ = std::move(*cat);
    ASSERT_TRUE(catalog_->AddDatastore("s", path_).ok());
    auto sync = storage::CatalogSync::Attach(catalog_.get(), "s", store_.get(), nullptr);
    ASSERT_TRUE(sync.ok()) << sync.status().ToString();
    sync_ = std::move(*sync);
  }
  void TearDown() override {
    sync_.reset();
    store_.reset();
    catalog_.reset();
  }
  // Stores a chunk of `n` bytes of `fill`; its digest.
  Digest Chunk(char fill, size_t n) {
    Digest d;
    storage::DirtyFolders dirty;
    EXPECT_TRUE(store_->chunk_store()->InsertData(std::string(n, fill), &d, &dirty).ok());
    return d;
  }
  uint64_t DiskSize(const Digest& d) {
    auto info = storage::Env::Default()->Stat(store_->chunk_store()->ChunkPath(d));
    EXPECT_TRUE(info.ok());
    return info.ok() ? info->size : 0;
  }
  void Commit(const std::string& snapshot, const std::vector<Digest>& chunks) {
    storage::FixedIndexWriter w(chunks.size() * storage::kChunkSize);
    for (size_t i = 0; i < chunks.size(); ++i) ASSERT_TRUE(w.Set(i, chunks[i]).ok());
    auto ref = storage::SnapshotRef::Parse(snapshot);
    ASSERT_TRUE(ref.ok());
    ASSERT_TRUE(storage::CommitTestSnapshot(*store_, *ref, w).ok());
  }
  UniqueBytes Compute(uint64_t* logical_bytes = nullptr) {
    std::atomic<bool> cancel{false};
    auto r = ComputeUniqueBytes(*catalog_, "s", *store_, cancel, logical_bytes);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : UniqueBytes();
  }

  cairn::testing::TempDir tmp_;
  std::string dir_, path_;
  std::unique_ptr<storage::Datastore> store_;
  std::unique_ptr<storage::Catalog> catalog_;
  std::unique_ptr<storage::CatalogSync> sync_;
};

TEST_F(GroupUsageTest, OwnChunksCountOnceSharedOnesNot) {
  const Digest a = Chunk('a', 5000), b = Chunk('b', 7000), shared = Chunk('s', 3000);
  // vm/1 references a twice and in two snapshots: counted once.
  Commit("vm/1/2026-01-01T00:00:00Z", {a, shared, a});
  Commit("vm/1/2026-01-02T00:00:00Z", {a});
  Commit("vm/2/2026-01-01T00:00:00Z", {b, shared});
  Commit("ct/3/2026-01-01T00:00:00Z", {shared});
  uint64_t logical = 0;
  UniqueBytes u = Compute(&logical);
  EXPECT_EQ(u, (UniqueBytes{{"vm/1", DiskSize(a)}, {"vm/2", DiskSize(b)}, {"ct/3", 0}}));
  EXPECT_EQ(logical, 7 * storage::kChunkSize);  // 3 + 1 + 2 + 1 chunks of image
  // Without vm/2, the shared chunk is no longer shared by three groups but two.
  ASSERT_TRUE(store_->DeleteSnapshot(*storage::SnapshotRef::Parse("vm/2/2026-01-01T00:00:00Z")).ok());
  u = Compute();
  EXPECT_EQ(u.count("vm/2"), 0u);
  EXPECT_EQ(u["vm/1"], DiskSize(a));
  EXPECT_EQ(u["ct/3"], 0u);
}

TEST_F(GroupUsageTest, AnUnreadableIndexLeavesItsGroupUnknown) {
  const Digest a = Chunk('a', 5000), b = Chunk('b', 6000);
  Commit("vm/1/2026-01-01T00:00:00Z", {a});
  Commit("vm/2/2026-01-01T00:00:00Z", {b});
  auto path = store_->ArchivePath(*storage::SnapshotRef::Parse("vm/2/2026-01-01T00:00:00Z"),
                                  "drive0.fidx");
  ASSERT_TRUE(path.ok());
  ASSERT_TRUE(storage::WriteFileAtomic(storage::Env::Default(), *path, "garbage", false).ok());
  UniqueBytes u = Compute();
  EXPECT_EQ(u, (UniqueBytes{{"vm/1", DiskSize(a)}}));
}

TEST_F(GroupUsageTest, ComputedInTheBackgroundAndKeptAcrossRestarts) {
  const Digest a = Chunk('a', 5000);
  Commit("vm/1/2026-01-01T00:00:00Z", {a});
  auto stores = [this](const std::string& name) -> storage::Result<storage::Datastore*> {
    if (name != "s") return storage::Status::NotFound("no datastore " + name);
    return store_.get();
  };
  {
    auto usage = GroupUsage::Open(dir_, catalog_.get(), stores, 10);
    ASSERT_TRUE(usage.ok());
    EXPECT_TRUE((*usage)->Get("s").empty());
    (*usage)->Start({"s"});
    for (int i = 0; i < 200 && (*usage)->Computations("s") == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ((*usage)->Get("s"), (UniqueBytes{{"vm/1", DiskSize(a)}}));
    // A change is picked up after MarkDirty.
    Commit("vm/2/2026-01-01T00:00:00Z", {a});
    (*usage)->MarkDirty("s");
    for (int i = 0; i < 200 && (*usage)->Computations("s") < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ((*usage)->Get("s"), (UniqueBytes{{"vm/1", 0}, {"vm/2", 0}}));
  }
  // Reopened (not started): the last values at once.
  auto again = GroupUsage::Open(dir_, catalog_.get(), stores, 10);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Get("s"), (UniqueBytes{{"vm/1", 0}, {"vm/2", 0}}));
}

}  // namespace
}  // namespace cairn::server
