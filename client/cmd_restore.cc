// cairn restore SNAPSHOT ARCHIVE TARGET [--format raw|qcow2] [--keyfile F]
// [--passphrase-file P]: writes a disk archive of a snapshot to a file or
// block device. An encrypted snapshot needs its key: --keyfile, else the
// default key file when there is one.

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include <filesystem>

#include "client/cli.h"
#include "client/encryption_key.h"
#include "client/restore.h"

namespace cairn::client {
namespace {

struct RestoreFlags {
  std::string snapshot, archive, target, format = "raw";
  KeyOptions key;
};

// The key for an encrypted snapshot: --keyfile, else the default key file;
// null when neither is there (RestoreArchive then names the key it needs).
Result<std::shared_ptr<const storage::CryptConfig>> KeyFor(const KeyOptions& options) {
  std::shared_ptr<const storage::CryptConfig> none;
  if (options.keyfile.empty()) {
    Result<std::string> path = DefaultKeyFilePath();
    std::error_code ec;
    if (!path.ok() || !std::filesystem::exists(*path, ec)) return none;
  }
  CAIRN_ASSIGN_OR_RETURN(EncryptionKey key, LoadKey(options));
  CAIRN_ASSIGN_OR_RETURN(storage::CryptConfig crypt, key.Config());
  return std::make_shared<const storage::CryptConfig>(std::move(crypt));
}

void ShowRestoreProgress(uint64_t done, uint64_t total) {
  std::fprintf(stderr, "\r\033[Krestored %s of %s", HumanSize(done).c_str(),
               HumanSize(total).c_str());
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

int RunRestore(const GlobalOptions& global, const RestoreFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  RestoreOptions ro;
  ro.format = flags.format;
  if (!global.json() && ::isatty(2)) ro.progress = ShowRestoreProgress;
  ro.key = [&flags](const std::string&) { return KeyFor(flags.key); };
  auto r = RestoreArchive(*repo, flags.snapshot, flags.archive, flags.target, ro);
  if (!r.ok()) return Fail(r.status());
  if (r->fingerprint.empty() && !flags.key.keyfile.empty()) {
    std::cerr << "cairn: note: " << flags.snapshot << " is not encrypted; --keyfile was not used\n";
  }
  const double mb_per_s =
      r->seconds > 0 ? static_cast<double>(r->image_size) / 1e6 / r->seconds : 0.0;
  if (global.json()) {
    nlohmann::json j = {{"snapshot", flags.snapshot},    {"archive", flags.archive},
                        {"target", flags.target},        {"format", flags.format},
                        {"size", r->image_size},         {"chunks", r->chunks},
                        {"zero-chunks", r->zero_chunks}, {"bytes-downloaded", r->bytes_downloaded},
                        {"seconds", r->seconds},         {"mb-per-s", mb_per_s},
                        {"encrypted", !r->fingerprint.empty()},
                        {"fingerprint", r->fingerprint.empty() ? nlohmann::json(nullptr)
                                                               : nlohmann::json(r->fingerprint)}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "restored " << flags.snapshot << " " << flags.archive << " to " << flags.target
              << " (" << flags.format << "): " << HumanSize(r->image_size) << ", " << r->chunks
              << " chunks (" << r->zero_chunks << " zero), " << r->seconds << " s, "
              << Rate(mb_per_s * 1e6);
    if (!r->fingerprint.empty()) std::cout << ", decrypted with key " << r->fingerprint;
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

void AddRestoreCommand(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto flags = std::make_shared<RestoreFlags>();
  auto* cmd = app.add_subcommand("restore", "restore a disk archive of a snapshot");
  cmd->add_option("SNAPSHOT", flags->snapshot, "vm/ID/YYYY-MM-DDTHH:MM:SSZ")->required();
  cmd->add_option("ARCHIVE", flags->archive, "disk archive, e.g. disk0 or disk0.fidx")->required();
  cmd->add_option("TARGET", flags->target, "file or block device to write")->required();
  cmd->add_option("--format", flags->format, "raw or qcow2")
      ->check(CLI::IsMember({"raw", "qcow2"}));
  AddKeyOptions(cmd, &flags->key);
  commands->push_back({cmd, [&global, flags] { return RunRestore(global, *flags); }});
}

}  // namespace cairn::client
