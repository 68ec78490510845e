// A request on the control socket as hastd answers it: the body read from
// the socket goes through parse_request, then through the daemon's own
// handle_control (actors/daemon.cpp) against a real actor system, event hub
// and supervisor serving two stand-alone resources on scratch files (role
// init at the start; a fuzzed `role primary` really opens the provider and
// serves NBD on a Unix socket in the scratch directory). As in
// control::server::serve, a std::exception from the handler becomes an
// error reply; anything else escaping is a finding. Unlike control_request
// (which stops at parsing the frame and the JSON), this reaches the
// supervisor, the resources and the replies they build.
//
// Checked for every input: the reply is a JSON object whose text (as sent,
// control::to_text) is valid JSON and UTF-8 and reads back as an object;
// and the daemon is not wedged: a status request answers for both
// resources afterwards. A request that never comes back shows as a
// libFuzzer timeout.
//
// The actor system is made once, at the first input, and shut down in
// order at exit; the input is the request body (no frame header: the
// framing is control_request's).

#include "actors/daemon.hpp"
#include "actors/data_thread.hpp"
#include "actors/events.hpp"
#include "actors/supervisor.hpp"
#include "io/net/asio.hpp"
#include "io/net/control_channel.hpp"
#include "io/storage/metadata.hpp"
#include "io/storage/provider.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <caf/logger.hpp>
#include <caf/scoped_actor.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string_view>
#include <thread>

using namespace hast;
using hast::fuzz::check;

namespace {

constexpr uint64_t provider_size = 4u << 20;
const char* const resource_names[] = {"r0", "r1"};

/// hastd's run_daemon, reduced to what a control request reaches: no
/// control socket, no peer listener, no signals.
struct daemon_under_test {
  daemon_under_test() {
    char tmpl[] = "/tmp/hast-fuzz-control-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    dir = tmpl;
    config.node = "nodeA";
    config.control = "uds://" + (dir / "control.sock").string();
    for (const char* name : resource_names)
      config.resources.push_back(make_resource(name));

    io_thread = std::thread([this] {
      run_catching(io, [](std::string_view what) {
        spdlog::error("an I/O handler failed: {}; the I/O thread goes on", what);
      });
    });
    use_pinning_scheduler(configure(cfg));
    sys = std::make_unique<caf::actor_system>(cfg);
    hub = sys->spawn(event_hub);
    data->attach(*sys);
    sup = sys->spawn(supervisor, config,
                     runtime{&io, disk_engine_kind::uring, nullptr, {}, hub, data});
  }

  resource_config make_resource(const std::string& name) {
    resource_config rc;
    rc.name = name;
    rc.provider_name = name;
    rc.local = (dir / (name + ".img")).string();
    rc.remote = "none";
    rc.device = false;  // no /dev/hast from a fuzzer
    rc.nbd = "uds://" + (dir / (name + ".nbd")).string();
    auto prov = provider::create_file(rc.local, provider_size);
    if (!prov || !create_metadata(*prov, name, default_extent_size, default_keepdirty, provider_size)) {
      std::fprintf(stderr, "cannot make the provider %s\n", rc.local.c_str());
      std::abort();
    }
    return rc;
  }

  /// serve()'s ordered shutdown, then run_daemon's.
  void stop() {
    {
      caf::scoped_actor self{*sys, true};
      self->request(sup, std::chrono::seconds(90), atom::stop_v)
        .receive([](bool) {}, [](caf::error&) {});
    }
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(hub, caf::exit_reason::user_shutdown);
    sys->await_all_actors_done();
    data->detach();
    caf::logger::set_current_actor_system(nullptr);
    sup = nullptr;
    hub = nullptr;
    sys.reset();
    data->stop(std::chrono::seconds(5));
    work.reset();
    io.stop();
    io_thread.join();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }

  std::filesystem::path dir;
  node_config config;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread io_thread;
  std::shared_ptr<data_threads> data = std::make_shared<data_threads>();
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  event_hub_actor hub;
  supervisor_actor sup;
};

daemon_under_test* daemon = nullptr;

void stop_daemon() {
  if (daemon)
    daemon->stop();
}

daemon_under_test& the_daemon() {
  if (!daemon) {
    // The log is formatted as in hastd but goes nowhere; the logger is made
    // before the exit handler is registered, so that it outlives it.
    auto quiet = std::make_shared<spdlog::logger>("hastd", std::make_shared<spdlog::sinks::null_sink_mt>());
    quiet->set_level(spdlog::level::info);
    spdlog::set_default_logger(quiet);
    daemon = new daemon_under_test;
    std::atexit(stop_daemon);
  }
  return *daemon;
}

/// The text the control server would send for `reply`, checked.
void check_reply(const nlohmann::json& reply) {
  check(reply.is_object());
  const std::string text = control::to_text(reply);
  const auto back = nlohmann::json::parse(text, nullptr, false);
  check(!back.is_discarded() && back.is_object());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  auto& d = the_daemon();
  const std::string_view body{reinterpret_cast<const char*>(data), size};
  const auto request = control::parse_request(body);
  if (!request)
    return 0;  // the server closes the connection
  // `events` streams instead (the event hub's subscriber, not a reply).
  if (control::is_streaming(*request))
    return 0;
  nlohmann::json reply;
  try {
    reply = handle_control(*d.sys, d.sup, *request);
  } catch (const std::exception& e) {
    reply = {{"error", std::string{"malformed request: "} + e.what()}};
  }
  check_reply(reply);

  // Still answering, for every resource.
  const auto status = handle_control(*d.sys, d.sup, {{"command", "status"}});
  check_reply(status);
  check(status.contains("resources") && status["resources"].is_array() &&
        status["resources"].size() == std::size(resource_names));
  // A scoped_actor leaves this thread a reference to the system's logger in
  // a thread-local, which exit() would drop after the system is gone (the
  // system is stopped by an exit handler, which runs after thread-locals
  // are destroyed): drop it now, as hastd's data threads do.
  caf::logger::set_current_actor_system(nullptr);
  return 0;
}
