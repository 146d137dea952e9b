#include "tests/storage/datastore_testutil.h"

#include "storage/datastore.h"
#include "storage/env.h"

namespace cairn::storage {

Status TestDatastores::Create(const std::string& path) {
  return Datastore::Create(Env::Default(), path);
}

Status TestDatastores::Remove(const std::string& path) { return RemoveAll(Env::Default(), path); }

Status CommitTestSnapshot(Datastore& store, const SnapshotRef& ref, const FixedIndexWriter& w,
                          const std::optional<std::string>& blob) {
  CAIRN_ASSIGN_OR_RETURN(std::string bytes, w.Finish(ref.time));
  CAIRN_ASSIGN_OR_RETURN(FixedIndex parsed, FixedIndex::Parse(bytes));
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<StagedSnapshot> staged, store.Stage(ref));
  CAIRN_RETURN_IF_ERROR(staged->WriteArchive("drive0.fidx", bytes));
  Manifest m;
  m.backup_type = ref.group.type;
  m.backup_id = ref.group.id;
  m.backup_time = ref.time;
  m.archives.push_back({"drive0.fidx", parsed.image_size(), parsed.checksum()});
  if (blob.has_value()) {
    CAIRN_RETURN_IF_ERROR(staged->WriteArchive("qemu-server.conf.blob", *blob));
    m.archives.push_back({"qemu-server.conf.blob", blob->size(), Sha256(*blob)});
  }
  return staged->Commit(m);
}

}  // namespace cairn::storage
