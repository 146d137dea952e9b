#include "tests/storage/fault_env_testutil.h"

#include <unistd.h>

#include <cerrno>
#include <utility>

namespace cairn::storage {
namespace {

// One spelling per path, so that "a//b/" and "a/b" meet in the maps.
std::string Normalize(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      if (out.empty() || out.back() != '/') out += '/';
      ++i;
      continue;
    }
    size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(i, end - i);
    if (seg != ".") {
      out += seg;
    }
    i = end;
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out.empty()) out = ".";
  return out;
}

// True when `path` is `dir` or lies under it.
bool IsUnder(const std::string& path, const std::string& dir) {
  if (path.size() < dir.size() || path.compare(0, dir.size(), dir) != 0) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

std::string Reparent(const std::string& path, const std::string& from, const std::string& to) {
  return to + path.substr(from.size());
}

const char* OpName(FaultInjectionEnv::Op op) {
  switch (op) {
    case FaultInjectionEnv::Op::kNewFile:
      return "NewFile";
    case FaultInjectionEnv::Op::kAppend:
      return "Append";
    case FaultInjectionEnv::Op::kSync:
      return "Sync";
    case FaultInjectionEnv::Op::kClose:
      return "Close";
    case FaultInjectionEnv::Op::kRename:
      return "Rename";
    case FaultInjectionEnv::Op::kRemoveFile:
      return "RemoveFile";
    case FaultInjectionEnv::Op::kCreateDir:
      return "CreateDir";
    case FaultInjectionEnv::Op::kRemoveDir:
      return "RemoveDir";
    case FaultInjectionEnv::Op::kSyncDir:
      return "SyncDir";
    case FaultInjectionEnv::Op::kTouchMtime:
      return "TouchMtime";
  }
  return "?";
}

}  // namespace

// What the env knows about one file it wrote (or renamed). Shared between the
// path map and the open TrackedFile, so renames of an open file keep working.
struct FaultInjectionEnv::FileState {
  std::string path;            // where it is now (normalized)
  uint64_t size = 0;           // bytes appended through this env
  uint64_t synced_size = 0;    // `size` at the last successful Sync
  bool entry_durable = false;  // its name in its folder survives a crash
};

// A rename not yet made durable by a SyncDir of `sync_dir`.
struct FaultInjectionEnv::RenameRecord {
  std::string from;      // paths follow later folder renames, so they always
  std::string to;        // name the current location
  std::string sync_dir;  // the target folder whose SyncDir makes it durable
  bool is_dir = false;
  std::shared_ptr<FileState> moved;  // files only
  bool moved_was_durable = false;    // moved->entry_durable before the rename
  // What the rename replaced at `to`, to put back when it is undone.
  std::shared_ptr<FileState> replaced;
  std::string replaced_content;
  bool replaced_dir = false;
};

class FaultInjectionEnv::TrackedFile final : public WritableFile {
 public:
  TrackedFile(FaultInjectionEnv* env, std::unique_ptr<WritableFile> base,
              std::shared_ptr<FileState> state)
      : env_(env), base_(std::move(base)), state_(std::move(state)) {}

  Status Append(std::string_view data) override {
    CAIRN_RETURN_IF_ERROR(Begin(Op::kAppend));
    CAIRN_RETURN_IF_ERROR(base_->Append(data));
    std::lock_guard<std::mutex> l(env_->mu_);
    state_->size += data.size();
    return Status::OK();
  }

  Status Sync() override {
    uint64_t size;
    {
      std::lock_guard<std::mutex> l(env_->mu_);
      CAIRN_RETURN_IF_ERROR(env_->BeginOpLocked(Op::kSync, "Sync " + state_->path));
      size = state_->size;
    }
    CAIRN_RETURN_IF_ERROR(base_->Sync());
    std::lock_guard<std::mutex> l(env_->mu_);
    state_->synced_size = size;
    return Status::OK();
  }

  Status Close() override {
    CAIRN_RETURN_IF_ERROR(Begin(Op::kClose));
    return base_->Close();
  }

 private:
  Status Begin(Op op) {
    std::lock_guard<std::mutex> l(env_->mu_);
    return env_->BeginOpLocked(op, std::string(OpName(op)) + " " + state_->path);
  }

  FaultInjectionEnv* const env_;
  std::unique_ptr<WritableFile> base_;
  std::shared_ptr<FileState> state_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* target) : EnvWrapper(target) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::FailNth(Op op, int64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  fail_countdown_[static_cast<int>(op)] = n;
}

void FaultInjectionEnv::CrashAfter(int64_t k) {
  std::lock_guard<std::mutex> l(mu_);
  crash_countdown_ = k;
}

bool FaultInjectionEnv::crashed() const {
  std::lock_guard<std::mutex> l(mu_);
  return crashed_;
}

void FaultInjectionEnv::ClearFaults() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& c : fail_countdown_) c = 0;
  crash_countdown_.reset();
  crashed_ = false;
}

