#include "io/metrics_server.hpp"

#include "config/config.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

namespace hast {

metrics_server::metrics_server(renderer render) : render_(std::move(render)) {
}

metrics_server::~metrics_server() {
  stop();
}

status metrics_server::start(const std::string& address) {
  std::string host;
  uint16_t port = 0;
  if (!split_tcp_address(address, host, port, 0) || port == 0)
    return {errc::invalid_argument, "metrics: expected tcp://host:port, got '" + address + "'"};
  http_ = std::make_unique<httplib::Server>();
  // A scrape is one quick call to the daemon: two workers are plenty.
  http_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    auto text = render_();
    if (!text) {
      res.status = 503;
      res.set_content(text.error().message() + "\n", "text/plain");
      return;
    }
    res.set_content(*text, "text/plain; version=0.0.4; charset=utf-8");
  });
  if (!http_->bind_to_port(host, port)) {
    http_.reset();
    return {errc::io_error, "metrics: cannot listen on " + address + " (address in use or not "
                                                                     "local?)"};
  }
  thread_ = std::thread{[this] { http_->listen_after_bind(); }};
  spdlog::info("metrics: serving http://{}:{}/metrics", host, port);
  return status::ok();
}

void metrics_server::stop() {
  if (http_)
    http_->stop();
  if (thread_.joinable())
    thread_.join();
  http_.reset();
}

} // namespace hast
