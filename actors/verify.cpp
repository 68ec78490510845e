// The online verify (hastctl verify): the primary walks the data region
// extent by extent; for each, it reads and hashes its own copy while the
// secondary does the same with its copy, and only the hashes (one xxh3-64
// per 4 KiB block) cross the wire. Differing blocks are logged, counted and
// listed; with --repair each differing range is marked dirty and the resync
// copies exactly those ranges from the primary.
//
// Interlock with client writes, as the resync's: an extent is verified only
// when no client write to it is in flight, and writes to it that arrive
// meanwhile wait until both hashes are in. The secondary hashes a range only
// after the writes to it that arrived before the request are done. So a
// concurrent write never shows as a difference. Extents waiting for a
// resync are known to differ and are skipped (counted as skipped).
//
// Nothing of a verify is persisted: a node killed during one restarts
// without it; the verify simply did not finish.

#include "actors/resource.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

namespace hast {

namespace {

uint64_t extent_count(resource_ptr self) {
  auto& md = self->state.plane->md();
  return (md.datasize + md.extent_size - 1) / md.extent_size;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void finish(resource_ptr self, const std::string& outcome) {
  auto& s = self->state;
  auto& v = s.verify;
  v.active = false;
  v.outcome = outcome;
  v.ended = std::chrono::steady_clock::now();
  v.extents.clear();
  v.later.clear();
  auto seconds = std::chrono::duration<double>(v.ended - v.started).count();
  spdlog::log(v.differing_blocks > 0 ? spdlog::level::warn : spdlog::level::info,
              "{}: verify {}: {} differing blocks of {} bytes, {} of {} bytes compared, {} "
              "skipped (waiting for a resync), {:.1f} s",
              s.config.name, outcome, v.differing_blocks, verify_block_size,
              v.done_bytes - v.skipped_bytes, v.total_bytes, v.skipped_bytes, seconds);
  event(self, "verify", {{"differing", std::to_string(v.differing_blocks)}, {"outcome", outcome}});
  self->state.plane->release_deferred();
}

/// With `syncrate`, may another extent start now? If not, a wake-up is set.
bool verify_rate_allows(resource_ptr self) {
  auto& s = self->state;
  auto& v = s.verify;
  auto rate = s.config.syncrate;
  if (rate == 0)
    return true;
  auto allowed = static_cast<double>(rate) * seconds_since(v.started) + s.plane->md().extent_size;
  if (static_cast<double>(v.started_bytes) < allowed)
    return true;
  if (!v.tick_pending) {
    v.tick_pending = true;
    auto wait = (static_cast<double>(v.started_bytes) - allowed) / static_cast<double>(rate);
    self->delayed_send(self, std::chrono::milliseconds(1 + static_cast<int64_t>(wait * 1000)),
                       atom::verify_tick_v);
  }
  return false;
}

/// Adds a differing range to the list, in offset order, merged with the
/// ranges it touches (extents finish out of order, so a run across an
/// extent boundary arrives in pieces).
void add_difference(verify_state& v, uint64_t offset, uint64_t length) {
  auto next = v.differences.upper_bound(offset);
  if (next != v.differences.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += length;
      if (next != v.differences.end() && prev->first + prev->second == next->first) {
        prev->second += next->second;
        v.differences.erase(next);
      }
      return;
    }
  }
  if (next != v.differences.end() && offset + length == next->first) {
    length += next->second;
    v.differences.erase(next);
    v.differences.emplace(offset, length);
    return;
  }
  if (v.differences.size() < verify_ranges_listed)
    v.differences.emplace(offset, length);
  else
    v.truncated = true;
}

/// Records the differing blocks of one extent; returns them as byte ranges.
std::vector<std::pair<uint64_t, uint64_t>> record_differences(resource_ptr self, uint64_t extent,
                                                              const verify_extent& x) {
  auto& s = self->state;
  auto& v = s.verify;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  auto base = extent * s.plane->md().extent_size;
  auto end = base + extent_bytes(self, extent);
  for (auto [first, count] : differing_runs(*x.local, *x.remote)) {
    auto offset = base + first * verify_block_size;
    auto length = std::min<uint64_t>(count * verify_block_size, end - offset);
    v.differing_blocks += count;
    spdlog::warn("{}: verify: blocks differ at offset {} length {}", s.config.name, offset, length);
    ranges.emplace_back(offset, length);
    add_difference(v, offset, length);
  }
  return ranges;
}

/// Both hashes of an extent are in: compare, and go on.
void compare(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  auto& v = s.verify;
  auto it = v.extents.find(extent);
  if (it == v.extents.end() || !it->second.local || !it->second.remote)
    return;
  auto x = std::move(it->second);
  v.extents.erase(it);
  v.done_bytes += extent_bytes(self, extent);
  auto ranges = record_differences(self, extent, x);
  self->state.plane->release_deferred();
  if (v.repair && !ranges.empty()) {
    for (auto& r : ranges)
      v.repaired_bytes += r.second;
    sync_ranges(self, extent, ranges);
  }
  verify_pump(self);
}

void start_verify_extent(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  auto& v = s.verify;
  auto run = v.run;
  auto offset = extent * s.plane->md().extent_size;
  auto length = static_cast<uint32_t>(extent_bytes(self, extent));
  v.extents[extent] = {};
  v.started_bytes += length;
  disk_op op;
  op.op = disk_op::kind::read;
  op.offset = offset;
  op.length = length;
  self->state.plane->submit(std::move(op), [=](disk_completion& c) {
    auto& v = self->state.verify;
    if (!v.active || v.run != run || !v.extents.count(extent))
      return;
    if (c.error != 0) {
      ++self->state.plane->counters().read_errors;
      return verify_interrupt(self, std::string{"local read error at offset "}
                                      + std::to_string(offset) + ": " + std::strerror(c.error));
    }
    v.extents[extent].local = hash_blocks({c.data->data(), c.data->size()});
    compare(self, extent);
  });
  // No timeout of its own: a dead link fails the request (the link has its
  // keepalive and timeout), and a slow one only slows the verify.
  self->request(s.link, caf::infinite, atom::verify_range_v, offset, length)
    .then(
      [=](block_hashes& theirs) {
        activation act{self};
        auto& v = self->state.verify;
        if (!v.active || v.run != run || !v.extents.count(extent))
          return;
        if (theirs.block_size != verify_block_size
            || theirs.hashes.size() != (length + verify_block_size - 1) / verify_block_size)
          return verify_interrupt(self, "the secondary answered hashes of another shape");
        v.extents[extent].remote = std::move(theirs);
        compare(self, extent);
      },
      [=](caf::error& err) {
        activation act{self};
        auto& v = self->state.verify;
        if (!v.active || v.run != run)
          return;
        verify_interrupt(self, "the secondary could not hash offset " + std::to_string(offset)
                                 + ": " + self->system().render(err));
      });
}

enum class pick { start, skip, later };

/// An extent waiting for a resync: known to differ, counted, not compared.
void skip(resource_ptr self, uint64_t extent) {
  auto& v = self->state.verify;
  v.skipped_bytes += extent_bytes(self, extent);
  v.done_bytes += extent_bytes(self, extent);
}

/// What to do with an extent now.
pick judge(resource_ptr self, uint64_t extent) {
  auto& s = self->state;
  if (s.plane->map().needs_sync(extent) && !s.sync.extents.count(extent))
    return pick::skip;  // known to differ; the resync copies it
  if (s.plane->busy(extent) || s.sync.extents.count(extent))
    return pick::later;
  return pick::start;
}

} // namespace

caf::result<std::string> verify_command(resource_ptr self, bool repair, bool stop) {
  auto& s = self->state;
  auto& v = s.verify;
  if (stop) {
    if (!v.active)
      return caf::make_error(errc::invalid_argument, "no verify is running");
    finish(self, "stopped");
    return std::string{"verify stopped"};
  }
  if (s.current != role::primary)
    return caf::make_error(errc::not_primary,
                           "the resource is " + to_string(s.current)
                             + "; run verify on the primary");
  if (!s.connected)
    return caf::make_error(errc::disconnected,
                           "the secondary is not connected"
                             + (s.peer_error.empty() ? std::string{} : " (" + s.peer_error + ")"));
  if (v.active)
    return caf::make_error(errc::busy, "a verify is already running");
  auto run = v.run + 1;
  v = verify_state{};
  v.run = run;
  v.active = true;
  v.repair = repair;
  v.outcome = "running";
  v.total_bytes = s.plane->md().datasize;
  v.started = std::chrono::steady_clock::now();
  spdlog::info("{}: verify started ({} bytes{})", s.config.name, v.total_bytes,
               repair ? "; differences are copied from this node" : "");
  verify_pump(self);
  return std::string{repair ? "verify started (differences are repaired from this node)"
                            : "verify started"};
}

void verify_pump(resource_ptr self) {
  auto& s = self->state;
  auto& v = s.verify;
  if (!v.active || !s.connected || !s.plane->is_open())
    return;
  auto count = extent_count(self);
  auto width = clients_busy(self) ? verify_extents_under_load : verify_extents_in_flight;
  // Extents passed over earlier first, then onwards.
  for (size_t n = v.later.size(); n > 0 && v.extents.size() < width; --n) {
    auto e = v.later.front();
    v.later.pop_front();
    switch (judge(self, e)) {
      case pick::skip: skip(self, e); break;
      case pick::later: v.later.push_back(e); break;
      case pick::start:
        if (!verify_rate_allows(self)) {
          v.later.push_front(e);
          return;
        }
        start_verify_extent(self, e);
        break;
    }
  }
  while (v.cursor < count && v.extents.size() < width) {
    auto e = v.cursor;
    auto what = judge(self, e);
    if (what == pick::start && !verify_rate_allows(self))
      return;
    ++v.cursor;
    switch (what) {
      case pick::skip: skip(self, e); break;
      case pick::later: v.later.push_back(e); break;
      case pick::start: start_verify_extent(self, e); break;
    }
  }
  if (v.cursor >= count && v.later.empty() && v.extents.empty())
    finish(self, "complete");
}

void verify_interrupt(resource_ptr self, const std::string& why) {
  auto& v = self->state.verify;
  if (!v.active)
    return;
  spdlog::warn("{}: verify interrupted: {}", self->state.config.name, why);
  finish(self, "interrupted");
}

bool verifying_extent(resource_ptr self, uint64_t extent) {
  return self->state.verify.extents.count(extent) > 0;
}

bool touches_verify(resource_ptr self, uint64_t offset, uint64_t length) {
  auto& s = self->state;
  if (s.verify.extents.empty())
    return false;
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    if (s.verify.extents.count(e))
      return true;
  return false;
}

verify_progress verify_status(resource_ptr self) {
  auto& v = self->state.verify;
  verify_progress p;
  p.active = v.active;
  p.repair = v.repair;
  p.outcome = v.outcome;
  p.done_bytes = v.done_bytes;
  p.total_bytes = v.total_bytes;
  p.skipped_bytes = v.skipped_bytes;
  p.block_size = verify_block_size;
  p.differing_blocks = v.differing_blocks;
  p.repaired_bytes = v.repaired_bytes;
  for (auto& [offset, length] : v.differences)
    p.differences.push_back({offset, length});
  p.differences_truncated = v.truncated;
  if (v.outcome != "none") {
    auto seconds = v.active ? seconds_since(v.started)
                            : std::chrono::duration<double>(v.ended - v.started).count();
    if (seconds > 0)
      p.bytes_per_second = static_cast<uint64_t>(static_cast<double>(v.done_bytes) / seconds);
    if (v.active && p.bytes_per_second > 0)
      p.eta_seconds = (v.total_bytes - std::min(v.done_bytes, v.total_bytes)) / p.bytes_per_second;
  }
  return p;
}

namespace {

bool range_busy(resource_ptr self, uint64_t offset, uint32_t length) {
  auto& s = self->state;
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    if (s.plane->busy(e))
      return true;
  return false;
}

/// Reads [offset, +length) once no write to it is in flight and answers
/// `promise` with `hash` of the bytes read.
template <class Hashes, class Hash>
caf::result<Hashes> hashes_of(resource_ptr self, uint64_t offset, uint32_t length, Hash hash) {
  auto& s = self->state;
  if (s.current != role::secondary || !s.plane->is_open())
    return caf::make_error(errc::invalid_argument,
                           "the resource is " + to_string(s.current) + ", not secondary");
  if (length == 0 || offset > s.plane->md().datasize || length > s.plane->md().datasize - offset)
    return caf::make_error(errc::invalid_argument, "hashed range outside the data region");
  auto promise = self->make_response_promise<Hashes>();
  hash_request req;
  req.offset = offset;
  req.length = length;
  req.refuse = [promise](caf::error err) mutable { promise.deliver(std::move(err)); };
  req.run = [self, offset, length, promise, hash]() mutable {
    disk_op op;
    op.op = disk_op::kind::read;
    op.offset = offset;
    op.length = length;
    self->state.plane->submit(std::move(op), [=](disk_completion& c) mutable {
      if (c.error != 0) {
        ++self->state.plane->counters().read_errors;
        spdlog::error("{}: cannot read offset {} to hash it for the primary: {}",
                      self->state.config.name, offset, std::strerror(c.error));
        promise.deliver(caf::make_error(errc::io_error, std::strerror(c.error)));
        return;
      }
      promise.deliver(hash({c.data->data(), c.data->size()}));
    });
  };
  if (range_busy(self, offset, length))
    s.hash_waiting.push_back(std::move(req));
  else
    req.run();
  return promise;
}

} // namespace

caf::result<block_hashes> hash_range(resource_ptr self, uint64_t offset, uint32_t length) {
  return hashes_of<block_hashes>(self, offset, length, [](std::span<const uint8_t> data) {
    return hash_blocks(data);
  });
}

caf::result<block_digests> digest_range(resource_ptr self, uint64_t offset, uint32_t length) {
  return hashes_of<block_digests>(self, offset, length, [](std::span<const uint8_t> data) {
    return digest_blocks(data);
  });
}

void serve_hash_requests(resource_ptr self) {
  auto& s = self->state;
  auto waiting = std::move(s.hash_waiting);
  s.hash_waiting.clear();
  for (auto& req : waiting) {
    if (range_busy(self, req.offset, req.length))
      s.hash_waiting.push_back(std::move(req));
    else
      req.run();
  }
}

} // namespace hast
