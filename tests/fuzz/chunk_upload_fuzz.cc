// Chunk uploads (POST /api/v1/backup/<id>/chunk?digest=&size=, server/API.md):
// the digest parameter (storage::Digest::FromHex) and the blob body checked
// and stored by ChunkStore::InsertBlob, the function BackupSession calls,
// on a real chunk store in a temporary folder. Input: "<digest>\n<size>\n"
// then one byte choosing the domain ('e' encrypted, else verified), then the
// body. Invariants: a verified chunk is stored only if it decodes to `size`
// bytes whose SHA-256 is the digest; what is stored reads back as the blob.
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "storage/blob.h"
#include "storage/chunk_store.h"
#include "storage/digest.h"
#include "storage/env.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::storage;

namespace {

// A chunk store in a temporary folder, removed at exit.
struct TempStore {
  TempStore() {
    char tmpl[] = "/tmp/cairn-fuzz-chunks-XXXXXX";
    FUZZ_CHECK(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    FUZZ_CHECK(ChunkStore::Create(Env::Default(), dir).ok());
    ChunkStoreOptions options;
    options.sync = false;
    auto s = ChunkStore::Open(Env::Default(), dir, options);
    FUZZ_CHECK(s.ok());
    store = std::move(s).value();
  }
  ~TempStore() {
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string dir;
  std::unique_ptr<ChunkStore> store;
};

ChunkStore* Store() {
  static TempStore temp;
  return temp.store.get();
}

}  // namespace

int FuzzChunkUpload(const uint8_t* data, size_t size) {
  std::string_view in = AsText(data, size);
  const size_t nl1 = in.find('\n');
  if (nl1 == std::string_view::npos) return 0;
  const std::string_view hex = in.substr(0, nl1);
  const size_t nl2 = in.find('\n', nl1 + 1);
  if (nl2 == std::string_view::npos || nl2 + 1 >= in.size()) return 0;
  const std::string_view size_text = in.substr(nl1 + 1, nl2 - nl1 - 1);
  const bool encrypted = in[nl2 + 1] == 'e';
  const std::string_view body = in.substr(nl2 + 2);

  auto digest = Digest::FromHex(hex);
  if (!digest.ok()) return 0;
  FUZZ_CHECK(Digest::FromHex(digest->ToHex()).ok() && *Digest::FromHex(digest->ToHex()) == *digest);
  uint64_t expected = 0;
  auto [ptr, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), expected);
  if (ec != std::errc() || ptr != size_text.data() + size_text.size() || expected > kMaxBlobPayload) {
    return 0;
  }
  auto r = Store()->InsertBlob(*digest, body, expected, nullptr,
                               encrypted ? ChunkDomain::kEncrypted : ChunkDomain::kVerified);
  if (!r.ok()) return 0;
  if (!encrypted) {
    std::string payload;
    FUZZ_CHECK(DecodeBlob(body, &payload).ok());
    FUZZ_CHECK(payload.size() == expected && Sha256(payload) == *digest);
  } else {
    FUZZ_CHECK(CheckBlob(body).ok());
  }
  if (*r == InsertResult::kInserted) {
    auto stored = Store()->ReadBlob(*digest);
    FUZZ_CHECK(stored.ok() && *stored == body);
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzChunkUpload)
