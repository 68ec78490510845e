#include "io/storage/metadata.hpp"

#include "io/codec/buffer.hpp"
#include "io/codec/crc32c.hpp"
#include "io/codec/size.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <optional>

#include <sys/random.h>

namespace hast {

namespace {

// Header field offsets (docs/METADATA.md). All integers little-endian.
constexpr char magic[8] = {'H', 'A', 'S', 'T', 'M', 'E', 'T', 'A'};
constexpr size_t off_magic = 0;
constexpr size_t off_version = 8;
// 12: reserved u32, zero
constexpr size_t off_sequence = 16;
constexpr size_t off_resource = 24; // 128 bytes, NUL-padded
constexpr size_t resource_field = 128;
constexpr size_t off_datasize = 152;
constexpr size_t off_extent_size = 160;
constexpr size_t off_keepdirty = 164;
constexpr size_t off_data_offset = 168;
constexpr size_t off_resuid = 176;
constexpr size_t off_localcnt = 184;
constexpr size_t off_remotecnt = 192;
constexpr size_t off_prevrole = 200;
constexpr size_t off_flags = 201;  // u8: flag_local_stale; other bits zero
constexpr uint8_t flag_local_stale = 1;
// 202..203: reserved, zero
constexpr size_t off_bitmap_bytes = 204;
constexpr size_t off_crc = 208;
// 212..4095: reserved, zero (covered by the checksum)

constexpr uint64_t block = 4096;

uint64_t round_up(uint64_t x, uint64_t to) {
  return (x + to - 1) / to * to;
}

template <class T> void put(uint8_t *p, size_t off, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    p[off + i] = static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i));
}

template <class T> T get(const uint8_t *p, size_t off) {
  uint64_t value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value |= static_cast<uint64_t>(p[off + i]) << (8 * i);
  return static_cast<T>(value);
}

// On-disk role codes are HAST's HAST_ROLE_* values, independent of the enum.
uint8_t role_code(role r) {
  switch (r) {
  case role::init:
    return 1;
  case role::primary:
    return 2;
  case role::secondary:
    return 3;
  }
  return 1;
}

std::optional<role> role_from_code(uint8_t code) {
  switch (code) {
  case 1:
    return role::init;
  case 2:
    return role::primary;
  case 3:
    return role::secondary;
  default:
    return std::nullopt;
  }
}

const char *role_name(role r) {
  switch (r) {
  case role::init:
    return "init";
  case role::primary:
    return "primary";
  case role::secondary:
    return "secondary";
  }
  return "init";
}

bool valid_extent_size(uint64_t es) {
  return es >= block && es % block == 0 && std::has_single_bit(es);
}

// Written so that no sum can wrap, whatever a damaged or crafted header says.
uint64_t bitmap_bytes_for(uint64_t datasize, uint64_t extent_size) {
  auto extents = datasize / extent_size + (datasize % extent_size != 0 ? 1 : 0);
  return extents / 8 + (extents % 8 != 0 ? 1 : 0);
}

uint64_t slot_size_for(uint64_t bitmap_bytes) {
  return round_up(metadata_header_size + bitmap_bytes, block);
}

// The largest slot a read looks for when slot A is destroyed
// (scan_for_slot_b) on a provider of `size` bytes: the one 4 KiB extents
// over the whole provider would need, and at least a slot with a 1 MiB
// bitmap (16 TiB with 2 MiB extents), so that a scan of a small provider
// reads at most about 1 MiB. Create never makes a larger one.
constexpr uint64_t scan_floor_slot = metadata_header_size + (1 << 20);
uint64_t largest_slot(uint64_t size) {
  return std::max(slot_size_for(bitmap_bytes_for(size, block)), scan_floor_slot);
}

// The largest data size whose bitmap fits in a slot of `slot` bytes.
uint64_t ceiling_for(uint64_t slot, uint64_t extent_size) {
  if (slot < metadata_header_size || extent_size == 0)
    return 0;
  // The header's bitmap_bytes field is 32 bits.
  auto room = std::min<uint64_t>(slot - metadata_header_size, UINT32_MAX);
  // Extents are counted rounded up, so every extent of the last byte may be
  // partial; the data size stays a multiple of 4096.
  auto extents = room * 8;
  if (extents > UINT64_MAX / extent_size)
    return UINT64_MAX / block * block;
  return extents * extent_size;
}

