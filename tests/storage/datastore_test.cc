#include "storage/datastore.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/storage/datastore_testutil.h"
#include "tests/storage/fault_env_testutil.h"

namespace cairn::storage {
namespace {

// 2026-11-21T17:50:38Z and neighbours.
constexpr int64_t kT0 = 1795283438;

using Archives = std::map<std::string, std::string>;  // name -> bytes

SnapshotRef Ref(std::vector<std::string> ns, std::string type, std::string id, int64_t t) {
  return SnapshotRef{GroupRef{std::move(ns), std::move(type), std::move(id)}, t};
}

// A manifest describing `archives` as StagedSnapshot::Commit expects.
Manifest MakeManifest(const SnapshotRef& ref, const Archives& archives) {
  Manifest m;
  m.backup_type = ref.group.type;
  m.backup_id = ref.group.id;
  m.backup_time = ref.time;
  for (const auto& [name, bytes] : archives) {
    ArchiveInfo a;
    a.name = name;
    if (name.ends_with(".blob")) {
      a.size = bytes.size();
      a.csum = Sha256(bytes);
    } else {
      a.size = 4 * bytes.size();  // "image size" of a fake index
      a.csum = Sha256("list:" + bytes);
    }
    m.archives.push_back(a);
  }
  m.client = {{"host", "pve1"}, {"consistency", "crash"}};
  return m;
}

Archives SomeArchives(int seed) {
  std::string fidx(1000 + seed, static_cast<char>('a' + seed % 26));
  std::string blob = "vm config " + std::to_string(seed);
  return {{"drive0.fidx", fidx}, {"qemu-server.conf.blob", blob}};
}

// Stage, write every archive, commit.
Status WriteSnapshot(Datastore* ds, const SnapshotRef& ref, const Archives& archives,
                     Manifest* out = nullptr) {
  CAIRN_ASSIGN_OR_RETURN(auto staged, ds->Stage(ref));
  for (const auto& [name, bytes] : archives) {
    CAIRN_RETURN_IF_ERROR(staged->WriteArchive(name, bytes));
  }
  Manifest m = MakeManifest(ref, archives);
  if (out != nullptr) *out = m;
  return staged->Commit(m);
}

class DatastoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_datastore_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
    root_ = JoinPath(tmp_, "store");
  }
  void TearDown() override {
    ds_.reset();
    EXPECT_TRUE(TestDatastores::Remove(root_).ok());
    EXPECT_TRUE(RemoveAll(Env::Default(), tmp_).ok());
  }

  void CreateAndOpen() {
    ASSERT_TRUE(TestDatastores::Create(root_).ok());
    auto ds = Datastore::Open(env(), root_);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    ds_ = std::move(*ds);
  }

  Env* env() { return Env::Default(); }
  std::string P(const std::string& rel) const { return JoinPath(root_, rel); }
  bool Exists(const std::string& rel) { return env()->Stat(P(rel)).ok(); }
  std::vector<std::string> List(const std::string& rel) {
    std::vector<std::string> names;
    Status s = env()->ListDir(P(rel), &names);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::sort(names.begin(), names.end());
    return names;
  }
  void MkDir(const std::string& rel) { ASSERT_TRUE(CreateDirAll(env(), P(rel)).ok()) << rel; }
  void PutFile(const std::string& rel, const std::string& data) {
    ASSERT_TRUE(WriteFileAtomic(env(), P(rel), data, false).ok()) << rel;
  }
  std::string ReadRaw(const std::string& rel) {
    std::string out;
    EXPECT_TRUE(env()->ReadFile(P(rel), &out, 1 << 20).ok()) << rel;
    return out;
  }

  std::string tmp_;
  std::string root_;
  std::unique_ptr<Datastore> ds_;
};

TEST_F(DatastoreTest, CreateFromScratch) {
  // Two levels that do not exist yet.
  root_ = JoinPath(tmp_, "a/store");
  Status s = Datastore::Create(env(), root_);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(List(""), (std::vector<std::string>{".cairn-datastore", ".chunks", ".staging"}));
  EXPECT_TRUE(List(".chunks").empty());  // prefix folders come on first use
  auto ds = Datastore::Open(env(), root_);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_TRUE(Datastore::Create(env(), root_).IsAlreadyExists());
}

TEST_F(DatastoreTest, CreateOpenAndLock) {
  CreateAndOpen();
  EXPECT_TRUE(Exists(".chunks"));
  EXPECT_TRUE(Exists(".staging"));
  EXPECT_TRUE(Exists(".cairn-datastore"));
  EXPECT_EQ(ds_->path(), root_);
  EXPECT_NE(ds_->chunk_store(), nullptr);
  EXPECT_EQ(ds_->env(), env());
  EXPECT_EQ(ds_->uuid().size(), 36u);

  auto info = nlohmann::json::parse(ReadRaw(".cairn-datastore"));
  EXPECT_EQ(info["format"], "cairn-datastore");
  EXPECT_EQ(info["version"], 1);
  EXPECT_EQ(info["uuid"], ds_->uuid());

  // A second opener, in this process or another, is refused while we hold it.
  auto second = Datastore::Open(env(), root_);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsBusy()) << second.status().ToString();

  const std::string uuid = ds_->uuid();
  ds_.reset();
  auto again = Datastore::Open(env(), root_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->uuid(), uuid);

  // Create refuses an existing datastore.
  EXPECT_TRUE(Datastore::Create(env(), root_).IsAlreadyExists());
}

