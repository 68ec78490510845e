#include "io/net/metrics_server.hpp"

#include "config/config.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

namespace hast {

/// Connections the endpoint holds, shared by the server (which stops it)
/// and the queue httplib owns (which may be gone by then).
struct metrics_server::admission {
  std::mutex mutex;
  std::condition_variable ready;  // a job, or shut
  std::condition_variable room;   // held fell, or stopping
  std::deque<std::function<void()>> jobs;
  size_t held = 0;                // queued + being served
  bool stopping = false;
  bool shut = false;
};

namespace {

/// httplib's own pool queues every accepted connection, without a bound:
/// a client that opens connections faster than they are served uses up the
/// daemon's descriptors. This queue holds at most `limit` connections (being
/// served or waiting for a worker); enqueue() waits for room, so the
/// listening thread accepts no more meanwhile, and further clients wait in
/// (or are dropped by) the kernel's listen backlog.
class bounded_queue final : public httplib::TaskQueue {
public:
  using admission = metrics_server::admission;

  bounded_queue(std::shared_ptr<admission> a, size_t workers, size_t limit)
      : a_(std::move(a)), limit_(limit) {
    for (size_t i = 0; i < workers; ++i)
      threads_.emplace_back([this] { work(); });
  }
  ~bounded_queue() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock{a_->mutex};
    // While stopping, the connection is taken at once: the server is about
    // to drain the queue and must not wait here for room.
    a_->room.wait(lock, [this] { return a_->held < limit_ || a_->stopping; });
    ++a_->held;
    a_->jobs.push_back(std::move(fn));
    a_->ready.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard lock{a_->mutex};
      if (a_->shut)
        return;
      a_->shut = true;
      a_->stopping = true;
    }
    a_->ready.notify_all();
    a_->room.notify_all();
    for (auto& t : threads_)
      t.join();
  }

private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock{a_->mutex};
        a_->ready.wait(lock, [this] { return !a_->jobs.empty() || a_->shut; });
        if (a_->jobs.empty())
          return;  // shut, and nothing left to serve
        fn = std::move(a_->jobs.front());
        a_->jobs.pop_front();
      }
      fn();  // serves the connection and closes it
      {
        std::lock_guard lock{a_->mutex};
        --a_->held;
      }
      a_->room.notify_one();
    }
  }

  std::shared_ptr<admission> a_;
  const size_t limit_;
  std::vector<std::thread> threads_;
};

} // namespace

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
  // A scrape is one quick call to the daemon: two workers are plenty. The
  // queue is made once, as listening starts, and owned by httplib.
  admission_ = std::make_shared<admission>();
  http_->new_task_queue = [a = admission_] {
    return new bounded_queue(a, metrics_workers, max_metrics_connections);
  };
  // One request per connection and short timeouts: a connection holds one
  // of the few places for as little as possible.
  http_->set_keep_alive_max_count(1);
  http_->set_read_timeout(metrics_io_timeout);
  http_->set_write_timeout(metrics_io_timeout);
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
  spdlog::info("metrics: serving http://{}:{}/metrics (at most {} connections at once)", host,
               port, max_metrics_connections);
  return status::ok();
}

void metrics_server::stop() {
  if (admission_) {
    {
      std::lock_guard lock{admission_->mutex};
      admission_->stopping = true;
    }
    admission_->room.notify_all();
  }
  if (http_)
    http_->stop();
  if (thread_.joinable())
    thread_.join();
  http_.reset();
  admission_.reset();
}

} // namespace hast
