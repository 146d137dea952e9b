#pragma once

// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected), as used by iSCSI,
// ext4 and LevelDB. Uses the SSE4.2 crc32 instruction when the CPU has it.
// Check value: Crc32c("123456789") == 0xE3069283.

#include <cstdint>
#include <string_view>

namespace cairn::storage {

// Extends `crc` (the CRC of earlier bytes; 0 to start) with `data`.
uint32_t Crc32cExtend(uint32_t crc, std::string_view data);
inline uint32_t Crc32c(std::string_view data) { return Crc32cExtend(0, data); }

}  // namespace cairn::storage
