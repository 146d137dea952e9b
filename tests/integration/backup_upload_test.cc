// client/backup_upload against the real server: ArchiveWriter is fed the way
// QEMU 7.2's backup job feeds the NBD sink (client/INGEST.md §5: requests of
// up to 1 MiB on 64 KiB clusters, data and zero runs, out of order, across
// 4 MiB chunk edges, a short tail), then the snapshot is restored through a
// reader session and compared byte for byte.

#include "client/backup_upload.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <set>
#include <thread>

#include "storage/digest.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using client::ArchiveWriter;
using client::UploadOptions;
using client::UploadSession;
using nlohmann::json;
using storage::Digest;
using storage::kChunkSize;
using storage::Status;

constexpr uint64_t kCluster = 64 * 1024;  // QEMU's copy granularity
constexpr uint64_t kMaxRequest = 1 << 20; // QEMU merges clusters up to this

// A disk image and, per 64 KiB cluster, whether QEMU would send it as WRITE
// (allocated; its bytes may still be zero) or as WRITE_ZEROES.
struct Disk {
  std::string bytes;
  std::vector<bool> data;  // per cluster

  uint64_t size() const { return bytes.size(); }
  uint64_t chunks() const { return (bytes.size() + kChunkSize - 1) / kChunkSize; }
  std::string Chunk(uint64_t i) const {
    return bytes.substr(i * kChunkSize, std::min<uint64_t>(kChunkSize, size() - i * kChunkSize));
  }
  Digest ChunkDigest(uint64_t i) const { return storage::Sha256(Chunk(i)); }
  // Fills [begin, end) with random bytes sent as data.
  void Randomize(uint64_t begin, uint64_t end, std::mt19937* rng) {
    for (uint64_t i = begin; i < end; ++i) bytes[i] = static_cast<char>((*rng)());
    for (uint64_t c = begin / kCluster; c * kCluster < end; ++c) data[c] = true;
  }
};

// Chunks of six kinds in turn: zero and data clusters mixed (runs of odd
// length, so requests start off the 1 MiB grid and cross chunk edges),
// never written (zeros), random data, allocated but zero, text, half data.
Disk MakeDisk(uint64_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  Disk d;
  d.bytes.assign(size, '\0');
  d.data.assign((size + kCluster - 1) / kCluster, false);
  for (uint64_t c = 0; c < d.data.size(); ++c) {
    uint64_t begin = c * kCluster, end = std::min(size, begin + kCluster);
    uint64_t chunk = begin / kChunkSize;
    bool data = false;
    switch (chunk % 6) {
      case 0: data = c == 0 ? true : (rng() % 8 == 0 ? !d.data[c - 1] : d.data[c - 1]); break;
      case 1: data = false; break;
      case 2: case 3: case 4: data = true; break;
      default: data = (begin % kChunkSize) < kChunkSize / 2; break;
    }
    d.data[c] = data;
    if (!data || chunk % 6 == 3) continue;
    for (uint64_t i = begin; i < end; ++i) {
      d.bytes[i] = chunk % 6 == 4 ? "cairn upload test\n"[i % 18] : static_cast<char>(rng());
    }
    // A unique mark per chunk so text chunks do not all dedup to one.
    if (chunk % 6 == 4 && begin % kChunkSize == 0) d.bytes[begin] = static_cast<char>(seed + chunk);
  }
  return d;
}

struct Request {
  uint64_t offset;
  uint64_t length;
  bool zero;
};

// The requests QEMU would send for [begin, end): runs of clusters of one
// kind, each at most 1 MiB.
std::vector<Request> Requests(const Disk& d, uint64_t begin, uint64_t end) {
  std::vector<Request> out;
  uint64_t c = begin / kCluster;
  while (c * kCluster < end) {
    Request r{c * kCluster, 0, !d.data[c]};
    while (c * kCluster < end && d.data[c] == !r.zero && r.length < kMaxRequest) {
      r.length += std::min(kCluster, d.size() - c * kCluster);
      ++c;
    }
    out.push_back(r);
  }
  return out;
}

// QEMU's order: stretches in ascending order, then descending, the stretches
// themselves somewhat shuffled (parallel job workers).
void QemuOrder(std::vector<Request>* reqs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<Request>> blocks;
  for (size_t i = 0; i < reqs->size();) {
    size_t n = std::min<size_t>(reqs->size() - i, 4 + rng() % 9);
    blocks.emplace_back(reqs->begin() + i, reqs->begin() + i + n);
    if (blocks.size() % 2 == 0) std::reverse(blocks.back().begin(), blocks.back().end());
    i += n;
  }
  for (size_t i = 0; i + 1 < blocks.size(); i += 2) {
    if (rng() % 2) std::swap(blocks[i], blocks[i + 1]);
  }
  reqs->clear();
  for (const auto& b : blocks) reqs->insert(reqs->end(), b.begin(), b.end());
}

