#include "server/group_usage.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "server/server_db.h"
#include "storage/chunk_store.h"
#include "storage/fixed_index.h"
#include "storage/sqlite_db.h"

namespace cairn::server {
namespace {

using storage::Digest;
using storage::GroupRef;

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool IsIndex(const std::string& name) {
  return name.size() > 5 && name.compare(name.size() - 5, 5, ".fidx") == 0;
}

// Calls `fn` with every digest of every index of `group`'s snapshots (as
// the catalog lists them). A snapshot gone meanwhile is skipped; any other
// failure to read an index is returned.
Status ForEachDigest(storage::Catalog& catalog, const std::string& store_name,
                     storage::Datastore& store, const GroupRef& group,
                     const std::atomic<bool>& cancel, const std::function<void(const Digest&)>& fn,
                     uint64_t* logical_bytes = nullptr) {
  CAIRN_ASSIGN_OR_RETURN(auto snapshots, catalog.ListSnapshots(store_name, group));
  for (const storage::SnapshotRow& snap : snapshots) {
    if (logical_bytes != nullptr) *logical_bytes += snap.size;
    for (const storage::ArchiveInfo& archive : snap.archives) {
      if (cancel.load()) return Status::Busy("stopping");
      if (!IsIndex(archive.name)) continue;
      CAIRN_ASSIGN_OR_RETURN(std::string path, store.ArchivePath(snap.ref, archive.name));
      auto index = storage::FixedIndex::Read(store.env(), path);
      if (!index.ok()) {
        if (index.status().IsNotFound() && store.ReadManifest(snap.ref).status().IsNotFound()) {
          break;  // deleted since the catalog listed it
        }
        return index.status().WithContext(snap.ref.ToString() + "/" + archive.name);
      }
      for (uint64_t i = 0; i < index->chunk_count(); ++i) fn(index->digest(i));
    }
  }
  return Status::OK();
}

}  // namespace

Result<UniqueBytes> ComputeUniqueBytes(storage::Catalog& catalog, const std::string& store_name,
                                       storage::Datastore& store,
                                       const std::atomic<bool>& cancel, uint64_t* logical_bytes) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<storage::GroupRow> groups, catalog.ListGroups(store_name));
  if (logical_bytes != nullptr) *logical_bytes = 0;
  // Pass 1: (prefix, group) for every distinct chunk of every group.
  std::vector<std::pair<uint64_t, uint32_t>> pairs;
  std::vector<bool> readable(groups.size(), true);
  for (uint32_t g = 0; g < groups.size(); ++g) {
    std::vector<uint64_t> prefixes;
    Status s = ForEachDigest(catalog, store_name, store, groups[g].group, cancel,
                             [&](const Digest& d) { prefixes.push_back(d.Prefix64()); },
                             logical_bytes);
    if (cancel.load()) return Status::Busy("stopping");
    if (!s.ok()) {
      spdlog::warn("unique bytes of {} in {}: {}", groups[g].group.ToString(), store_name,
                   s.ToString());
      readable[g] = false;
    }
    std::sort(prefixes.begin(), prefixes.end());
    prefixes.erase(std::unique(prefixes.begin(), prefixes.end()), prefixes.end());
    for (uint64_t p : prefixes) pairs.emplace_back(p, g);
  }
  std::sort(pairs.begin(), pairs.end());
  // The prefixes exactly one group references, per group (sorted).
  std::vector<std::vector<uint64_t>> unique(groups.size());
  for (size_t i = 0; i < pairs.size();) {
    size_t j = i + 1;
    while (j < pairs.size() && pairs[j].first == pairs[i].first) ++j;
    if (j == i + 1) unique[pairs[i].second].push_back(pairs[i].first);
    i = j;
  }
  pairs.clear();
  pairs.shrink_to_fit();
  // Pass 2: the size on disk of each unique chunk, once.
  UniqueBytes out;
  storage::ChunkStore* chunks = store.chunk_store();
  for (uint32_t g = 0; g < groups.size(); ++g) {
    if (!readable[g]) continue;
    uint64_t bytes = 0;
    if (!unique[g].empty()) {
      std::vector<bool> counted(unique[g].size(), false);
      Status s = ForEachDigest(catalog, store_name, store, groups[g].group, cancel,
                               [&](const Digest& d) {
        auto it = std::lower_bound(unique[g].begin(), unique[g].end(), d.Prefix64());
        if (it == unique[g].end() || *it != d.Prefix64()) return;
        const size_t k = static_cast<size_t>(it - unique[g].begin());
        if (counted[k]) return;
        counted[k] = true;
        if (auto info = store.env()->Stat(chunks->ChunkPath(d)); info.ok()) bytes += info->size;
      });
      if (cancel.load()) return Status::Busy("stopping");
      if (!s.ok()) continue;
    }
    out[groups[g].group.ToString()] = bytes;
  }
  return out;
}

