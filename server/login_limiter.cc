#include "server/login_limiter.h"

#include <algorithm>

namespace cairn::server {

LoginLimiter::LoginLimiter(LoginLimits limits) : limits_(limits) {}

bool LoginLimiter::Forgotten(const Entry& e, int64_t now) const {
  return now >= std::max(e.locked_until, e.last_failure) + limits_.max_delay_seconds;
}

int64_t LoginLimiter::RetryAfter(const std::string& key, int64_t now) {
  MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return 0;
  return std::max<int64_t>(0, it->second.locked_until - now);
}

void LoginLimiter::Failure(const std::string& key, int64_t now) {
  MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it != entries_.end() && Forgotten(it->second, now)) {
    entries_.erase(it);
    it = entries_.end();
  }
  if (it == entries_.end()) {
    MakeRoom(now);
    it = entries_.emplace(key, Entry{}).first;
  }
  Entry& e = it->second;
  e.failures = std::min(e.failures + 1, 1 << 20);
  e.last_failure = now;
  const int over = e.failures - limits_.free_failures;
  if (over >= 0) {
    // 2^over seconds, capped (the shift stays far below 64 bits).
    const int64_t delay = over >= 30 ? limits_.max_delay_seconds
                                     : std::min<int64_t>(int64_t{1} << over,
                                                         limits_.max_delay_seconds);
    // Times are whole seconds: one more, so that the lock lasts at least
    // `delay` whatever fraction of the second `now` was.
    e.locked_until = now + delay + 1;
  }
}

void LoginLimiter::Success(const std::string& key) {
  MutexLock lock(&mu_);
  entries_.erase(key);
}

size_t LoginLimiter::size() {
  MutexLock lock(&mu_);
  return entries_.size();
}

void LoginLimiter::MakeRoom(int64_t now) {
  if (entries_.size() < limits_.max_keys) return;
  std::erase_if(entries_, [&](const auto& kv) { return Forgotten(kv.second, now); });
  if (entries_.size() < limits_.max_keys || entries_.empty()) return;
  auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
    return a.second.last_failure < b.second.last_failure;
  });
  entries_.erase(oldest);
}

}  // namespace cairn::server
