// Issue 14, "Hostile requests and authorization", against the real
// cairn-server: an endpoint x caller table of expected statuses (every route
// the server registers), hostile names in every name position, hostile chunk
// uploads and session lifecycles, malformed / deeply nested / huge JSON, and
// 500 connections opened and dropped.
//
// Every case checks three things: no 5xx (nor a transport failure where an
// answer is due), the server process still alive and answering, and the
// datastore tree unchanged.
//
// "Datastore tree" here: every regular file under <data>/stores/default —
// chunks, snapshot folders (indexes, blobs, manifests), owner files, the
// staging folder of running sessions, .gc-status.json — by path and the
// SHA-256 of its content. Folders alone and mtimes are not part of it. The
// SQLite databases (cairn.db, server.db, auth.db), the task logs and the
// server log live in <data> outside the store, so they are outside the tree
// by construction: auth and job changes there are the API's purpose.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "storage/blob.h"
#include "storage/crc32c.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"
#include "tests/integration/backup_api_testutil.h"
#include "tests/integration/raw_tls_testutil.h"

namespace cairn::testing {
namespace {

using nlohmann::json;
using storage::Digest;

constexpr int64_t kT0 = 1800000000;  // 2027-01-15T08:00:00Z
constexpr char kSnap0[] = "vm/100/2027-01-15T08:00:00Z";
// A snapshot name of an existing group that does not exist.
constexpr char kNoSnap[] = "vm/100/2030-01-01T00:00:00Z";

// Path -> SHA-256 of every regular file under `dir` (see the file comment).
std::map<std::string, std::string> TreeHashes(const std::string& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    std::ifstream in(it->path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    out[it->path().string().substr(dir.size())] = storage::Sha256(ss.str()).ToHex();
  }
  return out;
}

// A readable difference of two trees; "" when equal.
std::string TreeDiff(const std::map<std::string, std::string>& before,
                     const std::map<std::string, std::string>& after) {
  std::string out;
  for (const auto& [p, h] : before) {
    auto it = after.find(p);
    if (it == after.end())
      out += "  removed " + p + "\n";
    else if (it->second != h)
      out += "  changed " + p + "\n";
  }
  for (const auto& [p, h] : after) {
    if (!before.count(p)) out += "  added   " + p + "\n";
  }
  return out;
}

struct Answer {
  int status = 0;  // -1: no answer (transport error)
  std::string body;
  json Json() const { return json::parse(body, nullptr, false); }
};

// A TLS client that can send any method with any Authorization header and
// any body (ApiClient knows only well-formed tokens and JSON PUTs).
class RawClient {
 public:
  explicit RawClient(int port) : client_("127.0.0.1", port) {
    ::signal(SIGPIPE, SIG_IGN);
    client_.enable_server_certificate_verification(false);
    client_.set_read_timeout(60, 0);
    client_.set_write_timeout(60, 0);
    client_.set_keep_alive(true);
  }
  // `authorization`: the whole header value, none when empty.
  Answer Send(const std::string& method, const std::string& path, const std::string& authorization,
              const std::string& body = "", const std::string& content_type = "application/json") {
    httplib::Request req;
    req.method = method;
    req.path = path;
    if (!authorization.empty()) req.headers.emplace("Authorization", authorization);
    if (method != "GET" && method != "HEAD") {
      req.body = body;
      req.headers.emplace("Content-Type", content_type);
    }
    auto r = client_.send(req);
    if (!r) return {-1, "transport error " + httplib::to_string(r.error())};
    return {r->status, r->body};
  }

 private:
  httplib::SSLClient client_;
};

// 4xx with a JSON {"error": "<non-empty>"}; "" when so, else what is wrong.
std::string NotA4xxWithMessage(const Answer& a) {
  if (a.status < 400 || a.status >= 500) {
    return "status " + std::to_string(a.status) + " " + a.body.substr(0, 200);
  }
  json j = a.Json();
  if (!j.is_object() || !j.contains("error") || !j["error"].is_string() ||
      j["error"].get<std::string>().empty()) {
    return "status " + std::to_string(a.status) + " without a JSON error: " + a.body.substr(0, 200);
  }
  return "";
}

// A blob of kind `kind` around `payload` with a correct CRC (so only what is
// inside can be wrong).
std::string BlobWithCrc(storage::BlobKind kind, const std::string& payload) {
  std::string blob(storage::BlobMagic(kind));
  const uint32_t crc = storage::Crc32c(payload);
  for (int i = 0; i < 4; ++i) blob.push_back(static_cast<char>(crc >> (8 * i)));
  return blob + payload;
}

class HostileRequestsTest : public LiveServerTest {
 protected:
  std::map<std::string, std::string> Tree() const { return TreeHashes(StorePath()); }
  std::string Auth(const std::string& token) const { return "CairnToken " + token; }

