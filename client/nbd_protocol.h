#pragma once

// The parsing half of the `cairn map` NBD export (client/nbd_export.h): the
// option data and request headers a connecting NBD client sends, as pure
// functions over bytes so they can be fuzzed (tests/fuzz/nbd_fuzz.cc)
// without sockets or an archive. Numbers as in NBD's doc/proto.md.
//
// Thread safety: pure functions.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "storage/status.h"

namespace cairn::client {

// INFO/GO option data: u32 name length, name, u16 count, count × u16 info
// type, nothing more. True when well-formed.
bool ValidNbdInfoRequest(std::string_view data);

// LIST/SET_META_CONTEXT option data: u32 name length, name, u32 query count,
// queries (u32 length, text each), nothing more. Whether base:allocation is
// selected: asked for by name, or (LIST only) with no query or "base:".
// InvalidArgument("malformed request" / "malformed query" / "trailing
// bytes") when malformed. `list` is true for LIST_META_CONTEXT.
storage::Result<bool> ParseNbdMetaContext(std::string_view data, bool list);

inline constexpr size_t kNbdRequestHeaderBytes = 28;

// A transmission request header: u32 magic, u16 flags, u16 type, 8-byte
// cookie, u64 offset, u32 length (big-endian).
struct NbdRequestHeader {
  uint16_t flags = 0;
  uint16_t type = 0;
  const unsigned char* cookie = nullptr;  // 8 bytes inside the parsed header
  uint64_t offset = 0;
  uint32_t length = 0;
};
// Corruption("bad request magic") unless the header starts with the request
// magic. REQUIRES: `h` holds kNbdRequestHeaderBytes bytes.
storage::Result<NbdRequestHeader> ParseNbdRequestHeader(const unsigned char* h);

// Whether [offset, offset + length) is a non-empty range inside an export of
// `size` bytes (no overflow for any inputs).
inline bool NbdRequestInBounds(uint64_t offset, uint32_t length, uint64_t size) {
  return length > 0 && length <= size && offset <= size - length;
}

}  // namespace cairn::client
