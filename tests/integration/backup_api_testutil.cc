#include "tests/integration/backup_api_testutil.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <random>

#include "storage/blob.h"
#include "storage/fixed_index.h"

namespace cairn::testing {

using nlohmann::json;
using storage::Digest;
using storage::kChunkSize;

// A disk image of `chunks` chunks (the last one short) with mixed content.
std::string MakeImage(size_t chunks, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string img((chunks - 1) * kChunkSize + 12345, '\0');
  for (size_t c = 0; c < chunks; ++c) {
    size_t begin = c * kChunkSize, end = std::min(img.size(), begin + kChunkSize);
    switch (c % 3) {
      case 0:  // random
        for (size_t i = begin; i < end; ++i) img[i] = static_cast<char>(rng());
        break;
      case 1:  // text-like
        for (size_t i = begin; i < end; ++i) img[i] = "cairn backup\n"[i % 13];
        break;
      default:  // zero
        break;
    }
  }
  return img;
}

std::string ChunkOf(const std::string& img, size_t i) {
  return img.substr(i * kChunkSize, std::min(kChunkSize, img.size() - i * kChunkSize));
}

size_t ChunkCount(const std::string& img) { return (img.size() + kChunkSize - 1) / kChunkSize; }

// Starts a backup session; returns its JSON answer.
nlohmann::json StartBackup(ApiClient& c, const std::string& group, int64_t time) {
  auto r = c.PostJson("/api/v1/datastores/default/backup", {{"group", group}, {"time", time}});
  EXPECT_EQ(r.status, 201) << r.body;
  return r.Json();
}

// Uploads the chunks of `img` not in `skip` and writes the index; returns
// how many chunks went up.
size_t UploadImage(ApiClient& c, const std::string& sid, const std::string& archive,
                   const std::string& img, const std::set<Digest>& skip) {
  storage::FixedIndexWriter w(img.size());
  size_t uploaded = 0;
  for (size_t i = 0; i < ChunkCount(img); ++i) {
    std::string chunk = ChunkOf(img, i);
    Digest d = storage::Sha256(chunk);
    EXPECT_TRUE(w.Set(i, d).ok());
    if (skip.contains(d)) continue;
    auto r = c.Post("/api/v1/backup/" + sid + "/chunk?digest=" + d.ToHex() +
                        "&size=" + std::to_string(chunk.size()),
                    storage::EncodeBlob(chunk), "application/octet-stream");
    EXPECT_TRUE(r.status == 200 || r.status == 201) << r.body;
    ++uploaded;
  }
  auto bytes = w.Finish(1700000000);
  EXPECT_TRUE(bytes.ok());
  auto r = c.Post("/api/v1/backup/" + sid + "/index?archive=" + archive, *bytes,
                  "application/octet-stream");
  EXPECT_EQ(r.status, 200) << r.body;
  return uploaded;
}

// Restores `archive` of `snapshot` through a reader session.
std::string Restore(ApiClient& c, const std::string& snapshot, const std::string& archive) {
  auto r = c.PostJson("/api/v1/datastores/default/reader", {{"snapshot", snapshot}});
  EXPECT_EQ(r.status, 201) << r.body;
  if (r.status != 201) return "";
  std::string rid = r.Json()["session"];
  auto idx = c.Get("/api/v1/reader/" + rid + "/archive?archive=" + archive);
  EXPECT_EQ(idx.status, 200) << idx.body;
  auto index = storage::FixedIndex::Parse(idx.body);
  EXPECT_TRUE(index.ok()) << index.status().ToString();
  if (!index.ok()) return "";
  std::string img;
  for (uint64_t i = 0; i < index->chunk_count(); ++i) {
    auto ch = c.Get("/api/v1/reader/" + rid + "/chunk?digest=" + index->digest(i).ToHex());
    EXPECT_EQ(ch.status, 200) << ch.body;
    std::string plain;
    EXPECT_TRUE(storage::DecodeBlob(ch.body, &plain).ok());
    EXPECT_EQ(storage::Sha256(plain), index->digest(i));
    img += plain;
  }
  EXPECT_EQ(c.Delete("/api/v1/reader/" + rid).status, 200);
  return img;
}

std::string BackupImage(ApiClient& c, const std::string& group, int64_t time,
                        const std::string& img) {
  json s = StartBackup(c, group, time);
  if (!s.contains("session")) return "";
  std::string sid = s["session"];
  UploadImage(c, sid, "drive0.fidx", img, {});
  auto fin = c.PostJson("/api/v1/backup/" + sid + "/finish", json::object());
  EXPECT_EQ(fin.status, 200) << fin.body;
  return fin.status == 200 ? fin.Json()["snapshot"].get<std::string>() : "";
}

std::string FixedIndexBytes(const std::vector<storage::Digest>& digests, uint64_t image_size) {
  storage::FixedIndexWriter w(image_size);
  for (size_t i = 0; i < digests.size(); ++i) EXPECT_TRUE(w.Set(i, digests[i]).ok());
  auto bytes = w.Finish(1700000000);
  EXPECT_TRUE(bytes.ok());
  return bytes.ok() ? *bytes : "";
}

void LiveServerTest::SetUp() {
  // A server may refuse an oversized body before reading it and close the
  // connection while the client still writes: that must not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  server_ = ServerProcess::Start(dir_.path());
  ASSERT_NE(server_, nullptr);
  admin_ = std::make_unique<ApiClient>(server_->port(), server_->AdminToken());
}

void LiveServerTest::TearDown() {
  if (server_ == nullptr) return;
  EXPECT_TRUE(Alive());
  const int status = server_->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "wait status " << status << "\n" << server_->Log();
}

bool LiveServerTest::Alive() {
  if (::kill(server_->pid(), 0) != 0) return false;
  ApiClient probe(server_->port(), server_->AdminToken());
  return probe.Get("/api/v1/version").status == 200 && probe.Get("/api/v1/status").status == 200;
}

}  // namespace cairn::testing
