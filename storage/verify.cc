#include "storage/verify.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include "storage/blob.h"
#include "storage/chunk_store.h"
#include "storage/fixed_index.h"
#include "storage/mutex.h"

namespace cairn::storage {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxThreads = 256;
constexpr auto kProgressInterval = std::chrono::milliseconds(200);

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The largest chunk file that can hold at most `max_len` bytes of plaintext.
// Reading is refused above it, so a damaged or hostile file never makes a
// buffer larger than what the memory budget planned for.
uint64_t ChunkFileLimit(uint64_t max_len) { return MaxBlobSizeFor(max_len); }

enum class ChunkState : uint8_t { kOk, kCorrupt, kMissing, kUnreadable };

const char* StateName(ChunkState s) {
  switch (s) {
    case ChunkState::kOk:
      return "ok";
    case ChunkState::kCorrupt:
      return "corrupt";
    case ChunkState::kMissing:
      return "missing";
    case ChunkState::kUnreadable:
      return "unreadable";
  }
  return "?";
}

// One distinct chunk to check, with what the snapshot's indexes say of it.
struct Need {
  Digest digest;
  uint64_t min_len = 0;    // smallest ChunkLength(i) referencing it
  uint64_t max_len = 0;    // largest
  uint64_t limit_len = 0;  // largest chunk_size of those indexes: the decode limit
};

struct Outcome {
  bool done = false;  // false: not reached (cancelled)
  ChunkState state = ChunkState::kOk;
  BlobKind kind = BlobKind::kPlain;  // when kOk
  uint64_t size = 0;  // plaintext size (encrypted: ciphertext length) when read
  std::string problem;
  std::string renamed_to;
  std::string first_read_problem;  // the first read was bad, the second good
};

// What the run knows of a chunk it has checked.
struct Known {
  ChunkState state = ChunkState::kOk;
  BlobKind kind = BlobKind::kPlain;  // when kOk
  uint64_t size = 0;
  size_t bad_index = 0;  // into VerifyResult::bad_chunks when not ok
};

// One reference of an index to a chunk.
struct Reference {
  Digest digest;
  uint64_t len = 0;
  uint64_t chunk_size = 0;
};

// Reasons why a snapshot failed, the first kMaxVerifyReasons kept.
class Reasons {
 public:
  void Add(std::string r) {
    if (list_.size() < kMaxVerifyReasons) list_.push_back(std::move(r));
    ++count_;
  }
  bool empty() const { return count_ == 0; }
  std::vector<std::string> Take() {
    if (count_ > list_.size()) {
      list_.push_back("... and " + std::to_string(count_ - list_.size()) + " more");
    }
    return std::move(list_);
  }

