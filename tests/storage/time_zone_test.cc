#include "storage/time_zone.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
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

// --- Civil arithmetic ---

TEST(CivilTest, RoundTripsAndStepsOneDayAtATime) {
  // From 1600-01-01 to about 2700: every day once.
  int64_t first = DaysFromCivil(1600, 1, 1);
  CivilDay prev = CivilFromDays(first - 1);
  for (int64_t d = first; d < first + 400000; ++d) {
    CivilDay c = CivilFromDays(d);
    ASSERT_EQ(DaysFromCivil(c.year, c.month, c.day), d);
    if (c.day == 1) {
      ASSERT_EQ(prev.day, DaysInMonth(prev.year, prev.month)) << d;
      ASSERT_EQ(c.month, prev.month == 12 ? 1 : prev.month + 1) << d;
      ASSERT_EQ(c.year, prev.month == 12 ? prev.year + 1 : prev.year) << d;
    } else {
      ASSERT_EQ(c.day, prev.day + 1) << d;
      ASSERT_EQ(c.month, prev.month);
      ASSERT_EQ(c.year, prev.year);
    }
    ASSERT_EQ(IsoWeekday(d), IsoWeekday(d - 1) % 7 + 1);
    prev = c;
  }
}

TEST(CivilTest, KnownDates) {
  EXPECT_EQ(DaysFromCivil(1970, 1, 1), 0);
  EXPECT_EQ(DaysFromCivil(1969, 12, 31), -1);
  EXPECT_EQ(DaysFromCivil(2000, 3, 1), 11017);
  EXPECT_EQ(DaysFromCivil(1600, 1, 1), -135140);
  EXPECT_EQ(CivilFromDays(19723), (CivilDay{2024, 1, 1}));
  EXPECT_EQ(CivilFromDays(-719468), (CivilDay{0, 3, 1}));
  EXPECT_EQ(IsoWeekday(0), 4);                            // Thursday
  EXPECT_EQ(IsoWeekday(DaysFromCivil(2024, 12, 30)), 1);  // Monday
  EXPECT_EQ(IsoWeekday(DaysFromCivil(1969, 12, 28)), 7);  // Sunday
  EXPECT_EQ(DaysInMonth(2024, 2), 29);
  EXPECT_EQ(DaysInMonth(2100, 2), 28);
  EXPECT_EQ(DaysInMonth(2000, 2), 29);
  EXPECT_EQ(DaysInMonth(2023, 4), 30);
}

TEST(CivilTest, IsoWeeksAtYearEnds) {
  struct Case {
    int y, m, d;
    IsoWeek want;
  };
  const Case cases[] = {
      {2024, 12, 29, {2024, 52}},  // Sunday
      {2024, 12, 30, {2025, 1}},   // Monday of a week 1 that starts in December
      {2024, 12, 31, {2025, 1}},  {2025, 1, 5, {2025, 1}},   {2025, 1, 6, {2025, 2}},
      {2020, 12, 31, {2020, 53}},  // Thursday: 2020 has 53 weeks
      {2021, 1, 3, {2020, 53}},    // January days in the previous year's week 53
      {2021, 1, 4, {2021, 1}},    {2026, 1, 1, {2026, 1}},  // Thursday
      {2027, 1, 1, {2026, 53}},   {2008, 12, 29, {2009, 1}}, {2010, 1, 3, {2009, 53}},
      {2015, 12, 31, {2015, 53}}, {2016, 1, 1, {2015, 53}},  {1970, 1, 1, {1970, 1}},
      {1969, 12, 29, {1970, 1}},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(IsoWeekFromDays(DaysFromCivil(c.y, c.m, c.d)), c.want)
        << c.y << "-" << c.m << "-" << c.d;
  }
}