void FaultInjectionEnv::ResetState() {
  std::lock_guard<std::mutex> l(mu_);
  ResetLocked();
}

void FaultInjectionEnv::ResetLocked() {
  for (auto& c : fail_countdown_) c = 0;
  crash_countdown_.reset();
  crashed_ = false;
  ops_ = 0;
  log_.clear();
  files_.clear();
  renames_.clear();
}

int64_t FaultInjectionEnv::mutating_ops() const {
  std::lock_guard<std::mutex> l(mu_);
  return ops_;
}

std::vector<std::string> FaultInjectionEnv::op_log() const {
  std::lock_guard<std::mutex> l(mu_);
  return log_;
}

void FaultInjectionEnv::SetNowSeconds(std::optional<int64_t> now) {
  std::lock_guard<std::mutex> l(mu_);
  now_ = now;
}

int64_t FaultInjectionEnv::NowSeconds() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (now_) return *now_;
  }
  return target()->NowSeconds();
}

Status FaultInjectionEnv::BeginOpLocked(Op op, const std::string& what) {
  ++ops_;
  log_.push_back(what);
  if (crash_countdown_) {
    if (*crash_countdown_ <= 0) {
      crashed_ = true;
      return Status::IOError("simulated crash: " + what);
    }
    --*crash_countdown_;
  }
  int64_t& fail = fail_countdown_[static_cast<int>(op)];
  if (fail > 0 && --fail == 0) return Status::IOError("injected failure: " + what);
  return Status::OK();
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(const std::string& path) {
  return NewFile(path, /*exclusive=*/false);
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewExclusiveFile(const std::string& path) {
  return NewFile(path, /*exclusive=*/true);
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewFile(const std::string& path,
                                                                 bool exclusive) {
  // The lock is held across the real call so that the tracked order of
  // namespace changes is the order in which they happened.
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(
      Op::kNewFile, std::string(exclusive ? "NewExclusiveFile " : "NewWritableFile ") + path));
  const std::string p = Normalize(path);
  bool entry_durable;
  auto it = files_.find(p);
  if (it != files_.end()) {
    entry_durable = it->second->entry_durable;
  } else {
    // A file that was there before this env saw it is durable as it is.
    entry_durable = target()->Stat(path).ok();
  }
  auto base = exclusive ? target()->NewExclusiveFile(path) : target()->NewWritableFile(path);
  if (!base.ok()) return base.status();
  auto state = std::make_shared<FileState>();
  state->path = p;
  state->entry_durable = entry_durable;
  files_[p] = state;
  return std::unique_ptr<WritableFile>(new TrackedFile(this, std::move(base).value(), state));
}

Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to) {
  return DoRename(from, to, /*no_replace=*/false);
}

Status FaultInjectionEnv::RenameNoReplace(const std::string& from, const std::string& to) {
  return DoRename(from, to, /*no_replace=*/true);
}

void FaultInjectionEnv::MovePathsLocked(const std::string& from, const std::string& to) {
  std::map<std::string, std::shared_ptr<FileState>> moved;
  for (auto it = files_.begin(); it != files_.end();) {
    if (IsUnder(it->first, from)) {
      it->second->path = Reparent(it->first, from, to);
      moved[it->second->path] = it->second;
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [p, st] : moved) files_[p] = st;
  for (auto& r : renames_) {
    if (IsUnder(r.from, from)) r.from = Reparent(r.from, from, to);
    if (IsUnder(r.to, from)) r.to = Reparent(r.to, from, to);
    if (IsUnder(r.sync_dir, from)) r.sync_dir = Reparent(r.sync_dir, from, to);
  }
}

Status FaultInjectionEnv::DoRename(const std::string& from, const std::string& to,
                                   bool no_replace) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(
      Op::kRename, std::string(no_replace ? "RenameNoReplace " : "Rename ") + from + " -> " + to));
  const std::string f = Normalize(from);
  const std::string t = Normalize(to);
  auto src = target()->Stat(from);
  if (!src.ok() || f == t) {
    // Let the real call report the error (or do nothing); no state changes.
    return no_replace ? target()->RenameNoReplace(from, to) : target()->Rename(from, to);
  }

  RenameRecord rec;
  rec.from = f;
  rec.to = t;
  rec.sync_dir = DirName(t);
  rec.is_dir = src->is_dir;
  if (!no_replace) {
    auto dst = target()->Stat(to);
    if (dst.ok() && dst->is_dir) {
      rec.replaced_dir = true;
    } else if (dst.ok()) {
      // Kept in memory to put back on undo: files replaced by rename are
      // manifests and indexes in practice, not large.
      Status s = target()->ReadFile(to, &rec.replaced_content, uint64_t{1} << 30);
      if (!s.ok()) return s;
      auto it = files_.find(t);
      if (it != files_.end()) {
        rec.replaced = it->second;
      } else {
        rec.replaced = std::make_shared<FileState>();
        rec.replaced->path = t;
        rec.replaced->size = rec.replaced->synced_size = rec.replaced_content.size();
        rec.replaced->entry_durable = true;
      }
    }
  }

  Status s = no_replace ? target()->RenameNoReplace(from, to) : target()->Rename(from, to);
  if (!s.ok()) return s;

  if (rec.replaced) files_.erase(t);
  if (rec.is_dir) {
    MovePathsLocked(f, t);
  } else {
    std::shared_ptr<FileState> st;
    auto it = files_.find(f);
    if (it != files_.end()) {
      st = it->second;
      files_.erase(it);
    } else {
      // Not written here: durable at its old name, with its whole content.
      st = std::make_shared<FileState>();
      st->size = st->synced_size = src->size;
      st->entry_durable = true;
    }
    rec.moved_was_durable = st->entry_durable;
    st->path = t;
    st->entry_durable = false;
    files_[t] = st;
    rec.moved = st;
  }
  renames_.push_back(std::move(rec));
  return Status::OK();
}

Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(Op::kRemoveFile, "RemoveFile " + path));
  CAIRN_RETURN_IF_ERROR(target()->RemoveFile(path));
  files_.erase(Normalize(path));
  return Status::OK();
}

