#pragma once

// SigpipeBlock: SIGPIPE blocked in the calling thread for a scope (used by
// the client's uploader and the server's sendmail pipe). Thread safety: per
// thread by design; not copyable.

#include <pthread.h>
#include <signal.h>
#include <time.h>

namespace cairn::storage {

// A write into a connection or pipe the peer closed raises SIGPIPE, whose default
// action ends the process. A library must not decide that for its caller
// (nor change the process-wide disposition), so SIGPIPE is blocked in the
// calling thread while this lives, and one raised meanwhile is taken off
// the thread before the old mask returns: the write fails with EPIPE
// instead, which httplib reports as an error.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeBlock() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      timespec zero{0, 0};
      sigtimedwait(&pipe_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

}  // namespace cairn::storage
