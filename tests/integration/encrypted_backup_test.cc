// Client-side encryption end to end (issue 18): the real `cairn` binary
// backs up a qcow2 image through qemu-storage-daemon into the real
// cairn-server with `--encrypt`, and restores it.
//
// The image holds a recognisable plaintext (a 16-byte marker repeated over
// several 4 MiB regions) beside random and never-written regions. Checked:
// no file of the server's data folder holds the marker; the server's verify
// passes (CRC and size); a restore with the key is byte-identical; without
// a key or with another one it fails naming the fingerprint; a second
// encrypted backup is incremental and uploads only the changed chunks; a
// changed key, or encryption turned on, means a full upload and the summary
// says so; a manifest changed on the server fails the restore; the master
// key recovers a deleted key file; the paper key restores one.

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "storage/manifest.h"
#include "storage/names.h"
#include "tests/client/qemu_testutil.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using client::testing::ReadWholeFile;
using client::testing::RunCommand;
using client::testing::ShortTempDir;
using client::testing::WriteWholeFile;
using nlohmann::json;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChunk = 4 * kMiB;
constexpr uint64_t kImageSize = 64 * kMiB;  // 16 chunks
const std::string kMarker = "CAIRN-PLAINTEXT!";  // 16 bytes
// Chunks filled with the marker (each made distinct by its first bytes),
// chunks of random data; the rest is never written (zero chunks).
constexpr uint64_t kMarkerChunks[] = {1, 5, 9, 13};
constexpr uint64_t kRandomChunks[] = {2, 6, 10};
constexpr uint64_t kZeroChunks = 16 - 4 - 3;

uint64_t U(const json& j, const char* key) { return j.value(key, uint64_t{0}); }
std::string S(const json& j) { return j.is_string() ? j.get<std::string>() : ""; }
bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Byte-for-byte comparison of two files.
::testing::AssertionResult SameFile(const std::string& a, const std::string& b) {
  std::string da = ReadWholeFile(a), db = ReadWholeFile(b);
  if (da.size() != db.size()) {
    return ::testing::AssertionFailure() << a << " has " << da.size() << " bytes, " << b << " "
                                         << db.size();
  }
  for (size_t i = 0; i < da.size(); ++i) {
    if (da[i] != db[i]) return ::testing::AssertionFailure() << a << " and " << b << " differ at byte " << i;
  }
  return ::testing::AssertionSuccess();
}

class EncryptedBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(data_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    // The client's HOME: a default key file never lands in the real one.
    home_ = dir_.Join("home");
    std::filesystem::create_directories(home_);
  }

  std::vector<std::string> Env() const {
    return {"CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
            "CAIRN_TOKEN=" + server_->AdminToken(),
            "CAIRN_FINGERPRINT=" + server_->fingerprint(), "HOME=" + home_};
  }

  CommandResult Cairn(const std::vector<std::string>& args) {
    return RunBinary("client/cairn", args, Env(), dir_.path());
  }

  // The default key file of `cairn` as this test runs it (contract §4).
  std::string DefaultKeyFile() const {
    return ::geteuid() == 0 ? "/etc/cairn/encryption-key.json"
                            : home_ + "/.config/cairn/encryption-key.json";
  }

  // A key file without passphrase at `path`; returns its fingerprint.
  std::string CreateKey(const std::string& path) {
    auto r = Cairn({"key", "create", "--kdf", "none", path});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return Fingerprint(path);
  }

  std::string Fingerprint(const std::string& key_file) {
    auto show = Cairn({"--output", "json", "key", "show", key_file});
    EXPECT_EQ(show.exit_code, 0) << show.output;
    json j = json::parse(show.output, nullptr, false);
    EXPECT_TRUE(j.is_object()) << show.output;
    return j.is_object() ? j.value("fingerprint", "") : "";
  }

  // The image: marker chunks, random chunks, zero chunks; `raw_` holds
  // its bytes for comparisons.
  void MakeImage() {
    std::string bytes(kImageSize, '\0');
    for (uint64_t c : kMarkerChunks) {
      for (uint64_t off = 0; off < kChunk; off += kMarker.size()) {
        bytes.replace(c * kChunk + off, kMarker.size(), kMarker);
      }
      bytes.replace(c * kChunk, 8, "chunk" + std::to_string(100 + c));
    }
    std::mt19937_64 rng(18);
    for (uint64_t c : kRandomChunks) {
      for (uint64_t i = 0; i < kChunk; ++i) bytes[c * kChunk + i] = static_cast<char>(rng());
    }
    raw_ = dir_.Join("source.raw");
    WriteWholeFile(raw_, bytes);
    img_ = dir_.Join("disk.qcow2");
    auto r = RunCommand({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw_, img_});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  // Writes `pattern` over [offset, offset + length) of the image, offline,
  // and the same into raw_.
  void WriteImage(uint64_t offset, uint64_t length, int pattern) {
    auto w = RunCommand({"qemu-io", "-f", "qcow2", "-c",
                         "write -P " + std::to_string(pattern) + " " + std::to_string(offset) + " " +
                             std::to_string(length),
                         img_});
    ASSERT_EQ(w.exit_code, 0) << w.output;
    std::fstream f(raw_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    std::string data(length, static_cast<char>(pattern));
    f.write(data.data(), static_cast<std::streamsize>(length));
  }

  // The next backup time: one hour after the previous one.
  std::string NextTime() {
    time_ += 3600;
    return storage::FormatSnapshotTime(time_);
  }

  // `cairn --output json backup image` with `extra`: the summary, or null.
  json Backup(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--output", "json", "backup", "image", "--id", "100",
                                     "--backup-time", NextTime()};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(img_);
    auto r = Cairn(args);
    last_output_ = r.output;
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code != 0) return nullptr;
    size_t pos = r.output.rfind("\n{");
    json j = json::parse(r.output.substr(pos == std::string::npos ? 0 : pos + 1), nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.output;
    return j.is_object() ? j : json(nullptr);
  }

  // `cairn restore SNAPSHOT disk.qcow2 TARGET` with `extra`.
  CommandResult Restore(const std::string& snapshot, const std::vector<std::string>& extra,
                        std::string* target_out = nullptr) {
    std::string target = dir_.Join("restored.raw");
    std::filesystem::remove(target);
    std::vector<std::string> args = {"restore", snapshot, "disk.qcow2", target};
    args.insert(args.end(), extra.begin(), extra.end());
    if (target_out != nullptr) *target_out = target;
    return Cairn(args);
  }

  ::testing::AssertionResult RestoresIdentical(const std::string& snapshot,
                                               const std::vector<std::string>& extra) {
    std::string target;
    auto r = Restore(snapshot, extra, &target);
    if (r.exit_code != 0) return ::testing::AssertionFailure() << "restore: " << r.output;
    return SameFile(target, raw_);
  }

  // The files of the server's data folder holding `needle`; *bytes = how
  // much was read.
  std::vector<std::string> FilesContaining(const std::string& needle, uint64_t* bytes) {
    std::vector<std::string> hits;
    *bytes = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(data_.path())) {
      if (!e.is_regular_file()) continue;
      std::string content = ReadWholeFile(e.path().string());
      *bytes += content.size();
      if (Contains(content, needle)) hits.push_back(e.path().string());
    }
    return hits;
  }

  std::string SnapshotDir(const std::string& snapshot) const {
    return data_.path() + "/stores/default/" + snapshot;
  }

  TempDir data_;
  ShortTempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::string home_;
  std::string raw_, img_;
  std::string last_output_;
  int64_t time_ = 1790000000;
};

