// Storage microbenchmarks: SHA-256, zstd level 1, the blob codec and the chunk
// store, on 4 MiB chunks. Throughput is plaintext bytes per second of wall
// time (UseRealTime: fsync waits are not CPU time). bench/README.md explains
// each benchmark and records measured numbers; bench/run_storage_bench.sh
// builds, runs and compares against `openssl speed`.
//
// Content kinds, named in every benchmark that depends on content:
//   random — incompressible bytes (encrypted or already compressed data);
//   text   — log-like lines from a small vocabulary (zstd -1 shrinks it ~3.3x);
//   zero   — all zero bytes (unused disk space).
//
// The chunk-store benchmarks write into a datastore created under
// $CAIRN_BENCH_DIR (default /var/tmp), which must be a real disk filesystem
// for the fsync variants to mean anything; a tmpfs there is reported on
// stderr. The datastore is removed when the binary exits normally.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "bench/bench_data.h"
#include "storage/blob.h"
#include "storage/chunk_store.h"
#include "storage/crc32c.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "storage/status.h"

namespace cairn::storage {
namespace {

constexpr size_t kBufSize = kChunkSize;  // 4 MiB
constexpr double kCpuMinTime = 1.0;
constexpr double kInsertMinTime = 2.0;

enum class Content { kRandom, kText, kZero };

const char* ContentName(Content c) {
  switch (c) {
    case Content::kRandom:
      return "random";
    case Content::kText:
      return "text";
    case Content::kZero:
      return "zero";
  }
  return "?";
}

std::string MakeRandom(size_t n) {
  std::mt19937_64 rng(0x5eed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  return s;
}

// Log-like text (bench/bench_data.h).
std::string MakeText(size_t n) { return cairn::bench::LogText(n, 0x7e47); }

const std::string& Buffer(Content c) {
  static const std::string kRandom = MakeRandom(kBufSize);
  static const std::string kText = MakeText(kBufSize);
  static const std::string kZero(kBufSize, '\0');
  switch (c) {
    case Content::kRandom:
      return kRandom;
    case Content::kText:
      return kText;
    case Content::kZero:
      return kZero;
  }
  return kZero;
}

// Makes a copy of the content unique by overwriting its first 8 bytes with a
// process-wide counter, so every insert-new iteration stores a new chunk.
uint64_t NextStamp() {
  static uint64_t next = 1;
  return next++;
}
void Stamp(std::string* buf, uint64_t n) { std::memcpy(buf->data(), &n, sizeof(n)); }

void SetThroughput(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBufSize));
}

// --- CPU-only benchmarks ---

void BM_Sha256(benchmark::State& state, Content c) {
  const std::string& buf = Buffer(c);
  for (auto _ : state) {
    Digest d = Sha256(buf);
    benchmark::DoNotOptimize(d);
  }
  SetThroughput(state);
}

// The CRC-32C every blob carries (written by the client, checked by the
// server on upload and by every reader): three interleaved lanes since
// issue 11; one lane took 0.48 ms per 4 MiB here.
void BM_Crc32c(benchmark::State& state) {
  const std::string& buf = Buffer(Content::kRandom);
  for (auto _ : state) {
    uint32_t crc = Crc32c(buf);
    benchmark::DoNotOptimize(crc);
  }
  SetThroughput(state);
}

void BM_IsAllZero(benchmark::State& state, bool last_byte_set) {
  // The worst case for a chunk that is not zero: a full scan before the last
  // byte says no. Random or text data are rejected within the first bytes.
  std::string buf(kBufSize, '\0');
  if (last_byte_set) buf.back() = 1;
  for (auto _ : state) {
    bool zero = IsAllZero(buf);
    benchmark::DoNotOptimize(zero);
    if (zero == last_byte_set) {
      state.SkipWithError("IsAllZero gave the wrong answer");
      break;
    }
  }
  SetThroughput(state);
}

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// zstd at `level` (the blobs use 1, kBlobZstdLevel); other levels are
// measured on text only, for the choice in bench/README.md (issue 11).
void BM_ZstdCompress(benchmark::State& state, Content c, int level) {
  const std::string& buf = Buffer(c);
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  std::string out(ZSTD_compressBound(buf.size()), '\0');
  size_t n = 0;
  for (auto _ : state) {
    n = ZSTD_compressCCtx(cctx.get(), out.data(), out.size(), buf.data(), buf.size(), level);
    if (ZSTD_isError(n)) {
      state.SkipWithError(ZSTD_getErrorName(n));
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  SetThroughput(state);
  if (n > 0) state.counters["ratio"] = static_cast<double>(buf.size()) / static_cast<double>(n);
}

void BM_Zstd1Decompress(benchmark::State& state, Content c) {
  const std::string& buf = Buffer(c);
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  std::string frame(ZSTD_compressBound(buf.size()), '\0');
  size_t n = ZSTD_compressCCtx(cctx.get(), frame.data(), frame.size(), buf.data(), buf.size(), 1);
  if (ZSTD_isError(n)) {
    state.SkipWithError(ZSTD_getErrorName(n));
    return;
  }
  frame.resize(n);
  std::string out(buf.size(), '\0');
  for (auto _ : state) {
    size_t m = ZSTD_decompressDCtx(dctx.get(), out.data(), out.size(), frame.data(), frame.size());
    if (ZSTD_isError(m) || m != buf.size()) {
      state.SkipWithError("zstd decompression failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  SetThroughput(state);
  state.counters["ratio"] = static_cast<double>(buf.size()) / static_cast<double>(n);
}

void BM_BlobEncode(benchmark::State& state, Content c) {
  const std::string& buf = Buffer(c);
  size_t size = 0;
  for (auto _ : state) {
    std::string blob = EncodeBlob(buf);
    size = blob.size();
    benchmark::DoNotOptimize(blob.data());
  }
  SetThroughput(state);
  if (size > 0)
    state.counters["ratio"] = static_cast<double>(buf.size()) / static_cast<double>(size);
}

void BM_BlobDecode(benchmark::State& state, Content c) {
  const std::string& buf = Buffer(c);
  const std::string blob = EncodeBlob(buf);
  std::string out;
  for (auto _ : state) {
    Status s = DecodeBlob(blob, &out);
    if (!s.ok() || out.size() != buf.size()) {
      state.SkipWithError("DecodeBlob failed");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  SetThroughput(state);
}

// The client's path (client/backup_upload.cc): one BlobEncoder per worker,
// chunks in framed buffers; a full incompressible chunk is sealed in place.
void BM_BlobEncoderFramed(benchmark::State& state, Content c) {
  const std::string& buf = Buffer(c);
  std::string framed(BlobEncoder::kFrameOffset + buf.size(), '\0');
  framed.replace(BlobEncoder::kFrameOffset, buf.size(), buf);
  BlobEncoder enc;
  size_t size = 0;
  for (auto _ : state) {
    Result<const std::string*> blob = enc.EncodeFramed(&framed, buf.size());
    if (!blob.ok()) {
      state.SkipWithError("EncodeFramed failed");
      break;
    }
    size = (*blob)->size();
    benchmark::DoNotOptimize((*blob)->data());
  }
  SetThroughput(state);
  if (size > 0)
    state.counters["ratio"] = static_cast<double>(buf.size()) / static_cast<double>(size);
}

// The work the local insert path cannot avoid: the reference that
// InsertDataNew is compared against.
void BM_HashCompress(benchmark::State& state, Content c) {
  const std::string& buf = Buffer(c);
  for (auto _ : state) {
    Digest d = Sha256(buf);
    std::string blob = EncodeBlob(buf);
    benchmark::DoNotOptimize(d);
    benchmark::DoNotOptimize(blob.data());
  }
  SetThroughput(state);
}

// --- Chunk store ---

// Two datastores under one temp folder, each made once per process, each
// with one ChunkStore per sync setting:
//   steady — all 65536 prefix folders made up front (outside any timing), as
//            in a datastore that holds a few hundred thousand chunks: an
//            insert never makes a folder. The default for every benchmark.
//   fresh  — as ChunkStore::Create leaves it: every insert into a prefix not
//            used yet makes the folder (mkdir + fsync of .chunks).
enum class Layout { kSteady, kFresh };

struct BenchDatastores {
  std::string root;  // the temp folder; empty if mkdtemp failed
  Status root_status;
  struct One {
    bool made = false;
    Status status;
    std::unique_ptr<ChunkStore> stores[2];  // [0] sync off, [1] sync on
  } layouts[2];
  DirtyFolders dirty;
};

BenchDatastores* g_datastores = nullptr;

std::string BenchBaseDir() {
  const char* dir = std::getenv("CAIRN_BENCH_DIR");
  return dir != nullptr && *dir != '\0' ? dir : "/var/tmp";
}

// Flushes the datastore's filesystem, outside any timed region. Without it,
// the journal commits and writeback left over by making 65536 folders, or by
// deleting the previous run's chunks (synchronous discards on a volume
// mounted with -o discard), land in the next timed run.
void SyncFilesystem(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  if (syncfs(fd) != 0) std::perror("syncfs");
  close(fd);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

BenchDatastores* Datastores() {
  if (g_datastores != nullptr) return g_datastores;
  g_datastores = new BenchDatastores;
  std::string templ = JoinPath(BenchBaseDir(), "cairn-storage-bench.XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    g_datastores->root_status = Status::FromErrno("mkdtemp " + templ, errno);
    return g_datastores;
  }
  g_datastores->root = templ;
  struct statfs fs;
  if (statfs(templ.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
    std::fprintf(stderr,
                 "warning: %s is on tmpfs; the fsync_on numbers mean nothing. "
                 "Set CAIRN_BENCH_DIR to a folder on disk.\n",
                 templ.c_str());
  }
  return g_datastores;
}

Status MakeDatastore(Env* env, const std::string& dir, Layout layout, BenchDatastores::One* one) {
  CAIRN_RETURN_IF_ERROR(ChunkStore::Create(env, dir));
  for (int sync = 0; sync < 2; ++sync) {
    ChunkStoreOptions options;
    options.sync = sync == 1;
    CAIRN_ASSIGN_OR_RETURN(one->stores[sync], ChunkStore::Open(env, dir, options));
  }
  if (layout == Layout::kSteady) {
    const auto start = std::chrono::steady_clock::now();
    for (size_t p = 0; p < kChunkPrefixCount; ++p) {
      Status s = env->CreateDir(one->stores[0]->PrefixDir(static_cast<uint16_t>(p)));
      if (!s.ok() && !s.IsAlreadyExists()) return s;
    }
    const double made = SecondsSince(start);
    const auto sync_start = std::chrono::steady_clock::now();
    SyncFilesystem(dir);
    std::fprintf(stderr, "%s: 65536 prefix folders made in %.2f s (+ %.2f s syncfs)\n", dir.c_str(),
                 made, SecondsSince(sync_start));
  }
  return Status::OK();
}

void RemoveDatastores() {
  if (g_datastores == nullptr) return;
  for (auto& one : g_datastores->layouts) {
    one.stores[0].reset();
    one.stores[1].reset();
  }
  if (!g_datastores->root.empty()) {
    const auto start = std::chrono::steady_clock::now();
    Status s = RemoveAll(Env::Default(), g_datastores->root);
    if (!s.ok()) {
      std::fprintf(stderr, "removing %s: %s\n", g_datastores->root.c_str(), s.ToString().c_str());
    } else {
      std::fprintf(stderr, "%s removed in %.2f s\n", g_datastores->root.c_str(),
                   SecondsSince(start));
    }
  }
  delete g_datastores;
  g_datastores = nullptr;
}

// The store for `sync` in `layout`, made on first use; null after
// SkipWithError.
ChunkStore* StoreOrSkip(benchmark::State& state, bool sync, Layout layout = Layout::kSteady) {
  BenchDatastores* ds = Datastores();
  if (!ds->root_status.ok()) {
    state.SkipWithError(("datastore: " + ds->root_status.ToString()).c_str());
    return nullptr;
  }
  BenchDatastores::One& one = ds->layouts[layout == Layout::kSteady ? 0 : 1];
  if (!one.made) {
    one.made = true;
    one.status = MakeDatastore(Env::Default(),
                               JoinPath(ds->root, layout == Layout::kSteady ? "steady" : "fresh"),
                               layout, &one);
  }
  if (!one.status.ok()) {
    state.SkipWithError(("datastore: " + one.status.ToString()).c_str());
    return nullptr;
  }
  return one.stores[sync ? 1 : 0].get();
}

// Removes the chunks a run inserted, outside the timed loop: keeps the disk
// and the page cache from filling up across runs (chunks not yet written back
// never reach the disk), then flushes so the next run starts clean.
// With `remove_prefix_dirs` (fresh layout), the prefix folders they made go
// too, so that the next run makes them again.
void RemoveChunks(ChunkStore* store, const std::vector<Digest>& digests,
                  bool remove_prefix_dirs = false) {
  for (const Digest& d : digests) {
    Status s = store->env()->RemoveFile(store->ChunkPath(d));
    if (!s.ok() && !s.IsNotFound()) {
      std::fprintf(stderr, "removing chunk: %s\n", s.ToString().c_str());
    }
  }
  if (remove_prefix_dirs) {
    for (const Digest& d : digests) {
      (void)store->env()->RemoveDir(store->PrefixDir(DigestPrefix(d)));
    }
  }
  g_datastores->dirty.Take();
  SyncFilesystem(g_datastores->root);
}

// Keeps the page cache that an insert-new run writes into small and recycled,
// as on a server in steady state, whose page cache is full and whose new
// writes reuse pages reclaimed from old ones. Without this, each run grows the
// page cache by gigabytes; on a VM that hands free memory back to its host
// (free page reporting, as on the Firecracker VM of bench/README.md) the first
// write into such memory runs at ~400 MB/s instead of several GB/s, and that
// — not the insert path — is what the numbers would show. Chunks older than
// the last kKeep lose their pages: with fsync off they are deleted (their
// dirty pages are dropped before any block is allocated, so no writeback and
// no discard), with fsync on their clean pages are dropped with
// POSIX_FADV_DONTNEED (deleting them would free blocks, and the resulting
// discards would slow the journal commits that the next fsyncs wait for).
// CAIRN_BENCH_NO_RECYCLE=1 turns this off.
// Call Add() with the timer paused; Finish() after the loop.
class PageCacheRecycler {
 public:
  PageCacheRecycler(ChunkStore* store, bool sync, Layout layout = Layout::kSteady)
      : store_(store), sync_(sync), fresh_(layout == Layout::kFresh) {
    const char* off = std::getenv("CAIRN_BENCH_NO_RECYCLE");
    enabled_ = off == nullptr || std::string_view(off) != "1";
  }

  void Add(const Digest& d) {
    all_.push_back(d);
    if (!enabled_ || all_.size() <= kKeep) return;
    const Digest& old = all_[all_.size() - 1 - kKeep];
    const std::string path = store_->ChunkPath(old);
    if (sync_) {
      int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
      }
    } else {
      (void)store_->env()->RemoveFile(path);
    }
  }

  void Finish() { RemoveChunks(store_, all_, fresh_); }

 private:
  static constexpr size_t kKeep = 8;
  ChunkStore* const store_;
  const bool sync_;
  const bool fresh_;
  bool enabled_ = true;
  std::vector<Digest> all_;
};

// Local path, new chunk: hash + compress + write (+ fsync). In the fresh
// layout nearly every chunk is the first of its prefix folder and makes it.
void BM_InsertDataNew(benchmark::State& state, Content c, bool sync, Layout layout) {
  ChunkStore* store = StoreOrSkip(state, sync, layout);
  if (store == nullptr) return;
  std::string buf = Buffer(c);
  PageCacheRecycler recycler(store, sync, layout);
  for (auto _ : state) {
    Stamp(&buf, NextStamp());
    Digest d;
    auto r = store->InsertData(buf, &d, &g_datastores->dirty);
    if (!r.ok() || *r != InsertResult::kInserted) {
      state.SkipWithError(r.ok() ? "chunk existed already" : r.status().ToString().c_str());
      break;
    }
    state.PauseTiming();
    recycler.Add(d);
    state.ResumeTiming();
  }
  SetThroughput(state);
  recycler.Finish();
}

// Server path, new chunk: verify (CRC, decode, SHA-256) + write (+ fsync) of
// a blob encoded outside the timed region.
void BM_InsertBlobNew(benchmark::State& state, Content c, bool sync) {
  ChunkStore* store = StoreOrSkip(state, sync);
  if (store == nullptr) return;
  std::string buf = Buffer(c);
  PageCacheRecycler recycler(store, sync);
  Digest prev;
  bool have_prev = false;
  for (auto _ : state) {
    state.PauseTiming();
    if (have_prev) recycler.Add(prev);
    Stamp(&buf, NextStamp());
    const Digest d = Sha256(buf);
    const std::string blob = EncodeBlob(buf);
    state.ResumeTiming();
    auto r = store->InsertBlob(d, blob, buf.size(), &g_datastores->dirty);
    if (!r.ok() || *r != InsertResult::kInserted) {
      state.SkipWithError(r.ok() ? "chunk existed already" : r.status().ToString().c_str());
      break;
    }
    prev = d;
    have_prev = true;
  }
  SetThroughput(state);
  if (have_prev) recycler.Add(prev);
  recycler.Finish();
}

// The filesystem part of storing a new incompressible chunk, without any
// hashing or compressing: temp file in the chunk's prefix folder → write the
// 4 MiB blob → (fsync) → close → rename to the chunk name — the system calls
// ChunkStore makes, with the same page-cache recycling as the insert
// benchmarks. InsertDataNew/random minus HashCompress/random should come
// close to this.
void BM_WriteChunkFile(benchmark::State& state, bool sync) {
  ChunkStore* store = StoreOrSkip(state, sync);
  if (store == nullptr) return;
  Env* env = store->env();
  const std::string blob = EncodeBlob(Buffer(Content::kRandom));
  PageCacheRecycler recycler(store, sync);
  for (auto _ : state) {
    state.PauseTiming();
    const uint64_t n = NextStamp();
    const Digest d = Sha256(std::string_view(reinterpret_cast<const char*>(&n), sizeof(n)));
    state.ResumeTiming();
    const std::string path = store->ChunkPath(d);
    const std::string tmp = TempName(path);
    auto file = env->NewExclusiveFile(tmp);
    if (!file.ok()) {
      state.SkipWithError(file.status().ToString().c_str());
      break;
    }
    Status s = (*file)->Append(blob);
    if (s.ok() && sync) s = (*file)->Sync();
    Status c = (*file)->Close();
    if (s.ok()) s = c;
    if (s.ok()) s = env->RenameNoReplace(tmp, path);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    state.PauseTiming();
    recycler.Add(d);
    state.ResumeTiming();
  }
  SetThroughput(state);
  recycler.Finish();
}

// Local path, chunk already stored: hash + mtime refresh.
void BM_InsertDataExisting(benchmark::State& state, Content c) {
  ChunkStore* store = StoreOrSkip(state, false);
  if (store == nullptr) return;
  std::string buf = Buffer(c);
  Stamp(&buf, NextStamp());
  Digest first;
  auto r0 = store->InsertData(buf, &first, &g_datastores->dirty);
  if (!r0.ok()) {
    state.SkipWithError(r0.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    Digest d;
    auto r = store->InsertData(buf, &d, &g_datastores->dirty);
    if (!r.ok() || *r != InsertResult::kExisted || d != first) {
      state.SkipWithError(r.ok() ? "chunk was not recognised as existing"
                                 : r.status().ToString().c_str());
      break;
    }
  }
  SetThroughput(state);
  RemoveChunks(store, {first});
}

// Server path, chunk already stored: whatever InsertBlob does before it finds
// the chunk exists (verification, at least the CRC), + mtime refresh.
void BM_InsertBlobExisting(benchmark::State& state, Content c) {
  ChunkStore* store = StoreOrSkip(state, false);
  if (store == nullptr) return;
  std::string buf = Buffer(c);
  Stamp(&buf, NextStamp());
  const Digest d = Sha256(buf);
  const std::string blob = EncodeBlob(buf);
  auto r0 = store->InsertBlob(d, blob, buf.size(), &g_datastores->dirty);
  if (!r0.ok()) {
    state.SkipWithError(r0.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    auto r = store->InsertBlob(d, blob, buf.size(), &g_datastores->dirty);
    if (!r.ok() || *r != InsertResult::kExisted) {
      state.SkipWithError(r.ok() ? "chunk was not recognised as existing"
                                 : r.status().ToString().c_str());
      break;
    }
  }
  SetThroughput(state);
  RemoveChunks(store, {d});
}

// The all-zero chunk through the local path. After the first insert it exists,
// so this is zero detection + mtime refresh; it should run far above SHA-256
// speed, which shows the zeros are not hashed.
void BM_InsertDataZero(benchmark::State& state) {
  ChunkStore* store = StoreOrSkip(state, false);
  if (store == nullptr) return;
  const std::string& buf = Buffer(Content::kZero);
  const Digest zero = ZeroChunkDigest();
  Digest d;
  auto r0 = store->InsertData(buf, &d, &g_datastores->dirty);
  if (!r0.ok() || d != zero) {
    state.SkipWithError(r0.ok() ? "wrong digest for the zero chunk"
                                : r0.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    auto r = store->InsertData(buf, &d, &g_datastores->dirty);
    if (!r.ok() || *r != InsertResult::kExisted || d != zero) {
      state.SkipWithError(r.ok() ? "zero chunk not recognised" : r.status().ToString().c_str());
      break;
    }
  }
  SetThroughput(state);
  RemoveChunks(store, {zero});
}

void RegisterAll() {
  using benchmark::RegisterBenchmark;
  const Content kAll[] = {Content::kRandom, Content::kText, Content::kZero};
  auto cpu = [](benchmark::internal::Benchmark* b) {
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(kCpuMinTime);
  };
  auto io = [](benchmark::internal::Benchmark* b) {
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(kInsertMinTime);
  };
  auto name = [](const char* bm, Content c) { return std::string(bm) + "/" + ContentName(c); };

  for (Content c : kAll) cpu(RegisterBenchmark(name("Sha256", c).c_str(), BM_Sha256, c));
  cpu(RegisterBenchmark("Crc32c/random", BM_Crc32c));
  cpu(RegisterBenchmark("IsAllZero/zero", BM_IsAllZero, false));
  cpu(RegisterBenchmark("IsAllZero/zero_but_last_byte", BM_IsAllZero, true));
  for (Content c : kAll) {
    cpu(RegisterBenchmark(name("Zstd1Compress", c).c_str(), BM_ZstdCompress, c, 1));
  }
  for (int level : {3, -1, -3, -5, -10}) {
    const std::string n = name("ZstdLevelCompress", Content::kText) + "/" + std::to_string(level);
    cpu(RegisterBenchmark(n.c_str(), BM_ZstdCompress, Content::kText, level));
  }
  for (Content c : kAll) {
    cpu(RegisterBenchmark(name("Zstd1Decompress", c).c_str(), BM_Zstd1Decompress, c));
  }
  for (Content c : kAll) cpu(RegisterBenchmark(name("BlobEncode", c).c_str(), BM_BlobEncode, c));
  for (Content c : kAll) cpu(RegisterBenchmark(name("BlobDecode", c).c_str(), BM_BlobDecode, c));
  for (Content c : kAll) {
    cpu(RegisterBenchmark(name("BlobEncoderFramed", c).c_str(), BM_BlobEncoderFramed, c));
  }
  for (Content c : kAll) {
    cpu(RegisterBenchmark(name("HashCompress", c).c_str(), BM_HashCompress, c));
  }

  // Zero content is left out of the insert-new benchmarks: there is only one
  // zero chunk (see InsertDataZero).
  for (bool sync : {false, true}) {
    for (Content c : {Content::kRandom, Content::kText}) {
      std::string suffix = sync ? "/fsync_on" : "/fsync_off";
      io(RegisterBenchmark((name("InsertDataNew", c) + suffix).c_str(), BM_InsertDataNew, c, sync,
                           Layout::kSteady));
      io(RegisterBenchmark((name("InsertBlobNew", c) + suffix).c_str(), BM_InsertBlobNew, c, sync));
    }
  }
  for (bool sync : {false, true}) {
    io(RegisterBenchmark(
        sync ? "WriteChunkFile/random/fsync_on" : "WriteChunkFile/random/fsync_off",
        BM_WriteChunkFile, sync));
  }
  for (bool sync : {false, true}) {
    io(RegisterBenchmark(
        sync ? "InsertDataNewPrefix/random/fsync_on" : "InsertDataNewPrefix/random/fsync_off",
        BM_InsertDataNew, Content::kRandom, sync, Layout::kFresh));
  }
  cpu(RegisterBenchmark("InsertDataExisting/text", BM_InsertDataExisting, Content::kText));
  cpu(RegisterBenchmark("InsertBlobExisting/text", BM_InsertBlobExisting, Content::kText));
  cpu(RegisterBenchmark("InsertDataZero/zero", BM_InsertDataZero));
}

}  // namespace
}  // namespace cairn::storage

int main(int argc, char** argv) {
  cairn::storage::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("bench_dir", cairn::storage::BenchBaseDir());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  cairn::storage::RemoveDatastores();
  return 0;
}
