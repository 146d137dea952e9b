// cairn verify [TARGET]: runs a verification task on the server and follows
// its log; exit 0 only when the task ended ok.

#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/repository_client.h"

namespace cairn::client {
namespace {

int RunVerify(const GlobalOptions& global, const VerifyRequest& request) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RepositoryClient client(*repo);
  auto id = client.StartVerify(request);
  if (!id.ok()) return Fail(id.status());
  LogLineFn print_line;
  if (!global.json()) {
    std::cerr << "verification task " << *id << "\n";
    print_line = [](std::string_view line) { std::cout << line << "\n" << std::flush; };
  }
  auto run = client.WaitVerify(*id, print_line);
  if (!run.ok()) return Fail(run.status());
  if (global.json() && run->result) std::cout << run->task.result.dump(2) << "\n";
  return run->task.state == TaskState::kOk ? 0 : 1;
}

}  // namespace

void AddVerifyCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto request = std::make_shared<VerifyRequest>();
  auto* cmd = app.add_subcommand("verify", "verify a snapshot, a group, or the whole datastore");
  cmd->add_option("TARGET", request->target, "vm/ID/TIME, vm/ID, or nothing for everything");
  cmd->add_flag("--ignore-verified", request->ignore_verified, "skip snapshots verified recently");
  cmd->add_option("--outdated-after", request->outdated_after_days,
                  "days after which to verify again");
  commands->push_back({cmd, [&global, request] { return RunVerify(global, *request); }});
}

}  // namespace cairn::client
