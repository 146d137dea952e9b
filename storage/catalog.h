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

#include <cstdint>
#include <memory>
#include <optional>
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
inline constexpr int kCatalogSchemaVersion = 1;

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
  auto operator<=>(const GroupRow&) const = default;
};

struct SnapshotRow {
  SnapshotRef ref;
  uint64_t size = 0;            // Manifest::TotalSize()
  bool is_protected = false;
  std::string notes;
  std::optional<VerifyState> verify;
  auto operator<=>(const SnapshotRow&) const = default;
};

// What Reindex could not take in.
struct ReindexReport {
  int64_t groups = 0;
  int64_t snapshots = 0;
  // Snapshot folders whose manifest could not be read, with the reason;
  // they are left out of the catalog (and untouched on disk).
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
  // Snapshots of one group, oldest first; empty for an unknown group.
  Result<std::vector<SnapshotRow>> ListSnapshots(const std::string& store, const GroupRef& group);
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
  // not read are skipped and listed in `report` (may be null).
  // NotFound when `store` is not registered.
  Status Reindex(const std::string& store, Datastore& ds, ReindexReport* report = nullptr);

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
  Status RemoveGroupIfUnusedLocked(const std::string& store, const GroupRef& group)
      CAIRN_REQUIRES(mu_);

  Mutex mu_;
  // The one connection: every use of it (and of its statements) holds mu_.
  sqlite3* const db_ CAIRN_GUARDED_BY(mu_);
};

}  // namespace cairn::storage
