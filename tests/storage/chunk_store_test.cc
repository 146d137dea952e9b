#include "storage/chunk_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <iostream>
#include <random>
#include <thread>

#include "storage/crc32c.h"
#include "tests/storage/fault_env_testutil.h"

namespace cairn::storage {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  for (; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

// Compressible but not trivial.
std::string TextLike(size_t n, uint32_t seed) {
  std::string s;
  std::mt19937 rng(seed);
  while (s.size() < n) s += "block " + std::to_string(rng() % 1000) + " of a disk image\n";
  s.resize(n);
  return s;
}

// An encrypted-kind envelope around `ciphertext` (the library cannot encrypt;
// the server only checks CRC and length).
std::string EncryptedBlob(std::string_view ciphertext) {
  std::string body(kBlobIvSize + kBlobTagSize, '\x5a');
  body += ciphertext;
  std::string blob(BlobMagic(BlobKind::kEncrypted));
  uint32_t crc = Crc32c(body);
  for (int i = 0; i < 4; ++i) blob += static_cast<char>(crc >> (8 * i));
  return blob + body;
}

struct stat StatOrDie(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

void SetOldMtime(const std::string& path) {
  struct timespec times[2] = {{1000000000, 0}, {1000000000, 0}};  // 2001
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

// A fresh store for each test, made by ChunkStore::Create (prefix folders
// are made on first insert).
class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_chunk_store_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    ASSERT_TRUE(ChunkStore::Create(env_, root_).ok());
    auto store = ChunkStore::Open(env_, root_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void TearDown() override { EXPECT_TRUE(RemoveAll(env_, root_).ok()); }

  void MakePrefixDir(uint16_t prefix) {
    ASSERT_TRUE(CreateDirAll(env_, store_->PrefixDir(prefix)).ok());
  }
  std::vector<std::string> ListPrefix(uint16_t prefix) {
    std::vector<std::string> names;
    Status s = env_->ListDir(store_->PrefixDir(prefix), &names);
    EXPECT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
    std::sort(names.begin(), names.end());
    return names;
  }
  void CleanPrefix(uint16_t prefix) {
    for (const auto& n : ListPrefix(prefix)) {
      ASSERT_TRUE(env_->RemoveFile(JoinPath(store_->PrefixDir(prefix), n)).ok());
    }
  }

  std::string root_;
  Env* env_ = Env::Default();
  std::unique_ptr<ChunkStore> store_;
};

TEST(ChunkStoreCreateTest, CreateOpenLayoutAndPrefixFoldersOnFirstUse) {
  std::string tmpl = JoinPath(::testing::TempDir(), "cairn_chunk_create.XXXXXX");
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  Env* env = Env::Default();
  const std::string ds = JoinPath(tmpl, "store");
  EXPECT_TRUE(ChunkStore::Open(env, ds).status().IsNotFound());
  ASSERT_TRUE(ChunkStore::Create(env, ds).ok());
  std::vector<std::string> names;
  ASSERT_TRUE(env->ListDir(JoinPath(ds, ".chunks"), &names).ok());
  EXPECT_TRUE(names.empty());
  EXPECT_TRUE(ChunkStore::Create(env, ds).ok());  // again: fine
  auto store = ChunkStore::Open(env, ds);
  ASSERT_TRUE(store.ok());
  Digest d = Sha256("x");
  EXPECT_EQ((*store)->ChunkPath(d),
            JoinPath(ds, ".chunks/" + d.ToHex().substr(0, 4) + "/" + d.ToHex()));
  EXPECT_EQ((*store)->PrefixDir(0x00ff), JoinPath(ds, ".chunks/00ff"));

  // The first insert into a prefix makes its folder.
  DirtyFolders dirty;
  Digest got;
  ASSERT_TRUE((*store)->InsertData("x", &got, &dirty).ok());
  EXPECT_EQ(got, d);
  ASSERT_TRUE(env->ListDir(JoinPath(ds, ".chunks"), &names).ok());
  EXPECT_EQ(names, std::vector<std::string>{d.ToHex().substr(0, 4)});
  EXPECT_TRUE((*store)->ReadChunk(d).ok());
  EXPECT_EQ((*store)->Stats()->chunks, 1u);

  // A file where a prefix folder belongs is an error, not silently accepted.
  Digest y = Sha256("y");
  ASSERT_TRUE(WriteFileAtomic(env, (*store)->PrefixDir(DigestPrefix(y)), "x", false).ok());
  EXPECT_FALSE((*store)->InsertData("y", &got, &dirty).ok());
  EXPECT_TRUE(RemoveAll(env, tmpl).ok());
}

TEST(ChunkStoreCreateTest, OpenNeedsCreate) {
  std::string tmpl = JoinPath(::testing::TempDir(), "cairn_chunk_create.XXXXXX");
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  Env* env = Env::Default();
  EXPECT_TRUE(ChunkStore::Open(env, tmpl).status().IsNotFound());
  ASSERT_TRUE(WriteFileAtomic(env, JoinPath(tmpl, ".chunks"), "x", false).ok());
  EXPECT_TRUE(ChunkStore::Open(env, tmpl).status().IsNotFound());
  EXPECT_TRUE(RemoveAll(env, tmpl).ok());
}

TEST_F(ChunkStoreTest, RoundTripInsertData) {
  const std::string data = TextLike(kChunkSize, 1);
  DirtyFolders dirty;
  Digest d;
  auto r = store_->InsertData(data, &d, &dirty);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, InsertResult::kInserted);
  EXPECT_EQ(d, Sha256(data));
  EXPECT_TRUE(dirty.Take().test(DigestPrefix(d)));
  EXPECT_TRUE(*store_->Exists(d));
  auto back = store_->ReadChunk(d);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == data);
  auto blob = store_->ReadBlob(d);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(*CheckBlob(*blob), BlobKind::kZstd);
  EXPECT_LT(blob->size(), data.size());
  EXPECT_EQ(ListPrefix(DigestPrefix(d)), std::vector<std::string>{d.ToHex()});

  Digest d2;
  auto again = store_->InsertData(data, &d2, &dirty);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, InsertResult::kExisted);
  EXPECT_EQ(d2, d);
}

TEST_F(ChunkStoreTest, RoundTripInsertBlobPlainAndZstd) {
  for (bool compressible : {false, true}) {
    SCOPED_TRACE(compressible);
    const std::string data = compressible ? TextLike(100000, 2) : RandomBytes(100000, 2);
    const std::string blob = EncodeBlob(data);
    EXPECT_EQ(*CheckBlob(blob), compressible ? BlobKind::kZstd : BlobKind::kPlain);
    const Digest d = Sha256(data);
    DirtyFolders dirty;
    auto r = store_->InsertBlob(d, blob, data.size(), &dirty);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, InsertResult::kInserted);
    EXPECT_TRUE(*store_->ReadChunk(d) == data);
    EXPECT_TRUE(*store_->ReadBlob(d) == blob);
    EXPECT_TRUE(store_->SyncFolders(&dirty).ok());
    EXPECT_FALSE(dirty.Take().any());
  }
}