// Requests for whole chunks `chunks` (sorted); neighbours merge across edges.
std::vector<Request> ChunkRequests(const Disk& d, const std::vector<uint64_t>& chunks) {
  std::vector<Request> out;
  for (size_t i = 0; i < chunks.size();) {
    size_t j = i;
    while (j + 1 < chunks.size() && chunks[j + 1] == chunks[j] + 1) ++j;
    auto part = Requests(d, chunks[i] * kChunkSize, std::min(d.size(), (chunks[j] + 1) * kChunkSize));
    out.insert(out.end(), part.begin(), part.end());
    i = j + 1;
  }
  return out;
}

size_t CrossingEdges(const std::vector<Request>& reqs) {
  return std::count_if(reqs.begin(), reqs.end(), [](const Request& r) {
    return r.offset / kChunkSize != (r.offset + r.length - 1) / kChunkSize;
  });
}

Status Send(ArchiveWriter* w, const Disk& d, const std::vector<Request>& reqs) {
  for (const Request& r : reqs) {
    Status s = r.zero ? w->OnZero(r.offset, r.length)
                      : w->OnWrite(r.offset, std::string_view(d.bytes).substr(r.offset, r.length));
    if (!s.ok()) return s;
  }
  return w->OnFlush();
}

::testing::AssertionResult SameBytes(const std::string& want, const std::string& got) {
  if (want.size() != got.size()) {
    return ::testing::AssertionFailure() << "restored " << got.size() << " bytes, want " << want.size();
  }
  auto [a, b] = std::mismatch(want.begin(), want.end(), got.begin());
  if (a != want.end()) {
    return ::testing::AssertionFailure() << "first difference at byte " << (a - want.begin());
  }
  return ::testing::AssertionSuccess();
}

std::set<Digest> Digests(const Disk& d, const std::vector<uint64_t>& chunks) {
  std::set<Digest> out;
  for (uint64_t c : chunks) out.insert(d.ChunkDigest(c));
  return out;
}

