#include "actors/resource.hpp"

#include "actors/data_thread.hpp"
#include "actors/disk_io.hpp"
#include "actors/peer.hpp"
#include "io/process/block_device.hpp"
#include "io/process/hooks.hpp"
#include "io/io_env.hpp"
#include "io/net/nbd_protocol.hpp"
#include "io/net/nbd_server.hpp"
#include "io/net/peer_transport.hpp"
#include "io/storage/provider.hpp"

#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>
#include <unistd.h>

namespace hast {

namespace {

// The export as an NBD session sees it: every batch of requests becomes one
// typed message to the resource actor. Holds the actor weakly so that a
// lingering connection does not keep a stopped resource alive.
class resource_backend final : public nbd::backend,
                               public std::enable_shared_from_this<resource_backend> {
public:
  resource_backend(caf::weak_actor_ptr resource, std::shared_ptr<std::atomic<uint64_t>> size)
      : resource_(std::move(resource)), size_(std::move(size)) {}

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

  uint64_t size_now() const override { return size_->load(std::memory_order_acquire); }

private:
  resource_actor lock() const {
    return caf::actor_cast<resource_actor>(resource_.lock());
  }

  caf::weak_actor_ptr resource_;
  std::shared_ptr<std::atomic<uint64_t>> size_;  // resource_state::export_size
  std::atomic<bool> opened_{false};
};

void finish_drain(resource_ptr self);
void rebuild_when_back(resource_ptr self);
bool bump_generation(resource_ptr self);
bool secondary_holds_everything(resource_ptr self);
void read_remote(resource_ptr self, nbd::request r, nbd::reply_sink_ptr sink);

/// How the resource steers its data plane: the data plane's questions are
/// answered from the control plane's state, its requests carried out here.
class resource_steering final : public data_plane::steering {
public:
  explicit resource_steering(resource_ptr self) : self_(self) {}

  bool serving(bool from_peer) const override {
    auto& s = self_->state;
    return from_peer ? s.current == role::secondary : s.current == role::primary && !s.draining;
  }
  bool connected() const override { return self_->state.connected; }

  bool must_wait(uint64_t offset, uint64_t length) override {
    return touches_sync(self_, offset, length) || touches_verify(self_, offset, length);
  }
  bool read_from_secondary(uint64_t offset, uint64_t length) override {
    return hast::read_from_secondary(self_, offset, length);
  }
  void read_remote(nbd::request r, nbd::reply_sink_ptr sink) override {
    hast::read_remote(self_, std::move(r), std::move(sink));
  }
  void mark_for_sync(uint64_t offset, uint64_t length) override {
    hast::mark_for_sync(self_, offset, length);
  }
  void resync_now() override {
    if (!self_->state.sync.active)
      sync_start(self_);
  }
  void write_finished() override {
    auto& s = self_->state;
    if (!s.hash_waiting.empty())
      serve_hash_requests(self_);
    if (s.sync.active)
      sync_pump(self_);
    if (s.verify.active)
      verify_pump(self_);
  }

  bool bump_generation() override { return hast::bump_generation(self_); }
  bool may_write_alone() override { return hast::may_write_alone(self_); }
  void wait_for_lease(uint64_t id) override { hast::wait_for_lease(self_, id); }
  void hold_answer(nbd::reply_sink_ptr sink, nbd::reply r) override {
    hast::hold_answer(self_, std::move(sink), std::move(r));
  }
  bool may_read_here() override { return hast::may_read_alone(self_); }
  void wait_for_lease_to_read(nbd::request r, nbd::reply_sink_ptr sink) override {
    hast::wait_for_lease_to_read(self_, std::move(r), std::move(sink));
  }

  bool secondary_holds_everything() override { return hast::secondary_holds_everything(self_); }
  void local_disk_failed(uint32_t error) override {
    auto& s = self_->state;
    if (s.local_error_reported)
      return;
    s.local_error_reported = true;
    event(self_, "local-error", {},
          {{"error", error == nbd::enospc ? "no space left" : "I/O error"}});
  }
  void local_disk_ok() override { rebuild_when_back(self_); }

