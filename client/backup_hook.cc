#include "client/backup_hook.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace cairn::client {
namespace {

// Secrets of cairn's own that a hook has no business seeing.
bool Hidden(const char* entry) {
  for (const char* name : {"CAIRN_TOKEN=", "CAIRN_KEY_PASSPHRASE=", "CAIRN_NEW_KEY_PASSPHRASE="}) {
    if (std::strncmp(entry, name, std::strlen(name)) == 0) return true;
  }
  return false;
}

// The last non-empty line of `output`, at most 200 bytes.
std::string LastLine(std::string output) {
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  size_t nl = output.rfind('\n');
  std::string line = nl == std::string::npos ? output : output.substr(nl + 1);
  if (line.size() > 200) line = line.substr(0, 200) + "…";
  return line;
}

}  // namespace

Status BackupHook::Run(const std::string& phase, const std::string& vm_id,
                       const std::map<std::string, std::string>& env,
                       const std::string& log_file) const {
  if (script_.empty()) return Status::OK();
  const std::string what = "hook " + phase + (vm_id.empty() ? "" : " " + vm_id);
  // Everything built before the spawn.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    bool overridden = false;
    for (const auto& [k, v] : env) {
      if (std::strncmp(*e, (k + "=").c_str(), k.size() + 1) == 0) overridden = true;
    }
    if (!overridden && !Hidden(*e)) env_strings.push_back(*e);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = {script_, phase};
  if (!vm_id.empty()) argv_strings.push_back(vm_id);
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(what + ": pipe", errno);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  // Its own process group, so that a timeout kills what it started too.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  int err = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (err != 0) {
    ::close(fds[0]);
    return Status::IOError(what + ": cannot run " + script_ + ": " + std::strerror(err));
  }
  int log_fd = log_file.empty() ? -1
                                : ::open(log_file.c_str(),
                                         O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  std::string tail;  // the last 4 KiB of output, for the error message
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the script and everything it started closed the pipe
    if (log_fd >= 0 && ::write(log_fd, buf, static_cast<size_t>(n)) < 0) {
      // A log that cannot be written does not fail the hook.
    }
    tail.append(buf, static_cast<size_t>(n));
    if (tail.size() > 4096) tail.erase(0, tail.size() - 4096);
  }
  ::close(fds[0]);
  if (log_fd >= 0) ::close(log_fd);
  if (timed_out) ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return Status::IOError(what + " did not finish in " + std::to_string(timeout_.count()) +
                           " s (killed)");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::OK();
  std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                      : "signal " + std::to_string(WTERMSIG(status));
  std::string last = LastLine(tail);
  return Status::IOError(what + " failed (" + how + ")" + (last.empty() ? "" : ": " + last));
}

}  // namespace cairn::client