std::vector<uint64_t> AllChunks(const Disk& d) {
  std::vector<uint64_t> v(d.chunks());
  for (uint64_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

class BackupUploadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    repo_.host = "127.0.0.1";
    repo_.port = server_->port();
    repo_.store = "default";
    repo_.token = server_->AdminToken();
    for (char c : server_->fingerprint()) {
      if (c != ':') repo_.fingerprint += c;
    }
  }

  std::unique_ptr<UploadSession> Start(const std::string& group, int64_t time,
                                       const UploadOptions& options = {}) {
    auto s = UploadSession::Start(repo_, group, time, options);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  // A whole backup of `d` as archive disk0.fidx; returns the snapshot name.
  std::string Backup(const std::string& group, int64_t time, const Disk& d, uint32_t seed) {
    auto s = Start(group, time);
    if (!s) return "";
    auto w = s->OpenArchive("disk0.fidx", d.size(), false);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    if (!w.ok()) return "";
    auto reqs = Requests(d, 0, d.size());
    QemuOrder(&reqs, seed);
    EXPECT_TRUE(Send(*w, d, reqs).ok());
    EXPECT_TRUE((*w)->Close().ok()) << s->error().ToString();
    auto fin = s->Finish({{"test", true}});
    EXPECT_TRUE(fin.ok()) << fin.status().ToString();
    return fin.ok() ? (*fin)["snapshot"].get<std::string>() : "";
  }

  size_t SnapshotCount(const std::string& group) {
    auto r = admin_->Get("/api/v1/datastores/default/snapshots?group=" + Q(group));
    EXPECT_TRUE(r.status == 200 || r.status == 404) << r.status << " " << r.body;
    return r.status == 200 ? r.Json().size() : 0;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  client::Repository repo_;
};

TEST_F(BackupUploadTest, FullBackupRestoresByteForByte) {
  // 17 chunks and a 1536-byte tail (INGEST.md: the tail comes as one short request).
  Disk d = MakeDisk(16 * kChunkSize + 1536, 7);
  auto reqs = Requests(d, 0, d.size());
  QemuOrder(&reqs, 1);
  ASSERT_GT(CrossingEdges(reqs), 0u) << "the test must send requests across chunk edges";
  ASSERT_FALSE(std::is_sorted(reqs.begin(), reqs.end(),
                              [](const Request& a, const Request& b) { return a.offset < b.offset; }));
  EXPECT_TRUE(std::any_of(reqs.begin(), reqs.end(), [&](const Request& r) {
    return r.offset + r.length == d.size() && r.length % kCluster == 1536;
  }));

  auto s = Start("vm/100", 1800000000);
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->start_info()["previous"].is_null());
  auto w = s->OpenArchive("disk0.fidx", d.size(), false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->name(), "disk0.fidx");
  EXPECT_EQ((*w)->image_size(), d.size());
  EXPECT_FALSE((*w)->incremental());
  ASSERT_TRUE(Send(*w, d, reqs).ok()) << s->error().ToString();
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish({{"tool", "backup_upload_test"}});
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_TRUE(s->error().ok());

  const auto& st = s->stats();
  std::set<Digest> distinct = Digests(d, AllChunks(d));
  EXPECT_EQ(st.bytes_received, d.size());
  EXPECT_EQ(st.chunks_dirty, d.chunks());
  EXPECT_EQ(st.chunks_uploaded, distinct.size());  // the zero chunk once, each other once
  EXPECT_EQ(st.chunks_known, d.chunks() - distinct.size());
  EXPECT_GE(st.chunks_zero, 3u);  // never written, and allocated but zero
  EXPECT_EQ(st.chunks_reused, 0u);
  EXPECT_EQ((*fin)["stats"]["chunks-uploaded"], distinct.size());
  EXPECT_EQ((*fin)["stats"]["bytes-uploaded"], st.bytes_uploaded.load());
  EXPECT_LT(st.bytes_uploaded, d.size());  // zero and text chunks compress

  std::string snapshot = (*fin)["snapshot"];
  EXPECT_EQ(snapshot, "vm/100/2027-01-15T08:00:00Z");
  EXPECT_TRUE(SameBytes(d.bytes, Restore(*admin_, snapshot, "disk0.fidx")));
}

TEST_F(BackupUploadTest, IncrementalSendsOnlyDirtyChunks) {
  Disk d = MakeDisk(12 * kChunkSize + 4096, 11);
  std::string first = Backup("vm/101", 1800000000, d, 2);
  ASSERT_NE(first, "");

  // Guest writes: chunk 2 rewritten, a write across the 5|6 edge, the tail,
  // and chunk 9 "dirty" but rewritten with what it held (same digest).
  Disk d2 = d;
  std::mt19937 rng(99);
  d2.Randomize(2 * kChunkSize, 3 * kChunkSize, &rng);
  d2.Randomize(6 * kChunkSize - 3 * kCluster, 6 * kChunkSize + 2 * kCluster, &rng);
  d2.Randomize(12 * kChunkSize, 12 * kChunkSize + 100, &rng);
  std::vector<uint64_t> dirty = {2, 5, 6, 9, 12};
  auto reqs = ChunkRequests(d2, dirty);
  QemuOrder(&reqs, 3);
  ASSERT_GT(CrossingEdges(reqs), 0u);

  auto s = Start("vm/101", 1800000100);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->start_info()["previous"]["snapshot"], first);
  auto w = s->OpenArchive("disk0.fidx", d2.size(), true);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE((*w)->incremental());
  ASSERT_TRUE(Send(*w, d2, reqs).ok()) << s->error().ToString();
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();

  std::set<Digest> before = Digests(d, AllChunks(d));
  std::set<Digest> sent = Digests(d2, dirty);
  size_t fresh = std::count_if(sent.begin(), sent.end(), [&](const Digest& x) { return !before.contains(x); });
  EXPECT_EQ(fresh, 4u);  // chunk 9 is unchanged
  const auto& st = s->stats();
  EXPECT_EQ(st.chunks_dirty, dirty.size());
  EXPECT_EQ(st.chunks_uploaded, fresh);
  EXPECT_EQ(st.chunks_known, dirty.size() - fresh);
  EXPECT_EQ(st.chunks_reused, d2.chunks() - dirty.size());
  uint64_t dirty_bytes = 4 * kChunkSize + 4096;
  EXPECT_EQ(st.bytes_received, dirty_bytes);
  auto server = s->ServerStats();
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ((*server)["chunks-uploaded"], fresh) << server->dump();
  EXPECT_EQ((*server)["bytes-uploaded"], st.bytes_uploaded.load());
  EXPECT_EQ((*server)["archives"], 1);

  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  std::string second = (*fin)["snapshot"];
  EXPECT_TRUE(SameBytes(d2.bytes, Restore(*admin_, second, "disk0.fidx")));
  EXPECT_TRUE(SameBytes(d.bytes, Restore(*admin_, first, "disk0.fidx")));
}

