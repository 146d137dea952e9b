#include "client/backup_upload.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <thread>
#include <unordered_map>
#include <utility>

#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"
#include "storage/sigpipe_block.h"
#include "storage/manifest.h"
#include "storage/mutex.h"

namespace cairn::client {
namespace {

using nlohmann::json;
using storage::BlobEncoder;
using storage::Digest;
using storage::kChunkSize;

// A chunk buffer is framed for BlobEncoder::EncodeFramed: room for the blob
// header in front of the chunk's data, so that an incompressible full chunk
// is sent as a plain blob straight from its buffer (ApiClient::Post wants a
// std::string, hence not char[]).
constexpr size_t kDataOffset = BlobEncoder::kFrameOffset;
constexpr size_t kBufferSize = kDataOffset + kChunkSize;

// cairn-server closes a keep-alive connection after 5 s without a request
// (server/server.cc); a request written just as that close arrives fails.
// A connection idle for longer than this is replaced before it is used.
constexpr auto kMaxIdle = std::chrono::seconds(3);

// One HTTPS connection that is replaced when it sat idle too long.
class Connection {
 public:
  explicit Connection(const Repository& repo) : repo_(repo) {}
  ApiClient& Get() {
    auto now = std::chrono::steady_clock::now();
    if (client_ == nullptr || now - last_used_ > kMaxIdle) client_ = std::make_unique<ApiClient>(repo_);
    last_used_ = now;
    return *client_;
  }
  // After a request: idle time counts from its end.
  void Used() { last_used_ = std::chrono::steady_clock::now(); }

 private:
  const Repository& repo_;
  std::unique_ptr<ApiClient> client_;
  std::chrono::steady_clock::time_point last_used_;
};

// glibc serves allocations of 4 MiB (chunk buffers, compressed blobs, HTTP
// bodies) with a fresh mmap and returns them with munmap: every chunk then
// faults ~1,000 zeroed pages in again (issue 11: 339,000 minor faults and
// 1.8 s of system time per 2 GiB). Raising the mmap threshold above the
// largest body and the trim threshold keeps those blocks in the heap, where
// the next chunk reuses them already faulted in. Memory stays bounded by the
// buffer pool; the heap just does not shrink between chunks.
void KeepChunkMemoryMapped() {
  static const bool done = [] {
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
    return true;
  }();
  (void)done;
}

// A new pool buffer. Its pages are marked for transparent huge pages
// (MADV_HUGEPAGE; Debian's THP setting is "madvise") before they are first
// touched, so that its 2 MiB-aligned parts fault in as one 2 MiB page each
// instead of 512 small ones (issue 11's page-fault target). The range is
// rounded out to whole small pages: the marks of neighbouring buffers, which
// the heap lays side by side, then join into one region, and a 2 MiB block
// straddling two buffers can be a huge page too. Only a hint: without THP
// the buffer works the same.
std::unique_ptr<std::string> NewChunkBuffer(size_t size) {
  auto buffer = std::make_unique<std::string>();
  buffer->reserve(size);
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(buffer->data()) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(buffer->data()) + size + page - 1) & ~(page - 1);
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  buffer->resize(size);
  return buffer;
}

std::string Range(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// Token bucket over all workers, in blob bytes. A blob larger than the bucket
// is let through and leaves the bucket in debt, so the long-run rate holds
// whatever the blob sizes.
class RateLimiter {
 public:
  explicit RateLimiter(uint64_t rate)
      : rate_(static_cast<double>(rate)), tokens_(rate_), last_(Clock::now()) {}

  // Blocks until `bytes` may be sent; returns early once *stop is set.
  void Acquire(uint64_t bytes, const std::atomic<bool>& stop) {
    if (rate_ <= 0) return;
    Clock::time_point until;
    {
      MutexLock l(&mu_);
      Clock::time_point now = Clock::now();
      double elapsed = std::chrono::duration<double>(now - last_).count();
      last_ = now;
      tokens_ = std::min(rate_, tokens_ + elapsed * rate_) - static_cast<double>(bytes);
      if (tokens_ >= 0) return;
      until = now + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(-tokens_ / rate_));
    }
    while (!stop.load() && Clock::now() < until) {
      std::this_thread::sleep_for(
          std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(50)));
    }
  }

 private:
  using Clock = std::chrono::steady_clock;
  const double rate_;  // bytes per second; 0 = no limit
  Mutex mu_;
  double tokens_ CAIRN_GUARDED_BY(mu_);  // negative = debt
  Clock::time_point last_ CAIRN_GUARDED_BY(mu_);
};

// A chunk some of whose bytes have arrived. `ranges` are the received byte
// ranges within the chunk, sorted, disjoint and merged when adjacent: exact
// at any granularity (a short tail of 1536 bytes included) and small, since
// QEMU's requests are 64 KiB aligned and merged up to 1 MiB.
struct OpenChunk {
  uint32_t length = 0;   // the chunk's size (kChunkSize, or less for the last)
  uint32_t received = 0; // bytes covered so far
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  std::unique_ptr<std::string> buffer;  // null while only zeros arrived

