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

} // namespace hast