// gmtime_r and strftime are thread-safe and independent of TZ: an oracle
// written by someone else.
TEST(CivilTest, AgreesWithGmtimeAndStrftime) {
  std::mt19937_64 rng(42);
  // 1800..9000: what glibc's struct tm handles comfortably.
  std::uniform_int_distribution<int64_t> dist(-5364662400, 221845392000);
  TimeZone utc;
  for (int i = 0; i < 200000; ++i) {
    int64_t t = dist(rng);
    time_t tt = static_cast<time_t>(t);
    struct tm tm {};
    ASSERT_NE(gmtime_r(&tt, &tm), nullptr);
    CivilTime c = utc.ToCivil(t);
    ASSERT_EQ(c.year, tm.tm_year + 1900) << t;
    ASSERT_EQ(c.month, tm.tm_mon + 1) << t;
    ASSERT_EQ(c.day, tm.tm_mday) << t;
    ASSERT_EQ(c.hour, tm.tm_hour) << t;
    ASSERT_EQ(c.minute, tm.tm_min) << t;
    ASSERT_EQ(c.second, tm.tm_sec) << t;
    ASSERT_EQ(IsoWeekday(c.days) % 7, tm.tm_wday) << t;
    char buf[32];
    ASSERT_GT(strftime(buf, sizeof(buf), "%G/%V", &tm), 0u);
    IsoWeek w = IsoWeekFromDays(c.days);
    char mine[32];
    snprintf(mine, sizeof(mine), "%lld/%02d", static_cast<long long>(w.year), w.week);
    ASSERT_STREQ(mine, buf) << t;
  }
}

TEST(CivilTest, ExtremeInstantsDoNotOverflow) {
  auto plus14 = TimeZone::FixedOffset(14 * 3600);
  auto minus12 = TimeZone::FixedOffset(-12 * 3600);
  ASSERT_TRUE(plus14.ok() && minus12.ok());
  for (int64_t t : {std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max() - 1, int64_t{0}}) {
    for (const TimeZone* tz : {&*plus14, &*minus12}) {
      CivilTime c = tz->ToCivil(t);
      EXPECT_GE(c.month, 1);
      EXPECT_LE(c.month, 12);
      EXPECT_GE(c.hour, 0);
      EXPECT_LT(c.hour, 24);
    }
  }
  auto rule = TimeZone::FromPosixRule("CET-1CEST,M3.5.0,M10.5.0/3");
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->OffsetAt(std::numeric_limits<int64_t>::max()), 3600);
  EXPECT_EQ(rule->OffsetAt(std::numeric_limits<int64_t>::min()), 3600);
}

// --- Fixed offsets and names ---

TEST(TimeZoneTest, UtcAndFixedOffsets) {
  TimeZone def;
  EXPECT_EQ(def.name(), "UTC");
  EXPECT_EQ(def.OffsetAt(T("2024-06-01T00:00:00Z")), 0);
  struct Case {
    const char* spec;
    int32_t offset;
    const char* name;
  };
  const Case cases[] = {
      {"UTC", 0, "UTC"},           {"Z", 0, "UTC"},
      {"+02:00", 7200, "+02:00"},  {"-05:30", -19800, "-05:30"},
      {"+05", 18000, "+05:00"},    {"-00:00", 0, "+00:00"},
      {"+23:59", 86340, "+23:59"}, {"-11", -39600, "-11:00"},
  };
  for (const Case& c : cases) {
    Result<TimeZone> tz = TimeZone::Parse(c.spec);
    ASSERT_TRUE(tz.ok()) << c.spec << ": " << tz.status().ToString();
    EXPECT_EQ(tz->OffsetAt(T("2024-01-01T00:00:00Z")), c.offset) << c.spec;
    EXPECT_EQ(tz->OffsetAt(T("2024-07-01T00:00:00Z")), c.offset) << c.spec;
    EXPECT_EQ(tz->name(), c.name) << c.spec;
  }
  Result<TimeZone> odd = TimeZone::FixedOffset(3600 + 61);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->name(), "+01:01:01");
  EXPECT_TRUE(TimeZone::FixedOffset(86400).status().IsInvalidArgument());
  EXPECT_TRUE(TimeZone::FixedOffset(-86400).status().IsInvalidArgument());
}

TEST(TimeZoneTest, OffsetMovesTheCivilDay) {
  auto plus2 = TimeZone::Parse("+02:00");
  auto minus530 = TimeZone::Parse("-05:30");
  ASSERT_TRUE(plus2.ok() && minus530.ok());
  CivilTime a = plus2->ToCivil(T("2024-05-10T22:30:00Z"));
  EXPECT_EQ(a.year, 2024);
  EXPECT_EQ(a.month, 5);
  EXPECT_EQ(a.day, 11);
  EXPECT_EQ(a.hour, 0);
  EXPECT_EQ(a.minute, 30);
  EXPECT_EQ(a.utc_offset, 7200);
  CivilTime b = minus530->ToCivil(T("2024-01-01T03:00:00Z"));
  EXPECT_EQ(b.year, 2023);
  EXPECT_EQ(b.month, 12);
  EXPECT_EQ(b.day, 31);
  EXPECT_EQ(b.hour, 21);
  EXPECT_EQ(b.minute, 30);
  EXPECT_EQ(b.days, DaysFromCivil(2023, 12, 31));
}

