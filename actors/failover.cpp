// failover auto, the resource's side (docs/FAILOVER.md): the lease that a
// primary renews with the witness, the gate that keeps a primary from
// acknowledging a write the secondary lacks unless the witness knows the
// secondary is behind, the claim of a secondary that lost its primary, and
// stepping down when the lease is gone. Role changes themselves go through
// the supervisor.

#include "actors/resource.hpp"
#include "actors/witness_link.hpp"
#include "io/net/nbd_protocol.hpp"
#include "io/net/peer_transport.hpp"

#include <spdlog/spdlog.h>

namespace hast {

namespace {

using clock = std::chrono::steady_clock;

/// How often a node in role init (failover auto) tries to become secondary.
constexpr auto join_interval = std::chrono::seconds(10);

std::chrono::milliseconds lease_length(resource_ptr self) {
  return std::chrono::milliseconds(std::chrono::seconds(self->state.config.timeout));
}

/// Does the secondary hold every acknowledged write right now?
bool secondary_in_sync(resource_ptr self) {
  auto& s = self->state;
  return s.connected && !s.sync.active && s.plane->is_open() && s.plane->map().sync_extents() == 0
         && !s.plane->md().local_stale && s.lease.waiting.empty() && s.lease.answers.empty();
}

void ask_supervisor(resource_ptr self, role target, const std::string& why) {
  auto& s = self->state;
  spdlog::warn("{}: failover: asking to become {}: {}", s.config.name, to_string(target), why);
  if (s.io.supervisor)
    self->send(s.io.supervisor, atom::failover_v, s.config.name, target, why);
}

/// The lease is valid: client reads that waited for it run.
void release_reads(resource_ptr self) {
  auto reads = std::move(self->state.lease.reads);
  self->state.lease.reads.clear();
  for (auto& [r, sink] : reads)
    self->state.plane->read_after_lease(std::move(r), std::move(sink));
}

void release_waiters(resource_ptr self) {
  auto& l = self->state.lease;
  auto waiting = std::move(l.waiting);
  l.waiting.clear();
  auto answers = std::move(l.answers);
  l.answers.clear();
  for (auto& [sink, r] : answers)
    self->state.plane->answer(sink, std::move(r));
  for (auto id : waiting)
    self->state.plane->admit_alone(id);
}

void fail_waiters(resource_ptr self) {
  auto& l = self->state.lease;
  auto waiting = std::move(l.waiting);
  l.waiting.clear();
  auto answers = std::move(l.answers);
  l.answers.clear();
  for (auto& [sink, r] : answers) {
    r.error = nbd::eio;
    self->state.plane->answer(sink, std::move(r));
  }
  for (auto id : waiting)
    self->state.plane->refuse(id);
  auto reads = std::move(l.reads);
  l.reads.clear();
  for (auto& [r, sink] : reads)
    self->state.plane->refuse_read(r, sink);
}

/// We are primary and cannot hold the lease any longer (it ran out alone,
/// or another node holds it).
void lose_lease(resource_ptr self, const std::string& why, bool other_holder) {
  auto& s = self->state;
  auto& l = s.lease;
  l.held = false;
  l.behind_known = false;
  if (!l.lost) {
    l.lost = true;
    spdlog::error("{}: lease lost: {}", s.config.name, why);
    if (!other_holder)
      event(self, "lease-lost", {}, {{"reason", why}});
  }
  if (s.config.lease_lost == lease_loss_action::suspend && !other_holder) {
    spdlog::warn("{}: writes stay suspended until the witness answers (lease-lost suspend)",
                 s.config.name);
    return;
  }
  fail_waiters(self);
  event(self, "demote", {}, {{"reason", why}});
  ask_supervisor(self, role::secondary, why);
}

void send_request(resource_ptr self, peer::lease_request req);

/// A request of `kind` with who we are and our generation counters.
peer::lease_request lease_ask(resource_ptr self, std::string kind) {
  auto& s = self->state;
  peer::lease_request req;
  req.kind = std::move(kind);
  req.node = s.node;
  req.epoch = s.lease.epoch;
  req.resuid = s.plane->md().resuid;
  req.localcnt = s.plane->md().localcnt;
  req.remotecnt = s.plane->md().remotecnt;
  return req;
}

/// Sends a request whose answer changes nothing here.
void tell_witness(resource_ptr self, const peer::lease_request& req) {
  self->request(self->state.lease.link, std::chrono::seconds(self->state.config.timeout),
                atom::lease_v, req)
    .then([](peer::lease_reply&) {}, [](caf::error&) {});
}

void renew(resource_ptr self) {
  auto req = lease_ask(self, "renew");
  req.in_sync = secondary_in_sync(self);
  send_request(self, req);
}

void claim(resource_ptr self) {
  send_request(self, lease_ask(self, "claim"));
}

void granted(resource_ptr self, const peer::lease_reply& reply, clock::time_point sent,
             bool said_in_sync, uint64_t serial) {
  auto& l = self->state.lease;
  l.held = true;
  l.epoch = reply.epoch;
  l.holder = reply.holder;
  // Counted from when we asked: the witness counts from when it heard us,
  // which is later, so our lease always ends first.
  l.valid_until = sent + std::chrono::milliseconds(reply.lease_ms);
  if (!said_in_sync && serial > l.in_sync_serial)
    l.behind_known = true;
  if (l.lost) {
    spdlog::info("{}: the witness grants the lease again", self->state.config.name);
    l.lost = false;
  }
}

void send_request(resource_ptr self, peer::lease_request req) {
  auto& s = self->state;
  auto& l = s.lease;
  if (!l.link || !l.witness_up)
    return;
  if (l.asking) {
    l.again = true;
    return;
  }
  l.asking = true;
  uint64_t serial = 0;
  if (req.kind == "renew") {
    serial = ++l.serial;
    if (req.in_sync) {
      l.in_sync_serial = serial;
      l.behind_known = false;  // from now on the witness may think it is in sync
    }
  }
  auto sent = clock::now();
  self->request(l.link, std::chrono::seconds(s.config.timeout), atom::lease_v, req)
    .then(
      [=](peer::lease_reply& reply) {
        activation act{self};
        auto& s = self->state;
        auto& l = s.lease;
        l.asking = false;
        l.holder = reply.holder;
        if (!reply.granted)
          l.epoch = reply.epoch;
        if (req.kind == "renew") {
          if (s.current != role::primary)
            ;  // a renew that crossed a step-down: nothing to do
          else if (reply.granted)
            granted(self, reply, sent, req.in_sync, serial);
          else if (!reply.holder.empty() && reply.holder != s.node)
            lose_lease(self, "the witness says " + reply.holder + " holds the lease (epoch "
                               + std::to_string(reply.epoch) + ")",
                       true);
          else
            spdlog::warn("{}: the witness refuses to renew the lease: {}", s.config.name,
                         reply.reason);
        } else if (req.kind == "claim") {
          l.eligible = reply.granted;
          l.eligibility = reply.granted ? "granted" : reply.reason;
          if (reply.granted && s.current == role::secondary && !s.connected && l.auto_role) {
            // A grant records our secondary as behind: the witness knows.
            granted(self, reply, sent, false, ++l.serial);
            l.promoting = true;
            event(self, "promote", {}, {{"epoch", std::to_string(reply.epoch)}});
            ask_supervisor(self, role::primary,
                           "the witness granted the lease (epoch " + std::to_string(reply.epoch)
                             + ")");
          } else if (reply.granted && s.current == role::primary) {
            // A claim of the secondary we were a moment ago, answered after
            // a claim by hand made us primary: the lease is ours either way.
            // Giving it back would release the lease this primary runs on.
            granted(self, reply, sent, false, ++l.serial);
          } else if (reply.granted) {
            // Not wanted any more (the primary came back meanwhile): give it back.
            auto back = lease_ask(self, "release");
            back.epoch = reply.epoch;
            tell_witness(self, back);
          }
        }
        if (may_read_alone(self))
          release_reads(self);
        if (may_write_alone(self))
          release_waiters(self);
        if (std::exchange(l.again, false) && s.current == role::primary)
          renew(self);
      },
      [=](caf::error& err) {
        activation act{self};
        auto& l = self->state.lease;
        l.asking = false;
        l.again = false;
        spdlog::debug("{}: lease request failed: {}", self->state.config.name,
                      self->system().render(err));
      });
}

} // namespace

bool may_write_alone(resource_ptr self) {
  auto& s = self->state;
  if (!s.config.automatic())
    return true;
  auto& l = s.lease;
  return l.held && l.behind_known && clock::now() < l.valid_until;
}

namespace {

/// Nothing that waits for the lease now could ever complete: the lease was
/// lost with `lease-lost io-error` (the node is stepping down), or the node
/// is leaving primary.
bool waiting_is_futile(resource_ptr self) {
  auto& s = self->state;
  return s.draining || s.leaving
         || (s.lease.lost && s.config.lease_lost == lease_loss_action::io_error);
}

} // namespace

void wait_for_lease(resource_ptr self, uint64_t id) {
  if (waiting_is_futile(self))
    return self->state.plane->refuse(id);
  self->state.lease.waiting.push_back(id);
  renew(self);
}

bool may_read_alone(resource_ptr self) {
  auto& s = self->state;
  if (!s.config.automatic())
    return true;
  return s.lease.held && clock::now() < s.lease.valid_until;
}

void wait_for_lease_to_read(resource_ptr self, nbd::request r, nbd::reply_sink_ptr sink) {
  if (waiting_is_futile(self))
    return self->state.plane->refuse_read(r, sink);
  self->state.lease.reads.emplace_back(std::move(r), std::move(sink));
  renew(self);
}

void hold_answer(resource_ptr self, nbd::reply_sink_ptr sink, nbd::reply r) {
  if (waiting_is_futile(self)) {
    r.error = nbd::eio;
    return self->state.plane->answer(sink, std::move(r));
  }
  self->state.lease.answers.emplace_back(std::move(sink), std::move(r));
  renew(self);
}

void lease_leaving(resource_ptr self) {
  fail_waiters(self);
}

void lease_report(resource_ptr self) {
  if (self->state.config.automatic() && self->state.current == role::primary)
    renew(self);
}

void lease_start(resource_ptr self) {
  auto& s = self->state;
  if (!s.config.automatic() || s.lease.link || !s.io.io)
    return;
  auto timeout = lease_length(self);
  auto connect = tcp_connector(*s.io.io, s.config.witness, s.config.source, timeout / 4, timeout);
  s.lease.link = self->spawn<caf::linked>(witness_link, s.config, s.node,
                                          caf::actor_cast<resource_actor>(self), connect);
  self->send(self, atom::lease_tick_v);
  s.lease.tick_pending = true;
}

void lease_link_changed(resource_ptr self, bool up, const std::string& why) {
  auto& l = self->state.lease;
  l.witness_up = up;
  l.witness_error = why;
  if (up)
    lease_tick(self);
}

void lease_tick(resource_ptr self) {
  auto& s = self->state;
  auto& l = s.lease;
  if (!s.config.automatic())
    return;
  if (!l.tick_pending) {
    l.tick_pending = true;
    self->delayed_send(self, lease_length(self) / 4, atom::lease_tick_v);
  }
  if (s.current == role::init && l.auto_role && !s.draining && !s.leaving) {
    // At start, and again while the provider cannot be opened (not created
    // yet, a failing disk): a node with failover auto is a secondary by itself.
    auto now = clock::now();
    if (now - l.last_join >= join_interval) {
      l.last_join = now;
      if (s.io.supervisor)
        self->send(s.io.supervisor, atom::failover_v, s.config.name, role::secondary,
                   std::string{"failover auto: every node takes part as secondary at least"});
    }
    return;
  }
  if (s.current == role::primary) {
    if (l.held && clock::now() >= l.valid_until && !s.connected)
      lose_lease(self, "neither the witness nor the secondary answered for the lease period",
                 false);
    renew(self);
    return;
  }
  if (s.current == role::secondary && !s.connected && l.auto_role && !l.promoting
      && !s.split_brain)
    claim(self);
}

void claim_by_hand(resource_ptr self, std::function<void(std::string)> then) {
  auto& s = self->state;
  auto& l = s.lease;
  if (!l.link || !l.witness_up) {
    then("the witness " + s.config.witness + " is unreachable ("
         + (l.witness_error.empty() ? std::string{"connecting"} : l.witness_error)
         + "); with failover auto a node becomes primary only with the witness's lease");
    return;
  }
  auto req = lease_ask(self, "claim");
  req.manual = true;
  auto sent = clock::now();
  self->request(l.link, std::chrono::seconds(s.config.timeout), atom::lease_v, req)
    .then(
      [=](peer::lease_reply& reply) {
        if (!reply.granted) {
          then("the witness refuses: " + reply.reason);
          return;
        }
        granted(self, reply, sent, false, ++self->state.lease.serial);
        then("");
      },
      [=](caf::error& err) { then("the witness did not answer: " + self->system().render(err)); });
}

void lease_release(resource_ptr self) {
  auto& s = self->state;
  auto& l = s.lease;
  l.promoting = false;
  if (!s.config.automatic() || !l.held)
    return;
  l.held = false;
  l.behind_known = false;
  if (!l.link)
    return;
  auto req = lease_ask(self, "release");
  req.in_sync = secondary_in_sync(self);
  tell_witness(self, req);
}

void lease_status(resource_ptr self, resource_status& st) {
  auto& s = self->state;
  st.failover = to_string(s.config.failover);
  if (!s.config.automatic())
    return;
  auto& l = s.lease;
  st.witness = l.witness_up ? "connected" : "disconnected";
  st.witness_address = s.config.witness;
  st.lease_holder = l.holder;
  st.lease_epoch = l.epoch;
  auto now = clock::now();
  if (s.current == role::primary) {
    if (l.held && now < l.valid_until) {
      st.lease = "held";
      st.lease_remaining_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(l.valid_until - now).count());
    } else {
      st.lease = l.lost ? "lost" : "waiting";
    }
    st.eligible = true;
    st.eligibility = "primary";
    // A held answer is a write done on the disks whose acknowledgement waits.
    st.lease_waiting_writes = l.waiting.size() + l.answers.size();
    st.lease_waiting_reads = l.reads.size();
    if (st.lease_waiting_writes + st.lease_waiting_reads > 0)
      st.eligibility += "; " + std::to_string(st.lease_waiting_writes) + " write(s) and "
                        + std::to_string(st.lease_waiting_reads) + " read(s) wait for the witness";
    return;
  }
  st.lease = "none";
  st.eligible = l.eligible;
  if (s.current == role::init)
    st.eligibility = "role init: takes no part in failover";
  else if (s.connected)
    st.eligibility = "the primary is connected";
  else if (!l.witness_up)
    st.eligibility = "the witness is unreachable: no promotion";
  else
    st.eligibility = l.eligibility.empty() ? "asking the witness" : l.eligibility;
}

} // namespace hast