TEST_F(ChunkStoreTest, ZeroChunk) {
  const std::string zeros(kChunkSize, '\0');
  Digest d;
  auto r = store_->InsertData(zeros, &d, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(d, ZeroChunkDigest());
  EXPECT_TRUE(*store_->ReadChunk(d) == zeros);
  // A short zero chunk (the tail of an image) has its own digest.
  const std::string short_zeros(12345, '\0');
  ASSERT_TRUE(
      store_->InsertBlob(Sha256(short_zeros), EncodeBlob(short_zeros), 12345, nullptr).ok());
  EXPECT_TRUE(*store_->ReadChunk(Sha256(short_zeros)) == short_zeros);
}

TEST_F(ChunkStoreTest, WrongDigestIsCorruptionAndWritesNothing) {
  const std::string data = RandomBytes(5000, 3);
  const Digest wrong = Sha256("something else");
  for (bool compress : {false, true}) {
    Status s = store_->InsertBlob(wrong, EncodeBlob(data, compress), data.size(), nullptr).status();
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  }
  EXPECT_FALSE(*store_->Exists(wrong));
  EXPECT_FALSE(*store_->Exists(Sha256(data)));
  EXPECT_TRUE(ListPrefix(DigestPrefix(wrong)).empty());
  EXPECT_TRUE(ListPrefix(DigestPrefix(Sha256(data))).empty());

  // Nor is an existing chunk touched by a bad upload of its digest.
  const std::string other = RandomBytes(5000, 4);
  const Digest d = Sha256(other);
  ASSERT_TRUE(store_->InsertBlob(d, EncodeBlob(other), other.size(), nullptr).ok());
  SetOldMtime(store_->ChunkPath(d));
  EXPECT_TRUE(
      store_->InsertBlob(d, EncodeBlob(data), data.size(), nullptr).status().IsCorruption());
  EXPECT_EQ(StatOrDie(store_->ChunkPath(d)).st_mtim.tv_sec, 1000000000);
}

TEST_F(ChunkStoreTest, WrongSizeIsCorruption) {
  const std::string text = TextLike(50000, 5);
  const std::string random = RandomBytes(50000, 5);
  for (const std::string* data : {&text, &random}) {
    const Digest d = Sha256(*data);
    const std::string blob = EncodeBlob(*data);
    for (uint64_t size : {uint64_t{0}, uint64_t{49999}, uint64_t{50001},
                          uint64_t{kMaxBlobPayload} + 1, ~uint64_t{0}}) {
      Status s = store_->InsertBlob(d, blob, size, nullptr).status();
      EXPECT_TRUE(s.IsCorruption()) << size << " " << s.ToString();
    }
    EXPECT_FALSE(*store_->Exists(d));
  }
}

TEST_F(ChunkStoreTest, CorruptBlobIsCorruption) {
  const std::string text = TextLike(30000, 6);
  const std::string random = RandomBytes(30000, 6);
  for (const std::string* data : {&text, &random}) {
    const Digest d = Sha256(*data);
    const std::string good = EncodeBlob(*data);
    // A bit flip anywhere: magic, CRC, payload start, payload end.
    for (size_t pos : {size_t{0}, size_t{9}, kBlobHeaderSize, good.size() - 1}) {
      std::string bad = good;
      bad[pos] ^= 0x10;
      Status s = store_->InsertBlob(d, bad, data->size(), nullptr).status();
      EXPECT_TRUE(s.IsCorruption()) << pos << " " << s.ToString();
    }
    // Truncated, empty, garbage.
    EXPECT_TRUE(store_->InsertBlob(d, good.substr(0, good.size() - 1), data->size(), nullptr)
                    .status()
                    .IsCorruption());
    EXPECT_TRUE(store_->InsertBlob(d, "", data->size(), nullptr).status().IsCorruption());
    EXPECT_TRUE(store_->InsertBlob(d, std::string(100, 'g'), data->size(), nullptr)
                    .status()
                    .IsCorruption());
    EXPECT_FALSE(*store_->Exists(d));
    EXPECT_TRUE(ListPrefix(DigestPrefix(d)).empty());
  }
}

TEST_F(ChunkStoreTest, ZstdBlobClaimingMoreThanExpectedIsRefused) {
  // A valid zstd blob whose plaintext is larger than the declared size is
  // refused without decoding it in full.
  const std::string big = std::string(1 << 20, 'a');
  Status s = store_->InsertBlob(Sha256(big), EncodeBlob(big), 1000, nullptr).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

// An encrypted-kind blob proves nothing about its digest: outside the
// encrypted domain it is refused, and nothing is written.
TEST_F(ChunkStoreTest, EncryptedKindsAreRefusedInTheVerifiedDomain) {
  const std::string ciphertext = RandomBytes(7000, 7);
  const Digest d = Sha256("keyed digest the server cannot check");
  for (BlobKind kind : {BlobKind::kEncrypted, BlobKind::kEncryptedZstd}) {
    std::string blob = EncryptedBlob(ciphertext);
    blob.replace(0, kBlobMagicSize, BlobMagic(kind));
    Status s = store_->InsertBlob(d, blob, 7000, nullptr).status();
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_NE(s.message().find("unencrypted backup"), std::string::npos) << s.message();
  }
  EXPECT_FALSE(*store_->Exists(d));
  // Nor under the digest of data the store holds: that chunk stays as it is.
  const std::string data = TextLike(7000, 9);
  const Digest real = Sha256(data);
  ASSERT_TRUE(store_->InsertBlob(real, EncodeBlob(data), data.size(), nullptr).ok());
  const struct stat before = StatOrDie(store_->ChunkPath(real));
  EXPECT_TRUE(
      store_->InsertBlob(real, EncryptedBlob(ciphertext), 7000, nullptr).status().IsInvalidArgument());
  EXPECT_EQ(StatOrDie(store_->ChunkPath(real)).st_ino, before.st_ino);
  EXPECT_EQ(*store_->ReadChunk(real), data);
}

TEST_F(ChunkStoreTest, EncryptedDomainChecksCrcAndSizeOnly) {
  const std::string ciphertext = RandomBytes(7000, 7);
  const std::string blob = EncryptedBlob(ciphertext);
  const Digest d = Sha256("keyed digest the server cannot check");
  const ChunkDomain enc = ChunkDomain::kEncrypted;
  EXPECT_TRUE(store_->InsertBlob(d, blob, 6999, nullptr, enc).status().IsCorruption());
  std::string flipped = blob;
  flipped[blob.size() / 2] ^= 1;
  EXPECT_TRUE(store_->InsertBlob(d, flipped, 7000, nullptr, enc).status().IsCorruption());
  // Encrypted+zstd: the ciphertext must be strictly shorter than the size.
  std::string zblob = blob;
  zblob.replace(0, kBlobMagicSize, BlobMagic(BlobKind::kEncryptedZstd));
  EXPECT_TRUE(store_->InsertBlob(d, zblob, 7000, nullptr, enc).status().IsCorruption());
  EXPECT_FALSE(*store_->Exists(d));
  // A plain or zstd blob has no place in the encrypted domain.
  const std::string data = TextLike(7000, 4);
  EXPECT_TRUE(store_->InsertBlob(Sha256(data), EncodeBlob(data), data.size(), nullptr, enc)
                  .status()
                  .IsInvalidArgument());
  EXPECT_FALSE(*store_->Exists(Sha256(data)));
  auto r = store_->InsertBlob(d, blob, 7000, nullptr, enc);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, InsertResult::kInserted);
  EXPECT_TRUE(*store_->ReadBlob(d) == blob);
  EXPECT_FALSE(store_->ReadChunk(d).ok());  // no key to check it with
  // The same digest again: refreshed, not rewritten.
  const ino_t first = StatOrDie(store_->ChunkPath(d)).st_ino;
  r = store_->InsertBlob(d, EncryptedBlob(RandomBytes(7000, 8)), 7000, nullptr, enc);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, InsertResult::kExisted);
  EXPECT_EQ(StatOrDie(store_->ChunkPath(d)).st_ino, first);
}