// (a)–(e): the plaintext never reaches the server, verify passes, restores
// with the right key only, incremental uploads only what changed, a changed
// key is a full upload, a manifest changed on the server is caught.
TEST_F(EncryptedBackupTest, EncryptedBackupRestoresOnlyWithItsKey) {
  ASSERT_NO_FATAL_FAILURE(MakeImage());
  const std::string key = dir_.Join("key.json");
  const std::string fp = CreateKey(key);
  ASSERT_EQ(fp.size(), 23u) << fp;

  json s1 = Backup({"--encrypt", "--keyfile", key});
  ASSERT_TRUE(s1.is_object()) << last_output_;
  EXPECT_EQ(s1["mode"], "full") << s1.dump();
  EXPECT_EQ(s1["encrypted"], true) << s1.dump();
  EXPECT_EQ(s1["fingerprint"], fp) << s1.dump();
  EXPECT_EQ(U(s1, "chunks-zero"), kZeroChunks) << s1.dump();
  // Distinct data chunks, and the zero chunk once.
  EXPECT_EQ(U(s1, "chunks-uploaded"), 4u + 3u + 1u) << s1.dump();
  const std::string snap1 = S(s1["snapshot"]);
  auto listed = admin_->Get("/api/v1/datastores/default/snapshots?group=vm%2F100");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.Json()[0].value("encrypted", false), true) << listed.body;
  EXPECT_EQ(listed.Json()[0].value("fingerprint", ""), fp) << listed.body;

  // (a) No file the server holds contains the plaintext.
  uint64_t scanned = 0;
  EXPECT_EQ(FilesContaining(kMarker, &scanned), std::vector<std::string>{});
  EXPECT_GE(scanned, 3 * kChunk) << "the scan must have read the chunks";
  EXPECT_TRUE(Contains(ReadWholeFile(raw_), kMarker));

  // (b) The server verifies it (CRC and size).
  auto v = Cairn({"verify", snap1});
  EXPECT_EQ(v.exit_code, 0) << v.output;

  // (c) Restore with the key: identical.
  EXPECT_TRUE(RestoresIdentical(snap1, {"--keyfile", key}));

  // (d) Without a key, and with another key: clear errors, nothing written.
  if (!std::filesystem::exists(DefaultKeyFile())) {
    std::string target;
    auto no_key = Restore(snap1, {}, &target);
    EXPECT_NE(no_key.exit_code, 0);
    EXPECT_TRUE(Contains(no_key.output, "snapshot " + snap1 + " is encrypted with key " + fp +
                                            "; pass --keyfile"))
        << no_key.output;
    EXPECT_FALSE(std::filesystem::exists(target));
  }
  const std::string other = dir_.Join("other.json");
  const std::string other_fp = CreateKey(other);
  ASSERT_NE(other_fp, fp);
  auto wrong = Restore(snap1, {"--keyfile", other});
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_TRUE(Contains(wrong.output, "snapshot " + snap1 + " was encrypted with key " + fp +
                                         ", the key file has " + other_fp))
      << wrong.output;

  // (e) Two chunks changed (one had data, one was never written): the next
  // encrypted backup is incremental and uploads just those two.
  ASSERT_NO_FATAL_FAILURE(WriteImage(5 * kChunk + 4096, 64 * 1024, 0x5a));
  ASSERT_NO_FATAL_FAILURE(WriteImage(12 * kChunk, 4096, 0x5b));
  json s2 = Backup({"--encrypt", "--keyfile", key});
  ASSERT_TRUE(s2.is_object()) << last_output_;
  EXPECT_EQ(s2["mode"], "incremental") << s2.dump();
  EXPECT_EQ(U(s2, "chunks-dirty"), 2u) << s2.dump();
  EXPECT_EQ(U(s2, "chunks-uploaded"), 2u) << s2.dump();
  EXPECT_EQ(U(s2["server"], "chunks-new"), 2u) << s2.dump();
  EXPECT_EQ(U(s2, "chunks-reused"), 14u) << s2.dump();
  const std::string snap2 = S(s2["snapshot"]);
  EXPECT_TRUE(RestoresIdentical(snap2, {"--keyfile", key}));
  EXPECT_EQ(FilesContaining(kMarker, &scanned), std::vector<std::string>{});

  // A manifest changed on the server: snap2's index swapped for snap1's,
  // the manifest rewritten to match (its own checksum too). The server
  // cannot sign it: the restore refuses it before fetching a chunk.
  {
    const std::string m1_path = SnapshotDir(snap1) + "/index.json";
    const std::string m2_path = SnapshotDir(snap2) + "/index.json";
    auto m1 = storage::Manifest::Parse(ReadWholeFile(m1_path));
    auto m2 = storage::Manifest::Parse(ReadWholeFile(m2_path));
    ASSERT_TRUE(m1.ok() && m2.ok());
    ASSERT_TRUE(m2->crypt.has_value());
    std::filesystem::copy_file(SnapshotDir(snap2) + "/disk.qcow2.fidx",
                               dir_.Join("saved.fidx"));
    std::filesystem::copy_file(SnapshotDir(snap1) + "/disk.qcow2.fidx",
                               SnapshotDir(snap2) + "/disk.qcow2.fidx",
                               std::filesystem::copy_options::overwrite_existing);
    storage::Manifest changed = *m2;
    changed.archives = m1->archives;
    WriteWholeFile(m2_path, changed.ToJson());
    auto swapped = Restore(snap2, {"--keyfile", key});
    EXPECT_NE(swapped.exit_code, 0);
    EXPECT_TRUE(Contains(swapped.output, "manifest signature mismatch: the server changed the snapshot"))
        << swapped.output;
    WriteWholeFile(m2_path, m2->ToJson());
    std::filesystem::copy_file(dir_.Join("saved.fidx"), SnapshotDir(snap2) + "/disk.qcow2.fidx",
                               std::filesystem::copy_options::overwrite_existing);
    EXPECT_TRUE(RestoresIdentical(snap2, {"--keyfile", key}));
  }

  // Another key: a full upload, said in the summary; restores with that key.
  json s3 = Backup({"--encrypt", "--keyfile", other});
  ASSERT_TRUE(s3.is_object()) << last_output_;
  EXPECT_EQ(s3["mode"], "full") << s3.dump();
  EXPECT_TRUE(Contains(s3.value("crypt-change", ""), "key changed: full upload")) << s3.dump();
  EXPECT_TRUE(Contains(S(s3["disks"][0]["reason"]), "key changed: full upload")) << s3.dump();
  // Nothing taken from the previous snapshot: every distinct chunk (the
  // four marker chunks, three random, chunk 12, and the zero chunk) is sent.
  EXPECT_EQ(U(s3["server"], "chunks-known"), 0u) << s3.dump();
  EXPECT_EQ(U(s3, "chunks-uploaded"), 4u + 3u + 1u + 1u) << s3.dump();
  EXPECT_TRUE(RestoresIdentical(S(s3["snapshot"]), {"--keyfile", other}));
  // The text summary says it too.
  auto text = Cairn({"backup", "image", "--id", "100", "--backup-time", NextTime(), "--encrypt",
                     "--keyfile", key, img_});
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_TRUE(Contains(text.output, "key changed: full upload")) << text.output;
  EXPECT_TRUE(Contains(text.output, "encrypted with key " + fp)) << text.output;
}

