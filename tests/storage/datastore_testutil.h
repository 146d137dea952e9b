#pragma once

// Datastores for tests: a fresh datastore in a path, and its removal.
// (Prefix folders are made on first use, so a new datastore is cheap.)

#include <optional>
#include <string>

#include "storage/datastore.h"
#include "storage/fixed_index.h"
#include "storage/status.h"

namespace cairn::storage {

class TestDatastores {
 public:
  // Creates a datastore in `path` through Datastore::Create on the default Env.
  static Status Create(const std::string& path);
  // Removes the datastore in `path`. NotFound is not an error.
  static Status Remove(const std::string& path);
};

// Commits `ref` with one archive "drive0.fidx" from `w` (and, when given,
// "qemu-server.conf.blob" holding `blob`), as a backup session would.
Status CommitTestSnapshot(Datastore& store, const SnapshotRef& ref, const FixedIndexWriter& w,
                          const std::optional<std::string>& blob = std::nullopt);

}  // namespace cairn::storage
