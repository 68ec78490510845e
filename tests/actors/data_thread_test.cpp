// The data threads: an actor pinned to one runs there and on no other
// thread, whoever sends to it (an actor outside the workers, an actor on a
// worker, the clock); actors that are not pinned, also those a pinned actor
// spawns, stay on CAF's workers; handlers posted to the thread's context run
// where its actors run; an actor pinned late moves there; and an actor
// system with data threads shuts down when they detach first. A real actor
// system with the pinning scheduler: CAF's test coordinator has no threads
// to pin to. So these tests wait for real threads: on a future, a condition
// variable or a reply, never for a fixed time; `patience` only bounds a wait
// that a failing test would never end.

#include "actors/data_thread.hpp"
#include "io/net/asio.hpp"

#include <caf/all.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace hast {
namespace {

using namespace std::chrono_literals;

using count_atom = caf::atom_constant<caf::atom("dtcount")>;
using ping_atom = caf::atom_constant<caf::atom("dtping")>;
using pong_atom = caf::atom_constant<caf::atom("dtpong")>;
using start_atom = caf::atom_constant<caf::atom("dtstart")>;
using relay_atom = caf::atom_constant<caf::atom("dtrelay")>;
using spawn_atom = caf::atom_constant<caf::atom("dtspawn")>;
using pin_atom = caf::atom_constant<caf::atom("dtpin")>;

constexpr auto patience = 10s; // upper bound for anything to happen

/// Ends the program with a test failure if it is still alive after
/// `limit`: a hang (an actor system that never finishes) fails the test
/// instead of stalling ctest.
class watchdog {
public:
  watchdog(std::chrono::seconds limit, std::string what)
      : thread_([this, limit, what = std::move(what)] {
          std::unique_lock lock{mutex_};
          if (cv_.wait_for(lock, limit, [&] { return done_; }))
            return;
          ADD_FAILURE() << "hung for " << limit.count() << " s: " << what;
          std::fflush(stdout);
          std::_Exit(EXIT_FAILURE);
        }) {}