TEST_F(BackupUploadTest, FullWithPreviousSnapshotUploadsOnlyMissingChunks) {
  Disk d = MakeDisk(10 * kChunkSize + 512, 21);
  ASSERT_NE(Backup("vm/102", 1800000000, d, 4), "");

  Disk d2 = d;
  std::mt19937 rng(5);
  d2.Randomize(3 * kChunkSize + kCluster, 3 * kChunkSize + 2 * kCluster, &rng);
  d2.Randomize(8 * kChunkSize, 9 * kChunkSize, &rng);
  auto s = Start("vm/102", 1800000100);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", d2.size(), false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto reqs = Requests(d2, 0, d2.size());
  QemuOrder(&reqs, 6);
  ASSERT_TRUE(Send(*w, d2, reqs).ok()) << s->error().ToString();
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();

  const auto& st = s->stats();
  EXPECT_EQ(st.chunks_dirty, d2.chunks());
  EXPECT_EQ(st.chunks_uploaded, 2u);
  EXPECT_EQ(st.chunks_known, d2.chunks() - 2);
  EXPECT_EQ((*fin)["stats"]["chunks-uploaded"], 2);
  EXPECT_TRUE(SameBytes(d2.bytes, Restore(*admin_, (*fin)["snapshot"], "disk0.fidx")));
}

TEST_F(BackupUploadTest, IncompleteArchivesFailAndCommitNothing) {
  Disk d = MakeDisk(6 * kChunkSize, 31);
  auto reqs = Requests(d, 0, d.size());
  {
    // Full: one request never arrives.
    auto s = Start("vm/103", 1800000000);
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", d.size(), false);
    ASSERT_TRUE(w.ok());
    std::vector<Request> some(reqs.begin(), reqs.end());
    some.erase(some.begin() + static_cast<long>(some.size() / 2));
    ASSERT_TRUE(Send(*w, d, some).ok());
    Status closed = (*w)->Close();
    EXPECT_TRUE(closed.IsInvalidArgument()) << closed.ToString();
    EXPECT_NE(closed.message().find("partly received"), std::string::npos) << closed.ToString();
    EXPECT_FALSE(s->Finish(json::object()).ok());
    EXPECT_FALSE(s->error().ok());
  }
  {
    // Full: a whole chunk never arrives.
    auto s = Start("vm/103", 1800000000);
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", d.size(), false);
    ASSERT_TRUE(w.ok());
    std::vector<uint64_t> chunks = {0, 1, 2, 4, 5};
    ASSERT_TRUE(Send(*w, d, ChunkRequests(d, chunks)).ok());
    Status closed = (*w)->Close();
    EXPECT_TRUE(closed.IsInvalidArgument()) << closed.ToString();
    EXPECT_NE(closed.message().find("first chunk 3"), std::string::npos) << closed.ToString();
    EXPECT_FALSE(s->Finish(json::object()).ok());
  }
  EXPECT_EQ(SnapshotCount("vm/103"), 0u);
  std::string first = Backup("vm/103", 1800000000, d, 7);
  ASSERT_NE(first, "");
  {
    // Incremental: a dirty chunk only partly sent.
    auto s = Start("vm/103", 1800000100);
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", d.size(), true);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE((*w)->OnZero(2 * kChunkSize, kChunkSize / 2).ok());
    Status closed = (*w)->Close();
    EXPECT_TRUE(closed.IsInvalidArgument()) << closed.ToString();
    EXPECT_FALSE(s->Finish(json::object()).ok());
  }
  EXPECT_EQ(SnapshotCount("vm/103"), 1u);
  // After all that the group takes a backup again.
  EXPECT_NE(Backup("vm/103", 1800000200, d, 8), "");
  EXPECT_EQ(SnapshotCount("vm/103"), 2u);
}

