#include "io/io_env.hpp"

namespace hast {

link_connector io_env::peer_connector(asio::io_context& io, const std::string& remote,
                                      const std::string& source,
                                      std::chrono::milliseconds keepalive,
                                      std::chrono::milliseconds timeout) const {
  return tcp_connector(io, remote, source, keepalive, timeout);
}

namespace {

class real_env final : public io_env {
public:
  result<provider> open_provider(const std::string& path, bool writable) const override {
    return provider::open(path, writable);
  }
};

} // namespace

std::shared_ptr<const io_env> default_io_env() {
  static auto env = std::make_shared<const real_env>();
  return env;
}

} // namespace hast
