// The three replication modes as acknowledgement protocols, driven
// deterministically: a real resource actor on a real provider file, its peer
// actor connected to a scripted link that plays a secondary whose disk is
// stalled (it never answers "done" unless the test says so). Everything runs
// on the test's thread, on simulated time (tests/actors/deterministic.hpp):
// "not acknowledged" means not after the resource was idle and 5 s of its
// time had passed.

#include "actors/resource.hpp"
#include "io/net/asio.hpp"
#include "io/io_env.hpp"
#include "io/storage/metadata.hpp"
#include "io/storage/provider.hpp"
#include "tests/actors/deterministic.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <set>
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

/// The I/O environment of these tests: providers as they are, and a
/// primary that dials reaches the scripted secondary.
class scripted_env final : public io_env {
public:
  explicit scripted_env(std::shared_ptr<scripted_link> link) : link_(std::move(link)) {}
  result<provider> open_provider(const std::string& path, bool writable) const override {
    return default_io_env()->open_provider(path, writable);
  }
  link_connector peer_connector(asio::io_context&, const std::string&, const std::string&,
                                std::chrono::milliseconds,
                                std::chrono::milliseconds) const override {
    return [link = link_](std::function<void(status, peer_link_ptr)> done) {
      done(status::ok(), link);
    };
  }

private:
  std::shared_ptr<scripted_link> link_;
};

class replication : public deterministic_actors {
protected:
  ~replication() override {
    if (res)
      caf::anon_send_exit(res, caf::exit_reason::user_shutdown);
    drain();
  }

