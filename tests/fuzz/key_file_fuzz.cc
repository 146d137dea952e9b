// Key files (client/encryption_key.h): the JSON key file and its paper form,
// read from disk or typed in. Invariants: an accepted file re-serialises to
// text that parses to the same text (indented and compact), the paper form
// of it parses back, and a kdf-none key unlocks or is refused, never crashes.
// (scrypt keys are not unlocked here: each try costs up to 1 GiB and seconds.)
#include <string>

#include "client/encryption_key.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::client;

namespace {

void CheckKeyFile(const KeyFile& f) {
  const std::string text = f.ToJson();
  auto again = KeyFile::Parse(text);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->ToJson() == text);
  auto compact = KeyFile::Parse(f.ToJson(/*compact=*/true));
  FUZZ_CHECK(compact.ok() && compact->ToJson() == text);
  auto paper = ParsePaperKey(RenderPaperKey(f));
  FUZZ_CHECK(paper.ok() && paper->ToJson() == text);
  if (f.kdf == KeyKdf::kNone) (void)UnlockKey(f, "");
}

}  // namespace

int FuzzKeyFile(const uint8_t* data, size_t size) {
  const std::string_view in = AsText(data, size);
  if (auto f = KeyFile::Parse(in); f.ok()) CheckKeyFile(*f);
  if (auto f = ParsePaperKey(in); f.ok()) CheckKeyFile(*f);
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzKeyFile)
