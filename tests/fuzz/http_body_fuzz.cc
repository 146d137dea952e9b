// JSON request bodies (server/api_common.cc ParseBody): every POST/PUT body
// the server parses goes through storage::ParseJsonBounded with the server's
// limits (64 levels, 1 MiB) and must be an object; the fields the handlers
// read are then checked with the storage validators (group, snapshot,
// namespace, archive, store names). ParseBody itself takes an
// httplib::Request and lives in the server library, which the fuzz build
// does not compile; this target calls the function it wraps, with the same
// limits. Invariants: an accepted body is nested no deeper than the limit
// (the pre-scan and the parser agree), and dump() re-parses to an equal value.
#include <string>

#include <nlohmann/json.hpp>

#include "storage/json_bounds.h"
#include "storage/names.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::storage;
using nlohmann::json;

namespace {

constexpr JsonLimits kBodyLimits{/*max_depth=*/64, /*max_size=*/1024 * 1024};

size_t Depth(const json& j) {
  size_t d = 0;
  if (j.is_object() || j.is_array()) {
    for (const auto& v : j) d = std::max(d, Depth(v));
    return d + 1;
  }
  return 0;
}

std::string Field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

int FuzzHttpBody(const uint8_t* data, size_t size) {
  const std::string_view in = AsText(data, size);
  const bool bounded = CheckJsonBounds(in, kBodyLimits).ok();
  auto j = ParseJsonBounded(in, kBodyLimits);
  if (!j.ok()) return 0;
  FUZZ_CHECK(bounded);
  FUZZ_CHECK(Depth(*j) <= kBodyLimits.max_depth);
  FUZZ_CHECK(JsonDepth(in) <= kBodyLimits.max_depth);
  // dump() must not throw on what the parser accepted (invalid UTF-8 is
  // refused by the parser).
  const std::string text = j->dump();
  auto again = ParseJsonBounded(text, kBodyLimits);
  FUZZ_CHECK(again.ok() && *again == *j);
  if (!j->is_object()) return 0;  // ParseBody: "body must be a JSON object"
  // The fields the handlers read by name and hand to the validators.
  (void)GroupRef::Parse(Field(*j, "group"));
  (void)SnapshotRef::Parse(Field(*j, "snapshot"));
  (void)ParseNamespace(Field(*j, "ns"));
  (void)ValidateName(NameKind::kArchive, Field(*j, "archive"));
  (void)ValidateName(NameKind::kStore, Field(*j, "store"));
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzHttpBody)