TEST_F(DatastoreTest, CreateRefusesForeignFolderAndOpenRefusesNonDatastore) {
  MkDir("");
  PutFile("precious.txt", "do not touch");
  Status s = Datastore::Create(env(), root_);
  EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
  EXPECT_FALSE(Exists(".chunks"));
  EXPECT_EQ(ReadRaw("precious.txt"), "do not touch");

  // A plain file is not a folder.
  const std::string file = JoinPath(tmp_, "file");
  ASSERT_TRUE(WriteFileAtomic(env(), file, "x", false).ok());
  EXPECT_TRUE(Datastore::Create(env(), file).IsAlreadyExists());

  auto r = Datastore::Open(env(), root_);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
  r = Datastore::Open(env(), JoinPath(tmp_, "missing"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
}

TEST_F(DatastoreTest, OpenRejectsBadSelfDescription) {
  CreateAndOpen();
  ds_.reset();
  const std::string good = ReadRaw(".cairn-datastore");
  for (const std::string& bad : std::vector<std::string>{
           "", "not json", "[]", R"({"format":"other","version":1,"uuid":"x"})",
        R"({"format":"cairn-datastore","version":2,"uuid":"00000000-0000-4000-8000-000000000000"})",
        R"({"format":"cairn-datastore","version":1,"uuid":"../../etc"})",
        R"({"format":"cairn-datastore","version":"1","uuid":"00000000-0000-4000-8000-000000000000"})"}) {
    PutFile(".cairn-datastore", bad);
    auto r = Datastore::Open(env(), root_);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.status().IsCorruption()) << bad << ": " << r.status().ToString();
  }
  PutFile(".cairn-datastore", good);
  EXPECT_TRUE(Datastore::Open(env(), root_).ok());
}

TEST_F(DatastoreTest, CreateCompletesAnInterruptedCreate) {
  // What a Create killed before its last step leaves: everything but the
  // self-description.
  CreateAndOpen();
  ds_.reset();
  ASSERT_TRUE(env()->RemoveFile(P(".cairn-datastore")).ok());
  PutFile(".cairn-datastore.tmp.1.2", "partial");
  EXPECT_TRUE(Datastore::Open(env(), root_).status().IsNotFound());
  ASSERT_TRUE(Datastore::Create(env(), root_).ok());
  EXPECT_TRUE(Datastore::Open(env(), root_).ok());
}

TEST_F(DatastoreTest, StageCommitListRead) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  const SnapshotRef b = Ref({}, "vm", "100", kT0 - 3600);
  const SnapshotRef c = Ref({"prod", "eu"}, "ct", "web-1", kT0);
  const SnapshotRef d = Ref({"prod"}, "host", "h.example", kT0);
  Manifest ma;
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1), &ma).ok());
  ASSERT_TRUE(WriteSnapshot(ds_.get(), b, SomeArchives(2)).ok());
  ASSERT_TRUE(WriteSnapshot(ds_.get(), c, SomeArchives(3)).ok());
  ASSERT_TRUE(WriteSnapshot(ds_.get(), d, SomeArchives(4)).ok());

  EXPECT_TRUE(Exists("vm/100/2026-11-21T17:50:38Z/index.json"));
  EXPECT_TRUE(Exists("ns/prod/ns/eu/ct/web-1/2026-11-21T17:50:38Z/drive0.fidx"));
  EXPECT_TRUE(List(".staging").empty());

  auto groups = ds_->ListGroups();
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  std::vector<GroupRef> want = {a.group, c.group, d.group};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*groups, want);

  auto snaps = ds_->ListSnapshots(a.group);
  ASSERT_TRUE(snaps.ok());
  EXPECT_EQ(*snaps, (std::vector<SnapshotRef>{b, a}));  // oldest first

  auto m = ds_->ReadManifest(a);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->archives, ma.archives);
  EXPECT_EQ(m->client, ma.client);
  for (const auto& [name, bytes] : SomeArchives(1)) {
    auto got = ds_->ReadArchive(a, name, 1 << 20);
    ASSERT_TRUE(got.ok()) << name;
    EXPECT_EQ(*got, bytes);
  }
  auto path = ds_->ArchivePath(c, "drive0.fidx");
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, P("ns/prod/ns/eu/ct/web-1/2026-11-21T17:50:38Z/drive0.fidx"));

  EXPECT_TRUE(ds_->ReadManifest(Ref({}, "vm", "100", kT0 + 1)).status().IsNotFound());
  EXPECT_TRUE(ds_->ListSnapshots(GroupRef{{}, "vm", "999"}).status().IsNotFound());
  EXPECT_TRUE(ds_->ReadArchive(a, "nope.blob", 100).status().IsNotFound());
}

TEST_F(DatastoreTest, ReadManifestChecksItNamesTheSnapshot) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1)).ok());
  // A snapshot folder copied under another id is not that snapshot.
  MkDir("vm/101");
  ASSERT_EQ(::rename(P("vm/100/2026-11-21T17:50:38Z").c_str(),
                     P("vm/101/2026-11-21T17:50:38Z").c_str()),
            0);
  EXPECT_TRUE(ds_->ReadManifest(Ref({}, "vm", "101", kT0)).status().IsCorruption());
  // A folder without index.json is corrupt, not absent.
  MkDir("vm/101/2026-11-21T17:50:39Z");
  EXPECT_TRUE(ds_->ReadManifest(Ref({}, "vm", "101", kT0 + 1)).status().IsCorruption());
  // A damaged protected part fails its checksum.
  std::string text = ReadRaw("vm/101/2026-11-21T17:50:38Z/index.json");
  text.replace(text.find("pve1"), 4, "pve2");
  PutFile("vm/101/2026-11-21T17:50:38Z/index.json", text);
  EXPECT_TRUE(ds_->ReadManifest(Ref({}, "vm", "101", kT0)).status().IsCorruption());
}