  // The first range that ends after `begin`; [begin, end) overlaps a
  // received range exactly when that one starts before `end`.
  auto FirstEndingAfter(uint32_t begin) {
    return std::lower_bound(ranges.begin(), ranges.end(), begin,
                            [](const auto& r, uint32_t v) { return r.second <= v; });
  }
  bool Overlaps(uint32_t begin, uint32_t end) {
    auto it = FirstEndingAfter(begin);
    return it != ranges.end() && it->first < end;
  }
  // REQUIRES: !Overlaps(begin, end).
  void Add(uint32_t begin, uint32_t end) {
    auto it = FirstEndingAfter(begin);
    bool join_prev = it != ranges.begin() && std::prev(it)->second == begin;
    bool join_next = it != ranges.end() && it->first == end;
    if (join_prev && join_next) {
      std::prev(it)->second = it->second;
      ranges.erase(it);
    } else if (join_prev) {
      std::prev(it)->second = end;
    } else if (join_next) {
      it->first = begin;
    } else {
      ranges.insert(it, {begin, end});
    }
    received += end - begin;
  }
};

struct Archive {
  Archive(std::string n, uint64_t size, bool inc)
      : name(std::move(n)),
        image_size(size),
        incremental(inc),
        chunk_count(storage::FixedIndexChunkCount(size, kChunkSize)),
        done(chunk_count, false),
        index(size) {}

  uint32_t ChunkLength(uint64_t i) const {
    return static_cast<uint32_t>(std::min<uint64_t>(kChunkSize, image_size - i * kChunkSize));
  }

  const std::string name;
  const uint64_t image_size;
  const bool incremental;
  const uint64_t chunk_count;

  // The handler's side: the sink's thread, then Close().
  Mutex handler_mu;
  std::map<uint64_t, OpenChunk> open CAIRN_GUARDED_BY(handler_mu);
  std::vector<bool> done CAIRN_GUARDED_BY(handler_mu);  // chunk fully received
  uint64_t done_count CAIRN_GUARDED_BY(handler_mu) = 0;
  bool closing CAIRN_GUARDED_BY(handler_mu) = false;  // Close() began

  // The workers' side, guarded by UploadCore::mu_ (which the analysis cannot
  // name from here, so it checks none of these).
  storage::FixedIndexWriter index;
  uint64_t pending = 0;        // chunks queued or being uploaded
  std::vector<Digest> waiting; // digests this index uses that another upload is still storing
  bool closed = false;         // the index is on the server
};

// The key's digest of a chunk of `length` zero bytes (plain: SHA-256).
Digest ZeroDigest(const storage::CryptConfig* crypt, size_t length) {
  return crypt != nullptr ? crypt->ZeroChunkDigest(length) : storage::ZeroChunkDigest(length);
}

// A complete chunk for the workers. A chunk that only received zeros has no
// buffer; its digest is known already and it is queued only when the server
// lacks it.
struct Job {
  Archive* archive = nullptr;
  uint64_t chunk = 0;
  uint32_t length = 0;
  std::unique_ptr<std::string> buffer;
  Digest digest;  // zero chunks only
};

// Everything of a session; UploadSession and ArchiveWriter are its faces.
// (Its own class, because ArchiveWriter's Impl cannot name UploadSession's
// private one.)
class UploadCore {
 public:
  UploadCore(const Repository& repo, const UploadOptions& options)
      : repo_(repo),
        options_(options),
        crypt_(options_.crypt.get()),
        control_(repo_),
        limiter_(options.rate_limit) {}
  ~UploadCore() { StopWorkers(); }

  Status Begin(const std::string& group, std::optional<int64_t> backup_time);
  Result<Archive*> OpenArchive(const std::string& name, uint64_t image_size, bool incremental);
  Status Receive(Archive* a, uint64_t offset, uint64_t length, const char* data);
  Status Flush();
  Status Close(Archive* a);
  // `encrypt`: in an encrypted session (the master key's blob is not).
  Status WriteBlob(const std::string& name, std::string_view payload, bool encrypt);
  Result<json> Finish(const json& client);
  void Abort();
  Result<json> ServerStats();
  void StopWorkers();

  const json& start_info() const { return start_info_; }
  const UploadStats& stats() const { return stats_; }
  Status error() const {
    MutexLock l(&mu_);
    return error_;
  }
  bool finished() const {
    MutexLock l(&mu_);
    return finished_ || aborted_;
  }

 private:
  enum class Known { kNo, kPending, kStored };

  Status Piece(Archive* a, uint64_t chunk, uint32_t begin, uint32_t length, const char* data)
      CAIRN_REQUIRES(a->handler_mu);
  void Complete(Archive* a, uint64_t chunk, OpenChunk oc) CAIRN_REQUIRES(a->handler_mu);
  Result<std::unique_ptr<std::string>> AcquireBuffer(const Archive& a, uint64_t chunk);
  void ReleaseLocked(std::unique_ptr<std::string> buffer) CAIRN_REQUIRES(mu_);
  Known LookupLocked(const Digest& d) const CAIRN_REQUIRES(mu_);
  void UseDigestLocked(Archive* a, uint64_t chunk, const Digest& d, Known known)
      CAIRN_REQUIRES(mu_);
  // True when `a` has no chunk queued or being uploaded and every digest its
  // index waits for is stored.
  bool SettledLocked(const Archive& a) const CAIRN_REQUIRES(mu_);
  void SetError(const Status& s);
  void SetErrorLocked(const Status& s) CAIRN_REQUIRES(mu_);
  Status UsableLocked() const CAIRN_REQUIRES(mu_);
  void WorkerLoop();
  Status Upload(Connection* conn, BlobEncoder* enc, Job* job);
  // The blob of a job: plain/zstd through `enc` (see BlobEncoder for where
  // it lies), or, in an encrypted session, encrypted into *encrypted.
  Result<const std::string*> EncodeJob(BlobEncoder* enc, Job* job, std::string* encrypted);
  // The signature of the manifest the server will write at finish
  // (server/API.md "Backup session", storage/manifest.h ManifestSigningText).
  // REQUIRES: crypt_.
  std::string Signature();
  // A request on the control connection; transport failures of an
  // `idempotent` one are tried once more.
  Result<HttpResponse> Control(const std::function<Result<HttpResponse>(ApiClient&)>& call,
                               bool idempotent);
  std::string SessionPath(const std::string& suffix) const {
    return "/api/v1/backup/" + sid_ + suffix;
  }

