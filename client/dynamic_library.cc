#include "client/dynamic_library.h"

#include <dlfcn.h>

namespace cairn::client {

using storage::Result;
using storage::Status;

Result<DynamicLibrary> DynamicLibrary::Open(const char* soname, const char* package) {
  // RTLD_NOW: every symbol resolved here, not at some later call.
  void* h = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* why = ::dlerror();
    return Status::IOError(std::string("cannot load ") + soname + " (Debian package " + package +
                           "): " + (why != nullptr ? why : "unknown error"));
  }
  return DynamicLibrary(h, soname);
}

Result<void*> DynamicLibrary::Symbol(const char* name) const {
  ::dlerror();
  void* p = ::dlsym(handle_, name);
  if (p == nullptr) {
    const char* why = ::dlerror();
    return Status::IOError(soname_ + " has no " + name + (why != nullptr ? std::string(": ") + why : ""));
  }
  return p;
}

}  // namespace cairn::client
