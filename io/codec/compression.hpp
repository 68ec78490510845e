#pragma once

// Payload compression of the peer protocol: `hole` sends an all-zero block
// as no bytes at all, `lz4` compresses blocks that shrink enough to be worth
// the receiver's time. Output buffers are hast::buffer_ptr so they travel
// to the socket without another copy.

#include "io/codec/buffer.hpp"
#include "base/errc.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>

namespace hast {

/// True if all `n` bytes are zero. Compares a machine word at a time.
bool all_zero(const uint8_t* data, size_t n);

/// LZ4 block compression of `n` bytes. nullopt when the result would not be
/// at least 1/8 smaller than the input (then the data travels as is), or for
/// an empty input.
std::optional<buffer_ptr> lz4_compress(const uint8_t* data, size_t n);

/// The most an LZ4 block can expand: 255 output bytes per input byte.
inline constexpr size_t max_lz4_ratio = 255;

/// Expands an LZ4 block to exactly `original` bytes. Corrupt input, or
/// input that expands to any other size, is errc::protocol_error; so is an
/// `original` beyond max_lz4_ratio times `n`, before anything is allocated.
result<buffer_ptr> lz4_decompress(const uint8_t* data, size_t n, size_t original);

} // namespace hast
