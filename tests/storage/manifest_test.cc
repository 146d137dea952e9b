#include "storage/manifest.h"

#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <string>

namespace cairn::storage {
namespace {

using json = nlohmann::json;

Manifest Sample() {
  Manifest m;
  m.backup_type = "vm";
  m.backup_id = "100";
  m.backup_time = 1795283438;  // 2026-11-21T17:50:38Z
  m.archives.push_back({"drive-scsi0.img.fidx", 34359738368, Sha256("index a")});
  m.archives.push_back({"qemu-server.conf.blob", 612, Sha256("config")});
  m.client = json::object();
  m.client["version"] = "0.1.0";
  m.client["consistency"] = "application";
  m.client["bitmaps"] = json::array();
  m.client["bitmaps"].push_back({{"drive", "drive-scsi0"},
                                 {"state", "incremental"},
                                 {"dirty-bytes", 12582912},
                                 {"base-uuid", "0123abcd"}});
  m.verify = VerifyState{"ok", 1795290000, "UPID:verify:1"};
  m.notes = "weekly \"gold\" image \xc3\xbc\n<script>";
  m.is_protected = true;
  return m;
}

void ExpectSame(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.backup_type, b.backup_type);
  EXPECT_EQ(a.backup_id, b.backup_id);
  EXPECT_EQ(a.backup_time, b.backup_time);
  EXPECT_EQ(a.archives, b.archives);
  EXPECT_EQ(a.client, b.client);
  EXPECT_EQ(a.verify, b.verify);
  EXPECT_EQ(a.notes, b.notes);
  EXPECT_EQ(a.is_protected, b.is_protected);
  EXPECT_EQ(a.crypt, b.crypt);
}

// An independent implementation of the documented checksum rule, so tests can
// produce manifests whose checksum is right but whose content is not.
std::string Reseal(json j) {
  json p = json::object();
  for (const char* k : {"backup-type", "backup-id", "backup-time", "archives", "client", "crypt"}) {
    if (j.contains(k)) p[k] = j[k];
  }
  j["protected-sha256"] = Sha256(p.dump()).ToHex();
  return j.dump();
}

json SampleJson() { return json::parse(Sample().ToJson()); }

TEST(ManifestTest, RoundTrip) {
  Manifest m = Sample();
  std::string text = m.ToJson();
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("\n  \"archives\""), std::string::npos) << "expected indent 2";
  auto back = Manifest::Parse(text);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSame(*back, m);
  EXPECT_EQ(back->ToJson(), text);

  // Compact or pretty makes no difference to the checksum.
  auto compact = Manifest::Parse(json::parse(text).dump());
  ASSERT_TRUE(compact.ok()) << compact.status().ToString();
  ExpectSame(*compact, m);
}

