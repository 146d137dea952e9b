// Manifest parsing (storage/manifest.h): index.json, uploaded at the end of
// every backup and read back by every listing. Invariant: an accepted
// manifest serialises to text that parses back to the same text.
#include <string>

#include "storage/manifest.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::storage;

int FuzzManifest(const uint8_t* data, size_t size) {
  auto m = Manifest::Parse(AsText(data, size));
  if (!m.ok()) return 0;
  const std::string text = m->ToJson();
  auto again = Manifest::Parse(text);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->ToJson() == text);
  (void)m->TotalSize();
  for (const auto& a : m->archives) FUZZ_CHECK(m->FindArchive(a.name) != nullptr);
  (void)m->AllowsChunkKind(BlobKind::kZstd);
  if (m->crypt) (void)ManifestSigningText(*m);
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzManifest)
