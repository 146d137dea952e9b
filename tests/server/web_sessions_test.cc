// Web sessions (server/web_sessions.h) and how a request is authenticated by
// them (server/request_auth.h), with a chosen clock and a real auth store.

#include "server/web_sessions.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <regex>

#include "server/request_auth.h"
#include "storage/env.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::server {
namespace {

constexpr int64_t kT0 = 1'800'000'000;

bool IsHex64(const std::string& s) { return std::regex_match(s, std::regex("[0-9a-f]{64}")); }

TEST(WebSessionsTest, CreateThenUse) {
  WebSessions s(7200);
  auto n = s.Create({"alice", "alice"}, "stamp", kT0);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(IsHex64(n->id));
  EXPECT_TRUE(IsHex64(n->csrf));
  EXPECT_NE(n->id, n->csrf);
  auto got = s.Use(n->id, kT0 + 10);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->principal.auth_id, "alice");
  EXPECT_EQ(got->csrf, n->csrf);
  EXPECT_EQ(got->last_use, kT0 + 10);
  auto other = s.Create({"alice", "alice"}, "stamp", kT0);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->id, n->id);
  EXPECT_NE(other->csrf, n->csrf);
}

TEST(WebSessionsTest, IdleExpiryCountsFromLastUse) {
  WebSessions s(7200);
  auto n = s.Create({"alice", "alice"}, "stamp", kT0);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(s.Use(n->id, kT0 + 7199).has_value());
  EXPECT_TRUE(s.Use(n->id, kT0 + 7199 + 7199).has_value());  // each use extends it
  EXPECT_FALSE(s.Use(n->id, kT0 + 7199 + 7199 + 7200).has_value());
  EXPECT_EQ(s.size(), 0u);  // removed, not just refused
  EXPECT_FALSE(s.Use(n->id, kT0).has_value());
}

TEST(WebSessionsTest, ReapRemovesIdleOnes) {
  WebSessions s(100);
  auto a = s.Create({"a", "a"}, "x", kT0);
  auto b = s.Create({"b", "b"}, "x", kT0 + 50);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(s.ReapIdle(kT0 + 100), 1u);
  EXPECT_FALSE(s.Use(a->id, kT0 + 100).has_value());
  EXPECT_TRUE(s.Use(b->id, kT0 + 100).has_value());
}

TEST(WebSessionsTest, LogoutRemoves) {
  WebSessions s;
  auto n = s.Create({"alice", "alice"}, "stamp", kT0);
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(s.Remove(n->id));
  EXPECT_FALSE(s.Use(n->id, kT0).has_value());
  EXPECT_FALSE(s.Remove(n->id));
}

TEST(WebSessionsTest, OnlyTheHashOfTheIdIsStored) {
  WebSessions s;
  auto n = s.Create({"alice", "alice"}, "stamp", kT0);
  ASSERT_TRUE(n.ok());
  auto keys = s.StoredKeys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_NE(keys[0], n->id);
  EXPECT_TRUE(IsHex64(keys[0]));
  // The stored key does not open the session: it is not an id.
  EXPECT_FALSE(s.Use(keys[0], kT0).has_value());
  EXPECT_TRUE(s.Use(n->id, kT0).has_value());
}

TEST(WebSessionsTest, MalformedIdsFindNothing) {
  WebSessions s;
  auto n = s.Create({"alice", "alice"}, "stamp", kT0);
  ASSERT_TRUE(n.ok());
  std::string upper = n->id;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const std::string& bad : {std::string(), n->id.substr(1), n->id + "0", upper}) {
    EXPECT_FALSE(s.Use(bad, kT0).has_value()) << bad;
  }
}

TEST(WebSessionsTest, SizeIsBoundedByDroppingTheLeastRecentlyUsed) {
  WebSessions s(7200, 3);
  auto a = s.Create({"a", "a"}, "x", kT0);
  auto b = s.Create({"b", "b"}, "x", kT0 + 1);
  auto c = s.Create({"c", "c"}, "x", kT0 + 2);
  ASSERT_TRUE(s.Use(a->id, kT0 + 3).has_value());
  auto d = s.Create({"d", "d"}, "x", kT0 + 4);
  EXPECT_EQ(s.size(), 3u);
  EXPECT_FALSE(s.Use(b->id, kT0 + 5).has_value());
  EXPECT_TRUE(s.Use(a->id, kT0 + 5).has_value());
  EXPECT_TRUE(s.Use(c->id, kT0 + 5).has_value());
  EXPECT_TRUE(s.Use(d->id, kT0 + 5).has_value());
}

