#include "storage/fixed_index.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "storage/crc32c.h"

namespace cairn::storage {
namespace {

constexpr uint64_t kSmallChunk = 4096;

Digest DigestOf(uint64_t i) { return Sha256("chunk " + std::to_string(i)); }

uint64_t GetLE64(const std::string& s, size_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(s[off + static_cast<size_t>(i)]);
  return v;
}
uint32_t GetLE32(const std::string& s, size_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(s[off + static_cast<size_t>(i)]);
  return v;
}
void PutLE64(std::string* s, size_t off, uint64_t v) {
  for (size_t i = 0; i < 8; ++i) (*s)[off + i] = static_cast<char>(v >> (8 * i));
}
void PutLE32(std::string* s, size_t off, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) (*s)[off + i] = static_cast<char>(v >> (8 * i));
}
// Recomputes the header CRC so a test reaches the checks behind it.
void Reseal(std::string* s) { PutLE32(s, 124, Crc32c(std::string_view(s->data(), 124))); }

std::string Build(uint64_t image_size, uint64_t chunk_size, int64_t ctime = 1795283438) {
  FixedIndexWriter w(image_size, chunk_size);
  EXPECT_TRUE(w.status().ok());
  for (uint64_t i = 0; i < w.chunk_count(); ++i) EXPECT_TRUE(w.Set(i, DigestOf(i)).ok());
  auto bytes = w.Finish(ctime);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? *bytes : std::string();
}

TEST(FixedIndexTest, Geometry) {
  EXPECT_TRUE(ValidateFixedIndexGeometry(0, kChunkSize).ok());
  EXPECT_TRUE(ValidateFixedIndexGeometry(1, 1).ok());
  EXPECT_TRUE(ValidateFixedIndexGeometry(uint64_t{8} << 40, kChunkSize).ok());  // 8 TiB
  EXPECT_TRUE(ValidateFixedIndexGeometry((uint64_t{8} << 40) + 1, kChunkSize).IsInvalidArgument());
  EXPECT_EQ(kMaxFixedIndexFileSize, (uint64_t{64} << 20) + kFixedIndexHeaderSize);
  EXPECT_TRUE(ValidateFixedIndexGeometry(1, 0).IsInvalidArgument());
  EXPECT_TRUE(ValidateFixedIndexGeometry(1, 3).IsInvalidArgument());
  EXPECT_TRUE(ValidateFixedIndexGeometry(1, kChunkSize + 1).IsInvalidArgument());
  EXPECT_TRUE(ValidateFixedIndexGeometry(1, 16 << 20).ok());
  EXPECT_TRUE(ValidateFixedIndexGeometry(1, 32 << 20).IsInvalidArgument());
  EXPECT_TRUE(ValidateFixedIndexGeometry(~uint64_t{0}, 16 << 20).IsInvalidArgument());
  EXPECT_EQ(FixedIndexChunkCount(0, 4096), 0u);
  EXPECT_EQ(FixedIndexChunkCount(1, 4096), 1u);
  EXPECT_EQ(FixedIndexChunkCount(4096, 4096), 1u);
  EXPECT_EQ(FixedIndexChunkCount(4097, 4096), 2u);
  EXPECT_EQ(FixedIndexChunkCount(~uint64_t{0}, uint64_t{1} << 23), uint64_t{1} << 41);
}

TEST(FixedIndexTest, RoundTrip) {
  struct Case {
    uint64_t image_size;
    uint64_t chunk_size;
    uint64_t chunks;
    uint64_t last_length;
  };
  for (const Case& c :
       {Case{10 * kSmallChunk, kSmallChunk, 10, kSmallChunk},
        Case{3 * kSmallChunk + 100, kSmallChunk, 4, 100}, Case{1, kSmallChunk, 1, 1},
        Case{10 * 1024 * 1024, kChunkSize, 3, 2 * 1024 * 1024}, Case{0, kChunkSize, 0, 0}}) {
    std::string bytes = Build(c.image_size, c.chunk_size, -5);
    ASSERT_EQ(bytes.size(), kFixedIndexHeaderSize + kDigestSize * c.chunks);
    auto index = FixedIndex::Parse(bytes);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    EXPECT_EQ(index->image_size(), c.image_size);
    EXPECT_EQ(index->chunk_size(), c.chunk_size);
    ASSERT_EQ(index->chunk_count(), c.chunks);
    EXPECT_EQ(index->ctime(), -5);
    std::string list;
    uint64_t total = 0;
    for (uint64_t i = 0; i < c.chunks; ++i) {
      EXPECT_EQ(index->digest(i), DigestOf(i));
      list.append(reinterpret_cast<const char*>(DigestOf(i).bytes.data()), kDigestSize);
      total += index->ChunkLength(i);
    }
    EXPECT_EQ(total, c.image_size);
    if (c.chunks > 0) {
      EXPECT_EQ(index->ChunkLength(c.chunks - 1), c.last_length);
    }
    EXPECT_EQ(index->checksum(), Sha256(list));
    EXPECT_EQ(index->bytes(), bytes);
  }
}

TEST(FixedIndexTest, HeaderLayout) {
  std::string bytes = Build(3 * kSmallChunk + 100, kSmallChunk, 1795283438);
  EXPECT_EQ(bytes.substr(0, 8), "CRNFIDX1");
  EXPECT_EQ(GetLE32(bytes, 8), 1u);
  EXPECT_EQ(GetLE32(bytes, 12), 128u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[16 + 6]) >> 4, 4);       // uuid version 4
  EXPECT_EQ(static_cast<uint8_t>(bytes[16 + 8]) & 0xc0, 0x80);  // RFC 4122 variant
  EXPECT_EQ(GetLE64(bytes, 32), 1795283438u);
  EXPECT_EQ(GetLE64(bytes, 40), 3 * kSmallChunk + 100);
  EXPECT_EQ(GetLE64(bytes, 48), kSmallChunk);
  EXPECT_EQ(bytes.substr(56, 32),
            std::string(reinterpret_cast<const char*>(Sha256(bytes.substr(128)).bytes.data()), 32));
  EXPECT_EQ(bytes.substr(88, 36), std::string(36, '\0'));
  EXPECT_EQ(GetLE32(bytes, 124), Crc32c(bytes.substr(0, 124)));
  EXPECT_EQ(bytes.substr(128, 32),
            std::string(reinterpret_cast<const char*>(DigestOf(0).bytes.data()), 32));

