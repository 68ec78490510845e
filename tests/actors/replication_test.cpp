// The three replication modes as acknowledgement protocols, driven
// deterministically: a real resource actor on a real provider file, its peer
// actor connected to a scripted link that plays a secondary whose disk is
// stalled (it never answers "done" unless the test says so).

#include "actors/resource.hpp"
#include "io/asio.hpp"
#include "io/metadata.hpp"
#include "io/provider.hpp"
#include "tests/actors/deterministic.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

namespace hast {
namespace {

/// The secondary's end of the wire, scripted by the test.
class scripted_link final : public peer_link {
public:
  void start(frames_fn on_frames, close_fn on_close) override {
    std::lock_guard lock{mutex};
    frame = std::move(on_frames);
    closed = std::move(on_close);
  }
  void send(const peer::header& h, buffer_ptr payload) override {
    std::lock_guard lock{mutex};
    sent.push_back(h);
    if (h.type == peer::msg_type::write)
      queued += payload ? payload->size() : 0;
  }
  void close(const std::string&) override {}
  uint64_t queued_bytes() const override { return queued; }
  std::string remote_address() const override { return "scripted"; }

  /// Delivers a frame as if the secondary had sent it.
  void deliver(const peer::header& h, buffer_ptr payload = nullptr) {
    frames_fn f;
    {
      std::lock_guard lock{mutex};
      f = frame;
    }
    f({peer::frame{h, std::move(payload)}});
  }
  std::vector<peer::header> frames(peer::msg_type type) {
    std::lock_guard lock{mutex};
    std::vector<peer::header> out;
    for (auto& h : sent)
      if (h.type == type)
        out.push_back(h);
    return out;
  }

  std::mutex mutex;
  frames_fn frame;
  close_fn closed;
  std::vector<peer::header> sent;
  std::atomic<uint64_t> queued{0};  // a stalled secondary drains nothing
};

class replication : public deterministic_actors {
protected:
  ~replication() override {
    if (res)
      caf::anon_send_exit(res, caf::exit_reason::user_shutdown);
    run_for(std::chrono::milliseconds(50));
  }

  /// A primary in `mode`, connected to the scripted secondary.
  void start_primary(replication_mode mode) {
    resource_config rc;
    rc.name = "r";
    rc.provider_name = "r";
    rc.local = (dir / "r.img").string();
    rc.remote = "tcp://127.0.0.1:1";
    rc.nbd = "uds://" + (dir / "r.nbd").string();
    rc.replication = mode;
    rc.compression = compression_kind::none;
    {
      auto prov = provider::create_file(rc.local, 64u << 20);
      ASSERT_TRUE(prov.has_value());
      auto md = create_metadata(*prov, "r", default_extent_size, default_keepdirty, 64u << 20);
      ASSERT_TRUE(md.has_value());
      datasize = md->datasize;
    }
    io_ref io{&io_context, [this](std::function<void(status, peer_link_ptr)> done) {
                done(status::ok(), link);
              }};
    res = sys.spawn(resource, rc, std::string{"nodeA"}, io);
    bool changed = false;
    self->send(res, atom::role_v, role::primary, false);
    ASSERT_TRUE(run_until([&] {
      self->receive([&](role) { changed = true; }, [&](caf::error&) { changed = true; },
                    caf::after(std::chrono::seconds(0)) >> [] {});
      return changed;
    }));
    // The peer sends its hello; the scripted secondary accepts.
    ASSERT_TRUE(run_until([&] { return !link->frames(peer::msg_type::hello).empty(); }));
    peer::hello_message reply;
    reply.resource = "r";
    reply.node = "nodeB";
    reply.role = "secondary";
    reply.datasize = datasize;
    reply.extent_size = default_extent_size;
    reply.sync_source = "none";
    link->deliver(peer::header{.type = peer::msg_type::hello_reply}, peer::encode_hello(reply));
    ASSERT_TRUE(run_until([&] { return status_of().connected; }));
  }

  resource_status status_of() {
    resource_status out;
    bool got = false;
    self->send(res, atom::status_v);
    run_until([&] {
      self->receive([&](resource_status& st) { out = st, got = true; },
                    caf::after(std::chrono::seconds(0)) >> [] {});
      return got;
    });
    return out;
  }

  /// Answers as a client would hear them.
  struct flag_sink final : nbd::reply_sink {
    std::shared_ptr<std::atomic<bool>> acked;
    void deliver(std::vector<nbd::reply> replies) override {
      for (auto& r : replies) {
        EXPECT_EQ(r.error, 0u);
        *acked = true;
      }
    }
  };

  /// Submits a client write of `size` bytes; `acked` turns true when the
  /// client would hear back.
  std::shared_ptr<std::atomic<bool>> write(uint64_t offset, size_t size) {
    auto acked = std::make_shared<std::atomic<bool>>(false);
    nbd::request r;
    r.kind = nbd::command::write;
    r.offset = offset;
    r.length = static_cast<uint32_t>(size);
    r.data = make_buffer(size);
    std::memset(r.data->data(), 0x5a, size);
    auto sink = std::make_shared<flag_sink>();
    sink->acked = acked;
    caf::anon_send(res, atom::nbd_v, nbd_batch{{std::move(r)}, sink, false});
    return acked;
  }

