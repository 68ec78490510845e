// The supervisor's answers when there is nothing to ask or nobody answers:
// a request that names no resource is answered at once, a name that is not
// configured is answered alone (error 1) while the others are acted on, and
// a resource that does not answer during a reload costs neither the
// supervisor nor the other resources. Driven by CAF's deterministic test
// scheduler from the test's thread, on simulated time, the resources' disk
// I/O included (tests/actors/deterministic.hpp).

#include "actors/supervisor.hpp"
#include "io/net/asio.hpp"
#include "io/storage/metadata.hpp"
#include "io/storage/provider.hpp"
#include "tests/actors/deterministic.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <optional>

namespace hast {
namespace {

class supervision : public deterministic_actors {
protected:
  ~supervision() override {
    if (sup)
      caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    drain();
  }

  /// A standalone resource on a fresh provider file.
  resource_config make_resource(const std::string& name) {
    resource_config rc;
    rc.name = name;
    rc.provider_name = name;
    rc.local = (dir / (name + ".img")).string();
    rc.remote = "none";
    rc.device = false;  // no /dev/hast in actor tests
    rc.nbd = "uds://" + (dir / (name + ".nbd")).string();
    auto prov = provider::create_file(rc.local, 16u << 20);
    EXPECT_TRUE(prov.has_value());
    if (prov) {
      EXPECT_TRUE(create_metadata(*prov, name, default_extent_size, default_keepdirty, 16u << 20));
    }
    return rc;
  }

  void start(node_config config) {
    config.node = "nodeA";
    runtime rt = test_runtime();
    // The event stream: what reaches it is kept in `events`.
    rt.events = sys.spawn([this](event_hub_actor::pointer) -> event_hub_actor::behavior_type {
      return {
        [this](atom::event, const event_record& e) { events.push_back(e); },
        [](atom::subscribe, const event_subscriber&) {},
        [](atom::events_tick) {},
      };
    });
    sup = sys.spawn(supervisor, config, rt);
    settle();
  }

  /// Sends `args` to the supervisor and runs until an answer of type T (or
  /// an error) arrives, firing timeouts when idle (run_until); nullopt when
  /// none came or an error did.
  template <class T, class... Ts>
  std::optional<T> ask(Ts&&... args) {
    self->send(sup, std::forward<Ts>(args)...);
    std::optional<T> out;
    bool answered = false;
    run_until([&] {
      self->receive([&](T& x) { out = std::move(x), answered = true; },
                    [&](caf::error&) { answered = true; },
                    caf::after(std::chrono::seconds(0)) >> [] {});
      return answered;
    });
    return out;
  }

  bool supervisor_alive() {
    auto st = ask<std::vector<resource_status>>(atom::status_v, std::vector<std::string>{});
    return st.has_value();
  }

