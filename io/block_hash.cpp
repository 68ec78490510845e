#include "io/block_hash.hpp"

#include <fmt/format.h>

#include <xxhash.h>

#include <cstring>

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
  auto size = payload ? payload->size() : 0;
  if (size < 8)
    return status{errc::protocol_error,
                  fmt::format("verify reply of {} bytes (at least 8 expected)", size)};
  block_hashes h;
  h.block_size = get_u32(payload->data());
  auto count = get_u32(payload->data() + 4);
  if (h.block_size == 0)
    return status{errc::protocol_error, "verify reply with block size 0"};
  if (size != 8 + 8 * static_cast<uint64_t>(count))
    return status{errc::protocol_error,
                  fmt::format("verify reply of {} bytes for {} hashes", size, count)};
  h.hashes.resize(count);
  for (uint32_t i = 0; i < count; ++i)
    h.hashes[i] = get_u64(payload->data() + 8 + 8 * static_cast<size_t>(i));
  return h;
}

std::vector<std::pair<uint64_t, uint64_t>> differing_runs(const block_hashes& a,
                                                          const block_hashes& b) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  auto n = std::max(a.hashes.size(), b.hashes.size());
  for (uint64_t i = 0; i < n; ++i) {
    bool same = i < a.hashes.size() && i < b.hashes.size() && a.hashes[i] == b.hashes[i];
    if (same)
      continue;
    if (!runs.empty() && runs.back().first + runs.back().second == i)
      ++runs.back().second;
    else
      runs.emplace_back(i, 1);
  }
  return runs;
}

} // namespace hast