  void idle() override {
    if (self_->state.draining)
      finish_drain(self_);
  }

private:
  resource_ptr self_;
};

} // namespace

void flush_activation(resource_ptr self) {
  auto& s = self->state;
  s.plane->end_turn();
  auto out = s.plane->take();
  if (out.lazy_commit)
    self->delayed_send(self, lazy_commit_delay, atom::commit_tick_v);
  if (!out.replicate.empty()) {
    if (s.link) {
      self->send(s.link, atom::replicate_v, std::move(out.replicate));
    } else {
      // No peer any more: what was queued failed to reach it.
      remote_acks failed;
      for (auto& rc : out.replicate)
        failed.push_back({rc.id, remote_stage::failed, static_cast<uint32_t>(errc::disconnected)});
      self->send(self, atom::remote_ack_v, std::move(failed));
    }
  }
  if (!out.disk.empty()) {
    if (s.disk) {
      self->send(s.disk, atom::submit_v, std::move(out.disk));
    } else {
      // No disk (the provider is closed): what was queued fails.
      disk_results failed;
      for (auto& op : out.disk)
        failed.push_back({op.tag, ESHUTDOWN, nullptr});
      self->send(self, atom::disk_done_v, std::move(failed));
    }
  }
  for (auto& [sink, replies] : out.replies)
    sink->deliver(std::move(replies));
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

namespace {

// --- the peer ----------------------------------------------------------------------------------

void stop_peer(resource_ptr self) {
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
    h.refuse(caf::make_error(errc::disconnected, "the peer is gone"));
  s.hash_waiting.clear();
  s.plane->peer_gone();
}

void start_peer(resource_ptr self, role side) {
  auto& s = self->state;
  if (s.config.standalone() || s.link)
    return;
  // The primary dials; the secondary is handed its link (peer_accept).
  connector connect;
  if (side == role::primary) {
    auto io = s.home != nullptr ? &s.home->io() : s.io.io;
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(s.config.timeout));
    auto env = s.io.env ? s.io.env : default_io_env();
    connect = env->peer_connector(*io, s.config.remote, s.config.source, peer::default_keepalive,
                                  timeout);
  }
  s.link = self->spawn<caf::linked>(replication_peer, s.config, s.node, side,
                                    caf::actor_cast<resource_actor>(self), connect);
  if (s.home != nullptr)
    pin(caf::actor_cast<caf::abstract_actor*>(s.link), *s.home);
}

// --- a failing local disk ----------------------------------------------------------------------

/// Does the secondary hold every acknowledged write (connected, and no
/// extent waits to be copied to it)? Then a write the local disk fails can
/// stand on the secondary's copy alone.
bool secondary_holds_everything(resource_ptr self) {
  auto& s = self->state;
  if (!s.connected || s.current != role::primary)
    return false;
  if (s.plane->md().local_stale || (s.sync.active && s.sync.from_secondary))
    return true;  // what is dirty here is stale here: the secondary has it
  return !s.sync.active && s.plane->map().sync_extents() == 0;
}

/// A local request succeeded: if the disk had failed, try to copy the stale
/// extents back from the secondary (the copy stops at the next failure).
void rebuild_when_back(resource_ptr self) {
  auto& s = self->state;
  if (!s.plane->md().local_stale || !s.connected || s.sync.active || s.current != role::primary)
    return;
  auto now = std::chrono::steady_clock::now();
  if (now - s.last_rebuild < local_rebuild_interval)
    return;
  s.last_rebuild = now;
  spdlog::info("{}: the local disk answers again; copying the stale extents from the secondary",
               s.config.name);
  sync_start(self);
}

// --- generations -------------------------------------------------------------------------------

/// The generation rule (HAST's): the first write after the resource was
/// created, and the first write of every outage, raise localcnt before the
/// write is issued, so that the nodes can later tell who changed what.
bool bump_generation(resource_ptr self) {
  auto& s = self->state;
  auto& md = s.plane->md();
  if (s.config.standalone())
    return false;
  if (md.localcnt != 0 && (s.connected || s.bumped))
    return false;
  ++md.localcnt;
  s.bumped = !s.connected;
  // Connected, the secondary receives this very write: it knows the new
  // generation too, or a later connect would look like a split brain.
  if (s.connected)
    self->send(s.link, atom::sync_done_v, md.localcnt, false);
  spdlog::info("{}: generation raised to {} ({})", s.config.name, md.localcnt,
               s.connected ? "first write" : "first write while the peer is away");
  return true;
}

// --- reads from the secondary ------------------------------------------------------------------

void read_remote(resource_ptr self, nbd::request r, nbd::reply_sink_ptr sink) {
  auto& s = self->state;
  self->request(s.link, std::chrono::seconds(s.config.timeout), atom::remote_read_v, r.offset,
                r.length)
    .then(
      [self, r, sink](buffer_ptr& data) {
        activation act{self};
        self->state.plane->remote_read_done(r, sink, std::move(data), true);
      },
      [self, r, sink](caf::error&) {
        activation act{self};
        self->state.plane->remote_read_done(r, sink, nullptr, false);
      });
}

// --- roles -------------------------------------------------------------------------------------

void close_local(resource_ptr self) {
  auto& s = self->state;
  stop_peer(self);
  for (auto* child : {&s.disk}) {
    if (*child) {
      s.retired.insert(child->address());
      self->send_exit(*child, caf::exit_reason::user_shutdown);
    }
  }
  s.disk = nullptr;
  s.plane->close();
  s.local.reset();
}

/// Opens the provider, checks its metadata and starts the disk actors.
caf::error open_local(resource_ptr self) {
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
  s.plane->set_standalone(s.config.standalone());
  s.plane->set_metaflush(s.config.metaflush);
  s.plane->open(std::move(*md));
  // Lazy, so that it is pinned before its first activation: its ring is
  // made on, and belongs to, the data thread.
  s.disk = self->spawn<caf::linked + caf::lazy_init>(
    disk_io, s.local, s.plane->md().data_offset, s.plane->md().datasize, s.io.disk,
    caf::actor_cast<resource_actor>(self),
    disk_home{s.home != nullptr                       ? &s.home->io()
              : s.io.disk == disk_engine_kind::posted ? s.io.io  // a test's context
                                                      : nullptr});
  if (s.home != nullptr)
    pin(caf::actor_cast<caf::abstract_actor*>(s.disk), *s.home);
  return {};
}

void enter(resource_ptr self, role target) {
  auto& s = self->state;
  auto previous = s.current;
  s.current = target;
  s.policy = policy_for(s.config.replication);
  s.plane->set_policy(s.policy);
  s.bumped = false;
  if (target == role::init) {
    close_local(self);
  } else {
    s.plane->md().prevrole = target;
    s.plane->persist([](bool) {});
    start_peer(self, target);
  }
  s.lease.promoting = false;
  spdlog::info("{}: role changed from {} to {}", s.config.name, to_string(previous),
               to_string(target));
  if (previous != target)
    event(self, "role", {{"old", to_string(previous)}, {"new", to_string(target)}});
}

/// Leaves primary once the last request has drained: flush, persist, switch.
void finish_drain(resource_ptr self) {
  auto& s = self->state;
  auto target = s.pending_role.value_or(role::init);
  disk_op flush;
  flush.op = disk_op::kind::flush;
  s.plane->submit(flush, [=](disk_completion& c) {
    auto& s = self->state;
    if (c.error != 0) {
      ++s.plane->counters().flush_errors;
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
    s.plane->map().forget_keepdirty();
    s.plane->persist([=](bool) {
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
void begin_drain(resource_ptr self, role target) {
  auto& s = self->state;
  s.draining = true;
  s.pending_role = target;
  lease_leaving(self);
  if (s.server)
    s.server->close_sessions();
  s.plane->drop_deferred();
  if (s.plane->in_flight() == 0)
    finish_drain(self);
}

// --- /dev/hast/<name> ---------------------------------------------------------------------------

/// Runs `job` on the resource's device thread; its outcome comes back as a
/// `device` message tagged with the current epoch.
void post_device_job(resource_ptr self, std::function<void(uint64_t epoch)> job) {
  auto& s = self->state;
  if (!s.devices)
    s.devices = std::make_shared<device_worker>();
  auto epoch = ++s.device_epoch;
  s.devices->post([job = std::move(job), epoch] { job(epoch); });
}

/// Primary with `device on`: makes /dev/hast/<name> on the export. A
/// failure leaves the role as it is; status and the log say why.
void make_block_device(resource_ptr self) {
  auto& s = self->state;
  if (!s.config.device)
    return;
  s.device_pending = true;
  s.device_error.clear();
  auto me = caf::actor_cast<resource_actor>(self);
  auto link = s.config.provider_name, name = s.config.name, nbd = s.config.nbd;
  // Limited to the data size now, on the export's device view: a grow
  // widens it in place (resize_block_device).
  auto size = s.plane->md().datasize;
  post_device_job(self, [me, link, name, nbd, size](uint64_t epoch) {
    // nbdfuse ends with this resource's device thread, hastd's death included.
    auto made = make_device(link, name, nbd, helper_lifetime::ends_with_caller, size);
    if (made)
      caf::anon_send(me, atom::device_v, epoch, std::string{"made"},
                     made->link + " -> " + made->device, std::to_string(made->connections));
    else
      caf::anon_send(me, atom::device_v, epoch, std::string{"failed"}, std::string{},
                     made.error().message());
  });
}

/// At start: what an earlier hastd left under this resource's device name
/// (killed -9: a dangling link, a loop device on a dead FUSE mount) is taken
/// apart on the device thread, before any device is made there. One in use,
/// or another export's live device, is left and logged.
void clear_stale_block_device(resource_ptr self) {
  auto& s = self->state;
  auto link = s.config.provider_name, name = s.config.name, nbd = s.config.nbd;
  std::error_code ec;
  auto link_path = std::filesystem::path{device_link_root} / link;
  if (link.empty() || nbd.empty()
      || (!device_recorded(link) && !std::filesystem::is_symlink(link_path, ec)))
    return;
  if (!s.devices)
    s.devices = std::make_shared<device_worker>();
  s.devices->post([link, name, nbd] {
    auto st = clear_stale_device(link, name, nbd);
    if (!st)
      spdlog::warn("{}: {}/{} from an earlier run: {}", name, device_link_root, link, st.message());
    else if (!st.detail().empty())
      spdlog::info("{}: {}/{}: {}", name, device_link_root, link, st.detail());
  });
}

} // namespace

void resize_block_device(resource_ptr self, uint64_t datasize, std::function<void(std::string)> then) {
  auto& s = self->state;
  s.export_size->store(datasize, std::memory_order_release);
  auto link = s.config.provider_name;
  if (link.empty() || s.config.nbd.empty()) {
    then("");
    return;
  }
  // Not counted as a device job (post_device_job): a make or removal
  // waiting for its outcome stays current. Jobs run in order, so a device
  // still being made is grown once it is there.
  if (!s.devices)
    s.devices = std::make_shared<device_worker>();
  auto ticket = ++s.device_resize_serial;
  s.device_resizes.emplace(ticket, std::move(then));
  auto me = caf::actor_cast<resource_actor>(self);
  s.devices->post([me, link, datasize, ticket] {
    auto st = resize_device(link, datasize);
    caf::anon_send(me, atom::device_v, ticket, std::string{"resized"},
                   std::string{st ? "ok" : "failed"}, st.detail());
  });
}

namespace {

/// The outcome of resize_block_device's job.
void device_resized(resource_ptr self, uint64_t ticket, bool ok, const std::string& detail) {
  auto& s = self->state;
  auto it = s.device_resizes.find(ticket);
  if (it == s.device_resizes.end())
    return;
  auto then = std::move(it->second);
  s.device_resizes.erase(it);
  if (detail.empty()) {
    then("");
    return;
  }
  if (ok) {
    spdlog::info("{}: {}", s.config.name, detail);
    then(detail);
    return;
  }
  spdlog::error("{}: the grow is done, but the device did not grow: {}", s.config.name, detail);
  then("the device did not grow: " + detail);
}

/// Removes the device on the device thread; the outcome comes back as a
/// "removed" device message.
void remove_block_device(resource_ptr self, bool force) {
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
void leave_primary(resource_ptr self, role target, bool force) {
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
void device_done(resource_ptr self, uint64_t epoch, const std::string& what,
                 const std::string& device, const std::string& detail) {
  auto& s = self->state;
  if (what == "resized") {
    device_resized(self, epoch, device == "ok", detail);
    return;
  }
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

caf::result<role> change_role(resource_ptr self, role target, bool force) {
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

resource_status make_status(resource_ptr self) {
  auto& s = self->state;
  resource_status st;
  st.name = s.config.name;
  st.provider_name = s.config.provider_name;
  st.current_role = s.current;
  auto in_sync = s.config.standalone() || (s.connected && !s.sync.active
                                           && (!s.plane->is_open() || s.plane->map().sync_extents() == 0));
  // FreeBSD's words only: scripts parse this column. Split brain, a failing
  // local disk and sync progress are separate fields.
  st.status = s.current == role::init ? "-"
              : in_sync && !s.split_brain && !s.plane->md().local_stale ? "complete"
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
  if (s.plane->is_open()) {
    auto& md = s.plane->md();
    st.datasize = md.datasize;
    st.extent_size = md.extent_size;
    st.keepdirty = md.keepdirty;
    st.dirty_bytes = s.plane->map().sync_extents() * md.extent_size;
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
  st.local_failing = s.plane->md().local_stale;
  st.device = s.device;
  st.device_error = s.device_error;
  if (s.device_pending && s.device.empty())
    st.device_error = "being made";
  st.queue_local = s.plane->in_flight();
  st.queue_recv = s.plane->writes_open();
  st.counters = s.plane->counters();
  st.client_latency = s.plane->client_latency();
  st.replication_latency = s.plane->replication_latency();
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
                                       resource_config config, std::string node, runtime io) {
  auto& s = self->state;
  s.config = std::move(config);
  s.node = std::move(node);
  s.io = io;
  s.policy = policy_for(s.config.replication);
  s.steer = std::make_unique<resource_steering>(self);
  s.plane = std::make_unique<data_plane>(s.config.name, s.config.standalone(), s.policy, *s.steer);
  if (io.data) {
    s.home = &io.data->of(s.config.name);
    pin(self, *s.home);
  }
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self->ctrl());
  auto* export_io = s.home != nullptr ? &s.home->io() : io.io;
  s.server = std::make_shared<nbd::server>(*export_io, s.config.name, s.config.nbd,
                                           [weak, size = s.export_size] {
                                             return std::make_shared<resource_backend>(weak, size);
                                           });
  // Never blocks this worker: a host name is resolved asynchronously, and
  // the outcome is logged from wherever it is known; status shows a failure.
  s.server->start([name = s.config.name, address = s.config.nbd](status st) {
    if (!st)
      spdlog::error("{}: NBD export: {}", name, st.message());
    else
      spdlog::info("{}: NBD export listening on {}", name, address);
  });
  // The supervisor hears when the listener is closed: a reload restart
  // starts the replacement, which may listen on the same address, then.
  self->attach_functor([server = s.server, sup = io.supervisor, me = self->address()] {
    server->stop([sup, me] {
      if (sup)
        caf::anon_send(sup, atom::export_closed_v, me);
    });
  });
  lease_start(self);
  clear_stale_block_device(self);
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
      s.plane->set_policy(s.policy);
      s.plane->set_standalone(s.config.standalone());
      s.plane->set_metaflush(s.config.metaflush);
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
        if (!s.plane->is_open() || s.plane->in_flight() > 0 || !s.plane->map().forget_keepdirty())
          return true;
        auto rp = self->make_response_promise<bool>();
        s.plane->persist([rp](bool ok) mutable { rp.deliver(ok); });
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
      info.size = s.plane->md().datasize;
      // What the device view advertises; NBD clients take sizes below 2^63.
      info.ceiling = std::min<uint64_t>(max_datasize(s.plane->md()), INT64_MAX / 4096 * 4096);
      s.export_size->store(info.size, std::memory_order_release);
      info.description = "hast resource " + s.config.name;
      call.done({"", info});
    },
    [=](atom::nbd, nbd_batch& batch) {
      activation act{self};
      self->state.plane->batch(batch, std::chrono::steady_clock::now());
    },
    [=](atom::disk_done, disk_results& done) {
      activation act{self};
      self->state.plane->disk_done(done);
    },
    [=](atom::commit_tick) {
      activation act{self};
      self->state.plane->commit_tick();
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
      accepted.link->send(peer::make_header(peer::msg_type::hello_reply), peer::encode_hello(reply));
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
      s.plane->link_down();
    },
    [=](atom::remote_ack, remote_acks& acks) {
      activation act{self};
      for (auto& a : acks)
        if (!sync_ack(self, a.id, a.stage, a.error))
          self->state.plane->remote_ack(a.id, a.stage, a.error);
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
    [=](atom::grow, bool assume_clean) -> caf::result<std::string> {
      activation act{self};
      return grow_command(self, assume_clean);
    },
    [=](atom::grow, uint64_t datasize) -> caf::result<uint64_t> {
      activation act{self};
      return grow_from_primary(self, datasize);
    },
    [=](atom::verify_range, uint64_t offset, uint32_t length) -> caf::result<block_hashes> {
      activation act{self};
      return hash_range(self, offset, length);
    },
    [=](atom::range_digests, uint64_t offset, uint32_t length) -> caf::result<block_digests> {
      activation act{self};
      return digest_range(self, offset, length);
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
      if (!s.plane->is_open())
        return;
      s.plane->md().remotecnt = localcnt;
      // After a resync the primary holds what we had to give: nothing is
      // dirty, and nothing stale is left here either.
      if (complete) {
        s.plane->map().clear_all_sync();
        s.plane->md().local_stale = false;
        s.local_error_reported = false;
      }
      s.plane->persist([](bool) {});
    },
  };
}

} // namespace hast
