// Calendar events (server/calendar_event.h): job schedules from the API and
// the command line. Invariants: ToString() parses back to an equal event
// with the same text, and Next() returns a time strictly after its argument
// (in UTC and in a zone with DST) without hanging.
#include <string>

#include "server/calendar_event.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using cairn::server::CalendarEvent;
using cairn::storage::TimeZone;

int FuzzCalendarEvent(const uint8_t* data, size_t size) {
  auto ev = CalendarEvent::Parse(AsText(data, size));
  if (!ev.ok()) return 0;
  const std::string text = ev->ToString();
  auto again = CalendarEvent::Parse(text);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *ev);
  FUZZ_CHECK(again->ToString() == text);
  static const TimeZone kBerlin = *TimeZone::FromPosixRule("CET-1CEST,M3.5.0,M10.5.0/3");
  for (int64_t after : {int64_t{0}, int64_t{1798761599}, int64_t{-1}}) {
    for (const TimeZone& tz : {TimeZone::Utc(), kBerlin}) {
      auto next = ev->Next(after, tz);
      if (next) FUZZ_CHECK(*next > after);
    }
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzCalendarEvent)
