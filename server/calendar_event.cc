#include "server/calendar_event.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <tuple>

namespace cairn::server {

namespace {

constexpr int64_t kSecondsPerDay = 86400;

using storage::CivilFromDays;
using storage::DaysFromCivil;
using storage::DaysInMonth;

int64_t FloorDiv(int64_t a, int64_t b) {
  return a / b - ((a % b != 0 && (a < 0) != (b < 0)) ? 1 : 0);
}

// 0 = Monday .. 6 = Sunday; day 0 (1970-01-01) was a Thursday.
int WeekdayFromDays(int64_t days) { return static_cast<int>(((days % 7) + 7 + 3) % 7); }

constexpr std::array<const char*, 7> kShortNames = {"mon", "tue", "wed", "thu",
                                                    "fri", "sat", "sun"};
constexpr std::array<const char*, 7> kLongNames = {"monday", "tuesday",  "wednesday", "thursday",
                                                   "friday", "saturday", "sunday"};
constexpr std::array<const char*, 7> kPrintNames = {"Mon", "Tue", "Wed", "Thu",
                                                    "Fri", "Sat", "Sun"};

// Shorthands and what they stand for (systemd.time(7)).
constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kShorthands = {{
    {"minutely", "*-*-* *:*:00"},
    {"hourly", "*-*-* *:00:00"},
    {"daily", "*-*-* 00:00:00"},
    {"weekly", "mon *-*-* 00:00:00"},
    {"monthly", "*-*-01 00:00:00"},
    {"yearly", "*-01-01 00:00:00"},
    {"annually", "*-01-01 00:00:00"},
    {"quarterly", "*-01,04,07,10-01 00:00:00"},
    {"semiannually", "*-01,07-01 00:00:00"},
}};

char ToLowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ToLowerAscii(c);
  return out;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Input is hostile until parsed: the text quoted in messages (which end up in
// logs, JSON and terminals) never carries control bytes or quotes raw.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// "UTC", "Z" or an IANA name ("Europe/Berlin": letters, '/', a letter).
bool LooksLikeTimeZone(std::string_view token) {
  auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  const std::string lower = LowerAscii(token);
  if (lower == "utc" || lower == "z") return true;
  const size_t slash = token.find('/');
  return slash != std::string_view::npos && slash > 0 && is_letter(token[0]) &&
         slash + 1 < token.size() && is_letter(token[slash + 1]);
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t begin = 0;
  while (true) {
    const size_t pos = s.find(sep, begin);
    if (pos == std::string_view::npos) {
      parts.push_back(s.substr(begin));
      return parts;
    }
    parts.push_back(s.substr(begin, pos - begin));
    begin = pos + 1;
  }
}

// Builds error messages that always name the whole expression and the token.
class Parser {
 public:
  explicit Parser(std::string_view expr) : expr_(expr) {}

  Status Error(const std::string& problem) const {
    return Status::InvalidArgument("invalid calendar event " + Quote(expr_) + ": " + problem);
  }

  // A decimal number of at most 9 digits (no sign).
  Status ParseNumber(std::string_view s, const char* what, std::string_view token, int* out) const {
    if (s.empty()) {
      return Error(std::string("missing number for the ") + what + " in " + Quote(token));
    }
    int64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') {
        return Error(std::string("expected a number for the ") + what + ", got " + Quote(s) +
                     " in " + Quote(token));
      }
      v = v * 10 + (c - '0');
      if (v > 999999999) {
        return Error(std::string("number ") + Quote(s) + " too large in " + Quote(token));
      }
    }
    *out = static_cast<int>(v);
    return Status::OK();
  }

  Status CheckRange(int v, const CalendarEvent::Field& f, const char* what,
                    std::string_view token) const {
    if (v < f.lo || v > f.hi) {
      return Error(std::string(what) + " " + std::to_string(v) + " is out of range " +
                   std::to_string(f.lo) + ".." + std::to_string(f.hi) + " in " + Quote(token));
    }
    return Status::OK();
  }

