// Issue 17 with the real server: hostile request bodies, encrypted-kind
// blobs under other users' digests, the first-backup ownership race, server
// paths in error messages, and per-token session limits. Each test checks
// that the server process still runs and answers afterwards (and exits
// cleanly at the end: a crash would show in its wait status).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <set>
#include <thread>

#include "storage/blob.h"
#include "storage/crc32c.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "storage/fixed_index.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;
using storage::Digest;

constexpr int64_t kT0 = 1800000000;  // 2027-01-15T08:00:00Z

// An encrypted-kind blob (CRNBLOBe, or CRNBLOBE with `zstd`) around
// `ciphertext`: valid envelope and CRC, content the server cannot check.
std::string EncryptedBlob(const std::string& ciphertext, bool zstd = false) {
  std::string rest(storage::kBlobIvSize + storage::kBlobTagSize, '\x5a');
  rest += ciphertext;
  std::string blob(storage::BlobMagic(zstd ? storage::BlobKind::kEncryptedZstd
                                           : storage::BlobKind::kEncrypted));
  const uint32_t crc = storage::Crc32c(rest);
  for (int i = 0; i < 4; ++i) blob.push_back(static_cast<char>(crc >> (8 * i)));
  return blob + rest;
}

constexpr char kKeyA[] = "1f:2e:3d:4c:5b:6a:79:88";
constexpr char kKeyB[] = "0a:0b:0c:0d:0e:0f:10:11";

// Starts an encrypted backup session (key fingerprint `fp`); the answer.
json StartEncrypted(ApiClient& c, const std::string& group, int64_t time, const std::string& fp) {
  auto r = c.PostJson("/api/v1/datastores/default/backup",
                      {{"group", group}, {"time", time},
                       {"crypt", {{"mode", "encrypt"}, {"fingerprint", fp}}}});
  EXPECT_EQ(r.status, 201) << r.body;
  return r.Json();
}

json FinishCrypt(const std::string& fp) {
  return {{"crypt", {{"mode", "encrypt"}, {"fingerprint", fp},
                     {"signature", storage::Sha256("signature").ToHex()}}}};
}

std::string ChunkUrl(const std::string& sid, const Digest& d, size_t size) {
  return "/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex() + "&size=" + std::to_string(size);
}

// The bytes of a fixed index naming `digests` (chunks of 4 MiB, the last
// `last_size` bytes).
std::string IndexOf(const std::vector<Digest>& digests, uint64_t last_size) {
  return FixedIndexBytes(digests, (digests.size() - 1) * storage::kChunkSize + last_size);
}

class HostileDataTest : public LiveServerTest {
 protected:

  std::string AddToken(const std::string& user, const std::string& role) {
    return AddUserToken(dir_.path(), user, role);
  }

  std::string ChunkFile(const Digest& d) const {
    return StorePath() + "/.chunks/" + d.ToHex().substr(0, 4) + "/" + d.ToHex();
  }

