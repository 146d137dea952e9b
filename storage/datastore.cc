// Datastore: layout, staging, atomic commit and delete. The crash-safety
// argument for every step is in storage/FORMAT.md ("Datastore"); comments here
// name the step each fsync belongs to.

#include "storage/datastore.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include <nlohmann/json.hpp>

namespace cairn::storage {
namespace {

constexpr char kFormatName[] = "cairn-datastore";
constexpr uint64_t kMaxInfoSize = 64 * 1024;

// `n` random bytes as lowercase hex. getrandom(2) first; a short read (only
// possible before the kernel's pool is ready) falls back to random_device.
std::string RandomHex(size_t n) {
  std::string bytes(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(bytes.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  if (got < n) {
    std::random_device rd;
    for (size_t i = got; i < n; ++i) bytes[i] = static_cast<char>(rd());
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (char c : bytes) {
    auto u = static_cast<unsigned char>(c);
    out += kHex[u >> 4];
    out += kHex[u & 0xf];
  }
  return out;
}

// An RFC 4122 version 4 UUID.
std::string NewUuid() {
  std::string h = RandomHex(16);
  h[12] = '4';
  static constexpr char kVariant[] = "89ab";
  h[16] = kVariant[(h[16] >= 'a' ? h[16] - 'a' + 10 : h[16] - '0') & 3];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    const char c = s[i];
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Entries Create may find in a folder it left half made.
bool IsOwnEntry(std::string_view name) {
  return name == ".chunks" || name == kStagingDir || name == kDatastoreLockFile ||
         StartsWith(name, std::string(kDatastoreInfoFile) + ".tmp.");
}

Status CheckOwner(std::string_view owner) {
  if (owner.empty() || owner.size() > kMaxOwnerSize) {
    return Status::InvalidArgument("owner must be 1.." + std::to_string(kMaxOwnerSize) +
                                   " bytes");
  }
  for (char c : owner) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return Status::InvalidArgument("owner holds a control character");
  }
  return Status::OK();
}

// True when `name` is a directory entry of a real folder (lstat: a symlink
// never counts, so nothing listed can lead outside the datastore).
Result<bool> IsDir(Env* env, const std::string& path) {
  auto st = env->Stat(path);
  if (!st.ok()) {
    if (st.status().IsNotFound()) return false;  // vanished since ListDir
    return st.status();
  }
  return st->is_dir;
}

// Protected fields equal: together with both texts passing Manifest::Parse,
// this means the protected-sha256 of both is the same.
bool SameProtectedPart(const Manifest& a, const Manifest& b) {
  return a.backup_type == b.backup_type && a.backup_id == b.backup_id &&
         a.backup_time == b.backup_time && a.archives == b.archives && a.client == b.client;
}

Status CheckNamesMatch(const Manifest& m, const SnapshotRef& ref) {
  if (m.backup_type != ref.group.type || m.backup_id != ref.group.id ||
      m.backup_time != ref.time) {
    return Status::Corruption(ref.ToString() + ": index.json names another snapshot (" +
                              m.backup_type + "/" + m.backup_id + "/" +
                              FormatSnapshotTime(m.backup_time) + ")");
  }
  return Status::OK();
}

}  // namespace

// ---------------------------------------------------------------------------
// StagedSnapshot

StagedSnapshot::StagedSnapshot(Datastore* store, SnapshotRef ref, std::string dir)
    : store_(store), ref_(std::move(ref)), dir_(std::move(dir)) {}

StagedSnapshot::~StagedSnapshot() { Abort(); }

void StagedSnapshot::Abort() {
  if (closed_) return;
  closed_ = true;
  // Best effort: whatever is left is removed by the next Open().
  (void)RemoveAll(store_->env_, dir_);
}

Status StagedSnapshot::WriteArchive(const std::string& name, std::string_view bytes) {
  if (closed_) return Status::Conflict(ref_.ToString() + ": staged snapshot is closed");
  CAIRN_RETURN_IF_ERROR(ValidateName(NameKind::kArchive, name));
  if (name == kManifestFile) return Status::InvalidArgument("archive name index.json is reserved");

  // The staging folder is private to this object, so a direct write is safe:
  // nobody reads the file before Commit, which fsyncs the folder.
  Env* env = store_->env_;
  const std::string path = JoinPath(dir_, name);
  CAIRN_ASSIGN_OR_RETURN(auto file, env->NewWritableFile(path));
  Status s = file->Append(bytes);
  if (s.ok()) s = file->Sync();
  Status c = file->Close();
  if (s.ok()) s = c;
  if (!s.ok()) {
    written_.erase(std::remove_if(written_.begin(), written_.end(),
                                  [&](const auto& w) { return w.first == name; }),
                   written_.end());
    (void)env->RemoveFile(path);
    return s;
  }
  Written w{bytes.size(), Sha256(bytes)};
  for (auto& [n, old] : written_) {
    if (n == name) {
      old = w;
      return Status::OK();
    }
  }
  written_.emplace_back(name, w);
  return Status::OK();
}

Status StagedSnapshot::Commit(const Manifest& manifest) {
  if (closed_) return Status::Conflict(ref_.ToString() + ": staged snapshot is closed");
  if (manifest.backup_type != ref_.group.type || manifest.backup_id != ref_.group.id ||
      manifest.backup_time != ref_.time) {
    return Status::InvalidArgument("manifest does not name snapshot " + ref_.ToString());
  }
  // The manifest must describe exactly what was written: a listed archive
  // that is missing, or a file nobody describes, would make a snapshot that
  // cannot be verified.
  if (manifest.archives.size() != written_.size()) {
    return Status::InvalidArgument("manifest lists " + std::to_string(manifest.archives.size()) +
                                   " archives, " + std::to_string(written_.size()) +
                                   " were written");
  }
  for (size_t i = 0; i < manifest.archives.size(); ++i) {
    const ArchiveInfo& a = manifest.archives[i];
    for (size_t j = 0; j < i; ++j) {
      if (manifest.archives[j].name == a.name) {
        return Status::InvalidArgument("manifest lists archive " + a.name + " twice");
      }
    }
    auto it = std::find_if(written_.begin(), written_.end(),
                           [&](const auto& w) { return w.first == a.name; });
    if (it == written_.end()) {
      return Status::InvalidArgument("manifest lists archive " + a.name + ", never written");
    }
    if (EndsWith(a.name, ".blob") && (a.size != it->second.size || a.csum != it->second.sha256)) {
      return Status::InvalidArgument("manifest's size or csum of " + a.name +
                                     " does not match its bytes");
    }
  }
  const std::string text = manifest.ToJson();
  // Never commit a manifest that readers would reject.
  if (auto back = Manifest::Parse(text); !back.ok()) {
    return Status::InvalidArgument("manifest does not round-trip: " + back.status().ToString());
  }

  Env* env = store_->env_;
  {
    CAIRN_ASSIGN_OR_RETURN(auto file, env->NewWritableFile(JoinPath(dir_, kManifestFile)));
    Status s = file->Append(text);
    if (s.ok()) s = file->Sync();
    Status c = file->Close();
    if (s.ok()) s = c;
    CAIRN_RETURN_IF_ERROR(s);
  }
  // Step C2: every file's name in the staging folder is durable before the
  // folder is renamed into sight, so the visible folder is never missing one.
  CAIRN_RETURN_IF_ERROR(env->SyncDir(dir_));

  const std::string group_dir = JoinPath(store_->path_, ref_.group.RelPath());
  const std::string final_dir = JoinPath(store_->path_, ref_.RelPath());
  {
    MutexLock lock(&store_->mu_);
    // Step C3: the group's folders, each made durable in its parent.
    CAIRN_RETURN_IF_ERROR(store_->CreateDirsDurably(ref_.group.RelPath()));
    // Step C4: the one atomic step that makes the snapshot visible.
    Status s = env->RenameNoReplace(dir_, final_dir);
    if (!s.ok()) {
      if (s.IsAlreadyExists()) {
        return Status::AlreadyExists(ref_.ToString() + ": snapshot exists already");
      }
      return s;
    }
    committed_ = true;
    closed_ = true;
    if (store_->observer_) store_->observer_->SnapshotChanged(ref_, manifest);
  }
  // Step C5: the rename is durable once the group folder is synced.
  return env->SyncDir(group_dir);
}

// ---------------------------------------------------------------------------
// Datastore: create and open

Status Datastore::Create(Env* env, const std::string& path) {
  auto st = env->Stat(path);
  if (st.ok()) {
    if (!st->is_dir) return Status::AlreadyExists(path + ": exists and is not a folder");
    std::vector<std::string> names;
    CAIRN_RETURN_IF_ERROR(env->ListDir(path, &names));
    for (const auto& n : names) {
      if (n == kDatastoreInfoFile) return Status::AlreadyExists(path + ": is a datastore already");
    }
    for (const auto& n : names) {
      if (!IsOwnEntry(n)) {
        return Status::AlreadyExists(path + ": folder is not empty and not a datastore (" + n +
                                     ")");
      }
    }
  } else if (st.status().IsNotFound()) {
    CAIRN_RETURN_IF_ERROR(CreateDirAll(env, path));
    CAIRN_RETURN_IF_ERROR(env->SyncDir(DirName(path)));
  } else {
    return st.status();
  }

  CAIRN_RETURN_IF_ERROR(ChunkStore::Create(env, path));
  Status s = env->CreateDir(JoinPath(path, kStagingDir));
  if (!s.ok() && !s.IsAlreadyExists()) return s;
  CAIRN_RETURN_IF_ERROR(env->SyncDir(path));

  // Written last: its presence means everything above is in place.
  nlohmann::json info = {
      {"format", kFormatName},
      {"version", kDatastoreFormatVersion},
      {"uuid", NewUuid()},
      {"created", env->NowSeconds()},
  };
  return WriteFileAtomic(env, JoinPath(path, kDatastoreInfoFile), info.dump() + "\n",
                         /*sync_dir=*/true);
}

namespace {

// The self-description, checked.
Result<nlohmann::json> ReadInfo(Env* env, const std::string& path) {
  const std::string info_path = JoinPath(path, kDatastoreInfoFile);
  std::string text;
  Status s = env->ReadFile(info_path, &text, kMaxInfoSize);
  if (s.IsNotFound()) return Status::NotFound(path + ": not a datastore (no " + kDatastoreInfoFile + ")");
  CAIRN_RETURN_IF_ERROR(s);
  nlohmann::json info = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!info.is_object() || !info.contains("format") || !info["format"].is_string() ||
      info["format"].get<std::string>() != kFormatName || !info.contains("uuid") ||
      !info["uuid"].is_string() || !IsUuid(info["uuid"].get<std::string>()) ||
      !info.contains("version") || !info["version"].is_number_integer()) {
    return Status::Corruption(info_path + ": malformed self-description");
  }
  if (info["version"].get<int64_t>() != kDatastoreFormatVersion) {
    return Status::Corruption(info_path + ": datastore format version " +
                              std::to_string(info["version"].get<int64_t>()) +
                              " is not supported (this build: " +
                              std::to_string(kDatastoreFormatVersion) + ")");
  }
  if (info.contains("sync-level")) {
    const auto& v = info["sync-level"];
    if (!v.is_string() || !ParseSyncLevel(v.get<std::string>()).ok()) {
      return Status::Corruption(info_path + ": sync-level must be \"file\", \"filesystem\" or \"none\"");
    }
  }
  return info;
}

}  // namespace

Result<std::optional<SyncLevel>> Datastore::StoredSyncLevel(Env* env, const std::string& path) {
  CAIRN_ASSIGN_OR_RETURN(nlohmann::json info, ReadInfo(env, path));
  if (!info.contains("sync-level")) return std::optional<SyncLevel>();
  CAIRN_ASSIGN_OR_RETURN(SyncLevel level, ParseSyncLevel(info["sync-level"].get<std::string>()));
  return std::optional<SyncLevel>(level);
}

Status Datastore::SetSyncLevel(Env* env, const std::string& path, SyncLevel level) {
  CAIRN_ASSIGN_OR_RETURN(nlohmann::json info, ReadInfo(env, path));
  CAIRN_ASSIGN_OR_RETURN(auto lock, env->LockFile(JoinPath(path, kDatastoreLockFile)));
  info["sync-level"] = SyncLevelName(level);
  return WriteFileAtomic(env, JoinPath(path, kDatastoreInfoFile), info.dump() + "\n",
                         /*sync_dir=*/true);
}

Result<std::unique_ptr<Datastore>> Datastore::Open(Env* env, const std::string& path,
                                                   DatastoreOptions options) {
  CAIRN_ASSIGN_OR_RETURN(nlohmann::json info, ReadInfo(env, path));
  if (info.contains("sync-level")) {
    CAIRN_ASSIGN_OR_RETURN(options.chunks.sync_level,
                           ParseSyncLevel(info["sync-level"].get<std::string>()));
  }

  CAIRN_ASSIGN_OR_RETURN(auto lock, env->LockFile(JoinPath(path, kDatastoreLockFile)));

  // Whatever is in .staging was being written or deleted when the last owner
  // stopped; none of it is visible, so all of it goes. The lock makes sure no
  // live writer owns it.
  const std::string staging = JoinPath(path, kStagingDir);
  auto sst = env->Stat(staging);
  if (!sst.ok() && sst.status().IsNotFound()) {
    CAIRN_RETURN_IF_ERROR(env->CreateDir(staging));
    CAIRN_RETURN_IF_ERROR(env->SyncDir(path));
  } else if (!sst.ok()) {
    return sst.status();
  } else if (!sst->is_dir) {
    return Status::Corruption(staging + ": not a folder");
  } else {
    std::vector<std::string> names;
    CAIRN_RETURN_IF_ERROR(env->ListDir(staging, &names));
    for (const auto& n : names) CAIRN_RETURN_IF_ERROR(RemoveAll(env, JoinPath(staging, n)));
  }

  CAIRN_ASSIGN_OR_RETURN(auto chunks, ChunkStore::Open(env, path, options.chunks));
  return std::unique_ptr<Datastore>(new Datastore(
      env, path, info["uuid"].get<std::string>(), std::move(lock), std::move(chunks)));
}

Datastore::Datastore(Env* env, std::string path, std::string uuid,
                     std::unique_ptr<FileLock> lock, std::unique_ptr<ChunkStore> chunks)
    : env_(env),
      path_(std::move(path)),
      uuid_(std::move(uuid)),
      lock_(std::move(lock)),
      chunks_(std::move(chunks)) {}

Datastore::~Datastore() = default;

std::string Datastore::StagingRoot() const { return JoinPath(path_, kStagingDir); }

Status Datastore::CreateDirsDurably(const std::string& rel) {
  std::string cur = path_;
  size_t start = 0;
  while (start < rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    const std::string parent = cur;
    cur = JoinPath(cur, std::string_view(rel).substr(start, end - start));
    start = end + 1;
    auto st = env_->Stat(cur);
    if (st.ok()) {
      // Named relative to the datastore: the message may reach a client.
      if (!st->is_dir) {
        return Status::Corruption(rel.substr(0, end) + ": exists and is not a folder");
      }
      continue;
    }
    if (!st.status().IsNotFound()) return st.status();
    CAIRN_RETURN_IF_ERROR(env_->CreateDir(cur));
    // The new folder's entry must survive a crash before anything that
    // depends on it (a snapshot renamed into it) is reported durable.
    CAIRN_RETURN_IF_ERROR(env_->SyncDir(parent));
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Listing

Status Datastore::ListGroupsIn(const std::string& dir, std::vector<std::string>* ns,
                               std::vector<GroupRef>* out) {
  std::vector<std::string> names;
  CAIRN_RETURN_IF_ERROR(env_->ListDir(dir, &names));
  for (const auto& name : names) {
    if (name.empty() || name[0] == '.') continue;
    const std::string sub = JoinPath(dir, name);
    if (name == "ns") {
      if (ns->size() >= kMaxNamespaceDepth) continue;
      CAIRN_ASSIGN_OR_RETURN(bool is_dir, IsDir(env_, sub));
      if (!is_dir) continue;
      std::vector<std::string> children;
      Status s = env_->ListDir(sub, &children);
      if (s.IsNotFound()) continue;
      CAIRN_RETURN_IF_ERROR(s);
      for (const auto& child : children) {
        if (!ValidateName(NameKind::kNamespace, child).ok()) continue;
        const std::string child_dir = JoinPath(sub, child);
        CAIRN_ASSIGN_OR_RETURN(bool child_is_dir, IsDir(env_, child_dir));
        if (!child_is_dir) continue;
        ns->push_back(child);
        s = ListGroupsIn(child_dir, ns, out);
        ns->pop_back();
        if (s.IsNotFound()) continue;  // removed while we listed
        CAIRN_RETURN_IF_ERROR(s);
      }
      continue;
    }
    if (!ValidateName(NameKind::kBackupType, name).ok()) continue;
    CAIRN_ASSIGN_OR_RETURN(bool is_dir, IsDir(env_, sub));
    if (!is_dir) continue;
    std::vector<std::string> ids;
    Status s = env_->ListDir(sub, &ids);
    if (s.IsNotFound()) continue;
    CAIRN_RETURN_IF_ERROR(s);
    for (const auto& id : ids) {
      if (!ValidateName(NameKind::kBackupId, id).ok()) continue;
      CAIRN_ASSIGN_OR_RETURN(bool id_is_dir, IsDir(env_, JoinPath(sub, id)));
      if (!id_is_dir) continue;
      out->push_back(GroupRef{*ns, name, id});
    }
  }
  return Status::OK();
}

Result<std::vector<GroupRef>> Datastore::ListGroups() {
  std::vector<GroupRef> out;
  std::vector<std::string> ns;
  CAIRN_RETURN_IF_ERROR(ListGroupsIn(path_, &ns, &out));
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<SnapshotRef>> Datastore::ListSnapshots(const GroupRef& group) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  const std::string dir = JoinPath(path_, group.RelPath());
  std::vector<std::string> names;
  Status listed = env_->ListDir(dir, &names);
  // NotFound names the group, not the folder: the message reaches clients.
  if (listed.IsNotFound()) return Status::NotFound("group " + group.ToString() + " does not exist");
  CAIRN_RETURN_IF_ERROR(listed);
  std::vector<SnapshotRef> out;
  for (const auto& name : names) {
    if (name.empty() || name[0] == '.') continue;
    auto t = ParseSnapshotTime(name);
    if (!t.ok() || FormatSnapshotTime(*t) != name) continue;
    CAIRN_ASSIGN_OR_RETURN(bool is_dir, IsDir(env_, JoinPath(dir, name)));
    if (!is_dir) continue;
    out.push_back(SnapshotRef{group, *t});
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::string> Datastore::SnapshotPath(const SnapshotRef& ref) const {
  CAIRN_RETURN_IF_ERROR(ref.Validate());
  return JoinPath(path_, ref.RelPath());
}

Result<std::string> Datastore::ArchivePath(const SnapshotRef& ref, const std::string& name) const {
  CAIRN_RETURN_IF_ERROR(ValidateName(NameKind::kArchive, name));
  CAIRN_ASSIGN_OR_RETURN(std::string dir, SnapshotPath(ref));
  return JoinPath(dir, name);
}

Result<Manifest> Datastore::ReadManifest(const SnapshotRef& ref) {
  CAIRN_ASSIGN_OR_RETURN(std::string dir, SnapshotPath(ref));
  std::string text;
  Status s = env_->ReadFile(JoinPath(dir, kManifestFile), &text, kMaxManifestSize);
  if (s.IsNotFound()) {
    auto st = env_->Stat(dir);
    if (st.ok()) return Status::Corruption(ref.ToString() + ": snapshot folder without index.json");
    return Status::NotFound(ref.ToString() + ": no such snapshot");
  }
  if (s.IsCorruption()) {  // over the size limit; its message names the file
    return Status::Corruption(ref.ToString() + "/index.json: larger than " +
                              std::to_string(kMaxManifestSize) + " bytes");
  }
  CAIRN_RETURN_IF_ERROR(s);
  auto m = Manifest::Parse(text);
  if (!m.ok()) return m.status().WithContext(ref.ToString() + "/index.json");
  CAIRN_RETURN_IF_ERROR(CheckNamesMatch(*m, ref));
  return m;
}

Result<std::string> Datastore::ReadArchive(const SnapshotRef& ref, const std::string& name,
                                           uint64_t max_size) {
  CAIRN_ASSIGN_OR_RETURN(std::string path, ArchivePath(ref, name));
  std::string out;
  CAIRN_RETURN_IF_ERROR(env_->ReadFile(path, &out, max_size));
  return out;
}

// ---------------------------------------------------------------------------
// Staging

Result<std::unique_ptr<StagedSnapshot>> Datastore::Stage(const SnapshotRef& ref) {
  CAIRN_ASSIGN_OR_RETURN(std::string final_dir, SnapshotPath(ref));
  auto st = env_->Stat(final_dir);
  if (st.ok()) return Status::AlreadyExists(ref.ToString() + ": snapshot exists already");
  if (!st.status().IsNotFound()) return st.status();
  // Not synced: a staging folder lost in a crash loses nothing committed.
  const std::string dir = JoinPath(StagingRoot(), RandomHex(16));
  CAIRN_RETURN_IF_ERROR(env_->CreateDir(dir));
  return std::unique_ptr<StagedSnapshot>(new StagedSnapshot(this, ref, dir));
}

// ---------------------------------------------------------------------------
// Delete

Status Datastore::RemoveSnapshotLocked(const SnapshotRef& ref) {
  const std::string dir = JoinPath(path_, ref.RelPath());
  const std::string trash = JoinPath(StagingRoot(), RandomHex(16));
  // Step D1: one rename, so the snapshot disappears whole; step D2 makes it
  // durable (FaultInjectionEnv's model, and ext4's, key durability of a
  // rename to its target folder; the source folder is synced too).
  CAIRN_RETURN_IF_ERROR(env_->RenameNoReplace(dir, trash));
  CAIRN_RETURN_IF_ERROR(env_->SyncDir(StagingRoot()));
  CAIRN_RETURN_IF_ERROR(env_->SyncDir(JoinPath(path_, ref.group.RelPath())));
  // Step D3: what is left in .staging is invisible; a crash here leaves it
  // for Open() to remove.
  return RemoveAll(env_, trash);
}

Status Datastore::RemoveGroupFolderIfEmptyLocked(const GroupRef& group) {
  const std::string dir = JoinPath(path_, group.RelPath());
  std::vector<std::string> names;
  Status s = env_->ListDir(dir, &names);
  if (s.IsNotFound()) return Status::OK();
  CAIRN_RETURN_IF_ERROR(s);
  if (!names.empty()) return Status::OK();
  s = env_->RemoveDir(dir);
  if (!s.ok() && !s.IsNotFound()) return s;
  return env_->SyncDir(DirName(dir));
}

Status Datastore::DeleteSnapshot(const SnapshotRef& ref) {
  CAIRN_RETURN_IF_ERROR(ref.Validate());
  MutexLock lock(&mu_);
  CAIRN_ASSIGN_OR_RETURN(Manifest m, ReadManifest(ref));
  if (m.is_protected) return Status::Conflict(ref.ToString() + ": snapshot is protected");
  if (Status s = RemoveSnapshotLocked(ref); !s.ok()) return Unsure(ref.group, s);
  if (observer_) observer_->SnapshotRemoved(ref);
  return RemoveGroupFolderIfEmptyLocked(ref.group);
}

void Datastore::SetObserver(DatastoreObserver* observer) {
  MutexLock lock(&mu_);
  observer_ = observer;
}

void Datastore::ReportDamage(const SnapshotRef& ref, const Status& damage) {
  MutexLock lock(&mu_);
  (void)Unsure(ref.group, damage.WithContext(ref.ToString()));
}

Status Datastore::Unsure(const GroupRef& group, Status s) {
  if (observer_) observer_->Unsure(group, s);
  return s;
}

Status Datastore::DeleteGroup(const GroupRef& group) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  MutexLock lock(&mu_);
  CAIRN_ASSIGN_OR_RETURN(auto snapshots, ListSnapshots(group));
  for (const auto& ref : snapshots) {
    CAIRN_ASSIGN_OR_RETURN(Manifest m, ReadManifest(ref));
    if (m.is_protected) {
      return Status::Conflict(group.ToString() + ": snapshot " + ref.ToString() +
                              " is protected");
    }
  }
  // The whole group folder goes in one rename, like a snapshot.
  const std::string dir = JoinPath(path_, group.RelPath());
  const std::string trash = JoinPath(StagingRoot(), RandomHex(16));
  CAIRN_RETURN_IF_ERROR(env_->RenameNoReplace(dir, trash));
  if (observer_) observer_->GroupRemoved(group);
  CAIRN_RETURN_IF_ERROR(env_->SyncDir(StagingRoot()));
  CAIRN_RETURN_IF_ERROR(env_->SyncDir(DirName(dir)));
  return RemoveAll(env_, trash);
}

// ---------------------------------------------------------------------------
// Unprotected part of index.json

template <typename Fn>
Status Datastore::RewriteManifest(const SnapshotRef& ref, Fn&& change) {
  CAIRN_RETURN_IF_ERROR(ref.Validate());
  MutexLock lock(&mu_);
  CAIRN_ASSIGN_OR_RETURN(Manifest old_m, ReadManifest(ref));
  Manifest m = old_m;
  change(&m);
  const std::string text = m.ToJson();
  // The protected part and its checksum must come out exactly as they were;
  // refuse to write anything else.
  auto back = Manifest::Parse(text);
  if (!back.ok()) {
    return Status::InvalidArgument(ref.ToString() + ": new unprotected values are not valid: " +
                                   back.status().message());
  }
  if (!SameProtectedPart(*back, old_m)) {
    return Status::Corruption(ref.ToString() + ": rewriting index.json would change its "
                              "protected part");
  }
  Status s = WriteFileAtomic(env_, JoinPath(JoinPath(path_, ref.RelPath()), kManifestFile), text,
                             /*sync_dir=*/true);
  if (!s.ok()) return Unsure(ref.group, s);
  if (observer_) observer_->SnapshotChanged(ref, *back);
  return Status::OK();
}

Status Datastore::SetProtected(const SnapshotRef& ref, bool is_protected) {
  return RewriteManifest(ref, [&](Manifest* m) { m->is_protected = is_protected; });
}

Status Datastore::SetNotes(const SnapshotRef& ref, const std::string& notes) {
  return RewriteManifest(ref, [&](Manifest* m) { m->notes = notes; });
}

Status Datastore::SetVerifyState(const SnapshotRef& ref, const VerifyState& verify) {
  return RewriteManifest(ref, [&](Manifest* m) { m->verify = verify; });
}

// ---------------------------------------------------------------------------
// Owner

Status Datastore::SetOwner(const GroupRef& group, const std::string& owner) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  CAIRN_RETURN_IF_ERROR(CheckOwner(owner));
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(CreateDirsDurably(group.RelPath()));
  Status s = WriteFileAtomic(env_, JoinPath(JoinPath(path_, group.RelPath()), kOwnerFile),
                             owner + "\n", /*sync_dir=*/true);
  if (!s.ok()) return Unsure(group, s);
  if (observer_) observer_->OwnerChanged(group, owner);
  return Status::OK();
}

Result<std::string> Datastore::SetOwnerIfAbsent(const GroupRef& group, const std::string& owner) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  CAIRN_RETURN_IF_ERROR(CheckOwner(owner));
  // mu_ keeps DeleteGroup from renaming the group folder away in between;
  // the no-replace rename is what makes exactly one creator win.
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(CreateDirsDurably(group.RelPath()));
  const std::string dir = JoinPath(path_, group.RelPath());
  const std::string path = JoinPath(dir, kOwnerFile);
  const std::string tmp = TempName(path);
  {
    CAIRN_ASSIGN_OR_RETURN(auto file, env_->NewExclusiveFile(tmp));
    Status s = file->Append(owner + "\n");
    if (s.ok()) s = file->Sync();
    Status c = file->Close();
    if (s.ok()) s = c;
    if (!s.ok()) {
      (void)env_->RemoveFile(tmp);
      return s;
    }
  }
  Status s = env_->RenameNoReplace(tmp, path);
  if (s.ok()) {
    if (observer_) observer_->OwnerChanged(group, owner);
    CAIRN_RETURN_IF_ERROR(env_->SyncDir(dir));
    return owner;
  }
  (void)env_->RemoveFile(tmp);
  if (!s.IsAlreadyExists()) return s;
  return GetOwner(group);
}

Result<std::string> Datastore::GetOwner(const GroupRef& group) {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  std::string text;
  Status s = env_->ReadFile(JoinPath(JoinPath(path_, group.RelPath()), kOwnerFile), &text,
                            kMaxOwnerSize + 1);
  if (s.IsNotFound()) return Status::NotFound(group.ToString() + ": no owner");
  CAIRN_RETURN_IF_ERROR(s);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!CheckOwner(text).ok()) return Status::Corruption(group.ToString() + ": malformed owner file");
  return text;
}

}  // namespace cairn::storage
