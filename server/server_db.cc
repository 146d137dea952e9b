#include "server/server_db.h"

#include "storage/env.h"
#include "storage/names.h"
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
    R"sql(
CREATE TABLE store_settings(store TEXT PRIMARY KEY, verify_new INTEGER NOT NULL);
)sql",
    // A finished task's structured result (JSON text; empty for none).
    R"sql(
ALTER TABLE tasks ADD COLUMN result TEXT NOT NULL DEFAULT '';
)sql",
    // Overdue groups announced (server/overdue.h): one row per group, the
    // episode (its newest snapshot's time) last announced.
    R"sql(
CREATE TABLE overdue_notices(store TEXT NOT NULL, grp TEXT NOT NULL,
  last_backup INTEGER NOT NULL, announced INTEGER NOT NULL, PRIMARY KEY (store, grp));
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

storage::Result<std::unique_ptr<StoreSettings>> StoreSettings::Open(const std::string& data_dir) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db, OpenServerDb(data_dir));
  return std::unique_ptr<StoreSettings>(new StoreSettings(db));
}

StoreSettings::~StoreSettings() { sqlite3_close(db_); }

storage::Result<bool> StoreSettings::VerifyNew(const std::string& store) {
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "SELECT verify_new FROM store_settings WHERE store = ?");
  st.Text(1, store);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row && st.ColInt(0) != 0;
}

storage::Status StoreSettings::SetVerifyNew(const std::string& store, bool on) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store));
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "INSERT INTO store_settings (store, verify_new) VALUES (?, ?) "
                        "ON CONFLICT (store) DO UPDATE SET verify_new = excluded.verify_new");
  st.Text(1, store).Int(2, on ? 1 : 0);
  return st.Run();
}

}  // namespace cairn::server
