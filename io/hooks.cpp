#include "io/hooks.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <mutex>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>

extern char** environ;

namespace hast {

namespace {

struct hook {
  std::string program;
  std::vector<std::string> args;
  std::chrono::milliseconds limit;
};

std::string describe(const hook& h) {
  auto text = h.program;
  for (auto& a : h.args)
    text += " " + a;
  return text;
}

void execute(const hook& h) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(h.program.c_str()));
  for (auto& a : h.args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The daemon blocks its signals; the hook starts with a clean mask.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  auto rc = posix_spawn(&pid, h.program.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    spdlog::error("hook {}: cannot run: {}", describe(h), std::strerror(rc));
    return;
  }
  auto deadline = std::chrono::steady_clock::now() + h.limit;
  int wstatus = 0;
  for (;;) {
    auto r = ::waitpid(pid, &wstatus, WNOHANG);
    if (r == pid)
      break;
    if (r < 0) {
      spdlog::warn("hook {}: lost track of process {}", describe(h), pid);
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &wstatus, 0);
      spdlog::error("hook {}: killed after {} ms", describe(h), h.limit.count());
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
    spdlog::info("hook {}: exited 0", describe(h));
  else if (WIFEXITED(wstatus))
    spdlog::error("hook {}: exited with status {}", describe(h), WEXITSTATUS(wstatus));
  else
    spdlog::error("hook {}: killed by signal {}", describe(h), WTERMSIG(wstatus));
}

/// One worker thread, started on first use. The daemon drains it before it
/// exits (`finish_hooks`), so a hook queued by the last role change still
/// runs and nothing logs after the logger is gone.
class runner {
public:
  runner() = default;
  runner(const runner&) = delete;
  runner& operator=(const runner&) = delete;
  ~runner() { finish(); }  // a program that never called finish_hooks()

  void push(hook h) {
    std::lock_guard lock{mutex_};
    if (finishing_) {
      spdlog::warn("hook {}: not run, the daemon is exiting", describe(h));
      return;
    }
    queue_.push_back(std::move(h));
    if (!thread_.joinable())
      thread_ = std::thread{[this] { loop(); }};
    ready_.notify_one();
  }

  void finish() {
    {
      std::lock_guard lock{mutex_};
      finishing_ = true;
      ready_.notify_one();
    }
    if (thread_.joinable())
      thread_.join();
  }

private:
  void loop() {
    for (;;) {
      hook h;
      {
        std::unique_lock lock{mutex_};
        ready_.wait(lock, [this] { return !queue_.empty() || finishing_; });
        if (queue_.empty())
          return;
        h = std::move(queue_.front());
        queue_.pop_front();
      }
      execute(h);
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<hook> queue_;
  bool finishing_ = false;
  std::thread thread_;
};

runner& the_runner() {
  static runner r;
  return r;
}

} // namespace

void run_hook(const std::string& program, std::vector<std::string> args,
              std::chrono::milliseconds limit) {
  if (program.empty())
    return;
  spdlog::debug("hook queued: {} {}", program, args.empty() ? "" : args.front());
  the_runner().push({program, std::move(args), limit});
}

void finish_hooks() {
  the_runner().finish();
}

} // namespace hast
