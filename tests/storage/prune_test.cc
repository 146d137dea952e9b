#include "storage/prune.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "storage/names.h"

namespace cairn::storage {
namespace {

int64_t T(const char* text) {
  Result<int64_t> t = ParseSnapshotTime(text);
  EXPECT_TRUE(t.ok()) << text;
  return t.ok() ? *t : 0;
}

std::string Name(int64_t t) { return FormatSnapshotTime(t); }

TimeZone Zone(const std::string& spec) {
  Result<TimeZone> tz =
      spec.starts_with("posix:") ? TimeZone::FromPosixRule(spec.substr(6)) : TimeZone::Parse(spec);
  EXPECT_TRUE(tz.ok()) << spec << ": " << tz.status().ToString();
  return tz.ok() ? *tz : TimeZone();
}

// ---------------------------------------------------------------------------
// The table. Snapshots are listed newest first with the expected reason; the
// harness also feeds them reversed and shuffled.

struct Snap {
  const char* time;
  const char* want;
  bool is_protected = false;
};

struct Case {
  const char* name;
  PruneOptions options;
  const char* tz;
  std::vector<Snap> snaps;
};

constexpr bool kP = true;  // protected
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

const std::vector<Case>& Table() {
  static const std::vector<Case> cases = {
      {"no option set keeps everything",
       {},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-all"},
        {"2024-05-02T10:00:00Z", "keep-all"},
        {"2020-01-01T00:00:00Z", "keep-all"}}},
      {"all options 0 keeps everything (PBS keeps_something is false)",
       {.keep_last = 0,
        .keep_hourly = 0,
        .keep_daily = 0,
        .keep_weekly = 0,
        .keep_monthly = 0,
        .keep_yearly = 0},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-all"},
        {"2024-05-02T10:00:00Z", "protected", kP},
        {"2020-01-01T00:00:00Z", "keep-all"}}},
      {"keep-daily 0 behaves like unset",
       {.keep_last = 1, .keep_daily = 0},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-last"},
        {"2024-05-02T10:00:00Z", "remove"},
        {"2024-05-01T10:00:00Z", "remove"}}},
      {"keep-last alone",
       {.keep_last = 3},
       "UTC",
       {{"2024-05-03T14:00:00Z", "keep-last"},
        {"2024-05-03T13:00:00Z", "keep-last"},
        {"2024-05-03T12:00:00Z", "keep-last"},
        {"2024-05-03T11:00:00Z", "remove"},
        {"2024-05-03T10:00:00Z", "remove"}}},
      {"fewer snapshots than keep-last asks for",
       {.keep_last = 10, .keep_daily = 30},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-last"},
        {"2024-05-02T10:00:00Z", "keep-last"},
        {"2024-05-01T10:00:00Z", "keep-last"}}},
      {"fewer days than keep-daily asks for",
       {.keep_daily = 30},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-daily"},
        {"2024-05-03T08:00:00Z", "remove"},
        {"2024-05-01T10:00:00Z", "keep-daily"}}},
      {"keep-hourly alone",
       {.keep_hourly = 2},
       "UTC",
       {{"2024-05-03T10:50:00Z", "keep-hourly"},
        {"2024-05-03T10:20:00Z", "remove"},
        {"2024-05-03T09:40:00Z", "keep-hourly"},
        {"2024-05-03T09:10:00Z", "remove"},
        {"2024-05-03T08:30:00Z", "remove"}}},
      {"keep-daily: two snapshots in a day, missing days",
       {.keep_daily = 3},
       "UTC",
       {{"2024-03-10T20:00:00Z", "keep-daily"},
        {"2024-03-10T08:00:00Z", "remove"},
        {"2024-03-07T12:00:00Z", "keep-daily"},  // 8th and 9th have none and do not count
        {"2024-03-05T23:59:59Z", "keep-daily"},
        {"2024-03-05T00:00:00Z", "remove"},
        {"2024-03-01T12:00:00Z", "remove"}}},
      {"keep-weekly: ISO week 1 that starts in December",
       {.keep_weekly = 2},
       "UTC",
       {{"2025-01-02T10:00:00Z", "keep-weekly"},  // 2025-W01
        {"2024-12-31T10:00:00Z", "remove"},       // 2025-W01
        {"2024-12-30T10:00:00Z", "remove"},       // 2025-W01 (Monday)
        {"2024-12-29T10:00:00Z", "keep-weekly"},  // 2024-W52 (Sunday)
        {"2024-12-23T10:00:00Z", "remove"},       // 2024-W52
        {"2024-12-22T10:00:00Z", "remove"}}},     // 2024-W51: third week, not reached
      {"keep-weekly: 2020-W53 reaching into January",
       {.keep_weekly = 3},
       "UTC",
       {{"2021-01-04T10:00:00Z", "keep-weekly"},  // 2021-W01
        {"2021-01-03T10:00:00Z", "keep-weekly"},  // 2020-W53
        {"2020-12-31T10:00:00Z", "remove"},       // 2020-W53
        {"2020-12-28T10:00:00Z", "remove"},       // 2020-W53
        {"2020-12-27T10:00:00Z", "keep-weekly"},  // 2020-W52
        {"2020-12-21T10:00:00Z", "remove"},
        {"2020-12-20T10:00:00Z", "remove"}}},
      {"keep-monthly across a year boundary",
       {.keep_monthly = 2},
       "UTC",
       {{"2025-01-15T12:00:00Z", "keep-monthly"},
        {"2025-01-01T00:00:00Z", "remove"},
        {"2024-12-31T23:59:59Z", "keep-monthly"},
        {"2024-12-01T00:00:00Z", "remove"},
        {"2024-11-30T12:00:00Z", "remove"}}},
      {"keep-yearly across a year boundary",
       {.keep_yearly = 2},
       "UTC",
       {{"2025-01-01T00:00:00Z", "keep-yearly"},
        {"2024-12-31T23:59:59Z", "keep-yearly"},
        {"2024-06-01T12:00:00Z", "remove"},
        {"2023-01-01T12:00:00Z", "remove"},
        {"2022-12-31T12:00:00Z", "remove"}}},
      {"keep-last with keep-hourly: the last's hour is covered",
       {.keep_last = 1, .keep_hourly = 2},
       "UTC",
       {{"2024-05-03T10:50:00Z", "keep-last"},
        {"2024-05-03T10:20:00Z", "remove"},  // hour 10 covered: left unmarked, never kept
        {"2024-05-03T09:40:00Z", "keep-hourly"},
        {"2024-05-03T09:10:00Z", "remove"},
        {"2024-05-03T08:30:00Z", "keep-hourly"},
        {"2024-05-03T07:00:00Z", "remove"}}},
      {"keep-last with keep-daily",
       {.keep_last = 2, .keep_daily = 2},
       "UTC",
       {{"2024-05-03T18:00:00Z", "keep-last"},
        {"2024-05-03T12:00:00Z", "keep-last"},
        {"2024-05-03T06:00:00Z", "remove"},
        {"2024-05-02T20:00:00Z", "keep-daily"},
        {"2024-05-02T10:00:00Z", "remove"},
        {"2024-05-01T10:00:00Z", "keep-daily"},
        {"2024-04-30T10:00:00Z", "remove"}}},
      {"a snapshot skipped in a covered period stays open for later options",
       {.keep_daily = 1, .keep_weekly = 1, .keep_monthly = 2},
       "UTC",
       {{"2024-02-01T12:00:00Z", "keep-daily"},    // W05, February
        {"2024-01-30T12:00:00Z", "keep-monthly"},  // W05 covered by the daily; January is not
        {"2023-12-20T12:00:00Z", "keep-weekly"},
        {"2023-11-10T12:00:00Z", "keep-monthly"},
        {"2023-11-01T12:00:00Z", "remove"}}},
      {"a snapshot removed by one option is not reconsidered by the next",
       {.keep_weekly = 1, .keep_monthly = 2},
       "UTC",
       {{"2024-02-01T12:00:00Z", "keep-weekly"},   // W05
        {"2024-01-30T12:00:00Z", "remove"},        // W05 again: removed for good
        {"2024-01-10T12:00:00Z", "keep-monthly"},  // so January's is this one
        {"2023-12-05T12:00:00Z", "keep-monthly"},
        {"2023-11-05T12:00:00Z", "remove"}}},
      {"protected snapshots are kept and do not count",
       {.keep_last = 2},
       "UTC",
       {{"2024-05-03T14:00:00Z", "protected", kP},
        {"2024-05-03T13:00:00Z", "keep-last"},
        {"2024-05-03T12:00:00Z", "protected", kP},
        {"2024-05-03T11:00:00Z", "keep-last"},
        {"2024-05-03T10:00:00Z", "remove"}}},
      {"a protected snapshot does not cover its period",
       {.keep_daily = 1},
       "UTC",
       {{"2024-05-03T20:00:00Z", "protected", kP},
        {"2024-05-03T10:00:00Z", "keep-daily"},
        {"2024-05-02T10:00:00Z", "remove"}}},
      {"protected beyond the last selection",
       {.keep_daily = 1},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-daily"},
        {"2024-05-02T10:00:00Z", "remove"},
        {"2024-05-01T10:00:00Z", "protected", kP}}},
      {"protected with no option set",
       {},
       "UTC",
       {{"2024-05-03T10:00:00Z", "protected", kP}, {"2024-05-02T10:00:00Z", "keep-all"}}},
      {"+02:00 moves a snapshot across midnight",
       {.keep_daily = 2},
       "+02:00",
       {{"2024-05-10T23:30:00Z", "keep-daily"},  // local 05-11 01:30
        {"2024-05-10T21:59:00Z", "keep-daily"},  // local 05-10 23:59
        {"2024-05-10T20:00:00Z", "remove"},
        {"2024-05-09T23:00:00Z", "remove"}}},  // local 05-10 01:00
      {"the same snapshots in UTC",
       {.keep_daily = 2},
       "UTC",
       {{"2024-05-10T23:30:00Z", "keep-daily"},
        {"2024-05-10T21:59:00Z", "remove"},
        {"2024-05-10T20:00:00Z", "remove"},
        {"2024-05-09T23:00:00Z", "keep-daily"}}},
      {"-05:30 moves a snapshot into the previous year",
       {.keep_yearly = 2},
       "-05:30",
       {{"2024-01-01T03:00:00Z", "keep-yearly"},  // local 2023-12-31 21:30
        {"2023-12-31T12:00:00Z", "remove"},
        {"2023-06-01T12:00:00Z", "remove"},
        {"2022-12-31T12:00:00Z", "keep-yearly"},
        {"2022-06-01T12:00:00Z", "remove"}}},
      {"-05:30 moves a snapshot into the previous ISO week",
       {.keep_weekly = 2},
       "-05:30",
       {{"2024-12-30T04:00:00Z", "keep-weekly"},  // local Sunday 2024-12-29 22:30: 2024-W52
        {"2024-12-23T04:00:00Z", "keep-weekly"},  // local Sunday 2024-12-22 22:30: 2024-W51
        {"2024-12-20T04:00:00Z", "remove"}}},
      {"DST fall-back: the hour that happens twice is one period",
       {.keep_hourly = 2},
       "posix:CET-1CEST,M3.5.0,M10.5.0/3",
       {{"2024-10-27T01:45:00Z", "keep-hourly"},  // 02:45 CET
        {"2024-10-27T01:10:00Z", "remove"},       // 02:10 CET
        {"2024-10-27T00:50:00Z", "remove"},       // 02:50 CEST
        {"2024-10-27T00:10:00Z", "remove"},       // 02:10 CEST
        {"2024-10-26T23:50:00Z", "keep-hourly"},  // 01:50 CEST
        {"2024-10-26T23:10:00Z", "remove"}}},
      {"DST fall-back with the zone from tzdata",
       {.keep_hourly = 2},
       "Europe/Berlin",
       {{"2024-10-27T01:45:00Z", "keep-hourly"},
        {"2024-10-27T00:10:00Z", "remove"},
        {"2024-10-26T23:50:00Z", "keep-hourly"}}},
      {"DST spring-forward: the missing hour is no period",
       {.keep_hourly = 2},
       "posix:CET-1CEST,M3.5.0,M10.5.0/3",
       {{"2024-03-31T01:30:00Z", "keep-hourly"},  // 03:30 CEST
        {"2024-03-31T00:59:00Z", "keep-hourly"},  // 01:59 CET
        {"2024-03-31T00:30:00Z", "remove"}}},     // 01:30 CET
      {"huge counts keep one per period",
       {.keep_daily = kMax},
       "UTC",
       {{"2024-05-03T10:00:00Z", "keep-daily"},
        {"2024-05-03T08:00:00Z", "remove"},
        {"1970-01-01T00:00:00Z", "keep-daily"}}},
      {"every option once",
       {.keep_last = 1,
        .keep_hourly = 1,
        .keep_daily = 1,
        .keep_weekly = 1,
        .keep_monthly = 1,
        .keep_yearly = 1},
       "UTC",
       {{"2024-05-15T12:00:00Z", "keep-last"},
        {"2024-05-15T11:30:00Z", "keep-hourly"},
        {"2024-05-14T09:00:00Z", "keep-daily"},
        {"2024-05-13T09:00:00Z", "remove"},  // W20, covered by the daily
        {"2024-05-05T09:00:00Z", "keep-weekly"},
        {"2024-05-01T09:00:00Z", "remove"},  // W18 again
        {"2024-04-20T09:00:00Z", "keep-monthly"},
        {"2024-04-10T09:00:00Z", "remove"},
        {"2023-07-01T09:00:00Z", "keep-yearly"},
        {"2022-07-01T09:00:00Z", "remove"}}},
      {"one snapshot", {.keep_last = 1}, "UTC", {{"2024-05-03T10:00:00Z", "keep-last"}}},
      {"the worked example of the prune documentation",
       {.keep_last = 1, .keep_daily = 2, .keep_weekly = 2, .keep_monthly = 2},
       "UTC",
       {{"2025-01-02T18:00:00Z", "keep-last"},
        {"2025-01-02T06:00:00Z", "remove"},
        {"2024-12-31T12:00:00Z", "keep-daily"},
        {"2024-12-30T12:00:00Z", "protected", kP},
        {"2024-12-29T12:00:00Z", "keep-daily"},
        {"2024-12-24T12:00:00Z", "remove"},
        {"2024-12-01T12:00:00Z", "keep-weekly"},
        {"2024-11-28T12:00:00Z", "remove"},
        {"2024-10-20T12:00:00Z", "keep-weekly"},
        {"2024-10-10T12:00:00Z", "remove"},
        {"2024-10-01T12:00:00Z", "remove"},
        {"2024-09-15T12:00:00Z", "keep-monthly"},
        {"2024-08-15T12:00:00Z", "keep-monthly"}}},
  };
  return cases;
}

