// cairn: the host-side client. This milestone has the repository commands
// (snapshots, prune); backup and restore of VMs come with the client issue.

#include <CLI/CLI.hpp>

#include <chrono>
#include <iostream>
#include <thread>
#include <optional>

#include "client/api_client.h"
#include "storage/names.h"

namespace {

using cairn::client::ApiClient;
using cairn::client::Repository;
using cairn::storage::Status;
using nlohmann::json;

int Fail(const Status& s) {
  std::cerr << "cairn: " << s.message() << "\n";
  return s.IsInvalidArgument() ? 2 : 1;
}

// Runs a request and turns transport and HTTP errors into one Status.
cairn::storage::Result<json> Call(cairn::storage::Result<cairn::client::HttpResponse> r) {
  if (!r.ok()) return r.status();
  if (Status s = r->ToStatus(); !s.ok()) return s;
  json j = r->Json();
  if (j.is_discarded()) return Status::Corruption("server answered with malformed JSON");
  return j;
}

std::string HumanSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn: back up QEMU/KVM virtual machines to a cairn-server"};
  app.require_subcommand(1);
  std::string repo, token_file, fingerprint, output = "text";
  app.add_option("--repo", repo, "https://HOST:PORT/STORE (or $CAIRN_REPO)");
  app.add_option("--token-file", token_file, "file holding USER!TOKEN:SECRET (or $CAIRN_TOKEN)");
  app.add_option("--fingerprint", fingerprint, "server certificate SHA-256 (or $CAIRN_FINGERPRINT)");
  app.add_option("--output", output, "text or json")->check(CLI::IsMember({"text", "json"}));

  auto* snapshots = app.add_subcommand("snapshots", "list snapshots");
  std::string snap_id;
  snapshots->add_option("--id", snap_id, "only the group vm/ID");

  auto* prune = app.add_subcommand("prune", "remove snapshots of a group by retention options");
  std::string prune_group;
  std::optional<uint64_t> keep[6];
  bool dry_run = false;
  prune->add_option("GROUP", prune_group, "vm/ID, or NS:vm/ID")->required();
  const char* keep_names[6] = {"--keep-last",   "--keep-hourly",  "--keep-daily",
                               "--keep-weekly", "--keep-monthly", "--keep-yearly"};
  for (int i = 0; i < 6; ++i) prune->add_option(keep_names[i], keep[i]);
  prune->add_flag("--dry-run", dry_run, "show keep/remove for each snapshot, remove nothing");

  auto* gc = app.add_subcommand("gc", "collect garbage in the datastore (Admin token)");
  bool gc_dry_run = false;
  bool gc_status = false;
  gc->add_flag("--dry-run", gc_dry_run, "count what would be removed, remove nothing");
  gc->add_flag("--status", gc_status, "show the last result instead of running one");

  auto* verify = app.add_subcommand("verify", "verify a snapshot, a group, or the whole datastore");
  std::string verify_target;
  bool verify_ignore = false;
  std::optional<uint64_t> verify_outdated;
  verify->add_option("TARGET", verify_target, "vm/ID/TIME, vm/ID, or nothing for everything");
  verify->add_flag("--ignore-verified", verify_ignore, "skip snapshots verified recently");
  verify->add_option("--outdated-after", verify_outdated, "days after which to verify again");

  auto* tasks = app.add_subcommand("tasks", "list recent tasks");
  auto* task = app.add_subcommand("task", "one task");
  task->require_subcommand(1);
  auto* task_log = task->add_subcommand("log", "print a task's log");
  std::string task_id;
  bool follow = false;
  task_log->add_option("ID", task_id)->required();
  task_log->add_flag("--follow", follow, "keep printing until the task ends");

  CLI11_PARSE(app, argc, argv);

  auto resolved = Repository::Resolve(repo, token_file, fingerprint);
  if (!resolved.ok()) return Fail(resolved.status());
  ApiClient api(*resolved);

  if (snapshots->parsed()) {
    std::string path = api.StorePath("/snapshots");
    if (!snap_id.empty()) {
      if (Status s = cairn::storage::ValidateName(cairn::storage::NameKind::kBackupId, snap_id);
          !s.ok()) {
        return Fail(s);
      }
      path += "?group=" + ApiClient::Escape("vm/" + snap_id);
    }
    auto j = Call(api.Get(path));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    for (const auto& s : *j) {
      if (s.contains("error")) {
        std::cout << s.value("snapshot", "?") << "  ERROR " << s["error"].get<std::string>() << "\n";
        continue;
      }
      std::string verify_state = s["verify"].is_object() ? s["verify"]["state"].get<std::string>() : "-";
      std::cout << s["snapshot"].get<std::string>() << "  " << HumanSize(s["size"].get<uint64_t>())
                << "  verify:" << verify_state << (s["protected"].get<bool>() ? "  protected" : "")
                << "\n";
    }
    return 0;
  }

