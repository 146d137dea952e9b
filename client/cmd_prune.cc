// cairn prune GROUP --keep-… [--dry-run]: runs a prune task on the server
// and prints its report; exit 1 when a removal failed.

#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/repository_client.h"

namespace cairn::client {
namespace {

struct PruneFlags {
  std::string group;
  storage::PruneOptions options;
  bool dry_run = false;
};

void PrintPruneReport(const PruneReport& r, bool dry_run) {
  std::cout << "prune " << r.group << " " << r.options << (dry_run ? " (dry run)" : "")
            << ", periods in time zone " << r.time_zone << "\n";
  for (const PruneEntry& e : r.snapshots) {
    const char* verdict = e.keep ? "keep" : (dry_run ? "remove" : "removed");
    std::cout << "  " << verdict << "  " << e.snapshot << "  " << e.reason;
    if (!e.error.empty()) std::cout << "  ERROR: " << e.error;
    std::cout << "\n";
  }
  std::cout << r.kept << " kept, " << r.removed << (dry_run ? " to remove" : " removed") << "\n";
}

int RunPrune(const GlobalOptions& global, const PruneFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RepositoryClient client(*repo);
  auto run = client.Prune(flags.group, flags.options, flags.dry_run);
  if (!run.ok()) return Fail(run.status());
  if (!run->result) return Fail(TaskFailure(run->task));
  if (global.json()) {
    nlohmann::json out = run->task.result;
    out["task"] = run->task.id;  // as the prune answer carried it before prune was a task
    std::cout << out.dump(2) << "\n";
  } else {
    PrintPruneReport(*run->result, flags.dry_run);
  }
  return run->result->failed == 0 ? 0 : 1;
}

}  // namespace

void AddPruneCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<PruneFlags>();
  auto* cmd = app.add_subcommand("prune", "remove snapshots of a group by retention options");
  cmd->add_option("GROUP", flags->group, "vm/ID, or NS:vm/ID")->required();
  storage::PruneOptions& o = flags->options;
  cmd->add_option("--keep-last", o.keep_last);
  cmd->add_option("--keep-hourly", o.keep_hourly);
  cmd->add_option("--keep-daily", o.keep_daily);
  cmd->add_option("--keep-weekly", o.keep_weekly);
  cmd->add_option("--keep-monthly", o.keep_monthly);
  cmd->add_option("--keep-yearly", o.keep_yearly);
  cmd->add_flag("--dry-run", flags->dry_run, "show keep/remove for each snapshot, remove nothing");
  commands->push_back({cmd, [&global, flags] { return RunPrune(global, *flags); }});
}

}  // namespace cairn::client
