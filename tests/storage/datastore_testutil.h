#pragma once

// Datastores for tests: a fresh datastore in a path, and its removal.
// (Prefix folders are made on first use, so a new datastore is cheap.)

#include <string>

#include "storage/status.h"

namespace cairn::storage {

class TestDatastores {
 public:
  // Creates a datastore in `path` through Datastore::Create on the default Env.
  static Status Create(const std::string& path);
  // Removes the datastore in `path`. NotFound is not an error.
  static Status Remove(const std::string& path);
};

}  // namespace cairn::storage
