#include "storage/gc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "storage/chunk_store.h"
#include "storage/datastore.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"
#include "tests/storage/datastore_testutil.h"
#include "tests/storage/fault_env_testutil.h"

namespace cairn::storage {
namespace {

constexpr uint64_t kTestChunkSize = 4096;
constexpr int64_t kOldTime = 1000000000;  // 2001

// Chunk content number `id`: distinct per id, incompressible.
std::string Block(uint32_t id) {
  std::mt19937_64 rng(id * 7919u + 1);
  std::string s(kTestChunkSize, '\0');
  for (size_t i = 0; i < s.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  return s;
}

void SetMtime(const std::string& path, int64_t seconds) {
  struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path << ": " << strerror(errno);
}

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_size);
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

SnapshotRef Ref(const std::string& id, int64_t time) {
  SnapshotRef ref;
  ref.group.type = "vm";
  ref.group.id = id;
  ref.time = time;
  return ref;
}

class GcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_gc_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    path_ = JoinPath(base_, "store");
    Status s = TestDatastores::Create(path_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    Reopen();
  }

  void TearDown() override {
    store_.reset();
    EXPECT_TRUE(TestDatastores::Remove(path_).ok());
    (void)RemoveAll(Env::Default(), base_);
  }

  // Closes and opens the datastore again (a restart of the server).
  void Reopen() {
    store_.reset();
    auto store = Datastore::Open(&env_, path_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  ChunkStore* chunks() { return store_->chunk_store(); }

  // Commits a snapshot whose image is the blocks `ids`, inserting each chunk.
  // Returns its digests in image order.
  std::vector<Digest> Backup(const SnapshotRef& ref, const std::vector<uint32_t>& ids) {
    FixedIndexWriter w(ids.size() * kTestChunkSize, kTestChunkSize);
    std::vector<Digest> digests;
    for (size_t i = 0; i < ids.size(); ++i) {
      Digest d;
      auto r = chunks()->InsertData(Block(ids[i]), &d, nullptr);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_TRUE(w.Set(i, d).ok());
      digests.push_back(d);
    }
    Commit(ref, w);
    return digests;
  }

  void Commit(const SnapshotRef& ref, const FixedIndexWriter& w) {
    Status s = CommitTestSnapshot(*store_, ref, w);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // Every chunk of every archive of `ref` reads back and verifies; returns
  // the number of chunks checked.
  size_t VerifySnapshot(const SnapshotRef& ref) {
    auto m = store_->ReadManifest(ref);
    EXPECT_TRUE(m.ok()) << ref.ToString() << ": " << m.status().ToString();
    if (!m.ok()) return 0;
    size_t n = 0;
    for (const ArchiveInfo& a : m->archives) {
      auto path = store_->ArchivePath(ref, a.name);
      EXPECT_TRUE(path.ok());
      auto index = FixedIndex::Read(&env_, *path);
      EXPECT_TRUE(index.ok()) << index.status().ToString();
      if (!index.ok()) continue;
      for (uint64_t i = 0; i < index->chunk_count(); ++i) {
        auto data = chunks()->ReadChunk(index->digest(i));
        EXPECT_TRUE(data.ok()) << ref.ToString() << " chunk " << i << ": "
                               << data.status().ToString();
        if (data.ok()) {
          EXPECT_EQ(data->size(), index->ChunkLength(i));
        }
        ++n;
      }
    }
    return n;
  }

  void VerifyAll() {
    auto groups = store_->ListGroups();
    ASSERT_TRUE(groups.ok());
    for (const GroupRef& g : *groups) {
      auto snaps = store_->ListSnapshots(g);
      ASSERT_TRUE(snaps.ok());
      for (const SnapshotRef& s : *snaps) EXPECT_GT(VerifySnapshot(s), 0u) << s.ToString();
    }
  }

  // Sets every chunk file's mtime to 2001: "last touched long ago".
  void AgeAllChunks() {
    Status s = chunks()->ForEach([&](const Digest& d, const FileInfo&) {
      SetMtime(chunks()->ChunkPath(d), kOldTime);
      return Status::OK();
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // Chunk files on disk (not bad, not temp).
  std::set<Digest> ChunksOnDisk() {
    std::set<Digest> out;
    Status s = chunks()->ForEach([&](const Digest& d, const FileInfo&) {
      out.insert(d);
      return Status::OK();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  Result<GcResult> Gc(GcOptions options = {}) { return CollectGarbage(*store_, options); }

  FaultInjectionEnv env_{Env::Default()};
  std::string base_;
  std::string path_;
  std::unique_ptr<Datastore> store_;
};

std::vector<uint32_t> Range(uint32_t begin, uint32_t end) {
  std::vector<uint32_t> v;
  for (uint32_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

TEST_F(GcTest, EmptyStore) {
  auto r = Gc();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->snapshots, 0u);
  EXPECT_EQ(r->disk_chunks, 0u);
  EXPECT_EQ(r->removed_chunks, 0u);
  EXPECT_EQ(r->dedup_factor, 0.0);
}

TEST_F(GcTest, FreesExactlyTheUnreferencedChunks) {
  const SnapshotRef a = Ref("100", 1000), b = Ref("100", 2000), c = Ref("101", 1000);
  const auto da = Backup(a, Range(0, 10));   // 0..9
  const auto db = Backup(b, Range(5, 15));   // 5..14, shares 5..9 with a
  const auto dc = Backup(c, Range(10, 20));  // 10..19, shares 10..14 with b
  AgeAllChunks();

  // Nothing is garbage yet.
  auto r0 = Gc();
  ASSERT_TRUE(r0.ok()) << r0.status().ToString();
  EXPECT_EQ(r0->removed_chunks, 0u);
  EXPECT_EQ(r0->disk_chunks, 20u);
  EXPECT_EQ(r0->snapshots, 3u);
  EXPECT_EQ(r0->indexes, 3u);
  EXPECT_EQ(r0->marked, 20u);
  EXPECT_EQ(r0->logical_bytes, 30 * kTestChunkSize);

  // Prune a and c: 0..4 and 15..19 become garbage, 5..14 stay with b.
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  ASSERT_TRUE(store_->DeleteSnapshot(c).ok());
  uint64_t garbage_bytes = 0;
  for (int i = 0; i < 5; ++i) garbage_bytes += FileSize(chunks()->ChunkPath(da[i]));
  for (int i = 5; i < 10; ++i) garbage_bytes += FileSize(chunks()->ChunkPath(dc[i]));
  uint64_t kept_bytes = 0;
  for (const Digest& d : db) kept_bytes += FileSize(chunks()->ChunkPath(d));

  auto r = Gc();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed_chunks, 10u);
  EXPECT_EQ(r->removed_bytes, garbage_bytes);
  EXPECT_EQ(r->disk_chunks, 10u);
  EXPECT_EQ(r->disk_bytes, kept_bytes);
  EXPECT_EQ(r->pending_chunks, 0u);
  EXPECT_EQ(r->snapshots, 1u);
  EXPECT_EQ(r->logical_bytes, 10 * kTestChunkSize);
  EXPECT_DOUBLE_EQ(r->dedup_factor,
                   static_cast<double>(10 * kTestChunkSize) / static_cast<double>(kept_bytes));
  EXPECT_LE(r->cutoff, r->start_time - kDefaultGcGraceSeconds);

  const std::set<Digest> on_disk = ChunksOnDisk();
  EXPECT_EQ(on_disk, std::set<Digest>(db.begin(), db.end()));
  EXPECT_EQ(VerifySnapshot(b), 10u);
  for (size_t i = 0; i < db.size(); ++i) {
    auto data = chunks()->ReadChunk(db[i]);
    ASSERT_TRUE(data.ok());
    EXPECT_EQ(*data, Block(static_cast<uint32_t>(5 + i)));  // restores identical
  }

  // A second run finds nothing more to do.
  auto again = Gc();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->removed_chunks, 0u);
  EXPECT_EQ(again->disk_chunks, 10u);
}

TEST_F(GcTest, SharedChunkInManyIndexesCountsOnce) {
  // A zero-heavy image: one digest many times, as disk images are.
  std::vector<uint32_t> ids(8, 7);
  ids[3] = 1;
  Backup(Ref("100", 1000), ids);
  Backup(Ref("100", 2000), ids);
  AgeAllChunks();
  auto r = Gc();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->marked, 2u);
  EXPECT_EQ(r->disk_chunks, 2u);
  EXPECT_EQ(r->logical_bytes, 16 * kTestChunkSize);
  EXPECT_GT(r->dedup_factor, 7.0);
}

TEST_F(GcTest, FreshUnreferencedChunksArePendingUntilTheGraceIsOver) {
  const SnapshotRef a = Ref("100", 1000);
  Backup(a, Range(0, 4));
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  uint64_t bytes = 0;
  for (const Digest& d : ChunksOnDisk()) bytes += FileSize(chunks()->ChunkPath(d));

  auto r = Gc();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->removed_chunks, 0u);
  EXPECT_EQ(r->pending_chunks, 4u);
  EXPECT_EQ(r->pending_bytes, bytes);
  EXPECT_EQ(r->disk_chunks, 4u);
  EXPECT_EQ(ChunksOnDisk().size(), 4u);

  // Grace 60 s, and the clock 30 s on: still pending.
  const int64_t now = Env::Default()->NowSeconds();
  GcOptions options;
  options.grace_seconds = 60;
  env_.SetNowSeconds(now + 30);
  auto r1 = Gc(options);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->pending_chunks, 4u);
  EXPECT_EQ(r1->removed_chunks, 0u);

  // The clock past the grace: removed.
  env_.SetNowSeconds(now + 63);
  auto r2 = Gc(options);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->removed_chunks, 4u);
  EXPECT_EQ(r2->removed_bytes, bytes);
  EXPECT_EQ(r2->pending_chunks, 0u);
  EXPECT_TRUE(ChunksOnDisk().empty());
}

TEST_F(GcTest, DigestsKnownToRunningSessionsSurvive) {
  const SnapshotRef a = Ref("100", 1000);
  const auto d = Backup(a, Range(0, 6));
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  AgeAllChunks();

  int asked = 0;
  GcOptions options;
  options.sessions = [&] {
    ++asked;
    GcSessions s;
    s.known = {d[1], d[4]};
    s.oldest_start = Env::Default()->NowSeconds();
    return s;
  };
  auto r = Gc(options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(r->removed_chunks, 4u);
  EXPECT_EQ(r->disk_chunks, 2u);
  EXPECT_EQ(ChunksOnDisk(), (std::set<Digest>{d[1], d[4]}));
  EXPECT_TRUE(chunks()->ReadChunk(d[1]).ok());
  EXPECT_TRUE(chunks()->ReadChunk(d[4]).ok());
}

TEST_F(GcTest, OldestSessionStartMovesTheCutoff) {
  const SnapshotRef a = Ref("100", 1000);
  const auto d = Backup(a, Range(0, 3));
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  const int64_t now = Env::Default()->NowSeconds();
  // Last touched 1000 s ago.
  for (const Digest& x : d) SetMtime(chunks()->ChunkPath(x), now - 1000);

  GcOptions options;
  options.grace_seconds = 0;
  // A session running since 2000 s ago could still reference them.
  options.sessions = [&] {
    GcSessions s;
    s.oldest_start = now - 2000;
    return s;
  };
  auto r = Gc(options);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->cutoff, now - 2000 - 1);
  EXPECT_EQ(r->removed_chunks, 0u);
  EXPECT_EQ(r->pending_chunks, 3u);

  // The session started 500 s ago: the chunks are older than that.
  options.sessions = [&] {
    GcSessions s;
    s.oldest_start = now - 500;
    return s;
  };
  auto r2 = Gc(options);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->removed_chunks, 3u);
  EXPECT_TRUE(ChunksOnDisk().empty());
}

TEST_F(GcTest, SessionsAreAskedAfterTheStartTimeIsTaken) {
  GcOptions options;
  int64_t start_seen = 0;
  env_.SetNowSeconds(5000);
  options.sessions = [&] {
    // A session that registers now starts after GC start.
    env_.SetNowSeconds(6000);
    start_seen = 6000;
    return GcSessions{};
  };
  options.grace_seconds = 10;
  auto r = Gc(options);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(start_seen, 6000);
  EXPECT_EQ(r->start_time, 5000);
  EXPECT_EQ(r->cutoff, 5000 - 10 - 1);
}

TEST_F(GcTest, UnreadableIndexAbortsBeforeTheSweep) {
  const SnapshotRef a = Ref("100", 1000), b = Ref("101", 1000), gone = Ref("102", 1000);
  const auto da = Backup(a, Range(0, 4));
  const auto db = Backup(b, Range(4, 8));
  Backup(gone, Range(8, 12));
  ASSERT_TRUE(store_->DeleteSnapshot(gone).ok());  // 8..11 are garbage
  AgeAllChunks();
  const std::set<Digest> before = ChunksOnDisk();
  ASSERT_EQ(before.size(), 12u);

  // Corrupt b's index: one flipped byte in its digest list.
  auto path = store_->ArchivePath(b, "drive0.fidx");
  ASSERT_TRUE(path.ok());
  std::string bytes;
  ASSERT_TRUE(Env::Default()->ReadFile(*path, &bytes, 1 << 20).ok());
  std::string bad = bytes;
  bad[kFixedIndexHeaderSize + 5] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), *path, bad, false).ok());

