#include "client/cli.h"

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "storage/env.h"

namespace cairn::client {

Result<Repository> GlobalOptions::Resolve() const {
  return Repository::Resolve(repo, token_file, fingerprint, ca_file);
}

CLI::Option* AddKeyOptions(CLI::App* cmd, KeyOptions* options) {
  CLI::Option* keyfile = cmd->add_option(
      "--keyfile", options->keyfile,
      "encryption key file (default ~/.config/cairn/encryption-key.json, for root "
      "/etc/cairn/encryption-key.json)");
  cmd->add_option("--passphrase-file", options->passphrase_file,
                  "file whose first line is the key's passphrase (else $CAIRN_KEY_PASSPHRASE or "
                  "a prompt)");
  return keyfile;
}

Result<std::string> KeyFilePath(const KeyOptions& options) {
  if (!options.keyfile.empty()) return options.keyfile;
  return DefaultKeyFilePath();
}

Result<EncryptionKey> LoadKey(const KeyOptions& options) {
  CAIRN_ASSIGN_OR_RETURN(std::string path, KeyFilePath(options));
  PassphraseSource source;
  source.file = options.passphrase_file;
  return LoadEncryptionKey(path, source);
}

Result<std::shared_ptr<const storage::CryptConfig>> ReadKeyConfig(const KeyOptions& options) {
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

Result<std::string> ReadSmallFile(const std::string& path) {
  std::string out;
  Status s = storage::Env::Default()->ReadFile(path, &out, 1 << 20);
  if (!s.ok()) return s.WithContext(path);
  return out;
}

int Fail(const Status& s) {
  std::cerr << "cairn: " << s.message() << "\n";
  return s.IsInvalidArgument() ? 2 : 1;
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

std::string Rate(double bytes_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB/s", bytes_per_s / 1e6);
  return buf;
}

}  // namespace cairn::client