TEST(TimeZoneTest, RejectsBadSpecs) {
  const char* bad[] = {
      "",
      "+2:00",
      "+24:00",
      "+02:60",
      "+0200",
      "02:00",
      "+02:00 ",
      " UTC",
      "/etc/passwd",
      "../etc/passwd",
      "Europe/..",
      "Europe//Berlin",
      "Europe/",
      "Europe/Ber lin",
      "Europe/Berlin\n",
      "a.b",
      "+",
      "-1",
      "utc:",
  };
  for (const char* spec : bad) {
    Result<TimeZone> tz = TimeZone::Parse(spec);
    EXPECT_TRUE(tz.status().IsInvalidArgument()) << spec << ": " << tz.status().ToString();
  }
  EXPECT_TRUE(TimeZone::Parse(std::string("Europe/Ber\0lin", 14)).status().IsInvalidArgument());
  EXPECT_TRUE(TimeZone::Parse(std::string(129, 'A')).status().IsInvalidArgument());
}

// --- POSIX rules ---

TEST(PosixRuleTest, EuropeanRules) {
  auto tz = TimeZone::FromPosixRule("CET-1CEST,M3.5.0,M10.5.0/3");
  ASSERT_TRUE(tz.ok()) << tz.status().ToString();
  EXPECT_EQ(tz->name(), "CET-1CEST,M3.5.0,M10.5.0/3");
  EXPECT_EQ(tz->OffsetAt(T("2024-03-31T00:59:59Z")), 3600);
  EXPECT_EQ(tz->OffsetAt(T("2024-03-31T01:00:00Z")), 7200);
  EXPECT_EQ(tz->OffsetAt(T("2024-10-27T00:59:59Z")), 7200);
  EXPECT_EQ(tz->OffsetAt(T("2024-10-27T01:00:00Z")), 3600);
  EXPECT_EQ(tz->OffsetAt(T("2024-01-15T12:00:00Z")), 3600);
  EXPECT_EQ(tz->OffsetAt(T("2024-07-15T12:00:00Z")), 7200);
  // 2029: March 25 and October 28 are the last Sundays.
  EXPECT_EQ(tz->OffsetAt(T("2029-03-25T00:59:59Z")), 3600);
  EXPECT_EQ(tz->OffsetAt(T("2029-03-25T01:00:00Z")), 7200);
  EXPECT_EQ(tz->OffsetAt(T("2029-10-28T01:00:00Z")), 3600);
}