  // A fresh uuid every time.
  std::string again = Build(3 * kSmallChunk + 100, kSmallChunk, 1795283438);
  EXPECT_NE(bytes.substr(16, 16), again.substr(16, 16));
  EXPECT_EQ(bytes.substr(128), again.substr(128));
}

TEST(FixedIndexTest, EmptyImage) {
  std::string bytes = Build(0, kChunkSize);
  ASSERT_EQ(bytes.size(), kFixedIndexHeaderSize);
  auto index = FixedIndex::Parse(bytes);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index->chunk_count(), 0u);
  EXPECT_EQ(index->checksum(), Sha256(""));
  FixedIndexWriter w(0);
  EXPECT_TRUE(w.Complete());
  EXPECT_TRUE(w.Set(0, DigestOf(0)).IsInvalidArgument());
}

TEST(FixedIndexTest, OutOfOrderSetAndOverwrite) {
  const uint64_t n = 64;
  std::vector<uint64_t> order(n);
  for (uint64_t i = 0; i < n; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  FixedIndexWriter w(n * kSmallChunk - 1, kSmallChunk);
  ASSERT_EQ(w.chunk_count(), n);
  EXPECT_EQ(w.ChunkLength(n - 1), kSmallChunk - 1);
  // Wrong digests first, in another order, then the right ones: last wins.
  for (uint64_t i = 0; i < n; ++i) ASSERT_TRUE(w.Set(i, Sha256("wrong")).ok());
  EXPECT_TRUE(w.Complete());
  for (uint64_t i : order) ASSERT_TRUE(w.Set(i, DigestOf(i)).ok());
  EXPECT_TRUE(w.Complete());
  auto bytes = w.Finish(0);
  ASSERT_TRUE(bytes.ok());
  auto index = FixedIndex::Parse(*bytes);
  ASSERT_TRUE(index.ok());
  for (uint64_t i = 0; i < n; ++i) EXPECT_EQ(index->digest(i), DigestOf(i)) << i;
}

TEST(FixedIndexTest, OutOfRangeAndIncomplete) {
  FixedIndexWriter w(4 * kSmallChunk, kSmallChunk);
  EXPECT_TRUE(w.Set(4, DigestOf(4)).IsInvalidArgument());
  EXPECT_TRUE(w.Set(~uint64_t{0}, DigestOf(4)).IsInvalidArgument());
  EXPECT_FALSE(w.Complete());
  EXPECT_TRUE(w.Finish(0).status().IsInvalidArgument());
  ASSERT_TRUE(w.Set(0, DigestOf(0)).ok());
  ASSERT_TRUE(w.Set(1, DigestOf(1)).ok());
  ASSERT_TRUE(w.Set(3, DigestOf(3)).ok());
  EXPECT_FALSE(w.Complete());
  Status s = w.Finish(0).status();
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("first 2"), std::string::npos) << s.ToString();
  ASSERT_TRUE(w.Set(2, DigestOf(2)).ok());
  EXPECT_TRUE(w.Complete());
  EXPECT_TRUE(w.Finish(0).ok());
}

