// Unaligned writes to disjoint bytes of one 4 KiB block, issued at the same
// time (as an NBD client through a loop device does with 1 KiB ext4 blocks),
// must all land, including on an O_DIRECT provider that has to read, modify
// and write the whole block.

#include "io/storage/provider.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

namespace hast {
namespace {

TEST(provider_rmw, concurrent_unaligned_writes_to_one_block_all_land) {
  // /var/tmp: a disk file system, where the provider is O_DIRECT as in use.
  scratch_dir scratch{"rmw", "/var/tmp"};
  const auto& dir = scratch.dir();
  auto prov = provider::create_file((dir / "p.img").string(), 1 << 20);
  ASSERT_TRUE(prov.has_value()) << prov.error().message();
  constexpr int rounds = 300;
  for (int round = 0; round < rounds; ++round) {
    uint64_t block = static_cast<uint64_t>(round % 64) * 4096;
    std::vector<std::thread> writers;
    for (int part = 0; part < 4; ++part)
      writers.emplace_back([&, part] {
        std::vector<uint8_t> piece(1024, static_cast<uint8_t>(round * 4 + part + 1));
        EXPECT_TRUE(prov->write(piece.data(), piece.size(), block + part * 1024u));
      });
    for (auto& w : writers)
      w.join();
    std::vector<uint8_t> back(4096);
    ASSERT_TRUE(prov->read(back.data(), back.size(), block));
    for (int part = 0; part < 4; ++part)
      ASSERT_EQ(back[part * 1024u + 7], static_cast<uint8_t>(round * 4 + part + 1))
        << "round " << round << ": the write to bytes " << part * 1024 << ".. was lost"
        << (prov->direct() ? " (O_DIRECT read-modify-write)" : "");
  }
}

/// Fails writes that overlap [begin, end).
class write_fault final : public fault_source {
public:
  write_fault(uint64_t begin, uint64_t end) : begin_(begin), end_(end) {}
  int fault(io_kind kind, uint64_t offset, uint64_t length) const override {
    return kind == io_kind::write && offset < end_ && begin_ < offset + length ? EIO : 0;
  }

private:
  uint64_t begin_;
  uint64_t end_;
};

TEST(provider_rmw, a_failed_unaligned_write_leaves_its_bytes_while_its_neighbours_land) {
  // /var/tmp: a disk file system, where the provider is O_DIRECT as in use.
  scratch_dir scratch{"rmw", "/var/tmp"};
  const auto& dir = scratch.dir();
  auto prov = provider::create_file((dir / "p.img").string(), 1 << 20);
  ASSERT_TRUE(prov.has_value()) << prov.error().message();
  // Of each block's four 1 KiB parts, the third always fails.
  prov->set_fault_source(std::make_shared<write_fault>(2048, 3072));
  for (int round = 0; round < 50; ++round) {
    std::vector<std::thread> writers;
    for (int part = 0; part < 4; ++part)
      writers.emplace_back([&, part] {
        std::vector<uint8_t> piece(1024, static_cast<uint8_t>(round + 1));
        EXPECT_EQ(static_cast<bool>(prov->write(piece.data(), piece.size(), part * 1024u)),
                  part != 2);
      });
    for (auto& w : writers)
      w.join();
    std::vector<uint8_t> back(4096);
    ASSERT_TRUE(prov->read(back.data(), back.size(), 0));
    for (int part = 0; part < 4; ++part)
      ASSERT_EQ(back[part * 1024u + 7], part == 2 ? 0 : static_cast<uint8_t>(round + 1))
          << "round " << round << ", part " << part;
  }
}

} // namespace
} // namespace hast
