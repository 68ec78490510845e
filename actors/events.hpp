#pragma once

// The event stream (`hastctl events`): resources send every state change
// here; the hub writes it, one control frame per event, to each connection
// that subscribed, in the order the hub received them. A subscriber that
// does not read (its socket buffer full) or went away is closed and logged;
// nothing ever waits for a subscriber.

#include "messages/actors.hpp"

#include <chrono>
#include <vector>

namespace hast {

struct event_hub_state {
  std::vector<event_subscriber> subscribers;
  bool tick_pending = false;
  ~event_hub_state();
  static inline const char* name = "hast.events";
};

event_hub_actor::behavior_type event_hub(event_hub_actor::stateful_pointer<event_hub_state> self);

/// A subscriber's connection is checked for a hang-up this often, so that a
/// quiet stream does not keep a closed connection's descriptor long.
inline constexpr auto event_hangup_check = std::chrono::seconds(2);

} // namespace hast