  ~watchdog() {
    {
      std::lock_guard lock{mutex_};
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_; // last: starts once the members above exist
};

/// The thread that runs `thread`'s context.
std::thread::id id_of(data_thread& thread) {
  std::promise<std::thread::id> id;
  asio::post(thread.io(), [&id] { id.set_value(std::this_thread::get_id()); });
  auto got = id.get_future();
  if (got.wait_for(patience) != std::future_status::ready) {
    ADD_FAILURE() << "the data thread does not run its context";
    return {};
  }
  return got.get();
}

/// Where an actor's handlers ran: one entry per call, from any thread.
struct trace {
  struct call {
    std::thread::id thread;
    bool on_data_thread; // data_thread::running_here() of `home`
    bool data_context;   // the actor's execution unit was a data thread
  };

  explicit trace(data_thread* home = nullptr) : home(home) {}

  void note(caf::local_actor* self) {
    call c{std::this_thread::get_id(), home != nullptr && home->running_here(),
           dynamic_cast<data_thread*>(self->context()) != nullptr};
    std::lock_guard lock{mutex};
    calls.push_back(c);
    grew.notify_all();
  }

  /// Waits until `n` calls were noted; false if not within `limit`.
  bool wait_for_calls(size_t n, std::chrono::seconds limit) {
    std::unique_lock lock{mutex};
    return grew.wait_for(lock, limit, [&] { return calls.size() >= n; });
  }

  std::vector<call> snapshot() {
    std::lock_guard lock{mutex};
    return calls;
  }

  data_thread* const home;
  std::mutex mutex;
  std::condition_variable grew;
  std::vector<call> calls;
};

/// Records every call, its initialisation included; counts the ints it got.
struct recorder_state {
  static inline const char* name = "recorder";
  int values = 0;
};

caf::behavior recorder(caf::stateful_actor<recorder_state>* self, std::shared_ptr<trace> log) {
  log->note(self);
  return {
      [=](int) {
        log->note(self);
        ++self->state.values;
      },
      [=](count_atom) {
        log->note(self);
        return self->state.values;
      },
  };
}

/// An actor on a worker that sends `n` ints to `target` when asked.
caf::behavior relay(caf::event_based_actor* self, std::shared_ptr<trace> log) {
  return {
      [=](relay_atom, caf::actor target, int n) {
        log->note(self);
        for (int i = 0; i < n; ++i)
          self->send(target, i);
        return n;
      },
  };
}

/// Answers each ping with a pong to its sender.
caf::behavior ponger(caf::event_based_actor* self, std::shared_ptr<trace> log) {
  return {
      [=](ping_atom, int n) {
        log->note(self);
        self->send(caf::actor_cast<caf::actor>(self->current_sender()), pong_atom::value, n);
      },
  };
}

struct pinger_state {
  static inline const char* name = "pinger";
  caf::typed_response_promise<int> done;
  int rounds = 0;
  int pongs = 0;
};

/// Plays `rounds` ping-pongs with a peer, one at a time; answers with the
/// pongs it got.
caf::behavior pinger(caf::stateful_actor<pinger_state>* self, std::shared_ptr<trace> log) {
  return {
      [=](start_atom, int rounds, caf::actor peer) -> caf::result<int> {
        log->note(self);
        self->state.rounds = rounds;
        self->state.done = self->make_response_promise<int>();
        self->send(peer, ping_atom::value, 1);
        return self->state.done;
      },
      [=](pong_atom, int n) {
        log->note(self);
        auto& s = self->state;
        ++s.pongs;
        if (n == s.rounds)
          s.done.deliver(s.pongs);
        else
          self->send(caf::actor_cast<caf::actor>(self->current_sender()), ping_atom::value, n + 1);
      },
  };
}

/// Spawns a recorder that is not pinned and sends it `n` ints.
caf::behavior spawner(caf::event_based_actor* self, std::shared_ptr<trace> log,
                      std::shared_ptr<trace> child_log) {
  return {
      [=](spawn_atom, int n) {
        log->note(self);
        auto child = self->spawn(recorder, child_log);
        for (int i = 0; i < n; ++i)
          self->send(child, i);
        return child;
      },
  };
}

/// Answers whether it runs on `home`; pins itself there when asked.
caf::behavior mover(caf::event_based_actor* self, std::shared_ptr<trace> log) {
  log->note(self);
  return {
      [=](int) { log->note(self); },
      [=](count_atom) {
        log->note(self);
        return log->home->running_here();
      },
      [=](pin_atom) {
        log->note(self);
        pin(self, *log->home);
        return true;
      },
  };
}

caf::abstract_actor* raw(const caf::actor& hdl) {
  return caf::actor_cast<caf::abstract_actor*>(hdl);
}

/// An actor system on the pinning scheduler and one data thread, made and
/// ended in the daemon's order (actors/daemon.cpp): the thread before the
/// system; every actor done, the thread forgets the system, the system
/// goes, then the thread stops.
class data_thread_test : public ::testing::Test {
protected:
  data_thread_test() : thread("hast.test") {
    cfg.set("scheduler.max-threads", 2);
    use_pinning_scheduler(cfg);
    sys.emplace(cfg);
    thread.attach(*sys);
    home_id = id_of(thread);
  }

  ~data_thread_test() override {
    watchdog dog{patience, "the actor system did not shut down"};
    sys->await_all_actors_done();
    thread.detach();
    sys.reset();
    thread.stop(1s);
  }

  /// Asks `hdl` for its count until it reaches `n`; the last count seen.
  /// Each ask waits for its reply, which comes after what reached `hdl`'s
  /// mailbox before it.
  int wait_count(caf::scoped_actor& self, const caf::actor& hdl, int n) {
    auto until = std::chrono::steady_clock::now() + patience;
    int seen = -1;
    while (std::chrono::steady_clock::now() < until) {
      self->request(hdl, patience, count_atom::value)
          .receive([&](int count) { seen = count; },
                   [&](caf::error& e) { ADD_FAILURE() << caf::to_string(e); });
      if (seen >= n)
        break;
    }
    return seen;
  }

  /// Spawns `fun` pinned to the data thread before its first activation,
  /// as the resource spawns its disk_io.
  template <class F, class... Ts> caf::actor spawn_pinned(F fun, Ts&&... xs) {
    auto hdl = sys->spawn<caf::lazy_init>(fun, std::forward<Ts>(xs)...);
    pin(raw(hdl), thread);
    return hdl;
  }

  /// The calls of `log` that ran off the data thread.
  size_t off_home(trace& log) {
    size_t off = 0;
    for (auto& c : log.snapshot())
      if (c.thread != home_id || !c.on_data_thread || !c.data_context)
        ++off;
    return off;
  }

  data_thread thread; // outlives the system
  caf::actor_system_config cfg;
  std::optional<caf::actor_system> sys;
  std::thread::id home_id;
};

TEST_F(data_thread_test, a_pinned_actor_handles_every_message_on_its_data_thread_whoever_sends_it) {
  auto log = std::make_shared<trace>(&thread);
  auto probe = spawn_pinned(recorder, log);
  auto relay_log = std::make_shared<trace>(&thread);
  auto sender = sys->spawn(relay, relay_log);
  caf::scoped_actor self{*sys};
  // From outside the workers.
  for (int i = 0; i < 100; ++i)
    self->send(probe, i);
  // From an actor that is not pinned, on a worker.
  self->request(sender, patience, relay_atom::value, probe, 100)
      .receive([](int) {}, [](caf::error& e) { FAIL() << caf::to_string(e); });
  // Through the clock.
  for (int i = 0; i < 10; ++i)
    self->delayed_send(probe, std::chrono::milliseconds(i % 3), i);
  caf::delayed_anon_send(probe, 5ms, 7);
  EXPECT_EQ(wait_count(self, probe, 211), 211);

  auto calls = log->snapshot();
  EXPECT_GE(calls.size(), 212u); // its start, 211 ints, the counts
  EXPECT_EQ(off_home(*log), 0u) << "of " << calls.size() << " calls";
  // The relay ran where unpinned actors run.
  auto relayed = relay_log->snapshot();
  ASSERT_EQ(relayed.size(), 1u);
  EXPECT_NE(relayed[0].thread, home_id);
  EXPECT_FALSE(relayed[0].data_context);
}

TEST_F(data_thread_test, two_actors_pinned_to_one_thread_play_ten_thousand_ping_pongs_there) {
  constexpr int rounds = 10000;
  auto ping_log = std::make_shared<trace>(&thread);
  auto pong_log = std::make_shared<trace>(&thread);
  auto a = spawn_pinned(pinger, ping_log);
  auto b = spawn_pinned(ponger, pong_log);
  caf::scoped_actor self{*sys};
  int pongs = -1;
  self->request(a, patience, start_atom::value, rounds, b)
      .receive([&](int n) { pongs = n; }, [](caf::error& e) { FAIL() << caf::to_string(e); });
  EXPECT_EQ(pongs, rounds);
  EXPECT_EQ(ping_log->snapshot().size(), static_cast<size_t>(rounds) + 1); // start + pongs
  EXPECT_EQ(pong_log->snapshot().size(), static_cast<size_t>(rounds));
  EXPECT_EQ(off_home(*ping_log), 0u);
  EXPECT_EQ(off_home(*pong_log), 0u);
}

TEST_F(data_thread_test, an_actor_spawned_by_a_pinned_actor_and_not_pinned_runs_on_a_worker) {
  auto log = std::make_shared<trace>(&thread);
  auto child_log = std::make_shared<trace>(&thread);
  auto parent = spawn_pinned(spawner, log, child_log);
  caf::scoped_actor self{*sys};
  caf::actor child;
  self->request(parent, patience, spawn_atom::value, 50)
      .receive([&](caf::actor c) { child = std::move(c); },
               [](caf::error& e) { FAIL() << caf::to_string(e); });
  ASSERT_TRUE(child);
  EXPECT_EQ(wait_count(self, child, 50), 50);

  EXPECT_EQ(off_home(*log), 0u) << "the parent left its data thread";
  auto calls = child_log->snapshot();
  ASSERT_GE(calls.size(), 52u); // its start, 50 ints, the counts
  for (auto& c : calls) {
    EXPECT_NE(c.thread, home_id);
    EXPECT_FALSE(c.on_data_thread);
    EXPECT_FALSE(c.data_context);
  }
}

TEST_F(data_thread_test, a_handler_posted_to_the_threads_context_runs_where_its_pinned_actors_run) {
  auto log = std::make_shared<trace>(&thread);
  auto probe = spawn_pinned(recorder, log);
  caf::scoped_actor self{*sys};
  self->send(probe, 1);
  EXPECT_EQ(wait_count(self, probe, 1), 1);

  std::promise<std::pair<std::thread::id, bool>> posted;
  asio::post(thread.io(), [&] {
    posted.set_value({std::this_thread::get_id(), thread.running_here()});
  });
  auto future = posted.get_future();
  ASSERT_EQ(future.wait_for(patience), std::future_status::ready);
  auto [where, here] = future.get();
  EXPECT_TRUE(here);
  EXPECT_FALSE(thread.running_here()) << "the test's own thread is no data thread";
  auto calls = log->snapshot();
  ASSERT_FALSE(calls.empty());
  for (auto& c : calls)
    EXPECT_EQ(c.thread, where);
}

TEST_F(data_thread_test, an_actor_pinned_after_it_ran_on_a_worker_moves_to_the_data_thread) {
  auto log = std::make_shared<trace>(&thread);
  auto actor = sys->spawn(mover, log);
  caf::scoped_actor self{*sys};
  bool here = true;
  self->request(actor, patience, count_atom::value)
      .receive([&](bool b) { here = b; }, [](caf::error& e) { FAIL() << caf::to_string(e); });
  EXPECT_FALSE(here) << "an actor not pinned ran on the data thread";
  // It pins itself, as the resource does, while running on a worker.
  self->request(actor, patience, pin_atom::value)
      .receive([](bool) {}, [](caf::error& e) { FAIL() << caf::to_string(e); });
  // Its activation on the worker may still be finishing and would take
  // what arrives meanwhile: wait until it waits for mail (a state that
  // nothing notifies about, so polled; the worker is another thread).
  auto* mailbox_owner = dynamic_cast<caf::scheduled_actor*>(raw(actor));
  ASSERT_NE(mailbox_owner, nullptr);
  auto until = std::chrono::steady_clock::now() + patience;
  while (!mailbox_owner->mailbox().blocked() && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  ASSERT_TRUE(mailbox_owner->mailbox().blocked());
  auto before = log->snapshot().size();
  EXPECT_EQ(off_home(*log), before) << "every call so far ran on a worker";

  for (int i = 0; i < 100; ++i)
    self->send(actor, i);
  caf::delayed_anon_send(actor, 2ms, 100);
  self->request(actor, patience, count_atom::value)
      .receive([&](bool b) { here = b; }, [](caf::error& e) { FAIL() << caf::to_string(e); });
  EXPECT_TRUE(here);
  EXPECT_TRUE(log->wait_for_calls(before + 102, patience));
  auto calls = log->snapshot();
  ASSERT_EQ(calls.size(), before + 102);
  for (size_t i = before; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].thread, home_id) << "call " << i;
    EXPECT_TRUE(calls[i].on_data_thread) << "call " << i;
  }
}

/// The data thread a parent pins its child to. A struct, because CAF's
/// spawn inspects pointer arguments (as actors/disk_io.hpp's disk_home).
struct parent_home {
  data_thread* thread = nullptr;
};

/// Spawns, linked, one child pinned to `home` (lazily, as the resource
/// spawns its disk_io) and one that is not; answers how many it spawned.
caf::behavior parent(caf::event_based_actor* self, parent_home home, std::shared_ptr<trace> log) {
  return {
      [=](spawn_atom, int) {
        log->note(self);
        auto pinned = self->spawn<caf::linked + caf::lazy_init>(recorder, log);
        pin(caf::actor_cast<caf::abstract_actor*>(pinned), *home.thread);
        auto loose = self->spawn<caf::linked>(recorder, std::make_shared<trace>());
        self->send(pinned, 1);
        self->send(loose, 1);
        return 2;
      },
  };
}

TEST(data_threads,
     the_system_shuts_down_after_pinned_actors_that_spawned_actors_ended_once_detached) {
  auto data = std::make_shared<data_threads>();
  auto& early = data->of("early"); // made before the system, as in the daemon
  std::vector<std::shared_ptr<trace>> logs;
  {
    watchdog dog{patience, "~actor_system did not return after data_threads::detach()"};
    {
      caf::actor_system_config cfg;
      cfg.set("scheduler.max-threads", 2);
      use_pinning_scheduler(cfg);
      caf::actor_system sys{cfg};
      data->attach(sys);
      auto& late = data->of("late"); // made while the system runs
      std::vector<caf::actor> parents;
      for (auto* home : {&early, &late}) {
        logs.push_back(std::make_shared<trace>(home));
        parents.push_back(sys.spawn<caf::lazy_init>(parent, parent_home{home}, logs.back()));
        pin(raw(parents.back()), *home);
      }
      {
        caf::scoped_actor self{sys};
        for (auto& p : parents)
          self->request(p, patience, spawn_atom::value, 1)
              .receive([](int n) { EXPECT_EQ(n, 2); },
                       [](caf::error& e) { FAIL() << caf::to_string(e); });
      }
      for (auto& p : parents)
        caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
      parents.clear();
      sys.await_all_actors_done();
      data->detach();
    }
  }
  data->stop(1s);
  // The parents spawned from their data threads (what gives those threads
  // a reference to the system's logger).
  for (auto& log : logs) {
    auto calls = log->snapshot();
    ASSERT_FALSE(calls.empty());
    EXPECT_TRUE(calls.front().on_data_thread) << "the parent spawned off its data thread";
  }
}

} // namespace
} // namespace hast
