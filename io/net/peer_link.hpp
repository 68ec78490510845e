#pragma once

// The connection to the other node as the peer actor sees it: frames in (in
// batches, one per read), frames out, close. The real one wraps a TCP
// connection (io/net/peer_transport.hpp); tests script one.

#include "io/codec/buffer.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/peer_transport.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hast {

/// Every complete frame of one read, in arrival order (never empty).
using frames_fn = std::function<void(std::vector<peer::frame>)>;
using close_fn = std::function<void(const std::string& reason)>;

class peer_link {
public:
  virtual ~peer_link() = default;
  /// Begins delivering frames; `on_close` runs exactly once.
  virtual void start(frames_fn on_frames, close_fn on_close) = 0;
  /// Thread-safe; frames leave in the order of the calls. The link sets
  /// h.payload_length from `payload` (and the tag of a sealed frame).
  virtual void send(const peer::header& h, buffer_ptr payload) = 0;
  virtual void close(const std::string& reason) = 0;
  virtual uint64_t queued_bytes() const = 0;
  virtual std::string remote_address() const = 0;
  /// Before start(): proves the shared key to the other side and checks
  /// its proof (docs/PROTOCOL.md, "Session"); `done` runs once, on any
  /// thread. A link that cannot authenticate answers with an error.
  virtual void open_session(peer::session_params params, std::chrono::milliseconds timeout,
                            std::function<void(status)> done);
  /// The other side proved the shared key (a session is up).
  virtual bool authenticated() const { return false; }
};
using peer_link_ptr = std::shared_ptr<peer_link>;

/// Opens a link (the primary's to its secondary, a data node's to the witness).
using link_connector = std::function<void(std::function<void(status, peer_link_ptr)> done)>;

/// The one place where an outgoing link authenticates: a connector whose
/// links have completed the session handshake with `params` before they
/// are handed over, so that nothing the other side says reaches the caller
/// before the other side proved the key. A link that fails to authenticate
/// is closed and reported as the connector's error. With an empty key,
/// `base` itself (the unauthenticated link of a resource without `secret`).
link_connector with_session(link_connector base, peer::session_params params,
                            std::chrono::milliseconds timeout);

/// The plain TCP connector of both dialing links: connects to `remote`
/// from `source` within `timeout` (io/net/peer_transport.hpp connect) and wraps
/// the connection as a link with `keepalive` and `timeout`. `io` must
/// outlive the connector.
link_connector tcp_connector(asio::io_context& io, std::string remote, std::string source,
                             std::chrono::milliseconds keepalive,
                             std::chrono::milliseconds timeout);

/// Wraps a TCP connection from io/net/peer_transport as a peer_link.
peer_link_ptr make_tcp_link(std::shared_ptr<peer::connection> conn,
                            std::chrono::milliseconds keepalive, std::chrono::milliseconds timeout);

} // namespace hast
