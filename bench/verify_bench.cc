// Verify benchmark (issue 6): verification of a whole datastore holding a
// 2 GiB mixed disk image in 3 snapshots, with all cores. Prints the MB/s of
// logical data (sum of the snapshots' image sizes / time) and peak RSS
// (VmHWM). Targets: >= 400 MB/s, <= 256 MiB.
//
//   verify_bench generate DIR   makes the datastore (once; bench/run_verify_bench.sh)
//   verify_bench run DIR [--threads T] [--buffer-mib M]
//   verify_bench export DIR N FILE   writes snapshot N's image (for restic)
//
// The image: 512 regions of 4 MiB, 40% all-zero, 30% random, 30% text-like
// (log lines, compresses ~4:1 with zstd-1), in a fixed shuffled order, every
// region's content distinct. Snapshot 2 changes 3% of the chunks of snapshot
// 1 (new content), snapshot 3 another 3% of snapshot 2's. Chunks are written
// with ChunkStore::InsertData (zstd-1, plain when that does not shrink),
// indexes with FixedIndexWriter, snapshots through Datastore staging and
// commit — the same code path as a backup, minus HTTP.
//
// Not a Google Benchmark binary (one long run, not a loop): it links the
// library only because every bench/*_bench.cc does.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_data.h"
#include "storage/blob.h"
#include "storage/datastore.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"
#include "storage/verify.h"

namespace cairn::storage {
namespace {

constexpr uint64_t kImageSize = uint64_t{2} << 30;
constexpr uint64_t kRegions = kImageSize / kChunkSize;  // 512
constexpr int kSnapshots = 3;
constexpr double kChangedFraction = 0.03;
constexpr int64_t kFirstTime = 1767225600;  // 2026-01-01T00:00:00Z

enum class Kind { kZero, kRandom, kText };

[[noreturn]] void Die(const std::string& msg) {
  std::cerr << "verify_bench: " << msg << "\n";
  std::exit(1);
}

void Check(const Status& s, const std::string& what) {
  if (!s.ok()) Die(what + ": " + s.ToString());
}

// 40% zero, 30% random, 30% text, shuffled with a fixed seed.
std::vector<Kind> Layout() {
  std::vector<Kind> kinds(kRegions, Kind::kText);
  const uint64_t zero = kRegions * 40 / 100, random = kRegions * 30 / 100;
  std::fill_n(kinds.begin(), zero, Kind::kZero);
  std::fill_n(kinds.begin() + static_cast<std::ptrdiff_t>(zero), random, Kind::kRandom);
  std::mt19937_64 rng(42);
  std::shuffle(kinds.begin(), kinds.end(), rng);
  return kinds;
}

std::string RandomRegion(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(kChunkSize, '\0');
  for (size_t i = 0; i < s.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  return s;
}

// Log-like text (bench/bench_data.h), distinct per seed.
std::string TextRegion(uint64_t seed) {
  return cairn::bench::LogText(kChunkSize, seed, 1714564800 + seed % 100000000);
}

std::string Region(Kind kind, uint64_t region, uint64_t version) {
  const uint64_t seed = region * 1000003 + version * 7919 + 1;
  switch (kind) {
    case Kind::kZero:
      return std::string(kChunkSize, '\0');
    case Kind::kRandom:
      return RandomRegion(seed);
    case Kind::kText:
      return TextRegion(seed);
  }
  return {};
}

void Generate(const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  Check(Datastore::Create(Env::Default(), dir), "create datastore");
  DatastoreOptions options;
  options.chunks.sync = false;  // one sync(1) at the end (the runner) instead
  auto store = Datastore::Open(Env::Default(), dir, options);
  Check(store.status(), "open datastore");
  ChunkStore* chunks = (*store)->chunk_store();

  const std::vector<Kind> kinds = Layout();
  std::vector<uint64_t> version(kRegions, 0);
  std::vector<Digest> digests(kRegions);
  std::mt19937_64 pick(7);
  uint64_t stored_blob_bytes = 0;
  for (int snap = 0; snap < kSnapshots; ++snap) {
    std::vector<uint64_t> todo;
    if (snap == 0) {
      for (uint64_t r = 0; r < kRegions; ++r) todo.push_back(r);
    } else {
      // A few % of the chunks get new content (a zero region may become data).
      const auto changes = static_cast<uint64_t>(static_cast<double>(kRegions) * kChangedFraction);
      std::vector<uint64_t> all(kRegions);
      for (uint64_t r = 0; r < kRegions; ++r) all[r] = r;
      std::shuffle(all.begin(), all.end(), pick);
      todo.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(changes));
      for (uint64_t r : todo) ++version[r];
    }
    // Two threads make and store the chunks.
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        for (size_t i = static_cast<size_t>(t); i < todo.size(); i += 2) {
          const uint64_t r = todo[i];
          Kind kind = kinds[r];
          if (version[r] > 0 && kind == Kind::kZero) kind = Kind::kText;
          const std::string data = Region(kind, r, version[r]);
          auto res = chunks->InsertData(data, &digests[r], nullptr);
          Check(res.status(), "insert chunk");
        }
      });
    }
    for (auto& th : threads) th.join();

