#include "client/archive_source.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <list>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "client/repository_client.h"
#include "client/restore.h"
#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/manifest.h"
#include "storage/mutex.h"
#include "storage/names.h"

namespace cairn::client {

using storage::Digest;
using storage::FixedIndex;

namespace {

constexpr auto kKeepaliveInterval = std::chrono::seconds(60);
constexpr size_t kMaxPrefetchQueue = 256;
// How many recently read chunk numbers tell a sequential reader (several
// readers, e.g. nbdcopy's connections, each walk their own range).
constexpr size_t kRecentReads = 64;

Result<HttpResponse> Checked(Result<HttpResponse> r) {
  if (!r.ok()) return r.status();
  if (Status s = r->ToStatus(); !s.ok()) return s;
  return r;
}

// A chunk being fetched: the first reader fetches, later ones wait on it.
struct Pending {
  bool done = false;
  Status status;
  std::shared_ptr<const std::string> data;
};

}  // namespace

class ArchiveSource::Impl {
 public:
  Impl(const Repository& repo, const ArchiveSourceOptions& options)
      : repo_(repo), options_(options) {}

  ~Impl() { Close(); }

  // Opens the session and reads manifest, key and index (as restore does).
  Status Open(const std::string& snapshot_arg, const std::string& archive_arg) {
    archive_ = archive_arg;
    if (archive_.ends_with(".blob")) {
      return Status::InvalidArgument(archive_ + " is a file archive, not a disk image");
    }
    if (!archive_.ends_with(".fidx")) archive_ += ".fidx";
    CAIRN_ASSIGN_OR_RETURN(snapshot_, ResolveSnapshotName(repo_, snapshot_arg));
    control_ = std::make_unique<ApiClient>(repo_);
    CAIRN_ASSIGN_OR_RETURN(
        HttpResponse opened,
        Checked(control_->PostJson(control_->StorePath("/reader"), {{"snapshot", snapshot_}})));
    nlohmann::json info = opened.Json();
    if (!info.is_object() || !info.contains("session") || !info["session"].is_string()) {
      return Status::Corruption("server's reader answer has no session");
    }
    rid_ = info["session"].get<std::string>();
    CAIRN_ASSIGN_OR_RETURN(HttpResponse mr,
                           Checked(control_->Get("/api/v1/reader/" + rid_ + "/manifest")));
    Result<storage::Manifest> m = storage::Manifest::Parse(mr.body);
    if (!m.ok()) return m.status().WithContext(snapshot_ + ": manifest");
    auto ref = storage::SnapshotRef::Parse(snapshot_);
    if (ref.ok() && (ref->group.type != m->backup_type || ref->group.id != m->backup_id ||
                     ref->time != m->backup_time)) {
      return Status::Corruption(snapshot_ + ": the server's manifest is that of another snapshot");
    }
    if (m->crypt) {
      if (options_.key) {
        CAIRN_ASSIGN_OR_RETURN(crypt_, options_.key(m->crypt->fingerprint));
      }
      if (crypt_ == nullptr) {
        return Status::PermissionDenied("snapshot " + snapshot_ + " is encrypted with key " +
                                        m->crypt->fingerprint + "; pass --keyfile");
      }
      CAIRN_RETURN_IF_ERROR(CheckManifestSignature(snapshot_, *m, *crypt_));
      fingerprint_ = crypt_->fingerprint();
    }
    const storage::ArchiveInfo* ai = m->FindArchive(archive_);
    if (ai == nullptr) {
      return Status::NotFound("snapshot " + snapshot_ + " has no archive " + archive_);
    }
    CAIRN_ASSIGN_OR_RETURN(HttpResponse ir,
                           Checked(control_->Get("/api/v1/reader/" + rid_ + "/archive?archive=" +
                                                 ApiClient::Escape(archive_))));
    auto parsed = FixedIndex::Parse(ir.body);
    if (!parsed.ok()) return parsed.status().WithContext(snapshot_ + "/" + archive_);
    if (ai->csum != parsed->checksum() || ai->size != parsed->image_size()) {
      return Status::Corruption(snapshot_ + "/" + archive_ + ": index differs from the manifest");
    }
    index_.emplace(std::move(*parsed));
    auto zero = [&](uint64_t len) {
      return crypt_ != nullptr ? crypt_->ZeroChunkDigest(len) : storage::ZeroChunkDigest(len);
    };
    zero_full_ = zero(index_->chunk_size());
    const uint64_t n = index_->chunk_count();
    const uint64_t last_len = n > 0 ? index_->ChunkLength(n - 1) : 0;
    zero_last_ = last_len == index_->chunk_size() || n == 0 ? zero_full_ : zero(last_len);
    cache_limit_ = std::max<uint64_t>(options_.cache_bytes, 2 * index_->chunk_size());
    StartThreads();
    return Status::OK();
  }

