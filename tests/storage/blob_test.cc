#include "storage/blob.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>

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

TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);  // RFC 3720 B.4
  std::string data = RandomBytes(1000, 1);
  EXPECT_EQ(Crc32cExtend(Crc32c(data.substr(0, 333)), data.substr(333)), Crc32c(data));
}

// The CRC-32C of the definition, one bit at a time: what the three-lane
// hardware path (storage/crc32c.cc) must equal at every length, alignment
// and split.
uint32_t BitwiseCrc32c(uint32_t crc, std::string_view data) {
  crc = ~crc;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

TEST(Crc32cTest, ThreeLanesMatchTheDefinition) {
  const std::string data = RandomBytes(3 * 3 * 4096 + 100, 11);
  const std::string_view all(data);
  // Lengths around one and two three-lane blocks (12 KiB), at odd offsets.
  for (size_t len : {0ul, 1ul, 7ul, 8ul, 4095ul, 12287ul, 12288ul, 12289ul, 12295ul, 24576ul,
                     24583ul, 30000ul}) {
    for (size_t off : {0ul, 1ul, 3ul, 8ul}) {
      const std::string_view part = all.substr(off, len);
      ASSERT_EQ(Crc32c(part), BitwiseCrc32c(0, part)) << "len " << len << " off " << off;
      ASSERT_EQ(Crc32cExtend(0x12345678u, part), BitwiseCrc32c(0x12345678u, part))
          << "len " << len << " off " << off;
    }
  }
  // A 4 MiB chunk, whole and extended in uneven pieces.
  const std::string chunk = RandomBytes(kChunkSize, 12);
  const uint32_t want = BitwiseCrc32c(0, chunk);
  EXPECT_EQ(Crc32c(chunk), want);
  uint32_t crc = 0;
  for (size_t at = 0, step = 1; at < chunk.size(); at += step, step = step * 3 + 7) {
    crc = Crc32cExtend(crc, std::string_view(chunk).substr(at, step));
  }
  EXPECT_EQ(crc, want);
  // A chunk of zeros (the shift tables' own input).
  const std::string zeros(kChunkSize, '\0');
  EXPECT_EQ(Crc32c(zeros), BitwiseCrc32c(0, zeros));
}

TEST(DigestTest, HexRoundTripAndStrictness) {
  Digest d = Sha256("abc");
  EXPECT_EQ(d.ToHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto back = Digest::FromHex(d.ToHex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(Digest::FromHex(d.ToHex().substr(1)).ok());
  std::string upper = d.ToHex();
  upper[0] = 'B';
  EXPECT_FALSE(Digest::FromHex(upper).ok());
  EXPECT_FALSE(Digest::FromHex(std::string(64, 'g')).ok());
}

TEST(DigestTest, ZeroChunk) {
  EXPECT_TRUE(IsAllZero(std::string(kChunkSize, '\0')));
  EXPECT_TRUE(IsAllZero(""));
  std::string z(kChunkSize, '\0');
  z[kChunkSize - 1] = 1;
  EXPECT_FALSE(IsAllZero(z));
  z[kChunkSize - 1] = 0;
  z[63] = 1;
  EXPECT_FALSE(IsAllZero(z));
  EXPECT_EQ(ZeroChunkDigest(), Sha256(std::string(kChunkSize, '\0')));
  EXPECT_EQ(ZeroChunkDigest(100), Sha256(std::string(100, '\0')));
}

struct Payload {
  const char* name;
  std::string data;
};

std::vector<Payload> Payloads() {
  return {{"empty", ""},
          {"one", "x"},
          {"zeros", std::string(kChunkSize, '\0')},
          {"random", RandomBytes(kChunkSize, 7)},
          {"text", TextLike(kChunkSize)},
          {"short_random", RandomBytes(1234, 9)}};
}

TEST(BlobTest, RoundTrip) {
  for (const auto& p : Payloads()) {
    for (bool compress : {false, true}) {
      std::string blob = EncodeBlob(p.data, compress);
      auto kind = CheckBlob(blob);
      ASSERT_TRUE(kind.ok()) << p.name << ": " << kind.status().ToString();
      std::string out;
      ASSERT_TRUE(DecodeBlob(blob, &out).ok()) << p.name;
      EXPECT_EQ(out, p.data) << p.name;
    }
  }
}

// One string reused for every decode, as the server's upload check, restore
// and verify keep it: each result is exactly its payload, whatever the
// string held before (longer, shorter, or left by an error).
TEST(BlobTest, DecodeIntoAReusedStringLeavesNothingBehind) {
  std::string out = std::string(kChunkSize + 100, 'Q');
  std::vector<Payload> payloads = Payloads();
  payloads.push_back({"short_text", TextLike(5000)});
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& p : payloads) {
      for (bool compress : {true, false}) {
        ASSERT_TRUE(DecodeBlob(EncodeBlob(p.data, compress), &out).ok()) << p.name;
        EXPECT_EQ(out.size(), p.data.size()) << p.name;
        EXPECT_TRUE(out == p.data) << p.name;
      }
      // An error in between leaves the string empty, not half of a chunk.
      EXPECT_FALSE(DecodeBlob(EncodeBlob(p.data).substr(0, kBlobHeaderSize - 1), &out).ok());
      EXPECT_TRUE(out.empty()) << p.name;
      const std::string text = TextLike(kChunkSize);
      ASSERT_TRUE(DecodeBlob(EncodeBlob(text), &out).ok());
      EXPECT_EQ(*CheckBlob(EncodeBlob(text)), BlobKind::kZstd);
      EXPECT_TRUE(out == text);
    }
    std::reverse(payloads.begin(), payloads.end());
  }
}

TEST(BlobTest, PlainWhenCompressionDoesNotShrink) {
  std::string random = RandomBytes(65536, 3);
  EXPECT_EQ(*CheckBlob(EncodeBlob(random)), BlobKind::kPlain);
  EXPECT_EQ(EncodeBlob(random).size(), kBlobHeaderSize + random.size());
  std::string text = TextLike(65536);
  EXPECT_EQ(*CheckBlob(EncodeBlob(text)), BlobKind::kZstd);
  EXPECT_LT(EncodeBlob(text).size(), text.size() / 4);
  EXPECT_EQ(*CheckBlob(EncodeBlob(text, false)), BlobKind::kPlain);
}

// Flipping any single bit anywhere in a blob must give Corruption.
TEST(BlobTest, EveryBitFlipIsCorruption) {
  for (const std::string& data : {TextLike(3000), RandomBytes(700, 5)}) {
    std::string blob = EncodeBlob(data);
    for (size_t i = 0; i < blob.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string bad = blob;
        bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
        std::string out;
        Status s = DecodeBlob(bad, &out);
        ASSERT_TRUE(s.IsCorruption()) << "byte " << i << " bit " << bit << ": " << s.ToString();
        ASSERT_TRUE(out.empty());
      }
    }
  }
}

