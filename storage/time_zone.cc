#include "storage/time_zone.h"

#include <cstdio>

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

namespace cairn::storage {

namespace {

constexpr int64_t kSecondsPerDay = 86400;
constexpr size_t kMaxZoneNameBytes = 128;
constexpr uint64_t kMaxTzifBytes = 1 << 20;
// RFC 8536 §3.2: utoff SHOULD lie in [-89999, 93599] (just under -25 h .. +26 h).
constexpr int32_t kMinTzifOffset = -89999;
constexpr int32_t kMaxTzifOffset = 93599;
// Beyond ±2^52 s (about 142 million years) POSIX rules are evaluated at the
// clamp: nothing real lives there, and it keeps day*86400 far from overflow.
constexpr int64_t kRuleClamp = int64_t{1} << 52;

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

bool IsLeapYear(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

std::string FormatOffset(int32_t seconds_east) {
  // snprintf rather than string concatenation: GCC 12's -O3 reports a false
  // -Wrestrict on the concatenation, which breaks -Werror Release builds.
  char sign = seconds_east < 0 ? '-' : '+';
  int64_t v = seconds_east < 0 ? -int64_t{seconds_east} : int64_t{seconds_east};
  char buf[32];
  if (v % 60 != 0) {
    std::snprintf(buf, sizeof(buf), "%c%02lld:%02lld:%02lld", sign, static_cast<long long>(v / 3600),
                  static_cast<long long>(v / 60 % 60), static_cast<long long>(v % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%c%02lld:%02lld", sign, static_cast<long long>(v / 3600),
                  static_cast<long long>(v / 60 % 60));
  }
  return buf;
}

// --- POSIX TZ rules (the TZif footer) ---

struct RuleDate {
  enum class Kind { kJulian1, kJulian0, kMonthWeekDay };
  Kind kind = Kind::kMonthWeekDay;
  int n = 0;            // Jn: 1..365 (Feb 29 never counted); n: 0..365
  int month = 0;        // Mm.w.d
  int week = 0;         // 1..5, 5 = last
  int weekday = 0;      // 0 = Sunday
  int32_t time = 7200;  // seconds after local midnight, -167 h .. 167 h
};

struct PosixRule {
  int32_t std_offset = 0;  // seconds east of UTC
  bool has_dst = false;
  int32_t dst_offset = 0;
  RuleDate start;  // when DST starts, in standard time
  RuleDate end;    // when DST ends, in DST time
};

class RuleParser {
 public:
  explicit RuleParser(std::string_view s) : s_(s) {}

  Result<PosixRule> Parse() {
    PosixRule rule;
    CAIRN_RETURN_IF_ERROR(Name());
    std::optional<int32_t> std_west = Offset(24);
    if (!std_west) return Bad("missing or bad standard offset");
    rule.std_offset = -*std_west;
    if (AtEnd()) return rule;
    CAIRN_RETURN_IF_ERROR(Name());
    rule.has_dst = true;
    rule.dst_offset = rule.std_offset + 3600;
    if (!AtEnd() && Peek() != ',') {
      std::optional<int32_t> dst_west = Offset(24);
      if (!dst_west) return Bad("bad DST offset");
      rule.dst_offset = -*dst_west;
    }
    // POSIX leaves the dates of a rule without them to the implementation;
    // TZif footers always carry them, so a rule without them is refused
    // rather than guessed.
    if (!Eat(',')) return Bad("a DST rule must give start and end dates");
    CAIRN_RETURN_IF_ERROR(Date(&rule.start));
    if (!Eat(',')) return Bad("missing end date");
    CAIRN_RETURN_IF_ERROR(Date(&rule.end));
    if (!AtEnd()) return Bad("trailing characters");
    return rule;
  }

 private:
  bool AtEnd() const { return i_ >= s_.size(); }
  char Peek() const { return AtEnd() ? '\0' : s_[i_]; }
  bool Eat(char c) {
    if (Peek() != c || AtEnd()) return false;
    ++i_;
    return true;
  }
  static bool IsAlpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
  static bool IsDigit(char c) { return c >= '0' && c <= '9'; }

  Status Bad(std::string_view why) const {
    return Status::InvalidArgument("POSIX TZ rule \"" + std::string(s_.substr(0, 64)) +
                                   "\": " + std::string(why));
  }

  Status Name() {
    size_t n = 0;
    if (Eat('<')) {
      while (!AtEnd() && Peek() != '>') {
        char c = Peek();
        if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '-') return Bad("bad zone abbreviation");
        ++i_;
        ++n;
      }
      if (!Eat('>')) return Bad("unterminated <abbreviation>");
    } else {
      while (IsAlpha(Peek())) {
        ++i_;
        ++n;
      }
    }
    if (n < 3) return Bad("zone abbreviation shorter than 3 characters");
    return Status::OK();
  }

  // Up to `digits` decimal digits (at least one) into *out.
  bool Number(int digits, int* out) {
    int v = 0;
    int n = 0;
    while (n < digits && IsDigit(Peek())) {
      v = v * 10 + (s_[i_] - '0');
      ++i_;
      ++n;
    }
    if (n == 0) return false;
    *out = v;
    return true;
  }

  // [+-]hh[:mm[:ss]] with hh <= max_hours; the value as written (POSIX
  // offsets count west of UTC).
  std::optional<int32_t> Offset(int max_hours) {
    int sign = 1;
    if (Eat('-')) {
      sign = -1;
    } else {
      Eat('+');
    }
    int h = 0;
    int m = 0;
    int sec = 0;
    if (!Number(3, &h) || h > max_hours) return std::nullopt;
    if (Eat(':')) {
      if (!Number(2, &m) || m > 59) return std::nullopt;
      if (Eat(':')) {
        if (!Number(2, &sec) || sec > 59) return std::nullopt;
      }
    }
    return sign * (h * 3600 + m * 60 + sec);
  }

  Status Date(RuleDate* d) {
    if (Eat('J')) {
      d->kind = RuleDate::Kind::kJulian1;
      if (!Number(3, &d->n) || d->n < 1 || d->n > 365) return Bad("bad Jn date");
    } else if (Eat('M')) {
      d->kind = RuleDate::Kind::kMonthWeekDay;
      if (!Number(2, &d->month) || d->month < 1 || d->month > 12 || !Eat('.') ||
          !Number(1, &d->week) || d->week < 1 || d->week > 5 || !Eat('.') ||
          !Number(1, &d->weekday) || d->weekday > 6) {
        return Bad("bad Mm.w.d date");
      }
    } else {
      d->kind = RuleDate::Kind::kJulian0;
      if (!Number(3, &d->n) || d->n > 365) return Bad("bad day-of-year date");
    }
    d->time = 7200;
    if (Eat('/')) {
      // RFC 8536 §3.3.1 extends POSIX: -167..167 hours.
      std::optional<int32_t> t = Offset(167);
      if (!t) return Bad("bad transition time");
      d->time = *t;
    }
    return Status::OK();
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Local date (days since the epoch) a rule date falls on in `year`.
int64_t RuleDay(const RuleDate& d, int64_t year) {
  int64_t jan1 = DaysFromCivil(year, 1, 1);
  switch (d.kind) {
    case RuleDate::Kind::kJulian1:
      return jan1 + d.n - 1 + ((IsLeapYear(year) && d.n >= 60) ? 1 : 0);
    case RuleDate::Kind::kJulian0:
      return jan1 + d.n;
    case RuleDate::Kind::kMonthWeekDay: {
      int64_t first = DaysFromCivil(year, d.month, 1);
      int first_weekday = IsoWeekday(first) % 7;  // 0 = Sunday
      int64_t day = first + (d.weekday - first_weekday + 7) % 7 + int64_t{7} * (d.week - 1);
      int64_t past_end = first + DaysInMonth(year, d.month);
      while (day >= past_end) day -= 7;  // week 5 means the last one
      return day;
    }
  }
  return jan1;
}

int32_t RuleOffsetAt(const PosixRule& rule, int64_t t) {
  if (!rule.has_dst) return rule.std_offset;
  t = std::clamp(t, -kRuleClamp, kRuleClamp);
  int64_t year = CivilFromDays(FloorDiv(t + rule.std_offset, kSecondsPerDay)).year;
  // Transitions of the neighbouring years too: rule times may run up to a
  // week past midnight, and southern zones start DST late in the year. The
  // latest transition at or before t decides.
  // At equal instants the later year's event wins (DST all year is written
  // as "0/0,J365/25": each end coincides with the next start), and within a
  // year the end wins, as in glibc.
  struct Event {
    int64_t when;
    int64_t year;
    int order;  // 0 start, 1 end
    bool dst;
  };
  std::array<Event, 8> events{};
  size_t k = 0;
  for (int64_t y = year - 2; y <= year + 1; ++y) {
    events[k++] = {RuleDay(rule.start, y) * kSecondsPerDay + rule.start.time - rule.std_offset, y,
                   0, true};
    events[k++] = {RuleDay(rule.end, y) * kSecondsPerDay + rule.end.time - rule.dst_offset, y, 1,
                   false};
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.when != b.when) return a.when < b.when;
    if (a.year != b.year) return a.year < b.year;
    return a.order < b.order;
  });
  bool dst = false;
  for (const Event& e : events) {
    if (e.when > t) break;
    dst = e.dst;
  }
  return dst ? rule.dst_offset : rule.std_offset;
}

// --- TZif (RFC 8536) ---

class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}
  size_t Remaining() const { return data_.size() - pos_; }
  bool Skip(uint64_t n) {
    if (n > Remaining()) return false;
    pos_ += static_cast<size_t>(n);
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (n > Remaining()) return false;
    *out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool U8(uint8_t* out) {
    if (Remaining() < 1) return false;
    *out = static_cast<uint8_t>(data_[pos_++]);
    return true;
  }
  bool U32(uint32_t* out) {
    if (Remaining() < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(data_[pos_++]);
    *out = v;
    return true;
  }
  bool U64(uint64_t* out) {
    if (Remaining() < 8) return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(data_[pos_++]);
    *out = v;
    return true;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

struct TzifHeader {
  uint8_t version = 0;
  uint32_t isutcnt = 0, isstdcnt = 0, leapcnt = 0, timecnt = 0, typecnt = 0, charcnt = 0;

  uint64_t BlockSize(uint64_t time_size) const {
    return uint64_t{timecnt} * time_size + timecnt + uint64_t{typecnt} * 6 + charcnt +
           uint64_t{leapcnt} * (time_size + 4) + isstdcnt + isutcnt;
  }
};

Status TzifError(const std::string& name, std::string_view why) {
  return Status::InvalidArgument("time zone " + name +
                                 ": not a valid TZif file: " + std::string(why));
}

Status ReadTzifHeader(ByteReader* r, const std::string& name, TzifHeader* h) {
  std::string_view magic;
  std::string_view reserved;
  if (!r->Bytes(4, &magic) || magic != "TZif") return TzifError(name, "bad magic");
  if (!r->U8(&h->version)) return TzifError(name, "truncated header");
  // 0 is version 1; later versions share version 2's layout (RFC 8536 §3.1).
  if (h->version != 0 && h->version < '2') return TzifError(name, "bad version");
  if (!r->Bytes(15, &reserved) || !r->U32(&h->isutcnt) || !r->U32(&h->isstdcnt) ||
      !r->U32(&h->leapcnt) || !r->U32(&h->timecnt) || !r->U32(&h->typecnt) ||
      !r->U32(&h->charcnt)) {
    return TzifError(name, "truncated header");
  }
  if (h->typecnt == 0) return TzifError(name, "no local time types");
  if (h->charcnt == 0) return TzifError(name, "no abbreviation characters");
  if (h->isutcnt != 0 && h->isutcnt != h->typecnt) return TzifError(name, "bad isutcnt");
  if (h->isstdcnt != 0 && h->isstdcnt != h->typecnt) return TzifError(name, "bad isstdcnt");
  return Status::OK();
}

}  // namespace

// --- Civil arithmetic (H. Hinnant's days_from_civil / civil_from_days) ---

int64_t DaysFromCivil(int64_t year, int month, int day) {
  const int64_t y = year - (month <= 2 ? 1 : 0);
  const int64_t era = FloorDiv(y, 400);
  const int64_t yoe = y - era * 400;                     // [0, 399]
  const int64_t mp = month > 2 ? month - 3 : month + 9;  // March = 0
  const int64_t doy = (153 * mp + 2) / 5 + day - 1;      // [0, 365]
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

CivilDay CivilFromDays(int64_t days) {
  const int64_t z = days + 719468;
  const int64_t era = FloorDiv(z, 146097);
  const int64_t doe = z - era * 146097;  // [0, 146096]
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  CivilDay out;
  out.day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  out.month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  out.year = yoe + era * 400 + (out.month <= 2 ? 1 : 0);
  return out;
}

int IsoWeekday(int64_t days) {
  // 1970-01-01 was a Thursday.
  return static_cast<int>(((days + 3) % 7 + 7) % 7) + 1;
}

IsoWeek IsoWeekFromDays(int64_t days) {
  // A week belongs to the year of its Thursday.
  const int64_t thursday = days - (IsoWeekday(days) - 1) + 3;
  IsoWeek out;
  out.year = CivilFromDays(thursday).year;
  out.week = static_cast<int>((thursday - DaysFromCivil(out.year, 1, 1)) / 7 + 1);
  return out;
}

int DaysInMonth(int64_t year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month == 2 && IsLeapYear(year)) return 29;
  return kDays[month - 1];
}

// --- TimeZone ---

struct TimeZone::Data {
  std::string name;
  int32_t initial_offset = 0;  // before the first transition; always, without transitions or rule
  std::vector<int64_t> transition_times;  // strictly ascending
  std::vector<int32_t> transition_offsets;
  std::optional<PosixRule> rule;  // after the last transition (or always, without transitions)
};

TimeZone::TimeZone() : TimeZone(Utc()) {}

TimeZone TimeZone::Utc() {
  static const std::shared_ptr<const Data> utc = [] {
    auto d = std::make_shared<Data>();
    d->name = "UTC";
    return std::shared_ptr<const Data>(std::move(d));
  }();
  return TimeZone(utc);
}

Result<TimeZone> TimeZone::FixedOffset(int32_t seconds_east) {
  if (seconds_east <= -kSecondsPerDay || seconds_east >= kSecondsPerDay) {
    return Status::InvalidArgument("time zone offset of " + std::to_string(seconds_east) +
                                   " s is not within a day");
  }
  auto d = std::make_shared<Data>();
  d->name = FormatOffset(seconds_east);
  d->initial_offset = seconds_east;
  return TimeZone(std::move(d));
}

Result<TimeZone> TimeZone::FromPosixRule(std::string_view rule) {
  CAIRN_ASSIGN_OR_RETURN(PosixRule parsed, RuleParser(rule).Parse());
  auto d = std::make_shared<Data>();
  d->name = std::string(rule);
  d->initial_offset = parsed.std_offset;
  d->rule = parsed;
  return TimeZone(std::move(d));
}

Result<TimeZone> TimeZone::FromTzif(std::string name, std::string_view data) {
  ByteReader r(data);
  TzifHeader h;
  CAIRN_RETURN_IF_ERROR(ReadTzifHeader(&r, name, &h));
  uint64_t time_size = 4;
  if (h.version != 0) {
    // Version 2+: skip the 32-bit block; the 64-bit one after it is complete.
    if (!r.Skip(h.BlockSize(4))) return TzifError(name, "truncated version 1 data");
    uint8_t v1 = h.version;
    CAIRN_RETURN_IF_ERROR(ReadTzifHeader(&r, name, &h));
    if (h.version != v1) return TzifError(name, "the two headers disagree on the version");
    time_size = 8;
  }
  if (h.leapcnt != 0) {
    return Status::InvalidArgument("time zone " + name +
                                   ": zones with leap seconds (right/...) are not supported");
  }
  if (h.BlockSize(time_size) > r.Remaining()) return TzifError(name, "truncated data");

  std::vector<int64_t> times(h.timecnt);
  for (int64_t& t : times) {
    if (time_size == 4) {
      uint32_t v = 0;
      (void)r.U32(&v);
      t = static_cast<int32_t>(v);
    } else {
      uint64_t v = 0;
      (void)r.U64(&v);
      t = static_cast<int64_t>(v);
    }
  }
  for (size_t i = 1; i < times.size(); ++i) {
    if (times[i] <= times[i - 1]) return TzifError(name, "transition times not ascending");
  }
  std::vector<uint8_t> type_of(h.timecnt);
  for (uint8_t& idx : type_of) {
    (void)r.U8(&idx);
    if (idx >= h.typecnt) return TzifError(name, "transition names a missing type");
  }
  std::vector<int32_t> type_offset(h.typecnt);
  for (int32_t& off : type_offset) {
    uint32_t utoff = 0;
    uint8_t isdst = 0;
    uint8_t desigidx = 0;
    (void)r.U32(&utoff);
    (void)r.U8(&isdst);
    (void)r.U8(&desigidx);
    off = static_cast<int32_t>(utoff);
    if (off < kMinTzifOffset || off > kMaxTzifOffset) {
      return TzifError(name, "UT offset out of range");
    }
    if (isdst > 1) return TzifError(name, "bad isdst");
    if (desigidx >= h.charcnt) return TzifError(name, "abbreviation index out of range");
  }
  // Abbreviations and the standard/UT indicators only matter to POSIX-rule
  // defaults for files without a footer; Cairn needs offsets only.
  (void)r.Skip(uint64_t{h.charcnt} + h.isstdcnt + h.isutcnt);

  std::optional<PosixRule> rule;
  if (time_size == 8) {
    std::string_view nl;
    if (!r.Bytes(1, &nl) || nl != "\n") return TzifError(name, "missing footer");
    std::string_view rest;
    (void)r.Bytes(r.Remaining(), &rest);
    size_t end = rest.find('\n');
    if (end == std::string_view::npos) return TzifError(name, "unterminated footer");
    if (end + 1 != rest.size()) return TzifError(name, "bytes after the footer");
    std::string_view tz = rest.substr(0, end);
    if (!tz.empty()) {
      Result<PosixRule> parsed = RuleParser(tz).Parse();
      if (!parsed.ok()) return TzifError(name, "bad footer: " + parsed.status().message());
      rule = *parsed;
    }
  } else if (r.Remaining() != 0) {
    return TzifError(name, "bytes after the data");
  }

  auto d = std::make_shared<Data>();
  d->name = std::move(name);
  // RFC 8536 §3.2: type 0 holds before the first transition.
  d->initial_offset = type_offset[0];
  d->transition_times = std::move(times);
  d->transition_offsets.reserve(type_of.size());
  for (uint8_t idx : type_of) d->transition_offsets.push_back(type_offset[idx]);
  d->rule = rule;
  return TimeZone(std::move(d));
}

Result<TimeZone> TimeZone::Parse(std::string_view spec, Env* env, const std::string& zoneinfo_dir) {
  if (spec == "UTC" || spec == "Z") return Utc();
  if (!spec.empty() && (spec[0] == '+' || spec[0] == '-')) {
    auto digit = [&](size_t i) { return spec[i] >= '0' && spec[i] <= '9'; };
    bool shape_ok =
        (spec.size() == 3 && digit(1) && digit(2)) ||
        (spec.size() == 6 && digit(1) && digit(2) && spec[3] == ':' && digit(4) && digit(5));
    if (!shape_ok) {
      return Status::InvalidArgument("time zone offset must be +HH:MM, -HH:MM, +HH or -HH");
    }
    int hours = (spec[1] - '0') * 10 + (spec[2] - '0');
    int minutes = spec.size() == 6 ? (spec[4] - '0') * 10 + (spec[5] - '0') : 0;
    if (hours > 23 || minutes > 59) {
      return Status::InvalidArgument("time zone offset out of range (00:00..23:59)");
    }
    int32_t east = (hours * 3600 + minutes * 60) * (spec[0] == '-' ? -1 : 1);
    return FixedOffset(east);
  }

  // An IANA name. The charset has no '.', so no component can be "." or "..",
  // and no leading '/': the path stays inside zoneinfo_dir.
  bool name_ok = !spec.empty() && spec.size() <= kMaxZoneNameBytes && spec.front() != '/' &&
                 spec.back() != '/' && spec.find("//") == std::string_view::npos;
  for (char c : spec) {
    bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '+' || c == '-' || c == '/';
    if (!allowed) name_ok = false;
  }
  if (!name_ok) {
    return Status::InvalidArgument(
        "time zone must be UTC, an offset like +02:00, or an IANA name like Europe/Berlin");
  }
  std::string name(spec);
  std::string path = JoinPath(zoneinfo_dir, name);
  Result<FileInfo> info = env->Stat(path);
  if (!info.ok()) {
    if (info.status().IsNotFound()) {
      return Status::NotFound("unknown time zone " + name + " (no " + path + ")");
    }
    return info.status().WithContext("time zone " + name);
  }
  if (info->is_dir) {
    return Status::InvalidArgument("time zone " + name + " is a region, not a zone");
  }
  std::string data;
  Status s = env->ReadFile(path, &data, kMaxTzifBytes);
  if (!s.ok()) {
    if (s.IsNotFound()) return Status::NotFound("unknown time zone " + name + " (no " + path + ")");
    if (s.IsCorruption()) return TzifError(name, s.message());
    return s.WithContext("time zone " + name);
  }
  return FromTzif(std::move(name), data);
}

const std::string& TimeZone::name() const { return data_->name; }

int32_t TimeZone::OffsetAt(int64_t unix_seconds) const {
  const Data& d = *data_;
  const std::vector<int64_t>& times = d.transition_times;
  if (times.empty()) return d.rule ? RuleOffsetAt(*d.rule, unix_seconds) : d.initial_offset;
  if (unix_seconds < times.front()) return d.initial_offset;
  // Like glibc: from the last transition on, the footer rule governs.
  if (unix_seconds >= times.back() && d.rule) return RuleOffsetAt(*d.rule, unix_seconds);
  auto it = std::upper_bound(times.begin(), times.end(), unix_seconds);
  return d.transition_offsets[static_cast<size_t>(it - times.begin()) - 1];
}

CivilTime TimeZone::ToCivil(int64_t unix_seconds) const {
  CivilTime out;
  out.utc_offset = OffsetAt(unix_seconds);
  const int64_t local = SaturatingAdd(unix_seconds, out.utc_offset);
  // Quotient and remainder rather than local - days * 86400, which would
  // overflow at the int64 limits.
  out.days = local / kSecondsPerDay;
  int64_t secs = local % kSecondsPerDay;
  if (secs < 0) {
    secs += kSecondsPerDay;
    --out.days;
  }
  CivilDay day = CivilFromDays(out.days);
  out.year = day.year;
  out.month = day.month;
  out.day = day.day;
  out.hour = static_cast<int>(secs / 3600);
  out.minute = static_cast<int>(secs / 60 % 60);
  out.second = static_cast<int>(secs % 60);
  return out;
}

}  // namespace cairn::storage
