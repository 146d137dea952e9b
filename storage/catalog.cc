// Catalog on SQLite's C API. Every statement is a fixed string with bound
// parameters; the only text ever formatted into SQL is the schema version, a
// constant of this file.

#include "storage/catalog.h"

#include <sqlite3.h>

#include "storage/sqlite_db.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <map>
#include <iterator>
#include <string_view>

namespace cairn::storage {
namespace {

// Migration i (0-based) takes the schema from version i to i + 1. Append
// only; never edit one that has shipped.
constexpr const char* kMigrations[] = {
    // 1: datastores, groups, snapshots, archives.
    R"sql(
CREATE TABLE datastores(
  name TEXT NOT NULL PRIMARY KEY,
  path TEXT NOT NULL
);
CREATE TABLE groups(
  store TEXT NOT NULL REFERENCES datastores(name) ON DELETE CASCADE,
  ns    TEXT NOT NULL,
  type  TEXT NOT NULL,
  id    TEXT NOT NULL,
  owner TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(store, ns, type, id)
);
CREATE TABLE snapshots(
  sid          INTEGER PRIMARY KEY,
  store        TEXT NOT NULL,
  ns           TEXT NOT NULL,
  type         TEXT NOT NULL,
  id           TEXT NOT NULL,
  time         INTEGER NOT NULL,
  size         INTEGER NOT NULL,
  protected    INTEGER NOT NULL DEFAULT 0,
  notes        TEXT NOT NULL DEFAULT '',
  verify_state TEXT,
  verify_time  INTEGER,
  verify_task  TEXT,
  UNIQUE(store, ns, type, id, time),
  FOREIGN KEY(store, ns, type, id) REFERENCES groups(store, ns, type, id) ON DELETE CASCADE
);
CREATE TABLE archives(
  snapshot INTEGER NOT NULL REFERENCES snapshots(sid) ON DELETE CASCADE,
  name     TEXT NOT NULL,
  size     INTEGER NOT NULL,
  csum     TEXT NOT NULL,
  PRIMARY KEY(snapshot, name)
);
)sql",
    // 2: the client info of each snapshot (listings are served from the
    // catalog), why a snapshot's index.json does not read (a row kept so
    // listings show the damage), and whether a store's rows were in step at
    // its last close.
    R"sql(
ALTER TABLE snapshots ADD COLUMN client TEXT NOT NULL DEFAULT '{}';
ALTER TABLE snapshots ADD COLUMN error TEXT;
ALTER TABLE datastores ADD COLUMN in_step INTEGER NOT NULL DEFAULT 0;
)sql",
    // 3: each group's summary (snapshot count, newest time, total size) kept
    // in its row by triggers, so the groups view reads 600 rows, not an
    // aggregate over every snapshot. The triggers see every write, whoever
    // makes it (sync, reindex, cascade); CatalogTest.GroupSummaryEqualsTheAggregate
    // checks them against the aggregate.
    R"sql(
ALTER TABLE groups ADD COLUMN snapshot_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN last_snapshot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN total_size INTEGER NOT NULL DEFAULT 0;
UPDATE groups SET
  snapshot_count = (SELECT COUNT(*) FROM snapshots s WHERE s.store = groups.store
                    AND s.ns = groups.ns AND s.type = groups.type AND s.id = groups.id),
  last_snapshot = (SELECT COALESCE(MAX(s.time), 0) FROM snapshots s WHERE s.store = groups.store
                   AND s.ns = groups.ns AND s.type = groups.type AND s.id = groups.id),
  total_size = (SELECT COALESCE(SUM(s.size), 0) FROM snapshots s WHERE s.store = groups.store
                AND s.ns = groups.ns AND s.type = groups.type AND s.id = groups.id);
CREATE TRIGGER snapshots_summary_insert AFTER INSERT ON snapshots BEGIN
  UPDATE groups SET snapshot_count = snapshot_count + 1, total_size = total_size + NEW.size,
    last_snapshot = MAX(last_snapshot, NEW.time)
  WHERE store = NEW.store AND ns = NEW.ns AND type = NEW.type AND id = NEW.id;
END;
CREATE TRIGGER snapshots_summary_delete AFTER DELETE ON snapshots BEGIN
  UPDATE groups SET snapshot_count = snapshot_count - 1, total_size = total_size - OLD.size,
    last_snapshot = COALESCE((SELECT MAX(s.time) FROM snapshots s WHERE s.store = OLD.store
                              AND s.ns = OLD.ns AND s.type = OLD.type AND s.id = OLD.id), 0)
  WHERE store = OLD.store AND ns = OLD.ns AND type = OLD.type AND id = OLD.id;
END;
CREATE INDEX snapshots_with_notes ON snapshots(store) WHERE notes != '';
CREATE TRIGGER snapshots_summary_size AFTER UPDATE OF size ON snapshots BEGIN
  UPDATE groups SET total_size = total_size - OLD.size + NEW.size
  WHERE store = NEW.store AND ns = NEW.ns AND type = NEW.type AND id = NEW.id;
END;
)sql",
    // 4: the key fingerprint of an encrypted snapshot (NULL: plain), for
    // listings. Every snapshot before this version is plain.
    R"sql(
