// Reachability under a connection flood (issue 17): 200 connections from one
// address holding a partial request head and 50 stuck in the TLS handshake,
// kept up (re-opened when the server closes one) while the real `cairn`
// client backs up a 256 MiB qcow2 image through qemu-storage-daemon and
// restores it. Both must complete, byte for byte, within twice their time on
// an idle server; afterwards the server closes every held connection and its
// counts return to idle.
//
// It prints the backup's MB/s idle and under the flood; bench/run_gate_load.sh
// runs it on a Release build (CAIRN_REACH_MIB sets the image size).

#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "storage/names.h"
#include "tests/client/qemu_testutil.h"
#include "tests/integration/raw_tls_testutil.h"
#include "tests/integration/server_process_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;
constexpr uint64_t kMiB = 1 << 20;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// 4 MiB regions in turn: zero, random, text, zero, random, text, zero, ...
// (40% zero, 30% random, 30% text), seeded.
void WriteMixedRaw(const std::string& path, uint64_t size, uint32_t seed) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::mt19937_64 rng(seed);
  const char* words[] = {"cairn ", "backup ", "chunk ", "qemu ", "bitmap ", "snapshot\n"};
  std::string region(4 * kMiB, '\0');
  for (uint64_t off = 0, i = 0; off < size; off += region.size(), ++i) {
    switch (i % 10) {
      case 0: case 3: case 6: case 9:
        std::fill(region.begin(), region.end(), '\0');
        break;
      case 1: case 4: case 7:
        for (size_t k = 0; k + 8 <= region.size(); k += 8) {
          uint64_t v = rng();
          std::memcpy(&region[k], &v, 8);
        }
        break;
      default: {
        size_t k = 0;
        while (k < region.size()) {
          const char* w = words[rng() % 6];
          for (const char* p = w; *p && k < region.size(); ++p) region[k++] = *p;
        }
      }
    }
    out.write(region.data(), static_cast<std::streamsize>(std::min<uint64_t>(region.size(), size - off)));
  }
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Holds `heads` TLS connections with a partial request head and `handshakes`
// TCP connections that sent half a ClientHello, re-opening each one the
// server closes, until Stop(); then leaves the last ones open for the
// server to close.
class Flood {
 public:
  Flood(int port, int heads, int handshakes) : port_(port), heads_(heads), handshakes_(handshakes) {}
  ~Flood() {
    Stop();
    for (int fd : tcp_) ::close(fd);
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t reopened() const { return reopened_; }
  // Every held connection, for checking that the server closes them.
  std::vector<int> fds() const {
    std::vector<int> out = tcp_;
    for (const auto& h : tls_) if (h) out.push_back(h->fd());
    return out;
  }

 private:
  std::unique_ptr<RawTls> OpenHead() {
    auto c = RawTls::Connect(port_);
    if (c) c->Send("POST /api/v1/datastores/default/backup HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n");
    return c;
  }
  int OpenHandshake() {
    int fd = TcpConnect(port_);
    // A TLS record header announcing a 512-byte ClientHello, and nothing more.
    if (fd >= 0) (void)!::write(fd, "\x16\x03\x01\x02\x00\x01", 6);
    return fd;
  }
  static bool Closed(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    char b[512];
    ssize_t n = ::recv(fd, b, sizeof(b), MSG_DONTWAIT | MSG_PEEK);
    return n <= 0;
  }

  void Run() {
    for (int i = 0; i < heads_ && !stop_; ++i) tls_.push_back(OpenHead());
    for (int i = 0; i < handshakes_ && !stop_; ++i) tcp_.push_back(OpenHandshake());
    while (!stop_) {
      for (auto& h : tls_) {
        if (stop_) break;
        if (!h || Closed(h->fd())) {
          h = OpenHead();
          ++reopened_;
        }
      }
      for (int& fd : tcp_) {
        if (stop_) break;
        if (fd < 0 || Closed(fd)) {
          if (fd >= 0) ::close(fd);
          fd = OpenHandshake();
          ++reopened_;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  const int port_;
  const int heads_;
  const int handshakes_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> reopened_{0};
  std::vector<std::unique_ptr<RawTls>> tls_;
  std::vector<int> tcp_;
  std::thread thread_;
};

class ServerReachabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* mib = std::getenv("CAIRN_REACH_MIB");
    size_ = (mib ? std::strtoull(mib, nullptr, 10) : 256) * kMiB;
    server_ = ServerProcess::Start(data_.path(), {"--handshake-timeout-ms", "5000",
                                                  "--header-timeout-ms", "5000"});
    ASSERT_NE(server_, nullptr);
  }

  std::vector<std::string> Env() const {
    return {"CAIRN_REPO=https://127.0.0.1:" + std::to_string(server_->port()) + "/default",
            "CAIRN_TOKEN=" + server_->AdminToken(), "CAIRN_FINGERPRINT=" + server_->fingerprint()};
  }

  // Backs up a fresh image of `seed` as vm/<id> and restores it; fills the
  // wall times in ms. False (and the test failed) when anything differs.
  bool RoundTrip(const std::string& id, uint32_t seed, int64_t* backup_ms, int64_t* restore_ms) {
    const std::string raw = work_.path() + "/src-" + id + ".raw";
    const std::string img = work_.path() + "/vm-" + id + ".qcow2";
    WriteMixedRaw(raw, size_, seed);
    auto conv = client::testing::RunCommand({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img});
    EXPECT_EQ(conv.exit_code, 0) << conv.output;
    if (conv.exit_code != 0) return false;
    int64_t t0 = NowMs();
    auto b = RunBinary("client/cairn",
                       {"--output", "json", "backup", "image", "--id", id, "--backup-time",
                        storage::FormatSnapshotTime(1790000000 + std::stoll(id) * 3600), img},
                       Env(), work_.path());
    *backup_ms = NowMs() - t0;
    EXPECT_EQ(b.exit_code, 0) << b.output;
    if (b.exit_code != 0) return false;
    json summary;
    for (size_t pos = 0; pos < b.output.size();) {
      size_t end = b.output.find('\n', pos);
      auto j = json::parse(b.output.substr(pos, end - pos), nullptr, false);
      if (j.is_object() && j.contains("snapshot")) summary = j;
      if (end == std::string::npos) break;
      pos = end + 1;
    }
    EXPECT_TRUE(summary.is_object()) << b.output;
    if (!summary.is_object()) return false;
    const std::string out = work_.path() + "/restored-" + id + ".raw";
    t0 = NowMs();
    auto r = RunBinary("client/cairn",
                       {"restore", summary["snapshot"].get<std::string>(),
                        "vm-" + id + ".qcow2", out},
                       Env(), work_.path());
    *restore_ms = NowMs() - t0;
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code != 0) return false;
    bool same = ReadAll(out) == ReadAll(raw);
    EXPECT_TRUE(same) << "restored image differs from the source";
    std::filesystem::remove(out);
    std::filesystem::remove(raw);
    std::filesystem::remove(img);
    return same;
  }

  json Connections() {
    ApiClient api(server_->port(), server_->AdminToken());
    auto r = api.Get("/api/v1/status");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.Json()["connections"];
  }

  TempDir data_;
  TempDir work_;
  uint64_t size_ = 0;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ServerReachabilityTest, BackupAndRestoreThroughAConnectionFlood) {
  int64_t idle_backup = 0, idle_restore = 0;
  ASSERT_TRUE(RoundTrip("1", 1, &idle_backup, &idle_restore));
  const int64_t idle_peak_kib = ProcessKib(server_->pid(), "VmHWM");

  Flood flood(server_->port(), 200, 50);
  flood.Start();
  // Wait until the flood is in place.
  json c;
  for (int i = 0; i < 100; ++i) {
    c = Connections();
    if (c["unauthenticated"].get<int64_t>() >= 240) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(c["unauthenticated"].get<int64_t>(), 240) << c.dump();
  int64_t flood_backup = 0, flood_restore = 0;
  const bool ok = RoundTrip("2", 2, &flood_backup, &flood_restore);
  json during = Connections();
  flood.Stop();
  ASSERT_TRUE(ok);

  const double mib = static_cast<double>(size_) / kMiB;
  std::printf("backup  of %.0f MiB: idle %lld ms (%.1f MB/s), under the flood %lld ms (%.1f MB/s)\n",
              mib, static_cast<long long>(idle_backup), size_ / 1e3 / idle_backup,
              static_cast<long long>(flood_backup), size_ / 1e3 / flood_backup);
  std::printf("restore of %.0f MiB: idle %lld ms (%.1f MB/s), under the flood %lld ms (%.1f MB/s)\n",
              mib, static_cast<long long>(idle_restore), size_ / 1e3 / idle_restore,
              static_cast<long long>(flood_restore), size_ / 1e3 / flood_restore);
  std::printf("flood: %llu connections re-opened after the server closed them; during: %s\n",
              static_cast<unsigned long long>(flood.reopened()), during.dump().c_str());
  std::printf("server peak RSS: %lld KiB after the idle round, %lld KiB after the flooded one\n",
              static_cast<long long>(idle_peak_kib),
              static_cast<long long>(ProcessKib(server_->pid(), "VmHWM")));
  // Twice the idle time, plus one second for process start-up noise on a
  // small image.
  EXPECT_LE(flood_backup, 2 * idle_backup + 1000);
  EXPECT_LE(flood_restore, 2 * idle_restore + 1000);

  // The server closes what the flood still holds, and goes back to idle.
  for (int fd : flood.fds()) {
    pollfd p{fd, POLLIN, 0};
    EXPECT_TRUE(PeerClosed(fd, 8000)) << "a held connection was not closed";
    (void)p;
  }
  json after;
  for (int i = 0; i < 50; ++i) {
    after = Connections();
    if (after["unauthenticated"] == 0 && after["handshake"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(after["unauthenticated"], 0) << after.dump();
  EXPECT_EQ(after["handshake"], 0) << after.dump();
  EXPECT_LE(after["open"].get<int64_t>(), 8) << after.dump();
}

}  // namespace
}  // namespace cairn::testing