  // One numeric field: comma list of "*", "N", "N..M", each optionally "/R".
  Status ParseField(std::string_view text, const char* what, std::string_view token,
                    CalendarEvent::Field* f) const {
    if (text.empty()) return Error(std::string("empty ") + what + " in " + Quote(token));
    for (std::string_view item : Split(text, ',')) {
      if (item.empty()) {
        return Error(std::string("empty list item in the ") + what + " " + Quote(text) + " of " +
                     Quote(token));
      }
      std::string_view base = item;
      std::optional<int> step;
      if (const size_t slash = item.find('/'); slash != std::string_view::npos) {
        base = item.substr(0, slash);
        std::string_view rep = item.substr(slash + 1);
        if (rep.find('/') != std::string_view::npos) {
          return Error(std::string("more than one '/' in the ") + what + " " + Quote(item) +
                       " of " + Quote(token));
        }
        int r = 0;
        CAIRN_RETURN_IF_ERROR(ParseNumber(rep, "repetition", token, &r));
        if (r < 1) {
          return Error(std::string("repetition must be at least 1, got ") + Quote(rep) + " in " +
                       Quote(token));
        }
        step = r;
      }
      CalendarEvent::Item it;
      if (base == "*") {
        it.start = f->lo;
        it.end = f->hi;
      } else if (const size_t dots = base.find(".."); dots != std::string_view::npos) {
        CAIRN_RETURN_IF_ERROR(ParseNumber(base.substr(0, dots), what, token, &it.start));
        CAIRN_RETURN_IF_ERROR(ParseNumber(base.substr(dots + 2), what, token, &it.end));
        CAIRN_RETURN_IF_ERROR(CheckRange(it.start, *f, what, token));
        CAIRN_RETURN_IF_ERROR(CheckRange(it.end, *f, what, token));
        if (it.start > it.end) {
          return Error(std::string("reversed ") + what + " range " + Quote(base) + " in " +
                       Quote(token));
        }
      } else {
        CAIRN_RETURN_IF_ERROR(ParseNumber(base, what, token, &it.start));
        CAIRN_RETURN_IF_ERROR(CheckRange(it.start, *f, what, token));
        // "N/R" repeats up to the field's end; a lone "N" is just N.
        it.end = step ? f->hi : it.start;
      }
      it.step = step.value_or(1);
      // One value only: keep it as a plain value so ToString prints "N".
      if (it.end - it.start < it.step) {
        it.end = it.start;
        it.step = 1;
      }
      f->items.push_back(it);
    }
    return Status::OK();
  }

  Status ParseWeekdays(std::string_view token, CalendarEvent::Field* f) const {
    for (std::string_view item : Split(token, ',')) {
      if (item.empty()) return Error("empty list item in the weekdays " + Quote(token));
      if (item.find('/') != std::string_view::npos) {
        return Error("weekdays take no repetition ('/') in " + Quote(token));
      }
      CalendarEvent::Item it;
      if (const size_t dots = item.find(".."); dots != std::string_view::npos) {
        CAIRN_RETURN_IF_ERROR(ParseWeekday(item.substr(0, dots), token, &it.start));
        CAIRN_RETURN_IF_ERROR(ParseWeekday(item.substr(dots + 2), token, &it.end));
        if (it.start > it.end) {
          return Error("reversed weekday range " + Quote(item) + " in " + Quote(token) +
                       " (weeks run mon..sun; write e.g. sat,sun,mon)");
        }
      } else {
        CAIRN_RETURN_IF_ERROR(ParseWeekday(item, token, &it.start));
        it.end = it.start;
      }
      f->items.push_back(it);
    }
    return Status::OK();
  }

