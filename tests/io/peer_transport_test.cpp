// The peer transport over 127.0.0.1: listener and connect, framing in both
// directions, garbage and silent peers, keepalives, connect failures. Raw
// Asio sockets play misbehaving peers. Timeouts here are generous upper
// bounds for waiting; the tests assert on behaviour, never on timing.

#include "io/asio.hpp"
#include "io/peer_transport.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace hast::peer {
namespace {

using namespace std::chrono_literals;
using tcp = asio::ip::tcp;

constexpr auto patience = 10s;  // upper bound for anything to happen

/// An io_context run by two threads, so that the strands are exercised.
class io_fixture : public ::testing::Test {
protected:
  io_fixture() : guard_(asio::make_work_guard(io)) {
    for (int i = 0; i < 2; ++i)
      threads_.emplace_back([this] { io.run(); });
  }
  ~io_fixture() override {
    guard_.reset();
    io.stop();
    for (auto& t : threads_)
      t.join();
  }

  asio::io_context io;

private:
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
};

/// Collects what one connection receives and how it ends.
// Shared: a connection may call its handlers after the test body returned.
struct inbox : std::enable_shared_from_this<inbox> {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::pair<header, buffer_ptr>> frames;
  std::vector<std::string> closes;

  frame_handler on_frame() {
    return [self = shared_from_this()](const header& h, buffer_ptr payload) {
      std::lock_guard lock(self->mutex);
      self->frames.emplace_back(h, std::move(payload));
      self->cv.notify_all();
    };
  }
  close_handler on_close() {
    return [self = shared_from_this()](const std::string& reason) {
      std::lock_guard lock(self->mutex);
      self->closes.push_back(reason);
      self->cv.notify_all();
    };
  }
  bool wait_frames(std::size_t n) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, patience, [&] { return frames.size() >= n; });
  }
  std::optional<std::string> wait_close(std::chrono::milliseconds limit = patience) {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, limit, [&] { return !closes.empty(); }))
      return std::nullopt;
    return closes.front();
  }
  std::size_t close_count() {
    std::lock_guard lock(mutex);
    return closes.size();
  }
};

/// A listener on 127.0.0.1 (port 0) whose on_hello hands connections to the test.
struct test_listener {
  struct hello {
    std::shared_ptr<connection> conn;
    header first;
    buffer_ptr payload;
  };

  test_listener(asio::io_context& io, std::chrono::milliseconds first_frame_timeout = 10s)
      : server(io, {"tcp://127.0.0.1:0"},
               [this](std::shared_ptr<connection> conn, const header& h, buffer_ptr payload) {
                 std::lock_guard lock(mutex);
                 hellos.push_back({std::move(conn), h, std::move(payload)});
                 cv.notify_all();
               },
               first_frame_timeout) {}

  std::string address() const { return server.local_addresses().at(0); }
  uint16_t port() const { return static_cast<uint16_t>(std::stoi(address().substr(address().rfind(':') + 1))); }

  std::optional<hello> next_hello() {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, patience, [&] { return taken < hellos.size(); }))
      return std::nullopt;
    return hellos[taken++];
  }

  listener server;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<hello> hellos;
  std::size_t taken = 0;
};

std::pair<status, std::shared_ptr<connection>> connect_to(asio::io_context& io,
                                                          const std::string& address,
                                                          std::chrono::milliseconds timeout = 5s) {
  std::promise<std::pair<status, std::shared_ptr<connection>>> promise;
  auto future = promise.get_future();
  connect(io, address, "", timeout, [&](status s, std::shared_ptr<connection> c) {
    promise.set_value({std::move(s), std::move(c)});
  });
  if (future.wait_for(patience) != std::future_status::ready)
    return {status{errc::timeout, "the test gave up waiting for connect"}, nullptr};
  return future.get();
}

buffer_ptr payload_for(uint64_t seq) {
  // Sizes from 0 to ~70 KiB; content depends on seq and position.
  const std::size_t n = (seq * 7919) % 70000;
  if (n == 0)
    return nullptr;
  auto b = make_buffer(n);
  for (std::size_t i = 0; i < n; ++i)
    b->data()[i] = static_cast<uint8_t>(seq * 31 + i * 7);
  return b;
}

