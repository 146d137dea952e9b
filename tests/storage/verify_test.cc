#include "storage/verify.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "storage/blob.h"
#include "storage/catalog.h"
#include "storage/chunk_store.h"
#include "storage/crc32c.h"
#include "storage/datastore.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"
#include "tests/storage/datastore_testutil.h"

namespace cairn::storage {
namespace {

constexpr uint64_t kTestChunkSize = 4096;
constexpr int64_t kT0 = 1800000000;  // 2027-01-15
constexpr int64_t kDay = 86400;

// Chunk content number `id`, distinct per id. Even ids are incompressible
// (stored plain), odd ids text-like (stored zstd).
std::string Block(uint32_t id) {
  std::string s(kTestChunkSize, '\0');
  if (id % 2 == 0) {
    std::mt19937_64 rng(id * 7919u + 1);
    for (size_t i = 0; i < s.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(s.data() + i, &v, 8);
    }
  } else {
    const std::string line = "cairn verify block " + std::to_string(id) + " line\n";
    for (size_t i = 0; i < s.size(); ++i) s[i] = line[i % line.size()];
  }
  return s;
}

// An Env that counts reads per path, fakes the clock, fails or damages
// chosen reads and calls a hook on every read.
class TestEnv : public EnvWrapper {
 public:
  TestEnv() : EnvWrapper(Env::Default()) {}

  Status ReadFile(const std::string& p, std::string* out, uint64_t max_size) override {
    std::function<void(const std::string&)> hook;
    bool fail = false, damage = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      ++reads_[p];
      hook = on_read_;
      fail = fail_reads_.contains(p);
      auto it = damage_reads_.find(p);
      if (it != damage_reads_.end() && it->second > 0) {
        --it->second;
        damage = true;
      }
    }
    if (hook) hook(p);
    if (fail) return Status::IOError(p + ": injected read error");
    Status s = EnvWrapper::ReadFile(p, out, max_size);
    if (s.ok() && damage && out->size() > 20) (*out)[20] = static_cast<char>((*out)[20] ^ 0x40);
    return s;
  }
  int64_t NowSeconds() override {
    std::lock_guard<std::mutex> l(mu_);
    return now_;
  }

  void SetNow(int64_t now) {
    std::lock_guard<std::mutex> l(mu_);
    now_ = now;
  }
  int Reads(const std::string& p) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = reads_.find(p);
    return it == reads_.end() ? 0 : it->second;
  }
  // Reads of files under `dir`.
  int ReadsUnder(const std::string& dir) {
    std::lock_guard<std::mutex> l(mu_);
    int n = 0;
    for (const auto& [p, c] : reads_) {
      if (p.rfind(dir, 0) == 0) n += c;
    }
    return n;
  }
  std::map<std::string, int> ReadsCopy() {
    std::lock_guard<std::mutex> l(mu_);
    return reads_;
  }
  void ResetReads() {
    std::lock_guard<std::mutex> l(mu_);
    reads_.clear();
  }
  void FailReads(const std::string& p, bool on) {
    std::lock_guard<std::mutex> l(mu_);
    if (on) {
      fail_reads_.insert(p);
    } else {
      fail_reads_.erase(p);
    }
  }
  // The next `n` reads of `p` return the file with one byte flipped.
  void DamageReads(const std::string& p, int n) {
    std::lock_guard<std::mutex> l(mu_);
    damage_reads_[p] = n;
  }
  void OnRead(std::function<void(const std::string&)> hook) {
    std::lock_guard<std::mutex> l(mu_);
    on_read_ = std::move(hook);
  }

 private:
  std::mutex mu_;
  int64_t now_ = kT0;
  std::map<std::string, int> reads_;
  std::set<std::string> fail_reads_;
  std::map<std::string, int> damage_reads_;
  std::function<void(const std::string&)> on_read_;
};

SnapshotRef Ref(const std::string& id, int64_t time) {
  SnapshotRef ref;
  ref.group.type = "vm";
  ref.group.id = id;
  ref.time = time;
  return ref;
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
  ASSERT_TRUE(f.good()) << path;
}

void FlipByte(const std::string& path, size_t offset) {
  std::string data = ReadAll(path);
  ASSERT_LT(offset, data.size()) << path;
  data[offset] = static_cast<char>(data[offset] ^ 0x01);
  WriteAll(path, data);
}

std::vector<std::string> ListNames(const std::string& dir) {
  std::vector<std::string> names;
  Status s = Env::Default()->ListDir(dir, &names);
  EXPECT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
  std::sort(names.begin(), names.end());
  return names;
}

// An encrypted-kind blob (the server cannot decrypt it; only CRC and length
// are checkable): magic · CRC32C · IV · tag · "ciphertext".
std::string EncryptedBlob(const std::string& ciphertext) {
  std::string rest(kBlobIvSize + kBlobTagSize, '\x5a');
  rest += ciphertext;
  std::string blob(BlobMagic(BlobKind::kEncrypted));
  const uint32_t crc = Crc32c(rest);
  for (int i = 0; i < 4; ++i) blob.push_back(static_cast<char>(crc >> (8 * i)));
  return blob + rest;
}

class VerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_verify_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    path_ = JoinPath(base_, "store");
    Status s = TestDatastores::Create(path_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    DatastoreOptions options;
    options.chunks.sync = false;  // fsync per chunk only slows the tests down
    auto store = Datastore::Open(&env_, path_, options);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  void TearDown() override {
    store_.reset();
    EXPECT_TRUE(TestDatastores::Remove(path_).ok());
    (void)RemoveAll(Env::Default(), base_);
  }

  ChunkStore* chunks() { return store_->chunk_store(); }

  Digest Insert(const std::string& data) {
    Digest d;
    auto r = chunks()->InsertData(data, &d, nullptr);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return d;
  }

  // Commits a snapshot whose image is the blocks `ids` (in that order) and,
  // when `blob` is set, a "qemu-server.conf.blob" archive.
  void Backup(const SnapshotRef& ref, const std::vector<uint32_t>& ids,
              std::optional<std::string> blob = std::nullopt) {
    FixedIndexWriter w(ids.size() * kTestChunkSize, kTestChunkSize);
    for (size_t i = 0; i < ids.size(); ++i) ASSERT_TRUE(w.Set(i, Insert(Block(ids[i]))).ok());
    Commit(ref, w, blob);
  }

  void Commit(const SnapshotRef& ref, const FixedIndexWriter& w,
              std::optional<std::string> blob = std::nullopt) {
    Status s = CommitTestSnapshot(*store_, ref, w, blob);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::string ChunkPath(uint32_t id) { return chunks()->ChunkPath(Sha256(Block(id))); }
  std::string PrefixDir(uint32_t id) {
    return chunks()->PrefixDir(DigestPrefix(Sha256(Block(id))));
  }
  std::string SnapDir(const SnapshotRef& ref) { return JoinPath(path_, ref.RelPath()); }

  std::optional<VerifyState> State(const SnapshotRef& ref) {
    auto m = store_->ReadManifest(ref);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? m->verify : std::nullopt;
  }
  std::string StateName(const SnapshotRef& ref) {
    auto s = State(ref);
    return s.has_value() ? s->state : "none";
  }

  VerifyResult Run(const std::vector<SnapshotRef>& refs, VerifyOptions o = {}) {
    if (o.task.empty()) o.task = "task-1";
    o.log = [this](const std::string& line) { log_.push_back(line); };
    auto r = Verify(*store_, refs, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : VerifyResult{};
  }
  VerifyResult RunAll(VerifyOptions o = {}) {
    auto refs = SnapshotsToVerify(*store_);
    EXPECT_TRUE(refs.ok()) << refs.status().ToString();
    return Run(refs.ok() ? *refs : std::vector<SnapshotRef>{}, std::move(o));
  }

  bool LogHas(const std::string& needle) const {
    return std::any_of(log_.begin(), log_.end(),
                       [&](const std::string& l) { return l.find(needle) != std::string::npos; });
  }
  std::string LogText() const {
    std::string s;
    for (const auto& l : log_) s += l + "\n";
    return s;
  }

  static const VerifyFailure* FindFailure(const VerifyResult& r, const SnapshotRef& ref) {
    for (const VerifyFailure& f : r.failed) {
      if (f.ref == ref) return &f;
    }
    return nullptr;
  }

  TestEnv env_;
  std::string base_;
  std::string path_;
  std::unique_ptr<Datastore> store_;
  std::vector<std::string> log_;
};

TEST_F(VerifyTest, CleanStoreVerifiesOkAndRecordsState) {
  const SnapshotRef a1 = Ref("100", kT0 - 3000), a2 = Ref("100", kT0 - 2000);
  const SnapshotRef b1 = Ref("200", kT0 - 1000);
  Backup(a1, {1, 2, 3, 4});
  Backup(a2, {1, 2, 3, 5});
  Backup(b1, {2, 6, 7}, std::string("name: vm200\nmemory: 2048\n"));

  VerifyProgress last;
  VerifyOptions o;
  o.threads = 3;
  o.progress = [&](const VerifyProgress& p) { last = p; };
  VerifyResult r = RunAll(o);
  EXPECT_EQ(r.snapshots_checked, 3u);
  EXPECT_EQ(r.snapshots_ok, 3u);
  EXPECT_EQ(r.snapshots_failed, 0u);
  EXPECT_EQ(r.chunks_checked, 7u);  // blocks 1..7, each once
  EXPECT_EQ(r.chunks_bad, 0u);
  EXPECT_EQ(r.decoded_bytes, 7 * kTestChunkSize);
  EXPECT_EQ(r.logical_bytes, 11 * kTestChunkSize);
  EXPECT_GT(r.bytes_read, 0u);
  EXPECT_FALSE(r.cancelled);
  EXPECT_TRUE(r.failed.empty());
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(last.snapshots_done, 3u);
  EXPECT_EQ(last.snapshots_total, 3u);
  EXPECT_EQ(last.chunks_done, 7u);
  EXPECT_EQ(last.chunks_total, 7u);
  EXPECT_EQ(last.bytes_read, r.bytes_read);
  for (const SnapshotRef& ref : {a1, a2, b1}) {
    auto st = State(ref);
    ASSERT_TRUE(st.has_value()) << ref.ToString();
    EXPECT_EQ(st->state, "ok");
    EXPECT_EQ(st->time, kT0);
    EXPECT_EQ(st->task, "task-1");
  }
  const nlohmann::json j = r.ToJson();
  EXPECT_EQ(j.at("snapshots-ok"), 3);
  EXPECT_EQ(j.at("chunks-checked"), 7);
  EXPECT_EQ(j.at("logical-bytes"), 11 * kTestChunkSize);
  EXPECT_TRUE(j.at("failed").is_array());
  EXPECT_TRUE(j.contains("duration-ms"));
  EXPECT_TRUE(j.contains("bad-chunks"));
}

TEST_F(VerifyTest, HelpersListNewestFirstPerGroup) {
  Backup(Ref("100", kT0 - 3000), {1});
  Backup(Ref("100", kT0 - 2000), {1});
  Backup(Ref("200", kT0 - 1000), {1});
  auto all = SnapshotsToVerify(*store_);
  ASSERT_TRUE(all.ok());
  std::vector<SnapshotRef> want = {Ref("100", kT0 - 2000), Ref("100", kT0 - 3000),
                                   Ref("200", kT0 - 1000)};
  EXPECT_EQ(*all, want);
  auto group = SnapshotsToVerify(*store_, Ref("100", 0).group);
  ASSERT_TRUE(group.ok());
  EXPECT_EQ(group->size(), 2u);
  EXPECT_TRUE(SnapshotsToVerify(*store_, Ref("300", 0).group).status().IsNotFound());
}

TEST_F(VerifyTest, FlippedByteFailsEveryUserThenReinsertHeals) {
  const SnapshotRef a1 = Ref("100", kT0 - 4000), a2 = Ref("100", kT0 - 3000);
  const SnapshotRef b1 = Ref("200", kT0 - 2000), b2 = Ref("200", kT0 - 1000);
  Backup(a1, {10, 11, 12});
  Backup(a2, {10, 11, 13});
  Backup(b1, {14, 15});
  Backup(b2, {11, 16});
  const std::string bad_path = ChunkPath(11);  // text-like: a zstd blob
  const std::string hex = Sha256(Block(11)).ToHex();
  FlipByte(bad_path, 30);

  VerifyResult r = RunAll();
  EXPECT_EQ(r.snapshots_checked, 4u);
  EXPECT_EQ(r.snapshots_failed, 3u);
  EXPECT_EQ(r.snapshots_ok, 1u);
  EXPECT_EQ(r.chunks_bad, 1u);
  EXPECT_EQ(r.chunks_corrupt, 1u);
  EXPECT_EQ(r.chunks_renamed, 1u);
  EXPECT_EQ(StateName(a1), "failed");
  EXPECT_EQ(StateName(a2), "failed");
  EXPECT_EQ(StateName(b1), "ok");
  EXPECT_EQ(StateName(b2), "failed");
  ASSERT_EQ(r.bad_chunks.size(), 1u);
  const BadChunk& bad = r.bad_chunks[0];
  EXPECT_EQ(bad.digest.ToHex(), hex);
  EXPECT_EQ(bad.kind, "corrupt");
  EXPECT_EQ(bad.renamed_to, hex + ".0.bad");
  EXPECT_EQ(bad.used_by.size(), 3u);
  EXPECT_FALSE(FileExists(bad_path));
  EXPECT_TRUE(FileExists(bad_path + ".0.bad"));
  EXPECT_TRUE(LogHas("chunk " + hex + ": corrupt")) << LogText();
  EXPECT_TRUE(LogHas("renamed to " + hex + ".0.bad")) << LogText();
  const VerifyFailure* f = FindFailure(r, a2);
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->state_written);
  ASSERT_FALSE(f->reasons.empty());
  EXPECT_NE(f->reasons[0].find(hex), std::string::npos) << f->reasons[0];
  const nlohmann::json j = r.ToJson();
  EXPECT_EQ(j.at("bad-chunks").at(0).at("renamed-to"), hex + ".0.bad");
  EXPECT_EQ(j.at("bad-chunks").at(0).at("used-by").size(), 3u);
  EXPECT_EQ(j.at("failed").size(), 3u);

  // Verified again before healing: now missing, nothing more is renamed.
  log_.clear();
  r = RunAll();
  EXPECT_EQ(r.snapshots_failed, 3u);
  EXPECT_EQ(r.chunks_missing, 1u);
  EXPECT_EQ(r.chunks_renamed, 0u);
  EXPECT_FALSE(FileExists(bad_path + ".1.bad"));

  // Healing: the next upload of the same content stores a good copy.
  Digest d;
  auto ins = chunks()->InsertData(Block(11), &d, nullptr);
  ASSERT_TRUE(ins.ok());
  EXPECT_EQ(*ins, InsertResult::kInserted);
  r = RunAll();
  EXPECT_EQ(r.snapshots_ok, 4u);
  EXPECT_EQ(r.snapshots_failed, 0u);
  EXPECT_EQ(r.chunks_bad, 0u);
  for (const SnapshotRef& ref : {a1, a2, b1, b2}) EXPECT_EQ(StateName(ref), "ok");
  EXPECT_TRUE(FileExists(bad_path + ".0.bad"));  // kept for inspection (GC's business)
}

TEST_F(VerifyTest, PlainChunkFlipAndValidBlobOfOtherContentAreCaught) {
  const SnapshotRef a = Ref("100", kT0 - 2000);
  Backup(a, {20, 22, 24});
  FlipByte(ChunkPath(20), kTestChunkSize);  // inside the payload of a plain blob
  // A well-formed blob (good CRC) holding other data: only the digest shows it.
  WriteAll(ChunkPath(22), EncodeBlob(Block(99)));
  VerifyResult r = Run({a});
  EXPECT_EQ(r.snapshots_failed, 1u);
  EXPECT_EQ(r.chunks_corrupt, 2u);
  EXPECT_EQ(r.chunks_renamed, 2u);
  std::set<std::string> problems;
  for (const BadChunk& b : r.bad_chunks) problems.insert(b.problem);
  EXPECT_TRUE(std::any_of(problems.begin(), problems.end(), [](const std::string& p) {
    return p.find("CRC") != std::string::npos;
  })) << LogText();
  EXPECT_TRUE(std::any_of(problems.begin(), problems.end(), [](const std::string& p) {
    return p.find("digest mismatch") != std::string::npos;
  })) << LogText();
  EXPECT_TRUE(FileExists(ChunkPath(20) + ".0.bad"));
  EXPECT_TRUE(FileExists(ChunkPath(22) + ".0.bad"));
  EXPECT_TRUE(FileExists(ChunkPath(24)));
}

TEST_F(VerifyTest, TruncatedIndexFailsThatSnapshotOnly) {
  const SnapshotRef a = Ref("100", kT0 - 2000), b = Ref("100", kT0 - 1000);
  Backup(a, {1, 2, 3});
  Backup(b, {1, 2, 4});
  const std::string idx = JoinPath(SnapDir(a), "drive0.fidx");
  std::string data = ReadAll(idx);
  data.resize(data.size() - 32);
  WriteAll(idx, data);
  VerifyResult r = RunAll();
  EXPECT_EQ(r.snapshots_failed, 1u);
  EXPECT_EQ(r.snapshots_ok, 1u);
  EXPECT_EQ(StateName(a), "failed");
  EXPECT_EQ(StateName(b), "ok");
  const VerifyFailure* f = FindFailure(r, a);
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->state_written);
  EXPECT_NE(f->reasons[0].find("drive0.fidx"), std::string::npos) << f->reasons[0];
  EXPECT_EQ(r.chunks_bad, 0u);
}