TEST(BlobTest, EveryTruncationIsCorruption) {
  for (const std::string& data : {TextLike(5000), RandomBytes(900, 6)}) {
    std::string blob = EncodeBlob(data);
    for (size_t len = 0; len < blob.size(); ++len) {
      std::string out;
      EXPECT_TRUE(DecodeBlob(blob.substr(0, len), &out).IsCorruption()) << len;
    }
    std::string out;
    EXPECT_TRUE(DecodeBlob(blob + "x", &out).IsCorruption());
  }
}

// Rebuilds a blob's CRC so that only the lie in the payload is left to catch.
std::string Reseal(std::string blob) {
  uint32_t crc = Crc32c(std::string_view(blob).substr(kBlobHeaderSize));
  for (int i = 0; i < 4; ++i) blob[kBlobMagicSize + i] = static_cast<char>(crc >> (8 * i));
  return blob;
}

TEST(BlobTest, LyingLengthIsCorruptionWithoutHugeAllocation) {
  // A zstd frame whose header claims a content size of 2^40 bytes.
  std::string text = TextLike(100000);
  std::string blob = EncodeBlob(text);
  ASSERT_EQ(*CheckBlob(blob), BlobKind::kZstd);
  // Frame header: magic (4) · descriptor (1) · [window] · content size.
  // Replace the whole frame with one claiming an enormous size and no data.
  std::string frame;
  frame += std::string("\x28\xb5\x2f\xfd", 4);
  frame += static_cast<char>(0xE0);  // FCS field 8 bytes, single segment
  uint64_t huge = uint64_t{1} << 40;
  for (int i = 0; i < 8; ++i) frame += static_cast<char>(huge >> (8 * i));
  frame += std::string("\x01\x00\x00", 3);  // a raw last block of size 0
  std::string lie = std::string(BlobMagic(BlobKind::kZstd)) + "0000" + frame;
  std::string out;
  EXPECT_TRUE(DecodeBlob(Reseal(lie), &out).IsCorruption());
  // Over the caller's limit.
  EXPECT_TRUE(DecodeBlob(blob, &out, text.size() - 1).IsCorruption());
  EXPECT_TRUE(DecodeBlob(blob, &out, text.size()).ok());
  // A frame that claims fewer bytes than it holds.
  std::string small = EncodeBlob(TextLike(4096));
  std::string body = small.substr(kBlobHeaderSize);
  std::string out2;
  EXPECT_TRUE(DecodeBlob(Reseal(small + body), &out2).IsCorruption());
}

