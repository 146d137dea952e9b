// Failed-login limits (server/login_limiter.h) with a chosen clock.

#include "server/login_limiter.h"

#include <gtest/gtest.h>

namespace cairn::server {
namespace {

TEST(LoginLimiterTest, FiveFreeFailuresThenDoublingDelays) {
  LoginLimiter l;
  const int64_t t = 1'000'000;
  for (int i = 0; i < 4; ++i) {
    l.Failure("user:a", t);
    EXPECT_EQ(l.RetryAfter("user:a", t), 0) << i;
  }
  // Whole seconds: a lock of D seconds ends D + 1 after the failure's
  // second, so it lasts at least D whatever fraction of it had passed.
  l.Failure("user:a", t);  // the fifth: 1 s
  EXPECT_EQ(l.RetryAfter("user:a", t), 2);
  EXPECT_EQ(l.RetryAfter("user:a", t + 1), 1);
  EXPECT_EQ(l.RetryAfter("user:a", t + 2), 0);
  l.Failure("user:a", t + 2);  // 2 s
  EXPECT_EQ(l.RetryAfter("user:a", t + 2), 3);
  l.Failure("user:a", t + 5);  // 4 s
  EXPECT_EQ(l.RetryAfter("user:a", t + 5), 5);
  EXPECT_EQ(l.RetryAfter("user:b", t + 3), 0);  // keys are separate
}

TEST(LoginLimiterTest, DelayIsCappedAtFifteenMinutes) {
  LoginLimiter l;
  int64_t t = 0;
  for (int i = 0; i < 100; ++i) l.Failure("addr:1.2.3.4", t);
  EXPECT_EQ(l.RetryAfter("addr:1.2.3.4", t), 901);
  EXPECT_EQ(l.RetryAfter("addr:1.2.3.4", t + 900), 1);
  EXPECT_EQ(l.RetryAfter("addr:1.2.3.4", t + 901), 0);
}

TEST(LoginLimiterTest, SuccessForgetsAndQuietTimeForgets) {
  LoginLimiter l;
  for (int i = 0; i < 6; ++i) l.Failure("user:a", 100);
  EXPECT_GT(l.RetryAfter("user:a", 100), 0);
  l.Success("user:a");
  EXPECT_EQ(l.RetryAfter("user:a", 100), 0);
  EXPECT_EQ(l.size(), 0u);

  for (int i = 0; i < 5; ++i) l.Failure("user:b", 100);
  EXPECT_EQ(l.RetryAfter("user:b", 100), 2);
  // Quiet for 15 minutes after the lock: the count starts again.
  l.Failure("user:b", 100 + 2 + 900);
  EXPECT_EQ(l.RetryAfter("user:b", 100 + 2 + 900), 0);
}

TEST(LoginLimiterTest, MemoryIsBounded) {
  LoginLimiter l({/*free_failures=*/5, /*max_delay_seconds=*/900, /*max_keys=*/100});
  for (int i = 0; i < 5; ++i) l.Failure("user:victim", 0);
  for (int i = 0; i < 1000; ++i) l.Failure("addr:" + std::to_string(i), 10 + i);
  EXPECT_LE(l.size(), 100u);
  // The oldest failures made room first.
  EXPECT_EQ(l.RetryAfter("user:victim", 10), 0);
  for (int i = 0; i < 5; ++i) l.Failure("addr:999", 2000);
  EXPECT_GT(l.RetryAfter("addr:999", 2000), 0);
}

}  // namespace
}  // namespace cairn::server
