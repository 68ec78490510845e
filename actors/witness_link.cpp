#include "actors/witness_link.hpp"

#include "io/codec/checksum.hpp"

#include <spdlog/spdlog.h>

namespace hast {

namespace {

using witness_link_ptr = witness_link_actor::stateful_pointer<witness_link_state>;
using peer::msg_type;

void send_frame(witness_link_ptr self, msg_type type, uint64_t seq, buffer_ptr payload) {
  auto& link = self->state.line.link();
  if (!link)
    return;
  link->send(peer::make_header(type, seq), std::move(payload));
}

void drop(witness_link_ptr self, uint64_t epoch, const std::string& reason) {
  auto& s = self->state;
  if (!s.line.drop(self, epoch, reason))
    return;
  auto was_up = s.up;
  s.up = false;
  if (was_up || s.last_error != reason)
    spdlog::warn("{}: witness {}: {}", s.config.name, s.config.witness, reason);
  s.last_error = reason;
  for (auto& [seq, rp] : s.waiting)
    rp.deliver(caf::make_error(errc::disconnected, "the witness link went: " + reason));
  s.waiting.clear();
  self->send(s.owner, atom::lease_link_v, false, reason);
}

void on_frame(witness_link_ptr self, peer::frame& f) {
  auto& s = self->state;
  switch (f.h.type) {
    case msg_type::lease_reply: {
      auto it = s.waiting.find(f.h.seq);
      if (!s.up || it == s.waiting.end())
        return drop(self, s.line.epoch(), "protocol error: a lease_reply nobody asked for");
      auto reply = peer::decode_lease_reply(f.payload);
      if (!reply) {
        it->second.deliver(caf::make_error(errc::protocol_error, reply.error().message()));
        s.waiting.erase(it);
        return drop(self, s.line.epoch(), reply.error().message());
      }
      it->second.deliver(std::move(*reply));
      s.waiting.erase(it);
      return;
    }
    case msg_type::goodbye:
      return drop(self, s.line.epoch(),
                  "the witness closed the link"
                    + (f.payload && f.payload->size() > 0
                         ? ": " + std::string(reinterpret_cast<const char*>(f.payload->data()),
                                              f.payload->size())
                         : std::string{}));
    default:
      return drop(self, s.line.epoch(),
                  "protocol error: unexpected " + std::string{peer::to_string(f.h.type)}
                    + " from the witness");
  }
}

} // namespace

witness_link_actor::behavior_type witness_link(witness_link_ptr self, resource_config config,
                                               std::string node, resource_actor owner,
                                               std::function<void(std::function<void(status, peer_link_ptr)>)> connect) {
  auto& s = self->state;
  s.config = std::move(config);
  s.node = std::move(node);
  s.owner = std::move(owner);
  s.key.assign(s.config.secret_key.begin(), s.config.secret_key.end());
  // The witness proves the key before this actor sends it anything, as
  // the peer does (actors/reconnecting_link.hpp).
  s.line = reconnecting_link<witness_link_actor>(std::move(connect),
                                                 {s.key, s.config.name, s.node, "witness",
                                                  s.config.encryption, peer::preferred_cipher()},
                                                 std::chrono::seconds(s.config.timeout),
                                                 witness_redial_interval);
  self->set_exit_handler([=](const caf::exit_msg& msg) {
    self->state.line.close("resource stopped");
    self->quit(msg.reason);
  });
  self->send(self, atom::connect_v);
  return {
    [=](atom::connect) {
      auto& s = self->state;
      if (s.key.empty()) {
        s.last_error = "no shared key (secret) was read; not connecting to the witness";
        self->send(s.owner, atom::lease_link_v, false, s.last_error);
        return;
      }
      s.line.dial(self);
    },
    [=](atom::peer_connected, uint64_t, status& st, peer_link_ptr& link) {
      auto& s = self->state;
      if (auto dialed = s.line.dialed(self, std::move(st), std::move(link)); !dialed) {
        if (s.last_error != dialed.message()) {
          spdlog::warn("{}: cannot connect to the witness {}: {}", s.config.name, s.config.witness,
                       dialed.message());
          self->send(s.owner, atom::lease_link_v, false, dialed.message());
        }
        s.last_error = dialed.message();
        return;
      }
      peer::hello_message hello;
      hello.resource = s.config.name;
      hello.node = s.node;
      hello.role = "member";
      send_frame(self, msg_type::witness_hello, 0, peer::encode_hello(hello));
      s.up = true;
      s.last_error.clear();
      spdlog::info("{}: connected to the witness {}", s.config.name, s.config.witness);
      self->send(s.owner, atom::lease_link_v, true, std::string{});
    },
    [=](atom::peer_frame, peer_frames& batch) {
      for (auto& f : batch.frames) {
        if (!self->state.line.is_current(batch.epoch))
          break;
        on_frame(self, f);
      }
    },
    [=](atom::peer_closed, uint64_t epoch, std::string& reason) { drop(self, epoch, reason); },
    [=](atom::lease, peer::lease_request& req) -> caf::result<peer::lease_reply> {
      auto& s = self->state;
      if (!s.up)
        return caf::make_error(errc::disconnected,
                               s.last_error.empty() ? "not connected to the witness" : s.last_error);
      auto seq = s.next_seq++;
      send_frame(self, msg_type::lease_request, seq, peer::encode_lease_request(req));
      auto rp = self->make_response_promise<peer::lease_reply>();
      s.waiting.emplace(seq, rp);
      return rp;
    },
  };
}

} // namespace hast