  auto r = Gc();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(b.ToString()), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("nothing was removed"), std::string::npos);
  EXPECT_EQ(r.status().message().find(a.ToString()), std::string::npos);
  EXPECT_EQ(ChunksOnDisk(), before);

  // The index missing altogether.
  ASSERT_TRUE(Env::Default()->RemoveFile(*path).ok());
  r = Gc();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(b.ToString()), std::string::npos) << r.status().ToString();
  EXPECT_EQ(ChunksOnDisk(), before);

  // A manifest that does not parse: its archives are unknown.
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), *path, bytes, false).ok());
  auto snap_dir = store_->SnapshotPath(a);
  ASSERT_TRUE(snap_dir.ok());
  const std::string manifest = JoinPath(*snap_dir, kManifestFile);
  std::string text;
  ASSERT_TRUE(Env::Default()->ReadFile(manifest, &text, 1 << 20).ok());
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), manifest, "{not json", false).ok());
  r = Gc();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(a.ToString()), std::string::npos) << r.status().ToString();
  EXPECT_EQ(ChunksOnDisk(), before);

  // Repaired: the GC runs and frees exactly the garbage.
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), manifest, text, false).ok());
  r = Gc();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed_chunks, 4u);
  std::set<Digest> want(da.begin(), da.end());
  want.insert(db.begin(), db.end());
  EXPECT_EQ(ChunksOnDisk(), want);
}

