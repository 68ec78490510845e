// The peer transport over 127.0.0.1: listener and connect, framing in both
// directions, batching of received frames and gathering of sent ones,
// garbage and silent peers, keepalives, connect failures. Raw Asio sockets
// play misbehaving peers and control how bytes are cut into writes.
// Timeouts here are generous upper bounds for waiting; the tests assert on
// behaviour, never on timing.

#include "io/net/asio.hpp"
#include "io/net/peer_transport.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <new>
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
  std::vector<frame> frames;             // every batch, concatenated
  std::vector<std::size_t> batch_sizes;  // one entry per handler call
  std::vector<std::string> closes;
  std::size_t frames_at_first_close = 0;

  frames_handler on_frames() {
    return [self = shared_from_this()](std::vector<frame> batch) {
      std::lock_guard lock(self->mutex);
      self->batch_sizes.push_back(batch.size());
      for (auto& f : batch)
        self->frames.push_back(std::move(f));
      self->cv.notify_all();
    };
  }
  close_handler on_close() {
    return [self = shared_from_this()](const std::string& reason) {
      std::lock_guard lock(self->mutex);
      if (self->closes.empty())
        self->frames_at_first_close = self->frames.size();
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

  test_listener(asio::io_context& io, std::chrono::milliseconds first_frame_timeout = 10s,
                admission rules = {})
      : server(io, {"tcp://127.0.0.1:0"},
               [this](std::shared_ptr<connection> conn, const header& h, buffer_ptr payload) {
                 std::lock_guard lock(mutex);
                 hellos.push_back({std::move(conn), h, std::move(payload)});
                 cv.notify_all();
               },
               first_frame_timeout, std::move(rules)) {}

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

/// A payload of `n` bytes whose content depends on seq and position
/// (nullptr for 0, as the transport delivers an empty payload).
buffer_ptr patterned(std::size_t n, uint64_t seq) {
  if (n == 0)
    return nullptr;
  auto b = make_buffer(n);
  for (std::size_t i = 0; i < n; ++i)
    b->data()[i] = static_cast<uint8_t>(seq * 131 + i * 7 + i / 251);
  return b;
}

bool same_bytes(const buffer_ptr& got, const buffer_ptr& want) {
  if (!want)
    return got == nullptr;
  return got && got->size() == want->size() &&
         std::memcmp(got->data(), want->data(), want->size()) == 0;
}

/// The wire bytes of one frame as a peer writes them, appended to `out`.
void append_wire(std::vector<uint8_t>& out, header h, const buffer_ptr& payload) {
  h.payload_length = payload ? static_cast<uint32_t>(payload->size()) : 0;
  const auto head = encode_header(h);
  out.insert(out.end(), head.begin(), head.end());
  if (payload)
    out.insert(out.end(), payload->data(), payload->data() + payload->size());
}

/// A connection made by connect() whose other end is a raw socket, which
/// the test writes to in exactly the pieces it wants.
struct raw_peer {
  explicit raw_peer(asio::io_context& io)
      : acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), raw(io) {
    const auto port = acceptor.local_endpoint().port();
    auto [s, c] = connect_to(io, "tcp://127.0.0.1:" + std::to_string(port));
    connected = s;
    conn = std::move(c);
    if (conn)
      raw = acceptor.accept();
  }

  tcp::acceptor acceptor;
  tcp::socket raw;
  status connected;
  std::shared_ptr<connection> conn;
};

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
  client->start(at_client.on_frames(), at_client.on_close(), 5s, 30s);
  hello->conn->start(at_server.on_frames(), at_server.on_close(), 5s, 30s);

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
  client->start(at_client.on_frames(), at_client.on_close(), 5s, 30s);
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
  client->start(at_client.on_frames(), at_client.on_close(), 200ms, 600ms);
  hello->conn->start(at_server.on_frames(), at_server.on_close(), 200ms, 600ms);
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
  client->start(at_client.on_frames(), at_client.on_close(), 200ms, 600ms);
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
  client->start(at_client.on_frames(), at_client.on_close(), 5s, 30s);
  // A refusing hello_reply, then close at once, without ever starting.
  hello_message refusal;
  refusal.resource = "shared";
  refusal.node = "hastb";
  refusal.role = "secondary";
  refusal.refusal = "resource shared is not configured here";
  hello->conn->send(frame_header(msg_type::hello_reply, 0), encode_hello(refusal));
  hello->conn->close("refused");
  ASSERT_TRUE(at_client.wait_frames(1));
  auto decoded = decode_hello(at_client.frames[0].payload);
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
  client->start(at_client.on_frames(), at_client.on_close(), 5s, 30s);
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
  hello->conn->start(at_server.on_frames(), at_server.on_close(), 5s, 30s);
  client->start(at_client.on_frames(), at_client.on_close(), 5s, 30s);
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

TEST_F(PeerTransport, FramesWrittenInOneWriteArriveAsOneBatchInOrder) {
  raw_peer peer(io);
  ASSERT_TRUE(peer.connected) << peer.connected.message();
  auto box = std::make_shared<inbox>();
  peer.conn->start(box->on_frames(), box->on_close(), 5s, 30s);

  // Ten acknowledgements, every third with a small payload, and a
  // keepalive among them, all in one write: one TCP segment on loopback,
  // so one read sees all of it.
  std::vector<uint8_t> bytes;
  auto ack_payload = [](uint64_t seq) { return patterned(seq % 3 == 0 ? 100 + seq : 0, seq); };
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    append_wire(bytes, frame_header(msg_type::done, seq), ack_payload(seq));
    if (seq == 5)
      append_wire(bytes, frame_header(msg_type::keepalive, 0), nullptr);
  }
  asio::write(peer.raw, asio::buffer(bytes));

  ASSERT_TRUE(box->wait_frames(10));
  std::lock_guard lock(box->mutex);
  EXPECT_EQ(box->batch_sizes, std::vector<std::size_t>{10}) << "one read, one handler call";
  ASSERT_EQ(box->frames.size(), 10u) << "the keepalive must not be delivered";
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    const auto& f = box->frames[seq - 1];
    EXPECT_EQ(f.h.seq, seq);
    EXPECT_EQ(f.h.type, msg_type::done);
    EXPECT_TRUE(same_bytes(f.payload, ack_payload(seq))) << "frame " << seq;
  }
}