TEST_F(DatastoreTest, CommitTwiceSameTimeIsAlreadyExists) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  // Two sessions race for the same snapshot: the rename decides.
  auto s1 = ds_->Stage(a);
  auto s2 = ds_->Stage(a);
  ASSERT_TRUE(s1.ok() && s2.ok());
  for (auto* s : {&*s1, &*s2}) {
    for (const auto& [name, bytes] : SomeArchives(s == &*s1 ? 1 : 2)) {
      ASSERT_TRUE((*s)->WriteArchive(name, bytes).ok());
    }
  }
  ASSERT_TRUE((*s1)->Commit(MakeManifest(a, SomeArchives(1))).ok());
  EXPECT_TRUE((*s1)->committed());
  Status s = (*s2)->Commit(MakeManifest(a, SomeArchives(2)));
  EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
  EXPECT_FALSE((*s2)->committed());
  s2->reset();
  EXPECT_TRUE(List(".staging").empty());

  // The first one is untouched.
  auto m = ds_->ReadManifest(a);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->archives, MakeManifest(a, SomeArchives(1)).archives);
  EXPECT_EQ(*ds_->ReadArchive(a, "drive0.fidx", 1 << 20), SomeArchives(1)["drive0.fidx"]);

  // A later Stage of the same snapshot is refused up front.
  auto s3 = ds_->Stage(a);
  ASSERT_FALSE(s3.ok());
  EXPECT_TRUE(s3.status().IsAlreadyExists());
  // Commit after commit is refused.
  EXPECT_TRUE((*s1)->Commit(MakeManifest(a, SomeArchives(1))).IsConflict());
  EXPECT_TRUE((*s1)->WriteArchive("x.blob", "x").IsConflict());
}

TEST_F(DatastoreTest, CommitRejectsManifestThatDoesNotMatch) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  Archives arch = SomeArchives(1);
  auto staged = ds_->Stage(a);
  ASSERT_TRUE(staged.ok());
  for (const auto& [name, bytes] : arch) ASSERT_TRUE((*staged)->WriteArchive(name, bytes).ok());

  Manifest wrong_time = MakeManifest(a, arch);
  wrong_time.backup_time += 1;
  Manifest wrong_id = MakeManifest(a, arch);
  wrong_id.backup_id = "101";
  Manifest missing = MakeManifest(a, {{"drive0.fidx", arch["drive0.fidx"]}});
  Manifest extra = MakeManifest(a, arch);
  extra.archives.push_back(ArchiveInfo{"drive1.fidx", 1, Sha256("z")});
  Manifest bad_blob = MakeManifest(a, arch);
  for (auto& x : bad_blob.archives) {
    if (x.name.ends_with(".blob")) x.csum = Sha256("other");
  }
  Manifest bad_verify = MakeManifest(a, arch);
  bad_verify.verify = VerifyState{"maybe", 1, ""};
  for (const Manifest* m : {&wrong_time, &wrong_id, &missing, &extra, &bad_blob, &bad_verify}) {
    Status s = (*staged)->Commit(*m);
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_FALSE(Exists("vm/100/2026-11-21T17:50:38Z"));
  }
  EXPECT_TRUE((*staged)->Commit(MakeManifest(a, arch)).ok());
}

TEST_F(DatastoreTest, AbortAndDestructionRemoveStaging) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  {
    auto staged = ds_->Stage(a);
    ASSERT_TRUE(staged.ok());
    ASSERT_TRUE((*staged)->WriteArchive("drive0.fidx", "data").ok());
    EXPECT_EQ(List(".staging").size(), 1u);
    (*staged)->Abort();
    EXPECT_TRUE(List(".staging").empty());
    (*staged)->Abort();  // idempotent
    EXPECT_TRUE((*staged)->WriteArchive("drive0.fidx", "data").IsConflict());
    EXPECT_TRUE((*staged)->Commit(MakeManifest(a, {{"drive0.fidx", "data"}})).IsConflict());
  }
  {
    auto staged = ds_->Stage(a);
    ASSERT_TRUE(staged.ok());
    ASSERT_TRUE((*staged)->WriteArchive("drive0.fidx", "data").ok());
    EXPECT_EQ(List(".staging").size(), 1u);
  }
  EXPECT_TRUE(List(".staging").empty());
  EXPECT_FALSE(Exists("vm"));
  auto groups = ds_->ListGroups();
  ASSERT_TRUE(groups.ok());
  EXPECT_TRUE(groups->empty());
}

TEST_F(DatastoreTest, LeftoverStagingRemovedAtOpen) {
  CreateAndOpen();
  ds_.reset();
  MkDir(".staging/0123abcd/sub");
  PutFile(".staging/0123abcd/drive0.fidx", "half");
  PutFile(".staging/0123abcd/sub/x", "y");
  PutFile(".staging/stray-file", "z");
  auto ds = Datastore::Open(env(), root_);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_TRUE(List(".staging").empty());
}

TEST_F(DatastoreTest, DeleteSnapshotAndGroup) {
  CreateAndOpen();
  const SnapshotRef a = Ref({"n"}, "vm", "100", kT0);
  const SnapshotRef b = Ref({"n"}, "vm", "100", kT0 + 60);
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1)).ok());
  ASSERT_TRUE(WriteSnapshot(ds_.get(), b, SomeArchives(2)).ok());

  ASSERT_TRUE(ds_->DeleteSnapshot(a).ok());
  EXPECT_EQ(*ds_->ListSnapshots(a.group), std::vector<SnapshotRef>{b});
  EXPECT_TRUE(ds_->ReadManifest(a).status().IsNotFound());
  EXPECT_TRUE(ds_->DeleteSnapshot(a).IsNotFound());
  EXPECT_TRUE(List(".staging").empty());
  EXPECT_TRUE(ds_->ReadManifest(b).ok());

  // The last snapshot of a group without owner takes the group folder along.
  ASSERT_TRUE(ds_->DeleteSnapshot(b).ok());
  EXPECT_FALSE(Exists("ns/n/vm/100"));
  EXPECT_TRUE(ds_->ListGroups()->empty());

  // A group with an owner stays (ownership is not lost by pruning).
  const SnapshotRef c = Ref({}, "vm", "200", kT0);
  ASSERT_TRUE(ds_->SetOwner(c.group, "alice@pam").ok());
  ASSERT_TRUE(WriteSnapshot(ds_.get(), c, SomeArchives(3)).ok());
  ASSERT_TRUE(ds_->DeleteSnapshot(c).ok());
  EXPECT_EQ(*ds_->ListGroups(), std::vector<GroupRef>{c.group});
  EXPECT_TRUE(ds_->ListSnapshots(c.group)->empty());
  EXPECT_EQ(*ds_->GetOwner(c.group), "alice@pam");

  // DeleteGroup removes the rest, owner file included.
  ASSERT_TRUE(WriteSnapshot(ds_.get(), c, SomeArchives(3)).ok());
  ASSERT_TRUE(ds_->DeleteGroup(c.group).ok());
  EXPECT_FALSE(Exists("vm/200"));
  EXPECT_TRUE(ds_->ListGroups()->empty());
  EXPECT_TRUE(ds_->DeleteGroup(c.group).IsNotFound());
  EXPECT_TRUE(List(".staging").empty());
}

