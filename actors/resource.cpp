#include "actors/resource.hpp"

#include "actors/disk_io.hpp"
#include "actors/peer.hpp"
#include "io/hooks.hpp"
#include "io/nbd_protocol.hpp"
#include "io/nbd_server.hpp"
#include "io/peer_transport.hpp"
#include "io/provider.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>

namespace hast {

namespace {

using self_ptr = resource_actor::stateful_pointer<resource_state>;

// The export as an NBD session sees it: every call becomes a typed message to
// the resource actor. Holds the actor weakly so that a lingering connection
// does not keep a stopped resource alive.
class resource_backend final : public nbd::backend,
                               public std::enable_shared_from_this<resource_backend> {
public:
  explicit resource_backend(caf::weak_actor_ptr resource) : resource_(std::move(resource)) {}

  void open(std::function<void(nbd::open_result)> done) override {
    auto hdl = lock();
    if (!hdl) {
      done({"the resource is shutting down", {}});
      return;
    }
    auto self = shared_from_this();
    caf::anon_send(hdl, atom::nbd_open_v, nbd_open_call{[self, done](nbd::open_result r) {
                     self->opened_ = r.error.empty();
                     done(std::move(r));
                   }});
  }

  void read(uint64_t offset, uint32_t length, nbd::read_done_fn done) override {
    nbd_call call;
    call.kind = nbd_call::op::read;
    call.offset = offset;
    call.length = length;
    call.read_done = std::move(done);
    submit(std::move(call));
  }

  void write(uint64_t offset, buffer_ptr data, bool fua, nbd::done_fn done) override {
    nbd_call call;
    call.kind = nbd_call::op::write;
    call.offset = offset;
    call.length = static_cast<uint32_t>(data->size());
    call.data = std::move(data);
    call.fua = fua;
    call.done = std::move(done);
    submit(std::move(call));
  }

  void flush(nbd::done_fn done) override {
    nbd_call call;
    call.kind = nbd_call::op::flush;
    call.done = std::move(done);
    submit(std::move(call));
  }

  void trim(uint64_t offset, uint32_t length, bool fua, nbd::done_fn done) override {
    nbd_call call;
    call.kind = nbd_call::op::trim;
    call.offset = offset;
    call.length = length;
    call.fua = fua;
    call.done = std::move(done);
    submit(std::move(call));
  }

  void write_zeroes(uint64_t offset, uint32_t length, bool may_trim, bool fua,
                    nbd::done_fn done) override {
    nbd_call call;
    call.kind = nbd_call::op::write_zeroes;
    call.offset = offset;
    call.length = length;
    call.may_trim = may_trim;
    call.fua = fua;
    call.done = std::move(done);
    submit(std::move(call));
  }

  void close() override {
    if (opened_.exchange(false))
      if (auto hdl = lock())
        caf::anon_send(hdl, atom::nbd_close_v);
  }

private:
  resource_actor lock() const {
    return caf::actor_cast<resource_actor>(resource_.lock());
  }

  void submit(nbd_call call) {
    if (auto hdl = lock()) {
      caf::anon_send(hdl, atom::nbd_v, std::move(call));
      return;
    }
    if (call.kind == nbd_call::op::read)
      call.read_done(nbd::eshutdown, nullptr);
    else
      call.done(nbd::eshutdown);
  }

  caf::weak_actor_ptr resource_;
  std::atomic<bool> opened_{false};
};

void complete(nbd_call& call, uint32_t error, buffer_ptr data = nullptr) {
  if (call.kind == nbd_call::op::read)
    call.read_done(error, std::move(data));
  else
    call.done(error);
}

disk_io_actor& pick_disk(self_ptr self) {
  auto& s = self->state;
  auto& disk = s.disks[s.next_disk];
  s.next_disk = (s.next_disk + 1) % s.disks.size();
  return disk;
}

/// Runs the `exec` hook for an event of this resource (never waits).
void event(self_ptr self, const std::string& name, std::vector<std::string> more = {}) {
  auto& s = self->state;
  std::vector<std::string> args{name, s.config.name};
  args.insert(args.end(), more.begin(), more.end());
  run_hook(s.config.exec, std::move(args));
}

/// Both nodes were written as primary while apart: report it (once per
/// detection) and leave the resolution to the administrator.
void detect_split_brain(self_ptr self) {
  auto& s = self->state;
  if (s.split_brain)
    return;
  s.split_brain = true;
  spdlog::error("{}: split brain: both nodes were written as primary while apart; choose the "
                "node to discard and run 'hastctl resync --discard-local {}' there (as secondary)",
                s.config.name, s.config.name);
  event(self, "split-brain");
}

/// Writes metadata and activemap through the metadata writer; `then` runs
/// with true once they are on disk.
void persist(self_ptr self, std::function<void(bool)> then) {
  auto& s = self->state;
  s.md.bitmap = s.map->bitmap();
  ++s.counters.activemap_updates;
  self->request(s.metadata_writer, caf::infinite, atom::metadata_v, s.md, s.config.metaflush)
    .then(
      [=](uint64_t sequence) {
        self->state.md.sequence = sequence;
        then(true);
      },
      [=](caf::error& err) {
        spdlog::error("{}: cannot write metadata: {}", self->state.config.name,
                      self->system().render(err));
        ++self->state.counters.write_errors;
        then(false);
      });
}

void finish_drain(self_ptr self);

/// An I/O request finished; a drain waits for the last one.
void io_done(self_ptr self) {
  auto& s = self->state;
  --s.in_flight;
  if (s.draining && s.in_flight == 0)
    finish_drain(self);
}

uint64_t first_extent(self_ptr self, uint64_t offset) {
  return offset / self->state.md.extent_size;
}

uint64_t last_extent(self_ptr self, uint64_t offset, uint64_t length) {
  return (offset + std::max<uint64_t>(length, 1) - 1) / self->state.md.extent_size;
}

// --- the peer ----------------------------------------------------------------------------------

void sync_stop(self_ptr self, const std::string& why);
void sync_pump(self_ptr self);
void on_remote_ack(self_ptr self, uint64_t id, remote_stage stage, uint32_t error);

void stop_peer(self_ptr self) {
  auto& s = self->state;
  if (!s.link)
    return;
  s.retired.insert(s.link.address());
  self->send_exit(s.link, caf::exit_reason::user_shutdown);
  s.link = nullptr;
  s.connected = false;
  sync_stop(self, "role change");
  // The stopped peer sends no more acknowledgements: what waited fails now.
  std::vector<uint64_t> waiting;
  for (auto& [id, t] : s.tracks)
    if (!t.remote_final)
      waiting.push_back(id);
  for (auto id : waiting)
    on_remote_ack(self, id, remote_stage::failed, static_cast<uint32_t>(errc::disconnected));
}

void start_peer(self_ptr self, role side) {
  auto& s = self->state;
  if (s.config.standalone() || s.link)
    return;
  connector connect = s.io.connect;
  if (side == role::primary && !connect) {
    auto io = s.io.io;
    auto remote = s.config.remote;
    auto source = s.config.source;
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(s.config.timeout));
    connect = [io, remote, source, timeout](std::function<void(status, peer_link_ptr)> done) {
      peer::connect(*io, remote, source, timeout,
                    [done, timeout](status st, std::shared_ptr<peer::connection> conn) {
                      if (!st)
                        return done(std::move(st), nullptr);
                      done(status::ok(), make_tcp_link(std::move(conn), peer::default_keepalive,
                                                       timeout));
                    });
    };
  }
  s.link = self->spawn<caf::linked>(replication_peer, s.config, s.node, side,
                                    caf::actor_cast<resource_actor>(self), connect);
}

// --- client writes -----------------------------------------------------------------------------

bool touches_sync(self_ptr self, uint64_t offset, uint64_t length) {
  auto& s = self->state;
  if (s.sync.extents.empty())
    return false;
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    if (s.sync.extents.count(e))
      return true;
  return false;
}

void mark_busy(self_ptr self, const nbd_call& call, int delta) {
  if (call.kind == nbd_call::op::flush)
    return;
  auto& busy = self->state.busy;
  for (auto e = first_extent(self, call.offset); e <= last_extent(self, call.offset, call.length);
       ++e) {
    auto& n = busy[e];
    n += delta;
    if (n == 0)
      busy.erase(e);
  }
}

/// Settles a tracked write once enough acknowledgements are in: the client
/// first (per the mode's policy), the activemap last (both sides final).
void settle(self_ptr self, uint64_t id) {
  auto& s = self->state;
  auto it = s.tracks.find(id);
  if (it == s.tracks.end())
    return;
  auto& t = it->second;
  auto client_may_go = t.local_done && (t.remote_satisfied || !s.policy.client_waits());
  if (!t.client_told && client_may_go) {
    t.client_told = true;
    complete(t.call, t.local_error);
  }
  if (!(t.local_done && t.remote_final))
    return;
  auto call = std::move(t.call);
  auto remote_failed = t.remote_failed;
  s.tracks.erase(it);
  if (call.kind != nbd_call::op::flush) {
    // What the secondary did not confirm stays dirty for the resync.
    if (remote_failed && !s.config.standalone())
      s.map->mark_sync(call.offset, call.length);
    if (s.map->write_complete(call.offset, call.length))
      persist(self, [](bool) {});
    mark_busy(self, call, -1);
  }
  io_done(self);
  if (s.sync.active && s.sync.extents.size() < sync_extents_in_flight)
    sync_pump(self);
}

std::pair<uint64_t, uint64_t> byte_range(const nbd_call& call) {
  return {call.offset, call.offset + std::max<uint32_t>(call.length, 1)};
}

bool overlaps_local(self_ptr self, std::pair<uint64_t, uint64_t> r) {
  for (auto& [id, other] : self->state.local_ranges)
    if (r.first < other.second && other.first < r.second)
      return true;
  return false;
}

void handle_write(self_ptr self, nbd_call call);

/// Starts the ordered writes that no longer overlap a running one, keeping
/// arrival order among those that still overlap each other.
void release_ordered(self_ptr self) {
  auto& s = self->state;
  if (s.ordered.empty())
    return;
  std::deque<nbd_call> still;
  auto waiting = std::move(s.ordered);
  s.ordered.clear();
  for (auto& call : waiting) {
    auto r = byte_range(call);
    bool blocked = overlaps_local(self, r);
    for (auto& earlier : still) {
      auto e = byte_range(earlier);
      blocked = blocked || (r.first < e.second && e.first < r.second);
    }
    if (blocked)
      still.push_back(std::move(call));
    else
      handle_write(self, std::move(call));
  }
  for (auto& call : s.ordered)  // queued again meanwhile: keep them behind
    still.push_back(std::move(call));
  s.ordered = std::move(still);
}

void local_part(self_ptr self, uint64_t id, const nbd_call& call) {
  auto& disk = pick_disk(self);
  auto ok = [self, id](uint64_t) {
    auto& s = self->state;
    if (auto it = s.tracks.find(id); it != s.tracks.end())
      it->second.local_done = true;
    if (s.local_ranges.erase(id) > 0)
      release_ordered(self);
    settle(self, id);
  };
  auto failed = [self, id](caf::error& err) {
    auto& s = self->state;
    if (s.local_ranges.erase(id) > 0)
      release_ordered(self);
    spdlog::error("{}: local request failed: {}", s.config.name, self->system().render(err));
    if (auto it = s.tracks.find(id); it != s.tracks.end()) {
      auto& t = it->second;
      t.local_done = true;
      t.local_error = nbd::eio;
      if (t.call.kind == nbd_call::op::flush)
        ++s.counters.flush_errors;
      else if (t.call.kind == nbd_call::op::trim)
        ++s.counters.delete_errors;
      else
        ++s.counters.write_errors;
    }
    settle(self, id);
  };
  switch (call.kind) {
    case nbd_call::op::write:
      self->request(disk, caf::infinite, atom::write_v, call.offset, call.data, call.fua)
        .then(ok, failed);
      break;
    case nbd_call::op::trim:
      self->request(disk, caf::infinite, atom::discard_v, call.offset, uint64_t{call.length})
        .then(ok, failed);
      break;
    case nbd_call::op::write_zeroes:
      self->request(disk, caf::infinite, atom::zeroes_v, call.offset, uint64_t{call.length},
                    call.may_trim)
        .then(ok, failed);
      break;
    default:
      self->request(disk, caf::infinite, atom::flush_v).then(ok, failed);
      break;
  }
}

peer::msg_type wire_type(nbd_call::op kind) {
  switch (kind) {
    case nbd_call::op::write: return peer::msg_type::write;
    case nbd_call::op::trim: return peer::msg_type::trim;
    case nbd_call::op::write_zeroes: return peer::msg_type::write_zeroes;
    default: return peer::msg_type::flush;
  }
}

void remote_part(self_ptr self, uint64_t id, const nbd_call& call) {
  auto& s = self->state;
  auto& t = s.tracks[id];
  if (!s.connected) {
    t.remote_satisfied = t.remote_final = t.remote_failed = true;
    return;
  }
  replicate_call rc;
  rc.id = id;
  rc.type = wire_type(call.kind);
  rc.offset = call.offset;
  rc.length = call.length;
  rc.data = call.data;
  if (call.fua)
    rc.flags |= peer::flag_fua;
  if (call.may_trim)
    rc.flags |= peer::flag_may_trim;
  if (s.policy.ask_received && call.kind == nbd_call::op::write && !call.fua)
    rc.flags |= peer::flag_memsync;
  self->send(s.link, atom::replicate_v, std::move(rc));
}

/// Counts a request and, for a write, marks its extents busy and in the
/// activemap. True when the map must reach the disk before the data write:
/// an extent is marked on disk before any write to it is issued, so after a
/// crash every possibly-written extent is dirty.
bool account_write(self_ptr self, const nbd_call& call) {
  auto& s = self->state;
  if (call.kind == nbd_call::op::flush) {
    ++s.counters.flushes;
    return false;
  }
  call.kind == nbd_call::op::trim ? ++s.counters.deletes : ++s.counters.writes;
  mark_busy(self, call, +1);
  return s.map->write_start(call.offset, call.length);
}

/// The generation rule (HAST's): the first write after the resource was
/// created, and the first write of every outage, raise localcnt before the
/// write is issued, so that the nodes can later tell who changed what.
bool bump_generation(self_ptr self) {
  auto& s = self->state;
  if (s.config.standalone())
    return false;
  if (s.md.localcnt != 0 && (s.connected || s.bumped))
    return false;
  ++s.md.localcnt;
  s.bumped = !s.connected;
  // Connected, the secondary receives this very write: it knows the new
  // generation too, or a later connect would look like a split brain.
  if (s.connected)
    self->send(s.link, atom::sync_done_v, s.md.localcnt, false);
  spdlog::info("{}: generation raised to {} ({})", s.config.name, s.md.localcnt,
               s.connected ? "first write" : "first write while the peer is away");
  return true;
}

void handle_write(self_ptr self, nbd_call call) {
  auto& s = self->state;
  // A write to an extent being resynced waits for that extent: otherwise the
  // older sync data could overtake it on the secondary.
  if (call.kind != nbd_call::op::flush && touches_sync(self, call.offset, call.length)) {
    s.deferred.push_back(std::move(call));
    return;
  }
  if (call.kind != nbd_call::op::flush) {
    auto r = byte_range(call);
    bool blocked = overlaps_local(self, r);
    for (auto& earlier : s.ordered) {
      auto e = byte_range(earlier);
      blocked = blocked || (r.first < e.second && e.first < r.second);
    }
    if (blocked) {
      s.ordered.push_back(std::move(call));
      return;
    }
  }
  ++s.in_flight;
  auto id = s.next_id++;
  if (call.kind != nbd_call::op::flush)
    s.local_ranges[id] = byte_range(call);
  bool must_persist = account_write(self, call);
  if (call.kind != nbd_call::op::flush) {
    must_persist = bump_generation(self) || must_persist;
    if (!s.connected && !s.config.standalone())
      s.map->mark_sync(call.offset, call.length);
  }
  s.tracks[id].call = std::move(call);
  auto go = [self, id](bool map_on_disk) {
    auto& s = self->state;
    auto it = s.tracks.find(id);
    if (it == s.tracks.end())
      return;
    auto& t = it->second;
    if (!map_on_disk) {
      // Without the extent marked on disk a crash could lose track of it.
      t.local_done = t.remote_final = t.remote_satisfied = true;
      t.remote_failed = false;
      t.local_error = nbd::eio;
      if (s.local_ranges.erase(id) > 0)
        release_ordered(self);
      return settle(self, id);
    }
    remote_part(self, id, t.call);
    local_part(self, id, s.tracks[id].call);
  };
  if (must_persist)
    persist(self, go);
  else
    go(true);
}

void release_deferred(self_ptr self) {
  auto& s = self->state;
  if (s.deferred.empty())
    return;
  auto pending = std::move(s.deferred);
  s.deferred.clear();
  for (auto& call : pending)
    handle_write(self, std::move(call));
}

/// One extent of a resync is copied (or failed and stays dirty).
void sync_extent_finished(self_ptr self, uint64_t extent, bool copied_ok) {
  auto& s = self->state;
  s.sync.extents.erase(extent);
  if (copied_ok && s.map) {
    s.map->clear_sync(extent);
    auto off = extent * s.md.extent_size;
    auto copied = std::min<uint64_t>(s.md.extent_size, s.md.datasize - off);
    s.sync.done_bytes += copied;
    s.synced_total += copied;
    if (++s.sync.since_persist >= 16) {
      s.sync.since_persist = 0;
      persist(self, [](bool) {});
    }
  }
  release_deferred(self);
  sync_pump(self);
}

void on_remote_ack(self_ptr self, uint64_t id, remote_stage stage, uint32_t error) {
  auto& s = self->state;
  if (auto it = s.sync.ids.find(id); it != s.sync.ids.end()) {
    auto extent = it->second;
    s.sync.ids.erase(it);
    if (stage == remote_stage::received)
      return;
    if (stage != remote_stage::written)
      spdlog::warn("{}: resync of extent {} failed ({})", s.config.name, extent,
                   describe(static_cast<errc>(error)));
    sync_extent_finished(self, extent, stage == remote_stage::written);
    return;
  }
  auto it = s.tracks.find(id);
  if (it == s.tracks.end())
    return;
  auto& t = it->second;
  // FUA promises durability on both disks: it waits for "written".
  switch (stage) {
    case remote_stage::received:
      if (!t.call.fua)
        t.remote_satisfied = t.remote_satisfied || s.policy.satisfies(stage);
      break;
    case remote_stage::written:
      t.remote_satisfied = t.remote_final = true;
      break;
    case remote_stage::failed:
      t.remote_satisfied = t.remote_final = t.remote_failed = true;
      break;
  }
  settle(self, id);
}

// --- resync: primary to secondary --------------------------------------------------------------

std::optional<uint64_t> next_sync_candidate(self_ptr self) {
  auto& s = self->state;
  auto usable = [&](uint64_t e) { return !s.sync.extents.count(e) && !s.busy.count(e); };
  for (int pass = 0; pass < 2; ++pass) {
    auto from = pass == 0 ? s.sync.cursor : 0;
    for (auto e = s.map->next_sync(from); e; e = s.map->next_sync(*e + 1)) {
      if (pass == 1 && *e >= s.sync.cursor)
        break;
      if (usable(*e))
        return e;
    }
  }
  return std::nullopt;
}

void sync_finish(self_ptr self) {
  auto& s = self->state;
  s.sync.active = false;
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.sync.started).count();
  if (s.sync.done_bytes > 0) {
    spdlog::info("{}: synchronization complete: {} bytes in {:.1f} s", s.config.name,
                 s.sync.done_bytes, seconds);
    event(self, "syncdone");
  } else
    spdlog::info("{}: nodes are in sync", s.config.name);
  if (s.sync.from_secondary) {
    // We now hold the secondary's data, and with it its generation.
    s.md.localcnt = std::max(s.md.localcnt, s.md.remotecnt);
    spdlog::info("{}: caught up with the secondary; reads are local again", s.config.name);
  }
  s.sync.from_secondary = false;
  persist(self, [](bool) {});
  self->send(s.link, atom::sync_done_v, s.md.localcnt, true);
}

