// The resync: after every handshake the primary copies each dirty extent to
// the secondary (or, when it was the stale side, from the secondary) while
// clients keep using the device. It is a pipeline bounded by bytes: extents
// are read ahead while earlier ones are on the wire, up to
// `sync_bytes_in_flight` read and not yet written there. The secondary does
// not mark resync data in its activemap: the primary keeps an extent dirty
// until the secondary's `done`, so a crash there loses nothing that the
// primary would not send again.
//
// Client I/O keeps priority: while clients are doing I/O the pipeline
// narrows to `sync_bytes_under_load`, so their requests do not queue behind
// 16 MiB of resync traffic on the disks and the link.
//
// Interlock with client writes: a client write to an extent whose data is
// being read for the resync waits until that data is queued for the peer;
// after that it goes on the same ordered link behind the resync data, so it
// never waits for the rest of the pipeline. (Copying from the secondary,
// the write waits until the extent is written here.) A copy never starts on
// an extent with client writes in flight.
//
// An online verify with --repair (verify.cpp) hands in the exact ranges
// that differ; their extent then copies only those ranges.
//
// `resync-checksum on` (DRBD's csums-alg): an extent is first compared by
// block digests (SHA-256 per 4 KiB, io/codec/block_hash.hpp): the primary reads
// and digests its copy while the secondary digests its own (after the
// writes to it that came before), and only the runs of differing blocks
// move. Client writes to the extent wait for the comparison as they wait
// for a plain copy's read.

#include "actors/resource.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

