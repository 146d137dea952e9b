// `cairn backup vm|image` and `cairn restore` end to end: Debian's real QEMU
// 7.2 (`-machine none`, guest writes through HMP `qemu-io`), the real
// cairn-server on loopback TLS, the real `cairn` binary. Every restore is
// compared byte for byte with a copy of the disk taken right after its
// backup (QEMU flushed, `qemu-img convert -U`), and the summaries and the
// server's stats are checked for what was read and uploaded.
//
// Issue 4's scenarios, numbered as there.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "storage/digest.h"
#include "storage/names.h"
#include "tests/client/fake_guest_agent.h"
#include "tests/client/qemu_testutil.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using client::testing::FakeGuestAgent;
using client::testing::QemuVm;
using client::testing::ReadWholeFile;
using client::testing::RunCommand;
using client::testing::ShortTempDir;
using nlohmann::json;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChunk = 4 * kMiB;

// Byte-for-byte comparison of two files, streamed; the first difference is
// reported.
::testing::AssertionResult SameBytes(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return ::testing::AssertionFailure() << "cannot open " << a << " or " << b;
  std::vector<char> ba(kMiB), bb(kMiB);
  uint64_t off = 0;
  for (;;) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    auto na = fa.gcount(), nb = fb.gcount();
    if (na != nb) return ::testing::AssertionFailure() << "sizes differ after offset " << off;
    if (na == 0) return ::testing::AssertionSuccess();
    for (std::streamsize i = 0; i < na; ++i) {
      if (ba[static_cast<size_t>(i)] != bb[static_cast<size_t>(i)]) {
        return ::testing::AssertionFailure() << a << " and " << b << " differ at byte "
                                             << off + static_cast<uint64_t>(i);
      }
    }
    off += static_cast<uint64_t>(na);
  }
}

// A raw image of `size` bytes with mixed content in 4 MiB regions: random,
// text-like, half random half zero, a pattern, and (most of it) never
// written.
// dense: every region random.
void MakeMixedRaw(const std::string& path, uint64_t size, uint32_t seed, bool dense = false) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::mt19937_64 rng(seed);
  std::string chunk(kChunk, '\0');
  const char* words[] = {"cairn ", "backup ", "chunk ", "qemu ", "bitmap ", "snapshot\n"};
  for (uint64_t off = 0; off < size; off += kChunk) {
    uint64_t i = off / kChunk;
    uint64_t n = std::min<uint64_t>(kChunk, size - off);
    switch (dense ? 0 : i % 16) {
      case 0:
        for (auto& c : chunk) c = static_cast<char>(rng());
        break;
      case 1: {
        size_t p = 0;
        while (p < chunk.size()) {
          const char* w = words[rng() % 6];
          for (; *w != '\0' && p < chunk.size(); ++w) chunk[p++] = *w;
        }
        break;
      }
      case 2:
        for (size_t k = 0; k < chunk.size(); ++k) {
          chunk[k] = k < chunk.size() / 2 ? static_cast<char>(rng()) : '\0';
        }
        break;
      case 3:
        std::fill(chunk.begin(), chunk.end(), static_cast<char>(0x40 + (i & 0x3f)));
        break;
      default:
        out.seekp(static_cast<std::streamoff>(off + n));
        continue;
    }
    out.seekp(static_cast<std::streamoff>(off));
    out.write(chunk.data(), static_cast<std::streamsize>(n));
  }
  out.close();
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size)), 0);
}

class VmBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A short session timeout: a killed client's session is dropped quickly.
    server_ = ServerProcess::Start(data_.path(), {"--session-timeout", "2"});
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    rand_file_ = dir_.Join("rand.bin");
    std::mt19937_64 rng(7);
    std::string r(kChunk, '\0');
    for (auto& c : r) c = static_cast<char>(rng());
    client::testing::WriteWholeFile(rand_file_, r);
  }

  std::vector<std::string> Env() const {
    return {"CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
            "CAIRN_TOKEN=" + server_->AdminToken(),
            "CAIRN_FINGERPRINT=" + server_->fingerprint()};
  }

  // A qcow2 image of `size` with mixed content.
  std::string MakeQcow2(const std::string& name, uint64_t size, uint32_t seed, bool dense = false) {
    std::string raw = dir_.Join(name + ".src.raw");
    MakeMixedRaw(raw, size, seed, dense);
    std::string img = dir_.Join(name + ".qcow2");
    auto r = RunCommand({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::filesystem::remove(raw);
    return img;
  }

  // QEMU with the disks; the client gets its own QMP socket (cairn.sock).
  std::unique_ptr<QemuVm> StartVm(const std::vector<std::string>& blockdevs) {
    cairn_qmp_ = dir_.Join("cairn.sock");
    return QemuVm::Start(dir_.path(), blockdevs,
                         {"-qmp", "unix:" + cairn_qmp_ + ",server=on,wait=off"});
  }

  // The next backup time: one hour after the previous one.
  std::string NextTime() {
    static int64_t t = 1790000000;
    t += 3600;
    return storage::FormatSnapshotTime(t);
  }

  CommandResult Cairn(const std::vector<std::string>& args) {
    return RunBinary("client/cairn", args, Env(), dir_.path());
  }

  // `cairn --output json backup vm ...`: the summary, or null (test failed).
  json BackupVm(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--output", "json", "backup", "vm", "--qmp", cairn_qmp_,
                                     "--id",     "100",  "--backup-time", NextTime()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = Cairn(args);
    last_output_ = r.output;
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code != 0) return nullptr;
    return Summary(r.output);
  }

  static json Summary(const std::string& output) {
    // stderr notes come first; the summary is the last line.
    size_t pos = output.rfind("\n{");
    std::string line = output.substr(pos == std::string::npos ? 0 : pos + 1);
    json j = json::parse(line, nullptr, false);
    EXPECT_TRUE(j.is_object()) << output;
    return j.is_object() ? j : json(nullptr);
  }

  // A raw copy of `node`'s disk as it is now (QEMU flushes first).
  std::string CopyDisk(QemuVm& vm, const std::string& node, const std::string& image,
                       const std::string& name) {
    EXPECT_TRUE(vm.QemuIo(node, "flush"));
    std::string out = dir_.Join(name);
    auto r = RunCommand({"qemu-img", "convert", "-U", "-O", "raw", image, out});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }

  // Restores and compares with `expected`.
  ::testing::AssertionResult RestoresTo(const std::string& snapshot, const std::string& archive,
                                        const std::string& expected) {
    std::string target = dir_.Join("restored.raw");
    std::filesystem::remove(target);
    auto r = Cairn({"restore", snapshot, archive, target});
    if (r.exit_code != 0) return ::testing::AssertionFailure() << "restore: " << r.output;
    auto same = SameBytes(target, expected);
    std::filesystem::remove(target);
    return same;
  }

  ::testing::AssertionResult WriteRandom(QemuVm& vm, const std::string& node, uint64_t off,
                                         uint64_t len) {
    return vm.QemuIo(node, "write -s " + rand_file_ + " " + std::to_string(off) + " " +
                               std::to_string(len));
  }

  json Snapshots() {
    auto r = admin_->Get("/api/v1/datastores/default/snapshots?group=vm%2F100");
    return r.status == 200 ? r.Json() : json::array();
  }

  TempDir data_;
  ShortTempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::string cairn_qmp_;
  std::string rand_file_;
  std::string last_output_;
};

uint64_t U(const json& j, const char* key) { return j.value(key, uint64_t{0}); }
std::string S(const json& j) { return j.is_string() ? j.get<std::string>() : ""; }

