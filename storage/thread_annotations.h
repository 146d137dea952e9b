#pragma once

// Clang thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html).
//
// With clang and -Wthread-safety (CMakeLists.txt adds it to cairn_warnings)
// the compiler checks that a member marked CAIRN_GUARDED_BY(mu_) is only
// touched with mu_ held, that a CAIRN_REQUIRES(mu_) function is only called
// with it held, and that every lock taken is released. With any other
// compiler the macros expand to nothing. Use them with cairn::Mutex
// (storage/mutex.h): std::mutex in libstdc++ carries no annotations, so the
// analysis does not see it.
//
// The names follow clang's documentation (and LevelDB's port/thread_annotations.h),
// with a CAIRN_ prefix.

#if defined(__clang__)
#define CAIRN_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CAIRN_THREAD_ANNOTATION(x)
#endif

// On a class: objects of it are a capability (a lock), e.g. cairn::Mutex.
#define CAIRN_CAPABILITY(name) CAIRN_THREAD_ANNOTATION(capability(name))
// On a class: an RAII object that holds a capability for its lifetime.
#define CAIRN_SCOPED_CAPABILITY CAIRN_THREAD_ANNOTATION(scoped_lockable)

// On a data member: read or written only with the capability held.
#define CAIRN_GUARDED_BY(x) CAIRN_THREAD_ANNOTATION(guarded_by(x))
// On a pointer member: what it points to is accessed only with the capability
// held (the pointer itself is not guarded).
#define CAIRN_PT_GUARDED_BY(x) CAIRN_THREAD_ANNOTATION(pt_guarded_by(x))

// On a capability member: lock order. Checked only with -Wthread-safety-beta.
#define CAIRN_ACQUIRED_BEFORE(...) CAIRN_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define CAIRN_ACQUIRED_AFTER(...) CAIRN_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))

// On a function: the caller must hold the capabilities (exclusively / shared).
#define CAIRN_REQUIRES(...) CAIRN_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define CAIRN_REQUIRES_SHARED(...) \
  CAIRN_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
// On a function: the caller must not hold the capabilities (the function takes
// them itself). Checked where the caller is known to hold one.
#define CAIRN_EXCLUDES(...) CAIRN_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))

// On a function: it acquires / releases the capabilities (none named: `this`).
#define CAIRN_ACQUIRE(...) CAIRN_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define CAIRN_ACQUIRE_SHARED(...) CAIRN_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define CAIRN_RELEASE(...) CAIRN_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CAIRN_RELEASE_SHARED(...) CAIRN_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
// On a function returning bool: it acquired the capabilities iff it returned
// the first argument.
#define CAIRN_TRY_ACQUIRE(...) CAIRN_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
// On a function: it returns only when the capability is held (a runtime
// check); the analysis assumes it is held afterwards.
#define CAIRN_ASSERT_CAPABILITY(x) CAIRN_THREAD_ANNOTATION(assert_capability(x))
// On a function: it returns a reference or pointer to the capability `x`.
#define CAIRN_RETURN_CAPABILITY(x) CAIRN_THREAD_ANNOTATION(lock_returned(x))

// On a function: not analysed. For locking the analysis cannot follow; say why
// next to each use.
#define CAIRN_NO_THREAD_SAFETY_ANALYSIS CAIRN_THREAD_ANNOTATION(no_thread_safety_analysis)
