#pragma once

// What the command files of `cairn` (client/cmd_*.cc) share: the global
// flags, how a command registers its subcommand and runs, and how errors,
// sizes and rates are printed. main.cc only wires the commands together.
//
// Exit codes: 0 done, 2 a bad argument (InvalidArgument, and every command
// line CLI11 refuses: main.cc maps its own codes to 2), 1 anything else
// (a wrong passphrase, a file that exists, the server's refusal, …),
// kExitSomeFailed (3) when `backup all` backed up some VMs and failed on
// others.
//
// Not thread-safe: the command line runs on one thread.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "client/api_client.h"
#include "client/encryption_key.h"
#include "storage/status.h"

namespace cairn::client {

// `backup all`: some VMs were backed up, some failed (cairn(1), EXIT STATUS).
inline constexpr int kExitSomeFailed = 3;

// The global flags: before or after the subcommand.
struct GlobalOptions {
  std::string repo;         // --repo, or $CAIRN_REPO
  std::string token_file;   // --token-file, or $CAIRN_TOKEN
  std::string fingerprint;  // --fingerprint, or $CAIRN_FINGERPRINT
  std::string ca_file;      // --ca-file, or $CAIRN_CA_FILE (instead of a fingerprint)
  std::string output = "text";

  bool json() const { return output == "json"; }
  // The repository the flags and the environment name (Repository::Resolve).
  Result<Repository> Resolve() const;
};

// A parsed subcommand and what runs it; `run` returns the exit code.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Each adds its subcommand(s) to `app` and appends what runs them to
// `commands`. `global` must outlive the commands. main.cc calls them in the
// order the help lists the subcommands.
void AddSnapshotsCommand(CLI::App& app, const GlobalOptions& global,
                         std::vector<Command>* commands);
void AddPruneCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
void AddGcCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
void AddVerifyCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `tasks` and `task log`.
void AddTaskCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `backup vm` and `backup image`.
void AddBackupCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `backup all` (client/cmd_backup_all.cc). REQUIRES: AddBackupCommands ran.
void AddBackupAllCommand(CLI::App& app, const GlobalOptions& global,
                         std::vector<Command>* commands);
void AddRestoreCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `map` (client/MAP.md).
void AddMapCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `files ls` and `files get` (client/MAP.md).
void AddFilesCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `bitmaps` and `cleanup`.
void AddBitmapCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);
// `key create`, `key change-passphrase`, `key show`, `key paperkey`,
// `key import-paperkey`, `key create-master`, `key recover`.
void AddKeyCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands);

// Prints "cairn: <message>" to stderr; returns the exit code for `s`.
int Fail(const Status& s);
// "512 B", "1.5 MiB", …
std::string HumanSize(uint64_t bytes);
// "12.3 MB/s".
std::string Rate(double bytes_per_s);

// The flags that name an encryption key and its passphrase (backup,
// restore, key commands).
struct KeyOptions {
  std::string keyfile;          // --keyfile; "" = DefaultKeyFilePath()
  std::string passphrase_file;  // --passphrase-file; else $CAIRN_KEY_PASSPHRASE, else a prompt
};
// Adds --keyfile and --passphrase-file to `cmd`; returns the --keyfile option.
CLI::Option* AddKeyOptions(CLI::App* cmd, KeyOptions* options);
// The key file `options` name (or the default one), unlocked: NotFound when
// it does not exist, PermissionDenied for a wrong passphrase
// (LoadEncryptionKey).
Result<EncryptionKey> LoadKey(const KeyOptions& options);
// The path LoadKey reads.
Result<std::string> KeyFilePath(const KeyOptions& options);
// The key that reads an encrypted snapshot (restore, map, files): --keyfile,
// else the default key file; null when neither is there (the reader then
// names the key it needs).
Result<std::shared_ptr<const storage::CryptConfig>> ReadKeyConfig(const KeyOptions& options);
// The contents of a small local file (a PEM, a paper key): at most 1 MiB;
// IOError/NotFound naming the path.
Result<std::string> ReadSmallFile(const std::string& path);

}  // namespace cairn::client
