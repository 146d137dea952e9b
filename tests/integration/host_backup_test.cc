// `cairn backup all` end to end (issue 10, scenario 7 without libvirt):
// two real QEMU VMs (one with two disks), the image file of a shut-off VM,
// a VM whose QMP socket does not exist and a VM whose backup-start hook
// fails; the real cairn-server on loopback, a real HTTPS webhook peer and a
// sendmail stand-in. The hook's phases, the table, the JSON report, the exit
// status, the notifications and every committed snapshot (restored and
// compared byte for byte) are checked; --dry-run changes nothing; --jobs 2
// runs; a bad config file is exit status 2.
//
// libvirt domains in `backup all` (running with two disks, shut off,
// excluded, failing) next to a plain QEMU VM: scenario 7 of
// tests/integration/libvirt_domain_test.sh (ctest libvirt_domain, needs root
// and its own libvirtd).

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "server/tls.h"
#include "storage/names.h"
#include "tests/client/qemu_testutil.h"
#include "tests/integration/backup_api_testutil.h"

namespace cairn::testing {
namespace {

using client::testing::QemuVm;
using client::testing::ReadWholeFile;
using client::testing::RunCommand;
using client::testing::ShortTempDir;
using nlohmann::json;

// An HTTPS server that records every POST to /hook.
class WebhookPeer {
 public:
  explicit WebhookPeer(const std::string& dir)
      : tls_{dir + "/hook-cert.pem", dir + "/hook-key.pem"} {
    EXPECT_TRUE(server::EnsureSelfSignedCertificate(tls_).ok());
    http_ = std::make_unique<httplib::SSLServer>(tls_.cert.c_str(), tls_.key.c_str());
    http_->Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      bodies_.push_back(json::parse(req.body, nullptr, false));
      res.status = 204;
    });
    port_ = http_->bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { http_->listen_after_bind(); });
    while (!http_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~WebhookPeer() {
    http_->stop();
    thread_.join();
  }
  int port() const { return port_; }
  const std::string& cert() const { return tls_.cert; }
  std::vector<json> Bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }

 private:
  server::TlsPaths tls_;
  std::unique_ptr<httplib::SSLServer> http_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<json> bodies_;
};

::testing::AssertionResult SameFiles(const std::string& a, const std::string& b) {
  std::string x = ReadWholeFile(a), y = ReadWholeFile(b);
  if (x.empty()) return ::testing::AssertionFailure() << a << " is empty or missing";
  if (x != y) return ::testing::AssertionFailure() << a << " and " << b << " differ";
  return ::testing::AssertionSuccess();
}

class HostBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(data_.path());
    ASSERT_NE(server_, nullptr);
    admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
    token_file_ = dir_.Join("token");
    client::testing::WriteWholeFile(token_file_, server_->AdminToken() + "\n");
    // The hook records "PHASE ID" and what it was told; refuses VM "refused".
    hook_ = dir_.Join("hook.sh");
    std::ofstream(hook_) << "#!/bin/sh\n"
                         << "echo \"$1 $2|$CAIRN_GROUP|$CAIRN_SNAPSHOT|$CAIRN_MODE|$CAIRN_STORE\" >> "
                         << dir_.Join("phases") << "\n"
                         << "echo hook output for $1 $2\n"
                         << "if [ \"$1\" = backup-start ] && [ \"$2\" = refused ]; then\n"
                         << "  echo 'refused by the hook'; exit 1\nfi\n";
    ::chmod(hook_.c_str(), 0755);
    sendmail_ = dir_.Join("sendmail");
    std::ofstream(sendmail_) << "#!/bin/sh\necho \"ARGS $*\" >> " << dir_.Join("mail.txt")
                             << "\ncat >> " << dir_.Join("mail.txt") << "\n";
    ::chmod(sendmail_.c_str(), 0755);
  }

  std::string MakeDisk(const std::string& name) {
    std::string img = dir_.Join(name + ".qcow2");
    auto r = RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", img, "64M"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return img;
  }

  // A QEMU VM in its own folder with a second QMP socket for cairn.
  std::unique_ptr<QemuVm> StartVm(const std::string& name,
                                  const std::vector<std::pair<std::string, std::string>>& disks) {
    std::string vm_dir = dir_.Join(name);
    std::filesystem::create_directories(vm_dir);
    std::vector<std::string> specs;
    for (const auto& [node, img] : disks) specs.push_back(client::testing::Qcow2Blockdev(node, img));
    return QemuVm::Start(vm_dir, specs, {"-qmp", "unix:" + vm_dir + "/cairn.sock,server=on,wait=off"});
  }

  std::string Config(bool with_hook = true) {
    std::ostringstream c;
    c << "repository = \"https://127.0.0.1:" << server_->port() << "/default\"\n"
      << "token-file = \"" << token_file_ << "\"\n"
      << "fingerprint = \"" << server_->fingerprint() << "\"\n"
      << "log-dir = \"" << dir_.Join("logs") << "\"\n";
    if (with_hook) c << "hook = \"" << hook_ << "\"\n";
    c << "\n[[qemu]]\nid = \"vm-a\"\nqmp = \"" << dir_.Join("a/cairn.sock") << "\"\n"
      << "\n[[qemu]]\nid = \"vm-b\"\nqmp = \"" << dir_.Join("b/cairn.sock") << "\"\n"
      << "rate-limit = 50\n"
      << "\n[[image]]\nid = \"img\"\nfiles = [\"" << image_ << "\"]\n"
      << "\n[[qemu]]\nid = \"bad\"\nqmp = \"" << dir_.Join("none/cairn.sock") << "\"\n"
      << "\n[[qemu]]\nid = \"refused\"\nqmp = \"" << dir_.Join("b/cairn.sock") << "\"\n"
      << "\n[notify]\nmail-to = \"ops@example.org\"\nsendmail = \"" << sendmail_ << "\"\n"
      << "webhook = \"https://127.0.0.1:" << webhook_->port() << "/hook\"\n"
      << "webhook-ca = \"" << webhook_->cert() << "\"\n";
    std::string path = dir_.Join("backup.conf");
    client::testing::WriteWholeFile(path, c.str());
    return path;
  }

  CommandResult Cairn(const std::vector<std::string>& args) {
    return RunBinary("client/cairn", args, {}, dir_.path());
  }

  static json LastJson(const std::string& output) {
    size_t pos = output.rfind("\n{");
    json j = json::parse(output.substr(pos == std::string::npos ? 0 : pos + 1), nullptr, false);
    EXPECT_TRUE(j.is_object()) << output;
    return j;
  }

  size_t SnapshotCount() {
    size_t n = 0;
    for (std::string g : {"vm-a", "vm-b", "img", "bad", "refused"}) {
      auto r = admin_->Get("/api/v1/datastores/default/snapshots?group=" + Q("vm/" + g));
      if (r.status == 200) n += r.Json().size();
    }
    return n;
  }

  // Restores `archive` of `snapshot` and compares it with `expected` (raw).
  ::testing::AssertionResult RestoresTo(const std::string& snapshot, const std::string& archive,
                                        const std::string& expected) {
    std::string target = dir_.Join("restored.raw");
    std::filesystem::remove(target);
    auto r = RunBinary("client/cairn",
                       {"--repo", "https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
                        "--token-file", token_file_, "--fingerprint", server_->fingerprint(),
                        "restore", snapshot, archive, target},
                       {}, dir_.path());
    if (r.exit_code != 0) return ::testing::AssertionFailure() << "restore: " << r.output;
    return SameFiles(target, expected);
  }

  // A raw copy of an image as it is now (`qemu-img convert -U`).
  std::string RawCopy(const std::string& image, const std::string& name) {
    std::string out = dir_.Join(name);
    auto r = RunCommand({"qemu-img", "convert", "-U", "-O", "raw", image, out});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }

  // "PHASE ID" of every hook call so far.
  std::vector<std::string> Phases() {
    std::vector<std::string> out;
    std::istringstream in(ReadWholeFile(dir_.Join("phases")));
    for (std::string line; std::getline(in, line);) {
      out.push_back(line.substr(0, line.find('|')));
    }
    return out;
  }

  TempDir data_;
  ShortTempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
  std::unique_ptr<WebhookPeer> webhook_;
  std::string token_file_, hook_, sendmail_, image_;
};

const json* Row(const json& report, const std::string& vm) {
  for (const auto& r : report["vms"]) {
    if (r.value("vm", "") == vm) return &r;
  }
  return nullptr;
}

