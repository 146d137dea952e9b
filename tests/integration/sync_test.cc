// Issue 18 with two real servers on loopback: A holds plain and encrypted
// snapshots of several groups; a pull sync job on B copies them (restores
// from B are identical, manifests keep their protected part), a second run
// copies only the new snapshot and fetches only its new chunks, a run killed
// with its server resumes and ends identical, --remove-vanished follows a
// prune on A but keeps a protected snapshot, a push job from A to B does the
// same through B's backup API, and a chunk tampered on A is refused by the
// target and its snapshot not committed.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "storage/blob.h"
#include "storage/crypt_config.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"
#include "storage/names.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;
using storage::Digest;
using storage::kChunkSize;

int64_t T(const char* text) { return *storage::ParseSnapshotTime(text); }

// `img` with chunk `i` replaced by fresh random bytes of the same length.
std::string Change(std::string img, size_t i, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t begin = i * kChunkSize, end = std::min(img.size(), begin + kChunkSize);
  for (size_t p = begin; p < end; ++p) img[p] = static_cast<char>(rng());
  return img;
}

// A backup of `img` encrypted with `key`, as the client makes it: keyed
// digests, AES-GCM blobs, crypt at start and a signed finish. Returns the
// snapshot's name.
std::string EncryptedBackup(ApiClient& c, const storage::CryptConfig& key, const std::string& group,
                            int64_t time, const std::string& img) {
  const json crypt = {{"mode", "encrypt"}, {"fingerprint", key.fingerprint()}};
  auto s = c.PostJson("/api/v1/datastores/default/backup",
                      {{"group", group}, {"time", time}, {"crypt", crypt}});
  EXPECT_EQ(s.status, 201) << s.body;
  if (s.status != 201) return "";
  const std::string sid = s.Json()["session"];
  storage::FixedIndexWriter w(img.size());
  std::set<Digest> sent;
  for (size_t i = 0; i < ChunkCount(img); ++i) {
    const std::string chunk = ChunkOf(img, i);
    const Digest d = key.ChunkDigest(chunk);
    EXPECT_TRUE(w.Set(i, d).ok());
    if (!sent.insert(d).second) continue;
    auto blob = key.EncryptBlob(chunk);
    EXPECT_TRUE(blob.ok());
    auto r = c.Post("/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex() +
                        "&size=" + std::to_string(chunk.size()),
                    *blob, "application/octet-stream");
    EXPECT_TRUE(r.status == 200 || r.status == 201) << r.body;
  }
  auto bytes = w.Finish(time);
  EXPECT_TRUE(bytes.ok());
  EXPECT_EQ(c.Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx", *bytes,
                   "application/octet-stream")
                .status,
            200);
  auto index = storage::FixedIndex::Parse(*bytes);
  auto ref = storage::GroupRef::Parse(group);
  storage::Manifest m;
  m.backup_type = ref->type;
  m.backup_id = ref->id;
  m.backup_time = time;
  m.archives = {{"drive0.fidx", img.size(), index->checksum()}};
  m.crypt = storage::CryptInfo{key.fingerprint(), ""};
  json fin_crypt = crypt;
  fin_crypt["signature"] = key.Sign(storage::ManifestSigningText(m)).ToHex();
  auto fin = c.PostJson("/api/v1/backup/" + sid + "/finish",
                        {{"client", {{"tool", "sync_test"}}}, {"crypt", fin_crypt}});
  EXPECT_EQ(fin.status, 200) << fin.body;
  return fin.status == 200 ? fin.Json()["snapshot"].get<std::string>() : "";
}