  // Waits for a task to end; returns its final JSON.
  json WaitTask(ApiClient& c, const std::string& id) {
    for (int i = 0; i < 600; ++i) {
      auto t = c.Get("/api/v1/tasks/" + id);
      EXPECT_EQ(t.status, 200) << t.body;
      if (t.status != 200) return json();
      if (t.Json()["state"] != "running") return t.Json();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "task " << id << " did not end";
    return json();
  }

  // The owner the server reports for `group` (admin's view of the groups).
  std::string OwnerOf(const std::string& group) {
    auto g = admin_->Get("/api/v1/datastores/default/groups");
    EXPECT_EQ(g.status, 200) << g.body;
    for (const auto& e : g.Json()) {
      if (e["group"] == group) return e["owner"].is_string() ? e["owner"].get<std::string>() : "";
    }
    return "";
  }
};

// Item 1: a verify body nested a million deep, and client info nested 10^5
// and 10^6 deep at finish, are refused with 400 before anything copies them;
// the server keeps running, with its sessions.
TEST_F(HostileDataTest, DeeplyNestedJsonIsRefusedAndTheServerLives) {
  ApiClient reader(server_->port(), AddToken("carol", "Reader"));
  // A session that must survive everything below.
  std::string img = MakeImage(2, 11);
  std::string sid = StartBackup(*admin_, "vm/100", kT0)["session"];
  UploadImage(*admin_, sid, "drive0.fidx", img, {});

  const std::string million = std::string(1000000, '[') + std::string(1000000, ']');
  auto v = reader.Post("/api/v1/datastores/default/verify",
                       "{\"target\":\"vm/999\",\"x\":" + million + "}");
  // 2 MB: over the 1 MiB JSON body bound: 400 from the parser's bound, or
  // 413 when the connection gate refuses it unread (the client may then
  // see the connection closed while it still writes: -1).
  auto refused = [](const ApiClient::Response& r) {
    return r.status == 400 || r.status == 413 || r.status == -1;
  };
  EXPECT_TRUE(refused(v)) << v.status << " " << v.body.substr(0, 200);
  ASSERT_TRUE(Alive());
  // Under the size bound, the depth bound refuses it.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  v = reader.Post("/api/v1/datastores/default/verify", "{\"target\":\"vm/999\",\"x\":" + deep + "}");
  EXPECT_EQ(v.status, 400) << v.body.substr(0, 200);
  EXPECT_NE(v.body.find("deeper than 64"), std::string::npos) << v.body.substr(0, 200);
  ASSERT_TRUE(Alive());

  // Finish with client info 10^5 deep after an index.
  auto fin = admin_->Post("/api/v1/backup/" + sid + "/finish", "{\"client\":{\"a\":" + deep + "}}");
  EXPECT_EQ(fin.status, 400) << fin.body.substr(0, 200);
  ASSERT_TRUE(Alive());
  // ... and 10^6 deep in a session with no archive.
  std::string sid2 = StartBackup(*admin_, "vm/101", kT0)["session"];
  fin = admin_->Post("/api/v1/backup/" + sid2 + "/finish", "{\"client\":{\"a\":" + million + "}}");
  EXPECT_TRUE(refused(fin)) << fin.status << " " << fin.body.substr(0, 200);
  ASSERT_TRUE(Alive());

  // Client info: at most 16 levels (the object itself is one) and 64 KiB.
  auto nested = [](int levels) {
    json j = 1;
    for (int i = 0; i < levels; ++i) j = json::object({{"d", j}});
    return j;
  };
  fin = admin_->PostJson("/api/v1/backup/" + sid + "/finish", {{"client", nested(17)}});
  EXPECT_EQ(fin.status, 400) << fin.body;
  fin = admin_->PostJson("/api/v1/backup/" + sid + "/finish",
                         {{"client", {{"note", std::string(70000, 'n')}}}});
  EXPECT_EQ(fin.status, 400) << fin.body;
  // The first session is intact and commits with acceptable client info.
  fin = admin_->PostJson("/api/v1/backup/" + sid + "/finish", {{"client", nested(16)}});
  ASSERT_EQ(fin.status, 200) << fin.body;
  EXPECT_EQ(Restore(*admin_, "vm/100/2027-01-15T08:00:00Z", "drive0.fidx"), img);
}

// Item 2: bob uploads an encrypted-kind blob under the digest of alice's
// chunk; it is refused, registers nothing, and an index of bob's naming the
// digest is refused. Alice's chunk is untouched.
TEST_F(HostileDataTest, EncryptedKindUnderAnotherUsersDigestRegistersNothing) {
  ApiClient alice(server_->port(), AddToken("alice", "Backup"));
  ApiClient bob(server_->port(), AddToken("bob", "Backup"));
  std::string img = MakeImage(2, 12);  // chunk 0: 4 MiB of random data
  ASSERT_NE(BackupImage(alice, "vm/200", kT0, img), "");
  const std::string secret = ChunkOf(img, 0);
  const Digest d = storage::Sha256(secret);
  const auto before = storage::Env::Default()->Stat(ChunkFile(d));
  ASSERT_TRUE(before.ok());

  std::string sid = StartBackup(bob, "vm/300", kT0)["session"];
  for (bool zstd : {false, true}) {
    auto up = bob.Post(ChunkUrl(sid, d, secret.size()),
                       EncryptedBlob(std::string(secret.size(), 'g'), zstd),
                       "application/octet-stream");
    EXPECT_EQ(up.status, 400) << up.body;
    EXPECT_NE(up.body.find("unencrypted backup"), std::string::npos) << up.body;
  }
  auto stats = bob.Get("/api/v1/backup/" + sid + "/stats");
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(stats.Json()["chunks-uploaded"], 0);
  auto idx = bob.Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx",
                      IndexOf({d}, secret.size()), "application/octet-stream");
  EXPECT_EQ(idx.status, 400) << idx.body;
  EXPECT_NE(idx.body.find(d.ToHex()), std::string::npos) << idx.body;
  EXPECT_EQ(bob.PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 400);
  EXPECT_EQ(bob.Get("/api/v1/datastores/default/snapshots?group=vm/300").Json().size(), 0u);

