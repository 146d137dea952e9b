#include "storage/catalog.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <set>
#include <thread>

#include "storage/datastore.h"
#include "tests/storage/datastore_testutil.h"

namespace cairn::storage {
namespace {

constexpr int64_t kT0 = 1795283438;  // 2026-11-21T17:50:38Z

SnapshotRef Ref(std::vector<std::string> ns, std::string type, std::string id, int64_t t) {
  return SnapshotRef{GroupRef{std::move(ns), std::move(type), std::move(id)}, t};
}

Manifest MakeManifest(const SnapshotRef& ref, const std::map<std::string, std::string>& archives) {
  Manifest m;
  m.backup_type = ref.group.type;
  m.backup_id = ref.group.id;
  m.backup_time = ref.time;
  for (const auto& [name, bytes] : archives) {
    m.archives.push_back(ArchiveInfo{name, bytes.size(), Sha256(bytes)});
  }
  m.client = {{"host", "pve1"}};
  return m;
}

std::map<std::string, std::string> Archives(int seed) {
  return {{"drive0.fidx", std::string(100 + seed, 'x')},
          {"qemu-server.conf.blob", "conf " + std::to_string(seed)}};
}

// Reads one integer PRAGMA straight from the file, bypassing Catalog.
int64_t Pragma(const std::string& db_path, const char* sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK);
  int64_t v = -1;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

std::string PragmaText(const std::string& db_path, const char* sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK);
  std::string v;
  if (sqlite3_step(st) == SQLITE_ROW) {
    v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_catalog_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
    db_path_ = JoinPath(tmp_, "cairn.db");
  }
  void TearDown() override {
    cat_.reset();
    EXPECT_TRUE(RemoveAll(Env::Default(), tmp_).ok());
  }

  void OpenCatalog() {
    auto c = Catalog::Open(db_path_);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    cat_ = std::move(*c);
  }

  std::string Dump(const std::string& store) {
    auto d = cat_->Dump(store);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? *d : "";
  }

  std::string tmp_;
  std::string db_path_;
  std::unique_ptr<Catalog> cat_;
};

TEST_F(CatalogTest, MigrationsOnFreshDatabase) {
  OpenCatalog();
  auto v = cat_->SchemaVersion();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, kCatalogSchemaVersion);
  EXPECT_GE(kCatalogSchemaVersion, 1);
  cat_.reset();
  EXPECT_EQ(Pragma(db_path_, "PRAGMA user_version"), kCatalogSchemaVersion);
  EXPECT_EQ(PragmaText(db_path_, "PRAGMA journal_mode"), "wal");
  for (const char* table : {"datastores", "groups", "snapshots", "archives"}) {
    const std::string sql =
        std::string("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='") + table +
        "'";
    EXPECT_EQ(Pragma(db_path_, sql.c_str()), 1) << table;
  }

  // Reopening keeps the version and the data.
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  cat_.reset();
  OpenCatalog();
  EXPECT_EQ(*cat_->SchemaVersion(), kCatalogSchemaVersion);
  EXPECT_EQ(cat_->ListDatastores()->size(), 1u);
}

