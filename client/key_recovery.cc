#include "client/key_recovery.h"

#include "client/backup_upload.h"
#include "client/restore.h"
#include "storage/blob.h"

namespace cairn::client {

Result<EncryptionKey> RecoverKey(const Repository& repo, const std::string& snapshot,
                                 std::string_view private_pem, std::string_view passphrase) {
  Result<SnapshotBlob> read = ReadSnapshotBlob(repo, snapshot, kMasterKeyArchive);
  if (read.status().IsNotFound()) {
    return Status::NotFound(read.status().message() +
                            " (a backup made without --master-pubkey has none)");
  }
  if (!read.ok()) return read.status();
  const storage::Manifest& m = read->manifest;
  if (!m.crypt) return Status::InvalidArgument("snapshot " + snapshot + " is not encrypted");
  std::string sealed;
  Status decoded = storage::DecodeBlob(read->blob, &sealed);
  if (!decoded.ok()) {
    return Status::Corruption(snapshot + "/" + kMasterKeyArchive + ": " + decoded.message());
  }
  Result<EncryptionKey> key = DecryptKeyWithMaster(private_pem, passphrase, sealed);
  if (!key.ok()) return key.status().WithContext(snapshot + "/" + kMasterKeyArchive);
  if (key->fingerprint != m.crypt->fingerprint) {
    return Status::Corruption(snapshot + "/" + kMasterKeyArchive + " holds key " + key->fingerprint +
                              ", but the snapshot is encrypted with key " + m.crypt->fingerprint);
  }
  CAIRN_ASSIGN_OR_RETURN(storage::CryptConfig crypt, key->Config());
  CAIRN_RETURN_IF_ERROR(CheckManifestSignature(snapshot, m, crypt));
  return key;
}

}  // namespace cairn::client
