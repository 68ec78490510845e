#include "actors/resource.hpp"

#include "actors/data_thread.hpp"
#include "actors/disk_io.hpp"
#include "actors/metadata_writer.hpp"
#include "actors/peer.hpp"
#include "io/block_device.hpp"
#include "io/hooks.hpp"
#include "io/io_env.hpp"
#include "io/nbd_protocol.hpp"
#include "io/nbd_server.hpp"
#include "io/peer_transport.hpp"
#include "io/provider.hpp"

#include <spdlog/spdlog.h>

#include <cstring>
#include <unistd.h>

namespace hast {

namespace {

using self_ptr = resource_ptr;

// The export as an NBD session sees it: every batch of requests becomes one
// typed message to the resource actor. Holds the actor weakly so that a
// lingering connection does not keep a stopped resource alive.
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

  void submit(std::vector<nbd::request> batch, nbd::reply_sink_ptr sink) override {
    if (auto hdl = lock()) {
      caf::anon_send(hdl, atom::nbd_v, nbd_batch{std::move(batch), std::move(sink), false});
      return;
    }
    std::vector<nbd::reply> replies;
    for (auto& r : batch)
      replies.push_back(nbd::make_reply(r, nbd::eshutdown));
    sink->deliver(std::move(replies));
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

  caf::weak_actor_ptr resource_;
  std::atomic<bool> opened_{false};
};

/// An errno from the disk as an NBD error.
uint32_t nbd_error(int error) {
  if (error == 0)
    return 0;
  return error == ENOSPC ? nbd::enospc : nbd::eio;
}

io_op op_of(nbd::command kind) {
  switch (kind) {
    case nbd::command::read: return io_op::read;
    case nbd::command::trim: return io_op::trim;
    case nbd::command::flush: return io_op::flush;
    default: return io_op::write;
  }
}

/// Queues the answer to a request; sent at the end of the activation. A
/// client's request (it carries its arrival) is timed here.
void answer(self_ptr self, const nbd::reply_sink_ptr& sink, nbd::reply r) {
  if (r.arrived != std::chrono::steady_clock::time_point{})
    self->state.client_latency[static_cast<size_t>(op_of(r.kind))].observe(
        std::chrono::steady_clock::now() - r.arrived);
  auto& outbox = self->state.outbox;
  for (auto& [to, replies] : outbox)
    if (to == sink) {
      replies.push_back(std::move(r));
      return;
    }
  outbox.emplace_back(sink, std::vector<nbd::reply>{std::move(r)});
}

bool is_flush(const nbd::request& r) {
  return r.kind == nbd::command::flush;
}

/// Bytes a request changes; a flush has none.
std::pair<uint64_t, uint64_t> byte_range(const nbd::request& r) {
  if (is_flush(r))
    return {0, 0};
  return {r.offset, r.offset + std::max<uint32_t>(r.length, 1)};
}

void finish_drain(self_ptr self);

/// An I/O request finished; a drain waits for the last one.
void io_done(self_ptr self) {
  auto& s = self->state;
  --s.in_flight;
  if (s.draining && s.in_flight == 0)
    finish_drain(self);
}

// --- the activemap, group-committed --------------------------------------------------------------

void admit_after_commit(self_ptr self, bool ok);

/// Writes the metadata with the activemap's current image. Every caller
/// that asked while this round was not yet begun is covered by it.
void start_round(self_ptr self) {
  auto& s = self->state;
  auto& c = s.commit;
  if (c.in_flight || !s.map || !s.metadata_writer)
    return;
  c.in_flight = true;
  auto round = ++c.started;
  c.this_round = std::move(c.next_round);
  c.next_round.clear();
  s.md.bitmap = s.map->begin_commit();
  ++s.counters.activemap_updates;
  auto done = [self, round](bool ok) {
    activation act{self};
    auto& s = self->state;
    auto& c = s.commit;
    c.in_flight = false;
    if (s.map)
      s.map->end_commit(ok);
    if (ok)
      c.written = round;
    c.failing = !ok;
    auto told = std::move(c.this_round);
    c.this_round.clear();
    for (auto& then : told)
      then(ok);
    admit_after_commit(self, ok);
    if (!c.next_round.empty() || !s.map_waiters.empty())
      start_round(self);
  };
  self->request(s.metadata_writer, caf::infinite, atom::metadata_v, s.md, s.config.metaflush)
    .then(
      [=](uint64_t sequence) {
        self->state.md.sequence = sequence;
        done(true);
      },
      [=](caf::error& err) {
        spdlog::error("{}: cannot write metadata: {}", self->state.config.name,
                      self->system().render(err));
        ++self->state.counters.write_errors;
        done(false);
      });
}

} // namespace

void persist(resource_ptr self, std::function<void(bool)> then) {
  auto& s = self->state;
  if (!s.map || !s.metadata_writer) {
    then(false);
    return;
  }
  s.commit.next_round.push_back(std::move(then));
  // Started at the end of the activation, so that one round covers it all.
}

void submit_disk(resource_ptr self, disk_op op, disk_continuation then) {
  auto& s = self->state;
  op.tag = s.next_tag++;
  s.disk_waiting.emplace(op.tag, std::move(then));
  s.disk_out.push_back(std::move(op));
}

void flush_activation(resource_ptr self) {
  auto& s = self->state;
  if (!s.commit.in_flight && (!s.commit.next_round.empty() || !s.map_waiters.empty()))
    start_round(self);
  if (s.map && s.map->changed_since_commit() && !s.commit.in_flight && !s.commit.tick_pending) {
    s.commit.tick_pending = true;
    self->delayed_send(self, lazy_commit_delay, atom::commit_tick_v);
  }
  if (!s.replicate_out.empty()) {
    if (s.link) {
      self->send(s.link, atom::replicate_v, std::move(s.replicate_out));
    } else {
      // No peer any more: what was queued failed to reach it.
      remote_acks failed;
      for (auto& rc : s.replicate_out)
        failed.push_back({rc.id, remote_stage::failed, static_cast<uint32_t>(errc::disconnected)});
      self->send(self, atom::remote_ack_v, std::move(failed));
    }
    s.replicate_out.clear();
  }
  if (!s.disk_out.empty()) {
    if (s.disk) {
      self->send(s.disk, atom::submit_v, std::move(s.disk_out));
    } else {
      // No disk (the provider is closed): what was queued fails.
      disk_results failed;
      for (auto& op : s.disk_out)
        failed.push_back({op.tag, ESHUTDOWN, nullptr});
      self->send(self, atom::disk_done_v, std::move(failed));
    }
    s.disk_out.clear();
  }
  if (!s.outbox.empty()) {
    auto outbox = std::move(s.outbox);
    s.outbox.clear();
    for (auto& [sink, replies] : outbox)
      sink->deliver(std::move(replies));
  }
}

void event(resource_ptr self, const std::string& name, event_fields args, event_fields more) {
  auto& s = self->state;
  std::vector<std::string> argv{name, s.config.name};
  for (auto& [key, value] : args)
    argv.push_back(value);
  run_hook(s.config.exec, std::move(argv));
  args.insert(args.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  announce(self, name, std::move(args));
}

void announce(resource_ptr self, const std::string& name, event_fields fields) {
  auto& s = self->state;
  if (s.io.events)
    self->send(s.io.events, atom::event_v,
               event_record{name, s.config.name, event_clock_ms(), std::move(fields)});
}

void detect_split_brain(resource_ptr self) {
  auto& s = self->state;
  if (s.split_brain)
    return;
  s.split_brain = true;
  spdlog::error("{}: split brain: both nodes were written as primary while apart; choose the "
                "node to discard and run 'hastctl resync --discard-local {}' there (as secondary)",
                s.config.name, s.config.name);
  event(self, "split-brain");
}

void replicate(resource_ptr self, replicate_call rc) {
  self->state.replicate_out.push_back(std::move(rc));
}

namespace {

// --- the peer ----------------------------------------------------------------------------------

void on_remote_ack(self_ptr self, uint64_t id, remote_stage stage, uint32_t error);
void pump_window(self_ptr self);

void stop_peer(self_ptr self) {
  auto& s = self->state;
  if (!s.link)
    return;
  s.retired.insert(s.link.address());
  self->send_exit(s.link, caf::exit_reason::user_shutdown);
  s.link = nullptr;
  s.connected = false;
  sync_stop(self, "role change");
  verify_interrupt(self, "role change");
  s.repair_ranges.clear();
  // Hash requests of a primary that is gone: nobody waits for them.
  for (auto& h : s.hash_waiting)
    h.promise.deliver(caf::make_error(errc::disconnected, "the peer is gone"));
  s.hash_waiting.clear();
  // The stopped peer sends no more acknowledgements: what waited fails now.
  for (auto id : s.writes.awaiting_remote())
    on_remote_ack(self, id, remote_stage::failed, static_cast<uint32_t>(errc::disconnected));
  pump_window(self);
}

void start_peer(self_ptr self, role side) {
  auto& s = self->state;
  if (s.config.standalone() || s.link)
    return;
  connector connect = s.io.connect;
  if (side == role::primary && !connect) {
    auto io = s.home != nullptr ? &s.home->io() : s.io.io;
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
  if (s.home != nullptr)
    pin(caf::actor_cast<caf::abstract_actor*>(s.link), *s.home);
}

// --- writes ------------------------------------------------------------------------------------

void mark_busy(self_ptr self, const nbd::request& r, int delta) {
  if (is_flush(r))
    return;
  auto& busy = self->state.busy;
  for (auto e = first_extent(self, r.offset); e <= last_extent(self, r.offset, r.length); ++e) {
    auto& n = busy[e];
    n += delta;
    if (n == 0)
      busy.erase(e);
  }
}

/// Both sides are final: the activemap lets go of the write.
void finish_write(self_ptr self, uint64_t id, bool remote_failed) {
  auto& s = self->state;
  auto it = s.calls.find(id);
  if (it == s.calls.end())
    return;
  auto req = std::move(it->second.req);
  auto resync = it->second.resync;
  auto local_failed = it->second.local_failed;
  s.calls.erase(it);
  if (!is_flush(req) && s.map) {
    // A write the local disk failed stays dirty: its extent is copied
    // back from the secondary.
    if (local_failed) {
      mark_for_sync(self, req.offset, req.length);
      s.md.local_stale = true;  // a copy back that ended meanwhile cleared it
    }
    // What the secondary did not confirm stays dirty for the resync.
    if (remote_failed && !s.config.standalone()) {
      mark_for_sync(self, req.offset, req.length);
      // Still connected (an async overflow, an error there): copy it now,
      // not at the next connection.
      if (s.connected && !s.sync.active)
        sync_start(self);
    }
    // An extent leaving the image needs no write now: the next commit
    // carries it. (Resync data never entered it.)
    if (!resync)
      s.map->write_complete(req.offset, req.length);
    mark_busy(self, req, -1);
  }
  io_done(self);
  if (!s.hash_waiting.empty())
    serve_hash_requests(self);
  if (s.sync.active)
    sync_pump(self);
  if (s.verify.active)
    verify_pump(self);
}

void apply(self_ptr self, uint64_t id, const write_tracker::outcome& o) {
  auto& s = self->state;
  if (o.answer)
    if (auto it = s.calls.find(id); it != s.calls.end()) {
      auto reply = nbd::make_reply(it->second.req, o.error);
      // failover auto: a success the secondary does not hold waits until
      // the witness knows the secondary is behind (docs/FAILOVER.md).
      if (o.alone && o.error == 0 && !it->second.from_peer && !may_write_alone(self))
        hold_answer(self, it->second.sink, std::move(reply));
      else
        answer(self, it->second.sink, std::move(reply));
    }
  if (o.finished)
    finish_write(self, id, o.remote_failed);
}

void admit(self_ptr self, uint64_t id);

/// The local part of write `id` ended: overlapping writes behind it may go.
void local_finished(self_ptr self, uint64_t id, uint32_t error) {
  auto& s = self->state;
  // Admit what was held first: a drain must not see zero in flight between.
  for (auto ready : s.writes.release(id))
    admit(self, ready);
  apply(self, id, s.writes.local_done(id, error));
}

void count_error(self_ptr self, const nbd::request& r) {
  auto& c = self->state.counters;
  switch (r.kind) {
    case nbd::command::flush: ++c.flush_errors; break;
    case nbd::command::trim: ++c.delete_errors; break;
    default: ++c.write_errors; break;
  }
}

disk_op to_disk_op(const nbd::request& r) {
  disk_op op;
  op.offset = r.offset;
  op.length = r.length;
  op.fua = r.fua;
  switch (r.kind) {
    case nbd::command::write:
      op.op = disk_op::kind::write;
      op.data = r.data;
      op.length = r.data->size();
      break;
    case nbd::command::trim: op.op = disk_op::kind::discard; break;
    case nbd::command::write_zeroes:
      op.op = disk_op::kind::write_zeroes;
      op.may_punch = r.may_trim;
      break;
    case nbd::command::flush: op.op = disk_op::kind::flush; break;
    case nbd::command::read: op.op = disk_op::kind::read; break;
  }
  return op;
}

peer::msg_type wire_type(nbd::command kind) {
  switch (kind) {
    case nbd::command::write: return peer::msg_type::write;
    case nbd::command::trim: return peer::msg_type::trim;
    case nbd::command::write_zeroes: return peer::msg_type::write_zeroes;
    default: return peer::msg_type::flush;
  }
}

bool window_full(self_ptr self) {
  auto& s = self->state;
  return s.remote_open.size() >= replication_window_requests
         || s.remote_open_bytes >= replication_window_bytes;
}

// --- a failing local disk --------------------------------------------------------------------

/// Does the secondary hold every acknowledged write (connected, and no
/// extent waits to be copied to it)? Then a write the local disk fails can
/// stand on the secondary's copy alone.
bool secondary_holds_everything(self_ptr self) {
  auto& s = self->state;
  if (!s.connected || s.current != role::primary)
    return false;
  if (s.md.local_stale || (s.sync.active && s.sync.from_secondary))
    return true;  // what is dirty here is stale here: the secondary has it
  return !s.sync.active && s.map->sync_extents() == 0;
}

/// The local disk failed client write `id` and the secondary holds
/// everything: the write stands if the secondary writes it ("one success is
/// enough"). The node records that its dirty extents are stale here before
/// the client hears of success, so that no restart ever copies them to the
/// secondary; they are copied back from it instead.
void cover_local_failure(self_ptr self, uint64_t id, uint32_t error) {
  auto& s = self->state;
  s.calls.at(id).local_failed = true;
  for (auto ready : s.writes.release(id))
    admit(self, ready);
  if (!s.md.local_stale) {
    s.md.local_stale = true;
    spdlog::error("{}: the local disk fails writes; they complete on the secondary, reads of "
                  "the extents concerned go there, and the local copy is rebuilt from it once "
                  "the disk works again",
                  s.config.name);
  }
  if (!s.local_error_reported) {
    s.local_error_reported = true;
    event(self, "local-error", {}, {{"error", error == nbd::enospc ? "no space left" : "I/O error"}});
  }
  persist(self, [self, id, error](bool ok) {
    auto& s = self->state;
    // Without the flag on disk the write must fail: a restart could send
    // the stale local data to the secondary.
    apply(self, id, ok ? s.writes.local_covered(id, error) : s.writes.local_done(id, error));
  });
}

} // namespace

bool stale_here(resource_ptr self, uint64_t offset, uint64_t length) {
  auto& s = self->state;
  if (!s.md.local_stale || !s.map)
    return false;
  for (auto e = first_extent(self, offset); e <= last_extent(self, offset, length); ++e)
    if (s.map->needs_sync(e))
      return true;
  return false;
}

namespace {

/// A local request succeeded: if the disk had failed, try to copy the stale
/// extents back from the secondary (the copy stops at the next failure).
void rebuild_when_back(self_ptr self) {
  auto& s = self->state;
  if (!s.md.local_stale || !s.connected || s.sync.active || s.current != role::primary)
    return;
  auto now = std::chrono::steady_clock::now();
  if (now - s.last_rebuild < local_rebuild_interval)
    return;
  s.last_rebuild = now;
  spdlog::info("{}: the local disk answers again; copying the stale extents from the secondary",
               s.config.name);
  sync_start(self);
}

/// Sends write `id` to the disk and, on a primary, to the secondary. A
/// synchronous primary whose replication window is full queues it instead
/// (in order: writes never overtake each other in the window).
void issue(self_ptr self, uint64_t id, bool from_window = false) {
  auto& s = self->state;
  auto& w = s.calls.at(id);
  if (!w.from_peer && s.connected && !s.policy.bounded_queue
      && (window_full(self) || (!from_window && !s.throttled.empty()))) {
    s.throttled.push_back(id);
    return;
  }
  const auto& r = w.req;
  if (!w.from_peer) {
    if (s.connected) {
      if (!s.policy.bounded_queue) {
        s.remote_open[id] = r.length;
        s.remote_open_bytes += r.length;
      }
      replicate_call rc;
      rc.id = id;
      rc.type = wire_type(r.kind);
      rc.offset = r.offset;
      rc.length = r.length;
      rc.data = r.data;
      if (r.fua)
        rc.flags |= peer::flag_fua;
      if (r.may_trim)
        rc.flags |= peer::flag_may_trim;
      if (s.policy.ask_received && r.kind == nbd::command::write && !r.fua)
        rc.flags |= peer::flag_memsync;
      w.replicated = std::chrono::steady_clock::now();
      replicate(self, std::move(rc));
    } else {
      apply(self, id, s.writes.remote(id, remote_stage::failed));
    }
  }
  submit_disk(self, to_disk_op(r), [self, id](disk_completion& c) {
    auto& s = self->state;
    if (c.error == 0) {
      local_finished(self, id, 0);
      return rebuild_when_back(self);
    }
    spdlog::error("{}: local request failed: {}", s.config.name, std::strerror(c.error));
    auto it = s.calls.find(id);
    if (it == s.calls.end())
      return local_finished(self, id, nbd_error(c.error));
    count_error(self, it->second.req);
    if (!it->second.from_peer && secondary_holds_everything(self))
      return cover_local_failure(self, id, nbd_error(c.error));
    local_finished(self, id, nbd_error(c.error));
  });
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

/// Write `id` does not happen, on either node: it fails with EIO (a
/// secondary answers the primary with the error).
void refuse(self_ptr self, uint64_t id) {
  auto& s = self->state;
  s.writes.remote(id, remote_stage::failed);
  for (auto ready : s.writes.release(id))
    admit(self, ready);
  auto o = s.writes.local_done(id, nbd::eio);
  o.remote_failed = false;  // nothing was written anywhere
  apply(self, id, o);
}

/// Write `id` may run (nothing overlapping runs before it): count it, mark
/// its extents, and issue it once the activemap on disk covers them.
void admit(self_ptr self, uint64_t id) {
  auto& s = self->state;
  auto& w = s.calls.at(id);
  const auto& r = w.req;
  ++s.in_flight;
  s.writes.start(id, r.fua || is_flush(r), !w.from_peer);
  if (is_flush(r)) {
    ++s.counters.flushes;
    return issue(self, id);
  }
  if (r.kind == nbd::command::trim) {
    ++s.counters.deletes;
    s.counters.delete_bytes += r.length;
  } else {
    ++s.counters.writes;
    s.counters.write_bytes += r.length;
  }
  mark_busy(self, r, +1);
  if (w.resync) {
    // The primary keeps the extent dirty until our `done`, so resync data
    // needs no mark here; but a node that cannot write its metadata takes
    // no data at all (as with a client write) until a round succeeds again.
    if (s.commit.failing) {
      persist(self, [](bool) {});  // tries the metadata again
      return refuse(self, id);
    }
    return issue(self, id);
  }
  s.map->write_start(r.offset, r.length);
  // failover auto: without the secondary a write runs only once the witness
  // knows the secondary is behind; it waits here, before it changes
  // anything (docs/FAILOVER.md).
  if (!w.from_peer && !s.connected && !s.config.standalone() && !may_write_alone(self))
    return wait_for_lease(self, id);
  admit_alone(self, id);
}

} // namespace

/// The rest of admit(): the generation, the activemap mark, the issue.
void admit_alone(resource_ptr self, uint64_t id) {
  auto& s = self->state;
  auto it = s.calls.find(id);
  if (it == s.calls.end())
    return;
  auto& w = it->second;
  const auto& r = w.req;
  bool bumped = false;
  if (!w.from_peer) {
    bumped = bump_generation(self);
    if (!s.connected && !s.config.standalone())
      mark_for_sync(self, r.offset, r.length);
  }
  if (!bumped && s.map->durable(r.offset, r.length))
    return issue(self, id);
  // Without its extents marked on disk a crash could lose track of it: it
  // waits for the next commit, which covers every write waiting with it.
  s.map_waiters.push_back({id, bumped ? s.commit.started + 1 : 0});
}

void refuse_write(resource_ptr self, uint64_t id) {
  refuse(self, id);
}

void send_answer(resource_ptr self, const nbd::reply_sink_ptr& sink, nbd::reply r) {
  answer(self, sink, std::move(r));
}

namespace {

void admit_after_commit(self_ptr self, bool ok) {
  auto& s = self->state;
  auto waiting = std::move(s.map_waiters);
  s.map_waiters.clear();
  for (auto& wt : waiting) {
    auto it = s.calls.find(wt.id);
    if (it == s.calls.end())
      continue;
    const auto& r = it->second.req;
    if (!ok) {
      // The extent is not marked on disk: the write must not happen, on
      // either node (a secondary answers the primary with the error).
      refuse(self, wt.id);
      continue;
    }
    if (s.commit.written >= wt.round && s.map->durable(r.offset, r.length))
      issue(self, wt.id);
    else
      s.map_waiters.push_back(wt);
  }
}

/// A write, trim, write_zeroes or flush arrives.
/// A write must wait while its extent's resync data is being read here
/// (that older data could otherwise overtake it on the secondary) or while
/// the extent is being verified (it would show as a false difference).
bool must_wait(self_ptr self, std::pair<uint64_t, uint64_t> range) {
  if (range.first == range.second)
    return false;
  return touches_sync(self, range.first, range.second - range.first)
         || touches_verify(self, range.first, range.second - range.first);
}

void arrive(self_ptr self, nbd::request r, nbd::reply_sink_ptr sink, bool from_peer,
            bool resync) {
  auto& s = self->state;
  auto id = s.next_id++;
  auto range = byte_range(r);
  s.calls.emplace(id, client_write{std::move(r), std::move(sink), from_peer, resync});
  if (!from_peer && must_wait(self, range)) {
    s.deferred.push_back(id);
    return;
  }
  // Overlapping writes run in arrival order (both nodes then agree).
  if (s.writes.arrive(id, range.first, range.second))
    admit(self, id);
}

} // namespace

bool clients_busy(resource_ptr self) {
  return std::chrono::steady_clock::now() - self->state.last_client_io < client_quiet;
}

void release_deferred(resource_ptr self) {
  auto& s = self->state;
  if (s.deferred.empty())
    return;
  auto pending = std::move(s.deferred);
  s.deferred.clear();
  for (auto id : pending) {
    auto it = s.calls.find(id);
    if (it == s.calls.end())
      continue;
    auto range = byte_range(it->second.req);
    if (must_wait(self, range))
      s.deferred.push_back(id);
    else if (s.writes.arrive(id, range.first, range.second))
      admit(self, id);
  }
}

namespace {

/// Writes queued for the replication window go while there is room (all of
/// them once the secondary is gone: they then only mark their extents).
void pump_window(self_ptr self) {
  auto& s = self->state;
  while (!s.throttled.empty() && (!s.connected || !window_full(self))) {
    auto id = s.throttled.front();
    s.throttled.pop_front();
    if (s.calls.count(id))
      issue(self, id, true);
  }
}

void on_remote_ack(self_ptr self, uint64_t id, remote_stage stage, uint32_t error) {
  if (sync_ack(self, id, stage, error))
    return;
  auto& s = self->state;
  if (stage == remote_stage::failed)
    ++s.counters.remote_errors;
  else if (stage == remote_stage::written)
    if (auto it = s.calls.find(id); it != s.calls.end() && !it->second.from_peer)
      s.replication_latency.observe(std::chrono::steady_clock::now() - it->second.replicated);
  if (stage != remote_stage::received)
    if (auto it = s.remote_open.find(id); it != s.remote_open.end()) {
      s.remote_open_bytes -= it->second;
      s.remote_open.erase(it);
    }
  apply(self, id, s.writes.remote(id, stage));
  pump_window(self);
}

// --- reads -------------------------------------------------------------------------------------

void read_remote(self_ptr self, nbd::request r, nbd::reply_sink_ptr sink) {
  auto& s = self->state;
  self->request(s.link, std::chrono::seconds(s.config.timeout), atom::remote_read_v, r.offset,
                r.length)
    .then(
      [self, r, sink](buffer_ptr& data) {
        activation act{self};
        answer(self, sink, nbd::make_reply(r, 0, std::move(data)));
        io_done(self);
      },
      [self, r, sink](caf::error&) {
        activation act{self};
        ++self->state.counters.remote_errors;
        answer(self, sink, nbd::make_reply(r, nbd::eio));
        io_done(self);
      });
}

void handle_read(self_ptr self, nbd::request r, nbd::reply_sink_ptr sink, bool from_peer) {
  auto& s = self->state;
  ++s.counters.reads;
  s.counters.read_bytes += r.length;
  if (from_peer) {
    submit_disk(self, to_disk_op(r), [self, r, sink](disk_completion& c) {
      if (c.error != 0)
        ++self->state.counters.read_errors;
      answer(self, sink, nbd::make_reply(r, nbd_error(c.error), std::move(c.data)));
    });
    return;
  }
  ++s.in_flight;
  if (read_from_secondary(self, r.offset, r.length))
    return read_remote(self, std::move(r), std::move(sink));
  if (stale_here(self, r.offset, r.length)) {
    // The local copy is stale: only the secondary has these blocks.
    if (s.connected)
      return read_remote(self, std::move(r), std::move(sink));
    answer(self, sink, nbd::make_reply(r, nbd::eio));
    return io_done(self);
  }
  submit_disk(self, to_disk_op(r), [self, r, sink](disk_completion& c) {
    auto& s = self->state;
    if (c.error == 0) {
      answer(self, sink, nbd::make_reply(r, 0, std::move(c.data)));
      io_done(self);
      return rebuild_when_back(self);
    }
    ++s.counters.read_errors;
    spdlog::error("{}: local read failed ({}); trying the peer", s.config.name,
                  std::strerror(c.error));
    if (!s.connected) {
      answer(self, sink, nbd::make_reply(r, nbd_error(c.error)));
      return io_done(self);
    }
    // HAST's first advantage: a bad local block is read from the peer.
    read_remote(self, r, sink);
  });
}

void handle_batch(self_ptr self, nbd_batch& batch) {
  auto& s = self->state;
  if (!batch.from_peer)
    s.last_client_io = std::chrono::steady_clock::now();
  auto serving = batch.from_peer ? s.current == role::secondary
                                 : s.current == role::primary && !s.draining;
  for (auto& r : batch.requests) {
    if (!serving) {
      answer(self, batch.sink, nbd::make_reply(r, nbd::eshutdown));
      continue;
    }
    if (r.kind == nbd::command::read) {
      handle_read(self, std::move(r), batch.sink, batch.from_peer);
    } else if (!batch.from_peer && s.md.local_stale && !s.connected && !is_flush(r)) {
      // Stale here and no secondary: a write now would mix new data into
      // extents that must be copied back from the secondary.
      answer(self, batch.sink, nbd::make_reply(r, nbd::eio));
    } else
      arrive(self, std::move(r), batch.sink, batch.from_peer, batch.resync);
  }
}

// --- roles -------------------------------------------------------------------------------------

void close_local(self_ptr self) {
  auto& s = self->state;
  stop_peer(self);
  for (auto* child : {&s.disk}) {
    if (*child) {
      s.retired.insert(child->address());
      self->send_exit(*child, caf::exit_reason::user_shutdown);
    }
  }
  if (s.metadata_writer) {
    s.retired.insert(s.metadata_writer.address());
    self->send_exit(s.metadata_writer, caf::exit_reason::user_shutdown);
  }
  s.disk = nullptr;
  s.metadata_writer = nullptr;
  s.commit = map_commit{};
  s.map.reset();
  s.local.reset();
}

/// Opens the provider, checks its metadata and starts the disk actors.
caf::error open_local(self_ptr self) {
  auto& s = self->state;
  auto env = s.io.env ? s.io.env : default_io_env();
  auto opened = env->open_provider(s.config.local, true);
  if (!opened)
    return caf::make_error(errc::io_error, opened.error().message());
  // The lock keeps 'hastctl create' off a provider that is in use.
  if (auto st = opened->lock(); !st)
    return caf::make_error(errc::busy, st.message());
  auto md = read_metadata(*opened, s.config.name);
  if (!md) {
    auto text = md.error().message();
    if (md.error().code() == errc::not_created)
      text += " (run 'hastctl create " + s.config.name + "')";
    return caf::make_error(md.error().code(), text);
  }
  s.local = std::make_shared<const provider>(std::move(*opened));
  s.md = std::move(*md);
  s.map.emplace(s.md.datasize, s.md.extent_size, s.md.keepdirty);
  // Extents dirty on disk (a crash, or writes while the peer was away) stay
  // dirty until they are synced. A standalone resource has no one to sync
  // with: its map only guards the next crash.
  if (!s.config.standalone())
    s.map->merge(s.md.bitmap);
  s.commit = map_commit{};
  // Lazy, so that it is pinned before its first activation: its ring is
  // made on, and belongs to, the data thread.
  s.disk = self->spawn<caf::linked + caf::lazy_init>(
    disk_io, s.local, s.md.data_offset, s.io.disk, caf::actor_cast<resource_actor>(self),
    disk_home{s.home != nullptr ? &s.home->io() : nullptr});
  if (s.home != nullptr)
    pin(caf::actor_cast<caf::abstract_actor*>(s.disk), *s.home);
  s.metadata_writer = self->spawn<caf::detached + caf::linked>(metadata_writer, s.local,
                                                               s.md.sequence);
  return {};
}

void enter(self_ptr self, role target) {
  auto& s = self->state;
  auto previous = s.current;
  s.current = target;
  s.policy = policy_for(s.config.replication);
  s.writes.set_policy(s.policy);
  s.bumped = false;
  if (target == role::init) {
    close_local(self);
  } else {
    s.md.prevrole = target;
    persist(self, [](bool) {});
    start_peer(self, target);
  }
  s.lease.promoting = false;
  spdlog::info("{}: role changed from {} to {}", s.config.name, to_string(previous),
               to_string(target));
  if (previous != target)
    event(self, "role", {{"old", to_string(previous)}, {"new", to_string(target)}});
}

/// Leaves primary once the last request has drained: flush, persist, switch.
void finish_drain(self_ptr self) {
  auto& s = self->state;
  auto target = s.pending_role.value_or(role::init);
  disk_op flush;
  flush.op = disk_op::kind::flush;
  submit_disk(self, flush, [=](disk_completion& c) {
    auto& s = self->state;
    if (c.error != 0) {
      ++s.counters.flush_errors;
      spdlog::error("{}: flush while leaving primary failed: {}", s.config.name,
                    std::strerror(c.error));
      s.draining = false;
      s.pending_role.reset();
      for (auto& rp : s.drained)
        rp.deliver(caf::make_error(errc::io_error, "flush failed while leaving primary"));
      s.drained.clear();
      for (auto& rp : s.stopped)
        rp.deliver(false);
      s.stopped.clear();
      return;
    }
    auto previous = s.current;
    // Drained and flushed: nothing completes here any more, and whether
    // the secondary holds everything is known before the link goes.
    lease_release(self);
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
  });
}

/// Stops serving I/O: new requests fail, open sessions are closed, and
/// finish_drain runs when the in-flight ones are done.
void begin_drain(self_ptr self, role target) {
  auto& s = self->state;
  s.draining = true;
  s.pending_role = target;
  lease_leaving(self);
  if (s.server)
    s.server->close_sessions();
  for (auto id : s.deferred) {
    if (auto it = s.calls.find(id); it != s.calls.end()) {
      answer(self, it->second.sink, nbd::make_reply(it->second.req, nbd::eshutdown));
      s.calls.erase(it);
    }
  }
  s.deferred.clear();
  if (s.in_flight == 0)
    finish_drain(self);
}

// --- /dev/hast/<name> ---------------------------------------------------------------------------

/// Runs `job` on the resource's device thread; its outcome comes back as a
/// `device` message tagged with the current epoch.
void post_device_job(self_ptr self, std::function<void(uint64_t epoch)> job) {
  auto& s = self->state;
  if (!s.devices)
    s.devices = std::make_shared<device_worker>();
  auto epoch = ++s.device_epoch;
  s.devices->post([job = std::move(job), epoch] { job(epoch); });
}

/// Primary with `device on`: makes /dev/hast/<name> on the export. A
/// failure leaves the role as it is; status and the log say why.
void make_block_device(self_ptr self) {
  auto& s = self->state;
  if (!s.config.device)
    return;
  s.device_pending = true;
  s.device_error.clear();
  auto me = caf::actor_cast<resource_actor>(self);
  auto link = s.config.provider_name, name = s.config.name, nbd = s.config.nbd;
  post_device_job(self, [me, link, name, nbd](uint64_t epoch) {
    auto made = make_device(link, name, nbd);
    if (made)
      caf::anon_send(me, atom::device_v, epoch, std::string{"made"},
                     made->link + " -> " + made->device, std::to_string(made->connections));
    else
      caf::anon_send(me, atom::device_v, epoch, std::string{"failed"}, std::string{},
                     made.error().message());
  });
}

/// Removes the device on the device thread; the outcome comes back as a
/// "removed" device message.
void remove_block_device(self_ptr self, bool force) {
  auto me = caf::actor_cast<resource_actor>(self);
  auto link = self->state.config.provider_name;
  post_device_job(self, [me, link, force](uint64_t epoch) {
    auto st = remove_device(link, force);
    caf::anon_send(me, atom::device_v, epoch, std::string{"removed"}, std::string{},
                   st ? std::string{} : st.message());
  });
}

/// Leaves primary: removes the device first (its file system's last writes
/// still go through the export), then drains.
void leave_primary(self_ptr self, role target, bool force) {
  auto& s = self->state;
  if (!s.config.device || (s.device.empty() && !s.device_pending)) {
    begin_drain(self, target);
    return;
  }
  s.leaving = true;
  s.pending_role = target;
  remove_block_device(self, force);
}

/// The outcome of a device job.
void device_done(self_ptr self, uint64_t epoch, const std::string& what,
                 const std::string& device, const std::string& detail) {
  auto& s = self->state;
  if (epoch != s.device_epoch)
    return;
  s.device_pending = false;
  if (what == "made") {
    s.device = device;
    s.device_connections = std::atoi(detail.c_str());
    spdlog::info("{}: {} is ready", s.config.name, device);
    if (s.current != role::primary && !s.leaving) {
      // Made just as the resource left primary: it goes again.
      remove_block_device(self, true);
    }
    return;
  }
  if (what == "failed") {
    s.device_error = detail;
    spdlog::error("{}: no block device: {}; the NBD export {} serves", s.config.name, detail,
                  s.config.nbd);
    return;
  }
  // removed
  if (!s.leaving) {
    s.device.clear();
    return;
  }
  s.leaving = false;
  if (!detail.empty() && s.pending_role) {
    spdlog::warn("{}: {}", s.config.name, detail);
    s.pending_role.reset();
    for (auto& rp : s.drained)
      rp.deliver(caf::make_error(errc::busy, detail));
    s.drained.clear();
    for (auto& rp : s.stopped)
      rp.deliver(false);
    s.stopped.clear();
    return;
  }
  s.device.clear();
  s.device_connections = 0;
  if (s.pending_role && s.current == role::primary && !s.draining)
    begin_drain(self, *s.pending_role);
}

caf::result<role> change_role(self_ptr self, role target, bool force) {
  auto& s = self->state;
  auto previous = s.current;
  if (target == previous)
    return previous;
  if (s.draining || s.leaving)
    return caf::make_error(errc::busy, "a role change is already in progress");
  if (previous == role::primary) {
    if (!s.device.empty() && !force) {
      // Safer than FreeBSD, which pulls the device from under a mounted
      // file system.
      auto where = mount_point(s.config.provider_name);
      if (!where.empty())
        return caf::make_error(errc::busy, "/dev/hast/" + s.config.provider_name
                                             + " is mounted on " + where
                                             + "; unmount it first or use 'hastctl role -f'");
    }
    auto own = s.device.empty() ? 0u : static_cast<uint64_t>(s.device_connections);
    auto clients = s.nbd_clients > own ? s.nbd_clients - own : 0;
    if (clients > 0 && !force)
      return caf::make_error(errc::busy,
                             std::to_string(clients)
                               + " NBD client(s) connected; disconnect them first or use "
                                 "'hastctl role -f'");
    auto rp = self->make_response_promise<role>();
    s.drained.push_back(rp);
    leave_primary(self, target, force);
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
  if (target == role::primary)
    make_block_device(self);
  return previous;
}

resource_status make_status(self_ptr self) {
  auto& s = self->state;
  resource_status st;
  st.name = s.config.name;
  st.provider_name = s.config.provider_name;
  st.current_role = s.current;
  auto in_sync = s.config.standalone() || (s.connected && !s.sync.active
                                           && (!s.map || s.map->sync_extents() == 0));
  // FreeBSD's words only: scripts parse this column. Split brain, a failing
  // local disk and sync progress are separate fields.
  st.status = s.current == role::init ? "-"
              : in_sync && !s.split_brain && !s.md.local_stale ? "complete"
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
  st.verify = verify_status(self);
  st.nbd_connections = s.nbd_clients;
  st.workerpid = s.current == role::init ? 0 : static_cast<uint64_t>(::getpid());
  st.local_failing = s.md.local_stale;
  st.device = s.device;
  st.device_error = s.device_error;
  if (s.device_pending && s.device.empty())
    st.device_error = "being made";
  st.queue_local = s.in_flight;
  st.queue_recv = s.writes.size();
  st.counters = s.counters;
  st.client_latency = s.client_latency;
  st.replication_latency = s.replication_latency;
  lease_status(self, st);
  st.last_error = s.last_error;
  if (auto started = s.server->start_outcome(); st.last_error.empty() && started && !*started)
    st.last_error = "NBD export: " + started->message();
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
  s.writes.set_policy(s.policy);
  if (io.data) {
    s.home = &io.data->of(s.config.name);
    pin(self, *s.home);
  }
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self->ctrl());
  auto* export_io = s.home != nullptr ? &s.home->io() : io.io;
  s.server = std::make_shared<nbd::server>(*export_io, s.config.name, s.config.nbd, [weak] {
    return std::make_shared<resource_backend>(weak);
  });
  // Never blocks this worker: a host name is resolved asynchronously, and
  // the outcome is logged from wherever it is known; status shows a failure.
  s.server->start([name = s.config.name, address = s.config.nbd](status st) {
    if (!st)
      spdlog::error("{}: NBD export: {}", name, st.message());
    else
      spdlog::info("{}: NBD export listening on {}", name, address);
  });
  self->attach_functor([server = s.server] { server->stop(); });
  lease_start(self);
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
      activation act{self};
      auto& s = self->state;
      if (!s.config.automatic())
        return change_role(self, target, force);
      // failover auto: role init takes the node out of failover; the
      // others put it back in. Primary needs the witness's lease first.
      s.lease.auto_role = target != role::init;
      auto holds = s.lease.held && std::chrono::steady_clock::now() < s.lease.valid_until;
      if (target != role::primary || holds || s.lease.promoting)
        return change_role(self, target, force);
      auto before = s.current;
      if (s.current == role::init)
        if (auto err = open_local(self))
          return err;  // the claim needs our generation counters
      // A node not yet secondary opens its provider above; it stays so
      // (secondary) if the witness refuses.
      if (s.current == role::init)
        enter(self, role::secondary);
      auto rp = self->make_response_promise<role>();
      claim_by_hand(self, [=](std::string why) mutable {
        activation act{self};
        if (!why.empty()) {
          rp.deliver(caf::make_error(errc::busy, why));
          return;
        }
        // From secondary the change is immediate: a value or an error.
        auto r = change_role(self, role::primary, force);
        if (r.flag == caf::rt_error)
          rp.deliver(r.err);
        else
          rp.deliver(before);
      });
      return rp;
    },
    [=](atom::lease_tick) {
      activation act{self};
      self->state.lease.tick_pending = false;
      lease_tick(self);
    },
    [=](atom::lease_link, bool up, std::string& why) {
      activation act{self};
      lease_link_changed(self, up, why);
    },
    [=](atom::status) { return make_status(self); },
    [=](atom::configure, resource_config& updated) {
      activation act{self};
      auto& s = self->state;
      // The link's settings take effect by reconnecting it (FreeBSD's
      // reload in place): in-flight replicated writes fail over to the
      // resync, the new link shakes hands and syncs what is dirty.
      auto relink = !link_changes(s.config, updated).empty();
      s.config = std::move(updated);
      s.policy = policy_for(s.config.replication);
      s.writes.set_policy(s.policy);
      if (relink && s.link) {
        spdlog::info("{}: configuration reloaded; reconnecting the link with the new settings",
                     s.config.name);
        auto side = s.current;
        if (s.connected) {
          s.connected = false;
          event(self, "disconnect", {}, {{"reason", "reconnecting after a reload"}});
        }
        stop_peer(self);
        s.peer_error = "reconnecting after a reload";
        start_peer(self, side);
      } else {
        spdlog::info("{}: configuration reloaded", s.config.name);
      }
      return true;
    },
    [=](atom::stop) -> caf::result<bool> {
      activation act{self};
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
      if (!s.draining && !s.leaving)
        leave_primary(self, role::init, true);  // shutting down: the device goes
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
    [=](atom::nbd, nbd_batch& batch) {
      activation act{self};
      handle_batch(self, batch);
    },
    [=](atom::disk_done, disk_results& done) {
      activation act{self};
      auto& s = self->state;
      for (auto& c : done) {
        auto it = s.disk_waiting.find(c.tag);
        if (it == s.disk_waiting.end())
          continue;
        auto then = std::move(it->second);
        s.disk_waiting.erase(it);
        then(c);
      }
    },
    [=](atom::commit_tick) {
      activation act{self};
      auto& s = self->state;
      s.commit.tick_pending = false;
      if (s.map && s.map->changed_since_commit())
        persist(self, [](bool) {});
    },
    [=](atom::nbd_close) {
      auto& s = self->state;
      if (s.nbd_clients > 0)
        --s.nbd_clients;
    },
    [=](atom::peer_accept, accepted_link& accepted) {
      activation act{self};
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
    [=](atom::peer_hello, peer::hello_message& theirs) {
      activation act{self};
      return answer_primary(self, theirs);
    },
    [=](atom::peer_hello) { return my_hello(self); },
    [=](atom::peer_up, peer_session& session) {
      activation act{self};
      on_peer_up(self, session);
    },
    [=](atom::peer_down, std::string& reason) {
      activation act{self};
      auto& s = self->state;
      s.peer_error = reason;
      if (!s.connected)
        return;
      s.connected = false;
      event(self, "disconnect", {}, {{"reason", reason}});
      sync_stop(self, reason);
      verify_interrupt(self, reason);
      s.repair_ranges.clear();
      pump_window(self);
    },
    [=](atom::remote_ack, remote_acks& acks) {
      activation act{self};
      for (auto& a : acks)
        on_remote_ack(self, a.id, a.stage, a.error);
    },
    [=](atom::split_brain) { detect_split_brain(self); },
    [=](atom::sync_tick) {
      activation act{self};
      self->state.sync.tick_pending = false;
      sync_pump(self);
    },
    [=](atom::verify, bool repair, bool stop) -> caf::result<std::string> {
      activation act{self};
      return verify_command(self, repair, stop);
    },
    [=](atom::verify_range, uint64_t offset, uint32_t length) -> caf::result<block_hashes> {
      activation act{self};
      return hash_range(self, offset, length);
    },
    [=](atom::verify_tick) {
      activation act{self};
      self->state.verify.tick_pending = false;
      verify_pump(self);
    },
    [=](atom::device, uint64_t epoch, std::string& what, std::string& device,
        std::string& detail) {
      activation act{self};
      device_done(self, epoch, what, device, detail);
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
      activation act{self};
      auto& s = self->state;
      if (!s.map)
        return;
      s.md.remotecnt = localcnt;
      // After a resync the primary holds what we had to give: nothing is
      // dirty, and nothing stale is left here either.
      if (complete) {
        s.map->clear_all_sync();
        s.md.local_stale = false;
        s.local_error_reported = false;
      }
      persist(self, [](bool) {});
    },
  };
}

} // namespace hast
