#pragma once

// Runs the real cairn-server binary for integration tests, and a small HTTPS
// client for its API. The server listens on an ephemeral loopback port; its
// output goes to <data>/server.log (a pipe could fill and block it).

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "tests/storage/temp_dir_testutil.h"

namespace cairn::testing {

// Path of a built binary: <build dir>/<rel> (the build dir is compiled in;
// $CAIRN_BINARY_DIR overrides it). Fails the test loudly when it is missing.
std::string BinaryPath(const std::string& rel);

class ServerProcess {
 public:
  // Starts `cairn-server --data <data_dir> run --listen 127.0.0.1:0` and waits
  // (up to 30 s) until it prints its URL. Returns null on failure (the test
  // has already been failed with the log).
  static std::unique_ptr<ServerProcess> Start(const std::string& data_dir,
                                              const std::vector<std::string>& extra_args = {});
  ~ServerProcess();

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& fingerprint() const { return fingerprint_; }
  // "admin!default:SECRET" from <data>/admin.token.
  std::string AdminToken() const;
  // Sends `sig` and waits for the process to end; returns its wait status.
  int Stop(int sig);
  std::string Log() const;

 private:
  std::string data_dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string fingerprint_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};
// Runs `cairn-server --data <data_dir> <args...>` to completion.
CommandResult RunServerCommand(const std::string& data_dir, const std::vector<std::string>& args);
// Adds user `user` with one token "user!t" holding `role` on the default
// store (through the admin commands); returns the full token "user!t:SECRET".
std::string AddUserToken(const std::string& data_dir, const std::string& user,
                         const std::string& role);
// Runs the built binary `rel` (e.g. "client/cairn") with `args`, adding
// `env` ("NAME=value") to the environment; output is collected in a file in
// `work_dir`.
CommandResult RunBinary(const std::string& rel, const std::vector<std::string>& args,
                        const std::vector<std::string>& env, const std::string& work_dir);

// Starts the built binary `rel` in the background with its output appended
// to `log_path`; the caller waits for (or kills) the returned pid.
pid_t StartBinary(const std::string& rel, const std::vector<std::string>& args,
                  const std::vector<std::string>& env, const std::string& log_path);

// A client for the JSON/binary API over TLS (certificate checks off: tests
// talk to their own self-signed server on loopback).
class ApiClient {
 public:
  ApiClient(int port, std::string token);

  struct Response {
    int status = 0;
    std::string body;
    nlohmann::json Json() const;
  };

  Response Get(const std::string& path);
  Response Post(const std::string& path, const std::string& body,
                const std::string& content_type = "application/json");
  Response PostJson(const std::string& path, const nlohmann::json& body);
  // POSTs a maintenance request (prune, gc, verify: answered 202 with a
  // task) and waits for the task. The task's result as the body with 200
  // when it ended ok or with warnings; the task's JSON with 500 when it
  // failed; the POST's own answer when it was not 202.
  Response PostTask(const std::string& path, const nlohmann::json& body);
  Response Put(const std::string& path, const nlohmann::json& body);
  Response Delete(const std::string& path);
  void set_token(std::string token) { token_ = std::move(token); }

 private:
  httplib::Headers Headers() const;
  httplib::SSLClient client_;
  std::string token_;
};

// URL-encodes a query parameter value.
std::string Q(const std::string& value);

}  // namespace cairn::testing
