#pragma once

// Fast datastores for tests.
//
// Datastore::Create makes the 65536 chunk prefix folders, which takes many
// seconds on some disks; tests that need a fresh datastore each would spend
// minutes on it. TestDatastores makes those folders once per process (a real
// ChunkStore::Create) and moves them, with one rename, into each new
// datastore folder; Datastore::Create then completes the store as it does an
// interrupted Create. Remove() empties the prefix folders (every chunk and
// temp file a test left) and moves them back for the next test.
//
// Thread safety: all functions are thread-safe.
// REQUIRES: datastore paths are on the same filesystem as
// ::testing::TempDir() (rename(2) cannot cross filesystems).

#include <string>

#include "storage/status.h"

namespace cairn::storage {

class TestDatastores {
 public:
  // Creates a datastore in `path`, which must not exist, through
  // Datastore::Create on the default Env.
  static Status Create(const std::string& path);
  // Removes the datastore in `path` (made by Create), keeping its chunk
  // folders for reuse. NotFound is not an error.
  static Status Remove(const std::string& path);
};

}  // namespace cairn::storage
