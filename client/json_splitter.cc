#include "client/json_splitter.h"

#include <algorithm>

namespace cairn::client {

using storage::Result;
using storage::Status;

void JsonObjectSplitter::Reset() {
  buffer_.clear();
  scan_ = 0;
  depth_ = 0;
  in_string_ = false;
  escape_ = false;
}

Result<bool> JsonObjectSplitter::Next(std::string* message) {
  if (depth_ == 0) {
    // Whitespace between messages (QEMU ends each with "\r\n").
    size_t start = buffer_.find_first_not_of(" \t\r\n");
    if (start == std::string::npos) {
      buffer_.clear();
      scan_ = 0;
      return false;
    }
    if (start > 0) {
      buffer_.erase(0, start);
      scan_ = 0;
    }
    if (buffer_[0] != '{') {
      return Status::Corruption(what_ + ": expected a JSON object, got byte " +
                                std::to_string(static_cast<unsigned char>(buffer_[0])));
    }
  }
  for (; scan_ < buffer_.size(); ++scan_) {
    const char c = buffer_[scan_];
    if (in_string_) {
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      if (depth_ >= kMaxDepth) return Status::Corruption(what_ + ": JSON nested too deeply");
      open_[depth_++] = c;
    } else if (c == '}' || c == ']') {
      // A mismatched closer would otherwise leave the splitter waiting for a
      // close that never comes.
      if (depth_ == 0 || open_[depth_ - 1] != (c == '}' ? '{' : '[')) {
        return Status::Corruption(what_ + ": unbalanced JSON");
      }
      if (--depth_ == 0) {
        const size_t size = scan_ + 1;
        if (size > max_bytes_) break;
        message->assign(buffer_, 0, size);
        buffer_.erase(0, size);
        scan_ = 0;
        return true;
      }
    }
  }
  if (std::min(buffer_.size(), scan_ + 1) > max_bytes_) {
    return Status::Corruption(what_ + ": message larger than " + std::to_string(max_bytes_) +
                              " bytes");
  }
  return false;
}

}  // namespace cairn::client
