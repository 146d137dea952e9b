#pragma once

// Users, API tokens and per-datastore roles (DESIGN §6).
//
// Auth ids: "USER" for a user, "USER!TOKEN" for one of its API tokens.
// Token secrets are 32 random bytes shown once as 64 hex characters; only
// their SHA-256 is stored (a secret of 256 random bits needs no slow hash).
// A user may have a password (for the web UI's login), stored as a salted
// scrypt record (server/password_hash.h); a user without one cannot log in
// with a password.
//
// Roles per datastore ("*" applies to every datastore):
//   Admin   everything
//   Backup  create backups; list, read and restore the groups it owns; never
//           delete, prune or see other owners' groups
//   Reader  list and read every group of the store
//   Audit   list every group and snapshot, read no data
//
// Stored in its own SQLite file (WAL). Thread safety: all methods are
// thread-safe (one connection behind a mutex).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

using storage::Result;
using storage::Status;

enum class Role { kAudit, kReader, kBackup, kAdmin };

const char* RoleName(Role role);

// A set of roles; roles are not ordered (Backup may write but not read
// others' groups, Reader the reverse), so a principal may hold several.
class RoleSet {
 public:
  void Add(Role r) { bits_ |= 1u << static_cast<unsigned>(r); }
  bool Has(Role r) const { return bits_ & (1u << static_cast<unsigned>(r)); }
  bool empty() const { return bits_ == 0; }

 private:
  unsigned bits_ = 0;
};
Result<Role> ParseRole(const std::string& name);

// Who made a request, after the token was checked.
struct Principal {
  std::string auth_id;  // "user!token"
  std::string user;
};

struct AclEntry {
  std::string store;  // a datastore name or "*"
  std::string auth_id;
  Role role;
};

class AuthStore {
 public:
  // Opens (creating and migrating) the database at `path`.
  static Result<std::unique_ptr<AuthStore>> Open(const std::string& path);
  ~AuthStore();

  // AlreadyExists when the user exists. User names: [A-Za-z0-9_][A-Za-z0-9_.-]{0,31}.
  Status AddUser(const std::string& user);
  Result<std::vector<std::string>> ListUsers();
  // Creates token "USER!NAME" and returns its secret (shown once).
  // NotFound when the user does not exist; AlreadyExists for a second token of that name.
  Result<std::string> CreateToken(const std::string& auth_id);
  Result<std::vector<std::string>> ListTokens();
  // Deletes token "USER!NAME" and its ACL entries (so a new token of that
  // name starts without roles). NotFound when there is no such token.
  Status DeleteToken(const std::string& auth_id);

  // Sets (or replaces) `user`'s password. NotFound for an unknown user,
  // InvalidArgument for an empty or over-long password. Slow (one scrypt).
  Status SetPassword(const std::string& user, const std::string& password);
  // Checks `user`'s password: Principal{user, user}, or Unauthenticated for
  // anything wrong (unknown user, no password, wrong password — same message,
  // and about the same time). A good password stored with weaker parameters
  // than the current ones is rehashed. Slow (one scrypt); the store's mutex
  // is not held while hashing.
  Result<Principal> CheckPassword(const std::string& user, const std::string& password);
  // What `p` authenticated with: the user's password record, or the token's
  // secret hash. A web session remembers it and ends when it changes (a new
  // password, a deleted or recreated token). Unauthenticated when there is
  // none any more.
  Result<std::string> CredentialStamp(const Principal& p);

  // Checks an Authorization header value "CairnToken USER!TOKEN:SECRET".
  // Unauthenticated for anything wrong (same message whatever it was).
  Result<Principal> Authenticate(const std::string& header);

  // Grants `role` on `store` to `auth_id` (replacing an earlier role there).
  Status SetAcl(const std::string& store, const std::string& auth_id, Role role);
  Result<std::vector<AclEntry>> ListAcl();
  // Removes `auth_id`'s entry on `store`. NotFound when there is none.
  Status RemoveAcl(const std::string& store, const std::string& auth_id);
  // Every role `p` holds on `store`, directly or through "*". A token has
  // only its own entries; it does not inherit its user's.
  RoleSet RolesOn(const Principal& p, const std::string& store);

 private:
  explicit AuthStore(sqlite3* db) : db_(db) {}
  // NotFound unless `user` exists.
  Status RequireUserLocked(const std::string& user) CAIRN_REQUIRES(mu_);
  Mutex mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(mu_);
};

// True when `owner` (an auth id) is owned by `p`: the same auth id, or `p` is a
// user and `owner` is one of its tokens.
bool OwnsGroup(const Principal& p, const std::string& owner);

}  // namespace cairn::server
