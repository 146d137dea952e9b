// cairn gc [--dry-run | --status]: runs a garbage collection task on the
// server (or reads the last result) and prints the result.

#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/repository_client.h"

namespace cairn::client {
namespace {

struct GcFlags {
  bool dry_run = false;
  bool status = false;
};

void PrintGcResult(const storage::GcResult& r) {
  std::cout << "garbage collection" << (r.dry_run ? " (dry run)" : "") << "\n"
            << "  on disk:  " << r.disk_chunks << " chunks, " << HumanSize(r.disk_bytes) << "\n"
            << "  removed:  " << r.removed_chunks << " chunks, " << HumanSize(r.removed_bytes)
            << "\n"
            << "  pending:  " << r.pending_chunks << " chunks, " << HumanSize(r.pending_bytes)
            << "\n"
            << "  bad:      " << r.bad_chunks << "\n"
            << "  dedup factor " << r.dedup_factor << ", " << r.duration_ms << " ms\n";
}

int RunGc(const GlobalOptions& global, const GcFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RepositoryClient client(*repo);
  if (flags.status) {
    auto last = client.GcStatus();
    if (!last.ok()) return Fail(last.status());
    if (global.json()) {
      std::cout << last->json.dump(2) << "\n";
    } else {
      PrintGcResult(last->value);
    }
    return 0;
  }
  auto run = client.Gc(flags.dry_run);
  if (!run.ok()) return Fail(run.status());
  if (!run->result) return Fail(TaskFailure(run->task));
  if (global.json()) {
    nlohmann::json out = run->task.result;
    out["task"] = run->task.id;  // as the gc answer carried it before gc was a task
    std::cout << out.dump(2) << "\n";
  } else {
    PrintGcResult(*run->result);
  }
  return 0;
}

}  // namespace

void AddGcCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<GcFlags>();
  auto* cmd = app.add_subcommand("gc", "collect garbage in the datastore (Admin token)");
  cmd->add_flag("--dry-run", flags->dry_run, "count what would be removed, remove nothing");
  cmd->add_flag("--status", flags->status, "show the last result instead of running one");
  commands->push_back({cmd, [&global, flags] { return RunGc(global, *flags); }});
}

}  // namespace cairn::client
