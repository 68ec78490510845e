// The peer listeners and their router over 127.0.0.1: which addresses get
// in at all, what a first frame must be, and that an admitted link (plain
// or authenticated) reaches the route its caller gave. Raw Asio sockets play
// the other node where the test needs control of every byte; the other
// node's real connector plays it where a session must be proved.
// Timeouts here are generous upper bounds for waiting; the tests assert on
// behaviour, never on timing.

#include "io/net/asio.hpp"
#include "io/net/peer_listeners.hpp"
#include "io/net/peer_router.hpp"

#include <gtest/gtest.h>

#include <array>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace hast {
namespace {

using namespace std::chrono_literals;
using tcp = asio::ip::tcp;

constexpr auto patience = 10s;  // upper bound for anything to happen
/// The listeners' first-frame deadline in these tests: far beyond
/// `patience`, so that a connection closed within it was closed by a
/// decision, not by the deadline.
constexpr auto never = std::chrono::milliseconds(std::chrono::hours(1));

/// What the routes received.
struct routed {
  struct link_and_hello {
    peer_link_ptr link;
    peer::hello_message hello;
  };

  std::mutex mutex;
  std::condition_variable cv;
  std::vector<link_and_hello> peers;
  std::vector<link_and_hello> witnesses;
  std::vector<std::string> homes;  // resources whose home was asked for

  std::optional<link_and_hello> next_peer() {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, patience, [&] { return !peers.empty(); }))
      return std::nullopt;
    return peers.front();
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return peers.size() + witnesses.size();
  }
};

resource_config resource_named(const std::string& name, const std::string& remote) {
  resource_config rc;
  rc.name = name;
  rc.remote = remote;
  return rc;
}

node_config node_with(std::vector<resource_config> resources) {
  node_config config;
  config.node = "nodeA";
  config.listen = {"tcp://127.0.0.1:0"};
  config.resources = std::move(resources);
  return config;
}

peer::hello_message hello_for(const std::string& resource) {
  peer::hello_message hello;
  hello.resource = resource;
  hello.node = "nodeB";
  hello.role = "primary";
  return hello;
}

/// The wire bytes of a plain hello frame.
std::vector<uint8_t> hello_wire(const std::string& resource) {
  auto payload = peer::encode_hello(hello_for(resource));
  peer::header h;
  h.type = peer::msg_type::hello;
  h.payload_length = static_cast<uint32_t>(payload->size());
  const auto head = peer::encode_header(h);
  std::vector<uint8_t> out(head.begin(), head.end());
  out.insert(out.end(), payload->data(), payload->data() + payload->size());
  return out;
}

class PeerRouting : public ::testing::Test {
protected:
  PeerRouting() : guard_(asio::make_work_guard(io)), home_guard_(asio::make_work_guard(home)) {
    for (int i = 0; i < 2; ++i)
      threads_.emplace_back([this] { io.run(); });
    threads_.emplace_back([this] { home.run(); });
  }
  ~PeerRouting() override {
    if (listeners)
      listeners->stop();
    guard_.reset();
    home_guard_.reset();
    io.stop();
    home.stop();
    for (auto& t : threads_)
      t.join();
  }

  /// Listens on 127.0.0.1 (port 0) for `config`; the routes record into `got`.
  void listen(const node_config& config) {
    peer_routes routes;
    routes.peer = [got = got](peer_link_ptr link, peer::hello_message hello) {
      std::lock_guard lock(got->mutex);
      got->peers.push_back({std::move(link), std::move(hello)});
      got->cv.notify_all();
    };
    routes.witness = [got = got](peer_link_ptr link, peer::hello_message hello) {
      std::lock_guard lock(got->mutex);
      got->witnesses.push_back({std::move(link), std::move(hello)});
      got->cv.notify_all();
    };
    routes.home = [got = got, this](const std::string& resource) -> asio::io_context& {
      std::lock_guard lock(got->mutex);
      got->homes.push_back(resource);
      return home;
    };
    router = std::make_shared<peer_router>(io, config, std::move(routes));
    listeners = std::make_unique<peer_listeners>(io, router, never);
    auto st = listeners->open(wanted_listen(config));
    ASSERT_TRUE(st) << st.message();
    ASSERT_EQ(listeners->local_addresses().size(), 1u);
  }

  uint16_t port() const {
    const auto address = listeners->local_addresses().at(0);
    return static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  }

