#pragma once

// Password records: a salted, memory-hard hash (OpenSSL's scrypt) written as
// a self-describing text record, so that its parameters can be raised later
// without breaking the records already stored:
//
//   scrypt$<N>$<r>$<p>$<salt: 32 hex>$<hash: 64 hex>
//
// N is the CPU/memory cost (a power of two), r the block size, p the
// parallelism; the hash is 32 bytes of EVP_PBE_scrypt(password, salt, N, r, p).
// A check uses the record's own parameters; NeedsRehash says when a record is
// weaker than the current defaults (AuthStore rehashes on the next good login).
//
// Thread safety: stateless, thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

#include "storage/status.h"

namespace cairn::server {

struct ScryptParams {
  uint64_t n = uint64_t{1} << 15;  // 32 MiB of memory with r = 8
  uint64_t r = 8;
  uint64_t p = 1;
};

// The current defaults for new records.
inline constexpr ScryptParams kDefaultScrypt{};

// Longest password accepted (bytes); longer ones are refused, not truncated.
inline constexpr size_t kMaxPasswordBytes = 1024;

// A new record for `password` with a fresh random salt. InvalidArgument for
// an empty or over-long password or parameters outside the accepted bounds
// (N a power of two in [2, 2^20], r in [1, 32], p in [1, 16],
// 128 * N * r at most 1 GiB); IOError when
// OpenSSL fails.
storage::Result<std::string> HashPassword(std::string_view password,
                                          const ScryptParams& params = kDefaultScrypt);

// True when `record` is a well-formed record and `password` matches it
// (constant-time comparison of the hashes). False for anything else,
// including an unreadable record.
bool VerifyPassword(std::string_view password, const std::string& record);

// True when `record` is unreadable or uses parameters weaker than `current`.
bool NeedsRehash(const std::string& record, const ScryptParams& current = kDefaultScrypt);

}  // namespace cairn::server
