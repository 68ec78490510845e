#include "io/net/peer_link.hpp"

namespace hast {

namespace {

class tcp_link final : public peer_link {
public:
  tcp_link(std::shared_ptr<peer::connection> conn, std::chrono::milliseconds keepalive,
           std::chrono::milliseconds timeout)
    : conn_(std::move(conn)), keepalive_(keepalive), timeout_(timeout) {}
  ~tcp_link() override { conn_->close("link released"); }

  void start(frames_fn on_frames, close_fn on_close) override {
    conn_->start(std::move(on_frames), std::move(on_close), keepalive_, timeout_);
  }
  void send(const peer::header& h, buffer_ptr payload) override {
    conn_->send(h, std::move(payload));
  }
  void close(const std::string& reason) override { conn_->close(reason); }
  void open_session(peer::session_params params, std::chrono::milliseconds timeout,
                    std::function<void(status)> done) override {
    conn_->open_session(std::move(params), timeout, std::move(done));
  }
  uint64_t queued_bytes() const override { return conn_->queued_bytes(); }
  bool authenticated() const override { return conn_->authenticated(); }
  std::string remote_address() const override { return conn_->remote_address(); }

private:
  std::shared_ptr<peer::connection> conn_;
  std::chrono::milliseconds keepalive_;
  std::chrono::milliseconds timeout_;
};

} // namespace

void peer_link::open_session(peer::session_params, std::chrono::milliseconds,
                             std::function<void(status)> done) {
  done({errc::invalid_argument, "this link cannot authenticate"});
}

link_connector with_session(link_connector base, peer::session_params params,
                            std::chrono::milliseconds timeout) {
  if (params.key.empty() || !base)
    return base;
  return [base = std::move(base), params = std::move(params),
          timeout](std::function<void(status, peer_link_ptr)> done) {
    base([params, timeout, done = std::move(done)](status st, peer_link_ptr link) {
      if (!st || !link)
        return done(std::move(st), nullptr);
      link->open_session(params, timeout, [link, done](status st) {
        if (!st) {
          link->close(st.message());
          return done({st.code(), "cannot authenticate with " + link->remote_address() + ": "
                                    + st.message()},
                      nullptr);
        }
        done(status::ok(), link);
      });
    });
  };
}

link_connector tcp_connector(asio::io_context& io, std::string remote, std::string source,
                             std::chrono::milliseconds keepalive,
                             std::chrono::milliseconds timeout) {
  return [&io, remote = std::move(remote), source = std::move(source), keepalive,
          timeout](std::function<void(status, peer_link_ptr)> done) {
    auto made = [done = std::move(done), keepalive,
                 timeout](status st, std::shared_ptr<peer::connection> conn) {
      if (!st)
        return done(std::move(st), nullptr);
      done(status::ok(), make_tcp_link(std::move(conn), keepalive, timeout));
    };
    peer::connect(io, remote, source, timeout, std::move(made));
  };
}

peer_link_ptr make_tcp_link(std::shared_ptr<peer::connection> conn,
                            std::chrono::milliseconds keepalive, std::chrono::milliseconds timeout) {
  return std::make_shared<tcp_link>(std::move(conn), keepalive, timeout);
}

} // namespace hast
