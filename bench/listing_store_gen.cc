// Makes the datastore of the listing benchmark (issue 16): G groups vm/<id>
// with S snapshots each (default 600 × 1000), committed through the storage
// library exactly as a backup session commits them (Datastore::Stage,
// WriteArchive, Commit), so every snapshot lists, parses and verifies.
//
//   listing_store_gen DIR [--groups G] [--snapshots S] [--threads T]
//
// DIR must not exist, or be an empty datastore (as `cairn-server run` makes
// one). What each snapshot holds:
//   drive0.fidx   a 16 MiB image in four 4 MiB chunks, taken from eight
//                 shared log-text chunks (inserted once), so that the
//                 checksums vary between snapshots and verify has real work
//   index.json    client info like `cairn backup vm` writes; hourly times
//                 from 2025-01-01 on, each group a few seconds apart
//   unprotected   verify "ok" (85%), "failed" (3%), none (12%); protected
//                 every 100th; a note on every 20th
// Each group has an owner file (admin!default, the first admin token).
//
// Speed over durability: the Env below turns every fsync into nothing (the
// benchmark measures listing, not ingest), and one syncfs at the end writes
// everything out. Threads work on distinct groups; the Datastore serialises
// only the commit rename.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_data.h"
#include "storage/chunk_store.h"
#include "storage/datastore.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"
#include "storage/names.h"

namespace cairn::storage {
namespace {

constexpr int kSharedChunks = 8;
constexpr int kChunksPerImage = 4;
constexpr int64_t kFirstTime = 1735689600;  // 2025-01-01T00:00:00Z
constexpr char kOwner[] = "admin!default";

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "listing_store_gen: " << what << "\n";
  std::exit(1);
}

void Check(const Status& s, const std::string& what) {
  if (!s.ok()) Die(what + ": " + s.ToString());
}

// A WritableFile whose Sync does nothing.
class NoSyncFile : public WritableFile {
 public:
  explicit NoSyncFile(std::unique_ptr<WritableFile> f) : f_(std::move(f)) {}
  Status Append(std::string_view data) override { return f_->Append(data); }
  Status Sync() override { return Status::OK(); }
  Status Close() override { return f_->Close(); }

 private:
  std::unique_ptr<WritableFile> f_;
};

// The default Env without fsync of files or folders.
class NoSyncEnv : public EnvWrapper {
 public:
  NoSyncEnv() : EnvWrapper(Env::Default()) {}
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& p) override {
    CAIRN_ASSIGN_OR_RETURN(auto f, target()->NewWritableFile(p));
    return std::unique_ptr<WritableFile>(new NoSyncFile(std::move(f)));
  }
  Result<std::unique_ptr<WritableFile>> NewExclusiveFile(const std::string& p) override {
    CAIRN_ASSIGN_OR_RETURN(auto f, target()->NewExclusiveFile(p));
    return std::unique_ptr<WritableFile>(new NoSyncFile(std::move(f)));
  }
  Status SyncDir(const std::string&) override { return Status::OK(); }
};

struct Options {
  std::string dir;
  int groups = 600;
  int snapshots = 1000;
  int threads = 2;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> int {
      if (i + 1 >= argc) Die(a + " needs a value");
      return std::atoi(argv[++i]);
    };
    if (a == "--groups") {
      o.groups = value();
    } else if (a == "--snapshots") {
      o.snapshots = value();
    } else if (a == "--threads") {
      o.threads = value();
    } else if (!a.empty() && a[0] != '-' && o.dir.empty()) {
      o.dir = a;
    } else {
      Die("usage: listing_store_gen DIR [--groups G] [--snapshots S] [--threads T]");
    }
  }
  if (o.dir.empty() || o.groups < 1 || o.snapshots < 1 || o.threads < 1) {
    Die("usage: listing_store_gen DIR [--groups G] [--snapshots S] [--threads T]");
  }
  return o;
}

