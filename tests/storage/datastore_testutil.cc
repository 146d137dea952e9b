#include "tests/storage/datastore_testutil.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "storage/chunk_store.h"
#include "storage/datastore.h"
#include "storage/env.h"

namespace cairn::storage {
namespace {

constexpr char kChunks[] = ".chunks";

// Spare `.chunks` trees, each in its own folder below one temp folder
// ("cairn_spare_chunks.<pid>.XXXXXX") that is removed when the process exits.
class Pool {
 public:
  ~Pool() {
    if (!base_.empty()) (void)RemoveAll(Env::Default(), base_);
  }

  // Path of a spare, empty `.chunks` tree; the caller moves it away.
  Result<std::string> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      std::string chunks = free_.back();
      free_.pop_back();
      return chunks;
    }
    CAIRN_ASSIGN_OR_RETURN(std::string slot, NewSlotLocked());
    CAIRN_RETURN_IF_ERROR(ChunkStore::Create(Env::Default(), slot));
    return JoinPath(slot, kChunks);
  }

  // Moves the empty `.chunks` tree at `chunks` into the pool.
  Status Give(const std::string& chunks) {
    std::lock_guard<std::mutex> lock(mu_);
    CAIRN_ASSIGN_OR_RETURN(std::string slot, NewSlotLocked());
    const std::string to = JoinPath(slot, kChunks);
    CAIRN_RETURN_IF_ERROR(Env::Default()->Rename(chunks, to));
    free_.push_back(to);
    return Status::OK();
  }

 private:
  Result<std::string> NewSlotLocked() {
    if (base_.empty()) {
      RemoveStaleLocked();
      std::string tmpl = JoinPath(::testing::TempDir(), std::string(kPrefix) +
                                                            std::to_string(::getpid()) +
                                                            ".XXXXXX");
      if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno("mkdtemp", errno);
      base_ = tmpl;
    }
    std::string slot = JoinPath(base_, std::to_string(made_++));
    CAIRN_RETURN_IF_ERROR(Env::Default()->CreateDir(slot));
    return slot;
  }

  // Spare trees of test processes that were killed (their destructor never
  // ran) would pile up in the temp folder, 65536 folders each.
  static void RemoveStaleLocked() {
    Env* env = Env::Default();
    std::vector<std::string> names;
    if (!env->ListDir(::testing::TempDir(), &names).ok()) return;
    for (const auto& n : names) {
      if (n.rfind(kPrefix, 0) != 0) continue;
      const std::string rest = n.substr(std::strlen(kPrefix));
      const size_t dot = rest.find('.');
      if (dot == 0 || dot == std::string::npos) continue;
      char* end = nullptr;
      const long pid = std::strtol(rest.c_str(), &end, 10);
      if (end != rest.c_str() + dot || pid <= 0) continue;
      if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
      (void)RemoveAll(env, JoinPath(::testing::TempDir(), n));
    }
  }

  static constexpr char kPrefix[] = "cairn_spare_chunks.";

  std::mutex mu_;
  std::string base_;               // GUARDED_BY(mu_)
  std::vector<std::string> free_;  // GUARDED_BY(mu_); paths of spare .chunks trees
  int made_ = 0;                   // GUARDED_BY(mu_)
};

Pool& ThePool() {
  static Pool pool;
  return pool;
}

}  // namespace

Status TestDatastores::Create(const std::string& path) {
  Env* env = Env::Default();
  if (env->Stat(path).ok()) return Status::AlreadyExists(path + ": exists");
  CAIRN_ASSIGN_OR_RETURN(std::string spare, ThePool().Take());
  CAIRN_RETURN_IF_ERROR(env->CreateDir(path));
  CAIRN_RETURN_IF_ERROR(env->Rename(spare, JoinPath(path, kChunks)));
  return Datastore::Create(env, path);
}

Status TestDatastores::Remove(const std::string& path) {
  Env* env = Env::Default();
  const std::string chunks = JoinPath(path, kChunks);
  auto st = env->Stat(chunks);
  if (st.ok() && st->is_dir) {
    // Empty every prefix folder (chunks, temp and bad files); keep the folders.
    std::vector<std::string> prefixes;
    CAIRN_RETURN_IF_ERROR(env->ListDir(chunks, &prefixes));
    for (const auto& p : prefixes) {
      const std::string dir = JoinPath(chunks, p);
      std::vector<std::string> names;
      if (!env->ListDir(dir, &names).ok()) {
        CAIRN_RETURN_IF_ERROR(RemoveAll(env, dir));  // not a folder
        continue;
      }
      for (const auto& n : names) CAIRN_RETURN_IF_ERROR(RemoveAll(env, JoinPath(dir, n)));
    }
    CAIRN_RETURN_IF_ERROR(ThePool().Give(chunks));
  }
  return RemoveAll(env, path);
}

}  // namespace cairn::storage
