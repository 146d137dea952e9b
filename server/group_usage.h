#pragma once

// What deleting a group would free: its "unique bytes", the bytes on disk of
// the chunks that this group's snapshots reference and no other group's
// snapshot of the same datastore does.
//
// Finding them means reading every index of the store (as GC's mark does),
// far too slow for a request on a large store (600 groups × 1000
// snapshots). So they are computed in the background, one datastore at a
// time, on one thread at the lowest CPU priority (nice 19), and cached:
// in memory for the listings and in <data>/server.db (table `group_usage`)
// so a restart shows the last values at once.
//
// Freshness. Whatever changes what groups reference — a backup, a delete, a
// prune, a GC, a job run — calls MarkDirty(store); the store is recomputed
// once it has been quiet for `settle_ms` (a burst of backups costs one
// computation). At Start every store is marked dirty, since an offline
// command may have changed it. Until a recomputation finishes, listings show
// the values of the last one (a group not known then: none, "null").
//
// The computation (ComputeUniqueBytes): groups and their snapshots' archives
// come from the catalog, never from walking the folders; pass 1 reads each
// group's indexes and keeps the set of 8-byte digest prefixes it references
// (Digest::Prefix64), then a sort over all (prefix, group) pairs finds the
// prefixes exactly one group references. Pass 2 re-reads only the indexes of
// groups that have such prefixes and stat()s each of those chunks once for
// its size on disk. Memory: 16 bytes per (group, distinct chunk) pair at the
// peak. A prefix shared by two different digests (odds ~n/2^64) only makes
// a chunk count as shared. A snapshot deleted meanwhile is skipped; an index
// that does not read leaves its group without a value (its chunks may then
// make others' look unique until it is repaired).
//
// Thread safety: thread-safe.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "storage/catalog.h"
#include "storage/datastore.h"
#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

using storage::Result;
using storage::Status;

// Unique bytes per group (GroupRef::ToString()) of one store, as last computed.
using UniqueBytes = std::map<std::string, uint64_t>;

// Computes every group's unique bytes of `store_name` (see above). Groups
// whose indexes did not all read are left out. Aborted when `cancel` turns
// true. When `logical_bytes` is not null it gets the sum of the sizes of
// every snapshot the catalog lists (the store's logical bytes, for its dedup
// factor: kept here so a request never sums 600k rows).
// REQUIRES: `store` is the datastore `store_name` names in `catalog`.
Result<UniqueBytes> ComputeUniqueBytes(storage::Catalog& catalog, const std::string& store_name,
                                       storage::Datastore& store, const std::atomic<bool>& cancel,
                                       uint64_t* logical_bytes = nullptr);

class GroupUsage {
 public:
  // The open datastore of a name (NotFound when unknown).
  using StoreFn = std::function<Result<storage::Datastore*>(const std::string&)>;
  // Opens the cache in <data_dir>/server.db and loads it. REQUIRES:
  // `catalog` and the stores `stores` returns outlive this object (or Stop).
  static Result<std::unique_ptr<GroupUsage>> Open(const std::string& data_dir,
                                                  storage::Catalog* catalog, StoreFn stores,
                                                  int64_t settle_ms);
  ~GroupUsage();
  GroupUsage(const GroupUsage&) = delete;
  GroupUsage& operator=(const GroupUsage&) = delete;

  // Marks `stores` dirty and starts the background thread.
  void Start(const std::vector<std::string>& stores);
  // Stops the thread (a running computation is abandoned).
  void Stop();

  // The store's groups may reference other chunks now: recompute them.
  void MarkDirty(const std::string& store);
  // The values of the last computation (empty before the first).
  UniqueBytes Get(const std::string& store);
  // The store's logical bytes as of the last computation since start; unset
  // before it.
  std::optional<uint64_t> LogicalBytes(const std::string& store);
  // How many computations of `store` have finished (tests wait on it).
  int64_t Computations(const std::string& store);

 private:
  GroupUsage(sqlite3* db, storage::Catalog* catalog, StoreFn stores, int64_t settle_ms)
      : catalog_(catalog), stores_(std::move(stores)), settle_ms_(settle_ms), db_(db) {}
  void Loop();
  // The next store due (dirty and quiet for settle_ms_), waiting for one;
  // none when stopping.
  std::optional<std::string> NextDue();
  void Recompute(const std::string& store);
  Status Save(const std::string& store, const UniqueBytes& values, int64_t now);

  storage::Catalog* const catalog_;
  const StoreFn stores_;
  const int64_t settle_ms_;
  std::atomic<bool> cancel_{false};

  Mutex mu_;
  CondVar cv_;  // a store marked dirty, or stopping
  std::map<std::string, int64_t> dirty_ CAIRN_GUARDED_BY(mu_);  // store → last mark (steady ms)
  std::map<std::string, UniqueBytes> values_ CAIRN_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> logical_ CAIRN_GUARDED_BY(mu_);
  std::map<std::string, int64_t> computations_ CAIRN_GUARDED_BY(mu_);
  bool stopping_ CAIRN_GUARDED_BY(mu_) = false;

  Mutex db_mu_;
  sqlite3* const db_ CAIRN_GUARDED_BY(db_mu_);
  std::thread thread_;
};

}  // namespace cairn::server