TEST_F(VerifyTest, IndexNotMatchingManifestFails) {
  const SnapshotRef a = Ref("100", kT0 - 2000), b = Ref("100", kT0 - 1000);
  Backup(a, {1, 2, 3});
  Backup(b, {1, 2, 4});
  // b's index in a's place: a valid index, but not the one a's manifest names.
  WriteAll(JoinPath(SnapDir(a), "drive0.fidx"), ReadAll(JoinPath(SnapDir(b), "drive0.fidx")));
  VerifyResult r = RunAll();
  EXPECT_EQ(StateName(a), "failed");
  EXPECT_EQ(StateName(b), "ok");
  const VerifyFailure* f = FindFailure(r, a);
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->reasons[0].find("checksum"), std::string::npos) << f->reasons[0];
}

// The catalog learns both outcomes through the datastore's observer: b's
// state from the manifest write, a's damage from ReportDamage (its row is
// rebuilt by the next Refresh and shows the error).
TEST_F(VerifyTest, AlteredManifestIsReportedAndMarkedInCatalog) {
  const SnapshotRef a = Ref("100", kT0 - 2000), b = Ref("100", kT0 - 1000);
  Backup(a, {1, 2});
  Backup(b, {1, 3});
  auto cat = Catalog::Open(JoinPath(base_, "catalog.db"));
  ASSERT_TRUE(cat.ok()) << cat.status().ToString();
  ASSERT_TRUE((*cat)->AddDatastore("store", path_).ok());
  auto sync = CatalogSync::Attach(cat->get(), "store", store_.get(), nullptr);
  ASSERT_TRUE(sync.ok()) << sync.status().ToString();

  // Change the protected part (an archive's size) without its checksum.
  const std::string mpath = JoinPath(SnapDir(a), "index.json");
  nlohmann::json j = nlohmann::json::parse(ReadAll(mpath));
  ASSERT_TRUE(j.contains("archives"));
  j["archives"][0]["size"] = j["archives"][0]["size"].get<uint64_t>() + 1;
  WriteAll(mpath, j.dump(2));
  const std::string altered = ReadAll(mpath);

  VerifyResult r = Run({a, b}, VerifyOptions{});
  EXPECT_EQ(r.snapshots_failed, 1u);
  EXPECT_EQ(r.snapshots_ok, 1u);
  const VerifyFailure* f = FindFailure(r, a);
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(f->state_written);
  EXPECT_NE(f->reasons[0].find("index.json"), std::string::npos) << f->reasons[0];
  EXPECT_TRUE(LogHas("could not be written")) << LogText();
  EXPECT_EQ(ReadAll(mpath), altered);  // nothing written into a manifest that does not parse
  EXPECT_TRUE((*sync)->stale());
  ASSERT_TRUE((*sync)->Refresh().ok());
  auto row_a = (*cat)->GetSnapshot("store", a);
  ASSERT_TRUE(row_a.ok());
  EXPECT_NE(row_a->error.find("Corruption"), std::string::npos) << row_a->error;
  auto row_b = (*cat)->GetSnapshot("store", b);
  ASSERT_TRUE(row_b.ok());
  ASSERT_TRUE(row_b->verify.has_value());
  EXPECT_EQ(row_b->verify->state, "ok");
  EXPECT_EQ(row_b->verify->time, kT0);
  EXPECT_EQ(StateName(b), "ok");
}