TEST(ManifestTest, RoundTripMinimal) {
  Manifest m;
  m.backup_type = "host";
  m.backup_id = "x";
  auto back = Manifest::Parse(m.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSame(*back, m);
  EXPECT_FALSE(back->verify.has_value());
  EXPECT_TRUE(back->archives.empty());
  EXPECT_FALSE(json::parse(m.ToJson())["unprotected"].contains("verify-state"));
}

TEST(ManifestTest, KeysAndCanonicalChecksum) {
  Manifest m;
  m.backup_type = "vm";
  m.backup_id = "100";
  m.backup_time = 1795283438;
  Digest d = Sha256("x");
  m.archives.push_back({"drive0.fidx", 4194304, d});
  m.client = {{"consistency", "crash"}, {"a", 1}};
  json j = json::parse(m.ToJson());
  EXPECT_EQ(j["backup-type"], "vm");
  EXPECT_EQ(j["backup-id"], "100");
  EXPECT_EQ(j["backup-time"], 1795283438);
  EXPECT_EQ(j["archives"][0]["name"], "drive0.fidx");
  EXPECT_EQ(j["archives"][0]["size"], 4194304);
  EXPECT_EQ(j["archives"][0]["csum"], d.ToHex());
  EXPECT_EQ(j["unprotected"]["notes"], "");
  EXPECT_EQ(j["unprotected"]["protected"], false);
  // The canonical form, byte for byte, as storage/FORMAT.md describes it.
  std::string canonical = "{\"archives\":[{\"csum\":\"" + d.ToHex() +
                          "\",\"name\":\"drive0.fidx\",\"size\":4194304}],\"backup-id\":\"100\","
                          "\"backup-time\":1795283438,\"backup-type\":\"vm\","
                          "\"client\":{\"a\":1,\"consistency\":\"crash\"}}";
  EXPECT_EQ(j["protected-sha256"], Sha256(canonical).ToHex());
}

Manifest EncryptedSample() {
  Manifest m = Sample();
  m.crypt = CryptInfo{"1f:2e:3d:4c:5b:6a:79:88", Sha256("signature").ToHex()};
  return m;
}

TEST(ManifestTest, CryptRoundTripsAndIsProtected) {
  const Manifest m = EncryptedSample();
  auto parsed = Manifest::Parse(m.ToJson());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ExpectSame(*parsed, m);
  EXPECT_TRUE(parsed->encrypted());
  const json j = json::parse(m.ToJson());
  EXPECT_EQ(j["crypt"]["mode"], "encrypt");
  EXPECT_EQ(j["crypt"]["fingerprint"], "1f:2e:3d:4c:5b:6a:79:88");
  // A plain manifest has no crypt key at all (its checksum is as before).
  EXPECT_FALSE(json::parse(Sample().ToJson()).contains("crypt"));
  // The checksum covers crypt: changing or dropping it without resealing fails.
  json changed = j;
  changed["crypt"]["fingerprint"] = "00:2e:3d:4c:5b:6a:79:88";
  EXPECT_TRUE(Manifest::Parse(changed.dump()).status().IsCorruption());
  json dropped = j;
  dropped.erase("crypt");
  EXPECT_TRUE(Manifest::Parse(dropped.dump()).status().IsCorruption());
  // Resealed with bad shapes: still refused.
  for (const json& bad : {json("x"), json{{"mode", "none"}, {"fingerprint", "1f:2e:3d:4c:5b:6a:79:88"}, {"signature", ""}},
                          json{{"mode", "encrypt"}, {"fingerprint", "1F:2E:3D:4C:5B:6A:79:88"}, {"signature", ""}},
                          json{{"mode", "encrypt"}, {"fingerprint", "1f2e3d4c5b6a7988"}, {"signature", ""}},
                          json{{"mode", "encrypt"}, {"fingerprint", "1f:2e:3d:4c:5b:6a:79:88"}, {"signature", "abc"}},
                          json{{"mode", "encrypt"}, {"fingerprint", "1f:2e:3d:4c:5b:6a:79:88"}, {"signature", ""}, {"x", 1}}}) {
    json r = j;
    r["crypt"] = bad;
    EXPECT_TRUE(Manifest::Parse(Reseal(r)).status().IsCorruption()) << bad.dump();
  }
}

TEST(ManifestTest, ChunkKindsFollowEncryption) {
  const Manifest plain = Sample();
  const Manifest enc = EncryptedSample();
  EXPECT_TRUE(plain.AllowsChunkKind(BlobKind::kPlain));
  EXPECT_TRUE(plain.AllowsChunkKind(BlobKind::kZstd));
  EXPECT_FALSE(plain.AllowsChunkKind(BlobKind::kEncrypted));
  EXPECT_FALSE(plain.AllowsChunkKind(BlobKind::kEncryptedZstd));
  EXPECT_FALSE(enc.AllowsChunkKind(BlobKind::kPlain));
  EXPECT_FALSE(enc.AllowsChunkKind(BlobKind::kZstd));
  EXPECT_TRUE(enc.AllowsChunkKind(BlobKind::kEncrypted));
  EXPECT_TRUE(enc.AllowsChunkKind(BlobKind::kEncryptedZstd));
}

TEST(ManifestTest, SigningTextIsTheDocumentedOne) {
  Manifest m = EncryptedSample();
  const std::string expected =
      "cairn-manifest-v1\n"
      "vm/100/1795283438\n"
      "fingerprint 1f:2e:3d:4c:5b:6a:79:88\n"
      "drive-scsi0.img.fidx 34359738368 " + Sha256("index a").ToHex() + "\n"
      "qemu-server.conf.blob 612 " + Sha256("config").ToHex() + "\n";
  EXPECT_EQ(ManifestSigningText(m), expected);
  // Archive order does not matter; their content, the key and the time do.
  std::swap(m.archives[0], m.archives[1]);
  EXPECT_EQ(ManifestSigningText(m), expected);
  m.archives[0].size += 1;
  EXPECT_NE(ManifestSigningText(m), expected);
}

TEST(ManifestTest, UnprotectedChangesKeepChecksumValid) {
  const std::vector<std::function<void(json&)>> edits = {
      [](json& j) { j["unprotected"]["notes"] = "changed"; },
      [](json& j) { j["unprotected"]["protected"] = false; },
      [](json& j) { j["unprotected"].erase("verify-state"); },
      [](json& j) { j["unprotected"]["verify-state"]["state"] = "failed"; },
      [](json& j) { j["unprotected"]["verify-state"]["time"] = 1; },
      [](json& j) { j["unprotected"]["verify-state"]["task"] = ""; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    json j = SampleJson();
    edits[i](j);
    auto m = Manifest::Parse(j.dump(2));
    ASSERT_TRUE(m.ok()) << i << ": " << m.status().ToString();
  }
  json j = SampleJson();
  j["unprotected"]["notes"] = "changed";
  j["unprotected"]["verify-state"]["state"] = "failed";
  auto m = Manifest::Parse(j.dump());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->notes, "changed");
  EXPECT_EQ(m->verify->state, "failed");
}

TEST(ManifestTest, ProtectedChangesAreCorruption) {
  const std::vector<std::function<void(json&)>> edits = {
      [](json& j) { j["archives"][0]["size"] = 34359738369u; },
      [](json& j) { j["archives"][1]["size"] = 0; },
      [](json& j) { j["archives"][0]["csum"] = Sha256("other").ToHex(); },
      [](json& j) { j["archives"][0]["name"] = "drive-scsi1.img.fidx"; },
      [](json& j) { j["archives"].erase(1); },
      [](json& j) { std::swap(j["archives"][0], j["archives"][1]); },
      [](json& j) {
        j["archives"].push_back({{"name", "x.blob"}, {"size", 1}, {"csum", Sha256("").ToHex()}});
      },
      [](json& j) { j["backup-time"] = 1795283439; },
      [](json& j) { j["backup-id"] = "101"; },
      [](json& j) { j["backup-type"] = "ct"; },
      [](json& j) { j["client"]["consistency"] = "crash"; },
      [](json& j) { j["client"]["bitmaps"][0]["dirty-bytes"] = 0; },
      [](json& j) { j["client"]["extra"] = true; },
      [](json& j) { j["client"].erase("version"); },
      [](json& j) { j["protected-sha256"] = Sha256("").ToHex(); },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    json j = SampleJson();
    edits[i](j);
    EXPECT_TRUE(Manifest::Parse(j.dump(2)).status().IsCorruption()) << "edit " << i;
  }
}

TEST(ManifestTest, MalformedJsonIsCorruption) {
  std::string good = Sample().ToJson();
  for (const std::string& bad :
       {std::string(), std::string("{"), std::string("[]"), std::string("null"),
        std::string("\"x\""), std::string("{}"), std::string("{\"a\":1}"),
        std::string("\xef\xbb\xbf") + good,  // BOM
        good + "x", good + "{}", std::string(1, '\0') + good,
        std::string("{\"notes\":\"\xff\"}")}) {
    EXPECT_TRUE(Manifest::Parse(bad).status().IsCorruption()) << bad.substr(0, 20);
  }
  // Every truncation of a good manifest is refused.
  std::string compact = json::parse(good).dump();
  for (size_t n = 0; n < compact.size(); ++n) {
    ASSERT_TRUE(Manifest::Parse(compact.substr(0, n)).status().IsCorruption()) << n;
  }
}

TEST(ManifestTest, WrongTypesAreCorruptionEvenWhenResealed) {
  const std::vector<std::function<void(json&)>> edits = {
      [](json& j) { j["backup-time"] = "1795283438"; },
      [](json& j) { j["backup-time"] = 1795283438.0; },
      [](json& j) { j["backup-time"] = -1; },
      [](json& j) { j["backup-time"] = 253402300800; },  // 10000-01-01
      [](json& j) { j["backup-time"] = 18446744073709551615u; },
      [](json& j) { j.erase("backup-time"); },
      [](json& j) { j["backup-id"] = 100; },
      [](json& j) { j.erase("backup-id"); },
      [](json& j) { j["backup-type"] = nullptr; },
      [](json& j) { j["archives"] = json::object(); },
      [](json& j) { j.erase("archives"); },
      [](json& j) { j["archives"][0] = "drive0.fidx"; },
      [](json& j) { j["archives"][0]["size"] = -1; },
      [](json& j) { j["archives"][0]["size"] = 1.5; },
      [](json& j) { j["archives"][0]["size"] = "1"; },
      [](json& j) { j["archives"][0].erase("size"); },
      [](json& j) { j["archives"][0]["csum"] = 5; },
      [](json& j) { j["archives"][0]["csum"] = "abc"; },
      [](json& j) {
        std::string up = Sha256("a").ToHex();
        for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        j["archives"][0]["csum"] = up;
      },
      [](json& j) { j["archives"][0]["extra"] = 1; },
      [](json& j) { j["archives"][1]["name"] = j["archives"][0]["name"]; },  // duplicate
      [](json& j) { j["client"] = json::array(); },
      [](json& j) { j["client"] = "x"; },
      [](json& j) { j.erase("client"); },
      [](json& j) { j["extra"] = 1; },
      [](json& j) { j["unprotected"] = json::array(); },
      [](json& j) { j.erase("unprotected"); },
      [](json& j) { j["unprotected"]["notes"] = 1; },
      [](json& j) { j["unprotected"].erase("notes"); },
      [](json& j) { j["unprotected"]["protected"] = "true"; },
      [](json& j) { j["unprotected"]["protected"] = 1; },
      [](json& j) { j["unprotected"].erase("protected"); },
      [](json& j) { j["unprotected"]["extra"] = 1; },
      [](json& j) { j["unprotected"]["verify-state"] = "ok"; },
      [](json& j) { j["unprotected"]["verify-state"]["state"] = "maybe"; },
      [](json& j) { j["unprotected"]["verify-state"]["state"] = "OK"; },
      [](json& j) { j["unprotected"]["verify-state"]["time"] = "1"; },
      [](json& j) { j["unprotected"]["verify-state"]["time"] = 1.5; },
      [](json& j) { j["unprotected"]["verify-state"]["task"] = 7; },
      [](json& j) { j["unprotected"]["verify-state"].erase("task"); },
      [](json& j) { j["unprotected"]["verify-state"]["extra"] = 1; },
      [](json& j) { j["protected-sha256"] = 1; },
      [](json& j) { j.erase("protected-sha256"); },
  };
  // The unedited, resealed sample must pass, or the edits prove nothing.
  ASSERT_TRUE(Manifest::Parse(Reseal(SampleJson())).ok());
  for (size_t i = 0; i < edits.size(); ++i) {
    json j = SampleJson();
    edits[i](j);
    std::string text =
        j.contains("protected-sha256") && j["protected-sha256"].is_string() ? Reseal(j) : j.dump();
    Status s = Manifest::Parse(text).status();
    EXPECT_TRUE(s.IsCorruption()) << "edit " << i << ": " << s.ToString();
  }
}

TEST(ManifestTest, BadNamesAreCorruption) {
  const std::vector<std::function<void(json&)>> edits = {
      [](json& j) { j["backup-type"] = "qemu"; },
      [](json& j) { j["backup-type"] = ""; },
      [](json& j) { j["backup-id"] = ".."; },
      [](json& j) { j["backup-id"] = "a/b"; },
      [](json& j) { j["backup-id"] = std::string("a\0b", 3); },
      [](json& j) { j["backup-id"] = std::string(129, 'a'); },
      [](json& j) { j["archives"][0]["name"] = "../x.fidx"; },
      [](json& j) { j["archives"][0]["name"] = "index.json"; },
      [](json& j) { j["archives"][0]["name"] = "drive0"; },
      [](json& j) { j["archives"][0]["name"] = ".fidx"; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    json j = SampleJson();
    edits[i](j);
    Status s = Manifest::Parse(Reseal(j)).status();
    EXPECT_TRUE(s.IsCorruption()) << "edit " << i << ": " << s.ToString();
  }
}

TEST(ManifestTest, DuplicateKeysAreCorruption) {
  std::string text = Reseal(SampleJson());
  ASSERT_EQ(text[0], '{');
  // Same value twice, so only the duplicate itself can be the reason.
  std::string dup_top = "{\"backup-id\":\"100\"," + text.substr(1);
  EXPECT_TRUE(Manifest::Parse(dup_top).status().IsCorruption());
  size_t pos = text.find("\"notes\":");
  ASSERT_NE(pos, std::string::npos);
  std::string dup_inner = text;
  dup_inner.insert(pos, "\"notes\":\"\",");
  EXPECT_TRUE(Manifest::Parse(dup_inner).status().IsCorruption());
  // The same key in sibling objects is fine.
  EXPECT_TRUE(Manifest::Parse(text).ok());
}

TEST(ManifestTest, DeepNestingIsCorruption) {
  Manifest m = Sample();
  json deep = json::object();
  for (int i = 0; i < 40; ++i) deep = json{{"d", deep}};
  m.client["deep"] = deep;
  EXPECT_TRUE(Manifest::Parse(m.ToJson()).status().IsCorruption());

  // Exactly 32 levels (top level and client are two of them) pass; 33 do not.
  json nested = 1;
  for (int i = 0; i < 30; ++i) nested = json::array({nested});
  Manifest ok = Sample();
  ok.client["deep"] = nested;
  EXPECT_TRUE(Manifest::Parse(ok.ToJson()).ok());
  Manifest one_more = Sample();
  one_more.client["deep"] = json::array({nested});
  EXPECT_TRUE(Manifest::Parse(one_more.ToJson()).status().IsCorruption());

  // A megabyte of brackets neither crashes nor recurses.
  EXPECT_TRUE(Manifest::Parse(std::string(kMaxManifestSize, '[')).status().IsCorruption());
  // Nor does well-formed JSON nested half a million deep (a hostile
  // index.json on disk): it is refused before a value is built.
  const std::string hostile = std::string(500000, '[') + std::string(500000, ']');
  ASSERT_LE(hostile.size(), kMaxManifestSize);
  Status s = Manifest::Parse(hostile).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("deeper than 32"), std::string::npos) << s.message();
  // Brackets inside strings are not nesting.
  Manifest strings = Sample();
  strings.client["text"] = std::string(1000, '[') + std::string(1000, '{');
  EXPECT_TRUE(Manifest::Parse(strings.ToJson()).ok());
}

TEST(ManifestTest, SizeLimit) {
  Manifest m = Sample();
  m.notes.clear();
  size_t base = m.ToJson().size();
  ASSERT_LT(base, kMaxManifestSize);
  m.notes = std::string(kMaxManifestSize - base, 'n');
  ASSERT_EQ(m.ToJson().size(), kMaxManifestSize);
  EXPECT_TRUE(Manifest::Parse(m.ToJson()).ok());
  m.notes += 'n';
  Status s = Manifest::Parse(m.ToJson()).status();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST(ManifestTest, TimeBoundaries) {
  Manifest m = Sample();
  m.backup_time = 0;
  EXPECT_TRUE(Manifest::Parse(m.ToJson()).ok());
  m.backup_time = 253402300799;  // 9999-12-31T23:59:59Z
  EXPECT_TRUE(Manifest::Parse(m.ToJson()).ok());
  m.backup_time = 253402300800;
  EXPECT_TRUE(Manifest::Parse(m.ToJson()).status().IsCorruption());
  m.backup_time = -1;
  EXPECT_TRUE(Manifest::Parse(m.ToJson()).status().IsCorruption());
}

TEST(ManifestTest, TotalSizeAndFindArchive) {
  Manifest m = Sample();
  EXPECT_EQ(m.TotalSize(), 34359738368u + 612u);
  ASSERT_NE(m.FindArchive("qemu-server.conf.blob"), nullptr);
  EXPECT_EQ(m.FindArchive("qemu-server.conf.blob")->size, 612u);
  EXPECT_EQ(m.FindArchive("nope.fidx"), nullptr);
  m.archives.push_back({"huge.fidx", ~uint64_t{0}, Digest{}});
  EXPECT_EQ(m.TotalSize(), ~uint64_t{0});  // saturates
  EXPECT_EQ(Manifest{}.TotalSize(), 0u);
}

}  // namespace
}  // namespace cairn::storage