  const Repository repo_;
  const UploadOptions options_;
  const storage::CryptConfig* const crypt_;  // options_.crypt; null for a plain backup
  json start_info_;  // set by Begin, then read-only
  std::string sid_;  // likewise
  std::string group_;         // likewise
  std::string crypt_change_;  // likewise: CryptChange of the previous snapshot
  UploadStats stats_;

  // One connection for everything but chunks: session start, previous
  // indexes, index uploads (Close() of two archives may run at once), finish.
  Mutex control_mu_;
  Connection control_ CAIRN_GUARDED_BY(control_mu_);

  RateLimiter limiter_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;

  mutable Mutex mu_;
  CondVar work_cv_;      // a job was queued, or stop
  CondVar buffer_cv_;    // a buffer came free, or an error
  CondVar progress_cv_;  // a job ended or a digest got stored, or an error
  std::deque<Job> queue_ CAIRN_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<std::string>> free_buffers_ CAIRN_GUARDED_BY(mu_);
  int allocated_ CAIRN_GUARDED_BY(mu_) = 0;  // buffers that exist
  int held_open_ CAIRN_GUARDED_BY(mu_) = 0;  // of those, held by partly received chunks
  // Digests the server accepts in an index: from the previous snapshot's
  // indexes fetched (sorted, unique: 32 bytes each, a large disk has many),
  // and uploaded in this session (false while the upload runs).
  std::vector<Digest> previous_known_ CAIRN_GUARDED_BY(mu_);
  std::unordered_map<Digest, bool, storage::DigestHash> uploaded_ CAIRN_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Archive>> archives_ CAIRN_GUARDED_BY(mu_);
  // Encrypted sessions: what the manifest will list (name, size, csum), to sign it.
  std::vector<storage::ArchiveInfo> written_ CAIRN_GUARDED_BY(mu_);
  Status error_ CAIRN_GUARDED_BY(mu_);  // the first error
  bool finished_ CAIRN_GUARDED_BY(mu_) = false;
  bool aborted_ CAIRN_GUARDED_BY(mu_) = false;
};

Status CheckOptions(const UploadOptions& o) {
  if (o.connections < 1 || o.connections > 64) {
    return Status::InvalidArgument("connections must be 1..64");
  }
  if (o.max_buffers < 1 || o.max_buffers > 4096) {
    return Status::InvalidArgument("max_buffers must be 1..4096");
  }
  if (o.zstd_level < ZSTD_minCLevel() || o.zstd_level > ZSTD_maxCLevel()) {
    return Status::InvalidArgument("zstd_level must be " + std::to_string(ZSTD_minCLevel()) +
                                   ".." + std::to_string(ZSTD_maxCLevel()));
  }
  return Status::OK();
}

}  // namespace