bool matches(const buffer_ptr& got, uint64_t seq) {
  const auto want = payload_for(seq);
  if (!want)
    return got == nullptr;
  return got && got->size() == want->size() && std::memcmp(got->data(), want->data(), want->size()) == 0;
}

header frame_header(msg_type type, uint64_t seq) {
  header h;
  h.type = type;
  h.seq = seq;
  h.offset = seq * 4096;
  return h;
}

using PeerTransport = io_fixture;

TEST_F(PeerTransport, DeliversTheFirstFrameToOnHelloThenFramesInOrderBothWays) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  ASSERT_TRUE(client);
  EXPECT_EQ(client->remote_address(), server.address().substr(6));
  EXPECT_EQ(client->remote_ip(), "127.0.0.1");

  hello_message greeting;
  greeting.resource = "shared";
  greeting.node = "hasta";
  greeting.role = "primary";
  greeting.bitmap = {1, 2, 3};
  auto hello_payload = encode_hello(greeting);
  header hello_header = frame_header(msg_type::hello, 0);
  client->send(hello_header, hello_payload);

  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->first.type, msg_type::hello);
  EXPECT_EQ(hello->first.payload_length, hello_payload->size());
  auto decoded = decode_hello(hello->payload);
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(*decoded, greeting);
  EXPECT_EQ(hello->conn->remote_ip(), "127.0.0.1");

  auto client_inbox = std::make_shared<inbox>();

  auto server_inbox = std::make_shared<inbox>();

  auto& at_client = *client_inbox;

  auto& at_server = *server_inbox;
  client->start(at_client.on_frame(), at_client.on_close(), 5s, 30s);
  hello->conn->start(at_server.on_frame(), at_server.on_close(), 5s, 30s);

  constexpr uint64_t count = 1000;
  // Both directions at once, from two threads.
  std::thread client_sender([&] {
    for (uint64_t i = 1; i <= count; ++i)
      client->send(frame_header(msg_type::write, i), payload_for(i));
  });
  for (uint64_t i = 1; i <= count; ++i)
    hello->conn->send(frame_header(msg_type::done, i), payload_for(i));
  client_sender.join();

  ASSERT_TRUE(at_server.wait_frames(count));
  ASSERT_TRUE(at_client.wait_frames(count));
  for (uint64_t i = 1; i <= count; ++i) {
    const auto& [h, payload] = at_server.frames[i - 1];
    ASSERT_EQ(h.seq, i);
    ASSERT_EQ(h.type, msg_type::write);
    ASSERT_EQ(h.offset, i * 4096);
    ASSERT_TRUE(matches(payload, i)) << "frame " << i << " to the server";
    const auto& [rh, rpayload] = at_client.frames[i - 1];
    ASSERT_EQ(rh.seq, i);
    ASSERT_EQ(rh.type, msg_type::done);
    ASSERT_TRUE(matches(rpayload, i)) << "frame " << i << " to the client";
  }

  // Nothing more was received than was sent (no keepalives within 5 s here
  // would change that: they are counted on both sides alike).
  for (int i = 0; i < 500 && client->queued_bytes() + hello->conn->queued_bytes() > 0; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_EQ(hello->conn->queued_bytes(), 0u);
  EXPECT_GT(client->bytes_sent(), count * header_size);
  EXPECT_EQ(client->bytes_sent(), hello->conn->bytes_received());
  EXPECT_EQ(hello->conn->bytes_sent(), client->bytes_received());

  client->close("test done");
  EXPECT_EQ(at_client.wait_close(), "test done");
  auto reason = at_server.wait_close();
  ASSERT_TRUE(reason);
  EXPECT_EQ(*reason, "the peer closed the connection");
  server.server.stop();
}

