#pragma once

// Helpers for tests that back up and restore through the server's API the
// way a client does: synthetic disk images, chunk uploads, fixed indexes,
// reader sessions.

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

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

// The bytes of a fixed index of an image of `image_size` bytes naming
// `digests` (4 MiB chunks); "" (and a test failure) when they do not fit.
std::string FixedIndexBytes(const std::vector<storage::Digest>& digests, uint64_t image_size);

// A real cairn-server per test for tests that attack it, with an admin
// client. At the end the server must still answer and stop by SIGTERM with
// status 0: a crash along the way (SIGSEGV) shows there.
class LiveServerTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // The process exists and answers /version and /status.
  bool Alive();
  std::string StorePath() const { return dir_.path() + "/stores/default"; }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ApiClient> admin_;
};

}  // namespace cairn::testing