// ---------------------------------------------------------------------------

Result<std::unique_ptr<GroupUsage>> GroupUsage::Open(const std::string& data_dir,
                                                     storage::Catalog* catalog, StoreFn stores,
                                                     int64_t settle_ms) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db, OpenServerDb(data_dir));
  std::unique_ptr<GroupUsage> usage(new GroupUsage(db, catalog, std::move(stores), settle_ms));
  std::map<std::string, UniqueBytes> loaded;
  {
    MutexLock lock(&usage->db_mu_);
    storage::Stmt st(db, "SELECT store, grp, unique_bytes FROM group_usage");
    while (true) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      loaded[st.ColText(0)][st.ColText(1)] = static_cast<uint64_t>(st.ColInt(2));
    }
  }
  MutexLock lock(&usage->mu_);
  usage->values_ = std::move(loaded);
  return usage;
}

GroupUsage::~GroupUsage() {
  Stop();
  MutexLock lock(&db_mu_);
  sqlite3_close(db_);
}

void GroupUsage::Start(const std::vector<std::string>& stores) {
  for (const auto& s : stores) MarkDirty(s);
  thread_ = std::thread([this] { Loop(); });
}

void GroupUsage::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cancel_.store(true);
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void GroupUsage::MarkDirty(const std::string& store) {
  MutexLock lock(&mu_);
  dirty_[store] = SteadyMs();
  cv_.SignalAll();
}

UniqueBytes GroupUsage::Get(const std::string& store) {
  MutexLock lock(&mu_);
  auto it = values_.find(store);
  return it == values_.end() ? UniqueBytes() : it->second;
}

std::optional<uint64_t> GroupUsage::LogicalBytes(const std::string& store) {
  MutexLock lock(&mu_);
  auto it = logical_.find(store);
  if (it == logical_.end()) return std::nullopt;
  return it->second;
}

int64_t GroupUsage::Computations(const std::string& store) {
  MutexLock lock(&mu_);
  auto it = computations_.find(store);
  return it == computations_.end() ? 0 : it->second;
}

std::optional<std::string> GroupUsage::NextDue() {
  MutexLock lock(&mu_);
  while (!stopping_) {
    int64_t wait_ms = 60'000;
    const int64_t now = SteadyMs();
    for (const auto& [store, marked] : dirty_) {
      if (now - marked >= settle_ms_) {
        std::string due = store;
        dirty_.erase(due);
        return due;
      }
      wait_ms = std::min(wait_ms, settle_ms_ - (now - marked));
    }
    cv_.WaitFor(&mu_, std::chrono::milliseconds(std::max<int64_t>(wait_ms, 1)));
  }
  return std::nullopt;
}

void GroupUsage::Loop() {
  // The lowest CPU priority for this thread only (Linux: nice is per thread).
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
  while (auto store = NextDue()) Recompute(*store);
}

void GroupUsage::Recompute(const std::string& store) {
  auto ds = stores_(store);
  if (!ds.ok()) return;  // removed meanwhile
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t logical = 0;
  auto values = ComputeUniqueBytes(*catalog_, store, **ds, cancel_, &logical);
  if (!values.ok()) {
    if (!cancel_.load()) {
      spdlog::warn("unique bytes of {}: {}", store, values.status().ToString());
    }
    return;
  }
  if (Status s = Save(store, *values, static_cast<int64_t>(std::time(nullptr))); !s.ok()) {
    spdlog::warn("unique bytes of {}: saving: {}", store, s.ToString());
  }
  spdlog::info("unique bytes of {} groups of {} computed in {} ms", values->size(), store,
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - t0)
                   .count());
  MutexLock lock(&mu_);
  values_[store] = std::move(*values);
  logical_[store] = logical;
  ++computations_[store];
}

Status GroupUsage::Save(const std::string& store, const UniqueBytes& values, int64_t now) {
  MutexLock lock(&db_mu_);
  sqlite3* const db = db_;
  CAIRN_RETURN_IF_ERROR(storage::Exec(db, "BEGIN IMMEDIATE"));
  Status s = [&]() -> Status {
    storage::Stmt del(db, "DELETE FROM group_usage WHERE store = ?");
    del.Text(1, store);
    CAIRN_RETURN_IF_ERROR(del.Run());
    for (const auto& [group, bytes] : values) {
      storage::Stmt ins(db, "INSERT INTO group_usage (store, grp, unique_bytes, computed) "
                             "VALUES (?, ?, ?, ?)");
      ins.Text(1, store).Text(2, group).Int(3, static_cast<int64_t>(bytes)).Int(4, now);
      CAIRN_RETURN_IF_ERROR(ins.Run());
    }
    return Status::OK();
  }();
  CAIRN_RETURN_IF_ERROR(storage::Exec(db, s.ok() ? "COMMIT" : "ROLLBACK"));
  return s;
}

}  // namespace cairn::server
