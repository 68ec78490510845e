// The activemap as a resource builds it from what it decoded: the metadata's
// datasize, extent size and keepdirty, then merge() of a bitmap that came
// from the disk or from the peer's hello (any length), then the calls that
// walk it: next_sync/clear_sync during a resync, writes starting and
// completing, group commits. Invariants are checked after every step.
//
// Input: datasize in 4 KiB blocks (u32 LE, taken modulo 16 MiB so that a
// run stays fast; the map's logic does not depend on its size), extent size
// as a shift of 4 KiB (u8), keepdirty (u8), bitmap length (u16 LE) and the
// bitmap, then
// operations of 9 bytes each: kind (u8), offset and length (u32 LE each, in
// 512-byte units).

#include "io/storage/activemap.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

#include <bit>

using hast::activemap;
using hast::fuzz::check;

namespace {

constexpr uint64_t block = 4096;

void check_image(const activemap& map) {
  const auto image = map.bitmap();
  check(image.size() == map.bitmap_bytes());
  uint64_t set = 0;
  for (auto byte : image)
    set += static_cast<uint64_t>(std::popcount(byte));
  check(set == map.dirty_extents() && set <= map.extents());
  if (map.extents() % 8 != 0 && !image.empty())
    check((image.back() >> (map.extents() % 8)) == 0);
  // sync_extents() counts what next_sync() walks.
  uint64_t walked = 0;
  for (auto e = map.next_sync(0); e; e = map.next_sync(*e + 1)) {
    check(*e < map.extents() && map.needs_sync(*e) && map.is_dirty(*e));
    ++walked;
  }
  check(walked == map.sync_extents());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  hast::fuzz::fuzz_bytes in{data, size};
  const uint64_t blocks = in.take_le<uint32_t>() % (1u << 12); // up to 16 MiB
  const uint32_t extent_size = static_cast<uint32_t>(block << (in.take_le<uint8_t>() % 12));
  const uint32_t keepdirty = in.take_le<uint8_t>();
  const uint64_t datasize = blocks * block;
  activemap map{datasize, extent_size, keepdirty};
  check(map.extents() == (datasize + extent_size - 1) / extent_size);

  const auto bitmap_length = in.take_le<uint16_t>();
  const auto bitmap = in.take(std::min<std::size_t>(bitmap_length, in.size()));
  map.merge(*bitmap);
  check_image(map);

  bool committing = false;
  while (in.size() >= 9) {
    const auto kind = in.take_le<uint8_t>();
    const uint64_t offset = uint64_t{in.take_le<uint32_t>()} * 512;
    const uint64_t length = uint64_t{in.take_le<uint32_t>()} * 512;
    switch (kind % 9) {
    case 0:
      map.write_start(offset, length);
      break;
    case 1:
      map.write_complete(offset, length);
      break;
    case 2:
      map.mark_sync(offset, length);
      break;
    case 3:
      if (auto e = map.next_sync(map.extent_of(offset)))
        map.clear_sync(*e);
      break;
    case 4:
      if (!committing) {
        check(map.begin_commit() == map.bitmap());
        committing = true;
      }
      break;
    case 5:
      if (committing) {
        map.end_commit((length & 512) != 0);
        committing = false;
      }
      break;
    case 6:
      map.forget_keepdirty();
      break;
    case 7:
      map.merge(*bitmap);
      break;
    case 8:
      // The invariant writes rely on: once the image holding a started
      // write is on disk, the write is durable() and may be issued.
      if (!committing) {
        map.write_start(offset, length);
        map.begin_commit();
        map.end_commit(true);
        check(map.durable(offset, length));
        map.write_complete(offset, length);
      }
      break;
    }
    check_image(map);
  }
  return 0;
}