ALTER TABLE snapshots ADD COLUMN key_fingerprint TEXT;
)sql",
};
static_assert(std::size(kMigrations) == kCatalogSchemaVersion,
              "kCatalogSchemaVersion must equal the number of migrations");

// Binds (store, ns, type, id) at 1..4.
void BindGroup(Stmt& st, const std::string& store, const GroupRef& g) {
  st.Text(1, store).Text(2, FormatNamespace(g.ns)).Text(3, g.type).Text(4, g.id);
}

// (store, ns, type, id, time) at 1..5.
void BindSnapshot(Stmt& st, const std::string& store, const SnapshotRef& r) {
  BindGroup(st, store, r.group);
  st.Int(5, r.time);
}

Result<GroupRef> GroupFromColumns(Stmt& st, int first) {
  CAIRN_ASSIGN_OR_RETURN(auto ns, ParseNamespace(st.ColText(first)));
  GroupRef g{std::move(ns), st.ColText(first + 1), st.ColText(first + 2)};
  if (!g.Validate().ok()) return Status::Corruption("catalog holds an invalid group name");
  return g;
}

int Changes(sqlite3* db) { return sqlite3_changes(db); }

// Text for Dump: quoted, with every byte outside printable ASCII (and the
// quote and backslash) escaped, so a row is always one line.
std::string Quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace

SnapshotRow SnapshotRow::FromManifest(const SnapshotRef& ref, const Manifest& m) {
  SnapshotRow r;
  r.ref = ref;
  r.size = m.TotalSize();
  r.is_protected = m.is_protected;
  r.notes = m.notes;
  r.verify = m.verify;
  r.client = m.client.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (m.crypt) r.key_fingerprint = m.crypt->fingerprint;
  r.archives = m.archives;
  std::sort(r.archives.begin(), r.archives.end(),
            [](const ArchiveInfo& a, const ArchiveInfo& b) { return a.name < b.name; });
  return r;
}

// ---------------------------------------------------------------------------
// Open and migrations

Result<std::unique_ptr<Catalog>> Catalog::Open(const std::string& db_path) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3* db, OpenDatabase(db_path));
  std::unique_ptr<Catalog> cat(new Catalog(db));
  {
    MutexLock lock(&cat->mu_);
    CAIRN_RETURN_IF_ERROR(cat->Migrate());
  }
  return cat;
}

Catalog::Catalog(sqlite3* db) : db_(db) {}

Catalog::~Catalog() { sqlite3_close(db_); }

Result<int> Catalog::SchemaVersion() {
  MutexLock lock(&mu_);
  Stmt st(db_, "PRAGMA user_version");
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::IOError("PRAGMA user_version returned nothing");
  return static_cast<int>(st.ColInt(0));
}

Status Catalog::Migrate() { return storage::Migrate(db_, kMigrations, "catalog"); }

// ---------------------------------------------------------------------------
// Datastores