  const auto after = storage::Env::Default()->Stat(ChunkFile(d));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size, before->size);
  EXPECT_EQ(Restore(alice, "vm/200/2027-01-15T08:00:00Z", "drive0.fidx"), img);
  ASSERT_TRUE(Alive());
}

// Issue 18: an encrypted session keeps to its domain. Bob, with a key of
// his own, uploads under the digest of alice's chunk (which anyone who knows
// her data can compute): 409, nothing registered, her chunk untouched, so
// he can neither read it through an index of his nor displace it. His own
// encrypted chunks are stored, committed, listed as encrypted, served to
// him and verified by CRC and size.
TEST_F(HostileDataTest, EncryptedSessionKeepsToItsOwnDomain) {
  ApiClient alice(server_->port(), AddToken("alice", "Backup"));
  ApiClient bob(server_->port(), AddToken("bob", "Backup"));
  std::string img = MakeImage(2, 31);
  ASSERT_NE(BackupImage(alice, "vm/200", kT0, img), "");
  const std::string secret = ChunkOf(img, 0);
  const Digest d = storage::Sha256(secret);
  const auto before = storage::Env::Default()->Stat(ChunkFile(d));
  ASSERT_TRUE(before.ok());

  std::string sid = StartEncrypted(bob, "vm/300", kT0, kKeyA)["session"];
  // A plain chunk has no place in an encrypted backup.
  auto plain = bob.Post(ChunkUrl(sid, d, secret.size()), storage::EncodeBlob(secret),
                        "application/octet-stream");
  EXPECT_EQ(plain.status, 400) << plain.body;
  for (bool zstd : {false, true}) {
    const size_t ct = zstd ? secret.size() / 2 : secret.size();
    auto up = bob.Post(ChunkUrl(sid, d, secret.size()), EncryptedBlob(std::string(ct, 'g'), zstd),
                       "application/octet-stream");
    EXPECT_EQ(up.status, 409) << up.body;
  }
  auto stats = bob.Get("/api/v1/backup/" + sid + "/stats");
  ASSERT_EQ(stats.status, 200);
  EXPECT_EQ(stats.Json()["chunks-uploaded"], 0);
  auto idx = bob.Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx",
                      IndexOf({d}, secret.size()), "application/octet-stream");
  EXPECT_EQ(idx.status, 400) << idx.body;
  const auto after = storage::Env::Default()->Stat(ChunkFile(d));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size, before->size);

  // His own chunks: the size must fit (CRNBLOBE strictly shorter).
  const Digest k = storage::Sha256("bob's keyed digest");
  const std::string ciphertext(5000, 'c');
  EXPECT_EQ(bob.Post(ChunkUrl(sid, k, 5000), EncryptedBlob(ciphertext, true),
                     "application/octet-stream").status, 400);
  EXPECT_EQ(bob.Post(ChunkUrl(sid, k, 4999), EncryptedBlob(ciphertext),
                     "application/octet-stream").status, 400);
  const std::string mine = EncryptedBlob(ciphertext);
  auto up = bob.Post(ChunkUrl(sid, k, 5000), mine, "application/octet-stream");
  ASSERT_EQ(up.status, 201) << up.body;
  ASSERT_EQ(bob.Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx", IndexOf({k}, 5000),
                     "application/octet-stream").status, 200);
  // Finish needs crypt, with the key the session started with.
  EXPECT_EQ(bob.PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 400);
  EXPECT_EQ(bob.PostJson("/api/v1/backup/" + sid + "/finish", FinishCrypt(kKeyB)).status, 400);
  json bad_sig = FinishCrypt(kKeyA);
  bad_sig["crypt"]["signature"] = "xyz";
  EXPECT_EQ(bob.PostJson("/api/v1/backup/" + sid + "/finish", bad_sig).status, 400);
  auto fin = bob.PostJson("/api/v1/backup/" + sid + "/finish", FinishCrypt(kKeyA));
  ASSERT_EQ(fin.status, 200) << fin.body;
  const std::string snap = fin.Json()["snapshot"];

  auto list = bob.Get("/api/v1/datastores/default/snapshots?group=vm/300");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.Json().size(), 1u);
  EXPECT_EQ(list.Json()[0]["encrypted"], true);
  EXPECT_EQ(list.Json()[0]["fingerprint"], kKeyA);
  auto alist = alice.Get("/api/v1/datastores/default/snapshots?group=vm/200");
  EXPECT_EQ(alist.Json()[0]["encrypted"], false);
  EXPECT_TRUE(alist.Json()[0]["fingerprint"].is_null());

  auto r = bob.PostJson("/api/v1/datastores/default/reader", {{"snapshot", snap}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.Json()["encrypted"], true);
  std::string rid = r.Json()["session"];
  auto ch = bob.Get("/api/v1/reader/" + rid + "/chunk?digest=" + k.ToHex());
  ASSERT_EQ(ch.status, 200) << ch.body;
  EXPECT_TRUE(ch.body == mine);
  auto m = bob.Get("/api/v1/reader/" + rid + "/manifest");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.Json()["crypt"]["fingerprint"], kKeyA);

  auto v = bob.PostJson("/api/v1/datastores/default/verify", {{"target", snap}});
  ASSERT_EQ(v.status, 202) << v.body;
  json task = WaitTask(bob, v.Json()["task"]);
  EXPECT_EQ(task["state"], "ok") << task.dump();
  EXPECT_EQ(Restore(alice, "vm/200/2027-01-15T08:00:00Z", "drive0.fidx"), img);
  ASSERT_TRUE(Alive());
}