Status FaultInjectionEnv::CreateDir(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(Op::kCreateDir, "CreateDir " + path));
  return target()->CreateDir(path);
}

Status FaultInjectionEnv::RemoveDir(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(Op::kRemoveDir, "RemoveDir " + path));
  return target()->RemoveDir(path);
}

Status FaultInjectionEnv::TouchMtime(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(Op::kTouchMtime, "TouchMtime " + path));
  return target()->TouchMtime(path);
}

Status FaultInjectionEnv::SyncDir(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(Op::kSyncDir, "SyncDir " + path));
  CAIRN_RETURN_IF_ERROR(target()->SyncDir(path));
  const std::string d = Normalize(path);
  for (auto& [p, st] : files_) {
    if (DirName(p) == d) st->entry_durable = true;
  }
  std::erase_if(renames_, [&](const RenameRecord& r) { return r.sync_dir == d; });
  return Status::OK();
}

Status FaultInjectionEnv::SyncFilesystem(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  CAIRN_RETURN_IF_ERROR(BeginOpLocked(Op::kSyncDir, "SyncFilesystem " + path));
  CAIRN_RETURN_IF_ERROR(target()->SyncFilesystem(path));
  // syncfs: every file's contents, every name and every rename on the file
  // system is durable now (the env tracks one file system).
  for (auto& [p, st] : files_) {
    st->synced_size = st->size;
    st->entry_durable = true;
  }
  renames_.clear();
  return Status::OK();
}

Status FaultInjectionEnv::DropUnsyncedData() {
  std::lock_guard<std::mutex> l(mu_);
  Status s = DropLocked();
  ResetLocked();
  return s;
}

Status FaultInjectionEnv::DropLocked() {
  Status first;
  auto note = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };

  // 1. Undo the renames that were never made durable, newest first, so each
  //    one finds the namespace as it left it.
  while (!renames_.empty()) {
    RenameRecord r = std::move(renames_.back());
    renames_.pop_back();
    const bool old_name_taken = target()->Stat(r.from).ok();
    if (r.is_dir) {
      auto st = target()->Stat(r.to);
      if (!st.ok() || !st->is_dir || old_name_taken) continue;
      note(target()->Rename(r.to, r.from));
      MovePathsLocked(r.to, r.from);
      if (r.replaced_dir) note(target()->CreateDir(r.to));
      continue;
    }
    auto it = files_.find(r.to);
    if (it == files_.end() || it->second != r.moved) continue;  // removed or moved on since
    files_.erase(it);
    if (old_name_taken) {
      Status rm = target()->RemoveFile(r.to);
      if (!rm.IsNotFound()) note(rm);
    } else {
      note(target()->Rename(r.to, r.from));
      r.moved->path = r.from;
      r.moved->entry_durable = r.moved_was_durable;
      files_[r.from] = r.moved;
    }
    if (r.replaced) {
      auto f = target()->NewWritableFile(r.to);
      if (!f.ok()) {
        note(f.status());
      } else {
        note((*f)->Append(r.replaced_content));
        note((*f)->Close());
      }
      r.replaced->path = r.to;
      files_[r.to] = r.replaced;
    } else if (r.replaced_dir) {
      note(target()->CreateDir(r.to));
    }
  }

  // 2. Names that never became durable disappear; the others keep what was
  //    fsynced.
  for (auto& [p, st] : files_) {
    if (!st->entry_durable) {
      Status rm = target()->RemoveFile(p);
      if (!rm.IsNotFound()) note(rm);
      continue;
    }
    auto info = target()->Stat(p);
    if (!info.ok() || info->is_dir) continue;
    if (info->size > st->synced_size) {
      if (::truncate(p.c_str(), static_cast<off_t>(st->synced_size)) != 0) {
        note(Status::FromErrno("truncate " + p, errno));
      }
    }
  }
  return first;
}

}  // namespace cairn::storage
