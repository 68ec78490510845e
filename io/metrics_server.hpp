#pragma once

// hastd's /metrics endpoint (`metrics tcp://ADDRESS:PORT`): an HTTP server
// from cpp-httplib (libcpp-httplib-dev) on a thread of its own that answers
// GET /metrics with what `render` returns. Nothing else is served.

#include "messages/errc.hpp"

#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace hast {

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

private:
  renderer render_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

} // namespace hast
