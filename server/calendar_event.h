#pragma once

// Calendar events: when a scheduled job (verify, prune, gc) is due.
//
// The syntax is a subset of systemd.time(7) "CALENDAR EVENTS", as Proxmox
// Backup Server uses it; the calendar-event section of the server docs
// (written as .format-parts/calendar.md) is the exact grammar. Examples: "daily", "hourly", "sat
// 02:00", "mon..fri 22:30", "*:0/15", "2026-12-01 03:00", "mon *-*-1..7 03:00".
//
// An event is the set of wall-clock times whose weekday, year, month, day,
// hour, minute and second all match its fields. Next() finds the first such
// time after a given instant, read in a storage::TimeZone (UTC unless the
// caller says otherwise). With a fixed offset every wall-clock time exists
// exactly once. In a zone with daylight saving time (IANA name or POSIX rule):
//   - a matching wall-clock time that is skipped (spring forward) fires at
//     the instant of the jump, once however many matching times it skipped;
//   - a matching wall-clock time that happens twice (fall back) fires at its
//     first occurrence only.
// This assumes a zone changes its offset at most once in any two days, true
// of every real zone.
//
// Pure logic: no clock, no I/O, no allocation beyond the event's own fields.
// Thread safety: CalendarEvent and TimeZone are immutable values after
// construction; const methods may be called from any number of threads.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/status.h"
#include "storage/time_zone.h"

namespace cairn::server {

using storage::Result;
using storage::Status;
using storage::TimeZone;

class CalendarEvent {
 public:
  // Years (of the wall clock) an event can match; Next() never returns a
  // time whose local year is outside them.
  static constexpr int kMinYear = 1970;
  static constexpr int kMaxYear = 9999;
  // Longer expressions are refused before parsing (hostile-input bound).
  static constexpr size_t kMaxExpressionLength = 1024;

  // Parses an expression. InvalidArgument with a message that quotes the
  // offending token (and the expression) when it is not valid. A valid
  // expression may still never fire (e.g. "*-02-30", or a date in the past):
  // Next() then returns nullopt.
  static Result<CalendarEvent> Parse(std::string_view text);

  // The first matching time strictly after `after_unix_seconds`, as Unix
  // seconds, with the event's wall-clock fields read in `tz` (DST rules in
  // the file comment). nullopt when no matching wall-clock time exists after
  // it up to the end of kMaxYear. Works field by field (next matching day,
  // then hour, minute, second), never second by second; the worst case, an
  // impossible date with year "*" such as "*-02-30", walks 8030 years of one
  // month each, about half a millisecond in an optimised build.
  std::optional<int64_t> Next(int64_t after_unix_seconds, const TimeZone& tz) const;

  // Normalised form, systemd style: "[Weekdays ]YYYY-MM-DD HH:MM:SS" with
  // "*" for a field that matches everything, two digits per field (four for
  // the year), items of a field sorted, duplicates removed, weekdays as
  // "Mon".."Sun". Parse(ToString()) gives an equal event. Shorthands expand:
  // "daily" -> "*-*-* 00:00:00", "weekly" -> "Mon *-*-* 00:00:00".
  std::string ToString() const;

  // Same set of values in every field (so the same times match).
  bool operator==(const CalendarEvent& other) const;

  // One item of a field: the values start, start+step, ... up to end.
  // Public so the .cc's helpers can use it; not part of the contract.
  struct Item {
    int start = 0;
    int end = 0;
    int step = 1;
  };
  // One field (weekday, year, month, day, hour, minute or second).
  struct Field {
    int lo = 0;               // smallest value the field can hold
    int hi = 0;               // largest value the field can hold
    std::vector<Item> items;  // never empty in a parsed event

    bool Contains(int v) const;
    // The smallest member >= v, nullopt when none.
    std::optional<int> NextAtOrAfter(int v) const;
    bool IsAll() const;
  };

 private:
  CalendarEvent();

  // The first matching time of day at or after h:m:s, as seconds since
  // midnight; nullopt when the day has none left.
  std::optional<int> FirstTimeOfDay(int h, int m, int s) const;
  // The first matching wall-clock time at or after `local` (seconds since
  // 1970-01-01 00:00:00 of the wall clock); nullopt after kMaxYear.
  std::optional<int64_t> NextLocal(int64_t local) const;

  Field weekdays_;  // 0 = Monday .. 6 = Sunday
  Field years_;
  Field months_;
  Field days_;
  Field hours_;
  Field minutes_;
  Field seconds_;
};

// The first `count` runs of `event` strictly after `from` (each one strictly
// after the one before), fewer when the event stops firing; empty when
// count <= 0. Time is linear in `count`: the caller bounds it (a CLI flag).
// For `cairn-server job next "EXPR" [--from TIME] [--count N]`.
std::vector<int64_t> NextRuns(const CalendarEvent& event, int64_t from, int count,
                              const TimeZone& tz);

}  // namespace cairn::server