TEST_F(GcTest, OneGcAtATime) {
  {
    auto held = Env::Default()->LockFile(JoinPath(path_, kGcLockFile));
    ASSERT_TRUE(held.ok());
    auto r = Gc();
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsBusy()) << r.status().ToString();
  }
  // A second GC while one runs (started from the first one's progress).
  GcOptions options;
  Status inner = Status::OK();
  bool tried = false;
  options.progress = [&](GcPhase phase, uint64_t, uint64_t) {
    if (phase != GcPhase::kSweep || tried) return;
    tried = true;
    inner = Gc().status();
  };
  auto r = Gc(options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(tried);
  EXPECT_TRUE(inner.IsBusy()) << inner.ToString();
  // Released: the next one runs.
  EXPECT_TRUE(Gc().ok());
}

TEST_F(GcTest, ProgressCoversBothPhases) {
  Backup(Ref("100", 1000), Range(0, 2));
  std::map<GcPhase, std::pair<uint64_t, uint64_t>> last;
  GcOptions options;
  options.progress = [&](GcPhase phase, uint64_t done, uint64_t total) {
    EXPECT_LE(done, total);
    last[phase] = {done, total};
  };
  ASSERT_TRUE(Gc(options).ok());
  EXPECT_EQ(last[GcPhase::kMark], std::make_pair(uint64_t{1}, uint64_t{1}));
  EXPECT_EQ(last[GcPhase::kSweep],
            std::make_pair(uint64_t{kChunkPrefixCount}, uint64_t{kChunkPrefixCount}));
  EXPECT_STREQ(GcPhaseName(GcPhase::kMark), "mark");
  EXPECT_STREQ(GcPhaseName(GcPhase::kSweep), "sweep");
}

