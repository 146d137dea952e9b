#include "storage/crypt_config.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/blob.h"
#include "storage/crc32c.h"
#include "storage/digest.h"

namespace cairn::storage {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string TextLike(size_t n) {
  std::string s;
  while (s.size() < n) s += "the quick brown fox jumps over the lazy dog 0123456789\n";
  s.resize(n);
  return s;
}

// A fixed test key: bytes 0, 1, …, 31.
std::string TestKey() {
  std::string k(kEncryptionKeySize, '\0');
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<char>(i);
  return k;
}

CryptConfig Config(const std::string& key) {
  auto c = CryptConfig::FromKey(key);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *c;
}

// HMAC-SHA256 computed here with OpenSSL's one-shot HMAC(), independently of
// the code under test.
std::string ReferenceHmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

Digest AsDigest(const std::string& bytes) {
  Digest d;
  EXPECT_EQ(bytes.size(), kDigestSize);
  std::copy(bytes.begin(), bytes.end(), d.bytes.begin());
  return d;
}

// Recomputes the CRC32C of a blob (FORMAT.md "Blob": LE32 at offset 8 over
// everything from offset 12), so a test can reach the decryptor with a
// deliberately damaged blob.
std::string Reseal(std::string blob) {
  uint32_t crc = Crc32c(std::string_view(blob).substr(kBlobHeaderSize));
  for (int i = 0; i < 4; ++i) blob[kBlobMagicSize + i] = static_cast<char>(crc >> (8 * i));
  return blob;
}

Status Decrypt(const CryptConfig& c, std::string_view blob, std::string* out) {
  auto view = ParseBlob(blob);
  if (!view.ok()) return view.status();
  return c.DecryptBlob(*view, out);
}

TEST(CryptConfigTest, KeyMustBe32Bytes) {
  EXPECT_TRUE(CryptConfig::FromKey("").status().IsInvalidArgument());
  EXPECT_TRUE(CryptConfig::FromKey(std::string(31, 'k')).status().IsInvalidArgument());
  EXPECT_TRUE(CryptConfig::FromKey(std::string(33, 'k')).status().IsInvalidArgument());
  EXPECT_TRUE(CryptConfig::FromKey(std::string(32, 'k')).ok());
}

TEST(CryptConfigTest, FingerprintIsStableAndComputedAsDocumented) {
  const std::string key = TestKey();
  std::string mac = ReferenceHmac(key, "cairn key fingerprint v1");
  std::string expected;
  for (int i = 0; i < 8; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(mac[i]));
    if (i > 0) expected += ':';
    expected += buf;
  }
  CryptConfig c = Config(key);
  EXPECT_EQ(c.fingerprint(), expected);
  EXPECT_EQ(c.fingerprint().size(), 23u);
  EXPECT_EQ(Config(key).fingerprint(), c.fingerprint());
  EXPECT_NE(Config(RandomBytes(32, 1)).fingerprint(), c.fingerprint());
}

TEST(CryptConfigTest, DerivedKeysAreAsDocumented) {
  const std::string key = TestKey();
  CryptConfig c = Config(key);
  const std::string data = "some chunk data";
  const std::string id_key = ReferenceHmac(key, "cairn chunk digest v1");
  EXPECT_EQ(c.ChunkDigest(data), AsDigest(ReferenceHmac(id_key, data)));
  const std::string sign_key = ReferenceHmac(key, "cairn manifest signature v1");
  EXPECT_EQ(c.Sign("manifest text"), AsDigest(ReferenceHmac(sign_key, "manifest text")));
  EXPECT_NE(c.Sign(data), c.ChunkDigest(data));
}

TEST(CryptConfigTest, ChunkDigestDependsOnTheKey) {
  CryptConfig a = Config(TestKey());
  CryptConfig b = Config(RandomBytes(32, 2));
  const std::string data = TextLike(10000);
  EXPECT_NE(a.ChunkDigest(data), b.ChunkDigest(data));
  EXPECT_NE(a.ChunkDigest(data), Sha256(data));
  EXPECT_EQ(a.ChunkDigest(data), Config(TestKey()).ChunkDigest(data));
  EXPECT_NE(a.ChunkDigest(data), a.ChunkDigest(data + "x"));
}

