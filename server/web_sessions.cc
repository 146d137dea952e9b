#include "server/web_sessions.h"

#include <openssl/rand.h>

#include <algorithm>

#include "storage/digest.h"

namespace cairn::server {
namespace {

bool IsHex64(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string KeyOf(const std::string& id) { return storage::Sha256(id).ToHex(); }

}  // namespace

Result<std::string> RandomHex32() {
  static constexpr char kHex[] = "0123456789abcdef";
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return Status::IOError("RAND_bytes failed");
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

WebSessions::WebSessions(int64_t idle_timeout_seconds, size_t max_sessions)
    : idle_timeout_(idle_timeout_seconds), max_sessions_(std::max<size_t>(1, max_sessions)) {}

Result<NewWebSession> WebSessions::Create(const Principal& p, std::string stamp, int64_t now) {
  NewWebSession out;
  CAIRN_ASSIGN_OR_RETURN(out.id, RandomHex32());
  CAIRN_ASSIGN_OR_RETURN(out.csrf, RandomHex32());
  MutexLock lock(&mu_);
  if (by_key_.size() >= max_sessions_) {
    auto oldest = std::min_element(by_key_.begin(), by_key_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    by_key_.erase(oldest);
  }
  by_key_[KeyOf(out.id)] = WebSession{p, out.csrf, std::move(stamp), now, now};
  return out;
}

std::optional<WebSession> WebSessions::Use(const std::string& id, int64_t now) {
  if (!IsHex64(id)) return std::nullopt;
  const std::string key = KeyOf(id);
  MutexLock lock(&mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  if (now - it->second.last_use >= idle_timeout_) {
    by_key_.erase(it);
    return std::nullopt;
  }
  it->second.last_use = std::max(it->second.last_use, now);
  return it->second;
}

bool WebSessions::Remove(const std::string& id) {
  if (!IsHex64(id)) return false;
  const std::string key = KeyOf(id);
  MutexLock lock(&mu_);
  return by_key_.erase(key) > 0;
}

size_t WebSessions::ReapIdle(int64_t now) {
  MutexLock lock(&mu_);
  return std::erase_if(by_key_, [&](const auto& kv) {
    return now - kv.second.last_use >= idle_timeout_;
  });
}

size_t WebSessions::size() {
  MutexLock lock(&mu_);
  return by_key_.size();
}

std::vector<std::string> WebSessions::StoredKeys() {
  MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [key, session] : by_key_) out.push_back(key);
  return out;
}

}  // namespace cairn::server
