#pragma once

// GET /metrics: the server's state in the Prometheus text format (0.0.4),
// documented metric by metric in server/API.md ("Metrics").
//
// HttpMetrics counts what the HTTP layer served: requests by endpoint
// class and status, their latency as a histogram, and the request bytes
// backups uploaded. It is process-wide (like a Prometheus client's default
// registry) so that the routes can feed it without a Server member.
//
// Thread safety: HttpMetrics is safe to use from any thread.

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "storage/mutex.h"
#include "storage/status.h"

namespace cairn::server {

class Server;
struct Principal;

// The class of a request path, a small fixed set (the metric's label must
// not grow with datastore or group names): "backup", "reader", "snapshots",
// "groups", "tasks", "gc", "prune", "verify", "jobs", "access", "login",
// "status", "datastores", "remotes", "metrics", "api" (any other /api/
// path) or "web".
std::string_view EndpointClass(std::string_view path);

class HttpMetrics {
 public:
  // Upper bounds of the latency histogram's buckets, in seconds.
  static constexpr std::array<double, 12> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                      0.5,   1,    2.5,   5,    10,  30};

  // One request served: its class, status and time; `upload_bytes` is its
  // body's size when it carried backup data.
  void Observe(std::string_view endpoint_class, int status, double seconds,
               uint64_t upload_bytes);
  // The HELP/TYPE blocks and samples of the HTTP metrics.
  std::string Render() const;

  // The process's one instance.
  static HttpMetrics& Global();

 private:
  struct Latency {
    std::array<uint64_t, kBuckets.size()> buckets{};  // not cumulative
    uint64_t count = 0;
    double sum = 0;
  };
  mutable Mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_ CAIRN_GUARDED_BY(mu_);
  std::map<std::string, Latency> latency_ CAIRN_GUARDED_BY(mu_);
  uint64_t upload_bytes_ CAIRN_GUARDED_BY(mu_) = 0;
};

// The whole /metrics page for `caller`: the datastores on which it holds
// Admin or Audit (with their groups), tasks of those datastores, and the
// HTTP metrics. PermissionDenied when it holds Admin or Audit nowhere.
storage::Result<std::string> RenderMetrics(Server& server, const Principal& caller);

}  // namespace cairn::server

namespace httplib {
class Server;
}  // namespace httplib

namespace cairn::server::api {

// GET /metrics (Admin or Audit role on a datastore: a "metrics token" is a
// token with Audit on "*"), and the hooks that feed HttpMetrics::Global()
// from every request `http` serves (server/api_metrics.cc).
void RegisterMetricsRoutes(Server* server, httplib::Server* http);

}  // namespace cairn::server::api
