#include "storage/json_bounds.h"

#include <string>

namespace cairn::storage {

size_t JsonDepth(std::string_view text) {
  size_t depth = 0;
  size_t max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // whatever follows a backslash cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) max_depth = depth;
        break;
      case ']':
      case '}':
        // Unbalanced closers make the text invalid; never let them hide
        // openers that follow.
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return max_depth;
}

Status CheckJsonBounds(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_size) {
    return Status::InvalidArgument("JSON text of " + std::to_string(text.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits.max_size));
  }
  if (JsonDepth(text) > limits.max_depth) {
    return Status::InvalidArgument("JSON nested deeper than " + std::to_string(limits.max_depth) +
                                   " levels");
  }
  return Status::OK();
}

Result<nlohmann::json> ParseJsonBounded(std::string_view text, const JsonLimits& limits,
                                        const nlohmann::json::parser_callback_t& callback) {
  CAIRN_RETURN_IF_ERROR(CheckJsonBounds(text, limits));
  nlohmann::json j = nlohmann::json::parse(text, callback, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("not valid JSON");
  return j;
}

}  // namespace cairn::storage
