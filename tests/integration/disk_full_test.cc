// Disk full (issue 14): the file system that holds the server's data folder
// (its SQLite databases and the default datastore) fills up during a backup
// made by the real `cairn` client. The backup must fail cleanly with a
// message that says so (507, not a bare 500), commit nothing, leave nothing
// in staging, keep the earlier snapshots restorable and the server serving
// reads; once space is freed the same backup must succeed.
//
// The data folder is a size-limited tmpfs mounted in a private mount
// namespace of this test process (unshare(CLONE_NEWNS) + a private "/"), so
// nothing is mounted on the host and the mount dies with the process. That
// needs root (CAP_SYS_ADMIN); without it the test is skipped and says why.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/datastore.h"
#include "tests/integration/server_process_testutil.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kChunk = 4 * kMiB;
constexpr uint64_t kTmpfsSize = 64 * kMiB;

// Incompressible bytes: every chunk is stored at its full size.
std::string RandomBytes(uint64_t size, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(size, '\0');
  for (uint64_t i = 0; i + 8 <= size; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

// Compares two files 4 MiB at a time (the sparse image is 1 GiB).
bool SameFiles(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::string ba(kChunk, '\0'), bb(kChunk, '\0');
  while (true) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount()) return false;
    if (fa.gcount() == 0) return true;
    const size_t n = static_cast<size_t>(fa.gcount());
    if (std::memcmp(ba.data(), bb.data(), n) != 0) return false;
  }
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(out.good()) << path;
}

uint64_t FreeBytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

