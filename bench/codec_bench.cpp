// Microbenchmarks of the byte-level code on hast's data path: peer frame
// headers, payload sealing/opening (checksums, LZ4), NBD request decoding,
// the checksums on their own, and activemap bookkeeping. Built as
// `hast_microbench` (Google Benchmark); run e.g.
//   build/bench/hast_microbench --benchmark_min_time=0.2
// Numbers are per call on one core; they bound what these layers can cost
// per I/O, they say nothing about the daemon's end-to-end throughput
// (bench/run.py measures that).

#include "io/storage/activemap.hpp"
#include "io/codec/checksum.hpp"
#include "io/codec/compression.hpp"
#include "io/codec/crc32c.hpp"
#include "io/net/nbd_protocol.hpp"
#include "io/net/peer_protocol.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using hast::buffer_ptr;
using hast::checksum_kind;
using hast::compression_kind;

enum class content { random, text, zeros };

std::vector<uint8_t> make_data(size_t n, content kind) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(42);
  switch (kind) {
  case content::random:
    for (auto& b : v)
      b = static_cast<uint8_t>(rng());
    break;
  case content::text: {
    // Log-like text: compresses about 3-4x with LZ4.
    static const char* words[] = {"resource", "shared", "primary", "secondary", "write", "offset",
                                  "length",   "extent", "complete", "degraded", "sync", "the", "of"};
    size_t i = 0;
    while (i < n) {
      std::string w = words[rng() % 13];
      w += (rng() % 7 == 0) ? "\n" : " ";
      for (char c : w) {
        if (i == n)
          break;
        v[i++] = static_cast<uint8_t>(c);
      }
    }
    break;
  }
  case content::zeros:
    break;
  }
  return v;
}

buffer_ptr make_buffer_from(const std::vector<uint8_t>& src) {
  auto b = hast::make_buffer(src.size());
  std::memcpy(b->data(), src.data(), src.size());
  return b;
}

// --- peer headers ------------------------------------------------------------------------

hast::peer::header sample_header() {
  hast::peer::header h;
  h.type = hast::peer::msg_type::write;
  h.flags = hast::peer::flag_memsync;
  h.seq = 123456;
  h.offset = 7 << 20;
  h.length = 4096;
  h.payload_length = 4096;
  h.checksum = checksum_kind::crc32c;
  h.compression = compression_kind::none;
  h.digest[0] = 0xab;
  return h;
}