TEST_F(PeerTransport, AOneMebibytePayloadSentInSlowPiecesArrivesIntact) {
  raw_peer peer(io);
  ASSERT_TRUE(peer.connected) << peer.connected.message();
  auto box = std::make_shared<inbox>();
  peer.conn->start(box->on_frames(), box->on_close(), 5s, 30s);

  const auto big = patterned(1u << 20, 1);
  std::vector<uint8_t> bytes;
  append_wire(bytes, frame_header(msg_type::write, 1), big);
  // A frame right behind the large one, in the same write as its last
  // piece: parsing goes on after the payload.
  append_wire(bytes, frame_header(msg_type::flush, 2), nullptr);
  // The header with a little payload first, then the rest in 64 KiB pieces
  // with pauses, so that the receiver sees the payload cut into many reads.
  std::size_t written = 0;
  auto write_piece = [&](std::size_t n) {
    n = std::min(n, bytes.size() - written);
    asio::write(peer.raw, asio::buffer(bytes.data() + written, n));
    written += n;
  };
  write_piece(header_size + 1000);
  while (written < bytes.size()) {
    std::this_thread::sleep_for(2ms);
    write_piece(64u << 10);
  }

  ASSERT_TRUE(box->wait_frames(2));
  std::lock_guard lock(box->mutex);
  ASSERT_EQ(box->frames.size(), 2u);
  EXPECT_EQ(box->frames[0].h.type, msg_type::write);
  EXPECT_EQ(box->frames[0].h.payload_length, big->size());
  EXPECT_TRUE(same_bytes(box->frames[0].payload, big)) << "the large payload arrived damaged";
  EXPECT_EQ(box->frames[1].h.type, msg_type::flush);
  EXPECT_EQ(box->frames[1].h.seq, 2u);
  EXPECT_EQ(box->frames[1].payload, nullptr);
  EXPECT_EQ(peer.conn->bytes_received(), bytes.size());
  EXPECT_TRUE(box->closes.empty());
}

