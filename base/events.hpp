#pragma once

// A state change of a resource, as `hastctl events` shows it (one line per
// change, like drbdsetup events2) and the exec hook gets it. Plain data, no
// CAF, so hastctl shares it.
//
// Text form:  2026-12-01T03:40:00.123Z role demo old=secondary new=primary
// JSON form:  {"time":"2026-12-01T03:40:00.123Z","event":"role","resource":"demo",
//              "old":"secondary","new":"primary"}

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hast {

using event_fields = std::vector<std::pair<std::string, std::string>>;

struct event_record {
  std::string name;       // connect, disconnect, role, syncstart, sync, ...
  std::string resource;
  int64_t time_ms = 0;    // wall clock, milliseconds since the epoch
  event_fields fields;    // in order; keys never "time", "event" or "resource"
};

/// Milliseconds since the epoch, now (the wall clock: the stream is read by people).
int64_t event_clock_ms();

/// "2026-12-01T03:40:00.123Z"
std::string event_time_text(int64_t time_ms);

nlohmann::ordered_json to_json(const event_record& e);
/// The inverse of to_json; a malformed object gives nullopt-like empty name.
event_record event_from_json(const nlohmann::ordered_json& j);

/// The text form: time, event, resource, then key=value in order; a value
/// with spaces is quoted.
std::string event_line(const event_record& e);

} // namespace hast
