#include "base/events.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace hast {

int64_t event_clock_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string event_time_text(int64_t time_ms) {
  std::time_t seconds = static_cast<std::time_t>(time_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(time_ms % 1000));
  return buf;
}

nlohmann::ordered_json to_json(const event_record& e) {
  nlohmann::ordered_json j = {
      {"time", event_time_text(e.time_ms)}, {"event", e.name}, {"resource", e.resource}};
  for (const auto& [key, value] : e.fields)
    j[key] = value;
  return j;
}

event_record event_from_json(const nlohmann::ordered_json& j) {
  event_record e;
  if (!j.is_object())
    return e;
  e.name = j.value("event", "");
  e.resource = j.value("resource", "");
  // The time travels as text; the record keeps the text's milliseconds.
  std::tm utc{};
  int ms = 0;
  auto text = j.value("time", "");
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &utc.tm_year, &utc.tm_mon, &utc.tm_mday,
                  &utc.tm_hour, &utc.tm_min, &utc.tm_sec, &ms) == 7) {
    utc.tm_year -= 1900;
    utc.tm_mon -= 1;
    e.time_ms = static_cast<int64_t>(timegm(&utc)) * 1000 + ms;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "time" || it.key() == "event" || it.key() == "resource")
      continue;
    e.fields.emplace_back(it.key(), it->is_string() ? it->get<std::string>() : it->dump());
  }
  return e;
}

std::string event_line(const event_record& e) {
  std::string line = event_time_text(e.time_ms) + " " + e.name + " " + e.resource;
  for (const auto& [key, value] : e.fields) {
    line += " " + key + "=";
    if (value.find_first_of(" \t\"") == std::string::npos && !value.empty())
      line += value;
    else
      line += nlohmann::ordered_json(value).dump();  // quoted, escapes as JSON does
  }
  return line;
}

} // namespace hast
