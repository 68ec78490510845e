#include "actors/peer.hpp"

#include "io/codec/checksum.hpp"
#include "io/net/nbd_protocol.hpp"
#include "io/net/peer_transport.hpp"

#include <spdlog/spdlog.h>

#include <cstring>


namespace hast {

namespace {

using peer_ptr = peer_actor::stateful_pointer<peer_state>;
using peer::header;
using peer::msg_type;

using peer::make_header;

void send_raw(peer_ptr self, header h, buffer_ptr payload = nullptr) {
  auto& link = self->state.line.link();
  if (!link)
    return;
  link->send(h, std::move(payload));
}

void flush_acks(peer_ptr self);

/// Drops the link (if `epoch` is current), fails what waited on it and tells
/// the resource. The primary tries again later (the line redials).
void drop_link(peer_ptr self, uint64_t epoch, const std::string& reason) {
  auto& s = self->state;
  if (!s.line.drop(self, epoch, reason))
    return;
  auto was_established = s.established;
  s.established = false;
  s.last_error = reason;
  if (was_established)
    spdlog::warn("{}: disconnected from the peer: {}", s.config.name, reason);
  else
    spdlog::warn("{}: connection to the peer failed: {}", s.config.name, reason);
  flush_acks(self);
  remote_acks failed;
  for (auto& [id, bytes] : s.in_flight)
    failed.push_back({id, remote_stage::failed, static_cast<uint32_t>(errc::disconnected)});
  if (!failed.empty())
    self->send(s.owner, atom::remote_ack_v, std::move(failed));
  s.in_flight.clear();
  s.in_flight_bytes = 0;
  for (auto& [id, rp] : s.reads)
    rp.deliver(caf::make_error(errc::disconnected, "the peer disconnected"));
  s.reads.clear();
  for (auto& [id, rp] : s.verifies)
    rp.deliver(caf::make_error(errc::disconnected, "the peer disconnected"));
  s.verifies.clear();
  for (auto& [id, rp] : s.digests)
    rp.deliver(caf::make_error(errc::disconnected, "the peer disconnected"));
  s.digests.clear();
  for (auto& [id, rp] : s.grows)
    rp.deliver(caf::make_error(errc::disconnected, "the peer disconnected during the grow"));
  s.grows.clear();
  s.replies.reset();
  self->send(s.owner, atom::peer_down_v, reason);
}

/// Hands the acknowledgements gathered from one batch of frames to the
/// resource in one message.
void flush_acks(peer_ptr self) {
  auto& s = self->state;
  if (s.acks.empty())
    return;
  self->send(s.owner, atom::remote_ack_v, std::move(s.acks));
  s.acks.clear();
}

void fail(peer_ptr self, const std::string& reason) {
  drop_link(self, self->state.line.epoch(), reason);
}

/// The secondary answers "received" on the Asio thread that read the frame:
/// a memsync primary waits for nothing else, so no actor hop is paid for it.
void answer_received(peer_link& link, const std::vector<peer::frame>& frames) {
  for (auto& f : frames)
    if (f.h.type == msg_type::write && (f.h.flags & peer::flag_memsync))
      link.send(make_header(msg_type::received, f.h.seq), nullptr);
}

/// A link was made current (its frames and close reach this actor).
void attached(peer_ptr self) {
  auto& s = self->state;
  s.replies.reset();
  s.established = false;
}

// --- secondary side ----------------------------------------------------------------------------

void answer_hello(peer_ptr self) {
  auto& s = self->state;
  auto epoch = s.line.epoch();
  self->request(s.owner, std::chrono::seconds(30), atom::peer_hello_v, s.hello)
    .then(
      [=](peer::hello_message& reply) {
        auto& s = self->state;
        if (epoch != s.line.epoch())
          return;
        send_raw(self, make_header(msg_type::hello_reply), peer::encode_hello(reply));
        if (!reply.refusal.empty()) {
          s.last_error = "refused the primary: " + reply.refusal;
          // Let the reply reach the primary before the connection goes.
          self->delayed_send(self, std::chrono::milliseconds(200), atom::peer_closed_v, epoch,
                             s.last_error);
          return;
        }
        s.established = true;
        s.last_error.clear();
        spdlog::info("{}: connected to primary {}", s.config.name, s.line.link()->remote_address());
        self->send(s.owner, atom::peer_up_v,
                   peer_session{s.hello, s.line.link()->remote_address()});
      },
      [=](caf::error& err) { drop_link(self, epoch, self->system().render(err)); });
}

uint32_t to_errc(uint32_t nbd_error) {
  return nbd_error == 0 ? 0 : static_cast<uint32_t>(errc::io_error);
}

/// Secondary: sends the resource's answers back to the primary as frames.
class frame_reply_sink final : public nbd::reply_sink {
public:
  frame_reply_sink(peer_link_ptr link, compression_kind compression, checksum_kind checksum)
    : link_(std::move(link)), compression_(compression), checksum_(checksum) {}

