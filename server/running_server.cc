#include "server/running_server.h"

#include <openssl/rand.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "server/tls.h"
#include "storage/env.h"

namespace cairn::server {
namespace {

constexpr char kFile[] = "server.json";

std::string RandomHex(size_t bytes) {
  unsigned char buf[16];
  if (bytes > sizeof(buf) || RAND_bytes(buf, static_cast<int>(bytes)) != 1) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    out += kHex[buf[i] >> 4];
    out += kHex[buf[i] & 0xf];
  }
  return out;
}

// A wildcard listen address is reached on loopback.
std::string ConnectHost(const std::string& listen) {
  if (listen.empty() || listen == "0.0.0.0") return "127.0.0.1";
  if (listen == "::" || listen == "[::]") return "::1";
  return listen;
}

}  // namespace

Status WriteRunningServer(const std::string& data_dir, const std::string& host, int port) {
  const nlohmann::json j = {{"host", ConnectHost(host)}, {"port", port},
                            {"pid", static_cast<int>(::getpid())}};
  return storage::WriteFileAtomic(storage::Env::Default(), storage::JoinPath(data_dir, kFile),
                                  j.dump() + "\n", true);
}

void RemoveRunningServer(const std::string& data_dir) {
  (void)std::remove(storage::JoinPath(data_dir, kFile).c_str());
}

Result<std::optional<RunningServer>> FindRunningServer(const std::string& data_dir) {
  const std::string path = storage::JoinPath(data_dir, kFile);
  std::string text;
  Status read = storage::Env::Default()->ReadFile(path, &text, 4096);
  if (read.IsNotFound()) return std::optional<RunningServer>();
  CAIRN_RETURN_IF_ERROR(read);
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("host") || !j["host"].is_string() ||
      !j.contains("port") || !j["port"].is_number_integer() || !j.contains("pid") ||
      !j["pid"].is_number_integer()) {
    return Status::Corruption(path + " is malformed");
  }
  RunningServer s{j["host"].get<std::string>(), j["port"].get<int>(), j["pid"].get<int>()};
  // A server that was killed leaves the file behind: its process is gone.
  if (s.pid <= 0 || (::kill(s.pid, 0) != 0 && errno != EPERM)) {
    return std::optional<RunningServer>();
  }
  return std::optional<RunningServer>(s);
}

Result<client::TaskInfo> RunJobOnServer(const std::string& data_dir, const RunningServer& server,
                                        AuthStore* auth, const std::string& job_id,
                                        const std::string& store,
                                        const client::LogLineFn& on_log_line) {
  client::Repository repo;
  repo.host = server.host;
  repo.port = server.port;
  repo.store = store;
  CAIRN_ASSIGN_OR_RETURN(std::string fp,
                         CertificateFingerprint(storage::JoinPath(data_dir, "tls/cert.pem")));
  for (char c : fp) {
    if (c != ':') repo.fingerprint += c;
  }
  const std::string suffix = RandomHex(4);
  if (suffix.empty()) return Status::IOError("no random bytes for a one-off token");
  const std::string auth_id = "admin!cli-run-" + suffix;
  CAIRN_ASSIGN_OR_RETURN(std::string secret, auth->CreateToken(auth_id));
  // Deleted on every path below.
  struct Drop {
    AuthStore* auth;
    std::string id;
    ~Drop() { (void)auth->DeleteToken(id); }
  } drop{auth, auth_id};
  CAIRN_RETURN_IF_ERROR(auth->SetAcl(store, auth_id, Role::kAdmin));
  repo.token = auth_id + ":" + secret;
  client::ApiClient api(repo);
  auto started = api.PostJson("/api/v1/jobs/" + client::ApiClient::Escape(job_id) + "/run",
                              nlohmann::json::object());
  if (!started.ok()) return started.status();
  CAIRN_RETURN_IF_ERROR(started->ToStatus());
  CAIRN_ASSIGN_OR_RETURN(nlohmann::json body, client::ParseAnswerBody(started->body));
  CAIRN_ASSIGN_OR_RETURN(std::string task_id, client::ParseTaskStarted(body));
  client::RepositoryClient rc(repo);
  rc.set_poll_interval(std::chrono::milliseconds(100));
  return rc.WaitTask(task_id, on_log_line);
}

}  // namespace cairn::server
