#include "io/codec/size.hpp"

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

std::string humanize_number(uint64_t bytes) {
  // FreeBSD's lib/libutil/humanize_number.c for these arguments: len 5,
  // suffix "", HN_AUTOSCALE, HN_NOSPACE | HN_DECIMAL, divisor 1024.
  constexpr size_t len = 5;
  constexpr int maxscale = 6;
  constexpr uint64_t divisor = 1024;
  constexpr uint64_t divisordeccut = 973; // ceil(.95 * 1024)
  static constexpr const char* prefixes[] = {"", "K", "M", "G", "T", "P", "E"};

  // The value reaches humanize_number as an int64_t. INT64_MIN stays negative
  // when FreeBSD negates it, fits no loop test and prints whole, cut to 4.
  if (bytes == uint64_t{1} << 63)
    return "-922B";
  bool negative = bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t quotient = negative ? ~bytes + 1 : bytes;
  size_t baselen = 1 + (negative ? 2 : 1); // prefix, then sign and digit or digit
  uint64_t max = 1;
  for (size_t i = len - baselen; i-- > 0;)
    max *= 10;
  uint64_t remainder = 0;
  int scale = 0;
  // Divide until the number fits; once more if rounding would overflow it.
  while ((quotient >= max
          || (quotient == max - 1 && (remainder >= divisordeccut || remainder >= divisor / 2)))
         && scale < maxscale) {
    remainder = quotient % divisor;
    quotient /= divisor;
    ++scale;
  }
  // FreeBSD prints sign * value with %d: a value of 0 has no minus sign.
  auto sign = [&](uint64_t value) { return negative && value != 0 ? "-" : ""; };
  char text[32];
  if (((quotient == 9 && remainder < divisordeccut) || quotient < 9) && scale > 0) {
    auto s1 = quotient + (remainder * 10 + divisor / 2) / divisor / 10;
    auto s2 = (remainder * 10 + divisor / 2) / divisor % 10;
    std::snprintf(text, sizeof text, "%s%llu.%llu%s", sign(s1), static_cast<unsigned long long>(s1),
                  static_cast<unsigned long long>(s2), prefixes[scale]);
  } else {
    auto whole = quotient + (remainder + divisor / 2) / divisor;
    std::snprintf(text, sizeof text, "%s%llu%s", sign(whole),
                  static_cast<unsigned long long>(whole), prefixes[scale]);
  }
  // snprintf into FreeBSD's 5-byte buffer keeps at most 4 characters.
  return std::string(text).substr(0, len - 1) + "B";
}

} // namespace hast
