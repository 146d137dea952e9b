#pragma once

// Bounded JSON parsing for text that comes from outside (request bodies,
// files on disk a hostile hand may have written).
//
// nlohmann::json's parser is iterative, but copying, dumping and comparing a
// value recurse once per nesting level: a 2 MB body of `[` would overflow the
// stack of whoever copies the parsed value. So the nesting depth and the size
// are checked on the raw bytes, BEFORE any json value is built, by a single
// scan that counts `[` and `{` outside strings (a `"` inside a string is
// escaped as `\"`; `\\` is an escaped backslash). For valid JSON the scan's
// depth is exactly the value's depth; for invalid JSON it is never lower than
// the depth the parser reaches before it gives up, so a parse that starts
// after the check never builds anything deeper than the limit.
//
// Depth: a scalar is depth 0, `[]` and `{}` depth 1, `[[]]` and `{"a":{}}`
// depth 2, and so on.
//
// Thread safety: plain functions, no shared state.

#include <cstddef>
#include <string_view>

#include <nlohmann/json.hpp>

#include "storage/status.h"

namespace cairn::storage {

struct JsonLimits {
  size_t max_depth = 64;
  size_t max_size = 1024 * 1024;  // bytes of text
};

// The nesting depth of `text` as the scan above counts it (no parse).
size_t JsonDepth(std::string_view text);

// InvalidArgument when `text` is longer than `limits.max_size` or nested
// deeper than `limits.max_depth`; OK otherwise (the text may still be
// invalid JSON: this does not parse).
Status CheckJsonBounds(std::string_view text, const JsonLimits& limits);

// CheckJsonBounds, then parses. InvalidArgument for text over the bounds or
// that is not exactly one valid JSON value. `callback` (may be null) is
// passed to nlohmann's parser (e.g. to refuse duplicate keys).
Result<nlohmann::json> ParseJsonBounded(std::string_view text, const JsonLimits& limits,
                                        const nlohmann::json::parser_callback_t& callback = nullptr);

}  // namespace cairn::storage
