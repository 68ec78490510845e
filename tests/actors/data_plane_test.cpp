// The data plane without actors or threads: requests go in, and the test
// looks at what it submits to the disk (data, and the metadata slot writes
// of the activemap's group commit), sends to the secondary, answers, and
// asks of the control plane; completions and acknowledgements are fed back
// by hand.

#include "actors/data_plane.hpp"
#include "io/net/nbd_protocol.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <span>

namespace hast {
namespace {

constexpr uint64_t mib = 1u << 20;

/// The control plane as far as the data plane can see it: answers from
/// fields the test sets, and a record of what was asked.
struct recorded_steering final : data_plane::steering {
  bool serves_clients = true;
  bool serves_peer = false;
  bool link_up = false;
  bool alone_allowed = true;
  bool holds_everything = false;
  bool read_allowed = true;  // may_read_here says this
  std::vector<std::pair<uint64_t, uint64_t>> waiting_ranges;  // must_wait says yes here

  std::vector<uint64_t> leased;
  std::vector<std::pair<uint64_t, uint64_t>> marked;
  std::vector<nbd::request> remote_reads;
  std::vector<nbd::request> lease_reads;  // reads waiting for the lease
  int idles = 0;
  int finished = 0;
  int local_failures = 0;
  int bumps_left = 0;  // bump_generation says true this many times

  bool serving(bool from_peer) const override { return from_peer ? serves_peer : serves_clients; }
  bool connected() const override { return link_up; }
  bool must_wait(uint64_t offset, uint64_t length) override {
    for (auto [b, e] : waiting_ranges)
      if (offset < e && b < offset + length)
        return true;
    return false;
  }
  bool read_from_secondary(uint64_t, uint64_t) override { return false; }
  void read_remote(nbd::request r, nbd::reply_sink_ptr) override { remote_reads.push_back(r); }
  void mark_for_sync(uint64_t offset, uint64_t length) override { marked.emplace_back(offset, length); }
  void resync_now() override {}
  void write_finished() override { ++finished; }
  bool bump_generation() override { return bumps_left > 0 && bumps_left-- > 0; }
  bool may_write_alone() override { return alone_allowed; }
  void wait_for_lease(uint64_t id) override { leased.push_back(id); }
  void hold_answer(nbd::reply_sink_ptr sink, nbd::reply r) override {
    sink->deliver({std::move(r)});
  }
  bool may_read_here() override { return read_allowed; }
  void wait_for_lease_to_read(nbd::request r, nbd::reply_sink_ptr) override {
    lease_reads.push_back(r);
  }
  bool secondary_holds_everything() override { return holds_everything; }
  void local_disk_failed(uint32_t) override { ++local_failures; }
  void local_disk_ok() override {}
  void idle() override { ++idles; }
};

struct recorded_sink final : nbd::reply_sink {
  std::vector<nbd::reply> replies;
  void deliver(std::vector<nbd::reply> r) override {
    for (auto& x : r)
      replies.push_back(std::move(x));
  }
};

/// Metadata as `hastctl create` makes it for a 65 MiB provider.
metadata created(uint32_t extent = mib, uint32_t keepdirty = 8) {
  auto l = compute_layout(65 * mib, extent);
  EXPECT_TRUE(l.has_value());
  metadata md;
  md.resource = "r";
  md.datasize = l->datasize;
  md.extent_size = extent;
  md.keepdirty = keepdirty;
  md.data_offset = l->data_offset;
  md.resuid = 1;
  md.sequence = 1;
  md.bitmap.assign(l->bitmap_bytes, 0);
  return md;
}

nbd::request write_at(uint64_t offset, uint32_t length = 4096, uint64_t cookie = 0) {
  nbd::request r;
  r.kind = nbd::command::write;
  r.cookie = cookie != 0 ? cookie : offset + 1;
  r.offset = offset;
  r.length = length;
  r.data = make_buffer(length);
  std::memset(r.data->data(), 0x5a, length);
  return r;
}

nbd::request read_at(uint64_t offset, uint32_t length = 4096) {
  nbd::request r;
  r.kind = nbd::command::read;
  r.cookie = offset + 7;
  r.offset = offset;
  r.length = length;
  return r;
}

class data_plane_test : public ::testing::Test {
protected:
  void make(replication_mode mode, bool standalone, metadata md = created()) {
    plane = std::make_unique<data_plane>("r", standalone, policy_for(mode), control);
    plane->open(std::move(md));
  }

