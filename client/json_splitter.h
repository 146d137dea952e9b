#pragma once

// JsonObjectSplitter: cuts a byte stream into top-level JSON objects by
// tracking strings, escapes and the bracket stack, without parsing them
// (nlohmann parses each one afterwards). Used by QmpClient and GuestAgent:
// both protocols are a stream of JSON objects that may arrive in pieces,
// several in one read, or pretty-printed.
//
// Whitespace between objects is skipped. Anything else between objects, a
// mismatched bracket, nesting deeper than 64, or an object larger than
// `max_bytes` is Corruption (the message starts with `what`); after an error
// the caller closes the stream or Reset()s. Memory is bounded by `max_bytes`
// plus one read.
//
// Thread safety: none; one reader.

#include <cstddef>
#include <string>

#include "storage/status.h"

namespace cairn::client {

class JsonObjectSplitter {
 public:
  // `what` names the stream in errors ("QMP", "guest agent").
  JsonObjectSplitter(std::string what, size_t max_bytes)
      : what_(std::move(what)), max_bytes_(max_bytes) {}

  void Append(const char* data, size_t n) { buffer_.append(data, n); }
  // Forgets every byte not yet returned and the scanner's state.
  void Reset();

  // True with *message set when a whole object is at the front of the
  // stream; false when more bytes are needed.
  storage::Result<bool> Next(std::string* message);

 private:
  static constexpr int kMaxDepth = 64;

  const std::string what_;
  const size_t max_bytes_;
  // Bytes not yet returned as messages, and the scanner's state over them:
  // scan_ bytes have been looked at, inside a string or not, at what depth.
  std::string buffer_;
  size_t scan_ = 0;
  int depth_ = 0;
  char open_[kMaxDepth] = {};  // the open brackets, innermost last
  bool in_string_ = false;
  bool escape_ = false;
};

}  // namespace cairn::client