  peer::header write_frame() {
    peer::header h;
    run_until([&] { return !link->frames(peer::msg_type::write).empty(); });
    auto frames = link->frames(peer::msg_type::write);
    return frames.empty() ? h : frames.back();
  }

  void answer(peer::msg_type type, uint64_t seq) {
    peer::header h;
    h.type = type;
    h.seq = seq;
    link->deliver(h);
  }

  asio::io_context io_context;
  std::shared_ptr<scripted_link> link = std::make_shared<scripted_link>();
  resource_actor res;
  uint64_t datasize = 0;
};

TEST_F(replication, fullsync_acknowledges_only_after_the_secondary_wrote) {
  start_primary(replication_mode::fullsync);
  auto acked = write(0, 4096);
  auto h = write_frame();
  ASSERT_EQ(h.type, peer::msg_type::write);
  EXPECT_EQ(h.flags & peer::flag_memsync, 0) << "fullsync does not ask for 'received'";
  run_for(std::chrono::milliseconds(200));  // the local write is long done
  EXPECT_FALSE(*acked) << "fullsync acknowledged before the secondary's disk write";
  answer(peer::msg_type::received, h.seq);  // even a stray 'received' is not enough
  run_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(*acked);
  answer(peer::msg_type::done, h.seq);
  EXPECT_TRUE(run_until([&] { return acked->load(); }));
}

TEST_F(replication, memsync_acknowledges_after_the_secondary_received_the_data) {
  start_primary(replication_mode::memsync);
  auto acked = write(4096, 8192);
  auto h = write_frame();
  EXPECT_NE(h.flags & peer::flag_memsync, 0) << "memsync asks for 'received'";
  run_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(*acked) << "memsync acknowledged before the secondary received the data";
  answer(peer::msg_type::received, h.seq);
  EXPECT_TRUE(run_until([&] { return acked->load(); }));
  // The extent stays in flight until the secondary's "done".
  EXPECT_EQ(status_of().queue_recv, 1u);
  answer(peer::msg_type::done, h.seq);
  EXPECT_TRUE(run_until([&] { return status_of().queue_recv == 0; }));
}

TEST_F(replication, async_acknowledges_at_once_and_its_queue_stays_bounded) {
  start_primary(replication_mode::async);
  auto acked = write(0, 4096);
  EXPECT_TRUE(run_until([&] { return acked->load(); }))
    << "async waits for nothing from the secondary";
  // A stalled secondary: 96 writes of 1 MiB, never drained, never answered.
  std::vector<std::shared_ptr<std::atomic<bool>>> all;
  for (uint64_t i = 0; i < 96; ++i)
    all.push_back(write((i % 30) * (1u << 20), 1u << 20));
  EXPECT_TRUE(run_until([&] {
    for (auto& a : all)
      if (!*a)
        return false;
    return true;
  })) << "async writers were blocked by a stalled secondary";
  EXPECT_LE(link->queued_bytes(), async_queue_limit + (1u << 20))
    << "the send queue grew past its bound";
  // What did not fit stays dirty for the resync.
  EXPECT_GT(status_of().dirty_bytes, 0u);
}

TEST_F(replication, a_full_replication_window_holds_further_writes_until_the_secondary_has_written) {
  start_primary(replication_mode::memsync);
  // A secondary that receives but never writes: the window fills up.
  const size_t n = replication_window_requests + 6;
  for (size_t i = 0; i < n; ++i)
    write(i * 4096, 4096);
  ASSERT_TRUE(run_until([&] {
    return link->frames(peer::msg_type::write).size() >= replication_window_requests;
  }));
  run_for(std::chrono::milliseconds(200));
  auto sent = link->frames(peer::msg_type::write);
  EXPECT_EQ(sent.size(), replication_window_requests)
    << "more requests were sent than the window allows";
  // Six writes done on the secondary make room for the six waiting ones.
  for (size_t i = 0; i < 6; ++i)
    answer(peer::msg_type::done, sent[i].seq);
  EXPECT_TRUE(run_until([&] { return link->frames(peer::msg_type::write).size() == n; }))
    << "waiting writes did not go when the window had room";
}

TEST_F(replication, a_lost_connection_completes_waiting_writes_and_keeps_their_extents_dirty) {
  start_primary(replication_mode::fullsync);
  auto acked = write(3u << 20, 4096);
  write_frame();
  run_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(*acked);
  link->closed("test: link lost");
  EXPECT_TRUE(run_until([&] { return acked->load(); }))
    << "a write waiting on a lost secondary must complete from the local disk";
  auto st = status_of();
  EXPECT_FALSE(st.connected);
  EXPECT_EQ(st.status, "degraded");
  EXPECT_GE(st.dirty_bytes, uint64_t{default_extent_size});
}

} // namespace
} // namespace hast