// Writes `path` until only `leave` bytes are free on its file system (or
// ENOSPC); returns the bytes written.
uint64_t FillLeaving(const std::string& path, uint64_t leave) {
  uint64_t free_now = FreeBytes(fs::path(path).parent_path().string());
  uint64_t want = free_now > leave ? free_now - leave : 0;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return 0;
  const std::string block(1 * kMiB, 'f');
  uint64_t done = 0;
  while (done < want) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), want - done));
    ssize_t w = ::write(fd, block.data(), n);
    if (w <= 0) break;
    done += static_cast<uint64_t>(w);
  }
  ::close(fd);
  return done;
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a size-limited tmpfs";
    // Only this (the main) thread moves into the new namespace; the server
    // and the clients are forked from it and inherit it.
    if (::unshare(CLONE_NEWNS) != 0) {
      GTEST_SKIP() << "cannot make a private mount namespace: " << std::strerror(errno);
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      GTEST_SKIP() << "cannot make / private in the new namespace: " << std::strerror(errno);
    }
    const std::string opts = "size=" + std::to_string(kTmpfsSize);
    if (::mount("tmpfs", data_.path().c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs: " << std::strerror(errno);
    }
    mounted_ = true;
    server_ = ServerProcess::Start(data_.path());
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    server_.reset();
    if (mounted_) ::umount2(data_.path().c_str(), MNT_DETACH);
  }

  std::string StorePath() const { return data_.path() + "/stores/default"; }
  std::string Filler() const { return data_.path() + "/filler"; }

  CommandResult Cairn(const std::vector<std::string>& args) {
    std::vector<std::string> env = {
        "CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
        "CAIRN_TOKEN=" + server_->AdminToken(), "CAIRN_FINGERPRINT=" + server_->fingerprint()};
    return RunBinary("client/cairn", args, env, work_.path());
  }

  // `cairn backup image` of `img` as vm/`id` at `time`.
  CommandResult Backup(const std::string& id, const std::string& time, const std::string& img) {
    return Cairn({"--output", "json", "backup", "image", "--id", id, "--backup-time", time, img});
  }

  // The committed snapshots, as the client lists them.
  std::set<std::string> Snapshots() {
    auto r = Cairn({"--output", "json", "snapshots"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::set<std::string> out;
    json j = json::parse(r.output, nullptr, false);
    EXPECT_TRUE(j.is_array()) << r.output;
    if (!j.is_array()) return out;
    for (const auto& s : j) out.insert(s.value("snapshot", ""));
    return out;
  }

  // Restores `archive` of `snapshot` and compares it with `expected`.
  ::testing::AssertionResult RestoresTo(const std::string& snapshot, const std::string& archive,
                                        const std::string& expected) {
    const std::string target = work_.Join("restored.raw");
    fs::remove(target);
    auto r = Cairn({"restore", snapshot, archive, target});
    if (r.exit_code != 0) return ::testing::AssertionFailure() << "restore: " << r.output;
    const bool same = SameFiles(target, expected);
    fs::remove(target);
    if (!same) {
      return ::testing::AssertionFailure()
             << snapshot << " " << archive << " restored bytes that differ from " << expected;
    }
    return ::testing::AssertionSuccess();
  }

  // Nothing left of a failed backup: an empty staging folder and no chunk
  // temp file.
  ::testing::AssertionResult NothingHalfWritten() {
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(StorePath() + "/" + storage::kStagingDir)) {
      left.push_back(e.path().string());
    }
    for (const auto& e : fs::recursive_directory_iterator(StorePath() + "/.chunks")) {
      if (e.is_regular_file() && e.path().filename().string().size() != 64) {
        left.push_back(e.path().string());
      }
    }
    if (left.empty()) return ::testing::AssertionSuccess();
    auto f = ::testing::AssertionFailure() << "left behind:";
    for (const auto& l : left) f << " " << l;
    return f;
  }

  // The server process is still running and answers.
  bool ServerAlive() {
    int status = 0;
    if (::waitpid(server_->pid(), &status, WNOHANG) != 0) return false;
    ApiClient c(server_->port(), server_->AdminToken());
    return c.Get("/api/v1/version").status == 200;
  }

  // The summary line of `backup --output json`: {"snapshot": …, "disks": […]}.
  static json Summary(const std::string& output) {
    size_t pos = output.rfind("\n{");
    json j = json::parse(output.substr(pos == std::string::npos ? 0 : pos + 1), nullptr, false);
    EXPECT_TRUE(j.is_object()) << output;
    return j.is_object() ? j : json(nullptr);
  }
  static std::string ArchiveOf(const json& summary) {
    std::string a = summary["disks"][0].value("archive", "");
    return a.size() > 5 ? a.substr(0, a.size() - 5) : a;  // without ".fidx"
  }

  // A backup that must commit: its snapshot and archive (both empty, and the
  // test failed, when it did not).
  struct Committed {
    std::string snapshot;
    std::string archive;
  };
  Committed MustBackUp(const std::string& id, const std::string& time, const std::string& img) {
    CommandResult r = Backup(id, time, img);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    json s = Summary(r.output);
    if (r.exit_code != 0 || !s.is_object()) return {};
    return {s.value("snapshot", ""), ArchiveOf(s)};
  }

  // A refused backup names the full disk (the server's 507), not an internal error.
  static void ExpectDiskFullMessage(const CommandResult& r) {
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("507"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("disk is full"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
  }

  TempDir data_;  // the tmpfs: the server's whole data folder
  TempDir work_;  // images, restores and the client's output (on the host's disk)
  bool mounted_ = false;
  std::unique_ptr<ServerProcess> server_;
};

// The disk fills while chunks are being written.
TEST_F(DiskFullTest, ChunkWriteFailsCleanlyAndSucceedsAfterSpaceIsFreed) {
  const std::string small = work_.Join("small.raw");
  const std::string large = work_.Join("large.raw");
  ASSERT_NO_FATAL_FAILURE(WriteAll(small, RandomBytes(2 * kChunk, 1)));
  ASSERT_NO_FATAL_FAILURE(WriteAll(large, RandomBytes(8 * kChunk, 2)));

  // Most of the file system taken by something else; room for the small
  // backup (8 MiB) but not the large one (32 MiB).
  ASSERT_GT(FillLeaving(Filler(), 14 * kMiB), 0u);
  const Committed b1 = MustBackUp("100", "2026-01-01T00:00:00Z", small);
  ASSERT_FALSE(b1.snapshot.empty());
  const std::string& snap1 = b1.snapshot;
  const std::string& archive1 = b1.archive;
  const std::set<std::string> before = Snapshots();
  ASSERT_EQ(before, std::set<std::string>{snap1});

  auto full = Backup("200", "2026-01-01T01:00:00Z", large);
  ExpectDiskFullMessage(full);
  EXPECT_LT(FreeBytes(data_.path()), kChunk) << "the disk did not fill up";
  EXPECT_EQ(Snapshots(), before) << full.output;
  EXPECT_TRUE(NothingHalfWritten());
  EXPECT_NE(server_->Log().find("No space left on device"), std::string::npos) << server_->Log();

  // Reads go on while the disk is full, to the last byte.
  FillLeaving(Filler() + "2", 0);
  EXPECT_EQ(FreeBytes(data_.path()), 0u);
  EXPECT_TRUE(ServerAlive());
  EXPECT_TRUE(RestoresTo(snap1, archive1, small));
  EXPECT_EQ(Snapshots(), before);

  // Space freed: the same backup goes through and restores identical.
  ASSERT_EQ(::unlink(Filler().c_str()), 0);
  ASSERT_EQ(::unlink((Filler() + "2").c_str()), 0);
  const Committed b2 = MustBackUp("200", "2026-01-01T02:00:00Z", large);
  ASSERT_FALSE(b2.snapshot.empty());
  EXPECT_TRUE(RestoresTo(b2.snapshot, b2.archive, large));
  EXPECT_TRUE(RestoresTo(snap1, archive1, small));
  EXPECT_EQ(Snapshots().size(), 2u);
  auto v = Cairn({"verify"});
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_TRUE(NothingHalfWritten());
  EXPECT_TRUE(ServerAlive());
}

// The disk fills at the end of a backup: every chunk is on the server
// already (known from the group's previous snapshot). First the fixed index
// (32 bytes per chunk of a sparse 1 GiB image: 8 KiB and a header, three
// pages of the tmpfs) does not fit in the two pages left; then, with one
// page more, the index fits and the manifest written at the finish does not.
TEST_F(DiskFullTest, IndexOrManifestWriteAtTheEndFailsCleanly) {
  const std::string img = work_.Join("sparse.raw");
  ASSERT_NO_FATAL_FAILURE(WriteAll(img, RandomBytes(kChunk, 3)));
  ASSERT_EQ(::truncate(img.c_str(), static_cast<off_t>(1024 * kMiB)), 0);

  const Committed b1 = MustBackUp("300", "2026-01-01T00:00:00Z", img);
  ASSERT_FALSE(b1.snapshot.empty());
  const std::string& snap1 = b1.snapshot;
  const std::string& archive = b1.archive;
  const std::set<std::string> before = Snapshots();

  ASSERT_GT(FillLeaving(Filler(), 8 * 1024), 0u);
  auto full = Backup("300", "2026-01-01T01:00:00Z", img);
  ExpectDiskFullMessage(full);
  // The failure came with the index, after the session had started.
  const std::string log = server_->Log();
  EXPECT_NE(log.find("/index failed: IOError"), std::string::npos) << log;
  EXPECT_EQ(log.find("/chunk failed"), std::string::npos) << log;
  EXPECT_EQ(Snapshots(), before);
  EXPECT_TRUE(NothingHalfWritten());

  // One page more: the index fits now, and what the finish writes (the
  // manifest) does not.
  ASSERT_EQ(FreeBytes(data_.path()), 8 * 1024u) << "the failed backup left something behind";
  ASSERT_EQ(::truncate(Filler().c_str(), static_cast<off_t>(fs::file_size(Filler()) - 4096)), 0);
  auto at_finish = Backup("300", "2026-01-01T01:30:00Z", img);
  ExpectDiskFullMessage(at_finish);
  EXPECT_NE(server_->Log().find("/finish failed: IOError"), std::string::npos) << server_->Log();
  EXPECT_EQ(Snapshots(), before);
  EXPECT_TRUE(NothingHalfWritten());
  EXPECT_TRUE(ServerAlive());
  EXPECT_TRUE(RestoresTo(snap1, archive, img));

  ASSERT_EQ(::unlink(Filler().c_str()), 0);
  const Committed b2 = MustBackUp("300", "2026-01-01T02:00:00Z", img);
  ASSERT_FALSE(b2.snapshot.empty());
  EXPECT_TRUE(RestoresTo(b2.snapshot, archive, img));
  auto v = Cairn({"verify"});
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_TRUE(NothingHalfWritten());
}

}  // namespace
}  // namespace cairn::testing
