#pragma once

// One TCP connection between the two nodes of a resource, carrying frames of
// io/net/peer_protocol.hpp, and the listener that accepts such connections.
// Sends are queued in order; whatever is queued when the writer runs goes
// out in one gathered sendmsg (headers and payloads as separate iovecs, the
// payloads not copied). Reads fill a receive buffer, and every complete
// frame of one read reaches the handler in one call, so that a burst of
// small frames (acknowledgements) costs one hand-off, not one per frame.
// The bytes become frames in io/net/frame_reader.hpp (header checks, caps,
// opening sealed frames). Keepalives are handled here and never reach the
// frames handler.
//
// Asio stays out of this header (pimpl).

#include "io/codec/buffer.hpp"
#include "io/net/frame_reader.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"
#include "base/errc.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace asio {
class io_context;
} // namespace asio

namespace hast::peer {

/// Called on an io thread once per read, with every complete frame but
/// keepalives, in arrival order (never empty). A frame whose payload needs
/// more reads is delivered as soon as it is complete, never held back to
/// wait for frames behind it.
using frames_handler = std::function<void(std::vector<frame>)>;
/// Called exactly once, on an io thread, when the connection ends for any reason.
using close_handler = std::function<void(const std::string& reason)>;

class connection : public std::enable_shared_from_this<connection> {
public:
  struct impl;
  /// Made by connect() and listener, not by users.
  explicit connection(std::shared_ptr<impl> p);
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  /// Releasing the last reference closes the connection as close() does
  /// (on_close still runs, on an io thread). Keep the shared_ptr while the
  /// link is wanted.
  ~connection();

  /// Starts reading frames; frames the listener read along with the first
  /// one are delivered first. Keepalive frames are consumed here: if
  /// nothing was sent for `keepalive`, a keepalive frame is sent; if
  /// nothing was received for `timeout`, the connection closes with the
  /// reason "no traffic for N s". A malformed frame closes it with the
  /// decode error as reason, after the frames before it in the same read
  /// were delivered. `keepalive` or `timeout` of zero disables that check.
  /// Call once; on a connection that closed before start(), on_close runs
  /// at once with the reason.
  void start(frames_handler on_frames, close_handler on_close, std::chrono::milliseconds keepalive,
             std::chrono::milliseconds timeout);

  /// Thread-safe; frames go out in the order of the calls. The header is
  /// encoded here, with payload_length set to the payload's size; frames
  /// queued together are written in one gathered write, the payload not
  /// copied (it must not change until written). A payload over max_payload
  /// closes the connection (a bug in the caller). Ignored after close.
  void send(const header& h, buffer_ptr payload);

  /// Thread-safe and idempotent: stops reading, writes what send() queued
  /// before (for at most 1 s: a refusing hello_reply or a goodbye gets
  /// out), closes the socket, and calls on_close(reason) once if start()
  /// was called. on_close runs later on an io thread, never inside close();
  /// once close() has returned, on_frames is not called any more.
  void close(const std::string& reason);

  /// Client side of a session (docs/PROTOCOL.md, "Session"), before
  /// start(): sends session_open, checks the server's proof of the key,
  /// sends ours; from then on every frame is sealed both ways. `done` runs
  /// once on an io thread: ok, or why not (the connection is then closed).
  /// Nothing the other side says is used before its proof checked out.
  void open_session(session_params params, std::chrono::milliseconds timeout,
                    std::function<void(status)> done);
  /// Server side, on an accepted connection whose first frame was
  /// session_open (`open`, its payload): answers it, checks the client's
  /// proof, then reads the first sealed frame and hands it to `done`
  /// (before start(), as the listener hands over the first frame). The
  /// listener's deadline for the first frame covers the whole handshake.
  void accept_session(session_params params, buffer_ptr open,
                      std::function<void(status, const header&, buffer_ptr)> done);
  /// A session is up: the other side proved the key.
  bool authenticated() const;

