#pragma once

// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with
// clang's thread-safety annotations (storage/thread_annotations.h), so that
// -Wthread-safety checks every CAIRN_GUARDED_BY member and CAIRN_REQUIRES
// function against them. libstdc++'s own types carry no annotations.
// Modelled on LevelDB's port::Mutex / port::CondVar and Abseil's Mutex.
//
//   class Counter {
//    public:
//     void Add() CAIRN_EXCLUDES(mu_) {
//       MutexLock l(&mu_);
//       ++n_;
//       cv_.SignalAll();
//     }
//     void WaitFor(int n) CAIRN_EXCLUDES(mu_) {
//       MutexLock l(&mu_);
//       while (n_ < n) cv_.Wait(&mu_);
//     }
//    private:
//     Mutex mu_;
//     CondVar cv_;
//     int n_ CAIRN_GUARDED_BY(mu_) = 0;
//   };
//
// Waits take no predicate: write the loop (`while (!ready) cv.Wait(&mu)`), so
// the condition is read in the function that holds the lock, where the
// analysis sees it (a predicate lambda is analysed as a function of its own).
//
// Thread safety: the point of these types. None is copyable or movable.

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "storage/thread_annotations.h"

namespace cairn {

class CondVar;

// An exclusive, non-recursive lock.
class CAIRN_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() CAIRN_ACQUIRE() { mu_.lock(); }
  void Unlock() CAIRN_RELEASE() { mu_.unlock(); }
  // True when the lock was free and is now held by the caller.
  bool TryLock() CAIRN_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis the lock is held where it cannot see that (a callback
  // called under it). Checks nothing at run time.
  void AssertHeld() CAIRN_ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `*mu` from construction to the end of the scope.
class CAIRN_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) CAIRN_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() CAIRN_RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable used with a Mutex. Each wait releases `*mu` while it
// sleeps and holds it again when it returns; a wait may return spuriously.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // REQUIRES: `*mu` held (checked by the analysis).
  void Wait(Mutex* mu) CAIRN_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // still held: the caller's to unlock
  }
  // Like Wait, but returns after `timeout` at the latest. False when it timed
  // out, true when woken (or spuriously) before.
  template <typename Rep, typename Period>
  bool WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& timeout) CAIRN_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const std::cv_status s = cv_.wait_for(lock, timeout);
    lock.release();
    return s == std::cv_status::no_timeout;
  }

  // Wakes one waiter / every waiter. The lock need not be held.
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace cairn