 private:
  std::vector<std::string> list_;
  size_t count_ = 0;
};

class Verifier {
 public:
  Verifier(Datastore& store, const VerifyOptions& options, int threads)
      : store_(store), chunks_(store.chunk_store()), env_(store.env()), options_(options) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkerMain(); });
  }

  ~Verifier() {
    {
      MutexLock l(&mu_);
      stop_ = true;
    }
    work_cv_.SignalAll();
    for (std::thread& t : workers_) t.join();
  }

  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  VerifyResult Run(const std::vector<SnapshotRef>& refs) {
    const Clock::time_point t0 = Clock::now();
    snapshots_total_ = refs.size();
    for (const SnapshotRef& ref : refs) {
      if (Cancelled()) break;
      VerifySnapshot(ref);
      if (result_.cancelled) break;
      ++snapshots_done_;
      ReportProgress();
    }
    if (Cancelled() && snapshots_done_ < snapshots_total_) result_.cancelled = true;
    result_.bytes_read = bytes_read_.load();
    result_.decoded_bytes = decoded_bytes_.load();
    result_.duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    return std::move(result_);
  }

 private:
  // A buffer pair for one chunk in flight.
  struct Slot {
    std::string blob;
    std::string plain;
  };

  bool Cancelled() const {
    return options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed);
  }

  void Log(const std::string& line) {
    if (options_.log) options_.log(line);
  }

  void ReportProgress() {
    if (!options_.progress) return;
    VerifyProgress p;
    p.snapshots_done = snapshots_done_;
    p.snapshots_total = snapshots_total_;
    p.chunks_done = chunks_done_.load();
    p.chunks_total = chunks_total_;
    p.bytes_read = bytes_read_.load();
    options_.progress(p);
  }

  bool SnapshotGone(const SnapshotRef& ref) {
    auto path = store_.SnapshotPath(ref);
    if (!path.ok()) return false;
    auto st = env_->Stat(*path);
    return !st.ok() && st.status().IsNotFound();
  }

  void Vanished(const SnapshotRef& ref, const std::string& when) {
    ++result_.snapshots_vanished;
    Log("snapshot " + ref.ToString() + ": deleted " + when + "; not verified");
  }

  // --- One snapshot ---

  void VerifySnapshot(const SnapshotRef& ref) {
    auto manifest = store_.ReadManifest(ref);
    if (!manifest.ok()) {
      if (manifest.status().IsNotFound()) return Vanished(ref, "before it was verified");
      Reasons reasons;
      reasons.Add("index.json: " + manifest.status().ToString());
      return Finish(ref, std::move(reasons), /*manifest_ok=*/false);
    }
    if (VerifiedRecently(manifest->verify, options_, env_->NowSeconds())) {
      ++result_.snapshots_skipped;
      return;
    }

    Reasons reasons;
    std::vector<FixedIndex> indexes;
    for (const ArchiveInfo& a : manifest->archives) {
      auto path = store_.ArchivePath(ref, a.name);
      if (!path.ok()) {  // Manifest::Parse validated the name; kept for safety
        reasons.Add(a.name + ": " + path.status().ToString());
        continue;
      }
      if (EndsWith(a.name, ".fidx")) {
        auto index = FixedIndex::Read(env_, *path);
        if (!index.ok()) {
          if (index.status().IsNotFound()) {
            if (SnapshotGone(ref)) return Vanished(ref, "while it was verified");
            reasons.Add(a.name + ": missing");
          } else {
            reasons.Add(a.name + ": " + index.status().ToString());
          }
          continue;
        }
        bool good = true;
        if (index->checksum() != a.csum) {
          reasons.Add(a.name + ": checksum " + index->checksum().ToHex() +
                      " differs from the manifest's " + a.csum.ToHex());
          good = false;
        }
        if (index->image_size() != a.size) {
          reasons.Add(a.name + ": image size " + std::to_string(index->image_size()) +
                      " differs from the manifest's " + std::to_string(a.size));
          good = false;
        }
        // A damaged index's digests are not trusted to name chunks to check.
        if (good) indexes.push_back(std::move(index).value());
      } else {
        if (!CheckBlobArchive(ref, a, *path, &reasons)) {
          return Vanished(ref, "while it was verified");
        }
      }
    }

    // Every reference, sorted by digest: the distinct chunks come out in
    // the order of their folders on disk.
    std::vector<Reference> refs;
    uint64_t total = 0;
    for (const FixedIndex& index : indexes) total += index.chunk_count();
    refs.reserve(total);
    for (const FixedIndex& index : indexes) {
      for (uint64_t i = 0; i < index.chunk_count(); ++i) {
        refs.push_back({index.digest(i), index.ChunkLength(i), index.chunk_size()});
      }
    }
    std::sort(refs.begin(), refs.end(),
              [](const Reference& a, const Reference& b) { return a.digest < b.digest; });

    std::vector<Need> batch;
    for (size_t i = 0; i < refs.size();) {
      Need need{refs[i].digest, refs[i].len, refs[i].len, refs[i].chunk_size};
      size_t j = i + 1;
      for (; j < refs.size() && refs[j].digest == need.digest; ++j) {
        need.min_len = std::min(need.min_len, refs[j].len);
        need.max_len = std::max(need.max_len, refs[j].len);
        need.limit_len = std::max(need.limit_len, refs[j].chunk_size);
      }
      if (!known_.contains(need.digest)) batch.push_back(need);
      i = j;
    }

    if (Cancelled()) {
      result_.cancelled = true;
      return;
    }
    if (!batch.empty()) {
      chunks_total_ += batch.size();
      std::vector<Outcome> outcomes = RunBatch(&batch);
      // What was found is recorded even when cancelled (a chunk may have
      // been renamed aside); an unfinished snapshot gets no state.
      Record(ref, batch, outcomes);
      if (result_.cancelled) return;
    }

    // Every reference against what is known of its chunk: one reason per
    // distinct problem, however often the chunk is referenced.
    for (size_t i = 0; i < refs.size();) {
      const Digest& d = refs[i].digest;
      const Known& k = known_.at(d);
      size_t j = i;
      if (k.state != ChunkState::kOk) {
        BadChunk& bad = result_.bad_chunks[k.bad_index];
        reasons.Add("chunk " + d.ToHex() + ": " + bad.kind + " (" + bad.problem + ")");
        if (bad.used_by.empty() || bad.used_by.back() != ref) bad.used_by.push_back(ref);
        while (j < refs.size() && refs[j].digest == d) ++j;
      } else {
        // A chunk of a kind the manifest does not declare proves nothing
        // for this snapshot (an encrypted-kind file under a plaintext
        // digest): the snapshot fails; the chunk is left alone, since a
        // verified upload of the digest replaces it (storage/FORMAT.md).
        if (!manifest->AllowsChunkKind(k.kind)) {
          reasons.Add("chunk " + d.ToHex() + ": stored as kind " + BlobKindName(k.kind) +
                      ", which the manifest does not declare");
        }
        std::set<uint64_t> wrong;
        // An encrypted chunk's size can only be checked as a fit of its
        // ciphertext length (storage/FORMAT.md, "Blob").
        const bool encrypted = k.kind == BlobKind::kEncrypted || k.kind == BlobKind::kEncryptedZstd;
        for (; j < refs.size() && refs[j].digest == d; ++j) {
          const bool fits = encrypted ? EncryptedSizeFits(k.kind, k.size, refs[j].len)
                                      : refs[j].len == k.size;
          if (!fits) wrong.insert(refs[j].len);
        }
        for (uint64_t len : wrong) {
          reasons.Add("chunk " + d.ToHex() + ": the index expects " + std::to_string(len) +
                      " bytes, the chunk holds " + std::to_string(k.size) +
                      (encrypted ? " bytes of ciphertext" : ""));
        }
      }
      i = j;
    }

    for (const FixedIndex& index : indexes) pending_logical_ += index.image_size();
    Finish(ref, std::move(reasons), /*manifest_ok=*/true);
  }

  // Checks a ".blob" archive's size and SHA-256 against the manifest.
  // False when the whole snapshot has gone (deleted meanwhile).
  bool CheckBlobArchive(const SnapshotRef& ref, const ArchiveInfo& a, const std::string& path,
                        Reasons* reasons) {
    if (a.size > kMaxBlobFileSize) {
      reasons->Add(a.name + ": the manifest's size " + std::to_string(a.size) +
                   " is larger than any blob");
      return true;
    }
    std::string data;
    // Reading at most the manifest's size: a longer file is refused unread.
    Status s = env_->ReadFile(path, &data, a.size);
    if (s.IsNotFound()) {
      if (SnapshotGone(ref)) return false;
      reasons->Add(a.name + ": missing");
      return true;
    }
    if (!s.ok()) {
      reasons->Add(a.name + ": " + s.ToString());
      return true;
    }
    if (data.size() != a.size) {
      reasons->Add(a.name + ": " + std::to_string(data.size()) + " bytes, the manifest says " +
                   std::to_string(a.size));
      return true;
    }
    if (Digest got = Sha256(data); got != a.csum) {
      reasons->Add(a.name + ": SHA-256 " + got.ToHex() + " differs from the manifest's " +
                   a.csum.ToHex());
    }
    return true;
  }

  // Records the outcomes of a batch (those reached) in `known_` and the result.
  void Record(const SnapshotRef& ref, const std::vector<Need>& batch,
              const std::vector<Outcome>& outcomes) {
    for (size_t i = 0; i < batch.size(); ++i) {
      const Outcome& o = outcomes[i];
      if (!o.done) continue;  // not reached before a cancel
      const Digest& d = batch[i].digest;
      Known k{o.state, o.kind, o.size, 0};
      ++result_.chunks_checked;
      if (!o.first_read_problem.empty()) {
        std::string w = "chunk " + d.ToHex() + ": first read found " + o.first_read_problem +
                        ", a second read was good; not renamed";
        result_.warnings.push_back(w);
        Log(w);
      }
      if (o.state != ChunkState::kOk) {
        ++result_.chunks_bad;
        switch (o.state) {
          case ChunkState::kCorrupt:
            ++result_.chunks_corrupt;
            break;
          case ChunkState::kMissing:
            ++result_.chunks_missing;
            break;
          case ChunkState::kUnreadable:
            ++result_.chunks_unreadable;
            break;
          case ChunkState::kOk:
            break;
        }
        if (!o.renamed_to.empty()) ++result_.chunks_renamed;
        k.bad_index = result_.bad_chunks.size();
        BadChunk bad;
        bad.digest = d;
        bad.kind = StateName(o.state);
        bad.problem = o.problem;
        bad.renamed_to = o.renamed_to;
        bad.used_by.push_back(ref);
        result_.bad_chunks.push_back(std::move(bad));
        std::string line =
            "chunk " + d.ToHex() + ": " + StateName(o.state) + " (" + o.problem + ")";
        if (!o.renamed_to.empty()) line += ", renamed to " + o.renamed_to;
        line += "; used by " + ref.ToString();
        Log(line);
      }
      known_.emplace(d, k);
    }
  }

  // Writes the verdict for a snapshot whose checks all ran.
  void Finish(const SnapshotRef& ref, Reasons reasons, bool manifest_ok) {
    const bool ok = reasons.empty();
    VerifyState state{ok ? "ok" : "failed", env_->NowSeconds(), options_.task};
    bool written = false;
    if (manifest_ok) {
      Status s = store_.SetVerifyState(ref, state);
      if (s.IsNotFound()) {
        pending_logical_ = 0;
        return Vanished(ref, "while it was verified");
      }
      if (s.ok()) {
        written = true;
      } else {
        std::string w =
            "snapshot " + ref.ToString() + ": verify state not written: " + s.ToString();
        result_.warnings.push_back(w);
        Log(w);
      }
    }
    if (!manifest_ok) {
      // No state can be written into it; whoever indexes the store reads
      // the snapshot again and shows it damaged.
      store_.ReportDamage(ref, Status::Corruption("index.json cannot be read"));
    }
    result_.logical_bytes += pending_logical_;
    pending_logical_ = 0;
    ++result_.snapshots_checked;
    if (ok) {
      ++result_.snapshots_ok;
      return;
    }
    ++result_.snapshots_failed;
    VerifyFailure f;
    f.ref = ref;
    f.reasons = reasons.Take();
    f.state_written = written;
    std::string line = "snapshot " + ref.ToString() + ": failed: " + f.reasons.front();
    if (f.reasons.size() > 1) line += " (and more, see the result)";
    if (!written) line += "; its verify state could not be written";
    Log(line);
    result_.failed.push_back(std::move(f));
  }

  // --- The worker pool ---

  // Checks every chunk of `*batch` on the workers; returns their outcomes
  // when all are done or the run is cancelled (then result_.cancelled is
  // set). `*batch` is lent to the workers meanwhile and given back.
  std::vector<Outcome> RunBatch(std::vector<Need>* batch) {
    const size_t n = batch->size();
    uint64_t limit_len = 0;
    for (const Need& need : *batch) limit_len = std::max(limit_len, need.limit_len);
    const uint64_t per_slot = ChunkFileLimit(limit_len) + limit_len;
    {
      MutexLock l(&mu_);
      // No batch is running: slots are all free and may be resized.
      slot_limit_ = static_cast<size_t>(std::clamp<uint64_t>(
          options_.max_buffer_bytes / std::max<uint64_t>(per_slot, 1), 1, workers_.size()));
      if (free_slots_.size() > slot_limit_) free_slots_.resize(slot_limit_);
      for (auto& slot : free_slots_) {
        if (slot->blob.capacity() > ChunkFileLimit(limit_len)) std::string().swap(slot->blob);
        if (slot->plain.capacity() > limit_len) std::string().swap(slot->plain);
      }
      batch_.swap(*batch);
      outcomes_.assign(n, Outcome{});
      next_.store(0);
      idle_ = 0;
      ++generation_;
    }
    work_cv_.SignalAll();
    mu_.Lock();
    while (idle_ < workers_.size()) {
      if (!done_cv_.WaitFor(&mu_, kProgressInterval)) {
        mu_.Unlock();
        ReportProgress();
        mu_.Lock();
      }
    }
    mu_.Unlock();
    std::vector<Outcome> out;
    {
      MutexLock l(&mu_);
      batch_.swap(*batch);
      out.swap(outcomes_);
    }
    for (const Outcome& o : out) {
      if (!o.done) {
        result_.cancelled = true;
        break;
      }
    }
    return out;
  }

  void WorkerMain() {
    uint64_t seen = 0;
    for (;;) {
      size_t n;
      {
        MutexLock l(&mu_);
        while (!stop_ && generation_ == seen) work_cv_.Wait(&mu_);
        if (stop_) return;
        seen = generation_;
        n = batch_.size();
      }
      for (;;) {
        if (Cancelled()) break;
        const size_t i = next_.fetch_add(1);
        if (i >= n) break;
        Slot* slot = AcquireSlot();
        // Each index is handed to one worker; the coordinator reads the
        // outcomes only after every worker has gone idle (under mu_).
        outcomes_[i] = CheckChunk(batch_[i], slot);
        ReleaseSlot(slot);
        chunks_done_.fetch_add(1);
      }
      {
        MutexLock l(&mu_);
        ++idle_;
      }
      done_cv_.SignalAll();
    }
  }

  Slot* AcquireSlot() {
    MutexLock l(&mu_);
    // Slots in use plus free ones never exceed slot_limit_ (RunBatch trims
    // the free list), so a free one exists whenever fewer are out.
    while (slots_out_ >= slot_limit_) slot_cv_.Wait(&mu_);
    ++slots_out_;
    if (!free_slots_.empty()) {
      Slot* s = free_slots_.back().release();
      free_slots_.pop_back();
      return s;
    }
    return new Slot;
  }

  void ReleaseSlot(Slot* slot) {
    {
      MutexLock l(&mu_);
      --slots_out_;
      free_slots_.emplace_back(slot);
    }
    slot_cv_.Signal();
  }

  // --- One chunk (worker threads) ---

  Outcome CheckChunk(const Need& need, Slot* slot) {
    Outcome first = ReadAndCheck(need, slot);
    if (first.state != ChunkState::kCorrupt) return first;
    // Renaming aside is the one thing verify does to a chunk; make sure the
    // damage is on disk, not a fluke of one read, before doing it.
    Outcome second = ReadAndCheck(need, slot);
    if (second.state == ChunkState::kOk) {
      second.first_read_problem = first.problem;
      return second;
    }
    if (second.state != ChunkState::kCorrupt) return second;
    Status s = chunks_->MarkBad(need.digest);
    if (s.ok()) {
      second.renamed_to = NewestBadName(need.digest);
    } else if (s.IsNotFound()) {
      second.problem += "; removed before it could be renamed aside";
    } else {
      second.problem += "; renaming it aside failed: " + s.ToString();
    }
    return second;
  }

  // The name MarkBad just gave: the highest `<digest>.<n>.bad` in the folder.
  std::string NewestBadName(const Digest& d) {
    const std::string hex = d.ToHex();
    std::vector<std::string> names;
    if (!env_->ListDir(chunks_->PrefixDir(DigestPrefix(d)), &names).ok()) return hex + ".?.bad";
    long best = -1;
    for (const std::string& name : names) {
      if (name.size() <= hex.size() + 5 || name.compare(0, hex.size(), hex) != 0) continue;
      if (name[hex.size()] != '.' || !EndsWith(name, ".bad")) continue;
      const std::string num = name.substr(hex.size() + 1, name.size() - hex.size() - 5);
      if (num.empty() || num.size() > 9 ||
          !std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        continue;
      }
      best = std::max(best, std::stol(num));
    }
    return hex + "." + (best < 0 ? std::string("?") : std::to_string(best)) + ".bad";
  }

  Outcome ReadAndCheck(const Need& need, Slot* slot) {
    Outcome o;
    o.done = true;
    Status s = env_->ReadFile(chunks_->ChunkPath(need.digest), &slot->blob,
                              ChunkFileLimit(need.limit_len));
    if (!s.ok()) {
      if (s.IsNotFound()) {
        o.state = ChunkState::kMissing;
        o.problem = "no chunk file";
      } else if (s.IsCorruption()) {  // larger than any chunk of its size
        o.state = ChunkState::kCorrupt;
        o.problem = s.message();
      } else {
        o.state = ChunkState::kUnreadable;
        o.problem = s.ToString();
      }
      return o;
    }
    bytes_read_.fetch_add(slot->blob.size());
    const std::string_view blob = slot->blob;

    auto Bad = [&](std::string problem) {
      o.state = ChunkState::kCorrupt;
      o.problem = std::move(problem);
      return o;
    };
    auto view = ParseBlob(blob);
    if (!view.ok()) return Bad(view.status().message());
    o.kind = view->kind;
    std::string_view plain;
    switch (view->kind) {
      case BlobKind::kPlain:
        plain = view->payload;
        break;
      case BlobKind::kZstd: {
        Status d = DecodeBlobPayload(*view, &slot->plain, static_cast<size_t>(need.limit_len));
        if (!d.ok()) return Bad(d.message());
        plain = slot->plain;
        break;
      }
      case BlobKind::kEncrypted:
      case BlobKind::kEncryptedZstd: {
        // Without the key: the CRC (checked) and the ciphertext length,
        // which the server checked against the size at upload.
        o.size = view->payload.size();
        if (!EncryptedSizeFits(*view, need.min_len) && !EncryptedSizeFits(*view, need.max_len)) {
          return Bad("encrypted chunk holds " + std::to_string(o.size) +
                     " bytes of ciphertext, which cannot hold the " +
                     std::to_string(need.max_len) + " bytes the index expects");
        }
        decoded_bytes_.fetch_add(o.size);
        return o;
      }
    }
    const Digest got = IsAllZero(plain) ? ZeroChunkDigest(plain.size()) : Sha256(plain);
    if (got != need.digest) return Bad("digest mismatch: content has " + got.ToHex());
    o.size = plain.size();
    decoded_bytes_.fetch_add(o.size);
    return o;
  }

  Datastore& store_;
  ChunkStore* const chunks_;
  Env* const env_;
  const VerifyOptions& options_;

  // Coordinator (calling thread) only.
  VerifyResult result_;
  std::unordered_map<Digest, Known, DigestHash> known_;
  uint64_t snapshots_done_ = 0;
  uint64_t snapshots_total_ = 0;
  uint64_t chunks_total_ = 0;
  uint64_t pending_logical_ = 0;

  std::atomic<uint64_t> chunks_done_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> decoded_bytes_{0};

  Mutex mu_;
  CondVar work_cv_;  // a new batch, or stop
  CondVar done_cv_;  // a worker went idle
  CondVar slot_cv_;  // a slot was released
  // The batch: written by the coordinator while every worker is idle, read
  // by workers after they saw the new generation under mu_.
  std::vector<Need> batch_;
  // outcomes_[i] is written by the one worker that took i (next_).
  std::vector<Outcome> outcomes_;
  std::atomic<size_t> next_{0};
  uint64_t generation_ CAIRN_GUARDED_BY(mu_) = 0;
  size_t idle_ CAIRN_GUARDED_BY(mu_) = 0;  // workers done with this generation
  bool stop_ CAIRN_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Slot>> free_slots_ CAIRN_GUARDED_BY(mu_);
  size_t slots_out_ CAIRN_GUARDED_BY(mu_) = 0;
  size_t slot_limit_ CAIRN_GUARDED_BY(mu_) = 1;

  std::vector<std::thread> workers_;  // last: started after everything above exists
};

}  // namespace