// Issue 18: bob stores an encrypted blob under the digest of data alice
// backs up later (he guessed her data). Alice's verified upload replaces it;
// her backup restores and verifies; bob's snapshot cannot serve him her
// plaintext (its manifest declares only encrypted chunks) and fails verify.
TEST_F(HostileDataTest, EncryptedChunkUnderAFutureDigestIsReplacedAndServesNothing) {
  ApiClient alice(server_->port(), AddToken("alice", "Backup"));
  ApiClient bob(server_->port(), AddToken("bob", "Backup"));
  std::string img = MakeImage(2, 32);
  const std::string chunk = ChunkOf(img, 0);
  const Digest d0 = storage::Sha256(chunk);

  std::string sid = StartEncrypted(bob, "vm/300", kT0, kKeyB)["session"];
  auto up = bob.Post(ChunkUrl(sid, d0, chunk.size()), EncryptedBlob(std::string(chunk.size(), 'p')),
                     "application/octet-stream");
  ASSERT_EQ(up.status, 201) << up.body;
  ASSERT_EQ(bob.Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx",
                     IndexOf({d0}, chunk.size()), "application/octet-stream").status, 200);
  auto fin = bob.PostJson("/api/v1/backup/" + sid + "/finish", FinishCrypt(kKeyB));
  ASSERT_EQ(fin.status, 200) << fin.body;
  const std::string bob_snap = fin.Json()["snapshot"];

  std::string asid = StartBackup(alice, "vm/200", kT0)["session"];
  auto r = alice.Post(ChunkUrl(asid, d0, chunk.size()), storage::EncodeBlob(chunk),
                      "application/octet-stream");
  EXPECT_EQ(r.status, 201) << r.body;  // stored: it replaced bob's file
  UploadImage(alice, asid, "drive0.fidx", img, {d0});
  auto afin = alice.PostJson("/api/v1/backup/" + asid + "/finish", json::object());
  ASSERT_EQ(afin.status, 200) << afin.body;
  EXPECT_EQ(Restore(alice, afin.Json()["snapshot"], "drive0.fidx"), img);

  auto rd = bob.PostJson("/api/v1/datastores/default/reader", {{"snapshot", bob_snap}});
  ASSERT_EQ(rd.status, 201) << rd.body;
  auto ch = bob.Get("/api/v1/reader/" + rd.Json()["session"].get<std::string>() +
                    "/chunk?digest=" + d0.ToHex());
  EXPECT_EQ(ch.status, 400) << ch.body;
  EXPECT_EQ(ch.body.find(chunk.substr(0, 64)), std::string::npos);
  auto v = bob.PostJson("/api/v1/datastores/default/verify", {{"target", bob_snap}});
  ASSERT_EQ(v.status, 202) << v.body;
  EXPECT_EQ(WaitTask(bob, v.Json()["task"])["state"], "failed");
  ASSERT_TRUE(Alive());
}

