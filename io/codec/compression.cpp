#include "io/codec/compression.hpp"

#include <lz4.h>

#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace hast {

bool all_zero(const uint8_t* data, size_t n) {
  size_t i = 0;
  // Bytes up to word alignment, then 4 words per step, then the tail.
  while (i < n && (reinterpret_cast<uintptr_t>(data + i) % sizeof(uint64_t)) != 0) {
    if (data[i] != 0)
      return false;
    ++i;
  }
  for (; i + 4 * sizeof(uint64_t) <= n; i += 4 * sizeof(uint64_t)) {
    uint64_t w[4];
    std::memcpy(w, data + i, sizeof w);
    if ((w[0] | w[1] | w[2] | w[3]) != 0)
      return false;
  }
  for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t)) {
    uint64_t w;
    std::memcpy(&w, data + i, sizeof w);
    if (w != 0)
      return false;
  }
  for (; i < n; ++i)
    if (data[i] != 0)
      return false;
  return true;
}

std::optional<buffer_ptr> lz4_compress(const uint8_t* data, size_t n) {
  if (n == 0 || n > static_cast<size_t>(LZ4_MAX_INPUT_SIZE))
    return std::nullopt;
  // Worth it only if at least 1/8 smaller: the limit is the output capacity,
  // so LZ4 gives up early on incompressible data instead of finishing.
  const size_t limit = n - n / 8 - 1;
  if (limit == 0)
    return std::nullopt;
  auto out = make_buffer(limit);
  const int written = LZ4_compress_default(reinterpret_cast<const char*>(data),
                                           reinterpret_cast<char*>(out->data()),
                                           static_cast<int>(n), static_cast<int>(limit));
  if (written <= 0)
    return std::nullopt;
  out->truncate(static_cast<size_t>(written));
  return out;
}

result<buffer_ptr> lz4_decompress(const uint8_t* data, size_t n, size_t original) {
  if (n == 0 || n > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      original > static_cast<size_t>(std::numeric_limits<int>::max()))
    return status{errc::protocol_error,
                  fmt::format("lz4 payload of {} bytes for {} bytes of data is out of range", n,
                              original)};
  // An LZ4 block expands at most 255-fold (a match costs at least one byte
  // per 255 bytes it produces), so a larger claim is refused before its
  // buffer is allocated: a few bytes must not cost max_payload of memory.
  if (original / max_lz4_ratio > n)
    return status{errc::protocol_error,
                  fmt::format("lz4 payload of {} bytes cannot expand to {} bytes", n, original)};
  auto out = make_buffer(original);
  const int got = LZ4_decompress_safe(reinterpret_cast<const char*>(data),
                                      reinterpret_cast<char*>(out->data()), static_cast<int>(n),
                                      static_cast<int>(original));
  if (got < 0)
    return status{errc::protocol_error, "corrupt lz4 payload"};
  if (static_cast<size_t>(got) != original)
    return status{errc::protocol_error,
                  fmt::format("lz4 payload expands to {} bytes, the header says {}", got, original)};
  return out;
}

} // namespace hast