TEST_F(GcTest, BadAndTempFiles) {
  const SnapshotRef a = Ref("100", 1000), gone = Ref("101", 1000);
  const auto da = Backup(a, Range(0, 2));
  const auto dg = Backup(gone, Range(2, 4));
  ASSERT_TRUE(store_->DeleteSnapshot(gone).ok());

  // A bad copy of a referenced chunk (verify found it, the next backup
  // uploaded the chunk again): kept. A bad copy of an unreferenced one: removed.
  const std::string ref_bad = chunks()->ChunkPath(da[0]) + ".0.bad";
  const std::string unref_bad = chunks()->ChunkPath(dg[0]) + ".3.bad";
  std::string blob = *chunks()->ReadBlob(da[0]);
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), ref_bad, blob, false).ok());
  ASSERT_TRUE(chunks()->MarkBad(dg[0]).ok());
  ASSERT_TRUE(Env::Default()->Rename(chunks()->ChunkPath(dg[0]) + ".0.bad", unref_bad).ok());
  // Temp files: one stale (a crashed insert), one fresh (an insert running).
  const std::string stale_tmp = chunks()->ChunkPath(dg[1]) + ".tmp.123.4";
  const std::string fresh_tmp = chunks()->ChunkPath(da[1]) + ".tmp.123.5";
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), stale_tmp, "x", false).ok());
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), fresh_tmp, "y", false).ok());
  // Names the GC does not know: left alone.
  const std::string stranger = JoinPath(chunks()->PrefixDir(0x1234), "README");
  ASSERT_TRUE(CreateDirAll(Env::Default(), chunks()->PrefixDir(0x1234)).ok());
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), stranger, "z", false).ok());
  AgeAllChunks();
  SetMtime(stale_tmp, kOldTime);
  SetMtime(ref_bad, kOldTime);
  SetMtime(unref_bad, kOldTime);
  SetMtime(stranger, kOldTime);

  auto r = Gc();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->bad_chunks, 1u);
  EXPECT_EQ(r->bad_bytes, blob.size());
  EXPECT_EQ(r->bad_removed, 1u);
  EXPECT_EQ(r->temp_removed, 1u);
  EXPECT_EQ(r->removed_chunks, 1u);  // dg[1]; dg[0] was put aside as bad
  EXPECT_EQ(r->disk_chunks, 2u);
  EXPECT_TRUE(FileExists(ref_bad));
  EXPECT_FALSE(FileExists(unref_bad));
  EXPECT_FALSE(FileExists(stale_tmp));
  EXPECT_TRUE(FileExists(fresh_tmp));
  EXPECT_TRUE(FileExists(stranger));
  ASSERT_TRUE(Env::Default()->RemoveFile(fresh_tmp).ok());
  ASSERT_TRUE(Env::Default()->RemoveFile(stranger).ok());
}

