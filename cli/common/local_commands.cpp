#include "cli/common/local_commands.hpp"

#include "cli/common/commands.hpp"
#include "io/provider.hpp"
#include "io/size.hpp"

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

int fail(const std::string &what, const std::string &why) {
  std::cerr << "hastctl: " << what << ": " << why << '\n';
  return 1;
}

node_config load(const cli_options &options) {
  return load_config(options.config_path, select_node(options.node));
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

} // namespace

result<std::vector<const resource_config *>>
select_resources(const node_config &config, const std::vector<std::string> &operands) {
  std::vector<const resource_config *> out;
  if (operands.empty() || (operands.size() == 1 && operands[0] == "all")) {
    for (const auto &res : config.resources)
      out.push_back(&res);
    return out;
  }
  for (const auto &name : operands) {
    const auto *res = config.find(name);
    if (res == nullptr)
      return status{errc::no_such_resource,
                    fmt::format("no resource '{}' in {}", name, config.path)};
    out.push_back(res);
  }
  return out;
}

namespace {

status witness_has_no_data(const resource_config &res) {
  return status{errc::invalid_argument,
                fmt::format("this node is the witness of {}; it holds no data", res.name)};
}

} // namespace

result<metadata> create_resource(const resource_config &res, const create_options &options) {
  if (res.is_witness)
    return witness_has_no_data(res);
  if (res.local.empty())
    return status{errc::invalid_argument, "no local provider configured ('local')"};
  auto prov = open_for_create(res.local, options.mediasize);
  if (!prov)
    return prov.error();
  // hastd holds this lock while it runs the resource as primary or secondary.
  if (auto st = prov->lock(); !st)
    return st;
  auto mediasize = options.mediasize.value_or(prov->size());
  if (mediasize > prov->size())
    return status{errc::invalid_argument,
                  fmt::format("{}: media size {} ({}) is larger than the provider ({})", res.local,
                              mediasize, humanize(mediasize), humanize(prov->size()))};
  return create_metadata(*prov, res.name, options.extent_size, options.keepdirty, mediasize);
}

result<metadata> dump_resource(const resource_config &res) {
  if (res.is_witness)
    return witness_has_no_data(res);
  if (res.local.empty())
    return status{errc::invalid_argument, "no local provider configured ('local')"};
  auto prov = provider::open(res.local, false);
  if (!prov)
    return prov.error();
  auto md = read_metadata(*prov, res.name);
  if (!md && md.error().code() == errc::not_created)
    return status{errc::not_created,
                  fmt::format("{} (run 'hastctl create {}')", md.error().message(), res.name)};
  return md;
}

int run_create(const cli_options &options, const std::vector<std::string> &args) {
  std::string error;
  auto parsed = parse_command_args(args, "e:k:m:", {}, error);
  if (!parsed)
    return fail("create", error);
  create_options co;
  for (const auto &[letter, value] : parsed->options) {
    switch (letter) {
    case 'e': {
      auto bytes = parse_size(value);
      if (!bytes || !valid_extent_size(*bytes))
        return fail("create", fmt::format("invalid extent size '{}': must be a power-of-two "
                                          "multiple of 4096 bytes, e.g. 2M",
                                          value));
      co.extent_size = static_cast<uint32_t>(*bytes);
      break;
    }
    case 'k': {
      uint32_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || end != value.data() + value.size() || n == 0)
        return fail("create", fmt::format("invalid keepdirty '{}': must be a positive number "
                                          "of extents",
                                          value));
      co.keepdirty = n;
      break;
    }
    case 'm': {
      auto bytes = parse_size(value);
      if (!bytes || *bytes == 0)
        return fail("create", fmt::format("invalid media size '{}': expected bytes or a "
                                          "K/M/G/T suffix, e.g. 64M",
                                          value));
      co.mediasize = *bytes;
      break;
    }
    default:
      break;
    }
  }
  if (parsed->operands.empty())
    return fail("create", "no resource given (name resources or 'all')");
  auto config = load(options);
  auto selected = select_resources(config, parsed->operands);
  if (!selected)
    return fail("create", selected.error().message());
  for (const auto *res : *selected) {
    auto md = create_resource(*res, co);
    if (!md)
      return fail("create " + res->name, md.error().message());
    if (options.debug > 0)
      std::cerr << "hastctl: create " << res->name << ": metadata written to " << res->local << "\n"
                << render_metadata(*md);
  }
  return 0;
}

int run_dump(const cli_options &options, const std::vector<std::string> &args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json"}, error);
  if (!parsed)
    return fail("dump", error);
  bool json = options.json || !parsed->flags.empty();
  auto config = load(options);
  auto selected = select_resources(config, parsed->operands);
  if (!selected)
    return fail("dump", selected.error().message());
  int rc = 0;
  auto list = nlohmann::json::array();
  bool first = true;
  for (const auto *res : *selected) {
    auto md = dump_resource(*res);
    if (!md) {
      rc = fail("dump " + res->name, md.error().message());
      if (json)
        list.push_back(
            {{"name", res->name}, {"local", res->local}, {"error", md.error().message()}});
      continue;
    }
    if (json) {
      auto entry = metadata_json(*md);
      entry["local"] = res->local;
      list.push_back(std::move(entry));
    } else {
      if (!first)
        std::cout << '\n';
      std::cout << render_metadata(*md);
      first = false;
    }
  }
  if (json)
    std::cout << nlohmann::json{{"resources", list}}.dump(2) << '\n';
  return rc;
}

} // namespace hast::cli