// The attack the domains exist for: whoever knows the plain digest of
// someone's data uploads an encrypted blob under it. It must neither count
// as stored (no registration: Conflict), nor touch the verified chunk.
TEST_F(ChunkStoreTest, EncryptedInsertNeverDisplacesOrSharesAVerifiedChunk) {
  const std::string data = TextLike(9000, 21);
  const Digest d = Sha256(data);
  ASSERT_TRUE(store_->InsertBlob(d, EncodeBlob(data), data.size(), nullptr).ok());
  const std::string path = store_->ChunkPath(d);
  SetOldMtime(path);
  const struct stat before = StatOrDie(path);
  Status s = store_->InsertBlob(d, EncryptedBlob(RandomBytes(9000, 5)), 9000, nullptr,
                                ChunkDomain::kEncrypted)
                 .status();
  EXPECT_TRUE(s.IsConflict()) << s.ToString();
  const struct stat after = StatOrDie(path);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_mtime, before.st_mtime);  // not even refreshed
  EXPECT_EQ(*store_->ReadChunk(d), data);
  EXPECT_EQ(ListPrefix(DigestPrefix(d)), std::vector<std::string>{d.ToHex()});
  // A file that is no blob at all is replaced by an encrypted insert.
  const Digest junk_digest = Sha256("junk");
  ASSERT_TRUE(CreateDirAll(env_, store_->PrefixDir(DigestPrefix(junk_digest))).ok());
  ASSERT_TRUE(WriteFileAtomic(env_, store_->ChunkPath(junk_digest), "CRN", false).ok());
  auto r = store_->InsertBlob(junk_digest, EncryptedBlob(RandomBytes(100, 1)), 100, nullptr,
                              ChunkDomain::kEncrypted);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, InsertResult::kInserted);
}