TEST_F(PeerTransport, ACorruptFrameAfterTwoGoodOnesInOneWriteDeliversThemThenCloses) {
  raw_peer peer(io);
  ASSERT_TRUE(peer.connected) << peer.connected.message();
  auto box = std::make_shared<inbox>();
  peer.conn->start(box->on_frames(), box->on_close(), 5s, 30s);

  std::vector<uint8_t> bytes;
  append_wire(bytes, frame_header(msg_type::done, 1), nullptr);
  append_wire(bytes, frame_header(msg_type::read_reply, 2), patterned(3000, 2));
  const std::size_t corrupt_at = bytes.size();
  append_wire(bytes, frame_header(msg_type::done, 3), nullptr);
  bytes[corrupt_at + 20] ^= 0x40;  // inside `offset`: the header checksum no longer matches
  append_wire(bytes, frame_header(msg_type::done, 4), nullptr);  // never reached
  asio::write(peer.raw, asio::buffer(bytes));

  auto reason = box->wait_close();
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("bad header checksum"), std::string::npos) << *reason;
  std::lock_guard lock(box->mutex);
  EXPECT_EQ(box->frames_at_first_close, 2u) << "the good frames come before the close";
  ASSERT_EQ(box->frames.size(), 2u);
  EXPECT_EQ(box->frames[0].h.seq, 1u);
  EXPECT_EQ(box->frames[1].h.seq, 2u);
  EXPECT_TRUE(same_bytes(box->frames[1].payload, patterned(3000, 2)));
  EXPECT_EQ(box->closes.size(), 1u);
}

TEST_F(PeerTransport, BytesThatFollowedTheFirstFrameInItsWriteReachTheHandlerAfterStart) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));

  hello_message greeting;
  greeting.resource = "shared";
  greeting.node = "hasta";
  greeting.role = "primary";
  const auto hello_payload = encode_hello(greeting);
  const auto third = patterned(5000, 3);
  std::vector<uint8_t> bytes;
  append_wire(bytes, frame_header(msg_type::hello, 0), hello_payload);
  append_wire(bytes, frame_header(msg_type::write, 1), patterned(700, 1));
  append_wire(bytes, frame_header(msg_type::keepalive, 0), nullptr);
  append_wire(bytes, frame_header(msg_type::flush, 2), nullptr);
  std::vector<uint8_t> third_wire;
  append_wire(third_wire, frame_header(msg_type::write, 3), third);
  // The same write ends 30 bytes into the third frame's header.
  bytes.insert(bytes.end(), third_wire.begin(), third_wire.begin() + 30);
  asio::write(raw, asio::buffer(bytes));

  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->first.type, msg_type::hello);
  EXPECT_TRUE(same_bytes(hello->payload, hello_payload));
  // The listener's one read took in everything behind the hello too: those
  // bytes now live in the connection, not in the kernel.
  EXPECT_EQ(hello->conn->bytes_received(), bytes.size());
  auto box = std::make_shared<inbox>();
  hello->conn->start(box->on_frames(), box->on_close(), 5s, 30s);
  ASSERT_TRUE(box->wait_frames(2));
  asio::write(raw, asio::buffer(third_wire.data() + 30, third_wire.size() - 30));
  ASSERT_TRUE(box->wait_frames(3));

  std::lock_guard lock(box->mutex);
  ASSERT_EQ(box->frames.size(), 3u);
  EXPECT_EQ(box->batch_sizes.front(), 2u) << "the carried frames come as one batch";
  EXPECT_EQ(box->frames[0].h.seq, 1u);
  EXPECT_TRUE(same_bytes(box->frames[0].payload, patterned(700, 1)));
  EXPECT_EQ(box->frames[1].h.type, msg_type::flush);
  EXPECT_EQ(box->frames[2].h.seq, 3u);
  EXPECT_TRUE(same_bytes(box->frames[2].payload, third));
  EXPECT_TRUE(box->closes.empty());
}

/// Payload sizes across every path of the receiver: none (acknowledgements),
/// small, a block, around the size kept in the receive buffer when cut off,
/// and now and then larger than the whole receive buffer.
std::size_t mixed_size(uint64_t seq) {
  switch (seq % 8) {
    case 4: return 1 + seq % 512;
    case 5: return 4096;
    case 6: return (16u << 10) - 500 + seq % 1000;
    case 7: return seq % 64 == 7 ? (300u << 10) + seq : 20000 + seq % 1000;
    default: return 0;
  }
}

