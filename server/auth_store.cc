#include "server/auth_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include <ctime>

#include "storage/digest.h"
#include "storage/names.h"

namespace cairn::server {
namespace {

// A prepared statement, finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  Status Error() const { return Status::IOError(std::string("sqlite: ") + sqlite3_errmsg(db_)); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Status::IOError("sqlite: " + msg);
  }
  return Status::OK();
}

// Schema migrations, applied in order; PRAGMA user_version counts them.
constexpr const char* kMigrations[] = {
    R"(CREATE TABLE users (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
       CREATE TABLE tokens (user TEXT NOT NULL REFERENCES users(name),
                            name TEXT NOT NULL, secret_sha256 TEXT NOT NULL,
                            created INTEGER NOT NULL, PRIMARY KEY (user, name));
       CREATE TABLE acl (store TEXT NOT NULL, auth_id TEXT NOT NULL, role TEXT NOT NULL,
                         PRIMARY KEY (store, auth_id));)",
};

std::string HexOf(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 0xf];
  }
  return out;
}

Status ValidateAuthPart(const std::string& part, const char* what) {
  // The same charset and length as a store name.
  Status s = storage::ValidateName(storage::NameKind::kStore, part);
  if (!s.ok()) return Status::InvalidArgument(std::string("invalid ") + what + " name");
  return Status::OK();
}

// "user!token" → (user, token); InvalidArgument otherwise.
Status SplitTokenId(const std::string& auth_id, std::string* user, std::string* token) {
  size_t bang = auth_id.find('!');
  if (bang == std::string::npos) return Status::InvalidArgument("token id must be USER!TOKEN");
  *user = auth_id.substr(0, bang);
  *token = auth_id.substr(bang + 1);
  CAIRN_RETURN_IF_ERROR(ValidateAuthPart(*user, "user"));
  return ValidateAuthPart(*token, "token");
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAudit: return "Audit";
    case Role::kReader: return "Reader";
    case Role::kBackup: return "Backup";
    case Role::kAdmin: return "Admin";
  }
  return "?";
}

Result<Role> ParseRole(const std::string& name) {
  for (Role r : {Role::kAudit, Role::kReader, Role::kBackup, Role::kAdmin}) {
    if (name == RoleName(r)) return r;
  }
  return Status::InvalidArgument("role must be one of Admin, Backup, Reader, Audit");
}

bool OwnsGroup(const Principal& p, const std::string& owner) {
  if (owner == p.auth_id) return true;
  bool is_user = p.auth_id.find('!') == std::string::npos;
  return is_user && owner.size() > p.user.size() && owner.compare(0, p.user.size(), p.user) == 0 &&
         owner[p.user.size()] == '!';
}

Result<std::unique_ptr<AuthStore>> AuthStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::IOError(path + ": " + msg);
  }
  std::unique_ptr<AuthStore> store(new AuthStore(db));
  sqlite3_busy_timeout(db, 5000);
  CAIRN_RETURN_IF_ERROR(Exec(db, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;"));
  Stmt v(db, "PRAGMA user_version");
  if (v.Step() != SQLITE_ROW) return v.Error();
  int64_t version = v.Int(0);
  constexpr int64_t kLatest = std::size(kMigrations);
  if (version > kLatest) {
    return Status::InvalidArgument(path + ": schema version " + std::to_string(version) +
                                   " is newer than this server knows");
  }
  for (int64_t i = version; i < kLatest; ++i) {
    CAIRN_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
    Status s = Exec(db, kMigrations[i]);
    if (s.ok()) s = Exec(db, ("PRAGMA user_version=" + std::to_string(i + 1)).c_str());
    if (!s.ok()) {
      (void)Exec(db, "ROLLBACK");
      return s;
    }
    CAIRN_RETURN_IF_ERROR(Exec(db, "COMMIT"));
  }
  return store;
}

AuthStore::~AuthStore() { sqlite3_close(db_); }

Status AuthStore::AddUser(const std::string& user) {
  CAIRN_RETURN_IF_ERROR(ValidateAuthPart(user, "user"));
  std::lock_guard lock(mu_);
  Stmt st(db_, "INSERT INTO users (name, created) VALUES (?, ?)");
  st.Bind(1, user).Bind(2, static_cast<int64_t>(std::time(nullptr)));
  int rc = st.Step();
  if (rc == SQLITE_CONSTRAINT) return Status::AlreadyExists("user " + user + " exists already");
  return rc == SQLITE_DONE ? Status::OK() : st.Error();
}

Result<std::vector<std::string>> AuthStore::ListUsers() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT name FROM users ORDER BY name");
  std::vector<std::string> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(st.Text(0));
  if (rc != SQLITE_DONE) return st.Error();
  return out;
}