TEST_F(VerifyTest, AlteredBlobArchiveFails) {
  const SnapshotRef a = Ref("100", kT0 - 3000), b = Ref("100", kT0 - 2000);
  const SnapshotRef c = Ref("100", kT0 - 1000);
  const std::string conf = EncodeBlob("name: vm100\ncores: 4\nmemory: 4096\n");
  Backup(a, {1}, conf);
  Backup(b, {1}, conf);
  Backup(c, {1}, conf);
  FlipByte(JoinPath(SnapDir(a), "qemu-server.conf.blob"), 14);
  WriteAll(JoinPath(SnapDir(b), "qemu-server.conf.blob"), conf + "x");  // one byte longer
  VerifyResult r = RunAll();
  EXPECT_EQ(StateName(a), "failed");
  EXPECT_EQ(StateName(b), "failed");
  EXPECT_EQ(StateName(c), "ok");
  const VerifyFailure* fa = FindFailure(r, a);
  ASSERT_NE(fa, nullptr);
  EXPECT_NE(fa->reasons[0].find("SHA-256"), std::string::npos) << fa->reasons[0];
  const VerifyFailure* fb = FindFailure(r, b);
  ASSERT_NE(fb, nullptr);
  EXPECT_NE(fb->reasons[0].find("qemu-server.conf.blob"), std::string::npos) << fb->reasons[0];
}