TEST_F(DatastoreTest, ProtectedSnapshotCannotBeDeleted) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1)).ok());
  ASSERT_TRUE(ds_->SetProtected(a, true).ok());
  Status s = ds_->DeleteSnapshot(a);
  EXPECT_TRUE(s.IsConflict()) << s.ToString();
  s = ds_->DeleteGroup(a.group);
  EXPECT_TRUE(s.IsConflict()) << s.ToString();
  EXPECT_TRUE(ds_->ReadManifest(a).ok());
  EXPECT_TRUE(Exists("vm/100/2026-11-21T17:50:38Z/drive0.fidx"));

  ASSERT_TRUE(ds_->SetProtected(a, false).ok());
  EXPECT_TRUE(ds_->DeleteSnapshot(a).ok());

  // A snapshot whose manifest does not parse is not deleted either.
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1)).ok());
  PutFile("vm/100/2026-11-21T17:50:38Z/index.json", "{broken");
  EXPECT_TRUE(ds_->DeleteSnapshot(a).IsCorruption());
  EXPECT_TRUE(Exists("vm/100/2026-11-21T17:50:38Z"));
}

TEST_F(DatastoreTest, UnprotectedRewriteKeepsProtectedChecksum) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1)).ok());
  const std::string rel = "vm/100/2026-11-21T17:50:38Z/index.json";
  auto before = nlohmann::json::parse(ReadRaw(rel));
  ASSERT_TRUE(before.contains("protected-sha256"));

  ASSERT_TRUE(ds_->SetNotes(a, "before the upgrade\nline two").ok());
  ASSERT_TRUE(ds_->SetProtected(a, true).ok());
  ASSERT_TRUE(ds_->SetVerifyState(a, VerifyState{"ok", kT0 + 5, "UPID:verify:1"}).ok());

  auto after = nlohmann::json::parse(ReadRaw(rel));
  auto strip = [](nlohmann::json j) {
    j.erase("unprotected");
    return j;
  };
  EXPECT_EQ(after["protected-sha256"], before["protected-sha256"]);
  EXPECT_EQ(strip(after), strip(before));
  EXPECT_NE(after["unprotected"], before["unprotected"]);

  auto m = ds_->ReadManifest(a);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->notes, "before the upgrade\nline two");
  EXPECT_TRUE(m->is_protected);
  ASSERT_TRUE(m->verify.has_value());
  EXPECT_EQ(*m->verify, (VerifyState{"ok", kT0 + 5, "UPID:verify:1"}));
  EXPECT_EQ(List("vm/100/2026-11-21T17:50:38Z"),
            (std::vector<std::string>{"drive0.fidx", "index.json", "qemu-server.conf.blob"}));

  // Values the manifest cannot hold are refused; nothing is written.
  EXPECT_TRUE(ds_->SetVerifyState(a, VerifyState{"maybe", 1, ""}).IsInvalidArgument());
  EXPECT_EQ(nlohmann::json::parse(ReadRaw(rel)), after);

  // A manifest that fails Parse is never rewritten.
  std::string text = ReadRaw(rel);
  text.replace(text.find("pve1"), 4, "pve2");
  PutFile(rel, text);
  EXPECT_TRUE(ds_->SetNotes(a, "x").IsCorruption());
  EXPECT_TRUE(ds_->SetProtected(a, false).IsCorruption());
  EXPECT_EQ(ReadRaw(rel), text);
  EXPECT_TRUE(ds_->SetNotes(Ref({}, "vm", "100", kT0 + 1), "x").IsNotFound());
}

TEST_F(DatastoreTest, OwnerFile) {
  CreateAndOpen();
  const GroupRef g{{"a"}, "vm", "100"};
  EXPECT_TRUE(ds_->GetOwner(g).status().IsNotFound());
  ASSERT_TRUE(ds_->SetOwner(g, "bob@pbs!backup").ok());
  EXPECT_EQ(*ds_->GetOwner(g), "bob@pbs!backup");
  EXPECT_EQ(ReadRaw("ns/a/vm/100/owner"), "bob@pbs!backup\n");
  EXPECT_EQ(*ds_->ListGroups(), std::vector<GroupRef>{g});  // a group may have no snapshot yet
  ASSERT_TRUE(ds_->SetOwner(g, "carol").ok());
  EXPECT_EQ(*ds_->GetOwner(g), "carol");
  EXPECT_TRUE(ds_->SetOwner(g, "").IsInvalidArgument());
  EXPECT_TRUE(ds_->SetOwner(g, "a\nb").IsInvalidArgument());
  EXPECT_TRUE(ds_->SetOwner(g, std::string(kMaxOwnerSize + 1, 'x')).IsInvalidArgument());
  EXPECT_EQ(*ds_->GetOwner(g), "carol");
  PutFile("ns/a/vm/100/owner", std::string(1000, 'x'));
  EXPECT_TRUE(ds_->GetOwner(g).status().IsCorruption());
}

TEST_F(DatastoreTest, SetOwnerIfAbsentKeepsTheFirstOwner) {
  CreateAndOpen();
  const GroupRef g{{}, "vm", "100"};
  EXPECT_EQ(*ds_->SetOwnerIfAbsent(g, "alice!a"), "alice!a");
  EXPECT_EQ(ReadRaw("vm/100/owner"), "alice!a\n");
  EXPECT_EQ(*ds_->SetOwnerIfAbsent(g, "bob!b"), "alice!a");
  EXPECT_EQ(*ds_->GetOwner(g), "alice!a");
  EXPECT_TRUE(ds_->SetOwnerIfAbsent(g, "").status().IsInvalidArgument());
  EXPECT_TRUE(ds_->SetOwnerIfAbsent(GroupRef{{}, "vm", ".."}, "x").status().IsInvalidArgument());
  // Only the owner file is left: no temp file of the losing call.
  EXPECT_EQ(List("vm/100"), std::vector<std::string>{"owner"});
  // A malformed owner file is reported, not overwritten.
  PutFile("vm/100/owner", std::string(1000, 'x'));
  EXPECT_TRUE(ds_->SetOwnerIfAbsent(g, "carol").status().IsCorruption());
}

