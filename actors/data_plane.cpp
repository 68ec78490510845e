#include "actors/data_plane.hpp"

#include "io/net/nbd_protocol.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

namespace hast {

namespace {

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

bool is_flush(const nbd::request& r) {
  return r.kind == nbd::command::flush;
}

/// Bytes a request changes; a flush has none.
std::pair<uint64_t, uint64_t> byte_range(const nbd::request& r) {
  if (is_flush(r))
    return {0, 0};
  return {r.offset, r.offset + std::max<uint32_t>(r.length, 1)};
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

} // namespace

data_plane::data_plane(std::string name, bool standalone, replication_policy policy,
                       steering& control)
  : name_(std::move(name)), standalone_(standalone), policy_(policy), control_(control),
    writes_(policy) {}

void data_plane::set_policy(replication_policy policy) {
  policy_ = policy;
  writes_.set_policy(policy);
}

void data_plane::open(metadata md) {
  md_ = std::move(md);
  map_.emplace(md_.datasize, md_.extent_size, md_.keepdirty);
  // Extents dirty on disk (a crash, or writes while the peer was away) stay
  // dirty until they are synced. A standalone resource has no one to sync
  // with: its map only guards the next crash.
  if (!standalone_)
    map_->merge(md_.bitmap);
  commit_ = map_commit{};
  map_waiters_.clear();
}

void data_plane::close() {
  commit_ = map_commit{};
  map_.reset();
}

// --- one turn ----------------------------------------------------------------------------------

void data_plane::answer(const nbd::reply_sink_ptr& sink, nbd::reply r) {
  if (r.arrived != std::chrono::steady_clock::time_point{})
    client_latency_[static_cast<size_t>(op_of(r.kind))].observe(std::chrono::steady_clock::now()
                                                                - r.arrived);
  for (auto& [to, replies] : out_.replies)
    if (to == sink) {
      replies.push_back(std::move(r));
      return;
    }
  out_.replies.emplace_back(sink, std::vector<nbd::reply>{std::move(r)});
}

void data_plane::submit(disk_op op, disk_continuation then) {
  op.tag = next_tag_++;
  disk_waiting_.emplace(op.tag, std::move(then));
  out_.disk.push_back(std::move(op));
}

void data_plane::disk_done(disk_results& done) {
  for (auto& c : done) {
    auto it = disk_waiting_.find(c.tag);
    if (it == disk_waiting_.end())
      continue;
    auto then = std::move(it->second);
    disk_waiting_.erase(it);
    then(c);
  }
}

void data_plane::end_turn() {
  if (!commit_.in_flight && (!commit_.next_round.empty() || !map_waiters_.empty()))
    start_round();
  if (map_ && map_->changed_since_commit() && !commit_.in_flight && !commit_.tick_pending) {
    commit_.tick_pending = true;
    out_.lazy_commit = true;
  }
}

data_plane::output data_plane::take() {
  auto out = std::move(out_);
  out_ = output{};
  return out;
}

void data_plane::io_done() {
  if (--in_flight_ == 0)
    control_.idle();
}

// --- the activemap, group-committed ------------------------------------------------------------

void data_plane::persist(std::function<void(bool)> then) {
  if (!map_) {
    then(false);
    return;
  }
  commit_.next_round.push_back(std::move(then));
  // Started at the end of the turn, so that one round covers it all.
}

/// Writes the metadata with the activemap's current image. Every caller
/// that asked while this round was not yet begun is covered by it.
void data_plane::start_round() {
  if (commit_.in_flight || !map_)
    return;
  commit_.in_flight = true;
  ++commit_.started;
  commit_.this_round = std::move(commit_.next_round);
  commit_.next_round.clear();
  md_.bitmap = map_->begin_commit();
  ++counters_.activemap_updates;
  // Slots alternate by sequence parity, so a torn write only ever damages
  // the slot that does not hold the newest state; a failed one is retried
  // into the same slot.
  auto round = ++round_serial_;
  auto sequence = md_.sequence + 1;
  auto slot = prepare_slot_write(md_, sequence);
  if (!slot) {
    spdlog::error("{}: cannot write metadata: {}", name_, slot.error().message());
    // Not retried from here (it would fail the same way at once); the
    // next persist tries again.
    return end_round(round, false, 0, false);
  }
  disk_op op;
  op.op = disk_op::kind::write;
  op.in_provider = true;
  op.offset = slot->offset;
  op.length = slot->bytes->size();
  op.data = std::move(slot->bytes);
  op.fua = metaflush_;
  submit(std::move(op), [this, round, sequence](disk_completion& c) {
    if (c.error != 0)
      spdlog::error("{}: cannot write metadata: {}", name_, std::strerror(c.error));
    end_round(round, c.error == 0, sequence);
  });
}

/// A metadata round ended. An answer for a round of an earlier open is
/// ignored.
void data_plane::end_round(uint64_t round, bool ok, uint64_t sequence, bool again) {
  if (!commit_.in_flight || round != round_serial_)
    return;
  commit_.in_flight = false;
  if (ok)
    md_.sequence = sequence;
  else
    ++counters_.write_errors;
  if (map_)
    map_->end_commit(ok);
  if (ok)
    commit_.written = commit_.started;
  commit_.failing = !ok;
  auto told = std::move(commit_.this_round);
  commit_.this_round.clear();
  for (auto& then : told)
    then(ok);
  admit_after_commit(ok);
  if (again && (!commit_.next_round.empty() || !map_waiters_.empty()))
    start_round();
}

void data_plane::commit_tick() {
  commit_.tick_pending = false;
  if (map_ && map_->changed_since_commit())
    persist([](bool) {});
}

void data_plane::admit_after_commit(bool ok) {
  auto waiting = std::move(map_waiters_);
  map_waiters_.clear();
  for (auto& wt : waiting) {
    auto it = calls_.find(wt.id);
    if (it == calls_.end())
      continue;
    const auto& r = it->second.req;
    if (!ok) {
      // The extent is not marked on disk: the write must not happen, on
      // either node (a secondary answers the primary with the error).
      refuse(wt.id);
      continue;
    }
    if (commit_.written >= wt.round && map_->durable(r.offset, r.length))
      issue(wt.id);
    else
      map_waiters_.push_back(wt);
  }
}

// --- writes ------------------------------------------------------------------------------------

void data_plane::mark_busy(const nbd::request& r, int delta) {
  if (is_flush(r))
    return;
  for (auto e = first_extent(r.offset); e <= last_extent(r.offset, r.length); ++e) {
    auto& n = busy_[e];
    n += delta;
    if (n == 0)
      busy_.erase(e);
  }
}

/// Both sides are final: the activemap lets go of the write.
void data_plane::finish_write(uint64_t id, bool remote_failed) {
  auto it = calls_.find(id);
  if (it == calls_.end())
    return;
  auto req = std::move(it->second.req);
  auto resync = it->second.resync;
  auto local_failed = it->second.local_failed;
  calls_.erase(it);
  if (!is_flush(req) && map_) {
    // A write the local disk failed stays dirty: its extent is copied
    // back from the secondary.
    if (local_failed) {
      control_.mark_for_sync(req.offset, req.length);
      md_.local_stale = true;  // a copy back that ended meanwhile cleared it
    }
    // What the secondary did not confirm stays dirty for the resync.
    if (remote_failed && !standalone_) {
      control_.mark_for_sync(req.offset, req.length);
      // Still connected (an async overflow, an error there): copy it now,
      // not at the next connection.
      if (control_.connected())
        control_.resync_now();
    }
    // An extent leaving the image needs no write now: the next commit
    // carries it. (Resync data never entered it.)
    if (!resync)
      map_->write_complete(req.offset, req.length);
    mark_busy(req, -1);
  }
  io_done();
  control_.write_finished();
}

void data_plane::apply(uint64_t id, const write_tracker::outcome& o) {
  if (o.answer)
    if (auto it = calls_.find(id); it != calls_.end()) {
      auto reply = nbd::make_reply(it->second.req, o.error);
      // failover auto: a success the secondary does not hold waits until
      // the witness knows the secondary is behind (docs/FAILOVER.md).
      if (o.alone && o.error == 0 && !it->second.from_peer && !control_.may_write_alone())
        control_.hold_answer(it->second.sink, std::move(reply));
      else
        answer(it->second.sink, std::move(reply));
    }
  if (o.finished)
    finish_write(id, o.remote_failed);
}

/// The local part of write `id` ended: overlapping writes behind it may go.
void data_plane::local_finished(uint64_t id, uint32_t error) {
  // Admit what was held first: a drain must not see zero in flight between.
  for (auto ready : writes_.release(id))
    admit(ready);
  apply(id, writes_.local_done(id, error));
}

void data_plane::count_error(const nbd::request& r) {
  switch (r.kind) {
    case nbd::command::flush: ++counters_.flush_errors; break;
    case nbd::command::trim: ++counters_.delete_errors; break;
    default: ++counters_.write_errors; break;
  }
}

bool data_plane::window_full() const {
  return remote_open_.size() >= replication_window_requests
         || remote_open_bytes_ >= replication_window_bytes;
}

/// The local disk failed client write `id` and the secondary holds
/// everything: the write stands if the secondary writes it ("one success is
/// enough"). The node records that its dirty extents are stale here before
/// the client hears of success, so that no restart ever copies them to the
/// secondary; they are copied back from it instead.
void data_plane::cover_local_failure(uint64_t id, uint32_t error) {
  calls_.at(id).local_failed = true;
  for (auto ready : writes_.release(id))
    admit(ready);
  if (!md_.local_stale) {
    md_.local_stale = true;
    spdlog::error("{}: the local disk fails writes; they complete on the secondary, reads of "
                  "the extents concerned go there, and the local copy is rebuilt from it once "
                  "the disk works again",
                  name_);
  }
  control_.local_disk_failed(error);
  persist([this, id, error](bool ok) {
    // Without the flag on disk the write must fail: a restart could send
    // the stale local data to the secondary.
    apply(id, ok ? writes_.local_covered(id, error) : writes_.local_done(id, error));
  });
}

bool data_plane::behind_there(uint64_t offset, uint64_t length) const {
  if (md_.local_stale || !map_)
    return false;  // what is to be copied is stale here, not there
  for (auto e = first_extent(offset); e <= last_extent(offset, length); ++e)
    if (map_->needs_sync(e))
      return true;
  return false;
}

bool data_plane::stale_here(uint64_t offset, uint64_t length) const {
  if (!md_.local_stale || !map_)
    return false;
  for (auto e = first_extent(offset); e <= last_extent(offset, length); ++e)
    if (map_->needs_sync(e))
      return true;
  return false;
}

/// Sends write `id` to the disk and, on a primary, to the secondary. A
/// synchronous primary whose replication window is full queues it instead
/// (in order: writes never overtake each other in the window).
void data_plane::issue(uint64_t id, bool from_window) {
  auto& w = calls_.at(id);
  auto connected = control_.connected();
  if (!w.from_peer && connected && !policy_.bounded_queue
      && (window_full() || (!from_window && !throttled_.empty()))) {
    throttled_.push_back(id);
    return;
  }
  const auto& r = w.req;
  if (!w.from_peer) {
    if (connected) {
      if (!policy_.bounded_queue) {
        remote_open_[id] = r.length;
        remote_open_bytes_ += r.length;
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
      if (policy_.ask_received && r.kind == nbd::command::write && !r.fua)
        rc.flags |= peer::flag_memsync;
      w.replicated = std::chrono::steady_clock::now();
      replicate(std::move(rc));
    } else {
      apply(id, writes_.remote(id, remote_stage::failed));
    }
  }
  submit(to_disk_op(r), [this, id](disk_completion& c) { issued_done(id, c); });
}

void data_plane::issued_done(uint64_t id, disk_completion& c) {
  if (c.error == 0) {
    local_finished(id, 0);
    return control_.local_disk_ok();
  }
  spdlog::error("{}: local request failed: {}", name_, std::strerror(c.error));
  auto it = calls_.find(id);
  if (it == calls_.end())
    return local_finished(id, nbd_error(c.error));
  count_error(it->second.req);
  if (!it->second.from_peer && control_.secondary_holds_everything())
    return cover_local_failure(id, nbd_error(c.error));
  local_finished(id, nbd_error(c.error));
}

void data_plane::refuse(uint64_t id) {
  writes_.remote(id, remote_stage::failed);
  for (auto ready : writes_.release(id))
    admit(ready);
  auto o = writes_.local_done(id, nbd::eio);
  o.remote_failed = false;  // nothing was written anywhere
  apply(id, o);
}

/// Write `id` may run (nothing overlapping runs before it): count it, mark
/// its extents, and issue it once the activemap on disk covers them.
void data_plane::admit(uint64_t id) {
  if (peer_reads_.count(id) != 0)
    return start_read_for_primary(id);  // a read held behind writes
  auto& w = calls_.at(id);
  const auto& r = w.req;
  ++in_flight_;
  writes_.start(id, r.fua || is_flush(r), !w.from_peer);
  if (is_flush(r)) {
    ++counters_.flushes;
    return issue(id);
  }
  if (r.kind == nbd::command::trim) {
    ++counters_.deletes;
    counters_.delete_bytes += r.length;
  } else {
    ++counters_.writes;
    counters_.write_bytes += r.length;
  }
  mark_busy(r, +1);
  if (w.resync) {
    // The primary keeps the extent dirty until our `done`, so resync data
    // needs no mark here; but a node that cannot write its metadata takes
    // no data at all (as with a client write) until a round succeeds again.
    if (commit_.failing) {
      persist([](bool) {});  // tries the metadata again
      return refuse(id);
    }
    return issue(id);
  }
  map_->write_start(r.offset, r.length);
  // failover auto: without the secondary a write runs only once the witness
  // knows the secondary is behind; it waits here, before it changes
  // anything (docs/FAILOVER.md).
  if (!w.from_peer && !control_.connected() && !standalone_ && !control_.may_write_alone())
    return control_.wait_for_lease(id);
  admit_alone(id);
}

/// The rest of admit(): the generation, the activemap mark, the issue.
void data_plane::admit_alone(uint64_t id) {
  auto it = calls_.find(id);
  if (it == calls_.end())
    return;
  auto& w = it->second;
  const auto& r = w.req;
  bool bumped = false;
  if (!w.from_peer) {
    bumped = control_.bump_generation();
    if (!control_.connected() && !standalone_)
      control_.mark_for_sync(r.offset, r.length);
  }
  if (!bumped && map_->durable(r.offset, r.length))
    return issue(id);
  // Without its extents marked on disk a crash could lose track of it: it
  // waits for the next commit, which covers every write waiting with it.
  map_waiters_.push_back({id, bumped ? commit_.started + 1 : 0});
}

/// A write must wait while its extent's resync data is being read here
/// (that older data could otherwise overtake it on the secondary) or while
/// the extent is being verified (it would show as a false difference).
bool data_plane::must_wait(std::pair<uint64_t, uint64_t> range) {
  if (range.first == range.second)
    return false;
  return control_.must_wait(range.first, range.second - range.first);
}

/// A write, trim, write_zeroes or flush arrives.
void data_plane::arrive(nbd::request r, nbd::reply_sink_ptr sink, bool from_peer, bool resync) {
  auto id = next_id_++;
  auto range = byte_range(r);
  calls_.emplace(id, client_write{std::move(r), std::move(sink), from_peer, resync});
  if (!from_peer && must_wait(range)) {
    deferred_.push_back(id);
    return;
  }
  // Overlapping writes run in arrival order (both nodes then agree).
  if (writes_.arrive(id, range.first, range.second))
    admit(id);
}

void data_plane::release_deferred() {
  if (deferred_.empty())
    return;
  auto pending = std::move(deferred_);
  deferred_.clear();
  for (auto id : pending) {
    auto it = calls_.find(id);
    if (it == calls_.end())
      continue;
    auto range = byte_range(it->second.req);
    if (must_wait(range))
      deferred_.push_back(id);
    else if (writes_.arrive(id, range.first, range.second))
      admit(id);
  }
}

void data_plane::drop_deferred() {
  for (auto id : deferred_) {
    if (auto it = calls_.find(id); it != calls_.end()) {
      answer(it->second.sink, nbd::make_reply(it->second.req, nbd::eshutdown));
      calls_.erase(it);
    }
  }
  deferred_.clear();
}

/// Writes queued for the replication window go while there is room (all of
/// them once the secondary is gone: they then only mark their extents).
void data_plane::pump_window() {
  while (!throttled_.empty() && (!control_.connected() || !window_full())) {
    auto id = throttled_.front();
    throttled_.pop_front();
    if (calls_.count(id))
      issue(id, true);
  }
}

void data_plane::remote_ack(uint64_t id, remote_stage stage, uint32_t /*error*/) {
  if (stage == remote_stage::failed)
    ++counters_.remote_errors;
  else if (stage == remote_stage::written)
    if (auto it = calls_.find(id); it != calls_.end() && !it->second.from_peer)
      replication_latency_.observe(std::chrono::steady_clock::now() - it->second.replicated);
  if (stage != remote_stage::received)
    if (auto it = remote_open_.find(id); it != remote_open_.end()) {
      remote_open_bytes_ -= it->second;
      remote_open_.erase(it);
    }
  apply(id, writes_.remote(id, stage));
  pump_window();
}

void data_plane::link_down() {
  pump_window();
}

void data_plane::peer_gone() {
  // The stopped peer sends no more acknowledgements: what waited fails now.
  for (auto id : writes_.awaiting_remote())
    remote_ack(id, remote_stage::failed, static_cast<uint32_t>(errc::disconnected));
  pump_window();
}

// --- reads -------------------------------------------------------------------------------------

void data_plane::remote_read_done(const nbd::request& r, const nbd::reply_sink_ptr& sink,
                                  buffer_ptr data, bool ok) {
  if (ok) {
    answer(sink, nbd::make_reply(r, 0, std::move(data)));
  } else {
    ++counters_.remote_errors;
    answer(sink, nbd::make_reply(r, nbd::eio));
  }
  io_done();
}

void data_plane::read(nbd::request r, nbd::reply_sink_ptr sink, bool from_peer) {
  ++counters_.reads;
  counters_.read_bytes += r.length;
  if (from_peer)
    return read_for_primary(std::move(r), std::move(sink));
  ++in_flight_;
  client_read(std::move(r), std::move(sink));
}

/// Secondary: a read for the primary (its local disk fails, or it catches
/// up from here) sees every write the primary sent before it: it waits in
/// the write tracker, in arrival order, for earlier overlapping writes,
/// however far they are (held, waiting for the activemap, on the disk).
void data_plane::read_for_primary(nbd::request r, nbd::reply_sink_ptr sink) {
  auto id = next_id_++;
  auto begin = r.offset, end = r.offset + std::max<uint32_t>(r.length, 1);
  peer_reads_.emplace(id, std::make_pair(std::move(r), std::move(sink)));
  if (writes_.arrive_read(id, begin, end))
    start_read_for_primary(id);
}

void data_plane::start_read_for_primary(uint64_t id) {
  auto it = peer_reads_.find(id);
  auto r = std::move(it->second.first);
  auto sink = std::move(it->second.second);
  peer_reads_.erase(it);
  submit(to_disk_op(r), [this, id, r, sink](disk_completion& c) {
    // Writes that arrived after the read and overlap it wait for it.
    for (auto ready : writes_.release(id))
      admit(ready);
    if (c.error != 0)
      ++counters_.read_errors;
    answer(sink, nbd::make_reply(r, nbd_error(c.error), std::move(c.data)));
  });
}

void data_plane::read_after_lease(nbd::request r, nbd::reply_sink_ptr sink) {
  client_read(std::move(r), std::move(sink));
}

void data_plane::refuse_read(const nbd::request& r, const nbd::reply_sink_ptr& sink) {
  answer(sink, nbd::make_reply(r, nbd::eio));
  io_done();
}

/// A client's read (counted in flight).
void data_plane::client_read(nbd::request r, nbd::reply_sink_ptr sink) {
  if (!control_.may_read_here()) {
    // failover auto, and the lease may have run out: the other node may
    // have been promoted and written since, so this copy may be old. The
    // connected secondary still is ours if it answers (a node leaves
    // secondary only by dropping this link), and it reads after every
    // write sent before, unless it lacks some (extents to copy to it);
    // otherwise the read waits for the lease, or fails as writes do
    // (lease-lost, docs/FAILOVER.md).
    if (control_.connected() && !behind_there(r.offset, r.length))
      return control_.read_remote(std::move(r), std::move(sink));
    return control_.wait_for_lease_to_read(std::move(r), std::move(sink));
  }
  if (control_.read_from_secondary(r.offset, r.length))
    return control_.read_remote(std::move(r), std::move(sink));
  if (stale_here(r.offset, r.length)) {
    // The local copy is stale: only the secondary has these blocks.
    if (control_.connected())
      return control_.read_remote(std::move(r), std::move(sink));
    answer(sink, nbd::make_reply(r, nbd::eio));
    return io_done();
  }
  submit(to_disk_op(r), [this, r, sink](disk_completion& c) {
    if (c.error == 0) {
      answer(sink, nbd::make_reply(r, 0, std::move(c.data)));
      io_done();
      return control_.local_disk_ok();
    }
    ++counters_.read_errors;
    // An extent still to be copied to the secondary holds older data
    // there than what the client wrote: the error, not old data.
    if (!control_.connected() || behind_there(r.offset, r.length)) {
      spdlog::error("{}: local read failed ({}); the secondary {}", name_, std::strerror(c.error),
                    control_.connected() ? "lacks the newest data of the range"
                                         : "is not connected");
      answer(sink, nbd::make_reply(r, nbd_error(c.error)));
      return io_done();
    }
    spdlog::error("{}: local read failed ({}); trying the peer", name_, std::strerror(c.error));
    // HAST's first advantage: a bad local block is read from the peer.
    control_.read_remote(r, sink);
  });
}

void data_plane::batch(nbd_batch& batch, std::chrono::steady_clock::time_point now) {
  if (!batch.from_peer)
    last_client_io_ = now;
  auto serving = control_.serving(batch.from_peer);
  for (auto& r : batch.requests) {
    if (!serving) {
      answer(batch.sink, nbd::make_reply(r, nbd::eshutdown));
      continue;
    }
    if (r.kind == nbd::command::read) {
      read(std::move(r), batch.sink, batch.from_peer);
    } else if (!batch.from_peer && md_.local_stale && !control_.connected() && !is_flush(r)) {
      // Stale here and no secondary: a write now would mix new data into
      // extents that must be copied back from the secondary.
      answer(batch.sink, nbd::make_reply(r, nbd::eio));
    } else
      arrive(std::move(r), batch.sink, batch.from_peer, batch.resync);
  }
}

} // namespace hast