  /// The address of the actor that serves `name` now (null: none), asked
  /// without firing timeouts (a restart's back-off stays pending).
  /// Idle without a timeout, the answer is there or it will not come.
  caf::actor_addr serving(const std::string& name) {
    self->send(sup, atom::serving_v, name);
    settle();
    caf::actor_addr out;
    self->receive([&](caf::actor_addr& x) { out = std::move(x); }, [&](caf::error&) {},
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return out;
  }

  supervisor_actor sup;
  std::vector<event_record> events;

  /// "name resource" of each event so far, in order.
  std::vector<std::string> event_names() const {
    std::vector<std::string> out;
    for (auto& e : events)
      out.push_back(e.name + " " + e.resource);
    return out;
  }
};

TEST_F(supervision, role_all_on_a_node_without_resources_answers_an_empty_list) {
  start(node_config{});
  role_request req;
  req.target = role::init;
  req.resources = {"all"};
  auto answer = ask<std::vector<role_outcome>>(atom::role_v, req);
  ASSERT_TRUE(answer.has_value()) << "no answer to `role init all` without resources";
  EXPECT_TRUE(answer->empty());
}

TEST_F(supervision, a_request_naming_an_unknown_resource_acts_on_the_others) {
  node_config config;
  config.resources.push_back(make_resource("r1"));
  start(config);
  role_request req;
  req.target = role::primary;
  req.resources = {"nosuch", "r1"};
  auto changed = ask<std::vector<role_outcome>>(atom::role_v, req);
  ASSERT_TRUE(changed.has_value()) << "the request failed as a whole";
  ASSERT_EQ(changed->size(), 2u);
  EXPECT_EQ((*changed)[0].resource, "nosuch");
  EXPECT_EQ((*changed)[0].error_number, ehast_noentry);
  EXPECT_NE((*changed)[0].error.find("unknown resource 'nosuch'"), std::string::npos)
    << (*changed)[0].error;
  EXPECT_EQ((*changed)[1].resource, "r1");
  EXPECT_EQ((*changed)[1].error, "");
  EXPECT_EQ((*changed)[1].error_number, 0);

  auto st = ask<std::vector<resource_status>>(atom::status_v,
                                              std::vector<std::string>{"r1", "nosuch"});
  ASSERT_TRUE(st.has_value()) << "status failed as a whole";
  ASSERT_EQ(st->size(), 2u);
  EXPECT_EQ((*st)[0].name, "r1");
  EXPECT_EQ((*st)[0].error, 0);
  EXPECT_EQ((*st)[0].current_role, role::primary) << "r1 was not made primary";
  EXPECT_EQ((*st)[1].name, "nosuch");
  EXPECT_EQ((*st)[1].error, ehast_noentry);

  // Only unknown names: each answered, nothing else asked.
  auto none = ask<std::vector<resource_status>>(atom::status_v, std::vector<std::string>{"x", "y"});
  ASSERT_TRUE(none.has_value());
  ASSERT_EQ(none->size(), 2u);
  EXPECT_EQ((*none)[1].error, ehast_noentry);
}

TEST_F(supervision, a_resource_that_does_not_answer_during_a_reload_keeps_its_settings) {
  node_config config;
  config.resources.push_back(make_resource("r1"));
  config.resources.push_back(make_resource("r2"));
  start(config);
  ASSERT_TRUE(supervisor_alive());

  // A change of `local` needs a restart, for which the supervisor first asks
  // the resource for its role. The supervisor takes the reload, then the
  // request times out before r1 is ever scheduled: r1 did not answer.
  auto fresh = config;
  fresh.resources[0].local = (dir / "elsewhere.img").string();
  self->send(sup, atom::reload_v, fresh);
  ASSERT_TRUE(sched.prioritize(sup));
  sched.run_once();
  EXPECT_GT(sched.trigger_timeouts(), 0u);
  bool summary = false;  // the reload's summary
  EXPECT_TRUE(run_until([&] {
    self->receive([&](std::string&) { summary = true; }, [&](caf::error&) { summary = true; },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return summary;
  }));

  ASSERT_TRUE(supervisor_alive()) << "the supervisor quit when a resource did not answer";
  auto st = ask<std::vector<resource_status>>(atom::status_v, std::vector<std::string>{"r1", "r2"});
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(st->size(), 2u);
  EXPECT_EQ((*st)[0].name, "r1");
  EXPECT_EQ((*st)[1].name, "r2");
  EXPECT_EQ((*st)[1].current_role, role::init);
}

TEST_F(supervision, names_the_actor_serving_each_resource_and_none_for_an_unknown_name) {
  node_config config;
  config.resources.push_back(make_resource("r1"));
  config.resources.push_back(make_resource("r2"));
  start(config);
  const auto r1 = serving("r1");
  const auto r2 = serving("r2");
  ASSERT_TRUE(static_cast<bool>(r1));
  ASSERT_TRUE(static_cast<bool>(r2));
  EXPECT_NE(r1, r2);
  EXPECT_EQ(serving("r1"), r1) << "the same actor serves it while nothing failed";
  EXPECT_FALSE(static_cast<bool>(serving("nope")));
}

TEST_F(supervision, a_failed_resource_is_restarted_after_a_back_off_in_the_role_it_had) {
  node_config config;
  config.resources.push_back(make_resource("r1"));
  start(config);
  role_request req;
  req.target = role::primary;
  req.resources = {"r1"};
  auto changed = ask<std::vector<role_outcome>>(atom::role_v, req);
  ASSERT_TRUE(changed.has_value());
  ASSERT_EQ(changed->size(), 1u);
  ASSERT_EQ((*changed)[0].error, "");
  const auto first = serving("r1");
  ASSERT_TRUE(static_cast<bool>(first));

  // The resource fails on purpose.
  // As a crash would: an unhandled exception.
  caf::anon_send_exit(first, caf::exit_reason::unhandled_exception);
  settle();
  auto waiting = ask<std::vector<resource_status>>(atom::status_v, std::vector<std::string>{"r1"});
  // `ask` fires timeouts while it waits: the restart may have happened.
  ASSERT_TRUE(waiting.has_value());
  caf::actor_addr second;
  ASSERT_TRUE(run_until([&] {
    second = serving("r1");
    return second && second != first;
  })) << "the supervisor did not restart the failed resource";
  ASSERT_TRUE(run_until([&] {
    auto st = ask<std::vector<resource_status>>(atom::status_v, std::vector<std::string>{"r1"});
    return st && st->size() == 1u && (*st)[0].current_role == role::primary;
  })) << "the restarted resource is not primary again";
  // The event stream saw it all, in order.
  EXPECT_EQ(event_names(), (std::vector<std::string>{"role r1", "failed r1", "restarted r1", "role r1"}));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[1].fields.at(0).first, "reason");
  EXPECT_FALSE(events[1].fields.at(0).second.empty());
  EXPECT_EQ(events[2].fields, (event_fields{{"role", "primary"}}));
  EXPECT_EQ(events[3].fields, (event_fields{{"old", "init"}, {"new", "primary"}}));
}

TEST_F(supervision, a_resource_waiting_for_its_restart_reports_an_error_number) {
  node_config config;
  config.resources.push_back(make_resource("r1"));
  start(config);
  const auto first = serving("r1");
  ASSERT_TRUE(static_cast<bool>(first));
  // As a crash would: an unhandled exception.
  caf::anon_send_exit(first, caf::exit_reason::unhandled_exception);
  settle();
  // Asked without firing the back-off's timeout: still waiting.
  self->send(sup, atom::status_v, std::vector<std::string>{"r1"});
  settle();
  std::optional<std::vector<resource_status>> st;
  self->receive([&](std::vector<resource_status>& x) { st = std::move(x); },
                [&](caf::error&) {}, caf::after(std::chrono::seconds(0)) >> [] {});
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(st->size(), 1u);
  EXPECT_EQ((*st)[0].error, EAGAIN);
  EXPECT_NE((*st)[0].last_error.find("being restarted"), std::string::npos) << (*st)[0].last_error;
  EXPECT_FALSE(static_cast<bool>(serving("r1"))) << "restarted before its back-off";
}

} // namespace
} // namespace hast
