#include "tests/storage/fault_env_testutil.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>

namespace cairn::storage {
namespace {

class FaultEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = JoinPath(::testing::TempDir(), "cairn_fault_env_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { EXPECT_TRUE(RemoveAll(Env::Default(), dir_).ok()); }

  std::string Path(const std::string& name) const { return JoinPath(dir_, name); }

  // Writes `data` through `env`, syncing the data when `sync`.
  Status Write(Env* env, const std::string& path, std::string_view data, bool sync) {
    auto f = env->NewWritableFile(path);
    if (!f.ok()) return f.status();
    CAIRN_RETURN_IF_ERROR((*f)->Append(data));
    if (sync) CAIRN_RETURN_IF_ERROR((*f)->Sync());
    return (*f)->Close();
  }
  // Contents on disk, or "<absent>".
  std::string Read(const std::string& path) {
    std::string out;
    Status s = Env::Default()->ReadFile(path, &out, 1 << 20);
    if (s.IsNotFound()) return "<absent>";
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }
  std::vector<std::string> List(const std::string& dir) {
    std::vector<std::string> names;
    EXPECT_TRUE(Env::Default()->ListDir(dir, &names).ok());
    std::sort(names.begin(), names.end());
    return names;
  }

  FaultInjectionEnv env_{Env::Default()};
  std::string dir_;
};

TEST_F(FaultEnvTest, PassesThroughWithoutFaults) {
  ASSERT_TRUE(Write(&env_, Path("f"), "data", true).ok());
  EXPECT_EQ(Read(Path("f")), "data");
  ASSERT_TRUE(env_.Rename(Path("f"), Path("g")).ok());
  EXPECT_EQ(Read(Path("g")), "data");
  EXPECT_FALSE(env_.crashed());
}

TEST_F(FaultEnvTest, FailNthAppend) {
  env_.FailNthAppend(2);
  auto f = env_.NewWritableFile(Path("f"));
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE((*f)->Append("one").ok());
  Status s = (*f)->Append("two");
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_TRUE((*f)->Append("three").ok());  // one-shot
  EXPECT_TRUE((*f)->Close().ok());
  EXPECT_EQ(Read(Path("f")), "onethree");  // the failed append wrote nothing
}

TEST_F(FaultEnvTest, FailNthSyncLeavesDataUnsynced) {
  env_.FailNthSync(2);
  auto f = env_.NewWritableFile(Path("f"));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("abc").ok());
  EXPECT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE((*f)->Append("def").ok());
  EXPECT_TRUE((*f)->Sync().IsIOError());
  EXPECT_TRUE((*f)->Close().ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("f")), "abc");
}

TEST_F(FaultEnvTest, FailNthOtherKinds) {
  ASSERT_TRUE(Write(&env_, Path("a"), "A", true).ok());
  env_.FailNth(FaultInjectionEnv::Op::kRename, 1);
  EXPECT_TRUE(env_.Rename(Path("a"), Path("b")).IsIOError());
  EXPECT_EQ(Read(Path("a")), "A");
  EXPECT_EQ(Read(Path("b")), "<absent>");
  env_.FailNth(FaultInjectionEnv::Op::kSyncDir, 1);
  EXPECT_TRUE(env_.SyncDir(dir_).IsIOError());
  EXPECT_TRUE(env_.SyncDir(dir_).ok());
  env_.FailNth(FaultInjectionEnv::Op::kNewFile, 1);
  EXPECT_TRUE(env_.NewExclusiveFile(Path("c")).status().IsIOError());
  EXPECT_EQ(Read(Path("c")), "<absent>");
  env_.FailNth(FaultInjectionEnv::Op::kCreateDir, 1);
  EXPECT_TRUE(env_.CreateDir(Path("d")).IsIOError());
  EXPECT_TRUE(env_.CreateDir(Path("d")).ok());
}