 private:
  Status ParseWeekday(std::string_view name, std::string_view token, int* out) const {
    const std::string lower = LowerAscii(name);
    for (size_t i = 0; i < 7; ++i) {
      if (lower == kShortNames[i] || lower == kLongNames[i]) {
        *out = static_cast<int>(i);
        return Status::OK();
      }
    }
    for (const auto& [shorthand, unused] : kShorthands) {
      if (lower == shorthand) {
        return Error("shorthand " + Quote(name) + " must be the whole expression");
      }
    }
    if (name.empty()) return Error("missing weekday in " + Quote(token));
    if (name == token) {
      std::string msg = "unknown weekday or shorthand " + Quote(name);
      if (name.find('-') != std::string_view::npos) {
        msg += " (ranges are written with '..', e.g. mon..fri)";
      } else {
        msg +=
            " (expected mon..sun, their full names, or one of minutely, hourly, daily, weekly, "
            "monthly, yearly, annually, quarterly, semiannually)";
      }
      return Error(msg);
    }
    return Error("unknown weekday " + Quote(name) + " in " + Quote(token) +
                 " (expected mon, tue, wed, thu, fri, sat, sun or their full names)");
  }

  std::string_view expr_;
};

std::string Pad(int v, int width) {
  std::string s = std::to_string(v);
  if (s.size() < static_cast<size_t>(width)) {
    s.insert(0, static_cast<size_t>(width) - s.size(), '0');
  }
  return s;
}

std::vector<CalendarEvent::Item> SortedItems(const CalendarEvent::Field& f) {
  std::vector<CalendarEvent::Item> items = f.items;
  auto key = [](const CalendarEvent::Item& i) { return std::tie(i.start, i.end, i.step); };
  std::sort(items.begin(), items.end(),
            [&](const auto& a, const auto& b) { return key(a) < key(b); });
  items.erase(std::unique(items.begin(), items.end(),
                          [&](const auto& a, const auto& b) { return key(a) == key(b); }),
              items.end());
  return items;
}

std::string FieldToString(const CalendarEvent::Field& f, int width) {
  if (f.IsAll()) return "*";
  std::string out;
  for (const CalendarEvent::Item& it : SortedItems(f)) {
    if (!out.empty()) out += ',';
    out += Pad(it.start, width);
    if (it.start == it.end) continue;
    if (it.step == 1) {
      out += ".." + Pad(it.end, width);
    } else if (it.end == f.hi) {
      // Appended piecewise: GCC 12 -O3 reports a false -Wrestrict on "/" + string.
      out += '/';
      out += std::to_string(it.step);
    } else {
      out += ".." + Pad(it.end, width) + "/" + std::to_string(it.step);
    }
  }
  return out;
}

bool SameValues(const CalendarEvent::Field& a, const CalendarEvent::Field& b) {
  if (a.lo != b.lo || a.hi != b.hi) return false;
  for (int v = a.lo; v <= a.hi; ++v) {
    if (a.Contains(v) != b.Contains(v)) return false;
  }
  return true;
}

}  // namespace

// ---- Field ------------------------------------------------------------------

bool CalendarEvent::Field::Contains(int v) const {
  for (const Item& it : items) {
    if (v >= it.start && v <= it.end && (v - it.start) % it.step == 0) return true;
  }
  return false;
}

std::optional<int> CalendarEvent::Field::NextAtOrAfter(int v) const {
  std::optional<int> best;
  for (const Item& it : items) {
    int candidate = it.start;
    if (v > it.start) {
      // Round up to the next value on this item's step.
      const int k = (v - it.start + it.step - 1) / it.step;
      if (k > (it.end - it.start) / it.step) continue;
      candidate = it.start + k * it.step;
    }
    if (candidate > it.end) continue;
    if (!best || candidate < *best) best = candidate;
  }
  return best;
}

bool CalendarEvent::Field::IsAll() const {
  for (int v = lo; v <= hi; ++v) {
    if (!Contains(v)) return false;
  }
  return true;
}

// ---- CalendarEvent ----------------------------------------------------------

CalendarEvent::CalendarEvent() {
  weekdays_ = Field{0, 6, {}};
  years_ = Field{kMinYear, kMaxYear, {}};
  months_ = Field{1, 12, {}};
  days_ = Field{1, 31, {}};
  hours_ = Field{0, 23, {}};
  minutes_ = Field{0, 59, {}};
  seconds_ = Field{0, 59, {}};
}

