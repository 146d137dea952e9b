// End-to-end VM backup benchmark (issue 4): a qcow2 disk in a running QEMU,
// the real cairn-server on loopback TLS with a fresh data directory, and the
// real `cairn` client, each phase timed from fork to exit of `cairn`:
//
//   1. full        `cairn backup vm` of the whole disk (first backup)
//   2. clustered   incremental after 2% of the disk was rewritten with random
//                  data in 4 extents
//   3. scattered   incremental after 2% was rewritten as 64 KiB blocks of
//                  random data at random 64 KiB-aligned positions
//   4. restore     `cairn restore` of phase 3's snapshot to a raw file, then
//                  compared byte for byte with `qemu-img convert -U -O raw`
//                  of the image taken after a qemu-io "flush" (not timed)
//
// For each phase: wall time, MB/s of the image size (MB = 10^6 bytes; image
// size / wall, whatever the phase read), the client's peak RSS (ru_maxrss of
// wait4), the server's peak RSS in that phase (VmHWM, reset before it with
// `echo 5 > /proc/PID/clear_refs`), and the CPU seconds of client, server and
// QEMU in that phase. Targets are printed next to the numbers.
//
// The image: size/4 MiB regions, 40% all-zero, 30% random, 30% text-like
// (log lines; zstd -1 shrinks them ~3×), shuffled with a fixed seed. The raw
// file is written with 4 MiB pwrite()s (zero regions stay holes) and
// converted with `qemu-img convert -O qcow2`.
//
//   vm_backup_bench --cairn=PATH --server=PATH [--work-dir=DIR] [--size-gib=2]
//       [--phases=all|full] [--recycle] [--keep]
//
// --phases defaults to all for 2 GiB and to full for other sizes (a larger
// disk only needs the full backup, to show the client's RSS does not grow
// with the disk). --work-dir (default /var/tmp) holds the image and the
// server's data directory; it must be a disk, not tmpfs. The QMP sockets go
// to a short folder under /tmp (unix socket paths are limited to 108 bytes).
// --recycle writes and deletes an image-sized scratch file before each phase
// (not timed), so the phase writes into recycled page-cache memory; see
// RecyclePageCache.
//
// Exit status: 0 when every phase ran and the restore matched, 1 otherwise
// (the error and the relevant log tail are printed), 2 on bad arguments.
// Missed speed or memory targets do not change the exit status.

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_data.h"
#include "client/qmp_client.h"

