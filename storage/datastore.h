#pragma once

// Datastore: one directory that holds chunks and snapshots and describes itself.
//
//   <root>/.cairn-datastore        self-description (JSON: format, version, uuid)
//   <root>/.lock                   held (flock) by the one process that has it open
//   <root>/.chunks/                the ChunkStore (storage/chunk_store.h)
//   <root>/.staging/<random>/      snapshots being written, and snapshots being deleted
//   <root>/[ns/<ns1>/…]<type>/<id>/owner                  the group's owner (one line)
//   <root>/[ns/<ns1>/…]<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>/ a committed snapshot:
//                                  index.json (storage/manifest.h) and its archives
//
// A snapshot is written into a private staging folder and becomes visible by
// one rename (RenameNoReplace) into its final place: a reader sees it whole or
// not at all. Deleting moves it back into `.staging/` by one rename before its
// tree is removed. Leftovers in `.staging/` (a crash) are removed by Open().
// Every step and its fsyncs: storage/FORMAT.md, "Datastore".
//
// Only names that pass storage/names.h ever reach a path. Listings skip
// anything hidden (leading '.') or invalid, and never show a staging folder.
//
// Thread safety: a Datastore is thread-safe. Changes that create or remove
// group folders, the commit rename, the delete rename and the read-modify-write
// of a snapshot's index.json are serialised by one internal mutex; archive
// writes and reads run unlocked. A StagedSnapshot is used by one thread at a
// time. Across processes, Open() takes `.lock` so one server owns the store.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/chunk_store.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "storage/manifest.h"
#include "storage/mutex.h"
#include "storage/names.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr int kDatastoreFormatVersion = 1;
inline constexpr char kDatastoreInfoFile[] = ".cairn-datastore";
inline constexpr char kDatastoreLockFile[] = ".lock";
inline constexpr char kStagingDir[] = ".staging";
inline constexpr char kManifestFile[] = "index.json";
inline constexpr char kOwnerFile[] = "owner";
// Longest owner string SetOwner accepts.
inline constexpr size_t kMaxOwnerSize = 256;

struct DatastoreOptions {
  ChunkStoreOptions chunks;
};

class Datastore;

// Told of every change a Datastore makes to its snapshots and groups: the
// one hook that keeps an index (the server's catalog, storage/catalog.h) in
// step with the folder. Each call is made after the change took effect, with
// the datastore's internal lock held, so calls come in the order the changes
// happened; an observer must not call back into the Datastore's changing
// methods. Unsure() means a change failed part-way (an I/O error after its
// first step) and whether it took effect is not known: the observer should
// read the group again from the folder (a reindex).
class DatastoreObserver {
 public:
  virtual ~DatastoreObserver() = default;
  // Committed, or its index.json rewritten (protected, notes, verify state).
  virtual void SnapshotChanged(const SnapshotRef& ref, const Manifest& manifest) = 0;
  virtual void SnapshotRemoved(const SnapshotRef& ref) = 0;
  virtual void OwnerChanged(const GroupRef& group, const std::string& owner) = 0;
  // The group folder is gone with every snapshot and its owner.
  virtual void GroupRemoved(const GroupRef& group) = 0;
  virtual void Unsure(const GroupRef& group, const Status& error) = 0;
};

// A snapshot being written. Nothing of it is visible until Commit() returns OK.
// Destroying it (or Abort()) without a successful Commit removes its staging
// folder. REQUIRES: the Datastore outlives it. Not thread-safe: one user.
class StagedSnapshot {
 public:
  ~StagedSnapshot();
  StagedSnapshot(const StagedSnapshot&) = delete;
  StagedSnapshot& operator=(const StagedSnapshot&) = delete;

  const SnapshotRef& ref() const { return ref_; }

  // Writes archive `name` durably (write, fsync) into the staging folder,
  // replacing an earlier write of the same name. InvalidArgument for a name
  // that fails ValidateName(kArchive) or is "index.json"; Conflict after
  // Commit or Abort.
  Status WriteArchive(const std::string& name, std::string_view bytes);

  // Makes the snapshot visible. `manifest` must name this snapshot's type, id
  // and time, and list exactly the archives written (a ".blob" archive's size
  // and csum must match its bytes) — InvalidArgument otherwise, nothing
  // changed. AlreadyExists when the snapshot exists: nothing changed, and the
  // staged data is kept until Abort/destruction. On OK the snapshot is
  // durable. On any other error the snapshot is not visible, or (a failure
  // after the rename, while making it durable) visible and whole.
  Status Commit(const Manifest& manifest);