// The summary the triggers keep in each group row (schema 3) equals the
// aggregate over its snapshots after every kind of write: insert, upsert
// with a new size, remove (newest and not), group delete (cascade), and a
// schema-2 database migrated with rows in it.
TEST_F(CatalogTest, GroupSummaryEqualsTheAggregate) {
  constexpr const char* kMismatches =
      "SELECT COUNT(*) FROM groups g WHERE g.snapshot_count != (SELECT COUNT(*) FROM snapshots s "
      "WHERE s.store = g.store AND s.ns = g.ns AND s.type = g.type AND s.id = g.id) "
      "OR g.last_snapshot != (SELECT COALESCE(MAX(s.time), 0) FROM snapshots s "
      "WHERE s.store = g.store AND s.ns = g.ns AND s.type = g.type AND s.id = g.id) "
      "OR g.total_size != (SELECT COALESCE(SUM(s.size), 0) FROM snapshots s "
      "WHERE s.store = g.store AND s.ns = g.ns AND s.type = g.type AND s.id = g.id)";
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  ASSERT_TRUE(cat_->AddDatastore("other", "/srv/other").ok());
  const GroupRef g{{}, "vm", "100"};
  for (int i = 0; i < 6; ++i) {
    const SnapshotRef r = Ref({}, "vm", "100", kT0 + i);
    ASSERT_TRUE(cat_->UpsertSnapshot("main", r, MakeManifest(r, Archives(i))).ok());
    ASSERT_TRUE(cat_->UpsertSnapshot("other", r, MakeManifest(r, Archives(i))).ok());
  }
  const SnapshotRef b = Ref({"prod"}, "ct", "7", kT0);
  ASSERT_TRUE(cat_->UpsertSnapshot("main", b, MakeManifest(b, Archives(9))).ok());
  EXPECT_EQ(Pragma(db_path_, kMismatches), 0);
  // Upsert of an existing snapshot with other archives: a new size.
  const SnapshotRef r2 = Ref({}, "vm", "100", kT0 + 2);
  ASSERT_TRUE(cat_->UpsertSnapshot("main", r2, MakeManifest(r2, Archives(7))).ok());
  EXPECT_EQ(Pragma(db_path_, kMismatches), 0);
  // The newest goes (last_snapshot moves back), then one in the middle.
  ASSERT_TRUE(cat_->RemoveSnapshot("main", Ref({}, "vm", "100", kT0 + 5)).ok());
  ASSERT_TRUE(cat_->RemoveSnapshot("main", Ref({}, "vm", "100", kT0 + 1)).ok());
  EXPECT_EQ(Pragma(db_path_, kMismatches), 0);
  auto groups = cat_->ListGroups("main");
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 2u);
  EXPECT_EQ((*groups)[0].group, g);
  EXPECT_EQ((*groups)[0].snapshot_count, 4);
  EXPECT_EQ((*groups)[0].last_snapshot, kT0 + 4);
  ASSERT_TRUE(cat_->RemoveGroup("main", g).ok());
  EXPECT_EQ(Pragma(db_path_, kMismatches), 0);
  EXPECT_EQ(Pragma(db_path_, "SELECT snapshot_count FROM groups WHERE store = 'other'"), 6);
  EXPECT_EQ(Pragma(db_path_, "SELECT last_snapshot FROM groups WHERE store = 'other'"), kT0 + 5);

  // A schema-2 database with rows: the migration fills the summary.
  cat_.reset();
  EXPECT_EQ(Pragma(db_path_,
                   "UPDATE groups SET snapshot_count = 0, last_snapshot = 0, total_size = 0 "
                   "RETURNING 0"),
            0);
  EXPECT_GT(Pragma(db_path_, kMismatches), 0);
  for (const char* sql :
       {"DROP TRIGGER snapshots_summary_insert", "DROP TRIGGER snapshots_summary_delete",
        "DROP TRIGGER snapshots_summary_size", "DROP INDEX snapshots_with_notes",
        "ALTER TABLE groups DROP COLUMN snapshot_count",
        "ALTER TABLE groups DROP COLUMN last_snapshot", "ALTER TABLE groups DROP COLUMN total_size",
        "ALTER TABLE snapshots DROP COLUMN key_fingerprint", "PRAGMA user_version = 2"}) {
    Pragma(db_path_, sql);
  }
  EXPECT_EQ(Pragma(db_path_, "PRAGMA user_version"), 2);
  OpenCatalog();
  EXPECT_EQ(Pragma(db_path_, "PRAGMA user_version"), kCatalogSchemaVersion);
  EXPECT_EQ(Pragma(db_path_, kMismatches), 0);
  EXPECT_EQ(Pragma(db_path_, "SELECT snapshot_count FROM groups WHERE store = 'other'"), 6);
}