void CheckCase(const Case& c, const std::vector<PruneInput>& input, const char* order) {
  SCOPED_TRACE(std::string(c.name) + " (" + order + " input)");
  std::vector<PruneDecision> got = ComputePrune(input, c.options, Zone(c.tz));
  ASSERT_EQ(got.size(), c.snaps.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(c.snaps[i].time);
    EXPECT_EQ(got[i].time, T(c.snaps[i].time));
    EXPECT_STREQ(PruneReasonName(got[i].reason), c.snaps[i].want);
    EXPECT_EQ(got[i].keep, std::string(c.snaps[i].want) != "remove");
    EXPECT_EQ(got[i].is_protected, c.snaps[i].is_protected);
  }
}

TEST(PruneTableTest, EveryCase) {
  ASSERT_GE(Table().size(), 20u);
  std::mt19937 rng(3);
  for (const Case& c : Table()) {
    std::vector<PruneInput> input;
    for (const Snap& s : c.snaps) input.push_back({T(s.time), s.is_protected});
    for (size_t i = 1; i < input.size(); ++i) {
      ASSERT_GT(input[i - 1].time, input[i].time) << c.name << ": list newest first";
    }
    CheckCase(c, input, "newest first");
    std::reverse(input.begin(), input.end());
    CheckCase(c, input, "oldest first");
    std::shuffle(input.begin(), input.end(), rng);
    CheckCase(c, input, "shuffled");
  }
}

