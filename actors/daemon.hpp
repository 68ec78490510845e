#pragma once

// hastd's run loop: the actor system, the Asio threads, the control socket
// and the signals, started and stopped in order.

#include "config/config.hpp"
#include "io/storage/disk_engine.hpp"
#include "io/io_env.hpp"
#include "messages/actors.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>

namespace hast {

struct daemon_options {
  /// Called once the control socket listens (or with an error message when
  /// start-up failed), so a daemonizing parent can exit with the right status.
  std::function<void(const std::string& error)> on_ready;
  /// Called when a SIGHUP reload begins, and when it ended with `running`
  /// in force (the new configuration, or the old one if the new was
  /// refused); hastd tells the service manager (sd_notify RELOADING=1, then
  /// READY=1).
  std::function<void()> on_reloading;
  std::function<void(const node_config& running)> on_reloaded;
  /// Called once SIGTERM or SIGINT was taken, before the resources drain.
  std::function<void()> on_stopping;
  /// The disk engine to ask for (hastd --io-engine); io_uring falls back to
  /// threads by itself where the kernel refuses it.
  disk_engine_kind disk_engine = disk_engine_kind::uring;
  /// How providers are opened; empty: default_io_env(). A test program
  /// passes one that injects faults (io/io_env.hpp).
  std::shared_ptr<const io_env> env;
  /// The pid file hastd holds when its path comes from the configuration
  /// (no -P; not in the foreground without one), and how to move it: on
  /// SIGHUP a changed `pidfile` calls move_pidfile(new path), which locks and
  /// writes the new file and removes the old one, or returns why it cannot
  /// (the old one then stays). Empty: the pid file does not follow the
  /// configuration.
  std::string pidfile;
  std::function<std::string(const std::string& path)> move_pidfile;
};

/// The daemon's settings of its actor system (scheduler threads, the error
/// category that renders hast errors as their sentence).
caf::actor_system_config& configure(caf::actor_system_config& cfg);

/// Answers one request of the control socket (io/net/control_channel.hpp) by
/// asking the supervisor `sup`; runs on the control thread. A malformed
/// request may throw a std::exception, which the control server turns into
/// an error reply. Exposed for tests/fuzz/control_handler_fuzz.cpp.
nlohmann::json handle_control(caf::actor_system& sys, const supervisor_actor& sup,
                              const nlohmann::json& request);

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration file.
/// Returns the process exit status.
int run_daemon(node_config config, const daemon_options& options);

} // namespace hast
