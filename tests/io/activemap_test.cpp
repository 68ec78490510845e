#include "io/storage/activemap.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>
#include <vector>

namespace hast {
namespace {

constexpr uint32_t es = 4096 * 16; // 64 KiB extents keep the numbers small

bool bit(const std::vector<uint8_t> &map, uint64_t i) {
  return (map[i >> 3] & (1u << (i & 7))) != 0;
}

TEST(Activemap, RoundsThePartialLastExtentUp) {
  activemap am(10 * es + 1, es, 4);
  EXPECT_EQ(am.extents(), 11u);
  EXPECT_EQ(am.bitmap_bytes(), 2u);
  EXPECT_EQ(am.extent_of(0), 0u);
  EXPECT_EQ(am.extent_of(es - 1), 0u);
  EXPECT_EQ(am.extent_of(es), 1u);
  EXPECT_EQ(am.extent_of(10 * es), 10u);

  activemap exact(8 * es, es, 4);
  EXPECT_EQ(exact.extents(), 8u);
  EXPECT_EQ(exact.bitmap_bytes(), 1u);
}

TEST(Activemap, ADataSizeWhoseBitmapCannotExistIsRefusedNotWrapped) {
  // (2^64 - 1 + 4095) / 4096 wraps to 0 extents in a naive sum, leaving an
  // empty bitmap that every write would index past.
  EXPECT_THROW(activemap(UINT64_MAX, 4096, 4), std::invalid_argument);
  EXPECT_THROW(activemap(UINT64_MAX - 4095, 2 * 1024 * 1024, 4), std::invalid_argument);
}

TEST(Activemap, ARangeRunningPastTheEndOfTheAddressSpaceIsClampedToTheDataArea) {
  activemap am(10 * es, es, 0);
  // offset + length - 1 wraps to below offset in a naive sum.
  EXPECT_TRUE(am.mark_sync(3 * es, UINT64_MAX));
  EXPECT_EQ(am.sync_extents(), 7u);
  EXPECT_FALSE(am.needs_sync(2));
  EXPECT_TRUE(am.needs_sync(9));
  EXPECT_TRUE(am.write_start(es, UINT64_MAX - 2));
  EXPECT_EQ(am.pending(1), 1u);
  EXPECT_EQ(am.pending(9), 1u);
  EXPECT_TRUE(am.write_complete(es, UINT64_MAX - 2));
  EXPECT_EQ(am.pending(1), 0u);
  EXPECT_EQ(am.pending(9), 0u);
}

TEST(Activemap, FirstWriteToAnExtentRequiresAnImageWriteBeforeTheData) {
  activemap am(16 * es, es, 4);
  EXPECT_TRUE(am.write_start(0, 4096));
  EXPECT_TRUE(am.is_dirty(0));
  EXPECT_EQ(am.pending(0), 1u);
  // A second write to the same extent while the first is in flight: no.
  EXPECT_FALSE(am.write_start(4096, 4096));
  EXPECT_EQ(am.pending(0), 2u);
}

TEST(Activemap, ExtentsInTheKeepdirtySetStayDirtyAfterCompletion) {
  activemap am(16 * es, es, 4);
  ASSERT_TRUE(am.write_start(0, 4096));
  EXPECT_FALSE(am.write_complete(0, 4096));
  EXPECT_EQ(am.pending(0), 0u);
  EXPECT_TRUE(am.is_dirty(0));
  EXPECT_EQ(am.dirty_extents(), 1u);
  // Writing it again costs no metadata write.
  EXPECT_FALSE(am.write_start(0, 4096));
  EXPECT_FALSE(am.write_complete(0, 4096));
}

TEST(Activemap, TheFirstAndLastExtentMapToTheEdgeBits) {
  activemap am(10 * es + 4096, es, 8); // 11 extents, the last one 4 KiB
  ASSERT_TRUE(am.write_start(0, 1));
  ASSERT_TRUE(am.write_start(10 * es, 4096));
  auto map = am.bitmap();
  ASSERT_EQ(map.size(), 2u);
  EXPECT_EQ(map[0], 0x01);
  EXPECT_EQ(map[1], 0x04); // extent 10 is byte 1, mask 1<<2
  EXPECT_TRUE(am.is_dirty(10));
  EXPECT_FALSE(am.is_dirty(11)); // beyond the map
}

TEST(Activemap, AWriteSpanningTwoExtentsTouchesBoth) {
  activemap am(16 * es, es, 4);
  EXPECT_TRUE(am.write_start(es - 512, 1024));
  EXPECT_EQ(am.pending(0), 1u);
  EXPECT_EQ(am.pending(1), 1u);
  EXPECT_EQ(am.pending(2), 0u);
  EXPECT_EQ(am.dirty_extents(), 2u);
  // Ending exactly at an extent boundary does not touch the next one.
  EXPECT_TRUE(am.write_start(2 * es, es));
  EXPECT_EQ(am.pending(2), 1u);
  EXPECT_EQ(am.pending(3), 0u);
}

TEST(Activemap, ZeroLengthAndOutOfRangeWritesTouchNothing) {
  activemap am(4 * es, es, 4);
  EXPECT_FALSE(am.write_start(0, 0));
  EXPECT_FALSE(am.write_start(4 * es, 4096));
  EXPECT_EQ(am.dirty_extents(), 0u);
  // A write running past the end is clamped to the last extent.
  EXPECT_TRUE(am.write_start(3 * es, 2 * es));
  EXPECT_EQ(am.dirty_extents(), 1u);
}

TEST(Activemap, EvictionFromAFullKeepdirtySetCleansTheTailExtent) {
  activemap am(16 * es, es, 2);
  for (uint64_t e = 0; e < 2; ++e) {
    ASSERT_TRUE(am.write_start(e * es, 4096));
    ASSERT_FALSE(am.write_complete(e * es, 4096));
  }
  EXPECT_EQ(am.dirty_extents(), 2u);
  // Touch extent 0 so that extent 1 becomes the LRU tail.
  EXPECT_FALSE(am.write_start(0, 4096));
  EXPECT_FALSE(am.write_complete(0, 4096));
  // A third extent enters the set and evicts extent 1.
  EXPECT_TRUE(am.write_start(2 * es, 4096));
  EXPECT_TRUE(am.is_dirty(0));
  EXPECT_FALSE(am.is_dirty(1));
  EXPECT_TRUE(am.is_dirty(2));
  EXPECT_FALSE(am.write_complete(2 * es, 4096));
  EXPECT_EQ(am.dirty_extents(), 2u);
}

TEST(Activemap, AnEvictedExtentWithAWriteInFlightStaysDirtyUntilItCompletes) {
  activemap am(16 * es, es, 1);
  ASSERT_TRUE(am.write_start(0, 4096)); // extent 0 in flight
  // Extent 1 evicts extent 0 from the set, but 0 is still in flight.
  EXPECT_TRUE(am.write_start(es, 4096));
  EXPECT_TRUE(am.is_dirty(0));
  // Completion of extent 0, now outside the set, cleans it on disk.
  EXPECT_TRUE(am.write_complete(0, 4096));
  EXPECT_FALSE(am.is_dirty(0));
  EXPECT_TRUE(am.is_dirty(1));
}

TEST(Activemap, ReenteringTheImageWhileAlreadyDirtyNeedsNoWrite) {
  activemap am(16 * es, es, 1);
  am.mark_sync(0, 1);
  ASSERT_TRUE(am.write_start(es, 4096));
  ASSERT_FALSE(am.write_complete(es, 4096));
  // Extent 0 enters the set (evicting 1) but was already in the image
  // through the syncmap; only the eviction changed the image.
  EXPECT_TRUE(am.write_start(0, 4096));
  EXPECT_FALSE(am.is_dirty(1));
  ASSERT_FALSE(am.write_complete(0, 4096));
  // Extent 0 again, still at the head of the set: nothing changes.
  EXPECT_FALSE(am.write_start(0, 4096));
}

TEST(Activemap, WithoutKeepdirtyEveryCompletionCleansTheExtent) {
  activemap am(16 * es, es, 0);
  EXPECT_TRUE(am.write_start(0, 4096));
  EXPECT_FALSE(am.write_start(0, 4096));
  EXPECT_FALSE(am.write_complete(0, 4096));
  EXPECT_TRUE(am.write_complete(0, 4096));
  EXPECT_EQ(am.dirty_extents(), 0u);
}

TEST(Activemap, ExtentsToSyncStayDirtyAfterTheirWritesComplete) {
  activemap am(16 * es, es, 0);
  ASSERT_TRUE(am.write_start(3 * es, 4096));
  EXPECT_FALSE(am.mark_sync(3 * es, 4096)); // already dirty: image unchanged
  EXPECT_FALSE(am.write_complete(3 * es, 4096));
  EXPECT_TRUE(am.is_dirty(3));
  EXPECT_TRUE(am.needs_sync(3));
  EXPECT_EQ(am.sync_extents(), 1u);
  EXPECT_TRUE(am.mark_sync(5 * es, 2 * es));
  EXPECT_EQ(am.sync_extents(), 3u);
  EXPECT_FALSE(am.mark_sync(5 * es, 1));
  EXPECT_EQ(am.sync_extents(), 3u);
}

TEST(Activemap, MergeNextSyncAndClearSyncWalkTheSyncmap) {
  activemap am(20 * es, es, 4);                // 20 extents, 3 bytes
  std::vector<uint8_t> peer{0x81, 0x00, 0xF8}; // extents 0, 7, and 19 (+ bits past the end)
  am.merge(peer);
  EXPECT_EQ(am.sync_extents(), 3u);
  EXPECT_EQ(am.next_sync(0), 0u);
  EXPECT_EQ(am.next_sync(1), 7u);
  EXPECT_EQ(am.next_sync(8), 19u);
  EXPECT_EQ(am.next_sync(20), std::nullopt);
  am.clear_sync(7);
  EXPECT_EQ(am.next_sync(1), 19u);
  EXPECT_EQ(am.sync_extents(), 2u);
  am.clear_sync(7); // twice is harmless
  EXPECT_EQ(am.sync_extents(), 2u);
  am.clear_sync(0);
  am.clear_sync(19);
  EXPECT_EQ(am.next_sync(0), std::nullopt);
  EXPECT_EQ(am.sync_extents(), 0u);
  EXPECT_EQ(am.bitmap(), (std::vector<uint8_t>{0, 0, 0}));
}

TEST(Activemap, MergeAcceptsAShorterBitmapAndOrsIntoWhatIsThere) {
  activemap am(20 * es, es, 4);
  am.mark_sync(10 * es, 1);
  am.merge(std::vector<uint8_t>{0x02});
  EXPECT_TRUE(am.needs_sync(1));
  EXPECT_TRUE(am.needs_sync(10));
  EXPECT_EQ(am.sync_extents(), 2u);
}

TEST(Activemap, MarkAllSyncCoversExactlyTheExtents) {
  activemap am(11 * es, es, 4);
  am.mark_all_sync();
  EXPECT_EQ(am.sync_extents(), 11u);
  EXPECT_EQ(am.bitmap(), (std::vector<uint8_t>{0xFF, 0x07}));
  uint64_t n = 0;
  for (auto e = am.next_sync(0); e; e = am.next_sync(*e + 1))
    ++n;
  EXPECT_EQ(n, 11u);
}

TEST(Activemap, TheImageIsTheUnionOfInFlightKeepdirtyAndSync) {
  activemap am(24 * es, es, 1);
  ASSERT_TRUE(am.write_start(9 * es, 1));     // in flight, and in the set
  ASSERT_TRUE(am.write_start(2 * es, 1));     // evicts 9 from the set; still in flight
  ASSERT_FALSE(am.write_complete(2 * es, 1)); // 2 stays through the set
  am.mark_sync(17 * es, 1);
  auto map = am.bitmap();
  EXPECT_TRUE(bit(map, 2));
  EXPECT_TRUE(bit(map, 9));
  EXPECT_TRUE(bit(map, 17));
  EXPECT_EQ(am.dirty_extents(), 3u);
  EXPECT_EQ(map, (std::vector<uint8_t>{0x04, 0x02, 0x02}));
}

TEST(Activemap, CompletingAWriteThatNeverStartedIsIgnored) {
  activemap am(4 * es, es, 0);
  EXPECT_FALSE(am.write_complete(0, 4096));
  EXPECT_EQ(am.pending(0), 0u);
}

} // namespace
} // namespace hast

