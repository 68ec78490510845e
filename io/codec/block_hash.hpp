#pragma once

// Block hashes that let both nodes compare a range by sending only hashes.
// Two kinds:
// - the online verify's: one 64-bit xxh3 per block. It finds differences;
//   a collision would only hide one from a report. Wire form (the payload
//   of a verify_reply frame): u32 LE block size, u32 LE count, then count
//   u64 LE hashes.
// - the checksum resync's (`resync-checksum on`): one SHA-256 per block. A
//   match means the block is not copied, so a collision would leave the
//   nodes different while both report `complete`: the hash must resist one
//   made on purpose (a guest writes both blocks), which xxh3 does not.
//   Wire form: u32 LE block size, u32 LE count, then count 32-byte digests.

#include "io/codec/buffer.hpp"
#include "base/errc.hpp"

#include <array>
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

using block_digest = std::array<uint8_t, 32>;

/// The checksum resync's block hashes: one SHA-256 per block.
struct block_digests {
  uint32_t block_size = verify_block_size;
  std::vector<block_digest> digests;  // one per block; the last block may be short

  bool operator==(const block_digests&) const = default;
};

/// SHA-256 of every `block_size` bytes of `data` (the last block may be
/// shorter). block_size must be > 0.
block_digests digest_blocks(std::span<const uint8_t> data, uint32_t block_size = verify_block_size);

buffer_ptr encode_block_digests(const block_digests& d);

/// Strict, as decode_block_hashes.
result<block_digests> decode_block_digests(const buffer_ptr& payload);

/// As differing_runs of block_hashes.
std::vector<std::pair<uint64_t, uint64_t>> differing_runs(const block_digests& a,
                                                          const block_digests& b);

} // namespace hast
