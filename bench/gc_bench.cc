// GC benchmark: garbage collection of a datastore with 1,000,000 small chunks
// of which 10% are garbage (no index references them, old mtime). Reports
// mark time, sweep time, total and peak RSS (VmHWM). Targets (issue 5):
// ≤ 60 s in total and ≤ 128 MiB RSS.
//
// A plain program (not Google Benchmark): one GC run takes tens of seconds
// and changes the dataset, so repetitions make no sense. Creating a million
// files takes minutes on a slow disk, so the dataset is made once and reused:
//
//   gc_bench generate DIR [--chunks N] [--garbage-percent P]
//   gc_bench restore DIR      puts back the garbage chunks a GC removed
//   gc_bench run DIR [--threads T]   runs one GC, prints the numbers and JSON
//
// bench/run_gc_bench.sh does all three as needed. Layout of the dataset:
// chunk i (0 ≤ i < N) has a 64-byte payload derived from i; chunks
// 0 .. N·(100−P)/100 − 1 are referenced by fixed indexes of 9,000 chunks each
// (one snapshot per index, ten snapshots per group), the rest by nothing.
// Every chunk's mtime is 30 days old, so only the marks keep chunks alive.
// Chunk files are written straight with the POSIX API and no fsync (the
// benchmark measures GC, not ingest).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "storage/blob.h"
#include "storage/datastore.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"
#include "storage/gc.h"
#include "storage/manifest.h"
#include "storage/names.h"

namespace cairn::storage {
namespace {

constexpr uint64_t kPayloadSize = 64;
constexpr uint64_t kChunksPerIndex = 9000;
constexpr uint64_t kSnapshotsPerGroup = 10;
constexpr char kParamsFile[] = ".gc-bench";
constexpr int64_t kOldAgeSeconds = 30 * 24 * 3600;

struct Params {
  uint64_t chunks = 1000000;
  uint64_t garbage_percent = 10;
  uint64_t referenced() const { return chunks * (100 - garbage_percent) / 100; }
};

std::string Payload(uint64_t i) {
  std::string s(kPayloadSize, '\0');
  std::snprintf(s.data(), s.size(), "cairn gc bench chunk %020llu",
                static_cast<unsigned long long>(i));
  return s;
}

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "gc_bench: " << what << "\n";
  std::exit(1);
}

void Check(const Status& s, const std::string& what) {
  if (!s.ok()) Die(what + ": " + s.ToString());
}

std::string ChunkFilePath(const std::string& dir, const Digest& d) {
  const std::string hex = d.ToHex();
  return dir + "/.chunks/" + hex.substr(0, 4) + "/" + hex;
}

// Writes chunk i unless it exists. Returns true when written.
bool WriteChunk(const std::string& dir, uint64_t i, int64_t mtime) {
  const std::string payload = Payload(i);
  const Digest d = Sha256(payload);
  const std::string blob = EncodeBlob(payload);
  const std::string path = ChunkFilePath(dir, d);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ENOENT) {
    // Prefix folders may be made lazily.
    ::mkdir(path.substr(0, path.rfind('/')).c_str(), 0755);
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  }
  if (fd < 0) {
    if (errno == EEXIST) return false;
    Die(path + ": " + std::strerror(errno));
  }
  if (::write(fd, blob.data(), blob.size()) != static_cast<ssize_t>(blob.size())) {
    Die(path + ": short write");
  }
  struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
  if (::futimens(fd, times) != 0) Die(path + ": futimens");
  ::close(fd);
  return true;
}