TEST_F(CatalogTest, GroupsWithNotesContaining) {
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  ASSERT_TRUE(cat_->AddDatastore("other", "/srv/other").ok());
  const SnapshotRef a = Ref({}, "vm", "100", kT0), b = Ref({"prod"}, "ct", "7", kT0);
  Manifest ma = MakeManifest(a, Archives(1)), mb = MakeManifest(b, Archives(2));
  ma.notes = "Before the Upgrade";
  mb.notes = "nothing to see";
  ASSERT_TRUE(cat_->UpsertSnapshot("main", a, ma).ok());
  ASSERT_TRUE(cat_->UpsertSnapshot("main", b, mb).ok());
  Manifest elsewhere = mb;
  elsewhere.notes = "upgrade elsewhere";
  ASSERT_TRUE(cat_->UpsertSnapshot("other", b, elsewhere).ok());
  auto found = cat_->GroupsWithNotesContaining("main", "UPGRADE");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(*found, std::set<GroupRef>{a.group});
  EXPECT_EQ(cat_->GroupsWithNotesContaining("main", "e")->size(), 2u);
  EXPECT_TRUE(cat_->GroupsWithNotesContaining("main", "absent")->empty());
  EXPECT_TRUE(cat_->GroupsWithNotesContaining("main", "%")->empty());  // no LIKE patterns
  EXPECT_TRUE(cat_->GroupsWithNotesContaining("nostore", "x").status().IsNotFound());
}

TEST_F(CatalogTest, RefusesNewerSchema) {
  OpenCatalog();
  cat_.reset();
  Pragma(db_path_, "PRAGMA user_version = 999");
  auto c = Catalog::Open(db_path_);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsConflict()) << c.status().ToString();
  EXPECT_EQ(Pragma(db_path_, "PRAGMA user_version"), 999);
}

TEST_F(CatalogTest, ForeignKeysAreOn) {
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  ASSERT_TRUE(cat_->UpsertSnapshot("main", a, MakeManifest(a, Archives(1))).ok());
  // Removing the store cascades to groups, snapshots, archives.
  ASSERT_TRUE(cat_->RemoveDatastore("main").ok());
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  EXPECT_TRUE(cat_->ListGroups("main")->empty());
  EXPECT_TRUE(cat_->ListArchives("main", a)->empty());
  cat_.reset();
  EXPECT_EQ(Pragma(db_path_, "SELECT COUNT(*) FROM archives"), 0);
  EXPECT_EQ(Pragma(db_path_, "SELECT COUNT(*) FROM snapshots"), 0);
}

TEST_F(CatalogTest, Datastores) {
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("zeta", "/srv/z").ok());
  ASSERT_TRUE(cat_->AddDatastore("alpha", "/srv/a").ok());
  EXPECT_TRUE(cat_->AddDatastore("alpha", "/elsewhere").IsAlreadyExists());
  EXPECT_TRUE(cat_->AddDatastore("../x", "/srv/x").IsInvalidArgument());
  EXPECT_TRUE(cat_->AddDatastore("ok", "").IsInvalidArgument());
  auto list = cat_->ListDatastores();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<DatastoreRow>{{"alpha", "/srv/a"}, {"zeta", "/srv/z"}}));
  EXPECT_EQ(cat_->GetDatastore("zeta")->path, "/srv/z");
  EXPECT_TRUE(cat_->GetDatastore("nope").status().IsNotFound());
  EXPECT_TRUE(cat_->RemoveDatastore("nope").IsNotFound());
  ASSERT_TRUE(cat_->RemoveDatastore("zeta").ok());
  EXPECT_EQ(cat_->ListDatastores()->size(), 1u);
}