namespace {

using cairn::client::QmpClient;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kRegion = 4 * kMiB;
constexpr uint64_t kBlock = 64 * 1024;  // scattered rewrite unit
constexpr int kExtents = 4;             // clustered rewrite: this many extents
constexpr double kRewriteFraction = 0.02;
constexpr int64_t kFirstBackupTime = 1790000000;  // 2026-09-21T...Z, then +1 h per backup

// Targets of issue 4.
constexpr double kTargetFullMbS = 370;
constexpr double kTargetIncrementalPct = 5;
constexpr double kTargetRestoreMbS = 520;
constexpr double kTargetClientRssMiB = 128;

// ---------------------------------------------------------------------------
// Processes. Everything started here is remembered so that Die() can stop it.

pid_t g_server_pid = -1;
pid_t g_qemu_pid = -1;
std::string g_work_dir, g_sock_dir;
bool g_keep = false;
bool g_recycle = false;

void StopProcess(pid_t* pid, int sig) {
  if (*pid <= 0) return;
  ::kill(*pid, sig);
  int status = 0;
  ::waitpid(*pid, &status, 0);
  *pid = -1;
}

void Cleanup() {
  StopProcess(&g_qemu_pid, SIGKILL);
  StopProcess(&g_server_pid, SIGTERM);
  std::error_code ec;
  if (!g_sock_dir.empty()) std::filesystem::remove_all(g_sock_dir, ec);
  if (!g_work_dir.empty()) {
    if (g_keep) {
      std::cerr << "kept " << g_work_dir << "\n";
    } else {
      std::filesystem::remove_all(g_work_dir, ec);
    }
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Tail(const std::string& text, size_t lines) {
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "vm_backup_bench: " << message << "\n";
  if (!g_work_dir.empty()) {
    std::cerr << "--- server log tail:\n" << Tail(ReadFile(g_work_dir + "/server.log"), 20);
  }
  Cleanup();
  std::exit(1);
}

// fork + exec with stdout and stderr to `log` (appended) and `env` added to
// the environment. The argument vector is built before fork().
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log,
            const std::vector<std::string>& env = {}, bool own_group = false) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) Die("cannot open " + log + ": " + std::strerror(errno));
  pid_t pid = ::fork();
  if (pid < 0) Die(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (own_group) ::setpgid(0, 0);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(fd);
  return pid;
}

struct RunResult {
  int exit_code = -1;  // -1: killed at the timeout or by a signal
  int signal = 0;      // the signal that ended it, if one did
  double wall = 0;     // seconds
  struct rusage usage = {};
  std::string output;  // stdout + stderr
};

// Runs a command to completion (at most `timeout`) and reports its wall time
// and resource usage. ru_maxrss covers the process and any children it
// waited for.
RunResult Run(const std::vector<std::string>& argv, const std::string& log,
              const std::vector<std::string>& env = {},
              std::chrono::seconds timeout = std::chrono::seconds(1800)) {
  ::truncate(log.c_str(), 0);
  RunResult r;
  const auto t0 = Clock::now();
  pid_t pid = Spawn(argv, log, env);
  int status = 0;
  for (;;) {
    pid_t w = ::wait4(pid, &status, WNOHANG, &r.usage);
    if (w == pid) break;
    if (w < 0) Die(std::string("wait4: ") + std::strerror(errno));
    if (Clock::now() - t0 > timeout) {
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &r.usage);
      status = -1;
      break;
    }
    // 1 ms polling adds at most 1 ms to a wall time measured in seconds.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  r.wall = std::chrono::duration<double>(Clock::now() - t0).count();
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (status != -1 && WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  if (status == -1) r.signal = SIGKILL;
  r.output = ReadFile(log);
  return r;
}

void MustRun(const std::vector<std::string>& argv, const std::string& log) {
  RunResult r = Run(argv, log);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    Die("command failed (exit " + std::to_string(r.exit_code) + "): " + cmd + "\n" + r.output);
  }
}

// User and system CPU time of a running process, in seconds (all its threads).
struct Cpu {
  double user = 0, sys = 0;
  double total() const { return user + sys; }
  Cpu operator-(const Cpu& o) const { return {user - o.user, sys - o.sys}; }
};

Cpu ProcessCpu(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t p = stat.rfind(')');
  if (p == std::string::npos) return {};
  std::istringstream in(stat.substr(p + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields after the name start with field 3 (state); utime is 14, stime 15.
  for (int i = 3; i <= 15 && (in >> field); ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {static_cast<double>(utime) / hz, static_cast<double>(stime) / hz};
}

// A "Vm...: N kB" line of /proc/PID/status, in KiB.
uint64_t StatusKiB(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
  }
  return 0;
}

void ResetPeakRss(pid_t pid) {
  std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
  out << "5\n";
  out.flush();
  if (!out) Die("cannot reset VmHWM of pid " + std::to_string(pid) + " (clear_refs)");
}

std::string LoadAverage() {
  std::string l = ReadFile("/proc/loadavg");
  std::istringstream in(l);
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// "some avg10" of /proc/pressure/cpu: the share of time at least one task
// waited for a CPU in the last 10 s.
std::string CpuPressure() {
  std::string p = ReadFile("/proc/pressure/cpu");
  std::smatch m;
  static const std::regex re(R"(some avg10=([0-9.]+))");
  if (std::regex_search(p, m, re)) return m[1].str() + "%";
  return "n/a";
}

// Flushes every dirty page of the file system of `path`, so that the
// writeback of one phase (or of the image generator) does not run into the
// timing of the next.
void SyncFs(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::syncfs(fd);
    ::close(fd);
  }
}

// Writes `size` bytes of page cache into a scratch file and deletes it before
// writeback (no blocks are allocated), so that the next phase's new pages
// come from memory the kernel just freed. This VM (Firecracker with free
// page reporting) hands free guest memory back to the host, and the first
// write into such memory is several times slower than into recycled pages
// (bench/README.md, Storage, Method); a host with a full page cache does not
// see that. Only with --recycle.
void RecyclePageCache(const std::string& dir, uint64_t size) {
  const std::string path = dir + "/recycle.tmp";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("cannot create " + path + ": " + std::strerror(errno));
  std::string buf(kRegion, '\x5a');
  for (uint64_t off = 0; off < size; off += kRegion) {
    if (::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(buf.size())) {
      Die("write " + path + ": " + std::strerror(errno));
    }
  }
  ::close(fd);
  ::unlink(path.c_str());
}

// ---------------------------------------------------------------------------
// Data.

// splitmix64: fast, deterministic, good enough for incompressible bytes.
struct SplitMix {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

void FillRandom(char* p, size_t n, uint64_t seed) {
  SplitMix rng{seed};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng.Next();
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(rng.Next());
}

// Log-like lines (bench/bench_data.h). Generating them is slow (snprintf per line), so one pool is made and
// text regions are put together from 64 KiB pieces at random offsets of it:
// every region is distinct and compresses like the pool.
std::string TextPool(size_t size, uint64_t seed) { return cairn::bench::LogText(size, seed); }

enum class Kind { kZero, kRandom, kText };

// 40% zero, 30% random, 30% text, shuffled with a fixed seed.
std::vector<Kind> Layout(uint64_t regions) {
  std::vector<Kind> kinds(regions, Kind::kText);
  const uint64_t zero = regions * 40 / 100, random = regions * 30 / 100;
  std::fill_n(kinds.begin(), zero, Kind::kZero);
  std::fill_n(kinds.begin() + static_cast<std::ptrdiff_t>(zero), random, Kind::kRandom);
  std::mt19937_64 rng(42);
  std::shuffle(kinds.begin(), kinds.end(), rng);
  return kinds;
}

// Writes the raw image (zero regions are holes) and converts it to qcow2.
void MakeImage(const std::string& raw, const std::string& qcow2, uint64_t size) {
  const auto t0 = Clock::now();
  const uint64_t regions = size / kRegion;
  const std::vector<Kind> kinds = Layout(regions);
  const std::string pool = TextPool(32 * kMiB, 4);
  std::string buf(kRegion, '\0');
  std::mt19937_64 pick(5);
  int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("cannot create " + raw + ": " + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) Die("ftruncate " + raw);
  for (uint64_t r = 0; r < regions; ++r) {
    switch (kinds[r]) {
      case Kind::kZero:
        continue;
      case Kind::kRandom:
        FillRandom(buf.data(), buf.size(), 1000003 * r + 17);
        break;
      case Kind::kText:
        for (uint64_t off = 0; off < kRegion; off += kBlock) {
          const uint64_t from = pick() % (pool.size() - kBlock);
          std::memcpy(buf.data() + off, pool.data() + from, kBlock);
        }
        break;
    }
    const char* p = buf.data();
    uint64_t left = kRegion;
    off_t at = static_cast<off_t>(r * kRegion);
    while (left > 0) {
      ssize_t n = ::pwrite(fd, p, left, at);
      if (n <= 0) Die("write " + raw + ": " + std::strerror(errno));
      p += n;
      left -= static_cast<uint64_t>(n);
      at += n;
    }
  }
  ::close(fd);
  const double t_raw = std::chrono::duration<double>(Clock::now() - t0).count();
  MustRun({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2}, g_work_dir + "/qemu-img.log");
  std::filesystem::remove(raw);
  SyncFs(qcow2);
  std::printf("image: %s, %" PRIu64 " regions of 4 MiB (40%% zero, 30%% random, 30%% text); "
              "raw written in %.1f s, converted and synced in %.1f s\n",
              qcow2.c_str(), regions, t_raw,
              std::chrono::duration<double>(Clock::now() - t0).count() - t_raw);
}

// A file of `size` random bytes (the source of a qemu-io `write -s`).
void WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed) {
  std::string data(size, '\0');
  FillRandom(data.data(), data.size(), seed);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) Die("cannot write " + path);
}

// Streams both files and compares them; "" when equal, else where they differ.
std::string CompareFiles(const std::string& a, const std::string& b) {
  int fa = ::open(a.c_str(), O_RDONLY | O_CLOEXEC), fb = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
  if (fa < 0 || fb < 0) {
    if (fa >= 0) ::close(fa);
    if (fb >= 0) ::close(fb);
    return "cannot open " + a + " or " + b;
  }
  std::string result;
  struct stat sa = {}, sb = {};
  ::fstat(fa, &sa);
  ::fstat(fb, &sb);
  if (sa.st_size != sb.st_size) {
    result = "sizes differ: " + std::to_string(sa.st_size) + " vs " + std::to_string(sb.st_size);
  }
  std::vector<char> ba(kRegion), bb(kRegion);
  uint64_t off = 0;
  while (result.empty()) {
    ssize_t na = ::pread(fa, ba.data(), ba.size(), static_cast<off_t>(off));
    ssize_t nb = ::pread(fb, bb.data(), bb.size(), static_cast<off_t>(off));
    if (na < 0 || nb < 0 || na != nb) {
      result = "read error or short read at " + std::to_string(off);
      break;
    }
    if (na == 0) break;
    if (std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na)) != 0) {
      size_t i = 0;
      while (ba[i] == bb[i]) ++i;
      result = "first difference at byte " + std::to_string(off + i);
      break;
    }
    off += static_cast<uint64_t>(na);
  }
  ::close(fa);
  ::close(fb);
  return result;
}