TEST_F(PeerTransport, TenThousandFramesOfMixedSizesArriveInOrder) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  auto box = std::make_shared<inbox>();
  hello->conn->start(box->on_frames(), box->on_close(), 5s, 30s);

  constexpr uint64_t count = 10000;
  for (uint64_t seq = 1; seq <= count; ++seq)
    client->send(frame_header(seq % 8 == 0 ? msg_type::done : msg_type::write, seq),
                 patterned(mixed_size(seq), seq));

  ASSERT_TRUE(box->wait_frames(count));
  std::lock_guard lock(box->mutex);
  ASSERT_EQ(box->frames.size(), count);
  for (uint64_t seq = 1; seq <= count; ++seq) {
    const auto& f = box->frames[seq - 1];
    ASSERT_EQ(f.h.seq, seq);
    ASSERT_EQ(f.h.payload_length, mixed_size(seq));
    ASSERT_TRUE(same_bytes(f.payload, patterned(mixed_size(seq), seq))) << "frame " << seq;
  }
  for (const auto n : box->batch_sizes)
    ASSERT_GT(n, 0u) << "the handler is never called with an empty batch";
  EXPECT_TRUE(box->closes.empty());
  EXPECT_EQ(client->bytes_sent(), hello->conn->bytes_received());
}

TEST_F(PeerTransport, SendsQueuedTogetherGoOutInOneGatheredWrite) {
  tcp::acceptor raw_acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  // The sender's own io_context, run only when the test says so: the sends
  // below all queue up before the writer gets to run.
  asio::io_context sender_io;
  std::optional<std::pair<status, std::shared_ptr<connection>>> made;
  const auto port = raw_acceptor.local_endpoint().port();
  connect(sender_io, "tcp://127.0.0.1:" + std::to_string(port), "", 5s,
          [&](status st, std::shared_ptr<connection> c) {
            made.emplace(std::move(st), std::move(c));
          });
  const auto give_up = std::chrono::steady_clock::now() + patience;
  while (!made && std::chrono::steady_clock::now() < give_up)
    sender_io.run_one_for(100ms);
  ASSERT_TRUE(made);
  ASSERT_TRUE(made->first) << made->first.message();
  auto client = made->second;
  tcp::socket raw = raw_acceptor.accept();

  // 100 frames with payloads are 200 iovecs: more than Asio gathers into
  // one syscall (64), well within IOV_MAX, and under the 16 KiB initial
  // send buffer so that the kernel takes all of it at once.
  constexpr uint64_t count = 100;
  constexpr std::size_t payload_size = 16;
  for (uint64_t seq = 1; seq <= count; ++seq)
    client->send(frame_header(msg_type::done, seq), patterned(payload_size, seq));
  EXPECT_EQ(client->write_calls(), 0u);
  sender_io.restart();
  while (client->queued_bytes() > 0 && std::chrono::steady_clock::now() < give_up)
    sender_io.run_one_for(100ms);

  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_EQ(client->write_calls(), 1u);
  const std::size_t total = count * (header_size + payload_size);
  EXPECT_EQ(client->bytes_sent(), total);
  std::vector<uint8_t> got(total);
  asio::read(raw, asio::buffer(got));
  for (uint64_t seq = 1; seq <= count; ++seq) {
    const uint8_t* at = got.data() + (seq - 1) * (header_size + payload_size);
    auto h = decode_header(std::span<const uint8_t, header_size>(at, header_size));
    ASSERT_TRUE(h) << h.error().message();
    ASSERT_EQ(h->seq, seq);
    ASSERT_EQ(std::memcmp(at + header_size, patterned(payload_size, seq)->data(), payload_size), 0);
  }
  client.reset();
  made.reset();
  sender_io.restart();
  sender_io.run_for(1s);
}

/// A second io_context run by one thread (a resource's data thread).
struct other_context {
  other_context() : guard(asio::make_work_guard(io)), thread([this] { io.run(); }) {}
  ~other_context() {
    guard.reset();
    io.stop();
    thread.join();
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard;
  std::thread thread;
};

/// The threads a connection's handlers ran on, one entry per call.
// Shared, as inbox: a connection may call its handlers after the test body returned.
struct handler_threads : std::enable_shared_from_this<handler_threads> {
  std::mutex mutex;
  std::vector<std::thread::id> frames;
  std::vector<std::thread::id> closes;