// Issue 17, item 3: a verified (plain or zstd) insert never defers to a file
// that proves nothing — an encrypted kind, or no blob at all — under its
// digest: it replaces it by temp, fsync, rename.
TEST_F(ChunkStoreTest, VerifiedInsertReplacesAnUnverifiableChunkFile) {
  for (bool compress : {true, false}) {
    const std::string data = TextLike(9000, compress ? 10 : 11);
    const Digest d = Sha256(data);
    // Planted: an encrypted-kind blob of the right length under d.
    ASSERT_TRUE(store_
                    ->InsertBlob(d, EncryptedBlob(RandomBytes(9000, 3)), 9000, nullptr,
                                 ChunkDomain::kEncrypted)
                    .ok());
    const std::string path = store_->ChunkPath(d);
    const ino_t planted = StatOrDie(path).st_ino;
    EXPECT_EQ(*CheckBlob(*store_->ReadBlob(d)), BlobKind::kEncrypted);

    DirtyFolders dirty;
    auto r = store_->InsertBlob(d, EncodeBlob(data, compress), data.size(), &dirty);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, InsertResult::kInserted);
    EXPECT_NE(StatOrDie(path).st_ino, planted);
    EXPECT_EQ(*store_->ReadChunk(d), data);
    EXPECT_TRUE(dirty.Take().test(DigestPrefix(d)));
    // Once verified, it is refreshed, not rewritten.
    const ino_t good = StatOrDie(path).st_ino;
    r = store_->InsertBlob(d, EncodeBlob(data, !compress), data.size(), nullptr);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, InsertResult::kExisted);
    EXPECT_EQ(StatOrDie(path).st_ino, good);
    EXPECT_EQ(ListPrefix(DigestPrefix(d)), std::vector<std::string>{d.ToHex()});
  }
  // A file that is not a blob at all (too short, unknown magic) is replaced
  // too; so is one planted by InsertData's local path.
  for (const std::string& junk : {std::string("CRN"), std::string(64, 'j')}) {
    const std::string data = TextLike(5000, static_cast<uint32_t>(junk.size()));
    const Digest d = Sha256(data);
    ASSERT_TRUE(CreateDirAll(env_, store_->PrefixDir(DigestPrefix(d))).ok());
    ASSERT_TRUE(WriteFileAtomic(env_, store_->ChunkPath(d), junk, false).ok());
    Digest got;
    auto r = store_->InsertData(data, &got, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(got, d);
    EXPECT_EQ(*r, InsertResult::kInserted);
    EXPECT_EQ(*store_->ReadChunk(d), data);
  }
}