TEST(BlobTest, EncryptedKindsNeedAKeyButCheckCrc) {
  std::string body(kBlobIvSize + kBlobTagSize + 100, 'e');
  std::string blob = Reseal(std::string(BlobMagic(BlobKind::kEncrypted)) + "0000" + body);
  EXPECT_EQ(*CheckBlob(blob), BlobKind::kEncrypted);
  std::string out;
  EXPECT_TRUE(DecodeBlob(blob, &out).IsInvalidArgument());
  std::string shortb = Reseal(std::string(BlobMagic(BlobKind::kEncryptedZstd)) + "0000" + "x");
  EXPECT_TRUE(CheckBlob(shortb).status().IsCorruption());
}

TEST(BlobTest, ParseIsAViewIntoTheBytes) {
  for (bool compress : {false, true}) {
    const std::string data = TextLike(100000);
    const std::string blob = EncodeBlob(data, compress);
    auto view = ParseBlob(blob);
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(view->kind, compress ? BlobKind::kZstd : BlobKind::kPlain);
    EXPECT_FALSE(view->encrypted());
    EXPECT_TRUE(view->iv.empty());
    EXPECT_TRUE(view->tag.empty());
    // No copy: the payload lies where the format puts it.
    EXPECT_EQ(view->payload.data(), blob.data() + kBlobHeaderSize);
    EXPECT_EQ(view->payload.size(), blob.size() - kBlobHeaderSize);
    if (!compress) {
      EXPECT_EQ(view->payload, data);
    }
    std::string out;
    ASSERT_TRUE(DecodeBlobPayload(*view, &out).ok());
    EXPECT_EQ(out, data);
    EXPECT_TRUE(DecodeBlobPayload(*view, &out, data.size() - 1).IsCorruption());
  }
  // Encrypted kinds: IV, tag and ciphertext where FORMAT.md says.
  std::string rest = std::string(kBlobIvSize, 'i') + std::string(kBlobTagSize, 't') + "cipher";
  std::string blob = Reseal(std::string(BlobMagic(BlobKind::kEncryptedZstd)) + "0000" + rest);
  auto view = ParseBlob(blob);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->kind, BlobKind::kEncryptedZstd);
  EXPECT_TRUE(view->encrypted());
  EXPECT_EQ(view->iv, std::string(kBlobIvSize, 'i'));
  EXPECT_EQ(view->tag, std::string(kBlobTagSize, 't'));
  EXPECT_EQ(view->payload, "cipher");
  EXPECT_EQ(view->iv.data(), blob.data() + 12);
  EXPECT_EQ(view->tag.data(), blob.data() + 24);
  EXPECT_EQ(view->payload.data(), blob.data() + 40);
  std::string out;
  EXPECT_TRUE(DecodeBlobPayload(*view, &out).IsInvalidArgument());
  // The checks of the decoder: length, magic, CRC.
  EXPECT_TRUE(ParseBlob("CRNBLOBp").status().IsCorruption());
  EXPECT_TRUE(ParseBlob(Reseal("CRNBLOBx0000data")).status().IsCorruption());
  std::string bad = EncodeBlob("data", false);
  bad.back() ^= 1;
  EXPECT_TRUE(ParseBlob(bad).status().IsCorruption());
}

