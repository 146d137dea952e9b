#include "tests/integration/server_process_testutil.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "client/api_client.h"
#include "storage/env.h"

namespace cairn::testing {

std::string BinaryPath(const std::string& rel) {
  const char* dir = std::getenv("CAIRN_BINARY_DIR");
  std::string path = std::string(dir != nullptr ? dir : CAIRN_DEFAULT_BINARY_DIR) + "/" + rel;
  if (::access(path.c_str(), X_OK) != 0) ADD_FAILURE() << "no executable " << path;
  return path;
}

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log_path,
            const std::vector<std::string>& env = {}) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  // A test process that dies (a crash, a signal) must not leave its server
  // or client running: they die with it. (The signal follows the forking
  // thread; every caller forks from a thread that outlives the child's use.)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  ::_exit(127);
}

}  // namespace

std::unique_ptr<ServerProcess> ServerProcess::Start(const std::string& data_dir,
                                                    const std::vector<std::string>& extra_args) {
  std::unique_ptr<ServerProcess> s(new ServerProcess());
  s->data_dir_ = data_dir;
  (void)storage::CreateDirAll(storage::Env::Default(), data_dir);
  std::string log = data_dir + "/server.log";
  ::truncate(log.c_str(), 0);
  std::vector<std::string> argv = {BinaryPath("server/cairn-server"), "--data", data_dir, "run",
                                   "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  s->pid_ = Spawn(argv, log);
  const std::regex url_re(R"(listening on https://127\.0\.0\.1:(\d+)/)");
  const std::regex fp_re(R"(fingerprint \(SHA-256\): ([0-9A-F:]{95}))");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string out = ReadFile(log);
    std::smatch m, f;
    if (std::regex_search(out, m, url_re) && std::regex_search(out, f, fp_re)) {
      s->port_ = std::stoi(m[1]);
      s->fingerprint_ = f[1];
      return s;
    }
    int status;
    if (::waitpid(s->pid_, &status, WNOHANG) == s->pid_) {
      s->pid_ = -1;
      ADD_FAILURE() << "cairn-server exited at start:\n" << out;
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "cairn-server did not start in 30 s:\n" << ReadFile(log);
  return nullptr;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Stop(SIGTERM);
}

std::string ServerProcess::AdminToken() const {
  std::string t = ReadFile(data_dir_ + "/admin.token");
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

int ServerProcess::Stop(int sig) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string ServerProcess::Log() const { return ReadFile(data_dir_ + "/server.log"); }

std::string AddUserToken(const std::string& data_dir, const std::string& user,
                         const std::string& role) {
  EXPECT_EQ(RunServerCommand(data_dir, {"user", "add", user}).exit_code, 0);
  auto tok = RunServerCommand(data_dir, {"token", "create", user + "!t"});
  EXPECT_EQ(tok.exit_code, 0) << tok.output;
  EXPECT_EQ(RunServerCommand(data_dir, {"acl", "set", "--store", "default", "--role", role,
                                        "--auth", user + "!t"})
                .exit_code,
            0);
  return tok.output.substr(0, tok.output.find('\n'));
}

CommandResult RunServerCommand(const std::string& data_dir, const std::vector<std::string>& args) {
  std::vector<std::string> all = {"--data", data_dir};
  all.insert(all.end(), args.begin(), args.end());
  return RunBinary("server/cairn-server", all, {}, data_dir);
}

CommandResult RunBinary(const std::string& rel, const std::vector<std::string>& args,
                        const std::vector<std::string>& env, const std::string& work_dir) {
  std::vector<std::string> argv = {BinaryPath(rel)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string log = work_dir + "/command.log";
  (void)storage::CreateDirAll(storage::Env::Default(), work_dir);
  ::truncate(log.c_str(), 0);
  pid_t pid = Spawn(argv, log, env);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = ReadFile(log);
  ::unlink(log.c_str());
  return r;
}

pid_t StartBinary(const std::string& rel, const std::vector<std::string>& args,
                  const std::vector<std::string>& env, const std::string& log_path) {
  std::vector<std::string> argv = {BinaryPath(rel)};
  argv.insert(argv.end(), args.begin(), args.end());
  return Spawn(argv, log_path, env);
}

ApiClient::ApiClient(int port, std::string token)
    : client_("127.0.0.1", port), token_(std::move(token)) {
  // A server that refuses a body closes the connection: writing on must
  // fail, not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  client_.enable_server_certificate_verification(false);
  client_.set_read_timeout(120, 0);
  client_.set_write_timeout(120, 0);
  client_.set_keep_alive(true);
}

nlohmann::json ApiClient::Response::Json() const {
  return nlohmann::json::parse(body, nullptr, false);
}

httplib::Headers ApiClient::Headers() const {
  httplib::Headers h;
  if (!token_.empty()) h.emplace("Authorization", "CairnToken " + token_);
  return h;
}

namespace {
ApiClient::Response From(const httplib::Result& r) {
  ApiClient::Response out;
  if (!r) {
    out.status = -1;
    out.body = "transport error " + httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  return out;
}
}  // namespace

ApiClient::Response ApiClient::Get(const std::string& path) {
  return From(client_.Get(path.c_str(), Headers()));
}
ApiClient::Response ApiClient::Post(const std::string& path, const std::string& body,
                                    const std::string& content_type) {
  return From(client_.Post(path.c_str(), Headers(), body, content_type.c_str()));
}
ApiClient::Response ApiClient::PostJson(const std::string& path, const nlohmann::json& body) {
  return Post(path, body.dump());
}
ApiClient::Response ApiClient::PostTask(const std::string& path, const nlohmann::json& body) {
  Response started = PostJson(path, body);
  if (started.status != 202) return started;
  const std::string id = started.Json().value("task", "");
  for (int i = 0; i < 6000; ++i) {
    Response t = Get("/api/v1/tasks/" + id);
    if (t.status != 200) return t;
    nlohmann::json j = t.Json();
    if (j["state"] != "running") {
      if (j["state"] == "failed") return Response{500, t.body};
      return Response{200, j["result"].dump()};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Response{504, "task " + id + " did not end"};
}
ApiClient::Response ApiClient::Put(const std::string& path, const nlohmann::json& body) {
  return From(client_.Put(path.c_str(), Headers(), body.dump(), "application/json"));
}
ApiClient::Response ApiClient::Delete(const std::string& path) {
  return From(client_.Delete(path.c_str(), Headers()));
}

std::string Q(const std::string& value) { return client::ApiClient::Escape(value); }

}  // namespace cairn::testing
