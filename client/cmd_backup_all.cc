// cairn backup all [--config FILE] [--jobs N] [--hook SCRIPT] [--dry-run]:
// every VM the config names (client/host_backup.h), one table at the end
// (or the report as one JSON object with --output json), the report sent by
// mail and/or webhook as [notify] says. Exit status: 0 every VM committed,
// 3 some VM failed or was not run (kExitSomeFailed), 2 a bad command line or
// config file, 1 anything else (no repository reachable is a per-VM failure).

#include <unistd.h>

#include <iostream>
#include <memory>

#include "client/backup_config.h"
#include "client/cli.h"
#include "client/encryption_key.h"
#include "client/host_backup.h"

namespace cairn::client {
namespace {

using nlohmann::json;

// `backup all`'s exit status when some VM did not commit.
constexpr int kExitSomeFailed = 3;

struct BackupAllFlags {
  std::string config = kDefaultBackupConfig;
  int jobs = 0;
  std::string hook;
  bool dry_run = false;
};

// The config's encryption settings into `upload` (as `backup vm --encrypt`).
Status SetUpEncryption(const BackupConfig& c, UploadOptions* upload) {
  if (!c.encrypt) return Status::OK();
  KeyOptions key{c.keyfile, c.passphrase_file};
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey k, LoadKey(key));
  CAIRN_ASSIGN_OR_RETURN(storage::CryptConfig crypt, k.Config());
  upload->crypt = std::make_shared<const storage::CryptConfig>(std::move(crypt));
  if (!c.master_pubkey.empty()) {
    CAIRN_ASSIGN_OR_RETURN(std::string pem, ReadSmallFile(c.master_pubkey));
    Result<std::string> sealed = EncryptKeyForMaster(pem, k.key, k.fingerprint, k.created);
    if (!sealed.ok()) return sealed.status().WithContext("master-pubkey " + c.master_pubkey);
    upload->master_key = std::move(sealed).value();
  }
  return Status::OK();
}

// --repo, --token-file, --fingerprint win over the config, which wins over
// the environment.
Result<Repository> ResolveRepository(const GlobalOptions& global, const BackupConfig& c) {
  return Repository::Resolve(global.repo.empty() ? c.repository : global.repo,
                             global.token_file.empty() ? c.token_file : global.token_file,
                             global.fingerprint.empty() && global.ca_file.empty() ? c.fingerprint
                                                                                  : global.fingerprint,
                             global.ca_file);
}

int RunDryRun(const GlobalOptions& global, const BackupConfig& config) {
  auto repo = ResolveRepository(global, config);
  if (!repo.ok()) std::cerr << "cairn: " << repo.status().message() << " (the server is not asked)\n";
  json plan = PlanHostBackup(repo.ok() ? &*repo : nullptr, config);
  if (global.json()) {
    std::cout << plan.dump() << "\n";
  } else {
    std::cout << PlanTable(plan);
  }
  return plan.value("ok", false) ? 0 : kExitSomeFailed;
}

int RunBackupAll(const GlobalOptions& global, const BackupAllFlags& flags) {
  auto config = LoadBackupConfig(flags.config);
  if (!config.ok()) {
    // A missing or unreadable config is as bad as a wrong one: nothing ran.
    std::cerr << "cairn: " << config.status().message() << "\n";
    return 2;
  }
  if (flags.dry_run) return RunDryRun(global, *config);
  auto repo = ResolveRepository(global, *config);
  if (!repo.ok()) return Fail(repo.status());
  HostBackupOptions o;
  o.jobs = flags.jobs;
  o.hook = flags.hook;
  o.upload.connections = config->connections;
  // Before anything starts: a passphrase prompt must not hold a session open.
  if (Status s = SetUpEncryption(*config, &o.upload); !s.ok()) return Fail(s);
  if (!global.json()) {
    o.note = [](const std::string& line) { std::cerr << "cairn: " << line << "\n"; };
  }
  auto report = RunHostBackup(*repo, *config, o);
  if (!report.ok()) return Fail(report.status());
  Status notified = NotifyReport(*config, *report);
  if (!notified.ok()) {
    std::cerr << "cairn: notification failed: " << notified.message() << "\n";
    (*report)["notify-error"] = notified.message();
  }
  if (global.json()) {
    std::cout << report->dump() << "\n";
  } else {
    std::cout << ReportTable(*report);
  }
  return report->value("ok", false) ? 0 : kExitSomeFailed;
}

}  // namespace

void AddBackupAllCommand(CLI::App& app, const GlobalOptions& global,
                         std::vector<Command>* commands) {
  CLI::App* backup = app.get_subcommand("backup");
  auto flags = std::make_shared<BackupAllFlags>();
  auto* all = backup->add_subcommand(
      "all", "back up every VM of the host that the config file names (exit 3: some VM failed)");
  all->add_option("--config", flags->config, "the config file")->capture_default_str();
  all->add_option("--jobs", flags->jobs, "VMs at a time (default: the config's jobs, else 1)")
      ->check(CLI::Range(1, 64));
  all->add_option("--hook", flags->hook, "hook script (overrides the config's hook)");
  all->add_flag("--dry-run", flags->dry_run,
                "list what would be backed up and whether full or incremental; touch nothing");
  commands->push_back({all, [&global, flags] { return RunBackupAll(global, *flags); }});
}

}  // namespace cairn::client
