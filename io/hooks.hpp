#pragma once

// The `exec` event hook, as HAST runs it: the configured program runs with
// the event's arguments ("connect <res>", "role <res> <old> <new>", ...) in a
// process of its own, started at once when the event happens, so events
// start their hooks in the order they happened and a slow hook never delays
// the next one. hastd never kills a hook: one reaper thread collects the
// hooks it started (by pid; hastd has other children) and logs every exit
// status, and warns about a hook that runs for long.

#include <chrono>
#include <string>
#include <vector>

namespace hast {

/// A hook still running after this long is logged, and again each time it
/// has run this much longer (HAST warns every 60 s too).
inline constexpr std::chrono::seconds hook_running_warning{60};

/// How long finish_hooks() waits for running hooks to end, so that a quick
/// hook started by the shutdown's last role change has its exit logged.
inline constexpr std::chrono::seconds hook_exit_wait{2};

/// Starts `program args...` in its own session with a clean signal mask and
/// default signal dispositions, stdin/stdout/stderr on /dev/null and no other
/// descriptor of hastd's; returns at once. An empty program is ignored.
void run_hook(const std::string& program, std::vector<std::string> args);

/// Called once as the daemon exits: hooks started so far get up to
/// `hook_exit_wait` to end (their exit is logged), the ones still running
/// then are logged and left running; the reaper thread stops. A hook
/// requested afterwards is logged and not run.
void finish_hooks();

} // namespace hast