void BM_PeerHeaderEncode(benchmark::State& state) {
  auto h = sample_header();
  for (auto _ : state) {
    h.seq++;
    auto bytes = hast::peer::encode_header(h);
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerHeaderEncode);

void BM_PeerHeaderDecode(benchmark::State& state) {
  auto bytes = hast::peer::encode_header(sample_header());
  for (auto _ : state) {
    auto h = hast::peer::decode_header(std::span<const uint8_t, hast::peer::header_size>(bytes));
    if (!h)
      state.SkipWithError("decode_header failed");
    benchmark::DoNotOptimize(h);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerHeaderDecode);

// --- seal / open --------------------------------------------------------------------------

struct codec_case {
  const char* name;
  compression_kind compression;
  checksum_kind checksum;
  content data;
};

const codec_case cases[] = {
    {"none/crc32c/random", compression_kind::none, checksum_kind::crc32c, content::random},
    {"none/crc32/random", compression_kind::none, checksum_kind::crc32, content::random},
    {"none/sha256/random", compression_kind::none, checksum_kind::sha256, content::random},
    {"lz4/crc32c/text", compression_kind::lz4, checksum_kind::crc32c, content::text},
    {"lz4/crc32c/random", compression_kind::lz4, checksum_kind::crc32c, content::random},
    {"hole/none/zeros", compression_kind::hole, checksum_kind::none, content::zeros},
};

// Arguments: payload size, index into `cases`.
void BM_SealPayload(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const auto& c = cases[state.range(1)];
  state.SetLabel(c.name);
  auto src = make_buffer_from(make_data(size, c.data));
  for (auto _ : state) {
    hast::peer::header h;
    h.type = hast::peer::msg_type::write;
    buffer_ptr data = src;  // seal may replace it with the compressed form
    auto st = hast::peer::seal_payload(h, data, c.compression, c.checksum);
    if (!st)
      state.SkipWithError("seal_payload failed");
    benchmark::DoNotOptimize(data);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_OpenPayload(benchmark::State& state) {
  const auto size = static_cast<size_t>(state.range(0));
  const auto& c = cases[state.range(1)];
  auto src = make_buffer_from(make_data(size, c.data));
  hast::peer::header h;
  h.type = hast::peer::msg_type::write;
  buffer_ptr wire = src;
  if (!hast::peer::seal_payload(h, wire, c.compression, c.checksum)) {
    state.SkipWithError("seal_payload failed");
    return;
  }
  state.SetLabel(std::string(c.name) + " wire=" + std::to_string(h.payload_length));
  for (auto _ : state) {
    auto out = hast::peer::open_payload(h, wire);
    if (!out)
      state.SkipWithError("open_payload failed");
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void codec_args(benchmark::internal::Benchmark* b) {
  for (int64_t size : {4096, 1 << 20})
    for (int64_t i = 0; i < static_cast<int64_t>(std::size(cases)); ++i)
      b->Args({size, i});
}
BENCHMARK(BM_SealPayload)->Apply(codec_args);
BENCHMARK(BM_OpenPayload)->Apply(codec_args);

// --- NBD requests ---------------------------------------------------------------------------

void BM_NbdDecodeValidate(benchmark::State& state) {
  hast::nbd::export_info info;
  info.size = 1ull << 30;
  const auto flags = hast::nbd::transmission_flags(info);
  hast::nbd::request_header rq;
  rq.type = hast::nbd::cmd_write;
  rq.cookie = 99;
  rq.offset = 1 << 20;
  rq.length = 4096;
  auto enc = hast::nbd::encode_request(rq);
  uint8_t bytes[hast::nbd::request_size];
  std::memcpy(bytes, enc.data(), sizeof bytes);
  for (auto _ : state) {
    auto r = hast::nbd::decode_request(bytes);
    if (!r)
      state.SkipWithError("decode_request failed");
    auto err = hast::nbd::validate(*r, info.size, flags);
    benchmark::DoNotOptimize(err);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NbdDecodeValidate);

void BM_NbdEncodeReply(benchmark::State& state) {
  uint64_t cookie = 0;
  for (auto _ : state) {
    auto r = hast::nbd::encode_simple_reply(0, ++cookie);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NbdEncodeReply);

// --- checksums ----------------------------------------------------------------------------

void BM_Crc32c(benchmark::State& state) {
  auto d = make_data(static_cast<size_t>(state.range(0)), content::random);
  for (auto _ : state)
    benchmark::DoNotOptimize(hast::crc32c(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_Crc32c)->Arg(80)->Arg(4096)->Arg(1 << 20);

void BM_Crc32cPortable(benchmark::State& state) {
  auto d = make_data(static_cast<size_t>(state.range(0)), content::random);
  for (auto _ : state)
    benchmark::DoNotOptimize(hast::detail::crc32c_portable(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_Crc32cPortable)->Arg(4096)->Arg(1 << 20);

void BM_Crc32Ieee(benchmark::State& state) {
  auto d = make_data(static_cast<size_t>(state.range(0)), content::random);
  for (auto _ : state)
    benchmark::DoNotOptimize(hast::crc32_ieee(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_Crc32Ieee)->Arg(4096)->Arg(1 << 20);

void BM_Sha256(benchmark::State& state) {
  auto d = make_data(static_cast<size_t>(state.range(0)), content::random);
  for (auto _ : state)
    benchmark::DoNotOptimize(hast::sha256(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_Sha256)->Arg(4096)->Arg(1 << 20);

void BM_AllZero(benchmark::State& state) {
  auto d = make_data(static_cast<size_t>(state.range(0)), content::zeros);
  for (auto _ : state)
    benchmark::DoNotOptimize(hast::all_zero(d.data(), d.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
}
BENCHMARK(BM_AllZero)->Arg(4096)->Arg(1 << 20);

// --- activemap -----------------------------------------------------------------------------

constexpr uint64_t am_datasize = 64ull << 30;  // 64 GiB: 32768 extents of 2 MiB
constexpr uint32_t am_extent = 2u << 20;
constexpr uint32_t am_keepdirty = 64;

// One 4k write_start + write_complete on the same extent: the hot path
// (the extent is in the keepdirty set, the on-disk image does not change).
void BM_ActivemapHotExtent(benchmark::State& state) {
  hast::activemap am(am_datasize, am_extent, am_keepdirty);
  uint64_t off = 0;
  for (auto _ : state) {
    bool a = am.write_start(off, 4096);
    bool b = am.write_complete(off, 4096);
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(b);
    off = (off + 4096) % am_extent;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ActivemapHotExtent);

// Random 4k writes over `range` extents: with range > keepdirty most writes
// enter a new extent and evict one (the image changes: a metadata write).
void BM_ActivemapRandom(benchmark::State& state) {
  hast::activemap am(am_datasize, am_extent, am_keepdirty);
  const auto range = static_cast<uint64_t>(state.range(0));
  std::mt19937_64 rng(7);
  uint64_t changed = 0;
  for (auto _ : state) {
    uint64_t off = (rng() % range) * am_extent + (rng() % (am_extent / 4096)) * 4096;
    changed += am.write_start(off, 4096);
    changed += am.write_complete(off, 4096);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["image_changes_per_write"] =
      benchmark::Counter(static_cast<double>(changed) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_ActivemapRandom)->Arg(32)->Arg(128)->Arg(32768);

// 32 writes in flight on distinct extents, completed in order: QD32.
void BM_ActivemapQd32(benchmark::State& state) {
  hast::activemap am(am_datasize, am_extent, am_keepdirty);
  std::mt19937_64 rng(9);
  std::vector<uint64_t> inflight;
  for (int i = 0; i < 32; ++i) {
    inflight.push_back((rng() % 128) * am_extent);
    am.write_start(inflight.back(), 4096);
  }
  size_t i = 0;
  for (auto _ : state) {
    am.write_complete(inflight[i], 4096);
    inflight[i] = (rng() % 128) * am_extent;
    benchmark::DoNotOptimize(am.write_start(inflight[i], 4096));
    i = (i + 1) % inflight.size();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ActivemapQd32);

void BM_ActivemapBitmap(benchmark::State& state) {
  hast::activemap am(am_datasize, am_extent, am_keepdirty);
  for (uint64_t e = 0; e < 64; ++e)
    am.write_start(e * 7 * am_extent, 4096);
  for (auto _ : state)
    benchmark::DoNotOptimize(am.bitmap());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * am.bitmap_bytes()));
}
BENCHMARK(BM_ActivemapBitmap);

} // namespace
