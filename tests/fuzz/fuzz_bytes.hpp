#pragma once

// A cursor over one fuzz input: fixed-size fields and byte runs are taken
// from the front. A field asked for past the end reads as zeros, so that a
// target never branches on how short its input is unless it wants to.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

namespace hast::fuzz {

class fuzz_bytes {
public:
  fuzz_bytes(const uint8_t* data, std::size_t size) : rest_(data, size) {}

  std::size_t size() const { return rest_.size(); }
  bool empty() const { return rest_.empty(); }
  std::span<const uint8_t> rest() const { return rest_; }

  /// The next `n` bytes, or nullopt (taking nothing) if fewer are left.
  std::optional<std::span<const uint8_t>> take(std::size_t n) {
    if (n > rest_.size())
      return std::nullopt;
    auto out = rest_.first(n);
    rest_ = rest_.subspan(n);
    return out;
  }

  /// Fills `out` if `N` bytes are left; false (taking nothing) otherwise.
  template <std::size_t N>
  bool take_into(uint8_t (&out)[N]) {
    auto bytes = take(N);
    if (!bytes)
      return false;
    std::memcpy(out, bytes->data(), N);
    return true;
  }

  /// A little-endian integer; missing bytes read as zero.
  template <class T>
  T take_le() {
    uint64_t v = 0;
    const std::size_t n = std::min(sizeof(T), rest_.size());
    for (std::size_t i = 0; i < n; ++i)
      v |= uint64_t{rest_[i]} << (8 * i);
    rest_ = rest_.subspan(n);
    return static_cast<T>(v);
  }

private:
  std::span<const uint8_t> rest_;
};

/// Stops the run the way a sanitizer report would: a broken invariant of a
/// decoder is a finding like a crash.
[[noreturn]] inline void invariant_broken() {
  __builtin_trap();
}

inline void check(bool good) {
  if (!good)
    invariant_broken();
}

} // namespace hast::fuzz
