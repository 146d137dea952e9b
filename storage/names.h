#pragma once

// Names that come from outside, and the snapshot paths built from them.
//
// Every name (store, namespace component, backup type, backup id, archive)
// is checked here, in one place, before it touches a path. Layout:
//   [ns/<ns1>/[ns/<ns2>/…]]<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>/
// Rules (also in storage/FORMAT.md):
//   store, namespace component: [A-Za-z0-9_][A-Za-z0-9_.-]{0,31}
//   backup type:                one of "vm", "ct", "host"
//   backup id:                  [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//   archive:                    [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, ending ".fidx" or ".blob";
//                               "index.json" is reserved for the manifest
//   namespace depth:            at most kMaxNamespaceDepth components
// A leading '.' is never allowed, so "..", hidden files and staging folders
// can never be named from outside; '/', NUL and anything outside the
// charset are rejected, and so is ".." anywhere in a name ("a..b").
// Every rejection is InvalidArgument; its message shows the name escaped
// (non-printable bytes as \xNN) and cut to 48 characters.
//
// Thread safety: pure functions and plain values.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "storage/status.h"

namespace cairn::storage {

enum class NameKind { kStore, kNamespace, kBackupType, kBackupId, kArchive };

inline constexpr size_t kMaxNamespaceDepth = 7;

// OK, or InvalidArgument naming the kind and why.
Status ValidateName(NameKind kind, std::string_view name);

// A namespace as its components; empty is the root namespace.
// "a/b" <-> {"a","b"}. Each component validated.
Result<std::vector<std::string>> ParseNamespace(std::string_view ns);
std::string FormatNamespace(const std::vector<std::string>& ns);

// Snapshot time: "YYYY-MM-DDTHH:MM:SSZ" in UTC <-> seconds since the epoch.
// Parse is strict: exactly that shape, a real calendar date, years 1970..9999.
std::string FormatSnapshotTime(int64_t unix_seconds);
Result<int64_t> ParseSnapshotTime(std::string_view text);

struct GroupRef {
  std::vector<std::string> ns;  // namespace components, outermost first
  std::string type;             // "vm", "ct" or "host"
  std::string id;

  auto operator<=>(const GroupRef&) const = default;
  // Path below the datastore root: "ns/a/ns/b/vm/100" or "vm/100".
  std::string RelPath() const;
  // "vm/100" or "a/b:vm/100" — how groups are named in the API and the CLI.
  std::string ToString() const;
  // Parses ToString()'s form; validates every part.
  static Result<GroupRef> Parse(std::string_view text);
  Status Validate() const;
};

struct SnapshotRef {
  GroupRef group;
  int64_t time = 0;  // seconds since the Unix epoch, UTC

  auto operator<=>(const SnapshotRef&) const = default;
  // "<group RelPath>/<time>".
  std::string RelPath() const;
  // "vm/100/2026-11-21T17:50:38Z" (with "a/b:" before it in a namespace).
  std::string ToString() const;
  static Result<SnapshotRef> Parse(std::string_view text);
  Status Validate() const;
};

}  // namespace cairn::storage
