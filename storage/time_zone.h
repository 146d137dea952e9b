#pragma once

// Civil time and time zones: which local hour, day, ISO week, month and year
// an instant falls in. Used for prune periods (storage/prune.h) and is meant
// for job schedules too.
//
// Civil arithmetic is proleptic Gregorian on 64-bit day counts, done here
// (days-from-civil), with no locale and no C library time functions.
//
// A TimeZone is one of:
//   UTC                       "UTC" or "Z"; also what a default-constructed TimeZone is
//   a fixed offset            "+HH:MM", "-HH:MM", "+HH" or "-HH" east of UTC, 00:00..23:59
//   an IANA zone              "Europe/Berlin": the TZif file (RFC 8536, versions 1-4) of
//                             that name under the zoneinfo folder, read once and parsed
//                             here; after its last transition the file's POSIX TZ footer
//                             ("CET-1CEST,M3.5.0,M10.5.0/3") gives the rule
//   a POSIX TZ rule           only through FromPosixRule (tests, and the TZif footer)
// Why not localtime_r with TZ: TZ is process-global state; setting it in a
// multithreaded server races with every other thread's time calls.
// Zone files with leap seconds ("right/...") are rejected: their timestamps
// are not POSIX time.
//
// Offsets are those in force at the instant: in a DST fall-back, the local
// hour that happens twice maps both times to the same civil hour, as
// localtime_r would.
//
// Thread safety: a TimeZone is an immutable value; copies share their data
// and may be used from any number of threads.

#include <compare>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "storage/env.h"
#include "storage/status.h"

namespace cairn::storage {

inline constexpr char kDefaultZoneinfoDir[] = "/usr/share/zoneinfo";

// Days since 1970-01-01 of year-month-day in the proleptic Gregorian
// calendar (negative before 1970). REQUIRES: 1 <= month <= 12, 1 <= day <= 31
// (a day past the month's end counts on into the next month).
int64_t DaysFromCivil(int64_t year, int month, int day);

struct CivilDay {
  int64_t year = 1970;
  int month = 1;  // 1..12
  int day = 1;    // 1..31
  auto operator<=>(const CivilDay&) const = default;
};
CivilDay CivilFromDays(int64_t days);

// 1 = Monday ... 7 = Sunday.
int IsoWeekday(int64_t days);

// ISO 8601 week: weeks run Monday..Sunday and belong to the year that holds
// their Thursday, so 2024-12-30 is 2025-W01 and 2021-01-03 is 2020-W53.
struct IsoWeek {
  int64_t year = 1970;  // the week-numbering year (strftime's %G)
  int week = 1;         // 1..53 (%V)
  auto operator<=>(const IsoWeek&) const = default;
};
IsoWeek IsoWeekFromDays(int64_t days);

// Days in `month` of `year`, 28..31. REQUIRES: 1 <= month <= 12.
int DaysInMonth(int64_t year, int month);

// An instant as wall-clock time in some zone.
struct CivilTime {
  int64_t days = 0;  // local date as days since 1970-01-01
  int64_t year = 1970;
  int month = 1;
  int day = 1;
  int hour = 0;
  int minute = 0;
  int second = 0;
  int32_t utc_offset = 0;  // seconds east of UTC in force at the instant
};

class TimeZone {
 public:
  // UTC.
  TimeZone();

  static TimeZone Utc();

  // A fixed offset east of UTC. InvalidArgument unless |seconds_east| < 86400.
  static Result<TimeZone> FixedOffset(int32_t seconds_east);

  // Parses a zone as named in the configuration (forms above). A name that is
  // neither UTC nor an offset is an IANA name: components of [A-Za-z0-9_+-]
  // separated by '/', at most 128 bytes, so it can never leave
  // `zoneinfo_dir`; its file is read through `env` (at most 1 MiB).
  // InvalidArgument for a malformed name or a file that is not a valid TZif
  // file; NotFound when no such zone file exists; IOError from `env`.
  static Result<TimeZone> Parse(std::string_view spec, Env* env = Env::Default(),
                                const std::string& zoneinfo_dir = kDefaultZoneinfoDir);

  // Parses TZif bytes (RFC 8536). `name` is what name() returns.
  // InvalidArgument when `data` is not a valid TZif file (never crashes).
  static Result<TimeZone> FromTzif(std::string name, std::string_view data);

  // A POSIX TZ rule such as "EST5EDT,M3.2.0,M11.1.0" or "<+0530>-5:30",
  // with RFC 8536's extensions (rule times -167..167 hours). A rule that names
  // a DST zone must give the dates when it starts and ends.
  // InvalidArgument when malformed.
  static Result<TimeZone> FromPosixRule(std::string_view rule);

  // "UTC", "+02:00", "Europe/Berlin", or the POSIX rule as given.
  const std::string& name() const;

  // Seconds east of UTC in force at `unix_seconds`.
  int32_t OffsetAt(int64_t unix_seconds) const;

  // Wall-clock time at `unix_seconds`. Instants so close to the int64 limits
  // that adding the offset would overflow are clamped (no UB).
  CivilTime ToCivil(int64_t unix_seconds) const;

  struct Data;  // defined in time_zone.cc

 private:
  explicit TimeZone(std::shared_ptr<const Data> data) : data_(std::move(data)) {}

  std::shared_ptr<const Data> data_;  // never null
};

}  // namespace cairn::storage