TEST_F(ChunkStoreTest, ExistingChunkIsRefreshedNotRewritten) {
  const std::string data = TextLike(80000, 8);
  const Digest d = Sha256(data);
  ASSERT_TRUE(store_->InsertBlob(d, EncodeBlob(data, true), data.size(), nullptr).ok());
  const std::string path = store_->ChunkPath(d);
  SetOldMtime(path);
  const struct stat before = StatOrDie(path);

  // A valid upload in another encoding (plain) must not replace the file.
  const std::string plain = EncodeBlob(data, false);
  auto r = store_->InsertBlob(d, plain, data.size(), nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, InsertResult::kExisted);
  const struct stat after = StatOrDie(path);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_size, before.st_size);
  EXPECT_GT(after.st_mtim.tv_sec, before.st_mtim.tv_sec + 1000);
  EXPECT_EQ(*CheckBlob(*store_->ReadBlob(d)), BlobKind::kZstd);
  EXPECT_EQ(ListPrefix(DigestPrefix(d)), std::vector<std::string>{d.ToHex()});

  SetOldMtime(path);
  Digest d2;
  ASSERT_EQ(*store_->InsertData(data, &d2, nullptr), InsertResult::kExisted);
  EXPECT_GT(StatOrDie(path).st_mtim.tv_sec, 1000000000 + 1000);
  EXPECT_EQ(StatOrDie(path).st_ino, before.st_ino);
}

TEST_F(ChunkStoreTest, ConcurrentInsertsOfOneChunkLeaveOneFile) {
  constexpr int kThreads = 8;
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(round);
    const std::string data = RandomBytes(kChunkSize / 4, 100 + round);
    const std::string blob = EncodeBlob(data);
    const Digest d = Sha256(data);
    // Odd rounds also race on recreating the missing prefix folder.
    if (round % 2 == 0) MakePrefixDir(DigestPrefix(d));
    std::atomic<int> ready{0};
    std::atomic<int> inserted{0}, existed{0}, failed{0};
    DirtyFolders dirty;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) std::this_thread::yield();
        auto r = store_->InsertBlob(d, blob, data.size(), &dirty);
        if (!r.ok()) {
          failed++;
        } else if (*r == InsertResult::kInserted) {
          inserted++;
        } else {
          existed++;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(inserted.load(), 1);
    EXPECT_EQ(existed.load(), kThreads - 1);
    EXPECT_EQ(ListPrefix(DigestPrefix(d)), std::vector<std::string>{d.ToHex()});
    EXPECT_TRUE(*store_->ReadChunk(d) == data);
    EXPECT_TRUE(store_->SyncFolders(&dirty).ok());
  }
}

TEST_F(ChunkStoreTest, MarkBad) {
  const std::string data = RandomBytes(3000, 9);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  ASSERT_TRUE(store_->InsertBlob(d, blob, data.size(), nullptr).ok());
  ASSERT_TRUE(store_->MarkBad(d).ok());
  EXPECT_EQ(ListPrefix(DigestPrefix(d)), std::vector<std::string>{d.ToHex() + ".0.bad"});
  EXPECT_TRUE(store_->ReadChunk(d).status().IsNotFound());
  EXPECT_TRUE(store_->ReadBlob(d).status().IsNotFound());
  EXPECT_FALSE(*store_->Exists(d));
  EXPECT_TRUE(store_->MarkBad(d).IsNotFound());

  // Re-uploaded (heals the store), then found bad again.
  ASSERT_EQ(*store_->InsertBlob(d, blob, data.size(), nullptr), InsertResult::kInserted);
  EXPECT_TRUE(*store_->ReadChunk(d) == data);
  ASSERT_TRUE(store_->MarkBad(d).ok());
  EXPECT_EQ(ListPrefix(DigestPrefix(d)),
            (std::vector<std::string>{d.ToHex() + ".0.bad", d.ToHex() + ".1.bad"}));
  EXPECT_TRUE(store_->ReadChunk(d).status().IsNotFound());
  CleanPrefix(DigestPrefix(d));
}

TEST_F(ChunkStoreTest, ReadChunkDetectsCorruptionOnDisk) {
  const std::string data = TextLike(60000, 10);
  const Digest d = Sha256(data);
  const std::string path = store_->ChunkPath(d);
  const std::string blob = EncodeBlob(data);
  MakePrefixDir(DigestPrefix(d));

  auto overwrite = [&](std::string_view content) {
    ASSERT_TRUE(RemoveAll(env_, path).ok());
    ASSERT_TRUE(WriteFileAtomic(env_, path, content, false).ok());
  };
  std::string flipped = blob;
  flipped[blob.size() / 2] ^= 0x01;
  overwrite(flipped);
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  overwrite(blob.substr(0, blob.size() - 10));
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  overwrite("");
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  // A well-formed blob of other data: CRC fine, digest wrong.
  overwrite(EncodeBlob(TextLike(60000, 11)));
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  overwrite(EncodeBlob(RandomBytes(60000, 11)));  // plain kind
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  overwrite(blob);
  EXPECT_TRUE(store_->ReadChunk(d).ok());
  CleanPrefix(DigestPrefix(d));
}

