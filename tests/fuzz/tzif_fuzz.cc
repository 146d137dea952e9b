// The TZif reader and POSIX TZ rules (storage/time_zone.h): zone files read
// from /usr/share/zoneinfo (or a configured folder) and the rule in their
// footer. Invariants: an accepted zone answers offsets under a day and civil
// times for any instant, including the int64 extremes.
#include <limits>
#include <string>

#include "storage/time_zone.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using cairn::storage::TimeZone;

namespace {

void Exercise(const TimeZone& tz) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t t : {kMin, kMin + 1, int64_t{-1} << 40, int64_t{-1}, int64_t{0},
                    int64_t{1798761600}, int64_t{1} << 40, kMax - 1, kMax}) {
    const int32_t off = tz.OffsetAt(t);
    FUZZ_CHECK(off > -86400 * 7 && off < 86400 * 7);
    (void)tz.ToCivil(t);
  }
}

}  // namespace

int FuzzTzif(const uint8_t* data, size_t size) {
  const std::string_view in = AsText(data, size);
  if (auto tz = TimeZone::FromTzif("fuzz", in); tz.ok()) Exercise(*tz);
  if (in.size() <= 256) {
    if (auto tz = TimeZone::FromPosixRule(in); tz.ok()) Exercise(*tz);
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzTzif)