TEST(CryptConfigTest, ZeroChunkDigestIsTheDigestOfZeros) {
  CryptConfig c = Config(TestKey());
  EXPECT_EQ(c.ZeroChunkDigest(), c.ChunkDigest(std::string(kChunkSize, '\0')));
  EXPECT_EQ(c.ZeroChunkDigest(kChunkSize), c.ChunkDigest(std::string(kChunkSize, '\0')));
  for (size_t n : {size_t{0}, size_t{1}, size_t{65536}, size_t{65537}, size_t{1000000}}) {
    EXPECT_EQ(c.ZeroChunkDigest(n), c.ChunkDigest(std::string(n, '\0'))) << n;
  }
  EXPECT_NE(c.ZeroChunkDigest(), ZeroChunkDigest());  // not the plain SHA-256 one
  EXPECT_NE(c.ZeroChunkDigest(), Config(RandomBytes(32, 3)).ZeroChunkDigest());
}

struct Payload {
  const char* name;
  std::string data;
  bool compressible;
};

TEST(CryptConfigTest, RoundTripAndKinds) {
  CryptConfig c = Config(TestKey());
  const std::vector<Payload> payloads = {
      {"empty", "", false},
      {"one", "x", false},
      {"text", TextLike(100000), true},
      {"random", RandomBytes(100000, 4), false},
      {"zeros_4m", std::string(kChunkSize, '\0'), true},
      {"random_4m", RandomBytes(kChunkSize, 5), false},
      {"text_4m", TextLike(kChunkSize), true},
  };
  for (const auto& p : payloads) {
    for (bool compress : {false, true}) {
      SCOPED_TRACE(std::string(p.name) + (compress ? " compress" : " no compress"));
      auto blob = c.EncryptBlob(p.data, compress);
      ASSERT_TRUE(blob.ok()) << blob.status().ToString();
      auto view = ParseBlob(*blob);
      ASSERT_TRUE(view.ok()) << view.status().ToString();
      const bool zstd = compress && p.compressible;
      EXPECT_EQ(view->kind, zstd ? BlobKind::kEncryptedZstd : BlobKind::kEncrypted);
      EXPECT_EQ(blob->substr(0, 8), zstd ? "CRNBLOBE" : "CRNBLOBe");
      if (zstd) {
        EXPECT_LT(view->payload.size(), p.data.size());
        EXPECT_GT(view->payload.size(), 0u);
      } else {
        EXPECT_EQ(view->payload.size(), p.data.size());
      }
      EXPECT_EQ(view->iv.size(), kBlobIvSize);
      EXPECT_EQ(view->tag.size(), kBlobTagSize);
      // Plain decoders refuse it: a key is needed.
      std::string out;
      EXPECT_TRUE(DecodeBlobPayload(*view, &out).IsInvalidArgument());
      ASSERT_TRUE(c.DecryptBlob(*view, &out).ok());
      EXPECT_TRUE(out == p.data);
      if (p.data.size() > 16) {
        // Encryption hides the data: the ciphertext of an uncompressed
        // payload is not the payload.
        EXPECT_NE(view->payload.substr(0, 16), std::string_view(p.data).substr(0, 16));
      }
    }
  }
}

TEST(CryptConfigTest, FreshIvEveryTime) {
  CryptConfig c = Config(TestKey());
  std::set<std::string> ivs;
  std::set<std::string> blobs;
  for (int i = 0; i < 50; ++i) {
    auto blob = c.EncryptBlob("same data", false);
    ASSERT_TRUE(blob.ok());
    ivs.insert(std::string(ParseBlob(*blob)->iv));
    blobs.insert(*blob);
  }
  EXPECT_EQ(ivs.size(), 50u);
  EXPECT_EQ(blobs.size(), 50u);
}

TEST(CryptConfigTest, ZstdLevelIsHonouredAndReadable) {
  CryptConfig c = Config(TestKey());
  const std::string data = TextLike(200000);
  for (int level : {1, 3, 19}) {
    auto blob = c.EncryptBlob(data, true, level);
    ASSERT_TRUE(blob.ok());
    std::string out;
    ASSERT_TRUE(Decrypt(c, *blob, &out).ok());
    EXPECT_EQ(out, data);
  }
}

TEST(CryptConfigTest, TooLargePayloadIsRefused) {
  CryptConfig c = Config(TestKey());
  EXPECT_TRUE(c.EncryptBlob(std::string(kMaxBlobPayload + 1, 'a')).status().IsInvalidArgument());
  EXPECT_TRUE(c.EncryptBlob(std::string(kMaxBlobPayload, 'a')).ok());
}