    FixedIndexWriter w(kImageSize);
    for (uint64_t r = 0; r < kRegions; ++r) Check(w.Set(r, digests[r]), "index set");
    SnapshotRef ref;
    ref.group.type = "vm";
    ref.group.id = "100";
    ref.time = kFirstTime + snap * 86400;
    auto bytes = w.Finish(ref.time);
    Check(bytes.status(), "index finish");
    auto parsed = FixedIndex::Parse(*bytes);
    Check(parsed.status(), "index parse");
    auto staged = (*store)->Stage(ref);
    Check(staged.status(), "stage");
    Check((*staged)->WriteArchive("drive-scsi0.img.fidx", *bytes), "write index");
    const std::string conf = EncodeBlob("cores: 4\nmemory: 8192\nscsi0: local:vm-100-disk-0\n");
    Check((*staged)->WriteArchive("qemu-server.conf.blob", conf), "write blob");
    Manifest m;
    m.backup_type = "vm";
    m.backup_id = "100";
    m.backup_time = ref.time;
    m.archives.push_back({"drive-scsi0.img.fidx", kImageSize, parsed->checksum()});
    m.archives.push_back({"qemu-server.conf.blob", conf.size(), Sha256(conf)});
    Check((*staged)->Commit(m), "commit");
    std::cerr << "verify_bench: snapshot " << ref.ToString() << " (" << todo.size()
              << " chunks written)\n";
  }
  auto stats = chunks->Stats();
  Check(stats.status(), "stats");
  stored_blob_bytes = stats->bytes;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << "verify_bench: generated " << stats->chunks << " chunk files, "
            << stored_blob_bytes / (1 << 20) << " MiB on disk, in " << secs << " s\n";
}

uint64_t VmHwmKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