TEST(BlobTest, BuildEncryptedBlobPutsThePartsWhereTheFormatSays) {
  auto blob = BuildEncryptedBlob(BlobKind::kEncryptedZstd, 5, [](const EncryptedBlobParts& p) {
    EXPECT_EQ(p.iv.size(), kBlobIvSize);
    EXPECT_EQ(p.tag.size(), kBlobTagSize);
    EXPECT_EQ(p.ciphertext.size(), 5u);
    std::fill(p.iv.begin(), p.iv.end(), 'i');
    std::fill(p.tag.begin(), p.tag.end(), 't');
    std::fill(p.ciphertext.begin(), p.ciphertext.end(), 'c');
    return Status::OK();
  });
  ASSERT_TRUE(blob.ok());
  std::string rest = std::string(kBlobIvSize, 'i') + std::string(kBlobTagSize, 't') + "ccccc";
  EXPECT_EQ(*blob, Reseal(std::string(BlobMagic(BlobKind::kEncryptedZstd)) + "0000" + rest));
  auto view = ParseBlob(*blob);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->payload, "ccccc");
  // The empty ciphertext, the fill's error, plain kinds, the limit.
  auto empty = BuildEncryptedBlob(BlobKind::kEncrypted, 0,
                                  [](const EncryptedBlobParts&) { return Status::OK(); });
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), kBlobHeaderSize + kBlobIvSize + kBlobTagSize);
  EXPECT_EQ(*CheckBlob(*empty), BlobKind::kEncrypted);
  auto failed = BuildEncryptedBlob(BlobKind::kEncrypted, 3, [](const EncryptedBlobParts&) {
    return Status::IOError("no entropy");
  });
  EXPECT_TRUE(failed.status().IsIOError());
  auto ok_fill = [](const EncryptedBlobParts&) { return Status::OK(); };
  EXPECT_TRUE(BuildEncryptedBlob(BlobKind::kZstd, 3, ok_fill).status().IsInvalidArgument());
  EXPECT_TRUE(BuildEncryptedBlob(BlobKind::kEncrypted, kMaxBlobPayload + 1, ok_fill)
                  .status()
                  .IsInvalidArgument());
}

TEST(BlobTest, CompressForBlobOnlyWhenSmaller) {
  std::string frame;
  const std::string text = TextLike(100000);
  ASSERT_TRUE(CompressForBlob(text, kBlobZstdLevel, &frame));
  EXPECT_LT(frame.size(), text.size());
  // The frame is what a zstd blob carries: it decodes with the blob reader.
  BlobView view;
  view.kind = BlobKind::kZstd;
  view.payload = frame;
  std::string out;
  ASSERT_TRUE(DecodeBlobPayload(view, &out).ok());
  EXPECT_EQ(out, text);
  EXPECT_FALSE(CompressForBlob("", kBlobZstdLevel, &frame));
  EXPECT_FALSE(CompressForBlob(RandomBytes(5000, 3), kBlobZstdLevel, &frame));
}

// Chunks of 256 KiB or more are probed (8 pieces of 8 KiB spread over them)
// before zstd runs over them whole.
TEST(BlobTest, ProbeSkipsIncompressibleChunksOnly) {
  BlobEncoder enc;
  auto kind_of = [&](const std::string& data) {
    std::string blob = EncodeBlob(data);
    std::string out;
    EXPECT_TRUE(DecodeBlob(blob, &out).ok());
    EXPECT_EQ(out, data);
    EXPECT_EQ(std::string(*enc.Encode(data)), blob);  // every writer decides alike
    std::string frame;
    EXPECT_EQ(CompressForBlob(data, kBlobZstdLevel, &frame), *CheckBlob(blob) == BlobKind::kZstd);
    return *CheckBlob(blob);
  };
  const std::string random = RandomBytes(kChunkSize, 11);
  EXPECT_EQ(kind_of(random), BlobKind::kPlain);
  EXPECT_EQ(kind_of(TextLike(kChunkSize)), BlobKind::kZstd);
  // A compressible MiB in the middle of random data: a piece lands in it.
  std::string mixed = random;
  mixed.replace(kChunkSize / 2, 1 << 20, TextLike(1 << 20));
  EXPECT_EQ(kind_of(mixed), BlobKind::kZstd);
  EXPECT_LT(EncodeBlob(mixed).size(), kChunkSize - (1 << 20) / 2);
  // Half zeros (the first half): the first pieces shrink to nothing.
  std::string half = random;
  std::fill(half.begin(), half.begin() + kChunkSize / 2, '\0');
  EXPECT_EQ(kind_of(half), BlobKind::kZstd);
  // The trade-off: 64 KiB of zeros between two pieces go unseen, and the
  // chunk is stored plain although zstd would have saved them.
  std::string gap = random;
  std::fill(gap.begin() + 100 * 1024, gap.begin() + 164 * 1024, '\0');
  EXPECT_EQ(kind_of(gap), BlobKind::kPlain);
  // Below 256 KiB there is no probe: zstd decides on the whole.
  std::string small = RandomBytes(200 * 1024, 12);
  std::fill(small.begin() + 100 * 1024, small.begin() + 164 * 1024, '\0');
  EXPECT_EQ(kind_of(small), BlobKind::kZstd);
}

