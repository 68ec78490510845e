// hast.toml as hastd and hastctl load it: parse_toml (toml11, then the
// shape of the tables), then resolve for the nodes the file names and one
// it does not, then the effective settings rendered. A config_error is the
// expected answer to a bad file; any other exception escapes and is a
// finding (hastd catches only config_error).

#include "config/raw_config.hpp"
#include "tests/fuzz/config_nodes.hpp"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  hast::detail::raw_config raw;
  try {
    raw = hast::detail::parse_toml(text, "fuzz.toml");
  } catch (const hast::config_error&) {
    return 0;
  }
  hast::fuzz::resolve_for_named_nodes(raw);
  return 0;
}
