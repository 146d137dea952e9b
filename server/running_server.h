#pragma once

// How the admin command line finds a running server on the same data
// directory and asks it to do something now (`cairn-server job run`,
// `sync-job run`): Server::Start writes <data>/server.json — its address
// and process id — and Stop removes it. The certificate to pin is the data
// directory's own (tls/cert.pem), and the command authenticates with a
// one-off token it makes in auth.db (whoever may run admin commands on the
// data directory holds every key anyway) and deletes when done.
//
// Thread safety: plain functions.

#include <optional>
#include <string>

#include "client/repository_client.h"
#include "server/auth_store.h"
#include "storage/status.h"

namespace cairn::server {

using storage::Result;
using storage::Status;

struct RunningServer {
  std::string host;  // where to connect (a wildcard listen address becomes loopback)
  int port = 0;
  int pid = 0;
};

// Writes <data_dir>/server.json atomically for the server listening on
// `host`:`port` in this process.
Status WriteRunningServer(const std::string& data_dir, const std::string& host, int port);
// Removes it (best effort).
void RemoveRunningServer(const std::string& data_dir);
// The server running on `data_dir`, or nullopt when there is none: no
// server.json, or its process is gone (a server that was killed). Corruption
// for a malformed file.
Result<std::optional<RunningServer>> FindRunningServer(const std::string& data_dir);

// Asks `server` to run job `job_id` now (POST /api/v1/jobs/ID/run) and waits
// for its task, passing each log line to `on_log_line`. Authenticates with
// a one-off token of user "admin" with the Admin role on `store` (the
// job's datastore), made in `auth` and deleted before returning. The
// task's final state (with its result).
Result<client::TaskInfo> RunJobOnServer(const std::string& data_dir, const RunningServer& server,
                                        AuthStore* auth, const std::string& job_id,
                                        const std::string& store,
                                        const client::LogLineFn& on_log_line);

}  // namespace cairn::server
