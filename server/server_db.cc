#include "server/server_db.h"

#include "storage/env.h"
#include "storage/sqlite_db.h"

namespace cairn::server {
namespace {

// Migration i takes the schema from version i to i + 1. Append only.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE tasks(
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, store TEXT NOT NULL, auth_id TEXT NOT NULL,
  start INTEGER NOT NULL, end INTEGER NOT NULL, state TEXT NOT NULL, summary TEXT NOT NULL);
CREATE INDEX tasks_start ON tasks(start);
CREATE TABLE jobs(
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, store TEXT NOT NULL, schedule TEXT NOT NULL,
  options TEXT NOT NULL, enabled INTEGER NOT NULL, created INTEGER NOT NULL,
  last_run INTEGER NOT NULL);
)sql",
};

}  // namespace

storage::Result<sqlite3*> OpenServerDb(const std::string& data_dir) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db,
                         storage::OpenDatabase(storage::JoinPath(data_dir, "server.db")));
  storage::Status s = storage::Migrate(db, kMigrations, "server database");
  if (!s.ok()) {
    sqlite3_close(db);
    return s;
  }
  return db;
}

}  // namespace cairn::server