TEST(CookieValueTest, FindsTheNamedCookie) {
  EXPECT_EQ(CookieValue("cairn_session=abc", "cairn_session"), "abc");
  EXPECT_EQ(CookieValue("a=1; cairn_session=abc; b=2", "cairn_session"), "abc");
  EXPECT_EQ(CookieValue("a=1;cairn_session=\"abc\"", "cairn_session"), "abc");
  EXPECT_EQ(CookieValue("xcairn_session=abc", "cairn_session"), "");
  EXPECT_EQ(CookieValue("cairn_session=one; cairn_session=two", "cairn_session"), "one");
  EXPECT_EQ(CookieValue("", "cairn_session"), "");
  EXPECT_EQ(CookieValue("cairn_session", "cairn_session"), "");
}

// AuthenticateRequest with a real auth store.
class RequestAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    auto store = AuthStore::Open(dir_ + "/auth.db");
    ASSERT_TRUE(store.ok());
    auth_ = std::move(store).value();
    ASSERT_TRUE(auth_->AddUser("alice").ok());
    ASSERT_TRUE(auth_->SetPassword("alice", "pw").ok());
    auto token = auth_->CreateToken("alice!t");
    ASSERT_TRUE(token.ok());
    header_ = "CairnToken alice!t:" + *token;
    auto stamp = auth_->CredentialStamp({"alice", "alice"});
    ASSERT_TRUE(stamp.ok());
    auto n = sessions_.Create({"alice", "alice"}, *stamp, kT0);
    ASSERT_TRUE(n.ok());
    session_ = *n;
  }
  void TearDown() override {
    auth_.reset();
  }

  Result<Principal> Auth(const std::string& method, const std::string* csrf,
                         const std::string* authorization = nullptr) {
    Credentials c;
    c.authorization = authorization;
    c.session_id = session_.id;
    c.csrf = csrf;
    c.method = method;
    return AuthenticateRequest(*auth_, sessions_, c, kT0 + 1);
  }

  cairn::testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<AuthStore> auth_;
  WebSessions sessions_;
  NewWebSession session_;
  std::string header_;
};

TEST_F(RequestAuthTest, CookieActsAsTheUser) {
  auto p = Auth("GET", nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->auth_id, "alice");
  EXPECT_TRUE(Auth("HEAD", nullptr).ok());
}

TEST_F(RequestAuthTest, CookieWritesNeedTheCsrfToken) {
  const std::string wrong(64, '0');
  for (const char* m : {"POST", "PUT", "DELETE", "PATCH"}) {
    auto none = Auth(m, nullptr);
    EXPECT_TRUE(none.status().IsPermissionDenied()) << m;
    EXPECT_EQ(none.status().message(), "missing or wrong CSRF token");
    EXPECT_TRUE(Auth(m, &wrong).status().IsPermissionDenied()) << m;
    EXPECT_TRUE(Auth(m, &session_.csrf).ok()) << m;
  }
}

TEST_F(RequestAuthTest, HeaderWinsOverTheCookie) {
  auto p = Auth("POST", nullptr, &header_);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->auth_id, "alice!t");
  const std::string bad = "CairnToken alice!t:" + std::string(64, '0');
  EXPECT_TRUE(Auth("GET", nullptr, &bad).status().IsUnauthenticated());
}

TEST_F(RequestAuthTest, NewPasswordEndsTheSession) {
  ASSERT_TRUE(Auth("GET", nullptr).ok());
  ASSERT_TRUE(auth_->SetPassword("alice", "new").ok());
  EXPECT_TRUE(Auth("GET", nullptr).status().IsUnauthenticated());
  EXPECT_EQ(sessions_.size(), 0u);
}

TEST_F(RequestAuthTest, NothingOrUnknownIsUnauthenticated) {
  Credentials c;
  c.method = "GET";
  EXPECT_TRUE(AuthenticateRequest(*auth_, sessions_, c, kT0).status().IsUnauthenticated());
  c.session_id = std::string(64, 'a');
  EXPECT_TRUE(AuthenticateRequest(*auth_, sessions_, c, kT0).status().IsUnauthenticated());
  c.session_id = session_.id;
  EXPECT_TRUE(AuthenticateRequest(*auth_, sessions_, c, kT0 + 7200).status().IsUnauthenticated());
}

}  // namespace
}  // namespace cairn::server
