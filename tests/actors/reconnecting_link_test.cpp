// The dialing link that the peer (primary side) and the witness link share
// (actors/reconnecting_link.hpp), driven through a real TCP listener on
// loopback with the session handshake: it redials after the other end
// closes, waits the redial interval between attempts while nothing listens,
// and hands over no link whose handshake failed. The actor runs on CAF's
// test coordinator, whose clock is simulated: the interval is observed by
// advancing that clock, never by waiting. Asio runs on the test thread
// (polled), so the socket callbacks and the actor never race. The one wait
// on the wall clock: the other end is a real socket whose bytes the kernel
// moves, so when nothing is ready the test's thread blocks in Asio until a
// socket is (pump).

#include "actors/reconnecting_link.hpp"
#include "io/net/asio.hpp"
#include "io/net/peer_transport.hpp"
#include "tests/actors/deterministic.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace hast {
namespace {

using namespace std::chrono_literals;

/// The messages every link-owning actor has, and nothing else.
using probe_actor = caf::typed_actor<caf::reacts_to<atom::connect>,
                                     caf::reacts_to<atom::peer_connected, uint64_t, status, peer_link_ptr>,
                                     caf::reacts_to<atom::peer_frame, peer_frames>,
                                     caf::reacts_to<atom::peer_closed, uint64_t, std::string>>;

/// What the probe saw; written by the probe on the test thread.
struct probe_log {
  int dials = 0;     // dials started
  int failures = 0;  // dials that ended without a link
  int links = 0;     // links handed over (authenticated)
  int losses = 0;    // current links that closed
  std::string last_error;
};

const std::string shared_key = "the shared key!!";

peer::session_params session_with(const std::string& key) {
  return {{key.begin(), key.end()}, "r", "nodeA", "peer", true, peer::preferred_cipher()};
}

struct probe_state {
  reconnecting_link<probe_actor> line;
  std::shared_ptr<probe_log> log;
  static inline const char* name = "test.link_probe";
};

/// A link owner reduced to the link: dials at once, says hello on every new
/// link (the listening side hands a connection over after its first sealed
/// frame), counts what happens.
probe_actor::behavior_type probe(probe_actor::stateful_pointer<probe_state> self,
                                 link_connector connect, std::shared_ptr<probe_log> log) {
  self->state.log = log;
  self->state.line = reconnecting_link<probe_actor>(std::move(connect), session_with(shared_key),
                                                    std::chrono::seconds(5), peer_redial_interval);
  self->set_exit_handler([=](const caf::exit_msg& msg) {
    self->state.line.close("probe stopped");
    self->quit(msg.reason);
  });
  self->send(self, atom::connect_v);
  return {
    [=](atom::connect) {
      if (self->state.line.dial(self))
        ++self->state.log->dials;
    },
    [=](atom::peer_connected, uint64_t, status& st, peer_link_ptr& link) {
      auto& s = self->state;
      auto dialed = s.line.dialed(self, std::move(st), std::move(link));
      if (!dialed) {
        ++s.log->failures;
        s.log->last_error = dialed.message();
        return;
      }
      ++s.log->links;
      peer::hello_message hello;
      hello.resource = "r";
      hello.node = "nodeA";
      peer::header h;
      h.type = peer::msg_type::hello;
      auto payload = peer::encode_hello(hello);
      h.payload_length = static_cast<uint32_t>(payload->size());
      s.line.link()->send(h, std::move(payload));
    },
    [=](atom::peer_frame, peer_frames&) {},
    [=](atom::peer_closed, uint64_t epoch, std::string& reason) {
      auto& s = self->state;
      if (s.line.drop(self, epoch, reason)) {
        ++s.log->losses;
        s.log->last_error = reason;
      }
    },
  };
}

/// The other end: a real listener that runs the server side of the session
/// handshake with `key` and keeps the connections it authenticated.
struct other_end {
  other_end(asio::io_context& io, const std::string& address, const std::string& key)
    : server(io, {address}, [this, key](std::shared_ptr<peer::connection> conn, const peer::header& h,
                                        buffer_ptr payload) {
        ++openings;
        if (h.type != peer::msg_type::session_open)
          return conn->close("expected session_open");
        conn->accept_session(session_with(key), std::move(payload),
                             [this, conn](status st, const peer::header&, buffer_ptr) {
                               if (st)
                                 authenticated.push_back(conn);
                               else
                                 refused.push_back(st.message());
                             });
      }) {}