TEST(PruneTest, EmptyGroup) {
  EXPECT_TRUE(ComputePrune({}, {.keep_last = 3}, TimeZone()).empty());
  EXPECT_TRUE(ComputePrune({}, {}, TimeZone()).empty());
}

TEST(PruneTest, ZeroIsExactlyUnset) {
  std::vector<PruneInput> input;
  for (int64_t i = 0; i < 50; ++i) {
    input.push_back({T("2024-01-01T00:00:00Z") + i * 7919, i % 7 == 0});
  }
  PruneOptions unset{.keep_last = 2, .keep_weekly = 1};
  for (auto field : {&PruneOptions::keep_hourly, &PruneOptions::keep_daily,
                     &PruneOptions::keep_monthly, &PruneOptions::keep_yearly}) {
    PruneOptions zero = unset;
    zero.*field = 0;
    std::vector<PruneDecision> a = ComputePrune(input, unset, TimeZone());
    std::vector<PruneDecision> b = ComputePrune(input, zero, TimeZone());
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].time, b[i].time);
      EXPECT_EQ(a[i].reason, b[i].reason);
    }
  }
}

TEST(PruneTest, OptionsDescribeThemselves) {
  EXPECT_TRUE(PruneOptions{}.KeepsAll());
  EXPECT_TRUE((PruneOptions{.keep_last = 0, .keep_yearly = 0}).KeepsAll());
  EXPECT_FALSE((PruneOptions{.keep_yearly = 1}).KeepsAll());
  EXPECT_EQ(PruneOptions{}.ToString(), "");
  EXPECT_EQ((PruneOptions{.keep_last = 3, .keep_hourly = 0, .keep_daily = 7, .keep_yearly = 2})
                .ToString(),
            "--keep-last 3 --keep-daily 7 --keep-yearly 2");
  const std::pair<PruneReason, const char*> names[] = {
      {PruneReason::kKeepLast, "keep-last"},
      {PruneReason::kKeepHourly, "keep-hourly"},
      {PruneReason::kKeepDaily, "keep-daily"},
      {PruneReason::kKeepWeekly, "keep-weekly"},
      {PruneReason::kKeepMonthly, "keep-monthly"},
      {PruneReason::kKeepYearly, "keep-yearly"},
      {PruneReason::kProtected, "protected"},
      {PruneReason::kKeepAll, "keep-all"},
      {PruneReason::kRemove, "remove"},
  };
  for (const auto& [reason, name] : names) EXPECT_STREQ(PruneReasonName(reason), name);
}

