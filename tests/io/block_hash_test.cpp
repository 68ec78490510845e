// The block hashes of an online verify (xxh3) and of the checksum resync
// (SHA-256): one per 4 KiB block, a strict wire form, and the runs of
// differing blocks.

#include "io/codec/block_hash.hpp"

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

TEST(BlockDigest, OneSha256PerBlockMatchingAKnownVector) {
  // SHA-256 of "abc" (FIPS 180-2, appendix B.1) as a one-block range.
  const uint8_t abc[] = {'a', 'b', 'c'};
  auto d = digest_blocks(abc);
  ASSERT_EQ(d.digests.size(), 1u);
  const block_digest expected = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                 0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  EXPECT_EQ(d.digests[0], expected);
  auto data = random_bytes(3 * verify_block_size + 1, 5);
  EXPECT_EQ(digest_blocks(data).digests.size(), 4u) << "a short last block counts";
}

TEST(BlockDigest, RoundTripsAndFindsExactlyTheChangedBlocks) {
  auto data = random_bytes(64 * verify_block_size, 6);
  auto before = digest_blocks(data);
  data[0] ^= 1;
  data[10 * verify_block_size + 4095] ^= 0x80;
  data[11 * verify_block_size] ^= 0x80;
  auto after = digest_blocks(data);
  auto runs = differing_runs(before, after);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (std::pair<uint64_t, uint64_t>{0, 1}));
  EXPECT_EQ(runs[1], (std::pair<uint64_t, uint64_t>{10, 2}));
  auto wire = encode_block_digests(after);
  EXPECT_EQ(wire->size(), 8 + 32 * after.digests.size());
  auto back = decode_block_digests(wire);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, after);
}

TEST(BlockDigest, DecodeRefusesTheVerifysFormAndTruncatedPayloads) {
  auto data = random_bytes(4 * verify_block_size, 7);
  // Four xxh3 hashes are 40 bytes: not four digests (136 bytes).
  auto r = decode_block_digests(encode_block_hashes(hash_blocks(data)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::protocol_error);
  auto wire = encode_block_digests(digest_blocks(data));
  auto truncated = make_buffer(wire->size() - 1);
  std::memcpy(truncated->data(), wire->data(), truncated->size());
  EXPECT_FALSE(decode_block_digests(truncated));
  EXPECT_FALSE(decode_block_digests(nullptr));
}

} // namespace
} // namespace hast
