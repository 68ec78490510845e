#include "io/codec/buffer.hpp"

#include <array>
#include <bit>
#include <mutex>
#include <vector>

namespace hast::buffer_pool {

namespace {

constexpr std::size_t page = block_buffer::alignment;
constexpr std::size_t classes = 12;  // 64 KiB .. 128 MiB

struct pool {
  std::mutex mutex;
  std::array<std::vector<uint8_t*>, classes> free;
  std::size_t cached = 0;
};

pool& the_pool() {
  // Never destroyed: buffers may be freed by threads that outlive statics.
  static auto* p = new pool;
  return *p;
}

/// The class of a pooled capacity, or `classes` for an unpooled one.
std::size_t class_of(std::size_t capacity) {
  if (capacity < pooled_min || !std::has_single_bit(capacity))
    return classes;
  auto c = static_cast<std::size_t>(std::countr_zero(capacity) - std::countr_zero(pooled_min));
  return c < classes ? c : classes;
}

uint8_t* allocate(std::size_t bytes) {
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(page, bytes));
  if (p == nullptr)
    throw std::bad_alloc{};
  return p;
}

} // namespace

uint8_t* take(std::size_t size, std::size_t& capacity) {
  auto rounded = std::max<std::size_t>(page, (size + page - 1) / page * page);
  if (rounded < pooled_min) {
    capacity = rounded;
    return allocate(rounded);
  }
  capacity = std::bit_ceil(rounded);
  auto c = class_of(capacity);
  if (c == classes) {
    capacity = rounded;  // beyond the largest class: not pooled
    return allocate(rounded);
  }
  auto& p = the_pool();
  {
    std::lock_guard lock{p.mutex};
    if (!p.free[c].empty()) {
      auto* data = p.free[c].back();
      p.free[c].pop_back();
      p.cached -= capacity;
      return data;
    }
  }
  return allocate(capacity);
}

void give(uint8_t* data, std::size_t capacity) {
  if (data == nullptr)
    return;
  auto c = class_of(capacity);
  if (c < classes) {
    auto& p = the_pool();
    std::lock_guard lock{p.mutex};
    if (p.cached + capacity <= cache_limit) {
      p.free[c].push_back(data);
      p.cached += capacity;
      return;
    }
  }
  std::free(data);
}

std::size_t cached() {
  auto& p = the_pool();
  std::lock_guard lock{p.mutex};
  return p.cached;
}

} // namespace hast::buffer_pool
