#pragma once

// The activemap: HAST's map of dirty extents, one bit per extent of the data
// area (extent i covers bytes [i*extent_size, (i+1)*extent_size), the last one
// may be partial). Three sources make an extent dirty:
//
//  - memmap:    a write to the extent is in flight (pending count > 0);
//  - keepdirty: the extent is among the `keepdirty` most recently written
//               (an LRU), so that hot extents do not cost a metadata write per
//               data write;
//  - syncmap:   the extent differs from the peer and must be resynchronised.
//
// The on-disk image (bitmap()) is memmap | keepdirty set | syncmap. After a
// crash every extent set in it is resynchronised.
//
// Invariant: every extent with a write in flight is set in the on-disk image
// before the write is issued. The map keeps the image in memory and tracks
// the one on disk (group commit): begin_commit() takes the image to write,
// end_commit() records that it is on disk, and durable() says whether a data
// write may be issued now: all its extents are set in the image on disk and
// in the one being written (a commit in flight must not clean an extent that
// a newer write is using). One image write covers every write that waited
// for it. An extent leaving the image (eviction, completion) needs no write of
// its own: the next commit carries it (stale() says one is owed).
//
// Not thread-safe: one owner (the resource) drives it.

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace hast {

class activemap {
public:
  /// The largest bitmap: metadata stores its length in 32 bits.
  static constexpr uint64_t max_bitmap_bytes = UINT32_MAX;

  /// `extent_size` must be > 0 (a power of two in practice); `keepdirty` may
  /// be 0 (then only in-flight and to-sync extents are dirty). Throws
  /// std::invalid_argument for a zero extent size or a data size whose
  /// bitmap would exceed max_bitmap_bytes (read_metadata refuses such
  /// metadata first).
  activemap(uint64_t datasize, uint32_t extent_size, uint32_t keepdirty);

  uint64_t datasize() const { return datasize_; }
  /// Number of extents: datasize / extent_size rounded up.
  uint64_t extents() const { return extents_; }
  uint32_t extent_size() const { return extent_size_; }
  uint32_t keepdirty() const { return keepdirty_; }
  uint64_t extent_of(uint64_t offset) const { return offset / extent_size_; }

  /// Before a write of [offset, offset+length): pending count +1 for each
  /// touched extent, which moves to the head of the keepdirty LRU (evicting
  /// the tail when full). Returns true when the on-disk image changed (an
  /// extent not yet in it entered it, or an evicted extent left it); the
  /// image must then be written before the data write is issued.
  ///
  /// A sequential stream (the write starts where the previous one ended)
  /// that needs a commit anyway also puts the `mark_ahead` extents after
  /// it into the keepdirty set, so that one commit covers the extents the
  /// stream reaches next instead of one commit per extent. Only with a
  /// keepdirty set of at least 4 × mark_ahead extents (it must not crowd
  /// out the hot extents); a crash then resyncs at most mark_ahead extents
  /// more.
  bool write_start(uint64_t offset, uint64_t length);

  /// Extents a sequential stream marks ahead of itself (see write_start).
  static constexpr uint32_t mark_ahead = 3;

  /// After that write finished (successfully or not): pending count -1. An
  /// extent whose count reaches 0 leaves the memmap. Returns true when the
  /// on-disk image changed, which only happens for extents outside the
  /// keepdirty set and not to be synced.
  bool write_complete(uint64_t offset, uint64_t length);

  /// The range must be resynchronised (e.g. the peer did not get a write).
  /// Returns true when the on-disk image changed.
  bool mark_sync(uint64_t offset, uint64_t length);
  /// Every extent must be resynchronised (full sync).
  void mark_all_sync();
  /// ORs a bitmap (on-disk image at start, or the peer's) into the syncmap.
  /// Bits beyond extents() are ignored; a shorter bitmap is fine.
  void merge(std::span<const uint8_t> bitmap);
  /// The extent has been synchronised.
  void clear_sync(uint64_t extent);
  /// The first extent >= `from` that must be synchronised.
  std::optional<uint64_t> next_sync(uint64_t from) const;
  bool needs_sync(uint64_t extent) const;
  /// Number of extents still to synchronise.
  uint64_t sync_extents() const;

  /// Number of extents set in the on-disk image.
  uint64_t dirty_extents() const;
  /// The extent is set in the on-disk image.
  bool is_dirty(uint64_t extent) const;
  /// Writes in flight on the extent.
  uint32_t pending(uint64_t extent) const;

  /// A clean stop: with no write in flight, the keepdirty set guards
  /// nothing, so it is emptied and the image keeps only extents to sync
  /// (otherwise every restart would resync up to `keepdirty` extents).
  /// Returns false, changing nothing, while writes are in flight.
  bool forget_keepdirty();

  /// Online growth: the data area now ends at `datasize` (larger than
  /// before; throws std::invalid_argument otherwise). The new extents start
  /// clean in memory and on disk (the caller marks them for sync unless
  /// the new space is known to be equal on both nodes); a commit in flight
  /// keeps its image, extended with clean bits.
  void grow(uint64_t datasize);

  /// Forgets every extent to sync (the peer confirmed it holds our data).
  void clear_all_sync();

  // --- Group commit ---------------------------------------------------------------------------

  /// The image to write now; remembered as in flight until end_commit().
  /// One commit at a time: calling it again before end_commit() is an error.
  std::vector<uint8_t> begin_commit();
  /// The image from begin_commit() reached the disk (`ok`), or its write
  /// failed and the disk keeps the previous one.
  void end_commit(bool ok);
  bool commit_in_flight() const { return in_flight_.has_value(); }
  /// Every extent touched by [offset, offset+length) is set in the image on
  /// disk and, while a commit is in flight, in the image being written: a
  /// data write there may be issued now. Trivially true for an empty range.
  bool durable(uint64_t offset, uint64_t length) const;
  /// The image in memory differs from the last one on disk.
  bool stale() const { return bitmap() != on_disk_; }
  /// Something changed since the last begin_commit() (cheap; may be true
  /// when the image ended up the same). An owner that writes only what
  /// writes wait for must still write such changes soon: an extent that
  /// left the image would otherwise stay dirty on disk for as long as no
  /// new extent enters, and a crash would resync it for nothing.
  bool changed_since_commit() const { return changed_; }
  /// Commits so far (begin_commit calls).
  uint64_t commits() const { return commits_; }

  /// The on-disk image, bitstring(3) layout: bit i is byte i>>3, mask
  /// 1<<(i&7); bitmap_bytes() long, unused high bits of the last byte zero.
  std::vector<uint8_t> bitmap() const;
  size_t bitmap_bytes() const { return static_cast<size_t>((extents_ + 7) / 8); }

private:
  // Calls fn(extent) for each extent touched by [offset, offset+length),
  // clamped to the data area.
  template <class F> void for_each_extent(uint64_t offset, uint64_t length, F &&fn) const;
  bool in_lru(uint64_t extent) const { return lru_index_.count(extent) != 0; }
  /// Moves `extent` to the head of the keepdirty LRU (adding it, evicting
  /// the tail when full); true when an eviction changed the image.
  bool touch_lru(uint64_t extent);
  bool sync_bit(uint64_t extent) const;

  uint64_t datasize_;
  uint32_t extent_size_;
  uint32_t keepdirty_;
  uint64_t extents_;
  std::unordered_map<uint64_t, uint32_t> pending_; // extent -> writes in flight (> 0)
  std::list<uint64_t> lru_;                        // keepdirty set, most recent first
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> lru_index_;
  std::vector<uint8_t> syncmap_;
  uint64_t sync_count_ = 0;
  // Group commit: the image on disk (all clean until the first commit: a
  // conservative start) and the one being written.
  std::vector<uint8_t> on_disk_;
  std::optional<std::vector<uint8_t>> in_flight_;
  uint64_t commits_ = 0;
  bool changed_ = false;
  uint64_t stream_next_ = UINT64_MAX;  // where a sequential stream's next write starts
};

} // namespace hast