// Issue 18: a previous snapshot made with another key (or none) is named in
// the start answer with its key, but its index is not offered: its chunks
// are of another domain, the client must send everything.
TEST_F(HostileDataTest, PreviousSnapshotOfAnotherKeyIsNotABase) {
  json s1 = StartEncrypted(*admin_, "vm/500", kT0, kKeyA);
  std::string sid = s1["session"];
  const Digest k = storage::Sha256("k");
  ASSERT_EQ(admin_->Post(ChunkUrl(sid, k, 100), EncryptedBlob(std::string(100, 'x')),
                         "application/octet-stream").status, 201);
  ASSERT_EQ(admin_->Post("/api/v1/backup/" + sid + "/index?archive=drive0.fidx", IndexOf({k}, 100),
                         "application/octet-stream").status, 200);
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", FinishCrypt(kKeyA)).status, 200);

  json other = StartEncrypted(*admin_, "vm/500", kT0 + 10, kKeyB);
  EXPECT_EQ(other["previous"]["crypt"]["fingerprint"], kKeyA) << other.dump();
  auto prev = admin_->Get("/api/v1/backup/" + other["session"].get<std::string>() +
                          "/previous-index?archive=drive0.fidx");
  EXPECT_EQ(prev.status, 409) << prev.body;
  ASSERT_EQ(admin_->Post("/api/v1/backup/" + other["session"].get<std::string>() + "/abort", "")
                .status, 200);
  json plain = StartBackup(*admin_, "vm/500", kT0 + 20);
  EXPECT_EQ(admin_->Get("/api/v1/backup/" + plain["session"].get<std::string>() +
                        "/previous-index?archive=drive0.fidx").status, 409);
  ASSERT_EQ(admin_->Post("/api/v1/backup/" + plain["session"].get<std::string>() + "/abort", "")
                .status, 200);
  json same = StartEncrypted(*admin_, "vm/500", kT0 + 30, kKeyA);
  auto ok = admin_->Get("/api/v1/backup/" + same["session"].get<std::string>() +
                        "/previous-index?archive=drive0.fidx");
  EXPECT_EQ(ok.status, 200) << ok.body;
  // A bad crypt at start is refused.
  auto bad = admin_->PostJson("/api/v1/datastores/default/backup",
                              {{"group", "vm/501"}, {"crypt", {{"mode", "encrypt"}, {"fingerprint", "AB"}}}});
  EXPECT_EQ(bad.status, 400) << bad.body;
}

