// Routes: login, session, logout — how the web UI gets in (server/API.md
// "Login, sessions and CSRF"). A login checks a password or a token once and
// hands out a session cookie (server/web_sessions.h); every other endpoint
// then accepts that cookie (server/request_auth.h).

#include <algorithm>
#include <ctime>

#include "server/api_common.h"
#include "server/server.h"

namespace cairn::server::api {
namespace {

constexpr char kCookieAttributes[] = "; Path=/; HttpOnly; Secure; SameSite=Strict";
// Rate-limit keys carry at most this much of a user name (longer names are
// invalid anyway, and must not grow the limiter's memory).
constexpr size_t kMaxKeyName = 64;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

json SessionJson(const Principal& p, const std::string& csrf, int64_t idle_timeout) {
  return {{"auth_id", p.auth_id}, {"user", p.user}, {"csrf", csrf}, {"idle_timeout", idle_timeout}};
}

// What a login body asks: a user's password, or a token "USER!TOKEN:SECRET".
struct LoginRequest {
  std::string user;
  std::string password;
  std::string token;
};

Result<LoginRequest> ParseLogin(const httplib::Request& req) {
  CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
  LoginRequest r;
  CAIRN_ASSIGN_OR_RETURN(r.user, StringField(body, "user"));
  CAIRN_ASSIGN_OR_RETURN(r.password, StringField(body, "password"));
  CAIRN_ASSIGN_OR_RETURN(r.token, StringField(body, "token"));
  const bool by_password = !r.user.empty() || !r.password.empty();
  if (by_password == !r.token.empty()) {
    return Status::InvalidArgument("send {\"user\",\"password\"} or {\"token\"}");
  }
  // A token's failures count against its user, like a password's.
  if (!by_password) r.user = r.token.substr(0, r.token.find('!'));
  return r;
}

Status Login(Server* server, const httplib::Request& req, httplib::Response& res) {
  CAIRN_ASSIGN_OR_RETURN(LoginRequest r, ParseLogin(req));
  const int64_t now = Now();
  LoginLimiter* limiter = server->login_limiter();
  const std::string user_key = "user:" + r.user.substr(0, kMaxKeyName);
  const std::string addr_key = "addr:" + req.remote_addr;
  // Before any hashing: a locked name or address costs no scrypt.
  const int64_t wait =
      std::max(limiter->RetryAfter(user_key, now), limiter->RetryAfter(addr_key, now));
  if (wait > 0) {
    res.set_header("Retry-After", std::to_string(wait));
    return Status::TooManyRequests("too many failed logins; retry in " + std::to_string(wait) +
                                   " s");
  }
  AuthStore* auth = server->auth();
  Result<Principal> p = r.token.empty() ? auth->CheckPassword(r.user, r.password)
                                        : auth->Authenticate("CairnToken " + r.token);
  if (!p.ok()) {
    if (!p.status().IsUnauthenticated()) return p.status();
    // The lock counts from the failure, not from the request: the hash
    // before it may have taken a while.
    const int64_t failed_at = Now();
    limiter->Failure(user_key, failed_at);
    limiter->Failure(addr_key, failed_at);
    return Status::Unauthenticated("login failed");
  }
  // Only the name is forgiven: one good account must not reset the count of
  // an address that tries many names.
  limiter->Success(user_key);
  CAIRN_ASSIGN_OR_RETURN(std::string stamp, auth->CredentialStamp(*p));
  WebSessions* sessions = server->web_sessions();
  CAIRN_ASSIGN_OR_RETURN(NewWebSession s, sessions->Create(*p, std::move(stamp), now));
  res.set_header("Set-Cookie", std::string(kSessionCookie) + "=" + s.id + kCookieAttributes);
  SendJson(res, 200, SessionJson(*p, s.csrf, sessions->idle_timeout()));
  return Status::OK();
}

}  // namespace

void RegisterLoginRoutes(Server* server, httplib::Server* http) {
  Service* service = server->service();
  http->Post("/api/v1/login", Wrap([server](const httplib::Request& req, httplib::Response& res) {
    return Login(server, req, res);
  }));

  // Only the cookie counts here: a token caller has no session to show.
  http->Get("/api/v1/session", Wrap([server, service](const httplib::Request& req,
                                                      httplib::Response& res) {
    Credentials creds = CredentialsOf(req);
    creds.authorization = nullptr;
    WebSession s;
    auto p = service->Authenticate(creds, &s);
    if (!p.ok()) {
      if (p.status().IsUnauthenticated()) return Status::Unauthenticated("no valid session");
      return p.status();
    }
    SendJson(res, 200, SessionJson(*p, s.csrf, server->web_sessions()->idle_timeout()));
    return Status::OK();
  }));

  // Authenticated like any endpoint (so a cookie needs the CSRF token); the
  // session of the request's cookie ends, and the browser is told to drop it.
  http->Post("/api/v1/logout", Wrap([server, service](const httplib::Request& req,
                                                      httplib::Response& res) {
    Credentials creds = CredentialsOf(req);
    CAIRN_RETURN_IF_ERROR(service->Authenticate(creds).status());
    if (!creds.session_id.empty()) server->web_sessions()->Remove(creds.session_id);
    res.set_header("Set-Cookie", std::string(kSessionCookie) + "=; Max-Age=0" + kCookieAttributes);
    SendJson(res, 200, json::object());
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
