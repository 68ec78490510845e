#include "actors/resource.hpp"

#include "actors/disk_io.hpp"
#include "io/nbd_protocol.hpp"
#include "io/nbd_server.hpp"
#include "io/provider.hpp"

#include <spdlog/spdlog.h>

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

void close_local(self_ptr self) {
  auto& s = self->state;
  for (auto& d : s.disks)
    self->send_exit(d, caf::exit_reason::user_shutdown);
  self->send_exit(s.metadata_writer, caf::exit_reason::user_shutdown);
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
    return caf::make_error(md.error().code(),
                           s.config.local + ": " + md.error().message());
  s.local = std::make_shared<const provider>(std::move(*opened));
  s.md = std::move(*md);
  s.map.emplace(s.md.datasize, s.md.extent_size, s.md.keepdirty);
  // Extents dirty on disk (a crash, or writes while the peer was away) stay
  // dirty until they are synced.
  s.map->merge(s.md.bitmap);
  for (size_t i = 0; i < disk_io_actors_per_resource; ++i)
    s.disks.push_back(self->spawn<caf::detached + caf::linked>(disk_io, s.local, s.md.data_offset,
                                                               s.md.sequence));
  s.metadata_writer = self->spawn<caf::detached + caf::linked>(disk_io, s.local, s.md.data_offset,
                                                               s.md.sequence);
  return {};
}

