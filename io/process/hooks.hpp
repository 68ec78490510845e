#pragma once

// The `exec` event hook, as HAST runs it: the configured program runs with
// the event's arguments ("connect <res>", "role <res> <old> <new>", ...) in a
// process of its own, started at once when the event happens, so events
// start their hooks in the order they happened and a slow hook never delays
// the next one, up to max_running_hooks at once (later ones queue). hastd
// never kills a hook: one reaper thread collects the
// hooks it started (by pid; hastd has other children) and logs every exit
// status, and warns about a hook that runs for long.

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace hast {

/// A hook still running after this long is logged, and again each time it
/// has run this much longer (HAST warns every 60 s too).
inline constexpr std::chrono::seconds hook_running_warning{60};

/// How long finish_hooks() waits for running hooks to end, so that a quick
/// hook started by the shutdown's last role change has its exit logged.
inline constexpr std::chrono::seconds hook_exit_wait{2};

/// At most this many hooks run at once. A hook requested while as many run
/// waits in a queue and starts, in the order requested, when one ends.
inline constexpr std::size_t max_running_hooks = 8;

/// At most this many hooks wait; one requested while the queue is full is
/// not run, and a warning says so.
inline constexpr std::size_t max_queued_hooks = 64;

/// The PATH a hook gets. Its environment is PATH, HOME=/ and, when hastd
/// has them, LANG, LC_ALL and TZ; nothing else of hastd's (NOTIFY_SOCKET in
/// particular: a hook must not speak to the service manager as hastd).
inline constexpr const char* hook_path = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts `program args...` in its own session with a clean signal mask and
/// default signal dispositions, stdin/stdout/stderr on /dev/null, no other
/// descriptor of hastd's and the environment above; returns at once (the
/// hook starts now, or later from the queue). An empty program is ignored.
void run_hook(const std::string& program, std::vector<std::string> args);

/// Called once as the daemon exits: hooks started so far get up to
/// `hook_exit_wait` to end (their exit is logged), the ones still running
/// then are logged and left running; the reaper thread stops. A hook
/// requested afterwards is logged and not run.
void finish_hooks();

} // namespace hast
