#pragma once

// What the supervisor and every resource actor run on, given by the
// program that starts them (actors/daemon.cpp; a test passes its own
// context, environment and event hub): the Asio context, the disk engine,
// the I/O environment, the data threads, and the actors a resource reports
// to. Plain handles only; how a test varies the I/O (a failing provider, a
// scripted peer link) goes through the I/O environment (io/io_env.hpp), not
// through this struct.

#include "io/storage/disk_engine.hpp"
#include "messages/actors.hpp"

#include <memory>

namespace asio {
class io_context;
} // namespace asio

namespace hast {

class io_env;
class data_threads;

/// Held by value; CAF's spawn machinery never needs the complete Asio type.
struct runtime {
  /// Where the NBD export and the peer link run when there are no data threads.
  asio::io_context* io = nullptr;
  /// The disk engine to ask for (io_uring unless told otherwise). posted
  /// (tests): without data threads its ops run in handlers on `io`.
  disk_engine_kind disk = disk_engine_kind::uring;
  /// How providers are opened and the primary's peer link is dialed
  /// (io/io_env.hpp); empty: default_io_env().
  std::shared_ptr<const io_env> env = nullptr;
  /// Where a resource with `failover auto` asks for its role changes (the
  /// supervisor sets it for the resources it spawns); null in tests that
  /// spawn a resource alone.
  supervisor_actor supervisor{};
  /// The event stream (hastctl events); null in tests that need none.
  event_hub_actor events{};
  /// One thread per resource for its data path (actors/data_thread.hpp):
  /// the resource, its disk and its peer run there with their sockets and
  /// ring. Null: they run on CAF's workers and `io`.
  std::shared_ptr<data_threads> data = nullptr;
};

} // namespace hast
