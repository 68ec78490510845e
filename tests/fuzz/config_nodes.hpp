#pragma once

// The second half of both configuration targets: a parsed file resolved and
// validated as a daemon on each node it names would (and on one it does not
// name), and the result rendered.

#include "config/raw_config.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace hast::fuzz {

inline void resolve_for_named_nodes(const hast::detail::raw_config& raw) {
  std::vector<std::string> nodes{"fuzz-node"};
  auto add = [&](const std::string& name) {
    if (nodes.size() < 4 && std::find(nodes.begin(), nodes.end(), name) == nodes.end())
      nodes.push_back(name);
  };
  for (const auto& section : raw.nodes)
    add(section.node);
  for (const auto& res : raw.resources)
    for (const auto& section : res.nodes)
      add(section.node);
  for (const auto& node : nodes) {
    try {
      const auto config = hast::detail::resolve(raw, node);
      (void)hast::render_effective(config);
    } catch (const hast::config_error&) {
    }
  }
}

} // namespace hast::fuzz
