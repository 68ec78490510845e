// hastctl events: the daemon's state changes as they happen, one line each
// (like drbdsetup events2), so that a script waits on them instead of
// polling. First an `exists` line per resource gives the state the stream
// starts from.

#include "cli/common/commands.hpp"
#include "cli/common/control_client.hpp"
#include "cli/exit_status.hpp"
#include "io/net/control_channel.hpp"
#include "base/events.hpp"
#include "base/status.hpp"

#include <csignal>
#include <cstdio>
#include <iostream>
#include <unistd.h>

namespace hast::cli {

namespace {

void print(const event_record& e, bool json) {
  auto line = json ? to_json(e).dump() : event_line(e);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);  // a reader waits on every line
}

/// The state a resource is in now, as an `exists` event.
event_record exists(const resource_status& r) {
  event_record e{"exists", r.name, event_clock_ms(), {}};
  if (r.error != 0) {
    e.fields = {{"error", std::to_string(r.error)}};
    return e;
  }
  e.fields = {{"role", r.witness_node ? std::string{"witness"} : to_string(r.current_role)}};
  if (!r.witness_node) {
    e.fields.emplace_back("connected", r.connected ? "yes" : "no");
    e.fields.emplace_back("status", r.status);
    e.fields.emplace_back("dirty", std::to_string(r.dirty_bytes));
    if (r.sync.active)
      e.fields.emplace_back("sync", std::to_string(r.sync.done_bytes) + "/"
                                      + std::to_string(r.sync.total_bytes));
    if (r.split_brain)
      e.fields.emplace_back("split-brain", "yes");
  }
  return e;
}

} // namespace

int run_events(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json", "--now"}, error);
  if (!parsed)
    return fail(EX_USAGE, "events: " + error);
  bool json = options.json;
  bool now_only = false;
  for (auto& f : parsed->flags) {
    json = json || f == "--json";
    now_only = now_only || f == "--now";
  }
  auto names = parsed->operands;
  auto config = load(options);
  for (auto& name : names)
    if (name != "all" && !config.find(name))
      return fail(EX_DATAERR, "events: unknown resource '" + name + "'");
  auto path = unix_socket_path(config.control);

  // Subscribe first, then read the state: no change falls between the two.
  int fd = -1;
  if (!now_only) {
    auto stream = control::open_stream(path, {{"command", "events"}, {"resources", names}}, 30);
    if (!stream) {
      // As request_daemon(): unreachable is EX_OSERR, the rest EX_UNAVAILABLE.
      auto text = stream.error().message();
      return fail(text.rfind("hastd is not running", 0) == 0 ? EX_OSERR : EX_UNAVAILABLE, text);
    }
    fd = *stream;
  }
  auto state = request_daemon(options, {{"command", "status"}, {"resources", names}});
  if (!state) {
    if (fd >= 0)
      ::close(fd);
    return report_failure(state);
  }
  for (auto& entry : state.body.at("resources"))
    print(exists(status_from_json(entry)), json);
  print(event_record{"exists", "-", event_clock_ms(), {}}, json);
  if (now_only)
    return 0;

  std::signal(SIGPIPE, SIG_IGN);
  for (;;) {
    auto frame = control::read_frame(fd);
    if (!frame) {
      ::close(fd);
      return fail(EX_UNAVAILABLE, "events: the stream ended: " + frame.error().message()
                  + " (hastd stopped or dropped this reader)");
    }
    auto j = nlohmann::ordered_json::parse(*frame, nullptr, false);
    if (!j.is_object()) {
      ::close(fd);
      return fail(EX_UNAVAILABLE, "events: hastd sent a malformed event");
    }
    print(event_from_json(j), json);
    if (std::ferror(stdout)) {  // the reader of our output went away
      ::close(fd);
      return 0;
    }
  }
}

} // namespace hast::cli
