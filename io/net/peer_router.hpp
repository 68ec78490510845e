#pragma once

// Routes a connection the peer listeners (io/net/peer_listeners.hpp) accepted.
// The listener asks allows() at accept, before reading anything: only
// addresses that some resource's `remote` names get in, or any address on a
// witness node (the key is required there). With a `secret`, the first
// frame is session_open and the router runs the session handshake with the
// resource's key (io/net/peer_transport.hpp accept_session) before it reads the
// hello; the secondary then takes the link only from an address its
// `remote` names (IP compared, port ignored, as in HAST) and hands it on
// through peer_routes. What becomes of an admitted link is the caller's
// (hastd sends it to its supervisor: actors/daemon.cpp); this layer sees no
// actors.
//
// Asio stays out of this header (pimpl).

#include "config/config.hpp"
#include "io/codec/buffer.hpp"
#include "io/net/peer_link.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/peer_transport.hpp"

#include <functional>
#include <memory>
#include <string>

namespace asio {
class io_context;
} // namespace asio

namespace hast {

/// Where the router hands what it admitted. Called on an Asio thread.
struct peer_routes {
  using link_fn = std::function<void(peer_link_ptr link, peer::hello_message hello)>;
  /// A peer's link to one of our resources (`hello.resource`), from an
  /// address that resource's `remote` names; authenticated when the
  /// resource has a `secret`.
  link_fn peer;
  /// A data node's authenticated link to a resource this node witnesses.
  link_fn witness;
  /// The Asio context that serves the admitted peer link of `resource` from
  /// then on (its data thread's); empty: the listener's context keeps it.
  std::function<asio::io_context&(const std::string& resource)> home;
};

class peer_router {
public:
  /// `io` resolves host names of `remote` and must outlive the router.
  peer_router(asio::io_context& io, node_config config, peer_routes routes);
  peer_router(const peer_router&) = delete;
  peer_router& operator=(const peer_router&) = delete;
  ~peer_router();

  /// The configuration in force from now on (a reload): which addresses
  /// are let in, which resources exist, their keys.
  void update(node_config config);

  /// Whether a connection from `ip` may send anything at all.
  bool allows(const std::string& ip) const;

  /// The first frame of an accepted connection (the listener's on_hello).
  void route(std::shared_ptr<peer::connection> conn, const peer::header& h, buffer_ptr payload);

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

} // namespace hast