  if (prune->parsed()) {
    json body = {{"group", prune_group}, {"dry-run", dry_run}};
    for (int i = 0; i < 6; ++i) {
      if (keep[i]) body[std::string(keep_names[i]).substr(2)] = *keep[i];
    }
    auto j = Call(api.PostJson(api.StorePath("/prune"), body));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
    } else {
      std::cout << "prune " << (*j)["group"].get<std::string>() << " "
                << (*j)["options"].get<std::string>() << (dry_run ? " (dry run)" : "")
                << ", periods in time zone " << (*j)["time-zone"].get<std::string>() << "\n";
      for (const auto& s : (*j)["snapshots"]) {
        const char* verdict = s["keep"].get<bool>() ? "keep" : (dry_run ? "remove" : "removed");
        std::cout << "  " << verdict << "  " << s["snapshot"].get<std::string>() << "  "
                  << s["reason"].get<std::string>();
        if (s.contains("error")) std::cout << "  ERROR: " << s["error"].get<std::string>();
        std::cout << "\n";
      }
      std::cout << (*j)["kept"] << " kept, " << (*j)["removed"]
                << (dry_run ? " to remove" : " removed") << "\n";
    }
    return (*j)["failed"].get<int>() == 0 ? 0 : 1;
  }
  if (gc->parsed()) {
    auto j = gc_status ? Call(api.Get(api.StorePath("/gc")))
                       : Call(api.PostJson(api.StorePath("/gc"), {{"dry-run", gc_dry_run}}));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    const json& r = *j;
    auto n = [&](const char* k) { return r.value(k, uint64_t{0}); };
    std::cout << "garbage collection" << (r.value("dry-run", false) ? " (dry run)" : "") << "\n"
              << "  on disk:  " << n("disk-chunks") << " chunks, " << HumanSize(n("disk-bytes")) << "\n"
              << "  removed:  " << n("removed-chunks") << " chunks, " << HumanSize(n("removed-bytes")) << "\n"
              << "  pending:  " << n("pending-chunks") << " chunks, " << HumanSize(n("pending-bytes")) << "\n"
              << "  bad:      " << n("bad-chunks") << "\n"
              << "  dedup factor " << r.value("dedup-factor", 0.0) << ", " << n("duration-ms")
              << " ms\n";
    return 0;
  }
  if (tasks->parsed()) {
    auto j = Call(api.Get("/api/v1/tasks?limit=50"));
    if (!j.ok()) return Fail(j.status());
    if (output == "json") {
      std::cout << j->dump(2) << "\n";
      return 0;
    }
    for (const auto& t : *j) {
      std::cout << t["id"].get<std::string>() << "  " << t["state"].get<std::string>() << "  "
                << t["auth-id"].get<std::string>() << "  " << t["summary"].get<std::string>() << "\n";
    }
    return 0;
  }
  // Prints a task's log from the start; with `wait`, until it ends. Returns
  // the task's final state.
  auto print_log = [&](const std::string& id, bool wait, bool print) -> cairn::storage::Result<std::string> {
    uint64_t offset = 0;
    while (true) {
      auto r = api.Get("/api/v1/tasks/" + ApiClient::Escape(id) + "/log?offset=" + std::to_string(offset));
      if (!r.ok()) return r.status();
      if (Status s = r->ToStatus(); !s.ok()) return s;
      if (print) std::cout << r->body << std::flush;
      offset += r->body.size();
      auto info = Call(api.Get("/api/v1/tasks/" + ApiClient::Escape(id)));
      if (!info.ok()) return info.status();
      std::string state = (*info)["state"].get<std::string>();
      if (state != "running" && r->body.empty()) return state;
      if (!wait && r->body.empty()) return state;
      if (r->body.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  };
  if (task_log->parsed()) {
    auto state = print_log(task_id, follow, true);
    if (!state.ok()) return Fail(state.status());
    return 0;
  }
  if (verify->parsed()) {
    json body = {{"target", verify_target}, {"ignore-verified", verify_ignore}};
    if (verify_outdated) body["outdated-after-days"] = *verify_outdated;
    auto started = Call(api.PostJson(api.StorePath("/verify"), body));
    if (!started.ok()) return Fail(started.status());
    std::string id = (*started)["task"];
    if (output != "json") std::cerr << "verification task " << id << "\n";
    auto state = print_log(id, true, output != "json");
    if (!state.ok()) return Fail(state.status());
    if (output == "json") {
      // The task's log ends with "RESULT {json}".
      auto log = api.Get("/api/v1/tasks/" + ApiClient::Escape(id) + "/log");
      if (log.ok()) {
        size_t pos = log->body.rfind(" RESULT ");
        if (pos != std::string::npos) {
          size_t end = log->body.find('\n', pos);
          std::cout << json::parse(log->body.substr(pos + 8, end - pos - 8), nullptr, false).dump(2)
                    << "\n";
        }
      }
    }
    return *state == "ok" ? 0 : 1;
  }
  return 0;
}
