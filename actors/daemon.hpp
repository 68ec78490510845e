#pragma once

// hastd's run loop: the actor system, the Asio threads, the control socket
// and the signals, started and stopped in order.

#include "config/config.hpp"
#include "io/disk_engine.hpp"

#include "io/io_env.hpp"

#include <functional>
#include <memory>
#include <string>

namespace hast {

struct daemon_options {
  /// Called once the control socket listens (or with an error message when
  /// start-up failed), so a daemonizing parent can exit with the right status.
  std::function<void(const std::string& error)> on_ready;
  /// The disk engine to ask for (hastd --io-engine); io_uring falls back to
  /// threads by itself where the kernel refuses it.
  disk_engine_kind disk_engine = disk_engine_kind::uring;
  /// How providers are opened; empty: default_io_env(). A test program
  /// passes one that injects faults (io/io_env.hpp).
  std::shared_ptr<const io_env> env;
};

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration file.
/// Returns the process exit status.
int run_daemon(node_config config, const daemon_options& options);

} // namespace hast
