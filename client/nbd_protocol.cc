#include "client/nbd_protocol.h"

#include "client/nbd_sink.h"

namespace cairn::client {
namespace {

uint16_t GetU16(const unsigned char* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t GetU32(const unsigned char* p) { return (uint32_t{GetU16(p)} << 16) | GetU16(p + 2); }
uint64_t GetU64(const unsigned char* p) { return (uint64_t{GetU32(p)} << 32) | GetU32(p + 4); }

constexpr std::string_view kAllocationContext = "base:allocation";

}  // namespace

bool ValidNbdInfoRequest(std::string_view data) {
  const auto* d = reinterpret_cast<const unsigned char*>(data.data());
  const size_t len = data.size();
  bool valid = len >= 6;
  const uint32_t name_len = valid ? GetU32(d) : 0;
  valid = valid && name_len <= len - 6;
  const uint16_t requests = valid ? GetU16(d + 4 + name_len) : 0;
  return valid && uint64_t{4} + name_len + 2 + 2ull * requests == len;
}

storage::Result<bool> ParseNbdMetaContext(std::string_view data, bool list) {
  const auto* d = reinterpret_cast<const unsigned char*>(data.data());
  const size_t len = data.size();
  if (len < 8) return storage::Status::InvalidArgument("malformed request");
  const uint32_t name_len = GetU32(d);
  if (name_len > len - 8) return storage::Status::InvalidArgument("malformed request");
  size_t pos = 4 + name_len;
  const uint32_t queries = GetU32(d + pos);
  pos += 4;
  bool match = list && queries == 0;
  for (uint32_t q = 0; q < queries; ++q) {
    if (len - pos < 4) return storage::Status::InvalidArgument("malformed query");
    const uint32_t qlen = GetU32(d + pos);
    pos += 4;
    if (qlen > len - pos) return storage::Status::InvalidArgument("malformed query");
    const std::string_view query = data.substr(pos, qlen);
    pos += qlen;
    if (query == kAllocationContext || (list && query == "base:")) match = true;
  }
  if (pos != len) return storage::Status::InvalidArgument("trailing bytes");
  return match;
}

storage::Result<NbdRequestHeader> ParseNbdRequestHeader(const unsigned char* h) {
  if (GetU32(h) != nbd::kRequestMagic) return storage::Status::Corruption("bad request magic");
  NbdRequestHeader r;
  r.flags = GetU16(h + 4);
  r.type = GetU16(h + 6);
  r.cookie = h + 8;
  r.offset = GetU64(h + 16);
  r.length = GetU32(h + 24);
  return r;
}

}  // namespace cairn::client
