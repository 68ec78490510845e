// The witness's decisions without actors or sockets: who gets the lease,
// when another node may take it over, and who is up to date enough to be
// promoted automatically (docs/FAILOVER.md).

#include "actors/lease_book.hpp"

#include <gtest/gtest.h>

namespace hast {
namespace {

using namespace std::chrono_literals;
using clock = lease_book::clock;

peer::lease_request request(std::string kind, std::string node) {
  peer::lease_request r;
  r.kind = std::move(kind);
  r.node = std::move(node);
  r.resuid = 42;
  return r;
}

struct book_fixture : ::testing::Test {
  clock::time_point t0 = clock::now();
  lease_book book{2000ms, lease_record{}, t0};
  bool changed = false;

  /// nodeA becomes primary by hand and reports its secondary in sync.
  uint64_t make_a_primary(clock::time_point at, uint64_t localcnt = 3) {
    auto c = request("claim", "nodeA");
    c.manual = true;
    c.localcnt = localcnt;
    auto g = book.decide(c, at, changed);
    EXPECT_TRUE(g.granted) << g.reason;
    auto r = request("renew", "nodeA");
    r.epoch = g.epoch;
    r.localcnt = localcnt;
    r.in_sync = true;
    EXPECT_TRUE(book.decide(r, at, changed).granted);
    return g.epoch;
  }
};

TEST_F(book_fixture, a_fresh_witness_promotes_nobody_automatically) {
  auto c = request("claim", "nodeB");
  auto r = book.decide(c, t0 + 10s, changed);
  EXPECT_FALSE(r.granted);
  EXPECT_NE(r.reason.find("never heard"), std::string::npos) << r.reason;
  EXPECT_FALSE(changed);
}

TEST_F(book_fixture, a_claim_by_hand_waits_out_a_restarted_witness_quiet_period) {
  lease_record old;
  old.holder = "nodeB";
  old.epoch = 4;
  book = lease_book{2000ms, old, t0};
  auto c = request("claim", "nodeA");
  c.manual = true;
  EXPECT_FALSE(book.decide(c, t0 + 1s, changed).granted) << "2 s lease + 0.5 s margin not over";
  auto g = book.decide(c, t0 + 2600ms, changed);
  EXPECT_TRUE(g.granted);
  EXPECT_TRUE(changed);
  EXPECT_EQ(book.record().holder, "nodeA");
  EXPECT_EQ(g.lease_ms, 2000u);
  EXPECT_GT(g.epoch, 4u);
}

TEST_F(book_fixture, the_secondary_takes_over_only_after_the_lease_and_the_margin) {
  auto start = t0 + 3s;
  auto epoch = make_a_primary(start);
  auto c = request("claim", "nodeB");
  c.remotecnt = 3;
  EXPECT_FALSE(book.decide(c, start + 2000ms, changed).granted) << "lease just ended: margin left";
  EXPECT_FALSE(book.decide(c, start + 2499ms, changed).granted);
  auto g = book.decide(c, start + 2500ms, changed);
  ASSERT_TRUE(g.granted) << g.reason;
  EXPECT_EQ(book.record().holder, "nodeB");
  EXPECT_GT(g.epoch, epoch);
  // The old primary's renew is now refused and names the new holder.
  auto r = request("renew", "nodeA");
  r.epoch = epoch;
  auto refused = book.decide(r, start + 2600ms, changed);
  EXPECT_FALSE(refused.granted);
  EXPECT_EQ(refused.holder, "nodeB");
}

TEST_F(book_fixture, a_renewing_primary_keeps_the_secondary_out) {
  auto start = t0 + 3s;
  auto epoch = make_a_primary(start);
  auto r = request("renew", "nodeA");
  r.epoch = epoch;
  r.localcnt = 3;
  r.in_sync = true;
  auto c = request("claim", "nodeB");
  c.remotecnt = 3;
  for (auto t = start; t < start + 20s; t += 500ms) {
    EXPECT_TRUE(book.decide(r, t, changed).granted);
    EXPECT_FALSE(book.decide(c, t + 100ms, changed).granted);
  }
}

TEST_F(book_fixture, a_secondary_that_misses_writes_is_never_promoted_automatically) {
  auto start = t0 + 3s;
  auto epoch = make_a_primary(start);
  auto r = request("renew", "nodeA");
  r.epoch = epoch;
  r.localcnt = 4;
  r.in_sync = false;  // the secondary went away; the primary writes alone
  EXPECT_TRUE(book.decide(r, start + 100ms, changed).granted);
  EXPECT_TRUE(changed) << "the witness must persist this before it answers";
  auto c = request("claim", "nodeB");
  c.remotecnt = 4;
  auto refused = book.decide(c, start + 60s, changed);
  EXPECT_FALSE(refused.granted);
  EXPECT_NE(refused.reason.find("missing writes"), std::string::npos) << refused.reason;
  // By hand it is the operator's decision.
  c.manual = true;
  EXPECT_TRUE(book.decide(c, start + 60s, changed).granted);
}

TEST_F(book_fixture, an_older_generation_or_another_resource_id_is_not_eligible) {
  auto start = t0 + 3s;
  make_a_primary(start, 5);
  auto c = request("claim", "nodeB");
  c.remotecnt = 4;
  auto older = book.decide(c, start + 10s, changed);
  EXPECT_FALSE(older.granted);
  EXPECT_NE(older.reason.find("older"), std::string::npos) << older.reason;
  c.remotecnt = 5;
  c.resuid = 7;
  EXPECT_FALSE(book.decide(c, start + 10s, changed).granted);
  c.resuid = 42;
  EXPECT_TRUE(book.decide(c, start + 10s, changed).granted);
}

TEST_F(book_fixture, the_old_holder_takes_its_own_lease_back_at_once) {
  auto start = t0 + 3s;
  auto epoch = make_a_primary(start);
  auto c = request("claim", "nodeA");
  auto g = book.decide(c, start + 100ms, changed);
  EXPECT_TRUE(g.granted) << g.reason;
  EXPECT_GT(g.epoch, epoch);
}

TEST_F(book_fixture, a_release_lets_an_up_to_date_secondary_in_without_the_margin) {
  auto start = t0 + 3s;
  auto epoch = make_a_primary(start);
  auto rel = request("release", "nodeA");
  rel.epoch = epoch;
  rel.localcnt = 3;
  rel.in_sync = true;
  EXPECT_TRUE(book.decide(rel, start + 100ms, changed).granted);
  auto own = request("claim", "nodeA");
  EXPECT_FALSE(book.decide(own, start + 150ms, changed).granted)
    << "a node that gave the lease away does not take it back automatically";
  auto c = request("claim", "nodeB");
  c.remotecnt = 3;
  EXPECT_TRUE(book.decide(c, start + 200ms, changed).granted);
}

TEST_F(book_fixture, a_restarted_witness_remembers_the_record_but_waits_for_old_leases) {
  auto start = t0 + 3s;
  make_a_primary(start);
  lease_book again{2000ms, book.record(), start + 1s};
  auto c = request("claim", "nodeB");
  c.remotecnt = 3;
  EXPECT_FALSE(again.decide(c, start + 2s, changed).granted);
  EXPECT_TRUE(again.decide(c, start + 1s + 2500ms, changed).granted);
}

} // namespace
} // namespace hast
