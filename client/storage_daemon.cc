#include "client/storage_daemon.h"

#include <cstdlib>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "client/qmp_client.h"
#include "client/subprocess.h"

namespace cairn::client {

namespace {

using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits for `pid` up to `timeout`; true with *status when it ended.
bool WaitFor(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// Whether the file starts with QEMU's qcow2 header: the magic "QFI\xfb" and
// a version of 2 or more, QEMU's own qcow2 probe. Reading 8 bytes saves the
// ~10 ms of a qemu-img run, ~3% of a small incremental backup (issue 11).
bool HasQcow2Header(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char h[8];
  ssize_t n = ::pread(fd, h, sizeof(h), 0);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof(h))) return false;
  const uint32_t version = (uint32_t{h[4]} << 24) | (uint32_t{h[5]} << 16) | (uint32_t{h[6]} << 8) | h[7];
  return std::memcmp(h, "QFI\xfb", 4) == 0 && version >= 2;
}

// The image's format: qcow2 from its header, anything else from
// `qemu-img info --output=json FILE`.
Result<std::string> ProbeFormat(const std::string& path) {
  if (HasQcow2Header(path)) return std::string("qcow2");
  CAIRN_ASSIGN_OR_RETURN(ProcessResult run,
                         RunProcess({"qemu-img", "info", "--output=json", "-U", path},
                                    std::chrono::seconds(60), 1 << 20));
  if (!run.ok) return Status::InvalidArgument("qemu-img info " + path + ": " + run.output);
  json j = json::parse(run.output, nullptr, false);
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string()) {
    return Status::Corruption("qemu-img info " + path + " printed no format");
  }
  return j["format"].get<std::string>();
}

}  // namespace

std::string ImageNodeName(const std::string& path) {
  std::string base = std::filesystem::path(path).filename().string();
  std::string name;
  for (char c : base) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    name += ok ? c : '_';
  }
  if (name.empty() || !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'))) {
    name = "img-" + name;
  }
  return name.substr(0, 120);
}

Result<std::unique_ptr<StorageDaemon>> StorageDaemon::Start(const std::vector<std::string>& files) {
  if (files.empty()) return Status::InvalidArgument("no image file given");
  std::unique_ptr<StorageDaemon> d(new StorageDaemon());
  char tmpl[] = "/tmp/cairn-qsd-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return Status::FromErrno("mkdtemp", errno);
  d->dir_ = tmpl;
  d->qmp_socket_ = d->dir_ + "/qmp.sock";
  std::vector<std::string> argv = {"qemu-storage-daemon"};
  std::set<std::string> nodes;
  for (const auto& f : files) {
    std::error_code ec;
    std::filesystem::path abs = std::filesystem::absolute(f, ec);
    if (ec || !std::filesystem::is_regular_file(abs, ec)) {
      return Status::NotFound("no image file " + f);
    }
    Image img;
    img.path = abs.string();
    img.node = ImageNodeName(img.path);
    if (!nodes.insert(img.node).second) {
      return Status::InvalidArgument("two images are both named " + img.node +
                                     ": archives are named after the file's base name");
    }
    CAIRN_ASSIGN_OR_RETURN(img.format, ProbeFormat(img.path));
    json spec = {{"driver", img.format},
                 {"node-name", img.node},
                 {"file", {{"driver", "file"}, {"filename", img.path}}}};
    argv.push_back("--blockdev");
    argv.push_back(spec.dump());
    d->images_.push_back(img);
  }
  argv.insert(argv.end(), {"--chardev", "socket,id=cairn-qmp,path=" + d->qmp_socket_ +
                                            ",server=on,wait=off",
                           "--monitor", "chardev=cairn-qmp"});
  // QEMU's block layer allocates each request's bounce buffer with
  // posix_memalign; glibc serves those of a MiB and more with a fresh mmap
  // and munmaps them afterwards, so every buffer is faulted in again: 61,000
  // of the 87,000 minor faults of a 512 MiB `backup image` (issue 11).
  // Larger mmap and trim thresholds keep the buffers in the heap for reuse;
  // hugetlb=1 (glibc 2.35+, ignored by older ones) has malloc mark its heap
  // for transparent huge pages, so the up to 64 MiB of buffers of QEMU's
  // parallel requests fault in as 2 MiB pages the first time too.
  std::vector<std::string> env;
  if (std::getenv("GLIBC_TUNABLES") == nullptr) {
    env.push_back("GLIBC_TUNABLES=glibc.malloc.mmap_threshold=67108864:"
                  "glibc.malloc.trim_threshold=268435456:glibc.malloc.hugetlb=1");
  }
  // A client killed mid-run (SIGKILL, the OOM killer) must not leave the
  // daemon behind holding the images' write locks — the VM and the next
  // backup could not open them (found by tests/soak). setpriv (util-linux,
  // Essential in Debian) asks the kernel for SIGTERM when the spawning thread
  // ends; qemu-storage-daemon quits cleanly on it, so qcow2 bitmaps reach the
  // file. Every caller keeps the daemon within the thread that started it.
  // (setpriv execs too: the pid is still the daemon's.)
  argv.insert(argv.begin(), {"setpriv", "--pdeathsig", "TERM", "--"});
  CAIRN_ASSIGN_OR_RETURN(d->pid_, StartProcess(argv, d->dir_ + "/qsd.log", env));
  // Up when its QMP socket answers; an image it cannot open ends it first.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  // Each probe waits at most 2 s for the greeting: a connection that gets
  // none is dropped and tried again, not waited on for QMP's 60 s.
  QmpClient::Options probe;
  probe.timeout = std::chrono::seconds(2);
  Status last = Status::IOError("its QMP socket never appeared");
  for (;;) {
    int status = 0;
    if (::waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
      d->pid_ = -1;
      std::string log = d->Log();
      while (!log.empty() && log.back() == '\n') log.pop_back();
      return Status::IOError("qemu-storage-daemon could not open the images: " + log);
    }
    if (::access(d->qmp_socket_.c_str(), F_OK) == 0) {
      auto qmp = QmpClient::Connect(d->qmp_socket_, probe);
      if (qmp.ok()) break;
      last = qmp.status();
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::IOError("qemu-storage-daemon did not start in 30 s (QMP: " + last.message() +
                             "): " + d->Log());
    }
    // The daemon is up ~25 ms after the start: a coarser poll would add
    // its slack to every backup.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return d;
}

std::string StorageDaemon::Log() const { return ReadFile(dir_ + "/qsd.log"); }

Status StorageDaemon::Stop() {
  Status result = Status::OK();
  if (pid_ > 0) {
    QmpClient::Options o;
    o.timeout = std::chrono::seconds(10);
    if (auto qmp = QmpClient::Connect(qmp_socket_, o); qmp.ok()) (void)(*qmp)->Execute("quit");
    int status = 0;
    if (!WaitFor(pid_, std::chrono::seconds(60), &status)) {
      ::kill(pid_, SIGTERM);
      if (!WaitFor(pid_, std::chrono::seconds(10), &status)) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
      result = Status::IOError("qemu-storage-daemon did not quit; its bitmaps may not be saved");
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      result = Status::IOError("qemu-storage-daemon ended badly: " + Log());
    }
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
  }
  return result;
}

StorageDaemon::~StorageDaemon() { (void)Stop(); }

}  // namespace cairn::client
