#include "actors/daemon.hpp"

#include "actors/supervisor.hpp"
#include "io/asio.hpp"
#include "io/control_channel.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <pthread.h>
#include <thread>

namespace hast {

namespace {

constexpr auto control_timeout = std::chrono::seconds(150);

std::string render_error(caf::actor_system& sys, const caf::error& err) {
  if (err.category() == caf::atom("hast") && !err.context().empty()
      && err.context().match_element<std::string>(0))
    return err.context().get_as<std::string>(0);
  return sys.render(err);
}

nlohmann::json names_of(const nlohmann::json& request) {
  auto names = request.value("resources", nlohmann::json::array());
  if (!names.is_array())
    throw std::invalid_argument("\"resources\" must be an array");
  return names;
}

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
              {{"resource", o.resource}, {"previous", to_string(o.previous)}, {"error", o.error}});
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
  } else {
    reply = {{"error", "unknown command '" + command + "'"}};
  }
  return reply;
}

caf::actor_system_config& configure(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", std::max(2u, std::thread::hardware_concurrency()));
  cfg.add_error_category(caf::atom("hast"),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string text{describe(static_cast<errc>(code))};
                           if (!ctx.empty())
                             text += ": " + caf::to_string(ctx);
                           return text;
                         });
  return cfg;
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

  // Declared before the actor system so that it outlives every actor.
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> io_threads;
  for (int i = 0; i < 2; ++i)
    io_threads.emplace_back([&io] { io.run(); });

  int exit_status = 0;
  {
    caf::actor_system_config cfg;
    caf::actor_system sys{configure(cfg)};
    auto sup = sys.spawn(supervisor, config, &io);

    control::server ctl{unix_socket_path(config.control), [&](const nlohmann::json& req) {
                          return handle_control(sys, sup, req);
                        }};
    if (auto st = ctl.start(); !st) {
      spdlog::critical("{}", st.message());
      if (options.on_ready)
        options.on_ready(st.message());
      exit_status = 1;
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
          try {
            auto fresh = load_config(config.path, config.node);
            if (unix_socket_path(fresh.control) != unix_socket_path(config.control))
              spdlog::warn("reload: a new control address takes effect at the next start");
            caf::scoped_actor self{sys, true};
            self->request(sup, control_timeout, atom::reload_v, fresh)
              .receive([](std::string&) {},
                       [&](caf::error& err) {
                         spdlog::error("reload failed: {}", render_error(sys, err));
                       });
            config = std::move(fresh);
          } catch (const config_error& e) {
            spdlog::error("reload refused, keeping the running configuration: {}", e.what());
          }
          continue;
        }
        spdlog::info("{}: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
      }
    }
    // Ordered shutdown: no new commands, then resources stop serving and
    // flush, then the actors go, then Asio.
    ctl.stop();
    {
      caf::scoped_actor self{sys, true};
      self->request(sup, std::chrono::seconds(90), atom::stop_v)
        .receive([](bool) {},
                 [&](caf::error& err) {
                   spdlog::error("shutdown: {}", render_error(sys, err));
                   exit_status = 1;
                 });
    }
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    sys.await_all_actors_done();
  }
  work.reset();
  io.stop();
  for (auto& t : io_threads)
    t.join();
  spdlog::info("stopped");
  return exit_status;
}

} // namespace hast