  /// A primary in `mode`, connected to the scripted secondary, which sends
  /// `their_bitmap` (extents to resync) in its hello_reply.
  void start_primary(replication_mode mode, std::vector<uint8_t> their_bitmap = {}) {
    resource_config rc;
    rc.name = "r";
    rc.provider_name = "r";
    rc.local = (dir / "r.img").string();
    rc.remote = "tcp://127.0.0.1:1";
    rc.device = false;  // no /dev/hast in actor tests
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
    runtime rt = test_runtime();
    rt.env = std::make_shared<const scripted_env>(link);
    res = sys.spawn(resource, rc, std::string{"nodeA"}, rt);
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
    reply.bitmap = std::move(their_bitmap);
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

  /// The secondary's verify_reply: the hashes of zeros (a fresh provider),
  /// with block `differ` (if any) hashed differently.
  void answer_verify(const peer::header& request, std::optional<size_t> differ = {}) {
    std::vector<uint8_t> zeros(request.length, 0);
    auto hashes = hash_blocks(zeros);
    if (differ)
      hashes.hashes.at(*differ) ^= 1;
    peer::header h;
    h.type = peer::msg_type::verify_reply;
    h.seq = request.seq;
    auto payload = encode_block_hashes(hashes);
    h.payload_length = static_cast<uint32_t>(payload->size());
    link->deliver(h, payload);
  }

  /// Sends hastctl verify's message; the answer line or the error.
  std::string verify(bool repair = false, bool stop = false) {
    std::string out;
    bool got = false;
    self->send(res, atom::verify_v, repair, stop);
    run_until([&] {
      self->receive([&](std::string& line) { out = line, got = true; },
                    [&](caf::error& err) { out = "error: " + sys.render(err), got = true; },
                    caf::after(std::chrono::seconds(0)) >> [] {});
      return got;
    });
    return out;
  }

  /// Bitmap with the given extents set (as a secondary's hello_reply has
  /// it; a shorter bitmap than the resource's covers the first extents).
  std::vector<uint8_t> bitmap_of(std::initializer_list<uint64_t> extents) {
    activemap m(16 * uint64_t{default_extent_size}, default_extent_size, default_keepdirty);
    for (auto e : extents)
      m.mark_sync(e * default_extent_size, 4096);
    return m.bitmap();
  }

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
  advance(std::chrono::seconds(5));  // the local write is long done
  EXPECT_FALSE(*acked) << "fullsync acknowledged before the secondary's disk write";
  answer(peer::msg_type::received, h.seq);  // even a stray 'received' is not enough
  advance(std::chrono::seconds(5));
  EXPECT_FALSE(*acked);
  answer(peer::msg_type::done, h.seq);
  EXPECT_TRUE(run_until([&] { return acked->load(); }));
}

TEST_F(replication, memsync_acknowledges_after_the_secondary_received_the_data) {
  start_primary(replication_mode::memsync);
  auto acked = write(4096, 8192);
  auto h = write_frame();
  EXPECT_NE(h.flags & peer::flag_memsync, 0) << "memsync asks for 'received'";
  advance(std::chrono::seconds(5));
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
  // What did not fit stays dirty, and once the secondary has written what
  // it took (a copy never starts under writes in flight), the resync copies
  // it while the link is up, not only at the next connection.
  EXPECT_GT(status_of().dirty_bytes, 0u);
  for (auto& h : link->frames(peer::msg_type::write))
    answer(peer::msg_type::done, h.seq);
  EXPECT_TRUE(run_until([&] {
    for (auto& h : link->frames(peer::msg_type::write))
      if (h.flags & peer::flag_sync)
        return true;
    return false;
  })) << "extents the async queue could not take wait for the next connection";
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
  advance(std::chrono::seconds(5));
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
  advance(std::chrono::seconds(5));
  EXPECT_FALSE(*acked);
  link->closed("test: link lost");
  EXPECT_TRUE(run_until([&] { return acked->load(); }))
    << "a write waiting on a lost secondary must complete from the local disk";
  auto st = status_of();
  EXPECT_FALSE(st.connected);
  EXPECT_EQ(st.status, "degraded");
  EXPECT_GE(st.dirty_bytes, uint64_t{default_extent_size});
}

TEST_F(replication, verify_holds_a_client_write_to_an_extent_being_compared_and_reports_exact_blocks) {
  start_primary(replication_mode::memsync);
  EXPECT_EQ(verify(), "verify started");
  EXPECT_EQ(verify().rfind("error: ", 0), 0u) << "a second verify must be refused while one runs";
  ASSERT_TRUE(run_until([&] { return !link->frames(peer::msg_type::verify).empty(); }));
  auto first = link->frames(peer::msg_type::verify).front();
  EXPECT_EQ(first.offset, 0u);
  EXPECT_EQ(first.length, default_extent_size);
  EXPECT_EQ(first.payload_length, 0u) << "only hashes cross the wire, not data";
  // A client write into the extent being compared waits for its hashes.
  auto acked = write(8192, 4096);
  advance(std::chrono::seconds(5));
  EXPECT_TRUE(link->frames(peer::msg_type::write).empty())
    << "a write to an extent under verification went out before its comparison";
  answer_verify(first, 3);  // block 3 of extent 0 differs on the secondary
  auto h = write_frame();
  EXPECT_EQ(h.offset, 8192u) << "the held write went once the extent was compared";
  answer(peer::msg_type::received, h.seq);
  answer(peer::msg_type::done, h.seq);
  EXPECT_TRUE(run_until([&] { return acked->load(); }));
  // Every other extent is identical.
  std::set<uint64_t> answered{first.seq};
  ASSERT_TRUE(run_until([&] {
    for (auto& v : link->frames(peer::msg_type::verify))
      if (answered.insert(v.seq).second)
        answer_verify(v);
    return !status_of().verify.active;
  }));
  auto v = status_of().verify;
  EXPECT_EQ(v.outcome, "complete");
  EXPECT_EQ(v.differing_blocks, 1u);
  ASSERT_EQ(v.differences.size(), 1u);
  EXPECT_EQ(v.differences[0].offset, 3u * verify_block_size);
  EXPECT_EQ(v.differences[0].length, verify_block_size);
  EXPECT_EQ(v.done_bytes, v.total_bytes);
  EXPECT_EQ(status_of().dirty_bytes, 0u) << "a verify without --repair marks nothing";
}

TEST_F(replication, verify_repair_copies_only_the_differing_block) {
  start_primary(replication_mode::memsync);
  EXPECT_EQ(verify(true), "verify started (differences are repaired from this node)");
  std::set<uint64_t> answered;
  ASSERT_TRUE(run_until([&] {
    for (auto& v : link->frames(peer::msg_type::verify))
      if (answered.insert(v.seq).second)
        answer_verify(v, v.offset == 2 * uint64_t{default_extent_size} ? std::optional<size_t>{7}
                                                                       : std::nullopt);
    return !status_of().verify.active;
  }));
  auto h = write_frame();
  EXPECT_NE(h.flags & peer::flag_sync, 0) << "the repair goes as resync data";
  EXPECT_EQ(h.offset, 2u * default_extent_size + 7u * verify_block_size);
  EXPECT_EQ(h.length, verify_block_size) << "the repair copies the differing block, not its extent";
  EXPECT_EQ(status_of().status, "degraded");
  answer(peer::msg_type::done, h.seq);
  EXPECT_TRUE(run_until([&] { return status_of().status == "complete"; }));
  EXPECT_EQ(link->frames(peer::msg_type::write).size(), 1u) << "nothing else moved";
  EXPECT_EQ(status_of().synced_bytes, verify_block_size);
}

TEST_F(replication, verify_stops_when_told_and_is_interrupted_by_a_lost_link) {
  start_primary(replication_mode::memsync);
  EXPECT_EQ(verify(false, true).rfind("error: ", 0), 0u) << "--stop with no verify running";
  EXPECT_EQ(verify(), "verify started");
  EXPECT_EQ(verify(false, true), "verify stopped");
  EXPECT_EQ(status_of().verify.outcome, "stopped");
  EXPECT_EQ(verify(), "verify started");
  ASSERT_TRUE(run_until([&] { return !link->frames(peer::msg_type::verify).empty(); }));
  link->closed("test: link lost");
  EXPECT_TRUE(run_until([&] { return status_of().verify.outcome == "interrupted"; }));
  EXPECT_EQ(verify().rfind("error: ", 0), 0u) << "verify needs a connected secondary";
}

TEST_F(replication, a_client_write_to_an_extent_being_resynced_goes_right_behind_its_data) {
  start_primary(replication_mode::memsync, bitmap_of({1}));
  auto sync = write_frame();
  ASSERT_NE(sync.flags & peer::flag_sync, 0);
  ASSERT_EQ(sync.offset, uint64_t{default_extent_size});
  // The resync data is queued; a client write to its extent goes behind it
  // on the ordered link without waiting for the secondary's `done`.
  auto acked = write(default_extent_size + 4096, 4096);
  ASSERT_TRUE(run_until([&] { return link->frames(peer::msg_type::write).size() == 2; }))
    << "the client write waited for the whole resync of its extent";
  auto client = link->frames(peer::msg_type::write)[1];
  EXPECT_EQ(client.flags & peer::flag_sync, 0);
  answer(peer::msg_type::received, client.seq);
  EXPECT_TRUE(run_until([&] { return acked->load(); }));
  answer(peer::msg_type::done, sync.seq);
  answer(peer::msg_type::done, client.seq);
  EXPECT_TRUE(run_until([&] { return status_of().status == "complete"; }));
}

} // namespace
} // namespace hast
