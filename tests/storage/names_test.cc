#include "storage/names.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace cairn::storage {
namespace {

constexpr NameKind kAllKinds[] = {NameKind::kStore, NameKind::kNamespace, NameKind::kBackupType,
                                  NameKind::kBackupId, NameKind::kArchive};

// Decodes one line of tests/testdata/hostile_names.txt (format in its header).
bool DecodeLine(const std::string& line, std::string* out) {
  out->clear();
  if (line == "<empty>") return true;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      *out += line[i];
      continue;
    }
    if (i + 1 < line.size() && line[i + 1] == '\\') {
      *out += '\\';
      ++i;
    } else if (i + 3 < line.size() && line[i + 1] == 'x') {
      std::string hex = line.substr(i + 2, 2);
      if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return false;
      *out += static_cast<char>(std::stoi(hex, nullptr, 16));
      i += 3;
    } else {
      return false;
    }
  }
  return true;
}

std::vector<std::string> LoadHostileNames() {
  const char* src = std::getenv("CAIRN_SOURCE_DIR");
  if (src == nullptr) {
    ADD_FAILURE() << "CAIRN_SOURCE_DIR is not set; run through ctest or set it to the source tree";
    return {};
  }
  std::string path = std::string(src) + "/tests/testdata/hostile_names.txt";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot open " << path;
    return {};
  }
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::string name;
    if (!DecodeLine(line, &name)) {
      ADD_FAILURE() << "bad escape in " << path << ": " << line;
      continue;
    }
    names.push_back(name);
  }
  return names;
}

std::string Repeat(char c, size_t n) { return std::string(n, c); }

TEST(NamesTest, HostileNamesRejectedForEveryKind) {
  std::vector<std::string> names = LoadHostileNames();
  ASSERT_GE(names.size(), 25u);
  // The table must really hold the nasty cases, not just decode to nothing.
  bool has_nul = false, has_empty = false, has_dotdot = false, has_non_ascii = false;
  for (const std::string& n : names) {
    has_nul |= n.find('\0') != std::string::npos;
    has_empty |= n.empty();
    has_dotdot |= n == "..";
    for (char c : n) has_non_ascii |= static_cast<unsigned char>(c) >= 0x80;
  }
  EXPECT_TRUE(has_nul && has_empty && has_dotdot && has_non_ascii);

  for (const std::string& n : names) {
    for (NameKind kind : kAllKinds) {
      Status s = ValidateName(kind, n);
      EXPECT_TRUE(s.IsInvalidArgument())
          << "kind " << static_cast<int>(kind) << " accepted hostile name of size " << n.size()
          << ": " << s.ToString();
    }
    EXPECT_FALSE(ValidateName(NameKind::kArchive, n + ".fidx").ok()) << n.size();
    EXPECT_FALSE(ValidateName(NameKind::kArchive, n + ".blob").ok()) << n.size();
    if (!n.empty() && n.find('/') == std::string::npos) {
      EXPECT_TRUE(ParseNamespace(n).status().IsInvalidArgument()) << n.size();
      EXPECT_TRUE(ParseNamespace("ok/" + n).status().IsInvalidArgument()) << n.size();
    }
    EXPECT_FALSE(GroupRef::Parse("vm/" + n).ok());
    // "a/b" is a hostile single name but a fine two-level namespace path.
    if (n != "a/b") {
      EXPECT_FALSE(GroupRef::Parse(n + ":vm/100").ok()) << n.size();
    }
    GroupRef g{{}, "vm", n};
    EXPECT_FALSE(g.Validate().ok());
    GroupRef g2{{n}, "vm", "100"};
    EXPECT_FALSE(g2.Validate().ok());
  }
}

TEST(NamesTest, MessagesDoNotCarryRawControlBytes) {
  Status s = ValidateName(NameKind::kBackupId, std::string("a\0\n\x1b[31m", 8));
  ASSERT_TRUE(s.IsInvalidArgument());
  for (char c : s.message()) {
    EXPECT_TRUE(static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f)
        << static_cast<int>(c);
  }
  EXPECT_NE(s.message().find("backup id"), std::string::npos);
}

TEST(NamesTest, ValidNamesAccepted) {
  for (const char* n :
       {"a", "A", "0", "_", "store1", "my-store", "my_store.2", "a-", "a.", "_hidden_but_fine"}) {
    EXPECT_TRUE(ValidateName(NameKind::kStore, n).ok()) << n;
    EXPECT_TRUE(ValidateName(NameKind::kNamespace, n).ok()) << n;
    EXPECT_TRUE(ValidateName(NameKind::kBackupId, n).ok()) << n;
  }
  for (const char* t : {"vm", "ct", "host"})
    EXPECT_TRUE(ValidateName(NameKind::kBackupType, t).ok());
  for (const char* t : {"VM", "vm ", "qemu", "v", "hosts", ""}) {
    EXPECT_TRUE(ValidateName(NameKind::kBackupType, t).IsInvalidArgument()) << t;
  }
  for (const char* a : {"drive0.fidx", "drive-scsi0.img.fidx", "qemu-server.conf.blob",
                        "client.log.blob", "_x.blob", "0.fidx"}) {
    EXPECT_TRUE(ValidateName(NameKind::kArchive, a).ok()) << a;
  }
}

