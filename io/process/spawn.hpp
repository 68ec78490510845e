#pragma once

// Starting another program from hastd or hastctl: the event hooks
// (io/process/hooks) and the tools behind /dev/hast/<name> (io/process/block_device:
// nbdfuse, losetup, fusermount3, nbd-client) all start here, with one
// signal policy: the daemon blocks some signals and ignores SIGPIPE; the
// program starts with an empty signal mask and every signal at its default
// action. It keeps no descriptor of its starter beyond 0-2 (the daemon's
// sockets are not close-on-exec; a long-lived nbdfuse holding a peer
// connection or a listening socket would keep it open after the daemon
// closed it).
//
// A program that must not outlive its starter (the nbdfuse behind hastd's
// /dev/hast/<name>) is started with PR_SET_PDEATHSIG, set between fork and
// exec: posix_spawn cannot set it. The kernel sends the signal when the
// *thread* that started the program ends, not only the process; so such a
// program is started from a thread that lives as long as what it serves
// (a resource's device_worker).

#include <csignal>
#include <string>
#include <sys/types.h>
#include <vector>

namespace hast {

/// The signal a program started with `spawn_options::ends_with_starter`
/// gets when its starter ends (kill -9 included). SIGTERM lets nbdfuse
/// unmount its FUSE mount on the way out.
inline constexpr int starter_death_signal = SIGTERM;

/// How to start a program. Descriptors of the starter given here are
/// duplicated onto 0, 1 and 2 in the program; the starter keeps (and
/// closes) its own.
struct spawn_options {
  /// The program's stdin, stdout and stderr; -1: /dev/null.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  /// Looks argv[0] up in the starter's PATH when it has no '/' (as
  /// execvp); otherwise it is used as given.
  bool search_path = false;
  /// A session of its own (setsid): a terminal's signals to the starter's
  /// process group do not reach it.
  bool new_session = false;
  /// The program gets starter_death_signal when the starting thread ends.
  bool ends_with_starter = false;
  /// "NAME=value" entries; empty: the starter's own environment.
  std::vector<std::string> environment;
};

/// What spawn_program() did: the child's pid, or -1 and the errno-style
/// reason it could not start (fork failed, the program is not there or
/// cannot be executed).
struct spawned {
  pid_t pid = -1;
  int error = 0;
  explicit operator bool() const { return pid > 0; }
};

/// `program` looked up in PATH as execvp does (an empty entry is the current
/// directory): the first executable file's path, or "" if none is.
std::string find_in_path(const std::string& program);

/// Starts argv (argv[0] is the program) as described above; returns once
/// the program runs (exec succeeded) or could not start. The caller waits
/// for the child (waitpid). Safe to call from any thread.
spawned spawn_program(const std::vector<std::string>& argv, const spawn_options& options);

} // namespace hast
