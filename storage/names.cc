#include "storage/names.h"

#include <cstdio>

namespace cairn::storage {
namespace {

constexpr size_t kMaxStoreLength = 32;
constexpr size_t kMaxIdLength = 128;
// 0000-01-01 .. 9999-12-31T23:59:59Z; Parse accepts only from the epoch on.
constexpr int64_t kMaxSnapshotTime = 253402300799;

const char* KindName(NameKind kind) {
  switch (kind) {
    case NameKind::kStore:
      return "store name";
    case NameKind::kNamespace:
      return "namespace component";
    case NameKind::kBackupType:
      return "backup type";
    case NameKind::kBackupId:
      return "backup id";
    case NameKind::kArchive:
      return "archive name";
  }
  return "name";
}

// Hostile names end up in messages, logs and HTTP answers: show them
// escaped and cut short so they cannot forge log lines or flood a terminal.
std::string Printable(std::string_view s) {
  constexpr size_t kShown = 48;
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kShown; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  out += '"';
  if (s.size() > kShown) out += "...";
  return out;
}

Status Invalid(NameKind kind, std::string_view name, std::string_view why) {
  std::string msg = KindName(kind);
  msg += ' ';
  msg += Printable(name);
  msg += ": ";
  msg += why;
  return Status::InvalidArgument(msg);
}

bool IsAlnumUnderscore(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}
bool IsNameChar(char c) { return IsAlnumUnderscore(c) || c == '.' || c == '-'; }

// [A-Za-z0-9_][A-Za-z0-9_.-]{0,max_len-1}, and never "..": the charset
// already keeps '/' out, but a ".." anywhere is refused too so that no
// later string handling (a suffix strip, a join) can ever produce one.
Status CheckPattern(NameKind kind, std::string_view name, size_t max_len) {
  if (name.empty()) return Invalid(kind, name, "empty");
  if (name.size() > max_len) {
    return Invalid(kind, name, "longer than " + std::to_string(max_len) + " characters");
  }
  if (!IsAlnumUnderscore(name[0])) {
    return Invalid(kind, name, "must start with a letter, digit or '_'");
  }
  for (char c : name) {
    if (!IsNameChar(c)) return Invalid(kind, name, "only letters, digits, '_', '.', '-' allowed");
  }
  if (name.find("..") != std::string_view::npos) return Invalid(kind, name, "contains \"..\"");
  return Status::OK();
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Days since 1970-01-01 for a proleptic Gregorian date, and back
// (H. Hinnant's algorithms): no timegm, no TZ, no locale.
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

bool IsLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned DaysInMonth(int64_t y, unsigned m) {
  static constexpr unsigned kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

// Exactly `n` ASCII digits at text[pos..]; false otherwise.
bool Digits(std::string_view text, size_t pos, size_t n, unsigned* out) {
  unsigned v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    char c = text[i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  *out = v;
  return true;
}

Status BadTime(std::string_view text, std::string_view why) {
  return Status::InvalidArgument("snapshot time " + Printable(text) + ": " + std::string(why));
}

}  // namespace

Status ValidateName(NameKind kind, std::string_view name) {
  switch (kind) {
    case NameKind::kStore:
    case NameKind::kNamespace:
      return CheckPattern(kind, name, kMaxStoreLength);
    case NameKind::kBackupType:
      if (name == "vm" || name == "ct" || name == "host") return Status::OK();
      return Invalid(kind, name, "must be \"vm\", \"ct\" or \"host\"");
    case NameKind::kBackupId:
      return CheckPattern(kind, name, kMaxIdLength);
    case NameKind::kArchive: {
      CAIRN_RETURN_IF_ERROR(CheckPattern(kind, name, kMaxIdLength));
      if (!EndsWith(name, ".fidx") && !EndsWith(name, ".blob")) {
        return Invalid(kind, name, "must end in \".fidx\" or \".blob\"");
      }
      return Status::OK();
    }
  }
  return Invalid(kind, name, "unknown kind");
}

Result<std::vector<std::string>> ParseNamespace(std::string_view ns) {
  std::vector<std::string> parts;
  if (ns.empty()) return parts;
  size_t start = 0;
  while (true) {
    size_t slash = ns.find('/', start);
    std::string_view part =
        ns.substr(start, slash == std::string_view::npos ? ns.npos : slash - start);
    CAIRN_RETURN_IF_ERROR(ValidateName(NameKind::kNamespace, part));
    if (parts.size() == kMaxNamespaceDepth) {
      return Status::InvalidArgument("namespace " + Printable(ns) + ": deeper than " +
                                     std::to_string(kMaxNamespaceDepth) + " levels");
    }
    parts.emplace_back(part);
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return parts;
}

std::string FormatNamespace(const std::vector<std::string>& ns) {
  std::string out;
  for (size_t i = 0; i < ns.size(); ++i) {
    if (i > 0) out += '/';
    out += ns[i];
  }
  return out;
}

std::string FormatSnapshotTime(int64_t unix_seconds) {
  // Floor division so that times before the epoch still give a real date.
  int64_t days = unix_seconds / 86400;
  int64_t secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    --days;
  }
  int64_t y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ",
                static_cast<long long>(y), m, d, static_cast<long long>(secs / 3600),
                static_cast<long long>(secs / 60 % 60), static_cast<long long>(secs % 60));
  return buf;
}

Result<int64_t> ParseSnapshotTime(std::string_view text) {
  // 0123456789012345678 9
  // YYYY-MM-DDTHH:MM:SSZ
  if (text.size() != 20) return BadTime(text, "must be YYYY-MM-DDTHH:MM:SSZ");
  if (text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' || text[16] != ':' ||
      text[19] != 'Z') {
    return BadTime(text, "must be YYYY-MM-DDTHH:MM:SSZ");
  }
  unsigned year, month, day, hour, minute, second;
  if (!Digits(text, 0, 4, &year) || !Digits(text, 5, 2, &month) || !Digits(text, 8, 2, &day) ||
      !Digits(text, 11, 2, &hour) || !Digits(text, 14, 2, &minute) ||
      !Digits(text, 17, 2, &second)) {
    return BadTime(text, "must be YYYY-MM-DDTHH:MM:SSZ");
  }
  if (year < 1970) return BadTime(text, "year before 1970");
  if (month < 1 || month > 12) return BadTime(text, "no such month");
  if (day < 1 || day > DaysInMonth(year, month)) return BadTime(text, "no such day");
  // No leap seconds: a second 60 never appears in a snapshot name.
  if (hour > 23 || minute > 59 || second > 59) return BadTime(text, "no such time of day");
  return DaysFromCivil(year, month, day) * 86400 + int64_t{hour} * 3600 + int64_t{minute} * 60 +
         int64_t{second};
}

std::string GroupRef::RelPath() const {
  std::string out;
  for (const std::string& part : ns) {
    out += "ns/";
    out += part;
    out += '/';
  }
  out += type;
  out += '/';
  out += id;
  return out;
}

std::string GroupRef::ToString() const {
  std::string out;
  if (!ns.empty()) {
    out = FormatNamespace(ns);
    out += ':';
  }
  out += type;
  out += '/';
  out += id;
  return out;
}

Result<GroupRef> GroupRef::Parse(std::string_view text) {
  GroupRef g;
  std::string_view rest = text;
  // ':' is outside the name charset, so the first one is the separator.
  size_t colon = text.find(':');
  if (colon != std::string_view::npos) {
    if (colon == 0) {
      return Status::InvalidArgument("group " + Printable(text) + ": empty namespace before ':'");
    }
    CAIRN_ASSIGN_OR_RETURN(g.ns, ParseNamespace(text.substr(0, colon)));
    rest = text.substr(colon + 1);
  }
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) {
    return Status::InvalidArgument("group " + Printable(text) + ": expected <type>/<id>");
  }
  g.type = std::string(rest.substr(0, slash));
  g.id = std::string(rest.substr(slash + 1));
  CAIRN_RETURN_IF_ERROR(g.Validate());
  return g;
}

Status GroupRef::Validate() const {
  if (ns.size() > kMaxNamespaceDepth) {
    return Status::InvalidArgument("namespace deeper than " + std::to_string(kMaxNamespaceDepth) +
                                   " levels");
  }
  for (const std::string& part : ns) {
    CAIRN_RETURN_IF_ERROR(ValidateName(NameKind::kNamespace, part));
  }
  CAIRN_RETURN_IF_ERROR(ValidateName(NameKind::kBackupType, type));
  return ValidateName(NameKind::kBackupId, id);
}

std::string SnapshotRef::RelPath() const {
  return group.RelPath() + "/" + FormatSnapshotTime(time);
}

std::string SnapshotRef::ToString() const {
  return group.ToString() + "/" + FormatSnapshotTime(time);
}

Result<SnapshotRef> SnapshotRef::Parse(std::string_view text) {
  size_t slash = text.rfind('/');
  if (slash == std::string_view::npos) {
    return Status::InvalidArgument("snapshot " + Printable(text) + ": expected <group>/<time>");
  }
  SnapshotRef s;
  CAIRN_ASSIGN_OR_RETURN(s.group, GroupRef::Parse(text.substr(0, slash)));
  CAIRN_ASSIGN_OR_RETURN(s.time, ParseSnapshotTime(text.substr(slash + 1)));
  return s;
}

Status SnapshotRef::Validate() const {
  CAIRN_RETURN_IF_ERROR(group.Validate());
  if (time < 0 || time > kMaxSnapshotTime) {
    return Status::InvalidArgument("snapshot time " + std::to_string(time) +
                                   " outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z");
  }
  return Status::OK();
}

}  // namespace cairn::storage