bool has_magic(const uint8_t *header) {
  return std::memcmp(header + off_magic, magic, sizeof magic) == 0;
}

status corrupt(std::string why) {
  return {errc::bad_metadata, std::move(why)};
}

// Reads `len` bytes at `off` into a fresh aligned buffer.
result<buffer_ptr> read_bytes(const provider &prov, uint64_t off, uint64_t len) {
  auto buf = make_buffer(static_cast<size_t>(len));
  if (auto st = prov.read(buf->data(), buf->size(), off); !st)
    return st;
  return buf;
}

// Writes one slot, padded with zeros to its slot size.
status write_slot(const provider &prov, const metadata &md, uint64_t sequence) {
  auto w = prepare_slot_write(md, sequence);
  if (!w)
    return {w.error().code(), prov.path() + ": " + w.error().message()};
  return prov.write(w->bytes->data(), w->bytes->size(), w->offset);
}

// One slot as found on the provider: decoded, or why it is unusable.
struct slot_state {
  bool magic = false;
  bool unreadable = false;  // its header could not be read (an I/O error)
  std::optional<metadata> md;
  std::string problem;
};

slot_state examine_slot(const provider &prov, uint64_t position, uint64_t index) {
  slot_state s;
  if (position + block > prov.size()) {
    s.problem = "beyond the end of the provider";
    return s;
  }
  auto header = read_bytes(prov, position, block);
  if (!header) {
    s.problem = header.error().message();
    s.unreadable = header.error().code() == errc::io_error;
    return s;
  }
  s.magic = has_magic((*header)->data());
  if (!s.magic) {
    s.problem = "no magic";
    return s;
  }
  auto bb = get<uint32_t>((*header)->data(), off_bitmap_bytes);
  auto len = metadata_header_size + bb;
  if (position + len > prov.size()) {
    s.problem = fmt::format("its bitmap of {} bytes runs past the end of the provider", bb);
    return s;
  }
  result<buffer_ptr> whole = std::move(*header);
  if (len != block)
    whole = read_bytes(prov, position, len);
  if (!whole) {
    s.problem = whole.error().message();
    return s;
  }
  auto decoded = decode_slot({(*whole)->data(), (*whole)->size()});
  if (!decoded) {
    s.problem = decoded.error().message();
    return s;
  }
  if (decoded->sequence % 2 != index) {
    s.problem = fmt::format("sequence {} does not belong in this slot", decoded->sequence);
    return s;
  }
  // decode_slot checked that the slots hold the bitmap; slot B starts
  // where the slot size (data_offset / 2) says.
  if (index == 1 && decoded->data_offset != 2 * position) {
    s.problem = "its layout does not match its position";
    return s;
  }
  s.md = std::move(*decoded);
  return s;
}

// Where slot B may be, from slot A's raw header (its layout fields never
// change after create, so they are usable even when A's checksum fails).
std::vector<uint64_t> slot_b_candidates(const provider &prov) {
  std::vector<uint64_t> out;
  auto header = read_bytes(prov, 0, block);
  if (!header || !has_magic((*header)->data()))
    return out;
  const uint8_t *h = (*header)->data();
  auto add = [&](uint64_t c) {
    if (c >= block && c % block == 0 && 2 * c <= prov.size()
        && std::find(out.begin(), out.end(), c) == out.end())
      out.push_back(c);
  };
  add(slot_size_for(get<uint32_t>(h, off_bitmap_bytes)));
  add(get<uint64_t>(h, off_data_offset) / 2);
  auto es = get<uint32_t>(h, off_extent_size);
  if (valid_extent_size(es))
    add(slot_size_for(bitmap_bytes_for(get<uint64_t>(h, off_datasize), es)));
  return out;
}