// ---------------------------------------------------------------------------
// A second implementation in a different style: a line-by-line reading of
// PBS's compute_prune_info with string period ids from the C library's
// strftime (as PBS's strftime_local), maps keyed by time, and no code shared
// with storage/prune.cc or storage/time_zone.cc.

using BrokenDown = std::function<struct tm(int64_t)>;

BrokenDown FixedOffsetClock(int64_t offset) {
  return [offset](int64_t t) {
    time_t tt = static_cast<time_t>(t + offset);
    struct tm tm {};
    gmtime_r(&tt, &tm);
    return tm;
  };
}

// Uses the process time zone (TZ): only in single-threaded tests.
struct tm LocalClock(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm {};
  localtime_r(&tt, &tm);
  return tm;
}

std::map<int64_t, std::string> ReferencePrune(const std::vector<PruneInput>& input,
                                              const PruneOptions& o, const BrokenDown& clock) {
  const std::array<std::pair<std::optional<uint64_t>, const char*>, 6> opts = {{
      {o.keep_last, "keep-last"},
      {o.keep_hourly, "keep-hourly"},
      {o.keep_daily, "keep-daily"},
      {o.keep_weekly, "keep-weekly"},
      {o.keep_monthly, "keep-monthly"},
      {o.keep_yearly, "keep-yearly"},
  }};
  auto id = [&](size_t which, int64_t t) -> std::string {
    struct tm tm = clock(t);
    char buf[64] = "";
    switch (which) {
      case 0:
        return std::to_string(t);
      case 1:
        strftime(buf, sizeof(buf), "%Y/%m/%d/%H", &tm);
        break;
      case 2:
        strftime(buf, sizeof(buf), "%Y/%m/%d", &tm);
        break;
      case 3:
        strftime(buf, sizeof(buf), "%G/%V", &tm);
        break;
      case 4:
        strftime(buf, sizeof(buf), "%Y/%m", &tm);
        break;
      default:
        strftime(buf, sizeof(buf), "%Y", &tm);
        break;
    }
    return buf;
  };
  std::vector<PruneInput> list = input;
  std::sort(list.begin(), list.end(),
            [](const PruneInput& a, const PruneInput& b) { return a.time > b.time; });
  std::map<int64_t, std::string> mark;  // time -> "keep", "protected", "remove"
  std::map<int64_t, std::string> kept_by;
  for (size_t w = 0; w < opts.size(); ++w) {
    if (!opts[w].first) continue;
    uint64_t keep = *opts[w].first;
    std::set<std::string> include_hash;
    std::set<std::string> already_included;
    for (const PruneInput& info : list) {
      auto it = mark.find(info.time);
      if (it != mark.end() && it->second == "keep") already_included.insert(id(w, info.time));
    }
    for (const PruneInput& info : list) {
      if (mark.count(info.time)) continue;
      if (info.is_protected) {
        mark[info.time] = "protected";
        continue;
      }
      std::string sel = id(w, info.time);
      if (already_included.count(sel)) continue;
      if (!include_hash.count(sel)) {
        if (include_hash.size() >= keep) break;
        include_hash.insert(sel);
        mark[info.time] = "keep";
        kept_by[info.time] = opts[w].second;
      } else {
        mark[info.time] = "remove";
      }
    }
  }
  bool keeps_something = false;
  for (const auto& [count, name] : opts) {
    if (count.value_or(0) > 0) keeps_something = true;
  }
  std::map<int64_t, std::string> out;
  for (const PruneInput& info : list) {
    if (info.is_protected) {
      out[info.time] = "protected";
    } else if (!keeps_something) {
      out[info.time] = "keep-all";
    } else if (mark.count(info.time) && mark[info.time] == "keep") {
      out[info.time] = kept_by[info.time];
    } else {
      out[info.time] = "remove";
    }
  }
  return out;
}

