#pragma once

#include "actors/reconnecting_link.hpp"
#include "messages/actors.hpp"

#include <array>
#include <map>
#include <memory>

namespace asio {
class io_context;
}

namespace hast {

namespace peer {
class connection;
}


/// Connects to the other node; `done` gets the link or why there is none.
using connector = std::function<void(std::function<void(status, peer_link_ptr)> done)>;

struct peer_state {
  resource_config config;
  std::string node;            // this node's name
  role side = role::primary;   // primary connects, secondary accepts
  resource_actor owner;
  std::vector<uint8_t> key;    // shared secret; empty: no authentication

  // The link and its epoch (stale frames are dropped); the primary dials
  // through it and redials after a failure or a loss.
  reconnecting_link<peer_actor> line;
  bool established = false;    // handshake complete
  std::string last_error;

  // With a `key`, a link reaches this actor only after the session
  // handshake proved the key both ways (io/net/peer_link.hpp with_session on the
  // primary, io/net/peer_router.hpp on the secondary); every frame on it
  // is sealed by the transport.
  peer::hello_message hello;   // secondary: the primary's hello; primary: ours

  // Primary: the sync queue, requests awaiting the secondary's "done".
  std::map<uint64_t, uint64_t> in_flight;  // id -> payload bytes
  uint64_t in_flight_bytes = 0;            // their sum
  std::map<uint64_t, caf::typed_response_promise<buffer_ptr>> reads;
  std::map<uint64_t, caf::typed_response_promise<block_hashes>> verifies;  // by seq
  std::map<uint64_t, caf::typed_response_promise<block_digests>> digests;  // by seq (checksum resync)
  std::map<uint64_t, caf::typed_response_promise<uint64_t>> grows;         // by seq (online growth)
  nbd_batch pending;  // secondary: requests of the frames being handled, for the resource
  remote_acks acks;                        // gathered from the current batch of frames
  uint64_t next_read_id = 1ull << 62;      // apart from the resource's write ids

  // Secondary: the resource keeps overlapping writes in arrival order and
  // answers through this sink.
  nbd::reply_sink_ptr replies;             // answers of the current link, as frames

  static inline const char* name = "hast.peer";
};

/// `side` primary: connects through `connect` and retries every
/// peer_redial_interval. `side` secondary: waits for accepted links.
peer_actor::behavior_type replication_peer(peer_actor::stateful_pointer<peer_state> self,
                                           resource_config config,
                               std::string node, role side, resource_actor owner, connector connect);

} // namespace hast
