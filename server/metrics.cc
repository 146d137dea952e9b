#include "server/metrics.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "server/server.h"
#include "server/service.h"
#include "server/task_log.h"

namespace cairn::server {
namespace {

// A label value with \, " and newlines escaped (the text format's rule).
std::string Label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// Appends a metric family: its HELP and TYPE lines once, then its samples.
class Page {
 public:
  void Family(const char* name, const char* type, const char* help) {
    text_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void Sample(const std::string& name, const std::string& labels, double value) {
    text_ += name;
    if (!labels.empty()) text_ += "{" + labels + "}";
    text_ += " " + Num(value) + "\n";
  }
  std::string& text() { return text_; }

 private:
  std::string text_;
};

std::string StoreLabel(const std::string& store) { return "store=\"" + Label(store) + "\""; }

}  // namespace

std::string_view EndpointClass(std::string_view path) {
  static constexpr std::string_view kClasses[] = {
      "backup", "reader", "snapshots", "groups", "tasks",  "gc",      "prune",   "verify",
      "jobs",   "access", "login",     "status", "remotes", "metrics", "datastores"};
  if (path == "/metrics") return "metrics";
  if (!path.starts_with("/api/")) return "web";
  // The most specific known segment: /api/v1/datastores/NAME/snapshots is
  // "snapshots", /api/v1/datastores alone "datastores".
  std::string_view found = "api";
  size_t pos = 1;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(pos, end - pos);
    for (std::string_view c : kClasses) {
      if (seg == c && (found == "api" || found == "datastores")) found = c;
    }
    if (seg == "users" || seg == "tokens" || seg == "acl") found = "access";
    if (seg == "logout" || seg == "session") found = "login";
    if (seg == "version") found = "status";
    pos = end + 1;
  }
  return found;
}

HttpMetrics& HttpMetrics::Global() {
  static HttpMetrics* metrics = new HttpMetrics;  // never destroyed: used until exit
  return *metrics;
}

void HttpMetrics::Observe(std::string_view endpoint_class, int status, double seconds,
                          uint64_t upload_bytes) {
  MutexLock lock(&mu_);
  ++requests_[{std::string(endpoint_class), status}];
  Latency& l = latency_[std::string(endpoint_class)];
  size_t i = 0;
  while (i < kBuckets.size() && seconds > kBuckets[i]) ++i;
  if (i < kBuckets.size()) ++l.buckets[i];
  ++l.count;
  l.sum += seconds;
  upload_bytes_ += upload_bytes;
}

std::string HttpMetrics::Render() const {
  Page page;
  MutexLock lock(&mu_);
  page.Family("cairn_http_requests_total", "counter",
              "HTTP requests served, by endpoint class and status code.");
  for (const auto& [key, n] : requests_) {
    page.Sample("cairn_http_requests_total",
                "endpoint=\"" + Label(key.first) + "\",code=\"" + std::to_string(key.second) + "\"",
                static_cast<double>(n));
  }
  page.Family("cairn_http_request_duration_seconds", "histogram",
              "Time from routing a request to its answer, by endpoint class.");
  for (const auto& [cls, l] : latency_) {
    const std::string base = "endpoint=\"" + Label(cls) + "\"";
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += l.buckets[i];
      page.Sample("cairn_http_request_duration_seconds_bucket",
                  base + ",le=\"" + Num(kBuckets[i]) + "\"", static_cast<double>(cumulative));
    }
    page.Sample("cairn_http_request_duration_seconds_bucket", base + ",le=\"+Inf\"",
                static_cast<double>(l.count));
    page.Sample("cairn_http_request_duration_seconds_sum", base, l.sum);
    page.Sample("cairn_http_request_duration_seconds_count", base, static_cast<double>(l.count));
  }
  page.Family("cairn_upload_bytes_total", "counter",
              "Request body bytes received by backup endpoints (chunks, indexes, manifests).");
  page.Sample("cairn_upload_bytes_total", "", static_cast<double>(upload_bytes_));
  return page.text();
}