bool VerifiedRecently(const std::optional<VerifyState>& state, const VerifyOptions& options,
                      int64_t now) {
  if (!options.ignore_verified || !state.has_value() || state->state != "ok") return false;
  if (!options.outdated_after_days.has_value()) return true;
  const int64_t days = *options.outdated_after_days;
  if (days > std::numeric_limits<int64_t>::max() / 86400) return true;
  int64_t age;
  if (__builtin_sub_overflow(now, state->time, &age)) {
    // A time absurdly far in the past is outdated; one far in the future
    // (a clock that jumped back) counts as recent, like any future time.
    return state->time > now;
  }
  return age < days * 86400;
}

Result<VerifyResult> Verify(Datastore& store, const std::vector<SnapshotRef>& snapshots,
                            const VerifyOptions& options) {
  if (options.threads < 0) return Status::InvalidArgument("verify: threads must be >= 0");
  if (options.outdated_after_days.has_value() && *options.outdated_after_days < 0) {
    return Status::InvalidArgument("verify: outdated-after must not be negative");
  }
  std::vector<SnapshotRef> refs;
  std::set<SnapshotRef> seen;
  for (const SnapshotRef& ref : snapshots) {
    CAIRN_RETURN_IF_ERROR(ref.Validate());
    if (seen.insert(ref).second) refs.push_back(ref);
  }
  int threads = options.threads;
  if (threads == 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, kMaxThreads);
  Verifier v(store, options, threads);
  return v.Run(refs);
}

