#pragma once

// Real QEMU for client tests: runs Debian's qemu-system-x86_64 with
// `-machine none` and one or more -blockdev nodes, and talks QMP to it.
//
// Header-only (inline) because the test helper library only globs
// tests/storage; include it from tests/client/*_test.cc.
//
// Every wait is bounded (kQemuTimeout); the destructor SIGKILLs QEMU.
// QEMU's stdout/stderr go to <dir>/qemu.log, line-buffered through stdbuf:
// HMP `qemu-io` prints its result (and its failures) to QEMU's stdout, not
// into the QMP answer, so QemuIo() reads them from there.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/qmp_client.h"

namespace cairn::client::testing {

inline constexpr std::chrono::seconds kQemuTimeout{60};

// A fresh directory under /tmp (unix socket paths must stay under 108
// bytes, which ::testing::TempDir() paths may not), removed on destruction.
class ShortTempDir {
 public:
  ShortTempDir() {
    char tmpl[] = "/tmp/cairn-c-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    if (p == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
      return;
    }
    path_ = p;
  }
  ~ShortTempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void WriteWholeFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

struct RunResult {
  int exit_code = -1;  // -1: killed (timeout) or could not start
  std::string output;  // stdout and stderr
};

// Runs argv[0] (looked up in PATH) to completion, at most `timeout`.
inline RunResult RunCommand(const std::vector<std::string>& argv,
                            std::chrono::seconds timeout = kQemuTimeout) {
  RunResult result;
  char tmpl[] = "/tmp/cairn-run-XXXXXX";
  int out_fd = ::mkstemp(tmpl);
  if (out_fd < 0) return result;
  ::unlink(tmpl);
  // Built before fork(): the child of a threaded process must not allocate.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      status = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (status != -1 && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  ::lseek(out_fd, 0, SEEK_SET);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out_fd, buf, sizeof(buf))) > 0)
    result.output.append(buf, static_cast<size_t>(n));
  ::close(out_fd);
  return result;
}

class QemuVm {
 public:
  // Starts QEMU with `-blockdev <spec>` for each spec and connects to its
  // QMP socket (<dir>/qmp.sock). Returns null after failing the test.
  // `extra_args` go on QEMU's command line as they are (e.g. a second
  // `-qmp` socket for the program under test: QMP serves one client per
  // socket).
  static std::unique_ptr<QemuVm> Start(const std::string& dir,
                                       const std::vector<std::string>& blockdevs,
                                       const std::vector<std::string>& extra_args = {}) {
    std::unique_ptr<QemuVm> vm(new QemuVm());
    vm->qmp_path_ = dir + "/qmp.sock";
    vm->log_path_ = dir + "/qemu.log";
    std::vector<std::string> argv = {"stdbuf",
                                     "-oL",
                                     "-eL",
                                     "qemu-system-x86_64",
                                     "-machine",
                                     "none",
                                     "-nodefaults",
                                     "-display",
                                     "none",
                                     "-qmp",
                                     "unix:" + vm->qmp_path_ + ",server=on,wait=off"};
    for (const auto& b : blockdevs) {
      argv.push_back("-blockdev");
      argv.push_back(b);
    }
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    int log_fd = ::open(vm->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      ADD_FAILURE() << "cannot create " << vm->log_path_;
      return nullptr;
    }
    std::vector<char*> args;  // before fork(), as in RunCommand
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::setpgid(0, 0);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(log_fd);
    vm->pid_ = pid;
    QmpClient::Options o;
    o.timeout = kQemuTimeout;
    o.connect_wait = std::chrono::seconds(30);
    auto qmp = QmpClient::Connect(vm->qmp_path_, o);
    if (!qmp.ok()) {
      ADD_FAILURE() << "QMP connect: " << qmp.status().ToString() << "\nQEMU log:\n" << vm->Log();
      return nullptr;
    }
    vm->qmp_ = std::move(qmp).value();
    return vm;
  }

  ~QemuVm() { Kill(); }

  QmpClient& qmp() { return *qmp_; }
  std::string Log() const { return ReadWholeFile(log_path_); }

  // Runs `qemu-io <node> "<command>"` through HMP and checks both the HMP
  // answer and what qemu-io printed to QEMU's stdout.
  ::testing::AssertionResult QemuIo(const std::string& node, const std::string& command) {
    size_t before = Log().size();
    auto out = qmp_->Hmp("qemu-io " + node + " \"" + command + "\"");
    if (!out.ok()) return ::testing::AssertionFailure() << out.status().ToString();
    if (!out->empty()) return ::testing::AssertionFailure() << "HMP said: " << *out;
    std::string printed = Log().substr(before);
    if (printed.find("failed") != std::string::npos ||
        printed.find("not found") != std::string::npos ||
        printed.find("rror") != std::string::npos) {
      return ::testing::AssertionFailure() << "qemu-io " << command << ": " << printed;
    }
    return ::testing::AssertionSuccess();
  }

  // QMP `quit` and wait for QEMU to exit (it flushes its images); SIGKILL
  // if it does not within the timeout. True when it exited by itself.
  bool Quit() {
    if (pid_ <= 0) return false;
    (void)qmp_->Execute("quit");
    auto deadline = std::chrono::steady_clock::now() + kQemuTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Kill();
    return false;
  }

  pid_t pid() const { return pid_; }

  void Kill() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);  // QEMU runs under stdbuf's exec in its own group
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  QemuVm() = default;

  pid_t pid_ = -1;
  std::string qmp_path_;
  std::string log_path_;
  std::unique_ptr<QmpClient> qmp_;
};

// `-blockdev` spec of a qcow2 file as node `node`.
inline std::string Qcow2Blockdev(const std::string& node, const std::string& path) {
  return "driver=qcow2,node-name=" + node + ",file.driver=file,file.filename=" + path;
}

}  // namespace cairn::client::testing
