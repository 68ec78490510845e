#include "io/codec/block_hash.hpp"

#include <fmt/format.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace hast {

namespace {

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

/// Runs of i in [0, max(na, nb)) where !(i < na && i < nb && same(i)).
template <class Same>
std::vector<std::pair<uint64_t, uint64_t>> runs_where_not(size_t na, size_t nb, Same same) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  auto n = std::max(na, nb);
  for (uint64_t i = 0; i < n; ++i) {
    if (i < na && i < nb && same(i))
      continue;
    if (!runs.empty() && runs.back().first + runs.back().second == i)
      ++runs.back().second;
    else
      runs.emplace_back(i, 1);
  }
  return runs;
}

/// The header both wire forms share: block size and count, checked
/// against the payload's size for `width` bytes per hash.
result<std::pair<uint32_t, uint32_t>> decode_prefix(const buffer_ptr& payload, size_t width) {
  auto size = payload ? payload->size() : 0;
  if (size < 8)
    return status{errc::protocol_error,
                  fmt::format("verify reply of {} bytes (at least 8 expected)", size)};
  auto block_size = get_u32(payload->data());
  auto count = get_u32(payload->data() + 4);
  if (block_size == 0)
    return status{errc::protocol_error, "verify reply with block size 0"};
  if (size != 8 + width * static_cast<uint64_t>(count))
    return status{errc::protocol_error,
                  fmt::format("verify reply of {} bytes for {} hashes of {} bytes", size, count,
                              width)};
  return std::pair{block_size, count};
}

} // namespace

block_hashes hash_blocks(std::span<const uint8_t> data, uint32_t block_size) {
  block_hashes out;
  out.block_size = block_size;
  out.hashes.reserve((data.size() + block_size - 1) / block_size);
  for (size_t at = 0; at < data.size(); at += block_size) {
    auto n = std::min<size_t>(block_size, data.size() - at);
    out.hashes.push_back(XXH3_64bits(data.data() + at, n));
  }
  return out;
}

buffer_ptr encode_block_hashes(const block_hashes& h) {
  auto out = make_buffer(8 + 8 * h.hashes.size());
  put_u32(out->data(), h.block_size);
  put_u32(out->data() + 4, static_cast<uint32_t>(h.hashes.size()));
  for (size_t i = 0; i < h.hashes.size(); ++i)
    put_u64(out->data() + 8 + 8 * i, h.hashes[i]);
  return out;
}

result<block_hashes> decode_block_hashes(const buffer_ptr& payload) {
  auto prefix = decode_prefix(payload, 8);
  if (!prefix)
    return prefix.error();
  block_hashes h;
  h.block_size = prefix->first;
  h.hashes.resize(prefix->second);
  for (uint32_t i = 0; i < prefix->second; ++i)
    h.hashes[i] = get_u64(payload->data() + 8 + 8 * static_cast<size_t>(i));
  return h;
}

std::vector<std::pair<uint64_t, uint64_t>> differing_runs(const block_hashes& a,
                                                          const block_hashes& b) {
  return runs_where_not(a.hashes.size(), b.hashes.size(),
                        [&](size_t i) { return a.hashes[i] == b.hashes[i]; });
}

block_digests digest_blocks(std::span<const uint8_t> data, uint32_t block_size) {
  block_digests out;
  out.block_size = block_size;
  out.digests.resize((data.size() + block_size - 1) / block_size);
  size_t i = 0;
  for (size_t at = 0; at < data.size(); at += block_size, ++i) {
    auto n = std::min<size_t>(block_size, data.size() - at);
    unsigned len = 0;
    // EVP_Digest is OpenSSL's one-shot interface (SHA extensions where the
    // CPU has them). It fails only without memory.
    if (EVP_Digest(data.data() + at, n, out.digests[i].data(), &len, EVP_sha256(), nullptr) != 1
        || len != out.digests[i].size())
      throw std::bad_alloc();
  }
  return out;
}

buffer_ptr encode_block_digests(const block_digests& d) {
  auto out = make_buffer(8 + 32 * d.digests.size());
  put_u32(out->data(), d.block_size);
  put_u32(out->data() + 4, static_cast<uint32_t>(d.digests.size()));
  for (size_t i = 0; i < d.digests.size(); ++i)
    std::memcpy(out->data() + 8 + 32 * i, d.digests[i].data(), 32);
  return out;
}

result<block_digests> decode_block_digests(const buffer_ptr& payload) {
  auto prefix = decode_prefix(payload, 32);
  if (!prefix)
    return prefix.error();
  block_digests d;
  d.block_size = prefix->first;
  d.digests.resize(prefix->second);
  for (uint32_t i = 0; i < prefix->second; ++i)
    std::memcpy(d.digests[i].data(), payload->data() + 8 + 32 * static_cast<size_t>(i), 32);
  return d;
}

std::vector<std::pair<uint64_t, uint64_t>> differing_runs(const block_digests& a,
                                                          const block_digests& b) {
  return runs_where_not(a.digests.size(), b.digests.size(),
                        [&](size_t i) { return a.digests[i] == b.digests[i]; });
}

} // namespace hast
