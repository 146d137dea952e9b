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
    // When a store's groups count as stale (seconds; 0 = the default).
    R"sql(
ALTER TABLE store_settings ADD COLUMN stale_after INTEGER NOT NULL DEFAULT 0;
)sql",
    // Per group: when it counts as stale, and the bytes deleting it would
    // free as last computed (server/group_usage.h); `grp` is GroupRef::ToString().
    R"sql(
CREATE TABLE group_settings(
  store TEXT NOT NULL, grp TEXT NOT NULL, stale_after INTEGER NOT NULL,
  PRIMARY KEY(store, grp));
CREATE TABLE group_usage(
  store TEXT NOT NULL, grp TEXT NOT NULL, unique_bytes INTEGER NOT NULL,
  computed INTEGER NOT NULL, PRIMARY KEY(store, grp));
)sql",
    // Overdue groups announced (server/overdue.h): one row per group, the
    // episode (its newest snapshot's time) last announced.
    R"sql(
CREATE TABLE overdue_notices(store TEXT NOT NULL, grp TEXT NOT NULL,
  last_backup INTEGER NOT NULL, announced INTEGER NOT NULL, PRIMARY KEY (store, grp));
)sql",
    // Other cairn-servers that sync jobs pull from or push to
    // (server/remotes.h). `secret` is the remote token's secret, needed to
    // talk to it; it is never shown again.
    R"sql(
CREATE TABLE remotes(name TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,
  fingerprint TEXT NOT NULL, auth_id TEXT NOT NULL, secret TEXT NOT NULL,
  created INTEGER NOT NULL);
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

storage::Result<int64_t> StoreSettings::StaleAfter(const std::string& store) {
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "SELECT stale_after FROM store_settings WHERE store = ?");
  st.Text(1, store);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  const int64_t v = row ? st.ColInt(0) : 0;
  return v > 0 ? v : kDefaultStaleAfterSeconds;
}

storage::Result<StaleLimits> StoreSettings::StaleLimitsOf(const std::string& store) {
  StaleLimits out;
  CAIRN_ASSIGN_OR_RETURN(out.store, StaleAfter(store));
  CAIRN_ASSIGN_OR_RETURN(out.groups, GroupStaleAfter(store));
  return out;
}

storage::Result<std::map<std::string, int64_t>> StoreSettings::GroupStaleAfter(
    const std::string& store) {
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "SELECT grp, stale_after FROM group_settings WHERE store = ?");
  st.Text(1, store);
  std::map<std::string, int64_t> out;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out[st.ColText(0)] = st.ColInt(1);
  }
  return out;
}

storage::Status StoreSettings::SetGroupStaleAfter(const std::string& store,
                                                  const storage::GroupRef& group,
                                                  int64_t seconds) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store));
  CAIRN_RETURN_IF_ERROR(group.Validate());
  if (seconds != 0 && (seconds < 60 || seconds > kMaxStaleAfterSeconds)) {
    return storage::Status::InvalidArgument("stale-after must be 60 to 315360000 seconds");
  }
  MutexLock lock(&mu_);
  if (seconds == 0) {
    storage::Stmt del(db_, "DELETE FROM group_settings WHERE store = ? AND grp = ?");
    del.Text(1, store).Text(2, group.ToString());
    return del.Run();
  }
  storage::Stmt st(db_, "INSERT INTO group_settings (store, grp, stale_after) VALUES (?, ?, ?) "
                        "ON CONFLICT (store, grp) DO UPDATE SET stale_after = excluded.stale_after");
  st.Text(1, store).Text(2, group.ToString()).Int(3, seconds);
  return st.Run();
}

storage::Status StoreSettings::SetStaleAfter(const std::string& store, int64_t seconds) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kStore, store));
  if (seconds < 60 || seconds > kMaxStaleAfterSeconds) {
    return storage::Status::InvalidArgument("stale-after must be 60 to 315360000 seconds");
  }
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "INSERT INTO store_settings (store, verify_new, stale_after) "
                        "VALUES (?, 0, ?) "
                        "ON CONFLICT (store) DO UPDATE SET stale_after = excluded.stale_after");
  st.Text(1, store).Int(2, seconds);
  return st.Run();
}

}  // namespace cairn::server
