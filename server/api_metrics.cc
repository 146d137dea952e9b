// Route: GET /metrics (server/metrics.h), and the timing of every request
// for its HTTP metrics.

#include <chrono>
#include <cstdlib>

#include "server/api_common.h"
#include "server/metrics.h"
#include "server/server.h"

namespace cairn::server::api {
namespace {

// A request is routed, handled and logged on one worker thread
// (HttpCore::ServeOne), so the pre-routing hook can leave its start here
// for the logger.
thread_local std::chrono::steady_clock::time_point request_start;

uint64_t UploadBytes(const httplib::Request& req, std::string_view endpoint_class) {
  if (endpoint_class != "backup" || req.method != "POST") return 0;
  // Chunk bodies are streamed to the handler (req.body stays empty).
  const std::string length = req.get_header_value("Content-Length");
  if (!length.empty()) return std::strtoull(length.c_str(), nullptr, 10);
  return req.body.size();
}

}  // namespace

void RegisterMetricsRoutes(Server* server, httplib::Server* http) {
  http->set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    request_start = std::chrono::steady_clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http->set_logger([](const httplib::Request& req, const httplib::Response& res) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - request_start).count();
    const std::string_view cls = EndpointClass(req.path);
    HttpMetrics::Global().Observe(cls, res.status, seconds, UploadBytes(req, cls));
  });
  http->Get("/metrics", Wrap([server](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(Principal p, Caller(*server->service(), req));
    CAIRN_ASSIGN_OR_RETURN(std::string page, RenderMetrics(*server, p));
    res.status = 200;
    res.set_content(std::move(page), "text/plain; version=0.0.4; charset=utf-8");
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