TEST_F(CatalogTest, UpsertListAndUpdate) {
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  const SnapshotRef a1 = Ref({}, "vm", "100", kT0);
  const SnapshotRef a2 = Ref({}, "vm", "100", kT0 + 60);
  const SnapshotRef b1 = Ref({"prod", "eu"}, "ct", "7", kT0);
  const Manifest m1 = MakeManifest(a1, Archives(1));
  ASSERT_TRUE(cat_->UpsertSnapshot("main", a2, MakeManifest(a2, Archives(2))).ok());
  ASSERT_TRUE(cat_->UpsertSnapshot("main", a1, m1).ok());
  ASSERT_TRUE(cat_->UpsertSnapshot("main", b1, MakeManifest(b1, Archives(3))).ok());
  ASSERT_TRUE(cat_->SetGroupOwner("main", a1.group, "alice").ok());
  EXPECT_TRUE(cat_->UpsertSnapshot("main", a1, MakeManifest(a2, Archives(1))).IsInvalidArgument());
  EXPECT_TRUE(cat_->UpsertSnapshot("nostore", a1, m1).IsNotFound());
  EXPECT_TRUE(cat_->ListGroups("nostore").status().IsNotFound());

  auto groups = cat_->ListGroups("main");
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  ASSERT_EQ(groups->size(), 2u);
  EXPECT_EQ((*groups)[0].group, a1.group);
  EXPECT_EQ((*groups)[0].owner, "alice");
  EXPECT_EQ((*groups)[0].snapshot_count, 2);
  EXPECT_EQ((*groups)[0].last_snapshot, kT0 + 60);
  EXPECT_EQ((*groups)[1].group, b1.group);
  EXPECT_EQ((*groups)[1].owner, "");
  EXPECT_EQ((*groups)[1].snapshot_count, 1);
  EXPECT_EQ((*groups)[1].last_snapshot, kT0);

  auto snaps = cat_->ListSnapshots("main", a1.group);
  ASSERT_TRUE(snaps.ok());
  ASSERT_EQ(snaps->size(), 2u);
  EXPECT_EQ((*snaps)[0].ref, a1);
  EXPECT_EQ((*snaps)[1].ref, a2);
  EXPECT_EQ((*snaps)[0].size, m1.TotalSize());
  EXPECT_FALSE((*snaps)[0].verify.has_value());

  auto archives = cat_->ListArchives("main", a1);
  ASSERT_TRUE(archives.ok());
  EXPECT_EQ(*archives, m1.archives);  // both sorted by name

  ASSERT_TRUE(cat_->SetVerifyState("main", a1, VerifyState{"failed", kT0 + 9, "task-1"}).ok());
  ASSERT_TRUE(cat_->SetProtected("main", a1, true).ok());
  // Outside text goes in as a bound value, never as SQL.
  const std::string evil = "x'); DROP TABLE snapshots; --\n\"quoted\"\x01";
  ASSERT_TRUE(cat_->SetNotes("main", a1, evil).ok());
  auto row = cat_->GetSnapshot("main", a1);
  ASSERT_TRUE(row.ok());
  EXPECT_TRUE(row->is_protected);
  EXPECT_EQ(row->notes, evil);
  EXPECT_EQ(row->verify, (VerifyState{"failed", kT0 + 9, "task-1"}));
  EXPECT_TRUE(cat_->SetNotes("main", Ref({}, "vm", "100", 1), "x").IsNotFound());
  EXPECT_TRUE(cat_->GetSnapshot("main", Ref({}, "vm", "100", 1)).status().IsNotFound());

  // Dump keeps one row a line whatever the notes hold.
  const std::string dump = Dump("main");
  EXPECT_EQ(std::count(dump.begin(), dump.end(), '\n'), 1 + 2 + 3 + 6);

  // Upsert again replaces the row and its archives.
  Manifest m1b = MakeManifest(a1, {{"drive0.fidx", "y"}});
  m1b.notes = "replaced";
  ASSERT_TRUE(cat_->UpsertSnapshot("main", a1, m1b).ok());
  EXPECT_EQ(cat_->GetSnapshot("main", a1)->notes, "replaced");
  EXPECT_FALSE(cat_->GetSnapshot("main", a1)->is_protected);
  EXPECT_EQ(cat_->ListArchives("main", a1)->size(), 1u);

  // Removing the last snapshot of an owned group keeps the group row; of an
  // unowned one removes it (as the datastore does with the folder).
  ASSERT_TRUE(cat_->RemoveSnapshot("main", a1).ok());
  ASSERT_TRUE(cat_->RemoveSnapshot("main", a2).ok());
  ASSERT_TRUE(cat_->RemoveSnapshot("main", b1).ok());
  EXPECT_TRUE(cat_->RemoveSnapshot("main", b1).IsNotFound());
  groups = cat_->ListGroups("main");
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(*groups, (std::vector<GroupRow>{{a1.group, "alice", 0, 0}}));
  ASSERT_TRUE(cat_->RemoveGroup("main", a1.group).ok());
  EXPECT_TRUE(cat_->RemoveGroup("main", a1.group).IsNotFound());
  EXPECT_TRUE(cat_->ListGroups("main")->empty());
}