// The last resort when slot A is unreadable: look for a self-consistent
// slot B at every 4 KiB boundary where one can be for this provider size.
std::optional<slot_state> scan_for_slot_b(const provider &prov,
                                          const std::vector<uint64_t> &tried) {
  auto limit = std::min(prov.size() / 2, largest_slot(prov.size()));
  constexpr uint64_t chunk = 1 << 20;
  for (uint64_t base = block; base <= limit; base += chunk) {
    auto len = std::min(chunk, round_up(limit + 1, block) - base);
    len = std::min(len, (prov.size() - base) / block * block);
    if (len == 0)
      break;
    auto buf = read_bytes(prov, base, len);
    if (!buf)
      return std::nullopt;
    for (uint64_t at = 0; at < len; at += block) {
      auto position = base + at;
      if (position > limit || !has_magic((*buf)->data() + at)
          || std::find(tried.begin(), tried.end(), position) != tried.end())
        continue;
      auto s = examine_slot(prov, position, 1);
      if (s.md)
        return s;
    }
  }
  return std::nullopt;
}

} // namespace

result<layout> compute_layout(uint64_t mediasize, uint32_t extent_size, uint64_t maxsize) {
  if (!valid_extent_size(extent_size))
    return status{
        errc::invalid_argument,
        fmt::format("extent size {} is not a power-of-two multiple of 4096 bytes", extent_size)};
  if (maxsize != 0 && maxsize < mediasize)
    return status{errc::invalid_argument,
                  fmt::format("the maximum size {} ({}) is smaller than the media size {} ({})",
                              maxsize, humanize(maxsize), mediasize, humanize(mediasize))};
  // The slots for the whole media (an upper bound on today's bitmap), and
  // the slots with room to grow: for `maxsize`, or by default for
  // default_room_factor times the media, where a read can still find them
  // (largest_slot) and the media still holds them.
  auto upper_slot = slot_size_for(bitmap_bytes_for(mediasize, extent_size));
  auto cap = std::max(upper_slot, largest_slot(mediasize));
  uint64_t room_slot = upper_slot;
  if (maxsize != 0) {
    room_slot = std::max(upper_slot, slot_size_for(bitmap_bytes_for(maxsize, extent_size)));
    if (room_slot > cap || room_slot - metadata_header_size > UINT32_MAX) {
      auto most = std::min<uint64_t>(cap, (metadata_header_size + UINT32_MAX) / block * block);
      auto reach = ceiling_for(most, extent_size);
      return status{errc::invalid_argument,
                    fmt::format("a maximum size of {} ({}) needs metadata slots of {} bytes; on "
                                "{} ({}) of media with extents of {} they can be at most {} "
                                "bytes, for a maximum size of {} ({}): give a smaller maximum "
                                "size or a larger extent size",
                                maxsize, humanize(maxsize), room_slot, mediasize,
                                humanize(mediasize), humanize(extent_size), most, reach,
                                humanize(reach))};
    }
  } else {
    auto want = mediasize > UINT64_MAX / default_room_factor ? UINT64_MAX
                                                             : mediasize * default_room_factor;
    auto most = std::max(upper_slot, (metadata_header_size + UINT32_MAX) / block * block);
    room_slot = std::min({slot_size_for(bitmap_bytes_for(want, extent_size)), cap, most});
    // The default room never makes a media too small that fits without it.
    if (room_slot < upper_slot || mediasize / 2 < room_slot
        || mediasize - 2 * room_slot < extent_size)
      room_slot = upper_slot;
  }
  auto needed = 2 * room_slot + extent_size;
  if (mediasize < needed)
    return status{errc::invalid_argument,
                  fmt::format("media size {} ({}) is too small: at least {} ({}) are needed for "
                              "two metadata slots and one extent",
                              mediasize, humanize(mediasize), needed, humanize(needed))};
  layout l;
  if (maxsize == 0 && room_slot == upper_slot) {
    // No room beyond the rounding: as hast always laid it out, the bitmap
    // for the data area that is left. At most a few blocks stay unused at
    // the end.
    l.datasize = (mediasize - 2 * upper_slot) / block * block;
    l.slot_size = slot_size_for(bitmap_bytes_for(l.datasize, extent_size));
  } else {
    l.slot_size = room_slot;
    l.datasize = (mediasize - 2 * room_slot) / block * block;
  }
  l.extents = (l.datasize + extent_size - 1) / extent_size;
  l.bitmap_bytes = (l.extents + 7) / 8;
  l.data_offset = 2 * l.slot_size;
  l.ceiling = ceiling_for(l.slot_size, extent_size);
  return l;
}