TEST_F(FaultEnvTest, CountsMutatingOpsOnly) {
  ASSERT_TRUE(WriteFileAtomic(&env_, Path("m"), "x", /*sync_dir=*/true).ok());
  // NewExclusiveFile, Append, Sync, Close, Rename, SyncDir.
  EXPECT_EQ(env_.mutating_ops(), 6);
  std::string out;
  ASSERT_TRUE(env_.ReadFile(Path("m"), &out, 10).ok());
  ASSERT_TRUE(env_.Stat(Path("m")).ok());
  std::vector<std::string> names;
  ASSERT_TRUE(env_.ListDir(dir_, &names).ok());
  EXPECT_EQ(env_.mutating_ops(), 6);
  ASSERT_TRUE(env_.TouchMtime(Path("m")).ok());
  ASSERT_TRUE(env_.CreateDir(Path("d")).ok());
  ASSERT_TRUE(env_.RemoveDir(Path("d")).ok());
  ASSERT_TRUE(env_.RemoveFile(Path("m")).ok());
  EXPECT_EQ(env_.mutating_ops(), 10);
  auto log = env_.op_log();
  ASSERT_EQ(log.size(), 10u);
  EXPECT_EQ(log[0].rfind("NewExclusiveFile ", 0), 0u) << log[0];
  EXPECT_EQ(log[4].rfind("Rename ", 0), 0u) << log[4];
  EXPECT_EQ(log[9], "RemoveFile " + Path("m"));
  env_.ResetState();
  EXPECT_EQ(env_.mutating_ops(), 0);
}

TEST_F(FaultEnvTest, CrashAfterK) {
  env_.CrashAfter(3);
  auto f = env_.NewExclusiveFile(Path("t"));  // 1
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE((*f)->Append("abc").ok());  // 2
  EXPECT_TRUE((*f)->Sync().ok());         // 3
  EXPECT_FALSE(env_.crashed());
  Status s = (*f)->Close();  // 4: crashes
  EXPECT_TRUE(s.IsIOError());
  EXPECT_NE(s.message().find("simulated crash"), std::string::npos) << s.ToString();
  EXPECT_TRUE(env_.crashed());
  // Everything later fails too and changes nothing.
  EXPECT_TRUE(env_.Rename(Path("t"), Path("f")).IsIOError());
  EXPECT_TRUE(env_.CreateDir(Path("d")).IsIOError());
  EXPECT_TRUE(env_.NewWritableFile(Path("x")).status().IsIOError());
  EXPECT_EQ(Read(Path("t")), "abc");
  EXPECT_EQ(Read(Path("f")), "<absent>");
  EXPECT_EQ(List(dir_), std::vector<std::string>{"t"});
  // Reads still work after the crash.
  std::string out;
  EXPECT_TRUE(env_.ReadFile(Path("t"), &out, 10).ok());
  EXPECT_EQ(env_.mutating_ops(), 7);
  env_.ClearFaults();
  EXPECT_FALSE(env_.crashed());
  EXPECT_TRUE(env_.CreateDir(Path("d")).ok());
}

TEST_F(FaultEnvTest, CrashAfterZeroFailsFirstOp) {
  env_.CrashAfter(0);
  EXPECT_TRUE(env_.NewWritableFile(Path("f")).status().IsIOError());
  EXPECT_EQ(Read(Path("f")), "<absent>");
  EXPECT_TRUE(env_.crashed());
}

TEST_F(FaultEnvTest, DropTruncatesToSyncedLength) {
  auto f = env_.NewWritableFile(Path("f"));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("0123456789").ok());
  ASSERT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE((*f)->Append("abcde").ok());
  ASSERT_TRUE((*f)->Close().ok());
  ASSERT_TRUE(Write(&env_, Path("never_synced"), "lost", false).ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  EXPECT_EQ(Read(Path("f")), "0123456789abcde");
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("f")), "0123456789");
  EXPECT_EQ(Read(Path("never_synced")), "");
}

TEST_F(FaultEnvTest, DropDeletesNamesWithoutDirSync) {
  ASSERT_TRUE(Write(&env_, Path("kept"), "k", true).ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE(Write(&env_, Path("new"), "n", true).ok());  // synced data, unsynced name
  ASSERT_TRUE(env_.CreateDir(Path("sub")).ok());
  ASSERT_TRUE(Write(&env_, Path("sub/x"), "x", true).ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());  // the wrong folder for sub/x
  ASSERT_TRUE(Write(&env_, Path("late"), "l", true).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("kept")), "k");
  EXPECT_EQ(Read(Path("new")), "n");
  EXPECT_EQ(Read(Path("late")), "<absent>");
  EXPECT_EQ(Read(Path("sub/x")), "<absent>");
  EXPECT_TRUE(Env::Default()->Stat(Path("sub")).ok());  // folders are durable
}