// Issue 17, item 4: of many callers racing for a new group, exactly one
// becomes the owner, and every caller is told that same owner.
TEST_F(DatastoreTest, SetOwnerIfAbsentRaceHasExactlyOneWinner) {
  CreateAndOpen();
  constexpr int kThreads = 16;
  constexpr int kGroups = 25;
  for (int round = 0; round < kGroups; ++round) {
    const GroupRef g{{}, "vm", "race" + std::to_string(round)};
    std::vector<std::string> got(kThreads);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) std::this_thread::yield();
        auto r = ds_->SetOwnerIfAbsent(g, "user!t" + std::to_string(t));
        got[static_cast<size_t>(t)] = r.ok() ? *r : "error: " + r.status().ToString();
      });
    }
    for (auto& th : threads) th.join();
    auto owner = ds_->GetOwner(g);
    ASSERT_TRUE(owner.ok()) << owner.status().ToString();
    int winners = 0;
    for (int t = 0; t < kThreads; ++t) {
      EXPECT_EQ(got[static_cast<size_t>(t)], *owner) << "round " << round << " thread " << t;
      if (*owner == "user!t" + std::to_string(t)) ++winners;
    }
    EXPECT_EQ(winners, 1) << "round " << round;
  }
}

TEST_F(DatastoreTest, HostileNamesNeverReachAPath) {
  CreateAndOpen();
  const std::vector<SnapshotRef> hostile = {
      Ref({}, "vm", "..", kT0),         Ref({}, "vm", ".", kT0),
      Ref({}, "vm", "../../etc", kT0),  Ref({}, "..", "100", kT0),
      Ref({}, "vm/../vm", "100", kT0),  Ref({".."}, "vm", "100", kT0),
      Ref({"a/b"}, "vm", "100", kT0),   Ref({".staging"}, "vm", "100", kT0),
      Ref({}, "vm", ".staging", kT0),   Ref({}, "vm", std::string("1\0" "0", 3), kT0),
      Ref({}, "vm", "", kT0),           Ref({}, "ns", "100", kT0),
      Ref({}, "vm", "100", -1),
  };
  for (const SnapshotRef& r : hostile) {
    SCOPED_TRACE(r.group.type + "|" + r.group.id);
    auto st = ds_->Stage(r);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(st.status().IsInvalidArgument()) << st.status().ToString();
    EXPECT_TRUE(ds_->ReadManifest(r).status().IsInvalidArgument());
    EXPECT_TRUE(ds_->DeleteSnapshot(r).IsInvalidArgument());
    EXPECT_TRUE(ds_->SetNotes(r, "x").IsInvalidArgument());
    EXPECT_FALSE(ds_->SnapshotPath(r).ok());
    if (r.group.Validate().ok()) continue;  // only the time is bad
    EXPECT_TRUE(ds_->SetOwner(r.group, "x").IsInvalidArgument());
    EXPECT_TRUE(ds_->ListSnapshots(r.group).status().IsInvalidArgument());
    EXPECT_TRUE(ds_->DeleteGroup(r.group).IsInvalidArgument());
  }
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  auto staged = ds_->Stage(a);
  ASSERT_TRUE(staged.ok());
  for (const std::string& name : std::vector<std::string>{"../x.blob", "index.json",
                                                         ".hidden.blob", "a/b.blob", "", "x.txt",
                                                         "..", std::string("n\0.blob", 7)}) {
    EXPECT_TRUE((*staged)->WriteArchive(name, "x").IsInvalidArgument()) << name;
    EXPECT_FALSE(ds_->ArchivePath(a, name).ok()) << name;
  }
  staged->reset();
  // Nothing was created anywhere: the datastore root and its parent hold
  // only what they held before.
  EXPECT_EQ(List(""), (std::vector<std::string>{".cairn-datastore", ".chunks", ".lock",
                                                ".staging"}));
  EXPECT_TRUE(List(".staging").empty());
  std::vector<std::string> parent;
  ASSERT_TRUE(env()->ListDir(tmp_, &parent).ok());
  EXPECT_EQ(parent, std::vector<std::string>{"store"});
}

TEST_F(DatastoreTest, HiddenAndInvalidFoldersAreNotListed) {
  CreateAndOpen();
  const SnapshotRef a = Ref({}, "vm", "100", kT0);
  const SnapshotRef b = Ref({"x"}, "ct", "7", kT0);
  ASSERT_TRUE(WriteSnapshot(ds_.get(), a, SomeArchives(1)).ok());
  ASSERT_TRUE(WriteSnapshot(ds_.get(), b, SomeArchives(2)).ok());
  // A backup in progress is never listed.
  auto staged = ds_->Stage(Ref({}, "vm", "300", kT0));
  ASSERT_TRUE(staged.ok());
  ASSERT_TRUE((*staged)->WriteArchive("drive0.fidx", "x").ok());

  MkDir(".hidden/vm/1/2026-11-21T17:50:38Z");
  MkDir("vm/.hidden/2026-11-21T17:50:38Z");
  MkDir("vm/bad name/2026-11-21T17:50:38Z");
  MkDir("vm/-lead");
  MkDir("lxc/100");
  MkDir("VM/100");
  MkDir("ns/.x/vm/1");
  MkDir("ns/bad name/vm/1");
  MkDir("ns/x/ns/..hidden/vm/1");
  MkDir("ns/x/other/1");
  MkDir("vm/100/not-a-time");
  MkDir("vm/100/.2026-11-21T17:50:39Z");
  MkDir("vm/100/2026-11-21T17:50:38");
  MkDir("vm/100/2026-02-30T00:00:00Z");
  MkDir("vm/100/2026-11-21t17:50:40Z");
  PutFile("vm/100/2026-11-21T17:50:41Z", "a file, not a folder");
  PutFile("vm/101", "a file, not a group");
  ASSERT_EQ(::symlink(P("vm/100").c_str(), P("vm/102").c_str()), 0);
  ASSERT_EQ(::symlink(P("vm/100/2026-11-21T17:50:38Z").c_str(),
                      P("vm/100/2026-11-21T17:50:42Z").c_str()),
            0);
  // Deeper than the namespace limit.
  std::string deep;
  for (size_t i = 0; i <= kMaxNamespaceDepth; ++i) deep += "ns/d/";
  MkDir(deep + "vm/1");

  auto groups = ds_->ListGroups();
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  std::vector<GroupRef> want = {a.group, b.group};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*groups, want);
  auto snaps = ds_->ListSnapshots(a.group);
  ASSERT_TRUE(snaps.ok());
  EXPECT_EQ(*snaps, std::vector<SnapshotRef>{a});
}

