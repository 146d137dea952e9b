#include "server/calendar_event.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace cairn::server {
namespace {

// Expected times below were computed with `date -u -d "<text>" +%s` in a
// shell, never with the code under test; the text is kept for messages.
struct ExpectedRun {
  int64_t unix_seconds;
  const char* utc;
};

struct Case {
  const char* expr;
  const char* tz;
  int64_t from;
  std::vector<ExpectedRun> runs;  // the first runs strictly after `from`, in order
  bool exhausted;                 // true: no run after the last one listed
};

// Times in the table are UTC; cases with another zone were converted by hand
// (local wall-clock time minus the offset).
const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"minutely",
       "UTC",
       1773500966 /* 2026-03-14 15:09:26 */,
       {{1773501000, "2026-03-14 15:10:00"},
        {1773501060, "2026-03-14 15:11:00"},
        {1773501120, "2026-03-14 15:12:00"}},
       false},
      {"hourly",
       "UTC",
       1798756200 /* 2026-12-31 22:30:00 */,
       {{1798758000, "2026-12-31 23:00:00"},
        {1798761600, "2027-01-01 00:00:00"},
        {1798765200, "2027-01-01 01:00:00"}},
       false},
      {"daily",
       "UTC",
       1772150400 /* 2026-02-27 00:00:00 */,
       {{1772236800, "2026-02-28 00:00:00"},
        {1772323200, "2026-03-01 00:00:00"},
        {1772409600, "2026-03-02 00:00:00"}},
       false},
      {"daily",
       "UTC",
       1835395199 /* 2028-02-28 23:59:59 */,
       {{1835395200, "2028-02-29 00:00:00"},
        {1835481600, "2028-03-01 00:00:00"},
        {1835568000, "2028-03-02 00:00:00"}},
       false},
      {"weekly",
       "UTC",
       1795262400 /* 2026-11-21 12:00:00 */,
       {{1795392000, "2026-11-23 00:00:00"},
        {1795996800, "2026-11-30 00:00:00"},
        {1796601600, "2026-12-07 00:00:00"}},
       false},
      {"monthly",
       "UTC",
       1769853600 /* 2026-01-31 10:00:00 */,
       {{1769904000, "2026-02-01 00:00:00"},
        {1772323200, "2026-03-01 00:00:00"},
        {1775001600, "2026-04-01 00:00:00"}},
       false},
      {"yearly",
       "UTC",
       1781481600 /* 2026-06-15 00:00:00 */,
       {{1798761600, "2027-01-01 00:00:00"},
        {1830297600, "2028-01-01 00:00:00"},
        {1861920000, "2029-01-01 00:00:00"}},
       false},
      {"annually",
       "UTC",
       4102444799 /* 2099-12-31 23:59:59 */,
       {{4102444800, "2100-01-01 00:00:00"}, {4133980800, "2101-01-01 00:00:00"}},
       false},
      {"quarterly",
       "UTC",
       1795219200 /* 2026-11-21 00:00:00 */,
       {{1798761600, "2027-01-01 00:00:00"},
        {1806537600, "2027-04-01 00:00:00"},
        {1814400000, "2027-07-01 00:00:00"},
        {1822348800, "2027-10-01 00:00:00"},
        {1830297600, "2028-01-01 00:00:00"}},
       false},
      {"semiannually",
       "UTC",
       1782864000 /* 2026-07-01 00:00:00 */,
       {{1798761600, "2027-01-01 00:00:00"},
        {1814400000, "2027-07-01 00:00:00"},
        {1830297600, "2028-01-01 00:00:00"}},
       false},
      {"sat 02:00",
       "UTC",
       1795226399 /* 2026-11-21 01:59:59 */,
       {{1795226400, "2026-11-21 02:00:00"},
        {1795831200, "2026-11-28 02:00:00"},
        {1796436000, "2026-12-05 02:00:00"}},
       false},
      {"mon..fri 22:30",
       "UTC",
       1795213800 /* 2026-11-20 22:30:00 */,
       {{1795473000, "2026-11-23 22:30:00"},
        {1795559400, "2026-11-24 22:30:00"},
        {1795645800, "2026-11-25 22:30:00"},
        {1795732200, "2026-11-26 22:30:00"},
        {1795818600, "2026-11-27 22:30:00"},
        {1796077800, "2026-11-30 22:30:00"}},
       false},
      {"Monday..Friday 22:30",
       "UTC",
       1795213799 /* 2026-11-20 22:29:59 */,
       {{1795213800, "2026-11-20 22:30:00"}, {1795473000, "2026-11-23 22:30:00"}},
       false},
      {"sat,sun 10:00",
       "UTC",
       1795132800 /* 2026-11-20 00:00:00 */,
       {{1795255200, "2026-11-21 10:00:00"},
        {1795341600, "2026-11-22 10:00:00"},
        {1795860000, "2026-11-28 10:00:00"},
        {1795946400, "2026-11-29 10:00:00"}},
       false},
      {"SATURDAY 12:00",
       "UTC",
       1795262400 /* 2026-11-21 12:00:00 */,
       {{1795867200, "2026-11-28 12:00:00"}, {1796472000, "2026-12-05 12:00:00"}},
       false},
      {"*:0/15",
       "UTC",
       1798760400 /* 2026-12-31 23:40:00 */,
       {{1798760700, "2026-12-31 23:45:00"},
        {1798761600, "2027-01-01 00:00:00"},
        {1798762500, "2027-01-01 00:15:00"},
        {1798763400, "2027-01-01 00:30:00"}},
       false},
      {"*:*",
       "UTC",
       1798761510 /* 2026-12-31 23:58:30 */,
       {{1798761540, "2026-12-31 23:59:00"},
        {1798761600, "2027-01-01 00:00:00"},
        {1798761660, "2027-01-01 00:01:00"}},
       false},
      {"2026-12-01 03:00",
       "UTC",
       1795219200 /* 2026-11-21 00:00:00 */,
       {{1796094000, "2026-12-01 03:00:00"}},
       true},
      {"2026-12-01 03:00", "UTC", 1796094000 /* 2026-12-01 03:00:00 */, {}, true},
      {"mon *-*-1..7 03:00",
       "UTC",
       1795219200 /* 2026-11-21 00:00:00 */,
       {{1796612400, "2026-12-07 03:00:00"},
        {1799031600, "2027-01-04 03:00:00"},
        {1801450800, "2027-02-01 03:00:00"},
        {1803870000, "2027-03-01 03:00:00"},
        {1806894000, "2027-04-05 03:00:00"}},
       false},
      {"*-02-29",
       "UTC",
       1735689600 /* 2025-01-01 00:00:00 */,
       {{1835395200, "2028-02-29 00:00:00"},
        {1961625600, "2032-02-29 00:00:00"},
        {2087856000, "2036-02-29 00:00:00"}},
       false},
      {"*-02-29 12:00",
       "UTC",
       3981398400 /* 2096-03-01 00:00:00 */,
       {{4233729600, "2104-02-29 12:00:00"}, {4359960000, "2108-02-29 12:00:00"}},
       false},
      {"2024/4-02-29 12:00",
       "UTC",
       1767225600 /* 2026-01-01 00:00:00 */,
       {{1835438400, "2028-02-29 12:00:00"},
        {1961668800, "2032-02-29 12:00:00"},
        {2087899200, "2036-02-29 12:00:00"}},
       false},
      {"*-*-31",
       "UTC",
       1775001600 /* 2026-04-01 00:00:00 */,
       {{1780185600, "2026-05-31 00:00:00"},
        {1785456000, "2026-07-31 00:00:00"},
        {1788134400, "2026-08-31 00:00:00"},
        {1793404800, "2026-10-31 00:00:00"},
        {1798675200, "2026-12-31 00:00:00"},
        {1801353600, "2027-01-31 00:00:00"}},
       false},
      {"*-*-31 12:00",
       "UTC",
       1769860800 /* 2026-01-31 12:00:00 */,
       {{1774958400, "2026-03-31 12:00:00"}, {1780228800, "2026-05-31 12:00:00"}},
       false},
      {"*-*-30",
       "UTC",
       1801267201 /* 2027-01-30 00:00:01 */,
       {{1806364800, "2027-03-30 00:00:00"}, {1809043200, "2027-04-30 00:00:00"}},
       false},
      {"*-*-* *:*:0/20",
       "UTC",
       1777978790 /* 2026-05-05 10:59:50 */,
       {{1777978800, "2026-05-05 11:00:00"},
        {1777978820, "2026-05-05 11:00:20"},
        {1777978840, "2026-05-05 11:00:40"},
        {1777978860, "2026-05-05 11:01:00"}},
       false},
      {"*-*-* *:*:*",
       "UTC",
       1777978799 /* 2026-05-05 10:59:59 */,
       {{1777978800, "2026-05-05 11:00:00"},
        {1777978801, "2026-05-05 11:00:01"},
        {1777978802, "2026-05-05 11:00:02"}},
       false},
      {"*-*-* 23:59:59",
       "UTC",
       1798761598 /* 2026-12-31 23:59:58 */,
       {{1798761599, "2026-12-31 23:59:59"},
        {1798847999, "2027-01-01 23:59:59"},
        {1798934399, "2027-01-02 23:59:59"}},
       false},
      {"8..18/2:00",
       "UTC",
       1778000400 /* 2026-05-05 17:00:00 */,
       {{1778004000, "2026-05-05 18:00:00"},
        {1778054400, "2026-05-06 08:00:00"},
        {1778061600, "2026-05-06 10:00:00"},
        {1778068800, "2026-05-06 12:00:00"}},
       false},
      {"8..17:00",
       "UTC",
       1778002200 /* 2026-05-05 17:30:00 */,
       {{1778054400, "2026-05-06 08:00:00"}, {1778058000, "2026-05-06 09:00:00"}},
       false},
      {"0/6:0/30",
       "UTC",
       1778005800 /* 2026-05-05 18:30:00 */,
       {{1778025600, "2026-05-06 00:00:00"},
        {1778027400, "2026-05-06 00:30:00"},
        {1778047200, "2026-05-06 06:00:00"},
        {1778049000, "2026-05-06 06:30:00"}},
       false},
      {"10:05:30",
       "UTC",
       1777975530 /* 2026-05-05 10:05:30 */,
       {{1778061930, "2026-05-06 10:05:30"}, {1778148330, "2026-05-07 10:05:30"}},
       false},
      {"*-*-1/10",
       "UTC",
       1769299200 /* 2026-01-25 00:00:00 */,
       {{1769817600, "2026-01-31 00:00:00"},
        {1769904000, "2026-02-01 00:00:00"},
        {1770768000, "2026-02-11 00:00:00"},
        {1771632000, "2026-02-21 00:00:00"},
        {1772323200, "2026-03-01 00:00:00"}},
       false},
      {"*-*-1,15 06:00",
       "UTC",
       1771135200 /* 2026-02-15 06:00:00 */,
       {{1772344800, "2026-03-01 06:00:00"},
        {1773554400, "2026-03-15 06:00:00"},
        {1775023200, "2026-04-01 06:00:00"}},
       false},
      {"*-*/2-1",
       "UTC",
       1781481600 /* 2026-06-15 00:00:00 */,
       {{1782864000, "2026-07-01 00:00:00"},
        {1788220800, "2026-09-01 00:00:00"},
        {1793491200, "2026-11-01 00:00:00"},
        {1798761600, "2027-01-01 00:00:00"}},
       false},
      {"2027..2029-06-15 12:00",
       "UTC",
       1795219200 /* 2026-11-21 00:00:00 */,
       {{1813060800, "2027-06-15 12:00:00"},
        {1844683200, "2028-06-15 12:00:00"},
        {1876219200, "2029-06-15 12:00:00"}},
       true},
      {"fri *-*-13",
       "UTC",
       1767225600 /* 2026-01-01 00:00:00 */,
       {{1770940800, "2026-02-13 00:00:00"},
        {1773360000, "2026-03-13 00:00:00"},
        {1794528000, "2026-11-13 00:00:00"},
        {1818115200, "2027-08-13 00:00:00"}},
       false},
      {"12-25",
       "UTC",
       1798156800 /* 2026-12-25 00:00:00 */,
       {{1829692800, "2027-12-25 00:00:00"}, {1861315200, "2028-12-25 00:00:00"}},
       false},
      {"*-02-30", "UTC", 1767225600 /* 2026-01-01 00:00:00 */, {}, true},
      {"9999-12-31 23:59:59",
       "UTC",
       1767225600 /* 2026-01-01 00:00:00 */,
       {{253402300799, "9999-12-31 23:59:59"}},
       true},
      {"daily",
       "UTC",
       -100 /* 1969-12-31 23:58:20 */,
       {{0, "1970-01-01 00:00:00"}, {86400, "1970-01-02 00:00:00"}},
       false},
      {"22:30",
       "+02:00",
       1780272000 /* 2026-06-01 00:00:00 */,
       {{1780345800, "2026-06-01 20:30:00"}, {1780432200, "2026-06-02 20:30:00"}},
       false},
      {"daily",
       "-05:00",
       1767225600 /* 2026-01-01 00:00:00 */,
       {{1767243600, "2026-01-01 05:00:00"}, {1767330000, "2026-01-02 05:00:00"}},
       false},
      {"hourly",
       "+05:30",
       1767225600 /* 2026-01-01 00:00:00 */,
       {{1767227400, "2026-01-01 00:30:00"}, {1767231000, "2026-01-01 01:30:00"}},
       false},
      {"monthly",
       "+14:00",
       1772272799 /* 2026-02-28 09:59:59 */,
       {{1772272800, "2026-02-28 10:00:00"}, {1774951200, "2026-03-31 10:00:00"}},
       false},
      {"mon 00:00",
       "-10:00",
       1795424400 /* 2026-11-23 09:00:00 */,
       {{1795428000, "2026-11-23 10:00:00"}, {1796032800, "2026-11-30 10:00:00"}},
       false},
      {"mon *-02-29 06:00",
       "UTC",
       1767225600 /* 2026-01-01 00:00:00 */,
       {{2340338400, "2044-02-29 06:00:00"}, {3223951200, "2072-02-29 06:00:00"}},
       false},
  };
  return cases;
}