TEST_F(VerifyTest, MissingChunkFailsAndNothingIsRenamed) {
  const SnapshotRef a = Ref("100", kT0 - 2000), b = Ref("200", kT0 - 1000);
  Backup(a, {1, 2, 3});
  Backup(b, {4, 5});
  const std::string dir = PrefixDir(2);
  ASSERT_EQ(::unlink(ChunkPath(2).c_str()), 0);
  const auto before = ListNames(dir);
  VerifyResult r = RunAll();
  EXPECT_EQ(StateName(a), "failed");
  EXPECT_EQ(StateName(b), "ok");
  EXPECT_EQ(r.chunks_missing, 1u);
  EXPECT_EQ(r.chunks_renamed, 0u);
  ASSERT_EQ(r.bad_chunks.size(), 1u);
  EXPECT_EQ(r.bad_chunks[0].kind, "missing");
  EXPECT_TRUE(r.bad_chunks[0].renamed_to.empty());
  EXPECT_EQ(ListNames(dir), before);
}

TEST_F(VerifyTest, SharedChunksAreReadOnce) {
  std::vector<SnapshotRef> refs;
  for (int g = 0; g < 3; ++g) {
    for (int s = 0; s < 4; ++s) {
      SnapshotRef ref = Ref(std::to_string(100 + g), kT0 - 10000 + s * 100);
      // Blocks 1..20 shared by all, plus one of each snapshot's own.
      std::vector<uint32_t> ids;
      for (uint32_t i = 1; i <= 20; ++i) ids.push_back(i);
      ids.push_back(static_cast<uint32_t>(1000 + g * 10 + s));
      Backup(ref, ids);
      refs.push_back(ref);
    }
  }
  env_.ResetReads();
  VerifyOptions o;
  o.threads = 4;
  VerifyResult r = Run(refs, o);
  EXPECT_EQ(r.snapshots_ok, 12u);
  EXPECT_EQ(r.chunks_checked, 32u);
  const std::string chunk_root = JoinPath(path_, ".chunks");
  EXPECT_EQ(env_.ReadsUnder(chunk_root), 32);
  for (const auto& [p, n] : env_.ReadsCopy()) {
    if (p.rfind(chunk_root, 0) == 0) {
      EXPECT_EQ(n, 1) << p;
    }
  }
  EXPECT_EQ(r.logical_bytes, 12 * 21 * kTestChunkSize);
}

TEST_F(VerifyTest, IgnoreVerifiedAndOutdatedAfter) {
  const SnapshotRef a = Ref("100", kT0 - 3000), b = Ref("100", kT0 - 2000);
  const SnapshotRef c = Ref("200", kT0 - 1000);
  Backup(a, {1, 2});
  Backup(b, {1, 3});
  Backup(c, {4});
  // c fails (its index is damaged); a and b are ok at kT0.
  FlipByte(JoinPath(SnapDir(c), "drive0.fidx"), 140);  // in the digest list
  VerifyResult r = RunAll();
  ASSERT_EQ(r.snapshots_ok, 2u);
  ASSERT_EQ(r.snapshots_failed, 1u);

  const std::string chunk_root = JoinPath(path_, ".chunks");
  VerifyOptions o;
  o.ignore_verified = true;

  // A day later: ok ones are skipped, the failed one is verified again.
  env_.SetNow(kT0 + kDay);
  env_.ResetReads();
  r = RunAll(o);
  EXPECT_EQ(r.snapshots_skipped, 2u);
  EXPECT_EQ(r.snapshots_checked, 1u);
  EXPECT_EQ(r.snapshots_failed, 1u);
  EXPECT_EQ(env_.ReadsUnder(chunk_root), 0);
  EXPECT_EQ(State(a)->time, kT0);
  EXPECT_EQ(State(c)->time, kT0 + kDay);

  // Outdated after 2 days: at +1 day still skipped ...
  o.outdated_after_days = 2;
  r = RunAll(o);
  EXPECT_EQ(r.snapshots_skipped, 2u);
  // ... at exactly +2 days verified again.
  env_.SetNow(kT0 + 2 * kDay);
  r = RunAll(o);
  EXPECT_EQ(r.snapshots_skipped, 0u);
  EXPECT_EQ(r.snapshots_ok, 2u);
  EXPECT_EQ(State(a)->time, kT0 + 2 * kDay);
  EXPECT_GT(env_.ReadsUnder(chunk_root), 0);

  // Without ignore_verified everything is verified.
  r = RunAll();
  EXPECT_EQ(r.snapshots_checked, 3u);
  EXPECT_EQ(r.snapshots_skipped, 0u);
}

