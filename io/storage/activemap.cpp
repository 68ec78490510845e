#include "io/storage/activemap.hpp"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

namespace hast {

namespace {

// Extents of a data area, written so that no sum can wrap.
uint64_t extents_for(uint64_t datasize, uint32_t extent_size) {
  if (extent_size == 0)
    throw std::invalid_argument("activemap: extent size must be positive");
  return datasize / extent_size + (datasize % extent_size != 0 ? 1 : 0);
}

} // namespace

activemap::activemap(uint64_t datasize, uint32_t extent_size, uint32_t keepdirty)
    : datasize_(datasize), extent_size_(extent_size), keepdirty_(keepdirty),
      extents_(extents_for(datasize, extent_size)) {
  // The metadata stores the bitmap's length in 32 bits; a larger map was
  // never written by hast and would not fit in memory.
  if (extents_ / 8 + (extents_ % 8 != 0 ? 1 : 0) > max_bitmap_bytes)
    throw std::invalid_argument("activemap: a data size of " + std::to_string(datasize)
                                + " bytes needs a bitmap larger than metadata can hold");
  syncmap_.assign(bitmap_bytes(), 0);
  on_disk_.assign(bitmap_bytes(), 0);
}

template <class F> void activemap::for_each_extent(uint64_t offset, uint64_t length, F &&fn) const {
  if (length == 0 || offset >= datasize_)
    return;
  // Clamped to the data area without computing offset + length, which a
  // range near 2^64 would wrap.
  auto last_byte = length - 1 > datasize_ - 1 - offset ? datasize_ - 1 : offset + (length - 1);
  for (auto e = extent_of(offset); e <= extent_of(last_byte); ++e)
    fn(e);
}

bool activemap::sync_bit(uint64_t extent) const {
  return (syncmap_[extent >> 3] & (1u << (extent & 7))) != 0;
}

bool activemap::is_dirty(uint64_t extent) const {
  if (extent >= extents_)
    return false;
  return pending_.count(extent) != 0 || in_lru(extent) || sync_bit(extent);
}

uint32_t activemap::pending(uint64_t extent) const {
  auto it = pending_.find(extent);
  return it == pending_.end() ? 0 : it->second;
}

bool activemap::touch_lru(uint64_t e) {
  if (auto it = lru_index_.find(e); it != lru_index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return false;
  }
  lru_.push_front(e);
  lru_index_[e] = lru_.begin();
  if (lru_.size() <= keepdirty_)
    return false;
  auto victim = lru_.back();
  lru_.pop_back();
  lru_index_.erase(victim);
  // The victim leaves the image unless it is dirty for another reason.
  return !is_dirty(victim);
}

bool activemap::write_start(uint64_t offset, uint64_t length) {
  changed_ = true;  // at least the LRU order; cheap to over-report
  bool changed = false;
  for_each_extent(offset, length, [&](uint64_t e) {
    if (!is_dirty(e))
      changed = true;
    ++pending_[e];
    if (keepdirty_ != 0 && touch_lru(e))
      changed = true;
  });
  bool stream = length > 0 && offset == stream_next_;
  auto end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
  stream_next_ = end;
  if (changed && stream && keepdirty_ >= 4 * mark_ahead && offset < datasize_) {
    auto last = extent_of(std::min(end, datasize_) - 1);
    for (auto e = last + 1; e <= last + mark_ahead && e < extents_; ++e)
      if (!in_lru(e))
        touch_lru(e);  // an eviction now rides on the commit owed anyway
  }
  return changed;
}

bool activemap::write_complete(uint64_t offset, uint64_t length) {
  bool changed = false;
  for_each_extent(offset, length, [&](uint64_t e) {
    auto it = pending_.find(e);
    if (it == pending_.end())
      return; // not started: nothing to undo
    if (--it->second > 0)
      return;
    pending_.erase(it);
    if (!is_dirty(e))
      changed = true;
  });
  changed_ = changed_ || changed;
  return changed;
}

bool activemap::mark_sync(uint64_t offset, uint64_t length) {
  bool changed = false;
  for_each_extent(offset, length, [&](uint64_t e) {
    if (sync_bit(e))
      return;
    if (!is_dirty(e))
      changed = true;
    syncmap_[e >> 3] |= static_cast<uint8_t>(1u << (e & 7));
    ++sync_count_;
  });
  changed_ = changed_ || changed;
  return changed;
}

void activemap::mark_all_sync() {
  changed_ = true;
  std::fill(syncmap_.begin(), syncmap_.end(), uint8_t{0xFF});
  if (extents_ % 8 != 0)
    syncmap_.back() = static_cast<uint8_t>((1u << (extents_ % 8)) - 1);
  sync_count_ = extents_;
}

void activemap::merge(std::span<const uint8_t> bitmap) {
  changed_ = true;
  auto n = std::min(bitmap.size(), syncmap_.size());
  for (size_t i = 0; i < n; ++i)
    syncmap_[i] |= bitmap[i];
  if (extents_ % 8 != 0 && !syncmap_.empty())
    syncmap_.back() &= static_cast<uint8_t>((1u << (extents_ % 8)) - 1);
  sync_count_ = 0;
  for (auto byte : syncmap_)
    sync_count_ += static_cast<uint64_t>(std::popcount(byte));
}

void activemap::clear_sync(uint64_t extent) {
  if (extent >= extents_ || !sync_bit(extent))
    return;
  syncmap_[extent >> 3] &= static_cast<uint8_t>(~(1u << (extent & 7)));
  --sync_count_;
  changed_ = true;
}

std::optional<uint64_t> activemap::next_sync(uint64_t from) const {
  if (from >= extents_)
    return std::nullopt;
  // Finish the byte `from` is in, then skip zero bytes.
  for (auto e = from; e < extents_ && (e & 7) != 0; ++e)
    if (sync_bit(e))
      return e;
  for (auto i = static_cast<size_t>((from + 7) >> 3); i < syncmap_.size(); ++i) {
    if (syncmap_[i] == 0)
      continue;
    auto e = static_cast<uint64_t>(i) * 8 + static_cast<uint64_t>(std::countr_zero(syncmap_[i]));
    return e < extents_ ? std::optional<uint64_t>{e} : std::nullopt;
  }
  return std::nullopt;
}

bool activemap::needs_sync(uint64_t extent) const {
  return extent < extents_ && sync_bit(extent);
}

uint64_t activemap::sync_extents() const {
  return sync_count_;
}

std::vector<uint8_t> activemap::bitmap() const {
  auto image = syncmap_;
  auto set = [&](uint64_t e) { image[e >> 3] |= static_cast<uint8_t>(1u << (e & 7)); };
  for (auto &[e, count] : pending_)
    set(e);
  for (auto e : lru_)
    set(e);
  return image;
}

uint64_t activemap::dirty_extents() const {
  uint64_t n = 0;
  for (auto byte : bitmap())
    n += static_cast<uint64_t>(std::popcount(byte));
  return n;
}

} // namespace hast