  /// One turn with these client (or peer) requests; returns what it produced.
  data_plane::output turn(std::vector<nbd::request> requests, bool from_peer = false) {
    nbd_batch b{std::move(requests), sink, from_peer};
    plane->batch(b, std::chrono::steady_clock::now());
    return end();
  }
  /// Ends the turn: replies go to their sinks, metadata slot writes to
  /// `metadata_writes`; the data operations are returned.
  data_plane::output end() {
    plane->end_turn();
    auto out = plane->take();
    for (auto& [to, replies] : out.replies)
      to->deliver(std::move(replies));
    out.replies.clear();
    std::erase_if(out.disk, [this](const disk_op& op) {
      if (!op.in_provider)
        return false;
      metadata_writes.push_back(op);
      return true;
    });
    return out;
  }
  /// The disk finished these operations with `error`.
  data_plane::output complete(const disk_batch& ops, int error = 0) {
    disk_results done;
    for (auto& op : ops) {
      buffer_ptr data;
      if (op.op == disk_op::kind::read && error == 0)
        data = make_buffer(op.length);
      done.push_back({op.tag, error, data});
    }
    plane->disk_done(done);
    return end();
  }
  /// The last metadata slot write completes (with EIO unless `ok`).
  data_plane::output metadata_done(bool ok = true) {
    if (metadata_writes.empty()) {
      ADD_FAILURE() << "no metadata write was asked for";
      return {};
    }
    return complete({metadata_writes.back()}, ok ? 0 : EIO);
  }

  recorded_steering control;
  std::vector<disk_op> metadata_writes;
  std::shared_ptr<recorded_sink> sink = std::make_shared<recorded_sink>();
  std::unique_ptr<data_plane> plane;
};

TEST_F(data_plane_test, a_write_is_issued_only_after_its_extent_is_marked_on_disk) {
  make(replication_mode::memsync, true);
  auto out = turn({write_at(3 * mib)});
  EXPECT_TRUE(out.disk.empty()) << "the data write must wait for the activemap";
  ASSERT_EQ(metadata_writes.size(), 1u);
  // The slot write carries the extent, goes to the slot its sequence
  // selects, and is durable when it completes (metaflush).
  auto& slot = metadata_writes[0];
  EXPECT_TRUE(slot.fua);
  EXPECT_EQ(slot.offset, 0u) << "sequence 2 goes to slot 0";
  auto written = decode_slot(std::span<const uint8_t>(slot.data->data(), slot.data->size()));
  ASSERT_TRUE(written.has_value()) << written.error().message();
  EXPECT_EQ(written->sequence, 2u);
  EXPECT_NE(written->bitmap[0] & (1u << 3), 0) << "extent 3 is marked";

  out = metadata_done();
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_EQ(out.disk[0].op, disk_op::kind::write);
  EXPECT_FALSE(out.disk[0].in_provider);
  EXPECT_EQ(out.disk[0].offset, 3 * mib);
  EXPECT_EQ(plane->md().sequence, 2u);
  EXPECT_TRUE(sink->replies.empty());

  complete(out.disk);
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, 0u);
  EXPECT_EQ(plane->in_flight(), 0u);
  EXPECT_EQ(control.idles, 1);
}

TEST_F(data_plane_test, a_write_into_an_extent_already_on_disk_goes_in_the_same_turn) {
  make(replication_mode::memsync, true);
  turn({write_at(3 * mib)});
  complete(metadata_done().disk);
  metadata_writes.clear();
  auto out = turn({write_at(3 * mib + 8192)});
  EXPECT_EQ(out.disk.size(), 1u);
  EXPECT_TRUE(metadata_writes.empty());
}

TEST_F(data_plane_test, writes_waiting_for_one_round_share_it) {
  make(replication_mode::memsync, true);
  auto out = turn({write_at(0), write_at(5 * mib), write_at(9 * mib)});
  EXPECT_TRUE(out.disk.empty());
  EXPECT_EQ(metadata_writes.size(), 1u) << "one metadata write covers all three";
  EXPECT_EQ(metadata_done().disk.size(), 3u);
}

TEST_F(data_plane_test, rounds_alternate_between_the_slots_and_a_failed_one_is_retried_in_place) {
  make(replication_mode::memsync, true);
  plane->set_metaflush(false);
  turn({write_at(0)});
  metadata_done();
  turn({write_at(5 * mib)});
  ASSERT_EQ(metadata_writes.size(), 2u);
  EXPECT_FALSE(metadata_writes[1].fua) << "metaflush off: a plain write";
  EXPECT_NE(metadata_writes[0].offset, metadata_writes[1].offset);
  metadata_done(false);
  turn({write_at(9 * mib)});
  ASSERT_EQ(metadata_writes.size(), 3u);
  EXPECT_EQ(metadata_writes[2].offset, metadata_writes[1].offset)
    << "a failed round never moves on to the slot holding the newest state";
}

TEST_F(data_plane_test, a_failed_metadata_round_fails_the_writes_it_would_have_covered) {
  make(replication_mode::memsync, true);
  turn({write_at(0)});
  auto out = metadata_done(false);
  EXPECT_TRUE(out.disk.empty()) << "nothing reaches the disk unmarked";
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, nbd::eio);
  EXPECT_TRUE(plane->commit_failing());
  EXPECT_EQ(plane->counters().write_errors, 1u);
}