TEST(VerifiedRecentlyTest, Rules) {
  VerifyOptions o;
  const VerifyState ok{"ok", 1000, "t"};
  const VerifyState failed{"failed", 1000, "t"};
  EXPECT_FALSE(VerifiedRecently(ok, o, 1000));  // ignore_verified off
  o.ignore_verified = true;
  EXPECT_TRUE(VerifiedRecently(ok, o, 1000));
  EXPECT_TRUE(VerifiedRecently(ok, o, int64_t{1} << 62));  // no outdated_after: never outdated
  EXPECT_FALSE(VerifiedRecently(failed, o, 1000));
  EXPECT_FALSE(VerifiedRecently(std::nullopt, o, 1000));
  o.outdated_after_days = 1;
  EXPECT_TRUE(VerifiedRecently(ok, o, 1000 + kDay - 1));
  EXPECT_FALSE(VerifiedRecently(ok, o, 1000 + kDay));
  EXPECT_TRUE(VerifiedRecently(ok, o, 0));  // a state from the future (clock stepped back)
  o.outdated_after_days = 0;
  EXPECT_FALSE(VerifiedRecently(ok, o, 1000));
  o.outdated_after_days = std::numeric_limits<int64_t>::max();
  EXPECT_TRUE(VerifiedRecently(ok, o, std::numeric_limits<int64_t>::max()));
  o.outdated_after_days = 1;
  const VerifyState ancient{"ok", std::numeric_limits<int64_t>::min(), ""};
  EXPECT_FALSE(VerifiedRecently(ancient, o, std::numeric_limits<int64_t>::max()));
  const VerifyState future{"ok", std::numeric_limits<int64_t>::max(), ""};
  EXPECT_TRUE(VerifiedRecently(future, o, std::numeric_limits<int64_t>::min()));
}

TEST_F(VerifyTest, CancellationStopsEarlyAndWritesNoStateForUnfinished) {
  const SnapshotRef s1 = Ref("100", kT0 - 3000), s2 = Ref("100", kT0 - 2000);
  const SnapshotRef s3 = Ref("100", kT0 - 1000);
  Backup(s1, {1, 2, 3});
  Backup(s2, {4, 5, 6, 7, 8});
  Backup(s3, {9, 10});
  std::atomic<bool> cancel{false};
  std::set<std::string> s2_chunks;
  for (uint32_t id = 4; id <= 8; ++id) s2_chunks.insert(ChunkPath(id));
  // Cancel while the first chunk of s2 is being read.
  env_.OnRead([&](const std::string& p) {
    if (s2_chunks.contains(p)) cancel.store(true);
  });
  VerifyOptions o;
  o.threads = 1;
  o.cancel = &cancel;
  VerifyResult r = Run({s1, s2, s3}, o);
  env_.OnRead(nullptr);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.snapshots_checked, 1u);
  EXPECT_EQ(r.snapshots_ok, 1u);
  EXPECT_EQ(StateName(s1), "ok");
  EXPECT_EQ(StateName(s2), "none");
  EXPECT_EQ(StateName(s3), "none");
  // The one worker stopped after the chunk that tripped the flag.
  int s2_reads = 0;
  for (const std::string& p : s2_chunks) s2_reads += env_.Reads(p);
  EXPECT_EQ(s2_reads, 1);
  EXPECT_EQ(env_.Reads(ChunkPath(9)) + env_.Reads(ChunkPath(10)), 0);
  EXPECT_TRUE(r.ToJson().at("cancelled").get<bool>());

  // Cancelled before starting: nothing at all.
  VerifyResult r2 = Run({s2, s3}, o);
  EXPECT_TRUE(r2.cancelled);
  EXPECT_EQ(r2.snapshots_checked, 0u);
  EXPECT_EQ(StateName(s2), "none");
}

TEST_F(VerifyTest, ChunkRenamedBeforeACancelIsStillReported) {
  const SnapshotRef s1 = Ref("100", kT0 - 1000);
  Backup(s1, {1, 2, 3, 4});
  std::atomic<bool> cancel{false};
  for (uint32_t id = 1; id <= 4; ++id) FlipByte(ChunkPath(id), 40);
  env_.OnRead([&](const std::string& p) {
    if (p.find("/.chunks/") != std::string::npos) cancel.store(true);
  });
  VerifyOptions o;
  o.threads = 1;
  o.cancel = &cancel;
  VerifyResult r = Run({s1}, o);
  env_.OnRead(nullptr);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.snapshots_checked, 0u);
  EXPECT_EQ(StateName(s1), "none");
  EXPECT_EQ(r.chunks_checked, 1u);
  EXPECT_EQ(r.chunks_renamed, 1u);
  ASSERT_EQ(r.bad_chunks.size(), 1u);
  ASSERT_EQ(r.bad_chunks[0].used_by.size(), 1u);
  EXPECT_EQ(r.bad_chunks[0].used_by[0], s1);
  int renamed = 0;
  for (uint32_t id = 1; id <= 4; ++id) renamed += FileExists(ChunkPath(id) + ".0.bad") ? 1 : 0;
  EXPECT_EQ(renamed, 1);
  EXPECT_TRUE(LogHas("renamed to")) << LogText();
}

TEST_F(VerifyTest, ReadErrorFailsSnapshotButDoesNotRename) {
  const SnapshotRef a = Ref("100", kT0 - 2000), b = Ref("200", kT0 - 1000);
  Backup(a, {1, 2, 3});
  Backup(b, {4});
  const std::string p = ChunkPath(2);
  env_.FailReads(p, true);
  VerifyResult r = RunAll();
  EXPECT_EQ(StateName(a), "failed");
  EXPECT_EQ(StateName(b), "ok");
  EXPECT_EQ(r.chunks_unreadable, 1u);
  EXPECT_EQ(r.chunks_renamed, 0u);
  ASSERT_EQ(r.bad_chunks.size(), 1u);
  EXPECT_EQ(r.bad_chunks[0].kind, "unreadable");
  EXPECT_TRUE(FileExists(p));
  EXPECT_FALSE(FileExists(p + ".0.bad"));
  env_.FailReads(p, false);
  r = RunAll();
  EXPECT_EQ(r.snapshots_ok, 2u);
  EXPECT_EQ(StateName(a), "ok");
}