  std::string address() const { return server.local_addresses().at(0); }

  peer::listener server;
  int openings = 0;
  std::vector<std::shared_ptr<peer::connection>> authenticated;
  std::vector<std::string> refused;
};

class reconnecting_link_test : public deterministic_actors {
protected:
  ~reconnecting_link_test() override {
    if (link_owner)
      caf::anon_send_exit(link_owner, caf::exit_reason::user_shutdown);
    drain();
  }

  void spawn_probe(const std::string& address) {
    link_owner = sys.spawn(probe, tcp_connector(io, address, "", 5s, 30s), log);
  }

  /// Runs Asio's ready handlers and the actors (no simulated time passes)
  /// until `done`. When neither has anything ready and `done` is still
  /// false, what comes next is a socket event: waits in Asio for the next
  /// ready handler, for at most `limit` (a limit for a failing test, not a
  /// timed assertion: loopback is ready at once).
  template <class Pred>
  bool pump(Pred done, std::chrono::milliseconds limit = 10s) {
    for (;;) {
      settle();
      if (done())
        return true;
      if (io.run_one_for(limit) == 0)
        return false;
    }
  }

  std::shared_ptr<probe_log> log = std::make_shared<probe_log>();
  probe_actor link_owner;
};

TEST_F(reconnecting_link_test, redials_after_the_other_end_closes_and_waits_the_interval_while_nothing_listens) {
  auto end = std::make_unique<other_end>(io, "tcp://127.0.0.1:0", shared_key);
  ASSERT_TRUE(end->server.start());
  const auto address = end->address();
  spawn_probe(address);
  ASSERT_TRUE(pump([&] { return log->links == 1 && end->authenticated.size() == 1; }))
    << log->last_error;
  EXPECT_EQ(log->dials, 1);

  // The other end closes: the loss is seen, and the next dial waits.
  end->authenticated[0]->close("the other end goes");
  ASSERT_TRUE(pump([&] { return log->losses == 1; }));
  advance(peer_redial_interval - 1ms);
  EXPECT_EQ(log->dials, 1) << "redialed before the interval";
  advance(1ms);
  EXPECT_EQ(log->dials, 2);
  ASSERT_TRUE(pump([&] { return log->links == 2 && end->authenticated.size() == 2; }))
    << log->last_error;

  // Nothing listens any more: every dial fails at once, and the next one
  // still waits the whole interval.
  end->server.stop();
  end->authenticated[1]->close("the other end goes away");
  ASSERT_TRUE(pump([&] { return log->losses == 2; }));
  for (int attempt = 3; attempt <= 5; ++attempt) {
    advance(peer_redial_interval - 1ms);
    EXPECT_EQ(log->dials, attempt - 1) << "redialed before the interval";
    advance(1ms);
    EXPECT_EQ(log->dials, attempt);
    ASSERT_TRUE(pump([&] { return log->failures == attempt - 2; }));
  }
  EXPECT_EQ(log->links, 2) << "no link while nothing listens";

  // Someone listens again on the same address: the next dial finds it.
  end = std::make_unique<other_end>(io, address, shared_key);
  ASSERT_TRUE(end->server.start());
  advance(peer_redial_interval);
  ASSERT_TRUE(pump([&] { return log->links == 3 && end->authenticated.size() == 1; }))
    << log->last_error;
}

TEST_F(reconnecting_link_test, hands_over_no_link_whose_handshake_failed_and_dials_again) {
  other_end end(io, "tcp://127.0.0.1:0", "another key.....");
  ASSERT_TRUE(end.server.start());
  spawn_probe(end.address());
  ASSERT_TRUE(pump([&] { return log->failures == 1 && end.refused.size() == 1; }));
  EXPECT_EQ(log->links, 0);
  EXPECT_TRUE(end.authenticated.empty());
  EXPECT_NE(log->last_error.find("does not know the shared key"), std::string::npos)
    << log->last_error;
  advance(peer_redial_interval);
  EXPECT_EQ(log->dials, 2);
  ASSERT_TRUE(pump([&] { return log->failures == 2 && end.refused.size() == 2; }));
  EXPECT_EQ(log->links, 0);
}

} // namespace
} // namespace hast