TEST_F(HostBackupTest, EveryVmOfTheHostWithHooksReportAndNotification) {
  webhook_ = std::make_unique<WebhookPeer>(dir_.path());
  std::string a0 = MakeDisk("a0"), a1 = MakeDisk("a1"), b0 = MakeDisk("b0");
  image_ = MakeDisk("img0");
  auto io = RunCommand({"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", image_});
  ASSERT_EQ(io.exit_code, 0) << io.output;
  auto vm_a = StartVm("a", {{"disk0", a0}, {"disk1", a1}});
  auto vm_b = StartVm("b", {{"disk0", b0}});
  ASSERT_NE(vm_a, nullptr);
  ASSERT_NE(vm_b, nullptr);
  ASSERT_TRUE(vm_a->QemuIo("disk0", "write -P 0x41 0 1M"));
  ASSERT_TRUE(vm_a->QemuIo("disk1", "write -P 0x42 5M 64k"));
  ASSERT_TRUE(vm_b->QemuIo("disk0", "write -P 0x43 9M 2M"));
  const std::string config = Config();

  // --dry-run: full reads with a reason, nothing touched.
  auto dry = Cairn({"--output", "json", "backup", "all", "--config", config, "--dry-run"});
  EXPECT_EQ(dry.exit_code, 3) << dry.output;  // "bad" cannot be reached
  json plan = LastJson(dry.output);
  ASSERT_TRUE(plan.is_object());
  const json* pa = Row(plan, "vm-a");
  ASSERT_NE(pa, nullptr) << plan.dump();
  ASSERT_EQ((*pa)["disks"].size(), 2u) << plan.dump();
  EXPECT_EQ((*pa)["disks"][0]["mode"], "full");
  EXPECT_NE((*pa)["disks"][0]["reason"].get<std::string>().find("first backup"), std::string::npos)
      << plan.dump();
  EXPECT_TRUE(Row(plan, "bad")->contains("error"));
  EXPECT_EQ(SnapshotCount(), 0u);
  EXPECT_FALSE(std::filesystem::exists(dir_.Join("phases"))) << "a dry run calls no hook";

  // The run: three VMs commit, two fail, exit status 3.
  auto run = Cairn({"--output", "json", "backup", "all", "--config", config});
  EXPECT_EQ(run.exit_code, 3) << run.output;
  json report = LastJson(run.output);
  ASSERT_TRUE(report.is_object()) << run.output;
  EXPECT_FALSE(report["ok"].get<bool>());
  EXPECT_EQ(report["committed"], 3) << report.dump();
  EXPECT_EQ(report["failed"], 2) << report.dump();
  for (std::string vm : {"vm-a", "vm-b", "img"}) {
    ASSERT_NE(Row(report, vm), nullptr);
    EXPECT_EQ((*Row(report, vm))["result"], "ok") << report.dump();
    EXPECT_EQ((*Row(report, vm))["mode"], "full") << report.dump();
  }
  EXPECT_EQ((*Row(report, "bad"))["result"], "failed");
  EXPECT_NE((*Row(report, "bad"))["error"].get<std::string>().find("cairn.sock"), std::string::npos);
  EXPECT_EQ((*Row(report, "refused"))["result"], "failed");
  EXPECT_NE((*Row(report, "refused"))["error"].get<std::string>().find("refused by the hook"),
            std::string::npos)
      << report.dump();
  EXPECT_EQ((*Row(report, "vm-a"))["summary"]["disks"].size(), 2u);
  EXPECT_EQ(SnapshotCount(), 3u);

  // The hook's phases, in order: the plain QEMU VMs in the file's order, then
  // the image files.
  std::vector<std::string> expected = {
      "job-start ",       "backup-start vm-a",    "backup-end vm-a",      "backup-start vm-b",
      "backup-end vm-b",  "backup-start bad",     "backup-abort bad",     "backup-start refused",
      "backup-abort refused", "backup-start img", "backup-end img",       "job-end "};
  EXPECT_EQ(Phases(), expected);
  std::string phases = ReadWholeFile(dir_.Join("phases"));
  const std::string snap_a = (*Row(report, "vm-a"))["snapshot"];
  EXPECT_NE(phases.find("backup-end vm-a|vm/vm-a|" + snap_a + "|full|default"), std::string::npos)
      << phases;
  EXPECT_NE(ReadWholeFile(dir_.Join("logs/vm-a.log")).find("hook output for backup-end vm-a"),
            std::string::npos);

  // Every committed snapshot restores to the disks as they are.
  EXPECT_TRUE(vm_a->QemuIo("disk0", "flush"));
  EXPECT_TRUE(vm_a->QemuIo("disk1", "flush"));
  EXPECT_TRUE(vm_b->QemuIo("disk0", "flush"));
  EXPECT_TRUE(RestoresTo(snap_a, "disk0", RawCopy(a0, "a0.raw")));
  EXPECT_TRUE(RestoresTo(snap_a, "disk1", RawCopy(a1, "a1.raw")));
  EXPECT_TRUE(RestoresTo((*Row(report, "vm-b"))["snapshot"], "disk0", RawCopy(b0, "b0.raw")));
  EXPECT_TRUE(RestoresTo((*Row(report, "img"))["snapshot"], "img0.qcow2", RawCopy(image_, "i.raw")));

  // The notifications: the webhook got the report, sendmail the table.
  auto bodies = webhook_->Bodies();
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0]["event"], "backup-job");
  EXPECT_EQ(bodies[0]["data"]["failed"], 2);
  EXPECT_NE(bodies[0]["subject"].get<std::string>().find("2 of 5 VMs FAILED"), std::string::npos)
      << bodies[0].dump();
  std::string mail = ReadWholeFile(dir_.Join("mail.txt"));
  EXPECT_NE(mail.find("ARGS -t -oi"), std::string::npos) << mail;
  EXPECT_NE(mail.find("To: ops@example.org"), std::string::npos) << mail;
  EXPECT_NE(mail.find("refused by the hook"), std::string::npos) << mail;

  // --dry-run now says incremental, and still changes nothing.
  auto dry2 = Cairn({"--output", "json", "backup", "all", "--config", config, "--dry-run"});
  json plan2 = LastJson(dry2.output);
  ASSERT_TRUE(plan2.is_object());
  EXPECT_EQ((*Row(plan2, "vm-a"))["disks"][1]["mode"], "incremental") << plan2.dump();
  EXPECT_EQ((*Row(plan2, "img"))["disks"][0]["mode"], "incremental") << plan2.dump();
  EXPECT_EQ(SnapshotCount(), 3u);

  // Again with --jobs 2 and the text table, after writes: incremental.
  ASSERT_TRUE(vm_a->QemuIo("disk1", "write -P 0x44 20M 64k"));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // a new snapshot time
  std::filesystem::remove(dir_.Join("phases"));
  auto text = Cairn({"backup", "all", "--config", config, "--jobs", "2"});
  EXPECT_EQ(text.exit_code, 3) << text.output;
  EXPECT_NE(text.output.find("3 of 5 VMs backed up, 2 failed"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("refused by the hook"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("incremental"), std::string::npos) << text.output;
  auto p2 = Phases();
  ASSERT_EQ(p2.size(), 12u);
  EXPECT_EQ(p2.front(), "job-start ");
  EXPECT_EQ(p2.back(), "job-end ");
  EXPECT_EQ(SnapshotCount(), 6u);
  auto s = admin_->Get("/api/v1/datastores/default/snapshots?group=" + Q("vm/vm-a")).Json();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_TRUE(vm_a->QemuIo("disk1", "flush"));
  std::string newest = "vm/vm-a/" + storage::FormatSnapshotTime(
                                         std::max(s[0]["time"].get<int64_t>(), s[1]["time"].get<int64_t>()));
  EXPECT_TRUE(RestoresTo(newest, "disk1", RawCopy(a1, "a1b.raw")));
}

TEST_F(HostBackupTest, ConfigErrorsAreClearAndExitTwo) {
  auto write = [&](const std::string& text) {
    std::string path = dir_.Join("bad.conf");
    client::testing::WriteWholeFile(path, text);
    return Cairn({"backup", "all", "--config", path});
  };
  auto r = write("repository = \"https://h:1/s\"\n[[qemu]]\nid = \"1\"\nqpm = \"/x\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("[[qemu]] #1: unknown key \"qpm\""), std::string::npos) << r.output;
  r = write("[[qemu]]\nid = \"a/b\"\nqmp = \"/x\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("\"id\""), std::string::npos) << r.output;
  r = write("jobs = many\n[[image]]\nid = \"1\"\nfiles = [\"/x\"]\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("\"jobs\" wants a whole number"), std::string::npos) << r.output;
  r = write("[[qemu]]\nid = \"1\"\nqmp = \"/x\"\n[[image]]\nid = \"1\"\nfiles = [\"/y\"]\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("two VMs back up into the group vm/1"), std::string::npos) << r.output;
  r = write("[[qemu]]\nid = \"1\"\nqmp = \"/x\"\nquiesce = \"require\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("guest-agent"), std::string::npos) << r.output;
  r = write("[notify]\nwebhook = \"http://x/\"\n[[qemu]]\nid = \"1\"\nqmp = \"/x\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("https://"), std::string::npos) << r.output;
  r = Cairn({"backup", "all", "--config", dir_.Join("missing.conf")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("missing.conf"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cairn::testing