TEST_F(VerifyTest, OneBadReadOfAGoodChunkIsAWarningNotARename) {
  const SnapshotRef a = Ref("100", kT0 - 2000);
  Backup(a, {1, 2});
  const std::string p = ChunkPath(2);
  env_.DamageReads(p, 1);
  VerifyResult r = Run({a});
  EXPECT_EQ(r.snapshots_ok, 1u);
  EXPECT_EQ(r.chunks_bad, 0u);
  EXPECT_EQ(r.chunks_renamed, 0u);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("second read was good"), std::string::npos) << r.warnings[0];
  EXPECT_TRUE(FileExists(p));
  EXPECT_EQ(env_.Reads(p), 2);

  // Bad on every read: renamed.
  env_.DamageReads(p, 100);
  r = Run({a});
  EXPECT_EQ(r.chunks_renamed, 1u);
  EXPECT_FALSE(FileExists(p));
}

TEST_F(VerifyTest, WrongLengthInIndexFailsSnapshotButKeepsGoodChunk) {
  const SnapshotRef good = Ref("100", kT0 - 2000), wrong = Ref("200", kT0 - 1000);
  Backup(good, {1, 2});
  // An index whose short last chunk names a full-size chunk.
  FixedIndexWriter w(kTestChunkSize + kTestChunkSize / 2, kTestChunkSize);
  ASSERT_TRUE(w.Set(0, Insert(Block(3))).ok());
  ASSERT_TRUE(w.Set(1, Sha256(Block(2))).ok());
  Commit(wrong, w);
  for (const auto& order : {std::vector<SnapshotRef>{wrong, good}, {good, wrong}}) {
    VerifyResult r = Run(order);
    EXPECT_EQ(StateName(good), "ok");
    EXPECT_EQ(StateName(wrong), "failed");
    EXPECT_EQ(r.chunks_bad, 0u);
    EXPECT_TRUE(FileExists(ChunkPath(2)));
    const VerifyFailure* f = FindFailure(r, wrong);
    ASSERT_NE(f, nullptr);
    EXPECT_NE(f->reasons[0].find("expects 2048 bytes"), std::string::npos) << f->reasons[0];
  }
}

// No manifest declares client-side encryption yet, so a chunk of an encrypted
// kind proves nothing for any snapshot: the snapshot fails, and the chunk is
// left where it is (a verified upload of the digest replaces it).
TEST_F(VerifyTest, EncryptedKindChunkFailsItsSnapshotAndIsNotRenamed) {
  std::string cipher(kTestChunkSize, '\0');
  std::mt19937 rng(7);
  for (char& ch : cipher) ch = static_cast<char>(rng());
  const Digest keyed = Sha256("keyed digest of some plaintext");
  // Such a file cannot come in through InsertBlob any more; it is what an
  // older server or a hostile hand left on disk.
  ASSERT_TRUE(CreateDirAll(Env::Default(), chunks()->PrefixDir(DigestPrefix(keyed))).ok());
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), chunks()->ChunkPath(keyed), EncryptedBlob(cipher),
                              false).ok());
  const SnapshotRef a = Ref("100", kT0 - 1000);
  FixedIndexWriter w(2 * kTestChunkSize, kTestChunkSize);
  ASSERT_TRUE(w.Set(0, keyed).ok());
  ASSERT_TRUE(w.Set(1, Insert(Block(1))).ok());
  Commit(a, w);

  VerifyResult r = Run({a});
  EXPECT_EQ(r.snapshots_failed, 1u) << LogText();
  EXPECT_EQ(StateName(a), "failed");
  EXPECT_EQ(r.chunks_checked, 2u);
  EXPECT_EQ(r.chunks_bad, 0u);
  EXPECT_EQ(r.chunks_renamed, 0u);
  EXPECT_TRUE(FileExists(chunks()->ChunkPath(keyed)));
  const VerifyFailure* f = FindFailure(r, a);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->reasons.size(), 1u);
  EXPECT_NE(f->reasons[0].find("encrypted"), std::string::npos) << f->reasons[0];
  EXPECT_NE(f->reasons[0].find("does not declare"), std::string::npos) << f->reasons[0];

  // A damaged encrypted-kind file is still found by its CRC and renamed aside.
  FlipByte(chunks()->ChunkPath(keyed), 100);
  r = Run({a});
  EXPECT_EQ(r.snapshots_failed, 1u);
  EXPECT_EQ(r.chunks_renamed, 1u);
  EXPECT_TRUE(FileExists(chunks()->ChunkPath(keyed) + ".0.bad"));
}

// Issue 17, item 3: an encrypted-kind file planted under the digest of real
// data makes the snapshot fail verification, and the next (verified) upload
// of that data replaces it, after which the snapshot verifies ok.
TEST_F(VerifyTest, PlantedEncryptedKindUnderAPlaintextDigestFailsUntilReplaced) {
  const std::string data = Block(2);
  const Digest d = Sha256(data);
  ASSERT_TRUE(CreateDirAll(Env::Default(), chunks()->PrefixDir(DigestPrefix(d))).ok());
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), chunks()->ChunkPath(d),
                              EncryptedBlob(std::string(kTestChunkSize, 'x')), false).ok());
  const SnapshotRef a = Ref("100", kT0 - 1000);
  FixedIndexWriter w(kTestChunkSize, kTestChunkSize);
  ASSERT_TRUE(w.Set(0, d).ok());
  Commit(a, w);
  VerifyResult r = Run({a});
  EXPECT_EQ(r.snapshots_failed, 1u) << LogText();

  auto ins = chunks()->InsertBlob(d, EncodeBlob(data), data.size(), nullptr);
  ASSERT_TRUE(ins.ok()) << ins.status().ToString();
  EXPECT_EQ(*ins, InsertResult::kInserted);
  r = Run({a});
  EXPECT_EQ(r.snapshots_ok, 1u) << LogText();
  EXPECT_EQ(StateName(a), "ok");
}

