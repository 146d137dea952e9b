// The role policy table of server/authorizer.h, row by row.

#include "server/authorizer.h"

#include <gtest/gtest.h>

namespace cairn::server {
namespace {

RoleSet Roles(std::initializer_list<Role> roles) {
  RoleSet set;
  for (Role r : roles) set.Add(r);
  return set;
}

const Authorizer kAdmin(Roles({Role::kAdmin}));
const Authorizer kReader(Roles({Role::kReader}));
const Authorizer kAudit(Roles({Role::kAudit}));
const Authorizer kBackup(Roles({Role::kBackup}));
const Authorizer kNone(Roles({}));

TEST(AuthorizerTest, ListingAndReading) {
  for (bool owner : {false, true}) {
    EXPECT_TRUE(kAdmin.Allows(Action::kList, owner));
    EXPECT_TRUE(kReader.Allows(Action::kList, owner));
    EXPECT_TRUE(kAudit.Allows(Action::kList, owner));
    EXPECT_TRUE(kAdmin.Allows(Action::kRead, owner));
    EXPECT_TRUE(kReader.Allows(Action::kRead, owner));
    EXPECT_FALSE(kAudit.Allows(Action::kRead, owner));  // Audit sees, never reads data
    EXPECT_FALSE(kNone.Allows(Action::kList, owner));
  }
  EXPECT_TRUE(kBackup.Allows(Action::kList, true));
  EXPECT_FALSE(kBackup.Allows(Action::kList, false));
  EXPECT_TRUE(kBackup.Allows(Action::kRead, true));
  EXPECT_FALSE(kBackup.Allows(Action::kRead, false));
}

TEST(AuthorizerTest, OnlyAdminRemovesOrProtects) {
  for (Action a : {Action::kDelete, Action::kProtect, Action::kPrune, Action::kRunGc,
                   Action::kRunJob}) {
    EXPECT_TRUE(kAdmin.Allows(a));
    for (const Authorizer* other : {&kReader, &kAudit, &kBackup, &kNone}) {
      // Owning the group changes nothing: Backup may never remove snapshots.
      EXPECT_FALSE(other->Allows(a, true));
      Status s = other->Check(a, true);
      EXPECT_TRUE(s.IsPermissionDenied());
      EXPECT_NE(s.message().find("Admin"), std::string::npos) << s.ToString();
    }
  }
}

TEST(AuthorizerTest, NotesForAdminAndTheOwningBackupToken) {
  EXPECT_TRUE(kAdmin.Allows(Action::kNotes));
  EXPECT_TRUE(kBackup.Allows(Action::kNotes, true));
  EXPECT_FALSE(kBackup.Allows(Action::kNotes, false));
  EXPECT_FALSE(kReader.Allows(Action::kNotes, true));
  EXPECT_FALSE(kAudit.Allows(Action::kNotes, true));
}

TEST(AuthorizerTest, AuditLooksAtStatusTasksAndJobs) {
  for (Action a : {Action::kGcStatus, Action::kSeeTasks, Action::kListJobs}) {
    EXPECT_TRUE(kAdmin.Allows(a));
    EXPECT_TRUE(kAudit.Allows(a));
    EXPECT_FALSE(kReader.Allows(a));
    EXPECT_FALSE(kBackup.Allows(a, true));
  }
}

TEST(AuthorizerTest, VerifyAndBackup) {
  EXPECT_TRUE(kAdmin.Allows(Action::kVerifyStore));
  EXPECT_TRUE(kReader.Allows(Action::kVerifyStore));
  EXPECT_FALSE(kBackup.Allows(Action::kVerifyStore, true));
  EXPECT_FALSE(kAudit.Allows(Action::kVerifyStore));

  EXPECT_TRUE(kAdmin.Allows(Action::kBackup, false));
  EXPECT_TRUE(kBackup.Allows(Action::kBackup, true));
  EXPECT_FALSE(kBackup.Allows(Action::kBackup, false));
  EXPECT_FALSE(kReader.Allows(Action::kBackup, true));
  EXPECT_NE(kBackup.Check(Action::kBackup, false).message().find("another owner"),
            std::string::npos);
  EXPECT_NE(kReader.Check(Action::kBackup, true).message().find("Backup or Admin"),
            std::string::npos);
}

TEST(AuthorizerTest, SeveralRolesAddUp) {
  const Authorizer both(Roles({Role::kBackup, Role::kAudit}));
  EXPECT_TRUE(both.Allows(Action::kList, false));    // from Audit
  EXPECT_FALSE(both.Allows(Action::kRead, false));   // neither reads others' data
  EXPECT_TRUE(both.Allows(Action::kRead, true));     // Backup reads its own
  EXPECT_TRUE(both.Allows(Action::kGcStatus));
}

TEST(AuthorizerTest, OwnerIsLookedUpOnlyWhenItMatters) {
  EXPECT_FALSE(kAdmin.NeedsOwner(Action::kRead));
  EXPECT_FALSE(kReader.NeedsOwner(Action::kList));
  EXPECT_TRUE(kBackup.NeedsOwner(Action::kRead));
  EXPECT_TRUE(kBackup.NeedsOwner(Action::kNotes));
  EXPECT_FALSE(kBackup.NeedsOwner(Action::kDelete));  // denied either way
  EXPECT_TRUE(kAdmin.Check(Action::kDelete).ok());
}

}  // namespace
}  // namespace cairn::server