namespace hast {

bool activemap::forget_keepdirty() {
  if (!pending_.empty())
    return false;
  lru_.clear();
  lru_index_.clear();
  changed_ = true;
  return true;
}

void activemap::grow(uint64_t datasize) {
  if (datasize <= datasize_)
    throw std::invalid_argument("activemap: cannot grow from " + std::to_string(datasize_)
                                + " to " + std::to_string(datasize) + " bytes");
  auto extents = extents_for(datasize, extent_size_);
  if (extents / 8 + (extents % 8 != 0 ? 1 : 0) > max_bitmap_bytes)
    throw std::invalid_argument("activemap: a data size of " + std::to_string(datasize)
                                + " bytes needs a bitmap larger than metadata can hold");
  datasize_ = datasize;
  extents_ = extents;
  syncmap_.resize(bitmap_bytes(), 0);
  on_disk_.resize(bitmap_bytes(), 0);
  if (in_flight_)
    in_flight_->resize(bitmap_bytes(), 0);
  changed_ = true;
}

void activemap::clear_all_sync() {
  std::fill(syncmap_.begin(), syncmap_.end(), uint8_t{0});
  sync_count_ = 0;
  changed_ = true;
}

} // namespace hast

namespace hast {

std::vector<uint8_t> activemap::begin_commit() {
  if (in_flight_)
    throw std::logic_error("activemap: a commit is already in flight");
  ++commits_;
  changed_ = false;
  in_flight_ = bitmap();
  return *in_flight_;
}

void activemap::end_commit(bool ok) {
  if (!in_flight_)
    return;
  if (ok)
    on_disk_ = std::move(*in_flight_);
  else
    changed_ = true;  // the disk still has the previous image
  in_flight_.reset();
}

bool activemap::durable(uint64_t offset, uint64_t length) const {
  auto set = [](const std::vector<uint8_t> &image, uint64_t e) {
    return (image[e >> 3] & (1u << (e & 7))) != 0;
  };
  bool all = true;
  for_each_extent(offset, length, [&](uint64_t e) {
    all = all && set(on_disk_, e) && (!in_flight_ || set(*in_flight_, e));
  });
  return all;
}

} // namespace hast