  // Removes the staging folder. Idempotent; no effect after a successful Commit.
  void Abort();

  bool committed() const { return committed_; }

 private:
  friend class Datastore;
  StagedSnapshot(Datastore* store, SnapshotRef ref, std::string dir);

  struct Written {
    uint64_t size = 0;
    Digest sha256;
  };

  Datastore* const store_;
  const SnapshotRef ref_;
  const std::string dir_;  // .staging/<random>
  std::vector<std::pair<std::string, Written>> written_;
  bool committed_ = false;
  bool closed_ = false;  // committed or aborted
};

class Datastore {
 public:
  // Makes a datastore in `path` (created if missing): .chunks (ChunkStore::Create),
  // .staging, then the self-description, written last so that its presence
  // means the datastore is complete. AlreadyExists when `path` is a datastore
  // already, is not a folder, or is a non-empty folder that is not a datastore
  // (a folder left by an interrupted Create holds only datastore entries and
  // is completed instead).
  static Status Create(Env* env, const std::string& path);

  // Opens the datastore in `path`. NotFound when there is no self-description,
  // Corruption when it is malformed or of another format version, Busy when
  // another user holds `.lock`. Removes what an earlier crash left in
  // `.staging/`. The self-description's "sync-level" (when present) takes
  // the place of options.chunks.sync_level. REQUIRES: `env` outlives the
  // Datastore.
  static Result<std::unique_ptr<Datastore>> Open(Env* env, const std::string& path,
                                                 DatastoreOptions options = {});

  // Stores `level` as the datastore's "sync-level" in its self-description
  // (temp, fsync, rename, folder fsync). Takes `.lock`: Busy while a server
  // has the store open (it reads the setting when it opens the store).
  static Status SetSyncLevel(Env* env, const std::string& path, SyncLevel level);
  // The self-description's "sync-level"; nullopt when it has none (the
  // built-in default, ChunkStoreOptions::sync_level, applies).
  static Result<std::optional<SyncLevel>> StoredSyncLevel(Env* env, const std::string& path);

  ~Datastore();
  Datastore(const Datastore&) = delete;
  Datastore& operator=(const Datastore&) = delete;

  // --- Listing. Hidden and invalid names are skipped, never reported. ---

  // Every group in every namespace, sorted (GroupRef order).
  Result<std::vector<GroupRef>> ListGroups();
  // Snapshots of `group` sorted by time, oldest first. InvalidArgument for an
  // invalid ref; NotFound when the group folder does not exist.
  Result<std::vector<SnapshotRef>> ListSnapshots(const GroupRef& group);
  // The snapshot's manifest. NotFound when the snapshot does not exist;
  // Corruption when index.json fails Manifest::Parse or names another snapshot.
  Result<Manifest> ReadManifest(const SnapshotRef& ref);
  // A whole archive file; NotFound when absent, Corruption when over `max_size`.
  Result<std::string> ReadArchive(const SnapshotRef& ref, const std::string& name,
                                  uint64_t max_size);
  // Path of a snapshot folder / archive file, after validating every name.
  Result<std::string> SnapshotPath(const SnapshotRef& ref) const;
  Result<std::string> ArchivePath(const SnapshotRef& ref, const std::string& name) const;

  // --- Writing snapshots ---

  // Starts a snapshot in a fresh `.staging/<random>/`. InvalidArgument for an
  // invalid ref; AlreadyExists when the snapshot exists already (Commit checks
  // again: the rename is what decides).
  Result<std::unique_ptr<StagedSnapshot>> Stage(const SnapshotRef& ref);

  // Deletes a snapshot: one rename into `.staging/` (it disappears whole),
  // fsync, then the tree is removed; a group folder left completely empty is
  // removed too (a group with an owner file stays). NotFound when absent;
  // Conflict when the snapshot is protected; Corruption when its manifest does
  // not parse (whether it is protected cannot be known; nothing is changed).
  Status DeleteSnapshot(const SnapshotRef& ref) CAIRN_EXCLUDES(mu_);
  // Deletes every snapshot of a group, then the group (owner file included).
  // Conflict, before anything is deleted, when one of them is protected.
  Status DeleteGroup(const GroupRef& group) CAIRN_EXCLUDES(mu_);