Status UploadCore::Begin(const std::string& group, std::optional<int64_t> backup_time) {
  json body = {{"group", group}};
  if (backup_time) body["time"] = *backup_time;
  if (crypt_ != nullptr) body["crypt"] = {{"mode", "encrypt"}, {"fingerprint", crypt_->fingerprint()}};
  Result<HttpResponse> r = Control(
      [&](ApiClient& c) { return c.PostJson(c.StorePath("/backup"), body); }, false);
  if (!r.ok()) return r.status();
  CAIRN_RETURN_IF_ERROR(r->ToStatus());
  json j = r->Json();
  if (!j.is_object() || !j.contains("session") || !j["session"].is_string()) {
    return Status::Corruption("the server's answer to a backup start has no session: " +
                              r->body.substr(0, 200));
  }
  std::string sid = j["session"];
  if (sid.empty() || !std::all_of(sid.begin(), sid.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return Status::Corruption("the server named a malformed session: " + sid.substr(0, 80));
  }
  start_info_ = std::move(j);
  sid_ = std::move(sid);
  group_ = group;
  crypt_change_ = CryptChange(start_info_.value("previous", json()), crypt_);
  for (int i = 0; i < options_.connections; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  return Status::OK();
}

Result<HttpResponse> UploadCore::Control(
    const std::function<Result<HttpResponse>(ApiClient&)>& call, bool idempotent) {
  MutexLock l(&control_mu_);
  storage::SigpipeBlock no_sigpipe;
  Result<HttpResponse> r = call(control_.Get());
  if (!r.ok() && idempotent) r = call(control_.Get());
  control_.Used();
  return r;
}

Result<Archive*> UploadCore::OpenArchive(const std::string& name, uint64_t image_size,
                                         bool incremental) {
  {
    MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(UsableLocked());
    for (const auto& a : archives_) {
      if (a->name == name) return Status::AlreadyExists("archive " + name + " is open already");
    }
  }
  if (name.size() <= 5 || name.compare(name.size() - 5, 5, ".fidx") != 0) {
    return Status::InvalidArgument("a disk archive is named NAME.fidx: " + name);
  }
  if (image_size == 0) return Status::InvalidArgument("archive " + name + ": image size 0");
  CAIRN_RETURN_IF_ERROR(storage::ValidateFixedIndexGeometry(image_size, kChunkSize));

  // The previous snapshot's archive of this name, as the start answer lists it.
  const json* previous = nullptr;
  static const json kNone;
  const json& prev = start_info_.contains("previous") ? start_info_.at("previous") : kNone;
  // Another key's (or plain↔encrypted) digests mean nothing to this session.
  if (incremental && !crypt_change_.empty()) {
    return Status::Conflict("archive " + name + ": " + crypt_change_);
  }
  if (crypt_change_.empty() && prev.is_object() && prev.contains("archives") &&
      prev["archives"].is_array()) {
    for (const auto& pa : prev["archives"]) {
      if (pa.is_object() && pa.value("name", "") == name) previous = &pa;
    }
  }
  if (incremental) {
    if (!prev.is_object()) {
      return Status::Conflict("archive " + name +
                              ": no previous snapshot to be incremental to (or it failed verification)");
    }
    if (previous == nullptr) {
      return Status::Conflict("archive " + name + ": the previous snapshot " +
                              prev.value("snapshot", "") + " has no archive of that name");
    }
    uint64_t prev_size = previous->contains("size") && (*previous)["size"].is_number_unsigned()
                             ? (*previous)["size"].get<uint64_t>()
                             : 0;
    if (prev_size != image_size) {
      return Status::Conflict("archive " + name + ": image size " + std::to_string(image_size) +
                              " differs from the previous snapshot's " +
                              std::to_string(prev_size));
    }
  }

  auto archive = std::make_unique<Archive>(name, image_size, incremental);
  CAIRN_RETURN_IF_ERROR(archive->index.status());
  if (previous != nullptr) {
    // Fetching the index registers its digests with the server's session:
    // only then may this session's indexes name them.
    std::string path = SessionPath("/previous-index?archive=" + ApiClient::Escape(name));
    Result<HttpResponse> r = Control([&](ApiClient& c) { return c.Get(path); }, true);
    if (!r.ok()) return r.status();
    Status s = r->ToStatus();
    if ((s.IsNotFound() || s.IsConflict()) && !incremental) {
      // A full archive only loses deduplication against it (409: the
      // server finds the previous snapshot's key differs).
    } else if (!s.ok()) {
      return s.WithContext("previous index of " + name);
    } else {
      Result<storage::FixedIndex> idx = storage::FixedIndex::Parse(r->body);
      if (!idx.ok()) return idx.status().WithContext("previous index of " + name);
      if (idx->checksum().ToHex() != previous->value("csum", "")) {
        return Status::Corruption("previous index of " + name +
                                  " does not match the checksum in the previous snapshot's manifest");
      }
      if (incremental) {
        Status copied = archive->index.CopyFrom(*idx);
        if (!copied.ok()) return Status::Conflict(copied.message());
      }
      std::vector<Digest> digests;
      digests.reserve(idx->chunk_count());
      for (uint64_t i = 0; i < idx->chunk_count(); ++i) digests.push_back(idx->digest(i));
      std::sort(digests.begin(), digests.end());
      digests.erase(std::unique(digests.begin(), digests.end()), digests.end());
      MutexLock l(&mu_);
      std::vector<Digest> merged;
      merged.reserve(previous_known_.size() + digests.size());
      std::set_union(previous_known_.begin(), previous_known_.end(), digests.begin(),
                     digests.end(), std::back_inserter(merged));
      previous_known_.swap(merged);
    }
  }
  MutexLock l(&mu_);
  CAIRN_RETURN_IF_ERROR(UsableLocked());
  for (const auto& a : archives_) {
    if (a->name == name) return Status::AlreadyExists("archive " + name + " is open already");
  }
  archives_.push_back(std::move(archive));
  return archives_.back().get();
}

Status UploadCore::UsableLocked() const {
  if (!error_.ok()) return error_;
  if (finished_) return Status::Conflict("the backup session is finished");
  if (aborted_ || stop_.load()) return Status::IOError("the backup session was aborted");
  return Status::OK();
}

void UploadCore::SetError(const Status& s) {
  MutexLock l(&mu_);
  SetErrorLocked(s);
}

void UploadCore::SetErrorLocked(const Status& s) {
  if (error_.ok() && !s.ok()) error_ = s;
  work_cv_.SignalAll();
  buffer_cv_.SignalAll();
  progress_cv_.SignalAll();
}

Status UploadCore::Receive(Archive* a, uint64_t offset, uint64_t length, const char* data) {
  MutexLock hl(&a->handler_mu);
  {
    MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(UsableLocked());
  }
  if (a->closing) return Status::InvalidArgument("archive " + a->name + " is closed");
  if (length == 0 || offset > a->image_size || length > a->image_size - offset) {
    return Status::InvalidArgument("archive " + a->name + ": request " +
                                   Range(offset, offset + length) + " outside the image of " +
                                   std::to_string(a->image_size) + " bytes");
  }
  const uint64_t total = length;
  while (length > 0) {
    uint64_t chunk = offset / kChunkSize;
    auto begin = static_cast<uint32_t>(offset % kChunkSize);
    auto n = static_cast<uint32_t>(std::min<uint64_t>(length, a->ChunkLength(chunk) - begin));
    Status s = Piece(a, chunk, begin, n, data);
    if (!s.ok()) {
      SetError(s);
      return s;
    }
    offset += n;
    length -= n;
    if (data != nullptr) data += n;
  }
  stats_.bytes_received += total;
  return Status::OK();
}

// One request's part within one chunk. REQUIRES: a->handler_mu held.
Status UploadCore::Piece(Archive* a, uint64_t chunk, uint32_t begin, uint32_t length,
                         const char* data) {
  const uint64_t base = chunk * kChunkSize;
  if (a->done[chunk]) {
    return Status::InvalidArgument("archive " + a->name + ": bytes " +
                                   Range(base + begin, base + begin + length) +
                                   " received twice (chunk " + std::to_string(chunk) +
                                   " was complete already)");
  }
  auto [it, inserted] = a->open.try_emplace(chunk);
  OpenChunk& oc = it->second;
  if (inserted) oc.length = a->ChunkLength(chunk);
  if (oc.Overlaps(begin, begin + length)) {
    return Status::InvalidArgument("archive " + a->name + ": bytes " +
                                   Range(base + begin, base + begin + length) +
                                   " overlap bytes received before (chunk " +
                                   std::to_string(chunk) + ")");
  }
  if (data != nullptr && oc.buffer == nullptr) {
    Result<std::unique_ptr<std::string>> b = AcquireBuffer(*a, chunk);
    if (!b.ok()) {
      if (inserted) a->open.erase(it);
      return b.status();
    }
    oc.buffer = std::move(b).value();
    // Everything received so far was zeros; a recycled buffer holds old data.
    for (const auto& [rb, re] : oc.ranges) {
      std::memset(oc.buffer->data() + kDataOffset + rb, 0, re - rb);
    }
  }
  if (data != nullptr) {
    std::memcpy(oc.buffer->data() + kDataOffset + begin, data, length);
  } else if (oc.buffer != nullptr) {
    std::memset(oc.buffer->data() + kDataOffset + begin, 0, length);
  }
  oc.Add(begin, begin + length);
  if (oc.received == oc.length) {
    OpenChunk complete = std::move(oc);
    a->open.erase(it);
    Complete(a, chunk, std::move(complete));
  }
  return Status::OK();
}

// REQUIRES: a->handler_mu held.
void UploadCore::Complete(Archive* a, uint64_t chunk, OpenChunk oc) {
  a->done[chunk] = true;
  ++a->done_count;
  ++stats_.chunks_dirty;
  if (oc.buffer != nullptr) {
    MutexLock l(&mu_);
    --held_open_;
    ++a->pending;
    queue_.push_back(Job{a, chunk, oc.length, std::move(oc.buffer), Digest()});
    work_cv_.Signal();
    return;
  }
  // Only zeros: the digest is known without hashing (and without a buffer).
  ++stats_.chunks_zero;
  Digest d = ZeroDigest(crypt_, oc.length);
  MutexLock l(&mu_);
  Known known = LookupLocked(d);
  if (known != Known::kNo) {
    UseDigestLocked(a, chunk, d, known);
    return;
  }
  // The first zero chunk of this size in the session: the server must hold
  // it before an index may name it.
  uploaded_[d] = false;
  ++a->pending;
  queue_.push_back(Job{a, chunk, oc.length, nullptr, d});
  work_cv_.Signal();
}

Result<std::unique_ptr<std::string>> UploadCore::AcquireBuffer(const Archive& a, uint64_t chunk) {
  {
    MutexLock l(&mu_);
    for (;;) {
      CAIRN_RETURN_IF_ERROR(UsableLocked());
      if (!free_buffers_.empty()) {
        std::unique_ptr<std::string> b = std::move(free_buffers_.back());
        free_buffers_.pop_back();
        ++held_open_;
        return b;
      }
      // Chunks queued or being uploaded. More than two per worker would not
      // go out sooner, only hold memory: then wait for one instead of taking
      // another buffer, and keep the rest of the pool for partly received
      // chunks (QEMU's out-of-order requests need those).
      const int in_flight = allocated_ - held_open_;
      if (allocated_ < options_.max_buffers && in_flight < 2 * options_.connections) {
        ++allocated_;
        ++held_open_;
        break;
      }
      if (in_flight == 0) {
        // Waiting cannot help: only more requests would complete those
        // chunks, and they are queued behind this one.
        return Status::IOError(
            "archive " + a.name + ": chunk " + std::to_string(chunk) + " needs a buffer, but all " +
            std::to_string(allocated_) +
            " chunk buffers are held by partly received chunks (QEMU's writes are spread over "
            "more chunks at once than UploadOptions::max_buffers allows)");
      }
      // Some buffers are queued or being uploaded: back-pressure until one is free.
      buffer_cv_.Wait(&mu_);
    }
  }
  // Allocated unlocked: a chunk buffer is large.
  return NewChunkBuffer(kBufferSize);
}

void UploadCore::ReleaseLocked(std::unique_ptr<std::string> buffer) {
  if (buffer == nullptr) return;
  free_buffers_.push_back(std::move(buffer));
  buffer_cv_.Signal();
}

UploadCore::Known UploadCore::LookupLocked(const Digest& d) const {
  if (auto it = uploaded_.find(d); it != uploaded_.end()) {
    return it->second ? Known::kStored : Known::kPending;
  }
  return std::binary_search(previous_known_.begin(), previous_known_.end(), d) ? Known::kStored
                                                                               : Known::kNo;
}

bool UploadCore::SettledLocked(const Archive& a) const {
  if (a.pending != 0) return false;
  for (const Digest& d : a.waiting) {
    if (LookupLocked(d) != Known::kStored) return false;
  }
  return true;
}

// A chunk whose digest the server has (or is being sent by another worker).
void UploadCore::UseDigestLocked(Archive* a, uint64_t chunk, const Digest& d, Known known) {
  (void)a->index.Set(chunk, d);  // chunk < chunk_count by construction
  if (known == Known::kPending) a->waiting.push_back(d);
  ++stats_.chunks_known;
}

void UploadCore::WorkerLoop() {
  storage::SigpipeBlock no_sigpipe;  // for the thread's whole life
  Connection conn(repo_);
  BlobEncoder enc(options_.zstd_level);
  for (;;) {
    Job job;
    {
      MutexLock l(&mu_);
      while (!stop_.load() && queue_.empty()) work_cv_.Wait(&mu_);
      if (stop_.load()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Status s = Upload(&conn, &enc, &job);
    MutexLock l(&mu_);
    if (!s.ok()) {
      SetErrorLocked(s.WithContext("archive " + job.archive->name + ", chunk " +
                                   std::to_string(job.chunk)));
    }
    ReleaseLocked(std::move(job.buffer));
    --job.archive->pending;
    progress_cv_.SignalAll();
  }
}

Status UploadCore::Upload(Connection* conn, BlobEncoder* enc, Job* job) {
  Digest d = job->digest;
  if (job->buffer != nullptr) {
    std::string_view data(job->buffer->data() + kDataOffset, job->length);
    if (job->length == kChunkSize && storage::IsAllZero(data)) {
      d = ZeroDigest(crypt_, kChunkSize);
      ++stats_.chunks_zero;
    } else {
      d = crypt_ != nullptr ? crypt_->ChunkDigest(data) : storage::Sha256(data);
    }
    MutexLock l(&mu_);
    Known known = LookupLocked(d);
    if (known != Known::kNo) {
      UseDigestLocked(job->archive, job->chunk, d, known);
      return Status::OK();
    }
    // Claimed before the upload, so an identical chunk meanwhile is not sent too.
    uploaded_[d] = false;
  }

  std::string encrypted;
  Result<const std::string*> blob = EncodeJob(enc, job, &encrypted);
  if (!blob.ok()) return blob.status();
  if (job->buffer != nullptr && *blob != job->buffer.get()) {
    // The data is in the blob now: let the sink have the buffer during the POST.
    MutexLock l(&mu_);
    ReleaseLocked(std::move(job->buffer));
  }
  const std::string& body = **blob;
  limiter_.Acquire(body.size(), stop_);
  std::string path = SessionPath("/chunk?digest=" + d.ToHex() + "&size=" + std::to_string(job->length));
  Result<HttpResponse> r = Status::IOError("not sent");
  // Transport failures (a keep-alive connection the server closed, a
  // timeout) are retried: storing a chunk twice is harmless.
  for (int attempt = 0; attempt < 3 && !stop_.load(); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
    r = conn->Get().Post(path, body, "application/octet-stream");
    conn->Used();
    if (r.ok()) break;
  }
  if (!r.ok()) return r.status();
  CAIRN_RETURN_IF_ERROR(r->ToStatus());
  ++stats_.chunks_uploaded;
  stats_.bytes_uploaded += body.size();
  MutexLock l(&mu_);
  uploaded_[d] = true;
  (void)job->archive->index.Set(job->chunk, d);
  return Status::OK();
}

Result<const std::string*> UploadCore::EncodeJob(BlobEncoder* enc, Job* job,
                                                 std::string* encrypted) {
  if (crypt_ == nullptr) {
    return job->buffer != nullptr ? enc->EncodeFramed(job->buffer.get(), job->length)
                                  : enc->EncodeZeros(job->length);
  }
  // The zero chunk is encrypted once per session (and length): a buffer of
  // zeros for it is no cost worth avoiding.
  std::string zeros;
  std::string_view data;
  if (job->buffer != nullptr) {
    data = std::string_view(job->buffer->data() + kDataOffset, job->length);
  } else {
    zeros.assign(job->length, '\0');
    data = zeros;
  }
  Result<std::string> e = crypt_->EncryptBlob(data, true, options_.zstd_level);
  if (!e.ok()) return e.status();
  *encrypted = std::move(e).value();
  return encrypted;
}

Status UploadCore::Flush() {
  MutexLock l(&mu_);
  return error_;
}

Status UploadCore::Close(Archive* a) {
  uint64_t received_chunks = 0;
  {
    MutexLock hl(&a->handler_mu);
    {
      MutexLock l(&mu_);
      if (a->closed) return Status::OK();
      CAIRN_RETURN_IF_ERROR(UsableLocked());
    }
    a->closing = true;
    Status incomplete;
    if (!a->open.empty()) {
      const auto& [chunk, oc] = *a->open.begin();
      incomplete = Status::InvalidArgument(
          "archive " + a->name + ": " + std::to_string(a->open.size()) +
          " chunk(s) partly received, the first chunk " + std::to_string(chunk) + " (" +
          std::to_string(oc.received) + " of " + std::to_string(oc.length) + " bytes)");
      MutexLock l(&mu_);
      for (auto& [i, c] : a->open) {
        if (c.buffer != nullptr) {
          --held_open_;
          ReleaseLocked(std::move(c.buffer));
        }
      }
      a->open.clear();
    } else if (!a->incremental && a->done_count != a->chunk_count) {
      uint64_t first = 0;
      while (first < a->chunk_count && a->done[first]) ++first;
      incomplete = Status::InvalidArgument(
          "archive " + a->name + " is incomplete: " +
          std::to_string(a->chunk_count - a->done_count) + " of " +
          std::to_string(a->chunk_count) + " chunks never received, the first chunk " +
          std::to_string(first) + " (bytes " +
          Range(first * kChunkSize, first * kChunkSize + a->ChunkLength(first)) + ")");
    }
    if (!incomplete.ok()) {
      SetError(incomplete);
      return incomplete;
    }
    received_chunks = a->done_count;
  }

  Result<std::string> bytes = Status::IOError("no index");
  {
    MutexLock l(&mu_);
    while (error_.ok() && !stop_.load() && !SettledLocked(*a)) progress_cv_.Wait(&mu_);
    CAIRN_RETURN_IF_ERROR(UsableLocked());
    bytes = a->index.Finish(static_cast<int64_t>(std::time(nullptr)));
  }
  if (!bytes.ok()) {
    SetError(bytes.status().WithContext("archive " + a->name));
    return bytes.status();
  }
  std::string path = SessionPath("/index?archive=" + ApiClient::Escape(a->name));
  Result<HttpResponse> r =
      Control([&](ApiClient& c) { return c.Post(path, *bytes, "application/octet-stream"); }, false);
  Status s = r.ok() ? r->ToStatus() : r.status();
  if (!s.ok()) {
    s = s.WithContext("index of " + a->name);
    SetError(s);
    return s;
  }
  if (a->incremental) stats_.chunks_reused += a->chunk_count - received_chunks;
  storage::ArchiveInfo info{a->name, a->image_size, Digest()};
  if (crypt_ != nullptr) {
    // The manifest lists the index's checksum; the signature covers it.
    Result<storage::FixedIndex> idx = storage::FixedIndex::Parse(*bytes);
    if (!idx.ok()) {
      Status bad = idx.status().WithContext("index of " + a->name);
      SetError(bad);
      return bad;
    }
    info.csum = idx->checksum();
  }
  MutexLock l(&mu_);
  if (crypt_ != nullptr) written_.push_back(std::move(info));
  a->closed = true;
  a->index = storage::FixedIndexWriter(0);  // its memory is not needed any more
  a->waiting.clear();
  a->waiting.shrink_to_fit();
  // Nothing left to write: give the buffers back to the system.
  if (std::all_of(archives_.begin(), archives_.end(), [](const auto& x) { return x->closed; })) {
    allocated_ -= static_cast<int>(free_buffers_.size());
    free_buffers_.clear();
  }
  return Status::OK();
}

Status UploadCore::WriteBlob(const std::string& name, std::string_view payload, bool encrypt) {
  {
    MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(UsableLocked());
  }
  if (name.size() <= 5 || !name.ends_with(".blob")) {
    return Status::InvalidArgument("a blob archive is named NAME.blob: " + name);
  }
  if (payload.size() > storage::kMaxBlobPayload) {
    return Status::InvalidArgument("blob archive " + name + ": " + std::to_string(payload.size()) +
                                   " bytes, at most " + std::to_string(storage::kMaxBlobPayload));
  }
  std::string blob;
  if (crypt_ != nullptr && encrypt) {
    CAIRN_ASSIGN_OR_RETURN(blob, crypt_->EncryptBlob(payload, true, options_.zstd_level));
  } else {
    // The master key's blob is plain and uncompressed (server/API.md): its
    // payload is RSA ciphertext.
    blob = storage::EncodeBlob(payload, encrypt);
  }
  std::string path = SessionPath("/blob?archive=" + ApiClient::Escape(name));
  // Idempotent: the server replaces an archive written again.
  Result<HttpResponse> r =
      Control([&](ApiClient& c) { return c.Post(path, blob, "application/octet-stream"); }, true);
  Status s = r.ok() ? r->ToStatus() : r.status();
  if (!s.ok()) return s.WithContext("blob archive " + name);
  MutexLock l(&mu_);
  if (crypt_ != nullptr) {
    std::erase_if(written_, [&](const storage::ArchiveInfo& a) { return a.name == name; });
    written_.push_back({name, blob.size(), storage::Sha256(blob)});
  }
  return Status::OK();
}

std::string UploadCore::Signature() {
  storage::Manifest m;
  const size_t slash = group_.find('/');
  m.backup_type = group_.substr(0, slash);
  m.backup_id = slash == std::string::npos ? "" : group_.substr(slash + 1);
  m.backup_time = start_info_.value("time", int64_t{0});
  {
    MutexLock l(&mu_);
    m.archives = written_;
  }
  m.crypt = storage::CryptInfo{crypt_->fingerprint(), ""};
  return crypt_->Sign(storage::ManifestSigningText(m)).ToHex();
}

Result<json> UploadCore::Finish(const json& client) {
  {
    MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(UsableLocked());
    for (const auto& a : archives_) {
      if (!a->closed) return Status::InvalidArgument("archive " + a->name + " was not closed");
    }
  }
  json body = {{"client", client}};
  if (crypt_ != nullptr) {
    if (!options_.master_key.empty()) {
      Status s = WriteBlob(kMasterKeyArchive, options_.master_key, false);
      if (!s.ok()) {
        SetError(s);
        return s;
      }
    }
    body["crypt"] = {{"mode", "encrypt"},
                     {"fingerprint", crypt_->fingerprint()},
                     {"signature", Signature()}};
  }
  Result<HttpResponse> r = Control([&](ApiClient& c) {
    return c.PostJson(SessionPath("/finish"), body);
  }, false);
  Status s = r.ok() ? r->ToStatus() : r.status();
  if (!s.ok()) {
    s = s.WithContext("finish");
    SetError(s);
    return s;
  }
  json answer = r->Json();
  {
    MutexLock l(&mu_);
    finished_ = true;
  }
  StopWorkers();
  return answer;
}

void UploadCore::Abort() {
  {
    MutexLock l(&mu_);
    if (finished_ || aborted_) return;
    aborted_ = true;
    SetErrorLocked(Status::IOError("the backup session was aborted"));
  }
  stop_ = true;
  (void)Control([&](ApiClient& c) { return c.PostJson(SessionPath("/abort"), json::object()); },
                true);
  StopWorkers();
}

void UploadCore::StopWorkers() {
  {
    MutexLock l(&mu_);
    stop_ = true;
    work_cv_.SignalAll();
    buffer_cv_.SignalAll();
    progress_cv_.SignalAll();
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
  MutexLock l(&mu_);
  for (Job& job : queue_) --job.archive->pending;
  queue_.clear();
}

Result<json> UploadCore::ServerStats() {
  Result<HttpResponse> r = Control([&](ApiClient& c) { return c.Get(SessionPath("/stats")); }, true);
  if (!r.ok()) return r.status();
  CAIRN_RETURN_IF_ERROR(r->ToStatus());
  json j = r->Json();
  if (!j.is_object()) return Status::Corruption("the server's stats are not a JSON object");
  return j;
}

// --- UploadSession ---

std::string CryptChange(const nlohmann::json& previous, const storage::CryptConfig* crypt) {
  if (!previous.is_object()) return "";
  std::string was;  // the previous snapshot's key fingerprint, "" = plain
  if (auto c = previous.find("crypt"); c != previous.end() && c->is_object()) {
    was = c->value("fingerprint", "");
    if (was.empty()) was = "?";  // encrypted, key not named: never the same
  }
  const std::string now = crypt != nullptr ? crypt->fingerprint() : "";
  if (was == now) return "";
  const std::string prev = previous.value("snapshot", std::string("the previous snapshot"));
  if (was.empty()) return "encryption turned on: full upload (" + prev + " is not encrypted)";
  if (now.empty()) {
    return "encryption turned off: full upload (" + prev + " is encrypted with key " + was + ")";
  }
  return "key changed: full upload (" + prev + " is encrypted with key " + was + ", this backup uses " +
         now + ")";
}

struct UploadSession::Impl {
  std::unique_ptr<UploadCore> core;
  std::vector<std::unique_ptr<ArchiveWriter>> writers;
};

struct ArchiveWriter::Impl {
  UploadCore* core;
  Archive* archive;
};

Result<std::unique_ptr<UploadSession>> UploadSession::Start(const Repository& repo,
                                                            const std::string& group,
                                                            std::optional<int64_t> backup_time,
                                                            const UploadOptions& options) {
  CAIRN_RETURN_IF_ERROR(CheckOptions(options));
  KeepChunkMemoryMapped();
  const bool pinned =
      repo.fingerprint.size() == 64 &&
      std::all_of(repo.fingerprint.begin(), repo.fingerprint.end(),
                  [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
  if (!pinned && (!repo.fingerprint.empty() || repo.ca_file.empty())) {
    return Status::InvalidArgument(
        "the repository needs a 64-hex-digit fingerprint or a CA file (Repository::Resolve)");
  }
  auto core = std::make_unique<UploadCore>(repo, options);
  Status s = core->Begin(group, backup_time);
  if (!s.ok()) return s.WithContext("cannot start a backup of " + group);
  auto impl = std::make_unique<Impl>();
  impl->core = std::move(core);
  return std::unique_ptr<UploadSession>(new UploadSession(std::move(impl)));
}

UploadSession::UploadSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UploadSession::~UploadSession() {
  if (!impl_->core->finished()) impl_->core->Abort();
  impl_->core->StopWorkers();
  impl_->writers.clear();
}

const nlohmann::json& UploadSession::start_info() const { return impl_->core->start_info(); }

Result<ArchiveWriter*> UploadSession::OpenArchive(const std::string& name, uint64_t image_size,
                                                  bool incremental) {
  Result<Archive*> a = impl_->core->OpenArchive(name, image_size, incremental);
  if (!a.ok()) return a.status();
  auto writer_impl = std::make_unique<ArchiveWriter::Impl>();
  writer_impl->core = impl_->core.get();
  writer_impl->archive = *a;
  impl_->writers.push_back(std::unique_ptr<ArchiveWriter>(new ArchiveWriter(std::move(writer_impl))));
  return impl_->writers.back().get();
}

Status UploadSession::WriteBlob(const std::string& name, std::string_view payload) {
  if (name == kMasterKeyArchive) {
    return Status::InvalidArgument(name + " is written by Finish (UploadOptions::master_key)");
  }
  return impl_->core->WriteBlob(name, payload, true);
}

Result<nlohmann::json> UploadSession::Finish(const nlohmann::json& client) {
  return impl_->core->Finish(client);
}

void UploadSession::Abort() { impl_->core->Abort(); }

Result<nlohmann::json> UploadSession::ServerStats() { return impl_->core->ServerStats(); }

const UploadStats& UploadSession::stats() const { return impl_->core->stats(); }

Status UploadSession::error() const { return impl_->core->error(); }

// --- ArchiveWriter ---

ArchiveWriter::ArchiveWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArchiveWriter::~ArchiveWriter() = default;

Status ArchiveWriter::OnWrite(uint64_t offset, std::string_view data) {
  return impl_->core->Receive(impl_->archive, offset, data.size(), data.data());
}

Status ArchiveWriter::OnZero(uint64_t offset, uint64_t length) {
  return impl_->core->Receive(impl_->archive, offset, length, nullptr);
}

Status ArchiveWriter::OnFlush() { return impl_->core->Flush(); }

Status ArchiveWriter::Close() { return impl_->core->Close(impl_->archive); }

const std::string& ArchiveWriter::name() const { return impl_->archive->name; }
uint64_t ArchiveWriter::image_size() const { return impl_->archive->image_size; }
bool ArchiveWriter::incremental() const { return impl_->archive->incremental; }

}  // namespace cairn::client