TEST_F(data_plane_test, an_answer_for_a_round_of_an_earlier_open_is_ignored) {
  make(replication_mode::memsync, true);
  turn({write_at(0)});
  auto stale = metadata_writes.back();
  plane->close();
  plane->open(created());
  turn({write_at(5 * mib)});
  EXPECT_TRUE(complete({stale}).disk.empty());
  EXPECT_EQ(metadata_done().disk.size(), 1u);
}

TEST_F(data_plane_test, overlapping_writes_reach_the_disk_in_arrival_order) {
  make(replication_mode::memsync, true);
  turn({write_at(0, 8192, 1), write_at(4096, 8192, 2), write_at(65536, 4096, 3)});
  auto out = metadata_done();
  ASSERT_EQ(out.disk.size(), 2u) << "the second overlaps the first and waits";
  EXPECT_EQ(out.disk[0].offset, 0u);
  EXPECT_EQ(out.disk[1].offset, 65536u);
  out = complete({out.disk[0]});
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_EQ(out.disk[0].offset, 4096u);
}

TEST_F(data_plane_test, memsync_sends_the_frame_with_the_local_write_and_answers_on_received) {
  make(replication_mode::memsync, false);
  control.link_up = true;
  turn({write_at(mib)});
  auto out = metadata_done();
  ASSERT_EQ(out.replicate.size(), 1u);
  ASSERT_EQ(out.disk.size(), 1u) << "frame and local write leave in the same turn";
  auto id = out.replicate[0].id;
  EXPECT_NE(out.replicate[0].flags & peer::flag_memsync, 0);
  complete(out.disk);
  EXPECT_TRUE(sink->replies.empty()) << "memsync waits for the secondary's received";
  plane->remote_ack(id, remote_stage::received, 0);
  end();
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(control.finished, 0) << "the extent stays busy until written";
  EXPECT_TRUE(plane->busy(1));
  plane->remote_ack(id, remote_stage::written, 0);
  end();
  EXPECT_EQ(control.finished, 1);
  EXPECT_FALSE(plane->busy(1));
  EXPECT_TRUE(control.marked.empty());
}

