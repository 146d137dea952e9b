#pragma once

// <data>/server.db: the server's own state that no datastore folder can
// rebuild — tasks and jobs. (The catalog, cairn.db, indexes the datastores;
// auth.db holds users, tokens and roles.) Versioned with PRAGMA user_version.

#include <memory>
#include <string>

#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

// Opens (creating and migrating) <data_dir>/server.db. The caller owns the
// connection (sqlite3_close).
storage::Result<sqlite3*> OpenServerDb(const std::string& data_dir);

// Per-datastore settings kept in server.db. Thread safety: thread-safe.
class StoreSettings {
 public:
  static storage::Result<std::unique_ptr<StoreSettings>> Open(const std::string& data_dir);
  ~StoreSettings();
  // "Verify new snapshots right after backup" (default off).
  storage::Result<bool> VerifyNew(const std::string& store);
  storage::Status SetVerifyNew(const std::string& store, bool on);

 private:
  explicit StoreSettings(sqlite3* db) : db_(db) {}
  Mutex mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(mu_);
};

}  // namespace cairn::server
