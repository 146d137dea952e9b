#pragma once

// Failed-login rate limiting (server/API.md "Login, sessions and CSRF").
//
// Failures are counted per key — the login handler uses one key for the user
// name and one for the client address — and the first `free_failures` cost
// nothing; each further one locks the key for twice as long as the one before
// (1 s, 2 s, 4 s, … up to `max_delay_seconds`). A key is forgotten once it
// has been quiet for `max_delay_seconds` after its lock ended, or on a
// successful login. The caller asks RetryAfter before it checks the password,
// so a locked key costs no password hash.
//
// Memory is bounded: at most `max_keys` keys; a new key then first drops the
// forgotten ones and, when still full, the one whose last failure is oldest.
// (So a flood of failures from many addresses can shorten the memory of
// older ones; it never locks out anyone who has not failed.)
//
// Thread safety: thread-safe. Times are Unix seconds passed in by the caller.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "storage/mutex.h"

namespace cairn::server {

struct LoginLimits {
  int free_failures = 5;
  int64_t max_delay_seconds = 900;
  size_t max_keys = 10000;
};

class LoginLimiter {
 public:
  explicit LoginLimiter(LoginLimits limits = {});

  // Seconds until `key` may try again; 0 when it may now.
  int64_t RetryAfter(const std::string& key, int64_t now);
  // Records a failed login for `key` at `now`.
  void Failure(const std::string& key, int64_t now);
  // Forgets `key` (a successful login).
  void Success(const std::string& key);

  size_t size();

 private:
  struct Entry {
    int failures = 0;
    int64_t last_failure = 0;
    int64_t locked_until = 0;
  };
  bool Forgotten(const Entry& e, int64_t now) const;
  void MakeRoom(int64_t now) CAIRN_REQUIRES(mu_);

  const LoginLimits limits_;
  Mutex mu_;
  std::map<std::string, Entry> entries_ CAIRN_GUARDED_BY(mu_);
};

}  // namespace cairn::server
