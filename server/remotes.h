#pragma once

// Remotes: other cairn-servers that sync jobs pull from or push to
// (server/sync.h). A remote is a name, the server's address, the SHA-256
// fingerprint of its certificate (pinned, as the client pins it) and an API
// token of that server. The token's secret is needed to talk to the remote,
// so it is kept as given — in <data>/server.db (table `remotes`, the data
// folder is 0700) — and never shown again: listings and the API give the
// token's auth id only.
//
// The admin command line (`cairn-server remote add|list|remove`) changes the
// table while the server runs; sync jobs read their remote at each run.
//
// Thread safety: RemoteStore is thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/api_client.h"
#include "storage/mutex.h"
#include "storage/status.h"

struct sqlite3;

namespace cairn::server {

using storage::Result;
using storage::Status;

struct Remote {
  std::string name;         // as a datastore name: [A-Za-z0-9_][A-Za-z0-9_.-]{0,31}
  std::string host;         // name, IPv4, or IPv6 without brackets
  int port = 8107;
  std::string fingerprint;  // "AB:CD:…" (NormalizeFingerprint)
  std::string auth_id;      // "user!token"
  std::string secret;       // the token's secret; never leaves the server but to the remote
  int64_t created = 0;

  // "https://HOST:PORT" (IPv6 in brackets).
  std::string Url() const;
  // {"name","url","fingerprint","auth-id","created"}: never the secret.
  nlohmann::json ToJson() const;
  // The connection settings of the client library for datastore `store`
  // of this remote.
  client::Repository RepositoryFor(const std::string& store) const;
};

// A remote from what an admin types: `url` "https://HOST[:PORT][/]"
// (default port 8107), a certificate fingerprint (64 hex digits, colons
// allowed), and a token "USER!TOKEN:SECRET". InvalidArgument naming what is
// wrong; the message never repeats the secret.
Result<Remote> MakeRemote(const std::string& name, const std::string& url,
                          const std::string& fingerprint, const std::string& token);

// The token in the first line of `path` (trailing white space dropped), as
// `cairn --token-file` reads it. InvalidArgument when unreadable or empty.
Result<std::string> ReadTokenFile(const std::string& path);

class RemoteStore {
 public:
  // Opens (creating and migrating) <data_dir>/server.db.
  static Result<std::unique_ptr<RemoteStore>> Open(const std::string& data_dir);
  ~RemoteStore();

  // AlreadyExists for a taken name. `remote.created` 0 means now.
  Status Add(Remote remote);
  // NotFound for an unknown name.
  Status Remove(const std::string& name);
  Result<Remote> Get(const std::string& name);
  // Sorted by name.
  Result<std::vector<Remote>> List();

 private:
  explicit RemoteStore(sqlite3* db) : db_(db) {}
  Mutex mu_;
  sqlite3* db_ CAIRN_GUARDED_BY(mu_);
};

}  // namespace cairn::server
