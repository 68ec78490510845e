#include "actors/daemon.hpp"

#include "actors/data_thread.hpp"

#include "actors/events.hpp"
#include "actors/peer.hpp"
#include "actors/supervisor.hpp"
#include "io/net/asio.hpp"
#include "io/net/control_channel.hpp"
#include "io/process/hooks.hpp"
#include "io/net/metrics_server.hpp"
#include "io/net/peer_listeners.hpp"
#include "io/net/peer_router.hpp"
#include "base/metrics.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <pthread.h>
#include <sysexits.h>
#include <thread>
#include <unistd.h>

namespace hast {

namespace {

// hastctl waits for the slowest thing the supervisor waits for: a role change.
constexpr auto control_timeout = role_change_timeout + supervisor_margin;

std::string render_error(caf::actor_system& sys, const caf::error& err) {
  return sys.render(err);  // the "hast" renderer (configure below) gives our sentence
}

nlohmann::json names_of(const nlohmann::json& request) {
  auto names = request.value("resources", nlohmann::json::array());
  if (!names.is_array())
    throw std::invalid_argument("\"resources\" must be an array");
  return names;
}

/// `hastctl events`: the confirmed connection goes to the event hub.
void handle_stream(const event_hub_actor& hub, const nlohmann::json& request, int fd) {
  event_subscriber sub{fd, {}};
  try {
    for (auto& name : names_of(request).get<std::vector<std::string>>())
      if (name != "all")
        sub.resources.push_back(name);
  } catch (const std::exception& e) {
    spdlog::warn("control: closing an event stream: malformed request: {}", e.what());
    ::close(fd);
    return;
  }
  caf::anon_send(hub, atom::subscribe_v, std::move(sub));
}

/// GET /metrics: every resource's status, as Prometheus text.
result<std::string> render_scrape(caf::actor_system& sys, const supervisor_actor& sup) {
  caf::scoped_actor self{sys, true};
  result<std::string> out = status{errc::io_error, "no answer"};
  self->request(sup, resource_answer_timeout + supervisor_margin, atom::status_v, std::vector<std::string>{})
    .receive([&](std::vector<resource_status>& all) { out = render_metrics(all, HAST_VERSION); },
             [&](caf::error& err) {
               out = status{errc::io_error, "status: " + render_error(sys, err)};
             });
  return out;
}

} // namespace

/// Turns one control request into a typed message to the supervisor.
nlohmann::json handle_control(caf::actor_system& sys, const supervisor_actor& sup,
                              const nlohmann::json& request) {
  caf::scoped_actor self{sys, true};
  auto command = request.at("command").get<std::string>();
  nlohmann::json reply;
  auto on_error = [&](caf::error& err) { reply = {{"error", render_error(sys, err)}}; };
  auto names = names_of(request).get<std::vector<std::string>>();
  if (command == "role") {
    role_request req;
    auto target = parse_role(request.at("role").get<std::string>());
    if (!target)
      return {{"error", "unknown role '" + request.at("role").get<std::string>() + "'"}};
    req.target = *target;
    req.resources = names;
    req.force = request.value("force", false);
    self->request(sup, control_timeout, atom::role_v, req)
      .receive(
        [&](std::vector<role_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back(
              {{"resource", o.resource}, {"previous", to_string(o.previous)}, {"error", o.error},
               {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else if (command == "status") {
    self->request(sup, control_timeout, atom::status_v, names)
      .receive(
        [&](std::vector<resource_status>& all) {
          auto list = nlohmann::json::array();
          for (auto& st : all)
            list.push_back(to_json(st));
          reply = {{"resources", list}};
        },
        on_error);
  } else if (command == "resync") {
    if (!request.value("discard_local", false))
      return {{"error", "resync needs --discard-local (this node gives up its own changes)"}};
    self->request(sup, control_timeout, atom::resync_v, names)
      .receive(
        [&](std::vector<role_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back(
              {{"resource", o.resource}, {"error", o.error}, {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else if (command == "verify") {
    self->request(sup, control_timeout, atom::verify_v, names, request.value("repair", false),
                  request.value("stop", false))
      .receive(
        [&](std::vector<verify_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back({{"resource", o.resource}, {"message", o.message}, {"error", o.error},
                            {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else if (command == "grow") {
    self->request(sup, control_timeout, atom::grow_v, names, request.value("assume_clean", false))
      .receive(
        [&](std::vector<verify_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back({{"resource", o.resource}, {"message", o.message}, {"error", o.error},
                            {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else {
    spdlog::warn("control: unknown command '{}'", command);
    reply = {{"error", "unknown command '" + command + "'"}};
  }
  return reply;
}

namespace {

/// CAF workers, and as many Asio threads: half the cores each, at least one.
unsigned worker_threads() {
  return std::max(1u, std::thread::hardware_concurrency() / 2);
}

} // namespace

caf::actor_system_config& configure(caf::actor_system_config& cfg) {
  // Chosen by measurement (docs/DESIGN.md, "Threads"): on a 2-core VM one
  // CAF worker and one Asio thread beat two of each (fewer wake-ups per
  // request: 0.7 context switches per 4k write at QD32 instead of 3), and a
  // worker that runs dry waits on its condition variable (woken by the next
  // message) instead of polling with 50 us sleeps, which halved QD1 latency
  // and CPU per write.
  cfg.set("scheduler.max-threads", static_cast<size_t>(worker_threads()));
  cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
  cfg.add_error_category(caf::atom("hast"),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           // Our errors carry one sentence; show it as is.
                           if (ctx.size() == 1 && ctx.match_element<std::string>(0))
                             return ctx.get_as<std::string>(0);
                           std::string text{describe(static_cast<errc>(code))};
                           if (!ctx.empty())
                             text += ": " + caf::to_string(ctx);
                           return text;
                         });
  return cfg;
}

namespace {

/// Runs the daemon from the first actor to the last: control socket, peer
/// listener, signal loop, ordered shutdown. Returns the exit status when
/// every actor is done.
int serve(caf::actor_system& sys, asio::io_context& io, std::shared_ptr<data_threads> data,
          node_config& config, const daemon_options& options, const sigset_t& signals) {
  int exit_status = 0;
  auto hub = sys.spawn(event_hub);
  data->attach(sys);
  // The supervisor, and with it every resource (their providers, NBD
  // exports, stale /dev/hast clean-up), starts only once this hastd owns
  // its control socket: a second hastd stops there and touches nothing.
  supervisor_actor sup;
  std::atomic<bool> supervising{false};

  // The control socket; a reload with a new `control` opens another one
  // and closes this (FreeBSD moves it the same way).
  auto control_at = [&](const std::string& path) {
    return std::make_unique<control::server>(
      path,
      [&](const nlohmann::json& req) {
        if (!supervising.load(std::memory_order_acquire))
          return nlohmann::json{{"error", "hastd is starting"}};
        return handle_control(sys, sup, req);
      },
      [&](const nlohmann::json& req, int fd) { handle_stream(hub, req, fd); });
  };
  auto ctl = control_at(unix_socket_path(config.control));
  std::string pidfile = options.pidfile;  // the pid file in use, if it follows the configuration
  status started = ctl->start();
  // As FreeBSD's hastd: another hastd on the control socket is EX_TEMPFAIL,
  // an address that cannot be listened on EX_OSERR.
  int start_failure = started ? EX_OSERR : (started.code() == errc::busy ? EX_TEMPFAIL : EX_OSERR);
  if (started) {
    sup = sys.spawn(supervisor, config,
                    runtime{&io, options.disk_engine, options.env, {}, hub, data});
    supervising.store(true, std::memory_order_release);
  }
  metrics_server metrics{[&] { return render_scrape(sys, sup); }};
  // What the peer listeners admit goes to the supervisor; an admitted peer
  // link is served by its resource's data thread from then on.
  peer_routes routes;
  routes.peer = [sup](peer_link_ptr link, peer::hello_message hello) {
    caf::anon_send(sup, atom::peer_accept_v, accepted_link{std::move(link), std::move(hello)});
  };
  routes.witness = [sup](peer_link_ptr link, peer::hello_message hello) {
    caf::anon_send(sup, atom::witness_accept_v, accepted_link{std::move(link), std::move(hello)});
  };
  routes.home = [data](const std::string& resource) -> asio::io_context& {
    return data->of(resource).io();
  };
  auto router = std::make_shared<peer_router>(io, config, std::move(routes));
  peer_listeners listeners{io, router};
  if (started)
    started = listeners.open(wanted_listen(config));
  if (started && !config.metrics.empty())
    started = metrics.start(config.metrics);
  if (auto st = started; !st) {
    spdlog::critical("{}", st.message());
    if (options.on_ready)
      options.on_ready(st.message());
    exit_status = start_failure;
  } else {
    spdlog::info("started on node {} with {} resource(s); control socket {}", config.node,
                 config.resources.size(), config.control);
    if (options.on_ready)
      options.on_ready("");
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0)
        continue;
      if (sig == SIGHUP) {
        spdlog::info("SIGHUP: reloading {}", config.path);
        if (options.on_reloading)
          options.on_reloading();
        try {
          auto fresh = load_config(config.path, config.node);
          read_secrets(fresh);
          for (const auto& warning : unauthenticated_links(fresh))
            spdlog::warn("reload: {}", warning);
          // A new control socket opens first: if it cannot, nothing of the
          // new configuration applies (as in FreeBSD's hastd_reload()).
          std::unique_ptr<control::server> moved_ctl;
          if (unix_socket_path(fresh.control) != unix_socket_path(config.control)) {
            moved_ctl = control_at(unix_socket_path(fresh.control));
            if (auto st = moved_ctl->start(); !st)
              throw config_error({config.path, 0}, "control",
                                 "cannot serve the new control address " + fresh.control + ": "
                                   + st.message());
          }
          if (fresh.metrics != config.metrics)
            spdlog::warn("reload: a new metrics address takes effect at the next start");
          caf::scoped_actor self{sys, true};
          self->request(sup, control_timeout, atom::reload_v, fresh)
            .receive([](std::string&) {},
                     [&](caf::error& err) {
                       spdlog::error("reload failed: {}", render_error(sys, err));
                     });
          router->update(fresh);
          // What this loop owns applies here: the peer listen set and the
          // pid file. (Resources are the supervisor's, above.)
          std::string applied;
          if (auto change = listeners.apply(wanted_listen(fresh)); !change.empty())
            applied = "listen " + change;
          if (options.move_pidfile && !pidfile.empty() && fresh.pidfile != pidfile) {
            if (auto err = options.move_pidfile(fresh.pidfile); err.empty()) {
              applied += (applied.empty() ? "" : "; ") + ("pidfile " + pidfile + " -> " + fresh.pidfile);
              pidfile = fresh.pidfile;
            } else {
              spdlog::error("reload: the pid file stays {}: {}", pidfile, err);
            }
          }
          if (moved_ctl) {
            // Waits for a request the old socket is serving to be answered.
            ctl->stop();
            ctl = std::move(moved_ctl);
            applied += (applied.empty() ? "" : "; ")
                       + ("control " + config.control + " -> " + fresh.control);
          }
          spdlog::info("reload: {}", applied.empty() ? "listen and pidfile unchanged" : applied);
          config = std::move(fresh);
        } catch (const config_error& e) {
          spdlog::error("reload refused, keeping the running configuration: {}", e.what());
        }
        if (options.on_reloaded)
          options.on_reloaded(config);
        continue;
      }
      spdlog::info("{}: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      if (options.on_stopping)
        options.on_stopping();
      break;
    }
  }
  // Ordered shutdown: no new commands, then resources stop serving and
  // flush, then the actors go, then Asio.
  ctl->stop();
  metrics.stop();
  listeners.stop();
  if (sup) {
    caf::scoped_actor self{sys, true};
    self->request(sup, resource_stop_timeout + supervisor_margin, atom::stop_v)
      .receive([](bool) {},
               [&](caf::error& err) {
                 spdlog::error("shutdown: {}", render_error(sys, err));
                 exit_status = EX_SOFTWARE;
               });
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  }
  caf::anon_send_exit(hub, caf::exit_reason::user_shutdown);  // closes the event streams
  sys.await_all_actors_done();
  data->detach();
  return exit_status;
}

} // namespace

int run_daemon(node_config config, const daemon_options& options) {
  // Signals are taken synchronously by this thread only; every thread made
  // from here on inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // Declared before the actor system so that it outlives every actor: an
  // actor object may be freed during the system's destruction, and what it
  // still owns (an NBD server) posts its last clean-up to Asio.
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> io_threads;
  std::atomic<unsigned> io_running{worker_threads()};
  for (unsigned i = 0; i < worker_threads(); ++i)
    io_threads.emplace_back([&io, &io_running] {
      run_catching(io, [](std::string_view what) {
        spdlog::error("an I/O handler failed: {}; the I/O thread goes on", what);
      });
      --io_running;
    });
  // Each resource's data path runs on a thread of its own (docs/DESIGN.md,
  // "Threads"); the threads outlive the actor system as the
  // shared context does.
  auto data = std::make_shared<data_threads>();
  int exit_status = 0;
  {
    caf::actor_system_config cfg;
    use_pinning_scheduler(configure(cfg));
    caf::actor_system sys{cfg};
    exit_status = serve(sys, io, data, config, options, signals);
  }
  data->stop(std::chrono::seconds(5));
  // The work queued by the actors' last steps runs before Asio stops (an NBD
  // server's clean-up removes its socket file); whatever still waits after a
  // few seconds (a connection nobody closed) is abandoned.
  work.reset();
  auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (io_running > 0 && std::chrono::steady_clock::now() < drain_until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  io.stop();
  for (auto& t : io_threads)
    t.join();
  finish_hooks();  // the last role change's hook runs before we exit
  spdlog::info("stopped");
  return exit_status;
}

} // namespace hast
