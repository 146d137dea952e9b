#include "storage/env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <set>
#include <thread>

namespace cairn::storage {
namespace {

class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_env_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { EXPECT_TRUE(RemoveAll(env_, dir_).ok()); }

  std::string Path(const std::string& name) const { return JoinPath(dir_, name); }
  void Write(const std::string& path, std::string_view data) {
    auto f = env_->NewWritableFile(path);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->Append(data).ok());
    ASSERT_TRUE((*f)->Close().ok());
  }
  std::string Read(const std::string& path) {
    std::string out;
    Status s = env_->ReadFile(path, &out, 1 << 20);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  Env* env_ = Env::Default();
  std::string dir_;
};

TEST_F(EnvTest, WriteReadStat) {
  const std::string p = Path("f");
  Write(p, "hello");
  EXPECT_EQ(Read(p), "hello");
  auto st = env_->Stat(p);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, 5u);
  EXPECT_FALSE(st->is_dir);
  EXPECT_GT(st->mtime_ns, 0);
  EXPECT_TRUE(env_->Stat(dir_)->is_dir);
  EXPECT_TRUE(env_->Stat(Path("missing")).status().IsNotFound());
  std::string out = "junk";
  EXPECT_TRUE(env_->ReadFile(Path("missing"), &out, 100).IsNotFound());
}

TEST_F(EnvTest, ReadFileOverLimitIsCorruption) {
  const std::string p = Path("big");
  Write(p, std::string(1000, 'x'));
  std::string out;
  EXPECT_TRUE(env_->ReadFile(p, &out, 999).IsCorruption());
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(env_->ReadFile(p, &out, 1000).ok());
  EXPECT_EQ(out.size(), 1000u);
}

TEST_F(EnvTest, NewWritableFileTruncates) {
  const std::string p = Path("f");
  Write(p, "long content");
  Write(p, "ab");
  EXPECT_EQ(Read(p), "ab");
}

TEST_F(EnvTest, NewExclusiveFileRefusesExisting) {
  const std::string p = Path("f");
  Write(p, "x");
  EXPECT_TRUE(env_->NewExclusiveFile(p).status().IsAlreadyExists());
  EXPECT_EQ(Read(p), "x");
  auto f = env_->NewExclusiveFile(Path("g"));
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE((*f)->Sync().ok());
  EXPECT_TRUE((*f)->Close().ok());
}

TEST_F(EnvTest, RenameReplacesRenameNoReplaceRefuses) {
  Write(Path("a"), "A");
  Write(Path("b"), "B");
  EXPECT_TRUE(env_->RenameNoReplace(Path("a"), Path("b")).IsAlreadyExists());
  EXPECT_EQ(Read(Path("a")), "A");
  EXPECT_EQ(Read(Path("b")), "B");
  ASSERT_TRUE(env_->Rename(Path("a"), Path("b")).ok());
  EXPECT_EQ(Read(Path("b")), "A");
  EXPECT_TRUE(env_->Stat(Path("a")).status().IsNotFound());
  ASSERT_TRUE(env_->RenameNoReplace(Path("b"), Path("c")).ok());
  EXPECT_EQ(Read(Path("c")), "A");
  EXPECT_TRUE(env_->Rename(Path("nope"), Path("d")).IsNotFound());
}

TEST_F(EnvTest, LockFileTwiceIsBusy) {
  const std::string p = Path("lock");
  auto l1 = env_->LockFile(p);
  ASSERT_TRUE(l1.ok()) << l1.status().ToString();
  auto l2 = env_->LockFile(p);
  EXPECT_TRUE(l2.status().IsBusy()) << l2.status().ToString();
  l1->reset();
  auto l3 = env_->LockFile(p);
  EXPECT_TRUE(l3.ok()) << l3.status().ToString();
}

