// cairn tasks: the recent tasks; cairn task log ID [--follow]: a task's log.

#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/repository_client.h"

namespace cairn::client {
namespace {

struct TaskLogFlags {
  std::string id;
  bool follow = false;
};

int RunTasks(const GlobalOptions& global) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RepositoryClient client(*repo);
  auto tasks = client.ListTasks(50);
  if (!tasks.ok()) return Fail(tasks.status());
  if (global.json()) {
    std::cout << tasks->json.dump(2) << "\n";
    return 0;
  }
  for (const TaskInfo& t : tasks->value) {
    std::cout << t.id << "  " << TaskStateName(t.state) << "  " << t.auth_id << "  " << t.summary
              << "\n";
  }
  return 0;
}

int RunTaskLog(const GlobalOptions& global, const TaskLogFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RepositoryClient client(*repo);
  auto print_line = [](std::string_view line) { std::cout << line << "\n" << std::flush; };
  Status s = flags.follow ? client.WaitTask(flags.id, print_line).status()
                          : client.ReadWholeTaskLog(flags.id, print_line);
  return s.ok() ? 0 : Fail(s);
}

}  // namespace

void AddTaskCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto* tasks = app.add_subcommand("tasks", "list recent tasks");
  commands->push_back({tasks, [&global] { return RunTasks(global); }});

  auto flags = std::make_shared<TaskLogFlags>();
  auto* task = app.add_subcommand("task", "one task");
  task->require_subcommand(1);
  auto* log = task->add_subcommand("log", "print a task's log");
  log->add_option("ID", flags->id)->required();
  log->add_flag("--follow", flags->follow, "keep printing until the task ends");
  commands->push_back({log, [&global, flags] { return RunTaskLog(global, *flags); }});
}

}  // namespace cairn::client