Status Catalog::AddDatastore(const std::string& name, const std::string& path) {
  CAIRN_RETURN_IF_ERROR(ValidateName(NameKind::kStore, name));
  if (path.empty()) return Status::InvalidArgument("datastore path is empty");
  MutexLock lock(&mu_);
  Stmt st(db_, "INSERT INTO datastores(name, path) VALUES(?1, ?2) ON CONFLICT(name) DO NOTHING");
  st.Text(1, name).Text(2, path);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::AlreadyExists("datastore " + name + " exists already");
  return Status::OK();
}

Status Catalog::RemoveDatastore(const std::string& name) {
  MutexLock lock(&mu_);
  Stmt st(db_, "DELETE FROM datastores WHERE name = ?1");
  st.Text(1, name);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::NotFound("no datastore " + name);
  return Status::OK();
}

Result<std::vector<DatastoreRow>> Catalog::ListDatastores() {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT name, path FROM datastores ORDER BY name");
  std::vector<DatastoreRow> out;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(DatastoreRow{st.ColText(0), st.ColText(1)});
  }
  return out;
}

Result<DatastoreRow> Catalog::GetDatastore(const std::string& name) {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT name, path FROM datastores WHERE name = ?1");
  st.Text(1, name);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no datastore " + name);
  return DatastoreRow{st.ColText(0), st.ColText(1)};
}