// Item 3: bob uploads an encrypted-kind blob under the digest of data alice
// backs up later; it is refused, alice's chunk is stored for real, and her
// backup restores byte for byte and verifies ok. An encrypted-kind file that
// is on disk already (an older server, a hostile hand) is replaced by
// alice's verified upload the same way.
TEST_F(HostileDataTest, EncryptedKindCannotPoisonAFutureBackup) {
  ApiClient alice(server_->port(), AddToken("alice", "Backup"));
  ApiClient bob(server_->port(), AddToken("bob", "Backup"));
  std::string img = MakeImage(3, 13);  // random, text, zero chunks
  const Digest d0 = storage::Sha256(ChunkOf(img, 0));
  const Digest d1 = storage::Sha256(ChunkOf(img, 1));

  std::string sid = StartBackup(bob, "vm/300", kT0)["session"];
  auto up = bob.Post(ChunkUrl(sid, d0, storage::kChunkSize),
                     EncryptedBlob(std::string(storage::kChunkSize, 'p')),
                     "application/octet-stream");
  EXPECT_EQ(up.status, 400) << up.body;
  EXPECT_FALSE(storage::Env::Default()->Stat(ChunkFile(d0)).ok());
  ASSERT_EQ(bob.Post("/api/v1/backup/" + sid + "/abort", "").status, 200);

  // Planted directly, as if an older server had accepted it.
  ASSERT_TRUE(storage::CreateDirAll(storage::Env::Default(),
                                    StorePath() + "/.chunks/" + d1.ToHex().substr(0, 4))
                  .ok());
  ASSERT_TRUE(storage::WriteFileAtomic(storage::Env::Default(), ChunkFile(d1),
                                       EncryptedBlob(std::string(storage::kChunkSize, 'q')), false)
                  .ok());

  std::string asid = StartBackup(alice, "vm/200", kT0)["session"];
  for (size_t i : {0, 1}) {
    std::string chunk = ChunkOf(img, i);
    auto r = alice.Post(ChunkUrl(asid, storage::Sha256(chunk), chunk.size()),
                        storage::EncodeBlob(chunk), "application/octet-stream");
    EXPECT_EQ(r.status, 201) << "chunk " << i << ": " << r.body;  // stored, not "existed"
  }
  std::set<Digest> sent = {d0, d1};
  UploadImage(alice, asid, "drive0.fidx", img, sent);
  auto fin = alice.PostJson("/api/v1/backup/" + asid + "/finish", json::object());
  ASSERT_EQ(fin.status, 200) << fin.body;
  const std::string snap = fin.Json()["snapshot"];
  EXPECT_EQ(Restore(alice, snap, "drive0.fidx"), img);

  auto v = alice.PostJson("/api/v1/datastores/default/verify", {{"target", snap}});
  ASSERT_EQ(v.status, 202) << v.body;
  json task = WaitTask(alice, v.Json()["task"]);
  EXPECT_EQ(task["state"], "ok") << task.dump();
  auto list = alice.Get("/api/v1/datastores/default/snapshots?group=vm/200");
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.Json().size(), 1u);
  EXPECT_EQ(list.Json()[0]["verify"]["state"], "ok");
  ASSERT_TRUE(Alive());
}

// Verify reports a snapshot failed when a chunk it references is of a kind
// its manifest does not declare, and a reader does not serve that chunk.
TEST_F(HostileDataTest, UndeclaredEncryptedKindChunkFailsVerifyAndIsNotServed) {
  std::string img = MakeImage(2, 14);
  std::string snap = BackupImage(*admin_, "vm/400", kT0, img);
  ASSERT_NE(snap, "");
  const Digest d0 = storage::Sha256(ChunkOf(img, 0));
  ASSERT_TRUE(storage::WriteFileAtomic(storage::Env::Default(), ChunkFile(d0),
                                       EncryptedBlob(std::string(storage::kChunkSize, 'z')), false)
                  .ok());
  auto r = admin_->PostJson("/api/v1/datastores/default/reader", {{"snapshot", snap}});
  ASSERT_EQ(r.status, 201) << r.body;
  std::string rid = r.Json()["session"];
  auto ch = admin_->Get("/api/v1/reader/" + rid + "/chunk?digest=" + d0.ToHex());
  EXPECT_EQ(ch.status, 400) << ch.body;
  EXPECT_NE(ch.body.find("does not declare"), std::string::npos) << ch.body;

  auto v = admin_->PostJson("/api/v1/datastores/default/verify", {{"target", snap}});
  ASSERT_EQ(v.status, 202) << v.body;
  json task = WaitTask(*admin_, v.Json()["task"]);
  EXPECT_EQ(task["state"], "failed") << task.dump();
  auto log = admin_->Get("/api/v1/tasks/" + task["id"].get<std::string>() + "/log");
  EXPECT_NE(log.body.find("does not declare"), std::string::npos) << log.body;
  // The next backup is offered no base (its base failed) and heals the chunk.
  json s2 = StartBackup(*admin_, "vm/400", kT0 + 100);
  EXPECT_TRUE(s2["previous"].is_null()) << s2.dump();
  std::string sid2 = s2["session"];
  UploadImage(*admin_, sid2, "drive0.fidx", img, {});
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid2 + "/finish", json::object()).status, 200);
  EXPECT_EQ(Restore(*admin_, snap, "drive0.fidx"), img);
}