  // Rewrite the unprotected part of index.json atomically (temp, fsync,
  // rename, folder fsync). The protected part and protected-sha256 stay
  // the same (checked before writing). NotFound / Corruption as ReadManifest;
  // InvalidArgument when the new values would not pass Manifest::Parse (e.g.
  // a verify state other than "ok"/"failed").
  Status SetProtected(const SnapshotRef& ref, bool is_protected) CAIRN_EXCLUDES(mu_);
  Status SetNotes(const SnapshotRef& ref, const std::string& notes) CAIRN_EXCLUDES(mu_);
  Status SetVerifyState(const SnapshotRef& ref, const VerifyState& verify) CAIRN_EXCLUDES(mu_);

  // --- Group owner (`owner` file in the group folder) ---

  // Writes the owner durably, creating the group folder (durably) if needed.
  // InvalidArgument for an invalid group, or an owner that is empty, longer
  // than kMaxOwnerSize or holds control characters.
  Status SetOwner(const GroupRef& group, const std::string& owner) CAIRN_EXCLUDES(mu_);
  // Makes `owner` the group's owner unless it has one: the owner file is
  // written to a temp name, fsynced, and renamed into place with
  // RENAME_NOREPLACE, then the group folder is fsynced. Of concurrent calls
  // for one group exactly one creates the file; every call returns the
  // owner now in effect (its own, or the one found). InvalidArgument as
  // SetOwner; Corruption when an existing owner file is malformed.
  Result<std::string> SetOwnerIfAbsent(const GroupRef& group, const std::string& owner)
      CAIRN_EXCLUDES(mu_);
  // NotFound when the group or its owner file does not exist.
  Result<std::string> GetOwner(const GroupRef& group);

  // Sets the observer told of every change (null: none); a change running
  // meanwhile tells the old one or the new one. REQUIRES: it outlives the
  // datastore or is reset first.
  void SetObserver(DatastoreObserver* observer);
  // Tells the observer that `ref` was found damaged by a reader (verify):
  // its index.json no longer reads, so an index must read it again.
  void ReportDamage(const SnapshotRef& ref, const Status& damage);

  // --- Accessors ---
  ChunkStore* chunk_store() const { return chunks_.get(); }
  const std::string& path() const { return path_; }
  // The uuid from the self-description.
  const std::string& uuid() const { return uuid_; }
  Env* env() const { return env_; }

 private:
  friend class StagedSnapshot;

  Datastore(Env* env, std::string path, std::string uuid, std::unique_ptr<FileLock> lock,
            std::unique_ptr<ChunkStore> chunks);

  std::string StagingRoot() const;
  // Creates every missing folder of `rel` below the root, fsyncing the parent
  // of each one created.
  Status CreateDirsDurably(const std::string& rel) CAIRN_REQUIRES(mu_);
  // Rename `ref`'s folder into .staging/ and remove it. REQUIRES: the
  // manifest was checked.
  Status RemoveSnapshotLocked(const SnapshotRef& ref) CAIRN_REQUIRES(mu_);
  Status RemoveGroupFolderIfEmptyLocked(const GroupRef& group) CAIRN_REQUIRES(mu_);
  // Read-modify-write of the unprotected part under mu_.
  template <typename Fn>
  Status RewriteManifest(const SnapshotRef& ref, Fn&& change) CAIRN_EXCLUDES(mu_);
  Status ListGroupsIn(const std::string& dir, std::vector<std::string>* ns,
                      std::vector<GroupRef>* out);
  // Tells the observer (if any) that a change of `group` failed part-way
  // and passes `s` on. REQUIRES: mu_ held.
  Status Unsure(const GroupRef& group, Status s) CAIRN_REQUIRES(mu_);

  Env* const env_;
  const std::string path_;
  const std::string uuid_;
  const std::unique_ptr<FileLock> lock_;
  const std::unique_ptr<ChunkStore> chunks_;
  // Serialises group folder creation/removal, the commit and delete renames
  // and index.json rewrites, and the observer's calls. It guards folders
  // and files, and the observer: what the analysis checks is that the
  // helpers above that change them (CAIRN_REQUIRES) run under it.
  Mutex mu_;
  DatastoreObserver* observer_ CAIRN_GUARDED_BY(mu_) = nullptr;
};

}  // namespace cairn::storage
