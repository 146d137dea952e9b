// `cairn key …` end to end: the real binary writes, shows, prints and
// re-imports key files; passphrases come from the environment or a file.
// No server is needed.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "client/encryption_key.h"
#include "tests/integration/server_process_testutil.h"
#include "tests/storage/temp_dir_testutil.h"

namespace cairn::testing {
namespace {

using client::EncryptionKey;
using nlohmann::json;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

unsigned Mode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

class KeyCliTest : public ::testing::Test {
 protected:
  // Runs `cairn args…` with `env` (passphrases) added to the environment.
  CommandResult Cairn(const std::vector<std::string>& args,
                      const std::vector<std::string>& env = {}) {
    return RunBinary("client/cairn", args, env, dir_.Join("work"));
  }
  // The raw key in a key file, unlocked with `pass` through the library.
  std::string RawKey(const std::string& path, const std::string& pass) {
    auto file = client::ReadKeyFile(path);
    EXPECT_TRUE(file.ok()) << file.status().ToString();
    if (!file.ok()) return "";
    auto key = client::UnlockKey(*file, pass);
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    return key.ok() ? key->key : "";
  }
  json Show(const std::string& path) {
    auto r = Cairn({"key", "show", path, "--output", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return json::parse(r.output, nullptr, false);
  }

  TempDir dir_;
};

TEST_F(KeyCliTest, CreateShowPaperkeyImport) {
  const std::string key = dir_.Join("key.json");
  auto created = Cairn({"key", "create", key}, {"CAIRN_KEY_PASSPHRASE=horse battery"});
  ASSERT_EQ(created.exit_code, 0) << created.output;
  EXPECT_EQ(Mode(key), 0600u);
  json shown = Show(key);
  ASSERT_TRUE(shown.is_object());
  const std::string fp = shown["fingerprint"];
  EXPECT_NE(created.output.find(fp), std::string::npos) << created.output;
  EXPECT_EQ(shown["kdf"], "scrypt");
  EXPECT_EQ(shown["scrypt"]["n"], 32768);
  EXPECT_TRUE(shown["created"].is_number_integer());
  // Global options before the subcommand work as well.
  auto before = Cairn({"--output", "json", "key", "show", key});
  ASSERT_EQ(before.exit_code, 0) << before.output;
  EXPECT_EQ(json::parse(before.output, nullptr, false)["fingerprint"], fp);
  auto text = Cairn({"key", "show", key});
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("fingerprint: " + fp), std::string::npos) << text.output;

  const std::string raw = RawKey(key, "horse battery");
  ASSERT_EQ(raw.size(), 32u);
  auto paper = Cairn({"key", "paperkey", key});
  ASSERT_EQ(paper.exit_code, 0) << paper.output;
  EXPECT_EQ(paper.output.rfind("-----BEGIN CAIRN PAPERKEY-----\nfingerprint: " + fp + "\n", 0),
            0u)
      << paper.output;
  std::ofstream(dir_.Join("paper.txt")) << paper.output;

  // The key file is lost; the paper brings it back.
  ASSERT_EQ(::unlink(key.c_str()), 0);
  auto imported = Cairn({"key", "import-paperkey", dir_.Join("paper.txt"), key});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  EXPECT_EQ(Mode(key), 0600u);
  EXPECT_EQ(Show(key)["fingerprint"], fp);
  EXPECT_EQ(RawKey(key, "horse battery"), raw);
  // Importing again would overwrite: refused, file untouched.
  const std::string before_text = Slurp(key);
  auto again = Cairn({"key", "import-paperkey", dir_.Join("paper.txt"), key});
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_NE(again.output.find("exists"), std::string::npos) << again.output;
  EXPECT_EQ(Slurp(key), before_text);

  // A typo on paper names the line.
  std::string typo = paper.output;
  size_t pos = typo.find('\n', typo.find("fingerprint:")) + 5;  // data line 1
  typo[pos] = typo[pos] == 'A' ? 'B' : 'A';
  std::ofstream(dir_.Join("typo.txt")) << typo;
  auto bad = Cairn({"key", "import-paperkey", dir_.Join("typo.txt"), dir_.Join("other.json")});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("data line 1"), std::string::npos) << bad.output;
}

TEST_F(KeyCliTest, CreateRefusesToOverwrite) {
  const std::string key = dir_.Join("key.json");
  ASSERT_EQ(Cairn({"key", "create", "--kdf", "none", key}).exit_code, 0);
  const std::string before = Slurp(key);
  auto r = Cairn({"key", "create", "--kdf", "none", key});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("not overwritten"), std::string::npos) << r.output;
  EXPECT_EQ(Slurp(key), before);
  EXPECT_EQ(Show(key)["kdf"], "none");
}

TEST_F(KeyCliTest, PassphrasesWrongChangedAndFromFiles) {
  const std::string key = dir_.Join("key.json");
  std::ofstream(dir_.Join("pw1")) << "first pass\n";
  std::ofstream(dir_.Join("pw2")) << "second pass\n";
  ASSERT_EQ(Cairn({"key", "create", key, "--passphrase-file", dir_.Join("pw1")}).exit_code, 0);
  const std::string fp = Show(key)["fingerprint"];
  const std::string raw = RawKey(key, "first pass");

  // A wrong passphrase: exit 1, the message names the key.
  auto wrong = Cairn({"key", "change-passphrase", key, "--new-passphrase-file", dir_.Join("pw2")},
                     {"CAIRN_KEY_PASSPHRASE=not it"});
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
  EXPECT_NE(wrong.output.find("wrong passphrase for key " + fp), std::string::npos)
      << wrong.output;
  EXPECT_EQ(RawKey(key, "first pass"), raw);
  // An empty one is a bad argument.
  auto empty = Cairn({"key", "change-passphrase", key}, {"CAIRN_KEY_PASSPHRASE="});
  EXPECT_EQ(empty.exit_code, 2) << empty.output;

  // Changed: the old passphrase no longer opens it, the new one gives the same key.
  auto changed = Cairn({"key", "change-passphrase", key, "--passphrase-file", dir_.Join("pw1")},
                       {"CAIRN_NEW_KEY_PASSPHRASE=second pass"});
  ASSERT_EQ(changed.exit_code, 0) << changed.output;
  EXPECT_EQ(Mode(key), 0600u);
  auto file = client::ReadKeyFile(key);
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(client::UnlockKey(*file, "first pass").status().IsPermissionDenied());
  EXPECT_EQ(RawKey(key, "second pass"), raw);
  EXPECT_EQ(Show(key)["fingerprint"], fp);
}

TEST_F(KeyCliTest, BadCommandLinesExitTwo) {
  EXPECT_EQ(Cairn({"key", "create", "--kdf", "argon2", dir_.Join("k")}).exit_code, 2);
  EXPECT_EQ(Cairn({"key"}).exit_code, 2);
  EXPECT_EQ(Cairn({"key", "import-paperkey"}).exit_code, 2);
  EXPECT_EQ(Cairn({"key", "show", dir_.Join("k"), "--bogus"}).exit_code, 2);
  EXPECT_EQ(Cairn({"key", "--help"}).exit_code, 0);
  auto missing = Cairn({"key", "show", dir_.Join("absent.json")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("cairn key create"), std::string::npos) << missing.output;
}

TEST_F(KeyCliTest, CreateMaster) {
  const std::string priv = dir_.Join("master.pem");
  const std::string pub = dir_.Join("master.pub.pem");
  auto r = Cairn({"key", "create-master", "--private", priv, "--public", pub, "--no-passphrase"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Mode(priv), 0600u);
  EXPECT_EQ(Mode(pub), 0644u);
  EXPECT_NE(Slurp(priv).find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
  EXPECT_NE(Slurp(pub).find("-----BEGIN PUBLIC KEY-----"), std::string::npos);
  // Never over existing files.
  auto again = Cairn({"key", "create-master", "--private", priv, "--public", dir_.Join("x"),
                      "--no-passphrase"});
  EXPECT_EQ(again.exit_code, 1) << again.output;

  // With a passphrase: the private key opens only with it.
  std::ofstream(dir_.Join("mpw")) << "master secret\n";
  const std::string priv2 = dir_.Join("m2.pem");
  const std::string pub2 = dir_.Join("m2.pub.pem");
  r = Cairn({"key", "create-master", "--private", priv2, "--public", pub2, "--passphrase-file",
             dir_.Join("mpw")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(Slurp(priv2).find("-----BEGIN ENCRYPTED PRIVATE KEY-----"), std::string::npos);
  auto key = client::GenerateEncryptionKey(1700000000);
  ASSERT_TRUE(key.ok());
  for (const auto& [pri, pu, pass] : {std::tuple{priv, pub, std::string()},
                                      std::tuple{priv2, pub2, std::string("master secret")}}) {
    auto sealed =
        client::EncryptKeyForMaster(Slurp(pu), key->key, key->fingerprint, key->created);
    ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
    auto back = client::DecryptKeyWithMaster(Slurp(pri), pass, *sealed);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->key, key->key);
  }
  EXPECT_TRUE(client::DecryptKeyWithMaster(
                  Slurp(priv2), "wrong",
                  *client::EncryptKeyForMaster(Slurp(pub2), key->key, key->fingerprint, 1))
                  .status()
                  .IsPermissionDenied());
  auto both = Cairn({"key", "create-master", "--private", dir_.Join("a"), "--public",
                     dir_.Join("b"), "--no-passphrase", "--passphrase-file", dir_.Join("mpw")});
  EXPECT_EQ(both.exit_code, 2) << both.output;
}

}  // namespace
}  // namespace cairn::testing