  void deliver(std::vector<nbd::reply> replies) override {
    for (auto& r : replies) {
      if (r.kind == nbd::command::read) {
        auto h = make_header(msg_type::read_reply, r.cookie);
        h.error = to_errc(r.error);
        auto data = r.error == 0 ? std::move(r.data) : nullptr;
        if (data)
          if (auto st = peer::seal_payload(h, data, compression_, checksum_); !st) {
            h.error = static_cast<uint32_t>(errc::io_error);
            data = nullptr;
          }
        link_->send(h, std::move(data));
      } else {
        auto h = make_header(msg_type::done, r.cookie);
        h.error = to_errc(r.error);
        link_->send(h, nullptr);
      }
    }
  }

private:
  peer_link_ptr link_;
  compression_kind compression_;
  checksum_kind checksum_;
};

/// A replicated request as the resource takes it; false when its payload
/// cannot be opened (the link is then dropped).
bool to_request(peer_ptr self, peer::frame& frame, nbd::request& r) {
  auto& h = frame.h;
  r.cookie = h.seq;
  r.offset = h.offset;
  r.length = static_cast<uint32_t>(h.length);
  r.fua = (h.flags & peer::flag_fua) != 0;
  r.may_trim = (h.flags & peer::flag_may_trim) != 0;
  switch (h.type) {
    case msg_type::write: {
      auto data = peer::open_payload(h, std::move(frame.payload));
      if (!data) {
        // The extent stays dirty on the primary, which resends it after reconnecting.
        fail(self, data.error().message());
        return false;
      }
      r.kind = nbd::command::write;
      r.data = std::move(*data);
      r.length = static_cast<uint32_t>(r.data->size());
      break;
    }
    case msg_type::trim: r.kind = nbd::command::trim; break;
    case msg_type::write_zeroes: r.kind = nbd::command::write_zeroes; break;
    case msg_type::flush: r.kind = nbd::command::flush; break;
    default: r.kind = nbd::command::read; break;
  }
  return true;
}

/// Hands the requests gathered from one batch of frames to the resource:
/// one message per run of resync and of other requests, in arrival order.
void flush_requests(peer_ptr self) {
  auto& s = self->state;
  if (s.pending.requests.empty())
    return;
  self->send(s.owner, atom::nbd_v, std::move(s.pending));
  s.pending = nbd_batch{};
}

void execute(peer_ptr self, peer::frame frame) {
  auto& s = self->state;
  nbd::request r;
  if (!to_request(self, frame, r))
    return;
  auto resync = frame.h.type == msg_type::write && (frame.h.flags & peer::flag_sync) != 0;
  if (!s.pending.requests.empty() && s.pending.resync != resync)
    flush_requests(self);
  if (!s.replies)
    s.replies = std::make_shared<frame_reply_sink>(s.line.link(), s.config.compression,
                                                   s.config.checksum);
  s.pending.requests.push_back(std::move(r));
  s.pending.sink = s.replies;
  s.pending.from_peer = true;
  s.pending.resync = resync;
}

/// Secondary: the block hashes of a range (`Hashes`: the verify's, or the
/// checksum resync's digests), answered once the resource has them (it
/// waits for writes to the range that arrived before).
template <class Hashes, class Atom, class Encode>
void answer_hashes(peer_ptr self, const header& h, Atom what, Encode encode) {
  auto& s = self->state;
  flush_requests(self);  // writes that came before it reach the resource first
  auto epoch = s.line.epoch();
  auto seq = h.seq;
  self->request(s.owner, caf::infinite, what, h.offset, static_cast<uint32_t>(h.length))
    .then(
      [=](Hashes& hashes) {
        if (epoch != self->state.line.epoch())
          return;
        send_raw(self, make_header(msg_type::verify_reply, seq), encode(hashes));
      },
      [=](caf::error& err) {
        if (epoch != self->state.line.epoch())
          return;
        spdlog::warn("{}: cannot hash [{}, +{}) for the primary: {}", self->state.config.name,
                     h.offset, h.length, self->system().render(err));
        auto reply = make_header(msg_type::verify_reply, seq);
        reply.error = static_cast<uint32_t>(errc::io_error);
        send_raw(self, reply);
      });
}

void answer_verify(peer_ptr self, const header& h) {
  if ((h.flags & peer::flag_digest) != 0)
    return answer_hashes<block_digests>(self, h, atom::range_digests_v, encode_block_digests);
  answer_hashes<block_hashes>(self, h, atom::verify_range_v, encode_block_hashes);
}

/// Primary: a verify_reply for the request `h.seq` of `waiting`.
template <class Promises, class Decode>
void deliver_hashes(peer_ptr self, Promises& waiting, const header& h, const buffer_ptr& payload,
                    Decode decode) {
  auto it = waiting.find(h.seq);
  if (it == waiting.end())
    return fail(self, "protocol error: verify reply for unknown request " + std::to_string(h.seq));
  auto rp = it->second;
  waiting.erase(it);
  if (h.error != 0) {
    rp.deliver(caf::make_error(errc::io_error, "the secondary could not read the range"));
    return;
  }
  auto hashes = decode(payload);
  if (!hashes) {
    rp.deliver(caf::make_error(errc::protocol_error, hashes.error().message()));
    return fail(self, hashes.error().message());
  }
  rp.deliver(std::move(*hashes));
}

/// Secondary: the primary grows the resource (online growth). The answer
/// carries our data size once it is in the metadata on disk, or the
/// reason of a refusal as its payload.
void answer_grow(peer_ptr self, const header& h) {
  auto& s = self->state;
  flush_requests(self);
  auto epoch = s.line.epoch();
  auto seq = h.seq;
  self->request(s.owner, caf::infinite, atom::grow_v, h.offset)
    .then(
      [=](uint64_t datasize) {
        if (epoch != self->state.line.epoch())
          return;
        auto reply = make_header(msg_type::grow_reply, seq);
        reply.offset = datasize;
        send_raw(self, reply);
      },
      [=](caf::error& err) {
        if (epoch != self->state.line.epoch())
          return;
        auto why = err.context().match_elements<std::string>()
                     ? err.context().get_as<std::string>(0)
                     : self->system().render(err);
        auto reply = make_header(msg_type::grow_reply, seq);
        reply.error = err.category() == caf::atom("hast") ? err.code() : static_cast<uint32_t>(errc::io_error);
        auto payload = make_buffer(why.size());
        std::memcpy(payload->data(), why.data(), why.size());
        send_raw(self, reply, std::move(payload));
      });
}

void on_secondary_frame(peer_ptr self, peer::frame& frame) {
  auto& s = self->state;
  auto& h = frame.h;
  switch (h.type) {
    case msg_type::write:
    case msg_type::trim:
    case msg_type::write_zeroes:
    case msg_type::flush:
    case msg_type::read:
      if (!s.established)
        return fail(self, std::string{"protocol error: "} + std::string{peer::to_string(h.type)}
                            + " before the handshake completed");
      // The resource applies overlapping writes in arrival order; frames
      // reach it in the order they arrived.
      return execute(self, std::move(frame));
    case msg_type::verify:
      if (!s.established)
        return fail(self, "protocol error: verify before the handshake completed");
      if (h.length == 0 || h.length > peer::max_payload)
        return fail(self, "protocol error: verify of " + std::to_string(h.length) + " bytes");
      return answer_verify(self, h);
    case msg_type::sync_done:
      flush_requests(self);
      if (s.established)
        self->send(s.owner, atom::sync_done_v, h.offset, (h.flags & 1) != 0);
      return;
    case msg_type::grow:
      if (!s.established)
        return fail(self, "protocol error: grow before the handshake completed");
      return answer_grow(self, h);
    default:
      return fail(self, "protocol error: unexpected " + std::string{peer::to_string(h.type)}
                          + " from the primary");
  }
}

// --- primary side ------------------------------------------------------------------------------

void send_hello(peer_ptr self) {
  auto& s = self->state;
  auto epoch = s.line.epoch();
  self->request(s.owner, std::chrono::seconds(30), atom::peer_hello_v)
    .then(
      [=](peer::hello_message& mine) {
        auto& s = self->state;
        if (epoch != s.line.epoch())
          return;
        s.hello = mine;
        send_raw(self, make_header(msg_type::hello), peer::encode_hello(mine));
      },
      [=](caf::error& err) { drop_link(self, epoch, self->system().render(err)); });
}

void on_primary_frame(peer_ptr self, peer::frame& frame) {
  auto& s = self->state;
  auto& h = frame.h;
  switch (h.type) {
    case msg_type::hello_reply: {
      auto reply = peer::decode_hello(frame.payload);
      if (!reply)
        return fail(self, reply.error().message());
      if (!reply->refusal.empty()) {
        if (reply->sync_source == "split-brain")
          self->send(s.owner, atom::split_brain_v);
        return fail(self, "refused by the secondary: " + reply->refusal);
      }
      // A secondary larger than us finished a grow we did not (killed in
      // between, docs/METADATA.md "Online growth"): nothing is lost, we never
      // write past our end; hastctl grow completes it. A smaller one could
      // not take our writes past its end.
      if (reply->datasize < s.hello.datasize)
        return fail(self, "data size differs between nodes (here " + std::to_string(s.hello.datasize)
                            + ", peer " + std::to_string(reply->datasize)
                            + "): grow the secondary's provider and its resource first");
      if (reply->datasize > s.hello.datasize)
        spdlog::warn("{}: the secondary's data size {} is larger than ours ({}): an interrupted "
                     "grow; run 'hastctl grow {}' here to complete it",
                     s.config.name, reply->datasize, s.hello.datasize, s.config.name);
      if (reply->extent_size != s.hello.extent_size)
        return fail(self, "extent size differs between nodes (here "
                            + std::to_string(s.hello.extent_size) + ", peer "
                            + std::to_string(reply->extent_size) + ")");
      s.established = true;
      s.last_error.clear();
      spdlog::info("{}: connected to secondary {}", s.config.name, s.line.link()->remote_address());
      self->send(s.owner, atom::peer_up_v,
                 peer_session{std::move(*reply), s.line.link()->remote_address()});
      return;
    }
    case msg_type::received:
      if (s.in_flight.count(h.seq))
        s.acks.push_back({h.seq, remote_stage::received, 0});
      return;
    case msg_type::done: {
      auto it = s.in_flight.find(h.seq);
      if (it == s.in_flight.end())
        return fail(self, "protocol error: done for unknown request " + std::to_string(h.seq));
      s.in_flight_bytes -= it->second;
      s.in_flight.erase(it);
      auto stage = h.error == 0 ? remote_stage::written : remote_stage::failed;
      s.acks.push_back({h.seq, stage, h.error});
      return;
    }
    case msg_type::read_reply: {
      auto it = s.reads.find(h.seq);
      if (it == s.reads.end())
        return fail(self, "protocol error: read reply for unknown request " + std::to_string(h.seq));
      auto rp = it->second;
      s.reads.erase(it);
      if (h.error != 0) {
        rp.deliver(caf::make_error(errc::io_error, "the secondary could not read either"));
        return;
      }
      auto data = peer::open_payload(h, std::move(frame.payload));
      if (!data) {
        rp.deliver(caf::make_error(errc::protocol_error, data.error().message()));
        return fail(self, data.error().message());
      }
      rp.deliver(std::move(*data));
      return;
    }
    case msg_type::grow_reply: {
      auto it = s.grows.find(h.seq);
      if (it == s.grows.end())
        return fail(self, "protocol error: grow reply for unknown request " + std::to_string(h.seq));
      auto rp = it->second;
      s.grows.erase(it);
      if (h.error != 0) {
        std::string why = "the secondary refused to grow";
        if (frame.payload && frame.payload->size() > 0 && frame.payload->size() <= 4096)
          why += ": " + std::string(reinterpret_cast<const char*>(frame.payload->data()),
                                    frame.payload->size());
        auto code = h.error <= static_cast<uint32_t>(errc::shutting_down) ? static_cast<errc>(h.error)
                                                                          : errc::io_error;
        rp.deliver(caf::make_error(code, why));
        return;
      }
      rp.deliver(h.offset);
      return;
    }
    case msg_type::verify_reply:
      if (s.digests.count(h.seq) != 0)
        return deliver_hashes(self, s.digests, h, frame.payload, decode_block_digests);
      return deliver_hashes(self, s.verifies, h, frame.payload, decode_block_hashes);
    default:
      return fail(self, "protocol error: unexpected " + std::string{peer::to_string(h.type)}
                          + " from the secondary");
  }
}

} // namespace

peer_actor::behavior_type replication_peer(peer_actor::stateful_pointer<peer_state> self,
                                           resource_config config,
                               std::string node, role side, resource_actor owner, connector connect) {
  auto& s = self->state;
  s.config = std::move(config);
  s.node = std::move(node);
  s.side = side;
  s.owner = std::move(owner);
  // The key was read with the configuration (read_secrets); a resource
  // with a `secret` and no key refuses every peer below, it never runs
  // unauthenticated.
  s.key.assign(s.config.secret_key.begin(), s.config.secret_key.end());
  if (s.config.secret.empty() != s.key.empty())
    s.last_error = "the key file " + s.config.secret + " was not read; refusing every peer";
  // The primary's links prove the key before this actor sees them.
  if (side == role::primary)
    s.line = reconnecting_link<peer_actor>(std::move(connect),
                                           {s.key, s.config.name, s.node, "peer",
                                            s.config.encryption, peer::preferred_cipher()},
                                           std::chrono::seconds(s.config.timeout),
                                           peer_redial_interval);
  self->set_exit_handler([=](const caf::exit_msg& msg) {
    self->state.line.close("resource stopped");
    self->quit(msg.reason);
  });
  if (side == role::primary)
    self->send(self, atom::connect_v);
  return {
    [=](atom::connect) {
      auto& s = self->state;
      if (!s.config.secret.empty() && s.key.empty()) {
        s.last_error = "the key file " + s.config.secret + " was not read; not connecting";
        return;
      }
      s.line.dial(self);
    },
    [=](atom::peer_connected, uint64_t, status& st, peer_link_ptr& link) {
      auto& s = self->state;
      if (auto dialed = s.line.dialed(self, std::move(st), std::move(link)); !dialed) {
        if (s.last_error != dialed.message()) {
          spdlog::warn("{}: cannot connect to {}: {}", s.config.name, s.config.remote,
                       dialed.message());
          self->send(s.owner, atom::peer_down_v, dialed.message());
        }
        s.last_error = dialed.message();
        return;
      }
      attached(self);
      send_hello(self);
    },
    [=](atom::peer_accept, accepted_link& accepted) {
      auto& s = self->state;
      if (!s.key.empty() && !accepted.link->authenticated()) {
        spdlog::error("{}: refusing an unauthenticated link from {}", s.config.name,
                      accepted.link->remote_address());
        accepted.link->close("not authenticated");
        return;
      }
      if (s.line.link()) {
        spdlog::info("{}: a new connection from {} replaces the current one", s.config.name,
                     accepted.link->remote_address());
        drop_link(self, s.line.epoch(), "replaced by a new connection");
      }
      if (!s.config.secret.empty() && s.key.empty()) {
        spdlog::error("{}: refusing the primary {}: {}", s.config.name,
                      accepted.link->remote_address(), s.last_error);
        accepted.link->close(s.last_error);
        return;
      }
      // With a key, the daemon hands over only links that completed the
      // session handshake: a stranger cannot replace the current link.
      s.line.attach(self, accepted.link, answer_received);
      attached(self);
      s.hello = std::move(accepted.hello);
      answer_hello(self);
    },
    [=](atom::peer_frame, peer_frames& batch) {
      auto& s = self->state;
      for (auto& frame : batch.frames) {
        // A frame may end the link; the rest of its batch is then stale.
        if (!s.line.is_current(batch.epoch))
          break;
        if (s.side == role::primary)
          on_primary_frame(self, frame);
        else
          on_secondary_frame(self, frame);
      }
      flush_requests(self);
      flush_acks(self);
    },
    [=](atom::peer_closed, uint64_t epoch, std::string& reason) { drop_link(self, epoch, reason); },
    [=](atom::replicate, replicate_batch& calls) {
      auto& s = self->state;
      remote_acks refused;
      for (auto& call : calls) {
        auto refuse = [&](errc why) {
          refused.push_back({call.id, remote_stage::failed, static_cast<uint32_t>(why)});
        };
        if (!s.established) {
          refuse(errc::disconnected);
          continue;
        }
        // Async: a slow peer must not grow memory without bound, on either
        // node: what is sent and not yet written there is bounded (which
        // bounds the secondary's backlog too); the extents stay dirty and
        // the resync sends them later.
        if (policy_for(s.config.replication).bounded_queue && (call.flags & peer::flag_sync) == 0
            && s.in_flight_bytes + call.length > async_queue_limit) {
          refuse(errc::busy);
          continue;
        }
        auto h = make_header(call.type, call.id);
        h.flags = call.flags;
        h.offset = call.offset;
        h.length = call.length;
        auto payload = std::move(call.data);
        if (payload) {
          if (auto st = peer::seal_payload(h, payload, s.config.compression, s.config.checksum);
              !st) {
            refuse(errc::io_error);
            continue;
          }
        }
        h.payload_length = payload ? static_cast<uint32_t>(payload->size()) : 0;
        s.in_flight[call.id] = h.payload_length;
        s.in_flight_bytes += h.payload_length;
        s.line.link()->send(h, std::move(payload));
      }
      if (!refused.empty())
        self->send(s.owner, atom::remote_ack_v, std::move(refused));
    },
    [=](atom::remote_read, uint64_t offset, uint32_t length) -> caf::result<buffer_ptr> {
      auto& s = self->state;
      if (!s.established)
        return caf::make_error(errc::disconnected, "the peer is not connected");
      auto id = s.next_read_id++;
      auto h = make_header(msg_type::read, id);
      h.offset = offset;
      h.length = length;
      send_raw(self, h);
      auto rp = self->make_response_promise<buffer_ptr>();
      s.reads.emplace(id, rp);
      return rp;
    },
    [=](atom::verify_range, uint64_t offset, uint32_t length) -> caf::result<block_hashes> {
      auto& s = self->state;
      if (!s.established)
        return caf::make_error(errc::disconnected, "the peer is not connected");
      auto id = s.next_read_id++;
      auto h = make_header(msg_type::verify, id);
      h.offset = offset;
      h.length = length;
      send_raw(self, h);
      auto rp = self->make_response_promise<block_hashes>();
      s.verifies.emplace(id, rp);
      return rp;
    },
    [=](atom::range_digests, uint64_t offset, uint32_t length) -> caf::result<block_digests> {
      auto& s = self->state;
      if (!s.established)
        return caf::make_error(errc::disconnected, "the peer is not connected");
      auto id = s.next_read_id++;
      auto h = make_header(msg_type::verify, id);
      h.flags = peer::flag_digest;
      h.offset = offset;
      h.length = length;
      send_raw(self, h);
      auto rp = self->make_response_promise<block_digests>();
      s.digests.emplace(id, rp);
      return rp;
    },
    [=](atom::grow, uint64_t datasize) -> caf::result<uint64_t> {
      auto& s = self->state;
      if (!s.established)
        return caf::make_error(errc::disconnected, "the secondary is not connected");
      auto id = s.next_read_id++;
      auto h = make_header(msg_type::grow, id);
      h.offset = datasize;
      send_raw(self, h);
      auto rp = self->make_response_promise<uint64_t>();
      s.grows.emplace(id, rp);
      return rp;
    },
    [=](atom::sync_done, uint64_t localcnt, bool complete) {
      auto h = make_header(msg_type::sync_done);
      h.offset = localcnt;
      h.flags = complete ? 1 : 0;
      send_raw(self, h);
    },
    [=](atom::status) {
      auto& s = self->state;
      peer_status st;
      st.connected = s.established;
      auto& link = s.line.link();
      st.remote_address = link ? link->remote_address() : "";
      st.last_error = s.last_error;
      st.queued_bytes = link ? link->queued_bytes() : 0;
      st.in_flight = s.in_flight.size();
      return st;
    },
  };
}

} // namespace hast