  frames_handler wrap(frames_handler inner) {
    return [self = shared_from_this(), inner = std::move(inner)](std::vector<frame> batch) {
      {
        std::lock_guard lock(self->mutex);
        self->frames.push_back(std::this_thread::get_id());
      }
      inner(std::move(batch));
    };
  }
  close_handler wrap(close_handler inner) {
    return [self = shared_from_this(), inner = std::move(inner)](const std::string& reason) {
      {
        std::lock_guard lock(self->mutex);
        self->closes.push_back(std::this_thread::get_id());
      }
      inner(reason);
    };
  }
};

TEST_F(PeerTransport, ARehomedConnectionIsServedByTheOtherContextFromTheFrameBehindTheFirst) {
  other_context home;
  auto box = std::make_shared<inbox>();
  auto threads = std::make_shared<handler_threads>();
  std::promise<std::pair<std::shared_ptr<connection>, uint64_t>> handed;
  listener server(io, {"tcp://127.0.0.1:0"},
                  [&](std::shared_ptr<connection> conn, const header& h, buffer_ptr) {
                    EXPECT_EQ(h.type, msg_type::hello);
                    auto moved = conn->rehome(home.io);
                    const auto carried = moved->bytes_received();
                    // The spent object closes nothing, now or when released.
                    conn->close("the spent object was closed");
                    conn.reset();
                    moved->start(threads->wrap(box->on_frames()), threads->wrap(box->on_close()),
                                 5s, 30s);
                    handed.set_value({moved, carried});
                  });
  ASSERT_TRUE(server.start());
  const auto address = server.local_addresses().at(0);
  const auto port = static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));

  // The first frame and the second in one write: the listener's read takes
  // in both, and the second has to come along to the other context.
  std::vector<uint8_t> first_write;
  append_wire(first_write, frame_header(msg_type::hello, 0), patterned(200, 0));
  append_wire(first_write, frame_header(msg_type::write, 1), patterned(700, 1));
  asio::write(raw, asio::buffer(first_write));
  auto future = handed.get_future();
  ASSERT_EQ(future.wait_for(patience), std::future_status::ready);
  auto [conn, carried] = future.get();
  EXPECT_EQ(carried, first_write.size()) << "the second frame was not read with the first";

  // Later frames: some in one write, the rest one write each.
  constexpr uint64_t count = 40;
  std::vector<uint8_t> burst;
  for (uint64_t seq = 2; seq <= 20; ++seq)
    append_wire(burst, frame_header(msg_type::write, seq), patterned(mixed_size(seq), seq));
  asio::write(raw, asio::buffer(burst));
  for (uint64_t seq = 21; seq <= count; ++seq) {
    std::vector<uint8_t> one;
    append_wire(one, frame_header(msg_type::write, seq), patterned(mixed_size(seq), seq));
    asio::write(raw, asio::buffer(one));
  }
  ASSERT_TRUE(box->wait_frames(count));
  {
    std::lock_guard lock(box->mutex);
    ASSERT_EQ(box->frames.size(), count);
    EXPECT_TRUE(same_bytes(box->frames[0].payload, patterned(700, 1)));
    for (uint64_t seq = 1; seq <= count; ++seq)
      ASSERT_EQ(box->frames[seq - 1].h.seq, seq) << "frame " << seq << " out of order";
    for (uint64_t seq = 2; seq <= count; ++seq)
      ASSERT_TRUE(same_bytes(box->frames[seq - 1].payload, patterned(mixed_size(seq), seq)))
          << "frame " << seq;
    EXPECT_TRUE(box->closes.empty()) << box->closes.front();
  }
  {
    std::lock_guard lock(threads->mutex);
    ASSERT_FALSE(threads->frames.empty());
    for (auto id : threads->frames)
      EXPECT_EQ(id, home.thread.get_id()) << "frames delivered off the other context";
  }

  // A frame sent from the rehomed connection reaches the client.
  const auto reply = patterned(300, 77);
  conn->send(frame_header(msg_type::hello_reply, 77), reply);
  std::vector<uint8_t> got(header_size + reply->size());
  asio::read(raw, asio::buffer(got));
  auto h = decode_header(std::span<const uint8_t, header_size>(got.data(), header_size));
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(h->type, msg_type::hello_reply);
  EXPECT_EQ(h->seq, 77u);
  EXPECT_EQ(std::memcmp(got.data() + header_size, reply->data(), reply->size()), 0);

  conn->close("test done");
  EXPECT_EQ(box->wait_close(), "test done");
  std::array<uint8_t, 16> sink{};
  std::error_code ec;
  raw.read_some(asio::buffer(sink), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(box->close_count(), 1u);
  std::lock_guard lock(threads->mutex);
  ASSERT_EQ(threads->closes.size(), 1u);
  EXPECT_EQ(threads->closes[0], home.thread.get_id());
}