TEST_F(BackupUploadTest, IncrementalNeedsTheSameArchiveAndSize) {
  Disk d = MakeDisk(3 * kChunkSize + 4096, 41);
  {
    // No previous snapshot at all.
    auto s = Start("vm/104", 1800000000);
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", d.size(), true);
    EXPECT_TRUE(w.status().IsConflict()) << w.status().ToString();
  }
  ASSERT_NE(Backup("vm/104", 1800000000, d, 9), "");

  auto s = Start("vm/104", 1800000100);
  ASSERT_NE(s, nullptr);
  auto resized = s->OpenArchive("disk0.fidx", d.size() + kChunkSize, true);
  EXPECT_TRUE(resized.status().IsConflict()) << resized.status().ToString();
  EXPECT_NE(resized.status().message().find("image size"), std::string::npos);
  auto other = s->OpenArchive("disk1.fidx", d.size(), true);
  EXPECT_TRUE(other.status().IsConflict()) << other.status().ToString();
  EXPECT_TRUE(s->OpenArchive("disk0", d.size(), false).status().IsInvalidArgument());
  EXPECT_TRUE(s->error().ok()) << "refusing to open must not break the session";

  // The caller's fallback: the resized disk in full.
  Disk big = d;
  big.bytes.append(kChunkSize, '\0');
  big.data.resize((big.size() + kCluster - 1) / kCluster, false);
  std::mt19937 rng(3);
  big.Randomize(d.size(), d.size() + 2 * kCluster, &rng);
  auto w = s->OpenArchive("disk0.fidx", big.size(), false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE(s->OpenArchive("disk0.fidx", big.size(), false).status().IsAlreadyExists());
  auto reqs = Requests(big, 0, big.size());
  QemuOrder(&reqs, 10);
  ASSERT_TRUE(Send(*w, big, reqs).ok()) << s->error().ToString();
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  std::set<Digest> known = Digests(d, AllChunks(d)), fresh;
  for (uint64_t c = 0; c < big.chunks(); ++c) {
    if (!known.contains(big.ChunkDigest(c))) fresh.insert(big.ChunkDigest(c));
  }
  EXPECT_GE(fresh.size(), 1u);
  EXPECT_EQ(s->stats().chunks_uploaded, fresh.size()) << "the first three chunks are known";
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_TRUE(SameBytes(big.bytes, Restore(*admin_, (*fin)["snapshot"], "disk0.fidx")));
}

TEST_F(BackupUploadTest, DoubleCoverageIsAnError) {
  const std::string mib(kMaxRequest, 'x');
  int64_t time = 1800000000;
  auto expect_overlap = [&](const std::function<Status(ArchiveWriter*)>& feed, uint64_t size) {
    auto s = Start("vm/105", time++);
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", size, false);
    ASSERT_TRUE(w.ok());
    Status st = feed(*w);
    EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
    EXPECT_TRUE(st.message().find("twice") != std::string::npos ||
                st.message().find("overlap") != std::string::npos)
        << st.ToString();
    EXPECT_EQ(s->error().ToString(), st.ToString());
    // The session is failed: later requests fail too (QEMU's job fails).
    EXPECT_FALSE((*w)->OnZero(size - 1, 1).ok());
    EXPECT_FALSE((*w)->OnFlush().ok());
    EXPECT_FALSE((*w)->Close().ok());
  };
  // The same 1 MiB twice, in a chunk still open.
  expect_overlap([&](ArchiveWriter* w) -> Status {
    CAIRN_RETURN_IF_ERROR(w->OnWrite(0, mib));
    return w->OnWrite(0, mib);
  }, 2 * kChunkSize);
  // Zeros partly over data.
  expect_overlap([&](ArchiveWriter* w) -> Status {
    CAIRN_RETURN_IF_ERROR(w->OnWrite(kMaxRequest, mib));
    return w->OnZero(kMaxRequest + kMaxRequest / 2, kMaxRequest);
  }, 2 * kChunkSize);
  // A request into a chunk that was complete (and is uploaded by now).
  expect_overlap([&](ArchiveWriter* w) -> Status {
    CAIRN_RETURN_IF_ERROR(w->OnZero(0, kChunkSize));
    CAIRN_RETURN_IF_ERROR(w->OnWrite(kChunkSize, mib));
    return w->OnWrite(kChunkSize - 4096, std::string(8192, 'y'));
  }, 3 * kChunkSize);
  // Sub-cluster precision on a short 1536-byte tail.
  expect_overlap([&](ArchiveWriter* w) -> Status {
    CAIRN_RETURN_IF_ERROR(w->OnWrite(kChunkSize, std::string(512, 'a')));
    CAIRN_RETURN_IF_ERROR(w->OnZero(kChunkSize + 1024, 512));
    return w->OnZero(kChunkSize + 1023, 2);
  }, kChunkSize + 1536);
  EXPECT_EQ(SnapshotCount("vm/105"), 0u);

  // Gaps of a few bytes are fine, and filled later the tail completes.
  auto s = Start("vm/105", time++);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", kChunkSize + 1536, false);
  ASSERT_TRUE(w.ok());
  std::string tail = std::string(512, 'a') + std::string(511, '\0') + "b" + std::string(512, 'c');
  std::string img = std::string(kChunkSize, '\0') + tail;
  ASSERT_TRUE((*w)->OnWrite(kChunkSize, tail.substr(0, 512)).ok());
  ASSERT_TRUE((*w)->OnWrite(kChunkSize + 1024, tail.substr(1024)).ok());
  ASSERT_TRUE((*w)->OnZero(kChunkSize + 512, 511).ok());
  ASSERT_TRUE((*w)->OnWrite(kChunkSize + 1023, "b").ok());
  ASSERT_TRUE((*w)->OnZero(0, kChunkSize).ok());
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_TRUE(SameBytes(img, Restore(*admin_, (*fin)["snapshot"], "disk0.fidx")));
}

TEST_F(BackupUploadTest, BufferExhaustionFailsInsteadOfHanging) {
  UploadOptions options;
  options.max_buffers = 4;
  auto s = Start("vm/106", 1800000000, options);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", 16 * kChunkSize, false);
  ASSERT_TRUE(w.ok());
  // Zeros take no buffer: many chunks may be open with zeros only.
  for (uint64_t c = 0; c < 16; ++c) ASSERT_TRUE((*w)->OnZero(c * kChunkSize + kCluster, kCluster).ok());
  // Data does: four chunks get one each; the fifth cannot, and waiting could
  // not help (the requests that would complete them are behind this one).
  const std::string piece(kCluster, 'd');
  for (uint64_t c = 0; c < 4; ++c) ASSERT_TRUE((*w)->OnWrite(c * kChunkSize, piece).ok());
  auto fifth = std::async(std::launch::async, [&] { return (*w)->OnWrite(4 * kChunkSize, piece); });
  ASSERT_EQ(fifth.wait_for(std::chrono::seconds(60)), std::future_status::ready) << "hangs";
  Status st = fifth.get();
  EXPECT_TRUE(st.IsIOError()) << st.ToString();
  EXPECT_NE(st.message().find("max_buffers"), std::string::npos) << st.ToString();
  EXPECT_FALSE(s->error().ok());
}

TEST_F(BackupUploadTest, OneBufferIsEnoughInOrder) {
  // Back-pressure, not failure: with a single buffer, each chunk waits until
  // the one before it has been sent.
  UploadOptions options;
  options.max_buffers = 1;
  options.connections = 2;
  Disk d = MakeDisk(8 * kChunkSize + 65536, 51);
  for (size_t c = 0; c < d.data.size(); ++c) d.data[c] = true;  // all as WRITE
  auto s = Start("vm/107", 1800000000, options);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", d.size(), false);
  ASSERT_TRUE(w.ok());
  auto reqs = ChunkRequests(d, AllChunks(d));
  // In order within each chunk, so at most one chunk is partly filled.
  auto send = std::async(std::launch::async, [&] { return Send(*w, d, reqs); });
  ASSERT_EQ(send.wait_for(std::chrono::seconds(120)), std::future_status::ready) << "hangs";
  ASSERT_TRUE(send.get().ok()) << s->error().ToString();
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_TRUE(SameBytes(d.bytes, Restore(*admin_, (*fin)["snapshot"], "disk0.fidx")));
}

TEST_F(BackupUploadTest, ZerosBeforeDataInARecycledBuffer) {
  // One buffer: chunk 0's data goes through it first, so chunk 1 gets it
  // back with chunk 0's bytes in it, after its first half arrived as zeros.
  UploadOptions options;
  options.max_buffers = 1;
  options.connections = 1;
  Disk d{std::string(3 * kChunkSize, '\0'), std::vector<bool>(3 * kChunkSize / kCluster, false)};
  std::mt19937 rng(4);
  d.Randomize(0, kChunkSize, &rng);
  d.Randomize(kChunkSize + kChunkSize / 2, 2 * kChunkSize, &rng);
  d.Randomize(2 * kChunkSize + kCluster, 2 * kChunkSize + 2 * kCluster, &rng);
  auto s = Start("vm/111", 1800000000, options);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", d.size(), false);
  ASSERT_TRUE(w.ok());
  std::vector<Request> reqs = Requests(d, 0, kChunkSize);
  std::vector<Request> rest = Requests(d, kChunkSize, d.size());
  std::reverse(rest.begin(), rest.end());  // chunk 2 before chunk 1, zeros last within each
  std::stable_partition(rest.begin(), rest.end(), [](const Request& r) { return r.zero; });
  reqs.insert(reqs.end(), rest.begin(), rest.end());
  ASSERT_TRUE(Send(*w, d, reqs).ok()) << s->error().ToString();
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_TRUE(SameBytes(d.bytes, Restore(*admin_, (*fin)["snapshot"], "disk0.fidx")));
}

TEST_F(BackupUploadTest, TwoArchivesFromTwoThreadsAtOnce) {
  Disk d0 = MakeDisk(11 * kChunkSize + 8192, 61);
  Disk d1 = MakeDisk(9 * kChunkSize, 62);
  // Both disks hold the same chunk: it is sent once, and whichever archive
  // closes first still waits until the server holds it.
  for (uint64_t i = 0; i < kChunkSize; ++i) d1.bytes[2 * kChunkSize + i] = d0.bytes[2 * kChunkSize + i];
  for (uint64_t c = 0; c < kChunkSize / kCluster; ++c) {
    d1.data[2 * kChunkSize / kCluster + c] = d0.data[2 * kChunkSize / kCluster + c];
  }
  ASSERT_EQ(d0.ChunkDigest(2), d1.ChunkDigest(2));

  UploadOptions options;
  options.max_buffers = 12;
  auto s = Start("vm/108", 1800000000, options);
  ASSERT_NE(s, nullptr);
  auto w0 = s->OpenArchive("disk0.fidx", d0.size(), false);
  auto w1 = s->OpenArchive("disk1.fidx", d1.size(), false);
  ASSERT_TRUE(w0.ok() && w1.ok());
  auto run = [](ArchiveWriter* w, const Disk* d, uint32_t seed) {
    auto reqs = Requests(*d, 0, d->size());
    QemuOrder(&reqs, seed);
    Status st = Send(w, *d, reqs);
    return st.ok() ? w->Close() : st;
  };
  auto f0 = std::async(std::launch::async, run, *w0, &d0, 12);
  auto f1 = std::async(std::launch::async, run, *w1, &d1, 13);
  Status s0 = f0.get(), s1 = f1.get();
  ASSERT_TRUE(s0.ok()) << s0.ToString();
  ASSERT_TRUE(s1.ok()) << s1.ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();

  std::set<Digest> all = Digests(d0, AllChunks(d0));
  std::set<Digest> more = Digests(d1, AllChunks(d1));
  all.insert(more.begin(), more.end());
  EXPECT_EQ(s->stats().chunks_uploaded, all.size());
  EXPECT_EQ(s->stats().chunks_dirty, d0.chunks() + d1.chunks());
  EXPECT_EQ((*fin)["stats"]["archives"], 2);
  std::string snapshot = (*fin)["snapshot"];
  EXPECT_TRUE(SameBytes(d0.bytes, Restore(*admin_, snapshot, "disk0.fidx")));
  EXPECT_TRUE(SameBytes(d1.bytes, Restore(*admin_, snapshot, "disk1.fidx")));
}

TEST_F(BackupUploadTest, RateLimitHolds) {
  UploadOptions options;
  options.rate_limit = 4 << 20;  // 4 MiB/s, one second of burst
  Disk d = MakeDisk(3 * kChunkSize, 71);
  std::mt19937 rng(1);
  d.Randomize(0, d.size(), &rng);  // incompressible: 12 MiB of blobs
  auto start = std::chrono::steady_clock::now();
  auto s = Start("vm/109", 1800000000, options);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", d.size(), false);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(Send(*w, d, Requests(d, 0, d.size())).ok());
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // 12 MiB at 4 MiB/s after a 4 MiB burst: at least 2 s.
  EXPECT_GE(seconds, 1.9);
  EXPECT_TRUE(s->Finish(json::object()).ok());
}

TEST_F(BackupUploadTest, ConnectionsIdleLongerThanTheServerKeepsThem) {
  // The server drops a keep-alive connection after 5 s without a request;
  // QEMU may pause that long (an incremental run with few dirty chunks), and
  // a write into a dropped connection must neither kill the process
  // (SIGPIPE) nor fail the backup.
  Disk d = MakeDisk(2 * kChunkSize, 95);
  std::mt19937 rng(8);
  d.Randomize(0, d.size(), &rng);
  auto s = Start("vm/112", 1800000000);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", d.size(), false);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(Send(*w, d, Requests(d, 0, kChunkSize)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(6500));
  ASSERT_TRUE(Send(*w, d, Requests(d, kChunkSize, d.size())).ok()) << s->error().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(6500));
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_TRUE(SameBytes(d.bytes, Restore(*admin_, (*fin)["snapshot"], "disk0.fidx")));
}

