#include "io/process/hooks.hpp"

#include "io/process/spawn.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <cstring>
#include <list>
#include <mutex>
#include <sys/wait.h>
#include <thread>

namespace hast {

namespace {

using clock_type = std::chrono::steady_clock;

/// How often the reaper looks at the hooks that still run.
constexpr auto reap_interval = std::chrono::milliseconds(20);

std::string describe(const std::string& program, const std::vector<std::string>& args) {
  auto text = program;
  for (auto& a : args)
    text += " " + a;
  return text;
}

/// A hook process hastd started and has not collected yet.
struct running_hook {
  pid_t pid = -1;
  std::string text; // program and arguments, for the log
  clock_type::time_point started;
  clock_type::time_point next_warning;
};

/// The environment of every hook: see hook_path. Built once: hastd does not
/// change its own environment while it runs.
const std::vector<std::string>& hook_environment() {
  static const std::vector<std::string> env = [] {
    std::vector<std::string> out{std::string{"PATH="} + hook_path, "HOME=/"};
    for (const char* name : {"LANG", "LC_ALL", "TZ"})
      if (const char* value = std::getenv(name))
        out.push_back(std::string{name} + "=" + value);
    return out;
  }();
  return env;
}

/// Starts the hook; the pid, or -1 with the reason logged. A hook may
/// outlive hastd (HAST's hooks do): it is not tied to the starting thread.
pid_t spawn(const std::string& program, const std::vector<std::string>& args,
            const std::string& text) {
  std::vector<std::string> argv{program};
  argv.insert(argv.end(), args.begin(), args.end());
  spawn_options options;
  options.new_session = true;
  options.environment = hook_environment();
  auto child = spawn_program(argv, options);
  if (!child) {
    spdlog::error("hook {}: cannot run: {}", text, std::strerror(child.error));
    return -1;
  }
  spdlog::debug("hook {}: started, pid {}", text, child.pid);
  return child.pid;
}

void log_exit(const running_hook& h, int wstatus) {
  auto seconds = std::chrono::duration<double>(clock_type::now() - h.started).count();
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
    spdlog::info("hook {} (pid {}): exited 0 after {:.1f} s", h.text, h.pid, seconds);
  else if (WIFEXITED(wstatus))
    spdlog::error("hook {} (pid {}): exited with status {} after {:.1f} s", h.text, h.pid,
                  WEXITSTATUS(wstatus), seconds);
  else
    spdlog::error("hook {} (pid {}): killed by signal {} after {:.1f} s", h.text, h.pid,
                  WTERMSIG(wstatus), seconds);
}

/// The hooks hastd started, and the thread that collects them. Only pids
/// listed here are waited for, never "any child".
class reaper {
public:
  reaper() = default;
  reaper(const reaper&) = delete;
  reaper& operator=(const reaper&) = delete;
  ~reaper() { finish(); } // a program that never called finish_hooks()

  void start(const std::string& program, std::vector<std::string> args) {
    auto text = describe(program, args);
    // Spawned under the lock: hooks start in the order run_hook() was called,
    // and finish() cannot slip in between the start and the bookkeeping.
    std::lock_guard lock{mutex_};
    if (finishing_) {
      spdlog::warn("hook {}: not run, the daemon is exiting", text);
      return;
    }
    if (running_.size() >= max_running_hooks || !queued_.empty()) {
      if (queued_.size() >= max_queued_hooks) {
        spdlog::warn("hook {}: not run: {} hooks run and {} wait (the limits)", text,
                     running_.size(), queued_.size());
        return;
      }
      spdlog::warn("hook {}: waits, {} hooks run (the limit)", text, running_.size());
      queued_.push_back({program, std::move(args), std::move(text)});
      return;
    }
    launch(program, args, std::move(text));
  }

  void finish() {
    std::unique_lock lock{mutex_};
    if (finishing_)
      return;
    finishing_ = true;
    for (const auto& q : queued_)
      spdlog::warn("hook {}: not run, the daemon is exiting", q.text);
    queued_.clear();
    changed_.notify_all();
    changed_.wait_for(lock, hook_exit_wait, [this] { return running_.empty(); });
    for (const auto& h : running_)
      spdlog::warn("hook {} (pid {}): still running as the daemon exits; left running", h.text,
                   h.pid);
    running_.clear();
    stopping_ = true;
    changed_.notify_all();
    lock.unlock();
    if (thread_.joinable())
      thread_.join();
  }

private:
  /// A hook waiting for one of the running ones to end.
  struct queued_hook {
    std::string program;
    std::vector<std::string> args;
    std::string text;
  };

  // Called with mutex_ held.
  void launch(const std::string& program, const std::vector<std::string>& args,
              std::string text) {
    auto pid = spawn(program, args, text);
    if (pid < 0)
      return;
    auto now = clock_type::now();
    running_.push_back({pid, std::move(text), now, now + hook_running_warning});
    if (!thread_.joinable())
      thread_ = std::thread{[this] { loop(); }};
    changed_.notify_all();
  }

  // Called with mutex_ held: starts waiting hooks while there is room.
  void launch_queued() {
    while (!finishing_ && !queued_.empty() && running_.size() < max_running_hooks) {
      auto next = std::move(queued_.front());
      queued_.pop_front();
      launch(next.program, next.args, std::move(next.text));
    }
  }

  void loop() {
    std::unique_lock lock{mutex_};
    for (;;) {
      if (stopping_)
        return;
      if (running_.empty()) {
        changed_.wait(lock, [this] { return stopping_ || !running_.empty(); });
        continue;
      }
      bool any_ended = false;
      for (auto it = running_.begin(); it != running_.end();) {
        int wstatus = 0;
        auto r = ::waitpid(it->pid, &wstatus, WNOHANG);
        if (r == 0) {
          if (clock_type::now() >= it->next_warning) {
            spdlog::warn(
                "hook {} (pid {}): still running after {} s", it->text, it->pid,
                std::chrono::duration_cast<std::chrono::seconds>(clock_type::now() - it->started)
                    .count());
            it->next_warning += hook_running_warning;
          }
          ++it;
          continue;
        }
        if (r == it->pid)
          log_exit(*it, wstatus);
        else
          spdlog::warn("hook {} (pid {}): vanished: {}", it->text, it->pid, std::strerror(errno));
        it = running_.erase(it);
        any_ended = true;
      }
      if (any_ended) {
        launch_queued();
        changed_.notify_all(); // finish() may be waiting for the last one
      }
      changed_.wait_for(lock, reap_interval, [this] { return stopping_; });
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::list<running_hook> running_;
  std::deque<queued_hook> queued_;  // in the order requested
  bool finishing_ = false; // no new hooks
  bool stopping_ = false;  // the reaper thread ends
  std::thread thread_;
};

reaper& the_reaper() {
  // The reaper logs until its destructor has waited for the last hook, at
  // exit: spdlog's registry must be made before it, so that it is
  // destroyed after it (statics go in the reverse order of their making).
  static const bool logger_first = (spdlog::default_logger_raw(), true);
  (void)logger_first;
  static reaper r;
  return r;
}

} // namespace

void run_hook(const std::string& program, std::vector<std::string> args) {
  if (program.empty())
    return;
  the_reaper().start(program, std::move(args));
}

void finish_hooks() {
  the_reaper().finish();
}

} // namespace hast
