// Writes the valid seeds of tests/fuzz/corpus/ with the real encoders:
//   build-fuzz/tests/fuzz/cairn_fuzz_seeds tests/fuzz/corpus
// (the hand-written edge inputs next to them are checked in as they are).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "client/encryption_key.h"
#include "storage/blob.h"
#include "storage/digest.h"
#include "storage/fixed_index.h"
#include "storage/manifest.h"

namespace fs = std::filesystem;
using namespace cairn::storage;
using namespace cairn::client;

namespace {

fs::path root;

void Put(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(root / target);
  std::ofstream(root / target / name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: cairn_fuzz_seeds <corpus dir>\n";
    return 2;
  }
  root = argv[1];
  const std::string text = "hello, cairn hello, cairn hello, cairn hello, cairn\n";
  Put("blob", "plain", EncodeBlob(text, false));
  Put("blob", "zstd", EncodeBlob(text, true));
  Put("blob", "empty", EncodeBlob("", false));
  Put("blob", "zeros_zstd", EncodeBlob(std::string(65536, '\0'), true));
  auto enc = BuildEncryptedBlob(BlobKind::kEncrypted, 32, [](const EncryptedBlobParts&) {
    return Status::OK();
  });
  if (enc.ok()) Put("blob", "encrypted", *enc);

  for (uint64_t image : {uint64_t{0}, uint64_t{1}, uint64_t{3} * 4096 + 17}) {
    FixedIndexWriter w(image, 4096);
    for (uint64_t i = 0; i < w.chunk_count(); ++i) (void)w.Set(i, Sha256(std::to_string(i)));
    auto bytes = w.Finish(1764000000);
    if (bytes.ok()) Put("fixed_index", "image_" + std::to_string(image), *bytes);
  }

  Manifest m;
  m.backup_type = "vm";
  m.backup_id = "100";
  m.backup_time = 1764000000;
  m.archives.push_back({"drive-scsi0.fidx", 8u << 20, Sha256("a")});
  m.archives.push_back({"qemu-server.conf.blob", 300, Sha256("b")});
  m.client = {{"hostname", "pve1"}, {"bitmap", {{"used", true}}}};
  Put("manifest", "plain", m.ToJson());
  m.verify = VerifyState{"ok", 1764000100, "UPID:1"};
  m.notes = "weekly \"notes\" \u00e9";
  m.is_protected = true;
  m.crypt = CryptInfo{"01:23:45:67:89:ab:cd:ef", std::string(64, 'a')};
  Put("manifest", "encrypted_verified", m.ToJson());

  auto key = GenerateEncryptionKey(1764000000);
  if (key.ok()) {
    auto none = LockKey(*key, KeyKdf::kNone, "");
    if (none.ok()) {
      Put("key_file", "kdf_none", none->ToJson());
      Put("key_file", "paper_none", RenderPaperKey(*none));
    }
    ScryptParams cheap;
    cheap.n = 16;
    cheap.r = 1;
    auto scrypt = LockKey(*key, KeyKdf::kScrypt, "passphrase", cheap);
    if (scrypt.ok()) Put("key_file", "kdf_scrypt", scrypt->ToJson());
  }

  const std::string payload = "chunk payload";
  Put("chunk_upload", "verified_zstd",
      Sha256(payload).ToHex() + "\n" + std::to_string(payload.size()) + "\nv" +
          EncodeBlob(payload, true));
  Put("chunk_upload", "verified_plain",
      Sha256(payload).ToHex() + "\n" + std::to_string(payload.size()) + "\nv" +
          EncodeBlob(payload, false));
  if (enc.ok()) {
    Put("chunk_upload", "encrypted", Sha256("x").ToHex() + "\n16\ne" + *enc);
  }
  return 0;
}