TEST_F(BackupUploadTest, AbortAndDestructionCommitNothing) {
  Disk d = MakeDisk(2 * kChunkSize, 81);
  {
    auto s = Start("vm/110", 1800000000);
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", d.size(), false);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(Send(*w, d, Requests(d, 0, d.size())).ok());
    ASSERT_TRUE((*w)->Close().ok());
    s->Abort();
    EXPECT_FALSE(s->Finish(json::object()).ok());
    EXPECT_FALSE((*w)->OnZero(0, 1).ok());
  }
  {
    auto s = Start("vm/110", 1800000000);  // the group is free again
    ASSERT_NE(s, nullptr);
    auto w = s->OpenArchive("disk0.fidx", d.size(), false);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(Send(*w, d, Requests(d, 0, d.size())).ok());
    // Destroyed without Finish (and without Close): aborted.
  }
  EXPECT_EQ(SnapshotCount("vm/110"), 0u);
  EXPECT_TRUE(UploadSession::Start(repo_, "vm/110", 1800000000, UploadOptions{}).ok());
}

// Not run by default: a throughput and memory figure for the writer against
// a local server. Run with --gtest_also_run_disabled_tests; sizes in MiB from
// $CAIRN_UPLOAD_BENCH_MIB (default 2048).
uint64_t StatusKib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(std::strlen(key)));
  }
  return 0;
}