// Compares ComputePrune with the reference; returns the count per reason.
std::map<std::string, int> CompareWithReference(const std::vector<PruneInput>& input,
                                                const PruneOptions& options, const TimeZone& tz,
                                                const BrokenDown& clock) {
  std::map<int64_t, std::string> want = ReferencePrune(input, options, clock);
  std::vector<PruneDecision> got = ComputePrune(input, options, tz);
  std::map<std::string, int> counts;
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (i > 0) {
      EXPECT_GT(got[i - 1].time, got[i].time);
    }
    EXPECT_EQ(PruneReasonName(got[i].reason), want[got[i].time])
        << Name(got[i].time) << " in " << tz.name() << " with " << options.ToString();
    ++counts[PruneReasonName(got[i].reason)];
  }
  return counts;
}

// Two years of snapshots every six hours, every 97th protected.
std::vector<PruneInput> TwoYearsSixHourly() {
  std::vector<PruneInput> input;
  int i = 0;
  for (int64_t t = T("2023-01-01T00:00:00Z"); t <= T("2024-12-31T18:00:00Z");
       t += int64_t{6} * 3600) {
    input.push_back({t, ++i % 97 == 0});
  }
  return input;
}

TEST(PruneHistoryTest, AllOptionsOnTwoYearsMatchTheReference) {
  std::vector<PruneInput> input = TwoYearsSixHourly();
  ASSERT_EQ(input.size(), 731u * 4);
  PruneOptions options{.keep_last = 5,
                       .keep_hourly = 10,
                       .keep_daily = 14,
                       .keep_weekly = 8,
                       .keep_monthly = 12,
                       .keep_yearly = 5};
  std::map<std::string, int> counts =
      CompareWithReference(input, options, TimeZone(), FixedOffsetClock(0));
  EXPECT_EQ(counts["keep-last"], 5);
  EXPECT_EQ(counts["keep-hourly"], 10);
  EXPECT_EQ(counts["keep-daily"], 14);
  EXPECT_EQ(counts["keep-weekly"], 8);
  EXPECT_EQ(counts["keep-monthly"], 12);
  // The monthly selection reaches back into 2023, so both years are covered
  // and keep-yearly finds no year left: fewer than asked.
  EXPECT_EQ(counts["keep-yearly"], 0);
  EXPECT_EQ(counts["protected"], 731 * 4 / 97);
  EXPECT_EQ(counts["remove"], 731 * 4 - 5 - 10 - 14 - 8 - 12 - counts["protected"]);

  // With fewer months, keep-yearly gets 2023: its newest snapshot.
  options.keep_monthly = 6;
  counts = CompareWithReference(input, options, TimeZone(), FixedOffsetClock(0));
  EXPECT_EQ(counts["keep-monthly"], 6);
  EXPECT_EQ(counts["keep-yearly"], 1);
  std::vector<PruneDecision> got = ComputePrune(input, options, TimeZone());
  for (const PruneDecision& d : got) {
    if (d.reason == PruneReason::kKeepYearly) {
      EXPECT_EQ(Name(d.time), "2023-12-31T18:00:00Z");
    }
  }

  // Every option alone, in a time zone that moves the day boundary.
  TimeZone kolkata = Zone("+05:30");
  for (auto field :
       {&PruneOptions::keep_last, &PruneOptions::keep_hourly, &PruneOptions::keep_daily,
        &PruneOptions::keep_weekly, &PruneOptions::keep_monthly, &PruneOptions::keep_yearly}) {
    PruneOptions one;
    one.*field = 9;
    counts = CompareWithReference(input, one, kolkata, FixedOffsetClock(19800));
    int kept = 0;
    for (const auto& [reason, n] : counts) {
      if (reason != "remove" && reason != "protected") kept += n;
    }
    // Local time runs from 2023-01-01 05:30 to 2024-12-31 23:30: two years.
    EXPECT_EQ(kept, field == &PruneOptions::keep_yearly ? 2 : 9) << one.ToString();
  }
}

