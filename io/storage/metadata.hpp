#pragma once

// The on-disk metadata of a local provider (docs/METADATA.md). Unlike HAST's
// single unchecked nv block, there are two slots written alternately, each
// with a magic, a format version, a sequence number and a CRC-32C over the
// header and the activemap bitmap:
//
//   offset 0            slot A: 4096-byte header, then the bitmap
//   offset slot_size    slot B: same
//   offset 2*slot_size  user data (data_offset), datasize bytes
//
//   slot_size >= round_up(4096 + bitmap_bytes, 4096), fixed at create
//
// The slots may be larger than today's bitmap needs: the room create
// reserves for online growth (docs/METADATA.md, "Room to grow"). A slot
// write covers only the header and the bitmap rounded up to 4096 bytes.
//
// A write goes to the slot its sequence selects (A for even, B for odd), so it
// only ever overwrites the older of the two; a read takes the valid slot with
// the highest sequence. A torn or failed write therefore leaves the previous
// state readable, and a damaged slot is never taken for a good one.

#include "config/config.hpp"
#include "io/codec/buffer.hpp"
#include "io/storage/provider.hpp"
#include "base/errc.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hast {

inline constexpr size_t metadata_header_size = 4096;
inline constexpr uint32_t metadata_version = 1;
inline constexpr size_t max_resource_name = 127;
inline constexpr uint32_t default_extent_size = 2 * 1024 * 1024; // HAST_EXTENTSIZE
inline constexpr uint32_t default_keepdirty = 64;                // HAST_KEEPDIRTY
/// Without `-M`, create sizes the slots to describe this many times the
/// media size (docs/METADATA.md, "Room to grow").
inline constexpr uint64_t default_room_factor = 16;

struct metadata {
  std::string resource;
  uint64_t datasize = 0;
  uint32_t extent_size = 0;
  uint32_t keepdirty = 0;
  uint64_t data_offset = 0; // HAST's localoff
  uint64_t resuid = 0;      // random, nonzero, chosen at create
  uint64_t localcnt = 0;
  uint64_t remotecnt = 0;
  role prevrole = role::init;
  /// This node's local disk failed writes that the secondary took: the data
  /// of its dirty extents is stale here and is copied from the peer, never
  /// to it (docs/METADATA.md).
  bool local_stale = false;
  uint64_t sequence = 0;       // of the slot this was read from or last written
  std::vector<uint8_t> bitmap; // activemap image, bitmap_bytes long
};

struct layout {
  uint64_t slot_size = 0;
  uint64_t data_offset = 0;  // 2 * slot_size
  uint64_t datasize = 0;     // multiple of 4096
  uint64_t extents = 0;      // datasize / extent_size rounded up
  uint64_t bitmap_bytes = 0; // (extents + 7) / 8
  uint64_t ceiling = 0;      // the largest data size the slots describe
};

/// The layout of a provider of `mediasize` bytes whose slots describe at
/// least `maxsize` bytes of data (hastctl create -M); 0 asks for the default
/// room, default_room_factor times the media size where the slots may be
/// that large, and never a layout that no longer fits the media. Errors
/// (invalid_argument) if `extent_size` is not a power-of-two multiple of
/// 4096, the media is too small for both slots plus one extent, `maxsize`
/// is smaller than the media, or its slots would be larger than a read can
/// look for them on this media (the message says how far it can go).
result<layout> compute_layout(uint64_t mediasize, uint32_t extent_size, uint64_t maxsize = 0);

/// Writes fresh metadata to both slots (sequence 0 in A, 1 in B) with a zero
/// bitmap, counters 0, prevrole init and a random nonzero 64-bit resuid
/// (getrandom), then flushes. `mediasize` <= provider.size(); `maxsize` as
/// for compute_layout. Both slots are zeroed whole first; data is not
/// touched. Returns the metadata as written (sequence 1).
result<metadata> create_metadata(const provider &prov, const std::string &resource,
                                 uint32_t extent_size, uint32_t keepdirty, uint64_t mediasize,
                                 uint64_t maxsize = 0);

/// Reads the valid slot with the highest sequence. errc::not_created if no
/// slot carries the magic; errc::bad_metadata if one does but none is valid
/// (the message says why for each slot); errc::wrong_resource if it names
/// another resource than `expected_resource` (an empty name skips the check).
result<metadata> read_metadata(const provider &prov, const std::string &expected_resource);

/// Writes `md` with sequence md.sequence+1 into the slot that sequence
/// selects (the one not holding the current state), then flushes if `flush`
/// (metaflush). md.sequence is advanced only on success, so a failed write
/// is retried into the same slot and never overwrites the last good state.
status write_metadata(const provider &prov, metadata &md, bool flush = true);

/// What write_metadata writes, for a caller that submits it itself (the
/// data plane sends it through the disk ring): the header and bitmap of the
/// slot `sequence` selects, padded with zeros to a multiple of 4096 bytes
/// (not to the slot size: the room after the bitmap is not written), and
/// where it goes in the provider.
struct slot_write {
  uint64_t offset = 0;
  buffer_ptr bytes;
};
result<slot_write> prepare_slot_write(const metadata &md, uint64_t sequence);

/// One slot's bytes: the 4096-byte header followed by the bitmap
/// (4096 + bitmap.size() bytes, not padded).
std::string encode_slot(const metadata &md);
/// Parses and verifies a slot (magic, version, checksum, field consistency).
/// not_created if there is no magic, bad_metadata otherwise.
result<metadata> decode_slot(std::span<const uint8_t> bytes);

/// The text `hastctl dump` prints: FreeBSD's lines in its format (resource,
/// datasize, extentsize, keepdirty, localoff, resuid, localcnt, remotecnt,
/// prevrole; sizes as `2.0MB`) plus version, sequence, dirty extents and
/// local stale. Ends with a newline.
std::string render_metadata(const metadata &md);
/// The same as a JSON object ("name", "datasize", "extentsize", ...).
nlohmann::json metadata_json(const metadata &md);

/// Online growth (docs/METADATA.md, "Online growth"). The slot size, and so
/// the data offset, never change after create: the largest data size whose
/// bitmap still fits in a slot of `md` (the ceiling `dump` shows).
uint64_t max_datasize(const metadata &md);

/// Marks the extents of [from, md.datasize) in md.bitmap, so that they are
/// synchronised at the next connection (an offline grow's new space).
void mark_extents(metadata &md, uint64_t from);

/// The data size `md` grows to on a provider of `provider_size` bytes: all
/// of the provider after the data offset, in whole 4 KiB blocks, or
/// `wanted` (nonzero) if that is smaller. invalid_argument, with what to
/// do, when that is not larger than md.datasize (the provider did not
/// grow) or when the bitmap of that size would not fit in the slots (the
/// message says how far the resource can grow).
result<uint64_t> growth_target(const metadata &md, uint64_t provider_size, uint64_t wanted = 0);

/// Sets md.datasize to `new_datasize` and extends md.bitmap with zero bits
/// (the caller marks what must be synced). `new_datasize` must be a
/// multiple of 4096, larger than md.datasize and at most max_datasize(md);
/// invalid_argument otherwise, `md` unchanged. Nothing is written: a
/// write_metadata after it puts the new size into the older slot, so a
/// crash leaves the old size or the new one.
status grow_metadata(metadata &md, uint64_t new_datasize);

/// Number of bits set in a metadata bitmap.
uint64_t count_dirty(std::span<const uint8_t> bitmap);

} // namespace hast
