#include "storage/gc.h"

#include "storage/json_bounds.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string_view>
#include <thread>
#include <type_traits>

#include "storage/fixed_index.h"
#include "storage/manifest.h"

namespace cairn::storage {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kHexDigestSize = 2 * kDigestSize;
constexpr std::string_view kFidxSuffix = ".fidx";
constexpr std::string_view kBadSuffix = ".bad";
constexpr std::string_view kTempInfix = ".tmp.";
// Below this many entries the mark vector is never compacted: sorting tiny
// vectors over and over costs more than the memory it saves.
constexpr size_t kMinCompactEntries = size_t{1} << 20;
// How many unreadable snapshots the abort message names.
constexpr size_t kMaxNamedFailures = 10;
// File timestamps may lag the clock by one tick (coarse kernel time).
constexpr int64_t kTimestampSlackSeconds = 1;
constexpr int64_t kNanosPerSecond = 1000000000;
constexpr int kMaxSweepThreads = 16;

int64_t MillisSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The digest a chunk-folder entry belongs to, when its name starts with 64
// lowercase hex characters.
bool LeadingDigest(std::string_view name, Digest* out) {
  if (name.size() < kHexDigestSize) return false;
  auto d = Digest::FromHex(name.substr(0, kHexDigestSize));
  if (!d.ok()) return false;
  *out = *d;
  return true;
}

// "<64 hex>.<decimal>.bad", as ChunkStore::MarkBad names them.
bool IsBadTail(std::string_view tail) {
  if (tail.size() < 1 + 1 + kBadSuffix.size() || tail[0] != '.' || !EndsWith(tail, kBadSuffix)) {
    return false;
  }
  std::string_view n = tail.substr(1, tail.size() - 1 - kBadSuffix.size());
  return !n.empty() && std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Sorted, deduplicated 8-byte digest prefixes, compacted as they come in so
// memory follows the number of distinct digests, not of index entries.
class MarkSet {
 public:
  void Add(const Digest& d) {
    v_.push_back(d.Prefix64());
    if (v_.size() >= compact_at_) Compact();
  }
  void Compact() {
    std::sort(v_.begin(), v_.end());
    v_.erase(std::unique(v_.begin(), v_.end()), v_.end());
    compact_at_ = std::max(kMinCompactEntries, 2 * v_.size());
  }
  // REQUIRES: Compact() since the last Add().
  bool Contains(const Digest& d) const {
    return std::binary_search(v_.begin(), v_.end(), d.Prefix64());
  }
  size_t Size() const { return v_.size(); }

 private:
  std::vector<uint64_t> v_;
  size_t compact_at_ = kMinCompactEntries;
};

struct SnapshotFailure {
  SnapshotRef ref;
  Status status;
};

// Marks the digests of every index of one snapshot. NotFound when the
// snapshot is gone (deleted since it was listed): nothing to keep then.
Status MarkSnapshot(Datastore& store, const SnapshotRef& ref, MarkSet* marks, GcResult* result) {
  CAIRN_ASSIGN_OR_RETURN(Manifest manifest, store.ReadManifest(ref));
  for (const ArchiveInfo& archive : manifest.archives) {
    if (!EndsWith(archive.name, kFidxSuffix)) continue;
    CAIRN_ASSIGN_OR_RETURN(std::string path, store.ArchivePath(ref, archive.name));
    auto index = FixedIndex::Read(store.env(), path);
    if (!index.ok()) {
      if (index.status().IsNotFound()) {
        // Gone with its snapshot (a concurrent delete), or missing from a
        // snapshot that is still there: only the latter must abort.
        auto again = store.ReadManifest(ref);
        if (!again.ok() && again.status().IsNotFound()) return again.status();
        return Status::Corruption(archive.name + ": listed in the manifest but missing");
      }
      return index.status().WithContext(archive.name);
    }
    for (uint64_t i = 0; i < index->chunk_count(); ++i) marks->Add(index->digest(i));
    ++result->indexes;
    result->logical_bytes += index->image_size();
  }
  ++result->snapshots;
  return Status::OK();
}

Status MarkAll(Datastore& store, const GcOptions& options, const GcSessions& sessions,
               MarkSet* marks, GcResult* result) {
  for (const Digest& d : sessions.known) marks->Add(d);

  // Listed first so progress has a total; snapshots committed after this
  // listing belong to sessions the cutoff covers (see gc.h).
  CAIRN_ASSIGN_OR_RETURN(std::vector<GroupRef> groups, store.ListGroups());
  std::vector<SnapshotRef> snapshots;
  for (const GroupRef& g : groups) {
    auto list = store.ListSnapshots(g);
    if (!list.ok()) {
      if (list.status().IsNotFound()) continue;  // group deleted meanwhile
      return list.status().WithContext("listing " + g.ToString());
    }
    snapshots.insert(snapshots.end(), list->begin(), list->end());
  }

  std::vector<SnapshotFailure> failures;
  const uint64_t total = snapshots.size();
  for (uint64_t i = 0; i < total; ++i) {
    Status s = MarkSnapshot(store, snapshots[i], marks, result);
    if (!s.ok() && !s.IsNotFound()) failures.push_back({snapshots[i], s});
    if (options.progress && (i % 64 == 63)) options.progress(GcPhase::kMark, i + 1, total);
  }
  marks->Compact();
  result->marked = marks->Size();
  if (options.progress) options.progress(GcPhase::kMark, total, total);

  if (!failures.empty()) {
    std::string msg = "garbage collection aborted before the sweep, nothing was removed: " +
                      std::to_string(failures.size()) + " snapshot(s) cannot be read: ";
    for (size_t i = 0; i < failures.size() && i < kMaxNamedFailures; ++i) {
      if (i > 0) msg += "; ";
      msg += failures[i].ref.ToString() + " (" + failures[i].status.ToString() + ")";
    }
    if (failures.size() > kMaxNamedFailures) {
      msg += "; and " + std::to_string(failures.size() - kMaxNamedFailures) + " more";
    }
    const Status& first = failures.front().status;
    // Keep the first failure's code so callers can tell I/O from corruption;
    // NotFound would read as "store absent", so it becomes Corruption.
    if (first.IsIOError()) return Status::IOError(msg);
    return Status::Corruption(msg);
  }
  return Status::OK();
}

// One sweep over a prefix folder.
class Sweeper {
 public:
  Sweeper(ChunkStore* chunks, const MarkSet& marks, const GcOptions& options, int64_t cutoff,
          int64_t start, GcResult* result)
      : chunks_(chunks),
        env_(chunks->env()),
        marks_(marks),
        options_(options),
        cutoff_ns_(cutoff * kNanosPerSecond),
        temp_cutoff_ns_((start - std::max<int64_t>(0, options.temp_max_age_seconds)) *
                        kNanosPerSecond),
        result_(result) {}

  Status SweepPrefix(uint16_t prefix) {
    const std::string dir = chunks_->PrefixDir(prefix);
    Status s = env_->ListDir(dir, &names_);
    // Prefix folders may be made lazily, on the first insert.
    if (s.IsNotFound()) return Status::OK();
    CAIRN_RETURN_IF_ERROR(s);

    candidates_.clear();
    for (const std::string& name : names_) {
      Digest digest;
      if (!LeadingDigest(name, &digest)) continue;  // not ours: leave it alone
      const std::string_view tail = std::string_view{name}.substr(kHexDigestSize);
      if (tail.empty()) {
        if (marks_.Contains(digest)) {
          // Referenced: only read. Unlocked — a referenced chunk is never
          // deleted, so there is nothing to decide.
          CAIRN_RETURN_IF_ERROR(CountKept(JoinPath(dir, name)));
        } else {
          candidates_.push_back(name);
        }
      } else if (IsBadTail(tail)) {
        if (marks_.Contains(digest)) {
          auto info = env_->Stat(JoinPath(dir, name));
          if (!info.ok()) {
            if (info.status().IsNotFound()) continue;
            return info.status();
          }
          ++result_->bad_chunks;
          result_->bad_bytes += info->size;
        } else {
          candidates_.push_back(name);
        }
      } else if (tail.starts_with(kTempInfix)) {
        CAIRN_RETURN_IF_ERROR(MaybeRemoveTemp(JoinPath(dir, name)));
      }
    }
    if (candidates_.empty()) return Status::OK();

    // Decide and delete under the lock that Insert holds for "exists →
    // refresh", re-reading each mtime: a refresh either happened before
    // (seen here, chunk kept) or happens after the delete (finds no file).
    MutexLock lock(chunks_->PrefixMutex(prefix));
    for (const std::string& name : candidates_) {
      const std::string path = JoinPath(dir, name);
      auto info = env_->Stat(path);
      if (!info.ok()) {
        if (info.status().IsNotFound()) continue;
        return info.status();
      }
      if (info->is_dir) continue;
      const bool bad = name.size() != kHexDigestSize;
      if (bad) {
        // Nobody refreshes a bad copy, and an unreferenced one is of no use.
        CAIRN_RETURN_IF_ERROR(Remove(path));
        ++result_->bad_removed;
        continue;
      }
      if (info->mtime_ns < cutoff_ns_) {
        CAIRN_RETURN_IF_ERROR(Remove(path));
        ++result_->removed_chunks;
        result_->removed_bytes += info->size;
      } else {
        ++result_->pending_chunks;
        result_->pending_bytes += info->size;
        ++result_->disk_chunks;
        result_->disk_bytes += info->size;
      }
    }
    return Status::OK();
  }

 private:
  Status CountKept(const std::string& path) {
    auto info = env_->Stat(path);
    if (!info.ok()) {
      // Renamed aside by verify meanwhile, or removed by hand.
      if (info.status().IsNotFound()) return Status::OK();
      return info.status();
    }
    if (info->is_dir) return Status::OK();
    ++result_->disk_chunks;
    result_->disk_bytes += info->size;
    return Status::OK();
  }

  Status MaybeRemoveTemp(const std::string& path) {
    auto info = env_->Stat(path);
    if (!info.ok()) {
      // Renamed into place or removed by its writer meanwhile.
      if (info.status().IsNotFound()) return Status::OK();
      return info.status();
    }
    // A writer holds its temp file only for the length of one write; a day
    // old means its process died. Should one still be alive, its rename
    // fails and its insert reports the error: nothing is lost.
    if (info->is_dir || info->mtime_ns >= temp_cutoff_ns_) return Status::OK();
    CAIRN_RETURN_IF_ERROR(Remove(path));
    ++result_->temp_removed;
    return Status::OK();
  }

  Status Remove(const std::string& path) {
    if (options_.dry_run) return Status::OK();
    Status s = env_->RemoveFile(path);
    if (s.IsNotFound()) return Status::OK();
    return s;
  }

  ChunkStore* const chunks_;
  Env* const env_;
  const MarkSet& marks_;
  const GcOptions& options_;
  const int64_t cutoff_ns_;
  const int64_t temp_cutoff_ns_;
  GcResult* const result_;
  // Reused across folders.
  std::vector<std::string> names_;
  std::vector<std::string> candidates_;
};

// Sweeps every prefix folder on options.sweep_threads threads (the calling
// one among them): most of a sweep is waiting for the filesystem (unlink,
// stat), which overlaps well. Each thread holds at most one stripe lock at a
// time. The first error stops every thread after its current folder.
Status SweepAll(ChunkStore* chunks, const MarkSet& marks, const GcOptions& options,
                GcResult* result) {
  const int threads = std::clamp(options.sweep_threads, 1, kMaxSweepThreads);
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::atomic<bool> failed{false};
  std::vector<GcResult> parts(static_cast<size_t>(threads));
  std::vector<Status> errors(static_cast<size_t>(threads));
  auto work = [&](size_t t) {
    Sweeper sweeper(chunks, marks, options, result->cutoff, result->start_time, &parts[t]);
    size_t reported = 0;
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t p = next.fetch_add(1);
      if (p >= kChunkPrefixCount) break;
      Status s = sweeper.SweepPrefix(static_cast<uint16_t>(p));
      if (!s.ok()) {
        errors[t] = s;
        failed.store(true);
        break;
      }
      const size_t d = done.fetch_add(1) + 1;
      // Progress only from the calling thread, as the header promises.
      if (t == 0 && options.progress && d / 1024 > reported) {
        reported = d / 1024;
        options.progress(GcPhase::kSweep, d, kChunkPrefixCount);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, static_cast<size_t>(t));
  work(0);
  for (std::thread& th : pool) th.join();
  for (size_t t = 0; t < parts.size(); ++t) {
    CAIRN_RETURN_IF_ERROR(errors[t]);
    const GcResult& r = parts[t];
    result->disk_chunks += r.disk_chunks;
    result->disk_bytes += r.disk_bytes;
    result->removed_chunks += r.removed_chunks;
    result->removed_bytes += r.removed_bytes;
    result->pending_chunks += r.pending_chunks;
    result->pending_bytes += r.pending_bytes;
    result->bad_chunks += r.bad_chunks;
    result->bad_bytes += r.bad_bytes;
    result->bad_removed += r.bad_removed;
    result->temp_removed += r.temp_removed;
  }
  if (options.progress) options.progress(GcPhase::kSweep, kChunkPrefixCount, kChunkPrefixCount);
  return Status::OK();
}

template <typename T>
Status Get(const nlohmann::json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end()) return Status::Corruption(std::string("gc result: missing \"") + key + "\"");
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return Status::Corruption(std::string("gc result: bad \"") + key + "\"");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) return Status::Corruption(std::string("gc result: bad \"") + key + "\"");
  } else if constexpr (std::is_unsigned_v<T>) {
    if (!it->is_number_unsigned()) {
      return Status::Corruption(std::string("gc result: bad \"") + key + "\"");
    }
  } else {
    if (!it->is_number_integer()) {
      return Status::Corruption(std::string("gc result: bad \"") + key + "\"");
    }
  }
  *out = it->get<T>();
  return Status::OK();
}

}  // namespace