namespace hast {

namespace {

void report_progress(resource_ptr self);

/// One range of an extent is copied (or failed); the extent is done when
/// its last range is, and stays dirty unless every range was copied.
void range_finished(resource_ptr self, uint64_t extent, bool copied_ok) {
  auto& s = self->state;
  auto it = s.sync.extents.find(extent);
  if (it == s.sync.extents.end())
    return;  // the resync stopped meanwhile
  auto& x = it->second;
  x.ok = x.ok && copied_ok;
  if (--x.pending > 0)
    return;
  auto bytes = x.bytes;
  auto ok = x.ok;
  s.sync.extents.erase(it);
  s.sync.bytes_in_flight -= bytes;
  if (ok && s.plane->is_open()) {
    s.plane->map().clear_sync(extent);
    s.repair_ranges.erase(extent);
    s.sync.done_bytes += bytes;
    s.synced_total += bytes;
    report_progress(self);
    if (++s.sync.since_persist >= 16) {
      s.sync.since_persist = 0;
      self->state.plane->persist([](bool) {});
    }
  }
  self->state.plane->release_deferred();
  sync_pump(self);
  verify_pump(self);
}

std::optional<uint64_t> next_candidate(resource_ptr self) {
  auto& s = self->state;
  auto usable = [&](uint64_t e) {
    return !s.sync.extents.count(e) && !s.plane->busy(e) && !verifying_extent(self, e);
  };
  for (int pass = 0; pass < 2; ++pass) {
    auto from = pass == 0 ? s.sync.cursor : 0;
    for (auto e = s.plane->map().next_sync(from); e; e = s.plane->map().next_sync(*e + 1)) {
      if (pass == 1 && *e >= s.sync.cursor)
        break;
      if (usable(*e))
        return e;
    }
  }
  return std::nullopt;
}

/// The event stream's `sync` line, at most once per sync_progress_interval.
void report_progress(resource_ptr self) {
  auto& s = self->state;
  auto now = std::chrono::steady_clock::now();
  if (now - s.sync.reported < sync_progress_interval)
    return;
  s.sync.reported = now;
  auto seconds = std::chrono::duration<double>(now - s.sync.started).count();
  auto rate = seconds > 0 ? static_cast<uint64_t>(s.sync.done_bytes / seconds) : 0;
  announce(self, "sync",
           {{"done", std::to_string(s.sync.done_bytes)},
            {"total", std::to_string(s.sync.total_bytes)},
            {"percent", fmt::format("{:.1f}", s.sync.total_bytes == 0 ? 100.0
                                                : 100.0 * s.sync.done_bytes / s.sync.total_bytes)},
            {"rate", std::to_string(rate)}});
}

void finish(resource_ptr self) {
  auto& s = self->state;
  s.sync.active = false;
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.sync.started).count();
  if (s.sync.done_bytes > 0) {
    spdlog::info("{}: synchronization complete: {} bytes in {:.1f} s ({} bytes moved, {} found "
                 "identical)",
                 s.config.name, s.sync.done_bytes, seconds, s.sync.wire_bytes, s.sync.same_bytes);
    event(self, "syncdone", {},
          {{"bytes", std::to_string(s.sync.done_bytes)},
           {"seconds", fmt::format("{:.1f}", seconds)},
           {"moved", std::to_string(s.sync.wire_bytes)},
           {"identical", std::to_string(s.sync.same_bytes)}});
  } else
    spdlog::info("{}: nodes are in sync", s.config.name);
  if (s.sync.from_secondary) {
    // We now hold the secondary's data, and with it its generation.
    s.plane->md().localcnt = std::max(s.plane->md().localcnt, s.plane->md().remotecnt);
    spdlog::info("{}: caught up with the secondary; reads are local again", s.config.name);
    if (s.plane->md().local_stale)
      spdlog::info("{}: the local copy is rebuilt; the disk is in use again", s.config.name);
    s.plane->md().local_stale = false;
    s.local_error_reported = false;
  }
  s.sync.from_secondary = false;
  self->state.plane->persist([](bool) {});
  self->send(s.link, atom::sync_done_v, s.plane->md().localcnt, true);
  lease_report(self);  // the witness hears at once that the secondary caught up
}

/// Secondary to primary: read the extent from the peer, write it here.
void copy_from_secondary(resource_ptr self, uint64_t extent, uint64_t offset, uint32_t length) {
  auto& s = self->state;
  self->request(s.link, std::chrono::seconds(s.config.timeout), atom::remote_read_v, offset, length)
    .then(
      [=](buffer_ptr& data) {
        activation act{self};
        auto& s = self->state;
        if (!s.sync.active || !s.sync.extents.count(extent))
          return;
        s.sync.wire_bytes += length;
        disk_op op;
        op.op = disk_op::kind::write;
        op.offset = offset;
        op.length = data->size();
        op.data = std::move(data);
        self->state.plane->submit(std::move(op), [=](disk_completion& c) {
          if (c.error == 0)
            return range_finished(self, extent, true);
          ++self->state.plane->counters().write_errors;
          spdlog::error("{}: cannot write synced extent {}: {}", self->state.config.name, extent,
                        std::strerror(c.error));
          range_finished(self, extent, false);
          sync_stop(self, "local write error");
        });
      },
      [=](caf::error& err) {
        activation act{self};
        spdlog::warn("{}: cannot read extent {} from the secondary: {}", self->state.config.name,
                     extent, self->system().render(err));
        sync_stop(self, "remote read error");
      });
}

/// Primary to secondary: `data`, read here at `offset`, goes to the peer
/// behind every write queued before it.
void queue_for_secondary(resource_ptr self, uint64_t extent, uint64_t offset, buffer_ptr data) {
  auto& s = self->state;
  auto id = s.plane->new_id();
  s.sync.ids[id] = extent;
  s.sync.wire_bytes += data->size();
  replicate_call rc;
  rc.id = id;
  rc.type = peer::msg_type::write;
  rc.flags = peer::flag_sync;
  rc.offset = offset;
  rc.length = data->size();
  rc.data = std::move(data);
  s.plane->replicate(std::move(rc));
}

/// Primary to secondary: read one range here, then queue it for the peer.
void send_range(resource_ptr self, uint64_t extent, uint64_t offset, uint32_t length) {
  disk_op op;
  op.op = disk_op::kind::read;
  op.offset = offset;
  op.length = length;
  auto serial = self->state.sync.extents.at(extent).serial;
  self->state.plane->submit(std::move(op), [=](disk_completion& c) {
    auto& s = self->state;
    auto it = s.sync.extents.find(extent);
    if (it == s.sync.extents.end() || it->second.serial != serial)
      return;  // the resync stopped meanwhile
    --it->second.reading;
    if (c.error != 0) {
      ++s.plane->counters().read_errors;
      spdlog::error("{}: cannot read extent {} for the resync: {}", s.config.name, extent,
                    std::strerror(c.error));
      return sync_stop(self, "local read error");
    }
    if (!s.connected || !s.sync.active)
      return;
    queue_for_secondary(self, extent, offset, std::move(c.data));
    // The data is queued ahead of any later client write to the extent:
    // writes that waited for the read may go now.
    if (it->second.reading == 0)
      self->state.plane->release_deferred();
  });
}

/// `resync-checksum on`: both digests of an extent are in. Only the runs of
/// blocks that differ move; an extent that holds the same bytes on both
/// nodes moves nothing and is clean.
void compared(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  auto it = s.sync.extents.find(extent);
  if (it == s.sync.extents.end() || !it->second.ours || !it->second.theirs)
    return;
  auto& x = it->second;
  if (x.theirs->block_size != x.ours->block_size
      || x.theirs->digests.size() != x.ours->digests.size())
    return sync_stop(self, "the secondary answered digests of another shape");
  auto base = extent * s.plane->md().extent_size;
  auto data = std::move(x.data);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // within the extent
  uint64_t differing = 0;
  for (auto [first, count] : differing_runs(*x.ours, *x.theirs)) {
    auto at = first * x.ours->block_size;
    auto length = std::min<uint64_t>(count * x.ours->block_size, data->size() - at);
    ranges.emplace_back(at, length);
    differing += length;
  }
  x.ours.reset();
  x.theirs.reset();
  s.sync.same_bytes += data->size() - differing;
  // The comparison itself is one pending step, finished last below.
  x.pending = static_cast<uint32_t>(ranges.size()) + 1;
  if (s.sync.from_secondary) {
    for (auto& [at, length] : ranges)
      copy_from_secondary(self, extent, base + at, static_cast<uint32_t>(length));
  } else {
    if (ranges.size() == 1 && ranges[0].second == data->size()) {
      // Every block differs: the buffer read goes as it is.
      queue_for_secondary(self, extent, base, std::move(data));
    } else {
      for (auto& [at, length] : ranges) {
        auto piece = make_buffer(length);
        std::memcpy(piece->data(), data->data() + at, length);
        queue_for_secondary(self, extent, base + at, std::move(piece));
      }
    }
    x.reading = 0;
    s.plane->release_deferred();  // what differs is queued ahead of them
  }
  range_finished(self, extent, true);
}

/// `resync-checksum on`: reads and digests the extent here while the
/// secondary digests its copy; `compared` goes on once both are in.
void compare_extent(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  auto offset = extent * s.plane->md().extent_size;
  auto length = static_cast<uint32_t>(extent_bytes(self, extent));
  auto serial = s.sync.extents.at(extent).serial;
  auto current = [self, extent, serial]() -> sync_extent* {
    auto& s = self->state;
    auto it = s.sync.extents.find(extent);
    return it == s.sync.extents.end() || it->second.serial != serial ? nullptr : &it->second;
  };
  disk_op op;
  op.op = disk_op::kind::read;
  op.offset = offset;
  op.length = length;
  s.plane->submit(std::move(op), [=](disk_completion& c) {
    auto& s = self->state;
    auto* x = current();
    if (x == nullptr)
      return;  // the resync stopped meanwhile
    if (c.error != 0) {
      ++s.plane->counters().read_errors;
      spdlog::error("{}: cannot read extent {} for the resync: {}", s.config.name, extent,
                    std::strerror(c.error));
      if (!s.sync.from_secondary)
        return sync_stop(self, "local read error");
      // Copying from the secondary needs no local read: the whole extent
      // comes over, and the digests' answer is ignored.
      x->serial = ++s.sync_serial;
      return copy_from_secondary(self, extent, offset, length);
    }
    x->data = std::move(c.data);
    x->ours = digest_blocks({x->data->data(), x->data->size()});
    compared(self, extent);
  });
  self->request(s.link, caf::infinite, atom::range_digests_v, offset, length)
    .then(
      [=](block_digests& theirs) {
        activation act{self};
        auto* x = current();
        if (x == nullptr)
          return;
        x->theirs = std::move(theirs);
        compared(self, extent);
      },
      [=](caf::error& err) {
        activation act{self};
        if (current() == nullptr)
          return;
        spdlog::warn("{}: the secondary cannot digest extent {}: {}", self->state.config.name,
                     extent, self->system().render(err));
        sync_stop(self, "remote digest error");
      });
}

/// What an extent's copy moves: the ranges a verify found different, or
/// the whole extent.
std::vector<std::pair<uint64_t, uint64_t>> copy_ranges(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  auto offset = extent * s.plane->md().extent_size;
  if (auto it = s.repair_ranges.find(extent); it != s.repair_ranges.end()) {
    if (!s.sync.from_secondary)
      return it->second;
    s.repair_ranges.erase(it);
  }
  return {{offset, extent_bytes(self, extent)}};
}

void start_extent(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  // A verify's exact ranges are known to differ: no comparison for them;
  // nor with a failing local disk, whose copy is not read.
  bool compare = s.config.resync_checksum && !s.repair_ranges.count(extent)
                 && !(s.sync.from_secondary && s.plane->md().local_stale);
  auto ranges = copy_ranges(self, extent);
  auto& x = s.sync.extents[extent];
  x.serial = ++s.sync_serial;
  x.pending = static_cast<uint32_t>(ranges.size());
  for (auto& [offset, length] : ranges)
    x.bytes += length;
  s.sync.bytes_in_flight += x.bytes;
  s.sync.started_bytes += x.bytes;
  s.sync.cursor = extent + 1;
  if (compare) {
    x.pending = 1;
    x.reading = s.sync.from_secondary ? 0 : 1;
    return compare_extent(self, extent);
  }
  if (s.sync.from_secondary)
    return copy_from_secondary(self, extent, ranges[0].first,
                               static_cast<uint32_t>(ranges[0].second));
  x.reading = x.pending;
  for (auto& [offset, length] : ranges)
    send_range(self, extent, offset, static_cast<uint32_t>(length));
}

/// With `syncrate`, may another extent start now? If not, a wake-up is set.
bool rate_allows(resource_ptr self) {
  auto& s = self->state;
  auto rate = s.config.syncrate;
  if (rate == 0)
    return true;
  auto elapsed =
    std::chrono::duration<double>(std::chrono::steady_clock::now() - s.sync.started).count();
  auto allowed = static_cast<double>(rate) * elapsed + s.plane->md().extent_size;  // one extent of burst
  if (static_cast<double>(s.sync.started_bytes) < allowed)
    return true;
  if (!s.sync.tick_pending) {
    s.sync.tick_pending = true;
    auto wait = (static_cast<double>(s.sync.started_bytes) - allowed) / static_cast<double>(rate);
    self->delayed_send(self, std::chrono::milliseconds(1 + static_cast<int64_t>(wait * 1000)),
                       atom::sync_tick_v);
  }
  return false;
}

/// Bytes the dirty extents will move (a repaired extent only its ranges).
uint64_t bytes_to_sync(resource_ptr self) {
  auto& s = self->state;
  auto total = s.plane->map().sync_extents() * s.plane->md().extent_size;
  for (auto& [extent, ranges] : s.repair_ranges) {
    if (!s.plane->map().needs_sync(extent))
      continue;
    uint64_t partial = 0;
    for (auto& r : ranges)
      partial += r.second;
    // This extent moves its ranges, not all of itself.
    total = total - std::min<uint64_t>(total, s.plane->md().extent_size) + partial;
  }
  return total;
}

} // namespace