namespace hast {
namespace {

TEST(activemap_mark_ahead, a_sequential_stream_needs_one_image_write_per_mark_ahead_plus_one_extents) {
  activemap am(64 * es, es, 64);
  int writes_needed = 0;
  for (uint64_t off = 0; off < 64 * es; off += es / 2) {
    if (am.write_start(off, es / 2)) {
      ++writes_needed;
      am.begin_commit();
      am.end_commit(true);
    }
    am.write_complete(off, es / 2);
  }
  // Without marking ahead: one per extent (64). With it: the first write
  // (no stream yet), then one per mark_ahead + 1 extents.
  constexpr int group = activemap::mark_ahead + 1;
  EXPECT_EQ(writes_needed, 1 + (63 + group - 1) / group);
  // Every extent the stream wrote is still dirty (keepdirty holds 64).
  EXPECT_EQ(am.dirty_extents(), 64u);
}

TEST(activemap_mark_ahead, the_extents_marked_ahead_are_durable_with_the_commit_that_marked_them) {
  activemap am(64 * es, es, 64);
  ASSERT_TRUE(am.write_start(0, es));
  ASSERT_FALSE(am.durable(es, es));  // a first write is no stream yet
  am.begin_commit();
  am.end_commit(true);
  am.write_complete(0, es);
  ASSERT_TRUE(am.write_start(es, es));  // the stream enters extent 1
  am.begin_commit();
  am.end_commit(true);
  for (uint64_t e = 2; e < 2 + activemap::mark_ahead; ++e) {
    EXPECT_TRUE(am.is_dirty(e));
    EXPECT_TRUE(am.durable(e * es, es));
  }
  EXPECT_FALSE(am.is_dirty(2 + activemap::mark_ahead));
}

TEST(activemap_mark_ahead, random_writes_mark_nothing_ahead) {
  activemap am(64 * es, es, 64);
  for (uint64_t e : {7u, 3u, 40u, 12u, 33u, 9u}) {
    am.write_start(e * es, 4096);
    am.write_complete(e * es, 4096);
  }
  EXPECT_EQ(am.dirty_extents(), 6u);
}

TEST(activemap_mark_ahead, a_small_keepdirty_set_marks_nothing_ahead) {
  activemap am(64 * es, es, 4 * activemap::mark_ahead - 1);
  for (uint64_t off = 0; off < 4 * es; off += es / 2) {
    am.write_start(off, es / 2);
    am.write_complete(off, es / 2);
  }
  EXPECT_EQ(am.dirty_extents(), 4u);
}

TEST(activemap_mark_ahead, a_stream_at_the_end_of_the_data_area_marks_only_what_exists) {
  activemap am(10 * es, es, 64);
  am.write_start(8 * es, es);
  am.write_complete(8 * es, es);
  am.write_start(9 * es, es);  // the last extent: nothing lies ahead
  am.write_complete(9 * es, es);
  EXPECT_EQ(am.dirty_extents(), 2u);
}

TEST(activemap_clean_stop, forgetting_keepdirty_leaves_only_extents_to_sync) {
  activemap am{64u << 20, 1u << 20, 8};
  am.write_start(0, 4096);
  am.write_start(5u << 20, 4096);
  EXPECT_FALSE(am.forget_keepdirty()) << "writes are still in flight";
  am.write_complete(0, 4096);
  am.write_complete(5u << 20, 4096);
  am.mark_sync(5u << 20, 4096);
  EXPECT_TRUE(am.is_dirty(0));
  EXPECT_TRUE(am.forget_keepdirty());
  EXPECT_FALSE(am.is_dirty(0)) << "a keepdirty-only extent is clean after a clean stop";
  EXPECT_TRUE(am.is_dirty(5)) << "an extent to sync stays dirty";
  am.clear_all_sync();
  EXPECT_EQ(am.dirty_extents(), 0u);
  EXPECT_EQ(am.sync_extents(), 0u);
}

} // namespace
} // namespace hast

