#include "tests/storage/datastore_testutil.h"

#include "storage/datastore.h"
#include "storage/env.h"

namespace cairn::storage {

Status TestDatastores::Create(const std::string& path) {
  return Datastore::Create(Env::Default(), path);
}

Status TestDatastores::Remove(const std::string& path) { return RemoveAll(Env::Default(), path); }

}  // namespace cairn::storage
