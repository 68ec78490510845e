// The I/O environment opens providers; the default one as they are, another
// (a test's) with a fault source attached that every provider call obeys.
// It also dials the peer: over TCP unless an environment says otherwise.

#include "io/io_env.hpp"

#include "io/net/asio.hpp"
#include "io/storage/metadata.hpp"
#include "io/net/peer_transport.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include <stdlib.h>

namespace hast {
namespace {

/// Fails every op of one kind with `error`.
class kind_fault final : public fault_source {
public:
  kind_fault(io_kind kind, int error) : kind_(kind), error_(error) {}
  int fault(io_kind kind, uint64_t, uint64_t) const override { return kind == kind_ ? error_ : 0; }

private:
  io_kind kind_;
  int error_;
};

/// Opens providers as the default environment does, then attaches its source.
class faulty_env final : public io_env {
public:
  explicit faulty_env(std::shared_ptr<const fault_source> faults) : faults_(std::move(faults)) {}
  result<provider> open_provider(const std::string& path, bool writable) const override {
    auto opened = default_io_env()->open_provider(path, writable);
    if (opened)
      opened->set_fault_source(faults_);
    return opened;
  }

private:
  std::shared_ptr<const fault_source> faults_;
};

class io_env_test : public scratch_test {
protected:
  void SetUp() override {
    path_ = path("p.img");
    ASSERT_TRUE(provider::create_file(path_, 16 << 20));
  }

  std::string path_;
};

TEST_F(io_env_test, the_default_environment_opens_providers_without_faults) {
  auto p = default_io_env()->open_provider(path_, true);
  ASSERT_TRUE(p) << p.error().message();
  for (auto kind :
       {io_kind::read, io_kind::write, io_kind::flush, io_kind::discard, io_kind::write_zeroes})
    EXPECT_EQ(p->fault(kind, 0, 4096), 0) << to_string(kind);
  std::vector<uint8_t> buf(4096, 7);
  EXPECT_TRUE(p->write(buf.data(), buf.size(), 0));
  EXPECT_TRUE(p->flush());
  EXPECT_TRUE(p->read(buf.data(), buf.size(), 0));
}

TEST_F(io_env_test, the_default_environment_names_a_missing_provider) {
  auto p = default_io_env()->open_provider((dir_ / "missing").string(), true);
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("missing"), std::string::npos) << p.error().message();
}

TEST_F(io_env_test, a_providers_fault_source_fails_what_it_names_from_the_first_call_on) {
  faulty_env env{std::make_shared<kind_fault>(io_kind::write, EIO)};
  auto p = env.open_provider(path_, true);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->fault(io_kind::write, 0, 1), EIO);
  EXPECT_EQ(p->fault(io_kind::read, 0, 1), 0);
  auto md = create_metadata(*p, "r", 1 << 20, 64, p->size());
  ASSERT_FALSE(md);
  EXPECT_NE(md.error().message().find("(injected)"), std::string::npos) << md.error().message();
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE(p->read(buf.data(), buf.size(), 0));
}

/// Dials a listener on 127.0.0.1 with `env`'s peer connector and sends one
/// hello; answers the type of the first frame the listener got.
std::optional<peer::msg_type> dial_with(const io_env& env) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  // Shared: a late callback must not outlive what it sets.
  auto first = std::make_shared<std::promise<peer::msg_type>>();
  auto got = first->get_future();
  std::optional<peer::msg_type> out;
  {
    peer::listener server(
      io, {"tcp://127.0.0.1:0"},
      [first](std::shared_ptr<peer::connection> conn, const peer::header& h, buffer_ptr) {
        first->set_value(h.type);
        conn->close("test over");
      });
    if (server.start()) {
      auto connect = env.peer_connector(io, server.local_addresses().at(0), "",
                                        peer::default_keepalive, std::chrono::seconds(5));
      auto dialed = std::make_shared<std::promise<peer_link_ptr>>();
      connect([dialed](status st, peer_link_ptr link) { dialed->set_value(st ? link : nullptr); });
      auto link = dialed->get_future();
      if (link.wait_for(std::chrono::seconds(10)) == std::future_status::ready) {
        if (auto l = link.get()) {
          l->start([](std::vector<peer::frame>) {}, [](const std::string&) {});
          peer::hello_message hello;
          hello.resource = "r";
          l->send(peer::header{.type = peer::msg_type::hello}, peer::encode_hello(hello));
          if (got.wait_for(std::chrono::seconds(10)) == std::future_status::ready)
            out = got.get();
          l->close("test over");
        }
      }
    }
    server.stop();
  }
  guard.reset();
  io.stop();
  runner.join();
  return out;
}

TEST(io_env_dial, the_default_environment_dials_the_peer_over_tcp) {
  EXPECT_EQ(dial_with(*default_io_env()), peer::msg_type::hello);
}

TEST(io_env_dial, an_environment_that_only_changes_providers_still_dials_over_tcp) {
  faulty_env env{std::make_shared<kind_fault>(io_kind::write, EIO)};
  EXPECT_EQ(dial_with(env), peer::msg_type::hello);
}

} // namespace
} // namespace hast
