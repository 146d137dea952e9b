// The web UI's way in, end to end against the real cairn-server: password and
// token login, the session cookie on every endpoint with the user's roles, the
// CSRF rule, rate limiting, logout, idle expiry, the security headers and the
// unauthenticated admission of the static UI (server/API.md "Login, sessions
// and CSRF").

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <thread>

#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;

constexpr char kCookieAttributes[] = "; Path=/; HttpOnly; Secure; SameSite=Strict";

// A browser-like client: no Authorization header unless asked; the cookie
// and CSRF token are sent by hand so each test says exactly what goes out.
class RawClient {
 public:
  explicit RawClient(int port) : cli_("127.0.0.1", port) {
    cli_.enable_server_certificate_verification(false);
    cli_.set_read_timeout(60, 0);
    cli_.set_keep_alive(true);
  }
  httplib::Result Get(const std::string& path, const httplib::Headers& h = {}) {
    return cli_.Get(path.c_str(), h);
  }
  httplib::Result Post(const std::string& path, const json& body, const httplib::Headers& h = {}) {
    return cli_.Post(path.c_str(), h, body.dump(), "application/json");
  }
  httplib::Result Put(const std::string& path, const json& body, const httplib::Headers& h = {}) {
    return cli_.Put(path.c_str(), h, body.dump(), "application/json");
  }

 private:
  httplib::SSLClient cli_;
};

json JsonOf(const httplib::Result& r) { return json::parse(r->body, nullptr, false); }

struct Login {
  std::string cookie;  // the session id
  json body;
};

class ServerLoginTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({}); }

  void StartServer(const std::vector<std::string>& args) {
    server_ = ServerProcess::Start(dir_.path(), args);
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    raw_ = std::make_unique<RawClient>(server_->port());
  }

  // Sets `user`'s password with the CLI while the server runs.
  void SetPassword(const std::string& user, const std::string& password) {
    const std::string file = dir_.path() + "/pw-" + user;
    std::ofstream(file) << password << "\n";
    auto r = RunServerCommand(dir_.path(), {"user", "passwd", user, "--password-file", file});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  // Logs in and checks the answer's form; the cookie value and the body.
  Login LogIn(const json& body) {
    auto r = raw_->Post("/api/v1/login", body);
    EXPECT_TRUE(r) << "no answer";
    if (!r) return {};
    EXPECT_EQ(r->status, 200) << r->body;
    const std::string set_cookie = r->get_header_value("Set-Cookie");
    std::smatch m;
    EXPECT_TRUE(std::regex_match(set_cookie, m,
                                 std::regex(std::string("cairn_session=([0-9a-f]{64})") +
                                            kCookieAttributes)))
        << set_cookie;
    Login out{m.size() > 1 ? m[1].str() : "", JsonOf(r)};
    EXPECT_TRUE(std::regex_match(out.body.value("csrf", ""), std::regex("[0-9a-f]{64}")))
        << r->body;
    EXPECT_EQ(out.body["idle_timeout"], 7200);
    return out;
  }

  static httplib::Headers Cookie(const Login& l) {
    return {{"Cookie", "cairn_session=" + l.cookie}};
  }
  static httplib::Headers CookieCsrf(const Login& l, const std::string& csrf) {
    return {{"Cookie", "theme=dark; cairn_session=" + l.cookie}, {"X-CSRF-Token", csrf}};
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::unique_ptr<RawClient> raw_;
};

TEST_F(ServerLoginTest, PasswordLoginGivesASessionThatActsAsTheUser) {
  SetPassword("admin", "correct horse battery");
  Login l = LogIn({{"user", "admin"}, {"password", "correct horse battery"}});
  EXPECT_EQ(l.body["auth_id"], "admin");
  EXPECT_EQ(l.body["user"], "admin");

  auto session = raw_->Get("/api/v1/session", Cookie(l));
  ASSERT_TRUE(session);
  EXPECT_EQ(session->status, 200) << session->body;
  EXPECT_EQ(JsonOf(session), l.body);

  auto status = raw_->Get("/api/v1/status", Cookie(l));
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200) << status->body;
  EXPECT_EQ(JsonOf(status)["auth-id"], "admin");
  // The session endpoint wants the cookie, not a token.
  EXPECT_EQ(admin_->Get("/api/v1/session").status, 401);
}

