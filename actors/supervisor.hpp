#pragma once

#include "actors/runtime.hpp"
#include "config/config.hpp"
#include "messages/actors.hpp"

#include <chrono>
#include <map>

namespace asio {
class io_context;
}

namespace hast {

struct supervised_resource {
  resource_config config;
  resource_actor handle;        // null while a restart waits for its back-off
  caf::actor_addr address;      // of the actor spawned last (its exit is expected)
  role wanted = role::init;     // the role hastctl last gave it: a restart returns to it
  std::chrono::steady_clock::time_point started;
  std::chrono::milliseconds backoff{0};  // before the next restart after a failure
  std::string failure;          // why it was last restarted
  /// Returning to `wanted` after a start is tried again while the answer is
  /// `busy` (the provider still locked by the actors being replaced).
  int role_attempts_left = 0;
  bool role_retry_due = false;  // an atom::restart retries it
  /// A reload restart: the replaced actor, whose NBD export must stop
  /// listening before the replacement listens on the same address.
  caf::actor_addr replacing;
};

/// A resource actor that fails is started again after `restart_backoff_min`
/// (FreeBSD restarts a crashed worker after 1 s), doubling up to
/// `restart_backoff_max` while it keeps failing within `restart_stable` of
/// its start.
inline constexpr std::chrono::milliseconds restart_backoff_min{1000};
inline constexpr std::chrono::milliseconds restart_backoff_max{30000};
inline constexpr std::chrono::seconds restart_stable{60};

/// How long the supervisor waits for a resource. A role change drains and
/// flushes (a peer's `timeout`, several times over); a stop (or the role
/// init before a reload restart) drains, flushes and persists; the rest
/// answer from the actor's state.
inline constexpr std::chrono::seconds role_change_timeout{120};
inline constexpr std::chrono::seconds resource_stop_timeout{60};
inline constexpr std::chrono::seconds resource_answer_timeout{10};
/// A grow: the secondary's metadata write and answer, then ours.
inline constexpr std::chrono::seconds resource_grow_timeout{90};
/// What whoever waits on the supervisor (the control socket, the scrape,
/// the daemon's shutdown) adds to the supervisor's own wait on a resource,
/// so that the resource's answer, or its timeout, reaches the caller first.
inline constexpr std::chrono::seconds supervisor_margin{30};

/// How often, and how many times, a started resource asks again for its
/// role while its provider is still locked by the actors it replaces.
inline constexpr std::chrono::milliseconds role_busy_retry{100};
inline constexpr int role_busy_attempts = 100;

/// What the supervisor owns: the configuration and one actor per resource.
struct supervisor_state {
  node_config config;
  runtime io;  // what every resource runs on (its `supervisor` is set per spawn)
  std::map<std::string, supervised_resource> resources;
  /// Resources this node is the witness of (`role witness`): served by one
  /// witness actor, never by a resource actor.
  witness_actor witness;
  bool stopping = false;
  static inline const char* name = "hast.supervisor";
};

supervisor_actor::behavior_type supervisor(supervisor_actor::stateful_pointer<supervisor_state> self,
                                           node_config config, runtime io);

} // namespace hast
