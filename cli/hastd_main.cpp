// hastd's program: parses its command line and configuration, daemonizes
// (unless -F), sets up logging and hands over to run_daemon(). cli/hastd.cpp
// calls it with the real I/O environment; a test program may pass another.
// Under systemd (Type=notify) it reports readiness, reloads and shutdown
// through sd_notify(3); without NOTIFY_SOCKET those reports are no-ops.
//
//   hastd [-c config] [-n node] [-F] [-d]... [-P pidfile] [--check-config]
//         [--io-engine uring|threads]

#include "cli/hastd_main.hpp"

#include "actors/daemon.hpp"
#include "cli/exit_status.hpp"
#include "config/config.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace {

constexpr const char* usage_text =
  "usage: hastd [-c config] [-n node] [-F] [-d]... [-P pidfile] [--check-config]\n"
  "             [--io-engine uring|threads]\n";

struct options {
  std::string config_path = hast::default_config_path;
  std::string node;
  std::string pidfile;
  bool foreground = false;
  bool check_config = false;
  int debug = 0;
  hast::disk_engine_kind disk_engine = hast::disk_engine_kind::uring;
};

/// Sends `state` (newline-separated KEY=value lines) to the service
/// manager; a no-op when hastd was not started by one.
void notify(const std::string& state) {
  sd_notify(0, state.c_str());
}

/// A STATUS= line: one line, whatever the message holds.
std::string status_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return "STATUS=" + text;
}

std::string serving(const hast::node_config& config) {
  return status_line("serving " + std::to_string(config.resources.size()) + " resource(s) on node "
                     + config.node);
}

/// Says why hastd stops on stderr (and to the service manager); returns
/// `exit_status`, one of FreeBSD's sysexits values (cli/exit_status.hpp).
int fail(int exit_status, const std::string& message) {
  std::cerr << "hastd: " << message << '\n';
  notify(status_line(message));
  return exit_status;
}

/// The configuration file's full path: a daemon changes directory to `/`,
/// and SIGHUP must read the file named at the start (FreeBSD's hastd calls
/// realpath(3) for a relative -c as well).
bool resolve_config_path(std::string& path, std::string& error) {
  if (path.empty() || path[0] == '/')
    return true;
  char* full = ::realpath(path.c_str(), nullptr);
  if (full == nullptr) {
    error = "cannot obtain the full path of " + path + ": " + std::strerror(errno);
    return false;
  }
  path = full;
  std::free(full);
  return true;
}

bool parse(int argc, char** argv, options& out, std::string& error) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](std::string& into) {
      if (i + 1 >= argc) {
        error = "option " + arg + " needs a value";
        return false;
      }
      into = argv[++i];
      return true;
    };
    if (arg == "-c") {
      if (!value(out.config_path))
        return false;
    } else if (arg == "-n") {
      if (!value(out.node))
        return false;
    } else if (arg == "-P") {
      if (!value(out.pidfile))
        return false;
    } else if (arg == "-F") {
      out.foreground = true;
    } else if (arg.size() >= 2 && arg[0] == '-' && arg.find_first_not_of('d', 1) == std::string::npos) {
      out.debug += static_cast<int>(arg.size() - 1);
    } else if (arg == "--io-engine" || arg.rfind("--io-engine=", 0) == 0) {
      std::string name;
      if (arg == "--io-engine") {
        if (!value(name))
          return false;
      } else {
        name = arg.substr(std::string_view{"--io-engine="}.size());
      }
      auto kind = hast::parse_disk_engine_kind(name);
      if (!kind) {
        error = "--io-engine takes 'uring' or 'threads', not '" + name + "'";
        return false;
      }
      out.disk_engine = *kind;
    } else if (arg == "--check-config") {
      out.check_config = true;
    } else if (arg == "-h" || arg == "--help") {
      error.clear();
      return false;
    } else {
      error = "unknown option '" + arg + "'";
      return false;
    }
  }
  return true;
}

/// An exclusively locked pid file; another hastd holding it is an error.
class pid_file {
public:
  /// Empty, or why not; exit_status() then says which failure it was.
  std::string open(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      exit_status_ = EX_CANTCREAT;
      return "cannot open pid file " + path + ": " + std::strerror(errno);
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      exit_status_ = EX_TEMPFAIL;  // FreeBSD: "Another hastd is already running"
      char buf[32] = {};
      [[maybe_unused]] auto n = ::pread(fd_, buf, sizeof buf - 1, 0);
      return "another hastd is already running (pid " + std::string{buf, std::strcspn(buf, "\n")}
             + ", pid file " + path + ")";
    }
    path_ = path;
    return "";
  }
  void write_pid() {
    if (fd_ < 0)
      return;
    auto text = std::to_string(::getpid()) + "\n";
    [[maybe_unused]] auto rc = ::ftruncate(fd_, 0);
    [[maybe_unused]] auto n = ::pwrite(fd_, text.data(), text.size(), 0);
  }
  /// Moves to `path` (SIGHUP with a new `pidfile`): the new file is locked
  /// and written first, then the old one is removed; on error (returned) the
  /// old one stays.
  std::string move_to(const std::string& path) {
    pid_file fresh;
    if (auto err = fresh.open(path); !err.empty())
      return err;
    fresh.write_pid();
    std::swap(fd_, fresh.fd_);
    std::swap(path_, fresh.path_);
    return "";  // `fresh` now holds the old file: it is removed and closed here
  }
  /// Of the last failed open(): EX_TEMPFAIL when another hastd holds the
  /// file, EX_CANTCREAT when it cannot be opened.
  int exit_status() const { return exit_status_; }
  /// In the parent of a daemonizing fork: the child keeps the lock and the file.
  void release() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }
  ~pid_file() {
    if (fd_ >= 0) {
      if (!path_.empty())
        ::unlink(path_.c_str());
      ::close(fd_);
    }
  }

