#pragma once

// C libraries the client opens with dlopen at first use instead of linking
// them: libvirt, libnbd and libxml2 serve only `cairn backup domain` (and
// `backup all`), yet linked they and their ~45 dependencies are loaded and
// relocated at the start of every `cairn` run — 20 ms of a 30 ms start, 5% of
// a small incremental backup (issue 11; bench/README.md). Their headers are
// still used for the types; a table of the functions a caller needs is
// filled by name (CAIRN_DYNAMIC_API below), so a missing library or function
// is a clear error at the call that needs it, never a crash.
//
// Thread safety: Open and Bind may be called from any thread; a table is
// filled once (std::call_once in its loader) and only read after that.

#include <mutex>
#include <string>
#include <utility>

#include "storage/status.h"

namespace cairn::client {

// One dlopen'ed library. Never closed: its functions stay usable for the
// process's life (libvirt registers atexit handlers and threads).
class DynamicLibrary {
 public:
  // dlopen(`soname`). IOError naming `package` (the Debian package that
  // ships it) and dlerror's text when it cannot be loaded.
  static storage::Result<DynamicLibrary> Open(const char* soname, const char* package);

  // The address of symbol `name`; IOError when the library has none.
  storage::Result<void*> Symbol(const char* name) const;

  // *fn = the function `name` (its type comes from the library's header).
  template <typename F>
  storage::Status Bind(const char* name, F** fn) const {
    CAIRN_ASSIGN_OR_RETURN(void* p, Symbol(name));
    *fn = reinterpret_cast<F*>(p);
    return storage::Status::OK();
  }

 private:
  DynamicLibrary(void* handle, std::string soname) : handle_(handle), soname_(std::move(soname)) {}
  void* handle_;
  std::string soname_;
};

// Loads `soname` once per process and fills a table of type Api with
// `bind` (which binds its functions and may initialise the library); every
// call returns the first outcome, success or error.
template <typename Api>
storage::Result<const Api*> LoadOnce(const char* soname, const char* package,
                                     storage::Status (*bind)(const DynamicLibrary&, Api*)) {
  static std::once_flag once;
  static storage::Result<const Api*> loaded = storage::Status::IOError("not loaded");
  std::call_once(once, [&] {
    loaded = [&]() -> storage::Result<const Api*> {
      CAIRN_ASSIGN_OR_RETURN(DynamicLibrary lib, DynamicLibrary::Open(soname, package));
      static Api api;
      CAIRN_RETURN_IF_ERROR(bind(lib, &api));
      return &api;
    }();
  });
  return loaded;
}

}  // namespace cairn::client

// The members of a function table: for each name in LIST (an X-macro
// taking one macro argument), a pointer of the type the header declares.
#define CAIRN_DYNAMIC_MEMBER(name) decltype(&::name) name = nullptr;
#define CAIRN_DYNAMIC_API(LIST) LIST(CAIRN_DYNAMIC_MEMBER)
// In a loader: binds every function of LIST in `table` from `lib`, returning
// the first error.
#define CAIRN_DYNAMIC_BIND_ONE(name) CAIRN_RETURN_IF_ERROR(lib_for_bind.Bind(#name, &table_for_bind->name));
#define CAIRN_DYNAMIC_BIND(LIST, lib, table)     \
  do {                                           \
    const auto& lib_for_bind = (lib);            \
    auto* table_for_bind = (table);              \
    LIST(CAIRN_DYNAMIC_BIND_ONE)                 \
  } while (false)