// 1, 2, 3: full, then incremental after writes to 3 regions, then
// incremental again after QEMU quit and started on the same image.
TEST_F(VmBackupTest, FullThenIncrementalAcrossQemuRestart) {
  const uint64_t size = 1024 * kMiB;
  std::string img = MakeQcow2("disk0", size, 1);
  auto vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);

  // 1. The first backup is full.
  json s1 = BackupVm();
  ASSERT_TRUE(s1.is_object());
  EXPECT_EQ(s1["mode"], "full") << s1.dump();
  EXPECT_EQ(U(s1, "bytes-read"), size);
  EXPECT_EQ(U(s1, "chunks-dirty"), size / kChunk);
  std::string copy1 = CopyDisk(*vm, "disk0", img, "copy1.raw");
  std::string restored = dir_.Join("r1.raw");
  auto r = Cairn({"restore", S(s1["snapshot"]), "disk0", restored});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto cmp = RunCommand({"qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", restored, img});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
  EXPECT_TRUE(SameBytes(restored, copy1));
  std::filesystem::remove(restored);

  // 2. Three regions written: 64 KiB inside one chunk, 1 MiB across a chunk
  // edge (two chunks), and one byte in the last chunk → 4 dirty chunks.
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 10 * kMiB, 64 * 1024));
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 500 * kMiB - 512 * 1024, kMiB));
  ASSERT_TRUE(vm->QemuIo("disk0", "write -P 0x77 " + std::to_string(size - 1) + " 1"));
  json s2 = BackupVm();
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["mode"], "incremental") << s2.dump();
  EXPECT_EQ(U(s2, "chunks-dirty"), 4u) << s2.dump();
  EXPECT_EQ(U(s2, "bytes-read"), 4 * kChunk) << s2.dump();
  EXPECT_LE(U(s2, "chunks-uploaded"), 4u) << s2.dump();
  EXPECT_LE(U(s2["server"], "chunks-uploaded"), 4u) << s2.dump();
  EXPECT_EQ(U(s2, "chunks-reused"), size / kChunk - 4) << s2.dump();
  std::string copy2 = CopyDisk(*vm, "disk0", img, "copy2.raw");
  EXPECT_TRUE(RestoresTo(s2["snapshot"], "disk0.fidx", copy2));
  EXPECT_TRUE(RestoresTo(s1["snapshot"], "disk0", copy1));

  // 3. QEMU quits and starts again on the same image: the bitmap is back.
  ASSERT_TRUE(vm->Quit());
  vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 700 * kMiB, 2 * kMiB));
  json s3 = BackupVm();
  ASSERT_TRUE(s3.is_object());
  EXPECT_EQ(s3["mode"], "incremental") << s3.dump();
  EXPECT_EQ(U(s3, "chunks-dirty"), 1u) << s3.dump();
  std::string copy3 = CopyDisk(*vm, "disk0", img, "copy3.raw");
  EXPECT_TRUE(RestoresTo(s3["snapshot"], "disk0", copy3));
  std::filesystem::remove(copy1);

  // The human summary says the same.
  auto text = Cairn({"backup", "vm", "--qmp", cairn_qmp_, "--id", "100", "--backup-time", NextTime()});
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find(": incremental (disk0.fidx incremental: bitmap cairn-"), std::string::npos)
      << text.output;
}

// 4. The client is killed during an incremental backup after some chunks
// went up: nothing is committed, and the next backup is incremental and
// holds the writes of both intervals.
TEST_F(VmBackupTest, ClientKilledMidBackupLosesNoWrite) {
  const uint64_t size = 256 * kMiB;
  std::string img = MakeQcow2("disk0", size, 2);
  auto vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  json s1 = BackupVm();
  ASSERT_TRUE(s1.is_object());
  // 24 chunks of random data: at 2 MB/s the upload takes ~50 s.
  for (uint64_t i = 0; i < 24; ++i) ASSERT_TRUE(WriteRandom(*vm, "disk0", (8 + i * 9) * kMiB, kMiB));
  std::string log = dir_.Join("killed.log");
  pid_t pid = StartBinary("client/cairn",
                          {"--output", "json", "backup", "vm", "--qmp", cairn_qmp_, "--id", "100",
                           "--backup-time", NextTime(), "--rate-limit", "2"},
                          Env(), log);
  // Wait until chunks arrive at the server (new chunk files), then kill.
  auto chunk_files = [&] {
    size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(data_.path())) {
      if (e.is_regular_file() && e.path().string().find("/.chunks/") != std::string::npos) ++n;
    }
    return n;
  };
  size_t before = chunk_files();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (chunk_files() < before + 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(chunk_files(), before + 2) << ReadWholeFile(log);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(Snapshots().size(), 1u) << "a killed backup must commit nothing";

  // More writes after the kill; then the server drops the dead session.
  ASSERT_TRUE(vm->QemuIo("disk0", "write -P 0x31 " + std::to_string(200 * kMiB) + " 4096"));
  std::this_thread::sleep_for(std::chrono::seconds(4));
  json s2 = BackupVm();
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["mode"], "incremental") << s2.dump() << last_output_;
  EXPECT_NE(last_output_.find("merged the bitmaps of an interrupted run"), std::string::npos)
      << last_output_;
  // 24 regions in 24 distinct chunks, plus the one written after the kill.
  EXPECT_EQ(U(s2, "chunks-dirty"), 25u) << s2.dump();
  std::string copy = CopyDisk(*vm, "disk0", img, "copy.raw");
  EXPECT_TRUE(RestoresTo(s2["snapshot"], "disk0", copy));
}