std::string encode_slot(const metadata &md) {
  std::string out(metadata_header_size + md.bitmap.size(), '\0');
  auto p = reinterpret_cast<uint8_t *>(out.data());
  std::memcpy(p + off_magic, magic, sizeof magic);
  put<uint32_t>(p, off_version, metadata_version);
  put<uint64_t>(p, off_sequence, md.sequence);
  std::memcpy(p + off_resource, md.resource.data(),
              std::min(md.resource.size(), max_resource_name));
  put<uint64_t>(p, off_datasize, md.datasize);
  put<uint32_t>(p, off_extent_size, md.extent_size);
  put<uint32_t>(p, off_keepdirty, md.keepdirty);
  put<uint64_t>(p, off_data_offset, md.data_offset);
  put<uint64_t>(p, off_resuid, md.resuid);
  put<uint64_t>(p, off_localcnt, md.localcnt);
  put<uint64_t>(p, off_remotecnt, md.remotecnt);
  put<uint8_t>(p, off_prevrole, role_code(md.prevrole));
  put<uint8_t>(p, off_flags, md.local_stale ? flag_local_stale : 0);
  put<uint32_t>(p, off_bitmap_bytes, static_cast<uint32_t>(md.bitmap.size()));
  if (!md.bitmap.empty())
    std::memcpy(p + metadata_header_size, md.bitmap.data(), md.bitmap.size());
  put<uint32_t>(p, off_crc, crc32c(p, out.size()));
  return out;
}

result<metadata> decode_slot(std::span<const uint8_t> bytes) {
  if (bytes.size() < metadata_header_size)
    return bytes.size() >= sizeof magic && has_magic(bytes.data())
               ? corrupt("the slot is truncated")
               : status{errc::not_created, "no hast metadata"};
  const uint8_t *p = bytes.data();
  if (!has_magic(p))
    return status{errc::not_created, "no hast metadata"};
  auto version = get<uint32_t>(p, off_version);
  if (version != metadata_version)
    return corrupt(fmt::format("unknown metadata format version {} (this hast reads {})", version,
                               metadata_version));
  auto bb = get<uint32_t>(p, off_bitmap_bytes);
  if (bytes.size() < metadata_header_size + bb)
    return corrupt(fmt::format("the slot is shorter than its {}-byte bitmap", bb));
  auto stored = get<uint32_t>(p, off_crc);
  std::vector<uint8_t> header(p, p + metadata_header_size);
  put<uint32_t>(header.data(), off_crc, 0);
  auto computed = crc32c(header.data(), header.size());
  computed = crc32c(p + metadata_header_size, bb, computed);
  if (stored != computed)
    return corrupt(
        fmt::format("checksum mismatch (stored {:08x}, computed {:08x})", stored, computed));

  metadata md;
  auto name = reinterpret_cast<const char *>(p + off_resource);
  auto name_len = static_cast<size_t>(std::find(name, name + resource_field, '\0') - name);
  if (name_len > max_resource_name || name_len == 0)
    return corrupt("the resource name is empty or not terminated");
  md.resource.assign(name, name_len);
  md.sequence = get<uint64_t>(p, off_sequence);
  md.datasize = get<uint64_t>(p, off_datasize);
  md.extent_size = get<uint32_t>(p, off_extent_size);
  md.keepdirty = get<uint32_t>(p, off_keepdirty);
  md.data_offset = get<uint64_t>(p, off_data_offset);
  md.resuid = get<uint64_t>(p, off_resuid);
  md.localcnt = get<uint64_t>(p, off_localcnt);
  md.remotecnt = get<uint64_t>(p, off_remotecnt);
  auto r = role_from_code(get<uint8_t>(p, off_prevrole));
  if (!r)
    return corrupt(fmt::format("unknown previous role {}", get<uint8_t>(p, off_prevrole)));
  md.prevrole = *r;
  auto flags = get<uint8_t>(p, off_flags);
  if ((flags & ~flag_local_stale) != 0)
    return corrupt(fmt::format("unknown flags {:#x}", flags));
  md.local_stale = (flags & flag_local_stale) != 0;
  if (!valid_extent_size(md.extent_size))
    return corrupt(fmt::format("invalid extent size {}", md.extent_size));
  // hast creates only whole 4 KiB blocks of data; a size that is not one
  // (near 2^64 in particular) was never written by it.
  if (md.datasize == 0 || md.datasize % block != 0)
    return corrupt(fmt::format("data size {} is not a positive multiple of 4096", md.datasize));
  if (bb != bitmap_bytes_for(md.datasize, md.extent_size))
    return corrupt(
        fmt::format("bitmap of {} bytes does not fit a data size of {} bytes", bb, md.datasize));
  // The slots hold at least the bitmap, and more when create reserved room
  // to grow; they are whole 4 KiB blocks.
  if (md.data_offset % (2 * block) != 0 || md.data_offset / 2 < slot_size_for(bb))
    return corrupt(fmt::format("data offset {} does not follow the two slots", md.data_offset));
  md.bitmap.assign(p + metadata_header_size, p + metadata_header_size + bb);
  return md;
}

