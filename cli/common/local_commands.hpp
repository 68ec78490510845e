#pragma once

// The commands that work on the local provider directly, without hastd:
// create and dump. The library functions here do the work and return errors
// as values; run_create/run_dump (commands.hpp) wrap them for the command line.

#include "config/config.hpp"
#include "io/storage/metadata.hpp"
#include "base/errc.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hast::cli {

struct create_options {
  uint32_t extent_size = default_extent_size;
  uint32_t keepdirty = default_keepdirty;
  std::optional<uint64_t> mediasize; // -m: create/extend a file, or use less of a device
  uint64_t maxsize = 0;              // -M: the slots describe this much data; 0: the default room
};

/// What create or dump did on one resource: the metadata, or why not and
/// the exit status for it, FreeBSD's (cli/exit_status.hpp): EX_NOINPUT when
/// the provider cannot be opened, EX_DATAERR for values or metadata that do
/// not fit, EX_IOERR when writing the metadata failed, EX_TEMPFAIL while
/// hastd holds the provider.
struct local_outcome {
  result<metadata> md;
  int exit_status = 0;
};

/// Writes fresh metadata to the resource's local provider. With a mediasize,
/// a missing path or a regular file is created/extended (sparse) to it; a
/// block device must be at least that large. Refuses (errc::busy,
/// EX_TEMPFAIL) while another process (hastd) holds the provider's lock.
local_outcome create_resource(const resource_config &res, const create_options &options);

/// Reads the metadata of the resource's local provider, read-only.
local_outcome dump_resource(const resource_config &res);

/// The resources named by `operands` ("all" or none: every resource, in
/// configuration order); a name the configuration does not have is null,
/// for the caller to report while it goes on with the others (FreeBSD's
/// hastctl create and dump do so).
std::vector<std::pair<std::string, const resource_config *>>
select_resources(const node_config &config, const std::vector<std::string> &operands);

} // namespace hast::cli