TEST_F(data_plane_test, a_write_the_secondary_did_not_confirm_is_marked_for_the_resync) {
  make(replication_mode::fullsync, false);
  control.link_up = true;
  turn({write_at(2 * mib)});
  auto out = metadata_done();
  complete(out.disk);
  plane->remote_ack(out.replicate[0].id, remote_stage::failed, 1);
  end();
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, 0u) << "the local copy stands";
  ASSERT_EQ(control.marked.size(), 1u);
  EXPECT_EQ(control.marked[0].first, 2 * mib);
}

TEST_F(data_plane_test, the_replication_window_holds_writes_beyond_it_in_order) {
  make(replication_mode::fullsync, false);
  control.link_up = true;
  std::vector<nbd::request> batch;
  for (uint64_t i = 0; i < replication_window_requests + 2; ++i)
    batch.push_back(write_at(i * 4096, 4096, i + 1));
  turn(std::move(batch));
  auto out = metadata_done();
  EXPECT_EQ(out.replicate.size(), replication_window_requests);
  plane->remote_ack(out.replicate[0].id, remote_stage::written, 0);
  auto more = end();
  ASSERT_EQ(more.replicate.size(), 1u) << "one acknowledgement, one more write";
  EXPECT_EQ(more.replicate[0].offset, replication_window_requests * 4096);
}

TEST_F(data_plane_test, without_the_link_a_write_waits_for_the_lease_when_told_so) {
  make(replication_mode::memsync, false);
  control.alone_allowed = false;
  auto out = turn({write_at(0)});
  ASSERT_EQ(control.leased.size(), 1u);
  EXPECT_TRUE(out.disk.empty());
  EXPECT_TRUE(metadata_writes.empty()) << "nothing changes before the lease";
  plane->refuse(control.leased[0]);
  end();
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, nbd::eio);
}

TEST_F(data_plane_test, a_raised_generation_waits_for_its_own_round) {
  make(replication_mode::memsync, false);
  control.bumps_left = 1;
  // The extent is durable already, but the new generation is not.
  plane->map().write_start(0, 4096);
  plane->persist([](bool) {});
  end();
  metadata_done();
  plane->map().write_complete(0, 4096);
  metadata_writes.clear();
  auto out = turn({write_at(0)});
  EXPECT_TRUE(out.disk.empty());
  ASSERT_EQ(metadata_writes.size(), 1u);
  ASSERT_EQ(control.marked.size(), 1u) << "written while the peer is away: dirty for the resync";
  EXPECT_EQ(metadata_done().disk.size(), 1u);
}

TEST_F(data_plane_test, a_write_that_must_wait_for_an_interlock_goes_when_released) {
  make(replication_mode::memsync, true);
  control.waiting_ranges.push_back({0, mib});
  turn({write_at(4096)});
  EXPECT_TRUE(metadata_writes.empty());
  control.waiting_ranges.clear();
  plane->release_deferred();
  end();
  EXPECT_EQ(metadata_writes.size(), 1u);
  EXPECT_EQ(metadata_done().disk.size(), 1u);
}

TEST_F(data_plane_test, a_drain_fails_what_waits_for_an_interlock) {
  make(replication_mode::memsync, true);
  control.waiting_ranges.push_back({0, mib});
  turn({write_at(4096)});
  plane->drop_deferred();
  end();
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, nbd::eshutdown);
}

TEST_F(data_plane_test, a_local_write_failure_stands_on_the_secondary_once_it_wrote) {
  make(replication_mode::memsync, false);
  control.link_up = true;
  control.holds_everything = true;
  turn({write_at(0)});
  auto out = metadata_done();
  complete(out.disk, EIO);
  EXPECT_TRUE(plane->md().local_stale);
  EXPECT_EQ(control.local_failures, 1);
  metadata_done();  // the stale flag reaches the disk
  EXPECT_TRUE(sink->replies.empty()) << "the secondary's copy decides";
  plane->remote_ack(out.replicate[0].id, remote_stage::written, 0);
  end();
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, 0u);
  EXPECT_FALSE(control.marked.empty()) << "copied back from the secondary later";
}