/// Secondary to primary: read the extent from the peer, write it here.
void sync_extent_from_secondary(self_ptr self, uint64_t extent, uint64_t offset, uint32_t length) {
  auto& s = self->state;
  self->request(s.link, std::chrono::seconds(s.config.timeout), atom::remote_read_v, offset, length)
    .then(
      [=](buffer_ptr& data) {
        auto& s = self->state;
        if (!s.sync.active) {
          s.sync.extents.erase(extent);
          return;
        }
        s.sync.wire_bytes += length;
        self->request(pick_disk(self), caf::infinite, atom::write_v, offset, data, false)
          .then([=](uint64_t) { sync_extent_finished(self, extent, true); },
                [=](caf::error& err) {
                  ++self->state.counters.write_errors;
                  spdlog::error("{}: cannot write synced extent {}: {}", self->state.config.name,
                                extent, self->system().render(err));
                  sync_extent_finished(self, extent, false);
                  sync_stop(self, "local write error");
                });
      },
      [=](caf::error& err) {
        spdlog::warn("{}: cannot read extent {} from the secondary: {}", self->state.config.name,
                     extent, self->system().render(err));
        self->state.sync.extents.erase(extent);
        sync_stop(self, "remote read error");
      });
}

void sync_start_extent(self_ptr self, uint64_t extent) {
  auto& s = self->state;
  s.sync.extents.insert(extent);
  s.sync.cursor = extent + 1;
  auto offset = extent * s.md.extent_size;
  auto length = static_cast<uint32_t>(std::min<uint64_t>(s.md.extent_size, s.md.datasize - offset));
  if (s.sync.from_secondary)
    return sync_extent_from_secondary(self, extent, offset, length);
  self->request(pick_disk(self), caf::infinite, atom::read_v, offset, length)
    .then(
      [=](buffer_ptr& data) {
        auto& s = self->state;
        if (!s.connected || !s.sync.active) {
          s.sync.extents.erase(extent);
          return;
        }
        auto id = s.next_id++;
        s.sync.ids[id] = extent;
        s.sync.wire_bytes += length;
        replicate_call rc;
        rc.id = id;
        rc.type = peer::msg_type::write;
        rc.flags = peer::flag_sync;
        rc.offset = offset;
        rc.length = length;
        rc.data = std::move(data);
        self->send(s.link, atom::replicate_v, std::move(rc));
      },
      [=](caf::error& err) {
        auto& s = self->state;
        ++s.counters.read_errors;
        spdlog::error("{}: cannot read extent {} for the resync: {}", s.config.name, extent,
                      self->system().render(err));
        s.sync.extents.erase(extent);
        sync_stop(self, "local read error");
      });
}

