#pragma once

// FaultInjectionEnv: an Env for crash and error tests. It forwards to a real
// Env (normally Env::Default()) and can
//
//   * fail the Nth call of one kind of operation (Append, Sync, Rename, ...)
//     with IOError("injected ... failure"), counting from the moment the
//     failure is armed;
//   * "crash after K mutating operations": operations 1..K (counted from
//     CrashAfter) succeed, operation K+1 and every later one fail with
//     IOError("simulated crash") and change nothing on disk;
//   * count the mutating operations of a whole procedure, so a test can run
//     it once to learn the total T and then crash it at every K = 0..T;
//   * DropUnsyncedData(): make the real files on disk look like what a power
//     loss right now could leave behind (see "The model" below).
//
// Mutating operations: NewWritableFile, NewExclusiveFile, Append, Sync,
// Close, Rename, RenameNoReplace, RemoveFile, CreateDir, RemoveDir, SyncDir,
// SyncFilesystem (counted as a SyncDir), TouchMtime. Reads (ReadFile, Stat, ListDir), LockFile and NowSeconds are
// never counted and never fail, even after a crash, so a test can inspect
// the store with the same env.
//
// A typical crash loop:
//
//   FaultInjectionEnv env(Env::Default());
//   RunProcedure(&env);                       // once, no faults
//   const int64_t total = env.mutating_ops();
//   for (int64_t k = 0; k <= total; ++k) {
//     ResetFolder();  env.ResetState();
//     env.CrashAfter(k);
//     (void)RunProcedure(&env);               // fails at step k + 1
//     ASSERT_TRUE(env.DropUnsyncedData().ok());  // power loss; also reboots
//     CheckInvariants(Env::Default());
//   }
//
// The model (what survives a power loss). Only operations made through this
// env are tracked; files it never wrote are assumed durable as they are.
//   * File contents: each file written through this env survives with the
//     length it had at its last successful WritableFile::Sync(); a file never
//     synced keeps 0 bytes. (Bytes before that length are assumed intact; a
//     torn write never leaves garbage in the synced prefix.) Opening an
//     existing file with NewWritableFile truncates it, and that truncation
//     counts as unsynced: the file is reduced to 0 bytes, not restored.
//   * New names: a file created here, or renamed into place, keeps its name
//     only if its parent folder was SyncDir'ed afterwards. Otherwise a created
//     file is deleted, and a rename is undone.
//   * Renames (Rename, RenameNoReplace; files and whole folders): a rename is
//     durable once the folder of its target was SyncDir'ed after it.
//     DropUnsyncedData undoes the other renames in reverse order, moving the
//     entry back to its old name; a file that the rename replaced is put back
//     with the content it had then. Renaming a folder carries the tracked
//     state of every file under it, both ways. (Simplification: only the
//     target folder matters; syncing only the source folder does not make a
//     rename durable here. If the old name has since been taken by another
//     entry, a renamed file is deleted and a renamed folder stays where it
//     is, instead of being moved back.)
//   * Simplifications, all on the optimistic side: CreateDir, RemoveDir,
//     RemoveFile and TouchMtime are durable as soon as they return; files
//     that existed before this env touched them are durable as they are;
//     SyncDir of a folder makes the entries in that folder durable even when
//     the folder's own entry in its parent was never synced.
//
// After DropUnsyncedData() the env "reboots": tracking is cleared (everything
// now on disk counts as durable), every armed fault is disarmed, the crash is
// over and the op counter restarts at 0.
//
// Thread safety: all methods are thread-safe. A WritableFile it returns is
// used by one thread at a time, like any other.
// REQUIRES: the target Env works on real paths of the local filesystem
// (DropUnsyncedData truncates files with truncate(2)).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "storage/env.h"