// --- Sessions and what a stranger gets before proving anything ----------------------------

session_params session_of(const std::string& key) {
  return {std::vector<uint8_t>(key.begin(), key.end()), "r0", "node", "peer", true,
          aead_cipher::aes_256_gcm};
}

/// Reads whether the other end closed `raw` within `limit` (EOF or reset).
bool closed_by_peer(tcp::socket& raw) {
  std::array<uint8_t, 4096> sink{};
  std::error_code ec;
  for (;;) {
    raw.read_some(asio::buffer(sink), ec);
    if (ec)
      return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
}

TEST_F(PeerTransport, ASessionSealsFramesBothWaysAfterBothSidesProvedTheKey) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  std::promise<status> client_done;
  client->open_session(session_of("the shared key!!"), 5s,
                       [&](status st) { client_done.set_value(std::move(st)); });
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  ASSERT_EQ(hello->first.type, msg_type::session_open);
  std::promise<std::tuple<status, header, buffer_ptr>> server_done;
  hello->conn->accept_session(session_of("the shared key!!"), hello->payload,
                              [&](status st, const header& h, buffer_ptr p) {
                                server_done.set_value({std::move(st), h, std::move(p)});
                              });
  auto client_future = client_done.get_future();
  ASSERT_EQ(client_future.wait_for(patience), std::future_status::ready);
  const auto cs = client_future.get();
  ASSERT_TRUE(cs) << cs.message();
  EXPECT_TRUE(client->authenticated());
  // The first sealed frame reaches accept_session's callback.
  client->send(frame_header(msg_type::hello, 0), payload_for(5));
  auto server_future = server_done.get_future();
  ASSERT_EQ(server_future.wait_for(patience), std::future_status::ready);
  auto [ss, first, first_payload] = server_future.get();
  ASSERT_TRUE(ss) << ss.message();
  EXPECT_EQ(first.type, msg_type::hello);
  EXPECT_EQ(first.payload_length, payload_for(5)->size());  // the tag is not the caller's
  EXPECT_TRUE(matches(first_payload, 5));
  EXPECT_TRUE(hello->conn->authenticated());

  auto at_server = std::make_shared<inbox>();
  auto at_client = std::make_shared<inbox>();
  hello->conn->start(at_server->on_frames(), at_server->on_close(), 5s, 30s);
  client->start(at_client->on_frames(), at_client->on_close(), 5s, 30s);
  for (uint64_t seq = 1; seq <= 200; ++seq)
    client->send(frame_header(msg_type::write, seq), payload_for(seq));
  // One frame of a mebibyte and more: read into its own buffer, opened in place.
  client->send(frame_header(msg_type::write, 201), patterned(3u << 20, 201));
  for (uint64_t seq = 1; seq <= 50; ++seq)
    hello->conn->send(frame_header(msg_type::done, seq), payload_for(seq));
  ASSERT_TRUE(at_server->wait_frames(201));
  ASSERT_TRUE(at_client->wait_frames(50));
  for (uint64_t seq = 1; seq <= 200; ++seq) {
    EXPECT_EQ(at_server->frames[seq - 1].h.seq, seq);
    EXPECT_TRUE(matches(at_server->frames[seq - 1].payload, seq)) << seq;
  }
  EXPECT_TRUE(same_bytes(at_server->frames[200].payload, patterned(3u << 20, 201)));
  for (uint64_t seq = 1; seq <= 50; ++seq)
    EXPECT_TRUE(matches(at_client->frames[seq - 1].payload, seq)) << seq;
  EXPECT_EQ(at_server->close_count(), 0u);
}

