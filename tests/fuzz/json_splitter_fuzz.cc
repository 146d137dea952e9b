// The JSON object splitter (client/json_splitter.h) that frames QMP and
// qemu-ga streams. The first byte of the input picks how the rest is cut
// into reads. Invariants: the messages and the final error do not depend on
// how the stream was cut, each message is one balanced object, and the
// splitter never holds more than its bound.
#include <string>
#include <vector>

#include "client/json_splitter.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using cairn::client::JsonObjectSplitter;

namespace {

constexpr size_t kMaxBytes = 4096;

// Feeds `in` in pieces of `step` bytes (0: all at once); the messages and
// whether it ended in an error.
std::vector<std::string> Split(std::string_view in, size_t step, bool* failed) {
  JsonObjectSplitter splitter("fuzz", kMaxBytes);
  std::vector<std::string> out;
  *failed = false;
  size_t pos = 0;
  while (pos < in.size()) {
    const size_t n = step == 0 ? in.size() : std::min(step, in.size() - pos);
    splitter.Append(in.data() + pos, n);
    pos += n;
    for (;;) {
      std::string m;
      auto got = splitter.Next(&m);
      if (!got.ok()) {
        *failed = true;
        return out;
      }
      if (!*got) break;
      FUZZ_CHECK(!m.empty() && m.front() == '{' && m.back() == '}');
      FUZZ_CHECK(m.size() <= kMaxBytes);
      out.push_back(std::move(m));
    }
  }
  return out;
}

}  // namespace

int FuzzJsonSplitter(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t step = data[0] % 17 + 1;
  const std::string_view in = AsText(data + 1, size - 1);
  bool whole_failed = false;
  bool pieces_failed = false;
  const auto whole = Split(in, 0, &whole_failed);
  const auto pieces = Split(in, step, &pieces_failed);
  // Fed whole, an error stops everything after it; fed in pieces the
  // messages before it come out the same.
  if (!whole_failed && !pieces_failed) FUZZ_CHECK(whole == pieces);
  if (whole_failed == pieces_failed) {
    FUZZ_CHECK(whole.size() == pieces.size());
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzJsonSplitter)