TEST_F(GcTest, MissingPrefixFoldersAreEmpty) {
  // Prefix folders are made on first insert: most are missing here.
  const auto d = Backup(Ref("100", 1000), Range(0, 3));
  std::set<uint16_t> used;
  for (const Digest& x : d) used.insert(DigestPrefix(x));
  for (uint16_t p : {0x0000, 0x7fff, 0xffff}) {
    if (used.count(p) == 0) {
      EXPECT_FALSE(FileExists(chunks()->PrefixDir(p)));
    }
  }
  // One emptied and removed by hand, too.
  const std::string extra = chunks()->PrefixDir(static_cast<uint16_t>(DigestPrefix(d[0]) ^ 1));
  ASSERT_TRUE(CreateDirAll(Env::Default(), extra).ok());
  ASSERT_TRUE(Env::Default()->RemoveDir(extra).ok());
  AgeAllChunks();
  auto r = Gc();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->disk_chunks, 3u);
  EXPECT_EQ(r->removed_chunks, 0u);
}

TEST_F(GcTest, DryRunRemovesNothing) {
  const SnapshotRef a = Ref("100", 1000);
  Backup(a, Range(0, 5));
  Backup(Ref("100", 2000), Range(3, 6));
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  AgeAllChunks();
  GcOptions options;
  options.dry_run = true;
  auto r = Gc(options);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->dry_run);
  EXPECT_EQ(r->removed_chunks, 3u);
  EXPECT_EQ(r->disk_chunks, 3u);
  EXPECT_EQ(ChunksOnDisk().size(), 6u);
  auto real = Gc();
  ASSERT_TRUE(real.ok());
  EXPECT_EQ(real->removed_chunks, 3u);
  EXPECT_EQ(real->removed_bytes, r->removed_bytes);
  EXPECT_EQ(ChunksOnDisk().size(), 3u);
}

