#pragma once

// Catalog: the server's SQLite index over its datastores.
//
// One database file for the whole server (WAL, foreign keys on, busy timeout).
// It holds, per registered datastore, its groups, snapshots and archives as
// found in the datastore folders — an index, never the source of truth:
// Reindex() rebuilds a store's rows from the directory alone, so losing the
// file loses no backup. Schema and migrations: storage/FORMAT.md, "Catalog".
//
// The schema version is SQLite's `PRAGMA user_version`; Open() applies every
// missing migration, in order, each in its own transaction together with the
// version bump. A database newer than this build is refused (Conflict).
//
// All SQL is fixed text with bound parameters; no outside value is ever
// spliced into a statement.
//
// Thread safety: all methods are thread-safe. There is one connection,
// guarded by a mutex: calls are serialised (Reindex holds it for its whole
// transaction, directory walk included).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "storage/datastore.h"
#include "storage/manifest.h"
#include "storage/mutex.h"
#include "storage/names.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::storage {

// The schema version this build creates and understands.
inline constexpr int kCatalogSchemaVersion = 4;

struct DatastoreRow {
  std::string name;
  std::string path;
  auto operator<=>(const DatastoreRow&) const = default;
};

struct GroupRow {
  GroupRef group;
  std::string owner;            // empty when the group has no owner file
  int64_t snapshot_count = 0;
  int64_t last_snapshot = 0;    // time of the newest snapshot; 0 when none
  uint64_t size = 0;            // sum of its snapshots' sizes
  auto operator<=>(const GroupRow&) const = default;
};

struct SnapshotRow {
  SnapshotRef ref;
  uint64_t size = 0;            // Manifest::TotalSize()
  bool is_protected = false;
  std::string notes;
  std::optional<VerifyState> verify;
  std::string client;           // Manifest::client as JSON text
  std::string key_fingerprint;  // Manifest::crypt's fingerprint; empty for a plain snapshot
  std::vector<ArchiveInfo> archives;  // by name (filled by ListSnapshots and GetSnapshot)
  // Set for a snapshot whose index.json did not read at the last reindex
  // (the other fields are then empty): listings show it as damaged.
  std::string error;
  bool operator==(const SnapshotRow&) const = default;
  // The row a committed manifest makes.
  static SnapshotRow FromManifest(const SnapshotRef& ref, const Manifest& m);
};

// Which snapshots of a group ListSnapshots returns: `limit` (0: all) from
// `offset`, oldest first or newest first.
struct SnapshotPage {
  size_t offset = 0;
  size_t limit = 0;
  bool newest_first = false;
};

// What Reindex could not take in.
struct ReindexReport {
  int64_t groups = 0;
  int64_t snapshots = 0;
  // Snapshot folders whose manifest could not be read, with the reason.
  // Those that are Corruption get a row with SnapshotRow::error set; those
  // that vanished meanwhile none. Nothing on disk is touched.
  std::vector<std::pair<SnapshotRef, Status>> skipped;
};

class Catalog {
 public:
  // Opens (creating if missing) the database at `db_path` and migrates it.
  // Conflict when its schema is newer than kCatalogSchemaVersion; IOError for
  // SQLite failures.
  static Result<std::unique_ptr<Catalog>> Open(const std::string& db_path);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  // PRAGMA user_version.
  Result<int> SchemaVersion();

  // --- Datastores ---
  // InvalidArgument for a name failing ValidateName(kStore) or an empty path;
  // AlreadyExists when the name is taken.
  Status AddDatastore(const std::string& name, const std::string& path);
  // Removes the store and all its rows. NotFound when unknown.
  Status RemoveDatastore(const std::string& name);
  // Sorted by name.
  Result<std::vector<DatastoreRow>> ListDatastores();
  // NotFound when unknown.
  Result<DatastoreRow> GetDatastore(const std::string& name);

  // --- Groups and snapshots. NotFound when `store` is not registered. ---

  // Adds or replaces a snapshot row (and its archive rows) from its
  // manifest, adding the group row when missing. InvalidArgument when the
  // manifest does not name `ref`.
  Status UpsertSnapshot(const std::string& store, const SnapshotRef& ref, const Manifest& m);
  // Removes a snapshot's row. When its group is left with no snapshot and no
  // owner, the group row goes too (as Datastore::DeleteSnapshot removes an
  // empty group folder). NotFound when there is no such row.
  Status RemoveSnapshot(const std::string& store, const SnapshotRef& ref);
  // Sets the owner, adding the group row when missing.
  Status SetGroupOwner(const std::string& store, const GroupRef& group, const std::string& owner);
  // Removes a group with its snapshots. NotFound when there is no such row.
  Status RemoveGroup(const std::string& store, const GroupRef& group);