TEST_F(EnvTest, DirsListRemoveSync) {
  ASSERT_TRUE(env_->CreateDir(Path("d")).ok());
  EXPECT_TRUE(env_->CreateDir(Path("d")).IsAlreadyExists());
  Write(Path("d/x"), "1");
  Write(Path("d/y"), "2");
  std::vector<std::string> names;
  ASSERT_TRUE(env_->ListDir(Path("d"), &names).ok());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(env_->SyncDir(Path("d")).ok());
  EXPECT_FALSE(env_->RemoveDir(Path("d")).ok());  // not empty
  ASSERT_TRUE(env_->RemoveFile(Path("d/x")).ok());
  EXPECT_TRUE(env_->RemoveFile(Path("d/x")).IsNotFound());
  ASSERT_TRUE(env_->RemoveFile(Path("d/y")).ok());
  EXPECT_TRUE(env_->RemoveDir(Path("d")).ok());
  EXPECT_TRUE(env_->ListDir(Path("d"), &names).IsNotFound());
  EXPECT_TRUE(env_->SyncDir(Path("d")).IsNotFound());
}

TEST_F(EnvTest, TouchMtimeMovesMtimeForward) {
  const std::string p = Path("f");
  Write(p, "x");
  auto before = env_->Stat(p);
  ASSERT_TRUE(before.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(env_->TouchMtime(p).ok());
  auto after = env_->Stat(p);
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->mtime_ns, before->mtime_ns);
  EXPECT_EQ(Read(p), "x");
  EXPECT_TRUE(env_->TouchMtime(Path("missing")).IsNotFound());
}

TEST_F(EnvTest, WriteFileAtomic) {
  const std::string p = Path("m.json");
  ASSERT_TRUE(WriteFileAtomic(env_, p, "first", true).ok());
  EXPECT_EQ(Read(p), "first");
  ASSERT_TRUE(WriteFileAtomic(env_, p, "second", false).ok());
  EXPECT_EQ(Read(p), "second");
  std::vector<std::string> names;
  ASSERT_TRUE(env_->ListDir(dir_, &names).ok());
  EXPECT_EQ(names, std::vector<std::string>{"m.json"});  // no temp left behind
  // Failure leaves nothing: the folder does not exist.
  EXPECT_FALSE(WriteFileAtomic(env_, Path("nodir/x"), "y", true).ok());
  EXPECT_TRUE(env_->Stat(Path("nodir")).status().IsNotFound());
}

TEST_F(EnvTest, CreateDirAll) {
  const std::string deep = Path("a/b/c/d");
  ASSERT_TRUE(CreateDirAll(env_, deep).ok());
  EXPECT_TRUE(env_->Stat(deep)->is_dir);
  EXPECT_TRUE(CreateDirAll(env_, deep).ok());          // exists: fine
  EXPECT_TRUE(CreateDirAll(env_, Path("a/b/")).ok());  // trailing slash
  Write(Path("a/file"), "x");
  EXPECT_TRUE(CreateDirAll(env_, Path("a/file")).IsAlreadyExists());
  EXPECT_FALSE(CreateDirAll(env_, Path("a/file/sub")).ok());
}

TEST_F(EnvTest, RemoveAll) {
  ASSERT_TRUE(CreateDirAll(env_, Path("t/x/y")).ok());
  Write(Path("t/f1"), "1");
  Write(Path("t/x/f2"), "2");
  Write(Path("t/x/y/f3"), "3");
  ASSERT_TRUE(RemoveAll(env_, Path("t")).ok());
  EXPECT_TRUE(env_->Stat(Path("t")).status().IsNotFound());
  EXPECT_TRUE(RemoveAll(env_, Path("t")).ok());  // NotFound is not an error
  Write(Path("single"), "s");
  ASSERT_TRUE(RemoveAll(env_, Path("single")).ok());
  EXPECT_TRUE(env_->Stat(Path("single")).status().IsNotFound());
}

TEST(EnvHelpersTest, JoinPathDirNameTempName) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("a/b/"), "a");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(DirName("/c"), "/");
  std::set<std::string> names;
  for (int i = 0; i < 100; ++i) names.insert(TempName("x/y"));
  EXPECT_EQ(names.size(), 100u);
  EXPECT_EQ(names.begin()->rfind("x/y.tmp.", 0), 0u);
}

}  // namespace
}  // namespace cairn::storage
