#pragma once

// The event stream (`hastctl events`): resources and the supervisor send
// every state change here; the hub writes each, as one control frame, to
// every connection that subscribed, in the order it received them. Writes
// never block: what a socket does not take at once waits in the
// subscriber's own queue and goes out at the next event or a short tick. A
// subscriber whose queue passes `event_backlog_limit` (it stopped reading)
// or that hung up is closed and logged; the others lose nothing.

#include "messages/actors.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace hast {

struct event_stream {
  event_subscriber sub;
  std::string backlog;  // frames not yet taken by the socket
};

struct event_hub_state {
  std::vector<event_stream> streams;
  bool tick_pending = false;
  ~event_hub_state();
  static inline const char* name = "hast.events";
};

event_hub_actor::behavior_type event_hub(event_hub_actor::stateful_pointer<event_hub_state> self);

/// The bytes of frames one subscriber may have waiting before it counts as
/// gone (a few thousand events: a burst of every resource changing role
/// at once fits many times over).
inline constexpr size_t event_backlog_limit = 1u << 20;

/// With frames waiting, the hub tries again this soon; otherwise it looks
/// for subscribers that hung up this often, so that a quiet stream does not
/// keep a closed connection's descriptor long.
inline constexpr auto event_retry = std::chrono::milliseconds(20);
inline constexpr auto event_hangup_check = std::chrono::seconds(2);

} // namespace hast
