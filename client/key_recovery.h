#pragma once

// Recovering a lost encryption key file from a snapshot with the master
// private key (`cairn key recover`; README "Encryption").
//
// A backup made with --master-pubkey holds the plain blob archive
// master-key.blob (client/backup_upload.h kMasterKeyArchive) whose payload
// is the key sealed for the master public key (EncryptKeyForMaster). The
// server cannot open it; the holder of the private key can. The key found
// must have the fingerprint the snapshot's manifest names, and the
// manifest's signature must check out with it — the signature covers
// master-key.blob's checksum, so a blob the server swapped is refused.
//
// Thread safety: a plain function; one reader session of its own.

#include <string>
#include <string_view>

#include "client/api_client.h"
#include "client/encryption_key.h"
#include "storage/status.h"

namespace cairn::client {

// The key of `snapshot` ("vm/100/2027-…Z"), opened with the master private
// key `private_pem` (and `passphrase` when that PEM is encrypted).
// Errors: NotFound for an unknown snapshot or one without master-key.blob
// (not backed up with --master-pubkey), InvalidArgument for a plain
// snapshot, DecryptKeyWithMaster's (PermissionDenied for a wrong PEM
// passphrase; Corruption for another master key), Corruption when the key
// is not the snapshot's or the signature does not match, the server's.
Result<EncryptionKey> RecoverKey(const Repository& repo, const std::string& snapshot,
                                 std::string_view private_pem, std::string_view passphrase);

}  // namespace cairn::client