// Builds a datastore with several groups and namespaces, protected snapshots,
// notes, verify states and owners, mirroring every change into the catalog
// as the server does; then checks reindex gives the very same rows.
class CatalogReindexTest : public CatalogTest {
 protected:
  void SetUp() override {
    CatalogTest::SetUp();
    store_dir_ = JoinPath(tmp_, "store");
    ASSERT_TRUE(TestDatastores::Create(store_dir_).ok());
    auto ds = Datastore::Open(Env::Default(), store_dir_);
    ASSERT_TRUE(ds.ok());
    ds_ = std::move(*ds);
    OpenCatalog();
    ASSERT_TRUE(cat_->AddDatastore("main", store_dir_).ok());
  }
  void TearDown() override {
    ds_.reset();
    EXPECT_TRUE(TestDatastores::Remove(store_dir_).ok());
    CatalogTest::TearDown();
  }

  void Commit(const std::string& store, const SnapshotRef& ref, int seed) {
    auto staged = ds_->Stage(ref);
    ASSERT_TRUE(staged.ok());
    for (const auto& [name, bytes] : Archives(seed)) {
      ASSERT_TRUE((*staged)->WriteArchive(name, bytes).ok());
    }
    Manifest m = MakeManifest(ref, Archives(seed));
    ASSERT_TRUE((*staged)->Commit(m).ok());
    ASSERT_TRUE(cat_->UpsertSnapshot(store, ref, m).ok());
  }

  void Populate() {
    const GroupRef g1{{}, "vm", "100"};
    const GroupRef g2{{"prod"}, "vm", "100"};
    const GroupRef g3{{"prod", "eu"}, "ct", "web-1"};
    const GroupRef g4{{}, "host", "h1"};
    const GroupRef g5{{"a-b"}, "vm", "1"};  // "a-b" < "a/…" as text, not as components
    const GroupRef g6{{"a", "b"}, "vm", "1"};
    for (const auto& [g, owner] : std::vector<std::pair<GroupRef, std::string>>{
             {g1, "alice"}, {g2, "bob!tok"}, {g3, "carol"}, {g5, "dave"}}) {
      ASSERT_TRUE(ds_->SetOwner(g, owner).ok());
      ASSERT_TRUE(cat_->SetGroupOwner("main", g, owner).ok());
    }
    for (int i = 0; i < 3; ++i) Commit("main", SnapshotRef{g1, kT0 + 3600 * i}, i);
    Commit("main", SnapshotRef{g2, kT0}, 4);
    Commit("main", SnapshotRef{g3, kT0 + 1}, 5);
    Commit("main", SnapshotRef{g4, kT0 + 2}, 6);
    Commit("main", SnapshotRef{g6, kT0 + 3}, 7);
    // g5: owner only, no snapshot yet.

    const SnapshotRef p{g1, kT0};
    ASSERT_TRUE(ds_->SetProtected(p, true).ok());
    ASSERT_TRUE(cat_->SetProtected("main", p, true).ok());
    const SnapshotRef n{g2, kT0};
    ASSERT_TRUE(ds_->SetNotes(n, "before upgrade\nsecond line \"quoted\"").ok());
    ASSERT_TRUE(cat_->SetNotes("main", n, "before upgrade\nsecond line \"quoted\"").ok());
    const SnapshotRef v{g3, kT0 + 1};
    const VerifyState vs{"ok", kT0 + 100, "UPID:verify"};
    ASSERT_TRUE(ds_->SetVerifyState(v, vs).ok());
    ASSERT_TRUE(cat_->SetVerifyState("main", v, vs).ok());
    // A delete, mirrored.
    const SnapshotRef d{g1, kT0 + 3600};
    ASSERT_TRUE(ds_->DeleteSnapshot(d).ok());
    ASSERT_TRUE(cat_->RemoveSnapshot("main", d).ok());
    // A group whose only snapshot is deleted disappears from both.
    const SnapshotRef gone = Ref({}, "vm", "555", kT0);
    Commit("main", gone, 8);
    ASSERT_TRUE(ds_->DeleteSnapshot(gone).ok());
    ASSERT_TRUE(cat_->RemoveSnapshot("main", gone).ok());
  }