const char* GcPhaseName(GcPhase phase) {
  switch (phase) {
    case GcPhase::kMark:
      return "mark";
    case GcPhase::kSweep:
      return "sweep";
  }
  return "unknown";
}

// The one list of fields and their JSON names, for both directions.
#define CAIRN_GC_RESULT_FIELDS(X)     \
  X("start-time", start_time)         \
  X("cutoff", cutoff)                 \
  X("dry-run", dry_run)               \
  X("snapshots", snapshots)           \
  X("indexes", indexes)               \
  X("logical-bytes", logical_bytes)   \
  X("marked", marked)                 \
  X("disk-chunks", disk_chunks)       \
  X("disk-bytes", disk_bytes)         \
  X("removed-chunks", removed_chunks) \
  X("removed-bytes", removed_bytes)   \
  X("pending-chunks", pending_chunks) \
  X("pending-bytes", pending_bytes)   \
  X("bad-chunks", bad_chunks)         \
  X("bad-bytes", bad_bytes)           \
  X("bad-removed", bad_removed)       \
  X("temp-removed", temp_removed)     \
  X("dedup-factor", dedup_factor)     \
  X("duration-ms", duration_ms)       \
  X("mark-ms", mark_ms)               \
  X("sweep-ms", sweep_ms)

nlohmann::json GcResult::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
#define CAIRN_GC_TO_JSON(key, field) j[key] = field;
  CAIRN_GC_RESULT_FIELDS(CAIRN_GC_TO_JSON)
