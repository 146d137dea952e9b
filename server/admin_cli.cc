// What the command files of cairn-server share (server/admin_cli.h): the
// data directory opened for an offline command, the settings file, logging.

#include "server/admin_cli.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "storage/env.h"

namespace cairn::server {

int WithAdmin(const std::string& data_dir, const std::function<int(const Admin&)>& run) {
  Admin admin;
  admin.env = storage::Env::Default();
  admin.data = data_dir;
  Status s = storage::CreateDirAll(admin.env, data_dir);
  if (!s.ok()) return FailCommand(s);
  auto catalog = storage::Catalog::Open(storage::JoinPath(data_dir, "cairn.db"));
  if (!catalog.ok()) return FailCommand(catalog.status());
  admin.catalog = std::move(*catalog);
  auto auth = AuthStore::Open(storage::JoinPath(data_dir, "auth.db"));
  if (!auth.ok()) return FailCommand(auth.status());
  admin.auth = std::move(*auth);
  return run(admin);
}

std::string DefaultConfigFile() {
  // Only an installed server reads /etc by default: a build tree's (the
  // tests') must not pick up a package's settings on the same machine.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec || exe.parent_path() != "/usr/bin") return "";
  const char* path = "/etc/cairn/server.conf";
  return std::filesystem::exists(path, ec) ? path : "";
}

Result<std::vector<std::pair<std::string, std::string>>> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read the settings file " + path);
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(in);
  } catch (const CLI::Error& e) {
    return Status::InvalidArgument(path + ": " + e.what());
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    if (!item.parents.empty() && !(item.parents.size() == 1 && item.parents[0] == "default")) {
      return Status::InvalidArgument(path + ": [" + item.parents[0] +
                                     "]: the settings file has no sections");
    }
    if (item.inputs.size() != 1) {
      return Status::InvalidArgument(path + ": " + item.name + " takes one value");
    }
    std::string key = item.name;
    for (char& c : key) c = c == '_' ? '-' : c;
    out.emplace_back(key, item.inputs[0]);
  }
  return out;
}

Status ApplyConfigFile(const std::string& path, CLI::App* top, CLI::App* run, ConfigUse* use) {
  use->path = path;
  CAIRN_ASSIGN_OR_RETURN(auto items, ReadConfigFile(path));
  for (const auto& [key, value] : items) {
    if (key == "config" || key == "help" || key == "version") {
      return Status::InvalidArgument(path + ": " + key + " is not a setting");
    }
    CLI::Option* global = top->get_option_no_throw("--" + key);
    CLI::Option* of_run = run->get_option_no_throw("--" + key);
    if (!global && !of_run) {
      return Status::InvalidArgument(path + ": unknown setting " + key +
                                     " (see cairn-server run --help)");
    }
    CLI::Option* opt = global ? global : of_run;
    if (!global && !run->parsed()) continue;  // a setting of `run` only
    if (opt->count() > 0) {
      use->from_flags.insert(key);
      continue;
    }
    try {
      opt->add_result(value);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      return Status::InvalidArgument(path + ": " + key + " = " + value + ": " + e.what());
    }
    use->from_file.insert(key);
  }
  // What the command line gave is kept on reload even when the file lacks it.
  for (CLI::Option* opt : run->get_options()) {
    if (opt->count() > 0 && !opt->get_lnames().empty() && !use->from_file.contains(opt->get_lnames()[0])) {
      use->from_flags.insert(opt->get_lnames()[0]);
    }
  }
  return Status::OK();
}

Status SetLogLevel(const std::string& name) {
  auto level = spdlog::level::from_str(name);
  if (level == spdlog::level::off && name != "off") {
    return Status::InvalidArgument("unknown log level " + name);
  }
  spdlog::set_level(level);
  return Status::OK();
}

void SetUpLogging() {
  auto logger = spdlog::stderr_color_mt("cairn-server");
  // journald stamps each line itself.
  if (std::getenv("JOURNAL_STREAM")) logger->set_pattern("%l: %v");
  spdlog::set_default_logger(logger);
}

}  // namespace cairn::server
