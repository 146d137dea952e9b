// Catalog on SQLite's C API. Every statement is a fixed string with bound
// parameters; the only text ever formatted into SQL is the schema version, a
// constant of this file.

#include "storage/catalog.h"

#include <sqlite3.h>

#include "storage/sqlite_db.h"

#include <algorithm>
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
            "verify_state, verify_time, verify_task) "
            "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
            "ON CONFLICT(store, ns, type, id, time) DO UPDATE SET size = excluded.size, "
            "protected = excluded.protected, notes = excluded.notes, "
            "verify_state = excluded.verify_state, verify_time = excluded.verify_time, "
            "verify_task = excluded.verify_task");
    BindSnapshot(st, store, ref);
    st.Int(6, static_cast<int64_t>(m.TotalSize())).Int(7, m.is_protected ? 1 : 0).Text(8, m.notes);
    if (m.verify) {
      st.Text(9, m.verify->state).Int(10, m.verify->time).Text(11, m.verify->task);
    } else {
      st.Null(9).Null(10).Null(11);
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
          "SELECT g.ns, g.type, g.id, g.owner, COUNT(s.sid), COALESCE(MAX(s.time), 0) "
          "FROM groups g LEFT JOIN snapshots s ON s.store = g.store AND s.ns = g.ns "
          "AND s.type = g.type AND s.id = g.id "
          "WHERE g.store = ?1 GROUP BY g.ns, g.type, g.id");
  st.Text(1, store);
  std::vector<GroupRow> out;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(GroupRef g, GroupFromColumns(st, 0));
    out.push_back(GroupRow{std::move(g), st.ColText(3), st.ColInt(4), st.ColInt(5)});
  }
  // GroupRef order (by namespace components), which SQL text order is not.
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

constexpr char kSnapshotColumns[] =
    "ns, type, id, time, size, protected, notes, verify_state, verify_time, verify_task";

Result<SnapshotRow> SnapshotFromColumns(Stmt& st) {
  SnapshotRow r;
  CAIRN_ASSIGN_OR_RETURN(r.ref.group, GroupFromColumns(st, 0));
  r.ref.time = st.ColInt(3);
  r.size = static_cast<uint64_t>(st.ColInt(4));
  r.is_protected = st.ColInt(5) != 0;
  r.notes = st.ColText(6);
  if (!st.ColIsNull(7)) r.verify = VerifyState{st.ColText(7), st.ColInt(8), st.ColText(9)};
  return r;
}

}  // namespace

Result<std::vector<SnapshotRow>> Catalog::ListSnapshots(const std::string& store,
                                                        const GroupRef& group) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireStoreLocked(store));
  static const std::string sql = std::string("SELECT ") + kSnapshotColumns +
                                 " FROM snapshots WHERE store = ?1 AND ns = ?2 AND type = ?3 "
                                 "AND id = ?4 ORDER BY time";
  Stmt st(db_, sql.c_str());
  BindGroup(st, store, group);
  std::vector<SnapshotRow> out;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_ASSIGN_OR_RETURN(SnapshotRow r, SnapshotFromColumns(st));
    out.push_back(std::move(r));
  }
  return out;
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
  return SnapshotFromColumns(st);
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
        if (m.status().IsCorruption() || m.status().IsNotFound()) {
          local.skipped.emplace_back(ref, m.status());
          continue;
        }
        return m.status();
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
    Stmt st(db_, "SELECT ns, type, id, owner FROM groups WHERE store = ?1 ORDER BY ns, type, id");
    st.Text(1, store);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out += "group " + Quote(st.ColText(0)) + " " + Quote(st.ColText(1)) + " " +
             Quote(st.ColText(2)) + " owner=" + Quote(st.ColText(3)) + "\n";
    }
  }
  {
    Stmt st(db_,
            "SELECT ns, type, id, time, size, protected, notes, verify_state, verify_time, "
            "verify_task FROM snapshots WHERE store = ?1 ORDER BY ns, type, id, time");
    st.Text(1, store);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out += "snapshot " + Quote(st.ColText(0)) + " " + Quote(st.ColText(1)) + " " +
             Quote(st.ColText(2)) + " " + std::to_string(st.ColInt(3)) +
             " size=" + std::to_string(st.ColInt(4)) +
             " protected=" + std::to_string(st.ColInt(5)) + " notes=" + Quote(st.ColText(6));
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

}  // namespace cairn::storage
