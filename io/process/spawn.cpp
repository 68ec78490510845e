#include "io/process/spawn.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace hast {

namespace {

/// Closes every descriptor from `from` up, but `keep`.
void close_from(int from, int keep) {
  if (keep >= from) {
    if (keep > from && ::close_range(static_cast<unsigned>(from), static_cast<unsigned>(keep - 1), 0) != 0)
      for (int fd = from; fd < keep; ++fd)
        ::close(fd);
    from = keep + 1;
  }
  if (::close_range(static_cast<unsigned>(from), ~0U, 0) == 0)
    return;
  rlimit limit{};
  auto last = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                ? static_cast<int>(limit.rlim_cur)
                : 65536;
  for (int fd = from; fd < last; ++fd)
    if (fd != keep)
      ::close(fd);
}

/// The child's end when it cannot exec: the reason for the starter, then
/// exit status 127 (as a shell's "command not found").
[[noreturn]] void report_and_exit(int report, int error) {
  while (::write(report, &error, sizeof error) < 0 && errno == EINTR) {
  }
  ::_exit(127);
}

/// The child between fork and exec: only async-signal-safe calls from
/// here on (the starter has other threads, whose locks fork copied as they
/// were). Reports why it could not exec through `report` and exits.
[[noreturn]] void become(const char* path, char* const* argv, char* const* envp,
                         const spawn_options& options, int report, pid_t starter) {
  auto fail = [&report](int error) { report_and_exit(report, error); };
  // Every signal back to its default action while all are still blocked
  // (the starter's handlers must never run here), then the empty mask.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig)
    ::sigaction(sig, &default_action, nullptr); // SIGKILL, SIGSTOP: EINVAL, harmless
  if (options.ends_with_starter) {
    if (::prctl(PR_SET_PDEATHSIG, starter_death_signal) != 0)
      fail(errno);
    // The starter ended before the prctl: nobody would send the signal.
    if (::getppid() != starter)
      ::_exit(127);
  }
  if (options.new_session && ::setsid() < 0)
    fail(errno);
  // The report pipe away from 0-2, which are about to be replaced.
  if (report < 3) {
    int moved = ::fcntl(report, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
      ::_exit(127);
    report = moved;
  }
  const int sources[3] = {options.stdin_fd, options.stdout_fd, options.stderr_fd};
  for (int target = 0; target < 3; ++target) {
    int source = sources[target];
    if (source < 0) {
      source = ::open("/dev/null", target == 0 ? O_RDONLY : O_WRONLY);
      if (source < 0)
        fail(errno);
      if (source != target) {
        if (::dup2(source, target) < 0)
          fail(errno);
        ::close(source);
      }
    } else if (source == target) {
      ::fcntl(target, F_SETFD, 0); // kept across exec
    } else if (::dup2(source, target) < 0) {
      fail(errno);
    }
  }
  close_from(3, report);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(path, argv, envp);
  report_and_exit(report, errno);
}

} // namespace

std::string find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find(':', start);
    if (end == std::string::npos)
      end = dirs.size();
    auto dir = dirs.substr(start, end - start);
    auto candidate = (dir.empty() ? std::string{"."} : dir) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return "";
}

spawned spawn_program(const std::vector<std::string>& argv, const spawn_options& options) {
  if (argv.empty())
    return {-1, EINVAL};
  // Everything the child needs is made before the fork.
  auto path = argv[0];
  if (options.search_path && path.find('/') == std::string::npos) {
    path = find_in_path(path);
    if (path.empty())
      return {-1, ENOENT};
  }
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (auto& e : options.environment)
    env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  char* const* envp = options.environment.empty() ? environ : env.data();

  // Closed on exec: the child writes its errno into it only if exec fails.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0)
    return {-1, errno};
  // All signals blocked across the fork, so that none is handled in the
  // child before it has reset the dispositions.
  sigset_t all, previous;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  auto starter = ::getpid();
  auto pid = ::fork();
  if (pid == 0)
    become(path.c_str(), args.data(), envp, options, report[1], starter);
  auto fork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ::close(report[1]);
  if (pid < 0) {
    ::close(report[0]);
    return {-1, fork_error};
  }
  int child_error = 0;
  ssize_t n;
  while ((n = ::read(report[0], &child_error, sizeof child_error)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof child_error)) {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return {-1, child_error};
  }
  return {pid, 0};
}

} // namespace hast
