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

class block_buffer {
public:
  static constexpr std::size_t alignment = 4096;

  explicit block_buffer(std::size_t size) : size_(size) {
    auto rounded = (size + alignment - 1) / alignment * alignment;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(alignment, rounded == 0 ? alignment : rounded));
    if (data_ == nullptr)
      throw std::bad_alloc{};
  }
  block_buffer(const block_buffer&) = delete;
  block_buffer& operator=(const block_buffer&) = delete;
  ~block_buffer() { std::free(data_); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

  /// Shrinks the visible size (e.g. after a short read); never grows.
  void truncate(std::size_t size) {
    if (size < size_)
      size_ = size;
  }

private:
  uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

using buffer_ptr = std::shared_ptr<block_buffer>;

inline buffer_ptr make_buffer(std::size_t size) {
  return std::make_shared<block_buffer>(size);
}

} // namespace hast
