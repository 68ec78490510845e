#pragma once

// The syntax-neutral model both parsers produce: what the file says, level by
// level, with every statement's source line. Nothing here is resolved or
// validated beyond the shape of the file; config.cpp owns the meaning of
// options, where each is legal, inheritance and every value check, so the
// FreeBSD and the TOML syntax cannot drift apart.

#include "config/config.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace hast::detail {

/// Where a statement stands in the file.
enum class level : uint8_t {
  global,         // depth 0
  global_node,    // `on <node> { }` at depth 0
  resource,       // `resource <name> { }`
  resource_node,  // `on <node> { }` inside a resource
};

/// One `option value` statement. TOML values arrive already rendered as text
/// (integers in decimal, booleans as on/off); a TOML array gives one
/// statement per element.
struct raw_statement {
  std::string option;
  std::string value;
  source_location where;
};

/// An `on <node> { }` section, global or inside a resource.
struct raw_node_section {
  std::string node;
  source_location where;  // the `on` line
  std::vector<raw_statement> statements;
};

struct raw_resource {
  std::string name;
  source_location where;  // the `resource` line
  std::vector<raw_statement> statements;
  std::vector<raw_node_section> nodes;
};

/// A whole file, in file order.
struct raw_config {
  std::string path;
  std::vector<raw_statement> statements;  // global
  std::vector<raw_node_section> nodes;    // global node sections
  std::vector<raw_resource> resources;
};

/// True for every option name any level accepts (not `on`/`resource`).
bool is_known_option(std::string_view option);

/// The message of the "unknown option" error, shared by parsers and resolver.
std::string unknown_option_message(std::string_view option);

/// FreeBSD hast.conf syntax. Throws config_error on syntax errors.
raw_config parse_hastconf(const std::string& text, const std::string& path);

/// TOML syntax. Throws config_error on syntax errors and on a file whose
/// tables do not have the expected shape.
raw_config parse_toml(const std::string& text, const std::string& path);

/// True if `path` ends in `.toml`, or the first line that is neither blank
/// nor a comment looks like `key = value` or `[table]`.
bool looks_like_toml(const std::string& text, const std::string& path);

/// Resolves `raw` for `node` and validates it. Throws config_error.
node_config resolve(const raw_config& raw, const std::string& node);

/// True if an `on <section>` section applies to `node`: the names are equal,
/// or one equals the other's first dot-separated component.
bool node_matches(std::string_view section, std::string_view node);

} // namespace hast::detail
