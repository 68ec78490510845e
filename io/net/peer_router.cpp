#include "io/net/peer_router.hpp"

#include "io/net/asio.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>
#include <set>

namespace hast {

struct peer_router::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& io, node_config config, peer_routes routes)
    : io_(io), config_(std::move(config)), routes_(std::move(routes)) {}

  /// Called once the impl is shared (a resolution holds a weak_ptr to it).
  void update(node_config config) {
    std::lock_guard lock{mutex_};
    config_ = std::move(config);
    refresh_addresses();
  }

  /// Whether a connection from `ip` may send anything at all.
  bool allows(const std::string& ip) {
    std::lock_guard lock{mutex_};
    return any_address_ || allowed_.count(ip) > 0;
  }

  void route(std::shared_ptr<peer::connection> conn, const peer::header& h, buffer_ptr payload) {
    auto who = conn->remote_address();
    if (h.type == peer::msg_type::session_open)
      return route_session(std::move(conn), std::move(payload));
    if (h.type != peer::msg_type::hello) {
      spdlog::warn("peer {}: first message is {}, not hello or session_open; closing", who,
                   peer::to_string(h.type));
      conn->close("expected hello");
      return;
    }
    auto hello = peer::decode_hello(payload);
    if (!hello) {
      spdlog::warn("peer {}: bad hello: {}; closing", who, hello.error().message());
      conn->close("bad hello");
      return;
    }
    resource_config res;
    {
      std::lock_guard lock{mutex_};
      auto found = config_.find(hello->resource);
      if (found == nullptr) {
        spdlog::warn("peer {} asked for resource '{}', which is not configured; closing", who,
                     hello->resource);
        conn->close("resource not configured");
        return;
      }
      res = *found;
    }
    // Fail closed: a resource with a `secret` takes only authenticated links.
    if (!res.secret.empty()) {
      spdlog::warn("{}: peer {} refused: it did not authenticate, and this node has a `secret` for "
                   "the resource (configure the same key on both nodes)",
                   res.name, who);
      conn->close("authentication required");
      return;
    }
    resolve_and_admit(std::move(conn), std::move(*hello), std::move(res));
  }

  /// The session handshake, for the peer and the witness link alike.
  void route_session(std::shared_ptr<peer::connection> conn, buffer_ptr payload) {
    auto who = conn->remote_address();
    auto open = peer::decode_session_open(payload);
    if (!open) {
      spdlog::warn("peer {}: bad session_open: {}; closing", who, open.error().message());
      conn->close("bad session_open");
      return;
    }
    resource_config res;
    std::string node;
    {
      std::lock_guard lock{mutex_};
      auto found = config_.find(open->resource);
      node = config_.node;
      if (found == nullptr) {
        spdlog::warn("peer {} asked for resource '{}', which is not configured; closing", who,
                     open->resource);
        conn->close("resource not configured");
        return;
      }
      res = *found;
    }
    const bool witness = open->link == "witness";
    std::string refusal;
    if (witness && !res.is_witness)
      refusal = "this node is not the witness of the resource";
    else if (!witness && (res.is_witness || res.standalone()))
      refusal = "the resource has no remote";
    else if (res.secret_key.empty())
      refusal = "no `secret` is configured here for the resource, but the other node has one";
    if (!refusal.empty()) {
      spdlog::warn("{}: {} refused: {}", res.name, who, refusal);
      conn->close(refusal);
      return;
    }
    peer::session_params mine{{res.secret_key.begin(), res.secret_key.end()},
                              res.name,
                              node,
                              open->link,
                              res.encryption,
                              peer::preferred_cipher()};
    conn->accept_session(
      std::move(mine), std::move(payload),
      [self = shared_from_this(), conn, res = std::move(res), witness, who,
       claimed = open->node](status st, const peer::header& h, buffer_ptr first) mutable {
        if (!st) {
          spdlog::warn("{}: {} at {} did not authenticate: {}", res.name, claimed, who,
                       st.message());
          return;
        }
        spdlog::info("{}: {} at {} authenticated ({} link)", res.name, claimed, who,
                     witness ? "witness" : "peer");
        const auto expected = witness ? peer::msg_type::witness_hello : peer::msg_type::hello;
        auto hello = h.type == expected ? peer::decode_hello(first)
                                        : result<peer::hello_message>(status{
                                            errc::protocol_error,
                                            "first sealed frame is " + std::string(peer::to_string(h.type))});
        if (hello && hello->resource != res.name)
          hello = status{errc::protocol_error, "the hello names another resource"};
        if (!hello) {
          spdlog::warn("{}: {}: {}; closing", res.name, who, hello.error().message());
          conn->close("bad hello");
          return;
        }
        if (witness)
          return self->hand_to_witness(std::move(conn), std::move(*hello), res);
        self->resolve_and_admit(std::move(conn), std::move(*hello), std::move(res));
      });
  }

  /// Keeps allowed_ in step with config_ (under mutex_): the IP literals of
  /// every `remote`, plus what host names resolve to, when it arrives.
  void refresh_addresses() {
    allowed_.clear();
    any_address_ = false;
    ++generation_;
    for (const auto& r : config_.resources) {
      any_address_ = any_address_ || r.is_witness;
      std::string host;
      uint16_t port = 0;
      if (r.is_witness || r.standalone() || !split_tcp_address(r.remote, host, port))
        continue;
      std::error_code ec;
      const auto literal = asio::ip::make_address(host, ec);
      if (!ec) {
        allowed_.insert(literal.to_string());
        continue;
      }
      auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
      resolver->async_resolve(host, "",
                              [weak = weak_from_this(), resolver, generation = generation_](
                                std::error_code ec, asio::ip::tcp::resolver::results_type results) {
                                auto self = weak.lock();
                                if (!self || ec)
                                  return;
                                std::lock_guard lock{self->mutex_};
                                if (generation != self->generation_)
                                  return;
                                for (const auto& entry : results)
                                  self->allowed_.insert(entry.endpoint().address().to_string());
                              });
    }
  }

  void resolve_and_admit(std::shared_ptr<peer::connection> conn, peer::hello_message hello,
                         resource_config res) {
    auto who = conn->remote_address();
    std::string host;
    uint16_t port = 0;
    if (res.standalone() || !split_tcp_address(res.remote, host, port)) {
      spdlog::warn("{}: peer {} refused: the resource has no remote", res.name, who);
      conn->close("no access to the resource");
      return;
    }
    // This runs on an Asio thread: a host name is resolved by Asio's
    // asynchronous resolver, never by a blocking getaddrinfo here.
    auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
    resolver->async_resolve(
      host, "",
      [self = shared_from_this(), resolver, conn = std::move(conn), hello = std::move(hello),
       res = std::move(res)](std::error_code ec,
                             asio::ip::tcp::resolver::results_type results) mutable {
        self->admit(std::move(conn), std::move(hello), res, ec, results);
      });
  }

  /// A data node's link to the witness, authenticated (no address check:
  /// the key is required).
  void hand_to_witness(std::shared_ptr<peer::connection> conn, peer::hello_message hello,
                       const resource_config& res) {
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(res.timeout));
    if (routes_.witness)
      routes_.witness(make_tcp_link(std::move(conn), timeout / 4, timeout), std::move(hello));
  }

  /// Hands the connection to the resource if it comes from an address that
  /// the resource's `remote` names.
  void admit(std::shared_ptr<peer::connection> conn, peer::hello_message hello,
             const resource_config& res, std::error_code ec,
             const asio::ip::tcp::resolver::results_type& results) {
    auto who = conn->remote_address();
    bool allowed = false;
    if (!ec)
      for (const auto& entry : results)
        allowed = allowed || entry.endpoint().address().to_string() == conn->remote_ip();
    if (!allowed) {
      spdlog::warn("{}: peer {} refused: not the configured remote {}{}", res.name, who,
                   res.remote, ec ? " (" + ec.message() + ")" : "");
      conn->close("no access to the resource");
      return;
    }
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(res.timeout));
    // From here on the resource's data thread serves the link, as it does
    // the link a primary opens.
    if (routes_.home)
      conn = conn->rehome(routes_.home(res.name));
    if (routes_.peer)
      routes_.peer(make_tcp_link(std::move(conn), peer::default_keepalive, timeout),
                   std::move(hello));
  }

  asio::io_context& io_;
  std::mutex mutex_;
  node_config config_;
  std::set<std::string> allowed_;  // source IPs that may connect (mutex_)
  bool any_address_ = false;       // a witness node: every address, the key decides
  uint64_t generation_ = 0;        // of allowed_, so a late resolution of an old config is dropped
  peer_routes routes_;
};

peer_router::peer_router(asio::io_context& io, node_config config, peer_routes routes)
  : impl_(std::make_shared<impl>(io, node_config{}, std::move(routes))) {
  impl_->update(std::move(config));
}

peer_router::~peer_router() = default;

void peer_router::update(node_config config) {
  impl_->update(std::move(config));
}

bool peer_router::allows(const std::string& ip) const {
  return impl_->allows(ip);
}

void peer_router::route(std::shared_ptr<peer::connection> conn, const peer::header& h,
                        buffer_ptr payload) {
  impl_->route(std::move(conn), h, std::move(payload));
}

} // namespace hast