Status Catalog::RequireStoreLocked(const std::string& store) {
  Stmt st(db_, "SELECT 1 FROM datastores WHERE name = ?1");
  st.Text(1, store);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no datastore " + store);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Groups and snapshots

Status Catalog::EnsureGroupLocked(const std::string& store, const GroupRef& group) {
  Stmt st(db_,
          "INSERT INTO groups(store, ns, type, id) VALUES(?1, ?2, ?3, ?4) "
          "ON CONFLICT(store, ns, type, id) DO NOTHING");
  BindGroup(st, store, group);
  return st.Run();
}

Status Catalog::UpsertSnapshotLocked(const std::string& store, const SnapshotRef& ref,
                                     const Manifest& m) {
  CAIRN_RETURN_IF_ERROR(EnsureGroupLocked(store, ref.group));
  {
    Stmt st(db_,
            "INSERT INTO snapshots(store, ns, type, id, time, size, protected, notes, "
            "verify_state, verify_time, verify_task, client, key_fingerprint) "
            "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
            "ON CONFLICT(store, ns, type, id, time) DO UPDATE SET size = excluded.size, "
            "protected = excluded.protected, notes = excluded.notes, "
            "verify_state = excluded.verify_state, verify_time = excluded.verify_time, "
            "verify_task = excluded.verify_task, client = excluded.client, "
            "key_fingerprint = excluded.key_fingerprint, error = NULL");
    BindSnapshot(st, store, ref);
    st.Int(6, static_cast<int64_t>(m.TotalSize())).Int(7, m.is_protected ? 1 : 0).Text(8, m.notes);
    if (m.verify) {
      st.Text(9, m.verify->state).Int(10, m.verify->time).Text(11, m.verify->task);
    } else {
      st.Null(9).Null(10).Null(11);
    }
    st.Text(12, m.client.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (m.crypt) {
      st.Text(13, m.crypt->fingerprint);
    } else {
      st.Null(13);
    }
    CAIRN_RETURN_IF_ERROR(st.Run());
  }
  int64_t sid = 0;
  {
    Stmt st(db_,
            "SELECT sid FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 "
            "AND time = ?5");
    BindSnapshot(st, store, ref);
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::IOError("snapshot row vanished after upsert");
    sid = st.ColInt(0);
  }
  {
    Stmt st(db_, "DELETE FROM archives WHERE snapshot = ?1");
    st.Int(1, sid);
    CAIRN_RETURN_IF_ERROR(st.Run());
  }
  for (const ArchiveInfo& a : m.archives) {
    Stmt st(db_, "INSERT INTO archives(snapshot, name, size, csum) VALUES(?1, ?2, ?3, ?4)");
    st.Int(1, sid).Text(2, a.name).Int(3, static_cast<int64_t>(a.size)).Text(4, a.csum.ToHex());
    CAIRN_RETURN_IF_ERROR(st.Run());
  }
  return Status::OK();
}

Status Catalog::UpsertSnapshot(const std::string& store, const SnapshotRef& ref,
                               const Manifest& m) {
  CAIRN_RETURN_IF_ERROR(ref.Validate());
  if (m.backup_type != ref.group.type || m.backup_id != ref.group.id ||
      m.backup_time != ref.time) {
    return Status::InvalidArgument("manifest does not name snapshot " + ref.ToString());
  }
  MutexLock lock(&mu_);
  Txn txn(db_);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  CAIRN_RETURN_IF_ERROR(UpsertSnapshotLocked(store, ref, m));
  return txn.Commit();
}

Status Catalog::InsertDamagedLocked(const std::string& store, const SnapshotRef& ref,
                                    const Status& why) {
  Stmt st(db_,
          "INSERT INTO snapshots(store, ns, type, id, time, size, error) "
          "VALUES(?1, ?2, ?3, ?4, ?5, 0, ?6) ON CONFLICT(store, ns, type, id, time) DO UPDATE "
          "SET error = excluded.error");
  BindSnapshot(st, store, ref);
  st.Text(6, why.ToString());
  return st.Run();
}

Status Catalog::RemoveGroupIfUnusedLocked(const std::string& store, const GroupRef& group) {
  Stmt st(db_,
          "DELETE FROM groups WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 "
          "AND owner = '' AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.store = ?1 "
          "AND s.ns = ?2 AND s.type = ?3 AND s.id = ?4)");
  BindGroup(st, store, group);
  return st.Run();
}

Status Catalog::RemoveSnapshot(const std::string& store, const SnapshotRef& ref) {
  MutexLock lock(&mu_);
  Txn txn(db_);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  {
    Stmt st(db_,
            "DELETE FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 "
            "AND time = ?5");
    BindSnapshot(st, store, ref);
    CAIRN_RETURN_IF_ERROR(st.Run());
    if (Changes(db_) == 0) return Status::NotFound("no catalog row for " + ref.ToString());
  }
  CAIRN_RETURN_IF_ERROR(RemoveGroupIfUnusedLocked(store, ref.group));
  return txn.Commit();
}

Status Catalog::SetGroupOwner(const std::string& store, const GroupRef& group,
                              const std::string& owner) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  MutexLock lock(&mu_);
  Txn txn(db_);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  Stmt st(db_,
          "INSERT INTO groups(store, ns, type, id, owner) VALUES(?1, ?2, ?3, ?4, ?5) "
          "ON CONFLICT(store, ns, type, id) DO UPDATE SET owner = excluded.owner");
  BindGroup(st, store, group);
  st.Text(5, owner);
  CAIRN_RETURN_IF_ERROR(st.Run());
  return txn.Commit();
}

Status Catalog::RemoveGroup(const std::string& store, const GroupRef& group) {
  MutexLock lock(&mu_);
  Stmt st(db_, "DELETE FROM groups WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4");
  BindGroup(st, store, group);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::NotFound("no catalog row for " + group.ToString());
  return Status::OK();
}

Result<std::vector<GroupRow>> Catalog::ListGroups(const std::string& store) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  Stmt st(db_,
          "SELECT ns, type, id, owner, snapshot_count, last_snapshot, total_size "
          "FROM groups WHERE store = ?1");
  st.Text(1, store);
  std::vector<GroupRow> out;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(GroupRef g, GroupFromColumns(st, 0));
    out.push_back(GroupRow{std::move(g), st.ColText(3), st.ColInt(4), st.ColInt(5),
                           static_cast<uint64_t>(st.ColInt(6))});
  }
  // GroupRef order (by namespace components), which SQL text order is not.
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::set<GroupRef>> Catalog::GroupsWithNotesContaining(const std::string& store,
                                                               const std::string& text) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  // Only the rows with notes (a partial index) are looked at; lower() folds
  // ASCII letters.
  Stmt st(db_,
          "SELECT DISTINCT ns, type, id FROM snapshots WHERE store = ?1 AND notes != '' "
          "AND instr(lower(notes), lower(?2)) > 0");
  st.Text(1, store).Text(2, text);
  std::set<GroupRef> out;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(GroupRef g, GroupFromColumns(st, 0));
    out.insert(std::move(g));
  }
  return out;
}