std::string Utc(int64_t t) {
  const auto tt = static_cast<time_t>(t);
  struct tm tm {};
  gmtime_r(&tt, &tm);
  char buf[64];
  strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %a", &tm);
  return buf;
}

TEST(CalendarEventTest, TableOfNextRuns) {
  ASSERT_GE(Cases().size(), 25u);
  for (const Case& c : Cases()) {
    SCOPED_TRACE(std::string("expr \"") + c.expr + "\" tz " + c.tz + " from " + Utc(c.from));
    Result<CalendarEvent> ev = CalendarEvent::Parse(c.expr);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    Result<TimeZone> tz = TimeZone::Parse(c.tz);
    ASSERT_TRUE(tz.ok()) << tz.status().ToString();

    // Ask for more than listed: an exhausted event must stop short.
    const int ask = static_cast<int>(c.runs.size()) + (c.exhausted ? 3 : 0);
    const std::vector<int64_t> got = NextRuns(*ev, c.from, ask, *tz);
    ASSERT_EQ(got.size(), c.runs.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i], c.runs[i].unix_seconds)
          << "run " << i << ": got " << Utc(got[i]) << ", want " << c.runs[i].utc;
    }
    // Next() agrees with NextRuns() step by step, and is strictly after.
    int64_t after = c.from;
    for (const ExpectedRun& r : c.runs) {
      const std::optional<int64_t> next = ev->Next(after, *tz);
      ASSERT_TRUE(next.has_value());
      EXPECT_GT(*next, after);
      EXPECT_EQ(*next, r.unix_seconds);
      // One second earlier still finds the same run (it is the first).
      EXPECT_EQ(ev->Next(r.unix_seconds - 1, *tz), r.unix_seconds);
      after = *next;
    }
    if (c.exhausted) {
      EXPECT_FALSE(ev->Next(after, *tz).has_value());
    }
  }
}

