#include "io/size.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

namespace hast {

namespace {

int unit_shift(char c) {
  switch (std::tolower(static_cast<unsigned char>(c))) {
  case 'k':
    return 10;
  case 'm':
    return 20;
  case 'g':
    return 30;
  case 't':
    return 40;
  case 'p':
    return 50;
  case 'e':
    return 60;
  default:
    return -1;
  }
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i]))
        != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

} // namespace

std::optional<uint64_t> parse_size(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    auto digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10)
      return std::nullopt;
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0)
    return std::nullopt;
  auto suffix = text.substr(i);
  if (suffix.empty() || iequals(suffix, "b"))
    return value;
  int shift = unit_shift(suffix[0]);
  if (shift < 0)
    return std::nullopt;
  auto rest = suffix.substr(1);
  if (!rest.empty() && !iequals(rest, "b") && !iequals(rest, "ib"))
    return std::nullopt;
  if (value > (std::numeric_limits<uint64_t>::max() >> shift))
    return std::nullopt;
  return value << shift;
}

std::string humanize(uint64_t bytes) {
  static constexpr const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024)
    return std::to_string(bytes) + "B";
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (std::round(value * 10.0) / 10.0 < 10.0) {
    std::snprintf(text, sizeof text, "%.1f%s", value, units[unit]);
  } else if (std::round(value) < 1024.0 || unit + 1 == std::size(units)) {
    std::snprintf(text, sizeof text, "%.0f%s", value, units[unit]);
  } else {
    // 1023.6 of a unit rounds to "1024": say "1.0" of the next one instead.
    std::snprintf(text, sizeof text, "%.1f%s", value / 1024.0, units[unit + 1]);
  }
  return text;
}

} // namespace hast