  /// A raw connection to the listener from 127.0.0.1.
  tcp::socket connect_raw() {
    tcp::socket raw(io);
    raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port()));
    return raw;
  }

  /// Whether the listening side closes `raw` (EOF or reset) within
  /// `patience`; whatever it sends before is read and dropped.
  static bool closed_by_listener(tcp::socket& raw) {
    auto sink = std::make_shared<std::array<uint8_t, 4096>>();
    auto result = std::make_shared<std::promise<bool>>();
    auto future = result->get_future();
    struct reader {
      tcp::socket& raw;
      std::shared_ptr<std::array<uint8_t, 4096>> sink;
      std::shared_ptr<std::promise<bool>> result;
      void operator()(std::error_code ec, std::size_t) const {
        if (ec) {
          result->set_value(ec == asio::error::eof || ec == asio::error::connection_reset);
          return;
        }
        raw.async_read_some(asio::buffer(*sink), *this);
      }
    };
    raw.async_read_some(asio::buffer(*sink), reader{raw, sink, result});
    if (future.wait_for(patience) != std::future_status::ready) {
      std::error_code ignored;
      raw.close(ignored);  // ends the read; its handler sets the promise
      future.wait();
      return false;
    }
    return future.get();
  }

  asio::io_context io;
  asio::io_context home;  // what routes.home hands out: the resource's own context
  std::shared_ptr<routed> got = std::make_shared<routed>();
  std::shared_ptr<peer_router> router;
  std::unique_ptr<peer_listeners> listeners;

private:
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  asio::executor_work_guard<asio::io_context::executor_type> home_guard_;
  std::vector<std::thread> threads_;
};

TEST_F(PeerRouting, AnAddressNoRemoteNamesIsClosedBeforeAnyByteIsRead) {
  listen(node_with({resource_named("r", "tcp://127.0.0.2:7771")}));
  auto raw = connect_raw();
  // Nothing is sent: only a refusal at accept closes it (the first-frame
  // deadline is an hour away).
  EXPECT_TRUE(closed_by_listener(raw));
  EXPECT_EQ(got->count(), 0u);
}

TEST_F(PeerRouting, OnlyTheAddressesOfTheConfigurationInForceMayConnect) {
  listen(node_with({resource_named("r", "tcp://127.0.0.1:7771")}));
  EXPECT_TRUE(router->allows("127.0.0.1"));
  EXPECT_FALSE(router->allows("127.0.0.2"));
  // After a reload that names another remote, the old address is refused.
  router->update(node_with({resource_named("r", "tcp://127.0.0.2:7771")}));
  EXPECT_FALSE(router->allows("127.0.0.1"));
  EXPECT_TRUE(router->allows("127.0.0.2"));
}

TEST_F(PeerRouting, AWitnessNodeLetsEveryAddressTryItsKey) {
  auto witnessed = resource_named("w", "none");
  witnessed.is_witness = true;
  listen(node_with({witnessed}));
  EXPECT_TRUE(router->allows("127.0.0.1"));
  EXPECT_TRUE(router->allows("192.0.2.7"));
}

TEST_F(PeerRouting, AHelloForAResourceNotConfiguredHereIsClosed) {
  listen(node_with({resource_named("r", "tcp://127.0.0.1:7771")}));
  auto raw = connect_raw();
  asio::write(raw, asio::buffer(hello_wire("elsewhere")));
  EXPECT_TRUE(closed_by_listener(raw));
  EXPECT_EQ(got->count(), 0u);
}

TEST_F(PeerRouting, AFirstFrameOtherThanHelloOrSessionOpenIsClosed) {
  listen(node_with({resource_named("r", "tcp://127.0.0.1:7771")}));
  auto raw = connect_raw();
  peer::header h;
  h.type = peer::msg_type::write;
  h.payload_length = 0;
  const auto head = peer::encode_header(h);
  asio::write(raw, asio::buffer(head));
  EXPECT_TRUE(closed_by_listener(raw));
  EXPECT_EQ(got->count(), 0u);
}

TEST_F(PeerRouting, AHelloFromTheConfiguredRemoteReachesThePeerRouteOnTheResourcesContext) {
  listen(node_with({resource_named("r", "tcp://127.0.0.1:7771")}));
  auto raw = connect_raw();
  asio::write(raw, asio::buffer(hello_wire("r")));
  auto link = got->next_peer();
  ASSERT_TRUE(link) << "the admitted link never reached the route";
  EXPECT_EQ(link->hello, hello_for("r"));
  EXPECT_FALSE(link->link->authenticated());
  {
    std::lock_guard lock(got->mutex);
    EXPECT_EQ(got->homes, std::vector<std::string>{"r"});
    EXPECT_TRUE(got->witnesses.empty());
  }
  // The link carries frames once its owner starts it.
  auto frames = std::make_shared<std::promise<std::vector<peer::frame>>>();
  auto arrived = frames->get_future();
  link->link->start(
    [frames, first = std::make_shared<std::once_flag>()](std::vector<peer::frame> batch) {
      std::call_once(*first, [&] { frames->set_value(std::move(batch)); });
    },
    [](const std::string&) {});
  peer::header h;
  h.type = peer::msg_type::hello_reply;
  auto reply = peer::encode_hello(hello_for("r"));
  h.payload_length = static_cast<uint32_t>(reply->size());
  const auto head = peer::encode_header(h);
  std::vector<uint8_t> wire(head.begin(), head.end());
  wire.insert(wire.end(), reply->data(), reply->data() + reply->size());
  asio::write(raw, asio::buffer(wire));
  ASSERT_EQ(arrived.wait_for(patience), std::future_status::ready);
  auto batch = arrived.get();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].h.type, peer::msg_type::hello_reply);
  link->link->close("test over");
}