// Commits and deletes racing in the same groups: a delete that empties a
// group folder must never pull it from under a commit renaming into it.
TEST_F(DatastoreTest, ConcurrentCommitsAndDeletes) {
  CreateAndOpen();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 15; ++i) {
        const SnapshotRef r = Ref({}, "vm", std::to_string(t % 2), kT0 + 100 * i + t);
        Status s = WriteSnapshot(ds_.get(), r, SomeArchives(i));
        EXPECT_TRUE(s.ok()) << s.ToString();
        EXPECT_TRUE(ds_->ListGroups().ok());
        if (i % 3 != 0) {
          s = ds_->DeleteSnapshot(r);
          EXPECT_TRUE(s.ok()) << s.ToString();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  int64_t total = 0;
  auto groups = ds_->ListGroups();
  ASSERT_TRUE(groups.ok());
  for (const GroupRef& g : *groups) {
    auto snaps = ds_->ListSnapshots(g);
    ASSERT_TRUE(snaps.ok());
    for (const SnapshotRef& r : *snaps) EXPECT_TRUE(ds_->ReadManifest(r).ok());
    total += static_cast<int64_t>(snaps->size());
  }
  EXPECT_EQ(total, 4 * 5);
  EXPECT_TRUE(List(".staging").empty());
}

// --- Crash injection -------------------------------------------------------

class DatastoreCrashTest : public DatastoreTest {
 protected:
  void SetUp() override {
    DatastoreTest::SetUp();
    ASSERT_TRUE(TestDatastores::Create(root_).ok());
    auto ds = Datastore::Open(env(), root_);
    ASSERT_TRUE(ds.ok());
    // Committed before any fault: must survive every crash below.
    for (int i = 0; i < 2; ++i) {
      SnapshotRef r = Ref({}, "vm", "100", kT0 + i);
      ASSERT_TRUE(WriteSnapshot(ds->get(), r, SomeArchives(i)).ok());
      expected_[r] = SomeArchives(i);
      base_.push_back(r);
    }
  }

  // Everything a reader can see after the crash is whole: every listed
  // snapshot is one we wrote, its manifest parses, each archive has its full
  // content. Returns the snapshots listed.
  std::vector<SnapshotRef> CheckWhole(const std::string& trace) {
    SCOPED_TRACE(trace);
    auto ds = Datastore::Open(env(), root_);
    EXPECT_TRUE(ds.ok()) << ds.status().ToString();
    if (!ds.ok()) return {};
    EXPECT_TRUE(List(".staging").empty());
    std::vector<SnapshotRef> seen;
    auto groups = (*ds)->ListGroups();
    EXPECT_TRUE(groups.ok());
    if (!groups.ok()) return {};
    for (const GroupRef& g : *groups) {
      auto snaps = (*ds)->ListSnapshots(g);
      EXPECT_TRUE(snaps.ok()) << g.ToString();
      if (!snaps.ok()) continue;
      for (const SnapshotRef& r : *snaps) {
        seen.push_back(r);
        auto it = expected_.find(r);
        EXPECT_NE(it, expected_.end()) << "unknown snapshot " << r.ToString();
        if (it == expected_.end()) continue;
        auto m = (*ds)->ReadManifest(r);
        EXPECT_TRUE(m.ok()) << r.ToString() << ": " << m.status().ToString();
        if (!m.ok()) continue;
        EXPECT_EQ(m->archives, MakeManifest(r, it->second).archives) << r.ToString();
        for (const auto& [name, bytes] : it->second) {
          auto got = (*ds)->ReadArchive(r, name, 1 << 20);
          EXPECT_TRUE(got.ok() && *got == bytes) << r.ToString() << "/" << name;
        }
      }
    }
    for (const SnapshotRef& r : base_) {
      EXPECT_NE(std::find(seen.begin(), seen.end(), r), seen.end())
          << "committed snapshot lost: " << r.ToString();
    }
    return seen;
  }

  static bool Contains(const std::vector<SnapshotRef>& v, const SnapshotRef& r) {
    return std::find(v.begin(), v.end(), r) != v.end();
  }

  static std::string Log(const FaultInjectionEnv& env) {
    std::string out;
    for (const auto& l : env.op_log()) out += "  " + l + "\n";
    return out;
  }

  std::map<SnapshotRef, Archives> expected_;
  std::vector<SnapshotRef> base_;
};

// Stage, write archives and commit a snapshot in a new group and namespace
// (so the group folders are created too), crashing after every possible
// number of mutating operations.
TEST_F(DatastoreCrashTest, CommitSurvivesCrashAtEveryStep) {
  FaultInjectionEnv fenv(env());
  auto run = [&](const SnapshotRef& ref, int seed) -> Status {
    auto ds = Datastore::Open(&fenv, root_);
    if (!ds.ok()) return ds.status();
    fenv.ResetState();  // count from Stage on
    return WriteSnapshot(ds->get(), ref, SomeArchives(seed));
  };
  // Every run works in a new namespace below an existing "ns" folder, so all
  // runs do the same operations.
  MkDir("ns");
  const SnapshotRef probe = Ref({"probe"}, "vm", "1", kT0);
  expected_[probe] = SomeArchives(7);
  ASSERT_TRUE(run(probe, 7).ok());
  const int64_t total = fenv.mutating_ops();
  ASSERT_GT(total, 10);
  const std::string full_log = Log(fenv);

  for (int64_t k = 0; k <= total; ++k) {
    const SnapshotRef ref = Ref({"c" + std::to_string(k)}, "vm", "1", kT0);
    expected_[ref] = SomeArchives(7);
    fenv.ResetState();
    // Open is not what is tested here; it runs without faults.
    Status s;
    {
      auto ds = Datastore::Open(&fenv, root_);
      ASSERT_TRUE(ds.ok());
      fenv.ResetState();
      fenv.CrashAfter(k);
      s = WriteSnapshot(ds->get(), ref, SomeArchives(7));
    }
    EXPECT_EQ(s.ok(), k == total) << "k=" << k << " " << s.ToString();
    const std::string log = Log(fenv);
    ASSERT_TRUE(fenv.DropUnsyncedData().ok());
    auto seen = CheckWhole("commit crash after k=" + std::to_string(k) + " of " +
                           std::to_string(total) + ":\n" + log);
    if (s.ok()) {
      EXPECT_TRUE(Contains(seen, ref)) << "committed snapshot missing after crash, k=" << k;
    }
    if (Contains(seen, ref)) base_.push_back(ref);  // visible now: must never go again
  }
  // The last run crashed after every op had succeeded.
  EXPECT_TRUE(Contains(base_, Ref({"c" + std::to_string(total)}, "vm", "1", kT0)))
      << full_log;
}

// The invariant every safe sync-level keeps: a committed snapshot never
// references a chunk that is not durable. The procedure is a backup
// session's: insert new chunks, SyncFolders (fsync of the prefix folders for
// "file", one syncfs for "filesystem"), then commit the snapshot naming
// them; crashed after every possible number of mutating operations. Returns
// how many crash points left the snapshot visible with a chunk lost.
int CrashChunksThenCommit(DatastoreCrashTest* t, const std::string& root, SyncLevel level,
                          std::map<SnapshotRef, Archives>* expected,
                          std::vector<SnapshotRef>* base,
                          const std::function<std::vector<SnapshotRef>(const std::string&)>& check) {
  FaultInjectionEnv fenv(Env::Default());
  DatastoreOptions options;
  options.chunks.sync_level = level;
  auto chunks_for = [](int64_t k) {
    std::vector<std::string> out;
    std::mt19937_64 rng(static_cast<uint64_t>(k) * 977 + 5);
    for (int i = 0; i < 3; ++i) {
      std::string d(70000 + i, '\0');
      for (auto& c : d) c = static_cast<char>(rng());
      out.push_back(std::move(d));
    }
    return out;
  };
  auto run = [&](Datastore* ds, const SnapshotRef& ref, int64_t k, std::vector<Digest>* digests) {
    DirtyFolders dirty;
    for (const auto& data : chunks_for(k)) {
      Digest d;
      CAIRN_RETURN_IF_ERROR(ds->chunk_store()->InsertData(data, &d, &dirty).status());
      digests->push_back(d);
    }
    CAIRN_RETURN_IF_ERROR(ds->chunk_store()->SyncFolders(&dirty));
    return WriteSnapshot(ds, ref, SomeArchives(7));
  };
  int64_t total = 0;
  {
    auto ds = Datastore::Open(&fenv, root, options);
    EXPECT_TRUE(ds.ok());
    if (!ds.ok()) return -1;
    EXPECT_EQ((*ds)->chunk_store()->sync_level(), level);
    fenv.ResetState();
    const SnapshotRef probe = Ref({}, "vm", "probe", kT0);
    (*expected)[probe] = SomeArchives(7);
    std::vector<Digest> digests;
    EXPECT_TRUE(run(ds->get(), probe, -1, &digests).ok());
    total = fenv.mutating_ops();
    base->push_back(probe);
  }
  int lost = 0;
  for (int64_t k = 0; k <= total; ++k) {
    const SnapshotRef ref = Ref({}, "vm", "k" + std::to_string(k), kT0);
    (*expected)[ref] = SomeArchives(7);
    std::vector<Digest> digests;
    Status s;
    {
      auto ds = Datastore::Open(&fenv, root, options);
      EXPECT_TRUE(ds.ok());
      if (!ds.ok()) return -1;
      fenv.ResetState();
      fenv.CrashAfter(k);
      s = run(ds->get(), ref, k, &digests);
    }
    EXPECT_EQ(s.ok(), k == total) << "k=" << k << " " << s.ToString();
    EXPECT_TRUE(fenv.DropUnsyncedData().ok());
    auto seen = check(std::string("sync-level ") + SyncLevelName(level) + ", crash after k=" +
                      std::to_string(k) + " of " + std::to_string(total));
    const bool visible = std::find(seen.begin(), seen.end(), ref) != seen.end();
    if (s.ok()) {
      EXPECT_TRUE(visible) << "committed snapshot missing, k=" << k;
    }
    if (!visible) continue;
    base->push_back(ref);
    auto ds = Datastore::Open(Env::Default(), root);
    EXPECT_TRUE(ds.ok());
    if (!ds.ok()) return -1;
    for (const Digest& d : digests) {
      auto chunk = (*ds)->chunk_store()->ReadChunk(d);
      if (!chunk.ok()) {
        ++lost;
        break;
      }
    }
  }
  (void)t;
  return lost;
}

TEST_F(DatastoreCrashTest, SyncLevelFileNeverCommitsAnUndurableChunk) {
  int lost = CrashChunksThenCommit(this, root_, SyncLevel::kFile, &expected_, &base_,
                                   [&](const std::string& tr) { return CheckWhole(tr); });
  EXPECT_EQ(lost, 0);
}

TEST_F(DatastoreCrashTest, SyncLevelFilesystemNeverCommitsAnUndurableChunk) {
  int lost = CrashChunksThenCommit(this, root_, SyncLevel::kFilesystem, &expected_, &base_,
                                   [&](const std::string& tr) { return CheckWhole(tr); });
  EXPECT_EQ(lost, 0);
}

// The same loop can fail: with sync-level none, the crash model loses chunks
// of committed snapshots (which is why "none" is documented as unsafe).
TEST_F(DatastoreCrashTest, SyncLevelNoneLosesChunksOfCommittedSnapshots) {
  int lost = CrashChunksThenCommit(this, root_, SyncLevel::kNone, &expected_, &base_,
                                   [&](const std::string& tr) { return CheckWhole(tr); });
  EXPECT_GT(lost, 0);
}

TEST_F(DatastoreTest, SyncLevelIsStoredInTheSelfDescription) {
  ASSERT_TRUE(TestDatastores::Create(root_).ok());
  auto none = Datastore::StoredSyncLevel(env(), root_);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  {
    auto ds = Datastore::Open(env(), root_);
    ASSERT_TRUE(ds.ok());
    EXPECT_EQ((*ds)->chunk_store()->sync_level(), ChunkStoreOptions{}.sync_level);
    // The store is open (locked): the setting cannot change under it.
    EXPECT_TRUE(Datastore::SetSyncLevel(env(), root_, SyncLevel::kNone).IsBusy());
  }
  ASSERT_TRUE(Datastore::SetSyncLevel(env(), root_, SyncLevel::kFilesystem).ok());
  auto stored = Datastore::StoredSyncLevel(env(), root_);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ(**stored, SyncLevel::kFilesystem);
  DatastoreOptions file;
  file.chunks.sync_level = SyncLevel::kFile;
  auto ds = Datastore::Open(env(), root_, file);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ((*ds)->chunk_store()->sync_level(), SyncLevel::kFilesystem);
  ds->reset();
  // A bad value in the file is a clear error, not a silent default.
  std::string text;
  ASSERT_TRUE(env()->ReadFile(P(kDatastoreInfoFile), &text, 1 << 16).ok());
  auto j = nlohmann::json::parse(text);
  j["sync-level"] = "sometimes";
  ASSERT_TRUE(WriteFileAtomic(env(), P(kDatastoreInfoFile), j.dump(), true).ok());
  auto bad = Datastore::Open(env(), root_);
  EXPECT_TRUE(bad.status().IsCorruption()) << bad.status().ToString();
  EXPECT_FALSE(ParseSyncLevel("sometimes").ok());
}

TEST_F(DatastoreCrashTest, DeleteSurvivesCrashAtEveryStep) {
  FaultInjectionEnv fenv(env());
  auto prepare = [&](const SnapshotRef& ref) {
    auto ds = Datastore::Open(env(), root_);
    ASSERT_TRUE(ds.ok());
    ASSERT_TRUE(WriteSnapshot(ds->get(), ref, SomeArchives(3)).ok());
    expected_[ref] = SomeArchives(3);
  };
  MkDir("ns");
  // The probe counts the operations of one delete.
  const SnapshotRef probe = Ref({"probe"}, "vm", "1", kT0);
  prepare(probe);
  {
    auto ds = Datastore::Open(&fenv, root_);
    ASSERT_TRUE(ds.ok());
    fenv.ResetState();
    ASSERT_TRUE((*ds)->DeleteSnapshot(probe).ok());
  }
  const int64_t total = fenv.mutating_ops();
  ASSERT_GT(total, 4);

  for (int64_t k = 0; k <= total; ++k) {
    const SnapshotRef ref = Ref({"d" + std::to_string(k)}, "vm", "1", kT0);
    prepare(ref);
    fenv.ResetState();
    Status s;
    {
      auto ds = Datastore::Open(&fenv, root_);
      ASSERT_TRUE(ds.ok());
      fenv.ResetState();
      fenv.CrashAfter(k);
      s = (*ds)->DeleteSnapshot(ref);
    }
    EXPECT_EQ(s.ok(), k == total) << "k=" << k << " " << s.ToString();
    const std::string log = Log(fenv);
    ASSERT_TRUE(fenv.DropUnsyncedData().ok());
    auto seen = CheckWhole("delete crash after k=" + std::to_string(k) + " of " +
                           std::to_string(total) + ":\n" + log);
    if (s.ok()) {
      EXPECT_FALSE(Contains(seen, ref)) << "deleted snapshot came back, k=" << k;
    }
  }
}

// Rewriting index.json's unprotected part: after a crash at any step the
// manifest parses and holds either the old or the new notes.
TEST_F(DatastoreCrashTest, NotesRewriteSurvivesCrashAtEveryStep) {
  FaultInjectionEnv fenv(env());
  const SnapshotRef ref = base_[0];
  int64_t total = 0;
  {
    auto ds = Datastore::Open(&fenv, root_);
    ASSERT_TRUE(ds.ok());
    fenv.ResetState();
    ASSERT_TRUE((*ds)->SetNotes(ref, "probe").ok());
    total = fenv.mutating_ops();
  }
  ASSERT_GT(total, 3);
  std::string old_notes = "probe";
  for (int64_t k = 0; k <= total; ++k) {
    const std::string new_notes = "notes " + std::to_string(k);
    fenv.ResetState();
    Status s;
    {
      auto ds = Datastore::Open(&fenv, root_);
      ASSERT_TRUE(ds.ok());
      fenv.ResetState();
      fenv.CrashAfter(k);
      s = (*ds)->SetNotes(ref, new_notes);
    }
    ASSERT_TRUE(fenv.DropUnsyncedData().ok());
    CheckWhole("notes crash after k=" + std::to_string(k));
    auto ds = Datastore::Open(env(), root_);
    ASSERT_TRUE(ds.ok());
    auto m = (*ds)->ReadManifest(ref);
    ASSERT_TRUE(m.ok()) << "k=" << k << " " << m.status().ToString();
    if (s.ok()) {
      EXPECT_EQ(m->notes, new_notes);
    } else {
      EXPECT_TRUE(m->notes == old_notes || m->notes == new_notes) << m->notes;
    }
    old_notes = m->notes;
  }
}

}  // namespace
}  // namespace cairn::storage
