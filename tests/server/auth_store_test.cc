// Passwords in the auth store (server/auth_store.h): set, check, the
// migration, and the upgrade of weaker records on login.

#include "server/auth_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "server/password_hash.h"
#include "storage/env.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::server {
namespace {

class AuthStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    auto store = AuthStore::Open(dir_ + "/auth.db");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auth_ = std::move(store).value();
    ASSERT_TRUE(auth_->AddUser("alice").ok());
  }
  void TearDown() override {
    auth_.reset();
  }

  // The stored record, read (and written) with SQLite directly.
  std::string StoredRecord(const std::string& user) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open((dir_ + "/auth.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT password FROM users WHERE name = ?", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, user.c_str(), -1, SQLITE_TRANSIENT);
    std::string out = sqlite3_step(st) == SQLITE_ROW
                          ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0))
                          : "<no row>";
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }
  void StoreRecord(const std::string& user, const std::string& record) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ + "/auth.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "UPDATE users SET password = ? WHERE name = ?", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, record.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user.c_str(), -1, SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }

  cairn::testing::TempDir tmp_;
  std::string dir_;
  std::unique_ptr<AuthStore> auth_;
};

TEST_F(AuthStoreTest, UserWithoutPasswordCannotLogIn) {
  EXPECT_EQ(StoredRecord("alice"), "");
  EXPECT_TRUE(auth_->CheckPassword("alice", "").status().IsUnauthenticated());
  EXPECT_TRUE(auth_->CheckPassword("alice", "anything").status().IsUnauthenticated());
  EXPECT_TRUE(auth_->CredentialStamp({"alice", "alice"}).status().IsUnauthenticated());
}

TEST_F(AuthStoreTest, SetAndCheckPassword) {
  ASSERT_TRUE(auth_->SetPassword("alice", "s3cret pw").ok());
  const std::string record = StoredRecord("alice");
  EXPECT_EQ(record.rfind("scrypt$32768$8$1$", 0), 0u) << record;
  EXPECT_EQ(record.find("s3cret"), std::string::npos);
  auto p = auth_->CheckPassword("alice", "s3cret pw");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->auth_id, "alice");
  EXPECT_EQ(p->user, "alice");
  // Every failure looks the same.
  for (auto [user, pw] : {std::pair{"alice", "s3cret PW"}, std::pair{"alice", ""},
                          std::pair{"bob", "s3cret pw"}, std::pair{"al ice", "s3cret pw"},
                          std::pair{"alice!tok", "s3cret pw"}}) {
    auto bad = auth_->CheckPassword(user, pw);
    ASSERT_FALSE(bad.ok()) << user << " " << pw;
    EXPECT_TRUE(bad.status().IsUnauthenticated());
    EXPECT_EQ(bad.status().message(), "authentication failed");
  }
}

TEST_F(AuthStoreTest, BadInputChangesNothing) {
  ASSERT_TRUE(auth_->SetPassword("alice", "first").ok());
  const std::string before = StoredRecord("alice");
  EXPECT_TRUE(auth_->SetPassword("alice", "").IsInvalidArgument());
  EXPECT_TRUE(auth_->SetPassword("alice", std::string(2000, 'x')).IsInvalidArgument());
  EXPECT_TRUE(auth_->SetPassword("nobody", "pw").IsNotFound());
  EXPECT_EQ(StoredRecord("alice"), before);
  EXPECT_EQ(StoredRecord("nobody"), "<no row>");
}

TEST_F(AuthStoreTest, NewPasswordChangesTheStamp) {
  ASSERT_TRUE(auth_->SetPassword("alice", "first").ok());
  auto a = auth_->CredentialStamp({"alice", "alice"});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(auth_->SetPassword("alice", "first").ok());  // same password, new salt
  auto b = auth_->CredentialStamp({"alice", "alice"});
  ASSERT_TRUE(b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_FALSE(auth_->CheckPassword("alice", "second").ok());
  EXPECT_TRUE(auth_->CheckPassword("alice", "first").ok());
}

TEST_F(AuthStoreTest, TokenStampFollowsTheToken) {
  auto secret = auth_->CreateToken("alice!web");
  ASSERT_TRUE(secret.ok());
  auto stamp = auth_->CredentialStamp({"alice!web", "alice"});
  ASSERT_TRUE(stamp.ok());
  EXPECT_EQ(stamp->find(*secret), std::string::npos);  // the hash, not the secret
  EXPECT_TRUE(auth_->CredentialStamp({"alice!gone", "alice"}).status().IsUnauthenticated());
}

TEST_F(AuthStoreTest, WeakerRecordIsUpgradedOnLogin) {
  auto weak = HashPassword("pw", {1024, 8, 1});
  ASSERT_TRUE(weak.ok());
  StoreRecord("alice", *weak);
  ASSERT_TRUE(auth_->CheckPassword("alice", "wrong").status().IsUnauthenticated());
  EXPECT_EQ(StoredRecord("alice"), *weak);  // a failure changes nothing
  ASSERT_TRUE(auth_->CheckPassword("alice", "pw").ok());
  const std::string upgraded = StoredRecord("alice");
  EXPECT_NE(upgraded, *weak);
  EXPECT_FALSE(NeedsRehash(upgraded));
  EXPECT_TRUE(auth_->CheckPassword("alice", "pw").ok());
}

TEST_F(AuthStoreTest, ReopenKeepsPasswords) {
  ASSERT_TRUE(auth_->SetPassword("alice", "pw").ok());
  auth_.reset();
  auto again = AuthStore::Open(dir_ + "/auth.db");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)->CheckPassword("alice", "pw").ok());
}

}  // namespace
}  // namespace cairn::server