bool touches_sync(resource_ptr self, uint64_t offset, uint64_t length) {
  auto& s = self->state;
  if (s.sync.extents.empty())
    return false;
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    if (auto it = s.sync.extents.find(e); it != s.sync.extents.end())
      if (s.sync.from_secondary || it->second.reading > 0)
        return true;
  return false;
}

bool read_from_secondary(resource_ptr self, uint64_t offset, uint64_t length) {
  auto& s = self->state;
  if (!s.sync.active || !s.sync.from_secondary || !s.connected)
    return false;
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    if (s.plane->map().needs_sync(e))
      return true;
  return false;
}

bool sync_ack(resource_ptr self, uint64_t id, remote_stage stage, uint32_t error) {
  auto& s = self->state;
  auto it = s.sync.ids.find(id);
  if (it == s.sync.ids.end())
    return false;
  auto extent = it->second;
  if (stage == remote_stage::received)
    return true;
  s.sync.ids.erase(it);
  if (stage != remote_stage::written) {
    // Copying the same extent again at once would spin against a secondary
    // that cannot write it: the resync stops; the next write the secondary
    // fails, or the next connection, starts it again.
    sync_stop(self, "the secondary could not write extent " + std::to_string(extent) + ": "
                      + std::string{describe(static_cast<errc>(error))});
    return true;
  }
  range_finished(self, extent, true);
  return true;
}

