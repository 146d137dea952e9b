#include "server/remotes.h"

#include <charconv>
#include <ctime>
#include <fstream>

#include "server/server_db.h"
#include "server/tls.h"
#include "storage/names.h"
#include "storage/sqlite_db.h"

namespace cairn::server {
namespace {

constexpr char kColumns[] = "name, host, port, fingerprint, auth_id, secret, created";

Remote RowToRemote(storage::Stmt& st) {
  Remote r;
  r.name = st.ColText(0);
  r.host = st.ColText(1);
  r.port = static_cast<int>(st.ColInt(2));
  r.fingerprint = st.ColText(3);
  r.auth_id = st.ColText(4);
  r.secret = st.ColText(5);
  r.created = st.ColInt(6);
  return r;
}

// "https://HOST[:PORT][/]" into host and port.
Status ParseUrl(const std::string& url, std::string* host, int* port) {
  static constexpr std::string_view kScheme = "https://";
  const Status bad = Status::InvalidArgument("remote url must be https://HOST:PORT, not " + url);
  if (url.compare(0, kScheme.size(), kScheme) != 0) return bad;
  std::string rest = url.substr(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos) return bad;
  std::string port_text;
  if (rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return bad;
    *host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return bad;
      port_text = rest.substr(close + 2);
    }
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    *host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
  } else {
    *host = rest;
  }
  *port = 8107;
  if (!port_text.empty() || rest.back() == ':') {
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), *port);
    if (ec != std::errc() || end != port_text.data() + port_text.size()) return bad;
  }
  if (host->empty() || *port <= 0 || *port > 65535) return bad;
  for (char c : *host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '@' || c == '?' || c == '#') return bad;
  }
  return Status::OK();
}

}  // namespace

std::string Remote::Url() const {
  const std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "https://" + h + ":" + std::to_string(port);
}

nlohmann::json Remote::ToJson() const {
  return {{"name", name}, {"url", Url()}, {"fingerprint", fingerprint},
          {"auth-id", auth_id}, {"created", created}};
}

client::Repository Remote::RepositoryFor(const std::string& store) const {
  client::Repository r;
  r.host = host;
  r.port = port;
  r.store = store;
  r.token = auth_id + ":" + secret;
  for (char c : fingerprint) {
    if (c != ':') r.fingerprint += c;
  }
  return r;
}

Result<Remote> MakeRemote(const std::string& name, const std::string& url,
                          const std::string& fingerprint, const std::string& token) {
  Remote r;
  CAIRN_RETURN_IF_ERROR(
      storage::ValidateName(storage::NameKind::kStore, name).WithContext("remote name"));
  r.name = name;
  CAIRN_RETURN_IF_ERROR(ParseUrl(url, &r.host, &r.port));
  CAIRN_ASSIGN_OR_RETURN(r.fingerprint, NormalizeFingerprint(fingerprint));
  // "USER!TOKEN:SECRET"; the secret is never part of a message.
  const size_t colon = token.find(':');
  const size_t bang = token.find('!');
  const Status bad_token =
      Status::InvalidArgument("the remote's token must be USER!TOKEN:SECRET (an API token)");
  if (colon == std::string::npos || bang == std::string::npos || bang > colon) return bad_token;
  r.auth_id = token.substr(0, colon);
  r.secret = token.substr(colon + 1);
  if (!storage::ValidateName(storage::NameKind::kStore, r.auth_id.substr(0, bang)).ok() ||
      !storage::ValidateName(storage::NameKind::kStore, r.auth_id.substr(bang + 1)).ok() ||
      r.secret.empty() || r.secret.size() > 256) {
    return bad_token;
  }
  for (char c : r.secret) {
    if (static_cast<unsigned char>(c) <= ' ' || static_cast<unsigned char>(c) >= 0x7f) {
      return bad_token;
    }
  }
  return r;
}

Result<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("cannot read token file " + path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
    line.pop_back();
  }
  if (line.empty()) return Status::InvalidArgument("token file " + path + " is empty");
  return line;
}

Result<std::unique_ptr<RemoteStore>> RemoteStore::Open(const std::string& data_dir) {
  CAIRN_ASSIGN_OR_RETURN(sqlite3 * db, OpenServerDb(data_dir));
  return std::unique_ptr<RemoteStore>(new RemoteStore(db));
}

RemoteStore::~RemoteStore() { sqlite3_close(db_); }

Status RemoteStore::Add(Remote remote) {
  if (remote.created == 0) remote.created = static_cast<int64_t>(std::time(nullptr));
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "INSERT INTO remotes (name, host, port, fingerprint, auth_id, secret, "
                        "created) VALUES (?, ?, ?, ?, ?, ?, ?)");
  st.Text(1, remote.name).Text(2, remote.host).Int(3, remote.port).Text(4, remote.fingerprint)
      .Text(5, remote.auth_id).Text(6, remote.secret).Int(7, remote.created);
  Status s = st.Run();
  if (s.IsConflict()) return Status::AlreadyExists("remote " + remote.name + " exists already");
  return s;
}

Status RemoteStore::Remove(const std::string& name) {
  MutexLock lock(&mu_);
  storage::Stmt st(db_, "DELETE FROM remotes WHERE name = ?");
  st.Text(1, name);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (sqlite3_changes(db_) == 0) return Status::NotFound("no remote " + name);
  return Status::OK();
}

Result<Remote> RemoteStore::Get(const std::string& name) {
  MutexLock lock(&mu_);
  const std::string sql = std::string("SELECT ") + kColumns + " FROM remotes WHERE name = ?";
  storage::Stmt st(db_, sql.c_str());
  st.Text(1, name);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Status::NotFound("no remote " + name);
  return RowToRemote(st);
}

Result<std::vector<Remote>> RemoteStore::List() {
  MutexLock lock(&mu_);
  const std::string sql = std::string("SELECT ") + kColumns + " FROM remotes ORDER BY name";
  storage::Stmt st(db_, sql.c_str());
  std::vector<Remote> out;
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(RowToRemote(st));
  }
  return out;
}

}  // namespace cairn::server