TEST(PruneHistoryTest, RandomHistoriesMatchTheReference) {
  std::mt19937_64 rng(20240601);
  const int32_t offsets[] = {0, 7200, -19800, 45900, -43200, 50400, 3600, -3600};
  const int64_t gaps[] = {1800, 3 * 3600L, 26 * 3600L, 9 * 86400L, 45 * 86400L};
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<PruneInput> input;
    int64_t t = T("2018-01-01T00:00:00Z") + static_cast<int64_t>(rng() % (8ull * 365 * 86400));
    const int64_t gap = gaps[rng() % std::size(gaps)];
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      input.push_back({t, rng() % 10 == 0});
      t += 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(gap));
    }
    std::shuffle(input.begin(), input.end(), rng);
    PruneOptions o;
    for (auto field :
         {&PruneOptions::keep_last, &PruneOptions::keep_hourly, &PruneOptions::keep_daily,
          &PruneOptions::keep_weekly, &PruneOptions::keep_monthly, &PruneOptions::keep_yearly}) {
      if (rng() % 5 < 2) o.*field = rng() % 6;
    }
    const int32_t offset = offsets[rng() % std::size(offsets)];
    Result<TimeZone> tz = TimeZone::FixedOffset(offset);
    ASSERT_TRUE(tz.ok());
    CompareWithReference(input, o, *tz, FixedOffsetClock(offset));
    if (HasFailure()) {
      ADD_FAILURE() << "iteration " << iter;
      return;
    }
  }
}