// Independent check: a predicate written by hand over libc's gmtime_r, tried
// at every minute (or second) of a window, must yield exactly NextRuns().
struct BruteCase {
  const char* expr;
  int64_t from;
  int64_t to;
  int64_t step;  // 60 when every match has second 0
  std::function<bool(const struct tm&)> matches;
};

TEST(CalendarEventTest, AgreesWithBruteForce) {
  // 2027-12-01 00:00:00 .. 2029-03-01 00:00:00 UTC: a leap February, a year end.
  const int64_t from = 1827532800;
  const int64_t to = 1866931200;
  auto wday = [](const struct tm& t) { return (t.tm_wday + 6) % 7; };  // 0 = Monday
  const std::vector<BruteCase> cases = {
      {"mon..fri 22:30", from, to, 60,
       [&](const struct tm& t) { return wday(t) <= 4 && t.tm_hour == 22 && t.tm_min == 30; }},
      {"sat,sun *-*-* 8..18/2:15", from, to, 60,
       [&](const struct tm& t) {
         return wday(t) >= 5 && t.tm_hour >= 8 && t.tm_hour <= 18 && t.tm_hour % 2 == 0 &&
                t.tm_min == 15;
       }},
      {"mon *-*-1..7 03:00", from, to, 60,
       [&](const struct tm& t) {
         return wday(t) == 0 && t.tm_mday <= 7 && t.tm_hour == 3 && t.tm_min == 0;
       }},
      {"*-*-29,31 12:00", from, to, 60,
       [](const struct tm& t) {
         return (t.tm_mday == 29 || t.tm_mday == 31) && t.tm_hour == 12 && t.tm_min == 0;
       }},
      {"*-02/3-1/9 0/7:0/20", from, to, 60,
       [](const struct tm& t) {
         const int month = t.tm_mon + 1;
         return month >= 2 && (month - 2) % 3 == 0 && (t.tm_mday - 1) % 9 == 0 &&
                t.tm_hour % 7 == 0 && t.tm_min % 20 == 0;
       }},
      {"fri *-*-13 13:13", from, to, 60,
       [&](const struct tm& t) {
         return wday(t) == 4 && t.tm_mday == 13 && t.tm_hour == 13 && t.tm_min == 13;
       }},
      {"*:0/15", from, from + int64_t{3} * 86400, 60,
       [](const struct tm& t) { return t.tm_min % 15 == 0; }},
      {"*-*-* 23:59:0/7", from, from + int64_t{3} * 86400, 1,
       [](const struct tm& t) { return t.tm_hour == 23 && t.tm_min == 59 && t.tm_sec % 7 == 0; }},
  };
  for (const BruteCase& c : cases) {
    SCOPED_TRACE(c.expr);
    std::vector<int64_t> want;
    for (int64_t t = c.from + c.step; t <= c.to; t += c.step) {
      const auto tt = static_cast<time_t>(t);
      struct tm tm {};
      gmtime_r(&tt, &tm);
      if (c.matches(tm)) want.push_back(t);
    }
    ASSERT_FALSE(want.empty());
    Result<CalendarEvent> ev = CalendarEvent::Parse(c.expr);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    std::vector<int64_t> got;
    for (int64_t t : NextRuns(*ev, c.from, static_cast<int>(want.size()) + 1, TimeZone::Utc())) {
      if (t <= c.to) got.push_back(t);
    }
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << "got " << Utc(got[i]) << ", want " << Utc(want[i]);
    }
  }
}

