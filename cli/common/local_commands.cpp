#include "cli/common/local_commands.hpp"

#include "cli/common/commands.hpp"
#include "cli/exit_status.hpp"
#include "io/storage/provider.hpp"
#include "io/codec/size.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <iostream>
#include <limits>

#include <sys/stat.h>

namespace hast::cli {

namespace {

/// Prints "hastctl: <what>: <why>" and returns `exit_status`.
int fail(int exit_status, const std::string &what, const std::string &why) {
  std::cerr << "hastctl: " << what << ": " << why << '\n';
  return exit_status;
}

bool valid_extent_size(uint64_t bytes) {
  return bytes >= 4096 && bytes % 4096 == 0 && bytes <= std::numeric_limits<uint32_t>::max()
         && (bytes & (bytes - 1)) == 0;
}

// Opens the provider for create: a missing path or a regular file is
// created or extended when a media size is given.
result<provider> open_for_create(const std::string &path, std::optional<uint64_t> mediasize) {
  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT)
    return status{errc::io_error, fmt::format("{}: {}", path, std::strerror(errno))};
  if (mediasize && (!exists || S_ISREG(st.st_mode)))
    return provider::create_file(path, *mediasize);
  if (!exists)
    return status{
        errc::invalid_argument,
        fmt::format("{}: provider does not exist (give -m <size> to create a file)", path)};
  return provider::open(path, true);
}

local_outcome failed(int exit_status, status why) {
  return {std::move(why), exit_status};
}

status witness_has_no_data(const resource_config &res) {
  return status{errc::invalid_argument,
                fmt::format("this node is the witness of {}; it holds no data", res.name)};
}

} // namespace

std::vector<std::pair<std::string, const resource_config *>>
select_resources(const node_config &config, const std::vector<std::string> &operands) {
  std::vector<std::pair<std::string, const resource_config *>> out;
  if (operands.empty() || (operands.size() == 1 && operands[0] == "all")) {
    for (const auto &res : config.resources)
      out.emplace_back(res.name, &res);
    return out;
  }
  for (const auto &name : operands)
    out.emplace_back(name, config.find(name));
  return out;
}

local_outcome create_resource(const resource_config &res, const create_options &options) {
  if (res.is_witness)
    return failed(EX_DATAERR, witness_has_no_data(res));
  if (res.local.empty())
    return failed(EX_DATAERR, status{errc::invalid_argument, "no local provider configured ('local')"});
  auto prov = open_for_create(res.local, options.mediasize);
  if (!prov)
    return failed(EX_NOINPUT, prov.error());
  // hastd holds this lock while it runs the resource as primary or secondary.
  if (auto st = prov->lock(); !st)
    return failed(st.code() == errc::busy ? EX_TEMPFAIL : EX_NOINPUT, st);
  auto mediasize = options.mediasize.value_or(prov->size());
  if (mediasize > prov->size())
    return failed(EX_DATAERR,
                  status{errc::invalid_argument,
                         fmt::format("{}: media size {} ({}) is larger than the provider ({})",
                                     res.local, mediasize, humanize(mediasize),
                                     humanize(prov->size()))});
  auto md = create_metadata(*prov, res.name, options.extent_size, options.keepdirty, mediasize,
                            options.maxsize);
  if (!md)
    return failed(md.error().code() == errc::invalid_argument ? EX_DATAERR : EX_IOERR, md.error());
  return {std::move(md), 0};
}

local_outcome dump_resource(const resource_config &res) {
  if (res.is_witness)
    return failed(EX_DATAERR, witness_has_no_data(res));
  if (res.local.empty())
    return failed(EX_DATAERR, status{errc::invalid_argument, "no local provider configured ('local')"});
  auto prov = provider::open(res.local, false);
  if (!prov)
    return failed(EX_NOINPUT, prov.error());
  auto md = read_metadata(*prov, res.name);
  if (md)
    return {std::move(md), 0};
  if (md.error().code() == errc::io_error)
    return failed(EX_IOERR, md.error());
  if (md.error().code() == errc::not_created)
    return failed(EX_DATAERR,
                  status{errc::not_created, fmt::format("{} (run 'hastctl create {}')",
                                                        md.error().message(), res.name)});
  return failed(EX_DATAERR, md.error());
}

