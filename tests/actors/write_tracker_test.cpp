// The acknowledgement protocol without actors: ordering of overlapping
// writes and the policy table deciding when a client is answered.

#include "actors/write_tracker.hpp"

#include <gtest/gtest.h>

namespace hast {
namespace {

write_tracker tracker(replication_mode mode) {
  return write_tracker{policy_for(mode)};
}

TEST(write_tracker, fullsync_answers_after_the_local_write_and_the_secondarys_written) {
  auto t = tracker(replication_mode::fullsync);
  t.start(1, false, true);
  auto a = t.local_done(1, 0);
  EXPECT_FALSE(a.answer);
  EXPECT_FALSE(t.remote(1, remote_stage::received).answer) << "received is not enough";
  auto b = t.remote(1, remote_stage::written);
  EXPECT_TRUE(b.answer);
  EXPECT_TRUE(b.finished);
  EXPECT_EQ(t.size(), 0u);
}

TEST(write_tracker, memsync_answers_on_received_but_finishes_on_written) {
  auto t = tracker(replication_mode::memsync);
  t.start(1, false, true);
  EXPECT_FALSE(t.remote(1, remote_stage::received).answer) << "the local write is not done";
  auto a = t.local_done(1, 0);
  EXPECT_TRUE(a.answer);
  EXPECT_FALSE(a.finished) << "the extent stays in the map until written";
  auto b = t.remote(1, remote_stage::written);
  EXPECT_FALSE(b.answer) << "answered once";
  EXPECT_TRUE(b.finished);
  EXPECT_FALSE(b.remote_failed);
}

TEST(write_tracker, memsync_fua_and_flush_wait_for_written) {
  auto t = tracker(replication_mode::memsync);
  t.start(1, true, true);
  t.local_done(1, 0);
  EXPECT_FALSE(t.remote(1, remote_stage::received).answer);
  EXPECT_TRUE(t.remote(1, remote_stage::written).answer);
}

TEST(write_tracker, async_answers_after_the_local_write_alone) {
  auto t = tracker(replication_mode::async);
  t.start(1, false, true);
  auto a = t.local_done(1, 0);
  EXPECT_TRUE(a.answer);
  EXPECT_FALSE(a.finished);
  EXPECT_EQ(t.awaiting_remote(), std::vector<uint64_t>{1});
  EXPECT_TRUE(t.remote(1, remote_stage::written).finished);
}

TEST(write_tracker, a_covered_local_failure_answers_success_once_the_secondary_wrote_it) {
  for (auto mode : {replication_mode::fullsync, replication_mode::memsync, replication_mode::async}) {
    auto t = tracker(mode);
    t.start(1, false, true);
    EXPECT_FALSE(t.remote(1, remote_stage::received).answer);
    auto a = t.local_covered(1, 5);
    EXPECT_FALSE(a.answer) << to_string(mode) << ": received is not enough without a local copy";
    auto b = t.remote(1, remote_stage::written);
    EXPECT_TRUE(b.answer) << to_string(mode);
    EXPECT_EQ(b.error, 0u) << to_string(mode) << ": one success is enough";
    EXPECT_TRUE(b.finished);
  }
}

TEST(write_tracker, a_covered_local_failure_fails_when_the_secondary_fails_too) {
  auto t = tracker(replication_mode::async);
  t.start(1, false, true);
  t.local_covered(1, 5);
  auto b = t.remote(1, remote_stage::failed);
  EXPECT_TRUE(b.answer);
  EXPECT_EQ(b.error, 5u) << "no copy anywhere: the local error";
  EXPECT_TRUE(b.remote_failed);
}

TEST(write_tracker, a_failed_remote_answers_with_the_local_result_and_reports_the_failure) {
  auto t = tracker(replication_mode::fullsync);
  t.start(1, false, true);
  t.remote(1, remote_stage::failed);
  auto a = t.local_done(1, 0);
  EXPECT_TRUE(a.answer);
  EXPECT_EQ(a.error, 0u);
  EXPECT_TRUE(a.finished);
  EXPECT_TRUE(a.remote_failed) << "the extent must stay dirty for the resync";
}

TEST(write_tracker, a_local_error_reaches_the_client) {
  auto t = tracker(replication_mode::fullsync);
  t.start(1, false, false);
  auto a = t.local_done(1, 5);
  EXPECT_TRUE(a.answer);
  EXPECT_EQ(a.error, 5u);
  EXPECT_TRUE(a.finished);
}

TEST(write_tracker, unreplicated_writes_finish_with_the_local_write) {
  auto t = tracker(replication_mode::memsync);
  t.start(7, false, false);
  auto a = t.local_done(7, 0);
  EXPECT_TRUE(a.answer);
  EXPECT_TRUE(a.finished);
  EXPECT_TRUE(t.awaiting_remote().empty());
}

TEST(write_tracker, unknown_ids_change_nothing) {
  auto t = tracker(replication_mode::fullsync);
  EXPECT_FALSE(t.local_done(3, 0).answer);
  EXPECT_FALSE(t.remote(3, remote_stage::written).finished);
}

TEST(write_tracker, overlapping_writes_run_one_after_the_other_in_arrival_order) {
  auto t = tracker(replication_mode::fullsync);
  EXPECT_TRUE(t.arrive(1, 0, 4096));
  EXPECT_FALSE(t.arrive(2, 2048, 8192)) << "overlaps 1";
  EXPECT_FALSE(t.arrive(3, 6000, 7000)) << "overlaps 2, which waits: keeps its turn";
  EXPECT_TRUE(t.arrive(4, 65536, 70000)) << "disjoint";
  EXPECT_EQ(t.held(), 2u);
  EXPECT_EQ(t.release(1), std::vector<uint64_t>{2});
  EXPECT_TRUE(t.release(3).empty()) << "3 never ran";
  EXPECT_EQ(t.release(2), std::vector<uint64_t>{3});
  EXPECT_EQ(t.held(), 0u);
}

TEST(write_tracker, disjoint_held_writes_start_together) {
  auto t = tracker(replication_mode::fullsync);
  ASSERT_TRUE(t.arrive(1, 0, 10000));
  ASSERT_FALSE(t.arrive(2, 0, 100));
  ASSERT_FALSE(t.arrive(3, 5000, 6000));
  EXPECT_EQ(t.release(1), (std::vector<uint64_t>{2, 3}));
}

TEST(write_tracker, adjacent_ranges_do_not_overlap_and_flushes_never_wait) {
  auto t = tracker(replication_mode::fullsync);
  EXPECT_TRUE(t.arrive(1, 0, 4096));
  EXPECT_TRUE(t.arrive(2, 4096, 8192));
  EXPECT_TRUE(t.arrive(3, 0, 0)) << "a flush";
}

TEST(write_tracker, a_changed_policy_applies_to_writes_in_flight) {
  auto t = tracker(replication_mode::fullsync);
  t.start(1, false, true);
  EXPECT_FALSE(t.local_done(1, 0).answer);
  t.set_policy(policy_for(replication_mode::async));
  EXPECT_TRUE(t.remote(1, remote_stage::received).answer);
}

TEST(write_tracker, an_answer_without_the_secondarys_copy_says_so) {
  auto t = tracker(replication_mode::memsync);
  t.start(1, false, true);
  t.start(2, false, true);
  EXPECT_FALSE(t.remote(1, remote_stage::received).alone);
  auto a = t.local_done(1, 0);
  EXPECT_TRUE(a.answer);
  EXPECT_FALSE(a.alone) << "the secondary received it";
  t.local_done(2, 0);
  auto b = t.remote(2, remote_stage::failed);
  EXPECT_TRUE(b.answer);
  EXPECT_TRUE(b.alone) << "the link went before the secondary had it";
}

TEST(write_tracker, a_read_waits_for_every_earlier_overlapping_write_running_or_held) {
  auto t = tracker(replication_mode::memsync);
  ASSERT_TRUE(t.arrive(1, 0, 4096));
  ASSERT_FALSE(t.arrive(2, 0, 8192));
  EXPECT_FALSE(t.arrive_read(3, 4096, 8192)) << "overlaps held write 2 only: still behind it";
  EXPECT_FALSE(t.arrive_read(4, 0, 512)) << "overlaps running write 1";
  EXPECT_TRUE(t.arrive_read(5, 65536, 69632)) << "disjoint";
  EXPECT_EQ(t.release(1), std::vector<uint64_t>{2}) << "reads behind write 2 keep waiting";
  EXPECT_EQ(t.release(2), (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(t.held(), 0u);
}

TEST(write_tracker, reads_share_a_range_and_a_later_write_waits_for_them) {
  auto t = tracker(replication_mode::memsync);
  ASSERT_TRUE(t.arrive_read(1, 0, 4096));
  ASSERT_TRUE(t.arrive_read(2, 0, 4096)) << "reads never wait for each other";
  EXPECT_FALSE(t.arrive(3, 2048, 4096)) << "a write waits for the reads before it";
  EXPECT_FALSE(t.arrive_read(4, 0, 4096)) << "a read waits for the write before it";
  EXPECT_TRUE(t.release(1).empty()) << "read 2 still runs";
  EXPECT_EQ(t.release(2), std::vector<uint64_t>{3});
  EXPECT_EQ(t.release(3), std::vector<uint64_t>{4});
  EXPECT_TRUE(t.release(4).empty());
  EXPECT_TRUE(t.arrive(5, 0, 4096)) << "nothing runs any more";
}

TEST(write_tracker, a_held_read_does_not_hold_a_later_read_back) {
  auto t = tracker(replication_mode::memsync);
  ASSERT_TRUE(t.arrive(1, 0, 4096));
  ASSERT_FALSE(t.arrive_read(2, 0, 8192));
  EXPECT_TRUE(t.arrive_read(3, 4096, 8192)) << "overlaps only read 2";
  EXPECT_FALSE(t.arrive(4, 6000, 7000)) << "a write waits for held read 2 and running read 3";
  EXPECT_EQ(t.release(1), std::vector<uint64_t>{2});
  EXPECT_TRUE(t.release(3).empty()) << "read 2 still runs";
  EXPECT_EQ(t.release(2), std::vector<uint64_t>{4});
}

} // namespace
} // namespace hast