  // Sorted by (namespace, type, id).
  Result<std::vector<GroupRow>> ListGroups(const std::string& store);
  // The groups with a snapshot whose notes contain `text` (ASCII case folded).
  Result<std::set<GroupRef>> GroupsWithNotesContaining(const std::string& store,
                                                       const std::string& text);
  // Snapshots of one group with their archives, in `page`'s order and
  // range; empty for an unknown group.
  Result<std::vector<SnapshotRow>> ListSnapshots(const std::string& store, const GroupRef& group,
                                                 const SnapshotPage& page = {});
  // How many snapshots the group has (0 for an unknown group).
  Result<int64_t> CountSnapshots(const std::string& store, const GroupRef& group);
  // NotFound when there is no such row.
  Result<SnapshotRow> GetSnapshot(const std::string& store, const SnapshotRef& ref);
  // Archives of a snapshot, sorted by name.
  Result<std::vector<ArchiveInfo>> ListArchives(const std::string& store, const SnapshotRef& ref);

  // Each: NotFound when there is no such snapshot row.
  Status SetVerifyState(const std::string& store, const SnapshotRef& ref, const VerifyState& v);
  Status SetProtected(const std::string& store, const SnapshotRef& ref, bool is_protected);
  Status SetNotes(const std::string& store, const SnapshotRef& ref, const std::string& notes);

  // In one transaction: deletes every group, snapshot and archive row of
  // `store` and rebuilds them from `ds`'s directory alone (groups, owners,
  // manifests). On any error nothing changes. Snapshots whose manifest does
  // not read are listed in `report` (may be null) and, when damaged (not
  // vanished), kept as rows with their error.
  // NotFound when `store` is not registered.
  Status Reindex(const std::string& store, Datastore& ds, ReindexReport* report = nullptr);

  // Whether the store's rows were known to equal its folder when the last
  // user closed it (CatalogSync); false for a new store and after a crash.
  Result<bool> InStep(const std::string& store);
  Status SetInStep(const std::string& store, bool in_step);

  // Every row of `store` as sorted text, one row a line; equal catalogs give
  // equal text. NotFound when `store` is not registered.
  Result<std::string> Dump(const std::string& store);

 private:
  explicit Catalog(sqlite3* db);
  Status Migrate() CAIRN_REQUIRES(mu_);
  Status RequireStoreLocked(const std::string& store) CAIRN_REQUIRES(mu_);
  Status UpsertSnapshotLocked(const std::string& store, const SnapshotRef& ref,
                              const Manifest& m) CAIRN_REQUIRES(mu_);
  Status EnsureGroupLocked(const std::string& store, const GroupRef& group) CAIRN_REQUIRES(mu_);
  Status InsertDamagedLocked(const std::string& store, const SnapshotRef& ref, const Status& why)
      CAIRN_REQUIRES(mu_);
  Status RemoveGroupIfUnusedLocked(const std::string& store, const GroupRef& group)
      CAIRN_REQUIRES(mu_);

  Mutex mu_;
  // The one connection: every use of it (and of its statements) holds mu_.
  sqlite3* const db_ CAIRN_GUARDED_BY(mu_);
};

// Keeps one datastore's catalog rows in step with its folder: the one path
// by which the catalog is written while a datastore is in use. Attach makes
// it the datastore's observer (Datastore::SetObserver); every change is
// applied to the catalog as it happens. An update that fails is reported to
// `on_error` (the server logs it) and marks the store stale; Refresh, which
// every read of the catalog calls first, then rebuilds the rows by Reindex.
// A store left by a crash (not InStep) is reindexed by Attach; Detach (or
// destruction) records InStep when nothing is stale.
//
// Thread safety: thread-safe; calls from the datastore come in change order.
class CatalogSync final : public DatastoreObserver {
 public:
  using ErrorFn = std::function<void(const Status&)>;
  // Reindexes first when the store is not InStep (report in *reindexed, may
  // be null; its `groups` is -1 when no reindex was needed).
  static Result<std::unique_ptr<CatalogSync>> Attach(Catalog* catalog, const std::string& store,
                                                     Datastore* ds, ErrorFn on_error,
                                                     ReindexReport* reindexed = nullptr);
  ~CatalogSync() override;
  void Detach();

  // Reindexes when stale. OK when the rows are in step.
  Status Refresh();
  bool stale() const { return stale_.load(); }
  Catalog* catalog() const { return catalog_; }
  const std::string& store() const { return store_; }

  void SnapshotChanged(const SnapshotRef& ref, const Manifest& manifest) override;
  void SnapshotRemoved(const SnapshotRef& ref) override;
  void OwnerChanged(const GroupRef& group, const std::string& owner) override;
  void GroupRemoved(const GroupRef& group) override;
  void Unsure(const GroupRef& group, const Status& error) override;

 private:
  CatalogSync(Catalog* catalog, std::string store, Datastore* ds, ErrorFn on_error)
      : catalog_(catalog), store_(std::move(store)), ds_(ds), on_error_(std::move(on_error)) {}
  void Check(const Status& s, const std::string& what);

  Catalog* const catalog_;
  const std::string store_;
  Mutex refresh_mu_;  // one Refresh or Detach at a time
  Datastore* ds_ CAIRN_GUARDED_BY(refresh_mu_);  // null once detached
  const ErrorFn on_error_;
  std::atomic<bool> stale_{false};
};

}  // namespace cairn::storage
