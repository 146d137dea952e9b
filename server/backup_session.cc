#include "server/backup_session.h"

#include "storage/blob.h"
#include "storage/fixed_index.h"

namespace cairn::server {
namespace {

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

BackupSession::BackupSession(std::string id, std::string store_name, storage::Datastore* store,
                             SnapshotRef ref,
                             std::optional<SnapshotRef> previous,
                             std::unique_ptr<storage::StagedSnapshot> staged, int64_t start_time,
                             std::optional<std::string> fingerprint,
                             std::optional<std::string> previous_fingerprint)
    : id_(std::move(id)),
      store_name_(std::move(store_name)),
      store_(store),
      ref_(std::move(ref)),
      previous_(std::move(previous)),
      start_time_(start_time),
      fingerprint_(std::move(fingerprint)),
      previous_fingerprint_(std::move(previous_fingerprint)),
      last_active_(start_time),
      staged_(std::move(staged)) {}

BackupSession::~BackupSession() { Abort(); }

Status BackupSession::CheckOpenLocked() const {
  if (closed_) return Status::Conflict("backup session " + id_ + " is finished or aborted");
  return Status::OK();
}

Result<std::string> BackupSession::PreviousIndex(const std::string& archive) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kArchive, archive));
  if (!EndsWith(archive, ".fidx")) return Status::InvalidArgument("not an index archive: " + archive);
  {
    MutexLock lock(&mu_);
    CAIRN_RETURN_IF_ERROR(CheckOpenLocked());
  }
  if (!previous_) return Status::NotFound("this group has no previous snapshot to build on");
  if (fingerprint_ != previous_fingerprint_) {
    auto key = [](const std::optional<std::string>& fp) {
      return fp ? "encrypted with key " + *fp : std::string("not encrypted");
    };
    return Status::Conflict("previous snapshot " + previous_->ToString() + " is " +
                            key(previous_fingerprint_) + ", this backup is " + key(fingerprint_) +
                            ": its chunks cannot be reused, send every chunk");
  }
  auto read = store_->ReadArchive(*previous_, archive, kMaxIndexUploadBytes);
  if (!read.ok()) {
    // The storage layer's messages name files; the client gets names only.
    const std::string what = "previous snapshot " + previous_->ToString();
    if (read.status().IsNotFound()) return Status::NotFound(what + " has no archive " + archive);
    if (read.status().IsCorruption()) {
      return Status::Corruption(what + ": archive " + archive + " is larger than any index");
    }
    return read.status();
  }
  std::string bytes = std::move(read).value();
  CAIRN_ASSIGN_OR_RETURN(storage::FixedIndex index, storage::FixedIndex::Parse(bytes));
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(CheckOpenLocked());
  for (uint64_t i = 0; i < index.chunk_count(); ++i) {
    if (known_.insert(index.digest(i)).second) ++stats_.chunks_known;
  }
  return bytes;
}

Result<storage::InsertResult> BackupSession::UploadChunk(const Digest& digest, uint64_t size,
                                                         std::string_view blob) {
  {
    MutexLock lock(&mu_);
    CAIRN_RETURN_IF_ERROR(CheckOpenLocked());
  }
  // Verification (decode + SHA-256) is the expensive part: run it unlocked so
  // uploads on several connections proceed in parallel.
  CAIRN_ASSIGN_OR_RETURN(storage::InsertResult result,
                         store_->chunk_store()->InsertBlob(
                             digest, blob, size, &dirty_,
                             encrypted() ? storage::ChunkDomain::kEncrypted
                                         : storage::ChunkDomain::kVerified));
  MutexLock lock(&mu_);
  known_.insert(digest);
  ++stats_.chunks_uploaded;
  if (result == storage::InsertResult::kInserted) ++stats_.chunks_new;
  stats_.bytes_uploaded += blob.size();
  return result;
}

