#pragma once

// The `exec` event hook: the configured program runs with the event's
// arguments (HAST's: "connect <res>", "role <res> <old> <new>", ...). The
// daemon never waits for it while it runs: hooks run one after another on their own
// thread, in the order the events happened, each within a time limit, and
// every exit status is logged.

#include <chrono>
#include <string>
#include <vector>

namespace hast {

inline constexpr std::chrono::seconds hook_time_limit{60};

/// Queues `program args...`; returns at once. An empty program is ignored.
void run_hook(const std::string& program, std::vector<std::string> args,
              std::chrono::milliseconds limit = hook_time_limit);

/// Runs every queued hook (each within its limit), then stops the hook
/// thread; hooks queued afterwards are logged and dropped. The daemon calls
/// it once, after its actors are gone and before it exits.
void finish_hooks();

} // namespace hast
