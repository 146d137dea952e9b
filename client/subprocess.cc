#include "client/subprocess.h"

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

using storage::Result;
using storage::Status;

namespace {

// posix_spawnp with stdin from /dev/null, stdout/stderr onto `out_fd` and
// our environment with `extra_env` on top.
Result<pid_t> Spawn(const std::vector<std::string>& argv, int out_fd,
                    const std::vector<std::string>& extra_env = {}) {
  if (argv.empty()) return Status::InvalidArgument("no program to run");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const size_t name_len = std::strcspn(*e, "=") + 1;  // with the '='
    bool replaced = false;
    for (const auto& x : extra_env) replaced = replaced || x.compare(0, name_len, *e, name_len) == 0;
    if (!replaced) env.push_back(*e);
  }
  for (const auto& x : extra_env) env.push_back(const_cast<char*>(x.c_str()));
  env.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDERR_FILENO);
  pid_t pid = -1;
  int err = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return Status::IOError("cannot run " + argv[0] + ": " + std::strerror(err));
  return pid;
}

std::string How(int wstatus) {
  return WIFEXITED(wstatus) ? "exit status " + std::to_string(WEXITSTATUS(wstatus))
                            : "signal " + std::to_string(WTERMSIG(wstatus));
}

}  // namespace

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout, size_t max_output) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno("pipe", errno);
  Result<pid_t> pid = Spawn(argv, fds[1]);
  ::close(fds[1]);
  if (!pid.ok()) {
    ::close(fds[0]);
    return pid.status();
  }
  // Read until EOF so a chatty program never blocks on a full pipe.
  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    int ms = -1;
    if (timeout.count() > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out = true;
        break;
      }
      ms = static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = ::poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;  // the deadline is checked above
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (result.output.size() < max_output) result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(*pid, SIGKILL);
  int wstatus = 0;
  while (::waitpid(*pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return Status::FromErrno("waitpid " + argv[0], errno);
  }
  if (timed_out) {
    return Status::IOError(argv[0] + " did not finish in " + std::to_string(timeout.count()) +
                           " ms");
  }
  result.ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
  result.how = How(wstatus);
  while (!result.output.empty() &&
         (result.output.back() == '\n' || result.output.back() == ' ')) {
    result.output.pop_back();
  }
  return result;
}

Result<pid_t> StartProcess(const std::vector<std::string>& argv, const std::string& log_path,
                           const std::vector<std::string>& extra_env) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("open " + log_path, errno);
  Result<pid_t> pid = Spawn(argv, fd, extra_env);
  ::close(fd);
  return pid;
}

}  // namespace cairn::client