Result<std::vector<SnapshotRef>> SnapshotsToVerify(Datastore& store, const GroupRef& group) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<SnapshotRef> list, store.ListSnapshots(group));
  std::reverse(list.begin(), list.end());
  return list;
}

Result<std::vector<SnapshotRef>> SnapshotsToVerify(Datastore& store) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<GroupRef> groups, store.ListGroups());
  std::vector<SnapshotRef> out;
  for (const GroupRef& g : groups) {
    auto list = SnapshotsToVerify(store, g);
    if (!list.ok()) {
      if (list.status().IsNotFound()) continue;  // deleted meanwhile
      return list.status();
    }
    out.insert(out.end(), list->begin(), list->end());
  }
  return out;
}

nlohmann::json VerifyResult::ToJson() const {
  using nlohmann::json;
  json j = json::object();
  j["snapshots-checked"] = snapshots_checked;
  j["snapshots-ok"] = snapshots_ok;
  j["snapshots-failed"] = snapshots_failed;
  j["snapshots-skipped"] = snapshots_skipped;
  j["snapshots-vanished"] = snapshots_vanished;
  j["chunks-checked"] = chunks_checked;
  j["chunks-bad"] = chunks_bad;
  j["chunks-corrupt"] = chunks_corrupt;
  j["chunks-missing"] = chunks_missing;
  j["chunks-unreadable"] = chunks_unreadable;
  j["chunks-renamed"] = chunks_renamed;
  j["bytes-read"] = bytes_read;
  j["decoded-bytes"] = decoded_bytes;
  j["logical-bytes"] = logical_bytes;
  j["duration-ms"] = duration_ms;
  j["cancelled"] = cancelled;
  json f = json::array();
  for (const VerifyFailure& v : failed) {
    f.push_back({{"snapshot", v.ref.ToString()},
                 {"reasons", v.reasons},
                 {"state-written", v.state_written}});
  }
  j["failed"] = std::move(f);
  json b = json::array();
  for (const BadChunk& c : bad_chunks) {
    json used = json::array();
    for (const SnapshotRef& r : c.used_by) used.push_back(r.ToString());
    b.push_back({{"digest", c.digest.ToHex()},
                 {"kind", c.kind},
                 {"problem", c.problem},
                 {"renamed-to", c.renamed_to},
                 {"used-by", std::move(used)}});
  }
  j["bad-chunks"] = std::move(b);
  j["warnings"] = warnings;
  return j;
}

}  // namespace cairn::storage