// 5. QEMU killed with SIGKILL. A bitmap QEMU loaded from the qcow2 file is
// then inconsistent (its in-use flag stays set); the next backup notices,
// removes it, reads everything, and uploads only chunks the server lacks. A
// bitmap QEMU never saved (killed in the session that made it) is simply
// gone, with the same outcome.
TEST_F(VmBackupTest, QemuKilledMeansFullReadButFewUploads) {
  const uint64_t size = 256 * kMiB;
  std::string img = MakeQcow2("disk0", size, 3);
  auto vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  ASSERT_TRUE(BackupVm().is_object());

  // Killed before the bitmap was ever saved: it is lost.
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 100 * kMiB, 64 * 1024));
  ASSERT_TRUE(vm->QemuIo("disk0", "flush"));
  vm->Kill();
  vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  json s2 = BackupVm();
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["mode"], "full") << s2.dump();
  EXPECT_NE(s2["disks"][0]["reason"].get<std::string>().find("no Cairn bitmap"), std::string::npos)
      << s2.dump();
  EXPECT_EQ(U(s2, "bytes-read"), size);
  EXPECT_LE(U(s2, "chunks-uploaded"), 1u) << s2.dump();
  EXPECT_LE(U(s2["server"], "chunks-new"), 1u) << s2.dump();
  std::string copy2 = CopyDisk(*vm, "disk0", img, "copy2.raw");
  EXPECT_TRUE(RestoresTo(s2["snapshot"], "disk0", copy2));

  // Saved at a clean quit, loaded again, then QEMU is killed: inconsistent.
  ASSERT_TRUE(vm->Quit());
  vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 200 * kMiB, 64 * 1024));
  ASSERT_TRUE(vm->QemuIo("disk0", "flush"));
  vm->Kill();
  vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  auto bm = Cairn({"--output", "json", "bitmaps", "--qmp", cairn_qmp_});
  json bj = json::parse(bm.output, nullptr, false);
  ASSERT_TRUE(bj.is_array()) << bm.output;
  ASSERT_EQ(bj[0]["bitmaps"].size(), 1u) << bj.dump();
  EXPECT_EQ(bj[0]["bitmaps"][0]["inconsistent"], true) << bj.dump();
  json s3 = BackupVm();
  ASSERT_TRUE(s3.is_object());
  EXPECT_EQ(s3["mode"], "full") << s3.dump();
  EXPECT_NE(s3["disks"][0]["reason"].get<std::string>().find("inconsistent"), std::string::npos)
      << s3.dump();
  EXPECT_EQ(U(s3, "bytes-read"), size);
  EXPECT_LE(U(s3, "chunks-uploaded"), 1u) << s3.dump();
  std::string copy3 = CopyDisk(*vm, "disk0", img, "copy3.raw");
  EXPECT_TRUE(RestoresTo(s3["snapshot"], "disk0", copy3));

  // And the run after it is incremental again.
  ASSERT_TRUE(vm->QemuIo("disk0", "write -P 0x12 0 4096"));
  json s4 = BackupVm();
  ASSERT_TRUE(s4.is_object());
  EXPECT_EQ(s4["mode"], "incremental") << s4.dump();
}