namespace {

constexpr char kSnapshotColumns[] =
    "ns, type, id, time, size, protected, notes, verify_state, verify_time, verify_task, client, "
    "sid, error, key_fingerprint";

Result<SnapshotRow> SnapshotFromColumns(Stmt& st) {
  SnapshotRow r;
  CAIRN_ASSIGN_OR_RETURN(r.ref.group, GroupFromColumns(st, 0));
  r.ref.time = st.ColInt(3);
  r.size = static_cast<uint64_t>(st.ColInt(4));
  r.is_protected = st.ColInt(5) != 0;
  r.notes = st.ColText(6);
  if (!st.ColIsNull(7)) r.verify = VerifyState{st.ColText(7), st.ColInt(8), st.ColText(9)};
  r.client = st.ColText(10);
  if (!st.ColIsNull(12)) r.error = st.ColText(12);
  if (!st.ColIsNull(13)) r.key_fingerprint = st.ColText(13);
  return r;
}

// Reads (snapshot sid, name, size, csum) rows from `st` into the archives
// of `rows`, whose sids are `sids` (parallel to `rows`).
Status FillArchives(Stmt& st, const std::vector<int64_t>& sids, std::vector<SnapshotRow>* rows) {
  std::map<int64_t, size_t> at;
  for (size_t i = 0; i < sids.size(); ++i) at[sids[i]] = i;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    auto it = at.find(st.ColInt(0));
    if (it == at.end()) continue;
    auto csum = Digest::FromHex(st.ColText(3));
    if (!csum.ok()) return Status::Corruption("catalog holds a malformed archive checksum");
    (*rows)[it->second].archives.push_back(
        ArchiveInfo{st.ColText(1), static_cast<uint64_t>(st.ColInt(2)), *csum});
  }
  return Status::OK();
}

}  // namespace

Result<std::vector<SnapshotRow>> Catalog::ListSnapshots(const std::string& store,
                                                        const GroupRef& group,
                                                        const SnapshotPage& page) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  static const std::string base = std::string("SELECT ") + kSnapshotColumns +
                                  " FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 "
                                  "AND id = ?4 ORDER BY time";
  static const std::string asc = base + " LIMIT ?5 OFFSET ?6";
  static const std::string desc = base + " DESC LIMIT ?5 OFFSET ?6";
  // The archives of the same page: the page's sids by the same query.
  static const std::string page_sids =
      "SELECT sid FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 "
      "ORDER BY time";
  static const std::string archives_asc =
      "SELECT snapshot, name, size, csum FROM archives WHERE snapshot IN (" + page_sids +
      " LIMIT ?5 OFFSET ?6) ORDER BY snapshot, name";
  static const std::string archives_desc =
      "SELECT snapshot, name, size, csum FROM archives WHERE snapshot IN (" + page_sids +
      " DESC LIMIT ?5 OFFSET ?6) ORDER BY snapshot, name";
  const int64_t limit = page.limit == 0 ? -1 : static_cast<int64_t>(page.limit);
  const auto offset = static_cast<int64_t>(page.offset);
  Stmt st(db_, page.newest_first ? desc.c_str() : asc.c_str());
  BindGroup(st, store, group);
  st.Int(5, limit).Int(6, offset);
  std::vector<SnapshotRow> out;
  std::vector<int64_t> sids;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(SnapshotRow r, SnapshotFromColumns(st));
    sids.push_back(st.ColInt(11));
    out.push_back(std::move(r));
  }
  if (out.empty()) return out;
  Stmt archives(db_, page.newest_first ? archives_desc.c_str() : archives_asc.c_str());
  BindGroup(archives, store, group);
  archives.Int(5, limit).Int(6, offset);
  CAIRN_RETURN_IF_ERROR(FillArchives(archives, sids, &out));
  return out;
}

Result<int64_t> Catalog::CountSnapshots(const std::string& store, const GroupRef& group) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  Stmt st(db_, "SELECT COUNT(*) FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 "
               "AND id = ?4");
  BindGroup(st, store, group);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColInt(0) : 0;
}