TEST_F(BackupUploadTest, DISABLED_Throughput) {
  const char* env = std::getenv("CAIRN_UPLOAD_BENCH_MIB");
  const uint64_t size = (env ? std::stoull(env) : 2048) << 20;
  // Per chunk: a third random, a third text-like, a third zero (WRITE_ZEROES);
  // each data chunk unique through its first 8 bytes.
  std::string random(kChunkSize, '\0'), text(kChunkSize, '\0');
  std::mt19937_64 rng(1);
  for (size_t i = 0; i < kChunkSize; i += 8) {
    uint64_t v = rng();
    std::memcpy(&random[i], &v, 8);
  }
  for (size_t i = 0; i < kChunkSize; ++i) text[i] = "cairn backup throughput\n"[i % 24];
  uint64_t rss_before = StatusKib("VmRSS:");
  auto cpu = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  };
  double cpu_before = cpu();

  auto start = std::chrono::steady_clock::now();
  auto s = Start("vm/200", 1800000000);
  ASSERT_NE(s, nullptr);
  auto w = s->OpenArchive("disk0.fidx", size, false);
  ASSERT_TRUE(w.ok());
  std::string piece;
  for (uint64_t off = 0; off < size; off += kMaxRequest) {
    uint64_t chunk = off / kChunkSize;
    if (chunk % 3 == 2) {
      ASSERT_TRUE((*w)->OnZero(off, kMaxRequest).ok()) << s->error().ToString();
      continue;
    }
    const std::string& src = chunk % 3 == 0 ? random : text;
    piece.assign(src, off % kChunkSize, kMaxRequest);
    if (off % kChunkSize == 0) std::memcpy(piece.data(), &chunk, 8);
    ASSERT_TRUE((*w)->OnWrite(off, piece).ok()) << s->error().ToString();
  }
  ASSERT_TRUE((*w)->Close().ok()) << s->error().ToString();
  auto fin = s->Finish(json::object());
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("upload of %llu MiB: %.2f s, %.0f MB/s, client CPU %.2f s; %llu chunks sent, "
              "%llu MB of blobs; VmHWM %llu MiB (VmRSS before %llu MiB)\n",
              static_cast<unsigned long long>(size >> 20), seconds, size / seconds / 1e6,
              cpu() - cpu_before,
              static_cast<unsigned long long>(s->stats().chunks_uploaded.load()),
              static_cast<unsigned long long>(s->stats().bytes_uploaded.load() / 1000000),
              static_cast<unsigned long long>(StatusKib("VmHWM:") >> 10),
              static_cast<unsigned long long>(rss_before >> 10));
}

}  // namespace
}  // namespace cairn::testing
