#pragma once

// Small helpers over SQLite's C API shared by every Cairn database (the
// catalog, the server's auth and job/task state): prepared statements with
// bound parameters, transactions, opening with the pragmas Cairn relies on,
// and versioned migrations.
//
// Every statement is fixed text with bound parameters; no outside value is
// ever formatted into SQL.
//
// Thread safety: a sqlite3 connection and its statements are used by one
// thread at a time; the owners (Catalog, AuthStore, …) hold a mutex.

#include <sqlite3.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/status.h"

namespace cairn::storage {

// Maps an SQLite result code onto a Status: BUSY/LOCKED → Busy, CONSTRAINT →
// Conflict, CORRUPT/NOTADB → Corruption, anything else → IOError.
Status SqlError(sqlite3* db, int rc, std::string_view what);

// A prepared statement. Bind errors are kept and reported by Step().
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Text(int i, std::string_view v);
  Stmt& Int(int i, int64_t v);
  Stmt& Null(int i);

  // True for a row, false when done.
  Result<bool> Step();
  // For statements that return no rows.
  Status Run();

  std::string ColText(int i);
  int64_t ColInt(int i);
  bool ColIsNull(int i);

 private:
  std::string FirstLine() const;

  sqlite3* db_;
  const char* sql_;
  sqlite3_stmt* st_ = nullptr;
  int rc_;
};

// Every row's first column as text.
Result<std::vector<std::string>> ReadTextColumn(Stmt& st);

// Runs SQL without parameters (schema, pragmas, BEGIN/COMMIT).
Status Exec(sqlite3* db, const char* sql);

// BEGIN IMMEDIATE .. COMMIT; rolled back unless committed.
class Txn {
 public:
  explicit Txn(sqlite3* db) : db_(db) {}
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  Status Begin();
  Status Commit();

 private:
  sqlite3* db_;
  bool active_ = false;
};

// Opens (creating) `path` with WAL, synchronous=FULL (a committed transaction
// survives a power loss), foreign keys on and a busy timeout. The caller owns
// the connection (sqlite3_close).
Result<sqlite3*> OpenDatabase(const std::string& path);

// Applies the migrations the database lacks, in order, each in its own
// transaction with the bump of PRAGMA user_version. Migration i takes the
// schema from version i to i + 1. Conflict when the database is newer than
// `migrations` knows; `what` names the database in messages.
Status Migrate(sqlite3* db, std::span<const char* const> migrations, std::string_view what);

}  // namespace cairn::storage