Result<std::string> AuthStore::CreateToken(const std::string& auth_id) {
  std::string user, token;
  CAIRN_RETURN_IF_ERROR(SplitTokenId(auth_id, &user, &token));
  unsigned char secret[32];
  if (RAND_bytes(secret, sizeof(secret)) != 1) return Status::IOError("RAND_bytes failed");
  std::string secret_hex = HexOf(secret, sizeof(secret));
  std::string hash = storage::Sha256(secret_hex).ToHex();
  std::lock_guard lock(mu_);
  Stmt exists(db_, "SELECT 1 FROM users WHERE name = ?");
  exists.Bind(1, user);
  if (exists.Step() != SQLITE_ROW) return Status::NotFound("no user " + user);
  Stmt st(db_, "INSERT INTO tokens (user, name, secret_sha256, created) VALUES (?, ?, ?, ?)");
  st.Bind(1, user).Bind(2, token).Bind(3, hash).Bind(4, static_cast<int64_t>(std::time(nullptr)));
  int rc = st.Step();
  if (rc == SQLITE_CONSTRAINT) return Status::AlreadyExists("token " + auth_id + " exists already");
  if (rc != SQLITE_DONE) return st.Error();
  return secret_hex;
}

Result<std::vector<std::string>> AuthStore::ListTokens() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT user || '!' || name FROM tokens ORDER BY user, name");
  std::vector<std::string> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) out.push_back(st.Text(0));
  if (rc != SQLITE_DONE) return st.Error();
  return out;
}

Result<Principal> AuthStore::Authenticate(const std::string& header) {
  const Status denied = Status::Unauthenticated("authentication failed");
  static constexpr std::string_view kScheme = "CairnToken ";
  if (header.size() > 256 || header.compare(0, kScheme.size(), kScheme) != 0) return denied;
  std::string rest = header.substr(kScheme.size());
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return denied;
  std::string auth_id = rest.substr(0, colon);
  std::string secret = rest.substr(colon + 1);
  std::string user, token;
  if (!SplitTokenId(auth_id, &user, &token).ok() || secret.size() != 64) return denied;
  std::string hash = storage::Sha256(secret).ToHex();
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT secret_sha256 FROM tokens WHERE user = ? AND name = ?");
  st.Bind(1, user).Bind(2, token);
  if (st.Step() != SQLITE_ROW) return denied;
  std::string stored = st.Text(0);
  if (stored.size() != hash.size() || CRYPTO_memcmp(stored.data(), hash.data(), hash.size()) != 0) {
    return denied;
  }
  return Principal{auth_id, user};
}

Status AuthStore::SetAcl(const std::string& store, const std::string& auth_id, Role role) {
  if (store != "*") CAIRN_RETURN_IF_ERROR(ValidateAuthPart(store, "store"));
  std::string user, token;
  if (auth_id.find('!') != std::string::npos) {
    CAIRN_RETURN_IF_ERROR(SplitTokenId(auth_id, &user, &token));
  } else {
    CAIRN_RETURN_IF_ERROR(ValidateAuthPart(auth_id, "user"));
  }
  std::lock_guard lock(mu_);
  Stmt st(db_, "INSERT INTO acl (store, auth_id, role) VALUES (?, ?, ?) "
               "ON CONFLICT (store, auth_id) DO UPDATE SET role = excluded.role");
  st.Bind(1, store).Bind(2, auth_id).Bind(3, std::string(RoleName(role)));
  return st.Step() == SQLITE_DONE ? Status::OK() : st.Error();
}

Result<std::vector<AclEntry>> AuthStore::ListAcl() {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT store, auth_id, role FROM acl ORDER BY store, auth_id");
  std::vector<AclEntry> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    auto role = ParseRole(st.Text(2));
    if (!role.ok()) return Status::Corruption("acl holds an unknown role: " + st.Text(2));
    out.push_back({st.Text(0), st.Text(1), *role});
  }
  if (rc != SQLITE_DONE) return st.Error();
  return out;
}

RoleSet AuthStore::RolesOn(const Principal& p, const std::string& store) {
  std::lock_guard lock(mu_);
  Stmt st(db_, "SELECT role FROM acl WHERE auth_id = ? AND (store = ? OR store = '*')");
  st.Bind(1, p.auth_id).Bind(2, store);
  RoleSet roles;
  while (st.Step() == SQLITE_ROW) {
    auto role = ParseRole(st.Text(0));
    if (role.ok()) roles.Add(*role);
  }
  return roles;
}

}  // namespace cairn::server
