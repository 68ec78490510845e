#include "actors/data_thread.hpp"

#include "io/net/asio.hpp"

#include <caf/abstract_actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/intrusive_ptr.hpp>
#include <caf/logger.hpp>
#include <caf/policy/work_stealing.hpp>
#include <caf/scheduler/coordinator.hpp>

#include <spdlog/spdlog.h>

#include <pthread.h>

#include <future>

#include <shared_mutex>
#include <unordered_map>

namespace hast {

namespace {

/// Which actor runs on which data thread. Read on every enqueue of every
/// actor, written when an actor is pinned or ends.
class pin_table {
public:
  data_thread* find(caf::resumable* job) {
    if (count_.load(std::memory_order_acquire) == 0)
      return nullptr;
    std::shared_lock lock{mutex_};
    auto it = pins_.find(job);
    return it == pins_.end() ? nullptr : it->second;
  }

  void add(caf::resumable* job, data_thread* thread) {
    std::unique_lock lock{mutex_};
    if (pins_.insert_or_assign(job, thread).second)
      count_.fetch_add(1, std::memory_order_release);
  }

  void remove(caf::resumable* job) {
    std::unique_lock lock{mutex_};
    if (pins_.erase(job) > 0)
      count_.fetch_sub(1, std::memory_order_release);
  }

private:
  std::atomic<size_t> count_{0};
  std::shared_mutex mutex_;
  std::unordered_map<caf::resumable*, data_thread*> pins_;
};

pin_table& pins() {
  static pin_table table;
  return table;
}

/// CAF's work stealing, except that a pinned job goes to its data thread
/// wherever it is made runnable: from a worker (internal), from outside
/// the workers (central, external) alike. A job already in a worker's
/// queue when it was pinned runs there once more; an actor never runs on
/// two threads at once either way (CAF schedules it only when it was
/// blocked).
class pinning_policy : public caf::policy::work_stealing {
public:
  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    if (auto* thread = pins().find(job))
      return thread->enqueue(job);
    work_stealing::central_enqueue(self, job);
  }

  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    if (auto* thread = pins().find(job))
      return thread->enqueue(job);
    work_stealing::external_enqueue(self, job);
  }

  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    if (auto* thread = pins().find(job))
      return thread->enqueue(job);
    work_stealing::internal_enqueue(self, job);
  }

  /// A job that used up its throughput on a worker and was pinned meanwhile.
  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    if (auto* thread = pins().find(job))
      return thread->enqueue(job);
    work_stealing::resume_job_later(self, job);
  }
};

} // namespace

struct data_thread::impl {
  asio::io_context io{1};  // one thread runs it (other threads only post to it)
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::atomic<bool> running{false};
  std::thread thread;
  std::thread::id id;
  size_t max_throughput = 300;
};

data_thread::data_thread(std::string name) : impl_(std::make_unique<impl>()) {
  impl_->running = true;
  impl_->thread = std::thread{[this, name = std::move(name)] {
    auto shown = name.substr(0, 15);
    pthread_setname_np(pthread_self(), shown.c_str());
    run_catching(impl_->io, [&name](std::string_view what) {
      spdlog::error("{}: a data-thread handler failed: {}; the thread goes on", name, what);
    });
    impl_->running = false;
  }};
  impl_->id = impl_->thread.get_id();
}

data_thread::~data_thread() {
  stop(std::chrono::milliseconds(0));
}

asio::io_context& data_thread::io() {
  return impl_->io;
}

void data_thread::attach(caf::actor_system& sys) {
  system_ = &sys;
  impl_->max_throughput = sys.scheduler().max_throughput();
}

void data_thread::enqueue(caf::resumable* job) {
  asio::post(impl_->io, [this, job] { run(job); });
}

void data_thread::exec_later(caf::resumable* job) {
  if (pins().find(job) == this)
    return enqueue(job);  // a local post: no lock, no wake-up
  system().scheduler().enqueue(job);
}

bool data_thread::running_here() const {
  return std::this_thread::get_id() == impl_->id;
}

void data_thread::run(caf::resumable* job) {
  // As CAF's worker loop (caf/scheduler/worker.hpp): the reference taken
  // when the job was made runnable is ours until it waits again or ends.
  switch (job->resume(this, impl_->max_throughput)) {
    case caf::resumable::resume_later:
      enqueue(job);
      break;
    case caf::resumable::done:
    case caf::resumable::awaiting_message:
      intrusive_ptr_release(job);
      break;
    case caf::resumable::shutdown_execution_unit:
      break;
  }
}

void data_thread::detach() {
  if (!impl_->running)
    return;
  std::promise<void> done;
  asio::post(impl_->io, [&done] {
    caf::logger::set_current_actor_system(nullptr);
    done.set_value();
  });
  done.get_future().wait();
}

void data_thread::stop(std::chrono::milliseconds grace) {
  if (!impl_->thread.joinable())
    return;
  impl_->work.reset();
  auto until = std::chrono::steady_clock::now() + grace;
  while (impl_->running && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->io.stop();
  impl_->thread.join();
}

void pin(caf::abstract_actor* actor, data_thread& thread) {
  auto* job = dynamic_cast<caf::resumable*>(actor);
  if (job == nullptr)
    return;
  pins().add(job, &thread);
  // Removed while the actor ends, before the memory can be reused.
  actor->attach_functor([job] { pins().remove(job); });
}

void use_pinning_scheduler(caf::actor_system_config& cfg) {
  cfg.module_factories.push_back([](caf::actor_system& sys) -> caf::actor_system::module* {
    return new caf::scheduler::coordinator<pinning_policy>(sys);
  });
}

data_threads::~data_threads() {
  stop(std::chrono::milliseconds(0));
}

void data_threads::attach(caf::actor_system& sys) {
  std::lock_guard lock{mutex_};
  system_ = &sys;
  for (auto& [name, thread] : threads_)
    thread->attach(sys);
}

void data_threads::detach() {
  std::lock_guard lock{mutex_};
  for (auto& [name, thread] : threads_)
    thread->detach();
}

data_thread& data_threads::of(const std::string& name) {
  std::lock_guard lock{mutex_};
  auto& slot = threads_[name];
  if (!slot) {
    slot = std::make_unique<data_thread>("hast." + name);
    if (system_ != nullptr)
      slot->attach(*system_);
  }
  return *slot;
}

void data_threads::stop(std::chrono::milliseconds grace) {
  std::lock_guard lock{mutex_};
  for (auto& [name, thread] : threads_)
    thread->stop(grace);
}

} // namespace hast