/// With `syncrate`, may another extent start now? If not, a wake-up is set.
bool sync_rate_allows(self_ptr self) {
  auto& s = self->state;
  auto rate = s.config.syncrate;
  if (rate == 0)
    return true;
  auto elapsed =
    std::chrono::duration<double>(std::chrono::steady_clock::now() - s.sync.started).count();
  auto allowed = static_cast<double>(rate) * elapsed + s.md.extent_size;  // one extent of burst
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

void sync_pump(self_ptr self) {
  auto& s = self->state;
  if (!s.sync.active || !s.connected)
    return;
  while (s.sync.extents.size() < sync_extents_in_flight && sync_rate_allows(self)) {
    auto e = next_sync_candidate(self);
    if (!e)
      break;
    s.sync.started_bytes += s.md.extent_size;
    sync_start_extent(self, *e);
  }
  if (s.sync.extents.empty() && s.map->sync_extents() == 0)
    sync_finish(self);
}

void sync_start(self_ptr self) {
  auto& s = self->state;
  if (!s.connected || s.current != role::primary || s.sync.active)
    return;
  auto from_secondary = s.sync.pending_from_secondary;
  s.sync = sync_state{};
  s.sync.active = true;
  s.sync.from_secondary = from_secondary;
  s.sync.started = std::chrono::steady_clock::now();
  s.sync.total_bytes = s.map->sync_extents() * s.md.extent_size;
  if (s.sync.total_bytes > 0) {
    spdlog::info("{}: synchronization started: {} bytes to go", s.config.name, s.sync.total_bytes);
    event(self, "syncstart");
  }
  sync_pump(self);
}

void sync_stop(self_ptr self, const std::string& why) {
  auto& s = self->state;
  if (!s.sync.active)
    return;
  spdlog::warn("{}: synchronization interrupted ({}) after {} bytes", s.config.name, why,
               s.sync.done_bytes);
  s.sync.active = false;
  s.sync.extents.clear();
  s.sync.ids.clear();
  event(self, "syncintr");
  release_deferred(self);
}

// --- the secondary's side of the handshake -----------------------------------------------------

peer::hello_message my_hello(self_ptr self) {
  auto& s = self->state;
  peer::hello_message m;
  m.resource = s.config.name;
  m.node = s.node;
  m.role = to_string(s.current);
  m.datasize = s.md.datasize;
  m.extent_size = s.md.extent_size;
  m.resuid = s.md.resuid;
  m.localcnt = s.md.localcnt;
  m.remotecnt = s.md.remotecnt;
  m.virgin = s.md.localcnt == 0;
  return m;
}

/// Decides, on the secondary, what a connecting primary gets: which side is
/// out of date (HAST's generation rules, docs/GENERATIONS.md) or why not.
peer::hello_message answer_primary(self_ptr self, const peer::hello_message& p) {
  auto& s = self->state;
  auto reply = my_hello(self);
  if (s.current != role::secondary) {
    reply.refusal = "the remote node acts as " + to_string(s.current)
                    + " for the resource and not as secondary";
    return reply;
  }
  if (p.version != peer::protocol_version) {
    reply.refusal = "protocol version " + std::to_string(p.version) + " is not spoken here (we speak "
                    + std::to_string(peer::protocol_version) + ")";
    return reply;
  }
  if (p.datasize != s.md.datasize || p.extent_size != s.md.extent_size) {
    reply.refusal = "data size or extent size differs (primary " + std::to_string(p.datasize) + "/"
                    + std::to_string(p.extent_size) + ", secondary "
                    + std::to_string(s.md.datasize) + "/" + std::to_string(s.md.extent_size) + ")";
    return reply;
  }
  auto fresh = s.md.localcnt == 0 && s.md.remotecnt == 0;
  if (p.resuid != s.md.resuid) {
    if (!fresh) {
      reply.refusal = "resource id mismatch (primary " + std::to_string(p.resuid) + ", secondary "
                      + std::to_string(s.md.resuid)
                      + "); these providers belong to different resources";
      return reply;
    }
    // A freshly created secondary joins the primary's resource.
    s.md.resuid = p.resuid;
    reply.resuid = p.resuid;
    reply.sync_source = p.localcnt == 0 ? "none" : "full";
  } else if (s.discard_local && s.md.localcnt > p.remotecnt) {
    // The administrator chose this node as the loser: its changes go, and
    // the primary resends every extent either side changed.
    spdlog::warn("{}: discarding local changes (generation {}), taking the primary's data",
                 s.config.name, s.md.localcnt);
    s.md.localcnt = p.remotecnt;
    s.discard_local = false;
    s.split_brain = false;
    reply.localcnt = s.md.localcnt;
    reply.sync_source = "primary";
    reply.bitmap = s.map->bitmap();
  } else if (s.md.localcnt > p.remotecnt && p.localcnt > s.md.remotecnt) {
    detect_split_brain(self);
    reply.sync_source = "split-brain";
    reply.refusal = "split brain: both nodes were written as primary while apart";
    spdlog::error("{}: split brain detected (primary {}/{}, secondary {}/{})", s.config.name,
                  p.localcnt, p.remotecnt, s.md.localcnt, s.md.remotecnt);
    return reply;
  } else if (s.md.localcnt > p.remotecnt) {
    // The primary is the stale side: it copies our changed extents back and
    // reads from us until then.
    spdlog::warn("{}: the primary is out of date (generation {} < {}); it syncs from here",
                 s.config.name, p.remotecnt, s.md.localcnt);
    reply.sync_source = "secondary";
    reply.bitmap = s.map->bitmap();
  } else {
    reply.sync_source = "primary";
    // Extents that were in flight here when we stopped go back too.
    reply.bitmap = s.map->bitmap();
  }
  persist(self, [](bool) {});
  return reply;
}

// --- roles -------------------------------------------------------------------------------------

void close_local(self_ptr self) {
  auto& s = self->state;
  stop_peer(self);
  for (auto& d : s.disks) {
    s.retired.insert(d.address());
    self->send_exit(d, caf::exit_reason::user_shutdown);
  }
  if (s.metadata_writer) {
    s.retired.insert(s.metadata_writer.address());
    self->send_exit(s.metadata_writer, caf::exit_reason::user_shutdown);
  }
  s.disks.clear();
  s.metadata_writer = nullptr;
  s.map.reset();
  s.local.reset();
}

/// Opens the provider, checks its metadata and starts the disk actors.
caf::error open_local(self_ptr self) {
  auto& s = self->state;
  auto opened = provider::open(s.config.local, true);
  if (!opened)
    return caf::make_error(errc::io_error, opened.error().message());
  // The lock keeps 'hastctl create' off a provider that is in use.
  if (auto st = opened->lock(); !st)
    return caf::make_error(errc::busy, st.message());
  auto md = read_metadata(*opened, s.config.name);
  if (!md)
  {
    auto text = md.error().message();
    if (md.error().code() == errc::not_created)
      text += " (run 'hastctl create " + s.config.name + "')";
    return caf::make_error(md.error().code(), text);
  }
  // Fault injection for tests (the disk-IO layer's hook): reads of the data
  // range "<offset>:<length>" in HAST_INJECT_READ_ERRORS fail with EIO.
  if (const char* spec = std::getenv("HAST_INJECT_READ_ERRORS")) {
    unsigned long long off = 0, len = 0;
    if (std::sscanf(spec, "%llu:%llu", &off, &len) == 2) {
      opened->inject_read_errors(md->data_offset + off, len);
      spdlog::warn("{}: test hook: reads of [{}, {}) fail with EIO", s.config.name, off, off + len);
    }
  }
  s.local = std::make_shared<const provider>(std::move(*opened));
  s.md = std::move(*md);
  s.map.emplace(s.md.datasize, s.md.extent_size, s.md.keepdirty);
  // Extents dirty on disk (a crash, or writes while the peer was away) stay
  // dirty until they are synced. A standalone resource has no one to sync
  // with: its map only guards the next crash.
  if (!s.config.standalone())
    s.map->merge(s.md.bitmap);
  for (size_t i = 0; i < disk_io_actors_per_resource; ++i)
    s.disks.push_back(self->spawn<caf::detached + caf::linked>(disk_io, s.local, s.md.data_offset,
                                                               s.md.sequence));
  s.metadata_writer = self->spawn<caf::detached + caf::linked>(disk_io, s.local, s.md.data_offset,
                                                               s.md.sequence);
  return {};
}

void enter(self_ptr self, role target) {
  auto& s = self->state;
  auto previous = s.current;
  s.current = target;
  s.policy = policy_for(s.config.replication);
  s.bumped = false;
  if (target == role::init) {
    close_local(self);
  } else {
    s.md.prevrole = target;
    persist(self, [](bool) {});
    start_peer(self, target);
  }
  spdlog::info("{}: role changed from {} to {}", s.config.name, to_string(previous),
               to_string(target));
  if (previous != target)
    event(self, "role", {to_string(previous), to_string(target)});
}

/// Leaves primary once the last request has drained: flush, persist, switch.
void finish_drain(self_ptr self) {
  auto& s = self->state;
  auto target = s.pending_role.value_or(role::init);
  self->request(pick_disk(self), caf::infinite, atom::flush_v)
    .then(
      [=](uint64_t) {
        auto& s = self->state;
        auto previous = s.current;
        stop_peer(self);
        // Nothing is in flight: the keepdirty extents guard nothing now, and
        // the map on disk says so before anyone is told we are done.
        s.map->forget_keepdirty();
        persist(self, [=](bool) {
          auto& s = self->state;
          s.draining = false;
          s.pending_role.reset();
          enter(self, target);
          for (auto& rp : s.drained)
            rp.deliver(previous);
          s.drained.clear();
          for (auto& rp : s.stopped)
            rp.deliver(true);
          s.stopped.clear();
        });
      },
      [=](caf::error& err) {
        auto& s = self->state;
        ++s.counters.flush_errors;
        spdlog::error("{}: flush while leaving primary failed: {}", s.config.name,
                      self->system().render(err));
        s.draining = false;
        s.pending_role.reset();
        for (auto& rp : s.drained)
          rp.deliver(caf::make_error(errc::io_error, "flush failed while leaving primary"));
        s.drained.clear();
        for (auto& rp : s.stopped)
          rp.deliver(false);
        s.stopped.clear();
      });
}

/// Stops serving I/O: new requests fail, open sessions are closed, and
/// finish_drain runs when the in-flight ones are done.
void begin_drain(self_ptr self, role target) {
  auto& s = self->state;
  s.draining = true;
  s.pending_role = target;
  if (s.server)
    s.server->close_sessions();
  for (auto& call : s.deferred)
    complete(call, nbd::eshutdown);
  s.deferred.clear();
  if (s.in_flight == 0)
    finish_drain(self);
}

caf::result<role> change_role(self_ptr self, role target, bool force) {
  auto& s = self->state;
  auto previous = s.current;
  if (target == previous)
    return previous;
  if (s.draining)
    return caf::make_error(errc::busy, "a role change is already in progress");
  if (previous == role::primary) {
    if (s.nbd_clients > 0 && !force)
      return caf::make_error(errc::busy,
                             std::to_string(s.nbd_clients)
                               + " NBD client(s) connected; disconnect them first or use "
                                 "'hastctl role -f'");
    auto rp = self->make_response_promise<role>();
    s.drained.push_back(rp);
    begin_drain(self, target);
    return rp;
  }
  if (previous == role::init) {
    if (auto err = open_local(self)) {
      s.last_error = self->system().render(err);
      spdlog::error("{}: cannot become {}: {}", s.config.name, to_string(target), s.last_error);
      return err;
    }
  } else {
    stop_peer(self);  // secondary -> primary or init
  }
  s.last_error.clear();
  enter(self, target);
  return previous;
}

// --- requests ----------------------------------------------------------------------------------

/// The secondary executes what the primary replicates: local only, with the
/// same activemap bookkeeping so that a crash leaves in-flight extents dirty.
void handle_replicated(self_ptr self, nbd_call call) {
  auto& s = self->state;
  if (call.kind == nbd_call::op::read) {
    ++s.counters.reads;
    self->request(pick_disk(self), caf::infinite, atom::read_v, call.offset, call.length)
      .then([call](buffer_ptr& data) mutable { complete(call, 0, std::move(data)); },
            [self, call](caf::error&) mutable {
              ++self->state.counters.read_errors;
              complete(call, nbd::eio);
            });
    return;
  }
  ++s.in_flight;
  auto id = s.next_id++;
  bool must_persist = account_write(self, call);
  auto& t = s.tracks[id];
  t.call = std::move(call);
  t.remote_satisfied = t.remote_final = true;  // nothing further downstream
  auto go = [self, id](bool) { local_part(self, id, self->state.tracks[id].call); };
  if (must_persist)
    persist(self, go);
  else
    go(true);
}

/// While this primary catches up with the secondary, extents not yet copied
/// are read from the secondary (HAST does the same).
bool read_from_secondary(self_ptr self, const nbd_call& call) {
  auto& s = self->state;
  if (!s.sync.active || !s.sync.from_secondary || !s.connected)
    return false;
  for (auto e = first_extent(self, call.offset); e <= last_extent(self, call.offset, call.length);
       ++e)
    if (s.map->needs_sync(e))
      return true;
  return false;
}

void handle_read(self_ptr self, nbd_call call) {
  auto& s = self->state;
  ++s.counters.reads;
  ++s.in_flight;
  if (read_from_secondary(self, call)) {
    self->request(s.link, std::chrono::seconds(s.config.timeout), atom::remote_read_v, call.offset,
                  call.length)
      .then(
        [self, call](buffer_ptr& data) mutable {
          complete(call, 0, std::move(data));
          io_done(self);
        },
        [self, call](caf::error&) mutable {
          complete(call, nbd::eio);
          io_done(self);
        });
    return;
  }
  self->request(pick_disk(self), caf::infinite, atom::read_v, call.offset, call.length)
    .then(
      [self, call](buffer_ptr& data) mutable {
        complete(call, 0, std::move(data));
        io_done(self);
      },
      [self, call](caf::error& err) mutable {
        auto& s = self->state;
        ++s.counters.read_errors;
        spdlog::error("{}: local read failed ({}); trying the peer", s.config.name,
                      self->system().render(err));
        if (!s.connected) {
          complete(call, nbd::eio);
          io_done(self);
          return;
        }
        // HAST's first advantage: a bad local block is read from the peer.
        self->request(s.link, std::chrono::seconds(s.config.timeout), atom::remote_read_v,
                      call.offset, call.length)
          .then(
            [self, call](buffer_ptr& data) mutable {
              complete(call, 0, std::move(data));
              io_done(self);
            },
            [self, call](caf::error&) mutable {
              complete(call, nbd::eio);
              io_done(self);
            });
      });
}

void handle_call(self_ptr self, nbd_call call) {
  auto& s = self->state;
  if (call.from_peer) {
    if (s.current != role::secondary)
      return complete(call, nbd::eshutdown);
    return handle_replicated(self, std::move(call));
  }
  if (s.current != role::primary || s.draining)
    return complete(call, nbd::eshutdown);
  if (call.kind == nbd_call::op::read)
    return handle_read(self, std::move(call));
  handle_write(self, std::move(call));
}

resource_status make_status(self_ptr self) {
  auto& s = self->state;
  resource_status st;
  st.name = s.config.name;
  st.provider_name = s.config.provider_name;
  st.current_role = s.current;
  auto in_sync = s.config.standalone() || (s.connected && !s.sync.active
                                           && (!s.map || s.map->sync_extents() == 0));
  st.status = s.current == role::init ? "-"
              : s.split_brain           ? "split-brain"
              : in_sync                 ? "complete"
                                        : "degraded";
  st.split_brain = s.split_brain;
  st.synced_bytes = s.synced_total;
  st.connected = s.connected;
  st.local = s.config.local;
  st.remote = s.config.remote;
  st.source = s.config.source;
  st.nbd = s.config.nbd;
  st.replication = s.config.replication;
  st.checksum = s.config.checksum;
  st.compression = s.config.compression;
  if (s.map) {
    st.datasize = s.md.datasize;
    st.extent_size = s.md.extent_size;
    st.keepdirty = s.md.keepdirty;
    st.dirty_bytes = s.map->sync_extents() * s.md.extent_size;
  }
  if (s.sync.active) {
    st.sync.active = true;
    st.sync.direction = s.sync.from_secondary ? "secondary->primary" : "primary->secondary";
    st.sync.done_bytes = s.sync.done_bytes;
    st.sync.total_bytes = std::max(s.sync.total_bytes, s.sync.done_bytes);
    auto seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - s.sync.started).count();
    st.sync.bytes_per_second =
      seconds > 0 ? static_cast<uint64_t>(static_cast<double>(s.sync.done_bytes) / seconds) : 0;
  }
  st.nbd_connections = s.nbd_clients;
  st.queue_local = s.in_flight;
  st.queue_recv = s.tracks.size();
  st.counters = s.counters;
  st.last_error = s.last_error;
  if (st.last_error.empty() && !s.connected && s.current != role::init)
    st.last_error = s.peer_error;
  return st;
}

} // namespace