storage::Result<std::string> RenderMetrics(Server& server, const Principal& caller) {
  std::vector<DatastoreUsage> stores;
  for (DatastoreUsage& u : server.service()->ListDatastores(caller)) {
    if (u.roles.Has(Role::kAdmin) || u.roles.Has(Role::kAudit)) stores.push_back(std::move(u));
  }
  if (stores.empty()) {
    return Status::PermissionDenied("/metrics needs the Admin or Audit role on a datastore");
  }
  Page page;
  page.Family("cairn_datastore_used_bytes", "gauge",
              "Bytes used on the datastore's file system (statvfs).");
  for (const auto& u : stores) {
    if (u.used) page.Sample("cairn_datastore_used_bytes", StoreLabel(u.name), static_cast<double>(*u.used));
  }
  page.Family("cairn_datastore_total_bytes", "gauge",
              "Size of the datastore's file system (statvfs).");
  for (const auto& u : stores) {
    if (u.total) page.Sample("cairn_datastore_total_bytes", StoreLabel(u.name), static_cast<double>(*u.total));
  }
  page.Family("cairn_datastore_chunks", "gauge",
              "Chunk files in the datastore as the last GC counted them (absent before the first).");
  page.Family("cairn_datastore_dedup_ratio", "gauge",
              "Logical bytes of every snapshot over the chunk bytes on disk (last GC).");
  page.Family("cairn_datastore_last_gc_timestamp_seconds", "gauge",
              "Start of the datastore's last garbage collection (absent before the first).");
  page.Family("cairn_datastore_last_gc_removed_bytes", "gauge",
              "Chunk bytes the last garbage collection removed.");
  page.Family("cairn_datastore_last_gc_success", "gauge",
              "1 when the datastore's last GC task ended ok or with warnings, 0 when it failed.");
  auto tasks = server.tasks()->List(100000);
  for (const auto& u : stores) {
    const std::string label = StoreLabel(u.name);
    if (u.last_gc) {
      page.Sample("cairn_datastore_chunks", label, static_cast<double>(u.last_gc->disk_chunks));
    }
    if (u.last_gc) {
      if (u.last_gc->disk_bytes > 0 && u.logical_bytes) {
        page.Sample("cairn_datastore_dedup_ratio", label,
                    static_cast<double>(*u.logical_bytes) / static_cast<double>(u.last_gc->disk_bytes));
      }
      page.Sample("cairn_datastore_last_gc_timestamp_seconds", label,
                  static_cast<double>(u.last_gc->start_time));
      page.Sample("cairn_datastore_last_gc_removed_bytes", label,
                  static_cast<double>(u.last_gc->removed_bytes));
    }
    if (tasks.ok()) {
      // List is newest first: the first finished GC of the store is the last one.
      for (const TaskInfo& t : *tasks) {
        if (t.kind != "gc" || t.store != u.name || t.state == TaskState::kRunning) continue;
        page.Sample("cairn_datastore_last_gc_success", label, t.state == TaskState::kFailed ? 0 : 1);
        break;
      }
    }
  }

  page.Family("cairn_group_last_backup_timestamp_seconds", "gauge",
              "Time of the group's newest snapshot.");
  page.Family("cairn_group_last_snapshot_bytes", "gauge", "Size of the group's newest snapshot.");
  page.Family("cairn_group_last_verify_ok", "gauge",
              "1 when the newest snapshot's last verification passed, 0 when it failed, absent "
              "before one.");
  page.Family("cairn_group_snapshots", "gauge", "Snapshots of the group.");
  for (const auto& u : stores) {
    auto groups = server.catalog()->ListGroups(u.name);
    if (!groups.ok()) continue;
    for (const storage::GroupRow& g : *groups) {
      const std::string label = StoreLabel(u.name) + ",group=\"" + Label(g.group.ToString()) + "\"";
      page.Sample("cairn_group_snapshots", label, static_cast<double>(g.snapshot_count));
      if (g.snapshot_count == 0) continue;
      page.Sample("cairn_group_last_backup_timestamp_seconds", label,
                  static_cast<double>(g.last_snapshot));
      auto newest = server.catalog()->ListSnapshots(u.name, g.group, {.offset = 0, .limit = 1,
                                                                      .newest_first = true});
      if (!newest.ok() || newest->empty()) continue;
      page.Sample("cairn_group_last_snapshot_bytes", label, static_cast<double>(newest->front().size));
      if (newest->front().verify) {
        page.Sample("cairn_group_last_verify_ok", label,
                    newest->front().verify->state == "ok" ? 1 : 0);
      }
    }
  }

  page.Family("cairn_tasks", "gauge",
              "Tasks in the task log of the datastores shown, by kind and state.");
  if (tasks.ok()) {
    std::map<std::pair<std::string, std::string>, uint64_t> counts;
    for (const TaskInfo& t : *tasks) {
      bool shown = t.store.empty() || std::any_of(stores.begin(), stores.end(),
                                                  [&](const auto& u) { return u.name == t.store; });
      if (shown) ++counts[{t.kind, TaskStateName(t.state)}];
    }
    for (const auto& [key, n] : counts) {
      page.Sample("cairn_tasks", "kind=\"" + Label(key.first) + "\",state=\"" + Label(key.second) + "\"",
                  static_cast<double>(n));
    }
  }
  page.text() += HttpMetrics::Global().Render();
  return std::move(page.text());
}

}  // namespace cairn::server
