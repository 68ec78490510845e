#pragma once

// The peer listeners of a node, as groups of addresses opened together
// (one io/net/peer_transport.hpp listener each), every accepted connection
// going to one io/net/peer_router.hpp. A reload diffs the configured set
// against the open one: added addresses open as a new group, a group that
// holds a removed address closes and its other addresses open again at
// once, every other group stays open untouched.

#include "config/config.hpp"
#include "io/net/peer_router.hpp"
#include "io/net/peer_transport.hpp"

#include <chrono>
#include <list>
#include <memory>
#include <string>
#include <vector>

namespace asio {
class io_context;
} // namespace asio

namespace hast {

/// The peer addresses a configuration needs open: none while every
/// resource is stand-alone (nobody is to connect).
std::vector<std::string> wanted_listen(const node_config& config);

class peer_listeners {
public:
  /// `first_frame_timeout`: how long an accepted connection has to send
  /// its first frame and, with a `secret`, to authenticate.
  peer_listeners(asio::io_context& io, std::shared_ptr<peer_router> router,
                 std::chrono::milliseconds first_frame_timeout = peer::authentication_timeout);
  peer_listeners(const peer_listeners&) = delete;
  peer_listeners& operator=(const peer_listeners&) = delete;
  ~peer_listeners();

  /// Opens `addresses` (none: nothing to do) at start-up.
  status open(const std::vector<std::string>& addresses);

  /// Makes the open set `wanted`. Returns what changed ("+tcp://a, -tcp://b"),
  /// empty if nothing did. If the added addresses cannot be opened, the
  /// open set stays as it was and the reason is logged.
  std::string apply(const std::vector<std::string>& wanted);

  /// Closes every listener. Idempotent.
  void stop();

  /// The addresses open now, as configured.
  std::vector<std::string> addresses() const;

  /// The addresses bound now ("tcp://127.0.0.1:40123": a port 0 resolved).
  std::vector<std::string> local_addresses() const;

private:
  struct group {
    std::vector<std::string> addresses;
    std::unique_ptr<peer::listener> listener;
  };

  status open_group(const std::vector<std::string>& addresses,
                    std::chrono::milliseconds retry_for = std::chrono::milliseconds(0));
  /// Closes the groups that hold an address of `removed`, noting them in closed_.
  void close_groups(const std::vector<std::string>& removed);
  void reopen_closed();

  asio::io_context& io_;
  std::shared_ptr<peer_router> router_;
  std::chrono::milliseconds first_frame_timeout_;
  std::list<group> groups_;
  std::vector<std::vector<std::string>> closed_;  // groups closed by the reload under way
};

} // namespace hast
