#include "io/codec/checksum.hpp"

#include "io/codec/crc32c.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <sys/random.h>

namespace hast {

namespace {

struct crc32_table {
  uint32_t entries[256];
  constexpr crc32_table() : entries{} {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      entries[i] = c;
    }
  }
};

constexpr crc32_table crc_table{};

void put_le32(uint8_t* out, uint32_t v) {
  out[0] = static_cast<uint8_t>(v);
  out[1] = static_cast<uint8_t>(v >> 8);
  out[2] = static_cast<uint8_t>(v >> 16);
  out[3] = static_cast<uint8_t>(v >> 24);
}

} // namespace

uint32_t crc32_ieee(const void* data, size_t n, uint32_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~seed;
  for (size_t i = 0; i < n; ++i)
    c = crc_table.entries[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

std::array<uint8_t, 32> sha256(const void* data, size_t n) {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  // EVP_Digest is the one-shot interface of OpenSSL 1.1 and 3 alike; it
  // only fails on allocation failure, which we treat like operator new.
  if (EVP_Digest(data, n, out.data(), &len, EVP_sha256(), nullptr) != 1 || len != out.size())
    throw std::bad_alloc{};
  return out;
}

std::array<uint8_t, 32> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  static const uint8_t empty = 0;
  const uint8_t* k = key.empty() ? &empty : key.data();
  const uint8_t* d = data.empty() ? &empty : data.data();
  if (HMAC(EVP_sha256(), k, static_cast<int>(key.size()), d, data.size(), out.data(), &len) ==
        nullptr ||
      len != out.size())
    throw std::bad_alloc{};
  return out;
}

void compute_digest(checksum_kind kind, const void* data, size_t n, std::array<uint8_t, 32>& out) {
  out.fill(0);
  switch (kind) {
    case checksum_kind::none:
      return;
    case checksum_kind::crc32:
      put_le32(out.data(), crc32_ieee(data, n));
      return;
    case checksum_kind::crc32c:
      put_le32(out.data(), crc32c(data, n));
      return;
    case checksum_kind::sha256:
      out = sha256(data, n);
      return;
  }
}

bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size())
    return false;
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff = diff | static_cast<uint8_t>(a[i] ^ b[i]);
  return diff == 0;
}

std::array<uint8_t, 32> random_nonce() {
  std::array<uint8_t, 32> out{};
  size_t filled = 0;
  while (filled < out.size()) {
    const ssize_t n = ::getrandom(out.data() + filled, out.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      // Without a CSPRNG the challenge is worthless; there is no safe fallback.
      throw std::runtime_error(std::string("getrandom: ") + std::strerror(errno));
    }
    filled += static_cast<size_t>(n);
  }
  return out;
}

} // namespace hast