TEST_F(ServerLoginTest, CookieCarriesTheUsersRolesAndNoMore) {
  ASSERT_EQ(RunServerCommand(dir_.path(), {"user", "add", "alice"}).exit_code, 0);
  ASSERT_EQ(RunServerCommand(dir_.path(), {"acl", "set", "--store", "default", "--role", "Reader",
                                           "--auth", "alice"})
                .exit_code,
            0);
  SetPassword("alice", "alice pw");
  BackupImage(*admin_, "vm/100", 1800000000, MakeImage(2, 1));
  Login l = LogIn({{"user", "alice"}, {"password", "alice pw"}});
  const std::string csrf = l.body["csrf"];

  auto groups = raw_->Get("/api/v1/datastores/default/groups", Cookie(l));
  ASSERT_TRUE(groups);
  EXPECT_EQ(groups->status, 200) << groups->body;
  EXPECT_EQ(JsonOf(groups).size(), 1u);
  // A Reader may not prune, with the CSRF token or without.
  auto prune = raw_->Post("/api/v1/datastores/default/prune",
                          {{"group", "vm/100"}, {"keep-last", 1}}, CookieCsrf(l, csrf));
  ASSERT_TRUE(prune);
  EXPECT_EQ(prune->status, 403) << prune->body;
  EXPECT_EQ(prune->body.find("CSRF"), std::string::npos) << prune->body;  // the role, not CSRF
}

TEST_F(ServerLoginTest, CookieWritesNeedTheCsrfToken) {
  SetPassword("admin", "pw for admin");
  const std::string snapshot = BackupImage(*admin_, "vm/100", 1800000000, MakeImage(2, 1));
  Login l = LogIn({{"user", "admin"}, {"password", "pw for admin"}});
  const std::string csrf = l.body["csrf"];
  const std::string path = "/api/v1/datastores/default/snapshots/notes?snapshot=" + Q(snapshot);
  auto notes = [&] {
    auto list = admin_->Get("/api/v1/datastores/default/snapshots?group=vm/100");
    return list.Json()[0]["notes"].get<std::string>();
  };
  const std::string before = notes();

  for (const httplib::Headers& h :
       {Cookie(l), CookieCsrf(l, ""), CookieCsrf(l, std::string(64, '0')),
        CookieCsrf(l, csrf.substr(1)), CookieCsrf(l, l.cookie)}) {
    auto r = raw_->Put(path, {{"notes", "changed"}}, h);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    EXPECT_EQ(JsonOf(r)["error"], "missing or wrong CSRF token");
    EXPECT_EQ(notes(), before);
  }
  auto ok = raw_->Put(path, {{"notes", "changed"}}, CookieCsrf(l, csrf));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(notes(), "changed");
}

TEST_F(ServerLoginTest, TokenLoginActsAsTheToken) {
  Login l = LogIn({{"token", server_->AdminToken()}});
  EXPECT_EQ(l.body["auth_id"], "admin!default");
  EXPECT_EQ(l.body["user"], "admin");
  auto status = raw_->Get("/api/v1/status", Cookie(l));
  ASSERT_TRUE(status);
  EXPECT_EQ(JsonOf(status)["auth-id"], "admin!default");
}