TEST(CryptConfigTest, MaxPayloadLimitsDecryption) {
  CryptConfig c = Config(TestKey());
  for (bool compress : {false, true}) {
    auto blob = c.EncryptBlob(TextLike(10000), compress);
    ASSERT_TRUE(blob.ok());
    auto view = ParseBlob(*blob);
    std::string out;
    EXPECT_TRUE(c.DecryptBlob(*view, &out, 9999).IsCorruption());
    EXPECT_TRUE(out.empty());
    EXPECT_TRUE(c.DecryptBlob(*view, &out, 10000).ok());
  }
}

TEST(CryptConfigTest, WrongKeyIsCorruptionNamingTheFingerprint) {
  CryptConfig a = Config(TestKey());
  CryptConfig b = Config(RandomBytes(32, 6));
  for (bool compress : {false, true}) {
    auto blob = a.EncryptBlob(TextLike(5000), compress);
    ASSERT_TRUE(blob.ok());
    std::string out = "stale";
    Status s = Decrypt(b, *blob, &out);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    EXPECT_NE(s.message().find(b.fingerprint()), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("wrong key or damaged chunk"), std::string::npos) << s.message();
    EXPECT_TRUE(out.empty());
  }
}

TEST(CryptConfigTest, PlainKindsAreInvalidArgument) {
  CryptConfig c = Config(TestKey());
  for (bool compress : {false, true}) {
    std::string blob = EncodeBlob(TextLike(5000), compress);
    std::string out;
    EXPECT_TRUE(Decrypt(c, blob, &out).IsInvalidArgument());
  }
}

TEST(CryptConfigTest, EveryDamagedByteFails) {
  CryptConfig c = Config(TestKey());
  for (bool compress : {false, true}) {
    auto made = c.EncryptBlob(TextLike(3000), compress);
    ASSERT_TRUE(made.ok());
    const std::string blob = *made;
    // Offsets 12.. : IV (12..23), tag (24..39), ciphertext (40..).
    for (size_t i = kBlobHeaderSize; i < blob.size(); ++i) {
      std::string bad = blob;
      bad[i] ^= 0x01;
      std::string out;
      // As stored: the CRC catches it.
      EXPECT_TRUE(Decrypt(c, bad, &out).IsCorruption()) << i;
      // With a CRC made to match (a forger): GCM catches it.
      Status s = Decrypt(c, Reseal(bad), &out);
      EXPECT_TRUE(s.IsCorruption()) << i << " " << s.ToString();
      EXPECT_NE(s.message().find(c.fingerprint()), std::string::npos) << i;
    }
  }
}

TEST(CryptConfigTest, KindSwapFailsBecauseTheMagicIsAuthenticated) {
  CryptConfig c = Config(TestKey());
  for (bool compress : {false, true}) {
    auto made = c.EncryptBlob(compress ? TextLike(3000) : RandomBytes(3000, 7), compress);
    ASSERT_TRUE(made.ok());
    std::string bad = *made;
    ASSERT_EQ(bad[7], compress ? 'E' : 'e');
    bad[7] = compress ? 'e' : 'E';  // the CRC does not cover the magic
    auto view = ParseBlob(bad);
    ASSERT_TRUE(view.ok());
    std::string out;
    Status s = c.DecryptBlob(*view, &out);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    EXPECT_TRUE(out.empty());
  }
}

TEST(CryptConfigTest, CopiesAreEquivalent) {
  CryptConfig a = Config(TestKey());
  CryptConfig b = a;
  CryptConfig moved = std::move(b);
  auto blob = a.EncryptBlob(TextLike(1000));
  ASSERT_TRUE(blob.ok());
  std::string out;
  ASSERT_TRUE(Decrypt(moved, *blob, &out).ok());
  EXPECT_EQ(out, TextLike(1000));
  EXPECT_EQ(moved.fingerprint(), a.fingerprint());
}

TEST(CryptConfigTest, OneConfigFromManyThreads) {
  const CryptConfig c = Config(TestKey());
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c, &failures, t] {
      for (int i = 0; i < 20; ++i) {
        std::string data = TextLike(1000 + 100 * t + i);
        auto blob = c.EncryptBlob(data, i % 2 == 0);
        std::string out;
        if (!blob.ok() || !Decrypt(c, *blob, &out).ok() || out != data ||
            c.ChunkDigest(data) != c.ChunkDigest(std::string(data))) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

}  // namespace
}  // namespace cairn::storage
