#pragma once

// The role policy of the API (server/API.md, "Roles"), in one place. A pure
// decision from what a caller holds on one datastore (its roles there) and
// whether it owns the group in question; no I/O. The service layer asks it
// before every operation.
//
//   action          Admin  Reader  Audit  Backup
//   list groups      all    all     all    own
//   read data        all    all     -      own
//   delete, protect  yes    -       -      -
//   notes            yes    -       -      own
//   prune, run GC    yes    -       -      -
//   GC status        yes    -       yes    -
//   verify a store   yes    yes     -      -
//   verify a group   all    all     -      own
//   back up          all    -       -      own (first backup makes the owner)
//   see tasks        all    -       all    own (the tasks one started)
//   list jobs        yes    -       yes    -
//   run a job        yes    -       -      -
//
// Thread safety: immutable.

#include <string>

#include "server/auth_store.h"

namespace cairn::server {

enum class Action {
  kList,          // see a group and its snapshots
  kRead,          // read a group's data (reader sessions, verify a group)
  kDelete,        // delete a snapshot
  kProtect,       // protect or unprotect a snapshot
  kNotes,         // change a snapshot's notes
  kPrune,
  kRunGc,
  kGcStatus,
  kVerifyStore,   // verify a whole datastore
  kBackup,        // back up into a group
  kSeeTasks,      // see every task of the store, not only one's own
  kListJobs,
  kRunJob,
  kEditJobs,      // add, change or remove a job
  kAccess,        // manage users, tokens and the ACL (asked on "*")
};

class Authorizer {
 public:
  explicit Authorizer(RoleSet roles) : roles_(roles) {}

  // May the caller do `action` on a group it owns (`owner`) or not?
  bool Allows(Action action, bool owner = false) const;
  // OK, or PermissionDenied saying what the action needs.
  Status Check(Action action, bool owner = false) const;
  // Whether ownership matters at all for `action` with these roles: when
  // not, the caller need not look the owner up.
  bool NeedsOwner(Action action) const;

 private:
  bool Any(std::initializer_list<Role> roles) const;
  RoleSet roles_;
};

}  // namespace cairn::server