TEST_F(FaultEnvTest, FilesWrittenElsewhereAreDurable) {
  ASSERT_TRUE(Write(Env::Default(), Path("old"), "old", false).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("old")), "old");
}

TEST_F(FaultEnvTest, DropUndoesUnsyncedRename) {
  // A temp file renamed into place without a folder sync: both names go.
  ASSERT_TRUE(Write(&env_, Path("tmp"), "data", true).ok());
  ASSERT_TRUE(env_.Rename(Path("tmp"), Path("final")).ok());
  // A durable file renamed without a folder sync: back at its old name.
  ASSERT_TRUE(Write(Env::Default(), Path("durable"), "D", false).ok());
  ASSERT_TRUE(env_.RenameNoReplace(Path("durable"), Path("moved")).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(List(dir_), std::vector<std::string>{"durable"});
  EXPECT_EQ(Read(Path("durable")), "D");
}

TEST_F(FaultEnvTest, RenameDurableAfterTargetFolderSync) {
  ASSERT_TRUE(env_.CreateDir(Path("src")).ok());
  ASSERT_TRUE(env_.CreateDir(Path("dst")).ok());
  ASSERT_TRUE(Write(&env_, Path("src/f"), "F", true).ok());
  ASSERT_TRUE(env_.Rename(Path("src/f"), Path("dst/f")).ok());
  ASSERT_TRUE(env_.SyncDir(Path("src")).ok());  // not enough in this model
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("dst/f")), "<absent>");
  EXPECT_EQ(Read(Path("src/f")), "<absent>");  // its creation was never synced

  ASSERT_TRUE(Write(&env_, Path("src/g"), "G", true).ok());
  ASSERT_TRUE(env_.Rename(Path("src/g"), Path("dst/g")).ok());
  ASSERT_TRUE(env_.SyncDir(Path("dst")).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("dst/g")), "G");
  EXPECT_EQ(Read(Path("src/g")), "<absent>");
}

TEST_F(FaultEnvTest, UndoneRenameRestoresReplacedFile) {
  ASSERT_TRUE(Write(&env_, Path("m"), "old", true).ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE(Write(&env_, Path("m.tmp"), "new", true).ok());
  ASSERT_TRUE(env_.Rename(Path("m.tmp"), Path("m")).ok());
  EXPECT_EQ(Read(Path("m")), "new");
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("m")), "old");
  EXPECT_EQ(List(dir_), std::vector<std::string>{"m"});
}

TEST_F(FaultEnvTest, UndoesChainOfRenamesInReverse) {
  ASSERT_TRUE(Write(Env::Default(), Path("a"), "A", false).ok());
  ASSERT_TRUE(env_.Rename(Path("a"), Path("b")).ok());
  ASSERT_TRUE(env_.Rename(Path("b"), Path("c")).ok());
  ASSERT_TRUE(Write(Env::Default(), Path("b"), "other", false).ok());  // b reused
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  // c -> b is blocked by the durable "b", so c is dropped; "a" never moved
  // durably, but its trail ended at c. What matters: no name is invented
  // and nothing is left half-moved.
  EXPECT_EQ(Read(Path("c")), "<absent>");
  EXPECT_EQ(Read(Path("b")), "other");

  ASSERT_TRUE(Write(Env::Default(), Path("x"), "X", false).ok());
  ASSERT_TRUE(env_.Rename(Path("x"), Path("y")).ok());
  ASSERT_TRUE(env_.Rename(Path("y"), Path("z")).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("x")), "X");
  EXPECT_EQ(Read(Path("y")), "<absent>");
  EXPECT_EQ(Read(Path("z")), "<absent>");
}

TEST_F(FaultEnvTest, FolderRenameUndoneCarriesFiles) {
  ASSERT_TRUE(env_.CreateDir(Path("staging")).ok());
  ASSERT_TRUE(Write(&env_, Path("staging/index"), "idx", true).ok());
  ASSERT_TRUE(Write(&env_, Path("staging/unsynced"), "u", false).ok());
  ASSERT_TRUE(env_.SyncDir(Path("staging")).ok());
  ASSERT_TRUE(env_.Rename(Path("staging"), Path("snap")).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("snap/index")), "<absent>");
  EXPECT_FALSE(Env::Default()->Stat(Path("snap")).ok());
  EXPECT_EQ(Read(Path("staging/index")), "idx");
  EXPECT_EQ(Read(Path("staging/unsynced")), "");
}