struct BadCase {
  const char* expr;
  const char* message_part;  // the message must contain this (token named)
};

TEST(CalendarEventTest, InvalidExpressions) {
  const std::vector<BadCase> cases = {
      {"", "empty expression"},
      {"   \t ", "empty expression"},
      {"mon..xyz", "unknown weekday \"xyz\""},
      {"fri..mon 02:00", "reversed weekday range \"fri..mon\""},
      {"mon-fri", "unknown weekday or shorthand \"mon-fri\" (ranges are written with '..'"},
      {"mon/2", "weekdays take no repetition ('/') in \"mon/2\""},
      {"daily 03:00", "shorthand \"daily\" must be the whole expression"},
      {"fortnightly", "unknown weekday or shorthand \"fortnightly\""},
      {"25:00", "hour 25 is out of range 0..23 in \"25:00\""},
      {"12:60", "minute 60 is out of range 0..59 in \"12:60\""},
      {"12:00:61", "second 61 is out of range 0..59 in \"12:00:61\""},
      {"*-13-01", "month 13 is out of range 1..12 in \"*-13-01\""},
      {"*-*-32", "day 32 is out of range 1..31 in \"*-*-32\""},
      {"*-*-0", "day 0 is out of range 1..31 in \"*-*-0\""},
      {"1969-01-01", "year 1969 is out of range 1970..9999 in \"1969-01-01\""},
      {"*:0/0", "repetition must be at least 1, got \"0\" in \"*:0/0\""},
      {"*:5..1", "reversed minute range \"5..1\" in \"*:5..1\""},
      {"*:1//2", "more than one '/'"},
      {"*:1,,2", "empty list item in the minute \"1,,2\" of \"*:1,,2\""},
      {"*:ab", "expected a number for the minute, got \"ab\" in \"*:ab\""},
      {"12", "cannot tell what \"12\" is"},
      {"*", "cannot tell what \"*\" is"},
      {"12:00:00:00", "time \"12:00:00:00\" is not HH:MM or HH:MM:SS"},
      {"2026-12-01-02", "date \"2026-12-01-02\" is not YYYY-MM-DD or MM-DD"},
      {"2026-12-01T03:00", "date and time must be separated by a space in \"2026-12-01T03:00\""},
      {"03:00 2026-12-01", "date \"2026-12-01\" must come before the time"},
      {"03:00 mon", "weekdays \"mon\" must come before the time"},
      {"mon tue", "second weekdays \"tue\""},
      {"10:00 11:00", "second time \"11:00\""},
      {"*:99999999999", "number \"99999999999\" too large"},
      {"*-*-", "empty day in \"*-*-\""},
      {":00", "empty hour in \":00\""},
      {"mon..", "missing weekday in \"mon..\""},
      {"*-1..-3", "missing number for the month in \"*-1..-3\""},
      {"12:00 UTC", "time zone \"UTC\" in the expression is not supported"},
      {"mon 03:00 Europe/Berlin", "time zone \"Europe/Berlin\" in the expression"},
      {"mon\x01", "unknown weekday or shorthand \"mon\\x01\""},
  };
  ASSERT_GE(cases.size(), 12u);
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.expr);
    Result<CalendarEvent> ev = CalendarEvent::Parse(c.expr);
    ASSERT_FALSE(ev.ok()) << "parsed as " << ev->ToString();
    EXPECT_TRUE(ev.status().IsInvalidArgument()) << ev.status().ToString();
    EXPECT_NE(ev.status().message().find(c.message_part), std::string::npos)
        << ev.status().message();
    // The whole expression is named too (except when it is too long).
    EXPECT_NE(ev.status().message().find("invalid calendar event"), std::string::npos);
  }
}