TEST(PosixRuleTest, AmericanSouthernNegativeAndAllYearRules) {
  auto ny = TimeZone::FromPosixRule("EST5EDT,M3.2.0,M11.1.0");
  ASSERT_TRUE(ny.ok());
  EXPECT_EQ(ny->OffsetAt(T("2024-03-10T06:59:59Z")), -18000);
  EXPECT_EQ(ny->OffsetAt(T("2024-03-10T07:00:00Z")), -14400);
  EXPECT_EQ(ny->OffsetAt(T("2024-11-03T05:59:59Z")), -14400);
  EXPECT_EQ(ny->OffsetAt(T("2024-11-03T06:00:00Z")), -18000);

  // Sydney: DST over the turn of the year.
  auto syd = TimeZone::FromPosixRule("AEST-10AEDT,M10.1.0,M4.1.0/3");
  ASSERT_TRUE(syd.ok());
  EXPECT_EQ(syd->OffsetAt(T("2024-01-01T00:00:00Z")), 39600);
  EXPECT_EQ(syd->OffsetAt(T("2024-04-06T15:59:59Z")), 39600);
  EXPECT_EQ(syd->OffsetAt(T("2024-04-06T16:00:00Z")), 36000);
  EXPECT_EQ(syd->OffsetAt(T("2024-10-05T15:59:59Z")), 36000);
  EXPECT_EQ(syd->OffsetAt(T("2024-10-05T16:00:00Z")), 39600);
  EXPECT_EQ(syd->OffsetAt(T("2024-12-31T23:59:59Z")), 39600);

  // Nuuk: negative transition times (RFC 8536 extension), quoted names.
  auto nuuk = TimeZone::FromPosixRule("<-02>2<-01>,M3.5.0/-1,M10.5.0/0");
  ASSERT_TRUE(nuuk.ok()) << nuuk.status().ToString();
  // Starts Saturday 2024-03-30 23:00 local standard = 2024-03-31T01:00Z.
  EXPECT_EQ(nuuk->OffsetAt(T("2024-03-31T00:59:59Z")), -7200);
  EXPECT_EQ(nuuk->OffsetAt(T("2024-03-31T01:00:00Z")), -3600);
  // Ends 2024-10-27 00:00 local DST = 01:00Z.
  EXPECT_EQ(nuuk->OffsetAt(T("2024-10-27T00:59:59Z")), -3600);
  EXPECT_EQ(nuuk->OffsetAt(T("2024-10-27T01:00:00Z")), -7200);

  // DST all year (the tzcode idiom): starts Jan 1 00:00, ends Dec 31 25:00.
  auto always = TimeZone::FromPosixRule("EST5EDT,0/0,J365/25");
  ASSERT_TRUE(always.ok()) << always.status().ToString();
  for (const char* t : {"2023-01-01T05:00:00Z", "2023-06-01T00:00:00Z", "2023-12-31T23:59:59Z",
                        "2024-01-01T04:30:00Z", "2024-02-29T12:00:00Z", "2024-12-31T12:00:00Z"}) {
    EXPECT_EQ(always->OffsetAt(T(t)), -14400) << t;
  }

  // Julian day without Feb 29: J60 is March 1 in leap years too.
  auto j = TimeZone::FromPosixRule("AAA0BBB,J60/0,J300/0");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->OffsetAt(T("2024-02-29T23:59:59Z")), 0);
  EXPECT_EQ(j->OffsetAt(T("2024-03-01T00:00:00Z")), 3600);
  // Zero-based day: 59 is March 1 in common years, Feb 29 in leap years.
  auto n = TimeZone::FromPosixRule("AAA0BBB,59/0,300/0");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->OffsetAt(T("2024-02-28T23:59:59Z")), 0);
  EXPECT_EQ(n->OffsetAt(T("2024-02-29T00:00:00Z")), 3600);
  EXPECT_EQ(n->OffsetAt(T("2023-02-28T23:59:59Z")), 0);
  EXPECT_EQ(n->OffsetAt(T("2023-03-01T00:00:00Z")), 3600);

  auto fixed = TimeZone::FromPosixRule("<+0530>-5:30");
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->OffsetAt(T("2024-06-01T00:00:00Z")), 19800);
}

TEST(PosixRuleTest, RejectsMalformedRules) {
  const char* bad[] = {
      "",
      "CET",
      "CE-1",
      "CET-1CEST",  // DST without dates
      "CET-1CEST,M3.5.0",
      "CET-1CEST,M13.1.0,M10.5.0",
      "CET-1CEST,M0.1.0,M10.5.0",
      "CET-1CEST,M3.6.0,M10.5.0",
      "CET-1CEST,M3.0.0,M10.5.0",
      "CET-1CEST,M3.5.7,M10.5.0",
      "CET-1CEST,J0,J365",
      "CET-1CEST,J366,J365",
      "CET-1CEST,366,300",
      "CET-1CEST,M3.5.0,M10.5.0/168",
      "CET-1CEST,M3.5.0,M10.5.0x",
      "CET25",
      "CET-1:60",
      "<AB>1",
      "<CET-1",
      "<C?T>1",
      "CET-1CEST,M3.5.0/,M10.5.0",
  };
  for (const char* rule : bad) {
    EXPECT_TRUE(TimeZone::FromPosixRule(rule).status().IsInvalidArgument()) << rule;
  }
}

// --- TZif ---

struct TzifSpec {
  char version = '2';
  std::vector<int64_t> times;
  std::vector<uint8_t> type_of;
  std::vector<int32_t> offsets;  // one type each; isdst 0, abbreviation "X"
  uint32_t leapcnt = 0;
  std::string footer = "\nUTC0\n";
};

void Put32(std::string* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<char>((v >> s) & 0xff));
}
void Put64(std::string* out, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out->push_back(static_cast<char>((v >> s) & 0xff));
}

