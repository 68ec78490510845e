#pragma once

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
// metadata slots and of the `crc32c` data checksum. Uses the SSE4.2 crc32
// instruction where the CPU has it and a slicing-by-8 table otherwise; both
// give the same value.

#include <cstddef>
#include <cstdint>

namespace hast {

/// CRC-32C of `n` bytes. `seed` is a previous result, so that
/// crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b.
/// crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void *data, size_t n, uint32_t seed = 0);

namespace detail {

/// The table-driven implementation, exposed so tests can compare it with
/// the hardware path.
uint32_t crc32c_portable(const void *data, size_t n, uint32_t seed = 0);

} // namespace detail

} // namespace hast