TEST_F(VerifyTest, ManyThreadsTinyBufferBudgetFindExactlyTheBadOnes) {
  std::vector<SnapshotRef> refs;
  for (int s = 0; s < 6; ++s) {
    std::vector<uint32_t> ids;
    for (uint32_t i = 0; i < 60; ++i) ids.push_back(static_cast<uint32_t>(s * 40 + i));
    SnapshotRef ref = Ref(std::to_string(100 + s % 2), kT0 - 10000 + s);
    Backup(ref, ids);
    refs.push_back(ref);
  }
  const std::set<uint32_t> bad_ids = {5, 77, 130, 259};
  for (uint32_t id : bad_ids) FlipByte(ChunkPath(id), 50);
  ASSERT_EQ(::unlink(ChunkPath(200).c_str()), 0);
  VerifyOptions o;
  o.threads = 8;
  o.max_buffer_bytes = 1;  // one chunk in flight at a time
  VerifyResult r = Run(refs, o);
  EXPECT_EQ(r.chunks_checked, 6u * 40 + 20);
  EXPECT_EQ(r.chunks_corrupt, bad_ids.size());
  EXPECT_EQ(r.chunks_missing, 1u);
  EXPECT_EQ(r.chunks_renamed, bad_ids.size());
  for (uint32_t id : bad_ids) EXPECT_TRUE(FileExists(ChunkPath(id) + ".0.bad")) << id;
  // Snapshot s holds ids [40s, 40s+60).
  for (int s = 0; s < 6; ++s) {
    bool any_bad = false;
    for (uint32_t id = static_cast<uint32_t>(40 * s); id < static_cast<uint32_t>(40 * s + 60);
         ++id) {
      any_bad = any_bad || bad_ids.contains(id) || id == 200;
    }
    EXPECT_EQ(StateName(refs[static_cast<size_t>(s)]), any_bad ? "failed" : "ok") << s;
  }
}

TEST_F(VerifyTest, SnapshotDeletedBeforeVerifyIsVanishedNotFailed) {
  const SnapshotRef a = Ref("100", kT0 - 2000), b = Ref("100", kT0 - 1000);
  Backup(a, {1});
  Backup(b, {2});
  ASSERT_TRUE(store_->DeleteSnapshot(a).ok());
  VerifyResult r = Run({a, b, b});
  EXPECT_EQ(r.snapshots_vanished, 1u);
  EXPECT_EQ(r.snapshots_checked, 1u);
  EXPECT_EQ(r.snapshots_failed, 0u);
}

// Verify beside a prune (deletes) and a backup (new snapshots, new and
// refreshed chunks): a deleted snapshot is "vanished", never "failed", and
// nothing is found bad.
TEST_F(VerifyTest, BesideDeletesAndBackups) {
  std::vector<SnapshotRef> refs;
  for (int s = 0; s < 16; ++s) {
    SnapshotRef ref = Ref("100", kT0 - 10000 + s);
    std::vector<uint32_t> ids;
    for (uint32_t i = 0; i < 12; ++i) ids.push_back(static_cast<uint32_t>(s * 6 + i));
    Backup(ref, ids);
    refs.push_back(ref);
  }
  std::atomic<bool> done{false};
  std::thread deleter([&] {
    for (size_t i = 1; i < refs.size(); i += 2) {
      Status s = store_->DeleteSnapshot(refs[i]);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
  });
  std::thread backup([&] {
    for (int s = 0; s < 8 && !done.load(); ++s) {
      Backup(Ref("300", kT0 - 500 + s), {1, 2, static_cast<uint32_t>(5000 + s)});
    }
  });
  VerifyOptions o;
  o.threads = 4;
  VerifyResult r = Run(refs, o);
  done.store(true);
  deleter.join();
  backup.join();
  EXPECT_EQ(r.snapshots_failed, 0u) << LogText();
  EXPECT_EQ(r.chunks_bad, 0u);
  EXPECT_EQ(r.snapshots_ok + r.snapshots_vanished, refs.size());
  EXPECT_GE(r.snapshots_ok, refs.size() / 2);
  for (size_t i = 0; i < refs.size(); i += 2) EXPECT_EQ(StateName(refs[i]), "ok");
}

TEST_F(VerifyTest, InvalidArguments) {
  VerifyOptions o;
  o.threads = -1;
  EXPECT_TRUE(Verify(*store_, {}, o).status().IsInvalidArgument());
  o.threads = 0;
  o.outdated_after_days = -1;
  EXPECT_TRUE(Verify(*store_, {}, o).status().IsInvalidArgument());
  o.outdated_after_days.reset();
  SnapshotRef bad = Ref("../x", kT0);
  EXPECT_TRUE(Verify(*store_, {bad}, o).status().IsInvalidArgument());
  auto empty = Verify(*store_, {}, o);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->snapshots_checked, 0u);
}

}  // namespace
}  // namespace cairn::storage