// Plain → encrypted → plain: each switch is a full upload and says so; the
// plain snapshot restores without a key and is unaffected by one.
TEST_F(EncryptedBackupTest, TurningEncryptionOnAndOffIsAFullUpload) {
  ASSERT_NO_FATAL_FAILURE(MakeImage());
  const std::string key = dir_.Join("key.json");
  const std::string fp = CreateKey(key);
  json plain = Backup({});
  ASSERT_TRUE(plain.is_object());
  EXPECT_EQ(plain["encrypted"], false) << plain.dump();
  json on = Backup({"--encrypt", "--keyfile", key});
  ASSERT_TRUE(on.is_object());
  EXPECT_EQ(on["mode"], "full") << on.dump();
  EXPECT_TRUE(Contains(on.value("crypt-change", ""), "encryption turned on: full upload"))
      << on.dump();
  EXPECT_EQ(U(on["server"], "chunks-known"), 0u) << on.dump();
  EXPECT_EQ(U(on, "chunks-uploaded"), 4u + 3u + 1u) << on.dump();
  json off = Backup({});
  ASSERT_TRUE(off.is_object());
  EXPECT_EQ(off["mode"], "full") << off.dump();
  EXPECT_TRUE(Contains(off.value("crypt-change", ""), "encryption turned off: full upload"))
      << off.dump();
  // Every chunk is sent again, and the server already holds each (the
  // first snapshot's plain chunks): nothing new is stored.
  EXPECT_EQ(U(off, "chunks-uploaded"), 4u + 3u + 1u) << off.dump();
  EXPECT_EQ(U(off["server"], "chunks-new"), 0u) << off.dump();
  EXPECT_TRUE(RestoresIdentical(S(plain["snapshot"]), {}));
  EXPECT_TRUE(RestoresIdentical(S(off["snapshot"]), {"--keyfile", key}));
  EXPECT_TRUE(RestoresIdentical(S(on["snapshot"]), {"--keyfile", key}));
}