result<metadata> create_metadata(const provider &prov, const std::string &resource,
                                 uint32_t extent_size, uint32_t keepdirty, uint64_t mediasize,
                                 uint64_t maxsize) {
  if (resource.empty() || resource.size() > max_resource_name
      || resource.find('\0') != std::string::npos)
    return status{errc::invalid_argument, fmt::format("resource name '{}' must be 1 to {} bytes",
                                                      resource, max_resource_name)};
  if (keepdirty == 0)
    return status{errc::invalid_argument, "keepdirty must be at least 1"};
  if (!prov.writable())
    return status{errc::invalid_argument, fmt::format("{}: not opened for writing", prov.path())};
  if (mediasize > prov.size())
    return status{errc::invalid_argument,
                  fmt::format("{}: media size {} ({}) is larger than the provider ({} bytes)",
                              prov.path(), mediasize, humanize(mediasize), prov.size())};
  auto l = compute_layout(mediasize, extent_size, maxsize);
  if (!l)
    return status{l.error().code(), fmt::format("{}: {}", prov.path(), l.error().message())};

  metadata md;
  md.resource = resource;
  md.datasize = l->datasize;
  md.extent_size = extent_size;
  md.keepdirty = keepdirty;
  md.data_offset = l->data_offset;
  md.prevrole = role::init;
  md.bitmap.assign(static_cast<size_t>(l->bitmap_bytes), 0);
  while (md.resuid == 0) {
    if (::getrandom(&md.resuid, sizeof md.resuid, 0) != static_cast<ssize_t>(sizeof md.resuid)) {
      if (errno == EINTR)
        continue;
      return status{errc::io_error,
                    fmt::format("cannot get a random resource id: {}", std::strerror(errno))};
    }
  }

  // First wipe every slot header an earlier create may have left (at the old
  // and the new positions), so that a crash half-way through can not bring
  // an old, higher-sequence slot back. The new slots are zeroed whole: their
  // room past the bitmap is never written again, and no old header may
  // wait there for a scan (scan_for_slot_b).
  std::vector<uint64_t> wipe;
  for (auto c : slot_b_candidates(prov))
    if (c >= l->data_offset)
      wipe.push_back(c);
  auto chunk = std::min<uint64_t>(l->data_offset, 1 << 20);
  auto zeros = make_buffer(static_cast<size_t>(chunk));
  std::memset(zeros->data(), 0, zeros->size());
  for (uint64_t at = 0; at < l->data_offset; at += chunk)
    if (auto st = prov.write(zeros->data(), std::min(chunk, l->data_offset - at), at); !st)
      return st;
  for (auto at : wipe)
    if (at + block <= prov.size())
      if (auto st = prov.write(zeros->data(), block, at); !st)
        return st;
  if (auto st = prov.flush(); !st)
    return st;

  if (auto st = write_slot(prov, md, 0); !st)
    return st;
  if (auto st = write_slot(prov, md, 1); !st)
    return st;
  if (auto st = prov.flush(); !st)
    return st;
  md.sequence = 1;
  return md;
}

