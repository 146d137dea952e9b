#include "storage/prune.h"

#include <algorithm>
#include <unordered_set>

namespace cairn::storage {

namespace {

enum class Mark { kNone, kKeep, kProtected, kRemove };

struct Entry {
  PruneInput input;
  Mark mark = Mark::kNone;
  PruneReason kept_by = PruneReason::kRemove;
};

struct OptionSpec {
  std::optional<uint64_t> PruneOptions::*count;
  PruneReason reason;
  const char* flag;
};

constexpr OptionSpec kOptions[] = {
    {&PruneOptions::keep_last, PruneReason::kKeepLast, "--keep-last"},
    {&PruneOptions::keep_hourly, PruneReason::kKeepHourly, "--keep-hourly"},
    {&PruneOptions::keep_daily, PruneReason::kKeepDaily, "--keep-daily"},
    {&PruneOptions::keep_weekly, PruneReason::kKeepWeekly, "--keep-weekly"},
    {&PruneOptions::keep_monthly, PruneReason::kKeepMonthly, "--keep-monthly"},
    {&PruneOptions::keep_yearly, PruneReason::kKeepYearly, "--keep-yearly"},
};

// A number that identifies the snapshot's period for `option`; two snapshots
// share a period exactly when their keys are equal. Keys are integers rather
// than PBS's strftime strings, with the same equalities.
int64_t PeriodKey(PruneReason option, int64_t time, const TimeZone& tz) {
  if (option == PruneReason::kKeepLast) return time;
  const CivilTime c = tz.ToCivil(time);
  switch (option) {
    case PruneReason::kKeepHourly:
      return c.days * 24 + c.hour;
    case PruneReason::kKeepDaily:
      return c.days;
    case PruneReason::kKeepWeekly: {
      // The week-numbering year, not the calendar year: 2024-12-30 is 2025-W01.
      const IsoWeek w = IsoWeekFromDays(c.days);
      return w.year * 100 + w.week;
    }
    case PruneReason::kKeepMonthly:
      return c.year * 12 + (c.month - 1);
    case PruneReason::kKeepYearly:
      return c.year;
    default:
      return time;
  }
}

// PBS's mark_selections. Hash sets, not "key changed since the previous
// snapshot": in a DST fall-back the same local period can recur after a
// different one, and PBS still treats it as one period.
void MarkSelections(std::vector<Entry>* entries, uint64_t keep, PruneReason option,
                    const TimeZone& tz) {
  std::unordered_set<int64_t> covered;
  for (const Entry& e : *entries) {
    if (e.mark == Mark::kKeep) covered.insert(PeriodKey(option, e.input.time, tz));
  }
  std::unordered_set<int64_t> chosen;
  for (Entry& e : *entries) {
    if (e.mark != Mark::kNone) continue;
    if (e.input.is_protected) {
      e.mark = Mark::kProtected;
      continue;
    }
    const int64_t key = PeriodKey(option, e.input.time, tz);
    if (covered.contains(key)) continue;
    if (!chosen.contains(key)) {
      if (chosen.size() >= keep) break;
      chosen.insert(key);
      e.mark = Mark::kKeep;
      e.kept_by = option;
    } else {
      e.mark = Mark::kRemove;
    }
  }
}

}  // namespace

bool PruneOptions::KeepsAll() const {
  for (const OptionSpec& o : kOptions) {
    if ((this->*o.count).value_or(0) > 0) return false;
  }
  return true;
}

std::string PruneOptions::ToString() const {
  std::string out;
  for (const OptionSpec& o : kOptions) {
    const uint64_t n = (this->*o.count).value_or(0);
    if (n == 0) continue;
    if (!out.empty()) out += ' ';
    out += o.flag;
    out += ' ';
    out += std::to_string(n);
  }
  return out;
}

const char* PruneReasonName(PruneReason reason) {
  switch (reason) {
    case PruneReason::kKeepLast:
      return "keep-last";
    case PruneReason::kKeepHourly:
      return "keep-hourly";
    case PruneReason::kKeepDaily:
      return "keep-daily";
    case PruneReason::kKeepWeekly:
      return "keep-weekly";
    case PruneReason::kKeepMonthly:
      return "keep-monthly";
    case PruneReason::kKeepYearly:
      return "keep-yearly";
    case PruneReason::kProtected:
      return "protected";
    case PruneReason::kKeepAll:
      return "keep-all";
    case PruneReason::kRemove:
      return "remove";
  }
  return "unknown";
}

std::vector<PruneDecision> ComputePrune(const std::vector<PruneInput>& snapshots,
                                        const PruneOptions& options, const TimeZone& tz) {
  std::vector<Entry> entries;
  entries.reserve(snapshots.size());
  for (const PruneInput& s : snapshots) entries.push_back(Entry{s});
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.input.time > b.input.time; });

  for (const OptionSpec& o : kOptions) {
    const std::optional<uint64_t>& count = options.*o.count;
    if (count.has_value()) MarkSelections(&entries, *count, o.reason, tz);
  }

  const bool keep_all = options.KeepsAll();
  std::vector<PruneDecision> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) {
    PruneDecision d;
    d.time = e.input.time;
    d.is_protected = e.input.is_protected;
    if (e.input.is_protected) {
      d.reason = PruneReason::kProtected;
    } else if (keep_all) {
      d.reason = PruneReason::kKeepAll;
    } else if (e.mark == Mark::kKeep) {
      d.reason = e.kept_by;
    } else {
      d.reason = PruneReason::kRemove;
    }
    d.keep = d.reason != PruneReason::kRemove;
    out.push_back(d);
  }
  return out;
}

}  // namespace cairn::storage
