#pragma once

// The hook script of `cairn backup all`, called like vzdump's: with the
// phase as first argument and, for the per-VM phases, the VM's id as the
// second; the environment describes the run. Phases, in order:
//   job-start                          once, before the first VM
//   backup-start ID                    before each VM; failing skips that VM
//   backup-end ID | backup-abort ID    after each VM (abort: it failed or
//                                      was skipped, backup-start included)
//   job-end | job-abort                once at the end (abort: the run was
//                                      interrupted by SIGINT/SIGTERM)
// Environment (on top of cairn's own, without CAIRN_TOKEN and
// CAIRN_KEY_PASSPHRASE): CAIRN_REPOSITORY, CAIRN_STORE,
// CAIRN_LOG_FILE; per VM also CAIRN_VM_ID, CAIRN_VM_KIND (qemu, image,
// domain), CAIRN_GROUP (vm/ID); at backup-end CAIRN_SNAPSHOT
// (vm/ID/TIME) and CAIRN_MODE (full, incremental, mixed); at
// backup-abort CAIRN_ERROR. The script's stdout and stderr are appended
// to CAIRN_LOG_FILE. A hook that does not exit 0 within the timeout is a
// failure (it is killed at the timeout).
//
// Thread safety: Run may be called from several threads at once (each call
// is its own process).

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "storage/status.h"

namespace cairn::client {

using storage::Status;

class BackupHook {
 public:
  // `script` "" = no hook (Run does nothing).
  BackupHook(std::string script, std::chrono::seconds timeout)
      : script_(std::move(script)), timeout_(timeout) {}

  bool enabled() const { return !script_.empty(); }

  // Runs `script phase [vm_id]` with `env` (NAME → value) added, its output
  // appended to `log_file` ("" = discarded). IOError "hook PHASE [ID]
  // failed (exit status N): <its last output line>".
  Status Run(const std::string& phase, const std::string& vm_id,
             const std::map<std::string, std::string>& env, const std::string& log_file) const;

 private:
  std::string script_;
  std::chrono::seconds timeout_;
};

}  // namespace cairn::client