result<metadata> read_metadata(const provider &prov, const std::string &expected_resource) {
  if (prov.size() < 2 * block)
    return status{errc::not_created,
                  fmt::format("{}: not created: too small ({} bytes) to hold hast metadata",
                              prov.path(), prov.size())};
  auto a = examine_slot(prov, 0, 0);
  std::optional<slot_state> b;
  std::string b_problem = "no magic";
  bool b_magic = false;
  auto candidates = slot_b_candidates(prov);
  for (auto c : candidates) {
    auto s = examine_slot(prov, c, 1);
    if (s.md) {
      b = std::move(s);
      break;
    }
    if (s.magic && !b_magic) {
      b_magic = true;
      b_problem = s.problem;
    }
  }
  if (!b && !a.md) {
    if (auto found = scan_for_slot_b(prov, candidates))
      b = std::move(found);
  }

  const metadata *best = nullptr;
  if (a.md)
    best = &*a.md;
  if (b && b->md && (best == nullptr || b->md->sequence > best->sequence))
    best = &*b->md;
  if (best == nullptr) {
    // A disk that cannot be read is not one without metadata: never
    // suggest 'hastctl create' for it.
    if (a.unreadable)
      return status{errc::io_error,
                    fmt::format("{}: cannot read the metadata: {}", prov.path(), a.problem)};
    if (!a.magic && !b_magic)
      return status{errc::not_created,
                    fmt::format("{}: not created: no hast metadata found", prov.path())};
    return status{errc::bad_metadata, fmt::format("{}: corrupt metadata: slot A: {}; slot B: {}",
                                                  prov.path(), a.problem, b_problem)};
  }
  metadata md = *best;
  if (!expected_resource.empty() && md.resource != expected_resource)
    return status{errc::wrong_resource, fmt::format("{}: belongs to resource '{}', not '{}'",
                                                    prov.path(), md.resource, expected_resource)};
  // Compared without a sum that could wrap: a data size near 2^64 must not
  // pass for a small one.
  if (md.data_offset > prov.size() || md.datasize > prov.size() - md.data_offset)
    return status{errc::bad_metadata,
                  fmt::format("{}: the metadata describes a data area of {} bytes at offset {} "
                              "but the provider has only {} (was it shrunk?)",
                              prov.path(), md.datasize, md.data_offset, prov.size())};
  return md;
}

result<slot_write> prepare_slot_write(const metadata &md, uint64_t sequence) {
  auto copy = md;
  copy.sequence = sequence;
  auto bytes = encode_slot(copy);
  // Only the header and the bitmap, in whole blocks: the slot's room past
  // them costs no write.
  auto used = slot_size_for(md.bitmap.size());
  auto slot = md.data_offset / 2;
  if (md.data_offset % (2 * block) != 0 || slot < used)
    return status{errc::invalid_argument,
                  fmt::format("metadata data offset {} does not match its bitmap of {} bytes",
                              md.data_offset, md.bitmap.size())};
  auto buf = make_buffer(static_cast<size_t>(used));
  std::memset(buf->data(), 0, buf->size());
  std::memcpy(buf->data(), bytes.data(), bytes.size());
  return slot_write{(sequence % 2) * slot, std::move(buf)};
}

status write_metadata(const provider &prov, metadata &md, bool flush) {
  auto next = md.sequence + 1;
  if (auto st = write_slot(prov, md, next); !st)
    return st;
  if (flush)
    if (auto st = prov.flush(); !st)
      return st;
  md.sequence = next;
  return status::ok();
}

uint64_t max_datasize(const metadata &md) {
  if (md.extent_size == 0 || md.data_offset < 2 * block)
    return md.datasize;
  return ceiling_for(md.data_offset / 2, md.extent_size);
}

void mark_extents(metadata &md, uint64_t from) {
  if (md.extent_size == 0)
    return;
  auto end = md.datasize / md.extent_size + (md.datasize % md.extent_size != 0 ? 1 : 0);
  for (auto e = from / md.extent_size; e < end && (e >> 3) < md.bitmap.size(); ++e)
    md.bitmap[e >> 3] |= static_cast<uint8_t>(1u << (e & 7));
}

result<uint64_t> growth_target(const metadata &md, uint64_t provider_size, uint64_t wanted) {
  auto area = provider_size > md.data_offset ? (provider_size - md.data_offset) / block * block : 0;
  auto target = wanted != 0 ? std::min(wanted / block * block, area) : area;
  if (wanted != 0 && wanted > area)
    return status{errc::invalid_argument,
                  fmt::format("the provider holds a data area of at most {} bytes ({}), less than "
                              "the {} bytes asked for; grow the provider first",
                              area, humanize(area), wanted)};
  if (target <= md.datasize)
    return status{errc::invalid_argument,
                  fmt::format("the provider did not grow: its data area holds {} bytes ({}) and "
                              "the resource already uses {} ({}); grow the provider first "
                              "(e.g. lvextend), on both nodes",
                              area, humanize(area), md.datasize, humanize(md.datasize))};
  auto limit = max_datasize(md);
  if (target > limit)
    return status{errc::invalid_argument,
                  fmt::format("the metadata slots ({} bytes each, sized at create) hold the "
                              "activemap of at most {} bytes ({}) of data with extents of {} (the "
                              "maxsize 'hastctl dump' shows); the provider offers {} ({}). Grow "
                              "the provider to at most {} bytes in all, or recreate the resource "
                              "with more room (hastctl create -M, then a full sync) to use more",
                              md.data_offset / 2, limit, humanize(limit),
                              humanize(md.extent_size), target, humanize(target),
                              md.data_offset + limit)};
  return target;
}