TEST(BlobTest, PeekLooksAtTheMagicOnly) {
  EXPECT_EQ(PeekBlobKind("CRNBLOBp"), BlobKind::kPlain);
  EXPECT_EQ(PeekBlobKind("CRNBLOBzwhatever"), BlobKind::kZstd);
  EXPECT_EQ(PeekBlobKind("CRNBLOBe"), BlobKind::kEncrypted);
  EXPECT_EQ(PeekBlobKind("CRNBLOBE"), BlobKind::kEncryptedZstd);
  EXPECT_EQ(PeekBlobKind("CRNBLOB"), std::nullopt);
  EXPECT_EQ(PeekBlobKind("CRNBLOBx"), std::nullopt);
}

TEST(BlobTest, SizeLimits) {
  EXPECT_EQ(kMaxBlobFileSize, kMaxBlobPayload + 40);
  EXPECT_EQ(MaxBlobSizeFor(kMaxBlobPayload), kMaxBlobFileSize);
  EXPECT_EQ(MaxBlobSizeFor(~uint64_t{0}), kMaxBlobFileSize);
  // Small payloads: the worst of plain+40 and a zstd frame's bound.
  EXPECT_GE(MaxBlobSizeFor(0), 40u);
  EXPECT_GE(MaxBlobSizeFor(kChunkSize), kChunkSize + 40);
  for (const std::string& data : {RandomBytes(kChunkSize, 3), TextLike(kChunkSize)}) {
    EXPECT_LE(EncodeBlob(data).size(), MaxBlobSizeFor(data.size()));
  }
}

TEST(BlobEncoderTest, SameBlobsAsEncodeBlob) {
  BlobEncoder enc;
  for (const Payload& p : Payloads()) {
    for (bool compress : {false, true}) {
      auto blob = enc.Encode(p.data, compress);
      ASSERT_TRUE(blob.ok()) << p.name;
      EXPECT_EQ(*blob, EncodeBlob(p.data, compress)) << p.name << " " << compress;
    }
  }
}

TEST(BlobEncoderTest, FramedBuffers) {
  BlobEncoder enc;
  constexpr size_t kOff = BlobEncoder::kFrameOffset;
  // Twice, the second time backwards: the encoder's reused output and its
  // thread's compression scratch go from large frames to small and back.
  std::vector<Payload> payloads = Payloads();
  payloads.push_back({"short_text", TextLike(300 * 1024)});
  const std::vector<Payload> forward = payloads;
  payloads.insert(payloads.end(), forward.rbegin(), forward.rend());
  for (const Payload& p : payloads) {
    // A full buffer and one with room to spare (a short last chunk).
    for (size_t spare : {size_t{0}, size_t{100}}) {
      std::string framed(kOff + p.data.size() + spare, '?');
      framed.replace(kOff, p.data.size(), p.data);
      auto blob = enc.EncodeFramed(&framed, p.data.size());
      ASSERT_TRUE(blob.ok()) << p.name;
      EXPECT_EQ(**blob, EncodeBlob(p.data)) << p.name << " spare " << spare;
      // Plain and full: sealed in place, no copy.
      const bool plain = *CheckBlob(**blob) == BlobKind::kPlain;
      EXPECT_EQ(*blob == &framed, plain && spare == 0) << p.name;
    }
  }
}

TEST(BlobEncoderTest, ZerosWithoutAZeroBuffer) {
  BlobEncoder enc(3);
  for (size_t n : {size_t{0}, size_t{1}, size_t{100}, size_t{65536}, size_t{1536}, kChunkSize,
                   kChunkSize - 1}) {
    auto blob = enc.EncodeZeros(n);
    ASSERT_TRUE(blob.ok()) << n;
    std::string out;
    ASSERT_TRUE(DecodeBlob(**blob, &out).ok()) << n;
    EXPECT_EQ(out, std::string(n, '\0')) << n;
    if (n >= 4096) {
      EXPECT_EQ(*CheckBlob(**blob), BlobKind::kZstd) << n;
    }
  }
  // Interleaved with data: the context is reset between them.
  const std::string text = TextLike(200000);
  std::string out;
  ASSERT_TRUE(DecodeBlob(*enc.Encode(text), &out).ok());
  EXPECT_EQ(out, text);
  ASSERT_TRUE(DecodeBlob(**enc.EncodeZeros(kChunkSize), &out).ok());
  EXPECT_EQ(out, std::string(kChunkSize, '\0'));
}

}  // namespace
}  // namespace cairn::storage