TEST(FixedIndexTest, InvalidGeometryWriter) {
  for (auto [image, chunk] : {std::pair<uint64_t, uint64_t>{100, 0},
                              {100, 3},
                              {100, 32 << 20},
                              {~uint64_t{0}, kChunkSize}}) {
    FixedIndexWriter w(image, chunk);
    EXPECT_TRUE(w.status().IsInvalidArgument());
    EXPECT_EQ(w.chunk_count(), 0u);
    EXPECT_FALSE(w.Complete());
    EXPECT_TRUE(w.Set(0, DigestOf(0)).IsInvalidArgument());
    EXPECT_TRUE(w.Finish(0).status().IsInvalidArgument());
  }
}

TEST(FixedIndexTest, IncrementalFromPrevious) {
  const uint64_t image = 5 * kSmallChunk + 7;
  auto prev = FixedIndex::Parse(Build(image, kSmallChunk, 100));
  ASSERT_TRUE(prev.ok());

  FixedIndexWriter w(image, kSmallChunk);
  ASSERT_TRUE(w.CopyFrom(*prev).ok());
  EXPECT_TRUE(w.Complete());
  ASSERT_TRUE(w.Set(2, Sha256("changed 2")).ok());
  ASSERT_TRUE(w.Set(5, Sha256("changed 5")).ok());
  auto bytes = w.Finish(200);
  ASSERT_TRUE(bytes.ok());
  auto next = FixedIndex::Parse(*bytes);
  ASSERT_TRUE(next.ok());
  for (uint64_t i : {0, 1, 3, 4}) EXPECT_EQ(next->digest(i), DigestOf(i));
  EXPECT_EQ(next->digest(2), Sha256("changed 2"));
  EXPECT_EQ(next->digest(5), Sha256("changed 5"));
  EXPECT_NE(next->checksum(), prev->checksum());
  EXPECT_NE(next->uuid(), prev->uuid());

  FixedIndexWriter resized(image + kSmallChunk, kSmallChunk);
  EXPECT_TRUE(resized.CopyFrom(*prev).IsInvalidArgument());
  EXPECT_FALSE(resized.Complete());
  FixedIndexWriter other_chunk(image, 2 * kSmallChunk);
  EXPECT_TRUE(other_chunk.CopyFrom(*prev).IsInvalidArgument());
}

TEST(FixedIndexTest, EveryHeaderByteFlipIsCorruption) {
  std::string good = Build(3 * kSmallChunk + 100, kSmallChunk);
  ASSERT_TRUE(FixedIndex::Parse(good).ok());
  for (size_t pos = 0; pos < kFixedIndexHeaderSize; ++pos) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string bad = good;
      bad[pos] = static_cast<char>(bad[pos] ^ mask);
      Status s = FixedIndex::Parse(bad).status();
      ASSERT_TRUE(s.IsCorruption())
          << "byte " << pos << " mask " << int{mask} << ": " << s.ToString();
    }
  }
}

TEST(FixedIndexTest, EveryDigestListByteFlipIsCorruption) {
  std::string good = Build(3 * kSmallChunk + 100, kSmallChunk);
  for (size_t pos = kFixedIndexHeaderSize; pos < good.size(); ++pos) {
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
    ASSERT_TRUE(FixedIndex::Parse(bad).status().IsCorruption()) << pos;
  }
}

