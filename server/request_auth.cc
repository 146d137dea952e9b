#include "server/request_auth.h"

#include <openssl/crypto.h>

namespace cairn::server {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool SameSecret(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::string CookieValue(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view pair = Trim(header.substr(0, semi));
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos || Trim(pair.substr(0, eq)) != name) continue;
    std::string_view value = Trim(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    return std::string(value);
  }
  return "";
}

Result<Principal> AuthenticateRequest(AuthStore& auth, WebSessions& sessions,
                                      const Credentials& creds, int64_t now,
                                      WebSession* session) {
  if (creds.authorization) return auth.Authenticate(*creds.authorization);
  const Status denied = Status::Unauthenticated("authentication failed");
  if (creds.session_id.empty()) {
    return Status::Unauthenticated("missing Authorization header or session cookie");
  }
  std::optional<WebSession> s = sessions.Use(creds.session_id, now);
  if (!s) return denied;
  // The password or token it logged in with must still be the current one.
  auto stamp = auth.CredentialStamp(s->principal);
  if (!stamp.ok() && !stamp.status().IsUnauthenticated()) return stamp.status();
  if (!stamp.ok() || !SameSecret(*stamp, s->stamp)) {
    sessions.Remove(creds.session_id);
    return denied;
  }
  if (creds.method != "GET" && creds.method != "HEAD" &&
      (!creds.csrf || !SameSecret(*creds.csrf, s->csrf))) {
    return Status::PermissionDenied("missing or wrong CSRF token");
  }
  if (session) *session = *s;
  return s->principal;
}

std::vector<std::pair<std::string, std::string>> SecurityHeaders(bool api) {
  std::vector<std::pair<std::string, std::string>> h = {
      {"Content-Security-Policy",
       "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"},
      {"X-Content-Type-Options", "nosniff"},
      {"Referrer-Policy", "no-referrer"},
      {"X-Frame-Options", "DENY"},
  };
  if (api) h.emplace_back("Cache-Control", "no-store");
  return h;
}

bool IsApiPath(std::string_view path) {
  return path == "/api" || path.substr(0, 5) == "/api/";
}

}  // namespace cairn::server