namespace hast {
namespace {

constexpr uint64_t gc_es = 1u << 20;

TEST(activemap_group_commit, a_new_extent_is_durable_only_after_its_commit) {
  activemap am{16 * gc_es, gc_es, 4};
  am.write_start(0, 4096);
  EXPECT_FALSE(am.durable(0, 4096)) << "the image on disk starts clean";
  am.begin_commit();
  EXPECT_FALSE(am.durable(0, 4096)) << "not before the image is on disk";
  am.end_commit(true);
  EXPECT_TRUE(am.durable(0, 4096));
  EXPECT_EQ(am.commits(), 1u);
}

TEST(activemap_group_commit, one_commit_covers_every_write_that_waited_for_it) {
  activemap am{16 * gc_es, gc_es, 8};
  for (uint64_t e = 0; e < 5; ++e)
    am.write_start(e * gc_es, 4096);
  am.begin_commit();
  am.end_commit(true);
  for (uint64_t e = 0; e < 5; ++e)
    EXPECT_TRUE(am.durable(e * gc_es, 4096)) << e;
  EXPECT_EQ(am.commits(), 1u);
}

TEST(activemap_group_commit, a_write_arriving_during_a_commit_waits_for_the_next_one) {
  activemap am{16 * gc_es, gc_es, 8};
  am.write_start(0, 4096);
  am.begin_commit();
  am.write_start(3 * gc_es, 4096);  // enters after the image was taken
  am.end_commit(true);
  EXPECT_TRUE(am.durable(0, 4096));
  EXPECT_FALSE(am.durable(3 * gc_es, 4096));
  am.begin_commit();
  am.end_commit(true);
  EXPECT_TRUE(am.durable(3 * gc_es, 4096));
}

TEST(activemap_group_commit, a_commit_in_flight_that_cleans_an_extent_blocks_a_new_write_there) {
  // Extent 0 is on disk as dirty; an eviction cleans it in memory; a commit
  // of that clean image starts; a new write to extent 0 must not be issued
  // on the strength of the old image, or the commit would clean it under
  // the write.
  activemap am{16 * gc_es, gc_es, 1};
  am.write_start(0, 4096);
  am.write_complete(0, 4096);
  am.begin_commit();
  am.end_commit(true);
  ASSERT_TRUE(am.durable(0, 4096));
  am.write_start(gc_es, 4096);  // evicts extent 0
  am.write_complete(gc_es, 4096);
  am.begin_commit();            // image: extent 1 only
  am.write_start(0, 4096);      // extent 0 again
  EXPECT_FALSE(am.durable(0, 4096));
  am.end_commit(true);
  EXPECT_FALSE(am.durable(0, 4096)) << "the image now on disk has extent 0 clean";
  am.begin_commit();
  am.end_commit(true);
  EXPECT_TRUE(am.durable(0, 4096));
}

TEST(activemap_group_commit, a_failed_commit_keeps_the_previous_image) {
  activemap am{16 * gc_es, gc_es, 4};
  am.write_start(0, 4096);
  am.begin_commit();
  am.end_commit(false);
  EXPECT_FALSE(am.durable(0, 4096));
  EXPECT_FALSE(am.commit_in_flight());
  EXPECT_TRUE(am.stale());
}

TEST(activemap_group_commit, leaving_the_image_only_makes_it_stale) {
  activemap am{16 * gc_es, gc_es, 0};
  am.write_start(0, 4096);
  am.begin_commit();
  am.end_commit(true);
  EXPECT_FALSE(am.stale());
  am.write_complete(0, 4096);
  EXPECT_TRUE(am.stale()) << "the next commit carries the clean extent";
  am.begin_commit();
  am.end_commit(true);
  EXPECT_FALSE(am.stale());
}

} // namespace
} // namespace hast