TEST_F(data_plane_test, reads_of_stale_extents_go_to_the_secondary) {
  auto md = created();
  md.local_stale = true;
  md.bitmap[0] = 0x01;  // extent 0 needs a copy
  make(replication_mode::memsync, false, md);
  control.link_up = true;
  auto out = turn({read_at(0), read_at(2 * mib)});
  ASSERT_EQ(control.remote_reads.size(), 1u);
  EXPECT_EQ(control.remote_reads[0].offset, 0u);
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_EQ(out.disk[0].offset, 2 * mib);
  plane->remote_read_done(control.remote_reads[0], sink, make_buffer(4096), true);
  complete(out.disk);
  EXPECT_EQ(sink->replies.size(), 2u);
  EXPECT_EQ(plane->in_flight(), 0u);
}

TEST_F(data_plane_test, requests_for_a_role_that_does_not_serve_them_are_refused) {
  make(replication_mode::memsync, false);
  control.serves_clients = false;
  auto out = turn({write_at(0), read_at(0)});
  EXPECT_TRUE(out.disk.empty());
  ASSERT_EQ(sink->replies.size(), 2u);
  EXPECT_EQ(sink->replies[0].error, nbd::eshutdown);
}

TEST_F(data_plane_test, a_secondary_writes_replicated_data_behind_its_own_mark) {
  make(replication_mode::memsync, false);
  control.serves_clients = false;
  control.serves_peer = true;
  auto out = turn({write_at(mib)}, /*from_peer=*/true);
  EXPECT_TRUE(out.disk.empty());
  out = metadata_done();
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_TRUE(out.replicate.empty()) << "a secondary sends nothing on";
  complete(out.disk);
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, 0u);
}

/// What a disk read of `op` returns in these tests: its bytes set to `byte`.
disk_results read_result(const disk_op& op, uint8_t byte) {
  auto data = make_buffer(op.length);
  std::memset(data->data(), byte, op.length);
  return {{op.tag, 0, data}};
}

TEST_F(data_plane_test, a_secondary_reads_for_the_primary_only_after_earlier_writes_to_the_range) {
  make(replication_mode::memsync, false);
  control.serves_clients = false;
  control.serves_peer = true;
  // The primary's write, acknowledged on "received" (memsync), waits here
  // for the activemap; the primary's next request reads the same block.
  auto out = turn({write_at(mib)}, /*from_peer=*/true);
  ASSERT_TRUE(out.disk.empty());
  out = turn({read_at(mib)}, /*from_peer=*/true);
  EXPECT_TRUE(out.disk.empty()) << "the read must not overtake the write queued before it";
  auto write = metadata_done();
  ASSERT_EQ(write.disk.size(), 1u);
  EXPECT_EQ(write.disk[0].op, disk_op::kind::write);
  EXPECT_TRUE(sink->replies.empty());

  // A read of another range goes at once.
  out = turn({read_at(8 * mib)}, /*from_peer=*/true);
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_EQ(out.disk[0].offset, 8 * mib);
  auto other = out.disk;

  // The write is on the disk: now the read goes.
  out = complete(write.disk);
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_EQ(out.disk[0].op, disk_op::kind::read);
  EXPECT_EQ(out.disk[0].offset, mib);
  auto done = read_result(out.disk[0], 0x5a);
  plane->disk_done(done);
  end();
  complete(other);
  ASSERT_EQ(sink->replies.size(), 3u);
  EXPECT_EQ(sink->replies[0].kind, nbd::command::write);
  EXPECT_EQ(sink->replies[1].kind, nbd::command::read);
  EXPECT_EQ(sink->replies[1].cookie, read_at(mib).cookie);
  ASSERT_TRUE(sink->replies[1].data);
  EXPECT_EQ(sink->replies[1].data->data()[0], 0x5a);
}