  std::string store_dir_;
  std::unique_ptr<Datastore> ds_;
};

TEST_F(CatalogReindexTest, ReindexEqualsIncrementalCatalog) {
  Populate();
  const std::string incremental = Dump("main");
  EXPECT_NE(incremental.find("protected=1"), std::string::npos);
  EXPECT_NE(incremental.find("owner=\"bob!tok\""), std::string::npos);
  EXPECT_NE(incremental.find("UPID:verify"), std::string::npos);
  EXPECT_EQ(cat_->ListGroups("main")->size(), 6u);

  ReindexReport report;
  ASSERT_TRUE(cat_->Reindex("main", *ds_, &report).ok());
  EXPECT_EQ(Dump("main"), incremental);
  EXPECT_EQ(report.groups, 6);
  EXPECT_EQ(report.snapshots, 6);
  EXPECT_TRUE(report.skipped.empty());

  // Rows that drifted from the directory are put right.
  ASSERT_TRUE(cat_->RemoveSnapshot("main", Ref({"prod"}, "vm", "100", kT0)).ok());
  ASSERT_TRUE(cat_->UpsertSnapshot("main", Ref({}, "vm", "999", kT0),
                                   MakeManifest(Ref({}, "vm", "999", kT0), Archives(9)))
                  .ok());
  ASSERT_TRUE(cat_->SetNotes("main", Ref({}, "vm", "100", kT0), "stale").ok());
  ASSERT_NE(Dump("main"), incremental);
  ASSERT_TRUE(cat_->Reindex("main", *ds_).ok());
  EXPECT_EQ(Dump("main"), incremental);
}

TEST_F(CatalogReindexTest, ReindexAfterLosingTheDatabase) {
  Populate();
  const std::string incremental = Dump("main");
  cat_.reset();
  for (const char* suffix : {"", "-wal", "-shm"}) {
    ASSERT_TRUE(RemoveAll(Env::Default(), db_path_ + suffix).ok());
  }
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", store_dir_).ok());
  ASSERT_TRUE(cat_->Reindex("main", *ds_).ok());
  EXPECT_EQ(Dump("main"), incremental);
}

TEST_F(CatalogReindexTest, OtherStoreUnaffected) {
  // A second store whose rows only the catalog knows (its folder is elsewhere).
  ASSERT_TRUE(cat_->AddDatastore("other", "/srv/other").ok());
  const SnapshotRef o = Ref({"x"}, "vm", "100", kT0);
  ASSERT_TRUE(cat_->SetGroupOwner("other", o.group, "zed").ok());
  Manifest mo = MakeManifest(o, Archives(1));
  mo.is_protected = true;
  mo.notes = "other store";
  ASSERT_TRUE(cat_->UpsertSnapshot("other", o, mo).ok());
  // The same group name in "main" too.
  Commit("main", o, 2);
  const std::string other = Dump("other");

  Populate();
  ASSERT_TRUE(cat_->Reindex("main", *ds_).ok());
  EXPECT_EQ(Dump("other"), other);
  EXPECT_NE(Dump("main").find("vm\" \"100\" 1795283438"), std::string::npos);
  EXPECT_TRUE(cat_->Reindex("nostore", *ds_).IsNotFound());
  EXPECT_TRUE(cat_->Dump("nostore").status().IsNotFound());
}

TEST_F(CatalogReindexTest, ReindexKeepsUnreadableManifestsAsDamagedRows) {
  Populate();
  const SnapshotRef bad{GroupRef{{}, "host", "h1"}, kT0 + 2};
  const std::string index = JoinPath(*ds_->SnapshotPath(bad), "index.json");
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), index, "{not json", false).ok());
  ReindexReport report;
  ASSERT_TRUE(cat_->Reindex("main", *ds_, &report).ok());
  ASSERT_EQ(report.skipped.size(), 1u);
  EXPECT_EQ(report.skipped[0].first, bad);
  EXPECT_TRUE(report.skipped[0].second.IsCorruption());
  auto row = cat_->GetSnapshot("main", bad);
  ASSERT_TRUE(row.ok()) << row.status().ToString();
  EXPECT_NE(row->error.find("Corruption"), std::string::npos) << row->error;
  EXPECT_EQ(row->size, 0u);
  EXPECT_EQ(report.snapshots, 5);
}