TEST_F(PeerTransport, ClosesAPeerSendingGarbageAndKeepsAccepting) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());

  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  std::array<uint8_t, header_size> garbage{};
  garbage.fill('G');
  asio::write(raw, asio::buffer(garbage));
  // The listener closes it: our read ends (EOF or reset), nothing is delivered.
  std::array<uint8_t, 16> sink{};
  std::error_code ec;
  raw.read_some(asio::buffer(sink), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();

  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->first.type, msg_type::hello);
  EXPECT_EQ(server.hellos.size(), 1u);
}

TEST_F(PeerTransport, ClosesAStartedConnectionOnAMalformedFrameWithTheDecodeError) {
  asio::ip::tcp::acceptor raw_acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = raw_acceptor.local_endpoint().port();
  auto [s, client] = connect_to(io, "tcp://127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(s) << s.message();
  tcp::socket raw = raw_acceptor.accept();

  auto client_inbox = std::make_shared<inbox>();

  auto& at_client = *client_inbox;
  client->start(at_client.on_frame(), at_client.on_close(), 5s, 30s);
  auto bytes = encode_header(frame_header(msg_type::keepalive, 0));
  bytes[4] = 9;  // a version we do not speak
  asio::write(raw, asio::buffer(bytes));
  auto reason = at_client.wait_close();
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("protocol version 9 is not supported"), std::string::npos) << *reason;
  EXPECT_TRUE(at_client.frames.empty());
}

TEST_F(PeerTransport, ClosesAConnectionWhoseFirstFrameNeverComes) {
  test_listener server(io, 200ms);
  ASSERT_TRUE(server.server.start());
  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  std::array<uint8_t, 16> sink{};
  std::error_code ec;
  raw.read_some(asio::buffer(sink), ec);  // blocks until the listener gives up
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_TRUE(server.hellos.empty());
}

TEST_F(PeerTransport, KeepalivesKeepAnIdleLinkAlivePastTheTimeout) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);

  auto client_inbox = std::make_shared<inbox>();

  auto server_inbox = std::make_shared<inbox>();

  auto& at_client = *client_inbox;

  auto& at_server = *server_inbox;
  client->start(at_client.on_frame(), at_client.on_close(), 200ms, 600ms);
  hello->conn->start(at_server.on_frame(), at_server.on_close(), 200ms, 600ms);
  // Several timeouts long, with no application traffic at all.
  EXPECT_FALSE(at_client.wait_close(2000ms)) << "the link died although both sides were alive";
  EXPECT_EQ(at_server.close_count(), 0u);
  EXPECT_TRUE(at_server.frames.empty()) << "keepalives must not reach the frame handler";
  EXPECT_GT(client->bytes_received(), 0u);
  client->close("test done");
}

TEST_F(PeerTransport, ASilentPeerIsClosedAfterTheTimeout) {
  asio::ip::tcp::acceptor raw_acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = raw_acceptor.local_endpoint().port();
  auto [s, client] = connect_to(io, "tcp://127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(s) << s.message();
  tcp::socket silent = raw_acceptor.accept();  // never sends a byte

  auto client_inbox = std::make_shared<inbox>();

  auto& at_client = *client_inbox;
  client->start(at_client.on_frame(), at_client.on_close(), 200ms, 600ms);
  auto reason = at_client.wait_close();
  ASSERT_TRUE(reason);
  EXPECT_EQ(*reason, "no traffic for 0.6 s");
  // It did send keepalives meanwhile (the silent side could read them).
  EXPECT_GE(client->bytes_sent(), header_size);
}

TEST_F(PeerTransport, ConnectingToAClosedPortFailsWithAClearStatus) {
  uint16_t port = 0;
  {
    asio::ip::tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  const auto address = "tcp://127.0.0.1:" + std::to_string(port);
  auto [s, client] = connect_to(io, address);
  EXPECT_FALSE(s);
  EXPECT_EQ(client, nullptr);
  EXPECT_EQ(s.code(), errc::disconnected);
  EXPECT_NE(s.message().find(address), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("refused"), std::string::npos) << s.message();
}

TEST_F(PeerTransport, ConnectingToAMalformedAddressIsAnInvalidArgument) {
  auto [s, client] = connect_to(io, "udp://somewhere");
  EXPECT_EQ(s.code(), errc::invalid_argument);
  EXPECT_EQ(client, nullptr);
}

TEST_F(PeerTransport, ConnectBindsTheSourceAddress) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  std::promise<std::pair<status, std::shared_ptr<connection>>> promise;
  connect(io, server.address(), "tcp://127.0.0.1:0", 5s, [&](status s, std::shared_ptr<connection> c) {
    promise.set_value({std::move(s), std::move(c)});
  });
  auto [s, client] = promise.get_future().get();
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->conn->remote_ip(), "127.0.0.1");
}

