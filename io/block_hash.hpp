#pragma once

// The hashes an online verify compares: one 64-bit xxh3 per block of a
// range, so that both nodes can compare a range by sending only hashes. The
// wire form (the payload of a verify_reply frame) is u32 LE block size, u32
// LE count, then count u64 LE hashes.

#include "io/buffer.hpp"
#include "messages/errc.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace hast {

/// The unit a verify compares and reports differences in.
inline constexpr uint32_t verify_block_size = 4096;

struct block_hashes {
  uint32_t block_size = verify_block_size;
  std::vector<uint64_t> hashes;  // one per block; the last block may be short

  bool operator==(const block_hashes&) const = default;
};

/// xxh3-64 of every `block_size` bytes of `data` (the last block may be
/// shorter). block_size must be > 0.
block_hashes hash_blocks(std::span<const uint8_t> data, uint32_t block_size = verify_block_size);

buffer_ptr encode_block_hashes(const block_hashes& h);

/// Strict: a short buffer, a count that does not match the size, or a block
/// size of 0 is errc::protocol_error.
result<block_hashes> decode_block_hashes(const buffer_ptr& payload);

/// Runs of differing blocks, as (first block, block count): blocks beyond
/// the shorter list count as differing.
std::vector<std::pair<uint64_t, uint64_t>> differing_runs(const block_hashes& a,
                                                          const block_hashes& b);

} // namespace hast
