#pragma once

// Prune selection: which snapshots of one backup group a retention policy
// keeps. A pure function — no I/O, no clock, no global state; the caller lists
// the group, calls ComputePrune, shows the result (dry run) or removes the
// snapshots marked remove. Prune removes snapshots only; GC frees chunks.
//
// The selection is Proxmox Backup Server's (pbs-datastore/src/prune.rs,
// compute_prune_info + mark_selections), to the letter:
//
// 1. Snapshots are sorted newest first. Each starts unmarked.
// 2. The options run in this order, each only when set: keep-last,
//    keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly. Each
//    maps a snapshot to its period, from its wall-clock time in the time zone:
//      last     the snapshot itself (its time)
//      hourly   YYYY-MM-DD HH
//      daily    YYYY-MM-DD
//      weekly   ISO 8601 week-numbering year and week (strftime "%G/%V"):
//               2024-12-30 is in 2025-W01, 2021-01-03 in 2020-W53
//      monthly  YYYY-MM
//      yearly   YYYY
// 3. One option with count N:
//    a. covered := the periods of the snapshots marked KEEP by earlier options
//       (not those marked protected or remove).
//    b. Walk the snapshots newest to oldest, with chosen := {}; for each, the
//       first rule that applies:
//       - already marked (keep, remove or protected): skip it;
//       - protected: mark it protected, skip it (it never counts toward N);
//       - its period is in `covered`: skip it and leave it UNMARKED (a later
//         option may still keep it; it does not count toward N);
//       - its period is not in `chosen`: if |chosen| >= N, STOP this option
//         (everything older stays unmarked for the later options); otherwise
//         add the period to `chosen` and mark the snapshot KEEP (by this
//         option);
//       - its period is in `chosen` (a newer snapshot of the same period was
//         kept by this option): mark it REMOVE. That mark is final: no later
//         option reconsiders it, and its period does not become `covered`.
// 4. Result: protected snapshots are kept ("protected"); if no option is set
//    to a count > 0, every snapshot is kept ("keep-all"); otherwise snapshots
//    marked KEEP are kept (reason: the option that marked them) and all others
//    — marked remove, or never reached — are removed ("remove").
// Consequences: periods without snapshots never count; a count of 0 selects
// nothing and behaves exactly like an unset option (PBS's API refuses 0 —
// minimum 1 — but its selection treats it so; refuse 0 at the API if wanted).
// PBS also keeps the newest unfinished snapshot and removes older unfinished
// ones; Cairn commits snapshots atomically, so every listed one is finished
// and that step does not apply.
//
// Thread safety: pure functions on values.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "storage/time_zone.h"

namespace cairn::storage {

struct PruneOptions {
  std::optional<uint64_t> keep_last = std::nullopt;
  std::optional<uint64_t> keep_hourly = std::nullopt;
  std::optional<uint64_t> keep_daily = std::nullopt;
  std::optional<uint64_t> keep_weekly = std::nullopt;
  std::optional<uint64_t> keep_monthly = std::nullopt;
  std::optional<uint64_t> keep_yearly = std::nullopt;

  // True when no option is set to a count > 0: then nothing is removed.
  bool KeepsAll() const;

  // The options with a count > 0, in the order they apply:
  // "--keep-last 3 --keep-daily 7"; "" when KeepsAll().
  std::string ToString() const;
};

// One snapshot of the group.
struct PruneInput {
  int64_t time = 0;  // snapshot time, seconds since the Unix epoch
  bool is_protected = false;
};

enum class PruneReason {
  kKeepLast,
  kKeepHourly,
  kKeepDaily,
  kKeepWeekly,
  kKeepMonthly,
  kKeepYearly,
  kProtected,  // protected snapshots are always kept
  kKeepAll,    // no option set (to a count > 0)
  kRemove,
};

// "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly",
// "keep-yearly", "protected", "keep-all", "remove".
const char* PruneReasonName(PruneReason reason);

struct PruneDecision {
  int64_t time = 0;
  bool is_protected = false;
  bool keep = false;  // false exactly when reason == kRemove
  PruneReason reason = PruneReason::kRemove;
};

// Applies `options` to one group's snapshots, period boundaries in `tz`.
// Returns one decision per input, newest first (equal times keep their input
// order; a group's snapshot times are unique, being folder names, and equal
// times would share one keep-last period).
std::vector<PruneDecision> ComputePrune(const std::vector<PruneInput>& snapshots,
                                        const PruneOptions& options, const TimeZone& tz);

}  // namespace cairn::storage
