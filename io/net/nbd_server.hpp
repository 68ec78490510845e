#pragma once

// The NBD server of one export: listens on a Unix or TCP socket, speaks the
// fixed-newstyle handshake and the transmission phase with simple replies,
// and hands requests to a backend (io/net/nbd_backend.hpp) made per connection.
// Requests are pipelined and batched: every complete request the client has
// sent goes to the backend in one submit(), more are read while earlier ones
// are still at the backend, and replies go out in the order the backend
// delivers them, gathered into few writes. What we advertise, how batches are
// formed and how errors are answered: docs/NBD.md.
//
// Asio stays out of this header (pimpl) so that the translation units that
// include it compile fast.

#include "io/net/nbd_backend.hpp"
#include "base/errc.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace asio {
class io_context;
} // namespace asio

namespace hast::nbd {

/// A client must finish the handshake (fixed newstyle option haggling up to
/// NBD_OPT_GO or NBD_OPT_EXPORT_NAME) within this time after it connects;
/// one that stalls is disconnected, so it cannot hold a descriptor forever.
inline constexpr std::chrono::seconds handshake_time_limit{10};

/// Connections one export accepts at once (handshake or transmission); one
/// more is closed as soon as it is accepted, with a logged warning. Each may
/// hold up to max_outstanding_bytes of requests.
inline constexpr std::size_t max_connections_per_export = 16;

/// Who may connect to an export over TCP. A Unix socket export is guarded by
/// its file's mode (0660) and ignores `allow`.
struct access {
  /// Numeric addresses and prefixes ("10.0.0.5", "10.0.0.0/24",
  /// "fd00::/8") a TCP client may connect from: the configuration's
  /// `nbd-allow`. Empty: loopback clients only. An IPv4 client seen as
  /// ::ffff:a.b.c.d matches its IPv4 entries.
  std::vector<std::string> allow;
  std::size_t max_connections = max_connections_per_export;
};

/// Sets the access rules of the export named `export_name` (its resource's
/// name), for a server that serves it now or later; they apply from its
/// next accepted connection. An export never named here gets `access{}`.
/// Thread-safe. The daemon calls it from the configuration, at start and
/// on reload, before it starts the export.
void set_access(const std::string& export_name, access rules);

/// The rules set_access() last set for `export_name`, or access{}.
access access_of(const std::string& export_name);

/// Whether `address` (numeric, as a socket reports it) may connect under
/// `allow` (see access::allow); entries that do not parse match nothing.
bool allowed(const std::string& address, const std::vector<std::string>& allow);

class server {
public:
  /// `address` is "uds:///path" (also "unix:///path" or "/path") or
  /// "tcp://host:port" (port 10809 if omitted). `factory` makes one backend
  /// per connection, when the client first asks for the export; it may be
  /// called concurrently from any thread running `io`. Nothing happens until
  /// start(). `io` must outlive the server and every backend reply
  /// (reply_sink::deliver posts to it). `handshake_limit`: see
  /// handshake_time_limit (tests pass a shorter one).
  server(asio::io_context& io, std::string export_name, std::string address,
         backend_factory factory,
         std::chrono::milliseconds handshake_limit = handshake_time_limit);
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  /// Stops (as stop()) if still running.
  ~server();

  /// Binds and starts accepting, without blocking the caller. A Unix socket
  /// gets its parent directory created if missing, a stale socket file
  /// replaced (a live one is an error), and mode 0660. A TCP socket is bound
  /// with SO_REUSEADDR; a host name in it is resolved by Asio's asynchronous
  /// resolver. `done` runs once with the outcome: before start() returns for
  /// a Unix socket or a numeric address, on a thread running `io` after the
  /// name is resolved otherwise. Call once.
  void start(std::function<void(status)> done);

  /// The same, waiting for the outcome. For callers that may block (tests,
  /// tools); an address with a host name needs `io` running elsewhere.
  status start();

  /// The outcome of start() once it is known.
  std::optional<status> start_outcome() const;

  /// Closes the acceptor and every session (each backend is closed once it
  /// has answered every submitted request), and removes the Unix socket file.
  /// Safe to call from any thread and more than once: the work is posted to
  /// the io_context. `stopped`, if given, runs on an io_context thread once
  /// the acceptor is closed and the socket file is gone, so that a new
  /// server may bind the same address from it.
  void stop(std::function<void()> stopped = {});

  /// Closes every open connection but keeps listening: a resource leaving
  /// the primary role drops its clients, and new ones get the backend's
  /// refusal. Backends are closed as in stop(). Safe to call from any thread.
  void close_sessions();

  /// Connections currently open (handshake or transmission).
  std::size_t connections() const;

  /// The address actually bound ("tcp://127.0.0.1:40123" when started on
  /// port 0); the configured address before start().
  std::string local_address() const;

  const std::string& export_name() const;

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

/// The name of `export_name`'s device view, the export /dev/hast/<name>'s
/// nbdfuse connects to (io/process/block_device.hpp). nbdfuse fixes its file's size
/// when it connects, so the view advertises the export's growth ceiling
/// (export_info::ceiling) instead of its data size; the loop device on that
/// file is limited to the data size, and widened when the resource grows.
/// Past the data size (backend::size_now()) reads return zeros (read-ahead
/// may reach there) and writes, trims and zeroing fail with ENOSPC; a read
/// across the end gets the data, then zeros. NBD_OPT_LIST does not list it;
/// resource names hold no '/', so it never names another export.
inline std::string device_view_name(const std::string& export_name) {
  return export_name + "/device";
}

/// The NBD port IANA assigned; used when a tcp:// address names none.
inline constexpr uint16_t default_nbd_port = 10809;

} // namespace hast::nbd