std::string BuildTzif(const TzifSpec& spec) {
  std::string out;
  auto block = [&](int time_size) {
    out += "TZif";
    out.push_back(spec.version);
    out.append(15, '\0');
    Put32(&out, 0);  // isutcnt
    Put32(&out, 0);  // isstdcnt
    Put32(&out, spec.leapcnt);
    Put32(&out, static_cast<uint32_t>(spec.times.size()));
    Put32(&out, static_cast<uint32_t>(spec.offsets.size()));
    Put32(&out, 2);  // charcnt: "X\0"
    for (int64_t t : spec.times) {
      if (time_size == 4) {
        Put32(&out, static_cast<uint32_t>(static_cast<int32_t>(t)));
      } else {
        Put64(&out, static_cast<uint64_t>(t));
      }
    }
    for (uint8_t i : spec.type_of) out.push_back(static_cast<char>(i));
    for (int32_t o : spec.offsets) {
      Put32(&out, static_cast<uint32_t>(o));
      out.push_back('\0');
      out.push_back('\0');
    }
    out += std::string("X\0", 2);
    for (uint32_t i = 0; i < spec.leapcnt; ++i) {
      if (time_size == 4) {
        Put32(&out, 0);
      } else {
        Put64(&out, 0);
      }
      Put32(&out, 1);
    }
  };
  block(4);
  if (spec.version != 0) {
    block(8);
    out += spec.footer;
  }
  return out;
}

TEST(TzifTest, HandBuiltFiles) {
  TzifSpec spec;
  spec.times = {T("2000-01-01T00:00:00Z"), T("2010-01-01T00:00:00Z")};
  spec.type_of = {1, 2};
  spec.offsets = {100, 3600, -7200};
  spec.footer = "\n<-03>3\n";
  auto tz = TimeZone::FromTzif("Test/Zone", BuildTzif(spec));
  ASSERT_TRUE(tz.ok()) << tz.status().ToString();
  EXPECT_EQ(tz->name(), "Test/Zone");
  EXPECT_EQ(tz->OffsetAt(T("1999-12-31T23:59:59Z")), 100);  // type 0 before the first
  EXPECT_EQ(tz->OffsetAt(T("2000-01-01T00:00:00Z")), 3600);
  EXPECT_EQ(tz->OffsetAt(T("2009-12-31T23:59:59Z")), 3600);
  EXPECT_EQ(tz->OffsetAt(T("2010-01-01T00:00:00Z")), -10800);  // the footer from the last on
  EXPECT_EQ(tz->OffsetAt(T("2050-01-01T00:00:00Z")), -10800);

  // Empty footer: the last transition's type holds for ever.
  spec.footer = "\n\n";
  tz = TimeZone::FromTzif("Test/Zone", BuildTzif(spec));
  ASSERT_TRUE(tz.ok()) << tz.status().ToString();
  EXPECT_EQ(tz->OffsetAt(T("2050-01-01T00:00:00Z")), -7200);

  // No transitions: the footer holds at all times.
  TzifSpec none;
  none.offsets = {0};
  none.footer = "\nEST5EDT,M3.2.0,M11.1.0\n";
  tz = TimeZone::FromTzif("Test/None", BuildTzif(none));
  ASSERT_TRUE(tz.ok()) << tz.status().ToString();
  EXPECT_EQ(tz->OffsetAt(T("1980-07-01T00:00:00Z")), -14400);
  EXPECT_EQ(tz->OffsetAt(T("1980-01-01T00:00:00Z")), -18000);

  // Version 1 only, and a later version, are read.
  TzifSpec v1 = spec;
  v1.version = 0;
  tz = TimeZone::FromTzif("Test/V1", BuildTzif(v1));
  ASSERT_TRUE(tz.ok()) << tz.status().ToString();
  EXPECT_EQ(tz->OffsetAt(T("2050-01-01T00:00:00Z")), -7200);
  TzifSpec v4 = spec;
  v4.version = '4';
  EXPECT_TRUE(TimeZone::FromTzif("Test/V4", BuildTzif(v4)).ok());
}