// 6. The last snapshot deleted on the server, or failed verification →
// full read; identical.
TEST_F(VmBackupTest, DeletedOrBadLastSnapshotMeansFullRead) {
  const uint64_t size = 128 * kMiB;
  std::string img = MakeQcow2("disk0", size, 4);
  auto vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  json s1 = BackupVm();
  ASSERT_TRUE(s1.is_object());
  json s2 = BackupVm();
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["mode"], "incremental") << s2.dump();
  auto del = admin_->Delete("/api/v1/datastores/default/snapshots?snapshot=" +
                            Q(s2["snapshot"].get<std::string>()));
  ASSERT_EQ(del.status, 200) << del.body;
  ASSERT_TRUE(vm->QemuIo("disk0", "write -P 0x21 4096 4096"));
  json s3 = BackupVm();
  ASSERT_TRUE(s3.is_object());
  EXPECT_EQ(s3["mode"], "full") << s3.dump();
  EXPECT_NE(s3["disks"][0]["reason"].get<std::string>().find("does not belong to the last snapshot"),
            std::string::npos)
      << s3.dump();
  std::string copy3 = CopyDisk(*vm, "disk0", img, "copy3.raw");
  EXPECT_TRUE(RestoresTo(s3["snapshot"], "disk0", copy3));

  // Flip a byte of a chunk s3 references (its text chunk at 4 MiB) and
  // verify: s3 fails verification.
  std::string chunk1 = ReadWholeFile(copy3).substr(kChunk, kChunk);
  const std::string hex = storage::Sha256(chunk1).ToHex();
  std::string victim;
  for (auto& e : std::filesystem::recursive_directory_iterator(data_.path())) {
    if (e.is_regular_file() && e.path().filename().string() == hex) victim = e.path().string();
  }
  ASSERT_FALSE(victim.empty()) << "no chunk file " << hex;
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(5000);
    char c = 0;
    f.read(&c, 1);
    f.seekp(5000);
    c = static_cast<char>(c ^ 0x01);
    f.write(&c, 1);
  }
  auto v = Cairn({"verify", S(s3["snapshot"])});
  EXPECT_NE(v.exit_code, 0) << v.output;
  json s4 = BackupVm();
  ASSERT_TRUE(s4.is_object());
  EXPECT_EQ(s4["mode"], "full") << s4.dump();
  std::string copy4 = CopyDisk(*vm, "disk0", img, "copy4.raw");
  EXPECT_TRUE(RestoresTo(s4["snapshot"], "disk0", copy4));
}

// 7. Two disks share one point in time: writes issued to both right after
// the backup started are in neither archive.
TEST_F(VmBackupTest, TwoDisksOnePointInTime) {
  // Random data, more than the client's chunk buffers hold (20 × 4 MiB),
  // uploaded at 20 MB/s: QEMU's jobs wait on the client for seconds.
  const uint64_t size = 96 * kMiB;
  std::string a = MakeQcow2("a", size, 5, true);
  std::string b = MakeQcow2("b", size, 6, true);
  // Attached with -drive: the test's qemu-io writes then go through a
  // BlockBackend above the backup's copy-before-write filter, as a guest's
  // would (qemu-io on the format node itself conflicts with the filter's
  // permissions). The format nodes get generated names; the archives are
  // named after the drives.
  cairn_qmp_ = dir_.Join("cairn.sock");
  auto vm = QemuVm::Start(dir_.path(), {},
                          {"-qmp", "unix:" + cairn_qmp_ + ",server=on,wait=off", "-drive",
                           "if=none,id=da,format=qcow2,file=" + a, "-drive",
                           "if=none,id=db,format=qcow2,file=" + b});
  ASSERT_NE(vm, nullptr);
  std::string before_a = CopyDisk(*vm, "da", a, "a0.raw");
  std::string before_b = CopyDisk(*vm, "db", b, "b0.raw");
  std::string log = dir_.Join("bg.log");
  // Slow uploads keep both jobs running while the test writes.
  pid_t pid = StartBinary("client/cairn",
                          {"--output", "json", "backup", "vm", "--qmp", cairn_qmp_, "--id", "100",
                           "--backup-time", NextTime(), "--rate-limit", "20"},
                          Env(), log);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  // Write as soon as the first job exists: had the client started the
  // jobs one by one, the write could fall between them.
  size_t jobs = 0;
  while (jobs == 0 && std::chrono::steady_clock::now() < deadline) {
    auto q = vm->qmp().Execute("query-block-jobs");
    jobs = q.ok() ? q->size() : 0;
  }
  ASSERT_GT(jobs, 0u) << ReadWholeFile(log);
  // Whichever region the jobs have copied already, copy-before-write must
  // keep the old data of both disks for the backup.
  ASSERT_TRUE(vm->QemuIo("da", "write -P 0xee 0 1M"));
  ASSERT_TRUE(vm->QemuIo("db", "write -P 0xee 0 1M"));
  ASSERT_TRUE(vm->QemuIo("da", "write -P 0xee " + std::to_string(40 * kMiB) + " 1M"));
  ASSERT_TRUE(vm->QemuIo("db", "write -P 0xee " + std::to_string(40 * kMiB) + " 1M"));
  auto q = vm->qmp().Execute("query-block-jobs");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->size(), 2u) << "the jobs ended before the writes: the test proves nothing";
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadWholeFile(log);
  json s = Summary(ReadWholeFile(log));
  ASSERT_TRUE(s.is_object());
  EXPECT_EQ(s["disks"].size(), 2u);
  EXPECT_EQ(s["disks"][0]["archive"], "da.fidx") << s.dump();
  EXPECT_TRUE(RestoresTo(s["snapshot"], "da", before_a));
  EXPECT_TRUE(RestoresTo(s["snapshot"], "db", before_b));
}

