#include "server/overdue.h"

#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include "server/server_db.h"
#include "storage/names.h"
#include "storage/sqlite_db.h"

namespace cairn::server {

nlohmann::json OverdueGroup::ToJson() const {
  return {{"store", store},
          {"group", group},
          {"last-backup", last_backup},
          {"stale-after", stale_after}};
}

bool IsOverdue(int64_t last_backup, int64_t stale_after, int64_t now) {
  return last_backup > 0 && stale_after > 0 && now - last_backup > stale_after;
}

Result<std::unique_ptr<OverdueNotices>> OverdueNotices::Open(const std::string& data_dir) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db, OpenServerDb(data_dir));
  return std::unique_ptr<OverdueNotices>(new OverdueNotices(db));
}

OverdueNotices::~OverdueNotices() { sqlite3_close(db_); }

Result<bool> OverdueNotices::Announced(const OverdueGroup& g) {
  MutexLock lock(&mu_);
  storage::Stmt st(db_,
                   "SELECT 1 FROM overdue_notices WHERE store = ? AND grp = ? AND last_backup = ?");
  st.Text(1, g.store).Text(2, g.group).Int(3, g.last_backup);
  return st.Step();
}

Status OverdueNotices::MarkAnnounced(const OverdueGroup& g, int64_t now) {
  MutexLock lock(&mu_);
  storage::Stmt st(db_,
                   "INSERT INTO overdue_notices (store, grp, last_backup, announced) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (store, grp) DO UPDATE SET "
                   "last_backup = excluded.last_backup, announced = excluded.announced");
  st.Text(1, g.store).Text(2, g.group).Int(3, g.last_backup).Int(4, now);
  return st.Run();
}

namespace {

std::string Ago(int64_t seconds) {
  if (seconds >= 2 * 86400) return fmt::format("{} days", seconds / 86400);
  if (seconds >= 2 * 3600) return fmt::format("{} hours", seconds / 3600);
  return fmt::format("{} minutes", seconds / 60);
}

Notification OverdueNotification(const OverdueGroup& g, int64_t now) {
  Notification n;
  n.event = "backup-overdue";
  n.subject = fmt::format("cairn: no backup of {} in datastore {} for {}", g.group, g.store,
                          Ago(now - g.last_backup));
  n.text = fmt::format(
      "The newest snapshot of group {} in datastore {} is from {} (UTC), {} ago; a backup "
      "was expected at least every {}.\n\nThis is announced once; the next backup of the "
      "group ends it.",
      g.group, g.store, storage::FormatSnapshotTime(g.last_backup), Ago(now - g.last_backup),
      Ago(g.stale_after));
  n.data = g.ToJson();
  return n;
}

}  // namespace

int AnnounceOverdue(const std::vector<OverdueGroup>& overdue, const Notifier& notifier,
                    OverdueNotices* notices, int64_t now) {
  int sent = 0;
  for (const auto& g : overdue) {
    auto done = notices->Announced(g);
    if (!done.ok()) {
      spdlog::error("overdue notices: {}", done.status().ToString());
      return sent;
    }
    if (*done) continue;
    spdlog::warn("group {} of datastore {} is overdue: newest snapshot from {}", g.group,
                 g.store, storage::FormatSnapshotTime(g.last_backup));
    if (notifier.enabled()) {
      Status s = notifier.Send(OverdueNotification(g, now));
      if (!s.ok()) {
        spdlog::error("could not announce overdue group {}/{}: {}", g.store, g.group,
                      s.ToString());
        continue;
      }
      ++sent;
    }
    Status s = notices->MarkAnnounced(g, now);
    if (!s.ok()) spdlog::error("overdue notices: {}", s.ToString());
  }
  return sent;
}

}  // namespace cairn::server