TEST_F(PeerTransport, CloseWritesWhatWasQueuedBeforeIt) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);

  auto client_inbox = std::make_shared<inbox>();

  auto& at_client = *client_inbox;
  client->start(at_client.on_frame(), at_client.on_close(), 5s, 30s);
  // A refusing hello_reply, then close at once, without ever starting.
  hello_message refusal;
  refusal.resource = "shared";
  refusal.node = "hastb";
  refusal.role = "secondary";
  refusal.refusal = "resource shared is not configured here";
  hello->conn->send(frame_header(msg_type::hello_reply, 0), encode_hello(refusal));
  hello->conn->close("refused");
  ASSERT_TRUE(at_client.wait_frames(1));
  auto decoded = decode_hello(at_client.frames[0].second);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->refusal, refusal.refusal);
  EXPECT_TRUE(at_client.wait_close());
}

TEST_F(PeerTransport, OnCloseRunsExactlyOnceHoweverOftenCloseIsCalled) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  auto client_inbox = std::make_shared<inbox>();
  auto& at_client = *client_inbox;
  client->start(at_client.on_frame(), at_client.on_close(), 5s, 30s);
  std::vector<std::thread> closers;
  for (int i = 0; i < 4; ++i)
    closers.emplace_back([&, i] { client->close("closer " + std::to_string(i)); });
  for (auto& t : closers)
    t.join();
  ASSERT_TRUE(at_client.wait_close());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(at_client.close_count(), 1u);
  client->send(frame_header(msg_type::write, 1), payload_for(1));  // ignored, no crash
}

TEST_F(PeerTransport, ReleasingTheLastReferenceClosesTheConnection) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  auto client_inbox = std::make_shared<inbox>();
  auto server_inbox = std::make_shared<inbox>();
  auto& at_client = *client_inbox;
  auto& at_server = *server_inbox;
  hello->conn->start(at_server.on_frame(), at_server.on_close(), 5s, 30s);
  client->start(at_client.on_frame(), at_client.on_close(), 5s, 30s);
  client.reset();
  EXPECT_EQ(at_client.wait_close(), "the connection object was released");
  EXPECT_EQ(at_server.wait_close(), "the peer closed the connection");
}

TEST_F(PeerTransport, ListeningTwiceOnOnePortNamesTheAddress) {
  test_listener first(io);
  ASSERT_TRUE(first.server.start());
  listener second(io, {first.address()}, [](auto, const header&, buffer_ptr) {});
  const auto s = second.start();
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find(first.address()), std::string::npos) << s.message();
}

TEST_F(PeerTransport, ListensOnIpv4AndIpv6WhereTheMachineHasThem) {
  listener both(io, {"tcp4://127.0.0.1:0", "tcp6://[::1]:0"}, [](auto, const header&, buffer_ptr) {});
  const auto s = both.start();
  ASSERT_TRUE(s) << s.message();
  const auto bound = both.local_addresses();
  ASSERT_GE(bound.size(), 1u);
  EXPECT_EQ(bound[0].rfind("tcp://127.0.0.1:", 0), 0u) << bound[0];
  if (bound.size() == 2) {
    EXPECT_EQ(bound[1].rfind("tcp://[::1]:", 0), 0u) << bound[1];
  }
}

} // namespace
} // namespace hast::peer
