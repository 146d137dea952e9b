#pragma once

// <data>/server.db: the server's own state that no datastore folder can
// rebuild — tasks, jobs, settings and remotes. (The catalog, cairn.db, indexes the datastores;
// auth.db holds users, tokens and roles.) Versioned with PRAGMA user_version.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "storage/mutex.h"
#include "storage/names.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

// Opens (creating and migrating) <data_dir>/server.db. The caller owns the
// connection (sqlite3_close).
storage::Result<sqlite3*> OpenServerDb(const std::string& data_dir);

// A group whose newest snapshot is older than this is stale (26 hours: a
// daily backup that is a couple of hours late is not yet alarming).
inline constexpr int64_t kDefaultStaleAfterSeconds = 26 * 3600;
inline constexpr int64_t kMaxStaleAfterSeconds = int64_t{10} * 365 * 86400;

// When the groups of one store count as stale: the store's value, and the
// groups that have their own.
struct StaleLimits {
  int64_t store = kDefaultStaleAfterSeconds;
  std::map<std::string, int64_t> groups;  // GroupRef::ToString() → seconds
  int64_t For(const std::string& group) const {
    auto it = groups.find(group);
    return it != groups.end() ? it->second : store;
  }
};

// Per-datastore settings kept in server.db. Thread safety: thread-safe.
class StoreSettings {
 public:
  static storage::Result<std::unique_ptr<StoreSettings>> Open(const std::string& data_dir);
  ~StoreSettings();
  // "Verify new snapshots right after backup" (default off).
  storage::Result<bool> VerifyNew(const std::string& store);
  storage::Status SetVerifyNew(const std::string& store, bool on);
  // Seconds after its newest snapshot that a group of `store` counts as
  // stale (default kDefaultStaleAfterSeconds).
  storage::Result<int64_t> StaleAfter(const std::string& store);
  // InvalidArgument unless 60 <= seconds <= kMaxStaleAfterSeconds (10 years).
  storage::Status SetStaleAfter(const std::string& store, int64_t seconds);
  // Groups of `store` with their own stale-after (GroupRef::ToString() →
  // seconds); the others use the store's.
  storage::Result<std::map<std::string, int64_t>> GroupStaleAfter(const std::string& store);
  // Both of the above.
  storage::Result<StaleLimits> StaleLimitsOf(const std::string& store);
  // 0 removes the group's own value. InvalidArgument for a bad name or
  // seconds outside 60..kMaxStaleAfterSeconds.
  storage::Status SetGroupStaleAfter(const std::string& store, const storage::GroupRef& group,
                                     int64_t seconds);

 private:
  explicit StoreSettings(sqlite3* db) : db_(db) {}
  Mutex mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(mu_);
};

}  // namespace cairn::server