TEST(NamesTest, LengthLimits) {
  EXPECT_TRUE(ValidateName(NameKind::kStore, Repeat('s', 32)).ok());
  EXPECT_FALSE(ValidateName(NameKind::kStore, Repeat('s', 33)).ok());
  EXPECT_TRUE(ValidateName(NameKind::kNamespace, Repeat('n', 32)).ok());
  EXPECT_FALSE(ValidateName(NameKind::kNamespace, Repeat('n', 33)).ok());
  EXPECT_TRUE(ValidateName(NameKind::kBackupId, Repeat('i', 128)).ok());
  EXPECT_FALSE(ValidateName(NameKind::kBackupId, Repeat('i', 129)).ok());
  EXPECT_TRUE(ValidateName(NameKind::kArchive, Repeat('x', 123) + ".fidx").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, Repeat('x', 124) + ".fidx").ok());
}

TEST(NamesTest, ArchiveRules) {
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "index.json").ok());  // reserved for the manifest
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "drive0").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "drive0.img").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "drive0.FIDX").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "drive0.fidx.tmp").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "drive0..fidx").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, ".fidx").ok());
  EXPECT_FALSE(ValidateName(NameKind::kArchive, "fidx").ok());
}

TEST(NamesTest, Namespaces) {
  auto root = ParseNamespace("");
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(root->empty());
  EXPECT_EQ(FormatNamespace({}), "");

  auto ab = ParseNamespace("a/b");
  ASSERT_TRUE(ab.ok());
  EXPECT_EQ(*ab, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(FormatNamespace(*ab), "a/b");

  for (const char* bad : {"/", "a/", "/a", "a//b", "a/../b", "a/./b", "a/.b", "a b", "a/b/"}) {
    EXPECT_TRUE(ParseNamespace(bad).status().IsInvalidArgument()) << bad;
  }
  EXPECT_TRUE(ParseNamespace("1/2/3/4/5/6/7").ok());
  EXPECT_TRUE(ParseNamespace("1/2/3/4/5/6/7/8").status().IsInvalidArgument());
}

struct TimeCase {
  const char* text;
  int64_t seconds;
};

TEST(NamesTest, SnapshotTimeTable) {
  const TimeCase cases[] = {
      {"1970-01-01T00:00:00Z", 0},
      {"1970-01-01T00:00:01Z", 1},
      {"1970-01-02T00:00:00Z", 86400},
      {"1999-12-31T23:59:59Z", 946684799},
      {"2000-01-01T00:00:00Z", 946684800},
      {"2000-02-29T12:00:00Z", 951825600},  // divisible by 400: leap
      {"2024-02-29T00:00:00Z", 1709164800},
      {"2026-11-21T17:50:38Z", 1795283438},
      {"2038-01-19T03:14:08Z", 2147483648},  // past 32-bit time_t
      {"2100-03-01T00:00:00Z", 4107542400},  // 2100 is not a leap year
      {"9999-12-31T23:59:59Z", 253402300799},
  };
  for (const TimeCase& c : cases) {
    auto parsed = ParseSnapshotTime(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status().ToString();
    EXPECT_EQ(*parsed, c.seconds) << c.text;
    EXPECT_EQ(FormatSnapshotTime(c.seconds), c.text);
  }
}

TEST(NamesTest, SnapshotTimeRoundTripsEveryDay) {
  // One point per day from 1970 to past 2400 (covers all leap rules), at an
  // odd time of day so that hours, minutes and seconds are exercised too.
  for (int64_t t = 0; t < 16000000000; t += 86400 + 3671) {
    std::string s = FormatSnapshotTime(t);
    auto back = ParseSnapshotTime(s);
    ASSERT_TRUE(back.ok()) << s;
    ASSERT_EQ(*back, t) << s;
  }
}

TEST(NamesTest, SnapshotTimeRejects) {
  for (const char* bad : {
           "",
           "2026-02-29T00:00:00Z",  // 2026 is not a leap year
           "2100-02-29T00:00:00Z",  // nor is 2100
           "2026-13-01T00:00:00Z",
           "2026-00-01T00:00:00Z",
           "2026-01-00T00:00:00Z",
           "2026-01-32T00:00:00Z",
           "2026-04-31T00:00:00Z",
           "2026-01-01T24:00:00Z",
           "2026-01-01T23:60:00Z",
           "2026-01-01T23:59:60Z",  // no leap seconds
           "2026-01-01T00:00:00",
           "2026-01-01T00:00:00z",
           "2026-01-01t00:00:00Z",
           "2026-01-01 00:00:00Z",
           "2026-01-01T00:00:00+00:00",
           "2026-01-01T00:00:00.000Z",
           "2026-01-01T00:00:00ZZ",
           " 2026-01-01T00:00:00Z",
           "+2026-01-01T00:00:00Z",
           "+206-01-01T00:00:00Z",
           "-206-01-01T00:00:00Z",
           "2026-1-01T00:00:00Z",
           "2026-01-1T00:00:00Z",
           "2026-01-01T0:00:00Z",
           "2026/01/01T00:00:00Z",
           "1969-12-31T23:59:59Z",
           "0000-01-01T00:00:00Z",
           "10000-01-01T00:00:00Z",
           "２026-01-01T00:00:00Z",
           "abcd-ef-ghTij:kl:mnZ",
       }) {
    EXPECT_TRUE(ParseSnapshotTime(bad).status().IsInvalidArgument()) << bad;
  }
  std::string with_nul("2026-01-01T00:00:00Z", 20);
  with_nul[18] = '\0';
  EXPECT_FALSE(ParseSnapshotTime(with_nul).ok());
}

TEST(NamesTest, GroupRefRoundTrip) {
  GroupRef root{{}, "vm", "100"};
  EXPECT_EQ(root.ToString(), "vm/100");
  EXPECT_EQ(root.RelPath(), "vm/100");
  GroupRef nested{{"a", "b"}, "ct", "web-1.example"};
  EXPECT_EQ(nested.ToString(), "a/b:ct/web-1.example");
  EXPECT_EQ(nested.RelPath(), "ns/a/ns/b/ct/web-1.example");

  for (const GroupRef& g : {root, nested, GroupRef{{"x"}, "host", "h"}}) {
    ASSERT_TRUE(g.Validate().ok());
    auto back = GroupRef::Parse(g.ToString());
    ASSERT_TRUE(back.ok()) << g.ToString() << ": " << back.status().ToString();
    EXPECT_EQ(*back, g);
  }
}

TEST(NamesTest, GroupRefRejects) {
  for (const char* bad : {"",
                          "vm",
                          "vm/",
                          "/100",
                          "vm/100/",
                          "vm/1/2",
                          "qemu/100",
                          ":vm/100",
                          "a:",
                          "a:vm",
                          "a/:vm/100",
                          "a::vm/100",
                          "a:b:vm/100",
                          "a/b/vm/100",
                          "../vm/100",
                          "a/..:vm/100",
                          "vm/..",
                          "vm/.",
                          "vm/ 100",
                          "VM/100",
                          "1/2/3/4/5/6/7/8:vm/100",
                          "ns/a/vm/100x/"}) {
    EXPECT_TRUE(GroupRef::Parse(bad).status().IsInvalidArgument()) << bad;
  }
  EXPECT_TRUE(GroupRef::Parse("1/2/3/4/5/6/7:vm/100").ok());
  GroupRef deep{{"1", "2", "3", "4", "5", "6", "7", "8"}, "vm", "100"};
  EXPECT_TRUE(deep.Validate().IsInvalidArgument());
}

TEST(NamesTest, SnapshotRefRoundTrip) {
  SnapshotRef s{{{}, "vm", "100"}, 1795283438};
  EXPECT_EQ(s.ToString(), "vm/100/2026-11-21T17:50:38Z");
  EXPECT_EQ(s.RelPath(), "vm/100/2026-11-21T17:50:38Z");
  SnapshotRef n{{{"prod", "eu"}, "vm", "100"}, 0};
  EXPECT_EQ(n.ToString(), "prod/eu:vm/100/1970-01-01T00:00:00Z");
  EXPECT_EQ(n.RelPath(), "ns/prod/ns/eu/vm/100/1970-01-01T00:00:00Z");
  for (const SnapshotRef& r : {s, n}) {
    ASSERT_TRUE(r.Validate().ok());
    auto back = SnapshotRef::Parse(r.ToString());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, r);
  }
}

TEST(NamesTest, SnapshotRefRejects) {
  for (const char* bad :
       {"", "vm/100", "vm/100/", "vm/100/2026-02-29T00:00:00Z", "vm/100/2026-11-21T17:50:38Z/",
        "vm/100/2026-11-21T17:50:38", "2026-11-21T17:50:38Z", "/2026-11-21T17:50:38Z",
        "vm/../2026-11-21T17:50:38Z", "x:vm/100/1969-12-31T23:59:59Z", "vm/100/..",
        "vm/100/1795283438"}) {
    EXPECT_TRUE(SnapshotRef::Parse(bad).status().IsInvalidArgument()) << bad;
  }
  SnapshotRef before{{{}, "vm", "1"}, -1};
  EXPECT_TRUE(before.Validate().IsInvalidArgument());
  SnapshotRef after{{{}, "vm", "1"}, 253402300800};
  EXPECT_TRUE(after.Validate().IsInvalidArgument());
  SnapshotRef bad_group{{{}, "vm", ".."}, 0};
  EXPECT_TRUE(bad_group.Validate().IsInvalidArgument());
}

}  // namespace
}  // namespace cairn::storage
