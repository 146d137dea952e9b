#include "server/auth_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include <ctime>

#include "server/password_hash.h"
#include "storage/digest.h"
#include "storage/names.h"
#include "storage/sqlite_db.h"

namespace cairn::server {
namespace {

using storage::Stmt;

// Schema migrations, applied in order; PRAGMA user_version counts them.
constexpr const char* kMigrations[] = {
    R"(CREATE TABLE users (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
       CREATE TABLE tokens (user TEXT NOT NULL REFERENCES users(name),
                            name TEXT NOT NULL, secret_sha256 TEXT NOT NULL,
                            created INTEGER NOT NULL, PRIMARY KEY (user, name));
       CREATE TABLE acl (store TEXT NOT NULL, auth_id TEXT NOT NULL, role TEXT NOT NULL,
                         PRIMARY KEY (store, auth_id));)",
    // A user's password record (server/password_hash.h); '' for none.
    R"(ALTER TABLE users ADD COLUMN password TEXT NOT NULL DEFAULT '';)",
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

// A record no password matches in practice, checked for unknown users so
// that a login takes about as long whether or not the user exists.
const std::string& DummyRecord() {
  static const std::string record = [] {
    auto r = HashPassword("no user has this password", kDefaultScrypt);
    return r.ok() ? *r : std::string();
  }();
  return record;
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
  CAIRN_ASSIGN_OR_RETURN(sqlite3* db, storage::OpenDatabase(path));
  std::unique_ptr<AuthStore> store(new AuthStore(db));
  CAIRN_RETURN_IF_ERROR(storage::Migrate(db, kMigrations, "auth database"));
  return store;
}

AuthStore::~AuthStore() { sqlite3_close(db_); }

Status AuthStore::AddUser(const std::string& user) {
  CAIRN_RETURN_IF_ERROR(ValidateAuthPart(user, "user"));
  MutexLock lock(&mu_);
  Stmt st(db_, "INSERT INTO users (name, created) VALUES (?, ?)");
  st.Text(1, user).Int(2, static_cast<int64_t>(std::time(nullptr)));
  Status s = st.Run();
  if (s.IsConflict()) return Status::AlreadyExists("user " + user + " exists already");
  return s;
}

Result<std::vector<std::string>> AuthStore::ListUsers() {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT name FROM users ORDER BY name");
  return storage::ReadTextColumn(st);
}

Status AuthStore::RequireUserLocked(const std::string& user) {
  Stmt exists(db_, "SELECT 1 FROM users WHERE name = ?");
  exists.Text(1, user);
  CAIRN_ASSIGN_OR_RETURN(bool found, exists.Step());
  if (!found) return Status::NotFound("no user " + user);
  return Status::OK();
}

Result<std::string> AuthStore::CreateToken(const std::string& auth_id) {
  std::string user, token;
  CAIRN_RETURN_IF_ERROR(SplitTokenId(auth_id, &user, &token));
  unsigned char secret[32];
  if (RAND_bytes(secret, sizeof(secret)) != 1) return Status::IOError("RAND_bytes failed");
  std::string secret_hex = HexOf(secret, sizeof(secret));
  std::string hash = storage::Sha256(secret_hex).ToHex();
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireUserLocked(user));
  Stmt st(db_, "INSERT INTO tokens (user, name, secret_sha256, created) VALUES (?, ?, ?, ?)");
  st.Text(1, user).Text(2, token).Text(3, hash).Int(4, static_cast<int64_t>(std::time(nullptr)));
  Status s = st.Run();
  if (s.IsConflict()) return Status::AlreadyExists("token " + auth_id + " exists already");
  CAIRN_RETURN_IF_ERROR(s);
  return secret_hex;
}

Result<std::vector<std::string>> AuthStore::ListTokens() {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT user || '!' || name FROM tokens ORDER BY user, name");
  return storage::ReadTextColumn(st);
}

Status AuthStore::DeleteToken(const std::string& auth_id) {
  std::string user, token;
  CAIRN_RETURN_IF_ERROR(SplitTokenId(auth_id, &user, &token));
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(storage::Exec(db_, "BEGIN IMMEDIATE"));
  Stmt del(db_, "DELETE FROM tokens WHERE user = ? AND name = ?");
  del.Text(1, user).Text(2, token);
  Status s = del.Run();
  if (s.ok() && sqlite3_changes(db_) == 0) s = Status::NotFound("no token " + auth_id);
  if (s.ok()) {
    Stmt acl(db_, "DELETE FROM acl WHERE auth_id = ?");
    acl.Text(1, auth_id);
    s = acl.Run();
  }
  CAIRN_RETURN_IF_ERROR(storage::Exec(db_, s.ok() ? "COMMIT" : "ROLLBACK"));
  return s;
}

Status AuthStore::SetPassword(const std::string& user, const std::string& password) {
  CAIRN_RETURN_IF_ERROR(ValidateAuthPart(user, "user"));
  CAIRN_ASSIGN_OR_RETURN(std::string record, HashPassword(password));
  MutexLock lock(&mu_);
  CAIRN_RETURN_IF_ERROR(RequireUserLocked(user));
  Stmt st(db_, "UPDATE users SET password = ? WHERE name = ?");
  st.Text(1, record).Text(2, user);
  return st.Run();
}

Result<Principal> AuthStore::CheckPassword(const std::string& user, const std::string& password) {
  const Status denied = Status::Unauthenticated("authentication failed");
  std::string record;
  if (ValidateAuthPart(user, "user").ok()) {
    MutexLock lock(&mu_);
    Stmt st(db_, "SELECT password FROM users WHERE name = ?");
    st.Text(1, user);
    CAIRN_ASSIGN_OR_RETURN(bool found, st.Step());
    if (found) record = st.ColText(0);
  }
  if (record.empty()) {
    VerifyPassword(password, DummyRecord());
    return denied;
  }
  if (!VerifyPassword(password, record)) return denied;
  if (NeedsRehash(record)) {
    // Only if nobody changed the password meanwhile; a failure here keeps the
    // old (still valid) record and costs nothing but the upgrade.
    auto upgraded = HashPassword(password);
    if (upgraded.ok()) {
      MutexLock lock(&mu_);
      Stmt st(db_, "UPDATE users SET password = ? WHERE name = ? AND password = ?");
      st.Text(1, *upgraded).Text(2, user).Text(3, record);
      (void)st.Run();
    }
  }
  return Principal{user, user};
}

Result<std::string> AuthStore::CredentialStamp(const Principal& p) {
  const Status gone = Status::Unauthenticated("authentication failed");
  std::string user, token;
  const bool is_token = p.auth_id.find('!') != std::string::npos;
  if (is_token && !SplitTokenId(p.auth_id, &user, &token).ok()) return gone;
  MutexLock lock(&mu_);
  Stmt st(db_, is_token ? "SELECT secret_sha256 FROM tokens WHERE user = ? AND name = ?"
                        : "SELECT password FROM users WHERE name = ?");
  if (is_token) {
    st.Text(1, user).Text(2, token);
  } else {
    st.Text(1, p.auth_id);
  }
  CAIRN_ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found || st.ColText(0).empty()) return gone;
  return st.ColText(0);
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
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT secret_sha256 FROM tokens WHERE user = ? AND name = ?");
  st.Text(1, user).Text(2, token);
  auto row = st.Step();
  if (!row.ok()) return row.status();
  if (!*row) return denied;
  std::string stored = st.ColText(0);
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
  MutexLock lock(&mu_);
  Stmt st(db_, "INSERT INTO acl (store, auth_id, role) VALUES (?, ?, ?) "
               "ON CONFLICT (store, auth_id) DO UPDATE SET role = excluded.role");
  st.Text(1, store).Text(2, auth_id).Text(3, RoleName(role));
  return st.Run();
}