status grow_metadata(metadata &md, uint64_t new_datasize) {
  if (new_datasize % block != 0 || new_datasize <= md.datasize)
    return status{errc::invalid_argument,
                  fmt::format("cannot grow from {} to {} bytes: the new size must be a larger "
                              "multiple of 4096",
                              md.datasize, new_datasize)};
  if (new_datasize > max_datasize(md))
    return status{errc::invalid_argument,
                  fmt::format("cannot grow to {} bytes: the metadata slots hold the activemap of "
                              "at most {} bytes",
                              new_datasize, max_datasize(md))};
  md.datasize = new_datasize;
  md.bitmap.resize(static_cast<size_t>(bitmap_bytes_for(new_datasize, md.extent_size)), 0);
  return status::ok();
}

uint64_t count_dirty(std::span<const uint8_t> bitmap) {
  uint64_t n = 0;
  for (auto byte : bitmap)
    n += static_cast<uint64_t>(std::popcount(byte));
  return n;
}

namespace {

uint64_t dirty_bytes(const metadata &md) {
  if (md.extent_size == 0)
    return 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < md.bitmap.size(); ++i) {
    if (md.bitmap[i] == 0)
      continue;
    for (uint64_t bit = 0; bit < 8; ++bit) {
      if ((md.bitmap[i] & (1u << bit)) == 0)
        continue;
      auto start = (i * 8 + bit) * md.extent_size;
      if (start < md.datasize)
        bytes += std::min<uint64_t>(md.extent_size, md.datasize - start);
    }
  }
  return bytes;
}

} // namespace

std::string render_metadata(const metadata &md) {
  // FreeBSD's dump_one() lines, in its order and format (sizes as its
  // "%NB"), then hast's own.
  auto dirty = count_dirty(md.bitmap);
  return fmt::format("resource: {}\n"
                     "    datasize: {} ({})\n"
                     "    extentsize: {} ({})\n"
                     "    keepdirty: {}\n"
                     "    localoff: {}\n"
                     "    resuid: {}\n"
                     "    localcnt: {}\n"
                     "    remotecnt: {}\n"
                     "    prevrole: {}\n"
                     "    version: {}\n"
                     "    sequence: {}\n"
                     "    dirty extents: {} ({})\n"
                     "    local stale: {}\n"
                     "    maxsize: {} ({})\n",
                     md.resource, md.datasize, humanize_number(md.datasize), md.extent_size,
                     humanize_number(md.extent_size), md.keepdirty, md.data_offset, md.resuid,
                     md.localcnt, md.remotecnt, role_name(md.prevrole), metadata_version,
                     md.sequence, dirty, humanize_number(dirty_bytes(md)),
                     md.local_stale ? "yes" : "no", max_datasize(md),
                     humanize_number(max_datasize(md)));
}

nlohmann::json metadata_json(const metadata &md) {
  return nlohmann::json{
      {"name", md.resource},
      {"version", metadata_version},
      {"sequence", md.sequence},
      {"datasize", md.datasize},
      {"extentsize", md.extent_size},
      {"keepdirty", md.keepdirty},
      {"localoff", md.data_offset},
      {"resuid", md.resuid},
      {"localcnt", md.localcnt},
      {"remotecnt", md.remotecnt},
      {"prevrole", role_name(md.prevrole)},
      {"bitmap_bytes", md.bitmap.size()},
      {"dirty_extents", count_dirty(md.bitmap)},
      {"dirty_bytes", dirty_bytes(md)},
      {"local_stale", md.local_stale},
      {"maxsize", max_datasize(md)},
  };
}

} // namespace hast
