#include "tests/storage/temp_dir_testutil.h"

#include <stdlib.h>

#include <stdexcept>

#include "storage/env.h"

namespace cairn::testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/cairn-test-XXXXXX";
  char* p = ::mkdtemp(tmpl);
  if (p == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() { (void)storage::RemoveAll(storage::Env::Default(), path_); }

}  // namespace cairn::testing