// An Env whose reads of one path fail: Reindex must then change nothing.
class FailReadEnv : public EnvWrapper {
 public:
  FailReadEnv(Env* target, std::string needle) : EnvWrapper(target), needle_(std::move(needle)) {}
  Status ReadFile(const std::string& p, std::string* out, uint64_t max_size) override {
    if (p.find(needle_) != std::string::npos) return Status::IOError("injected read failure");
    return EnvWrapper::ReadFile(p, out, max_size);
  }

 private:
  std::string needle_;
};

TEST_F(CatalogReindexTest, FailedReindexChangesNothing) {
  Populate();
  ASSERT_TRUE(cat_->SetNotes("main", Ref({}, "vm", "100", kT0), "catalog only").ok());
  const std::string before = Dump("main");
  ds_.reset();
  FailReadEnv env(Env::Default(), "ns/prod/ns/eu");
  auto ds = Datastore::Open(&env, store_dir_);
  ASSERT_TRUE(ds.ok());
  Status s = cat_->Reindex("main", **ds);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(Dump("main"), before);
}

TEST_F(CatalogTest, ConcurrentWriters) {
  OpenCatalog();
  ASSERT_TRUE(cat_->AddDatastore("main", "/srv/main").ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const SnapshotRef r = Ref({}, "vm", std::to_string(t), kT0 + i);
        EXPECT_TRUE(cat_->UpsertSnapshot("main", r, MakeManifest(r, Archives(i))).ok());
        EXPECT_TRUE(cat_->ListGroups("main").ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  auto groups = cat_->ListGroups("main");
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 4u);
  for (const auto& g : *groups) EXPECT_EQ(g.snapshot_count, 25);
}

// CatalogSync: the catalog written only through the datastore's observer.
// After any sequence of changes its rows equal a fresh Reindex of the folder.
class CatalogSyncTest : public CatalogReindexTest {
 protected:
  void Attach() {
    auto s = CatalogSync::Attach(cat_.get(), "main", ds_.get(),
                                 [this](const Status& st) { errors_.push_back(st.ToString()); });
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    sync_ = std::move(*s);
  }
  // Commits through the datastore alone: the catalog must learn of it.
  void CommitOnly(const SnapshotRef& ref, int seed) {
    auto staged = ds_->Stage(ref);
    ASSERT_TRUE(staged.ok());
    for (const auto& [name, bytes] : Archives(seed)) {
      ASSERT_TRUE((*staged)->WriteArchive(name, bytes).ok());
    }
    ASSERT_TRUE((*staged)->Commit(MakeManifest(ref, Archives(seed))).ok());
  }
  // What a fresh reindex of the folder gives, in a second catalog.
  std::string Reindexed() {
    auto other = Catalog::Open(JoinPath(tmp_, "fresh.db"));
    EXPECT_TRUE(other.ok());
    EXPECT_TRUE((*other)->AddDatastore("main", store_dir_).ok());
    EXPECT_TRUE((*other)->Reindex("main", *ds_).ok());
    auto text = (*other)->Dump("main");
    other->reset();
    (void)RemoveAll(Env::Default(), JoinPath(tmp_, "fresh.db"));
    return text.ok() ? *text : "";
  }
  void TearDown() override {
    sync_.reset();
    CatalogReindexTest::TearDown();
  }

  std::unique_ptr<CatalogSync> sync_;
  std::vector<std::string> errors_;
};

TEST_F(CatalogSyncTest, EveryChangeReachesTheCatalog) {
  Attach();
  const GroupRef g1{{}, "vm", "100"}, g2{{"prod"}, "ct", "7"};
  ASSERT_TRUE(ds_->SetOwnerIfAbsent(g1, "alice!t").ok());
  ASSERT_TRUE(ds_->SetOwner(g2, "bob").ok());
  for (int i = 0; i < 4; ++i) CommitOnly(SnapshotRef{g1, kT0 + i}, i);
  CommitOnly(SnapshotRef{g2, kT0}, 9);
  EXPECT_EQ(*cat_->Dump("main"), Reindexed());

  ASSERT_TRUE(ds_->SetProtected(SnapshotRef{g1, kT0}, true).ok());
  ASSERT_TRUE(ds_->SetNotes(SnapshotRef{g1, kT0 + 1}, "before the upgrade").ok());
  ASSERT_TRUE(ds_->SetVerifyState(SnapshotRef{g1, kT0 + 2}, VerifyState{"ok", kT0 + 9, "t1"}).ok());
  ASSERT_TRUE(ds_->DeleteSnapshot(SnapshotRef{g1, kT0 + 3}).ok());
  ASSERT_TRUE(ds_->DeleteGroup(g2).ok());
  EXPECT_TRUE(ds_->DeleteSnapshot(SnapshotRef{g1, kT0}).IsConflict());  // protected
  EXPECT_EQ(*cat_->Dump("main"), Reindexed());
  auto rows = cat_->ListSnapshots("main", g1, SnapshotPage{0, 2, true});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].ref.time, kT0 + 2);  // newest first
  EXPECT_EQ((*rows)[0].verify->state, "ok");
  EXPECT_EQ((*rows)[1].notes, "before the upgrade");
  EXPECT_EQ((*rows)[1].archives.size(), 2u);
  EXPECT_EQ(*cat_->CountSnapshots("main", g1), 3);
  EXPECT_TRUE(errors_.empty());
  EXPECT_FALSE(sync_->stale());
}

