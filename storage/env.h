#pragma once

// Env: the one small filesystem interface every byte of a datastore goes through.
//
// Modelled on LevelDB's Env. The POSIX implementation is Env::Default(); tests
// wrap it (EnvWrapper) to fail a write, drop what was not fsynced, or stop at
// step N — that is how Cairn's crash tests are written.
//
// Paths are plain strings handed to the OS; callers validate names that come
// from outside (storage/names.h) before building a path.
//
// Thread safety: every Env method may be called from many threads at once.
// A WritableFile is used by one thread at a time.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "storage/status.h"

namespace cairn::storage {

struct FileInfo {
  uint64_t size = 0;
  int64_t mtime_ns = 0;  // nanoseconds since the Unix epoch
  bool is_dir = false;
};

// A file being written sequentially. Close() or destruction releases it;
// destruction without Close() drops any error.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::string_view data) = 0;
  // Makes every appended byte durable (fdatasync).
  virtual Status Sync() = 0;
  // Hint after a successful Sync(): the bytes will not be read back soon, so
  // the page cache need not keep them. Best effort; changes no data.
  virtual void DropCache() {}
  virtual Status Close() = 0;
};

// An exclusive advisory lock; released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The POSIX environment. Never null; lives as long as the process.
  static Env* Default();

  // Creates `path`, or truncates it if it exists.
  virtual Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;
  // Creates `path`; AlreadyExists if it is there. Used for temp names so two
  // writers never share one file.
  virtual Result<std::unique_ptr<WritableFile>> NewExclusiveFile(const std::string& path) = 0;
  // Reads the whole file into *out. A file larger than `max_size` is not read
  // and gives Corruption: a lying or hostile file never makes a huge allocation.
  virtual Status ReadFile(const std::string& path, std::string* out, uint64_t max_size) = 0;
  // Reads at most the first `n` bytes of the file into *out (fewer when the
  // file is shorter). NotFound when absent.
  virtual Status ReadFileHead(const std::string& path, std::string* out, size_t n) = 0;
  // NotFound when absent. Does not follow a final symlink.
  virtual Result<FileInfo> Stat(const std::string& path) = 0;
  // Atomically replaces `to` with `from` (rename(2)).
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Atomic rename that fails with AlreadyExists when `to` exists.
  virtual Status RenameNoReplace(const std::string& from, const std::string& to) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  // AlreadyExists when the directory is there already.
  virtual Status CreateDir(const std::string& path) = 0;
  // REQUIRES: the directory is empty.
  virtual Status RemoveDir(const std::string& path) = 0;
  // Names in `path`, without "." and "..", in no particular order.
  virtual Status ListDir(const std::string& path, std::vector<std::string>* names) = 0;
  // Makes the directory's entries (creates, renames, removes) durable.
  virtual Status SyncDir(const std::string& path) = 0;
  // Sets the file's mtime to now.
  virtual Status TouchMtime(const std::string& path) = 0;
  // Makes everything written to the file system that holds `path` durable
  // (syncfs(2)): file contents, new names, renames — of every file on it,
  // whoever wrote them. One call instead of an fsync per file; costs what
  // the file system has dirty, which on a shared disk may be more than ours.
  virtual Status SyncFilesystem(const std::string& path);
  // Takes an exclusive lock on `path` (created if missing). Busy when another
  // process or another Env user holds it.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
  // Seconds since the Unix epoch; wrappers may fake it.
  virtual int64_t NowSeconds();
};

// Forwards every call to another Env; override what a test wants to change.
class EnvWrapper : public Env {
 public:
  // REQUIRES: `target` outlives this wrapper.
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& p) override {
    return target_->NewWritableFile(p);
  }
  Result<std::unique_ptr<WritableFile>> NewExclusiveFile(const std::string& p) override {
    return target_->NewExclusiveFile(p);
  }
  Status ReadFile(const std::string& p, std::string* out, uint64_t max_size) override {
    return target_->ReadFile(p, out, max_size);
  }
  Status ReadFileHead(const std::string& p, std::string* out, size_t n) override {
    return target_->ReadFileHead(p, out, n);
  }
  Result<FileInfo> Stat(const std::string& p) override { return target_->Stat(p); }
  Status Rename(const std::string& f, const std::string& t) override {
    return target_->Rename(f, t);
  }
  Status RenameNoReplace(const std::string& f, const std::string& t) override {
    return target_->RenameNoReplace(f, t);
  }
  Status RemoveFile(const std::string& p) override { return target_->RemoveFile(p); }
  Status CreateDir(const std::string& p) override { return target_->CreateDir(p); }
  Status RemoveDir(const std::string& p) override { return target_->RemoveDir(p); }
  Status ListDir(const std::string& p, std::vector<std::string>* n) override {
    return target_->ListDir(p, n);
  }
  Status SyncDir(const std::string& p) override { return target_->SyncDir(p); }
  Status TouchMtime(const std::string& p) override { return target_->TouchMtime(p); }
  Status SyncFilesystem(const std::string& p) override { return target_->SyncFilesystem(p); }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& p) override {
    return target_->LockFile(p);
  }
  int64_t NowSeconds() override { return target_->NowSeconds(); }

 private:
  Env* target_;
};

// --- Helpers built only on the interface above ---

// "a/b" from ("a", "b"); tolerates a trailing '/' on `dir`.
std::string JoinPath(std::string_view dir, std::string_view name);
// "a/b" for "a/b/c"; "." for "c".
std::string DirName(std::string_view path);

// Durable whole-file write: `<path>.tmp.<unique>` → append → fsync → close →
// rename over `path` → fsync of the folder when `sync_dir`. On any failure the
// temp file is removed (best effort) and `path` is untouched.
Status WriteFileAtomic(Env* env, const std::string& path, std::string_view data, bool sync_dir);

// A name unique within this process and unlikely across processes:
// "<prefix>.tmp.<pid>.<counter>".
std::string TempName(std::string_view prefix);

// Like mkdir -p; OK when it exists already as a directory.
Status CreateDirAll(Env* env, const std::string& path);
// Removes a file or a directory tree. NotFound is not an error.
Status RemoveAll(Env* env, const std::string& path);

}  // namespace cairn::storage
