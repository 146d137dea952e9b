// The `cairn map` NBD export's parsing (client/nbd_protocol.h): option data
// of INFO/GO and LIST/SET_META_CONTEXT and transmission request headers, as
// an NBD client on the export's socket sends them. The first byte picks the
// parser, the rest is its input. Invariants: a well-formed INFO/GO request
// accounts for every byte, a well-formed meta-context request is consumed
// exactly (checked by an independent walk), and a request in bounds never
// overflows the export.
#include <string>

#include "client/nbd_protocol.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using namespace cairn::client;

namespace {

// 128-bit sums cannot overflow for 64-bit operands (__extension__: -Wpedantic).
__extension__ typedef unsigned __int128 U128;

uint32_t U32(std::string_view s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + at;
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

uint64_t U64(std::string_view s, size_t at) { return uint64_t{U32(s, at)} << 32 | U32(s, at + 4); }

// An independent walk of the meta-context layout in 128-bit arithmetic:
// whether it is well-formed.
bool MetaContextWellFormed(std::string_view d) {
  if (d.size() < 8) return false;
  U128 pos = 4 + static_cast<U128>(U32(d, 0));
  if (pos + 4 > d.size()) return false;
  const uint32_t queries = U32(d, static_cast<size_t>(pos));
  pos += 4;
  for (uint32_t q = 0; q < queries; ++q) {
    if (pos + 4 > d.size()) return false;
    pos += 4 + static_cast<U128>(U32(d, static_cast<size_t>(pos)));
    if (pos > d.size()) return false;
  }
  return pos == d.size();
}

}  // namespace

int FuzzNbd(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in = AsText(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      if (ValidNbdInfoRequest(in)) {
        FUZZ_CHECK(in.size() >= 6);
        const uint64_t name_len = U32(in, 0);
        FUZZ_CHECK(name_len + 6 <= in.size());
        const auto* p = reinterpret_cast<const unsigned char*>(in.data()) + 4 + name_len;
        const uint64_t count = uint64_t{p[0]} << 8 | p[1];
        FUZZ_CHECK(4 + name_len + 2 + 2 * count == in.size());
      }
      break;
    case 1:
    case 2: {
      auto r = ParseNbdMetaContext(in, data[0] % 4 == 1);
      FUZZ_CHECK(r.ok() == MetaContextWellFormed(in));
      break;
    }
    case 3: {
      if (in.size() < kNbdRequestHeaderBytes + 8) return 0;
      auto h = ParseNbdRequestHeader(reinterpret_cast<const unsigned char*>(in.data()));
      if (!h.ok()) {
        FUZZ_CHECK(U32(in, 0) != 0x25609513);
        return 0;
      }
      FUZZ_CHECK(h->offset == U64(in, 16) && h->length == U32(in, 24));
      const uint64_t export_size = U64(in, kNbdRequestHeaderBytes);
      const bool ok = NbdRequestInBounds(h->offset, h->length, export_size);
      const U128 end = static_cast<U128>(h->offset) + h->length;
      FUZZ_CHECK(ok == (h->length > 0 && end <= export_size));
      break;
    }
  }
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzNbd)