TEST_F(GcTest, ResultJson) {
  Backup(Ref("100", 1000), Range(0, 3));
  auto r = Gc();
  ASSERT_TRUE(r.ok());
  nlohmann::json j = r->ToJson();
  for (const char* key :
       {"start-time",    "cutoff",         "dry-run",       "snapshots",   "indexes",
        "logical-bytes", "marked",         "disk-chunks",   "disk-bytes",  "removed-chunks",
        "removed-bytes", "pending-chunks", "pending-bytes", "bad-chunks",  "bad-bytes",
        "bad-removed",   "temp-removed",   "dedup-factor",  "duration-ms", "mark-ms",
        "sweep-ms"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["disk-chunks"], 3);
  auto back = GcResult::FromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ToJson(), j);

  nlohmann::json missing = j;
  missing.erase("removed-chunks");
  EXPECT_TRUE(GcResult::FromJson(missing).status().IsCorruption());
  nlohmann::json wrong = j;
  wrong["disk-bytes"] = "many";
  EXPECT_TRUE(GcResult::FromJson(wrong).status().IsCorruption());
  wrong = j;
  wrong["disk-bytes"] = -1;
  EXPECT_TRUE(GcResult::FromJson(wrong).status().IsCorruption());
  EXPECT_TRUE(GcResult::FromJson(nlohmann::json::array()).status().IsCorruption());
}

// A crash after K deletes, for every K: the store stays consistent (every
// snapshot's chunks exist and verify) and the next GC completes the work.
TEST_F(GcTest, CrashDuringSweep) {
  const SnapshotRef keep1 = Ref("100", 1000), keep2 = Ref("101", 1000);
  const auto d1 = Backup(keep1, Range(0, 6));
  const auto d2 = Backup(keep2, Range(4, 10));
  const std::vector<uint32_t> garbage_ids = Range(100, 112);
  std::set<Digest> referenced(d1.begin(), d1.end());
  referenced.insert(d2.begin(), d2.end());

  // Garbage: chunks inserted and never referenced, last touched long ago.
  auto make_garbage = [&] {
    for (uint32_t id : garbage_ids) {
      Digest d;
      ASSERT_TRUE(chunks()->InsertData(Block(id), &d, nullptr).ok());
    }
    AgeAllChunks();
  };

  make_garbage();
  env_.ResetState();
  auto full = Gc();
  ASSERT_TRUE(full.ok());
  ASSERT_EQ(full->removed_chunks, garbage_ids.size());
  // GC deletes, then keeps its result (.gc-status.json: temp, sync, rename).
  const int64_t total = env_.mutating_ops();
  const auto deletes = static_cast<int64_t>(garbage_ids.size());
  ASSERT_GT(total, deletes);

  for (int64_t k = 0; k <= total; ++k) {
    SCOPED_TRACE("crash after " + std::to_string(k) + " operations");
    make_garbage();
    env_.ResetState();
    env_.CrashAfter(k);
    auto r = Gc();
    if (k < total) {
      ASSERT_FALSE(r.ok());
      EXPECT_TRUE(env_.crashed());
    }
    ASSERT_TRUE(env_.DropUnsyncedData().ok());
    Reopen();  // the server restarts

    const std::set<Digest> on_disk = ChunksOnDisk();
    for (const Digest& d : referenced) EXPECT_EQ(on_disk.count(d), 1u);
    const auto removed = static_cast<size_t>(std::min(k, deletes));
    EXPECT_EQ(on_disk.size(), referenced.size() + garbage_ids.size() - removed);
    EXPECT_EQ(VerifySnapshot(keep1), 6u);
    EXPECT_EQ(VerifySnapshot(keep2), 6u);

    auto next = Gc();
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    EXPECT_EQ(next->removed_chunks, garbage_ids.size() - removed);
    EXPECT_EQ(ChunksOnDisk(), referenced);
  }
}

