#pragma once

// Byte counts as people type and read them: "64M", "2MiB", "1g" in, "2.0MiB"
// out. Multiples are binary (K = 1024), as FreeBSD's expand_number(3).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hast {

/// Parses plain bytes ("4096") or a number with a K/M/G/T/P/E suffix,
/// optionally followed by "B" or "iB" ("64M", "64MB", "64MiB", "64m"); a lone
/// "B" suffix means bytes. Case-insensitive, no spaces, no fractions.
/// Returns nullopt for anything else or on overflow.
std::optional<uint64_t> parse_size(std::string_view text);

/// Renders bytes with a binary unit: "512B", "4.0KiB", "2.0MiB", "60MiB".
/// One decimal below 10 units, whole numbers above (like humanize_number(3)).
std::string humanize(uint64_t bytes);

/// Renders bytes as FreeBSD's hastctl does ("%NB"): humanize_number(3) into
/// a 5-byte buffer with HN_AUTOSCALE and HN_NOSPACE | HN_DECIMAL, then "B".
/// Units of 1024 named K, M, G, T, P, E; at most three digits, one decimal
/// below 10: 0 -> "0B", 1000 -> "1.0KB", 2097152 -> "2.0MB", 67108864 -> "64MB".
/// Counts above INT64_MAX print as the negative numbers FreeBSD's cast to
/// int64_t makes of them, cut to the buffer as FreeBSD's are.
std::string humanize_number(uint64_t bytes);

} // namespace hast
