#pragma once

// <data>/server.db: the server's own state that no datastore folder can
// rebuild — tasks and jobs. (The catalog, cairn.db, indexes the datastores;
// auth.db holds users, tokens and roles.) Versioned with PRAGMA user_version.

#include <string>

#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

// Opens (creating and migrating) <data_dir>/server.db. The caller owns the
// connection (sqlite3_close).
storage::Result<sqlite3*> OpenServerDb(const std::string& data_dir);

}  // namespace cairn::server
