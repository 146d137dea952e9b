// Replays every fuzz target's checked-in corpus (tests/fuzz/corpus/<target>/)
// and the inputs that once broke a parser (tests/testdata/fuzz/<target>/)
// through the fuzz targets' bodies, in the normal build: a regression of a
// fixed crash or a broken invariant aborts this test. The fuzz sources are
// compiled in with CAIRN_FUZZ_NO_MAIN (tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {
namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  int (*fn)(const uint8_t*, size_t);
};

const Target kTargets[] = {
    {"blob", FuzzBlob},
    {"fixed_index", FuzzFixedIndex},
    {"manifest", FuzzManifest},
    {"names", FuzzNames},
    {"calendar_event", FuzzCalendarEvent},
    {"tzif", FuzzTzif},
    {"json_splitter", FuzzJsonSplitter},
    {"qmp", FuzzQmp},
    {"guest_agent", FuzzGuestAgent},
    {"key_file", FuzzKeyFile},
    {"http_body", FuzzHttpBody},
    {"chunk_upload", FuzzChunkUpload},
    {"nbd", FuzzNbd},
};

fs::path SourceDir() {
  const char* dir = std::getenv("CAIRN_SOURCE_DIR");
  return dir != nullptr ? fs::path(dir) : fs::path(".");
}

std::vector<fs::path> FilesIn(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(e.path());
  }
  return out;
}

// Runs the target over every file of its corpus and regression folders.
size_t Replay(const Target& t) {
  size_t n = 0;
  for (const char* root : {"tests/fuzz/corpus", "tests/testdata/fuzz"}) {
    for (const auto& file : FilesIn(SourceDir() / root / t.name)) {
      SCOPED_TRACE(file.string());
      std::ifstream in(file, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string bytes = ss.str();
      t.fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++n;
    }
  }
  return n;
}

class FuzzRegressionTest : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzRegressionTest, ReplaysCorpusAndRegressions) {
  // A missing corpus is a broken checkout or a renamed target, not a pass.
  ASSERT_TRUE(fs::is_directory(SourceDir() / "tests/fuzz/corpus" / GetParam().name))
      << "set CAIRN_SOURCE_DIR to the source tree";
  EXPECT_GT(Replay(GetParam()), 0u);
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegressionTest, ::testing::ValuesIn(kTargets),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace cairn::fuzz