TEST(CalendarEventTest, TooLongExpressionIsRefused) {
  std::string text = "*:0";
  while (text.size() <= CalendarEvent::kMaxExpressionLength) text += ",1";
  Result<CalendarEvent> ev = CalendarEvent::Parse(text);
  ASSERT_FALSE(ev.ok());
  EXPECT_TRUE(ev.status().IsInvalidArgument());
  // Just under the limit is fine.
  text.resize(CalendarEvent::kMaxExpressionLength);
  if (text.back() == ',') text.pop_back();
  EXPECT_TRUE(CalendarEvent::Parse(text).ok());
}

TEST(CalendarEventTest, ToStringNormalises) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"minutely", "*-*-* *:*:00"},
      {"hourly", "*-*-* *:00:00"},
      {"daily", "*-*-* 00:00:00"},
      {"weekly", "Mon *-*-* 00:00:00"},
      {"monthly", "*-*-01 00:00:00"},
      {"yearly", "*-01-01 00:00:00"},
      {"annually", "*-01-01 00:00:00"},
      {"quarterly", "*-01,04,07,10-01 00:00:00"},
      {"semiannually", "*-01,07-01 00:00:00"},
      {"  Daily ", "*-*-* 00:00:00"},
      {"sat 02:00", "Sat *-*-* 02:00:00"},
      {"mon..fri 22:30", "Mon..Fri *-*-* 22:30:00"},
      {"sun,sat,SAT", "Sat,Sun *-*-* 00:00:00"},
      {"mon..sun 1:2:3", "*-*-* 01:02:03"},
      {"*:0/15", "*-*-* *:00/15:00"},
      {"*:*/15", "*-*-* *:00/15:00"},
      {"8..18/2:00", "*-*-* 08..18/2:00:00"},
      {"8..17:00", "*-*-* 08..17:00:00"},
      {"2026-12-01 03:00", "2026-12-01 03:00:00"},
      {"mon *-*-1..7 03:00", "Mon *-*-01..07 03:00:00"},
      {"12-25", "*-12-25 00:00:00"},
      {"*-*-15,1,15", "*-*-01,15 00:00:00"},
      {"*-*-5/100", "*-*-05 00:00:00"},
      {"*-*-1..31", "*-*-* 00:00:00"},
      {"*-*-* *:*:*", "*-*-* *:*:*"},
      {"2024/4-02-29", "2024/4-02-29 00:00:00"},
  };
  for (const auto& [in, want] : cases) {
    SCOPED_TRACE(in);
    Result<CalendarEvent> ev = CalendarEvent::Parse(in);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    EXPECT_EQ(ev->ToString(), want);
    // The normal form parses back to the same event and the same text.
    Result<CalendarEvent> again = CalendarEvent::Parse(ev->ToString());
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_TRUE(*again == *ev);
    EXPECT_EQ(again->ToString(), want);
  }
}

