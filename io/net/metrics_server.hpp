#pragma once

// hastd's /metrics endpoint (`metrics tcp://ADDRESS:PORT`): an HTTP server
// from cpp-httplib (libcpp-httplib-dev) on a thread of its own that answers
// GET /metrics with what `render` returns. Nothing else is served. At most
// max_metrics_connections connections are held at once; while that many
// are, no more are accepted (the kernel's listen backlog holds or drops
// them), so a flood of connections cannot use up hastd's descriptors.

#include "base/errc.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace hast {

/// Connections /metrics holds at once, served or waiting for a worker.
inline constexpr std::size_t max_metrics_connections = 8;
/// Threads that serve them.
inline constexpr std::size_t metrics_workers = 2;
/// Seconds a connection may take to send its request or read the reply.
inline constexpr int metrics_io_timeout = 5;

class metrics_server {
public:
  /// The exposition text, or an error (answered with 503).
  using renderer = std::function<result<std::string>()>;

  explicit metrics_server(renderer render);
  ~metrics_server();
  metrics_server(const metrics_server&) = delete;
  metrics_server& operator=(const metrics_server&) = delete;

  /// Binds `address` (tcp://host:port) and starts serving.
  status start(const std::string& address);
  /// Stops serving and joins the thread; idempotent.
  void stop();

  struct admission;  // the connections held, shared with httplib's queue

private:
  renderer render_;
  std::shared_ptr<admission> admission_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

} // namespace hast