void sync_pump(resource_ptr self) {
  auto& s = self->state;
  if (!s.sync.active || !s.connected)
    return;
  auto limit = clients_busy(self) ? sync_bytes_under_load : sync_bytes_in_flight;
  while (s.sync.bytes_in_flight < limit && rate_allows(self)) {
    auto e = next_candidate(self);
    if (!e)
      break;
    start_extent(self, *e);
  }
  if (s.sync.extents.empty() && s.plane->map().sync_extents() == 0)
    finish(self);
}

void sync_start(resource_ptr self) {
  auto& s = self->state;
  if (!s.connected || s.current != role::primary || s.sync.active)
    return;
  // A node whose local disk failed writes holds stale data in its dirty
  // extents: they are always copied from the secondary.
  auto from_secondary = s.sync.pending_from_secondary || s.plane->md().local_stale;
  s.sync = sync_state{};
  s.sync.active = true;
  s.sync.from_secondary = from_secondary;
  s.sync.started = std::chrono::steady_clock::now();
  s.sync.total_bytes = bytes_to_sync(self);
  if (s.sync.total_bytes > 0) {
    spdlog::info("{}: synchronization started: {} bytes to go", s.config.name, s.sync.total_bytes);
    event(self, "syncstart", {},
          {{"bytes", std::to_string(s.sync.total_bytes)},
           {"direction", from_secondary ? "secondary->primary" : "primary->secondary"}});
  }
  sync_pump(self);
}