Status BackupSession::WriteIndex(const std::string& archive, std::string_view bytes) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kArchive, archive));
  if (!EndsWith(archive, ".fidx")) return Status::InvalidArgument("index archive names end in .fidx");
  if (bytes.size() > kMaxIndexUploadBytes) return Status::InvalidArgument("index too large");
  CAIRN_ASSIGN_OR_RETURN(storage::FixedIndex index, storage::FixedIndex::Parse(bytes));
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(CheckOpenLocked());
  // The rule that keeps a client from referencing chunks it has not proven
  // to hold (DESIGN §3.4).
  for (uint64_t i = 0; i < index.chunk_count(); ++i) {
    if (!known_.contains(index.digest(i))) {
      return Status::InvalidArgument("index " + archive + " references chunk " +
                                     index.digest(i).ToHex() + " (#" + std::to_string(i) +
                                     ") that was neither uploaded in this session nor is in the "
                                     "previous snapshot");
    }
  }
  CAIRN_RETURN_IF_ERROR(staged_->WriteArchive(archive, bytes));
  std::erase_if(archives_, [&](const storage::ArchiveInfo& a) { return a.name == archive; });
  archives_.push_back({archive, index.image_size(), index.checksum()});
  stats_.chunks_referenced += index.chunk_count();
  stats_.archives = archives_.size();
  return Status::OK();
}

Status BackupSession::WriteBlob(const std::string& archive, std::string_view bytes) {
  CAIRN_RETURN_IF_ERROR(storage::ValidateName(storage::NameKind::kArchive, archive));
  if (!EndsWith(archive, ".blob")) return Status::InvalidArgument("blob archive names end in .blob");
  auto kind = storage::CheckBlob(bytes);
  if (!kind.ok()) return kind.status();
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(CheckOpenLocked());
  CAIRN_RETURN_IF_ERROR(staged_->WriteArchive(archive, bytes));
  std::erase_if(archives_, [&](const storage::ArchiveInfo& a) { return a.name == archive; });
  archives_.push_back({archive, bytes.size(), storage::Sha256(bytes)});
  stats_.archives = archives_.size();
  return Status::OK();
}

Result<storage::Manifest> BackupSession::Finish(const nlohmann::json& client,
                                                std::optional<storage::CryptInfo> crypt) {
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(CheckOpenLocked());
  if (archives_.empty()) return Status::InvalidArgument("nothing to commit: no archive was written");
  if (encrypted() && !crypt) {
    return Status::InvalidArgument("an encrypted backup must finish with crypt (key and signature)");
  }
  if (!encrypted() && crypt) {
    return Status::InvalidArgument("crypt given at finish, but the backup was not started encrypted");
  }
  if (crypt && crypt->fingerprint != *fingerprint_) {
    return Status::InvalidArgument("crypt names key " + crypt->fingerprint +
                                   ", the backup was started with key " + *fingerprint_);
  }
  // Chunk folder entries first: the snapshot must never become visible
  // before the chunks it references are durable.
  CAIRN_RETURN_IF_ERROR(store_->chunk_store()->SyncFolders(&dirty_));
  storage::Manifest m;
  m.backup_type = ref_.group.type;
  m.backup_id = ref_.group.id;
  m.backup_time = ref_.time;
  m.archives = archives_;
  std::sort(m.archives.begin(), m.archives.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  m.client = client.is_object() ? client : nlohmann::json::object();
  m.crypt = std::move(crypt);
  // The client info comes from outside: never commit a manifest that would
  // not read back (too deep, too large, invalid UTF-8).
  if (auto check = storage::Manifest::Parse(m.ToJson()); !check.ok()) {
    return Status::InvalidArgument("client info makes an invalid manifest: " +
                                   check.status().message());
  }
  CAIRN_RETURN_IF_ERROR(staged_->Commit(m));
  closed_ = true;
  staged_.reset();
  return m;
}

void BackupSession::Abort() {
  MutexLock lock(&mu_);
  closed_ = true;
  if (staged_) {
    staged_->Abort();
    staged_.reset();
  }
}

bool BackupSession::closed() {
  MutexLock lock(&mu_);
  return closed_;
}

BackupStats BackupSession::stats() {
  MutexLock lock(&mu_);
  return stats_;
}

std::vector<Digest> BackupSession::KnownDigests() {
  MutexLock lock(&mu_);
  return {known_.begin(), known_.end()};
}

}  // namespace cairn::server