  void StartThreads() {
    {
      MutexLock lock(&mu_);
      last_request_ = std::chrono::steady_clock::now();
    }
    const int prefetchers = options_.prefetch_chunks > 0
                                ? std::clamp(options_.fetch_connections / 2, 1, 8)
                                : 0;
    for (int i = 0; i < prefetchers; ++i) threads_.emplace_back([this] { PrefetchLoop(); });
    threads_.emplace_back([this] { KeepaliveLoop(); });
  }

  void Close() {
    {
      MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      cv_.SignalAll();
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
    if (!rid_.empty() && control_ != nullptr) {
      MutexLock lock(&control_mu_);
      (void)control_->Delete("/api/v1/reader/" + rid_);  // best effort: it times out otherwise
    }
    rid_.clear();
  }

  bool IsZero(uint64_t i) const {
    const Digest d = index_->digest(i);
    return d == (index_->ChunkLength(i) == index_->chunk_size() ? zero_full_ : zero_last_);
  }

  Status Read(uint64_t offset, uint64_t length, std::string* out) {
    out->resize(length);
    {
      MutexLock lock(&mu_);
      ++stats_.reads;
    }
    const uint64_t cs = index_->chunk_size();
    uint64_t done = 0;
    while (done < length) {
      const uint64_t pos = offset + done;
      const uint64_t i = pos / cs;
      const uint64_t in = pos % cs;
      const uint64_t n = std::min(length - done, index_->ChunkLength(i) - in);
      if (IsZero(i)) {
        std::memset(out->data() + done, 0, n);
        MutexLock lock(&mu_);
        ++stats_.zero_chunk_reads;
      } else {
        CAIRN_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> chunk, GetChunk(i, false));
        std::memcpy(out->data() + done, chunk->data() + in, n);
      }
      MaybePrefetch(i);
      done += n;
    }
    return Status::OK();
  }

  ArchiveSourceStats stats() const {
    MutexLock lock(&mu_);
    return stats_;
  }

