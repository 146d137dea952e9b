// Password records (server/password_hash.h): format, checks, and raising the
// parameters later.

#include "server/password_hash.h"

#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <vector>

namespace cairn::server {
namespace {

// Small parameters keep most tests fast; the defaults are measured once below.
constexpr ScryptParams kFast{1024, 8, 1};

TEST(PasswordHashTest, RecordIsSelfDescribingAndSalted) {
  auto a = HashPassword("correct horse", kFast);
  auto b = HashPassword("correct horse", kFast);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(std::regex_match(*a, std::regex("scrypt\\$1024\\$8\\$1\\$[0-9a-f]{32}\\$[0-9a-f]{64}")))
      << *a;
  EXPECT_NE(*a, *b);  // a fresh salt each time
  EXPECT_EQ(a->find("correct horse"), std::string::npos);
}

TEST(PasswordHashTest, OnlyTheRightPasswordMatches) {
  auto rec = HashPassword("correct horse", kFast);
  ASSERT_TRUE(rec.ok());
  EXPECT_TRUE(VerifyPassword("correct horse", *rec));
  EXPECT_FALSE(VerifyPassword("correct hors", *rec));
  EXPECT_FALSE(VerifyPassword("correct horse ", *rec));
  EXPECT_FALSE(VerifyPassword("", *rec));
}

TEST(PasswordHashTest, EmptyLongAndOutOfBoundsAreRefused) {
  EXPECT_TRUE(HashPassword("", kFast).status().IsInvalidArgument());
  EXPECT_TRUE(HashPassword(std::string(kMaxPasswordBytes + 1, 'x'), kFast)
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(HashPassword(std::string(kMaxPasswordBytes, 'x'), kFast).ok());
  EXPECT_TRUE(HashPassword("pw", {1000, 8, 1}).status().IsInvalidArgument());  // not a power of two
  EXPECT_TRUE(HashPassword("pw", {1024, 0, 1}).status().IsInvalidArgument());
  EXPECT_TRUE(HashPassword("pw", {uint64_t{1} << 21, 8, 1}).status().IsInvalidArgument());
}

TEST(PasswordHashTest, DamagedRecordsMatchNothing) {
  auto rec = HashPassword("pw", kFast);
  ASSERT_TRUE(rec.ok());
  std::string flipped = *rec;
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  EXPECT_FALSE(VerifyPassword("pw", flipped));
  for (const std::string& bad : std::vector<std::string>{
           "", "pw", "plain$pw", "pbkdf2-sha256$1$00$00", "scrypt$1024$8$1$zz$00",
        "scrypt$1024$8$1$" + std::string(32, '0') + "$" + std::string(62, '0'),
        // parameters a damaged record could use to make a login allocate 64 GiB
        "scrypt$1048576$32$16$" + std::string(32, '0') + "$" + std::string(64, '0')}) {
    EXPECT_FALSE(VerifyPassword("pw", bad)) << bad;
    EXPECT_TRUE(NeedsRehash(bad)) << bad;
  }
}

TEST(PasswordHashTest, WeakerRecordsStillMatchAndAskForARehash) {
  auto old_rec = HashPassword("pw", kFast);
  ASSERT_TRUE(old_rec.ok());
  // Raising the parameters later: the old record keeps working...
  EXPECT_TRUE(VerifyPassword("pw", *old_rec));
  // ...and says it should be replaced.
  EXPECT_TRUE(NeedsRehash(*old_rec, kDefaultScrypt));
  EXPECT_FALSE(NeedsRehash(*old_rec, kFast));
  auto stronger = HashPassword("pw", {2048, 8, 2});
  ASSERT_TRUE(stronger.ok());
  EXPECT_TRUE(VerifyPassword("pw", *stronger));
  EXPECT_FALSE(NeedsRehash(*stronger, kFast));
}

TEST(PasswordHashTest, DefaultCostIsMeasured) {
  const auto t0 = std::chrono::steady_clock::now();
  auto rec = HashPassword("pw");
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_TRUE(VerifyPassword("pw", *rec));
  EXPECT_EQ(rec->rfind("scrypt$32768$8$1$", 0), 0u) << *rec;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count();
  std::printf("scrypt N=2^15 r=8 p=1: %lld ms per hash\n", static_cast<long long>(ms));
  EXPECT_LT(ms, 5000);  // slow on purpose, but usable
}

}  // namespace
}  // namespace cairn::server