TEST_F(PeerRouting, AResourceWithASecretClosesAHelloThatDidNotAuthenticate) {
  auto keyed = resource_named("r", "tcp://127.0.0.1:7771");
  keyed.secret = "/etc/hast/r.key";
  keyed.secret_key = "0123456789abcdef0123456789abcdef";
  listen(node_with({keyed}));
  auto raw = connect_raw();
  asio::write(raw, asio::buffer(hello_wire("r")));
  EXPECT_TRUE(closed_by_listener(raw));
  EXPECT_EQ(got->count(), 0u);
}

/// Connects to the listener as the other node's peer does: TCP, then the
/// session with `key`, then the (sealed) hello.
link_connector authenticated_client(asio::io_context& io, uint16_t port, const std::string& key) {
  auto base = tcp_connector(io, "tcp://127.0.0.1:" + std::to_string(port), "",
                            peer::default_keepalive, 5s);
  return with_session(std::move(base),
                      peer::session_params{{key.begin(), key.end()}, "r", "nodeB", "peer", true,
                                           peer::preferred_cipher()},
                      5s);
}

TEST_F(PeerRouting, AnAuthenticatedLinkReachesThePeerRoute) {
  const std::string key = "0123456789abcdef0123456789abcdef";
  auto keyed = resource_named("r", "tcp://127.0.0.1:7771");
  keyed.secret = "/etc/hast/r.key";
  keyed.secret_key = key;
  listen(node_with({keyed}));
  std::promise<std::pair<status, peer_link_ptr>> dialed;
  authenticated_client(io, port(), key)(
    [&](status st, peer_link_ptr link) { dialed.set_value({std::move(st), std::move(link)}); });
  auto dialing = dialed.get_future();
  ASSERT_EQ(dialing.wait_for(patience), std::future_status::ready);
  auto [st, client] = dialing.get();
  ASSERT_TRUE(st) << st.message();
  client->start([](std::vector<peer::frame>) {}, [](const std::string&) {});
  client->send(peer::header{.type = peer::msg_type::hello}, peer::encode_hello(hello_for("r")));
  auto link = got->next_peer();
  ASSERT_TRUE(link) << "the authenticated link never reached the route";
  EXPECT_TRUE(link->link->authenticated());
  EXPECT_EQ(link->hello, hello_for("r"));
  link->link->close("test over");
  client->close("test over");
}

TEST_F(PeerRouting, AWrongKeyNeverReachesTheRoute) {
  auto keyed = resource_named("r", "tcp://127.0.0.1:7771");
  keyed.secret = "/etc/hast/r.key";
  keyed.secret_key = "0123456789abcdef0123456789abcdef";
  listen(node_with({keyed}));
  std::promise<status> dialed;
  authenticated_client(io, port(), "fedcba9876543210fedcba9876543210")(
    [&](status st, peer_link_ptr) { dialed.set_value(std::move(st)); });
  auto dialing = dialed.get_future();
  ASSERT_EQ(dialing.wait_for(patience), std::future_status::ready);
  EXPECT_FALSE(dialing.get());
  EXPECT_EQ(got->count(), 0u);
}

TEST_F(PeerRouting, AReloadOpensAddedAddressesAndClosesRemovedOnes) {
  listen(node_with({resource_named("r", "tcp://127.0.0.1:7771")}));
  const auto before = listeners->local_addresses();
  EXPECT_EQ(listeners->apply({"tcp://127.0.0.1:0"}), "");
  EXPECT_EQ(listeners->local_addresses(), before);
  EXPECT_EQ(listeners->apply({"127.0.0.1:0"}), "+127.0.0.1:0, -tcp://127.0.0.1:0");
  EXPECT_EQ(listeners->addresses(), std::vector<std::string>{"127.0.0.1:0"});
  ASSERT_EQ(listeners->local_addresses().size(), 1u);
  // The old port no longer accepts; the new one routes as before.
  tcp::socket old(io);
  std::error_code ec;
  const auto old_port = std::stoi(before[0].substr(before[0].rfind(':') + 1));
  old.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(old_port)),
              ec);
  EXPECT_TRUE(ec || closed_by_listener(old));
  auto raw = connect_raw();
  asio::write(raw, asio::buffer(hello_wire("r")));
  ASSERT_TRUE(got->next_peer());
}

TEST(PeerListen, NothingIsOpenedWhileEveryResourceIsStandAlone) {
  node_config config;
  config.listen = {"tcp://0.0.0.0:8457"};
  config.resources = {resource_named("r", "none")};
  EXPECT_TRUE(wanted_listen(config).empty());
  config.resources.push_back(resource_named("s", "tcp://192.0.2.1"));
  EXPECT_EQ(wanted_listen(config), config.listen);
}

} // namespace
} // namespace hast