TEST_F(ServerLoginTest, EveryWrongCredentialIs401WithOneMessage) {
  SetPassword("admin", "right");
  ASSERT_EQ(RunServerCommand(dir_.path(), {"user", "add", "nopass"}).exit_code, 0);
  const std::string token = server_->AdminToken();
  for (const json& body :
       {json{{"user", "admin"}, {"password", "wrong"}}, json{{"user", "ghost"}, {"password", "right"}},
        json{{"user", "nopass"}, {"password", ""}},
        json{{"token", token.substr(0, token.size() - 1) + (token.back() == '0' ? "1" : "0")}}}) {
    auto r = raw_->Post("/api/v1/login", body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << body.dump() << " " << r->body;
    EXPECT_EQ(JsonOf(r)["error"], "login failed");
    EXPECT_FALSE(r->has_header("Set-Cookie"));
  }
  auto malformed = raw_->Post("/api/v1/login", json::array());
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->status, 400);
  auto both = raw_->Post("/api/v1/login", {{"user", "admin"}, {"password", "right"}, {"token", token}});
  ASSERT_TRUE(both);
  EXPECT_EQ(both->status, 400);
}

TEST_F(ServerLoginTest, RepeatedFailuresAreRateLimited) {
  SetPassword("admin", "right");
  for (int i = 0; i < 5; ++i) {
    auto r = raw_->Post("/api/v1/login", {{"user", "admin"}, {"password", "wrong"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << i;
  }
  // Locked now, even for the right password: checked before the hash.
  auto r = raw_->Post("/api/v1/login", {{"user", "admin"}, {"password", "right"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  ASSERT_TRUE(r->has_header("Retry-After"));
  EXPECT_GE(std::stoi(r->get_header_value("Retry-After")), 1);
  EXPECT_FALSE(r->has_header("Set-Cookie"));
  // Once the delay has passed, the right password works again.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  LogIn({{"user", "admin"}, {"password", "right"}});
}

TEST_F(ServerLoginTest, LogoutEndsTheSession) {
  SetPassword("admin", "pw");
  Login l = LogIn({{"user", "admin"}, {"password", "pw"}});
  const std::string csrf = l.body["csrf"];
  auto no_csrf = raw_->Post("/api/v1/logout", json::object(), Cookie(l));
  ASSERT_TRUE(no_csrf);
  EXPECT_EQ(no_csrf->status, 403);
  auto out = raw_->Post("/api/v1/logout", json::object(), CookieCsrf(l, csrf));
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status, 200) << out->body;
  EXPECT_EQ(JsonOf(out), json::object());
  EXPECT_EQ(out->get_header_value("Set-Cookie"), std::string("cairn_session=; Max-Age=0") +
                                                     kCookieAttributes);
  for (const char* path : {"/api/v1/status", "/api/v1/session"}) {
    auto r = raw_->Get(path, Cookie(l));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
  }
  // A new password ends the sessions made with the old one, too.
  Login again = LogIn({{"user", "admin"}, {"password", "pw"}});
  ASSERT_EQ(raw_->Get("/api/v1/status", Cookie(again))->status, 200);
  SetPassword("admin", "pw2");
  EXPECT_EQ(raw_->Get("/api/v1/status", Cookie(again))->status, 401);
}

TEST_F(ServerLoginTest, IdleSessionsExpire) {
  server_.reset();
  StartServer({"--session-idle", "2"});
  SetPassword("admin", "pw");
  auto r = raw_->Post("/api/v1/login", {{"user", "admin"}, {"password", "pw"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(JsonOf(r)["idle_timeout"], 2);
  Login l{r->get_header_value("Set-Cookie").substr(14, 64), JsonOf(r)};
  EXPECT_EQ(raw_->Get("/api/v1/status", Cookie(l))->status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(3100));
  EXPECT_EQ(raw_->Get("/api/v1/status", Cookie(l))->status, 401);
}

void ExpectSecurityHeaders(const httplib::Result& r, bool api, const std::string& what) {
  ASSERT_TRUE(r) << what;
  EXPECT_EQ(r->get_header_value("Content-Security-Policy"),
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
      << what;
  EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff") << what;
  EXPECT_EQ(r->get_header_value("Referrer-Policy"), "no-referrer") << what;
  EXPECT_EQ(r->get_header_value("X-Frame-Options"), "DENY") << what;
  EXPECT_EQ(r->get_header_value_count("Content-Security-Policy"), 1u) << what;
  if (api) {
    EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store") << what;
  }
}

TEST_F(ServerLoginTest, EveryAnswerCarriesTheSecurityHeaders) {
  const httplib::Headers token = {{"Authorization", "CairnToken " + server_->AdminToken()}};
  auto version = raw_->Get("/api/v1/version");
  ExpectSecurityHeaders(version, true, "version");
  EXPECT_EQ(version->status, 200);
  auto status = raw_->Get("/api/v1/status", token);
  ExpectSecurityHeaders(status, true, "status");
  EXPECT_EQ(status->status, 200);
  auto missing = raw_->Get("/api/v1/no-such-thing", token);
  ExpectSecurityHeaders(missing, true, "404");
  EXPECT_EQ(missing->status, 404);
  auto refused = raw_->Get("/api/v1/status");  // refused by the gate itself
  ExpectSecurityHeaders(refused, true, "gate 401");
  EXPECT_EQ(refused->status, 401);
  auto login_failed = raw_->Post("/api/v1/login", {{"user", "x"}, {"password", "y"}});
  ExpectSecurityHeaders(login_failed, true, "login 401");
}

TEST_F(ServerLoginTest, StaticPathsNeedNoLoginButApiPathsDo) {
  // Admitted without a login: the UI's files, and a 404 for one that is not there.
  for (const char* path : {"/", "/index.html", "/app/main.js"}) {
    auto r = raw_->Get(path);
    ExpectSecurityHeaders(r, false, path);
    const bool exists = std::string(path) != "/app/main.js";
    EXPECT_EQ(r->status, exists ? 200 : 404) << path;
    if (exists) {
      EXPECT_NE(r->body.find("<!doctype html>"), std::string::npos) << path;
    }
  }
  // Only GET/HEAD of static paths; anything under /api/ (however spelled) needs a login.
  auto post = raw_->Post("/index.html", json::object());
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 401);
  for (const char* path : {"/api/v1/status", "/%61pi/v1/status", "/api", "/api/"}) {
    auto r = raw_->Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 401) << path;
  }
  // A stranger's connection is closed after an anonymous answer (it cannot
  // park connections meant for authenticated clients); others are kept.
  auto stranger = raw_->Get("/index.html");
  ASSERT_TRUE(stranger);
  EXPECT_EQ(stranger->get_header_value("Connection"), "close");
  const httplib::Headers token = {{"Authorization", "CairnToken " + server_->AdminToken()}};
  auto known = raw_->Get("/api/v1/status", token);
  ASSERT_TRUE(known);
  EXPECT_NE(known->get_header_value("Connection"), "close");
  auto bogus_cookie = raw_->Get("/api/v1/status", {{"Cookie", "cairn_session=" + std::string(64, 'a')}});
  ASSERT_TRUE(bogus_cookie);
  EXPECT_EQ(bogus_cookie->status, 401);
}

TEST_F(ServerLoginTest, PasswdCommandRefusesBadInputAndChangesNothing) {
  const std::string empty = dir_.path() + "/empty";
  std::ofstream(empty) << "\n";
  auto r = RunServerCommand(dir_.path(), {"user", "passwd", "admin", "--password-file", empty});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("empty"), std::string::npos) << r.output;
  r = RunServerCommand(dir_.path(), {"user", "passwd", "admin", "--password-file", empty + "x"});
  EXPECT_NE(r.exit_code, 0);
  const std::string good = dir_.path() + "/good";
  std::ofstream(good) << "pw\n";
  r = RunServerCommand(dir_.path(), {"user", "passwd", "ghost", "--password-file", good});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no user ghost"), std::string::npos) << r.output;
  // Nothing was set: admin still has no password.
  auto login = raw_->Post("/api/v1/login", {{"user", "admin"}, {"password", ""}});
  ASSERT_TRUE(login);
  EXPECT_EQ(login->status, 401);
  // The file's first line is the password (a trailing newline is not part of it).
  r = RunServerCommand(dir_.path(), {"user", "passwd", "admin", "--password-file", good});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  LogIn({{"user", "admin"}, {"password", "pw"}});
}

}  // namespace
}  // namespace cairn::testing
