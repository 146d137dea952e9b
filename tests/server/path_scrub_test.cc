#include "server/path_scrub.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "server/task_log.h"

namespace cairn::server {
namespace {

TEST(PathScrubTest, KnownFoldersAndOtherAbsolutePathsAreReplaced) {
  AddServerPath("/srv/cairn-scrub-test/data");
  EXPECT_EQ(ScrubPaths("/srv/cairn-scrub-test/data/stores/x/vm/1/a.fidx: No such file"),
            "<server>/stores/x/vm/1/a.fidx: No such file");
  EXPECT_EQ(ScrubPaths("cannot open /etc/passwd: denied"), "cannot open <path>: denied");
  EXPECT_EQ(ScrubPaths("index \"/var/x y\" bad"), "index \"<path> y\" bad");
  // Snapshot names, archives, ratios and lone slashes stay.
  EXPECT_EQ(ScrubPaths("vm/100/2027-01-15T08:00:00Z disk0.fidx"),
            "vm/100/2027-01-15T08:00:00Z disk0.fidx");
  EXPECT_EQ(ScrubPaths("3 / 4 chunks, 10/20"), "3 / 4 chunks, 10/20");
}

TEST(PathScrubTest, TaskLogsAndSummariesCarryNoPaths) {
  const std::string dir = ::testing::TempDir() + "/path_scrub_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  AddServerPath(dir);
  auto log = TaskLog::Open(dir);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  auto task = (*log)->Start("verify", "default", "admin!default");
  ASSERT_TRUE(task.ok());
  (*task)->Log("reading " + dir + "/stores/default/vm/1/x.fidx failed");
  (*task)->Warn("chunk /tmp/elsewhere/abc is bad");
  (*task)->Finish(storage::Status::IOError(dir + "/tasks: full"), "");
  auto text = (*log)->ReadLog((*task)->id(), 0, 1 << 20);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->find(dir), std::string::npos) << *text;
  EXPECT_EQ(text->find("/tmp/elsewhere"), std::string::npos) << *text;
  EXPECT_NE(text->find("<server>/stores/default/vm/1/x.fidx"), std::string::npos) << *text;
  EXPECT_NE(text->find("chunk <path> is bad"), std::string::npos) << *text;
  auto info = (*log)->Get((*task)->id());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->summary.find(dir), std::string::npos) << info->summary;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cairn::server