TEST(TzifTest, RejectsBadFiles) {
  TzifSpec good;
  good.times = {T("2000-01-01T00:00:00Z"), T("2010-01-01T00:00:00Z")};
  good.type_of = {1, 0};
  good.offsets = {0, 3600};
  ASSERT_TRUE(TimeZone::FromTzif("x", BuildTzif(good)).ok());

  std::vector<std::pair<std::string, std::string>> bad;
  auto with = [&](const char* why, auto change) {
    TzifSpec s = good;
    change(&s);
    bad.emplace_back(why, BuildTzif(s));
  };
  with("version 1 digit", [](TzifSpec* s) { s->version = '1'; });
  with("leap seconds", [](TzifSpec* s) { s->leapcnt = 1; });
  with("descending", [](TzifSpec* s) { std::swap(s->times[0], s->times[1]); });
  with("equal times", [](TzifSpec* s) { s->times[1] = s->times[0]; });
  with("type index", [](TzifSpec* s) { s->type_of[1] = 2; });
  with("no types", [](TzifSpec* s) {
    s->offsets.clear();
    s->times.clear();
    s->type_of.clear();
  });
  with("offset too big", [](TzifSpec* s) { s->offsets[1] = 93600; });
  with("offset too small", [](TzifSpec* s) { s->offsets[1] = -90000; });
  with("bad footer", [](TzifSpec* s) { s->footer = "\nCET-1CEST\n"; });
  with("footer without newline", [](TzifSpec* s) { s->footer = "\nUTC0"; });
  with("no footer", [](TzifSpec* s) { s->footer = ""; });
  with("bytes after footer", [](TzifSpec* s) { s->footer = "\nUTC0\nmore"; });
  bad.emplace_back("bad magic", "TZIf" + BuildTzif(good).substr(4));
  bad.emplace_back("empty", "");
  std::string mixed = BuildTzif(good);
  mixed[mixed.find("TZif", 4) + 4] = '3';  // second header's version differs
  bad.emplace_back("mixed versions", mixed);
  for (const auto& [why, bytes] : bad) {
    EXPECT_TRUE(TimeZone::FromTzif("x", bytes).status().IsInvalidArgument()) << why;
  }
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// tzdata is a runtime dependency of the server; without it these fail loudly.
constexpr char kBerlin[] = "/usr/share/zoneinfo/Europe/Berlin";

TEST(TzifTest, EveryTruncationAndRandomDamageIsRefusedCleanly) {
  std::string data = ReadWholeFile(kBerlin);
  ASSERT_GT(data.size(), 100u) << "tzdata is not installed (" << kBerlin << ")";
  for (size_t n = 0; n < data.size(); ++n) {
    ASSERT_TRUE(TimeZone::FromTzif("x", data.substr(0, n)).status().IsInvalidArgument()) << n;
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string damaged = data;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      damaged[rng() % damaged.size()] ^= static_cast<char>(1 + rng() % 255);
    }
    Result<TimeZone> tz = TimeZone::FromTzif("x", damaged);
    if (tz.ok()) {
      // Whatever it parsed must be usable.
      (void)tz->ToCivil(T("2024-06-01T00:00:00Z"));
      (void)tz->ToCivil(T("2090-06-01T00:00:00Z"));
    } else {
      ASSERT_TRUE(tz.status().IsInvalidArgument()) << tz.status().ToString();
    }
  }
}

TEST(TzifTest, ParseReadsTheZoneinfoFolderSafely) {
  auto berlin = TimeZone::Parse("Europe/Berlin");
  ASSERT_TRUE(berlin.ok()) << berlin.status().ToString();
  EXPECT_EQ(berlin->name(), "Europe/Berlin");
  EXPECT_EQ(berlin->OffsetAt(T("2024-03-31T00:59:59Z")), 3600);
  EXPECT_EQ(berlin->OffsetAt(T("2024-03-31T01:00:00Z")), 7200);
  EXPECT_EQ(berlin->OffsetAt(T("2090-07-01T00:00:00Z")), 7200);  // from the footer
  EXPECT_EQ(berlin->OffsetAt(T("1975-07-01T00:00:00Z")), 3600);  // no DST in the 1970s

  EXPECT_TRUE(TimeZone::Parse("Europe/Atlantis").status().IsNotFound());
  EXPECT_TRUE(TimeZone::Parse("Europe").status().IsInvalidArgument());

  // A private zoneinfo folder: a valid file, a non-TZif file.
  std::string dir = ::testing::TempDir() + "/cairn_tz_XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  ASSERT_EQ(mkdir((dir + "/Test").c_str(), 0755), 0);
  TzifSpec spec;
  spec.offsets = {0};
  spec.footer = "\n<+0545>-5:45\n";
  std::ofstream(dir + "/Test/Kathmandu", std::ios::binary) << BuildTzif(spec);
  std::ofstream(dir + "/Test/Text", std::ios::binary) << "# not a zone\n";
  auto k = TimeZone::Parse("Test/Kathmandu", Env::Default(), dir);
  ASSERT_TRUE(k.ok()) << k.status().ToString();
  EXPECT_EQ(k->OffsetAt(0), 20700);
  EXPECT_TRUE(TimeZone::Parse("Test/Text", Env::Default(), dir).status().IsInvalidArgument());
  EXPECT_TRUE(TimeZone::Parse("Test/Nope", Env::Default(), dir).status().IsNotFound());
  std::filesystem::remove_all(dir);
}

