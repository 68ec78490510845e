#pragma once

// The commands that work on the local provider directly, without hastd:
// create and dump. The library functions here do the work and return errors
// as values; run_create/run_dump (commands.hpp) wrap them for the command line.

#include "config/config.hpp"
#include "io/metadata.hpp"
#include "messages/errc.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hast::cli {

struct create_options {
  uint32_t extent_size = default_extent_size;
  uint32_t keepdirty = default_keepdirty;
  std::optional<uint64_t> mediasize; // -m: create/extend a file, or use less of a device
};

/// Writes fresh metadata to the resource's local provider. With a mediasize,
/// a missing path or a regular file is created/extended (sparse) to it; a
/// block device must be at least that large. Refuses (errc::busy) while
/// another process (hastd) holds the provider's lock.
result<metadata> create_resource(const resource_config &res, const create_options &options);

/// Reads the metadata of the resource's local provider, read-only.
result<metadata> dump_resource(const resource_config &res);

/// The resources named by `operands` ("all" or none: every resource, in
/// configuration order). Unknown names give errc::no_such_resource.
result<std::vector<const resource_config *>>
select_resources(const node_config &config, const std::vector<std::string> &operands);

} // namespace hast::cli