// (f) With --master-pubkey: the key file deleted, `cairn key recover` with
// the master private key writes a working one.
TEST_F(EncryptedBackupTest, MasterKeyRecoversADeletedKeyFile) {
  ASSERT_NO_FATAL_FAILURE(MakeImage());
  const std::string key = dir_.Join("key.json");
  const std::string fp = CreateKey(key);
  const std::string priv = dir_.Join("master.pem"), pub = dir_.Join("master.pub.pem");
  const std::string master_pass = dir_.Join("master-passphrase");
  WriteWholeFile(master_pass, "master of keys\n");
  auto m = Cairn({"key", "create-master", "--private", priv, "--public", pub, "--passphrase-file",
                  master_pass});
  ASSERT_EQ(m.exit_code, 0) << m.output;
  json s = Backup({"--encrypt", "--keyfile", key, "--master-pubkey", pub});
  ASSERT_TRUE(s.is_object()) << last_output_;
  const std::string snap = S(s["snapshot"]);
  EXPECT_TRUE(std::filesystem::exists(SnapshotDir(snap) + "/master-key.blob"));
  auto v = Cairn({"verify", snap});
  EXPECT_EQ(v.exit_code, 0) << v.output;

  std::filesystem::remove(key);
  const std::string recovered = dir_.Join("recovered.json");
  auto r = Cairn({"key", "recover", "--master-key", priv, "--passphrase-file", master_pass, snap,
                  recovered});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  struct stat st;
  ASSERT_EQ(::stat(recovered.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Fingerprint(recovered), fp);
  EXPECT_TRUE(RestoresIdentical(snap, {"--keyfile", recovered}));
  // It refuses to overwrite a key file.
  auto again = Cairn({"key", "recover", "--master-key", priv, "--passphrase-file", master_pass,
                      snap, recovered});
  EXPECT_NE(again.exit_code, 0) << again.output;
  // A snapshot without the master key's blob says so.
  json plain = Backup({"--encrypt", "--keyfile", recovered});
  ASSERT_TRUE(plain.is_object()) << last_output_;
  auto none = Cairn({"key", "recover", "--master-key", priv, "--passphrase-file", master_pass,
                     S(plain["snapshot"]), dir_.Join("none.json")});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_TRUE(Contains(none.output, "master-key.blob")) << none.output;
}

// (g) The paper key restores a key file that restores the snapshot.
TEST_F(EncryptedBackupTest, PaperkeyRestoresAWorkingKeyFile) {
  ASSERT_NO_FATAL_FAILURE(MakeImage());
  const std::string key = dir_.Join("key.json");
  const std::string passphrase = dir_.Join("passphrase");
  WriteWholeFile(passphrase, "correct horse battery staple\n");
  auto c = Cairn({"key", "create", "--kdf", "scrypt", "--passphrase-file", passphrase, key});
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const std::string fp = Fingerprint(key);
  json s = Backup({"--encrypt", "--keyfile", key, "--passphrase-file", passphrase});
  ASSERT_TRUE(s.is_object()) << last_output_;
  EXPECT_EQ(s["fingerprint"], fp);
  const std::string snap = S(s["snapshot"]);

  auto paper = Cairn({"key", "paperkey", key});
  ASSERT_EQ(paper.exit_code, 0) << paper.output;
  ASSERT_TRUE(Contains(paper.output, "-----BEGIN CAIRN PAPERKEY-----")) << paper.output;
  const std::string paper_file = dir_.Join("paper.txt");
  WriteWholeFile(paper_file, paper.output);
  std::filesystem::remove(key);
  const std::string imported = dir_.Join("imported.json");
  auto i = Cairn({"key", "import-paperkey", paper_file, imported});
  ASSERT_EQ(i.exit_code, 0) << i.output;
  EXPECT_EQ(Fingerprint(imported), fp);
  EXPECT_TRUE(RestoresIdentical(snap, {"--keyfile", imported, "--passphrase-file", passphrase}));
  // A wrong passphrase is refused as such.
  const std::string wrong = dir_.Join("wrong");
  WriteWholeFile(wrong, "not it\n");
  auto bad = Restore(snap, {"--keyfile", imported, "--passphrase-file", wrong});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(Contains(bad.output, "wrong passphrase")) << bad.output;
}

}  // namespace
}  // namespace cairn::testing
