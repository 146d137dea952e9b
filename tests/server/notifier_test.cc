// Notifier and overdue announcements: URL checks, the overdue rule, mail
// through a sendmail stand-in (a script that keeps what it was given: no MTA
// runs here) with header injection refused, and once-per-episode bookkeeping.

#include "server/notifier.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "server/overdue.h"
#include "storage/env.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::server {
namespace {

NotifierOptions MailTo(const std::string& to, const std::string& sendmail = "/usr/sbin/sendmail") {
  NotifierOptions o;
  o.mail_to = to;
  o.sendmail = sendmail;
  return o;
}

class NotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    // Appends its arguments and its input to mail.txt; exits `rc`.
    script_ = dir_ + "/sendmail";
    WriteScript(0);
  }
  void WriteScript(int rc) {
    std::ofstream(script_) << "#!/bin/sh\necho \"ARGS $*\" >> " << dir_
                           << "/mail.txt\ncat >> " << dir_ << "/mail.txt\nexit " << rc << "\n";
    ::chmod(script_.c_str(), 0755);
  }
  std::string Mail() {
    std::ifstream in(dir_ + "/mail.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  Notifier MailNotifier() {
    auto n = Notifier::Create(MailTo("ops@example.org", script_));
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return std::move(*n);
  }

  cairn::testing::TempDir tmp_;
  std::string dir_, script_;
};

TEST_F(NotifierTest, WebhookUrls) {
  auto u = ParseWebhookUrl("https://hooks.example.org:8443/a/b?c=d");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->host, "hooks.example.org");
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->path, "/a/b?c=d");
  u = ParseWebhookUrl("https://127.0.0.1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/");
  for (const char* bad : {"http://x/", "https://", "https://u:p@x/", "https://x:0/",
                          "https://x:99999/", "https://x/a b", "https://x/\r\nHost: y",
                          "https://x/#frag", "ftp://x/", "https://x:8a/"}) {
    EXPECT_TRUE(ParseWebhookUrl(bad).status().IsInvalidArgument()) << bad;
  }
}

TEST_F(NotifierTest, OverdueRule) {
  EXPECT_FALSE(IsOverdue(0, 60, 1000));      // no snapshot: nothing to expect
  EXPECT_FALSE(IsOverdue(1000, 60, 1060));   // exactly the interval: not yet
  EXPECT_TRUE(IsOverdue(1000, 60, 1061));
  EXPECT_FALSE(IsOverdue(1000, 0, 999999));  // no interval: never
}

TEST_F(NotifierTest, MailGoesThroughSendmailWithoutHeaderInjection) {
  EXPECT_TRUE(Notifier::Create(MailTo("a@b\nBcc: evil@x")).status().IsInvalidArgument());
  Notifier n = MailNotifier();
  EXPECT_TRUE(n.enabled());
  Notification note{"backup-overdue", "no backup of vm/1\nBcc: evil@example.org", "body text",
                    {}};
  ASSERT_TRUE(n.Send(note).ok());
  const std::string mail = Mail();
  EXPECT_NE(mail.find("ARGS -t -oi"), std::string::npos) << mail;
  EXPECT_NE(mail.find("To: ops@example.org\n"), std::string::npos) << mail;
  EXPECT_NE(mail.find("Subject: no backup of vm/1 Bcc: evil@example.org\n"), std::string::npos)
      << mail;
  EXPECT_EQ(mail.find("\nBcc:"), std::string::npos) << mail;
  EXPECT_NE(mail.find("\n\nbody text\n"), std::string::npos) << mail;
  WriteScript(75);  // EX_TEMPFAIL
  EXPECT_TRUE(n.Send(note).IsIOError());
  auto missing = Notifier::Create(MailTo("ops@example.org", dir_ + "/none"));
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->Send(note).IsIOError());
}

TEST_F(NotifierTest, EachEpisodeIsAnnouncedOnceAndFailuresAreRetried) {
  auto notices = OverdueNotices::Open(dir_);
  ASSERT_TRUE(notices.ok()) << notices.status().ToString();
  Notifier n = MailNotifier();
  std::vector<OverdueGroup> overdue = {{"default", "vm/1", 1000, 60},
                                       {"default", "vm/2", 2000, 60}};
  WriteScript(1);  // the mailer fails: nothing counts as announced
  EXPECT_EQ(AnnounceOverdue(overdue, n, notices->get(), 5000), 0);
  WriteScript(0);
  EXPECT_EQ(AnnounceOverdue(overdue, n, notices->get(), 5001), 2);
  EXPECT_EQ(AnnounceOverdue(overdue, n, notices->get(), 5002), 0);
  // Kept across a reopen (server.db).
  notices->reset();
  notices = OverdueNotices::Open(dir_);
  ASSERT_TRUE(notices.ok());
  EXPECT_EQ(AnnounceOverdue(overdue, n, notices->get(), 5003), 0);
  // A newer snapshot of vm/1 that is overdue as well: a new episode.
  overdue[0].last_backup = 3000;
  EXPECT_EQ(AnnounceOverdue(overdue, n, notices->get(), 5004), 1);
  const std::string mail = Mail();
  EXPECT_NE(mail.find("Subject: cairn: no backup of vm/1 in datastore default"),
            std::string::npos)
      << mail;
}

}  // namespace
}  // namespace cairn::server