// The whole of tzdata against glibc's localtime_r. Setting TZ is fine here:
// this test is single-threaded.
class GlibcOracle {
 public:
  explicit GlibcOracle(const std::string& zone) {
    const char* old = std::getenv("TZ");
    had_old_ = old != nullptr;
    if (had_old_) old_ = old;
    setenv("TZ", (":" + zone).c_str(), 1);
    tzset();
  }
  ~GlibcOracle() {
    if (had_old_) {
      setenv("TZ", old_.c_str(), 1);
    } else {
      unsetenv("TZ");
    }
    tzset();
  }
  GlibcOracle(const GlibcOracle&) = delete;
  GlibcOracle& operator=(const GlibcOracle&) = delete;

  static int64_t Offset(int64_t t) {
    time_t tt = static_cast<time_t>(t);
    struct tm tm {};
    localtime_r(&tt, &tm);
    return tm.tm_gmtoff;
  }

 private:
  bool had_old_ = false;
  std::string old_;
};

void CompareWithGlibc(const std::string& zone, const TimeZone& tz, std::mt19937_64* rng,
                      int* checked) {
  GlibcOracle oracle(zone);
  const int64_t from = T("1970-01-01T00:00:00Z");
  const int64_t to = T("2060-01-01T00:00:00Z");
  // Every change of offset we see, day by day, pinned to the second.
  for (int64_t t = from; t < to; t += 86400) {
    if (tz.OffsetAt(t) == tz.OffsetAt(t + 86400)) continue;
    int64_t lo = t;
    int64_t hi = t + 86400;
    while (hi - lo > 1) {
      int64_t mid = lo + (hi - lo) / 2;
      (tz.OffsetAt(mid) == tz.OffsetAt(t) ? lo : hi) = mid;
    }
    ASSERT_EQ(tz.OffsetAt(lo), GlibcOracle::Offset(lo)) << zone << " at " << lo;
    ASSERT_EQ(tz.OffsetAt(hi), GlibcOracle::Offset(hi)) << zone << " at " << hi;
    *checked += 2;
  }
  std::uniform_int_distribution<int64_t> dist(from, T("2200-01-01T00:00:00Z"));
  for (int i = 0; i < 1500; ++i) {
    int64_t t = dist(*rng);
    ASSERT_EQ(tz.OffsetAt(t), GlibcOracle::Offset(t)) << zone << " at " << t;
    ++*checked;
  }
}

TEST(TzifTest, AgreesWithGlibcOnEveryInstalledZone) {
  const std::filesystem::path root = "/usr/share/zoneinfo";
  ASSERT_TRUE(std::filesystem::is_directory(root)) << "tzdata is not installed";
  std::mt19937_64 rng(1);
  int zones = 0;
  int checked = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    std::string rel = std::filesystem::relative(entry.path(), root).string();
    if (rel.starts_with("right/") || rel.starts_with("posix/")) continue;
    std::string data = ReadWholeFile(entry.path().string());
    if (!data.starts_with("TZif")) continue;
    Result<TimeZone> tz = TimeZone::Parse(rel);
    ASSERT_TRUE(tz.ok()) << rel << ": " << tz.status().ToString();
    CompareWithGlibc(rel, *tz, &rng, &checked);
    if (HasFatalFailure()) return;
    ++zones;
  }
  EXPECT_GT(zones, 300);
  RecordProperty("zones", zones);
  RecordProperty("instants", checked);
}

}  // namespace
}  // namespace cairn::storage