// Restores an encrypted snapshot's drive0.fidx with `key`; checks every
// chunk's keyed digest. "" on failure.
std::string RestoreEncrypted(ApiClient& c, const storage::CryptConfig& key,
                             const std::string& snapshot) {
  auto r = c.PostJson("/api/v1/datastores/default/reader", {{"snapshot", snapshot}});
  EXPECT_EQ(r.status, 201) << r.body;
  if (r.status != 201) return "";
  EXPECT_EQ(r.Json()["encrypted"], true);
  const std::string rid = r.Json()["session"];
  auto idx = c.Get("/api/v1/reader/" + rid + "/archive?archive=drive0.fidx");
  auto index = storage::FixedIndex::Parse(idx.body);
  EXPECT_TRUE(index.ok());
  if (!index.ok()) return "";
  std::string img;
  for (uint64_t i = 0; i < index->chunk_count(); ++i) {
    auto ch = c.Get("/api/v1/reader/" + rid + "/chunk?digest=" + index->digest(i).ToHex());
    EXPECT_EQ(ch.status, 200) << ch.body;
    auto view = storage::ParseBlob(ch.body);
    EXPECT_TRUE(view.ok());
    if (!view.ok()) return "";
    std::string plain;
    EXPECT_TRUE(key.DecryptBlob(*view, &plain).ok());
    EXPECT_EQ(key.ChunkDigest(plain), index->digest(i));
    img += plain;
  }
  c.Delete("/api/v1/reader/" + rid);
  return img;
}

// The last JSON object a command printed (`--output json` prints it last).
json LastJson(const std::string& output) {
  const size_t at = output.rfind("\n{\n");
  if (at != std::string::npos) return json::parse(output.substr(at + 1), nullptr, false);
  return json::parse(output, nullptr, false);
}

std::string ChunkPath(const std::string& data, const Digest& d) {
  return data + "/stores/default/.chunks/" + d.ToHex().substr(0, 4) + "/" + d.ToHex();
}

void FlipByte(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x40));
}

class SyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = ServerProcess::Start(dir_a_.path());
    ASSERT_NE(a_, nullptr);
    b_ = ServerProcess::Start(dir_b_.path());
    ASSERT_NE(b_, nullptr);
    api_a_ = std::make_unique<ApiClient>(a_->port(), a_->AdminToken());
    api_b_ = std::make_unique<ApiClient>(b_->port(), b_->AdminToken());
    auto key = storage::CryptConfig::FromKey(std::string(storage::kEncryptionKeySize, '\x5a'));
    ASSERT_TRUE(key.ok());
    key_ = std::make_unique<storage::CryptConfig>(*key);
  }

  // Registers server `to` as remote `name` on `on`'s data directory, with a
  // new token of user `user` holding `role` on `to`'s default store.
  void AddRemote(const std::string& on, const std::string& name, const std::string& to,
                 const ServerProcess& to_server, const std::string& user, const std::string& role) {
    const std::string token = AddUserToken(to, user, role);
    const std::string file = work_.path() + "/" + name + ".token";
    std::ofstream(file) << token << "\n";
    auto r = RunServerCommand(on, {"remote", "add", name, "--url",
                                   "https://127.0.0.1:" + std::to_string(to_server.port()),
                                   "--fingerprint", to_server.fingerprint(), "--token-file", file});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find(token.substr(token.find(':') + 1)), std::string::npos)
        << "the secret is printed";
  }

  // `cairn-server sync-job|push-job run ID --output json` on `data` (through
  // its running server); the task JSON it prints.
  json RunJob(const std::string& data, const std::string& command, const std::string& id,
              int expect_exit = 0, bool server_runs = true) {
    auto r = RunServerCommand(data, {command, "run", id, "--output", "json"});
    EXPECT_EQ(r.exit_code, expect_exit) << r.output;
    json task = LastJson(r.output);
    EXPECT_TRUE(task.is_object()) << r.output;
    EXPECT_EQ(r.output.find("running job " + id + " on the server") != std::string::npos,
              server_runs)
        << r.output;
    return task;
  }

  // Snapshot name → its manifest's protected-sha256, on one server.
  std::map<std::string, std::string> Manifests(ApiClient& c) {
    std::map<std::string, std::string> out;
    for (const auto& s : c.Get("/api/v1/datastores/default/snapshots").Json()) {
      const std::string name = s["snapshot"];
      auto r = c.PostJson("/api/v1/datastores/default/reader", {{"snapshot", name}});
      EXPECT_EQ(r.status, 201) << r.body;
      const std::string rid = r.Json()["session"];
      auto m = c.Get("/api/v1/reader/" + rid + "/manifest");
      out[name] = m.Json()["protected-sha256"];
      c.Delete("/api/v1/reader/" + rid);
    }
    return out;
  }

  // A and B: plain vm/100 (two snapshots), vm/200 and prod:vm/300, and
  // encrypted vm/400 (two snapshots).
  void MakeSourceSnapshots() {
    img100_ = MakeImage(6, 100);
    ASSERT_NE(BackupImage(*api_a_, "vm/100", T("2026-03-01T00:00:00Z"), img100_), "");
    img100_ = Change(img100_, 0, 1001);
    ASSERT_NE(BackupImage(*api_a_, "vm/100", T("2026-03-02T00:00:00Z"), img100_), "");
    img200_ = MakeImage(4, 200);
    ASSERT_NE(BackupImage(*api_a_, "vm/200", T("2026-03-01T00:00:00Z"), img200_), "");
    img300_ = MakeImage(3, 300);
    ASSERT_NE(BackupImage(*api_a_, "prod:vm/300", T("2026-03-01T00:00:00Z"), img300_), "");
    img400_ = MakeImage(5, 400);
    ASSERT_NE(EncryptedBackup(*api_a_, *key_, "vm/400", T("2026-03-01T00:00:00Z"), img400_), "");
    img400_ = Change(img400_, 1, 4001);
    ASSERT_NE(EncryptedBackup(*api_a_, *key_, "vm/400", T("2026-03-02T00:00:00Z"), img400_), "");
  }

  TempDir dir_a_, dir_b_, work_;
  std::unique_ptr<ServerProcess> a_, b_;
  std::unique_ptr<ApiClient> api_a_, api_b_;
  std::unique_ptr<storage::CryptConfig> key_;
  std::string img100_, img200_, img300_, img400_;
};