private:
  int fd_ = -1;
  std::string path_;
  int exit_status_ = 0;
};

void setup_logging(bool foreground, int debug) {
  std::shared_ptr<spdlog::logger> logger;
  if (foreground)
    logger = spdlog::stderr_color_mt("hastd");
  else
    logger = spdlog::syslog_logger_mt("hastd", "hastd", LOG_PID, LOG_DAEMON);
  logger->set_level(debug >= 2 ? spdlog::level::trace
                    : debug == 1 ? spdlog::level::debug
                                 : spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

} // namespace

namespace hast {

int hastd_main(int argc, char** argv, std::shared_ptr<const io_env> env) {
  options opt;
  std::string error;
  if (!parse(argc, argv, opt, error)) {
    if (error.empty()) {
      std::cout << usage_text;
      return 0;
    }
    std::cerr << usage_text;
    return fail(EX_USAGE, error);
  }
  if (!resolve_config_path(opt.config_path, error))
    return fail(EX_CONFIG, error);
  hast::node_config config;
  try {
    config = hast::load_config(opt.config_path, hast::select_node(opt.node));
    hast::read_secrets(config);
  } catch (const hast::config_error& e) {
    return fail(hast::cli::config_failure_status(opt.config_path), e.what());
  }
  if (opt.check_config) {
    std::cout << hast::render_effective(config);
    return 0;
  }
  if (::geteuid() != 0)
    spdlog::warn("hastd runs without root: attaching block devices will not work");

  auto pid_path = opt.pidfile.empty() ? (opt.foreground ? "" : config.pidfile) : opt.pidfile;
  pid_file pid;
  if (!pid_path.empty())
    if (auto err = pid.open(pid_path); !err.empty())
      return fail(pid.exit_status(), err);

  hast::daemon_options dopt;
  dopt.disk_engine = opt.disk_engine;
  dopt.env = std::move(env);
  int ready_fd = -1;  // daemon mode: the pipe to the parent waiting for start-up
  if (!opt.foreground) {
    // The parent waits until the child listens on the control socket, so that
    // a start-up error reaches the user's terminal and the exit status.
    int ready[2];
    if (::pipe(ready) != 0)
      return fail(EX_OSERR, std::string{"pipe: "} + std::strerror(errno));
    auto child = ::fork();
    if (child < 0)
      return fail(EX_OSERR, std::string{"fork: "} + std::strerror(errno));
    if (child > 0) {
      pid.release();
      ::close(ready[1]);
      std::string message;
      char buf[512];
      ssize_t n;
      while ((n = ::read(ready[0], buf, sizeof buf)) > 0)
        message.append(buf, static_cast<size_t>(n));
      if (message == "ok")
        return 0;
      // The child failed to start: its exit status is the one to give.
      int wstatus = 0;
      int code = EX_SOFTWARE;
      if (::waitpid(child, &wstatus, 0) == child && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0)
        code = WEXITSTATUS(wstatus);
      return fail(code, message.empty() ? "the daemon exited during start-up" : message);
    }
    ::close(ready[0]);
    ::setsid();
    if (::chdir("/") != 0)
      return EX_OSERR;
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
      if (null > 2)
        ::close(null);
    }
    ready_fd = ready[1];
  }
  // The service manager hears of readiness before a daemonizing parent
  // exits; the notification then comes from this child, which names itself
  // the main process.
  dopt.on_ready = [ready_fd, daemonized = !opt.foreground,
                   status = serving(config)](const std::string& err) {
    if (err.empty())
      notify("READY=1\n" + (daemonized ? "MAINPID=" + std::to_string(::getpid()) + "\n" : "")
             + status);
    else
      notify(status_line(err));
    if (ready_fd >= 0) {
      auto text = err.empty() ? std::string{"ok"} : err;
      [[maybe_unused]] auto n = ::write(ready_fd, text.data(), text.size());
      ::close(ready_fd);
    }
  };
  dopt.on_reloading = [path = config.path] {
    // systemd 253 and later want RELOADING=1 stamped with CLOCK_MONOTONIC
    // (steady_clock on Linux) to tell this reload from an earlier one.
    auto usec = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
    notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\n"
           + status_line("reloading " + path));
  };
  dopt.on_reloaded = [](const hast::node_config& running) {
    notify("READY=1\n" + serving(running));
  };
  dopt.on_stopping = [] { notify("STOPPING=1\n" + status_line("stopping: resources drain")); };
  pid.write_pid();
  if (opt.pidfile.empty() && !opt.foreground) {
    // The pid file's path comes from the configuration: a reload may move it.
    dopt.pidfile = pid_path;
    dopt.move_pidfile = [&pid](const std::string& path) { return pid.move_to(path); };
  }
  setup_logging(opt.foreground, opt.debug);
  for (const auto& warning : hast::unauthenticated_links(config))
    spdlog::warn("{}", warning);
  return hast::run_daemon(std::move(config), dopt);
}

} // namespace hast