// Item 4: two Backup tokens start the first backup of a fresh group at the
// same moment, 50 times; whoever gets the session is the group's owner, and
// the other does not get a session.
TEST_F(HostileDataTest, FirstBackupRaceGivesTheSessionToTheOwner) {
  const std::string tokens[2] = {AddToken("alice", "Backup"), AddToken("bob", "Backup")};
  const std::string auth_ids[2] = {"alice!t", "bob!t"};
  ApiClient clients[2] = {ApiClient(server_->port(), tokens[0]),
                          ApiClient(server_->port(), tokens[1])};
  for (auto& c : clients) ASSERT_EQ(c.Get("/api/v1/status").status, 200);  // connected
  int wins[2] = {0, 0};
  for (int round = 0; round < 50; ++round) {
    const std::string group = "vm/race" + std::to_string(round);
    std::atomic<int> ready{0};
    ApiClient::Response res[2];
    std::thread threads[2];
    for (int i = 0; i < 2; ++i) {
      threads[i] = std::thread([&, i] {
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        res[i] = clients[i].PostJson("/api/v1/datastores/default/backup",
                                     {{"group", group}, {"time", kT0}});
      });
    }
    for (auto& t : threads) t.join();
    const int winner = res[0].status == 201 ? 0 : res[1].status == 201 ? 1 : -1;
    ASSERT_NE(winner, -1) << "round " << round << ": " << res[0].status << " " << res[0].body
                          << " / " << res[1].status << " " << res[1].body;
    const int loser = 1 - winner;
    EXPECT_NE(res[loser].status, 201) << "round " << round;
    EXPECT_TRUE(res[loser].status == 403 || res[loser].status == 409)
        << "round " << round << ": " << res[loser].status << " " << res[loser].body;
    EXPECT_EQ(OwnerOf(group), auth_ids[winner]) << "round " << round;
    ++wins[winner];
    // The owner's session works; the other may not touch the group.
    std::string sid = res[winner].Json()["session"];
    std::string img = MakeImage(1, 100 + static_cast<uint32_t>(round));
    UploadImage(clients[winner], sid, "drive0.fidx", img, {});
    ASSERT_EQ(clients[winner].PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status,
              200);
    EXPECT_EQ(clients[loser]
                  .PostJson("/api/v1/datastores/default/reader",
                            {{"snapshot", group + "/2027-01-15T08:00:00Z"}})
                  .status,
              403);
  }
  std::cout << "first-backup race: alice won " << wins[0] << ", bob won " << wins[1] << "\n";
  ASSERT_TRUE(Alive());
}