namespace hast {
namespace {

TEST(activemap_group_commit, changes_since_the_last_commit_are_reported_until_the_next_one) {
  activemap am{16 * gc_es, gc_es, 0};
  EXPECT_FALSE(am.changed_since_commit());
  am.write_start(0, 4096);
  EXPECT_TRUE(am.changed_since_commit());
  am.begin_commit();
  EXPECT_FALSE(am.changed_since_commit());
  am.end_commit(true);
  am.write_complete(0, 4096);
  EXPECT_TRUE(am.changed_since_commit()) << "the extent left the image: a commit is owed";
  am.begin_commit();
  am.end_commit(false);
  EXPECT_TRUE(am.changed_since_commit()) << "a failed commit leaves it owed";
}

TEST(Activemap, GrowingKeepsTheDirtyExtentsAndAddsCleanOnes) {
  activemap am(10 * es + 4096, es, 4);
  am.mark_sync(0, 1);
  am.mark_sync(10 * es, 1);  // the partial last extent
  ASSERT_TRUE(am.write_start(3 * es, 4096));
  auto image = am.begin_commit();
  am.end_commit(true);
  am.grow(40 * es);
  EXPECT_EQ(am.datasize(), 40 * es);
  EXPECT_EQ(am.extents(), 40u);
  EXPECT_EQ(am.bitmap_bytes(), 5u);
  auto grown = am.bitmap();
  ASSERT_EQ(grown.size(), 5u);
  for (uint64_t e = 0; e < 40; ++e)
    EXPECT_EQ(bit(grown, e), e == 0 || e == 3 || e == 10) << e;
  EXPECT_EQ(am.sync_extents(), 2u);
  EXPECT_TRUE(am.durable(3 * es, 4096));  // still on disk
  // The new space: clean until marked; a write there needs a commit.
  EXPECT_FALSE(am.durable(20 * es, 4096));
  am.mark_sync(10 * es + 4096, 20 * es - 4096);  // extents 10..29
  EXPECT_EQ(am.sync_extents(), 21u);
  EXPECT_EQ(am.next_sync(11), std::optional<uint64_t>{11});
  EXPECT_TRUE(am.write_start(39 * es, es));
  am.begin_commit();
  am.end_commit(true);
  EXPECT_TRUE(am.durable(39 * es, es));
  am.write_complete(3 * es, 4096);
  am.write_complete(39 * es, es);
}

TEST(Activemap, GrowingDuringACommitExtendsTheImageInFlight) {
  activemap am(8 * es, es, 0);
  ASSERT_TRUE(am.write_start(es, 4096));
  am.begin_commit();
  am.grow(20 * es);
  ASSERT_TRUE(am.write_start(15 * es, 4096));
  EXPECT_FALSE(am.durable(15 * es, 4096));
  am.end_commit(true);
  EXPECT_TRUE(am.durable(es, 4096));
  EXPECT_FALSE(am.durable(15 * es, 4096));  // not in the image that was in flight
  EXPECT_TRUE(am.stale());
  am.begin_commit();
  am.end_commit(true);
  EXPECT_TRUE(am.durable(15 * es, 4096));
}

TEST(Activemap, GrowingToASmallerOrEqualSizeIsRefused) {
  activemap am(8 * es, es, 4);
  EXPECT_THROW(am.grow(8 * es), std::invalid_argument);
  EXPECT_THROW(am.grow(4 * es), std::invalid_argument);
  EXPECT_EQ(am.datasize(), 8 * es);
}

} // namespace
} // namespace hast
