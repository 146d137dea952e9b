#include "storage/sqlite_db.h"

#include <algorithm>

namespace cairn::storage {
namespace {
constexpr int kBusyTimeoutMs = 10000;
}

Status SqlError(sqlite3* db, int rc, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Busy(msg);
    case SQLITE_CONSTRAINT:
      return Status::Conflict(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(msg);
    default:
      return Status::IOError(msg);
  }
}

Stmt::Stmt(sqlite3* db, const char* sql) : db_(db), sql_(sql) {
  rc_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr);
}

Stmt::~Stmt() { sqlite3_finalize(st_); }

Stmt& Stmt::Text(int i, std::string_view v) {
  if (rc_ == SQLITE_OK) {
    rc_ = sqlite3_bind_text64(st_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }
  return *this;
}

Stmt& Stmt::Int(int i, int64_t v) {
  if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_int64(st_, i, v);
  return *this;
}

Stmt& Stmt::Null(int i) {
  if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_null(st_, i);
  return *this;
}

Result<bool> Stmt::Step() {
  if (rc_ != SQLITE_OK) return SqlError(db_, rc_, sql_);
  int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  rc_ = rc;
  return SqlError(db_, rc, FirstLine());
}

Status Stmt::Run() {
  auto r = Step();
  return r.ok() ? Status::OK() : r.status();
}

std::string Stmt::ColText(int i) {
  const unsigned char* p = sqlite3_column_text(st_, i);
  int n = sqlite3_column_bytes(st_, i);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
}

int64_t Stmt::ColInt(int i) { return sqlite3_column_int64(st_, i); }

bool Stmt::ColIsNull(int i) { return sqlite3_column_type(st_, i) == SQLITE_NULL; }

std::string Stmt::FirstLine() const {
  std::string_view s(sql_);
  while (!s.empty() && (s.front() == '\n' || s.front() == ' ')) s.remove_prefix(1);
  return std::string(s.substr(0, std::min<size_t>(s.find('\n'), 60)));
}

Result<std::vector<std::string>> ReadTextColumn(Stmt& st) {
  std::vector<std::string> out;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return out;
    out.push_back(st.ColText(0));
  }
}

Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return Status::OK();
  std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return SqlError(nullptr, rc, msg);
}

Txn::~Txn() {
  if (active_) (void)Exec(db_, "ROLLBACK");
}

Status Txn::Begin() {
  CAIRN_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE"));
  active_ = true;
  return Status::OK();
}

Status Txn::Commit() {
  CAIRN_RETURN_IF_ERROR(Exec(db_, "COMMIT"));
  active_ = false;
  return Status::OK();
}

Result<sqlite3*> OpenDatabase(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    Status s = SqlError(db, rc, "open " + path);
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // WAL: readers never block the writer. synchronous=FULL: a committed
  // transaction survives a power loss (these files hold server state that
  // no directory can rebuild).
  Status s = Exec(db, "PRAGMA journal_mode=WAL");
  if (s.ok()) s = Exec(db, "PRAGMA synchronous=FULL");
  if (s.ok()) s = Exec(db, "PRAGMA foreign_keys=ON");
  if (!s.ok()) {
    sqlite3_close(db);
    return s.WithContext(path);
  }
  return db;
}

Status Migrate(sqlite3* db, std::span<const char* const> migrations, std::string_view what) {
  const int64_t latest = static_cast<int64_t>(migrations.size());
  for (int64_t target = 1; target <= latest; ++target) {
    Txn txn(db);
    CAIRN_RETURN_IF_ERROR(txn.Begin());
    // Read inside the write transaction: another process may have migrated
    // since we looked.
    int64_t current = 0;
    {
      Stmt st(db, "PRAGMA user_version");
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) current = st.ColInt(0);
    }
    if (current > latest) {
      return Status::Conflict(std::string(what) + " schema version " + std::to_string(current) +
                              " is newer than this build supports (" + std::to_string(latest) +
                              ")");
    }
    if (current >= target) continue;
    if (current != target - 1) return Status::Corruption(std::string(what) + " schema version skipped");
    CAIRN_RETURN_IF_ERROR(Exec(db, migrations[target - 1]));
    // PRAGMA takes no parameters; `target` is a number of ours.
    const std::string bump = "PRAGMA user_version=" + std::to_string(target);
    CAIRN_RETURN_IF_ERROR(Exec(db, bump.c_str()));
    CAIRN_RETURN_IF_ERROR(txn.Commit());
  }
  return Status::OK();
}

}  // namespace cairn::storage