// Item 8: the task log past its end, and previous-index's 404, answer 4xx or
// an empty 200 with no server path; a 5xx says only that it is one.
TEST_F(HostileDataTest, ErrorsCarryNoServerPaths) {
  ApiClient reader(server_->port(), AddToken("carol", "Reader"));
  std::string img = MakeImage(2, 15);
  std::string snap = BackupImage(*admin_, "vm/500", kT0, img);
  ASSERT_NE(snap, "");
  auto v = reader.PostJson("/api/v1/datastores/default/verify", {{"target", snap}});
  ASSERT_EQ(v.status, 202) << v.body;
  const std::string task = v.Json()["task"];
  WaitTask(reader, task);

  const std::string data_dir = dir_.path();
  auto no_path = [&](const ApiClient::Response& r) {
    return r.body.find(data_dir) == std::string::npos &&
           r.body.find("/stores/") == std::string::npos &&
           r.body.find("/tasks/") == std::string::npos;
  };
  for (const char* offset : {"9223372036854775807", "18446744073709551615", "100000000"}) {
    auto log = reader.Get("/api/v1/tasks/" + task + "/log?offset=" + offset);
    EXPECT_TRUE(log.status == 200 || log.status == 400) << offset << ": " << log.status << " "
                                                        << log.body;
    if (log.status == 200) {
      EXPECT_EQ(log.body, "") << offset;
    }
    EXPECT_TRUE(no_path(log)) << log.body;
  }
  auto bad = reader.Get("/api/v1/tasks/" + task + "/log?offset=18446744073709551616");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(reader.Get("/api/v1/tasks/" + task + "/log?offset=0").status, 200);

  // previous-index: an archive the previous snapshot does not have.
  std::string sid = StartBackup(*admin_, "vm/500", kT0 + 100)["session"];
  auto prev = admin_->Get("/api/v1/backup/" + sid + "/previous-index?archive=other.fidx");
  EXPECT_EQ(prev.status, 404) << prev.body;
  EXPECT_TRUE(no_path(prev)) << prev.body;
  EXPECT_NE(prev.body.find("has no archive other.fidx"), std::string::npos) << prev.body;
  // A group without snapshots, and a missing group.
  EXPECT_EQ(admin_->Get("/api/v1/datastores/default/snapshots?group=vm/999").status, 404);
  EXPECT_TRUE(no_path(admin_->Get("/api/v1/datastores/default/snapshots?group=vm/999")));
  // A reader of a snapshot whose chunk file went missing.
  const Digest d0 = storage::Sha256(ChunkOf(img, 0));
  auto r = admin_->PostJson("/api/v1/datastores/default/reader", {{"snapshot", snap}});
  ASSERT_EQ(r.status, 201);
  ASSERT_TRUE(storage::Env::Default()->RemoveFile(ChunkFile(d0)).ok());
  auto ch = admin_->Get("/api/v1/reader/" + r.Json()["session"].get<std::string>() +
                        "/chunk?digest=" + d0.ToHex());
  EXPECT_EQ(ch.status, 404) << ch.body;
  EXPECT_TRUE(no_path(ch)) << ch.body;

  // A real server fault: the task's log file replaced by a unix socket
  // (opening it fails with ENXIO). 500, a generic message, the details in
  // the server's log.
  const std::string log_path = data_dir + "/tasks/" + task + ".log";
  ASSERT_TRUE(storage::Env::Default()->RemoveFile(log_path).ok());
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(log_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, log_path.c_str(), log_path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  auto fault = reader.Get("/api/v1/tasks/" + task + "/log?offset=0");
  ::close(sock);
  EXPECT_EQ(fault.status, 500) << fault.body;
  EXPECT_TRUE(no_path(fault)) << fault.body;
  EXPECT_NE(fault.body.find("internal error; see the server log"), std::string::npos)
      << fault.body;
  EXPECT_NE(server_->Log().find("log of task " + task), std::string::npos) << server_->Log();
}

// Per-token limits: the 9th backup session of one token is refused (429)
// while another token still works; ending a session frees its slot. The same
// for the 17th reader session.
TEST_F(HostileDataTest, PerTokenSessionLimits) {
  ApiClient alice(server_->port(), AddToken("alice", "Backup"));
  ApiClient bob(server_->port(), AddToken("bob", "Backup"));
  std::vector<std::string> sids;
  for (int i = 0; i < 8; ++i) {
    sids.push_back(StartBackup(alice, "vm/" + std::to_string(600 + i), kT0)["session"]);
  }
  auto ninth = alice.PostJson("/api/v1/datastores/default/backup",
                              {{"group", "vm/608"}, {"time", kT0}});
  EXPECT_EQ(ninth.status, 429) << ninth.body;
  EXPECT_NE(ninth.body.find("per-token limit"), std::string::npos) << ninth.body;
  std::string img = MakeImage(1, 16);
  ASSERT_NE(BackupImage(bob, "vm/700", kT0, img), "");
  ASSERT_EQ(alice.Post("/api/v1/backup/" + sids.back() + "/abort", "").status, 200);
  sids.pop_back();
  sids.push_back(StartBackup(alice, "vm/608", kT0)["session"]);
  for (const auto& sid : sids) ASSERT_EQ(alice.Post("/api/v1/backup/" + sid + "/abort", "").status, 200);

  ASSERT_NE(BackupImage(alice, "vm/800", kT0, img), "");
  const std::string snap = "vm/800/2027-01-15T08:00:00Z";
  std::vector<std::string> rids;
  for (int i = 0; i < 16; ++i) {
    auto r = alice.PostJson("/api/v1/datastores/default/reader", {{"snapshot", snap}});
    ASSERT_EQ(r.status, 201) << r.body;
    rids.push_back(r.Json()["session"]);
  }
  auto seventeenth = alice.PostJson("/api/v1/datastores/default/reader", {{"snapshot", snap}});
  EXPECT_EQ(seventeenth.status, 429) << seventeenth.body;
  EXPECT_EQ(Restore(bob, "vm/700/2027-01-15T08:00:00Z", "drive0.fidx"), img);
  ASSERT_EQ(alice.Delete("/api/v1/reader/" + rids.back()).status, 200);
  EXPECT_EQ(Restore(alice, snap, "drive0.fidx"), img);
  ASSERT_TRUE(Alive());
}

}  // namespace
}  // namespace cairn::testing