// Cairn's bitmaps on `node`, as QEMU lists them.
std::vector<std::string> CairnBitmapNames(QemuVm& vm, const std::string& node) {
  auto nodes = vm.qmp().Execute("query-named-block-nodes", {{"flat", true}});
  std::vector<std::string> names;
  if (!nodes.ok()) return names;
  for (const auto& b : *nodes) {
    if (b.value("node-name", "") != node) continue;
    for (const auto& bm : b.value("dirty-bitmaps", json::array())) {
      std::string name = bm.value("name", "");
      if (name.rfind("cairn-", 0) == 0) names.push_back(name);
    }
  }
  return names;
}
size_t CairnBitmaps(QemuVm& vm, const std::string& node) {
  return CairnBitmapNames(vm, node).size();
}

// 8. The guest agent (a fake qemu-ga speaking the real protocol): freeze
// before the transaction, thaw right after it — before the commit —, and
// thaw on the error paths; --require-freeze fails cleanly when the agent
// does not answer in time.
TEST_F(VmBackupTest, GuestAgentFreezesAroundTheTransaction) {
  std::string img = MakeQcow2("disk0", 64 * kMiB, 11);
  auto vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  const std::string qga = dir_.Join("qga.sock");
  FakeGuestAgent agent(qga);

  // Slow answers give the test time to look at QEMU between the steps.
  FakeGuestAgent::Behavior slow;
  slow.delay = std::chrono::milliseconds(1500);
  agent.SetBehavior("guest-fsfreeze-freeze", slow);
  agent.SetBehavior("guest-fsfreeze-thaw", slow);
  std::string log = dir_.Join("agent.log");
  pid_t pid = StartBinary("client/cairn",
                          {"--output", "json", "backup", "vm", "--qmp", cairn_qmp_, "--id", "100",
                           "--backup-time", NextTime(), "--guest-agent", qga},
                          Env(), log);
  ASSERT_TRUE(agent.WaitForCommand("guest-fsfreeze-freeze", 1, std::chrono::seconds(30))) << ReadWholeFile(log);
  EXPECT_EQ(CairnBitmaps(*vm, "disk0"), 0u) << "the transaction ran before the freeze answered";
  ASSERT_TRUE(agent.WaitForCommand("guest-fsfreeze-thaw", 1, std::chrono::seconds(30))) << ReadWholeFile(log);
  EXPECT_EQ(CairnBitmaps(*vm, "disk0"), 1u) << "the thaw came before the transaction";
  EXPECT_TRUE(Snapshots().empty()) << "the thaw came after the commit";
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadWholeFile(log);
  json s1 = Summary(ReadWholeFile(log));
  ASSERT_TRUE(s1.is_object());
  EXPECT_EQ(s1["consistency"], "application");
  EXPECT_FALSE(agent.frozen());
  EXPECT_EQ(agent.freeze_count(), 1);
  EXPECT_EQ(agent.thaw_count(), 1);
  json snaps = Snapshots();
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0]["client"]["consistency"], "application") << snaps.dump();
  agent.ClearBehavior("guest-fsfreeze-freeze");
  agent.ClearBehavior("guest-fsfreeze-thaw");

  // The transaction fails (another tool's job uses Cairn's bitmap, which
  // then cannot be disabled): thawed, nothing committed, no bitmap of this
  // run left.
  auto names = CairnBitmapNames(*vm, "disk0");
  ASSERT_EQ(names.size(), 1u);
  // Dirty data keeps the throttled job busy.
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 8 * kMiB, 4 * kMiB));
  ASSERT_TRUE(WriteRandom(*vm, "disk0", 16 * kMiB, 4 * kMiB));
  auto other = vm->qmp().Execute("drive-backup", {{"job-id", "other"},
                                                  {"device", "disk0"},
                                                  {"target", dir_.Join("other.qcow2")},
                                                  {"format", "qcow2"},
                                                  {"sync", "bitmap"},
                                                  {"bitmap", names[0]},
                                                  {"bitmap-mode", "never"},
                                                  {"speed", 1}});
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto busy = Cairn({"backup", "vm", "--qmp", cairn_qmp_, "--id", "100", "--backup-time", NextTime(),
                     "--guest-agent", qga});
  EXPECT_NE(busy.exit_code, 0) << busy.output;
  EXPECT_FALSE(agent.frozen());
  EXPECT_EQ(agent.freeze_count(), 2);
  EXPECT_EQ(agent.thaw_count(), 2);
  EXPECT_EQ(Snapshots().size(), 1u);
  EXPECT_EQ(CairnBitmaps(*vm, "disk0"), 1u);
  ASSERT_TRUE(vm->qmp().Execute("block-job-cancel", {{"device", "other"}, {"force", true}}).ok());
  ASSERT_TRUE(vm->qmp().WaitEvent("BLOCK_JOB_CANCELLED", std::chrono::seconds(30)).ok());

  // The agent does not answer the freeze: --require-freeze fails cleanly
  // (and still sends a thaw, on a new connection); without it the backup
  // goes on crash-consistent.
  agent.HangOnFreeze();
  auto hung = Cairn({"backup", "vm", "--qmp", cairn_qmp_, "--id", "100", "--backup-time", NextTime(),
                     "--guest-agent", qga, "--require-freeze", "--agent-timeout", "1"});
  EXPECT_NE(hung.exit_code, 0) << hung.output;
  EXPECT_NE(hung.output.find("could not freeze"), std::string::npos) << hung.output;
  EXPECT_EQ(Snapshots().size(), 1u);
  EXPECT_EQ(CairnBitmaps(*vm, "disk0"), 1u);
  EXPECT_EQ(agent.thaw_count(), 3);
  json s2 = BackupVm({"--guest-agent", qga, "--agent-timeout", "1"});
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["consistency"], "crash");
  EXPECT_EQ(s2["mode"], "incremental");
  EXPECT_NE(last_output_.find("crash-consistent"), std::string::npos) << last_output_;
  EXPECT_EQ(Snapshots().size(), 2u);
}