Manifest SnapshotManifest(const SnapshotRef& ref, uint64_t n, const FixedIndex& index) {
  Manifest m;
  m.backup_type = ref.group.type;
  m.backup_id = ref.group.id;
  m.backup_time = ref.time;
  m.archives.push_back({"drive0.fidx", index.image_size(), index.checksum()});
  m.client = {{"tool", "cairn"},
              {"consistency", n % 7 == 0 ? "crash" : "application"},
              {"disks",
               {{"drive0.fidx",
                 {{"node", "drive0-format"},
                  {"bitmap", "cairn-" + std::to_string(ref.time)},
                  {"persistent", true},
                  {"size", index.image_size()},
                  {"mode", n % 50 == 0 ? "full" : "incremental"}}}}}};
  const uint64_t v = n % 100;
  if (v < 85) {
    m.verify = VerifyState{"ok", ref.time + 1800, ""};
  } else if (v < 88) {
    m.verify = VerifyState{"failed", ref.time + 1800, ""};
  }
  m.is_protected = n % 100 == 42;
  if (n % 20 == 3) m.notes = "before upgrade of " + ref.group.id + ", keep a while";
  return m;
}

void MakeGroup(Datastore& store, const std::vector<Digest>& chunks, int g, int snapshots) {
  GroupRef group{{}, "vm", std::to_string(100 + g)};
  Check(store.SetOwner(group, kOwner), "owner of " + group.ToString());
  for (int s = 0; s < snapshots; ++s) {
    const uint64_t n = static_cast<uint64_t>(g) * 1000003 + static_cast<uint64_t>(s);
    SnapshotRef ref{group, kFirstTime + int64_t{s} * 3600 + g * 5};
    FixedIndexWriter w(uint64_t{kChunksPerImage} * kChunkSize);
    for (int c = 0; c < kChunksPerImage; ++c) {
      Check(w.Set(c, chunks[(n + static_cast<uint64_t>(c) * 3) % kSharedChunks]), "index");
    }
    auto bytes = w.Finish(ref.time);
    Check(bytes.status(), "index");
    auto index = FixedIndex::Parse(*bytes);
    Check(index.status(), "index");
    auto staged = store.Stage(ref);
    Check(staged.status(), "stage " + ref.ToString());
    Check((*staged)->WriteArchive("drive0.fidx", *bytes), "write " + ref.ToString());
    Check((*staged)->Commit(SnapshotManifest(ref, n, *index)), "commit " + ref.ToString());
  }
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  const auto start = std::chrono::steady_clock::now();
  static NoSyncEnv env;
  if (Status s = Datastore::Create(&env, o.dir); !s.ok() && !s.IsAlreadyExists()) {
    Check(s, "create " + o.dir);
  }
  DatastoreOptions opts;
  opts.chunks.sync = false;
  auto store = Datastore::Open(&env, o.dir, opts);
  Check(store.status(), "open " + o.dir);
  if (auto groups = (*store)->ListGroups(); !groups.ok() || !groups->empty()) {
    Die(o.dir + " already holds groups; give a new folder");
  }

  std::vector<Digest> chunks(kSharedChunks);
  for (int i = 0; i < kSharedChunks; ++i) {
    const std::string data = bench::LogText(kChunkSize, 1000 + static_cast<uint64_t>(i));
    auto r = (*store)->chunk_store()->InsertData(data, &chunks[i], nullptr);
    Check(r.status(), "chunk");
  }

  std::atomic<int> next{0}, done{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < o.threads; ++t) {
    workers.emplace_back([&] {
      for (int g = next++; g < o.groups; g = next++) {
        MakeGroup(**store, chunks, g, o.snapshots);
        const int d = ++done;
        if (d % 50 == 0 || d == o.groups) {
          const double secs =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          std::fprintf(stderr, "listing_store_gen: %d/%d groups, %.0f s\n", d, o.groups, secs);
        }
      }
    });
  }
  for (auto& w : workers) w.join();

  const auto written = std::chrono::steady_clock::now();
  // One syncfs for everything the Env did not fsync.
  const int fd = ::open(o.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::syncfs(fd) != 0) Die("syncfs " + o.dir);
  ::close(fd);
  const auto end = std::chrono::steady_clock::now();
  std::printf("generated %d groups x %d snapshots = %lld snapshots in %.1f s (+ %.1f s syncfs)\n",
              o.groups, o.snapshots, static_cast<long long>(o.groups) * o.snapshots,
              std::chrono::duration<double>(written - start).count(),
              std::chrono::duration<double>(end - written).count());
  return 0;
}

}  // namespace
}  // namespace cairn::storage

int main(int argc, char** argv) { return cairn::storage::Main(argc, argv); }
