#pragma once

// How a request is authenticated (server/API.md "Authentication" and "Login,
// sessions and CSRF"), shared by the gate's admission (Server::AdmitRequest,
// on the request head) and the handlers (api::Caller, on the parsed request),
// so the two can never disagree; and the security headers every answer carries.
//
// A request is authenticated by its Authorization header when it has one
// (the cookie is then ignored), else by its cairn_session cookie. A request
// authenticated by the cookie whose method is not GET or HEAD must carry the
// session's CSRF token in X-CSRF-Token: a browser sends the cookie with
// requests other sites trigger, but only our own pages can read the token.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/auth_store.h"
#include "server/web_sessions.h"

namespace cairn::server {

inline constexpr char kSessionCookie[] = "cairn_session";
inline constexpr char kCsrfHeader[] = "X-CSRF-Token";

// The value of cookie `name` in a Cookie header value ("a=1; b=2"); "" when
// absent. The first one counts when it appears twice.
std::string CookieValue(std::string_view cookie_header, std::string_view name);

// What a request carries to authenticate itself.
struct Credentials {
  const std::string* authorization = nullptr;  // Authorization header; null when absent
  std::string session_id;                      // the cairn_session cookie; "" when absent
  const std::string* csrf = nullptr;           // X-CSRF-Token; null when absent
  std::string method;
};

// Who sends a request carrying `creds`. Unauthenticated when it carries no
// credential or a wrong, unknown, expired or logged-out one (a session whose
// password or token changed since its login is ended here);
// PermissionDenied "missing or wrong CSRF token" for a cookie-authenticated
// request other than GET/HEAD without the session's token; other codes when
// the auth store fails. `session`, when given, receives the web session (left
// alone for header authentication).
Result<Principal> AuthenticateRequest(AuthStore& auth, WebSessions& sessions,
                                      const Credentials& creds, int64_t now,
                                      WebSession* session = nullptr);

// The headers every answer carries; `api` adds those of /api/ answers
// (Cache-Control: no-store).
std::vector<std::pair<std::string, std::string>> SecurityHeaders(bool api);

// True for paths under /api/ (after percent-decoding, as routing sees them).
bool IsApiPath(std::string_view decoded_path);

}  // namespace cairn::server
