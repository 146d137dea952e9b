// TEMP until wt-domain merges: a throw-away stand-in for helper A's
// client/domain_backup.cc so that `cairn backup all` links before the
// libvirt backup exists. Every call fails with a clear error; nothing here
// is a backup. Delete this file when wt-domain is merged.

#include "client/domain_backup.h"

namespace cairn::client {
namespace {

Status NotBuilt() {
  return Status::IOError(
      "libvirt domains are not supported by this build (backup domain is not merged yet)");
}

}  // namespace

// TEMP until wt-domain merges
Result<nlohmann::json> BackupDomain(const Repository&, const DomainBackupOptions&) {
  return NotBuilt();
}

// TEMP until wt-domain merges
Result<nlohmann::json> PlanDomainBackup(const Repository*, const DomainBackupOptions&) {
  return NotBuilt();
}

// TEMP until wt-domain merges
Result<std::vector<std::string>> ListDomains(const std::string&) { return NotBuilt(); }

}  // namespace cairn::client
