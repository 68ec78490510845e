// The handshake's decision. The secondary compares generations (HAST's
// rules, docs/GENERATIONS.md) and tells a connecting primary which side is
// out of date, or refuses it; the primary then merges the secondary's dirty
// extents and starts the resync.

#include "actors/resource.hpp"

#include <spdlog/spdlog.h>

namespace hast {

peer::hello_message my_hello(resource_ptr self) {
  auto& s = self->state;
  peer::hello_message m;
  m.resource = s.config.name;
  m.node = s.node;
  m.role = to_string(s.current);
  m.datasize = s.plane->md().datasize;
  m.extent_size = s.plane->md().extent_size;
  m.resuid = s.plane->md().resuid;
  m.localcnt = s.plane->md().localcnt;
  m.remotecnt = s.plane->md().remotecnt;
  m.virgin = s.plane->md().localcnt == 0;
  return m;
}

/// Decides, on the secondary, what a connecting primary gets: which side is
/// out of date (HAST's generation rules, docs/GENERATIONS.md) or why not.
peer::hello_message answer_primary(resource_ptr self, const peer::hello_message& p) {
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
  // A primary smaller than us is one whose grow was interrupted after we
  // grew (docs/METADATA.md, "Online growth"): it never writes past its end.
  // A larger one would write where we have no room.
  if (p.datasize > s.plane->md().datasize || p.extent_size != s.plane->md().extent_size) {
    reply.refusal = "data size or extent size differs (primary " + std::to_string(p.datasize) + "/"
                    + std::to_string(p.extent_size) + ", secondary "
                    + std::to_string(s.plane->md().datasize) + "/" + std::to_string(s.plane->md().extent_size) + ")"
                    + (p.datasize > s.plane->md().datasize && p.extent_size == s.plane->md().extent_size
                         ? "; the secondary is smaller: it cannot take the primary's writes past its end"
                           " (docs/METADATA.md, \"Online growth\")"
                         : "");
    return reply;
  }
  auto fresh = s.plane->md().localcnt == 0 && s.plane->md().remotecnt == 0;
  if (p.resuid != s.plane->md().resuid) {
    if (!fresh) {
      reply.refusal = "resource id mismatch (primary " + std::to_string(p.resuid) + ", secondary "
                      + std::to_string(s.plane->md().resuid)
                      + "); these providers belong to different resources";
      return reply;
    }
    // A freshly created secondary joins the primary's resource.
    s.plane->md().resuid = p.resuid;
    reply.resuid = p.resuid;
    reply.sync_source = p.localcnt == 0 ? "none" : "full";
  } else if (s.discard_local && s.plane->md().localcnt > p.remotecnt) {
    // The administrator chose this node as the loser: its changes go, and
    // the primary resends every extent either side changed.
    spdlog::warn("{}: discarding local changes (generation {}), taking the primary's data",
                 s.config.name, s.plane->md().localcnt);
    s.plane->md().localcnt = p.remotecnt;
    s.discard_local = false;
    s.split_brain = false;
    reply.localcnt = s.plane->md().localcnt;
    reply.sync_source = "primary";
    reply.bitmap = s.plane->map().bitmap();
  } else if (s.plane->md().localcnt > p.remotecnt && p.localcnt > s.plane->md().remotecnt) {
    detect_split_brain(self);
    reply.sync_source = "split-brain";
    reply.refusal = "split brain: both nodes were written as primary while apart";
    spdlog::error("{}: split brain detected (primary {}/{}, secondary {}/{})", s.config.name,
                  p.localcnt, p.remotecnt, s.plane->md().localcnt, s.plane->md().remotecnt);
    return reply;
  } else if (s.plane->md().localcnt > p.remotecnt) {
    // The primary is the stale side: it copies our changed extents back and
    // reads from us until then.
    spdlog::warn("{}: the primary is out of date (generation {} < {}); it syncs from here",
                 s.config.name, p.remotecnt, s.plane->md().localcnt);
    reply.sync_source = "secondary";
    reply.bitmap = s.plane->map().bitmap();
  } else {
    reply.sync_source = "primary";
    // Extents that were in flight here when we stopped go back too.
    reply.bitmap = s.plane->map().bitmap();
  }
  self->state.plane->persist([](bool) {});
  return reply;
}

void on_peer_up(resource_ptr self, peer_session& session) {
  auto& s = self->state;
  if (!s.plane->is_open())
    return;
  s.connected = true;
  s.split_brain = false;
  s.discard_local = false;
  s.remote_address = session.remote_address;
  s.peer_error.clear();
  event(self, "connect", {}, {{"address", s.remote_address}});
  if (s.current != role::primary)
    return;
  s.bumped = false;
  auto& theirs = session.theirs;
  s.sync.pending_from_secondary = theirs.sync_source == "secondary";
  if (theirs.sync_source == "full") {
    spdlog::info("{}: the secondary is new: full synchronization", s.config.name);
    s.plane->map().mark_all_sync();
  } else {
    s.plane->map().merge(theirs.bitmap);
  }
  s.plane->md().remotecnt = theirs.localcnt;
  self->state.plane->persist([](bool) {});
  sync_start(self);
}

} // namespace hast
