// The event hub: a subscriber gets every event of its resources as control
// frames, in order; one that does not read is closed once its socket buffer
// is full, one that hung up is closed at the next check, and neither costs
// the others their events. Driven by CAF's deterministic test scheduler;
// subscribers are socket pairs.

#include "actors/events.hpp"
#include "io/net/control_channel.hpp"
#include "tests/actors/deterministic.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hast {
namespace {

class event_hub_test : public deterministic_actors {
protected:
  event_hub_test() : hub(sys.spawn(event_hub)) {}
  ~event_hub_test() override {
    caf::anon_send_exit(hub, caf::exit_reason::user_shutdown);
    run();
    for (int fd : ours)
      ::close(fd);
  }

  /// Runs what is due, without timeouts: the hub's hang-up check
  /// schedules itself again, so firing every timeout would never end.
  void run() {
    while (sched.run() > 0) {
    }
  }

  /// Subscribes a new socket pair's far end; returns our end.
  int subscribe(std::vector<std::string> resources = {}) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    self->send(hub, atom::subscribe_v, event_subscriber{sv[1], std::move(resources)});
    run();
    ours.push_back(sv[0]);
    return sv[0];
  }

  void publish(const std::string& name, const std::string& resource, int n = 1) {
    for (int i = 0; i < n; ++i)
      self->send(hub, atom::event_v,
                 event_record{name, resource, 1000 + i, {{"i", std::to_string(i)}}});
    run();
  }

  /// The frames waiting on `fd` now (without blocking), as event names, and
  /// whether the hub closed its end.
  std::pair<std::vector<std::string>, bool> drain(int fd) {
    std::vector<std::string> names;
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
      auto body = control::read_frame(fd);
      if (!body)
        return {names, body.error().code() == errc::disconnected};
      names.push_back(event_from_json(nlohmann::ordered_json::parse(*body)).name);
    }
  }

  event_hub_actor hub;
  std::vector<int> ours;
};

TEST_F(event_hub_test, a_subscriber_gets_the_events_of_its_resources_in_order) {
  auto all = subscribe();
  auto only_b = subscribe({"b"});
  publish("connect", "a");
  publish("role", "b");
  publish("disconnect", "a");
  auto [got_all, closed_all] = drain(all);
  auto [got_b, closed_b] = drain(only_b);
  EXPECT_EQ(got_all, (std::vector<std::string>{"connect", "role", "disconnect"}));
  EXPECT_EQ(got_b, (std::vector<std::string>{"role"}));
  EXPECT_FALSE(closed_all);
  EXPECT_FALSE(closed_b);
}

TEST_F(event_hub_test, a_burst_larger_than_the_socket_takes_reaches_a_reader_whole) {
  auto reader = subscribe();
  publish("role", "r", 2000);  // a socket pair takes a few hundred small frames
  std::vector<std::string> got;
  for (int i = 0; i < 100 && got.size() < 2000; ++i) {
    auto [names, closed] = drain(reader);
    ASSERT_FALSE(closed) << "a reader was dropped for a burst";
    got.insert(got.end(), names.begin(), names.end());
    sched.trigger_timeouts();  // the retry tick
    run();
  }
  EXPECT_EQ(got.size(), 2000u);
}

TEST_F(event_hub_test, a_subscriber_that_does_not_read_is_closed_and_the_others_go_on) {
  auto reader = subscribe();
  auto stalled = subscribe();
  // Far more than the backlog limit, read by one subscriber as it goes.
  size_t seen = 0;
  for (int round = 0; round < 60; ++round) {
    publish("sync", "r", 500);
    for (int i = 0; i < 20; ++i) {
      seen += drain(reader).first.size();
      sched.trigger_timeouts();
      run();
    }
  }
  EXPECT_EQ(seen, 60u * 500u) << "the reading subscriber lost events";
  auto [got, closed] = drain(stalled);
  EXPECT_TRUE(closed) << "the hub kept a subscriber that never read";
  EXPECT_GT(got.size(), 0u);
  EXPECT_LT(got.size(), 60u * 500u);
}

TEST_F(event_hub_test, a_subscriber_that_hung_up_is_closed_at_the_next_check) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  self->send(hub, atom::subscribe_v, event_subscriber{sv[1], {}});
  run();
  struct stat before {};
  ASSERT_EQ(::fstat(sv[1], &before), 0);
  // Still open while the reader is there.
  sched.trigger_timeouts();
  run();
  struct stat now {};
  ASSERT_EQ(::fstat(sv[1], &now), 0);
  EXPECT_EQ(now.st_ino, before.st_ino) << "the hub closed a subscriber that is still there";
  ::close(sv[0]);  // the reader goes away; no event follows
  // The next check closes the hub's descriptor: the number then names
  // nothing (or, reused, another file).
  sched.trigger_timeouts();
  run();
  EXPECT_TRUE(::fstat(sv[1], &now) != 0 || now.st_ino != before.st_ino)
    << "the hub kept a subscriber that hung up";
}

} // namespace
} // namespace hast