// 9. `backup image` of a shut-off qcow2 twice, with an offline qemu-io
// write between: the second is incremental.
TEST_F(VmBackupTest, OfflineImageBackupIsIncremental) {
  const uint64_t size = 128 * kMiB;
  std::string img = MakeQcow2("web", size, 8);
  auto b1 = Cairn({"--output", "json", "backup", "image", "--id", "100", "--backup-time", NextTime(), img});
  ASSERT_EQ(b1.exit_code, 0) << b1.output;
  json s1 = Summary(b1.output);
  ASSERT_TRUE(s1.is_object());
  EXPECT_EQ(s1["mode"], "full");
  EXPECT_EQ(s1["disks"][0]["archive"], "web.qcow2.fidx");
  auto w = RunCommand({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 8M 64k", "-c",
                       "write -P 0x5b 100M 1M", img});
  ASSERT_EQ(w.exit_code, 0) << w.output;
  auto b2 = Cairn({"--output", "json", "backup", "image", "--id", "100", "--backup-time", NextTime(), img});
  ASSERT_EQ(b2.exit_code, 0) << b2.output;
  json s2 = Summary(b2.output);
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["mode"], "incremental") << s2.dump();
  EXPECT_EQ(U(s2, "chunks-dirty"), 2u) << s2.dump();
  std::string copy = dir_.Join("web.raw");
  auto c = RunCommand({"qemu-img", "convert", "-O", "raw", img, copy});
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_TRUE(RestoresTo(s2["snapshot"], "web.qcow2", copy));
  // qcow2 restore, compared by qemu-img.
  std::string q = dir_.Join("restored.qcow2");
  auto r = Cairn({"restore", S(s2["snapshot"]), "web.qcow2", q, "--format", "qcow2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto cmp = RunCommand({"qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", q, img});
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
}

// 9b. A file with a qcow2 header that is not a qcow2 image (its format is
// read from the header, not by qemu-img): a clear error naming the file,
// and nothing is committed.
TEST_F(VmBackupTest, DamagedQcow2ImageIsRefused) {
  std::string img = dir_.Join("broken.qcow2");
  {
    std::ofstream out(img, std::ios::binary);
    out.write("QFI\xfb\0\0\0\3", 8);
    out << std::string(1 << 20, '\xff');
  }
  auto b = Cairn({"backup", "image", "--id", "100", "--backup-time", NextTime(), img});
  EXPECT_NE(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("could not open the images"), std::string::npos) << b.output;
  EXPECT_NE(b.output.find("broken.qcow2"), std::string::npos) << b.output;
  EXPECT_TRUE(Snapshots().empty());
}

// 10. A raw disk: the bitmap is transient; after a QEMU restart the next
// backup is full and says why.
TEST_F(VmBackupTest, RawDiskBitmapIsTransient) {
  const uint64_t size = 64 * kMiB;
  std::string raw = dir_.Join("disk.raw");
  MakeMixedRaw(raw, size, 9);
  std::string spec = "driver=raw,node-name=rawdisk,file.driver=file,file.filename=" + raw;
  auto vm = StartVm({spec});
  ASSERT_NE(vm, nullptr);
  json s1 = BackupVm();
  ASSERT_TRUE(s1.is_object());
  EXPECT_EQ(s1["mode"], "full");
  ASSERT_TRUE(vm->QemuIo("rawdisk", "write -P 0x44 0 4096"));
  json s2 = BackupVm();
  ASSERT_TRUE(s2.is_object());
  EXPECT_EQ(s2["mode"], "incremental") << s2.dump();
  ASSERT_TRUE(vm->Quit());
  vm = StartVm({spec});
  ASSERT_NE(vm, nullptr);
  ASSERT_TRUE(vm->QemuIo("rawdisk", "write -P 0x45 8192 4096"));
  json s3 = BackupVm();
  ASSERT_TRUE(s3.is_object());
  EXPECT_EQ(s3["mode"], "full") << s3.dump();
  EXPECT_NE(s3["disks"][0]["reason"].get<std::string>().find("transient"), std::string::npos)
      << s3.dump();
  std::string copy = CopyDisk(*vm, "rawdisk", raw, "copy.raw");
  EXPECT_TRUE(RestoresTo(s3["snapshot"], "rawdisk", copy));
}

// `cairn bitmaps` and `cairn cleanup`.
TEST_F(VmBackupTest, BitmapsAndCleanup) {
  std::string img = MakeQcow2("disk0", 64 * kMiB, 10);
  auto vm = StartVm({client::testing::Qcow2Blockdev("disk0", img)});
  ASSERT_NE(vm, nullptr);
  auto b0 = Cairn({"--output", "json", "bitmaps", "--qmp", cairn_qmp_, "--id", "100"});
  ASSERT_EQ(b0.exit_code, 0) << b0.output;
  json j0 = json::parse(b0.output, nullptr, false);
  ASSERT_TRUE(j0.is_array()) << b0.output;
  EXPECT_EQ(j0[0]["next"], "full");
  ASSERT_TRUE(BackupVm().is_object());
  auto b1 = Cairn({"--output", "json", "bitmaps", "--qmp", cairn_qmp_, "--id", "100"});
  json j1 = json::parse(b1.output, nullptr, false);
  ASSERT_TRUE(j1.is_array()) << b1.output;
  EXPECT_EQ(j1[0]["next"], "incremental") << j1.dump();
  EXPECT_EQ(j1[0]["bitmaps"].size(), 1u);
  // A foreign bitmap is left alone by cleanup.
  ASSERT_TRUE(vm->qmp().Execute("block-dirty-bitmap-add", {{"node", "disk0"}, {"name", "other"}}).ok());
  auto c = Cairn({"cleanup", "--qmp", cairn_qmp_});
  ASSERT_EQ(c.exit_code, 0) << c.output;
  auto b2 = Cairn({"--output", "json", "bitmaps", "--qmp", cairn_qmp_});
  json j2 = json::parse(b2.output, nullptr, false);
  ASSERT_TRUE(j2.is_array()) << b2.output;
  EXPECT_TRUE(j2[0]["bitmaps"].empty());
  EXPECT_EQ(j2[0]["other-bitmaps"], json::array({"other"}));
}

}  // namespace
}  // namespace cairn::testing