TEST(CalendarEventTest, EqualityComparesMatchingValues) {
  auto parse = [](const char* s) {
    Result<CalendarEvent> ev = CalendarEvent::Parse(s);
    EXPECT_TRUE(ev.ok()) << s << ": " << ev.status().ToString();
    return std::move(ev).value();
  };
  EXPECT_TRUE(parse("daily") == parse("00:00"));
  EXPECT_TRUE(parse("daily") == parse("*-*-* 00:00:00"));
  EXPECT_TRUE(parse("mon..fri") == parse("mon,tue,wed,thu,fri"));
  EXPECT_TRUE(parse("*:0/15") == parse("*:0,15,30,45"));
  EXPECT_TRUE(parse("sat,sun") == parse("Saturday,SUNDAY"));
  EXPECT_FALSE(parse("daily") == parse("weekly"));
  EXPECT_FALSE(parse("*:0/15") == parse("*:0/20"));
  EXPECT_FALSE(parse("12:00") == parse("12:00:01"));
}

TEST(CalendarEventTest, WeekdayNamesShortAndLong) {
  const char* names[][2] = {{"mon", "monday"},   {"tue", "tuesday"}, {"wed", "wednesday"},
                            {"thu", "thursday"}, {"fri", "friday"},  {"sat", "saturday"},
                            {"sun", "sunday"}};
  // 2026-11-23 is a Monday (date -u -d 2026-11-23 +%a); from the Sunday before.
  const int64_t sunday = 1795305600;  // 2026-11-22 00:00:00
  for (int i = 0; i < 7; ++i) {
    for (const char* name : names[i]) {
      SCOPED_TRACE(name);
      Result<CalendarEvent> ev = CalendarEvent::Parse(name);
      ASSERT_TRUE(ev.ok()) << ev.status().ToString();
      // Monday is the next day; Sunday is a week later.
      const int64_t want = sunday + int64_t{86400} * (i == 6 ? 7 : i + 1);
      EXPECT_EQ(ev->Next(sunday, TimeZone::Utc()), want);
    }
  }
}

