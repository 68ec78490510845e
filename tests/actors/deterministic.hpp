#pragma once

// What the deterministic actor tests share: an actor system on CAF's test
// scheduler, an Asio context that the test's thread polls, a scoped actor
// to talk from, a scratch directory, and the loops that drive them all from
// the test's thread.
//
// Work: the actors run when the scheduler runs them (sched.run()), Asio
// handlers when the loops poll `io`. The disk I/O stays real (pread, pwrite,
// fsync on the provider file) but goes through the posted disk engine
// (io/storage/disk_engine.hpp): an op runs in a handler on `io`, so a
// resource spawned with test_runtime() does its disk I/O on the test's
// thread, when the loops poll. Nothing runs on a thread of its own, and
// "idle" is exact: no actor ready, no handler ready.
//
// Time: the actors' timers (delayed sends, request timeouts) are on CAF's
// simulated clock and never wait on the wall clock. run_until(pred) runs to
// idle, checks pred, and only if it is false fires the next timeout (as time
// passing would), for at most a number of rounds; a predicate that acts
// (answers the frames it finds) gets further checks first. advance(d) shows
// that something does not happen within d: it runs to idle, then lets d of
// simulated time pass, firing each timeout due in it at its time. Neither
// reads or waits on the wall clock.
//
// What this does not cover: an actor spawned detached or a resource given
// data threads (runtime::data) runs on a thread of its own; no test here
// does either (the data threads have their own test, data_thread_test, on
// a real actor system). And a test whose other end is a real socket (the
// kernel moves its bytes: reconnecting_link_test) waits in Asio for the
// next ready handler when idle; it says so where it does.

#include "actors/runtime.hpp"
#include "io/net/asio.hpp"
#include "tests/scratch_dir.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

namespace hast {

class deterministic_actors : public ::testing::Test {
protected:
  static caf::actor_system_config& init(caf::actor_system_config& cfg) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    return cfg;
  }

  deterministic_actors()
    : dir(scratch.dir()),
      sys(init(cfg)),
      self(sys, true),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {}

  ~deterministic_actors() override { drain(); }

  /// What a resource or supervisor under test runs on: `io`, and the posted
  /// disk engine, whose ops run in handlers on `io`.
  runtime test_runtime() {
    runtime rt;
    rt.io = &io;
    rt.disk = disk_engine_kind::posted;
    return rt;
  }

  /// Runs ready actors and ready Asio handlers (disk ops among them) until
  /// neither has anything left; fires no timeout. Returns how many ran.
  size_t settle() {
    size_t total = 0;
    for (;;) {
      size_t n = sched.run();
      n += io.poll();
      if (n == 0)
        return total;
      total += n;
      steps += n;
    }
  }

  /// Runs to idle until `pred` holds; when it is false at idle, fires the
  /// next timeout, as time passing would. A predicate may act (answer the
  /// frames it finds, then ask for a status): while its checks make work,
  /// up to `acting` checks in a row run before a timeout fires. A check
  /// that only asks makes work too (the question and its answer), so past
  /// that many the next timeout fires anyway. False when `pred` does not
  /// hold after `rounds` timeouts, or when nothing is left to fire.
  template <class Pred>
  bool run_until(Pred pred, size_t rounds = 1000, size_t acting = 200) {
    size_t fired = 0;
    size_t in_a_row = 0;
    for (;;) {
      settle();
      const auto before = steps;
      if (pred())
        return true;
      settle();
      if (steps != before && ++in_a_row < acting)  // it acted, also through a nested loop
        continue;
      in_a_row = 0;
      if (fired++ == rounds || !sched.trigger_timeout())
        return false;
    }
  }

  /// Lets `d` of simulated time pass from idle: every timeout due within it
  /// fires at its time, and what it makes ready runs before the next one.
  void advance(caf::timespan d) {
    auto& clock = sched.clock();
    const auto target = clock.now() + d;
    settle();
    while (clock.has_pending_timeout() && clock.schedule().begin()->first <= target) {
      sched.trigger_timeout();
      settle();
    }
    if (clock.current_time < target)
      clock.current_time = target;
  }

  /// After the actors under test were told to exit: runs them out, firing
  /// what timeouts are left (a pending request timeout keeps an actor
  /// alive, and ~actor_system would wait for it).
  void drain() {
    settle();
    for (int i = 0; i < 100 && sched.trigger_timeouts() > 0; ++i)
      settle();
  }

  scratch_dir scratch{"actors"};  // outlives the actor system, which may still write in it
  std::filesystem::path dir;
  asio::io_context io;  // outlives the actors, whose sockets and disk ops use it
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  caf::scheduler::test_coordinator& sched;
  size_t steps = 0;  // actor and handler runs so far, by every loop
};

} // namespace hast