Result<SnapshotRow> Catalog::GetSnapshot(const std::string& store, const SnapshotRef& ref) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  static const std::string sql = std::string("SELECT ") + kSnapshotColumns +
                                 " FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 "
                                 "AND id = ?4 AND time = ?5";
  Stmt st(db_, sql.c_str());
  BindSnapshot(st, store, ref);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no catalog row for " + ref.ToString());
  std::vector<SnapshotRow> out;
  CAIRN_ASSIGN_OR_RETURN(SnapshotRow r, SnapshotFromColumns(st));
  const int64_t sid = st.ColInt(11);
  out.push_back(std::move(r));
  Stmt archives(db_, "SELECT snapshot, name, size, csum FROM archives WHERE snapshot = ?1 "
                     "ORDER BY name");
  archives.Int(1, sid);
  CAIRN_RETURN_IF_ERROR(FillArchives(archives, {sid}, &out));
  return std::move(out[0]);
}

Result<std::vector<ArchiveInfo>> Catalog::ListArchives(const std::string& store,
                                                       const SnapshotRef& ref) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  Stmt st(db_,
          "SELECT a.name, a.size, a.csum FROM archives a JOIN snapshots s ON a.snapshot = s.sid "
          "WHERE s.store = ?1 AND s.ns = ?2 AND s.type = ?3 AND s.id = ?4 AND s.time = ?5 "
          "ORDER BY a.name");
  BindSnapshot(st, store, ref);
  std::vector<ArchiveInfo> out;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    auto csum = Digest::FromHex(st.ColText(2));
    if (!csum.ok()) return Status::Corruption("catalog holds a malformed archive checksum");
    out.push_back(ArchiveInfo{st.ColText(0), static_cast<uint64_t>(st.ColInt(1)), *csum});
  }
  return out;
}

Status Catalog::SetVerifyState(const std::string& store, const SnapshotRef& ref,
                               const VerifyState& v) {
  MutexLock lock(&mu_);
  Stmt st(db_,
          "UPDATE snapshots SET verify_state = ?6, verify_time = ?7, verify_task = ?8 "
          "WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 AND time = ?5");
  BindSnapshot(st, store, ref);
  st.Text(6, v.state).Int(7, v.time).Text(8, v.task);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::NotFound("no catalog row for " + ref.ToString());
  return Status::OK();
}

Status Catalog::SetProtected(const std::string& store, const SnapshotRef& ref,
                             bool is_protected) {
  MutexLock lock(&mu_);
  Stmt st(db_,
          "UPDATE snapshots SET protected = ?6 "
          "WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 AND time = ?5");
  BindSnapshot(st, store, ref);
  st.Int(6, is_protected ? 1 : 0);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::NotFound("no catalog row for " + ref.ToString());
  return Status::OK();
}