TEST_F(FaultEnvTest, FolderRenameDurableCarriesFileState) {
  ASSERT_TRUE(env_.CreateDir(Path("staging")).ok());
  auto f = env_.NewWritableFile(Path("staging/log"));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("abc").ok());
  ASSERT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE(Write(&env_, Path("staging/new"), "n", true).ok());
  ASSERT_TRUE(env_.SyncDir(Path("staging")).ok());
  ASSERT_TRUE(Write(&env_, Path("staging/late"), "l", true).ok());  // name never synced
  ASSERT_TRUE(env_.Rename(Path("staging"), Path("snap")).ok());
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE((*f)->Append("def").ok());  // after the move, never synced
  ASSERT_TRUE((*f)->Close().ok());
  EXPECT_EQ(Read(Path("snap/log")), "abcdef");
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("snap/log")), "abc");  // tracked under its new path
  EXPECT_EQ(Read(Path("snap/new")), "n");
  EXPECT_EQ(Read(Path("snap/late")), "<absent>");
  EXPECT_FALSE(Env::Default()->Stat(Path("staging")).ok());
}

TEST_F(FaultEnvTest, SyncOfRenamedFolderCoversRenamesInside) {
  ASSERT_TRUE(env_.CreateDir(Path("a")).ok());
  ASSERT_TRUE(Write(&env_, Path("a/t"), "T", true).ok());
  ASSERT_TRUE(env_.Rename(Path("a/t"), Path("a/f")).ok());
  ASSERT_TRUE(env_.Rename(Path("a"), Path("b")).ok());
  ASSERT_TRUE(env_.SyncDir(Path("b")).ok());  // the folder once called "a"
  ASSERT_TRUE(env_.SyncDir(dir_).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Read(Path("b/f")), "T");
  EXPECT_EQ(List(Path("b")), std::vector<std::string>{"f"});
}

TEST_F(FaultEnvTest, DropRebootsTheEnv) {
  env_.CrashAfter(0);
  EXPECT_TRUE(env_.CreateDir(Path("d")).IsIOError());
  env_.FailNthAppend(1);
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_FALSE(env_.crashed());
  EXPECT_EQ(env_.mutating_ops(), 0);
  EXPECT_TRUE(Write(&env_, Path("f"), "x", true).ok());  // append no longer armed
}

TEST_F(FaultEnvTest, FakeClock) {
  env_.SetNowSeconds(1234);
  EXPECT_EQ(env_.NowSeconds(), 1234);
  env_.SetNowSeconds(std::nullopt);
  EXPECT_GT(env_.NowSeconds(), 1600000000);
}

// The model end to end: WriteFileAtomic over an old durable file, crashed at
// every step, leaves the old or the new content and no temp file.
TEST_F(FaultEnvTest, CrashLoopOverWriteFileAtomic) {
  const std::string p = Path("manifest");
  ASSERT_TRUE(WriteFileAtomic(Env::Default(), p, "old", true).ok());
  env_.ResetState();
  ASSERT_TRUE(WriteFileAtomic(&env_, p, "new", true).ok());
  const int64_t total = env_.mutating_ops();
  ASSERT_EQ(total, 6);
  int old_seen = 0, new_seen = 0;
  for (int64_t k = 0; k <= total; ++k) {
    SCOPED_TRACE("crash after " + std::to_string(k));
    ASSERT_TRUE(WriteFileAtomic(Env::Default(), p, "old", true).ok());
    env_.ResetState();
    env_.CrashAfter(k);
    Status s = WriteFileAtomic(&env_, p, "new", true);
    EXPECT_EQ(s.ok(), k == total);
    ASSERT_TRUE(env_.DropUnsyncedData().ok());
    std::string content = Read(p);
    EXPECT_TRUE(content == "old" || content == "new") << content;
    (content == "old" ? old_seen : new_seen)++;
    EXPECT_EQ(List(dir_), std::vector<std::string>{"manifest"});
  }
  // Only the final folder sync makes the new content durable.
  EXPECT_EQ(old_seen, total);
  EXPECT_EQ(new_seen, 1);
}

}  // namespace
}  // namespace cairn::storage