/// Leaves primary once the last request has drained: flush, persist, switch.
void finish_drain(self_ptr self) {
  auto& s = self->state;
  self->request(pick_disk(self), caf::infinite, atom::flush_v)
    .then([=](uint64_t) {}, [=](caf::error& err) {
      ++self->state.counters.flush_errors;
      spdlog::error("{}: flush while leaving primary failed: {}", self->state.config.name,
                    self->system().render(err));
    });
  auto target = s.pending_role.value_or(role::init);
  s.md.prevrole = target;
  persist(self, [=](bool) {
    auto& s = self->state;
    auto previous = s.current;
    spdlog::info("{}: role changed from {} to {}", s.config.name, to_string(previous),
                 to_string(target));
    s.current = target;
    s.draining = false;
    s.pending_role.reset();
    if (target == role::init)
      close_local(self);
    for (auto& rp : s.drained)
      rp.deliver(previous);
    s.drained.clear();
    for (auto& rp : s.stopped)
      rp.deliver(true);
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
  if (s.in_flight == 0)
    finish_drain(self);
}

caf::result<role> change_role(self_ptr self, role target, bool force) {
  auto& s = self->state;
  auto previous = s.current;
  if (target == previous)
    return previous;
  if (s.draining)
    return caf::make_error(errc::busy, s.config.name + ": a role change is already in progress");
  if (previous == role::primary) {
    if (s.nbd_clients > 0 && !force)
      return caf::make_error(errc::busy,
                             s.config.name + ": " + std::to_string(s.nbd_clients)
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
  }
  s.last_error.clear();
  s.current = target;
  if (target == role::init) {
    close_local(self);
  } else {
    s.md.prevrole = target;
    persist(self, [](bool) {});
  }
  spdlog::info("{}: role changed from {} to {}", s.config.name, to_string(previous),
               to_string(target));
  return previous;
}

void handle_write(self_ptr self, nbd_call call) {
  auto& s = self->state;
  ++s.in_flight;
  auto offset = call.offset;
  uint64_t length = call.length;
  auto issue = [self, call = std::move(call)](bool map_on_disk) mutable {
    if (!map_on_disk) {
      // Without the extent marked on disk a crash could lose track of it.
      complete(call, nbd::eio);
      self->state.map->write_complete(call.offset, call.length);
      io_done(self);
      return;
    }
    auto finish = [self, call](uint32_t error) mutable {
      if (self->state.map->write_complete(call.offset, call.length))
        persist(self, [](bool) {});
      complete(call, error);
      io_done(self);
    };
    auto on_error = [self, finish](caf::error& err) mutable {
      spdlog::error("{}: local write failed: {}", self->state.config.name,
                    self->system().render(err));
      ++self->state.counters.write_errors;
      finish(nbd::eio);
    };
    auto& disk = pick_disk(self);
    switch (call.kind) {
      case nbd_call::op::write:
        ++self->state.counters.writes;
        self->request(disk, caf::infinite, atom::write_v, call.offset, call.data, call.fua)
          .then([finish](uint64_t) mutable { finish(0); }, on_error);
        break;
      case nbd_call::op::trim:
        ++self->state.counters.deletes;
        self->request(disk, caf::infinite, atom::discard_v, call.offset, uint64_t{call.length})
          .then([finish](uint64_t) mutable { finish(0); }, on_error);
        break;
      default:
        ++self->state.counters.writes;
        self->request(disk, caf::infinite, atom::zeroes_v, call.offset, uint64_t{call.length},
                      call.may_trim)
          .then([finish](uint64_t) mutable { finish(0); }, on_error);
        break;
    }
  };
  // The activemap invariant: an extent is marked on disk before any write to
  // it is issued, so after a crash every possibly-written extent is dirty.
  if (s.map->write_start(offset, length))
    persist(self, std::move(issue));
  else
    issue(true);
}

void handle_call(self_ptr self, nbd_call call) {
  auto& s = self->state;
  if (s.current != role::primary || s.draining) {
    complete(call, nbd::eshutdown);
    return;
  }
  switch (call.kind) {
    case nbd_call::op::read: {
      ++s.counters.reads;
      ++s.in_flight;
      self->request(pick_disk(self), caf::infinite, atom::read_v, call.offset, call.length)
        .then(
          [self, call](buffer_ptr& data) mutable {
            complete(call, 0, std::move(data));
            io_done(self);
          },
          [self, call](caf::error& err) mutable {
            ++self->state.counters.read_errors;
            spdlog::error("{}: local read failed: {}", self->state.config.name,
                          self->system().render(err));
            complete(call, nbd::eio);
            io_done(self);
          });
      break;
    }
    case nbd_call::op::flush: {
      ++s.counters.flushes;
      ++s.in_flight;
      self->request(pick_disk(self), caf::infinite, atom::flush_v)
        .then(
          [self, call](uint64_t) mutable {
            complete(call, 0);
            io_done(self);
          },
          [self, call](caf::error&) mutable {
            ++self->state.counters.flush_errors;
            complete(call, nbd::eio);
            io_done(self);
          });
      break;
    }
    default:
      handle_write(self, std::move(call));
  }
}

resource_status make_status(self_ptr self) {
  auto& s = self->state;
  resource_status st;
  st.name = s.config.name;
  st.provider_name = s.config.provider_name;
  st.current_role = s.current;
  st.status = s.current == role::init ? "-" : (s.config.standalone() ? "complete" : "degraded");
  st.connected = false;
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
    st.dirty_bytes = s.map->dirty_extents() * s.md.extent_size;
  }
  st.nbd_connections = s.nbd_clients;
  st.queue_local = s.in_flight;
  st.counters = s.counters;
  st.last_error = s.last_error;
  return st;
}

} // namespace

resource_state::~resource_state() {
  if (server)
    server->stop();
}

resource_actor::behavior_type resource(resource_actor::stateful_pointer<resource_state> self,
                                       resource_config config, io_ref io) {
  auto& s = self->state;
  s.config = std::move(config);
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
  return {
    [=](atom::role, role target, bool force) -> caf::result<role> {
      return change_role(self, target, force);
    },
    [=](atom::status) { return make_status(self); },
    [=](atom::configure, resource_config& updated) {
      self->state.config = std::move(updated);
      spdlog::info("{}: configuration reloaded", self->state.config.name);
      return true;
    },
    [=](atom::stop) -> caf::result<bool> {
      auto& s = self->state;
      if (s.current != role::primary)
        return true;
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
  };
}

} // namespace hast