  const std::string& snapshot() const { return snapshot_; }
  const std::string& archive() const { return archive_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const FixedIndex& index() const { return *index_; }

 private:
  // The chunk `i` from the cache, from a fetch in progress, or fetched now.
  Result<std::shared_ptr<const std::string>> GetChunk(uint64_t i, bool prefetch) {
    const Digest d = index_->digest(i);
    std::shared_ptr<Pending> pending;
    bool fetch = false;
    {
      MutexLock lock(&mu_);
      auto hit = cache_.find(d);
      if (hit != cache_.end()) {
        lru_.splice(lru_.begin(), lru_, hit->second.lru);
        if (!prefetch) ++stats_.cache_hits;
        return hit->second.data;
      }
      auto it = inflight_.find(d);
      if (it != inflight_.end()) {
        if (prefetch) return std::shared_ptr<const std::string>();  // someone fetches it
        pending = it->second;
      } else {
        pending = std::make_shared<Pending>();
        inflight_.emplace(d, pending);
        fetch = true;
        ++stats_.chunk_fetches;
        if (prefetch) ++stats_.prefetches;
      }
    }
    if (fetch) {
      auto data = std::make_shared<std::string>();
      Status s = Fetch(i, data.get());
      MutexLock lock(&mu_);
      inflight_.erase(d);
      pending->done = true;
      pending->status = s;
      if (s.ok()) {
        pending->data = data;
        Insert(d, data);
      } else {
        ++stats_.failed_fetches;
      }
      cv_.SignalAll();
      if (!s.ok()) return s;
      return std::shared_ptr<const std::string>(data);
    }
    MutexLock lock(&mu_);
    while (!pending->done) cv_.Wait(&mu_);
    if (!pending->status.ok()) return pending->status;
    return pending->data;
  }

  void Insert(const Digest& d, std::shared_ptr<const std::string> data)
      CAIRN_REQUIRES(mu_) {
    if (cache_.count(d) != 0) return;
    cached_bytes_ += data->size();
    lru_.push_front(d);
    cache_.emplace(d, Entry{std::move(data), lru_.begin()});
    while (cached_bytes_ > cache_limit_ && lru_.size() > 1) {
      auto victim = cache_.find(lru_.back());
      cached_bytes_ -= victim->second.data->size();
      cache_.erase(victim);
      lru_.pop_back();
    }
  }

  // Fetches chunk `i` and checks it; no byte of a chunk that fails a check
  // reaches `out`'s reader.
  Status Fetch(uint64_t i, std::string* out) {
    std::unique_ptr<ApiClient> api = AcquireClient();
    const Digest d = index_->digest(i);
    const uint64_t length = index_->ChunkLength(i);
    const std::string hex = d.ToHex();
    auto r = api->Get("/api/v1/reader/" + rid_ + "/chunk?digest=" + hex);
    ReleaseClient(std::move(api));
    if (!r.ok()) return r.status();
    if (r->status == 404) {
      return Status::Corruption("chunk " + hex +
                                " is missing on the server: " + r->ToStatus().message());
    }
    CAIRN_RETURN_IF_ERROR(r->ToStatus());
    {
      MutexLock lock(&mu_);
      stats_.bytes_downloaded += r->body.size();
      last_request_ = std::chrono::steady_clock::now();
    }
    auto view = storage::ParseBlob(r->body);
    if (!view.ok()) return view.status().WithContext("chunk " + hex);
    if (view->encrypted() != (crypt_ != nullptr)) {
      return Status::Corruption("chunk " + hex + " is stored as a " +
                                storage::BlobKindName(view->kind) + " blob in " +
                                (crypt_ != nullptr ? "an encrypted" : "a plain") + " snapshot");
    }
    if (crypt_ != nullptr) {
      Status s = crypt_->DecryptBlob(*view, out, length);
      if (!s.ok()) return s.WithContext("chunk " + hex);
    } else if (view->kind == storage::BlobKind::kPlain) {
      out->assign(view->payload);
    } else {
      Status s = storage::DecodeBlobPayload(*view, out, length);
      if (!s.ok()) return s.WithContext("chunk " + hex);
    }
    if (out->size() != length) {
      return Status::Corruption("chunk " + hex + " decodes to " + std::to_string(out->size()) +
                                " bytes, the index says " + std::to_string(length));
    }
    if ((crypt_ != nullptr ? crypt_->ChunkDigest(*out) : storage::Sha256(*out)) != d) {
      return Status::Corruption("chunk " + hex + " does not match its digest");
    }
    return Status::OK();
  }

  // ApiClient is one per thread: a pool of idle ones, one lent per fetch.
  std::unique_ptr<ApiClient> AcquireClient() {
    {
      MutexLock lock(&clients_mu_);
      if (!idle_clients_.empty()) {
        auto c = std::move(idle_clients_.back());
        idle_clients_.pop_back();
        return c;
      }
    }
    return std::make_unique<ApiClient>(repo_);
  }
  void ReleaseClient(std::unique_ptr<ApiClient> c) {
    MutexLock lock(&clients_mu_);
    if (idle_clients_.size() < 16) idle_clients_.push_back(std::move(c));
  }

  // After a read of chunk `i` when chunk i-1 was among the last reads (a
  // sequential reader), queue the next chunks that are neither cached nor
  // being fetched. Random reads prefetch nothing (they would evict the
  // cache for chunks nobody asked for).
  void MaybePrefetch(uint64_t i) {
    if (options_.prefetch_chunks <= 0) return;
    MutexLock lock(&mu_);
    if (closed_) return;
    const bool sequential =
        i == 0 || std::find(recent_.begin(), recent_.end(), i - 1) != recent_.end();
    if (recent_.empty() || recent_.back() != i) {
      recent_.push_back(i);
      if (recent_.size() > kRecentReads) recent_.pop_front();
    }
    if (!sequential) return;
    const uint64_t end = std::min<uint64_t>(index_->chunk_count(),
                                            i + 1 + static_cast<uint64_t>(options_.prefetch_chunks));
    for (uint64_t j = i + 1; j < end; ++j) {
      if (IsZero(j)) continue;
      const Digest d = index_->digest(j);
      if (cache_.count(d) != 0 || inflight_.count(d) != 0 || queued_.count(j) != 0) continue;
      if (prefetch_queue_.size() >= kMaxPrefetchQueue) break;
      prefetch_queue_.push_back(j);
      queued_.insert(j);
    }
    cv_.SignalAll();
  }

  void PrefetchLoop() {
    for (;;) {
      uint64_t j = 0;
      {
        MutexLock lock(&mu_);
        while (!closed_ && prefetch_queue_.empty()) cv_.Wait(&mu_);
        if (closed_) return;
        j = prefetch_queue_.front();
        prefetch_queue_.pop_front();
        queued_.erase(j);
      }
      (void)GetChunk(j, true);  // a failure shows when the chunk is read
    }
  }

  // Keeps the reader session alive while the export is idle.
  void KeepaliveLoop() {
    mu_.Lock();
    while (!closed_) {
      cv_.WaitFor(&mu_, std::chrono::seconds(5));
      if (closed_) break;
      if (std::chrono::steady_clock::now() - last_request_ < kKeepaliveInterval) continue;
      last_request_ = std::chrono::steady_clock::now();
      mu_.Unlock();
      {
        MutexLock control(&control_mu_);
        (void)control_->Get("/api/v1/reader/" + rid_ + "/manifest");
      }
      mu_.Lock();
    }
    mu_.Unlock();
  }

  struct Entry {
    std::shared_ptr<const std::string> data;
    std::list<Digest>::iterator lru;
  };

  const Repository repo_;
  const ArchiveSourceOptions options_;
  std::string snapshot_, archive_, fingerprint_, rid_;
  std::shared_ptr<const storage::CryptConfig> crypt_;
  std::optional<FixedIndex> index_;
  Digest zero_full_, zero_last_;
  uint64_t cache_limit_ = 0;
  std::vector<std::thread> threads_;

  Mutex control_mu_;  // the session's own connection (keepalive, close)
  std::unique_ptr<ApiClient> control_;

  Mutex clients_mu_;
  std::vector<std::unique_ptr<ApiClient>> idle_clients_ CAIRN_GUARDED_BY(clients_mu_);

  mutable Mutex mu_;
  CondVar cv_;
  bool closed_ CAIRN_GUARDED_BY(mu_) = false;
  std::unordered_map<Digest, Entry, storage::DigestHash> cache_ CAIRN_GUARDED_BY(mu_);
  std::list<Digest> lru_ CAIRN_GUARDED_BY(mu_);  // front: most recently used
  uint64_t cached_bytes_ CAIRN_GUARDED_BY(mu_) = 0;
  std::unordered_map<Digest, std::shared_ptr<Pending>, storage::DigestHash> inflight_
      CAIRN_GUARDED_BY(mu_);
  std::deque<uint64_t> prefetch_queue_ CAIRN_GUARDED_BY(mu_);
  std::unordered_set<uint64_t> queued_ CAIRN_GUARDED_BY(mu_);
  std::deque<uint64_t> recent_ CAIRN_GUARDED_BY(mu_);  // chunks of the last reads, oldest first
  std::chrono::steady_clock::time_point last_request_ CAIRN_GUARDED_BY(mu_);
  ArchiveSourceStats stats_ CAIRN_GUARDED_BY(mu_);
};

Result<std::unique_ptr<ArchiveSource>> ArchiveSource::Open(const Repository& repo,
                                                           const std::string& snapshot,
                                                           const std::string& archive,
                                                           const ArchiveSourceOptions& options) {
  auto impl = std::make_unique<Impl>(repo, options);
  CAIRN_RETURN_IF_ERROR(impl->Open(snapshot, archive));
  return std::unique_ptr<ArchiveSource>(new ArchiveSource(std::move(impl)));
}

ArchiveSource::ArchiveSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArchiveSource::~ArchiveSource() { Close(); }
uint64_t ArchiveSource::size() const { return impl_->index().image_size(); }
uint64_t ArchiveSource::chunk_size() const { return impl_->index().chunk_size(); }
const std::string& ArchiveSource::snapshot() const { return impl_->snapshot(); }
const std::string& ArchiveSource::archive() const { return impl_->archive(); }
const std::string& ArchiveSource::fingerprint() const { return impl_->fingerprint(); }
Status ArchiveSource::Read(uint64_t offset, uint64_t length, std::string* out) {
  return impl_->Read(offset, length, out);
}
bool ArchiveSource::IsZeroChunk(uint64_t chunk) const { return impl_->IsZero(chunk); }
ArchiveSourceStats ArchiveSource::stats() const { return impl_->stats(); }
void ArchiveSource::Close() { impl_->Close(); }

Result<std::string> ResolveSnapshotName(const Repository& repo, const std::string& snapshot) {
  if (!snapshot.ends_with("/latest")) return snapshot;
  const std::string group = snapshot.substr(0, snapshot.size() - 7);
  RepositoryClient client(repo);
  CAIRN_ASSIGN_OR_RETURN(auto list, client.ListSnapshots(group));
  const SnapshotInfo* newest = nullptr;
  for (const SnapshotInfo& s : list.value) {
    if (!s.error.empty()) continue;
    if (newest == nullptr || s.time > newest->time) newest = &s;
  }
  if (newest == nullptr) return Status::NotFound("group " + group + " has no snapshot");
  return newest->snapshot;
}

}  // namespace cairn::client