  /// The same connection, served from now on by `io` (a resource's data
  /// thread) instead of the context that accepted it. Only for an accepted
  /// connection whose first frame was handed over and that was not started;
  /// the bytes read behind the first frame come along. This object is then
  /// spent: it closes nothing and delivers nothing.
  std::shared_ptr<connection> rehome(asio::io_context& io);

  /// "ip:port" ("[v6]:port" for IPv6).
  std::string remote_address() const;
  std::string remote_ip() const;
  /// Bytes accepted by send() not yet written to the socket.
  uint64_t queued_bytes() const;
  /// Totals on the wire (headers included), for tests and benchmarks.
  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;
  /// sendmsg calls that wrote bytes: frames queued together share one.
  uint64_t write_calls() const;

private:
  std::shared_ptr<impl> impl_;
};

/// Connects to "tcp://host[:port]" (port 8457 if omitted), binding `source`
/// ("" for any, "tcp://addr[:port]" or a bare address) first; sets
/// TCP_NODELAY; gives up after `timeout`. `done` runs once on an io thread
/// with ok and the connection (not started), or an error naming the remote.
void connect(asio::io_context& io, const std::string& remote, const std::string& source,
             std::chrono::milliseconds timeout,
             std::function<void(status, std::shared_ptr<connection>)> done);

/// How long a connection has to authenticate: from accept to the first
/// sealed frame on the listening side (two round trips).
inline constexpr std::chrono::milliseconds authentication_timeout = std::chrono::seconds(10);

/// The connecting side's wait for the server's proof (one round trip):
/// twice the link's `timeout` (a link that says nothing for `timeout` is
/// dead anyway), at most authentication_timeout.
inline std::chrono::milliseconds proof_timeout(std::chrono::milliseconds link_timeout) {
  return std::min<std::chrono::milliseconds>(authentication_timeout, 2 * link_timeout);
}

/// What a listener lets in before anyone proved anything (docs/SECURITY.md).
struct admission {
  /// Whether a connection from this IP address may send its first frame;
  /// asked at accept, before anything is read. Empty: every address.
  std::function<bool(const std::string& ip)> allowed;
  /// Accepted connections not yet authenticated (or, without a `secret`,
  /// not yet started), in all and from one IP address; more are closed at accept.
  std::size_t max_pending = 64;
  std::size_t max_pending_per_address = 8;
};

/// Accepts peer connections on each address ("tcp://0.0.0.0:8457",
/// "tcp4://…", "tcp6://[::]:8457", bare host:port; port 0 for tests).
/// Checks the source address and the pending caps of `rules` at accept,
/// then reads the first frame of each new connection within
/// `first_frame_timeout` (a frame over unauthenticated_frame_limit, a
/// malformed first frame or a timeout closes it, with a log line) and then
/// calls on_hello(conn, header, raw payload) without starting the
/// connection: the callee calls conn->start(...) or accept_session(), or
/// drops/closes it. The same deadline covers accept_session(). Bytes that
/// arrived in the same read as the first frame are kept in the connection
/// and parsed by start(); later ones wait in the kernel until then.
class listener {
public:
  using hello_handler = std::function<void(std::shared_ptr<connection>, const header&, buffer_ptr)>;

  listener(asio::io_context& io, std::vector<std::string> addresses, hello_handler on_hello,
           std::chrono::milliseconds first_frame_timeout = authentication_timeout,
           admission rules = {});
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  /// Stops (as stop()) if still running.
  ~listener();

  /// Binds all addresses (SO_REUSEADDR) and starts accepting. An address of
  /// a family this machine lacks (tcp6 without IPv6) is skipped with a log
  /// line when at least one other address binds. The error names the address.
  status start();
  /// Closes the acceptors and the connections still waiting for their
  /// first frame. Any thread, idempotent.
  void stop();
  /// The bound addresses, "tcp://127.0.0.1:40123" / "tcp://[::1]:40123", after start().
  std::vector<std::string> local_addresses() const;

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

} // namespace hast::peer