Result<std::vector<AclEntry>> AuthStore::ListAcl() {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT store, auth_id, role FROM acl ORDER BY store, auth_id");
  std::vector<AclEntry> out;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    auto role = ParseRole(st.ColText(2));
    if (!role.ok()) return Status::Corruption("acl holds an unknown role: " + st.ColText(2));
    out.push_back({st.ColText(0), st.ColText(1), *role});
  }
  return out;
}

Status AuthStore::RemoveAcl(const std::string& store, const std::string& auth_id) {
  MutexLock lock(&mu_);
  Stmt st(db_, "DELETE FROM acl WHERE store = ? AND auth_id = ?");
  st.Text(1, store).Text(2, auth_id);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("no role of " + auth_id + " on " + store);
  return Status::OK();
}

RoleSet AuthStore::RolesOn(const Principal& p, const std::string& store) {
  MutexLock lock(&mu_);
  Stmt st(db_, "SELECT role FROM acl WHERE auth_id = ? AND (store = ? OR store = '*')");
  st.Text(1, p.auth_id).Text(2, store);
  RoleSet roles;
  // A failed read grants nothing.
  for (auto row = st.Step(); row.ok() && *row; row = st.Step()) {
    auto role = ParseRole(st.ColText(0));
    if (role.ok()) roles.Add(*role);
  }
  return roles;
}

}  // namespace cairn::server