TEST_F(ChunkStoreTest, ForEachAndStats) {
  // The shared store holds other tests' chunks too: count the difference.
  auto stats_before = store_->Stats();
  ASSERT_TRUE(stats_before.ok());

  std::map<Digest, uint64_t> want;
  for (uint32_t i = 0; i < 20; ++i) {
    const std::string data = i % 2 ? TextLike(10000 + i, 1000 + i) : RandomBytes(10000 + i, i);
    Digest d;
    ASSERT_EQ(*store_->InsertData(data, &d, nullptr), InsertResult::kInserted);
    want[d] = store_->ReadBlob(d)->size();
  }
  const Digest bad = want.begin()->first;
  want.erase(bad);
  ASSERT_TRUE(store_->MarkBad(bad).ok());
  // Leftovers that are not chunks: a temp file, junk names, a folder whose
  // name looks like a digest.
  const Digest some = want.begin()->first;
  const std::string dir = store_->PrefixDir(DigestPrefix(some));
  MakePrefixDir(DigestPrefix(some));
  ASSERT_TRUE(WriteFileAtomic(env_, TempName(store_->ChunkPath(some)), "partial", false).ok());
  ASSERT_TRUE(WriteFileAtomic(env_, JoinPath(dir, "README"), "x", false).ok());
  ASSERT_TRUE(
      WriteFileAtomic(env_, JoinPath(dir, std::string(64, 'A')), "upper-case hex", false).ok());
  ASSERT_TRUE(env_->CreateDir(JoinPath(dir, std::string(64, 'b'))).ok());

  std::map<Digest, uint64_t> seen;
  ASSERT_TRUE(store_
                  ->ForEach([&](const Digest& d, const FileInfo& info) {
                    EXPECT_FALSE(seen.count(d));
                    seen[d] = info.size;
                    EXPECT_GT(info.mtime_ns, 0);
                    return Status::OK();
                  })
                  .ok());
  EXPECT_EQ(seen.size(), stats_before->chunks + want.size());
  for (auto& [d, size] : want) {
    ASSERT_TRUE(seen.count(d)) << d.ToHex();
    EXPECT_EQ(seen[d], size);
  }
  EXPECT_FALSE(seen.count(bad));
  EXPECT_FALSE(seen.count(*Digest::FromHex(std::string(64, 'b'))));

  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks, stats_before->chunks + want.size());
  uint64_t bytes = 0;
  for (auto& [d, size] : want) bytes += size;
  EXPECT_EQ(stats->bytes, stats_before->bytes + bytes);
  EXPECT_EQ(stats->bad, stats_before->bad + 1);

  // The first error from the callback stops the walk and is returned.
  int calls = 0;
  Status s = store_->ForEach([&](const Digest&, const FileInfo&) {
    ++calls;
    return Status::Conflict("stop");
  });
  EXPECT_TRUE(s.IsConflict());
  EXPECT_EQ(calls, 1);

  ASSERT_TRUE(env_->RemoveDir(JoinPath(dir, std::string(64, 'b'))).ok());
  for (auto& [d, size] : want) CleanPrefix(DigestPrefix(d));
  CleanPrefix(DigestPrefix(bad));
}