// The race GC must win: backups that re-insert chunks just made garbage (and
// reference chunks of their previous snapshot) run in a loop while GC runs in
// a loop with grace 0. The backup thread registers a "session" the way the
// server does (start time, known digests); GC asks for it. Afterwards — and
// at every prune — every committed snapshot's chunks exist and verify.
//
// Time is compressed by setting mtimes into the past ("aging"), which must
// not fake what cannot happen: a chunk is aged only when every session that
// touched it finished before the running GC (if any) asked for sessions —
// its snapshot was then committed before that GC listed snapshots. That
// ages chunks still referenced by kept snapshots too (in reality unchanged
// chunks keep their old mtime for years), so those live only by the marks.
TEST_F(GcTest, StressBackupsReusingGarbageWhileGcLoops) {
  constexpr int kPool = 40;         // distinct blocks backups draw from
  constexpr int kImageChunks = 12;  // chunks per snapshot
  constexpr auto kDuration = std::chrono::seconds(8);

  struct Shared {
    std::mutex mu;
    bool running = false;  // a backup session is registered
    int64_t start = 0;
    std::vector<Digest> known;
    int finished = 0;         // sessions finished (unregistered) so far
    bool gc_running = false;  // a GC has asked for sessions and not returned
    int finished_at_gc = 0;   // `finished` when that GC asked
  } shared;

  std::atomic<bool> stop{false};
  std::atomic<int> gc_runs{0};
  std::atomic<uint64_t> gc_removed{0};
  std::atomic<int> gc_errors{0};
  std::string gc_error;

  std::thread gc([&] {
    GcOptions options;
    options.grace_seconds = 0;
    options.sessions = [&] {
      std::lock_guard<std::mutex> l(shared.mu);
      shared.gc_running = true;
      shared.finished_at_gc = shared.finished;
      GcSessions s;
      if (shared.running) {
        s.oldest_start = shared.start;
        s.known = shared.known;
      }
      return s;
    };
    while (!stop.load()) {
      auto r = CollectGarbage(*store_, options);
      {
        std::lock_guard<std::mutex> l(shared.mu);
        shared.gc_running = false;
      }
      if (!r.ok()) {
        if (gc_errors.fetch_add(1) == 0) gc_error = r.status().ToString();
        continue;
      }
      gc_runs.fetch_add(1);
      gc_removed.fetch_add(r->removed_chunks);
    }
  });

  std::mt19937 rng(42);
  const GroupRef group = Ref("100", 0).group;
  std::vector<Digest> pool_digest(kPool);
  for (int i = 0; i < kPool; ++i) pool_digest[i] = Sha256(Block(static_cast<uint32_t>(i)));
  std::vector<int> last_touch(kPool, -1);  // session number that last inserted the block
  int64_t snap_time = 1000;
  int backups = 0, reinserted = 0;
  std::set<SnapshotRef> committed;
  const auto deadline = std::chrono::steady_clock::now() + kDuration;
  while (std::chrono::steady_clock::now() < deadline && !HasFatalFailure()) {
    // --- One backup session. ---
    auto snaps = store_->ListSnapshots(group);
    std::optional<FixedIndex> previous;
    if (snaps.ok() && !snaps->empty()) {
      auto path = store_->ArchivePath(snaps->back(), "drive0.fidx");
      ASSERT_TRUE(path.ok());
      auto prev = FixedIndex::Read(&env_, *path);
      ASSERT_TRUE(prev.ok()) << prev.status().ToString();
      previous = std::move(prev).value();
    }
    {
      std::lock_guard<std::mutex> l(shared.mu);
      shared.running = true;
      shared.start = env_.NowSeconds();
      shared.known.clear();
      if (previous) {
        for (uint64_t i = 0; i < previous->chunk_count(); ++i) {
          shared.known.push_back(previous->digest(i));
        }
      }
    }
    FixedIndexWriter w(kImageChunks * kTestChunkSize, kTestChunkSize);
    if (previous) {
      ASSERT_TRUE(w.CopyFrom(*previous).ok());
    }
    // Change some chunks (all of them the first time) to pool blocks, many
    // of which are garbage with an old mtime right now, or already removed.
    const int changes = previous ? 4 : kImageChunks;
    for (int c = 0; c < changes; ++c) {
      const uint64_t pos = previous ? rng() % kImageChunks : static_cast<uint64_t>(c);
      const uint32_t id = rng() % kPool;
      Digest d;
      auto ins = chunks()->InsertData(Block(id), &d, nullptr);
      ASSERT_TRUE(ins.ok()) << ins.status().ToString();
      if (*ins == InsertResult::kInserted && last_touch[id] >= 0) ++reinserted;
      last_touch[id] = backups;
      ASSERT_TRUE(w.Set(pos, d).ok());
    }
    // A backup takes a while between upload and commit.
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 1500));
    const SnapshotRef ref = Ref("100", snap_time++);
    Commit(ref, w);
    committed.insert(ref);
    {
      std::lock_guard<std::mutex> l(shared.mu);
      shared.running = false;
      shared.known.clear();
      ++shared.finished;
    }
    ++backups;

    // --- Prune: keep the last two, after checking what goes. ---
    snaps = store_->ListSnapshots(group);
    ASSERT_TRUE(snaps.ok());
    while (snaps->size() > 2) {
      EXPECT_EQ(VerifySnapshot(snaps->front()), static_cast<size_t>(kImageChunks))
          << snaps->front().ToString();
      ASSERT_TRUE(store_->DeleteSnapshot(snaps->front()).ok());
      committed.erase(snaps->front());
      snaps->erase(snaps->begin());
    }
    // Time passes (see above). No session runs now.
    int agable_below;
    {
      std::lock_guard<std::mutex> l(shared.mu);
      agable_below = shared.gc_running ? shared.finished_at_gc : shared.finished;
    }
    for (int id = 0; id < kPool; ++id) {
      if (last_touch[id] < 0 || last_touch[id] >= agable_below) continue;
      struct timespec times[2] = {{kOldTime, 0}, {kOldTime, 0}};
      (void)::utimensat(AT_FDCWD, chunks()->ChunkPath(pool_digest[id]).c_str(), times,
                        0);  // may be gone
    }
  }
  stop.store(true);
  gc.join();

  EXPECT_EQ(gc_errors.load(), 0) << gc_error;
  EXPECT_GE(gc_runs.load(), 2);
  EXPECT_GE(backups, 3);
  EXPECT_GT(gc_removed.load(), 0u);
  std::cout << backups << " backups, " << gc_runs.load() << " GCs removed " << gc_removed.load()
            << " chunks; " << reinserted << " chunks stored again after a GC removed them\n";
  for (const SnapshotRef& s : committed) {
    EXPECT_EQ(VerifySnapshot(s), static_cast<size_t>(kImageChunks)) << s.ToString();
  }
  VerifyAll();

  // Quiet now: one more GC keeps exactly what the snapshots reference.
  auto r = Gc();
  ASSERT_TRUE(r.ok());
  VerifyAll();
}

}  // namespace
}  // namespace cairn::storage