TEST(CalendarEventTest, ExtremeInstants) {
  Result<CalendarEvent> ev = CalendarEvent::Parse("daily");
  ASSERT_TRUE(ev.ok());
  const TimeZone utc = TimeZone::Utc();
  const TimeZone east = TimeZone::FixedOffset(23 * 3600 + 59 * 60).value();
  const TimeZone west = TimeZone::FixedOffset(-(23 * 3600 + 59 * 60)).value();
  for (const TimeZone& tz : {utc, east, west}) {
    SCOPED_TRACE(tz.name());
    EXPECT_FALSE(ev->Next(std::numeric_limits<int64_t>::max(), tz).has_value());
    // Long before 1970 the search starts at 1970-01-01 00:00 local time.
    EXPECT_EQ(ev->Next(std::numeric_limits<int64_t>::min(), tz), -tz.OffsetAt(0));
    EXPECT_EQ(ev->Next(-1'000'000'000'000, tz), -tz.OffsetAt(0));
  }
  // 10000-01-01 00:00:00 and after: nothing (date -u -d 9999-12-31 +%s = 253402214400).
  EXPECT_EQ(ev->Next(253402214400 - 1, utc), 253402214400);
  EXPECT_FALSE(ev->Next(253402214400, utc).has_value());
  EXPECT_FALSE(ev->Next(253402300800, utc).has_value());
}

TEST(CalendarEventTest, NeverFiringEventsTerminate) {
  // Impossible dates with year "*": the search walks to year 9999 and stops.
  for (const char* expr : {"*-02-30", "*-04-31", "*-02,04,06,09,11-31 *:*:*", "sat 2026-11-22"}) {
    SCOPED_TRACE(expr);
    Result<CalendarEvent> ev = CalendarEvent::Parse(expr);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    EXPECT_FALSE(ev->Next(0, TimeZone::Utc()).has_value());
    EXPECT_TRUE(NextRuns(*ev, 0, 5, TimeZone::Utc()).empty());
  }
}

