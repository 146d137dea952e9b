#include "storage/chunk_store.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace cairn::storage {
namespace {

constexpr char kChunksDirName[] = ".chunks";
constexpr char kHex[] = "0123456789abcdef";
constexpr std::string_view kBadSuffix = ".bad";
// Bound on `<digest>.<n>.bad` names tried by MarkBad, so a folder full of
// bad copies (or a hostile one) can never make it loop for long.
constexpr int kMaxBadCopies = 100000;

std::string PrefixName(uint16_t prefix) {
  std::string s(4, '0');
  for (int i = 3; i >= 0; --i) {
    s[static_cast<size_t>(i)] = kHex[prefix & 0xf];
    prefix = static_cast<uint16_t>(prefix >> 4);
  }
  return s;
}

// "<64 hex>.<decimal>.bad"
bool IsBadName(std::string_view name) {
  if (name.size() < 2 * kDigestSize + 1 + 1 + kBadSuffix.size()) return false;
  if (!Digest::FromHex(name.substr(0, 2 * kDigestSize)).ok()) return false;
  if (name[2 * kDigestSize] != '.') return false;
  if (name.substr(name.size() - kBadSuffix.size()) != kBadSuffix) return false;
  std::string_view n =
      name.substr(2 * kDigestSize + 1, name.size() - 2 * kDigestSize - 1 - kBadSuffix.size());
  if (n.empty()) return false;
  for (char c : n) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// SHA-256 of chunk plaintext; all-zero chunks (common in disk images) are
// recognised at memory speed instead of being hashed.
Digest PlaintextDigest(std::string_view data) {
  return IsAllZero(data) ? ZeroChunkDigest(data.size()) : Sha256(data);
}

Status DigestMismatch(const Digest& want, const Digest& got) {
  return Status::Corruption("chunk digest mismatch: expected " + want.ToHex() + ", content has " +
                            got.ToHex());
}

// Decodes a zstd chunk blob into *plain and checks size and digest. A frame
// declaring more than `expected_size` is refused before anything is allocated.
Status CheckZstdBlob(const BlobView& blob, const Digest& digest, uint64_t expected_size,
                     std::string* plain) {
  Status s = DecodeBlobPayload(blob, plain, static_cast<size_t>(expected_size));
  if (!s.ok()) return s.IsCorruption() ? s : Status::Corruption(s.message());
  if (plain->size() != expected_size) {
    return Status::Corruption("chunk size mismatch: expected " + std::to_string(expected_size) +
                              ", blob decodes to " + std::to_string(plain->size()));
  }
  if (Digest got = PlaintextDigest(*plain); got != digest) return DigestMismatch(digest, got);
  return Status::OK();
}

}  // namespace

void DirtyFolders::Add(uint16_t prefix) {
  MutexLock l(&mu_);
  bits_.set(prefix);
}

std::bitset<kChunkPrefixCount> DirtyFolders::Take() {
  MutexLock l(&mu_);
  std::bitset<kChunkPrefixCount> out = bits_;
  bits_.reset();
  return out;
}

ChunkStore::ChunkStore(Env* env, std::string chunks_dir, ChunkStoreOptions options)
    : env_(env),
      chunks_dir_(std::move(chunks_dir)),
      options_(options),
      stripes_(new Mutex[kStripes]),
      inserted_gen_(new uint32_t[kChunkPrefixCount]),
      synced_gen_(new uint32_t[kChunkPrefixCount]) {
  // Entries made before this Open (by an earlier process that may have died
  // before its folder fsyncs) are not known to be durable: the first session
  // that finds an existing chunk in a folder fsyncs that folder once.
  std::fill_n(inserted_gen_.get(), kChunkPrefixCount, 1u);
  std::fill_n(synced_gen_.get(), kChunkPrefixCount, 0u);
}

Status ChunkStore::Create(Env* env, const std::string& datastore_dir) {
  const std::string chunks_dir = JoinPath(datastore_dir, kChunksDirName);
  CAIRN_RETURN_IF_ERROR(CreateDirAll(env, chunks_dir));
  // The prefix folders are made on first use (Store), not here: making all
  // 65536 took 13-20 s and removing them 70 s on the ext4 this was measured
  // on, for no gain on the insert path (one failed open per prefix, once).
  // .chunks is an entry of the datastore folder: fsync it to survive a crash.
  CAIRN_RETURN_IF_ERROR(env->SyncDir(chunks_dir));
  return env->SyncDir(datastore_dir);
}

Result<std::unique_ptr<ChunkStore>> ChunkStore::Open(Env* env, const std::string& datastore_dir,
                                                     ChunkStoreOptions options) {
  const std::string chunks_dir = JoinPath(datastore_dir, kChunksDirName);
  auto st = env->Stat(chunks_dir);
  if (!st.ok()) {
    if (st.status().IsNotFound()) {
      return Status::NotFound(chunks_dir + ": no chunk store here (ChunkStore::Create has not run)");
    }
    return st.status();
  }
  if (!st->is_dir) return Status::NotFound(chunks_dir + ": not a folder");
  return std::unique_ptr<ChunkStore>(new ChunkStore(env, chunks_dir, options));
}

std::string ChunkStore::PrefixDir(uint16_t prefix) const {
  return JoinPath(chunks_dir_, PrefixName(prefix));
}

std::string ChunkStore::ChunkPath(const Digest& digest) const {
  return JoinPath(PrefixDir(DigestPrefix(digest)), digest.ToHex());
}

Mutex* ChunkStore::PrefixMutex(uint16_t prefix) {
  return &stripes_[prefix % kStripes];
}

Result<InsertResult> ChunkStore::InsertBlob(const Digest& digest, std::string_view blob,
                                            uint64_t expected_size, DirtyFolders* dirty,
                                            ChunkDomain domain) {
  // Everything is checked before anything touches the disk: a bad upload
  // changes nothing, not even the mtime of an existing chunk.
  if (blob.size() > kMaxBlobFileSize) {
    return Status::Corruption("chunk blob of " + std::to_string(blob.size()) +
                              " bytes exceeds the limit");
  }
  if (expected_size > kMaxBlobPayload) {
    return Status::Corruption("chunk size " + std::to_string(expected_size) + " exceeds the limit");
  }
  CAIRN_ASSIGN_OR_RETURN(BlobView view, ParseBlob(blob));
  const BlobKind kind = view.kind;
  if (domain == ChunkDomain::kEncrypted && !view.encrypted()) {
    return Status::InvalidArgument("a " + std::string(BlobKindName(kind)) +
                                   " chunk in an encrypted backup: every chunk must be encrypted");
  }
  switch (kind) {
    case BlobKind::kPlain:
      // Hashed in place: no copy of the payload.
      if (view.payload.size() != expected_size) {
        return Status::Corruption("chunk size mismatch: expected " + std::to_string(expected_size) +
                                  ", blob holds " + std::to_string(view.payload.size()));
      }
      if (Digest got = PlaintextDigest(view.payload); got != digest) {
        return DigestMismatch(digest, got);
      }
      break;
    case BlobKind::kZstd: {
      // One buffer per thread: a 4 MiB allocation per upload costs more than
      // the decode. Unusually large ones are not kept.
      thread_local std::string plain;
      Status s = CheckZstdBlob(view, digest, expected_size, &plain);
      if (plain.capacity() > 2 * kChunkSize) std::string().swap(plain);
      CAIRN_RETURN_IF_ERROR(s);
      break;
    }
    case BlobKind::kEncrypted:
    case BlobKind::kEncryptedZstd:
      // Without the key only the envelope can be checked: CRC (done above)
      // and whether the ciphertext's length fits the size.
      if (domain != ChunkDomain::kEncrypted) {
        return Status::InvalidArgument(
            "an encrypted chunk in an unencrypted backup: start the backup with encryption");
      }
      if (!EncryptedSizeFits(view, expected_size)) {
        return Status::Corruption("encrypted chunk size mismatch: a " +
                                  std::string(BlobKindName(kind)) + " blob with " +
                                  std::to_string(view.payload.size()) +
                                  " bytes of ciphertext cannot hold " +
                                  std::to_string(expected_size) + " bytes");
      }
      break;
  }
  CAIRN_ASSIGN_OR_RETURN(Existing existing, Refresh(digest, dirty, domain));
  if (existing == Existing::kSameDomain) return InsertResult::kExisted;
  return Store(digest, blob, dirty, domain);
}

Result<InsertResult> ChunkStore::InsertData(std::string_view data, Digest* digest,
                                            DirtyFolders* dirty) {
  if (data.size() > kMaxBlobPayload) {
    return Status::InvalidArgument("chunk of " + std::to_string(data.size()) +
                                   " bytes exceeds the limit");
  }
  *digest = PlaintextDigest(data);
  // Checked before compressing: most chunks of a re-read disk exist already.
  CAIRN_ASSIGN_OR_RETURN(Existing existing, Refresh(*digest, dirty, ChunkDomain::kVerified));
  if (existing == Existing::kSameDomain) return InsertResult::kExisted;
  const std::string blob = EncodeBlob(data);
  return Store(*digest, blob, dirty, ChunkDomain::kVerified);
}

Result<std::optional<ChunkDomain>> ChunkStore::StoredDomain(const std::string& path) {
  std::string head;
  CAIRN_RETURN_IF_ERROR(env_->ReadFileHead(path, &head, kBlobMagicSize));
  std::optional<BlobKind> kind = PeekBlobKind(head);
  if (!kind.has_value()) return std::optional<ChunkDomain>();
  const bool encrypted = *kind == BlobKind::kEncrypted || *kind == BlobKind::kEncryptedZstd;
  return std::optional<ChunkDomain>(encrypted ? ChunkDomain::kEncrypted : ChunkDomain::kVerified);
}

namespace {

Status OtherDomainConflict(const Digest& digest) {
  return Status::Conflict("chunk " + digest.ToHex() +
                          ": a verified chunk is stored under this digest; an encrypted chunk "
                          "cannot take or share its place");
}

}  // namespace

Result<ChunkStore::Existing> ChunkStore::Refresh(const Digest& digest, DirtyFolders* dirty,
                                                 ChunkDomain domain) {
  const uint16_t prefix = DigestPrefix(digest);
  const std::string path = ChunkPath(digest);
  // Under the stripe lock: GC decides and deletes under the same lock, so it
  // can never delete the chunk between our check and the new mtime. The
  // magic (8 bytes) is read first: a chunk of the other domain is neither
  // refreshed nor counted as stored for this insert.
  MutexLock lock(PrefixMutex(prefix));
  auto stored = StoredDomain(path);
  if (!stored.ok()) {
    if (stored.status().IsNotFound()) return Existing::kAbsent;
    return stored.status();
  }
  if (*stored != domain) {
    if (domain == ChunkDomain::kEncrypted && *stored == ChunkDomain::kVerified) {
      return OtherDomainConflict(digest);
    }
    return Existing::kReplaceable;
  }
  Status s = env_->TouchMtime(path);
  if (s.IsNotFound()) return Existing::kAbsent;
  CAIRN_RETURN_IF_ERROR(s);
  // An existing chunk whose folder entry is not known to be durable (another
  // session made it and has not fsynced the folder yet) joins `dirty`: this
  // session's snapshot will reference it, so this session's finish must make
  // it durable too.
  if (dirty != nullptr && inserted_gen_[prefix] != synced_gen_[prefix]) dirty->Add(prefix);
  return Existing::kSameDomain;
}

// Writes a chunk not found by Refresh (or found replaceable). A concurrent
// insert of the same digest may still win the race; the no-replace rename
// settles it — except for the replacements InsertBlob describes.
Result<InsertResult> ChunkStore::Store(const Digest& digest, std::string_view blob,
                                       DirtyFolders* dirty, ChunkDomain domain) {
  const uint16_t prefix = DigestPrefix(digest);
  const std::string path = ChunkPath(digest);

  // The slow part (write, fsync) runs without the lock. A unique temp name
  // per insert: concurrent inserts of the same digest never share a file.
  const std::string tmp = TempName(path);
  auto file = env_->NewExclusiveFile(tmp);
  if (!file.ok()) {
    if (!file.status().IsNotFound()) return file.status();
    // First chunk of this prefix (folders are made on first use, see
    // Create), or the folder was removed by hand: make it, durably.
    Status mk = env_->CreateDir(PrefixDir(prefix));
    if (!mk.ok() && !mk.IsAlreadyExists()) return mk;
    CAIRN_RETURN_IF_ERROR(env_->SyncDir(chunks_dir_));
    file = env_->NewExclusiveFile(tmp);
    if (!file.ok()) return file.status();
  }
  Status s = (*file)->Append(blob);
  if (s.ok() && options_.sync_each_chunk()) {
    s = (*file)->Sync();
    // A new chunk is rarely read again soon (restores and verifies come
    // later), and keeping it cached makes the kernel take fresh pages for
    // every chunk: on the benchmark VM that copy cost a third of the
    // server's CPU. Dropping the clean pages lets the next chunk reuse them.
    if (s.ok()) (*file)->DropCache();
  }
  Status c = (*file)->Close();
  if (s.ok()) s = c;
  if (!s.ok()) {
    (void)env_->RemoveFile(tmp);  // best effort; ForEach ignores temp names
    return s;
  }

  MutexLock lock(PrefixMutex(prefix));
  // No-replace: a chunk that appeared meanwhile (a concurrent insert) is
  // kept, never overwritten — its inode and any reader of it stay intact.
  s = env_->RenameNoReplace(tmp, path);
  if (s.IsAlreadyExists()) {
    // The file there (Refresh found it, or it appeared meanwhile) is kept
    // when it is of our domain. Otherwise: a verified blob takes the place
    // of one that proves nothing, and an encrypted blob that of one without
    // a valid magic, by one rename (a reader sees the old file or the new
    // one, whole); an encrypted blob never displaces a verified chunk.
    auto stored = StoredDomain(path);
    const bool unreadable = !stored.ok() || !stored->has_value();
    if (unreadable || **stored != domain) {
      if (domain == ChunkDomain::kVerified || unreadable) {
        s = env_->Rename(tmp, path);
      } else {
        (void)env_->RemoveFile(tmp);
        return OtherDomainConflict(digest);
      }
    }
  }
  if (s.ok()) {
    ++inserted_gen_[prefix];
    if (dirty != nullptr) dirty->Add(prefix);
    return InsertResult::kInserted;
  }
  (void)env_->RemoveFile(tmp);
  if (!s.IsAlreadyExists()) return s;
  CAIRN_RETURN_IF_ERROR(env_->TouchMtime(path));
  if (dirty != nullptr && inserted_gen_[prefix] != synced_gen_[prefix]) dirty->Add(prefix);
  return InsertResult::kExisted;
}

Result<std::string> ChunkStore::ReadBlob(const Digest& digest) {
  std::string blob;
  CAIRN_RETURN_IF_ERROR(env_->ReadFile(ChunkPath(digest), &blob, kMaxBlobFileSize));
  return blob;
}

Result<std::string> ChunkStore::ReadChunk(const Digest& digest) {
  CAIRN_ASSIGN_OR_RETURN(std::string blob, ReadBlob(digest));
  const std::string where = ChunkPath(digest);
  CAIRN_ASSIGN_OR_RETURN(BlobView view, ParseBlob(blob));
  if (view.kind == BlobKind::kPlain) {
    // Reuse the read buffer instead of copying the payload out of it.
    blob.erase(0, static_cast<size_t>(view.payload.data() - blob.data()));
    if (Digest got = PlaintextDigest(blob); got != digest) {
      return DigestMismatch(digest, got).WithContext(where);
    }
    return blob;
  }
  std::string plain;
  Status s = DecodeBlobPayload(view, &plain);
  if (!s.ok()) return s.WithContext(where);
  if (Digest got = PlaintextDigest(plain); got != digest) {
    return DigestMismatch(digest, got).WithContext(where);
  }
  return plain;
}

Result<bool> ChunkStore::Exists(const Digest& digest) {
  auto st = env_->Stat(ChunkPath(digest));
  if (st.ok()) return true;
  if (st.status().IsNotFound()) return false;
  return st.status();
}

Status ChunkStore::MarkBad(const Digest& digest) {
  const uint16_t prefix = DigestPrefix(digest);
  const std::string path = ChunkPath(digest);
  MutexLock lock(PrefixMutex(prefix));
  for (int n = 0; n < kMaxBadCopies; ++n) {
    Status s = env_->RenameNoReplace(path, path + "." + std::to_string(n) + ".bad");
    if (s.IsAlreadyExists()) continue;
    CAIRN_RETURN_IF_ERROR(s);
    // Made durable at once: a bad chunk that came back after a crash would
    // be trusted by the next incremental backup.
    return env_->SyncDir(PrefixDir(prefix));
  }
  return Status::IOError(path + ": too many bad copies");
}

const char* SyncLevelName(SyncLevel level) {
  switch (level) {
    case SyncLevel::kFile:
      return "file";
    case SyncLevel::kFilesystem:
      return "filesystem";
    case SyncLevel::kNone:
      return "none";
  }
  return "file";
}

Result<SyncLevel> ParseSyncLevel(std::string_view name) {
  if (name == "file") return SyncLevel::kFile;
  if (name == "filesystem") return SyncLevel::kFilesystem;
  if (name == "none") return SyncLevel::kNone;
  return Status::InvalidArgument("sync-level must be file, filesystem or none, not '" +
                                 std::string(name) + "'");
}

Status ChunkStore::SyncFolders(DirtyFolders* dirty) {
  std::bitset<kChunkPrefixCount> bits = dirty->Take();
  const SyncLevel level = options_.sync_level;
  if (level == SyncLevel::kNone) return Status::OK();
  if (level == SyncLevel::kFilesystem) {
    if (bits.none()) return Status::OK();
    // Only the renames made before the syncfs starts are known to be covered.
    std::vector<std::pair<uint16_t, uint32_t>> gens;
    for (size_t p = 0; p < kChunkPrefixCount; ++p) {
      if (!bits.test(p)) continue;
      const auto prefix = static_cast<uint16_t>(p);
      MutexLock lock(PrefixMutex(prefix));
      gens.emplace_back(prefix, inserted_gen_[p]);
    }
    Status s = env_->SyncFilesystem(chunks_dir_);
    if (!s.ok()) {
      for (const auto& [prefix, gen] : gens) dirty->Add(prefix);
      return s;
    }
    for (const auto& [prefix, gen] : gens) {
      MutexLock lock(PrefixMutex(prefix));
      synced_gen_[prefix] = gen;
    }
    return Status::OK();
  }
  for (size_t p = 0; p < kChunkPrefixCount; ++p) {
    if (!bits.test(p)) continue;
    const auto prefix = static_cast<uint16_t>(p);
    // Only the renames made before the fsync starts are known to be covered.
    uint32_t gen;
    {
      MutexLock lock(PrefixMutex(prefix));
      gen = inserted_gen_[p];
    }
    Status s = env_->SyncDir(PrefixDir(prefix));
    if (s.ok()) {
      MutexLock lock(PrefixMutex(prefix));
      synced_gen_[p] = gen;
    } else {
      // Hand back what is still unsynced (this one included) so a retry
      // does not skip it.
      for (size_t q = p; q < kChunkPrefixCount; ++q) {
        if (bits.test(q)) dirty->Add(static_cast<uint16_t>(q));
      }
      return s;
    }
  }
  return Status::OK();
}

Status ChunkStore::ForEach(const std::function<Status(const Digest&, const FileInfo&)>& fn) {
  std::vector<std::string> names;
  for (size_t p = 0; p < kChunkPrefixCount; ++p) {
    const std::string dir = PrefixDir(static_cast<uint16_t>(p));
    Status s = env_->ListDir(dir, &names);
    if (s.IsNotFound()) continue;  // removed by hand; Store makes it again
    CAIRN_RETURN_IF_ERROR(s);
    for (const std::string& name : names) {
      // Temp files ("<digest>.tmp.…") and bad copies have longer names.
      if (name.size() != 2 * kDigestSize) continue;
      auto digest = Digest::FromHex(name);
      if (!digest.ok()) continue;
      auto info = env_->Stat(JoinPath(dir, name));
      if (!info.ok()) {
        if (info.status().IsNotFound()) continue;  // deleted meanwhile (GC)
        return info.status();
      }
      if (info->is_dir) continue;
      CAIRN_RETURN_IF_ERROR(fn(*digest, *info));
    }
  }
  return Status::OK();
}

Result<ChunkStats> ChunkStore::Stats() {
  ChunkStats stats;
  std::vector<std::string> names;
  for (size_t p = 0; p < kChunkPrefixCount; ++p) {
    const std::string dir = PrefixDir(static_cast<uint16_t>(p));
    Status s = env_->ListDir(dir, &names);
    if (s.IsNotFound()) continue;
    CAIRN_RETURN_IF_ERROR(s);
    for (const std::string& name : names) {
      if (name.size() == 2 * kDigestSize && Digest::FromHex(name).ok()) {
        auto info = env_->Stat(JoinPath(dir, name));
        if (!info.ok()) {
          if (info.status().IsNotFound()) continue;
          return info.status();
        }
        if (info->is_dir) continue;
        ++stats.chunks;
        stats.bytes += info->size;
      } else if (IsBadName(name)) {
        ++stats.bad;
      }
    }
  }
  return stats;
}

}  // namespace cairn::storage