TEST(FixedIndexTest, EveryTruncationAndAnyAppendIsCorruption) {
  for (uint64_t image : {uint64_t{0}, 3 * kSmallChunk + 100}) {
    std::string good = Build(image, kSmallChunk);
    for (size_t n = 0; n < good.size(); ++n) {
      ASSERT_TRUE(FixedIndex::Parse(good.substr(0, n)).status().IsCorruption()) << n;
    }
    EXPECT_TRUE(FixedIndex::Parse(good + '\0').status().IsCorruption());
    EXPECT_TRUE(FixedIndex::Parse(good + "x").status().IsCorruption());
    EXPECT_TRUE(FixedIndex::Parse(good + std::string(32, '\0')).status().IsCorruption());
  }
}

TEST(FixedIndexTest, ResealedBadFieldsAreCorruption) {
  // With a correct CRC, the checks behind it must still hold on their own.
  const std::string good = Build(3 * kSmallChunk + 100, kSmallChunk);
  struct Edit {
    const char* what;
    void (*apply)(std::string*);
  };
  const Edit edits[] = {
      {"version 2", [](std::string* s) { PutLE32(s, 8, 2); }},
      {"version 0", [](std::string* s) { PutLE32(s, 8, 0); }},
      {"header size 64", [](std::string* s) { PutLE32(s, 12, 64); }},
      {"header size 256", [](std::string* s) { PutLE32(s, 12, 256); }},
      {"chunk size 0", [](std::string* s) { PutLE64(s, 48, 0); }},
      {"chunk size 3", [](std::string* s) { PutLE64(s, 48, 3); }},
      {"chunk size 4097", [](std::string* s) { PutLE64(s, 48, 4097); }},
      {"chunk size 32 MiB", [](std::string* s) { PutLE64(s, 48, 32 << 20); }},
      {"chunk size 2^63", [](std::string* s) { PutLE64(s, 48, uint64_t{1} << 63); }},
      {"chunk size doubled", [](std::string* s) { PutLE64(s, 48, 2 * 4096); }},
      {"image one chunk more", [](std::string* s) { PutLE64(s, 40, 4 * 4096 + 100); }},
      {"image one chunk less", [](std::string* s) { PutLE64(s, 40, 2 * 4096 + 100); }},
      {"image huge", [](std::string* s) { PutLE64(s, 40, ~uint64_t{0}); }},
      {"image 2^24+1 chunks",
       [](std::string* s) { PutLE64(s, 40, ((uint64_t{1} << 24) + 1) * 4096); }},
      {"reserved byte", [](std::string* s) { (*s)[100] = 1; }},
      {"last reserved byte", [](std::string* s) { (*s)[123] = 1; }},
      {"checksum", [](std::string* s) { (*s)[60] ^= 1; }},
  };
  for (const Edit& e : edits) {
    std::string bad = good;
    e.apply(&bad);
    Reseal(&bad);
    Status s = FixedIndex::Parse(bad).status();
    EXPECT_TRUE(s.IsCorruption()) << e.what << ": " << s.ToString();
  }
  // Same size within the last chunk is still a valid index, just another image.
  std::string same_count = good;
  PutLE64(&same_count, 40, 3 * 4096 + 1);
  Reseal(&same_count);
  auto idx = FixedIndex::Parse(same_count);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->ChunkLength(3), 1u);
  // Fields not otherwise checked are taken as they are.
  std::string other_time = good;
  PutLE64(&other_time, 32, 0);
  Reseal(&other_time);
  ASSERT_TRUE(FixedIndex::Parse(other_time).ok());
}

class FixedIndexFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "cairn_fidx_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { EXPECT_TRUE(RemoveAll(Env::Default(), dir_).ok()); }
  std::string dir_;
};

TEST_F(FixedIndexFileTest, ReadFromEnv) {
  Env* env = Env::Default();
  std::string path = JoinPath(dir_, "drive0.fidx");
  EXPECT_TRUE(FixedIndex::Read(env, path).status().IsNotFound());

  std::string bytes = Build(7 * kSmallChunk + 1, kSmallChunk);
  ASSERT_TRUE(WriteFileAtomic(env, path, bytes, true).ok());
  auto index = FixedIndex::Read(env, path);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index->chunk_count(), 8u);
  EXPECT_EQ(index->bytes(), bytes);

  ASSERT_TRUE(WriteFileAtomic(env, path, bytes.substr(0, bytes.size() - 1), true).ok());
  Status s = FixedIndex::Read(env, path).status();
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace cairn::storage