// ---------------------------------------------------------------------------
// The VM and the server.

struct Server {
  int port = 0;
  std::string fingerprint, token;
};

Server StartServer(const std::string& server_bin, const std::string& data, const std::string& log) {
  std::filesystem::create_directories(data);
  g_server_pid = Spawn({server_bin, "--data", data, "run", "--listen", "127.0.0.1:0"}, log);
  static const std::regex url_re(R"(listening on https://127\.0\.0\.1:(\d+)/)");
  static const std::regex fp_re(R"(fingerprint \(SHA-256\): ([0-9A-Fa-f:]{95}))");
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    std::string out = ReadFile(log);
    std::smatch m, f;
    if (std::regex_search(out, m, url_re) && std::regex_search(out, f, fp_re)) {
      Server s;
      s.port = std::stoi(m[1]);
      s.fingerprint = f[1];
      s.token = ReadFile(data + "/admin.token");
      while (!s.token.empty() && (s.token.back() == '\n' || s.token.back() == '\r')) s.token.pop_back();
      if (!s.token.empty()) return s;
    }
    int status = 0;
    if (::waitpid(g_server_pid, &status, WNOHANG) == g_server_pid) {
      g_server_pid = -1;
      Die("cairn-server exited at start:\n" + out);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Die("cairn-server did not start in 60 s");
}

class Vm {
 public:
  // QEMU with `-machine none`, the disk as node disk0 and two QMP sockets:
  // bench.sock for this driver, cairn.sock for the client.
  void Start(const std::string& image, const std::string& sock_dir, const std::string& log) {
    log_ = log;
    const std::string bench_sock = sock_dir + "/bench.sock";
    cairn_sock_ = sock_dir + "/cairn.sock";
    // stdbuf: HMP qemu-io prints its result (and its failures) to QEMU's
    // stdout; line buffering gets them into the log at once.
    g_qemu_pid = Spawn({"stdbuf", "-oL", "-eL", "qemu-system-x86_64", "-machine", "none",
                        "-nodefaults", "-display", "none", "-qmp",
                        "unix:" + bench_sock + ",server=on,wait=off", "-qmp",
                        "unix:" + cairn_sock_ + ",server=on,wait=off", "-blockdev",
                        "driver=qcow2,node-name=disk0,file.driver=file,file.filename=" + image},
                       log, {}, /*own_group=*/true);
    QmpClient::Options o;
    o.timeout = std::chrono::seconds(120);
    o.connect_wait = std::chrono::seconds(30);
    auto qmp = QmpClient::Connect(bench_sock, o);
    if (!qmp.ok()) Die("QMP connect: " + qmp.status().ToString() + "\n" + ReadFile(log));
    qmp_ = std::move(qmp).value();
    auto v = qmp_->version();
    std::printf("QEMU %d.%d.%d, pid %d\n", v.major, v.minor, v.micro, g_qemu_pid);
  }

  const std::string& cairn_socket() const { return cairn_sock_; }

  // `qemu-io disk0 "<command>"` through HMP; failures show only in what
  // qemu-io prints to QEMU's stdout.
  void QemuIo(const std::string& command) {
    const size_t before = ReadFile(log_).size();
    auto out = qmp_->Hmp("qemu-io disk0 \"" + command + "\"");
    if (!out.ok()) Die("qemu-io " + command + ": " + out.status().ToString());
    std::string printed = ReadFile(log_).substr(before);
    if (!out->empty() || printed.find("failed") != std::string::npos ||
        printed.find("rror") != std::string::npos) {
      Die("qemu-io " + command + ": " + *out + printed);
    }
  }

 private:
  std::string log_, cairn_sock_;
  std::unique_ptr<QmpClient> qmp_;
};

// ---------------------------------------------------------------------------
// Phases.

struct Phase {
  std::string name;
  double wall = 0;
  double mb_s = 0;
  uint64_t client_rss_kib = 0, server_hwm_kib = 0;
  Cpu client_cpu, server_cpu, qemu_cpu;
  std::string load_before, load_after, pressure_after;
  json summary;  // the client's JSON line
};

struct Context {
  std::string cairn;
  std::vector<std::string> env;
  uint64_t size = 0;
  std::string work;
};

json LastJsonLine(const std::string& output) {
  size_t end = output.find_last_not_of("\n");
  if (end == std::string::npos) return nullptr;
  size_t begin = output.rfind('\n', end);
  begin = begin == std::string::npos ? 0 : begin + 1;
  json j = json::parse(output.substr(begin, end - begin + 1), nullptr, false);
  return j.is_object() ? j : json(nullptr);
}

Phase RunPhase(const Context& c, const std::string& name, const std::vector<std::string>& args) {
  Phase p;
  p.name = name;
  SyncFs(c.work);
  if (g_recycle) RecyclePageCache(c.work, c.size);
  ResetPeakRss(g_server_pid);
  p.load_before = LoadAverage();
  const Cpu server_cpu0 = ProcessCpu(g_server_pid);
  const Cpu qemu_cpu0 = ProcessCpu(g_qemu_pid);
  std::vector<std::string> argv = {c.cairn, "--output", "json"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = Run(argv, c.work + "/cairn-" + name + ".log", c.env);
  p.server_hwm_kib = StatusKiB(g_server_pid, "VmHWM");
  p.server_cpu = ProcessCpu(g_server_pid) - server_cpu0;
  p.qemu_cpu = ProcessCpu(g_qemu_pid) - qemu_cpu0;
  p.load_after = LoadAverage();
  p.pressure_after = CpuPressure();
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    Die("phase " + name + ": `" + cmd + "` failed (" +
        (r.signal != 0 ? std::string("killed by signal ") + ::strsignal(r.signal)
                       : "exit " + std::to_string(r.exit_code)) +
        ", after " + std::to_string(r.wall) + " s):\n" + r.output);
  }
  p.wall = r.wall;
  p.mb_s = static_cast<double>(c.size) / 1e6 / r.wall;
  p.client_rss_kib = static_cast<uint64_t>(r.usage.ru_maxrss);
  auto seconds = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  p.client_cpu = {seconds(r.usage.ru_utime), seconds(r.usage.ru_stime)};
  p.summary = LastJsonLine(r.output);
  if (p.summary.is_null()) Die("phase " + name + ": no JSON summary in the output:\n" + r.output);
  std::printf("%-10s %7.2f s %8.1f MB/s  client RSS %4.0f MiB, server RSS %4.0f MiB\n"
              "           CPU s (user+sys): client %.2f+%.2f, server %.2f+%.2f, QEMU %.2f+%.2f; "
              "load %s → %s, CPU pressure avg10 %s\n",
              name.c_str(), p.wall, p.mb_s, static_cast<double>(p.client_rss_kib) / 1024,
              static_cast<double>(p.server_hwm_kib) / 1024, p.client_cpu.user, p.client_cpu.sys,
              p.server_cpu.user, p.server_cpu.sys, p.qemu_cpu.user, p.qemu_cpu.sys,
              p.load_before.c_str(), p.load_after.c_str(), p.pressure_after.c_str());
  std::printf("           %s\n", p.summary.dump().c_str());
  std::fflush(stdout);
  return p;
}

std::string BackupTime(int n) {
  const time_t t = kFirstBackupTime + 3600 * n;
  struct tm tm = {};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Phase Backup(const Context& c, const std::string& name, const Vm& vm, int n,
             const std::string& expected_mode) {
  Phase p = RunPhase(c, name, {"backup", "vm", "--qmp", vm.cairn_socket(), "--id", "100",
                               "--backup-time", BackupTime(n)});
  const std::string mode = p.summary.value("mode", "");
  if (mode != expected_mode) {
    Die("phase " + name + ": expected a " + expected_mode + " backup, the client made " + mode +
        ": " + p.summary.dump());
  }
  return p;
}

// Rewrites 2% of the disk in kExtents extents at random 64 KiB-aligned
// offsets that do not overlap, each from its own random file (qemu-io reads
// its data from the start of the file, so one file would write the same
// bytes everywhere, and chunks could deduplicate).
void RewriteClustered(Vm& vm, uint64_t size, const std::string& dir) {
  const uint64_t total = static_cast<uint64_t>(static_cast<double>(size) * kRewriteFraction);
  const uint64_t extent = total / kExtents / kBlock * kBlock;
  // Extents go into distinct slots of twice their size, each at a random
  // 64 KiB offset inside the slot's first half: no overlap, and extents are
  // not aligned to chunks.
  const uint64_t slots = size / (2 * extent);
  std::mt19937_64 rng(11);
  std::vector<uint64_t> chosen;
  while (chosen.size() < static_cast<size_t>(kExtents)) {
    const uint64_t s = rng() % slots;
    if (std::find(chosen.begin(), chosen.end(), s) == chosen.end()) chosen.push_back(s);
  }
  for (int i = 0; i < kExtents; ++i) {
    const std::string file = dir + "/extent" + std::to_string(i) + ".bin";
    WriteRandomFile(file, extent, 7000 + static_cast<uint64_t>(i));
    const uint64_t off = chosen[static_cast<size_t>(i)] * 2 * extent + rng() % (extent / kBlock) * kBlock;
    vm.QemuIo("write -s " + file + " " + std::to_string(off) + " " + std::to_string(extent));
    std::filesystem::remove(file);
  }
  std::printf("rewrote %d extents of %.2f MiB (random data)\n", kExtents,
              static_cast<double>(extent) / kMiB);
}

// Rewrites 2% of the disk as 64 KiB blocks at distinct random 64 KiB-aligned
// positions, each block with its own random bytes.
void RewriteScattered(Vm& vm, uint64_t size, const std::string& dir) {
  const uint64_t count = static_cast<uint64_t>(static_cast<double>(size) * kRewriteFraction) / kBlock;
  std::vector<uint64_t> slots(size / kBlock);
  for (uint64_t i = 0; i < slots.size(); ++i) slots[i] = i;
  std::mt19937_64 rng(13);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<bool> dirty(size / kRegion, false);
  const std::string file = dir + "/block.bin";
  for (uint64_t i = 0; i < count; ++i) {
    WriteRandomFile(file, kBlock, 9000 + i);
    const uint64_t off = slots[i] * kBlock;
    dirty[off / kRegion] = true;
    vm.QemuIo("write -s " + file + " " + std::to_string(off) + " " + std::to_string(kBlock));
  }
  std::filesystem::remove(file);
  std::printf("rewrote %" PRIu64 " blocks of 64 KiB at random positions (random data): %zu of %zu "
              "4 MiB chunks dirty\n",
              count, static_cast<size_t>(std::count(dirty.begin(), dirty.end(), true)), dirty.size());
}

// ---------------------------------------------------------------------------

std::string Mark(bool met) { return met ? "met" : "MISSED"; }

int Main(int argc, char** argv) {
  std::string cairn, server, work_root = "/var/tmp", phases;
  uint64_t size_gib = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& flag, std::string* out) {
      if (a == flag && i + 1 < argc) {
        *out = argv[++i];
        return true;
      }
      if (a.rfind(flag + "=", 0) == 0) {
        *out = a.substr(flag.size() + 1);
        return true;
      }
      return false;
    };
    std::string v;
    if (value("--cairn", &cairn) || value("--server", &server) || value("--work-dir", &work_root) ||
        value("--phases", &phases)) {
      continue;
    }
    if (value("--size-gib", &v)) {
      size_gib = std::strtoull(v.c_str(), nullptr, 10);
      continue;
    }
    if (a == "--keep") {
      g_keep = true;
      continue;
    }
    if (a == "--recycle") {
      g_recycle = true;
      continue;
    }
    std::cerr << "usage: vm_backup_bench --cairn=PATH --server=PATH [--work-dir=DIR] "
                 "[--size-gib=2] [--phases=all|full] [--recycle] [--keep]\n";
    return 2;
  }
  if (phases.empty()) phases = size_gib == 2 ? "all" : "full";
  if (cairn.empty() || server.empty() || size_gib == 0 || (phases != "all" && phases != "full")) {
    std::cerr << "vm_backup_bench: --cairn and --server are required; --size-gib > 0; "
                 "--phases all or full\n";
    return 2;
  }
  const uint64_t size = size_gib * kGiB;

  std::filesystem::create_directories(work_root);
  work_root = std::filesystem::absolute(work_root).string();
  std::string tmpl = work_root + "/vm-backup-bench.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp in " + work_root);
  g_work_dir = tmpl;
  char sock_tmpl[] = "/tmp/cairn-vmb-XXXXXX";
  if (::mkdtemp(sock_tmpl) == nullptr) Die("mkdtemp in /tmp");
  g_sock_dir = sock_tmpl;
  struct statfs fs = {};
  if (::statfs(g_work_dir.c_str(), &fs) == 0 && fs.f_type == 0x01021994 /* TMPFS_MAGIC */) {
    std::cerr << "warning: " << g_work_dir << " is tmpfs; the server's fsyncs mean nothing there\n";
  }
  std::signal(SIGINT, [](int) {
    Cleanup();
    std::_Exit(130);
  });

  std::printf("== vm_backup_bench: %" PRIu64 " GiB disk, phases %s, page cache %s, work dir %s\n",
              size_gib, phases.c_str(), g_recycle ? "recycled before each phase" : "as it is",
              g_work_dir.c_str());
  std::printf("load average at start: %s, CPU pressure avg10 %s\n", LoadAverage().c_str(),
              CpuPressure().c_str());
  const std::string image = g_work_dir + "/disk0.qcow2";
  MakeImage(g_work_dir + "/disk0.raw", image, size);

  Server srv = StartServer(server, g_work_dir + "/srv", g_work_dir + "/server.log");
  std::printf("cairn-server pid %d on port %d\n", g_server_pid, srv.port);
  Vm vm;
  vm.Start(image, g_sock_dir, g_work_dir + "/qemu.log");

  Context c;
  c.cairn = cairn;
  c.size = size;
  c.work = g_work_dir;
  c.env = {"CAIRN_REPO=https://127.0.0.1:" + std::to_string(srv.port) + "/default",
           "CAIRN_TOKEN=" + srv.token, "CAIRN_FINGERPRINT=" + srv.fingerprint};

  std::vector<Phase> done;
  done.push_back(Backup(c, "full", vm, 0, "full"));
  std::optional<std::string> compare_error;
  if (phases == "all") {
    RewriteClustered(vm, size, g_sock_dir);
    done.push_back(Backup(c, "clustered", vm, 1, "incremental"));
    RewriteScattered(vm, size, g_sock_dir);
    done.push_back(Backup(c, "scattered", vm, 2, "incremental"));
    const std::string snapshot = done.back().summary.value("snapshot", "");

    const std::string target = g_work_dir + "/restored.raw";
    done.push_back(RunPhase(c, "restore", {"restore", snapshot, "disk0", target, "--format", "raw"}));
    // The reference: the image as it is now (nothing wrote to it since the
    // backup), QEMU's caches flushed. Made after the restore so that its
    // 2 GiB of new page cache do not precede the timed restore's.
    vm.QemuIo("flush");
    const std::string reference = g_work_dir + "/reference.raw";
    MustRun({"qemu-img", "convert", "-U", "-O", "raw", image, reference}, g_work_dir + "/qemu-img.log");
    compare_error = CompareFiles(target, reference);
    std::printf("restore of %s compared with qemu-img convert of the image: %s\n", snapshot.c_str(),
                compare_error->empty() ? "byte-identical" : compare_error->c_str());
    std::filesystem::remove(target);
    std::filesystem::remove(reference);
  }

  // The table (Markdown) and the targets.
  const double full_wall = done[0].wall;
  std::printf("\n| phase | wall s | MB/s of %" PRIu64 " GiB | %% of full | client RSS MiB | server RSS MiB "
              "| CPU s client / server / QEMU | read MiB | uploaded MiB |\n",
              size_gib);
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Phase& p : done) {
    const json& s = p.summary;
    const double read = static_cast<double>(s.value("bytes-read", uint64_t{0})) / kMiB;
    const double up = static_cast<double>(s.value("bytes-uploaded", uint64_t{0})) / kMiB;
    std::string read_s = p.name == "restore" ? "–" : std::to_string(static_cast<int64_t>(read + 0.5));
    std::string up_s = p.name == "restore"
                           ? std::to_string(static_cast<int64_t>(
                                 static_cast<double>(s.value("bytes-downloaded", uint64_t{0})) / kMiB + 0.5)) +
                                 " down"
                           : std::to_string(static_cast<int64_t>(up + 0.5));
    std::printf("| %s | %.2f | %.0f | %.1f | %.0f | %.0f | %.1f / %.1f / %.1f | %s | %s |\n",
                p.name.c_str(), p.wall, p.mb_s, 100 * p.wall / full_wall,
                static_cast<double>(p.client_rss_kib) / 1024,
                static_cast<double>(p.server_hwm_kib) / 1024, p.client_cpu.total(),
                p.server_cpu.total(), p.qemu_cpu.total(), read_s.c_str(), up_s.c_str());
  }
  std::printf("\nload average at end: %s, CPU pressure avg10 %s\n\ntargets:\n", LoadAverage().c_str(),
              CpuPressure().c_str());
  std::printf("  full backup >= %.0f MB/s: %.0f MB/s — %s\n", kTargetFullMbS, done[0].mb_s,
              Mark(done[0].mb_s >= kTargetFullMbS).c_str());
  uint64_t max_rss = 0;
  for (const Phase& p : done) max_rss = std::max(max_rss, p.client_rss_kib);
  if (phases == "all") {
    const double pct = 100 * done[1].wall / full_wall;
    std::printf("  clustered incremental <= %.0f%% of the full's wall time: %.1f%% — %s\n",
                kTargetIncrementalPct, pct, Mark(pct <= kTargetIncrementalPct).c_str());
    std::printf("  (scattered incremental: %.1f%% of the full; no target)\n",
                100 * done[2].wall / full_wall);
    std::printf("  restore >= %.0f MB/s: %.0f MB/s — %s\n", kTargetRestoreMbS, done[3].mb_s,
                Mark(done[3].mb_s >= kTargetRestoreMbS).c_str());
  }
  std::printf("  client peak RSS <= %.0f MiB at %" PRIu64 " GiB (all phases): %.0f MiB — %s\n",
              kTargetClientRssMiB, size_gib, static_cast<double>(max_rss) / 1024,
              Mark(static_cast<double>(max_rss) / 1024 <= kTargetClientRssMiB).c_str());

  StopProcess(&g_qemu_pid, SIGKILL);
  Cleanup();
  if (compare_error && !compare_error->empty()) {
    std::fprintf(stderr, "vm_backup_bench: the restored image differs from the disk: %s\n",
                 compare_error->c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