namespace cairn::storage {

class FaultInjectionEnv : public EnvWrapper {
 public:
  // The kinds of mutating operations, for FailNth().
  enum class Op {
    kNewFile,  // NewWritableFile and NewExclusiveFile
    kAppend,
    kSync,  // WritableFile::Sync
    kClose,
    kRename,  // Rename and RenameNoReplace
    kRemoveFile,
    kCreateDir,
    kRemoveDir,
    kSyncDir,
    kTouchMtime,
  };
  static constexpr int kOpKinds = 10;

  // REQUIRES: `target` outlives this env.
  explicit FaultInjectionEnv(Env* target);
  ~FaultInjectionEnv() override;
  FaultInjectionEnv(const FaultInjectionEnv&) = delete;
  FaultInjectionEnv& operator=(const FaultInjectionEnv&) = delete;

  // The `n`th call (n >= 1) of kind `op` from now fails with IOError and
  // changes nothing; later calls succeed again. One armed failure per kind;
  // arming again replaces it.
  void FailNth(Op op, int64_t n);
  void FailNthAppend(int64_t n) { FailNth(Op::kAppend, n); }
  void FailNthSync(int64_t n) { FailNth(Op::kSync, n); }

  // Mutating operations 1..k from now succeed; operation k + 1 and every
  // later one fail with IOError("simulated crash"). k = 0 fails the next one.
  void CrashAfter(int64_t k);
  // True once an operation failed because of CrashAfter.
  bool crashed() const;

  // Disarms FailNth and CrashAfter and clears crashed(); keeps tracking.
  void ClearFaults();
  // ClearFaults(), forget all tracked state and restart the op counter:
  // a fresh env over the same target.
  void ResetState();

  // Mutating operations attempted since construction or the last
  // ResetState()/DropUnsyncedData(), including those that failed.
  int64_t mutating_ops() const;
  // One line per counted operation ("Rename a -> b"), in order; handy in
  // failure messages of crash loops.
  std::vector<std::string> op_log() const;

  // Simulates the power loss (see the model in the header comment) against
  // the files on disk, then reboots the env (ResetState()). Returns the first
  // error of the underlying filesystem, if any.
  Status DropUnsyncedData();

  // Makes NowSeconds() return `now` (nullopt: the target's clock).
  void SetNowSeconds(std::optional<int64_t> now);

  // --- Env ---
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  Result<std::unique_ptr<WritableFile>> NewExclusiveFile(const std::string& path) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status RenameNoReplace(const std::string& from, const std::string& to) override;
  Status RemoveFile(const std::string& path) override;
  Status CreateDir(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  // Counted (and failed by FailNth) as a kSyncDir. Makes everything tracked
  // durable: every file at its current size, every name, every rename.
  Status SyncFilesystem(const std::string& path) override;
  Status TouchMtime(const std::string& path) override;
  int64_t NowSeconds() override;

 private:
  struct FileState;
  struct RenameRecord;
  class TrackedFile;

  // Counts one mutating operation and decides whether it fails.
  Status BeginOpLocked(Op op, const std::string& what);  // REQUIRES: mu_ held
  Result<std::unique_ptr<WritableFile>> NewFile(const std::string& path, bool exclusive);
  Status DoRename(const std::string& from, const std::string& to, bool no_replace);
  void MovePathsLocked(const std::string& from, const std::string& to);
  Status DropLocked();
  void ResetLocked();

  mutable std::mutex mu_;
  int64_t ops_ = 0;                                          // GUARDED_BY(mu_)
  std::vector<std::string> log_;                             // GUARDED_BY(mu_)
  int64_t fail_countdown_[kOpKinds] = {};                    // GUARDED_BY(mu_); 0 = off
  std::optional<int64_t> crash_countdown_;                   // GUARDED_BY(mu_)
  bool crashed_ = false;                                     // GUARDED_BY(mu_)
  std::optional<int64_t> now_;                               // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<FileState>> files_;  // GUARDED_BY(mu_); by path
  std::vector<RenameRecord> renames_;                        // GUARDED_BY(mu_); not yet durable
};

}  // namespace cairn::storage