Result<CalendarEvent> CalendarEvent::Parse(std::string_view text) {
  Parser p(text);
  if (text.size() > kMaxExpressionLength) {
    return Status::InvalidArgument("invalid calendar event: longer than " +
                                   std::to_string(kMaxExpressionLength) + " bytes");
  }
  std::vector<std::string_view> tokens;
  for (size_t i = 0; i < text.size();) {
    if (IsSpace(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !IsSpace(text[j])) ++j;
    tokens.push_back(text.substr(i, j - i));
    i = j;
  }
  if (tokens.empty()) return p.Error("empty expression");

  if (tokens.size() == 1) {
    const std::string lower = LowerAscii(tokens[0]);
    for (const auto& [shorthand, expansion] : kShorthands) {
      if (lower == shorthand) return Parse(expansion);
    }
  }

  CalendarEvent ev;
  // systemd's order: weekdays, then date, then time; each at most once.
  enum Part { kNone = 0, kWeekdays = 1, kDate = 2, kTime = 3 };
  static constexpr std::array<const char*, 4> kPartNames = {"", "weekdays", "date", "time"};
  Part last = kNone;
  for (std::string_view token : tokens) {
    // systemd allows a zone after the time; here the zone is configured
    // separately, and saying so beats "unknown weekday".
    if (LooksLikeTimeZone(token)) {
      return p.Error("time zone " + Quote(token) +
                     " in the expression is not supported: the zone is configured separately");
    }
    Part part;
    const unsigned char first = static_cast<unsigned char>(token[0]);
    if ((first >= 'a' && first <= 'z') || (first >= 'A' && first <= 'Z')) {
      part = kWeekdays;
    } else if (token.find(':') != std::string_view::npos) {
      if (token.find('-') != std::string_view::npos) {
        return p.Error("date and time must be separated by a space in " + Quote(token));
      }
      part = kTime;
    } else if (token.find('-') != std::string_view::npos) {
      part = kDate;
    } else {
      return p.Error("cannot tell what " + Quote(token) +
                     " is: expected weekdays (mon..fri), a date (YYYY-MM-DD) or a time "
                     "(HH:MM[:SS])");
    }
    if (part == last) {
      return p.Error(std::string("second ") + kPartNames[part] + " " + Quote(token));
    }
    if (part < last) {
      return p.Error(std::string(kPartNames[part]) + " " + Quote(token) + " must come before the " +
                     kPartNames[last] + " (order: weekdays, date, time)");
    }
    last = part;
    switch (part) {
      case kWeekdays:
        CAIRN_RETURN_IF_ERROR(p.ParseWeekdays(token, &ev.weekdays_));
        break;
      case kDate: {
        const std::vector<std::string_view> f = Split(token, '-');
        if (f.size() == 3) {
          CAIRN_RETURN_IF_ERROR(p.ParseField(f[0], "year", token, &ev.years_));
          CAIRN_RETURN_IF_ERROR(p.ParseField(f[1], "month", token, &ev.months_));
          CAIRN_RETURN_IF_ERROR(p.ParseField(f[2], "day", token, &ev.days_));
        } else if (f.size() == 2) {
          CAIRN_RETURN_IF_ERROR(p.ParseField(f[0], "month", token, &ev.months_));
          CAIRN_RETURN_IF_ERROR(p.ParseField(f[1], "day", token, &ev.days_));
        } else {
          return p.Error("date " + Quote(token) + " is not YYYY-MM-DD or MM-DD");
        }
        break;
      }
      case kTime: {
        const std::vector<std::string_view> f = Split(token, ':');
        if (f.size() != 2 && f.size() != 3) {
          return p.Error("time " + Quote(token) + " is not HH:MM or HH:MM:SS");
        }
        CAIRN_RETURN_IF_ERROR(p.ParseField(f[0], "hour", token, &ev.hours_));
        CAIRN_RETURN_IF_ERROR(p.ParseField(f[1], "minute", token, &ev.minutes_));
        if (f.size() == 3) {
          CAIRN_RETURN_IF_ERROR(p.ParseField(f[2], "second", token, &ev.seconds_));
        }
        break;
      }
      case kNone:
        break;
    }
  }
  // Fields not given: any weekday and date; a time defaults to 00:00:00 and a
  // missing second to :00, so "sat" fires once on Saturday, not every second.
  auto fill = [](Field& f, int start, int end) {
    if (f.items.empty()) f.items.push_back(Item{start, end, 1});
  };
  fill(ev.weekdays_, 0, 6);
  fill(ev.years_, kMinYear, kMaxYear);
  fill(ev.months_, 1, 12);
  fill(ev.days_, 1, 31);
  fill(ev.hours_, 0, 0);
  fill(ev.minutes_, 0, 0);
  fill(ev.seconds_, 0, 0);
  return ev;
}

std::optional<int> CalendarEvent::FirstTimeOfDay(int h, int m, int s) const {
  // Every field is non-empty, so only the very first (hour, minute) pair can
  // come up empty; the loops run a handful of times.
  for (std::optional<int> hh = hours_.NextAtOrAfter(h); hh; hh = hours_.NextAtOrAfter(*hh + 1)) {
    const bool first_hour = *hh == h;
    for (std::optional<int> mm = minutes_.NextAtOrAfter(first_hour ? m : 0); mm;
         mm = minutes_.NextAtOrAfter(*mm + 1)) {
      const bool first_minute = first_hour && *mm == m;
      if (std::optional<int> ss = seconds_.NextAtOrAfter(first_minute ? s : 0)) {
        return *hh * 3600 + *mm * 60 + *ss;
      }
    }
  }
  return std::nullopt;
}

std::optional<int64_t> CalendarEvent::NextLocal(int64_t local) const {
  int64_t start_days = FloorDiv(local, kSecondsPerDay);
  int64_t start_sod = local - start_days * kSecondsPerDay;
  storage::CivilDay start = CivilFromDays(start_days);
  if (start.year < kMinYear) {
    start = storage::CivilDay{kMinYear, 1, 1};
    start_sod = 0;
  }
  if (start.year > kMaxYear) return std::nullopt;
  const int h0 = static_cast<int>(start_sod / 3600);
  const int m0 = static_cast<int>(start_sod % 3600 / 60);
  const int s0 = static_cast<int>(start_sod % 60);
  const int y0 = static_cast<int>(start.year);

  // Field by field: the next matching year, month in it, day in it; the
  // start date only limits the first of each. Bounded by the matching
  // (year, month, day) triples up to kMaxYear that fail on weekday or on an
  // impossible day like the 30th of February.
  for (std::optional<int> y = years_.NextAtOrAfter(y0); y; y = years_.NextAtOrAfter(*y + 1)) {
    const bool first_year = *y == y0;
    for (std::optional<int> mo = months_.NextAtOrAfter(first_year ? start.month : 1); mo;
         mo = months_.NextAtOrAfter(*mo + 1)) {
      const bool first_month = first_year && *mo == start.month;
      const int dim = DaysInMonth(*y, *mo);
      for (std::optional<int> d = days_.NextAtOrAfter(first_month ? start.day : 1); d && *d <= dim;
           d = days_.NextAtOrAfter(*d + 1)) {
        const int64_t days = DaysFromCivil(*y, *mo, *d);
        if (!weekdays_.Contains(WeekdayFromDays(days))) continue;
        const bool first_day = first_month && *d == start.day;
        const std::optional<int> tod =
            first_day ? FirstTimeOfDay(h0, m0, s0) : FirstTimeOfDay(0, 0, 0);
        if (tod) return days * kSecondsPerDay + *tod;
      }
    }
  }
  return std::nullopt;
}

namespace {

// The first instant in (lo, hi] whose offset differs from the one at `lo`.
// REQUIRES: tz.OffsetAt(lo) != tz.OffsetAt(hi), and (the two-day rule in the
// header) only one change in between, so the predicate is monotonic.
int64_t FindTransition(const TimeZone& tz, int64_t lo, int64_t hi) {
  const int32_t before = tz.OffsetAt(lo);
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (tz.OffsetAt(mid) == before) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return hi;
}

// The first instant whose wall-clock time is `local`, or, when the clock
// jumps over it, the instant of the jump.
int64_t FirstInstantShowing(int64_t local, const TimeZone& tz) {
  // Offsets are under a day, so the instant is within a day of `local`.
  const int64_t lo = local - kSecondsPerDay;
  const int64_t hi = local + kSecondsPerDay;
  const int32_t o1 = tz.OffsetAt(lo);
  const int32_t o2 = tz.OffsetAt(hi);
  if (o1 == o2) return local - o1;
  const int64_t t = FindTransition(tz, lo, hi);
  if (local - o1 < t) return local - o1;   // shown before the change (first if twice)
  if (local - o2 >= t) return local - o2;  // shown after the change only
  return t;                                // skipped: the clock jumped over it
}

}  // namespace

std::optional<int64_t> CalendarEvent::Next(int64_t after_unix_seconds, const TimeZone& tz) const {
  // Bound the input so the arithmetic below cannot overflow: anything before
  // 1970 (minus a day of offset) starts the search at kMinYear anyway, and
  // anything a day past kMaxYear has no next run.
  const int64_t max_unix = DaysFromCivil(kMaxYear + 1, 1, 1) * kSecondsPerDay + kSecondsPerDay;
  if (after_unix_seconds >= max_unix) return std::nullopt;
  const int64_t after = std::max<int64_t>(after_unix_seconds, -2 * kSecondsPerDay);
  const int64_t t = after + 1;  // strictly after
  int64_t local = t + tz.OffsetAt(t);
  // After a fall back, the wall-clock times shown a second time already fired
  // at their first occurrence, at or before `after`. The loop below would skip
  // them one by one (up to 3600 rounds for "*:*:*"); start past them instead.
  const int32_t offset_day_before = tz.OffsetAt(t - kSecondsPerDay);
  if (offset_day_before > tz.OffsetAt(t)) {
    const int64_t change = FindTransition(tz, t - kSecondsPerDay, t);
    local = std::max(local, change + offset_day_before);
  }
  // Usually one round; more only for a zone that breaks the two-day rule.
  // Each round moves `local` on and NextLocal ends at kMaxYear, so it ends.
  while (true) {
    const std::optional<int64_t> next_local = NextLocal(local);
    if (!next_local) return std::nullopt;
    const int64_t instant = FirstInstantShowing(*next_local, tz);
    if (instant > after) return instant;
    local = *next_local + 1;
  }
}

std::string CalendarEvent::ToString() const {
  std::string out;
  if (!weekdays_.IsAll()) {
    for (const Item& it : SortedItems(weekdays_)) {
      if (!out.empty()) out += ',';
      out += kPrintNames[static_cast<size_t>(it.start)];
      if (it.end != it.start) {
        out += "..";
        out += kPrintNames[static_cast<size_t>(it.end)];
      }
    }
    out += ' ';
  }
  out += FieldToString(years_, 4) + "-" + FieldToString(months_, 2) + "-" +
         FieldToString(days_, 2) + " " + FieldToString(hours_, 2) + ":" +
         FieldToString(minutes_, 2) + ":" + FieldToString(seconds_, 2);
  return out;
}

bool CalendarEvent::operator==(const CalendarEvent& other) const {
  return SameValues(weekdays_, other.weekdays_) && SameValues(years_, other.years_) &&
         SameValues(months_, other.months_) && SameValues(days_, other.days_) &&
         SameValues(hours_, other.hours_) && SameValues(minutes_, other.minutes_) &&
         SameValues(seconds_, other.seconds_);
}

std::vector<int64_t> NextRuns(const CalendarEvent& event, int64_t from, int count,
                              const TimeZone& tz) {
  std::vector<int64_t> runs;
  if (count <= 0) return runs;
  runs.reserve(static_cast<size_t>(std::min(count, 1024)));
  int64_t after = from;
  for (int i = 0; i < count; ++i) {
    const std::optional<int64_t> next = event.Next(after, tz);
    if (!next) break;
    runs.push_back(*next);
    after = *next;
  }
  return runs;
}

}  // namespace cairn::server