int Run(const std::string& dir, int threads, uint64_t buffer_mib) {
  auto store = Datastore::Open(Env::Default(), dir);
  Check(store.status(), "open datastore");
  auto refs = SnapshotsToVerify(**store);
  Check(refs.status(), "list snapshots");
  VerifyOptions options;
  options.threads = threads;
  if (buffer_mib > 0) options.max_buffer_bytes = buffer_mib << 20;
  options.task = "verify-bench";
  options.log = [](const std::string& line) { std::cerr << "verify: " << line << "\n"; };
  auto result = Verify(**store, *refs, options);
  Check(result.status(), "verify");
  const uint64_t hwm = VmHwmKiB();
  const VerifyResult& r = *result;
  const double secs = static_cast<double>(std::max<int64_t>(r.duration_ms, 1)) / 1000;
  const double mb = 1e6;
  const int used_threads =
      threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  std::printf("snapshots %llu (ok %llu, failed %llu), chunks checked %llu, bad %llu\n",
              static_cast<unsigned long long>(r.snapshots_checked),
              static_cast<unsigned long long>(r.snapshots_ok),
              static_cast<unsigned long long>(r.snapshots_failed),
              static_cast<unsigned long long>(r.chunks_checked),
              static_cast<unsigned long long>(r.chunks_bad));
  std::printf("logical  %8.1f MB   read %8.1f MB   decoded %8.1f MB\n",
              static_cast<double>(r.logical_bytes) / mb, static_cast<double>(r.bytes_read) / mb,
              static_cast<double>(r.decoded_bytes) / mb);
  std::printf("time     %8.3f s    (%d threads)\n", secs, used_threads);
  std::printf("logical  %8.0f MB/s (target >= 400 MB/s)\n",
              static_cast<double>(r.logical_bytes) / mb / secs);
  std::printf("read     %8.0f MB/s   decoded %8.0f MB/s\n",
              static_cast<double>(r.bytes_read) / mb / secs,
              static_cast<double>(r.decoded_bytes) / mb / secs);
  std::printf("VmHWM    %8.1f MiB  (target <= 256 MiB)\n", static_cast<double>(hwm) / 1024);
  nlohmann::json j = r.ToJson();
  j["vm-hwm-kib"] = hwm;
  j["threads"] = used_threads;
  std::printf("%s\n", j.dump().c_str());
  if (r.snapshots_ok != static_cast<uint64_t>(kSnapshots) || r.chunks_bad != 0) {
    std::fprintf(stderr, "verify_bench: expected %d ok snapshots and no bad chunk\n", kSnapshots);
    return 1;
  }
  return 0;
}

// Writes the image of the store's snapshot number `n` (0-based, oldest
// first) to `out`, read back through the chunk store: the same data for other
// tools (restic) to back up and check, for comparison.
int Export(const std::string& dir, int n, const std::string& out) {
  auto store = Datastore::Open(Env::Default(), dir);
  Check(store.status(), "open datastore");
  GroupRef group;
  group.type = "vm";
  group.id = "100";
  auto list = (*store)->ListSnapshots(group);
  Check(list.status(), "list snapshots");
  if (n < 0 || static_cast<size_t>(n) >= list->size()) Die("no such snapshot number");
  const SnapshotRef& ref = (*list)[static_cast<size_t>(n)];
  auto path = (*store)->ArchivePath(ref, "drive-scsi0.img.fidx");
  Check(path.status(), "archive path");
  auto index = FixedIndex::Read(Env::Default(), *path);
  Check(index.status(), "read index");
  std::ofstream f(out, std::ios::binary | std::ios::trunc);
  for (uint64_t i = 0; i < index->chunk_count(); ++i) {
    auto data = (*store)->chunk_store()->ReadChunk(index->digest(i));
    Check(data.status(), "read chunk");
    f.write(data->data(), static_cast<std::streamsize>(data->size()));
  }
  f.close();
  if (!f) Die("writing " + out + " failed");
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: verify_bench generate|run DIR [--threads T] [--buffer-mib M]\n"
                 "       verify_bench export DIR N FILE\n";
    return 2;
  }
  const std::string cmd = argv[1];
  const std::string dir = argv[2];
  if (cmd == "export") {
    if (argc != 5) Die("usage: verify_bench export DIR N FILE");
    return Export(dir, std::atoi(argv[3]), argv[4]);
  }
  int threads = 0;
  uint64_t buffer_mib = 0;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--threads" && v > 0 && v <= 256) {
      threads = static_cast<int>(v);
    } else if (flag == "--buffer-mib" && v > 0 && v < (uint64_t{1} << 20)) {
      buffer_mib = v;
    } else {
      Die("bad flag " + flag);
    }
  }
  if (cmd == "generate") {
    Generate(dir);
  } else if (cmd == "run") {
    return Run(dir, threads, buffer_mib);
  } else {
    Die("unknown command " + cmd);
  }
  return 0;
}

}  // namespace
}  // namespace cairn::storage

int main(int argc, char** argv) { return cairn::storage::Main(argc, argv); }
