#pragma once

// failover auto, on a data node: the resource's link to the witness hastd
// (docs/FAILOVER.md). It connects to `witness`, sends witness_hello, and
// both sides prove they know the resource's shared key before any lease
// request goes; requests are answered by seq. It reconnects on its own and
// tells the resource when the link comes and goes.

#include "actors/reconnecting_link.hpp"
#include "messages/actors.hpp"

#include <array>
#include <map>

namespace hast {

struct witness_link_state {
  resource_config config;
  std::string node;
  resource_actor owner;
  std::vector<uint8_t> key;

  /// Dials the witness (authenticated), redials after a failure or a loss.
  reconnecting_link<witness_link_actor> line;
  bool up = false;                      // a session with the witness is up (both sides proved the key)
  std::string last_error;
  uint64_t next_seq = 1;
  std::map<uint64_t, caf::typed_response_promise<peer::lease_reply>> waiting;

  static inline const char* name = "hast.witness_link";
};

witness_link_actor::behavior_type witness_link(witness_link_actor::stateful_pointer<witness_link_state> self,
                                               resource_config config, std::string node,
                                               resource_actor owner,
                                               std::function<void(std::function<void(status, peer_link_ptr)>)> connect);

} // namespace hast
