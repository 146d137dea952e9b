// The `cairn backup all` config file: the example parses as documented,
// repeated sections, overrides, and clear errors for what is wrong.

#include "client/backup_config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace cairn::client {
namespace {

TEST(BackupConfigTest, TheExampleParses) {
  const char* src = std::getenv("CAIRN_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  std::ifstream in(std::string(src) + "/packaging/backup.conf.example");
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseBackupConfig(ss.str(), "backup.conf.example");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->repository, "https://backup.example.org:8107/default");
  EXPECT_EQ(c->jobs, 1);
  EXPECT_TRUE(c->libvirt);
  EXPECT_EQ(c->libvirt_exclude, (std::vector<std::string>{"scratch", "template"}));
  ASSERT_EQ(c->domains.size(), 1u);
  EXPECT_EQ(c->domains[0].overrides.skip_disks, std::vector<std::string>{"vdb"});
  EXPECT_EQ(c->domains[0].overrides.quiesce, QuiescePolicy::kRequire);
  EXPECT_EQ(c->domains[0].overrides.rate_limit_mb, 20.0);
  ASSERT_EQ(c->qemu.size(), 1u);
  EXPECT_EQ(c->qemu[0].qmp, "/run/vm100.qmp");
  ASSERT_EQ(c->images.size(), 1u);
  EXPECT_EQ(c->images[0].files.size(), 2u);
  EXPECT_EQ(c->notify.mail_to, "ops@example.org");
}

TEST(BackupConfigTest, RepeatedSectionsAndOverrides) {
  auto c = ParseBackupConfig(
      "jobs = 2\nrate-limit = 12.5\n"
      "[[qemu]]\nid = \"a\"\nqmp = \"/a\"\nguest-agent = \"/a.qga\"\nfull = true\n"
      "[[qemu]]\nid = \"b\"\nqmp = \"/b\"\nskip-disks = [\"d1\", \"d2\"]\n"
      "[notify]\nwebhook = \"https://h:8443/x\"\nwhen = \"failure\"\n",
      "t");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->jobs, 2);
  EXPECT_DOUBLE_EQ(c->rate_limit_mb, 12.5);
  ASSERT_EQ(c->qemu.size(), 2u);
  EXPECT_TRUE(c->qemu[0].overrides.full);
  EXPECT_EQ(c->qemu[0].guest_agent, "/a.qga");
  EXPECT_EQ(c->qemu[1].overrides.skip_disks, (std::vector<std::string>{"d1", "d2"}));
  EXPECT_TRUE(c->notify_on_failure_only);
}

TEST(BackupConfigTest, ErrorsNameTheSectionAndKey) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"[[qemu]]\nid = \"a\"\nqmp = \"/a\"\nqpm = \"/b\"\n", "[[qemu]] #1: unknown key \"qpm\""},
      {"[[qemu]]\nid = \"a\"\n", "[[qemu]] #1: \"qmp\" is missing"},
      {"[[image]]\nid = \"a\"\n", "\"files\" is missing"},
      {"[[image]]\nid = \"a\"\nfiles = [\"/x\"]\nquiesce = \"try\"\n", "no meaning"},
      {"jobs = 0\n[[qemu]]\nid = \"a\"\nqmp = \"/a\"\n", "\"jobs\" wants a whole number"},
      {"[[qemu]]\nid = \"a\"\nqmp = \"/a\"\n[[qemu]]\nid = \"a\"\nqmp = \"/b\"\n", "vm/a"},
      {"[[domain]]\nname = \"x\"\n", "needs a [libvirt] section"},
      {"[foo]\nx = 1\n", "unknown section [foo]"},
      {"repository = \"x\"\n", "no VM to back up"},
      {"[notify]\nmail-to = \"a@b\\nBcc: c@d\"\n[[qemu]]\nid = \"a\"\nqmp = \"/a\"\n", "mail"},
      {"[qemu.x]\nid = \"a\"\n", "nested sections"},
      {"hook = /a b\n[[qemu]]\nid = \"a\"\nqmp = \"/a\"\n", "wants one value"},
  };
  for (const auto& c : cases) {
    auto r = ParseBackupConfig(c.text, "t.conf");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_TRUE(r.status().IsInvalidArgument()) << c.text;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.text << " → " << r.status().message();
    EXPECT_EQ(r.status().message().rfind("t.conf: ", 0), 0u) << r.status().message();
  }
}

}  // namespace
}  // namespace cairn::client
