// Data buffers: 4 KiB-aligned, and large ones are reused from a bounded
// pool instead of being mapped afresh for every request.

#include "io/codec/buffer.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace hast {
namespace {

TEST(BufferPool, ALargeBufferFreedIsTheNextOneOfItsClass) {
  const uint8_t* first = nullptr;
  {
    auto b = make_buffer(2u << 20);
    first = b->data();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % block_buffer::alignment, 0u);
  }
  auto again = make_buffer((2u << 20) - 8192);  // same power-of-two class
  EXPECT_EQ(again->data(), first) << "a freed 2 MiB buffer was not reused";
  EXPECT_EQ(again->size(), (2u << 20) - 8192);
}

TEST(BufferPool, WhatIsKeptStaysWithinItsLimit) {
  {
    std::vector<buffer_ptr> many;
    for (int i = 0; i < 64; ++i)
      many.push_back(make_buffer(4u << 20));  // 256 MiB in use at once
  }
  EXPECT_LE(buffer_pool::cached(), buffer_pool::cache_limit);
  EXPECT_GE(buffer_pool::cached(), buffer_pool::cache_limit - (4u << 20))
    << "the pool should have kept up to its limit";
}

TEST(BufferPool, SmallAndHugeBuffersAreAlignedAndUsable) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4096}, std::size_t{65537},
                           std::size_t{200u << 20}}) {
    auto b = make_buffer(size);
    EXPECT_EQ(b->size(), size);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b->data()) % block_buffer::alignment, 0u) << size;
    if (size > 0) {
      b->data()[0] = 1;
      b->data()[size - 1] = 2;
    }
  }
}

} // namespace
} // namespace hast
