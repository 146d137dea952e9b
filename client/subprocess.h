#pragma once

// Running the QEMU tools the client needs (qemu-img, qemu-storage-daemon)
// without a shell: argv[0] is looked up in PATH, stdin is /dev/null.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "storage/status.h"

namespace cairn::client {

struct ProcessResult {
  bool ok = false;     // exited with status 0
  std::string how;     // "exit status N" or "signal N"
  std::string output;  // stdout and stderr, the first `max_output` bytes
};

// Runs `argv` to completion and collects what it prints. `timeout` 0 = no
// limit; past it the process is killed (IOError). IOError when it cannot be
// started (the message says which program).
storage::Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                          std::chrono::milliseconds timeout,
                                          size_t max_output = 64 * 1024);

// Starts `argv` in the background with stdout and stderr appended to
// `log_path`, its environment ours plus `extra_env` ("NAME=value" entries,
// which replace ours of the same name); the caller waits for (or kills) the
// returned pid.
storage::Result<pid_t> StartProcess(const std::vector<std::string>& argv,
                                    const std::string& log_path,
                                    const std::vector<std::string>& extra_env = {});

}  // namespace cairn::client