TEST_F(ChunkStoreTest, RecreatesMissingPrefixFolder) {
  const std::string data = RandomBytes(1000, 12);
  const Digest d = Sha256(data);
  ASSERT_TRUE(RemoveAll(env_, store_->PrefixDir(DigestPrefix(d))).ok());
  auto r = store_->InsertBlob(d, EncodeBlob(data), data.size(), nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(*store_->ReadChunk(d) == data);
}

TEST_F(ChunkStoreTest, ExistingButUnsyncedChunkJoinsTheSessionsDirtySet) {
  const std::string data = RandomBytes(2000, 13);
  const Digest d = Sha256(data);
  const uint16_t p = DigestPrefix(d);
  const std::string blob = EncodeBlob(data);
  DirtyFolders a, b, c;
  ASSERT_EQ(*store_->InsertBlob(d, blob, data.size(), &a), InsertResult::kInserted);
  // Session b finds it, but a has not fsynced the folder yet: b must.
  ASSERT_EQ(*store_->InsertBlob(d, blob, data.size(), &b), InsertResult::kExisted);
  EXPECT_TRUE(b.Take().test(p));
  ASSERT_TRUE(store_->SyncFolders(&a).ok());
  ASSERT_EQ(*store_->InsertBlob(d, blob, data.size(), &c), InsertResult::kExisted);
  EXPECT_FALSE(c.Take().test(p));

  // A new Open knows nothing: the first finder syncs once.
  auto reopened = ChunkStore::Open(env_, root_);
  ASSERT_TRUE(reopened.ok());
  Digest d2;
  ASSERT_EQ(*(*reopened)->InsertData(data, &d2, &c), InsertResult::kExisted);
  EXPECT_TRUE(c.Take().test(p));
  ASSERT_TRUE(store_->SyncFolders(&b).ok());  // nothing; b was taken
  c.Add(p);
  ASSERT_TRUE((*reopened)->SyncFolders(&c).ok());
  ASSERT_EQ(*(*reopened)->InsertData(data, &d2, &c), InsertResult::kExisted);
  EXPECT_FALSE(c.Take().test(p));
  CleanPrefix(p);
}

TEST_F(ChunkStoreTest, SyncFoldersKeepsUnsyncedOnFailure) {
  FaultInjectionEnv fenv(env_);
  auto store = ChunkStore::Open(&fenv, root_);
  ASSERT_TRUE(store.ok());
  for (uint16_t p : {1, 2, 3}) MakePrefixDir(p);
  DirtyFolders dirty;
  dirty.Add(1);
  dirty.Add(2);
  dirty.Add(3);
  fenv.FailNth(FaultInjectionEnv::Op::kSyncDir, 2);
  EXPECT_TRUE((*store)->SyncFolders(&dirty).IsIOError());
  auto left = dirty.Take();
  EXPECT_FALSE(left.test(1));
  EXPECT_TRUE(left.test(2));
  EXPECT_TRUE(left.test(3));
  EXPECT_EQ(left.count(), 2u);
}

TEST_F(ChunkStoreTest, FailedWriteLeavesNothing) {
  FaultInjectionEnv fenv(env_);
  auto store = ChunkStore::Open(&fenv, root_);
  ASSERT_TRUE(store.ok());
  const std::string data = RandomBytes(4000, 14);
  const Digest d = Sha256(data);
  MakePrefixDir(DigestPrefix(d));
  for (auto op : {FaultInjectionEnv::Op::kAppend, FaultInjectionEnv::Op::kSync,
                  FaultInjectionEnv::Op::kClose, FaultInjectionEnv::Op::kRename}) {
    fenv.FailNth(op, 1);
    EXPECT_TRUE(
        (*store)->InsertBlob(d, EncodeBlob(data), data.size(), nullptr).status().IsIOError());
    EXPECT_TRUE(ListPrefix(DigestPrefix(d)).empty()) << static_cast<int>(op);
  }
  fenv.ClearFaults();
  ASSERT_TRUE((*store)->InsertBlob(d, EncodeBlob(data), data.size(), nullptr).ok());
  CleanPrefix(DigestPrefix(d));
}

TEST_F(ChunkStoreTest, RefreshWaitsForThePrefixLock) {
  const std::string data = RandomBytes(1000, 15);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  ASSERT_TRUE(store_->InsertBlob(d, blob, data.size(), nullptr).ok());
  SetOldMtime(store_->ChunkPath(d));
  std::future<Result<InsertResult>> insert;
  {
    MutexLock lock(store_->PrefixMutex(DigestPrefix(d)));
    insert = std::async(std::launch::async,
                        [&] { return store_->InsertBlob(d, blob, data.size(), nullptr); });
    // While GC holds the stripe, the refresh cannot happen.
    EXPECT_EQ(insert.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
    EXPECT_EQ(StatOrDie(store_->ChunkPath(d)).st_mtim.tv_sec, 1000000000);
  }
  auto r = insert.get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, InsertResult::kExisted);
  EXPECT_GT(StatOrDie(store_->ChunkPath(d)).st_mtim.tv_sec, 1000000000);
  CleanPrefix(DigestPrefix(d));
}

// --- Crash injection: crash at every step K, lose what was not synced,
// reopen; the chunk is absent or whole, never corrupt under its name. ---

class ChunkStoreCrashTest : public ChunkStoreTest {
 protected:
  enum class Outcome { kAbsent, kValid };

  // Runs `procedure` against a store on a FaultInjectionEnv crashed after
  // every K in turn, then checks the chunk after the power loss. Returns the
  // outcome per K (the last one is the run without a crash).
  std::vector<Outcome> CrashLoop(const Digest& d, const std::string& data,
                                 const std::function<void()>& prepare,
                                 const std::function<void(ChunkStore*)>& procedure,
                                 ChunkStoreOptions options = {}) {
    FaultInjectionEnv fenv(env_);
    const uint16_t p = DigestPrefix(d);
    // A crash ends the process: every run starts with a fresh store, like
    // a restarted server.
    auto run = [&] {
      auto opened = ChunkStore::Open(&fenv, root_, options);
      ASSERT_TRUE(opened.ok());
      procedure(opened->get());
    };

    MakePrefixDir(p);
    CleanPrefix(p);
    prepare();
    fenv.ResetState();
    run();
    const int64_t total = fenv.mutating_ops();
    EXPECT_GT(total, 0);

    std::vector<Outcome> outcomes;
    for (int64_t k = 0; k <= total; ++k) {
      SCOPED_TRACE("crash after op " + std::to_string(k) + " of " + std::to_string(total));
      CleanPrefix(p);
      prepare();
      fenv.ResetState();
      fenv.CrashAfter(k);
      run();
      std::vector<std::string> log = fenv.op_log();
      EXPECT_EQ(fenv.crashed(), k < total);
      EXPECT_TRUE(fenv.DropUnsyncedData().ok());

      auto reopened = ChunkStore::Open(env_, root_);
      EXPECT_TRUE(reopened.ok());
      if (!reopened.ok()) return outcomes;
      auto chunk = (*reopened)->ReadChunk(d);
      if (chunk.ok()) {
        EXPECT_TRUE(*chunk == data);
        outcomes.push_back(Outcome::kValid);
      } else {
        EXPECT_TRUE(chunk.status().IsNotFound()) << chunk.status().ToString();
        outcomes.push_back(Outcome::kAbsent);
        if (!chunk.status().IsNotFound()) {
          for (const auto& line : log) ADD_FAILURE() << "  op: " << line;
        }
      }
      // Whatever is left in the folder is the chunk or unnamed debris.
      for (const auto& name : ListPrefix(p)) {
        EXPECT_TRUE(name == d.ToHex() || name.find(".tmp.") != std::string::npos ||
                    name.ends_with(".bad"))
            << name;
      }
    }
    CleanPrefix(p);
    return outcomes;
  }
};

TEST_F(ChunkStoreCrashTest, InsertWithoutFolderSync) {
  const std::string data = TextLike(200000, 20);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  auto outcomes = CrashLoop(
      d, data, [] {}, [&](ChunkStore* s) { (void)s->InsertBlob(d, blob, data.size(), nullptr); });
  ASSERT_FALSE(outcomes.empty());
  // Without the session's folder fsync even a finished insert may vanish.
  for (auto o : outcomes) EXPECT_EQ(o, Outcome::kAbsent);
}

TEST_F(ChunkStoreCrashTest, InsertThenSyncFolders) {
  const std::string data = RandomBytes(200000, 21);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  auto outcomes = CrashLoop(
      d, data, [] {},
      [&](ChunkStore* s) {
        DirtyFolders dirty;
        if (s->InsertBlob(d, blob, data.size(), &dirty).ok()) (void)s->SyncFolders(&dirty);
      });
  ASSERT_FALSE(outcomes.empty());
  EXPECT_EQ(outcomes.back(), Outcome::kValid);  // finished: durable
  EXPECT_EQ(outcomes.front(), Outcome::kAbsent);
  // Once valid, valid for every later crash point.
  EXPECT_TRUE(std::is_sorted(outcomes.begin(), outcomes.end()));
}

TEST_F(ChunkStoreCrashTest, InsertDataThenSyncFolders) {
  const std::string data = TextLike(150000, 22);
  const Digest d = Sha256(data);
  auto outcomes = CrashLoop(
      d, data, [] {},
      [&](ChunkStore* s) {
        DirtyFolders dirty;
        Digest got;
        if (s->InsertData(data, &got, &dirty).ok()) (void)s->SyncFolders(&dirty);
      });
  ASSERT_FALSE(outcomes.empty());
  EXPECT_EQ(outcomes.back(), Outcome::kValid);
}

TEST_F(ChunkStoreCrashTest, ReinsertOfExistingChunkNeverLosesIt) {
  const std::string data = TextLike(100000, 23);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  auto outcomes = CrashLoop(
      d, data,
      [&] {
        // A durable chunk written before this process.
        ASSERT_TRUE(WriteFileAtomic(env_, store_->ChunkPath(d), blob, true).ok());
      },
      [&](ChunkStore* s) {
        DirtyFolders dirty;
        if (s->InsertBlob(d, blob, data.size(), &dirty).ok()) (void)s->SyncFolders(&dirty);
      });
  ASSERT_FALSE(outcomes.empty());
  for (auto o : outcomes) EXPECT_EQ(o, Outcome::kValid);
}

TEST_F(ChunkStoreCrashTest, MarkBadIsAtomic) {
  const std::string data = RandomBytes(100000, 24);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  auto outcomes = CrashLoop(
      d, data, [&] { ASSERT_TRUE(WriteFileAtomic(env_, store_->ChunkPath(d), blob, true).ok()); },
      [&](ChunkStore* s) { (void)s->MarkBad(d); });
  ASSERT_FALSE(outcomes.empty());
  EXPECT_EQ(outcomes.front(), Outcome::kValid);
  EXPECT_EQ(outcomes.back(), Outcome::kAbsent);  // renamed aside durably
}

// The harness can fail: without the fsync of the chunk data (a benchmark-only
// option), a crash after the folder fsync leaves a corrupt chunk under its
// good name, and the model shows it.
TEST_F(ChunkStoreCrashTest, WithoutFileSyncTheModelCatchesCorruption) {
  const std::string data = RandomBytes(50000, 25);
  const Digest d = Sha256(data);
  const std::string blob = EncodeBlob(data);
  FaultInjectionEnv fenv(env_);
  ChunkStoreOptions options;
  options.sync = false;
  auto store = ChunkStore::Open(&fenv, root_, options);
  ASSERT_TRUE(store.ok());
  MakePrefixDir(DigestPrefix(d));
  fenv.ResetState();
  DirtyFolders dirty;
  ASSERT_TRUE((*store)->InsertBlob(d, blob, data.size(), &dirty).ok());
  ASSERT_TRUE((*store)->SyncFolders(&dirty).ok());
  ASSERT_TRUE(fenv.DropUnsyncedData().ok());
  EXPECT_TRUE(store_->ReadChunk(d).status().IsCorruption());
  CleanPrefix(DigestPrefix(d));
}

}  // namespace
}  // namespace cairn::storage