Status Catalog::SetNotes(const std::string& store, const SnapshotRef& ref,
                         const std::string& notes) {
  MutexLock lock(&mu_);
  Stmt st(db_,
          "UPDATE snapshots SET notes = ?6 "
          "WHERE store = ?1 AND ns = ?2 AND type = ?3 AND id = ?4 AND time = ?5");
  BindSnapshot(st, store, ref);
  st.Text(6, notes);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::NotFound("no catalog row for " + ref.ToString());
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Reindex and Dump

Status Catalog::Reindex(const std::string& store, Datastore& ds, ReindexReport* report) {
  ReindexReport local;
  MutexLock lock(&mu_);
  Txn txn(db_);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  {
    // Snapshots and archives follow by ON DELETE CASCADE.
    Stmt st(db_, "DELETE FROM groups WHERE store = ?1");
    st.Text(1, store);
    CAIRN_RETURN_IF_ERROR(st.Run());
  }
  CAIRN_ASSIGN_OR_RETURN(auto groups, ds.ListGroups());
  for (const GroupRef& g : groups) {
    std::string owner;
    auto o = ds.GetOwner(g);
    if (o.ok()) {
      owner = *o;
    } else if (!o.status().IsNotFound() && !o.status().IsCorruption()) {
      return o.status();
    }
    auto snaps = ds.ListSnapshots(g);
    if (!snaps.ok()) {
      if (snaps.status().IsNotFound()) continue;  // deleted while we walked
      return snaps.status();
    }
    {
      Stmt st(db_, "INSERT INTO groups(store, ns, type, id, owner) VALUES(?1, ?2, ?3, ?4, ?5)");
      BindGroup(st, store, g);
      st.Text(5, owner);
      CAIRN_RETURN_IF_ERROR(st.Run());
    }
    ++local.groups;
    for (const SnapshotRef& ref : *snaps) {
      auto m = ds.ReadManifest(ref);
      if (!m.ok()) {
        if (m.status().IsCorruption()) {
          CAIRN_RETURN_IF_ERROR(InsertDamagedLocked(store, ref, m.status()));
        } else if (!m.status().IsNotFound()) {
          return m.status();
        }
        local.skipped.emplace_back(ref, m.status());
        continue;
      }
      CAIRN_RETURN_IF_ERROR(UpsertSnapshotLocked(store, ref, *m));
      ++local.snapshots;
    }
  }
  CAIRN_RETURN_IF_ERROR(txn.Commit());
  if (report != nullptr) *report = std::move(local);
  return Status::OK();
}

Result<std::string> Catalog::Dump(const std::string& store) {
  MutexLock lock(&mu_);
  // One read transaction so the text is one consistent state.
  CAIRN_RETURN_IF_ERROR(Exec(db_, "BEGIN"));
  struct EndRead {
    sqlite3* db;
    ~EndRead() { (void)Exec(db, "COMMIT"); }
  } end_read{db_};

  std::string out;
  {
    Stmt st(db_, "SELECT name, path FROM datastores WHERE name = ?1");
    st.Text(1, store);
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::NotFound("no datastore " + store);
    out += "datastore " + Quote(st.ColText(0)) + " path=" + Quote(st.ColText(1)) + "\n";
  }
  {
    Stmt st(db_,
            "SELECT ns, type, id, owner, snapshot_count, last_snapshot, total_size FROM groups "
            "WHERE store = ?1 ORDER BY ns, type, id");
    st.Text(1, store);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out += "group " + Quote(st.ColText(0)) + " " + Quote(st.ColText(1)) + " " +
             Quote(st.ColText(2)) + " owner=" + Quote(st.ColText(3)) +
             " count=" + std::to_string(st.ColInt(4)) + " last=" + std::to_string(st.ColInt(5)) +
             " size=" + std::to_string(st.ColInt(6)) + "\n";
    }
  }
  {
    Stmt st(db_,
            "SELECT ns, type, id, time, size, protected, notes, verify_state, verify_time, "
            "verify_task, client, error, key_fingerprint FROM snapshots WHERE store = ?1 "
            "ORDER BY ns, type, id, time");
    st.Text(1, store);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out += "snapshot " + Quote(st.ColText(0)) + " " + Quote(st.ColText(1)) + " " +
             Quote(st.ColText(2)) + " " + std::to_string(st.ColInt(3)) +
             " size=" + std::to_string(st.ColInt(4)) +
             " protected=" + std::to_string(st.ColInt(5)) + " notes=" + Quote(st.ColText(6)) +
             " client=" + Quote(st.ColText(10));
      if (!st.ColIsNull(11)) out += " error=" + Quote(st.ColText(11));
      if (!st.ColIsNull(12)) out += " key=" + Quote(st.ColText(12));
      if (st.ColIsNull(7)) {
        out += " verify=none\n";
      } else {
        out += " verify=" + Quote(st.ColText(7)) + "," + std::to_string(st.ColInt(8)) + "," +
               Quote(st.ColText(9)) + "\n";
      }
    }
  }
  {
    Stmt st(db_,
            "SELECT s.ns, s.type, s.id, s.time, a.name, a.size, a.csum FROM archives a "
            "JOIN snapshots s ON a.snapshot = s.sid WHERE s.store = ?1 "
            "ORDER BY s.ns, s.type, s.id, s.time, a.name");
    st.Text(1, store);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out += "archive " + Quote(st.ColText(0)) + " " + Quote(st.ColText(1)) + " " +
             Quote(st.ColText(2)) + " " + std::to_string(st.ColInt(3)) + " " +
             Quote(st.ColText(4)) + " size=" + std::to_string(st.ColInt(5)) +
             " csum=" + Quote(st.ColText(6)) + "\n";
    }
  }
  return out;
}