TEST_F(data_plane_test, a_write_from_the_primary_waits_for_an_earlier_read_of_its_range) {
  make(replication_mode::memsync, false);
  control.serves_clients = false;
  control.serves_peer = true;
  turn({write_at(mib)}, /*from_peer=*/true);
  complete(metadata_done().disk);  // extent 1 is marked on disk now
  sink->replies.clear();
  auto out = turn({read_at(mib), write_at(mib)}, /*from_peer=*/true);
  ASSERT_EQ(out.disk.size(), 1u) << "the write waits for the read that came first";
  EXPECT_EQ(out.disk[0].op, disk_op::kind::read);
  auto after = complete(out.disk);
  ASSERT_EQ(after.disk.size(), 1u);
  EXPECT_EQ(after.disk[0].op, disk_op::kind::write);
  complete(after.disk);
  EXPECT_EQ(sink->replies.size(), 2u);
}

TEST_F(data_plane_test, without_the_lease_a_read_waits_for_it_and_runs_when_it_returns) {
  make(replication_mode::memsync, false);
  control.read_allowed = false;
  auto out = turn({read_at(0)});
  EXPECT_TRUE(out.disk.empty()) << "the other node may have been promoted and written";
  EXPECT_TRUE(control.remote_reads.empty());
  ASSERT_EQ(control.lease_reads.size(), 1u);
  EXPECT_TRUE(sink->replies.empty());
  EXPECT_EQ(plane->in_flight(), 1u);

  control.read_allowed = true;
  plane->read_after_lease(control.lease_reads[0], sink);
  out = end();
  ASSERT_EQ(out.disk.size(), 1u);
  EXPECT_EQ(out.disk[0].op, disk_op::kind::read);
  complete(out.disk);
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, 0u);
  EXPECT_EQ(plane->in_flight(), 0u);
}

TEST_F(data_plane_test, without_the_lease_a_read_fails_when_the_lease_is_lost) {
  make(replication_mode::memsync, false);
  control.read_allowed = false;
  turn({read_at(0)});
  ASSERT_EQ(control.lease_reads.size(), 1u);
  plane->refuse_read(control.lease_reads[0], sink);
  auto out = end();
  EXPECT_TRUE(out.disk.empty());
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].error, nbd::eio);
  EXPECT_EQ(plane->in_flight(), 0u);
  EXPECT_EQ(control.idles, 1);
}

TEST_F(data_plane_test, without_the_lease_a_connected_primary_reads_from_its_secondary) {
  make(replication_mode::memsync, false);
  control.read_allowed = false;
  control.link_up = true;
  auto out = turn({read_at(0)});
  EXPECT_TRUE(out.disk.empty()) << "the local copy may be old";
  ASSERT_EQ(control.remote_reads.size(), 1u);
  EXPECT_TRUE(control.lease_reads.empty());
}

TEST_F(data_plane_test, without_the_lease_a_read_the_secondary_lacks_waits_for_it) {
  auto md = created();
  md.bitmap[0] = 0x01;  // extent 0 is still to be copied to the secondary
  make(replication_mode::memsync, false, md);
  control.read_allowed = false;
  control.link_up = true;
  auto out = turn({read_at(0)});
  EXPECT_TRUE(out.disk.empty());
  EXPECT_TRUE(control.remote_reads.empty()) << "the secondary's copy is older";
  EXPECT_EQ(control.lease_reads.size(), 1u);
}

TEST_F(data_plane_test, a_failed_local_read_of_an_extent_the_secondary_lacks_fails) {
  auto md = created();
  md.bitmap[0] = 0x01;  // extent 0 is still to be copied to the secondary
  make(replication_mode::memsync, false, md);
  control.link_up = true;
  auto out = turn({read_at(0), read_at(2 * mib)});
  ASSERT_EQ(out.disk.size(), 2u);
  complete(out.disk, EIO);
  ASSERT_EQ(control.remote_reads.size(), 1u) << "only the extent the secondary holds goes there";
  EXPECT_EQ(control.remote_reads[0].offset, 2 * mib);
  ASSERT_EQ(sink->replies.size(), 1u);
  EXPECT_EQ(sink->replies[0].cookie, read_at(0).cookie);
  EXPECT_EQ(sink->replies[0].error, nbd::eio) << "the secondary's copy is older";
}

} // namespace
} // namespace hast