#undef CAIRN_GC_TO_JSON
  return j;
}

Result<GcResult> GcResult::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return Status::Corruption("gc result: not a JSON object");
  GcResult r;
#define CAIRN_GC_FROM_JSON(key, field) CAIRN_RETURN_IF_ERROR(Get(j, key, &r.field));
  CAIRN_GC_RESULT_FIELDS(CAIRN_GC_FROM_JSON)
#undef CAIRN_GC_FROM_JSON
  return r;
}

#undef CAIRN_GC_RESULT_FIELDS

Result<GcResult> CollectGarbage(Datastore& store, const GcOptions& options) {
  Env* env = store.env();
  const Clock::time_point t0 = Clock::now();
  auto gc_lock = env->LockFile(JoinPath(store.path(), kGcLockFile));
  if (!gc_lock.ok()) {
    if (gc_lock.status().IsBusy()) {
      return Status::Busy("garbage collection is already running on " + store.path());
    }
    return gc_lock.status();
  }

  GcResult result;
  result.dry_run = options.dry_run;
  // Start first, sessions second: a session missing from the answer started
  // after this instant, so everything it touches is newer than the cutoff.
  result.start_time = env->NowSeconds();
  GcSessions sessions;
  if (options.sessions) sessions = options.sessions();
  int64_t base = result.start_time;
  if (sessions.oldest_start > 0) base = std::min(base, sessions.oldest_start);
  result.cutoff = base - std::max<int64_t>(0, options.grace_seconds) - kTimestampSlackSeconds;

  MarkSet marks;
  CAIRN_RETURN_IF_ERROR(MarkAll(store, options, sessions, &marks, &result));
  // The session digests are in `marks` now.
  std::vector<Digest>().swap(sessions.known);
  result.mark_ms = MillisSince(t0);

  const Clock::time_point t1 = Clock::now();
  CAIRN_RETURN_IF_ERROR(SweepAll(store.chunk_store(), marks, options, &result));
  result.sweep_ms = MillisSince(t1);
  result.duration_ms = MillisSince(t0);
  if (result.disk_bytes > 0) {
    result.dedup_factor =
        static_cast<double>(result.logical_bytes) / static_cast<double>(result.disk_bytes);
  }
  if (!result.dry_run) {
    Status s = WriteFileAtomic(env, JoinPath(store.path(), kGcStatusFile),
                               result.ToJson().dump(2) + "\n", /*sync_dir=*/true);
    if (!s.ok()) return s.WithContext("GC finished but its status could not be kept");
  }
  return result;
}

Result<GcResult> LastGcResult(Datastore& store) {
  std::string text;
  Status s = store.env()->ReadFile(JoinPath(store.path(), kGcStatusFile), &text, 1 << 20);
  if (s.IsNotFound()) return Status::NotFound("no garbage collection has run on this datastore yet");
  CAIRN_RETURN_IF_ERROR(s);
  auto j = ParseJsonBounded(text, JsonLimits{8, 1 << 20});
  if (!j.ok()) return Status::Corruption("the last GC status is not JSON");
  return GcResult::FromJson(*j);
}

}  // namespace cairn::storage
