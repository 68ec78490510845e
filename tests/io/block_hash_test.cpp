// The block hashes of an online verify: one per 4 KiB block, a strict wire
// form, and the runs of differing blocks a verify reports.

#include "io/block_hash.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace hast {
namespace {

std::vector<uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out)
    b = static_cast<uint8_t>(gen());
  return out;
}

TEST(BlockHash, OneHashPerBlockAndAShortLastBlockCounts) {
  auto data = random_bytes(3 * verify_block_size + 100, 1);
  auto h = hash_blocks(data);
  EXPECT_EQ(h.block_size, verify_block_size);
  ASSERT_EQ(h.hashes.size(), 4u);
  EXPECT_EQ(hash_blocks({data.data(), data.size()}), h) << "hashing is deterministic";
}

TEST(BlockHash, ChangingOneByteChangesOnlyItsBlocksHash) {
  auto data = random_bytes(8 * verify_block_size, 2);
  auto before = hash_blocks(data);
  data[5 * verify_block_size + 17] ^= 1;
  auto after = hash_blocks(data);
  for (std::size_t i = 0; i < before.hashes.size(); ++i)
    EXPECT_EQ(before.hashes[i] == after.hashes[i], i != 5) << "block " << i;
}

TEST(BlockHash, RoundTripsThroughItsWireForm) {
  auto h = hash_blocks(random_bytes(512 * verify_block_size, 3));
  auto wire = encode_block_hashes(h);
  EXPECT_EQ(wire->size(), 8 + 8 * h.hashes.size());
  auto back = decode_block_hashes(wire);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, h);
}

TEST(BlockHash, DecodeRefusesShortMismatchedAndZeroBlockSizePayloads) {
  auto h = hash_blocks(random_bytes(4 * verify_block_size, 4));
  auto wire = encode_block_hashes(h);
  auto expect_refused = [](const buffer_ptr& b, const char* what) {
    auto r = decode_block_hashes(b);
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().code(), errc::protocol_error) << what;
  };
  expect_refused(nullptr, "no payload");
  auto short_one = make_buffer(7);
  expect_refused(short_one, "7 bytes");
  auto truncated = make_buffer(wire->size() - 8);
  std::memcpy(truncated->data(), wire->data(), truncated->size());
  expect_refused(truncated, "one hash missing");
  auto zero = make_buffer(wire->size());
  std::memcpy(zero->data(), wire->data(), wire->size());
  std::memset(zero->data(), 0, 4);
  expect_refused(zero, "block size 0");
}

TEST(BlockHash, DifferingRunsMergeAdjacentBlocksAndCountMissingOnes) {
  block_hashes a, b;
  a.hashes = {1, 2, 3, 4, 5, 6, 7};
  b.hashes = {1, 9, 9, 4, 5, 9, 7};
  auto runs = differing_runs(a, b);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (std::pair<uint64_t, uint64_t>{1, 2}));
  EXPECT_EQ(runs[1], (std::pair<uint64_t, uint64_t>{5, 1}));
  EXPECT_TRUE(differing_runs(a, a).empty());
  b.hashes = {1, 2, 3, 4, 5};
  runs = differing_runs(a, b);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], (std::pair<uint64_t, uint64_t>{5, 2})) << "blocks one side lacks differ";
}

} // namespace
} // namespace hast