TEST_F(CatalogSyncTest, DamageMarksStaleAndRefreshRepairs) {
  Attach();
  const SnapshotRef a{GroupRef{{}, "vm", "1"}, kT0}, b{GroupRef{{}, "vm", "1"}, kT0 + 1};
  CommitOnly(a, 1);
  CommitOnly(b, 2);
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), JoinPath(*ds_->SnapshotPath(a), "index.json"),
                              "{broken", false).ok());
  ds_->ReportDamage(a, Status::Corruption("index.json cannot be read"));
  EXPECT_TRUE(sync_->stale());
  EXPECT_EQ(errors_.size(), 1u);
  ASSERT_TRUE(sync_->Refresh().ok());
  EXPECT_FALSE(sync_->stale());
  EXPECT_EQ(*cat_->Dump("main"), Reindexed());
  EXPECT_FALSE(cat_->GetSnapshot("main", a)->error.empty());
}

// A store left by a crash (never detached) is reindexed by the next Attach;
// one closed cleanly is trusted as it is.
TEST_F(CatalogSyncTest, InStepAfterACleanCloseOnly) {
  Attach();
  const GroupRef g{{}, "vm", "5"};
  CommitOnly(SnapshotRef{g, kT0}, 1);
  EXPECT_FALSE(*cat_->InStep("main"));  // while attached: a crash loses the flag
  sync_->Detach();
  EXPECT_TRUE(*cat_->InStep("main"));

  // Changed behind the catalog's back, but recorded in step: trusted.
  CommitOnly(SnapshotRef{g, kT0 + 1}, 2);
  ReindexReport report;
  auto s = CatalogSync::Attach(cat_.get(), "main", ds_.get(), nullptr, &report);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(report.groups, -1);
  EXPECT_NE(*cat_->Dump("main"), Reindexed());
  // As after a crash: the flag stays false, so the next Attach reindexes.
  ASSERT_TRUE(cat_->SetInStep("main", false).ok());
  (*s)->Detach();
  ASSERT_TRUE(cat_->SetInStep("main", false).ok());
  auto again = CatalogSync::Attach(cat_.get(), "main", ds_.get(), nullptr, &report);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(report.groups, 1);
  EXPECT_EQ(*cat_->Dump("main"), Reindexed());
}

}  // namespace
}  // namespace cairn::storage
