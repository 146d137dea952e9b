#pragma once

// The server's TLS identity: a self-signed certificate made on first start,
// and the SHA-256 fingerprint clients pin.

#include <string>

#include "storage/status.h"

namespace cairn::server {

using storage::Result;
using storage::Status;

struct TlsPaths {
  std::string cert;  // PEM certificate
  std::string key;   // PEM private key, mode 0600
};

// Makes an ECDSA P-256 key and a self-signed certificate (CN "cairn-server",
// subjectAltName localhost, 127.0.0.1, ::1, valid 10 years) unless both files
// exist already. Files are written atomically; the key with mode 0600.
Status EnsureSelfSignedCertificate(const TlsPaths& paths);

// SHA-256 over the DER form of the PEM certificate in `cert_path`, as
// colon-separated uppercase hex ("AB:CD:…", 95 characters).
Result<std::string> CertificateFingerprint(const std::string& cert_path);

// Normalises a fingerprint a user typed: accepts upper/lower case, with or
// without colons. InvalidArgument unless it is 32 bytes of hex.
Result<std::string> NormalizeFingerprint(const std::string& text);

}  // namespace cairn::server