// Real zones with DST, against PBS's own way of naming periods:
// strftime on localtime_r with TZ set (single-threaded here).
TEST(PruneHistoryTest, DstZonesMatchLocaltime) {
  const char* old = std::getenv("TZ");
  std::string saved = old ? old : "";
  std::mt19937_64 rng(5);
  for (const char* zone : {"Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                           "America/Sao_Paulo", "Asia/Kolkata"}) {
    TimeZone tz = Zone(zone);
    setenv("TZ", (std::string(":") + zone).c_str(), 1);
    tzset();
    for (int iter = 0; iter < 300; ++iter) {
      std::vector<PruneInput> input;
      // Around DST changes: dense snapshots in March/April and Oct/Nov.
      int64_t t = T("2010-03-01T00:00:00Z") + static_cast<int64_t>(rng() % 15) * 365 * 86400 +
                  static_cast<int64_t>(rng() % 2) * 214 * 86400;
      for (int i = 0; i < 80; ++i) {
        input.push_back({t, rng() % 15 == 0});
        t += 60 + static_cast<int64_t>(rng() % (uint64_t{20} * 3600));
      }
      PruneOptions o{.keep_last = rng() % 3,
                     .keep_hourly = rng() % 30,
                     .keep_daily = rng() % 10,
                     .keep_weekly = rng() % 4,
                     .keep_monthly = rng() % 3,
                     .keep_yearly = rng() % 2};
      CompareWithReference(input, o, tz, LocalClock);
      if (HasFailure()) break;
    }
  }
  if (old) {
    setenv("TZ", saved.c_str(), 1);
  } else {
    unsetenv("TZ");
  }
  tzset();
}

}  // namespace
}  // namespace cairn::storage
