#pragma once

// One thread per resource for its data path, shared by the actors of that
// path and the sockets and disk ring they use (docs/DESIGN.md, "Threads:
// one data thread per resource").
//
// A data thread runs an Asio context of its own: the resource's NBD
// sessions, its peer socket and its disk ring's completions (an eventfd on
// that context) wake it there. It is also a CAF execution unit: an actor
// pinned to it (the resource, its disk_io and its peer) runs on it and on
// no other thread, whoever sends to it. A message between two actors
// pinned to the same thread is then a queue push on that thread, as a task
// on a Seastar reactor, and a 4 KiB write goes from the client's socket to
// the disk and back without crossing a thread.
//
// Everything else (the supervisor, the event hub, the witness, detached
// actors) keeps running on CAF's work-stealing workers: the scheduler
// installed by `use_pinning_scheduler` is CAF's own coordinator with a
// policy that first asks whether a job is pinned.

#include <caf/actor_system_config.hpp>
#include <caf/execution_unit.hpp>
#include <caf/resumable.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace asio {
class io_context;
}

namespace caf {
class abstract_actor;
class actor_system;
} // namespace caf

namespace hast {

class data_thread final : public caf::execution_unit {
public:
  /// Starts the thread; `name` shows in `top -H` (truncated to 15 bytes).
  explicit data_thread(std::string name);
  data_thread(const data_thread&) = delete;
  data_thread& operator=(const data_thread&) = delete;
  /// Stops the thread (see stop()).
  ~data_thread() override;

  /// The context this thread runs: sockets and waits placed on it are
  /// served here.
  asio::io_context& io();

  /// Jobs not pinned here are handed to `sys`'s scheduler. Called once the
  /// actor system exists, before any actor is pinned here.
  void attach(caf::actor_system& sys);

  /// Runs `job` on this thread (from any thread).
  void enqueue(caf::resumable* job);

  /// CAF: `job` was made runnable by the actor running on this thread.
  void exec_later(caf::resumable* job) override;

  /// Is the caller this thread?
  bool running_here() const;

  /// After the last actor pinned here ended: forget the actor system (CAF
  /// gives every thread that spawns an actor a reference to the system's
  /// logger, and the system's destructor waits until each is dropped).
  void detach();

  /// Lets the thread finish what is queued (at most `grace`), then stops
  /// and joins it. Called after every actor pinned here has ended.
  void stop(std::chrono::milliseconds grace);

private:
  void run(caf::resumable* job);

  struct impl;
  std::unique_ptr<impl> impl_;
};

/// From its next activation on, `actor` runs on `thread` only, until it
/// ends. The thread must outlive the actor.
void pin(caf::abstract_actor* actor, data_thread& thread);

/// Installs CAF's work-stealing scheduler with a policy that sends a pinned
/// actor to its data thread. Without pins it behaves as CAF's own.
void use_pinning_scheduler(caf::actor_system_config& cfg);

/// The daemon's data threads, one per resource name, made when a resource
/// first asks. They outlive the actor system (an actor freed during its
/// destruction may still post its last clean-up to its thread).
class data_threads {
public:
  data_threads() = default;
  data_threads(const data_threads&) = delete;
  data_threads& operator=(const data_threads&) = delete;
  ~data_threads();

  void attach(caf::actor_system& sys);
  /// Every actor is done: each thread forgets the system (see
  /// data_thread::detach). Before the actor system is destroyed.
  void detach();
  /// The thread of resource `name` (a resource restarted by the supervisor
  /// gets the same one).
  data_thread& of(const std::string& name);
  /// After the actor system is gone: stop every thread.
  void stop(std::chrono::milliseconds grace);

private:
  std::mutex mutex_;
  caf::actor_system* system_ = nullptr;
  std::map<std::string, std::unique_ptr<data_thread>> threads_;
};

} // namespace hast