resource_state::~resource_state() {
  if (server)
    server->stop();
}

resource_actor::behavior_type resource(resource_actor::stateful_pointer<resource_state> self,
                                       resource_config config, std::string node, io_ref io) {
  auto& s = self->state;
  s.config = std::move(config);
  s.node = std::move(node);
  s.io = io;
  s.policy = policy_for(s.config.replication);
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self->ctrl());
  s.server = std::make_shared<nbd::server>(*io.io, s.config.name, s.config.nbd, [weak] {
    return std::make_shared<resource_backend>(weak);
  });
  if (auto st = s.server->start(); !st) {
    s.last_error = "NBD export: " + st.message();
    spdlog::error("{}: {}", s.config.name, s.last_error);
  } else {
    spdlog::info("{}: NBD export listening on {}", s.config.name, s.config.nbd);
  }
  self->attach_functor([server = s.server] { server->stop(); });
  // Children we stopped ourselves (disk actors, the peer) exit quietly; any
  // other exit, a crashing child or the supervisor's shutdown, ends us too.
  self->set_exit_handler([=](const caf::exit_msg& msg) {
    auto& retired = self->state.retired;
    if (auto it = retired.find(msg.source); it != retired.end()) {
      retired.erase(it);
      return;
    }
    self->quit(msg.reason);
  });
  return {
    [=](atom::role, role target, bool force) -> caf::result<role> {
      return change_role(self, target, force);
    },
    [=](atom::status) { return make_status(self); },
    [=](atom::configure, resource_config& updated) {
      auto& s = self->state;
      s.config = std::move(updated);
      s.policy = policy_for(s.config.replication);
      spdlog::info("{}: configuration reloaded", s.config.name);
      return true;
    },
    [=](atom::stop) -> caf::result<bool> {
      auto& s = self->state;
      if (s.current == role::init)
        return true;
      if (s.current == role::secondary) {
        stop_peer(self);
        if (!s.map || s.in_flight > 0 || !s.map->forget_keepdirty())
          return true;
        auto rp = self->make_response_promise<bool>();
        persist(self, [rp](bool ok) mutable { rp.deliver(ok); });
        return rp;
      }
      auto rp = self->make_response_promise<bool>();
      s.stopped.push_back(rp);
      if (!s.draining)
        begin_drain(self, role::init);
      return rp;
    },
    [=](atom::nbd_open, nbd_open_call& call) {
      auto& s = self->state;
      if (s.current != role::primary || s.draining) {
        call.done({"resource " + s.config.name + " is not primary (role "
                     + to_string(s.current) + ")",
                   {}});
        return;
      }
      ++s.nbd_clients;
      nbd::export_info info;
      info.size = s.md.datasize;
      info.description = "hast resource " + s.config.name;
      call.done({"", info});
    },
    [=](atom::nbd, nbd_call& call) { handle_call(self, std::move(call)); },
    [=](atom::nbd_close) {
      auto& s = self->state;
      if (s.nbd_clients > 0)
        --s.nbd_clients;
    },
    [=](atom::peer_accept, accepted_link& accepted) {
      auto& s = self->state;
      if (s.current == role::secondary && s.link) {
        self->send(s.link, atom::peer_accept_v, std::move(accepted));
        return;
      }
      // Tell the primary why, then hang up (HAST's "acts as ... not as secondary").
      auto reply = my_hello(self);
      reply.refusal = "the remote node acts as " + to_string(s.current)
                      + " for the resource and not as secondary";
      spdlog::warn("{}: refusing peer {}: {}", s.config.name, accepted.link->remote_address(),
                   reply.refusal);
      peer::header h;
      h.type = peer::msg_type::hello_reply;
      auto payload = peer::encode_hello(reply);
      h.payload_length = static_cast<uint32_t>(payload->size());
      accepted.link->send(h, payload);
      accepted.link->close(reply.refusal);
    },
    [=](atom::peer_hello, peer::hello_message& theirs) { return answer_primary(self, theirs); },
    [=](atom::peer_hello) { return my_hello(self); },
    [=](atom::peer_up, peer_session& session) {
      auto& s = self->state;
      if (!s.map)
        return;
      s.connected = true;
      s.split_brain = false;
      s.discard_local = false;
      s.remote_address = session.remote_address;
      s.peer_error.clear();
      event(self, "connect");
      if (s.current != role::primary)
        return;
      s.bumped = false;
      auto& theirs = session.theirs;
      s.sync.pending_from_secondary = theirs.sync_source == "secondary";
      if (theirs.sync_source == "full") {
        spdlog::info("{}: the secondary is new: full synchronization", s.config.name);
        s.map->mark_all_sync();
      } else {
        s.map->merge(theirs.bitmap);
      }
      s.md.remotecnt = theirs.localcnt;
      persist(self, [](bool) {});
      sync_start(self);
    },
    [=](atom::peer_down, std::string& reason) {
      auto& s = self->state;
      s.peer_error = reason;
      if (!s.connected)
        return;
      s.connected = false;
      event(self, "disconnect");
      sync_stop(self, reason);
    },
    [=](atom::remote_ack, uint64_t id, remote_stage stage, uint32_t error) {
      on_remote_ack(self, id, stage, error);
    },
    [=](atom::split_brain) { detect_split_brain(self); },
    [=](atom::sync_tick) {
      self->state.sync.tick_pending = false;
      sync_pump(self);
    },
    [=](atom::resync) -> caf::result<bool> {
      auto& s = self->state;
      if (s.current != role::secondary)
        return caf::make_error(errc::invalid_argument,
                               "the resource is " + to_string(s.current)
                                 + "; only a secondary can discard its changes (run 'hastctl "
                                   "role secondary "
                                 + s.config.name + "' first)");
      s.discard_local = true;
      spdlog::warn("{}: local changes will be discarded at the next connection", s.config.name);
      return true;
    },
    [=](atom::sync_done, uint64_t localcnt, bool complete) {
      auto& s = self->state;
      if (!s.map)
        return;
      s.md.remotecnt = localcnt;
      // After a resync the primary holds what we had to give: nothing is dirty.
      if (complete)
        s.map->clear_all_sync();
      persist(self, [](bool) {});
    },
  };
}

} // namespace hast
