#include "server/authorizer.h"

namespace cairn::server {

bool Authorizer::Any(std::initializer_list<Role> roles) const {
  for (Role r : roles) {
    if (roles_.Has(r)) return true;
  }
  return false;
}

bool Authorizer::Allows(Action action, bool owner) const {
  using R = Role;
  const bool backup_owner = roles_.Has(R::kBackup) && owner;
  switch (action) {
    case Action::kList: return Any({R::kAdmin, R::kReader, R::kAudit}) || backup_owner;
    case Action::kRead: return Any({R::kAdmin, R::kReader}) || backup_owner;
    case Action::kDelete:
    case Action::kProtect:
    case Action::kPrune:
    case Action::kRunGc:
    case Action::kRunJob:
    case Action::kEditJobs:
    case Action::kAccess: return roles_.Has(R::kAdmin);
    case Action::kNotes: return roles_.Has(R::kAdmin) || backup_owner;
    case Action::kGcStatus:
    case Action::kListJobs:
    case Action::kSeeTasks: return Any({R::kAdmin, R::kAudit});
    case Action::kVerifyStore: return Any({R::kAdmin, R::kReader});
    case Action::kBackup: return roles_.Has(R::kAdmin) || backup_owner;
  }
  return false;
}

bool Authorizer::NeedsOwner(Action action) const { return Allows(action, true) && !Allows(action, false); }

Status Authorizer::Check(Action action, bool owner) const {
  if (Allows(action, owner)) return Status::OK();
  switch (action) {
    case Action::kList: return Status::PermissionDenied("no access to this group");
    case Action::kRead: return Status::PermissionDenied("no read access to this group");
    case Action::kDelete: return Status::PermissionDenied("deleting snapshots needs the Admin role");
    case Action::kProtect: return Status::PermissionDenied("changing protected needs the Admin role");
    case Action::kNotes:
      return Status::PermissionDenied("changing notes needs the Admin role, or the Backup role on an own group");
    case Action::kPrune: return Status::PermissionDenied("pruning needs the Admin role");
    case Action::kRunGc: return Status::PermissionDenied("garbage collection needs the Admin role");
    case Action::kGcStatus:
      return Status::PermissionDenied("the GC status needs the Admin or Audit role");
    case Action::kVerifyStore:
      return Status::PermissionDenied("verifying a whole datastore needs the Admin or Reader role");
    case Action::kBackup:
      return roles_.Has(Role::kBackup)
                 ? Status::PermissionDenied("the group belongs to another owner")
                 : Status::PermissionDenied("backups need the Backup or Admin role");
    case Action::kSeeTasks: return Status::PermissionDenied("seeing others' tasks needs the Admin or Audit role");
    case Action::kListJobs: return Status::PermissionDenied("jobs need the Admin or Audit role");
    case Action::kRunJob: return Status::PermissionDenied("running a job needs the Admin role");
    case Action::kEditJobs: return Status::PermissionDenied("changing jobs needs the Admin role");
    case Action::kAccess:
      return Status::PermissionDenied("managing users, tokens and roles needs the Admin role on *");
  }
  return Status::PermissionDenied("not allowed");
}

}  // namespace cairn::server