Result<bool> Catalog::InStep(const std::string& store) {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT in_step FROM datastores WHERE name = ?1");
  st.Text(1, store);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no datastore " + store);
  return st.ColInt(0) != 0;
}

Status Catalog::SetInStep(const std::string& store, bool in_step) {
  MutexLock lock(&mu_);
  Stmt st(db_, "UPDATE datastores SET in_step = ?2 WHERE name = ?1");
  st.Text(1, store).Int(2, in_step ? 1 : 0);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (Changes(db_) == 0) return Status::NotFound("no datastore " + store);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// CatalogSync

Result<std::unique_ptr<CatalogSync>> CatalogSync::Attach(Catalog* catalog,
                                                         const std::string& store, Datastore* ds,
                                                         ErrorFn on_error,
                                                         ReindexReport* reindexed) {
  CAIRN_ASSIGN_OR_RETURN(bool in_step, catalog->InStep(store));
  ReindexReport report;
  report.groups = -1;
  if (!in_step) CAIRN_RETURN_IF_ERROR(catalog->Reindex(store, *ds, &report));
  if (reindexed != nullptr) *reindexed = std::move(report);
  // From here on a crash leaves the rows unknown: the next Attach reindexes.
  CAIRN_RETURN_IF_ERROR(catalog->SetInStep(store, false));
  std::unique_ptr<CatalogSync> sync(new CatalogSync(catalog, store, ds, std::move(on_error)));
  ds->SetObserver(sync.get());
  return sync;
}

CatalogSync::~CatalogSync() { Detach(); }

void CatalogSync::Detach() {
  MutexLock lock(&refresh_mu_);
  if (ds_ == nullptr) return;
  ds_->SetObserver(nullptr);
  ds_ = nullptr;
  if (!stale_.load()) Check(catalog_->SetInStep(store_, true), "record the catalog in step");
}

Status CatalogSync::Refresh() {
  if (!stale_.load()) return Status::OK();
  MutexLock lock(&refresh_mu_);
  if (!stale_.load() || ds_ == nullptr) return Status::OK();
  // Cleared first: a change failing during the reindex marks it again.
  stale_.store(false);
  Status s = catalog_->Reindex(store_, *ds_);
  if (!s.ok()) {
    stale_.store(true);
    return s.WithContext("reindex of datastore " + store_);
  }
  return Status::OK();
}

void CatalogSync::Check(const Status& s, const std::string& what) {
  if (s.ok()) return;
  stale_.store(true);
  if (on_error_) on_error_(s.WithContext("catalog of datastore " + store_ + ": " + what));
}

void CatalogSync::SnapshotChanged(const SnapshotRef& ref, const Manifest& manifest) {
  Check(catalog_->UpsertSnapshot(store_, ref, manifest), "update " + ref.ToString());
}

void CatalogSync::SnapshotRemoved(const SnapshotRef& ref) {
  Status s = catalog_->RemoveSnapshot(store_, ref);
  // A row that was never there (a snapshot Reindex skipped) is no harm.
  if (s.IsNotFound()) return;
  Check(s, "remove " + ref.ToString());
}

void CatalogSync::OwnerChanged(const GroupRef& group, const std::string& owner) {
  Check(catalog_->SetGroupOwner(store_, group, owner), "owner of " + group.ToString());
}

void CatalogSync::GroupRemoved(const GroupRef& group) {
  Status s = catalog_->RemoveGroup(store_, group);
  if (s.IsNotFound()) return;
  Check(s, "remove " + group.ToString());
}

void CatalogSync::Unsure(const GroupRef& group, const Status& error) {
  Check(error, "a change of " + group.ToString() + " failed part-way");
}

}  // namespace cairn::storage