TEST_F(SyncTest, PullCopiesEverythingThenOnlyTheNewSnapshotAndItsNewChunks) {
  MakeSourceSnapshots();
  AddRemote(dir_b_.path(), "a", dir_a_.path(), *a_, "offsite", "Reader");
  auto listed = RunServerCommand(dir_b_.path(), {"remote", "list", "--output", "json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_EQ(json::parse(listed.output)[0]["auth-id"], "offsite!t");
  EXPECT_EQ(api_b_->Get("/api/v1/remotes").Json()[0]["name"], "a");
  EXPECT_EQ(api_b_->Get("/api/v1/remotes").body.find("secret"), std::string::npos);
  auto added = RunServerCommand(dir_b_.path(),
                                {"sync-job", "add", "pull", "--remote", "a", "--remote-store",
                                 "default", "--store", "default", "--schedule", "daily",
                                 "--disabled"});
  ASSERT_EQ(added.exit_code, 0) << added.output;
  // A remote that a job uses stays.
  EXPECT_NE(RunServerCommand(dir_b_.path(), {"remote", "remove", "a"}).exit_code, 0);

  json task = RunJob(dir_b_.path(), "sync-job", "pull");
  ASSERT_EQ(task["state"], "ok") << task.dump(2);
  const json& r = task["result"];
  EXPECT_EQ(r["snapshots-copied"], 6) << r.dump(2);
  EXPECT_EQ(r["snapshots-failed"], 0);
  EXPECT_GT(r["chunks-fetched"].get<int>(), 0);

  // Restores from B are identical; manifests keep their protected part.
  EXPECT_EQ(Restore(*api_b_, "vm/100/2026-03-02T00:00:00Z", "drive0.fidx"), img100_);
  EXPECT_EQ(Restore(*api_b_, "vm/200/2026-03-01T00:00:00Z", "drive0.fidx"), img200_);
  EXPECT_EQ(Restore(*api_b_, "prod:vm/300/2026-03-01T00:00:00Z", "drive0.fidx"), img300_);
  EXPECT_EQ(RestoreEncrypted(*api_b_, *key_, "vm/400/2026-03-02T00:00:00Z"), img400_);
  EXPECT_EQ(Manifests(*api_b_), Manifests(*api_a_));
  auto groups = api_b_->Get("/api/v1/datastores/default/groups").Json();
  ASSERT_EQ(groups.size(), 4u);
  for (const auto& g : groups) EXPECT_EQ(g["owner"], "admin") << g.dump();

  // A new snapshot with one changed chunk: only it travels.
  img100_ = Change(img100_, 3, 1003);
  ASSERT_NE(BackupImage(*api_a_, "vm/100", T("2026-03-03T00:00:00Z"), img100_), "");
  task = RunJob(dir_b_.path(), "sync-job", "pull");
  ASSERT_EQ(task["state"], "ok") << task.dump(2);
  EXPECT_EQ(task["result"]["snapshots-copied"], 1) << task.dump(2);
  EXPECT_EQ(task["result"]["snapshots-present"], 6);
  EXPECT_EQ(task["result"]["chunks-fetched"], 1);
  EXPECT_EQ(task["result"]["data-bytes"], kChunkSize);
  EXPECT_EQ(Restore(*api_b_, "vm/100/2026-03-03T00:00:00Z", "drive0.fidx"), img100_);

  // Nothing new: nothing moves.
  task = RunJob(dir_b_.path(), "sync-job", "pull");
  EXPECT_EQ(task["result"]["snapshots-copied"], 0);
  EXPECT_EQ(task["result"]["chunks-fetched"], 0);
}

TEST_F(SyncTest, ATamperedChunkIsRefusedAndItsSnapshotNotCommitted) {
  const std::string img = MakeImage(3, 500);
  ASSERT_NE(BackupImage(*api_a_, "vm/500", T("2026-04-01T00:00:00Z"), img), "");
  const std::string changed = Change(img, 1, 5001);
  ASSERT_NE(BackupImage(*api_a_, "vm/500", T("2026-04-02T00:00:00Z"), changed), "");
  const std::string later = Change(changed, 2, 5002);
  ASSERT_NE(BackupImage(*api_a_, "vm/500", T("2026-04-03T00:00:00Z"), later), "");
  // The chunk only the second snapshot brought is damaged on A.
  FlipByte(ChunkPath(dir_a_.path(), storage::Sha256(ChunkOf(changed, 1))), 100);

  AddRemote(dir_b_.path(), "a", dir_a_.path(), *a_, "offsite", "Reader");
  ASSERT_EQ(RunServerCommand(dir_b_.path(), {"sync-job", "add", "pull", "--remote", "a",
                                             "--remote-store", "default", "--store", "default",
                                             "--schedule", "daily", "--disabled"})
                .exit_code,
            0);
  json task = RunJob(dir_b_.path(), "sync-job", "pull", 1);
  EXPECT_EQ(task["state"], "failed");
  const json& r = task["result"];
  EXPECT_EQ(r["snapshots-copied"], 1) << r.dump(2);
  EXPECT_EQ(r["snapshots-failed"], 1);
  EXPECT_NE(r.dump().find("was refused"), std::string::npos) << r.dump(2);
  // The first is there; neither the damaged one nor the later one (prefix).
  auto snaps = api_b_->Get("/api/v1/datastores/default/snapshots").Json();
  ASSERT_EQ(snaps.size(), 1u) << snaps.dump();
  EXPECT_EQ(snaps[0]["snapshot"], "vm/500/2026-04-01T00:00:00Z");

  // Once A's verify marks it failed, the sync skips it and copies the next.
  EXPECT_EQ(api_a_->PostTask("/api/v1/datastores/default/verify", {{"target", "vm/500"}}).status,
            500);
  task = RunJob(dir_b_.path(), "sync-job", "pull");
  // The third snapshot shares the damaged chunk: it failed verification too.
  EXPECT_EQ(task["result"]["snapshots-skipped"], 2) << task.dump(2);
  EXPECT_EQ(api_b_->Get("/api/v1/datastores/default/snapshots").Json().size(), 1u);

  // Push: B's backup API refuses the damaged chunk the same way.
  AddRemote(dir_a_.path(), "b", dir_b_.path(), *b_, "pusher", "Backup");
  ASSERT_EQ(RunServerCommand(dir_a_.path(), {"push-job", "add", "push", "--remote", "b",
                                             "--remote-store", "default", "--store", "default",
                                             "--group", "vm/600", "--schedule", "daily",
                                             "--disabled"})
                .exit_code,
            0);
  const std::string img6 = MakeImage(2, 600);
  ASSERT_NE(BackupImage(*api_a_, "vm/600", T("2026-04-01T00:00:00Z"), img6), "");
  FlipByte(ChunkPath(dir_a_.path(), storage::Sha256(ChunkOf(img6, 0))), 5000);
  task = RunJob(dir_a_.path(), "push-job", "push", 1);
  EXPECT_EQ(task["result"]["snapshots-failed"], 1) << task.dump(2);
  EXPECT_NE(task["result"].dump().find("refused chunk"), std::string::npos) << task.dump(2);
  // The group exists there (its first backup made the owner), without a snapshot.
  EXPECT_EQ(api_b_->Get("/api/v1/datastores/default/snapshots?group=vm/600").Json().size(), 0u);
}

TEST_F(SyncTest, AKilledSyncResumesAndEndsIdentical) {
  // 3 snapshots of 10 random 4 MiB chunks each (about 40 MB a snapshot), at
  // 20 MB/s: long enough to kill B in the middle.
  std::vector<std::string> imgs;
  std::string img(10 * kChunkSize, '\0');
  for (int s = 0; s < 3; ++s) {
    for (size_t i = 0; i < 10; ++i) img = Change(img, i, static_cast<uint32_t>(700 + s * 10 + i));
    imgs.push_back(img);
    ASSERT_NE(BackupImage(*api_a_, "vm/700", T("2026-05-01T00:00:00Z") + s * 86400, img), "");
  }
  AddRemote(dir_b_.path(), "a", dir_a_.path(), *a_, "offsite", "Reader");
  ASSERT_EQ(RunServerCommand(dir_b_.path(), {"sync-job", "add", "pull", "--remote", "a",
                                             "--remote-store", "default", "--store", "default",
                                             "--rate-limit", "20", "--schedule", "daily",
                                             "--disabled"})
                .exit_code,
            0);
  auto started = api_b_->PostJson("/api/v1/jobs/pull/run", json::object());
  ASSERT_EQ(started.status, 202) << started.body;
  const std::string task_id = started.Json()["task"];
  // Wait for the first snapshot to be copied and some of the second's chunks.
  bool copied_one = false;
  for (int i = 0; i < 600 && !copied_one; ++i) {
    const std::string log = api_b_->Get("/api/v1/tasks/" + task_id + "/log").body;
    copied_one = log.find("copied vm/700/2026-05-01T00:00:00Z") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(copied_one);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  b_->Stop(SIGKILL);
  b_ = ServerProcess::Start(dir_b_.path());
  ASSERT_NE(b_, nullptr);
  api_b_ = std::make_unique<ApiClient>(b_->port(), b_->AdminToken());
  EXPECT_EQ(api_b_->Get("/api/v1/tasks/" + task_id).Json()["state"], "failed");
  auto snaps = api_b_->Get("/api/v1/datastores/default/snapshots").Json();
  ASSERT_GE(snaps.size(), 1u);
  ASSERT_LE(snaps.size(), 2u);

  json task = RunJob(dir_b_.path(), "sync-job", "pull");
  ASSERT_EQ(task["state"], "ok") << task.dump(2);
  const json& r = task["result"];
  EXPECT_EQ(r["snapshots-present"].get<int>() + r["snapshots-copied"].get<int>(), 3);
  EXPECT_GE(r["snapshots-present"], 1);
  // What the killed run downloaded is not fetched again.
  EXPECT_GT(r["chunks-local"].get<int>(), 0) << r.dump(2);
  for (int s = 0; s < 3; ++s) {
    const std::string name = "vm/700/" + storage::FormatSnapshotTime(T("2026-05-01T00:00:00Z") + s * 86400);
    EXPECT_EQ(Restore(*api_b_, name, "drive0.fidx"), imgs[s]) << name;
  }
  EXPECT_EQ(Manifests(*api_b_), Manifests(*api_a_));
}

TEST_F(SyncTest, RemoveVanishedFollowsAPruneButKeepsAProtectedSnapshot) {
  const std::string img = MakeImage(2, 800);
  for (int s = 0; s < 4; ++s) {
    ASSERT_NE(BackupImage(*api_a_, "vm/800", T("2026-06-01T00:00:00Z") + s * 86400,
                          Change(img, 0, static_cast<uint32_t>(800 + s))),
              "");
  }
  AddRemote(dir_b_.path(), "a", dir_a_.path(), *a_, "offsite", "Reader");
  ASSERT_EQ(RunServerCommand(dir_b_.path(), {"sync-job", "add", "pull", "--remote", "a",
                                             "--remote-store", "default", "--store", "default",
                                             "--group", "vm/800", "--remove-vanished",
                                             "--schedule", "daily", "--disabled"})
                .exit_code,
            0);
  ASSERT_EQ(RunJob(dir_b_.path(), "sync-job", "pull")["result"]["snapshots-copied"], 4);
  const std::string kept = "vm/800/2026-06-02T00:00:00Z";
  ASSERT_EQ(api_b_->Put("/api/v1/datastores/default/snapshots/protected?snapshot=" + Q(kept),
                        {{"protected", true}})
                .status,
            200);
  ASSERT_EQ(api_a_->PostTask("/api/v1/datastores/default/prune",
                             {{"group", "vm/800"}, {"keep-last", 1}})
                .status,
            200);
  json task = RunJob(dir_b_.path(), "sync-job", "pull");
  const json& r = task["result"];
  EXPECT_EQ(r["snapshots-removed"], 2) << r.dump(2);
  EXPECT_EQ(r["snapshots-kept"], 1);
  std::set<std::string> left;
  for (const auto& s : api_b_->Get("/api/v1/datastores/default/snapshots").Json()) {
    left.insert(s["snapshot"]);
  }
  EXPECT_EQ(left, (std::set<std::string>{kept, "vm/800/2026-06-04T00:00:00Z"}));

  // With B stopped, `sync-job run` runs in the command itself. The new
  // snapshot is the first one again, whose chunk B still holds (removed
  // snapshots leave their chunks to GC): it is taken from B's own store.
  ASSERT_NE(BackupImage(*api_a_, "vm/800", T("2026-06-05T00:00:00Z"), Change(img, 0, 800)), "");
  b_->Stop(SIGTERM);
  task = RunJob(dir_b_.path(), "sync-job", "pull", 0, /*server_runs=*/false);
  EXPECT_EQ(task["result"]["snapshots-copied"], 1) << task.dump(2);
  EXPECT_EQ(task["result"]["chunks-fetched"], 0) << task.dump(2);
  EXPECT_EQ(task["result"]["chunks-local"], 1);
}

TEST_F(SyncTest, PushCopiesToTheTargetThroughItsBackupApi) {
  MakeSourceSnapshots();
  AddRemote(dir_a_.path(), "b", dir_b_.path(), *b_, "pusher", "Backup");
  ASSERT_EQ(RunServerCommand(dir_a_.path(), {"push-job", "add", "push", "--remote", "b",
                                             "--remote-store", "default", "--store", "default",
                                             "--remove-vanished", "--schedule", "daily",
                                             "--disabled"})
                .exit_code,
            0);
  json task = RunJob(dir_a_.path(), "push-job", "push");
  ASSERT_EQ(task["state"], "ok") << task.dump(2);
  EXPECT_EQ(task["result"]["snapshots-copied"], 6) << task.dump(2);
  EXPECT_EQ(Restore(*api_b_, "vm/100/2026-03-02T00:00:00Z", "drive0.fidx"), img100_);
  EXPECT_EQ(Restore(*api_b_, "prod:vm/300/2026-03-01T00:00:00Z", "drive0.fidx"), img300_);
  EXPECT_EQ(RestoreEncrypted(*api_b_, *key_, "vm/400/2026-03-02T00:00:00Z"), img400_);
  EXPECT_EQ(Manifests(*api_b_), Manifests(*api_a_));
  for (const auto& g : api_b_->Get("/api/v1/datastores/default/groups").Json()) {
    EXPECT_EQ(g["owner"], "pusher!t");
  }

  // The next push sends the new snapshot's new chunk only.
  img100_ = Change(img100_, 4, 1004);
  ASSERT_NE(BackupImage(*api_a_, "vm/100", T("2026-03-03T00:00:00Z"), img100_), "");
  task = RunJob(dir_a_.path(), "push-job", "push");
  EXPECT_EQ(task["result"]["snapshots-copied"], 1) << task.dump(2);
  EXPECT_EQ(task["result"]["chunks-fetched"], 1);
  EXPECT_EQ(Restore(*api_b_, "vm/100/2026-03-03T00:00:00Z", "drive0.fidx"), img100_);

  // --remove-vanished: a Backup token may not delete, so the vanished
  // snapshot stays (reported); with Admin on B it goes, but a protected one stays.
  ASSERT_EQ(api_a_->Delete("/api/v1/datastores/default/snapshots?snapshot=" +
                           Q("vm/100/2026-03-01T00:00:00Z"))
                .status,
            200);
  task = RunJob(dir_a_.path(), "push-job", "push");
  EXPECT_EQ(task["result"]["snapshots-removed"], 0) << task.dump(2);
  EXPECT_EQ(task["result"]["snapshots-kept"], 1);
  ASSERT_EQ(RunServerCommand(dir_b_.path(), {"acl", "set", "--store", "*", "--role", "Admin",
                                             "--auth", "pusher!t"})
                .exit_code,
            0);
  ASSERT_EQ(api_b_->Put("/api/v1/datastores/default/snapshots/protected?snapshot=" +
                            Q("vm/200/2026-03-01T00:00:00Z"),
                        {{"protected", true}})
                .status,
            200);
  ASSERT_EQ(api_a_->Delete("/api/v1/datastores/default/snapshots?snapshot=" +
                           Q("vm/200/2026-03-01T00:00:00Z"))
                .status,
            200);
  task = RunJob(dir_a_.path(), "push-job", "push");
  EXPECT_EQ(task["result"]["snapshots-removed"], 1) << task.dump(2);
  EXPECT_EQ(task["result"]["snapshots-kept"], 1);
  EXPECT_EQ(api_b_->Get("/api/v1/datastores/default/snapshots?group=vm/100").Json().size(), 2u);
  EXPECT_EQ(api_b_->Get("/api/v1/datastores/default/snapshots?group=vm/200").Json().size(), 1u);
}

TEST_F(SyncTest, RemotesApiAndBadJobsAreRefused) {
  json body = {{"name", "x"}, {"url", "https://127.0.0.1:" + std::to_string(a_->port())},
               {"fingerprint", a_->fingerprint()}, {"token", "u!t:s3cret"}};
  auto r = api_b_->PostJson("/api/v1/remotes", body);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.body.find("s3cret"), std::string::npos);
  EXPECT_EQ(api_b_->PostJson("/api/v1/remotes", body).status, 409);
  body["name"] = "y";
  body["url"] = "http://host";
  EXPECT_EQ(api_b_->PostJson("/api/v1/remotes", body).status, 400);
  // A job must name a known remote and only its own options.
  json job = {{"id", "j"}, {"kind", "sync"}, {"store", "default"}, {"schedule", "daily"},
              {"options", {{"remote", "nope"}, {"remote-store", "default"}}}};
  EXPECT_EQ(api_b_->PostJson("/api/v1/jobs", job).status, 404);
  job["options"] = {{"remote", "x"}, {"remote-store", "default"}, {"keep-last", 1}};
  EXPECT_EQ(api_b_->PostJson("/api/v1/jobs", job).status, 400);
  job["options"] = {{"remote", "x"}, {"remote-store", "default"}, {"rate-limit", 0}};
  EXPECT_EQ(api_b_->PostJson("/api/v1/jobs", job).status, 400);
  job["options"] = {{"remote", "x"}, {"remote-store", "default"}, {"groups", {"vm/1"}}};
  r = api_b_->PostJson("/api/v1/jobs", job);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.Json()["options"]["owner"], "admin");
  EXPECT_EQ(api_b_->Delete("/api/v1/remotes/x").status, 409);
  // Only Admin on "*" manages remotes.
  ApiClient store_admin(b_->port(), AddUserToken(dir_b_.path(), "sa", "Admin"));
  EXPECT_EQ(store_admin.Get("/api/v1/remotes").status, 403);
  EXPECT_EQ(api_b_->Delete("/api/v1/jobs/j").status, 200);
  EXPECT_EQ(api_b_->Delete("/api/v1/remotes/x").status, 200);
  EXPECT_EQ(api_b_->Get("/api/v1/remotes").Json().size(), 0u);
}

}  // namespace
}  // namespace cairn::testing
