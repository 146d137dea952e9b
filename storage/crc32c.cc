#include "storage/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace cairn::storage {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // 0x1EDC6F41 reflected

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr std::array<uint32_t, 256> kTable = MakeTable();

uint32_t SoftwareExtend(uint32_t crc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t HardwareExtendOneLane(uint32_t crc, const uint8_t* p,
                                                                 size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return c32;
}

// Three lanes at once. The crc32 instruction takes 3 cycles but can start
// one per cycle, so one dependent chain uses a third of it: a block of
// 3 × kLane bytes is split into three lanes computed side by side (b and c
// from 0), then joined. The register update is linear over GF(2), so
//   crc(x, A·B) = Shift(crc(x, A)) ^ crc(0, B)
// where Shift runs kLane zero bytes through the register — a linear map on
// 32 bits, applied with four 256-entry tables built once from its values on
// the 32 basis vectors. Results are bit for bit those of one lane
// (Crc32cTest.ThreeLanesMatchTheDefinition).
constexpr size_t kLane = 4096;

struct ShiftTables {
  uint32_t t[4][256];
};

__attribute__((target("sse4.2"))) ShiftTables MakeShiftTables() {
  static const uint8_t kZeros[kLane] = {};
  uint32_t basis[32];
  for (int i = 0; i < 32; ++i) basis[i] = HardwareExtendOneLane(1u << i, kZeros, kLane);
  ShiftTables s{};
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int j = 0; j < 8; ++j) {
        if (b & (1u << j)) v ^= basis[8 * k + j];
      }
      s.t[k][b] = v;
    }
  }
  return s;
}

uint32_t Shift(const ShiftTables& s, uint32_t crc) {
  return s.t[0][crc & 0xff] ^ s.t[1][(crc >> 8) & 0xff] ^ s.t[2][(crc >> 16) & 0xff] ^
         s.t[3][crc >> 24];
}

__attribute__((target("sse4.2"))) uint32_t HardwareExtend(uint32_t crc, const uint8_t* p,
                                                          size_t n) {
  if (n >= 3 * kLane) {
    static const ShiftTables tables = MakeShiftTables();
    while (n >= 3 * kLane) {
      uint64_t a = crc, b = 0, c = 0;
      for (size_t i = 0; i < kLane; i += 8) {
        uint64_t va, vb, vc;
        std::memcpy(&va, p + i, 8);
        std::memcpy(&vb, p + kLane + i, 8);
        std::memcpy(&vc, p + 2 * kLane + i, 8);
        a = _mm_crc32_u64(a, va);
        b = _mm_crc32_u64(b, vb);
        c = _mm_crc32_u64(c, vc);
      }
      crc = Shift(tables, Shift(tables, static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
            static_cast<uint32_t>(c);
      p += 3 * kLane;
      n -= 3 * kLane;
    }
  }
  return HardwareExtendOneLane(crc, p, n);
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, std::string_view data) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (HasSse42()) return ~HardwareExtend(c, p, data.size());
#endif
  return ~SoftwareExtend(c, p, data.size());
}

}  // namespace cairn::storage