// Chunks [begin, end) on `threads` threads. Returns how many were written.
uint64_t WriteChunks(const std::string& dir, uint64_t begin, uint64_t end, int threads) {
  const int64_t mtime = Env::Default()->NowSeconds() - kOldAgeSeconds;
  std::atomic<uint64_t> next{begin};
  std::atomic<uint64_t> written{0};
  std::vector<std::thread> pool;
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (;;) {
        const uint64_t i = next.fetch_add(1);
        if (i >= end) break;
        if (WriteChunk(dir, i, mtime)) written.fetch_add(1);
        if (t == 0 && i % 50000 == 0) {
          const double s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          std::cerr << "  chunk " << i << " of " << end << " (" << s << " s)\n";
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  // Everything on disk before a GC runs: deleting files whose creation is
  // still in the page cache is cheaper than deleting those of a real store.
  ::sync();
  return written.load();
}

Params ReadParams(const std::string& dir) {
  std::ifstream in(JoinPath(dir, kParamsFile));
  Params p;
  if (!(in >> p.chunks >> p.garbage_percent)) Die(dir + ": no complete dataset (run generate)");
  return p;
}

void Generate(const std::string& dir, Params p, int threads) {
  Env* env = Env::Default();
  const auto t0 = std::chrono::steady_clock::now();
  Status s = Datastore::Create(env, dir);
  if (!s.ok() && !s.IsAlreadyExists()) Check(s, "create datastore");
  auto store = Datastore::Open(env, dir);
  Check(store.status(), "open datastore");

  // Snapshots first (few, through the real API), then the chunk files.
  const uint64_t referenced = p.referenced();
  const uint64_t indexes = (referenced + kChunksPerIndex - 1) / kChunksPerIndex;
  const int64_t base_time = env->NowSeconds() - kOldAgeSeconds;
  for (uint64_t k = 0; k < indexes; ++k) {
    const uint64_t first = k * kChunksPerIndex;
    const uint64_t n = std::min(kChunksPerIndex, referenced - first);
    SnapshotRef ref;
    ref.group.type = "vm";
    ref.group.id = std::to_string(100 + k / kSnapshotsPerGroup);
    ref.time = base_time + static_cast<int64_t>(k % kSnapshotsPerGroup) * 3600;
    if ((*store)->ReadManifest(ref).ok()) continue;  // an earlier, interrupted run
    FixedIndexWriter w(n * kPayloadSize, kPayloadSize);
    for (uint64_t i = 0; i < n; ++i) Check(w.Set(i, Sha256(Payload(first + i))), "index set");
    auto bytes = w.Finish(ref.time);
    Check(bytes.status(), "index finish");
    auto parsed = FixedIndex::Parse(*bytes);
    Check(parsed.status(), "index parse");
    auto staged = (*store)->Stage(ref);
    Check(staged.status(), "stage");
    Check((*staged)->WriteArchive("drive0.fidx", *bytes), "write index");
    Manifest m;
    m.backup_type = ref.group.type;
    m.backup_id = ref.group.id;
    m.backup_time = ref.time;
    m.archives.push_back({"drive0.fidx", parsed->image_size(), parsed->checksum()});
    Check((*staged)->Commit(m), "commit");
  }
  store->reset();
  std::cerr << "gc_bench: " << indexes << " snapshots; writing " << p.chunks << " chunks\n";
  const uint64_t written = WriteChunks(dir, 0, p.chunks, threads);
  std::ofstream out(JoinPath(dir, kParamsFile));
  out << p.chunks << " " << p.garbage_percent << "\n";
  out.close();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << "gc_bench: generated (" << written << " chunk files written) in " << secs << " s\n";
}

void Restore(const std::string& dir, int threads) {
  const Params p = ReadParams(dir);
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t written = WriteChunks(dir, p.referenced(), p.chunks, threads);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << "gc_bench: restored " << written << " garbage chunks in " << secs << " s\n";
}

uint64_t VmHwmKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

int Run(const std::string& dir, int threads) {
  const Params p = ReadParams(dir);
  auto store = Datastore::Open(Env::Default(), dir);
  Check(store.status(), "open datastore");
  GcOptions options;
  if (threads > 0) options.sweep_threads = threads;
  auto result = CollectGarbage(**store, options);
  Check(result.status(), "gc");
  const uint64_t hwm = VmHwmKiB();
  const GcResult& r = *result;
  std::printf("chunks %llu (garbage %llu), snapshots %llu\n",
              static_cast<unsigned long long>(p.chunks),
              static_cast<unsigned long long>(p.chunks - p.referenced()),
              static_cast<unsigned long long>(r.snapshots));
  std::printf("mark   %8.3f s\n", static_cast<double>(r.mark_ms) / 1000);
  std::printf("sweep  %8.3f s   (%d threads)\n", static_cast<double>(r.sweep_ms) / 1000,
              options.sweep_threads);
  std::printf("total  %8.3f s   (target <= 60 s)\n", static_cast<double>(r.duration_ms) / 1000);
  std::printf("VmHWM  %8.1f MiB (target <= 128 MiB)\n", static_cast<double>(hwm) / 1024);
  std::printf("removed %llu chunks, kept %llu, pending %llu\n",
              static_cast<unsigned long long>(r.removed_chunks),
              static_cast<unsigned long long>(r.disk_chunks),
              static_cast<unsigned long long>(r.pending_chunks));
  nlohmann::json j = r.ToJson();
  j["vm-hwm-kib"] = hwm;
  std::printf("%s\n", j.dump().c_str());
  // A run after a complete restore must remove exactly the garbage.
  if (r.disk_chunks != p.referenced()) {
    std::fprintf(stderr, "gc_bench: expected %llu chunks kept, got %llu\n",
                 static_cast<unsigned long long>(p.referenced()),
                 static_cast<unsigned long long>(r.disk_chunks));
    return 1;
  }
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: gc_bench generate|restore|run DIR [--chunks N] [--garbage-percent P] "
                 "[--threads T]\n";
    return 2;
  }
  const std::string cmd = argv[1];
  const std::string dir = argv[2];
  Params p;
  int threads = 0;  // generate/restore: 2; run: GcOptions' default
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--chunks") {
      p.chunks = v;
    } else if (flag == "--garbage-percent" && v <= 100) {
      p.garbage_percent = v;
    } else if (flag == "--threads" && v > 0 && v < 64) {
      threads = static_cast<int>(v);
    } else {
      Die("bad flag " + flag);
    }
  }
  if (cmd == "generate") {
    Generate(dir, p, threads > 0 ? threads : 2);
  } else if (cmd == "restore") {
    Restore(dir, threads > 0 ? threads : 2);
  } else if (cmd == "run") {
    return Run(dir, threads);
  } else {
    Die("unknown command " + cmd);
  }
  return 0;
}

}  // namespace
}  // namespace cairn::storage

int main(int argc, char** argv) { return cairn::storage::Main(argc, argv); }