  // Fails with `what` unless `a` is a 4xx with a JSON error message.
  void Expect4xx(const std::string& what, const Answer& a) {
    const std::string bad = NotA4xxWithMessage(a);
    EXPECT_EQ(bad, "") << what;
  }
  void Expect4xx(const std::string& what, const ApiClient::Response& r) {
    Expect4xx(what, Answer{r.status, r.body});
  }
};

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// ---------------------------------------------------------------------------
// 1. Endpoint x caller table.

enum Caller {
  kNoAuth,
  kMalformed,
  kRevoked,
  kAudit,
  kReader,
  kBackup,
  kStoreAdmin,
  kAdmin,
  kCallers
};
constexpr std::array<const char*, kCallers> kCallerNames = {
    "no auth", "malformed token", "revoked token",    "Audit",
    "Reader",  "Backup",          "Admin on default", "Admin on *"};

// Every route the server registers, as registered (http->Get/Post/Put/Delete
// in server/api_*.cc, installed by RegisterRoutes in server/api_status.cc):
//   grep -n 'http->\(Get\|Post\|Put\|Delete\)' server/*.cc   -> 49 routes.
// The table below must name each of them, and this list must equal the
// routes the sources register (RoutesInSources, read at test time): a route
// added to the server without a row here fails the test.
const std::vector<std::string> kRegisteredRoutes = {
    // api_status.cc
    "GET /api/v1/version",
    "GET /api/v1/status",
    "GET /api/v1/datastores",
    // api_snapshots.cc
    "GET /api/v1/datastores/([^/]+)/groups",
    "GET /api/v1/datastores/([^/]+)/snapshots",
    "DELETE /api/v1/datastores/([^/]+)/snapshots",
    "PUT /api/v1/datastores/([^/]+)/snapshots/(protected|notes)",
    // api_maintenance.cc
    "POST /api/v1/datastores/([^/]+)/prune",
    "POST /api/v1/datastores/([^/]+)/gc",
    "GET /api/v1/datastores/([^/]+)/gc",
    "POST /api/v1/datastores/([^/]+)/verify",
    // api_tasks.cc
    "GET /api/v1/tasks",
    "GET /api/v1/tasks/([^/]+)",
    "GET /api/v1/tasks/([^/]+)/log",
    "GET /api/v1/jobs",
    "POST /api/v1/jobs/([^/]+)/run",
    // api_backup.cc
    "POST /api/v1/datastores/([^/]+)/backup",
    "GET /api/v1/backup/([0-9a-f]{32})/previous-index",
    "POST /api/v1/backup/([0-9a-f]{32})/chunk",
    "POST /api/v1/backup/([0-9a-f]{32})/(index|blob)",
    "POST /api/v1/backup/([0-9a-f]{32})/finish",
    "GET /api/v1/backup/([0-9a-f]{32})/stats",
    "POST /api/v1/backup/([0-9a-f]{32})/abort",
    // api_reader.cc
    "POST /api/v1/datastores/([^/]+)/reader",
    "GET /api/v1/datastores/([^/]+)/download",
    "GET /api/v1/reader/([0-9a-f]{32})/manifest",
    "GET /api/v1/reader/([0-9a-f]{32})/archive",
    "GET /api/v1/reader/([0-9a-f]{32})/chunk",
    "DELETE /api/v1/reader/([0-9a-f]{32})",
    // api_jobs.cc
    "POST /api/v1/jobs",
    "PUT /api/v1/jobs/([^/]+)",
    "DELETE /api/v1/jobs/([^/]+)",
    "GET /api/v1/calendar/next",
    // api_access.cc
    "GET /api/v1/access/users",
    "POST /api/v1/access/users",
    "PUT /api/v1/access/users/([^/]+)/password",
    "GET /api/v1/access/tokens",
    "POST /api/v1/access/tokens",
    "DELETE /api/v1/access/tokens/([^/]+)",
    "GET /api/v1/access/acl",
    "PUT /api/v1/access/acl",
    // api_remotes.cc
    "GET /api/v1/remotes",
    "POST /api/v1/remotes",
    "DELETE /api/v1/remotes/([^/]+)",
    // api_login.cc
    "POST /api/v1/login",
    "GET /api/v1/session",
    "POST /api/v1/logout",
    // api_metrics.cc
    "GET /metrics",
    // api_web.cc (the static web UI)
    "GET /(?!api/).*",
};

// The routes server/*.cc registers, read from the sources ("METHOD pattern"):
// every `http->Get(`, `Post(`, `Put(`, `Delete(`, `Patch(`, `Options(` with
// its pattern literal. The sources are found through $CAIRN_SOURCE_DIR (set
// by CTest) or else the build's CMakeCache.txt.
std::set<std::string> RoutesInSources() {
  std::string root;
  if (const char* env = std::getenv("CAIRN_SOURCE_DIR")) root = env;
  if (root.empty()) {
    // The build's CMakeCache.txt (the binary is <build>/tests/...) names it.
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    std::ifstream cache(exe.parent_path().parent_path() / "CMakeCache.txt");
    const std::string key = "CMAKE_HOME_DIRECTORY:INTERNAL=";
    for (std::string line; std::getline(cache, line);) {
      if (line.rfind(key, 0) == 0) root = line.substr(key.size());
    }
  }
  std::set<std::string> out;
  std::error_code ec;
  const std::regex route(
      R"re(http->(Get|Post|Put|Delete|Patch|Options)\(\s*(R"\(([\s\S]*?)\)"|"([^"]*)"))re");
  for (const auto& e : std::filesystem::directory_iterator(root + "/server", ec)) {
    if (e.path().extension() != ".cc") continue;
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    for (std::sregex_iterator it(text.begin(), text.end(), route), end; it != end; ++it) {
      std::string method = (*it)[1];
      for (auto& ch : method) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      out.insert(method + " " + ((*it)[3].matched ? (*it)[3].str() : (*it)[4].str()));
    }
  }
  return out;
}

struct Row {
  std::string method;
  std::string route;  // as registered (kRegisteredRoutes)
  // The request: {sid}, {rid} are the Admin-on-* token's backup and reader
  // sessions; {caller} is the caller's index (to give each its own name).
  std::string path;
  std::string body;
  std::array<int, kCallers> expect;
};

// Expected statuses per caller, in kCallerNames order. The requests are
// chosen so that a caller the policy allows gets an answer that changes no
// datastore file (a read, or a 4xx after the role check: an unknown object,
// a protected snapshot, a body the endpoint refuses), and every other caller
// the role refusal (403), or 401 without valid credentials.
// Sessions belong to the token that started them: other tokens get 404 (not
// 403, so that a session id's existence does not leak).
std::vector<Row> Table(const std::string& d0) {
  const std::string del_snap = std::string("?snapshot=") + Q(kSnap0);
  const std::string no_snap = std::string("?snapshot=") + Q(kNoSnap);
  // clang-format off
  //                                   none malf revk Audit Readr Backp AdmS  Adm*
  constexpr std::array<int, kCallers> kAny = {401, 401, 401, 200, 200, 200, 200, 200};
  constexpr std::array<int, kCallers> kAdminOnStar = {401, 401, 401, 403, 403, 403, 403, 200};
  auto admin_star = [&](int admin) {
    auto e = kAdminOnStar;
    e[kAdmin] = admin;
    return e;
  };
  // The Admin-on-* token's sessions: 404 for every other token.
  auto own_session = [](int admin) {
    std::array<int, kCallers> e = {401, 401, 401, 404, 404, 404, 404, admin};
    return e;
  };
  return {
      {"GET", "GET /api/v1/version", "/api/v1/version", "",
       {200, 200, 200, 200, 200, 200, 200, 200}},
      {"GET", "GET /api/v1/status", "/api/v1/status", "", kAny},
      {"GET", "GET /api/v1/datastores", "/api/v1/datastores", "", kAny},
      {"GET", "GET /api/v1/datastores/([^/]+)/groups", "/api/v1/datastores/default/groups", "",
       kAny},
      // vm/100 belongs to the Admin-on-* token: Backup may not see it.
      {"GET", "GET /api/v1/datastores/([^/]+)/snapshots",
       "/api/v1/datastores/default/snapshots?group=vm%2F100", "",
       {401, 401, 401, 200, 200, 403, 200, 200}},
      // kSnap0 is protected: Admin passes the role check and gets 409.
      {"DELETE", "DELETE /api/v1/datastores/([^/]+)/snapshots",
       "/api/v1/datastores/default/snapshots" + del_snap, "",
       {401, 401, 401, 403, 403, 403, 409, 409}},
      {"PUT", "PUT /api/v1/datastores/([^/]+)/snapshots/(protected|notes)",
       "/api/v1/datastores/default/snapshots/protected" + no_snap, R"({"protected": true})",
       {401, 401, 401, 403, 403, 403, 404, 404}},
      {"PUT", "PUT /api/v1/datastores/([^/]+)/snapshots/(protected|notes)",
       "/api/v1/datastores/default/snapshots/notes" + no_snap, R"({"notes": "x"})",
       {401, 401, 401, 403, 403, 403, 404, 404}},
      {"POST", "POST /api/v1/datastores/([^/]+)/prune", "/api/v1/datastores/default/prune",
       R"({"group": "vm/999", "keep-last": 1})", {401, 401, 401, 403, 403, 403, 404, 404}},
      // Before the GC below: none has run yet.
      {"GET", "GET /api/v1/datastores/([^/]+)/gc", "/api/v1/datastores/default/gc", "",
       {401, 401, 401, 404, 403, 403, 404, 404}},
      // A dry run changes no file (the second one fails as a task: one GC
      // per store at a time).
      {"POST", "POST /api/v1/datastores/([^/]+)/gc", "/api/v1/datastores/default/gc",
       R"({"dry-run": true})", {401, 401, 401, 403, 403, 403, 202, 202}},
      {"POST", "POST /api/v1/datastores/([^/]+)/verify", "/api/v1/datastores/default/verify",
       std::string(R"({"target": ")") + kNoSnap + "\"}", {401, 401, 401, 403, 202, 403, 202, 202}},
      {"GET", "GET /api/v1/tasks", "/api/v1/tasks", "", kAny},
      {"GET", "GET /api/v1/tasks/([^/]+)", "/api/v1/tasks/no-such-task", "",
       {401, 401, 401, 404, 404, 404, 404, 404}},
      {"GET", "GET /api/v1/tasks/([^/]+)/log", "/api/v1/tasks/no-such-task/log", "",
       {401, 401, 401, 404, 404, 404, 404, 404}},
      // A filtered list: Reader and Backup see no job (checked below).
      {"GET", "GET /api/v1/jobs", "/api/v1/jobs", "", kAny},
      {"POST", "POST /api/v1/jobs/([^/]+)/run", "/api/v1/jobs/no-such-job/run", "",
       {401, 401, 401, 404, 404, 404, 404, 404}},
      // vm/100 has a running session (the Admin-on-* token's {sid}).
      {"POST", "POST /api/v1/datastores/([^/]+)/backup", "/api/v1/datastores/default/backup",
       R"({"group": "vm/100", "time": 1800000500})", {401, 401, 401, 403, 403, 403, 409, 409}},
      {"GET", "GET /api/v1/backup/([0-9a-f]{32})/previous-index",
       "/api/v1/backup/{sid}/previous-index?archive=drive0.fidx", "", own_session(200)},
      {"POST", "POST /api/v1/backup/([0-9a-f]{32})/chunk",
       "/api/v1/backup/{sid}/chunk?digest=" + d0 + "&size=1", "not a blob", own_session(400)},
      {"POST", "POST /api/v1/backup/([0-9a-f]{32})/(index|blob)",
       "/api/v1/backup/{sid}/index?archive=x.fidx", "not an index", own_session(400)},
      {"POST", "POST /api/v1/backup/([0-9a-f]{32})/(index|blob)",
       "/api/v1/backup/{sid}/blob?archive=x.blob", "not a blob", own_session(400)},
      // No archive written yet: 400, and the session stays open.
      {"POST", "POST /api/v1/backup/([0-9a-f]{32})/finish", "/api/v1/backup/{sid}/finish", "{}",
       own_session(400)},
      {"GET", "GET /api/v1/backup/([0-9a-f]{32})/stats", "/api/v1/backup/{sid}/stats", "",
       own_session(200)},
      {"POST", "POST /api/v1/backup/([0-9a-f]{32})/abort", "/api/v1/backup/{sid}/abort", "",
       own_session(200)},
      {"POST", "POST /api/v1/datastores/([^/]+)/reader", "/api/v1/datastores/default/reader",
       std::string(R"({"snapshot": ")") + kSnap0 + "\"}", {401, 401, 401, 403, 201, 403, 201, 201}},
      {"GET", "GET /api/v1/datastores/([^/]+)/download",
       "/api/v1/datastores/default/download" + del_snap + "&archive=drive0.fidx", "",
       {401, 401, 401, 403, 200, 403, 200, 200}},
      {"GET", "GET /api/v1/reader/([0-9a-f]{32})/manifest", "/api/v1/reader/{rid}/manifest", "",
       own_session(200)},
      {"GET", "GET /api/v1/reader/([0-9a-f]{32})/archive",
       "/api/v1/reader/{rid}/archive?archive=drive0.fidx", "", own_session(200)},
      {"GET", "GET /api/v1/reader/([0-9a-f]{32})/chunk", "/api/v1/reader/{rid}/chunk?digest=" + d0,
       "", own_session(200)},
      {"DELETE", "DELETE /api/v1/reader/([0-9a-f]{32})", "/api/v1/reader/{rid}", "",
       own_session(200)},
      // A store that does not exist: Admin on * gets 404 after the role check.
      {"POST", "POST /api/v1/jobs", "/api/v1/jobs",
       R"({"id": "hostile", "kind": "gc", "store": "nostore", "schedule": "daily"})",
       {401, 401, 401, 403, 403, 403, 403, 404}},
      // Unknown jobs are 404 for every role (the store, and so the role
      // needed, is the job's); job "hj" exists, on store default.
      {"PUT", "PUT /api/v1/jobs/([^/]+)", "/api/v1/jobs/no-such-job", R"({"enabled": false})",
       {401, 401, 401, 404, 404, 404, 404, 404}},
      {"PUT", "PUT /api/v1/jobs/([^/]+)", "/api/v1/jobs/hj", R"({"schedule": "not a schedule"})",
       {401, 401, 401, 403, 403, 403, 400, 400}},
      {"DELETE", "DELETE /api/v1/jobs/([^/]+)", "/api/v1/jobs/no-such-job", "",
       {401, 401, 401, 404, 404, 404, 404, 404}},
      // The first Admin deletes it; for the second it is gone.
      {"DELETE", "DELETE /api/v1/jobs/([^/]+)", "/api/v1/jobs/hj", "",
       {401, 401, 401, 403, 403, 403, 200, 404}},
      {"GET", "GET /api/v1/calendar/next", "/api/v1/calendar/next?schedule=daily", "",
       {401, 401, 401, 403, 403, 403, 200, 200}},
      {"GET", "GET /api/v1/access/users", "/api/v1/access/users", "", admin_star(200)},
      {"POST", "POST /api/v1/access/users", "/api/v1/access/users", R"({"user": "admin"})",
       admin_star(409)},
      {"PUT", "PUT /api/v1/access/users/([^/]+)/password", "/api/v1/access/users/nobody/password",
       R"({"password": "a long enough password"})", admin_star(404)},
      {"GET", "GET /api/v1/access/tokens", "/api/v1/access/tokens", "", admin_star(200)},
      {"POST", "POST /api/v1/access/tokens", "/api/v1/access/tokens",
       R"({"auth_id": "nobody!t"})", admin_star(404)},
      {"DELETE", "DELETE /api/v1/access/tokens/([^/]+)", "/api/v1/access/tokens/nobody!t", "",
       admin_star(404)},
      {"GET", "GET /api/v1/access/acl", "/api/v1/access/acl", "", admin_star(200)},
      {"PUT", "PUT /api/v1/access/acl", "/api/v1/access/acl",
       R"({"store": "default", "auth_id": "nobody!t", "role": null})", admin_star(404)},
      {"GET", "GET /api/v1/remotes", "/api/v1/remotes", "", admin_star(200)},
      {"POST", "POST /api/v1/remotes", "/api/v1/remotes",
       R"({"name": "r1", "url": "https://127.0.0.1:1", "fingerprint": "zz", "token": "a!b:c"})",
       admin_star(400)},
      {"DELETE", "DELETE /api/v1/remotes/([^/]+)", "/api/v1/remotes/no-such-remote", "",
       admin_star(404)},
      // No auth needed; a wrong password is 401 for everyone. The login
      // limiter counts failures per address too: the first 5 are free, the
      // sixth on is 429.
      {"POST", "POST /api/v1/login", "/api/v1/login",
       R"({"user": "nobody{caller}", "password": "wrong"})",
       {401, 401, 401, 401, 401, 429, 429, 429}},
      // Only a cookie counts here: token callers have no web session.
      {"GET", "GET /api/v1/session", "/api/v1/session", "",
       {401, 401, 401, 401, 401, 401, 401, 401}},
      {"POST", "POST /api/v1/logout", "/api/v1/logout", "", kAny},
      {"GET", "GET /metrics", "/metrics", "", {401, 401, 401, 200, 403, 403, 200, 200}},
      {"GET", "GET /(?!api/).*", "/index.html", "", {200, 200, 200, 200, 200, 200, 200, 200}},
  };
  // clang-format on
}

TEST_F(HostileRequestsTest, EndpointByCallerTable) {
  // Callers. The revoked token had Admin on *: revocation must beat the role.
  std::array<std::string, kCallers> auth;
  auth[kNoAuth] = "";
  auth[kMalformed] = "CairnToken not-a-token";
  const std::string revoked = AddUserToken(dir_.path(), "revoked", "Admin");
  ASSERT_EQ(admin_->Delete("/api/v1/access/tokens/revoked!t").status, 200);
  auth[kRevoked] = Auth(revoked);
  auth[kAudit] = Auth(AddUserToken(dir_.path(), "audit", "Audit"));
  auth[kReader] = Auth(AddUserToken(dir_.path(), "reader", "Reader"));
  const std::string backup_token = AddUserToken(dir_.path(), "backup", "Backup");
  auth[kBackup] = Auth(backup_token);
  auth[kStoreAdmin] = Auth(AddUserToken(dir_.path(), "storeadmin", "Admin"));
  auth[kAdmin] = Auth(server_->AdminToken());

  // Fixture: vm/100 of the Admin-on-* token (protected), vm/101 of Backup.
  const std::string img = MakeImage(1, 7);
  BackupImage(*admin_, "vm/100", kT0, img);
  ApiClient backup(server_->port(), backup_token);
  BackupImage(backup, "vm/101", kT0, MakeImage(1, 8));
  ASSERT_EQ(
      admin_
          ->Put(std::string("/api/v1/datastores/default/snapshots/protected?snapshot=") + Q(kSnap0),
                {{"protected", true}})
          .status,
      200);
  auto job = admin_->PostJson("/api/v1/jobs", {{"id", "hj"},
                                               {"kind", "prune"},
                                               {"store", "default"},
                                               {"schedule", "daily"},
                                               {"enabled", false},
                                               {"options", {{"group", "vm/999"}}}});
  ASSERT_EQ(job.status, 201) << job.body;
  {
    // GET /jobs filters instead of refusing: only Admin and Audit see "hj".
    RawClient c(server_->port());
    for (int caller : {kAudit, kReader, kBackup, kStoreAdmin}) {
      Answer a = c.Send("GET", "/api/v1/jobs", auth[caller]);
      ASSERT_EQ(a.status, 200) << a.body;
      const bool sees = a.Json().is_array() && a.Json().size() == 1;
      EXPECT_EQ(sees, caller == kAudit || caller == kStoreAdmin)
          << kCallerNames[caller] << ": " << a.body;
    }
  }
  // The first GC leaves its lock file (.gc.lock) in the store; a dry run
  // changes nothing else.
  ASSERT_EQ(admin_->PostTask("/api/v1/datastores/default/gc", {{"dry-run", true}}).status, 200);
  const auto before = Tree();
  const std::string sid = StartBackup(*admin_, "vm/100", kT0 + 100)["session"];
  auto rr = admin_->PostJson("/api/v1/datastores/default/reader", {{"snapshot", kSnap0}});
  ASSERT_EQ(rr.status, 201) << rr.body;
  const std::string rid = rr.Json()["session"];
  const std::string d0 = storage::Sha256(ChunkOf(img, 0)).ToHex();

  const std::vector<Row> table = Table(d0);
  // Every registered route has a row, and every row names a registered route.
  std::set<std::string> covered, registered(kRegisteredRoutes.begin(), kRegisteredRoutes.end());
  for (const auto& row : table) covered.insert(row.route);
  EXPECT_EQ(registered.size(), 49u);
  // ... and the list is the one the server's sources register.
  const std::set<std::string> in_sources = RoutesInSources();
  EXPECT_EQ(in_sources, registered) << "server/*.cc registers routes this table does not know (or "
                                       "the sources were not found: set CAIRN_SOURCE_DIR)";
  for (const auto& r : registered) EXPECT_TRUE(covered.count(r)) << "no row for " << r;
  for (const auto& r : covered) EXPECT_TRUE(registered.count(r)) << "row for unknown route " << r;

  RawClient client(server_->port());
  std::string diff;
  int mismatches = 0, server_errors = 0;
  for (const auto& row : table) {
    for (int c = 0; c < kCallers; ++c) {
      std::string path = Replace(Replace(row.path, "{sid}", sid), "{rid}", rid);
      std::string body = Replace(row.body, "{caller}", std::to_string(c));
      Answer a = client.Send(row.method, path, auth[c], body);
      if (a.status >= 500 || a.status < 0) ++server_errors;
      std::string note;
      if (a.status >= 400 && a.status != row.expect[c])
        note = " " + a.body.substr(0, 120);
      else if (a.status >= 400 && row.route != "GET /(?!api/).*") {
        // Every refusal carries a JSON message.
        const std::string bad = NotA4xxWithMessage(a);
        if (!bad.empty()) note = " (" + bad + ")";
      }
      if (a.status != row.expect[c] || !note.empty()) {
        ++mismatches;
        diff += "  " + row.method + " " + path + " as " + kCallerNames[c] + ": expected " +
                std::to_string(row.expect[c]) + ", got " + std::to_string(a.status) + note + "\n";
      }
    }
  }
  std::cout << "endpoint x caller table: " << table.size() << " rows (" << registered.size()
            << " routes) x " << kCallers << " callers = " << table.size() * kCallers << " cells\n";
  EXPECT_EQ(mismatches, 0) << "mismatching cells:\n" << diff;
  EXPECT_EQ(server_errors, 0);
  ASSERT_TRUE(Alive());
  EXPECT_EQ(TreeDiff(before, Tree()), "");
}

// ---------------------------------------------------------------------------
// 2. Hostile names in every name position.

TEST_F(HostileRequestsTest, HostileNamesAreRefusedWithAMessage) {
  const std::string img = MakeImage(1, 9);
  BackupImage(*admin_, "vm/100", kT0, img);
  const std::string sid = StartBackup(*admin_, "vm/100", kT0 + 100)["session"];
  auto rr = admin_->PostJson("/api/v1/datastores/default/reader", {{"snapshot", kSnap0}});
  ASSERT_EQ(rr.status, 201) << rr.body;
  const std::string rid = rr.Json()["session"];
  const auto before = Tree();

  struct Bad {
    std::string what;
    std::string raw;    // in JSON bodies
    std::string query;  // in a query string or a path segment, as sent
  };
  const std::string ten_k(10240, 'a');
  const std::vector<Bad> bads = {
      {"..", "..", ".."},        {"/", "a/b", "a%2Fb"},
      {"%2f", "a%2fb", "a%2fb"}, {"NUL", std::string("a\0b", 3), "a%00b"},
      {"10 KB", ten_k, ten_k},   {"leading dot", ".hidden", ".hidden"},
  };
  RawClient client(server_->port());
  const std::string auth = Auth(server_->AdminToken());
  const std::string pre = "/api/v1/datastores/default";
  int cases = 0;
  auto check = [&](const std::string& what, const Answer& a) {
    ++cases;
    Expect4xx(what, a);
  };
  for (const auto& b : bads) {
    const std::string w = "[" + b.what + "] ";
    // Store, in the path.
    check(w + "store in groups",
          client.Send("GET", "/api/v1/datastores/" + b.query + "/groups", auth));
    check(w + "store in backup", client.Send("POST", "/api/v1/datastores/" + b.query + "/backup",
                                             auth, json{{"group", "vm/200"}}.dump()));
    check(w + "store in reader", client.Send("POST", "/api/v1/datastores/" + b.query + "/reader",
                                             auth, json{{"snapshot", kSnap0}}.dump()));
    // Group: type, id and namespace positions. In a namespace `/` separates
    // components ("a/b:vm/100" is valid), so there the hostile form is an
    // empty component ("a//b").
    const std::string ns_raw = Replace(b.raw, "/", "//");
    const std::string ns_query = Replace(Replace(b.query, "%2F", "%2F%2F"), "%2f", "%2f%2f");
    for (const std::string& g : {"vm/" + b.raw, b.raw + "/100", ns_raw + ":vm/100"}) {
      check(w + "group " + g.substr(0, 30) + " in backup",
            client.Send("POST", pre + "/backup", auth,
                        json{{"group", g}, {"time", kT0 + 200}}.dump()));
      check(w + "group in verify",
            client.Send("POST", pre + "/verify", auth, json{{"target", g}}.dump()));
      check(w + "group in prune",
            client.Send("POST", pre + "/prune", auth, json{{"group", g}, {"keep-last", 1}}.dump()));
    }
    for (const std::string& g : {"vm%2F" + b.query, b.query + "%2F100", ns_query + "%3Avm%2F100"}) {
      check(w + "group in snapshots", client.Send("GET", pre + "/snapshots?group=" + g, auth));
    }
    // Snapshot: the time part, and a whole hostile name.
    for (const std::string& s : {"vm/100/" + b.raw, b.raw}) {
      check(w + "snapshot in reader",
            client.Send("POST", pre + "/reader", auth, json{{"snapshot", s}}.dump()));
      check(w + "snapshot in verify",
            client.Send("POST", pre + "/verify", auth, json{{"target", s}}.dump()));
    }
    for (const std::string& s : {"vm%2F100%2F" + b.query, b.query}) {
      check(w + "snapshot in delete",
            client.Send("DELETE", pre + "/snapshots?snapshot=" + s, auth));
      check(w + "snapshot in protected",
            client.Send("PUT", pre + "/snapshots/protected?snapshot=" + s, auth,
                        R"({"protected": false})"));
      check(w + "snapshot in notes",
            client.Send("PUT", pre + "/snapshots/notes?snapshot=" + s, auth, R"({"notes": "x"})"));
      check(w + "snapshot in download",
            client.Send("GET", pre + "/download?snapshot=" + s + "&archive=drive0.fidx", auth));
    }
    // Archive: bare and with its extension.
    for (const std::string& a : {b.query, b.query + ".fidx", b.query + ".blob"}) {
      check(w + "archive in index",
            client.Send("POST", "/api/v1/backup/" + sid + "/index?archive=" + a, auth, "x",
                        "application/octet-stream"));
      check(w + "archive in blob",
            client.Send("POST", "/api/v1/backup/" + sid + "/blob?archive=" + a, auth,
                        storage::EncodeBlob("hello"), "application/octet-stream"));
      check(w + "archive in previous-index",
            client.Send("GET", "/api/v1/backup/" + sid + "/previous-index?archive=" + a, auth));
      check(w + "archive in reader",
            client.Send("GET", "/api/v1/reader/" + rid + "/archive?archive=" + a, auth));
      check(w + "archive in download",
            client.Send("GET", pre + "/download?snapshot=" + Q(kSnap0) + "&archive=" + a, auth));
    }
  }
  // Other names and numbers in paths and query strings.
  const std::string ten_k_q(10240, 'a');
  for (const std::string& q : {
           std::string("/api/v1/tasks/..%2F..%2Fetc"),
           "/api/v1/tasks/" + ten_k_q,
           std::string("/api/v1/tasks/a%00b/log"),
           std::string("/api/v1/tasks/.hidden/log"),
           std::string("/api/v1/calendar/next?schedule=%00"),
           "/api/v1/calendar/next?schedule=" + ten_k_q,
           std::string("/api/v1/calendar/next?schedule=daily&count=-1"),
           std::string("/api/v1/calendar/next?schedule=daily&count=99999999999999999999"),
           std::string("/api/v1/calendar/next?schedule=daily&from=-5"),
           pre + "/snapshots?limit=-1",
           pre + "/snapshots?offset=18446744073709551616",
           pre + "/snapshots?order=sideways",
           pre + "/groups?q=" + ten_k_q,
           "/api/v1/reader/" + rid + "/chunk?digest=" + std::string(64, 'z'),
           "/api/v1/reader/" + rid + "/chunk?digest=%00",
           "/api/v1/reader/" + rid + "/chunk?digest=" + std::string(63, '0'),
       }) {
    check("query " + q.substr(0, 80), client.Send("GET", q, auth));
  }
  std::cout << cases << " hostile-name requests\n";
  ASSERT_TRUE(Alive());
  EXPECT_EQ(TreeDiff(before, Tree()), "");
  // The session took nothing from them: it still commits and restores.
  UploadImage(*admin_, sid, "drive0.fidx", img, {});
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);
}

// ---------------------------------------------------------------------------
// 3. Chunk uploads, indexes and session lifecycles.

TEST_F(HostileRequestsTest, HostileUploadsAndSessionMisuse) {
  const std::string img = MakeImage(2, 10);
  const std::string sid = StartBackup(*admin_, "vm/100", kT0)["session"];
  const std::string chunk = ChunkOf(img, 1);  // text-like: compresses
  const Digest d = storage::Sha256(chunk);
  const std::string blob = storage::EncodeBlob(chunk);
  ASSERT_EQ(storage::PeekBlobKind(blob), storage::BlobKind::kZstd);
  const std::string url = "/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex() +
                          "&size=" + std::to_string(chunk.size());
  const auto before = Tree();

  RawClient client(server_->port());
  const std::string auth = Auth(server_->AdminToken());
  auto post = [&](const std::string& u, const std::string& body) {
    return client.Send("POST", u, auth, body, "application/octet-stream");
  };
  const std::string frame = blob.substr(storage::kBlobHeaderSize);
  std::string flipped = frame;
  for (size_t i = frame.size() / 3; i < frame.size() / 3 + 16; ++i) flipped[i] ^= 0x5a;
  std::string bad_magic = frame;
  bad_magic[0] ^= 1;  // not a zstd frame at all
  const std::string base = "/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex() + "&size=";
  const std::vector<std::pair<std::string, Answer>> cases = {
      {"wrong digest",
       post("/api/v1/backup/" + sid + "/chunk?digest=" + storage::Sha256("other").ToHex() +
                "&size=" + std::to_string(chunk.size()),
            blob)},
      {"size too small", post(base + std::to_string(chunk.size() - 1), blob)},
      {"size too large", post(base + std::to_string(chunk.size() + 1), blob)},
      {"size 0", post(base + "0", blob)},
      {"size negative", post(base + "-1", blob)},
      {"size 2^64", post(base + "18446744073709551616", blob)},
      {"size over 16 MiB", post(base + std::to_string(17 << 20), blob)},
      {"no size", post("/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex(), blob)},
      {"truncated body", post(url, blob.substr(0, blob.size() / 2))},
      {"header only", post(url, blob.substr(0, storage::kBlobHeaderSize))},
      {"empty body", post(url, "")},
      {"corrupt zstd frame, CRC right", post(url, BlobWithCrc(storage::BlobKind::kZstd, flipped))},
      {"not a zstd frame, CRC right", post(url, BlobWithCrc(storage::BlobKind::kZstd, bad_magic))},
      {"zstd frame cut short, CRC right",
       post(url, BlobWithCrc(storage::BlobKind::kZstd, frame.substr(0, frame.size() - 7)))},
      {"zstd frame of other data", post(url, storage::EncodeBlob(chunk + "x"))},
      {"plain blob, one byte short",
       post(url, BlobWithCrc(storage::BlobKind::kPlain, chunk.substr(1)))},
      {"oversized body (17 MiB)", post(url, std::string(17 << 20, 'a'))},
      {"index, unregistered digest",
       post("/api/v1/backup/" + sid + "/index?archive=d.fidx", FixedIndexBytes({d}, chunk.size()))},
  };
  for (const auto& [what, a] : cases) Expect4xx(what, a);
  ASSERT_TRUE(Alive());
  EXPECT_EQ(TreeDiff(before, Tree()), "") << "after the bad chunks";

  // Lying lengths, truncated and oversized bodies on raw connections.
  const std::string head = "POST " + url + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
                           "\r\nContent-Type: application/octet-stream\r\n";
  {
    // Declares more than it sends, then hangs up: nothing is stored.
    auto t = RawTls::Connect(server_->port());
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(
        t->Send(head + "Content-Length: " + std::to_string(blob.size() + 1000) + "\r\n\r\n"));
    ASSERT_TRUE(t->Send(blob));
  }
  {
    // Declares less than it sends: the blob is cut (400); the rest is not a
    // request (400 or a close).
    auto t = RawTls::Connect(server_->port());
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(
        t->Send(head + "Content-Length: " + std::to_string(blob.size() - 100) + "\r\n\r\n" + blob));
    const std::string answer = t->ReadAnswer(10000);
    EXPECT_EQ(StatusOf(answer), 400) << answer.substr(0, 300);
  }
  {
    // Declares 17 MiB: 413 before the body is read.
    auto t = RawTls::Connect(server_->port());
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(t->Send(head + "Content-Length: " + std::to_string(17 << 20) + "\r\n\r\n"));
    const std::string answer = t->ReadAnswer(10000);
    EXPECT_EQ(StatusOf(answer), 413) << answer.substr(0, 300);
  }
  {
    // Half the body, then silence for a moment, then a hang-up.
    auto t = RawTls::Connect(server_->port());
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(t->Send(head + "Content-Length: " + std::to_string(blob.size()) + "\r\n\r\n" +
                        blob.substr(0, blob.size() / 2)));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(Alive());
  EXPECT_EQ(TreeDiff(before, Tree()), "") << "after the lying lengths";

  // Indexes: unregistered digests (above), wrong length.
  ASSERT_EQ(post(url, blob).status, 201);  // now registered
  UploadImage(*admin_, sid, "drive0.fidx", img, {});
  const auto with_index = Tree();
  std::vector<Digest> digests;
  for (size_t i = 0; i < ChunkCount(img); ++i) digests.push_back(storage::Sha256(ChunkOf(img, i)));
  const std::string index = FixedIndexBytes(digests, img.size());
  const std::vector<std::pair<std::string, Answer>> index_cases = {
      {"index one byte short",
       post("/api/v1/backup/" + sid + "/index?archive=e.fidx", index.substr(0, index.size() - 1))},
      {"index 32 bytes short",
       post("/api/v1/backup/" + sid + "/index?archive=e.fidx", index.substr(0, index.size() - 32))},
      {"index 32 bytes long",
       post("/api/v1/backup/" + sid + "/index?archive=e.fidx", index + std::string(32, '\0'))},
      {"index, last digest byte flipped",
       post("/api/v1/backup/" + sid + "/index?archive=e.fidx",
            index.substr(0, index.size() - 1) + static_cast<char>(index.back() ^ 1))},
      {"index header only",
       post("/api/v1/backup/" + sid + "/index?archive=e.fidx", index.substr(0, 64))},
  };
  for (const auto& [what, a] : index_cases) Expect4xx(what, a);
  EXPECT_EQ(TreeDiff(with_index, Tree()), "") << "after the bad indexes";

  // Finish twice; use of a finished session.
  ASSERT_EQ(admin_->PostJson("/api/v1/backup/" + sid + "/finish", json::object()).status, 200);
  const auto finished = Tree();
  const std::vector<std::pair<std::string, Answer>> after_finish = {
      {"second finish", client.Send("POST", "/api/v1/backup/" + sid + "/finish", auth, "{}")},
      {"chunk after finish", post(url, blob)},
      {"index after finish", post("/api/v1/backup/" + sid + "/index?archive=f.fidx", index)},
      {"blob after finish",
       post("/api/v1/backup/" + sid + "/blob?archive=f.blob", storage::EncodeBlob("x"))},
      {"stats after finish", client.Send("GET", "/api/v1/backup/" + sid + "/stats", auth)},
      {"abort after finish", client.Send("POST", "/api/v1/backup/" + sid + "/abort", auth)},
  };
  for (const auto& [what, a] : after_finish) Expect4xx(what, a);
  EXPECT_EQ(TreeDiff(finished, Tree()), "") << "after using a finished session";

  // Finish without an index (400, the session stays), abort, use after abort.
  const std::string sid2 = StartBackup(*admin_, "vm/100", kT0 + 100)["session"];
  const auto open2 = Tree();
  Expect4xx("finish without an index",
            client.Send("POST", "/api/v1/backup/" + sid2 + "/finish", auth, "{}"));
  EXPECT_EQ(client.Send("GET", "/api/v1/backup/" + sid2 + "/stats", auth).status, 200);
  EXPECT_EQ(TreeDiff(open2, Tree()), "") << "after finish without an index";
  ASSERT_EQ(client.Send("POST", "/api/v1/backup/" + sid2 + "/abort", auth).status, 200);
  EXPECT_EQ(TreeDiff(finished, Tree()), "") << "the aborted session left something";
  const std::string url2 = Replace(url, sid, sid2);
  const std::vector<std::pair<std::string, Answer>> after_abort = {
      {"chunk after abort", post(url2, blob)},
      {"index after abort", post("/api/v1/backup/" + sid2 + "/index?archive=g.fidx", index)},
      {"finish after abort", client.Send("POST", "/api/v1/backup/" + sid2 + "/finish", auth, "{}")},
      {"previous-index after abort",
       client.Send("GET", "/api/v1/backup/" + sid2 + "/previous-index?archive=drive0.fidx", auth)},
      {"second abort", client.Send("POST", "/api/v1/backup/" + sid2 + "/abort", auth)},
  };
  for (const auto& [what, a] : after_abort) Expect4xx(what, a);
  ASSERT_TRUE(Alive());
  EXPECT_EQ(TreeDiff(finished, Tree()), "") << "after using an aborted session";
  EXPECT_EQ(Restore(*admin_, kSnap0, "drive0.fidx"), img);
}

// ---------------------------------------------------------------------------
// 4. Malformed, deeply nested and huge JSON on the JSON endpoints.

TEST_F(HostileRequestsTest, MalformedDeepAndHugeJson) {
  const std::string img = MakeImage(1, 12);
  BackupImage(*admin_, "vm/100", kT0, img);
  const std::string sid = StartBackup(*admin_, "vm/100", kT0 + 100)["session"];
  const auto before = Tree();
  const std::string pre = "/api/v1/datastores/default";
  const std::string snap = std::string("?snapshot=") + Q(kSnap0);
  const std::vector<std::pair<std::string, std::string>> endpoints = {
      {"POST", pre + "/backup"},
      {"POST", pre + "/reader"},
      {"POST", pre + "/verify"},
      {"POST", pre + "/prune"},
      {"POST", pre + "/gc"},
      {"PUT", pre + "/snapshots/notes" + snap},
      {"PUT", pre + "/snapshots/protected" + snap},
      {"POST", "/api/v1/backup/" + sid + "/finish"},
      {"POST", "/api/v1/jobs"},
      {"PUT", "/api/v1/jobs/j1"},
      {"POST", "/api/v1/access/users"},
      {"PUT", "/api/v1/access/acl"},
      {"POST", "/api/v1/remotes"},
      {"POST", "/api/v1/login"},
  };
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string deep_obj = [] {
    std::string s;
    for (int i = 0; i < 100000; ++i) s += "{\"a\":";
    return s + "1" + std::string(100000, '}');
  }();
  std::string ten_mb = "{\"group\": \"" + std::string(10 << 20, 'a') + "\"}";
  const std::vector<std::pair<std::string, std::string>> bodies = {
      {"truncated", "{\"group\": "},
      {"not JSON", "hello"},
      {"trailing garbage", "{} {}"},
      {"NUL inside", std::string("{\"a\"\0: 1}", 9)},
      {"bad UTF-8", "{\"group\": \"\xff\xfe\"}"},
      {"array, not object", "[1, 2]"},
      {"100000 levels of arrays", deep},
      {"100000 levels of objects", deep_obj},
      {"huge number", "{\"keep-last\": 1e999999}"},
      {"10 MB", ten_mb},
  };
  RawClient client(server_->port());
  const std::string auth = Auth(server_->AdminToken());
  for (const auto& [method, path] : endpoints) {
    for (const auto& [what, body] : bodies) {
      Answer a = client.Send(method, path, auth, body);
      const std::string where = method + " " + path + " with " + what;
      Expect4xx(where, a);
      if (what == "10 MB") {
        EXPECT_EQ(a.status, 413) << where;
      }
      if (what.find("levels") != std::string::npos) {
        EXPECT_EQ(a.status, 400) << where;
      }
    }
  }
  ASSERT_TRUE(Alive());
  EXPECT_EQ(TreeDiff(before, Tree()), "");
}

// ---------------------------------------------------------------------------
// 5. Connections opened and dropped, and held half-open.

TEST_F(HostileRequestsTest, FiveHundredDroppedConnections) {
  const std::string img = MakeImage(1, 13);
  BackupImage(*admin_, "vm/100", kT0, img);
  const auto before = Tree();
  const std::string auth = Auth(server_->AdminToken());
  // The first bytes of a TLS ClientHello record, cut short.
  const std::string hello_start("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  auto timed_status = [&]() {
    const auto t0 = std::chrono::steady_clock::now();
    ApiClient probe(server_->port(), server_->AdminToken());
    auto r = probe.Get("/api/v1/status");
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return std::make_pair(r, ms);
  };

  // 100 held half-open (50 mid-handshake, 50 with half a request) while a
  // normal client is served.
  std::vector<int> held_tcp;
  std::vector<std::unique_ptr<RawTls>> held_tls;
  for (int i = 0; i < 50; ++i) {
    int fd = TcpConnect(server_->port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, hello_start.data(), hello_start.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(hello_start.size()));
    held_tcp.push_back(fd);
    auto t = RawTls::Connect(server_->port());
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(t->Send("GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthori"));
    held_tls.push_back(std::move(t));
  }
  auto [held_answer, held_ms] = timed_status();
  EXPECT_EQ(held_answer.status, 200) << held_answer.body;
  EXPECT_LT(held_ms, 2000) << "a request while 100 connections are held half-open";
  std::cout << "status answered in " << held_ms << " ms with 100 half-open connections held\n";
  for (int fd : held_tcp) ::close(fd);
  held_tls.clear();

  // 500 opened and dropped: 100 of each kind.
  const std::string chunk_head =
      "POST /api/v1/datastores/default/verify HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
      "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"target\": ";
  int opened = 0;
  for (int i = 0; i < 100; ++i) {
    // TCP only, closed at once.
    int fd = TcpConnect(server_->port());
    ASSERT_GE(fd, 0);
    ::close(fd);
    // Mid-handshake.
    fd = TcpConnect(server_->port());
    ASSERT_GE(fd, 0);
    (void)::send(fd, hello_start.data(), hello_start.size(), MSG_NOSIGNAL);
    ::close(fd);
    // Handshake done, nothing sent.
    {
      auto t = RawTls::Connect(server_->port());
      ASSERT_NE(t, nullptr);
    }
    // Half a request head.
    {
      auto t = RawTls::Connect(server_->port());
      ASSERT_NE(t, nullptr);
      (void)t->Send("POST /api/v1/datastores/default/backup HTTP/1.1\r\nHost: x\r\nContent-Le");
    }
    // An admitted request with half its body.
    {
      auto t = RawTls::Connect(server_->port());
      ASSERT_NE(t, nullptr);
      (void)t->Send(chunk_head);
    }
    opened += 5;
  }
  EXPECT_EQ(opened, 500);
  auto [after_answer, after_ms] = timed_status();
  EXPECT_EQ(after_answer.status, 200) << after_answer.body;
  EXPECT_LT(after_ms, 2000) << "a request right after 500 dropped connections";
  std::cout << "status answered in " << after_ms << " ms after 500 dropped connections\n";
  // The dropped connections are let go of: only the probe's remain open.
  int64_t open = -1;
  for (int i = 0; i < 100; ++i) {
    ApiClient probe(server_->port(), server_->AdminToken());
    auto s = probe.Get("/api/v1/status");
    ASSERT_EQ(s.status, 200);
    open = s.Json()["connections"].value("open", int64_t{-1});
    if (open >= 0 && open <= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_LE(open, 2) << "connections still open 10 s after they were dropped";
  ASSERT_TRUE(Alive());
  EXPECT_EQ(Restore(*admin_, kSnap0, "drive0.fidx"), img);
  EXPECT_EQ(TreeDiff(before, Tree()), "");
}

// Slow clients holding admitted requests half-sent (more of them than the
// server has worker threads): a user who stalls request bodies, and a
// stranger who stalls logins, hold only their own share of the workers
// (server/API.md, "Shares of the workers"); others are served at once.
TEST_F(HostileRequestsTest, StalledBodiesDelayOnlyTheirSender) {
  const std::string staller = Auth(AddUserToken(dir_.path(), "staller", "Backup"));
  const std::string user_head =
      "POST /api/v1/datastores/default/verify HTTP/1.1\r\nHost: x\r\nAuthorization: " +
      staller + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"target\": ";
  const std::string login_head =
      "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 1000\r\n\r\n{\"user\": ";
  std::vector<std::unique_ptr<RawTls>> held;
  for (int i = 0; i < 80; ++i) {  // the server runs 16 workers by default
    auto t = RawTls::Connect(server_->port());
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(t->Send(i % 2 == 0 ? user_head : login_head));
    held.push_back(std::move(t));
  }
  // Wait until the gate has admitted them all: those over their share queue.
  int64_t queued = -1;
  for (int i = 0; i < 100 && queued < 80 - 8 - 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto s = admin_->Get("/api/v1/status");
    ASSERT_EQ(s.status, 200) << s.body;
    queued = s.Json()["connections"].value("queued", int64_t{-1});
  }
  // 40 of the user's (8 run), 40 logins from one address (2 run).
  EXPECT_EQ(queued, 80 - 8 - 2);
  const auto t0 = std::chrono::steady_clock::now();
  ApiClient probe(server_->port(), server_->AdminToken());
  auto r = probe.Get("/api/v1/datastores/default/groups");
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LT(ms, 2000) << "a request while 80 admitted requests stall in their bodies";
  std::cout << "groups answered in " << ms << " ms with 80 stalled request bodies held ("
            << queued << " of them queued)\n";
  // Dropped, the stalled requests fail fast, the queued ones too: nothing stays queued.
  held.clear();
  for (int i = 0; i < 100 && queued != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto s = admin_->Get("/api/v1/status");
    ASSERT_EQ(s.status, 200) << s.body;
    queued = s.Json()["connections"].value("queued", int64_t{-1});
  }
  EXPECT_EQ(queued, 0) << "requests still queued 10 s after their clients left";
  ASSERT_TRUE(Alive());
}

}  // namespace
}  // namespace cairn::testing
