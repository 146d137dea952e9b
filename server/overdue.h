#pragma once

// Overdue backups: a group whose newest snapshot is older than its expected
// interval ("stale after": kDefaultStaleAfterSeconds, 26 h, unless
// `cairn-server datastore set` gave its store or the group another) is
// overdue; the API calls it "stale". The failure admins fear most is a
// nightly backup that silently stopped. The server looks every minute
// (server.cc) and announces each overdue group once through its Notifier
// (server/notifier.h): once per episode, an episode being (store, group,
// time of the newest snapshot). A new backup ends the episode; if that one
// is followed by silence too, it is announced again. Announcements are kept
// in server.db, so a restart does not repeat them; one that could not be
// sent is tried again at the next look.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "server/notifier.h"
#include "server/server_db.h"
#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

struct OverdueGroup {
  std::string store;
  std::string group;         // "vm/100"
  int64_t last_backup = 0;   // time of its newest snapshot
  int64_t stale_after = 0;   // seconds
  nlohmann::json ToJson() const;
};

// True when a group whose newest snapshot is from `last_backup` is overdue
// at `now` (a group with no snapshot is not: there is nothing to expect yet).
bool IsOverdue(int64_t last_backup, int64_t stale_after, int64_t now);

// The announcements made (server.db, table overdue_notices).
// Thread safety: thread-safe.
class OverdueNotices {
 public:
  static Result<std::unique_ptr<OverdueNotices>> Open(const std::string& data_dir);
  ~OverdueNotices();
  Result<bool> Announced(const OverdueGroup& g);
  Status MarkAnnounced(const OverdueGroup& g, int64_t now);

 private:
  explicit OverdueNotices(sqlite3* db) : db_(db) {}
  Mutex mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(mu_);
};

// Announces each of `overdue` not announced yet; returns how many were sent.
// A failure to send is logged and the group is left for the next check.
int AnnounceOverdue(const std::vector<OverdueGroup>& overdue, const Notifier& notifier,
                    OverdueNotices* notices, int64_t now);

}  // namespace cairn::server
