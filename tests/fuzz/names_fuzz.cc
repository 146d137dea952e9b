// Names from outside (storage/names.h): stores, namespaces, types, ids,
// archives, groups and snapshots named in URLs, bodies and directory
// listings. Invariants: what parses validates, formats back to the input and
// never leaves its folder ("..", "/" inside a component, NUL).
#include <string>

#include "storage/names.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::storage;

namespace {

void CheckComponent(std::string_view c) {
  FUZZ_CHECK(!c.empty() && c != "." && c != "..");
  FUZZ_CHECK(c.find('/') == std::string_view::npos);
  FUZZ_CHECK(c.find('\0') == std::string_view::npos);
}

}  // namespace

int FuzzNames(const uint8_t* data, size_t size) {
  const std::string_view in = AsText(data, size);
  for (NameKind kind : {NameKind::kStore, NameKind::kNamespace, NameKind::kBackupType,
                        NameKind::kBackupId, NameKind::kArchive}) {
    if (ValidateName(kind, in).ok()) CheckComponent(in);
  }
  if (auto ns = ParseNamespace(in); ns.ok()) {
    FUZZ_CHECK(ns->size() <= kMaxNamespaceDepth);
    for (const auto& c : *ns) CheckComponent(c);
    FUZZ_CHECK(FormatNamespace(*ns) == in);
  }
  if (auto t = ParseSnapshotTime(in); t.ok()) FUZZ_CHECK(FormatSnapshotTime(*t) == in);
  if (auto g = GroupRef::Parse(in); g.ok()) {
    FUZZ_CHECK(g->Validate().ok());
    FUZZ_CHECK(g->ToString() == in);
    const std::string rel = g->RelPath();
    FUZZ_CHECK(rel.find("..") == std::string::npos && rel.find("//") == std::string::npos);
    auto again = GroupRef::Parse(g->ToString());
    FUZZ_CHECK(again.ok() && *again == *g);
  }
  if (auto s = SnapshotRef::Parse(in); s.ok()) {
    FUZZ_CHECK(s->Validate().ok());
    FUZZ_CHECK(s->ToString() == in);
    (void)s->RelPath();
    auto again = SnapshotRef::Parse(s->ToString());
    FUZZ_CHECK(again.ok() && *again == *s);
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzNames)
