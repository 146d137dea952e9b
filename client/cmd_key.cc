// cairn key …: the client-side encryption key (FORMAT.md "Encryption keys").
//   key create [--kdf scrypt|none] [FILE]       a new random key
//   key change-passphrase [FILE]                 rewrap it (or --kdf none)
//   key show [FILE]                              fingerprint, kdf, created
//   key paperkey [FILE]                          the key file as text for paper
//   key import-paperkey PAPERFILE [FILE]         the key file back from paper
//   key create-master --private F --public F     an RSA master key pair
//   key recover --master-key F SNAPSHOT [FILE]   the key of a snapshot, from its
//                                                master-key.blob (client/key_recovery.h)
// FILE defaults to ~/.config/cairn/encryption-key.json (root:
// /etc/cairn/encryption-key.json). Passphrases: --passphrase-file, else
// $CAIRN_KEY_PASSPHRASE, else a prompt on the terminal. No key file and no
// PEM file is ever overwritten except by change-passphrase.

#include <unistd.h>

#include <ctime>
#include <iostream>
#include <iterator>
#include <memory>

#include "client/cli.h"
#include "client/encryption_key.h"
#include "client/key_recovery.h"
#include "storage/env.h"
#include "storage/names.h"

namespace cairn::client {
namespace {

using nlohmann::json;

constexpr const char* kNewPassphraseEnv = "CAIRN_NEW_KEY_PASSPHRASE";
constexpr const char* kMasterPassphraseEnv = "CAIRN_MASTER_KEY_PASSPHRASE";
constexpr size_t kMaxPaperKeySize = 1024 * 1024;

struct KeyFlags {
  std::string file;
  std::string kdf = "scrypt";
  std::string passphrase_file;
  std::string new_passphrase_file;
  std::string paper_file;
  std::string private_file;
  std::string public_file;
  bool no_passphrase = false;
  std::string master_key_file;
  std::string snapshot;
};

// FILE, or the default path.
Result<std::string> KeyPath(const KeyFlags& flags) {
  if (!flags.file.empty()) return flags.file;
  return DefaultKeyFilePath();
}

PassphraseSource Source(const std::string& file, const char* env_var) {
  PassphraseSource s;
  s.file = file;
  s.env_var = env_var;
  return s;
}

json KeyJson(const std::string& path, const KeyFile& file) {
  json j = {{"path", path},
            {"fingerprint", file.fingerprint},
            {"kdf", KeyKdfName(file.kdf)},
            {"created", file.created}};
  if (file.kdf == KeyKdf::kScrypt) {
    j["scrypt"] = {{"n", file.scrypt.n}, {"r", file.scrypt.r}, {"p", file.scrypt.p}};
  }
  return j;
}

void PrintKey(const GlobalOptions& global, const std::string& path, const KeyFile& file) {
  if (global.json()) {
    std::cout << KeyJson(path, file).dump(2) << "\n";
    return;
  }
  std::cout << "path:        " << path << "\n"
            << "fingerprint: " << file.fingerprint << "\n"
            << "kdf:         " << KeyKdfName(file.kdf);
  if (file.kdf == KeyKdf::kScrypt) {
    std::cout << " (N=" << file.scrypt.n << ", r=" << file.scrypt.r << ", p=" << file.scrypt.p
              << ")";
  }
  std::cout << "\ncreated:     " << storage::FormatSnapshotTime(file.created) << "\n";
}

// Locks `key` with the kdf named in `flags`, asking for a new passphrase
// (twice on a terminal) when that is scrypt.
Result<KeyFile> LockWithNewPassphrase(const EncryptionKey& key, const std::string& kdf_name,
                                      const PassphraseSource& source) {
  CAIRN_ASSIGN_OR_RETURN(KeyKdf kdf, ParseKeyKdf(kdf_name));
  std::string pass;
  if (kdf == KeyKdf::kScrypt) {
    CAIRN_ASSIGN_OR_RETURN(pass, ReadPassphrase(source, "new passphrase for the key: ", true));
  }
  return LockKey(key, kdf, pass);
}

int RunCreate(const GlobalOptions& global, const KeyFlags& flags) {
  auto path = KeyPath(flags);
  if (!path.ok()) return Fail(path.status());
  if (::access(path->c_str(), F_OK) == 0) {
    return Fail(Status::AlreadyExists(*path + " exists: not overwritten (a key that is "
                                              "replaced cannot restore what it encrypted)"));
  }
  auto key = GenerateEncryptionKey(std::time(nullptr));
  if (!key.ok()) return Fail(key.status());
  auto file = LockWithNewPassphrase(
      *key, flags.kdf, Source(flags.passphrase_file, "CAIRN_KEY_PASSPHRASE"));
  if (!file.ok()) return Fail(file.status());
  if (Status s = WriteKeyFile(*path, *file, false); !s.ok()) return Fail(s);
  if (global.json()) {
    std::cout << KeyJson(*path, *file).dump(2) << "\n";
    return 0;
  }
  std::cout << "created key " << file->fingerprint << " (kdf " << KeyKdfName(file->kdf)
            << ") in " << *path << "\n"
            << "Without this key no backup it encrypts can be restored: keep a copy away "
               "from this host (`cairn key paperkey` prints one for paper).\n";
  return 0;
}

int RunChangePassphrase(const GlobalOptions& global, const KeyFlags& flags) {
  auto path = KeyPath(flags);
  if (!path.ok()) return Fail(path.status());
  auto file = ReadKeyFile(*path);
  if (!file.ok()) return Fail(file.status());
  std::string old_pass;
  if (file->kdf == KeyKdf::kScrypt) {
    auto pass = ReadPassphrase(Source(flags.passphrase_file, "CAIRN_KEY_PASSPHRASE"),
                               "current passphrase for key " + file->fingerprint + ": ", false);
    if (!pass.ok()) return Fail(pass.status());
    old_pass = *pass;
  }
  auto key = UnlockKey(*file, old_pass);
  if (!key.ok()) return Fail(key.status());
  auto changed =
      LockWithNewPassphrase(*key, flags.kdf, Source(flags.new_passphrase_file, kNewPassphraseEnv));
  if (!changed.ok()) return Fail(changed.status());
  if (Status s = WriteKeyFile(*path, *changed, true); !s.ok()) return Fail(s);
  if (global.json()) {
    std::cout << KeyJson(*path, *changed).dump(2) << "\n";
  } else {
    std::cout << "key " << changed->fingerprint << " in " << *path << " now has kdf "
              << KeyKdfName(changed->kdf)
              << (changed->kdf == KeyKdf::kScrypt ? " with the new passphrase" : "") << "\n";
  }
  return 0;
}

int RunShow(const GlobalOptions& global, const KeyFlags& flags) {
  auto path = KeyPath(flags);
  if (!path.ok()) return Fail(path.status());
  auto file = ReadKeyFile(*path);
  if (!file.ok()) return Fail(file.status());
  PrintKey(global, *path, *file);
  return 0;
}

int RunPaperKey(const GlobalOptions& global, const KeyFlags& flags) {
  auto path = KeyPath(flags);
  if (!path.ok()) return Fail(path.status());
  auto file = ReadKeyFile(*path);
  if (!file.ok()) return Fail(file.status());
  const std::string paper = RenderPaperKey(*file);
  if (global.json()) {
    std::cout << json({{"fingerprint", file->fingerprint}, {"paperkey", paper}}).dump(2) << "\n";
  } else {
    std::cout << paper;
  }
  return 0;
}

// PAPERFILE, or standard input for "-".
Status ReadPaper(const std::string& name, std::string* text) {
  if (name != "-") {
    CAIRN_RETURN_IF_ERROR(storage::Env::Default()->ReadFile(name, text, kMaxPaperKeySize));
    return Status::OK();
  }
  text->assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  if (text->size() > kMaxPaperKeySize) return Status::InvalidArgument("paperkey text too long");
  return Status::OK();
}

int RunImportPaperKey(const GlobalOptions& global, const KeyFlags& flags) {
  auto path = KeyPath(flags);
  if (!path.ok()) return Fail(path.status());
  std::string text;
  if (Status s = ReadPaper(flags.paper_file, &text); !s.ok()) return Fail(s);
  auto file = ParsePaperKey(text);
  if (!file.ok()) return Fail(file.status());
  if (file->kdf == KeyKdf::kNone) {
    // The only check possible without a passphrase: the key has its fingerprint.
    if (auto key = UnlockKey(*file, ""); !key.ok()) return Fail(key.status());
  }
  if (Status s = WriteKeyFile(*path, *file, false); !s.ok()) return Fail(s);
  if (global.json()) {
    std::cout << KeyJson(*path, *file).dump(2) << "\n";
  } else {
    std::cout << "imported key " << file->fingerprint << " (kdf " << KeyKdfName(file->kdf)
              << ") into " << *path << "\n";
  }
  return 0;
}

int RunCreateMaster(const GlobalOptions& global, const KeyFlags& flags) {
  for (const std::string* f : {&flags.private_file, &flags.public_file}) {
    if (::access(f->c_str(), F_OK) == 0) {
      return Fail(Status::AlreadyExists(*f + " exists: not overwritten"));
    }
  }
  if (flags.no_passphrase && !flags.passphrase_file.empty()) {
    return Fail(Status::InvalidArgument("--no-passphrase and --passphrase-file exclude each other"));
  }
  std::string pass;
  if (!flags.no_passphrase) {
    auto p = ReadPassphrase(Source(flags.passphrase_file, kMasterPassphraseEnv),
                            "passphrase for the master private key: ", true);
    if (!p.ok()) return Fail(p.status());
    pass = *p;
  }
  auto pair = GenerateMasterKey(pass);
  if (!pair.ok()) return Fail(pair.status());
  if (Status s = WriteSecretFile(flags.private_file, pair->private_pem, false, 0600); !s.ok()) {
    return Fail(s);
  }
  if (Status s = WriteSecretFile(flags.public_file, pair->public_pem, false, 0644); !s.ok()) {
    return Fail(s);
  }
  if (global.json()) {
    std::cout << json({{"private", flags.private_file},
                       {"public", flags.public_file},
                       {"encrypted", !pass.empty()}})
                     .dump(2)
              << "\n";
  } else {
    std::cout << "created master key pair (RSA-3072)\n"
              << "  public:  " << flags.public_file
              << "  (give it to backups: --master-pubkey)\n"
              << "  private: " << flags.private_file
              << (pass.empty() ? "  (NOT passphrase-protected)" : "")
              << "  (keep it offline: it recovers every key it was given)\n";
  }
  return 0;
}

int RunRecover(const GlobalOptions& global, const KeyFlags& flags) {
  auto repo = global.Resolve();
  if (!repo.ok()) return Fail(repo.status());
  auto path = KeyPath(flags);
  if (!path.ok()) return Fail(path.status());
  // Refused before anything is asked or fetched.
  if (::access(path->c_str(), F_OK) == 0) {
    return Fail(Status::AlreadyExists(*path + " exists: not overwritten"));
  }
  std::string pem;
  if (Status s = storage::Env::Default()->ReadFile(flags.master_key_file, &pem, kMaxPaperKeySize);
      !s.ok()) {
    return Fail(s.WithContext(flags.master_key_file));
  }
  std::string pass;
  if (pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos) {
    auto p = ReadPassphrase(Source(flags.passphrase_file, kMasterPassphraseEnv),
                            "passphrase for the master private key: ", false);
    if (!p.ok()) return Fail(p.status());
    pass = *p;
  }
  auto key = RecoverKey(*repo, flags.snapshot, pem, pass);
  if (!key.ok()) return Fail(key.status());
  // Written as it came: without a passphrase (change-passphrase adds one).
  auto file = LockKey(*key, KeyKdf::kNone, "");
  if (!file.ok()) return Fail(file.status());
  if (Status s = WriteKeyFile(*path, *file, false); !s.ok()) return Fail(s);
  if (global.json()) {
    json j = KeyJson(*path, *file);
    j["snapshot"] = flags.snapshot;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "recovered key " << file->fingerprint << " of " << flags.snapshot << " into "
              << *path << " (no passphrase: `cairn key change-passphrase` sets one)\n";
  }
  return 0;
}

// A key subcommand: FILE as its optional positional, options of the
// top-level app (--output …) accepted after it too.
CLI::App* KeySub(CLI::App* key, const char* name, const char* help,
                 const std::shared_ptr<KeyFlags>& flags, bool with_file = true) {
  CLI::App* sub = key->add_subcommand(name, help);
  sub->fallthrough();
  if (with_file) {
    sub->add_option("file", flags->file,
                    "key file (default ~/.config/cairn/encryption-key.json; "
                    "/etc/cairn/encryption-key.json for root)");
  }
  return sub;
}

}  // namespace

void AddKeyCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* commands) {
  auto* key = app.add_subcommand("key", "client-side encryption keys");
  key->require_subcommand(1);
  key->fallthrough();
  auto flags = std::make_shared<KeyFlags>();
  const auto run = [&global, flags](int (*fn)(const GlobalOptions&, const KeyFlags&)) {
    return [&global, flags, fn] { return fn(global, *flags); };
  };

  auto* create = KeySub(key, "create", "create a new random encryption key", flags);
  create->add_option("--kdf", flags->kdf, "scrypt (a passphrase protects the file) or none")
      ->check(CLI::IsMember({"scrypt", "none"}));
  create->add_option("--passphrase-file", flags->passphrase_file,
                     "read the passphrase from this file's first line "
                     "(else $CAIRN_KEY_PASSPHRASE, else a prompt)");
  commands->push_back({create, run(RunCreate)});

  auto* change = KeySub(key, "change-passphrase", "protect the key file with a new passphrase",
                        flags);
  change->add_option("--kdf", flags->kdf, "scrypt, or none to store the key unprotected")
      ->check(CLI::IsMember({"scrypt", "none"}));
  change->add_option("--passphrase-file", flags->passphrase_file,
                     "the current passphrase (else $CAIRN_KEY_PASSPHRASE, else a prompt)");
  change->add_option("--new-passphrase-file", flags->new_passphrase_file,
                     "the new passphrase (else $CAIRN_NEW_KEY_PASSPHRASE, else a prompt)");
  commands->push_back({change, run(RunChangePassphrase)});

  auto* show = KeySub(key, "show", "the key's fingerprint, kdf and creation time", flags);
  commands->push_back({show, run(RunShow)});

  auto* paper = KeySub(key, "paperkey", "print the key file as text to keep on paper", flags);
  commands->push_back({paper, run(RunPaperKey)});

  auto* import = key->add_subcommand("import-paperkey", "write the key file back from a paperkey");
  import->fallthrough();
  import->add_option("paperfile", flags->paper_file, "the paperkey text (- for standard input)")
      ->required();
  import->add_option("file", flags->file, "key file to write (default as for `key create`)");
  commands->push_back({import, run(RunImportPaperKey)});

  auto* master = KeySub(key, "create-master",
                        "create an RSA-3072 master key pair that can recover keys from "
                        "snapshots",
                        flags, false);
  master->add_option("--private", flags->private_file, "where to write the private key (PEM)")
      ->required();
  master->add_option("--public", flags->public_file, "where to write the public key (PEM)")
      ->required();
  master->add_option("--passphrase-file", flags->passphrase_file,
                     "protect the private key with this file's first line "
                     "(else $CAIRN_MASTER_KEY_PASSPHRASE, else a prompt)");
  master->add_flag("--no-passphrase", flags->no_passphrase,
                   "leave the private key unprotected");
  commands->push_back({master, run(RunCreateMaster)});

  auto* recover = key->add_subcommand(
      "recover", "write the key file of a snapshot backed up with --master-pubkey, "
                 "using the master private key");
  recover->fallthrough();
  recover->add_option("--master-key", flags->master_key_file, "the master private key (PEM)")
      ->required();
  recover->add_option("--passphrase-file", flags->passphrase_file,
                      "the master private key's passphrase "
                      "(else $CAIRN_MASTER_KEY_PASSPHRASE, else a prompt)");
  recover->add_option("snapshot", flags->snapshot, "vm/ID/YYYY-MM-DDTHH:MM:SSZ")->required();
  recover->add_option("file", flags->file, "key file to write (default as for `key create`)");
  commands->push_back({recover, run(RunRecover)});
}

}  // namespace cairn::client
