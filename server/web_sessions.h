#pragma once

// Web sessions: what a browser holds after POST /api/v1/login (server/API.md
// "Login, sessions and CSRF").
//
// A session id is 32 random bytes (RAND_bytes) shown once, as 64 hex
// characters, in the cairn_session cookie; only its SHA-256 is kept, so a
// dump of the table lets nobody in. Each session holds the principal it acts
// as, its CSRF token (32 random bytes, 64 hex, sent in X-CSRF-Token), the
// credential stamp it logged in with (AuthStore::CredentialStamp: a password
// change or a deleted token ends it) and its last use; a session unused for
// the idle timeout is gone. Sessions live in memory only: a restart logs
// everybody out, and can never let anybody in.
//
// At most `max_sessions` live at once; a new one then replaces the least
// recently used (only a successful login makes one, and each costs a
// password hash or a valid token).
//
// Thread safety: thread-safe. Times are Unix seconds passed in by the caller
// (tests choose their clock).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "server/auth_store.h"
#include "storage/mutex.h"

namespace cairn::server {

inline constexpr int64_t kDefaultWebSessionIdleSeconds = 7200;
inline constexpr size_t kDefaultMaxWebSessions = 10000;

struct WebSession {
  Principal principal;
  std::string csrf;   // 64 hex
  std::string stamp;  // AuthStore::CredentialStamp at login
  int64_t created = 0;
  int64_t last_use = 0;
};

// What a login hands out (the only time the id exists in clear).
struct NewWebSession {
  std::string id;    // 64 hex, the cookie value
  std::string csrf;  // 64 hex
};

class WebSessions {
 public:
  explicit WebSessions(int64_t idle_timeout_seconds = kDefaultWebSessionIdleSeconds,
                       size_t max_sessions = kDefaultMaxWebSessions);

  // A new session for `p`. IOError when the random generator fails.
  Result<NewWebSession> Create(const Principal& p, std::string stamp, int64_t now);
  // The session whose id is `id`, with its last use moved to `now`; nullopt
  // for a malformed, unknown or idle-expired id (an expired one is removed).
  std::optional<WebSession> Use(const std::string& id, int64_t now);
  // Removes the session `id`; false when there was none.
  bool Remove(const std::string& id);
  // Removes every session idle for the timeout; returns how many.
  size_t ReapIdle(int64_t now);

  size_t size();
  int64_t idle_timeout() const { return idle_timeout_; }
  // The keys the sessions are stored under (SHA-256 hex of their ids), for
  // tests that check no id is kept in clear.
  std::vector<std::string> StoredKeys();

 private:
  const int64_t idle_timeout_;
  const size_t max_sessions_;
  Mutex mu_;
  std::map<std::string, WebSession> by_key_ CAIRN_GUARDED_BY(mu_);  // SHA-256 hex of the id
};

// 32 random bytes as 64 lowercase hex; IOError when RAND_bytes fails.
Result<std::string> RandomHex32();

}  // namespace cairn::server
