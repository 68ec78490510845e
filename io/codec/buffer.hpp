#pragma once

// One payload buffer, allocated once and shared read-only across actor hops
// and the socket. Aligned to 4 KiB so that O_DIRECT I/O can use it as is.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace hast {

/// Where the memory of data buffers comes from. Large buffers (64 KiB and
/// more, in power-of-two classes) freed by one request are kept, up to
/// `cache_limit` bytes in all, for the next: a fresh allocation of that size
/// is a fresh mapping whose every page faults inside the socket receive or
/// disk read that fills it, which held the resync to a third of its speed.
/// Small buffers come from the heap, warm anyway. Thread-safe.
namespace buffer_pool {
inline constexpr std::size_t pooled_min = 64u << 10;
inline constexpr std::size_t cache_limit = 64u << 20;
/// At least `size` bytes (a 4 KiB multiple; `capacity` says how many),
/// 4 KiB-aligned. Throws std::bad_alloc.
uint8_t* take(std::size_t size, std::size_t& capacity);
/// Returns what take() gave.
void give(uint8_t* data, std::size_t capacity);
/// Bytes kept for reuse now (tests).
std::size_t cached();
} // namespace buffer_pool

class block_buffer {
public:
  static constexpr std::size_t alignment = 4096;

  explicit block_buffer(std::size_t size)
    : data_(buffer_pool::take(size, capacity_)), size_(size) {}
  block_buffer(const block_buffer&) = delete;
  block_buffer& operator=(const block_buffer&) = delete;
  ~block_buffer() { buffer_pool::give(data_, capacity_); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

  /// Shrinks the visible size (e.g. after a short read); never grows.
  void truncate(std::size_t size) {
    if (size < size_)
      size_ = size;
  }

private:
  std::size_t capacity_ = 0;  // what was taken from the pool
  uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

using buffer_ptr = std::shared_ptr<block_buffer>;

inline buffer_ptr make_buffer(std::size_t size) {
  return std::make_shared<block_buffer>(size);
}

} // namespace hast
