// Env helpers that use only the Env interface.

#include <unistd.h>

#include <atomic>

#include "storage/env.h"

namespace cairn::storage {

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty() && out.back() != '/') out += '/';
  out += name;
  return out;
}

std::string DirName(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t pos = path.rfind('/');
  if (pos == std::string_view::npos) return ".";
  if (pos == 0) return "/";
  return std::string(path.substr(0, pos));
}

std::string TempName(std::string_view prefix) {
  static std::atomic<uint64_t> counter{0};
  std::string out(prefix);
  out += ".tmp.";
  out += std::to_string(::getpid());
  out += '.';
  out += std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
  return out;
}

Status WriteFileAtomic(Env* env, const std::string& path, std::string_view data,
                       bool sync_dir) {
  const std::string tmp = TempName(path);
  auto file = env->NewExclusiveFile(tmp);
  if (!file.ok()) return file.status();
  Status s = (*file)->Append(data);
  if (s.ok()) s = (*file)->Sync();
  Status c = (*file)->Close();
  if (s.ok()) s = c;
  if (s.ok()) s = env->Rename(tmp, path);
  if (!s.ok()) {
    (void)env->RemoveFile(tmp);  // best effort; a leftover temp is harmless
    return s;
  }
  if (sync_dir) return env->SyncDir(DirName(path));
  return Status::OK();
}

Status CreateDirAll(Env* env, const std::string& path) {
  auto st = env->Stat(path);
  if (st.ok()) {
    return st->is_dir ? Status::OK() : Status::AlreadyExists(path + ": exists and is not a folder");
  }
  std::string parent = DirName(path);
  if (parent != path && parent != "." && parent != "/") {
    CAIRN_RETURN_IF_ERROR(CreateDirAll(env, parent));
  }
  Status s = env->CreateDir(path);
  if (s.IsAlreadyExists()) return Status::OK();  // raced with another creator
  return s;
}

Status RemoveAll(Env* env, const std::string& path) {
  auto st = env->Stat(path);
  if (!st.ok()) return st.status().IsNotFound() ? Status::OK() : st.status();
  if (!st->is_dir) {
    Status s = env->RemoveFile(path);
    return s.IsNotFound() ? Status::OK() : s;
  }
  std::vector<std::string> names;
  CAIRN_RETURN_IF_ERROR(env->ListDir(path, &names));
  for (const auto& n : names) CAIRN_RETURN_IF_ERROR(RemoveAll(env, JoinPath(path, n)));
  Status s = env->RemoveDir(path);
  return s.IsNotFound() ? Status::OK() : s;
}

}  // namespace cairn::storage
