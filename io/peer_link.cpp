#include "io/peer_link.hpp"

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
  uint64_t queued_bytes() const override { return conn_->queued_bytes(); }
  std::string remote_address() const override { return conn_->remote_address(); }

private:
  std::shared_ptr<peer::connection> conn_;
  std::chrono::milliseconds keepalive_;
  std::chrono::milliseconds timeout_;
};

} // namespace

peer_link_ptr make_tcp_link(std::shared_ptr<peer::connection> conn,
                            std::chrono::milliseconds keepalive, std::chrono::milliseconds timeout) {
  return std::make_shared<tcp_link>(std::move(conn), keepalive, timeout);
}

} // namespace hast
