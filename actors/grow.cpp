// Online growth (hastctl grow, docs/METADATA.md "Online growth"): after
// both nodes' providers grew, the primary asks the secondary to grow to the
// new data size, and grows itself once the secondary's metadata carries it,
// so that every replicated write past the old end finds room there. Each
// node changes its metadata (datasize, a longer activemap bitmap) with one
// ordinary slot write: a node killed during the grow comes back with the old
// size or the new one. The new space is marked for the resync unless
// --assume-clean says both nodes' new areas are equal (zeroed).
//
// In role init the resource grows offline, on this node alone: the way out
// when the larger node of an interrupted grow became primary and this one
// is refused as the smaller secondary.

#include "actors/resource.hpp"

#include "io/io_env.hpp"
#include "io/storage/provider.hpp"
#include "io/codec/size.hpp"

#include <spdlog/spdlog.h>

namespace hast {

namespace {

/// Grows this node's metadata, activemap and disk area to `datasize`
/// (checked by the caller); `then` runs once the metadata is on disk.
void grow_here(resource_ptr self, uint64_t datasize, bool mark_new,
               std::function<void(bool)> then) {
  auto& s = self->state;
  auto& md = s.plane->md();
  auto old = md.datasize;
  if (auto st = grow_metadata(md, datasize); !st) {
    spdlog::error("{}: {}", s.config.name, st.message());
    then(false);
    return;
  }
  s.plane->map().grow(datasize);
  if (mark_new) {
    s.plane->map().mark_sync(old, datasize - old);
    if (s.sync.active)
      s.sync.total_bytes += datasize - old;
  }
  // Before any request for the new space: one sender, so the disk actor
  // sees its new area first.
  if (s.disk)
    self->send(s.disk, atom::grow_v, datasize);
  s.plane->persist(std::move(then));
}

caf::error refusal(errc code, const std::string& why) {
  return caf::make_error(code, why);
}

/// Role init: grows the metadata on the provider itself (hastd holds no
/// descriptor of it in init) to all the provider holds, within the slots'
/// room, and marks the new space dirty so that the next connection
/// synchronises it, unless `assume_clean`. One metadata write, flushed: a
/// crash leaves the old size or the new one.
caf::result<std::string> grow_offline(resource_ptr self, bool assume_clean) {
  auto& s = self->state;
  if (s.config.is_witness || s.config.local.empty())
    return refusal(errc::invalid_argument,
                   "resource " + s.config.name + " has no local provider on this node");
  auto env = s.io.env ? s.io.env : default_io_env();
  auto prov = env->open_provider(s.config.local, true);
  if (!prov)
    return refusal(errc::io_error, prov.error().message());
  // The lock that keeps 'hastctl create' off it while it is used.
  if (auto st = prov->lock(); !st)
    return refusal(st.code(), st.message());
  auto md = read_metadata(*prov, s.config.name);
  if (!md)
    return refusal(md.error().code(), md.error().message());
  auto target = growth_target(*md, prov->size());
  if (!target)
    return refusal(target.error().code(), prov->path() + ": " + target.error().message());
  auto old = md->datasize;
  if (auto st = grow_metadata(*md, *target); !st)
    return refusal(st.code(), prov->path() + ": " + st.message());
  auto standalone = s.config.standalone();
  if (!assume_clean && !standalone)
    mark_extents(*md, old);
  if (auto st = write_metadata(*prov, *md, true); !st)
    return refusal(errc::io_error, "the new size could not be written to the metadata of "
                                     + prov->path() + ": " + st.message() + "; nothing changed");
  auto how = standalone     ? std::string{"no secondary"}
             : assume_clean ? std::string{"new space assumed clean"}
                            : humanize(*target - old)
                                + " of new space marked for the resync at the next connection";
  spdlog::info("{}: grown offline (role init) from {} to {} bytes ({})", s.config.name, old,
               *target, how);
  event(self, "grow", {{"old", std::to_string(old)}, {"new", std::to_string(*target)}},
        {{"assume_clean", assume_clean ? "yes" : "no"}, {"offline", "yes"}});
  return "grown offline (role init) from " + std::to_string(old) + " to "
         + std::to_string(*target) + " bytes (" + humanize(old) + " -> " + humanize(*target)
         + "; " + how + ")";
}

} // namespace

caf::result<std::string> grow_command(resource_ptr self, bool assume_clean) {
  auto& s = self->state;
  if (s.current == role::init && !s.draining)
    return grow_offline(self, assume_clean);
  if (s.current != role::primary || s.draining)
    return refusal(errc::not_primary,
                   "resource " + s.config.name + " is not primary here (role "
                     + to_string(s.current) + "): run 'hastctl grow' on the primary");
  if (s.growing)
    return refusal(errc::busy, "a grow of " + s.config.name + " is already running");
  auto size = s.local->refresh_size();
  if (!size)
    return refusal(size.error().code(), size.error().message());
  auto target = growth_target(s.plane->md(), *size);
  if (!target)
    return refusal(target.error().code(), s.local->path() + ": " + target.error().message());
  auto standalone = s.config.standalone();
  if (!standalone && !s.connected)
    return refusal(errc::disconnected,
                   "the secondary is not connected: a resource grows on both nodes at once "
                   "(docs/METADATA.md, \"Online growth\"); wait for the connection");
  s.growing = true;
  auto old = s.plane->md().datasize;
  auto wanted = *target;
  auto rp = self->make_response_promise<std::string>();
  auto finish = [=]() mutable {
    auto& s = self->state;
    if (s.current != role::primary || !s.plane->is_open()) {
      s.growing = false;
      rp.deliver(refusal(errc::not_primary, "the role changed during the grow"));
      return;
    }
    // `then` runs inside a turn (the metadata write's completion).
    grow_here(self, wanted, !assume_clean && !standalone, [=](bool ok) mutable {
      auto& s = self->state;
      s.growing = false;
      if (!ok) {
        // The size stays grown in memory and goes out with the next
        // metadata write; a restart before that comes back with the old
        // size, which the secondary's larger one does not prevent.
        rp.deliver(refusal(errc::io_error,
                           "the new size could not be written to the metadata of "
                             + s.local->path() + " (the secondary has grown; run 'hastctl grow' "
                             "again once the disk works)"));
        return;
      }
      auto how = standalone ? std::string{"no secondary"}
                 : assume_clean ? std::string{"new space assumed clean"}
                                : humanize(wanted - old) + " of new space to sync";
      spdlog::info("{}: grown from {} to {} bytes ({})", s.config.name, old, wanted, how);
      event(self, "grow", {{"old", std::to_string(old)}, {"new", std::to_string(wanted)}},
            {{"assume_clean", assume_clean ? "yes" : "no"}});
      if (!assume_clean && !standalone && s.plane->map().sync_extents() > 0)
        sync_start(self);
      auto text = "grown from " + std::to_string(old) + " to " + std::to_string(wanted) + " bytes ("
                  + humanize(old) + " -> " + humanize(wanted) + "; " + how + ")";
      // /dev/hast/<name> grows too, in place; the reply says whether it did.
      resize_block_device(self, wanted, [rp, text](std::string device) mutable {
        rp.deliver(device.empty() ? text : text + "; " + device);
      });
    });
  };
  if (standalone) {
    finish();
    return rp;
  }
  self->request(s.link, std::chrono::seconds(60), atom::grow_v, wanted)
    .then(
      [=](uint64_t theirs) mutable {
        activation act{self};
        if (theirs != wanted) {
          self->state.growing = false;
          rp.deliver(refusal(errc::protocol_error,
                             "the secondary answered a data size of " + std::to_string(theirs)
                               + " instead of " + std::to_string(wanted)));
          return;
        }
        finish();
      },
      [=](caf::error& err) mutable {
        activation act{self};
        self->state.growing = false;
        spdlog::warn("{}: grow refused: {}", self->state.config.name, self->system().render(err));
        rp.deliver(std::move(err));
      });
  return rp;
}

caf::result<uint64_t> grow_from_primary(resource_ptr self, uint64_t datasize) {
  auto& s = self->state;
  if (s.current != role::secondary || !s.plane->is_open())
    return refusal(errc::invalid_argument,
                   "resource " + s.config.name + " is not secondary on " + s.node);
  auto& md = s.plane->md();
  if (datasize == md.datasize)
    return datasize;  // grown already (the primary was killed before it grew)
  if (datasize < md.datasize)
    return refusal(errc::invalid_argument,
                   "on " + s.node + ": the data size is " + std::to_string(md.datasize)
                     + " bytes; a resource never shrinks");
  if (s.growing)
    return refusal(errc::busy, "on " + s.node + ": a grow is already running");
  auto size = s.local->refresh_size();
  if (!size)
    return refusal(size.error().code(), "on " + s.node + ": " + size.error().message());
  auto target = growth_target(md, *size, datasize);
  if (!target)
    return refusal(target.error().code(),
                   "on " + s.node + ": " + s.local->path() + ": " + target.error().message());
  s.growing = true;
  auto old = md.datasize;
  auto rp = self->make_response_promise<uint64_t>();
  // The primary marks the new space for the resync; it is the sync source.
  grow_here(self, datasize, false, [=](bool ok) mutable {
    auto& s = self->state;
    s.growing = false;
    if (!ok) {
      rp.deliver(refusal(errc::io_error, "on " + s.node + ": the new size could not be written "
                                           "to the metadata of " + s.local->path()));
      return;
    }
    spdlog::info("{}: grown from {} to {} bytes for the primary", s.config.name, old, datasize);
    event(self, "grow", {{"old", std::to_string(old)}, {"new", std::to_string(datasize)}});
    rp.deliver(datasize);
  });
  return rp;
}

} // namespace hast