TEST(CalendarEventTest, NextRunsCount) {
  Result<CalendarEvent> ev = CalendarEvent::Parse("hourly");
  ASSERT_TRUE(ev.ok());
  EXPECT_TRUE(NextRuns(*ev, 0, 0, TimeZone::Utc()).empty());
  EXPECT_TRUE(NextRuns(*ev, 0, -3, TimeZone::Utc()).empty());
  const std::vector<int64_t> runs = NextRuns(*ev, 0, 1000, TimeZone::Utc());
  ASSERT_EQ(runs.size(), 1000u);
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i], static_cast<int64_t>(i + 1) * 3600);
  }
}

// Berlin's rule since 1996, as a POSIX TZ string so the test needs no zone
// files. Expected values: `date -u -d 'TZ="Europe/Berlin" 2026-03-30 02:30' +%s`
// and `TZ=Europe/Berlin date -d '2026-10-25 01:00:00 UTC'`.
TEST(CalendarEventTest, DaylightSavingTime) {
  Result<TimeZone> berlin = TimeZone::FromPosixRule("CET-1CEST,M3.5.0,M10.5.0/3");
  ASSERT_TRUE(berlin.ok()) << berlin.status().ToString();
  struct DstCase {
    const char* expr;
    int64_t from;
    std::vector<int64_t> runs;
  };
  const std::vector<DstCase> cases = {
      // Spring forward on 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
      // 02:30 does not exist that day: it fires at the jump.
      {"02:30",
       1774656000 /* 2026-03-28 00:00 UTC */,
       {1774661400 /* 03-28 01:30 UTC */, 1774746000 /* 03-29 01:00 UTC, the jump */,
        1774830600 /* 03-30 00:30 UTC */}},
      // 02:00 and 02:30 are skipped and 03:00 CEST is the jump itself: one run.
      {"*:0/30",
       1774742400 /* 2026-03-29 00:00 UTC = 01:00 CET */,
       {1774744200 /* 01:30 CET */, 1774746000 /* jump = 03:00 CEST */,
        1774747800 /* 03:30 CEST */}},
      // Fall back on 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET.
      // 02:30 happens twice and fires the first time only.
      {"02:30",
       1792800000 /* 2026-10-24 00:00 UTC */,
       {1792801800 /* 10-24 00:30 UTC */, 1792888200 /* 10-25 00:30 UTC = 02:30 CEST */,
        1792978200 /* 10-26 01:30 UTC */}},
      {"*:0/30",
       1792886400 /* 2026-10-25 00:00 UTC = 02:00 CEST */,
       {1792888200 /* 02:30 CEST */, 1792893600 /* 03:00 CET = 02:00 UTC */,
        1792895400 /* 03:30 CET */}},
      // From inside the repeated hour (02:10 CET, second time round).
      {"*:0/15",
       1792890600 /* 2026-10-25 01:10 UTC */,
       {1792893600 /* 03:00 CET */, 1792894500 /* 03:15 CET */}},
      {"02:15", 1792890600 /* 2026-10-25 01:10 UTC */, {1792977300 /* 10-26 01:15 UTC */}},
      // Every second: silent for the repeated hour, from the last second of
      // 02:59:59 CEST (00:59:59 UTC) on to 03:00:00 CET.
      {"*:*:*",
       1792889999 /* 2026-10-25 00:59:59 UTC */,
       {1792893600 /* 03:00:00 CET */, 1792893601}},
      {"*:*:*", 1792890600 /* 2026-10-25 01:10 UTC */, {1792893600, 1792893601}},
  };
  for (const DstCase& c : cases) {
    SCOPED_TRACE(std::string(c.expr) + " from " + Utc(c.from));
    Result<CalendarEvent> ev = CalendarEvent::Parse(c.expr);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    const std::vector<int64_t> got =
        NextRuns(*ev, c.from, static_cast<int>(c.runs.size()), *berlin);
    ASSERT_EQ(got.size(), c.runs.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i], c.runs[i])
          << "run " << i << ": got " << Utc(got[i]) << ", want " << Utc(c.runs[i]);
    }
  }
}

}  // namespace
}  // namespace cairn::server