void sync_stop(resource_ptr self, const std::string& why) {
  auto& s = self->state;
  if (!s.sync.active)
    return;
  spdlog::warn("{}: synchronization interrupted ({}) after {} bytes", s.config.name, why,
               s.sync.done_bytes);
  s.sync.active = false;
  s.sync.extents.clear();
  s.sync.ids.clear();
  s.sync.bytes_in_flight = 0;
  event(self, "syncintr", {}, {{"reason", why}, {"done", std::to_string(s.sync.done_bytes)}});
  self->state.plane->release_deferred();
}

void mark_for_sync(resource_ptr self, uint64_t offset, uint64_t length) {
  auto& s = self->state;
  s.plane->map().mark_sync(offset, length);
  if (s.repair_ranges.empty())
    return;
  // The whole extent is dirty now, not only the ranges a verify found.
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    s.repair_ranges.erase(e);
}

void sync_ranges(resource_ptr self, uint64_t extent,
                 const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  auto& s = self->state;
  if (ranges.empty())
    return;
  if (s.plane->map().needs_sync(extent)) {
    s.repair_ranges.erase(extent);  // the whole extent goes anyway
    return;
  }
  auto& mine = s.repair_ranges[extent];
  mine.insert(mine.end(), ranges.begin(), ranges.end());
  for (auto& [offset, length] : ranges)
    s.plane->map().mark_sync(offset, length);
  self->state.plane->persist([](bool) {});
  if (s.sync.active) {
    for (auto& r : ranges)
      s.sync.total_bytes += r.second;
    sync_pump(self);
  } else {
    sync_start(self);
  }
}

} // namespace hast