TEST_F(PeerTransport, AWrongKeyNeverCompletesTheHandshakeOnEitherSide) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  std::promise<status> client_done;
  client->open_session(session_of("the shared key!!"), 5s,
                       [&](status st) { client_done.set_value(std::move(st)); });
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  std::promise<status> server_done;
  hello->conn->accept_session(session_of("another key....."), hello->payload,
                              [&](status st, const header&, buffer_ptr) {
                                server_done.set_value(std::move(st));
                              });
  auto c = client_done.get_future();
  auto v = server_done.get_future();
  ASSERT_EQ(c.wait_for(patience), std::future_status::ready);
  ASSERT_EQ(v.wait_for(patience), std::future_status::ready);
  const auto cs = c.get();
  EXPECT_FALSE(cs);
  EXPECT_NE(cs.message().find("does not know the shared key"), std::string::npos) << cs.message();
  EXPECT_FALSE(v.get());
  EXPECT_FALSE(client->authenticated());
  EXPECT_FALSE(hello->conn->authenticated());
}

TEST_F(PeerTransport, AHandshakeWhoseFirstWriteFailsStillAnswers) {
  // The other end resets the connection before session_open is written
  // (a relay that cuts every new connection): the write fails first, and
  // the handshake must still report it rather than wait for ever (the
  // link's owner would never dial again).
  raw_peer peer(io);
  ASSERT_TRUE(peer.connected) << peer.connected.message();
  peer.raw.set_option(asio::socket_base::linger(true, 0));
  peer.raw.close();
  std::promise<status> done;
  peer.conn->open_session(session_of("the shared key!!"), 30s,
                          [&](status st) { done.set_value(std::move(st)); });
  auto answer = done.get_future();
  ASSERT_EQ(answer.wait_for(patience), std::future_status::ready)
    << "the handshake never answered after its connection was reset";
  const auto st = answer.get();
  EXPECT_FALSE(st);
  EXPECT_NE(st.message().find("closed during authentication"), std::string::npos) << st.message();
  EXPECT_FALSE(peer.conn->authenticated());
}

/// The client side of a session over a raw socket, so that a test can send
/// exactly the sealed bytes it wants.
struct raw_session {
  /// Connects and sends session_open.
  raw_session(asio::io_context& io, uint16_t port, const std::string& key)
      : raw(io), hs(session_of(key)) {
    raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    std::vector<uint8_t> out;
    append_wire(out, frame_header(msg_type::session_open, 0), hs.open_payload());
    asio::write(raw, asio::buffer(out));
  }

  /// Reads session_accept, sends the proof.
  void finish() {
    std::vector<uint8_t> out;
    std::array<uint8_t, header_size> head{};
    asio::read(raw, asio::buffer(head));
    auto h = decode_header(head);
    EXPECT_TRUE(h);
    auto accept = make_buffer(h->payload_length);
    asio::read(raw, asio::buffer(accept->data(), accept->size()));
    auto proof = hs.on_accept(accept, ciphers);
    EXPECT_TRUE(proof);
    out.clear();
    append_wire(out, frame_header(msg_type::session_proof, 0), *proof);
    asio::write(raw, asio::buffer(out));
  }

  /// One sealed frame's wire bytes; `flip` >= 0 flips that payload byte after sealing.
  std::vector<uint8_t> sealed(header h, const buffer_ptr& payload, int flip = -1) {
    const std::size_t n = payload ? payload->size() : 0;
    h.payload_length = static_cast<uint32_t>(n + tag_size);
    const auto head = encode_header(h);
    std::vector<uint8_t> out(head.begin(), head.end());
    out.resize(header_size + n + tag_size);
    std::array<uint8_t, tag_size> tag{};
    EXPECT_TRUE(ciphers.sealer->seal(head, payload ? payload->data() : nullptr,
                                     out.data() + header_size, n, tag));
    std::memcpy(out.data() + header_size + n, tag.data(), tag_size);
    if (flip >= 0)
      out[header_size + static_cast<std::size_t>(flip)] ^= 1;
    return out;
  }

  tcp::socket raw;
  client_handshake hs;
  session_ciphers ciphers;
};

