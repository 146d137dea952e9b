#pragma once

// Helpers for tests that back up and restore through the server's API the
// way a client does: synthetic disk images, chunk uploads, fixed indexes,
// reader sessions.

#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/digest.h"
#include "tests/integration/server_process_testutil.h"

namespace cairn::testing {

// A disk image of `chunks` chunks (the last one short) with mixed content:
// random, text-like and zero chunks in turn.
std::string MakeImage(size_t chunks, uint32_t seed);
std::string ChunkOf(const std::string& img, size_t i);
size_t ChunkCount(const std::string& img);

// Starts a backup session of `group` at `time` in store "default"; expects 201.
nlohmann::json StartBackup(ApiClient& c, const std::string& group, int64_t time);
// Uploads the chunks of `img` whose digest is not in `skip`, then the index
// `archive`; returns how many chunks went up. Expects every request to work.
size_t UploadImage(ApiClient& c, const std::string& sid, const std::string& archive,
                   const std::string& img, const std::set<storage::Digest>& skip);
// Start + upload + finish; returns the snapshot name.
std::string BackupImage(ApiClient& c, const std::string& group, int64_t time,
                        const std::string& img);
// Restores `archive` of `snapshot` through a reader session, checking every
// chunk's digest; "" on failure (the test has failed then).
std::string Restore(ApiClient& c, const std::string& snapshot, const std::string& archive);

}  // namespace cairn::testing