int run_create(const cli_options &options, const std::vector<std::string> &args) {
  std::string error;
  auto parsed = parse_command_args(args, "e:k:m:M:", {}, error);
  if (!parsed)
    return fail(EX_USAGE, "create", error);
  create_options co;
  for (const auto &[letter, value] : parsed->options) {
    switch (letter) {
    case 'e': {
      // A value that is no size is a usage error, a size that cannot be
      // an extent a data error (FreeBSD: "Invalid extentsize", EX_USAGE;
      // "Extent size ... is not multiple of sector size", EX_DATAERR).
      auto bytes = parse_size(value);
      if (!bytes || !valid_extent_size(*bytes))
        return fail(bytes ? EX_DATAERR : EX_USAGE, "create",
                    fmt::format("invalid extent size '{}': must be a power-of-two "
                                "multiple of 4096 bytes, e.g. 2M",
                                value));
      co.extent_size = static_cast<uint32_t>(*bytes);
      break;
    }
    case 'k': {
      uint32_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || end != value.data() + value.size() || n == 0)
        return fail(EX_USAGE, "create",
                    fmt::format("invalid keepdirty '{}': must be a positive number of extents",
                                value));
      co.keepdirty = n;
      break;
    }
    case 'm': {
      auto bytes = parse_size(value);
      if (!bytes || *bytes == 0)
        return fail(EX_USAGE, "create",
                    fmt::format("invalid media size '{}': expected bytes or a "
                                "K/M/G/T suffix, e.g. 64M",
                                value));
      co.mediasize = *bytes;
      break;
    }
    case 'M': {
      // The largest data size the metadata slots are to describe, for
      // online growth (docs/METADATA.md, "Room to grow").
      auto bytes = parse_size(value);
      if (!bytes || *bytes == 0)
        return fail(EX_USAGE, "create",
                    fmt::format("invalid maximum size '{}': expected bytes or a "
                                "K/M/G/T suffix, e.g. 1T",
                                value));
      co.maxsize = *bytes;
      break;
    }
    default:
      break;
    }
  }
  if (parsed->operands.empty())
    return fail(EX_USAGE, "create", "no resource given (name resources or 'all')");
  auto config = load_config(options.config_path, select_node(options.node));
  // Every named resource is tried; the exit status is the first failure's.
  int rc = 0;
  for (const auto &[name, res] : select_resources(config, parsed->operands)) {
    int failure = 0;
    if (res == nullptr) {
      failure = fail(EX_DATAERR, "create", fmt::format("no resource '{}' in {}", name, config.path));
    } else if (auto out = create_resource(*res, co); !out.md) {
      failure = fail(out.exit_status, "create " + name, out.md.error().message());
    } else if (options.debug > 0) {
      std::cerr << "hastctl: create " << name << ": metadata written to " << res->local << "\n"
                << render_metadata(*out.md);
    }
    if (rc == 0)
      rc = failure;
  }
  return rc;
}

int run_dump(const cli_options &options, const std::vector<std::string> &args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json"}, error);
  if (!parsed)
    return fail(EX_USAGE, "dump", error);
  bool json = options.json || !parsed->flags.empty();
  auto config = load_config(options.config_path, select_node(options.node));
  int rc = 0;
  auto list = nlohmann::json::array();
  bool first = true;
  for (const auto &[name, res] : select_resources(config, parsed->operands)) {
    if (res == nullptr) {
      auto why = fmt::format("no resource '{}' in {}", name, config.path);
      auto failure = fail(EX_DATAERR, "dump", why);
      rc = rc == 0 ? failure : rc;
      if (json)
        list.push_back({{"name", name}, {"error", why}});
      continue;
    }
    auto out = dump_resource(*res);
    if (!out.md) {
      auto failure = fail(out.exit_status, "dump " + name, out.md.error().message());
      rc = rc == 0 ? failure : rc;
      if (json)
        list.push_back({{"name", name}, {"local", res->local}, {"error", out.md.error().message()}});
      continue;
    }
    if (json) {
      auto entry = metadata_json(*out.md);
      entry["local"] = res->local;
      list.push_back(std::move(entry));
    } else {
      if (!first)
        std::cout << '\n';
      std::cout << render_metadata(*out.md);
      first = false;
    }
  }
  if (json)
    std::cout << nlohmann::json{{"resources", list}}.dump(2) << '\n';
  return rc;
}

} // namespace hast::cli