TEST_F(PeerTransport, AnAlteredSealedFrameEndsTheLinkAndIsNeverDelivered) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  raw_session r(io, server.port(), "the shared key!!");
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  std::promise<status> server_done;
  hello->conn->accept_session(session_of("the shared key!!"), hello->payload,
                              [&](status st, const header&, buffer_ptr) {
                                server_done.set_value(std::move(st));
                              });
  r.finish();
  std::vector<uint8_t> bytes = r.sealed(frame_header(msg_type::hello, 0), payload_for(3));
  auto good = r.sealed(frame_header(msg_type::write, 1), payload_for(1));
  auto bad = r.sealed(frame_header(msg_type::write, 2), payload_for(2), 100);
  auto after = r.sealed(frame_header(msg_type::write, 3), payload_for(3));
  bytes.insert(bytes.end(), good.begin(), good.end());
  bytes.insert(bytes.end(), bad.begin(), bad.end());
  bytes.insert(bytes.end(), after.begin(), after.end());
  asio::write(r.raw, asio::buffer(bytes));
  auto v = server_done.get_future();
  ASSERT_EQ(v.wait_for(patience), std::future_status::ready);
  ASSERT_TRUE(v.get());
  auto at_server = std::make_shared<inbox>();
  hello->conn->start(at_server->on_frames(), at_server->on_close(), 5s, 30s);
  auto reason = at_server->wait_close();
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("fails authentication"), std::string::npos) << *reason;
  // The frame before it arrived; neither the altered one nor any after it.
  ASSERT_EQ(at_server->frames_at_first_close, 1u);
  EXPECT_EQ(at_server->frames[0].h.seq, 1u);
  EXPECT_TRUE(matches(at_server->frames[0].payload, 1));
}

TEST_F(PeerTransport, AFirstFrameClaimingMoreThanTheUnauthenticatedLimitIsClosedAtItsHeader) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  header h = frame_header(msg_type::session_open, 0);
  h.payload_length = 64u << 20;
  const auto head = encode_header(h);
  asio::write(raw, asio::buffer(head));
  EXPECT_TRUE(closed_by_peer(raw));
  EXPECT_TRUE(server.hellos.empty());
}

TEST_F(PeerTransport, TheListenerReadsNothingFromAnAddressItsRulesRefuse) {
  admission rules;
  rules.allowed = [](const std::string& ip) { return ip != "127.0.0.1"; };
  test_listener server(io, 10s, rules);
  ASSERT_TRUE(server.server.start());
  tcp::socket raw(io);
  raw.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  std::vector<uint8_t> out;
  append_wire(out, frame_header(msg_type::hello, 0), payload_for(3));
  std::error_code ignored;
  asio::write(raw, asio::buffer(out), ignored);
  EXPECT_TRUE(closed_by_peer(raw));
  EXPECT_TRUE(server.hellos.empty());
}

TEST_F(PeerTransport, PendingConnectionsAreCappedPerAddressAndFreedByClosing) {
  admission rules;
  rules.max_pending_per_address = 2;
  test_listener server(io, 10s, rules);
  ASSERT_TRUE(server.server.start());
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 2; ++i) {
    idle.emplace_back(io);
    idle.back().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  }
  // The third is over the cap: closed at once, without reading.
  tcp::socket third(io);
  third.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  EXPECT_TRUE(closed_by_peer(third));
  // One pending connection goes: its slot is free again.
  idle.front().close();
  for (int attempt = 0;; ++attempt) {
    auto [s, client] = connect_to(io, server.address());
    ASSERT_TRUE(s) << s.message();
    client->send(frame_header(msg_type::hello, 0), nullptr);
    if (server.next_hello())
      break;
    ASSERT_LT(attempt, 20) << "the slot of a closed connection was never freed";
  }
}

TEST_F(PeerTransport, AnExceptionInAHandlerCostsTheConnectionNotTheIoThread) {
  test_listener server(io);
  ASSERT_TRUE(server.server.start());
  auto [s, client] = connect_to(io, server.address());
  ASSERT_TRUE(s) << s.message();
  client->send(frame_header(msg_type::hello, 0), nullptr);
  auto hello = server.next_hello();
  ASSERT_TRUE(hello);
  auto closes = std::make_shared<inbox>();
  // A frames handler that runs out of memory, as a payload allocation might.
  hello->conn->start([](std::vector<frame>) { throw std::bad_alloc(); }, closes->on_close(), 5s,
                     30s);
  client->send(frame_header(msg_type::write, 1), payload_for(1));
  auto reason = closes->wait_close();
  ASSERT_TRUE(reason);
  EXPECT_NE(reason->find("internal error"), std::string::npos) << *reason;
  // The same io threads go on serving other connections.
  auto [s2, other] = connect_to(io, server.address());
  ASSERT_TRUE(s2) << s2.message();
  other->send(frame_header(msg_type::hello, 0), nullptr);
  EXPECT_TRUE(server.next_hello());
}

} // namespace
} // namespace hast::peer
