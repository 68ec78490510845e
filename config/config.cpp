// Resolution and validation, shared by both syntaxes: which options exist,
// where each is legal, what values each takes, how levels inherit, and the
// checks across resources. Parsers only build a raw_config.

#include "config/config.hpp"

#include <cctype>
#include "config/raw_config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace hast {

// --- Errors and small helpers ---------------------------------------------

namespace {

std::string format_error(const source_location& where, const std::string& option,
                         const std::string& message) {
  // Appended piece by piece: `":" + std::to_string(...)` here trips GCC 12's
  // -Wrestrict false positive at -O3.
  std::string text = where.file;
  if (where.line > 0) {
    text += ':';
    text += std::to_string(where.line);
  }
  text += ": ";
  if (!option.empty()) {
    text += option;
    text += ": ";
  }
  text += message;
  return text;
}

std::string_view short_name(std::string_view name) {
  return name.substr(0, name.find('.'));
}

bool parse_port(std::string_view text, uint16_t& port) {
  if (text.empty() || text.size() > 5)
    return false;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535)
    return false;
  port = static_cast<uint16_t>(value);
  return true;
}

bool valid_host(std::string_view host) {
  if (host.empty())
    return false;
  return std::none_of(host.begin(), host.end(), [](char c) {
    return c == '/' || c == '[' || c == ']' || c == ' ' || c == '\t' || c == '@';
  });
}

} // namespace

config_error::config_error(source_location where, std::string option, std::string message)
    : std::runtime_error(format_error(where, option, message)), where_(std::move(where)),
      option_(std::move(option)), message_(std::move(message)) {}

const resource_config* node_config::find(std::string_view name) const {
  for (const auto& res : resources)
    if (res.name == name)
      return &res;
  return nullptr;
}

std::string unix_socket_path(const std::string& address) {
  std::string_view a = address;
  if (a.rfind("uds://", 0) == 0)
    return std::string{a.substr(6)};
  if (a.rfind("unix://", 0) == 0)
    return std::string{a.substr(7)};
  if (!a.empty() && a.front() == '/' && a.find("://") == std::string_view::npos)
    return address;
  return {};
}

bool split_tcp_address(const std::string& address, std::string& host, uint16_t& port,
                       uint16_t fallback_port) {
  std::string_view a = address;
  for (std::string_view scheme : {"tcp://", "tcp4://", "tcp6://"}) {
    if (a.rfind(scheme, 0) == 0) {
      a.remove_prefix(scheme.size());
      break;
    }
  }
  if (a.find("://") != std::string_view::npos)
    return false;
  std::string_view h;
  uint16_t p = fallback_port;
  if (!a.empty() && a.front() == '[') {
    const auto close = a.find(']');
    if (close == std::string_view::npos)
      return false;
    h = a.substr(1, close - 1);
    const auto rest = a.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !parse_port(rest.substr(1), p)))
      return false;
    if (h.empty() || h.find_first_of("[]/ ") != std::string_view::npos)
      return false;
  } else {
    const auto colon = a.find(':');
    if (colon != std::string_view::npos && a.find(':', colon + 1) != std::string_view::npos) {
      h = a;  // a bare IPv6 address without brackets: no port
    } else if (colon != std::string_view::npos) {
      h = a.substr(0, colon);
      if (!parse_port(a.substr(colon + 1), p))
        return false;
    } else {
      h = a;
    }
    if (!valid_host(h))
      return false;
  }
  host = std::string{h};
  port = p;
  return true;
}

std::string select_node(const std::string& explicit_node) {
  if (!explicit_node.empty())
    return explicit_node;
  if (const char* env = std::getenv("HAST_NODE"); env != nullptr && *env != '\0')
    return env;
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0)
    return {};
  return name.data();
}

// --- The options table ----------------------------------------------------

namespace detail {
namespace {

constexpr unsigned at(level l) { return 1u << static_cast<unsigned>(l); }
constexpr unsigned daemon_levels = at(level::global) | at(level::global_node);
constexpr unsigned inherited_levels =
    at(level::global) | at(level::global_node) | at(level::resource) | at(level::resource_node);
constexpr unsigned resource_levels = at(level::resource) | at(level::resource_node);

// A value check: nullopt if good, else what was expected.
using value_check = std::function<std::optional<std::string>(const std::string&)>;

std::optional<std::string> expect(bool good, std::string_view expected, const std::string& value) {
  if (good)
    return std::nullopt;
  return std::string{"expected "} + std::string{expected} + ", got '" + value + "'";
}

bool is_tcp_address(const std::string& value) {
  std::string host;
  uint16_t port = 0;
  return split_tcp_address(value, host, port);
}

bool is_socket_address(const std::string& value) {
  return !unix_socket_path(value).empty() || is_tcp_address(value);
}

bool is_path(const std::string& value) {
  return !value.empty();
}

/// "0" or "unlimited" (no limit), or a byte rate per second with an optional
/// K, M or G suffix (binary multiples), e.g. "50M".
std::optional<uint64_t> parse_syncrate(const std::string& value) {
  if (value == "unlimited")
    return 0;
  uint64_t n = 0;
  std::size_t i = 0;
  for (; i < value.size() && std::isdigit(static_cast<unsigned char>(value[i])); ++i) {
    if (n > (UINT64_MAX - 9) / 10)
      return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(value[i] - '0');
  }
  if (i == 0)
    return std::nullopt;
  auto suffix = value.substr(i);
  uint64_t unit = 1;
  if (suffix == "K" || suffix == "k")
    unit = 1ull << 10;
  else if (suffix == "M" || suffix == "m")
    unit = 1ull << 20;
  else if (suffix == "G" || suffix == "g")
    unit = 1ull << 30;
  else if (!suffix.empty())
    return std::nullopt;
  if (n > UINT64_MAX / unit)
    return std::nullopt;
  return n * unit;
}

std::optional<int> parse_timeout(const std::string& value) {
  if (value.empty() || value.size() > 9)
    return std::nullopt;
  int seconds = 0;
  for (char c : value) {
    if (c < '0' || c > '9')
      return std::nullopt;
    seconds = seconds * 10 + (c - '0');
  }
  if (seconds <= 0)
    return std::nullopt;
  return seconds;
}

bool is_nbd_address(const std::string& value) {
  if (!unix_socket_path(value).empty())
    return true;
  std::string host;
  uint16_t port = 0;
  return value.rfind("tcp", 0) == 0 && split_tcp_address(value, host, port, 0) && port != 0;
}

bool valid_allow_entry(const std::string& entry) {
  const auto slash = entry.find('/');
  const auto host = entry.substr(0, slash);
  in_addr v4{};
  in6_addr v6{};
  unsigned bits = 0;
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1)
    bits = 32;
  else if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1)
    bits = 128;
  else
    return false;
  if (slash == std::string::npos)
    return true;
  const auto digits = entry.substr(slash + 1);
  if (digits.empty() || digits.size() > 3
      || digits.find_first_not_of("0123456789") != std::string::npos)
    return false;
  return std::stoul(digits) <= bits;
}

struct option_rule {
  std::string_view name;
  unsigned levels;
  value_check check;
};

const std::vector<option_rule>& option_rules() {
  static const std::vector<option_rule> rules = {
      {"control", daemon_levels,
       [](const std::string& v) {
         if (!unix_socket_path(v).empty())
           return std::optional<std::string>{};
         // HAST's control channel carries role changes and resyncs and
         // authenticates nobody: only a Unix socket, which hastd makes
         // readable by root alone (mode 0600), keeps it to the administrator.
         return std::optional<std::string>{
             "expected uds:///path, unix:///path or /path, got '" + v +
             "'; the control socket must be a Unix socket readable by root only (mode 0600): "
             "a TCP control port would let anyone who reaches it change roles or discard data"};
       }},
      {"metrics", daemon_levels,
       [](const std::string& v) {
         std::string host;
         uint16_t port = 0;
         return expect(v.rfind("tcp", 0) == 0 && split_tcp_address(v, host, port, 0) && port != 0,
                       "tcp://address:port (the HTTP address of /metrics)", v);
       }},
      {"pidfile", daemon_levels,
       [](const std::string& v) { return expect(is_path(v), "a path", v); }},
      {"listen", daemon_levels,
       [](const std::string& v) {
         return expect(is_socket_address(v),
                       "tcp://host[:port], tcp4://, tcp6://[addr]:port, host[:port] or uds:///path", v);
       }},
      {"replication", inherited_levels,
       [](const std::string& v) {
         return expect(parse_replication(v).has_value(), "fullsync, memsync or async", v);
       }},
      {"checksum", inherited_levels,
       [](const std::string& v) {
         return expect(parse_checksum(v).has_value(), "none, crc32, crc32c or sha256", v);
       }},
      {"compression", inherited_levels,
       [](const std::string& v) {
         return expect(parse_compression(v).has_value(), "none, hole, lzf or lz4", v);
       }},
      {"timeout", inherited_levels,
       [](const std::string& v) {
         return expect(parse_timeout(v).has_value(), "a whole number of seconds greater than 0", v);
       }},
      {"exec", inherited_levels,
       [](const std::string& v) {
         return expect(!v.empty() && v.front() == '/', "the absolute path of a program", v);
       }},
      {"syncrate", inherited_levels,
       [](const std::string& v) {
         return expect(parse_syncrate(v).has_value(),
                       "bytes per second with an optional K, M or G suffix, or unlimited", v);
       }},
      {"metaflush", inherited_levels,
       [](const std::string& v) { return expect(v == "on" || v == "off", "on or off", v); }},
      {"resync-checksum", inherited_levels,
       [](const std::string& v) { return expect(v == "on" || v == "off", "on or off", v); }},
      {"encryption", inherited_levels,
       [](const std::string& v) { return expect(v == "on" || v == "off", "on or off", v); }},
      {"device", inherited_levels,
       [](const std::string& v) { return expect(v == "on" || v == "off", "on or off", v); }},
      {"nbd", inherited_levels,
       [](const std::string& v) { return expect(is_nbd_address(v), "uds:///path or tcp://addr:port", v); }},
      {"nbd-allow", inherited_levels,
       [](const std::string& v) {
         return expect(parse_allow_list(v).has_value(),
                       "a comma-separated list of IPv4 or IPv6 addresses, each with an optional "
                       "/prefix length (the clients that may connect to a tcp:// NBD export)",
                       v);
       }},
      {"secret", inherited_levels,
       [](const std::string& v) { return expect(is_path(v), "the path of a key file", v); }},
      {"name", resource_levels,
       [](const std::string& v) {
         return expect(!v.empty() && v.find('/') == std::string::npos && v != "." && v != "..",
                       "a provider name without '/'", v);
       }},
      {"local", resource_levels,
       [](const std::string& v) { return expect(is_path(v), "the path of a block device or file", v); }},
      {"remote", resource_levels,
       [](const std::string& v) {
         return expect(v == "none" || is_tcp_address(v),
                       "tcp://host[:port], tcp4://, tcp6://[addr]:port, host[:port] or none", v);
       }},
      {"failover", inherited_levels,
       [](const std::string& v) { return expect(parse_failover(v).has_value(), "manual or auto", v); }},
      {"witness", inherited_levels,
       [](const std::string& v) {
         return expect(v != "none" && is_tcp_address(v), "the witness's address: tcp://host[:port] or host[:port]", v);
       }},
      {"lease-lost", inherited_levels,
       [](const std::string& v) {
         return expect(parse_lease_loss(v).has_value(), "io-error or suspend", v);
       }},
      {"role", at(level::resource_node),
       [](const std::string& v) {
         return expect(v == "witness",
                       "witness (primary and secondary are set at run time with hastctl role)", v);
       }},
      {"source", resource_levels,
       [](const std::string& v) { return expect(is_tcp_address(v), "tcp://host[:port] or host", v); }},
  };
  return rules;
}

const option_rule* find_rule(std::string_view option) {
  for (const auto& rule : option_rules())
    if (rule.name == option)
      return &rule;
  return nullptr;
}

std::string_view describe(level l) {
  switch (l) {
    case level::global: return "at global level";
    case level::global_node: return "in a global 'on <node>' section";
    case level::resource: return "in a resource section";
    case level::resource_node: return "in a resource's 'on <node>' section";
  }
  return "here";
}

std::string describe_levels(unsigned levels) {
  std::string text;
  for (level l : {level::global, level::global_node, level::resource, level::resource_node}) {
    if ((levels & at(l)) == 0)
      continue;
    if (!text.empty())
      text += ", ";
    text += describe(l);
  }
  return text;
}

void validate(const raw_statement& st, level l) {
  const option_rule* rule = find_rule(st.option);
  if (rule == nullptr)
    throw config_error(st.where, st.option, unknown_option_message(st.option));
  if ((rule->levels & at(l)) == 0)
    throw config_error(st.where, st.option,
                       "not allowed " + std::string{describe(l)} + "; allowed " +
                           describe_levels(rule->levels));
  if (auto problem = rule->check(st.value))
    throw config_error(st.where, st.option, *problem);
}

void validate_all(const raw_config& raw) {
  for (const auto& st : raw.statements)
    validate(st, level::global);
  for (const auto& section : raw.nodes)
    for (const auto& st : section.statements)
      validate(st, level::global_node);
  for (const auto& res : raw.resources) {
    for (const auto& st : res.statements)
      validate(st, level::resource);
    for (const auto& section : res.nodes)
      for (const auto& st : section.statements)
        validate(st, level::resource_node);
  }
}

bool valid_resource_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..")
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == ':';
  });
}

// The statement in force for each option, most specific level last applied.
using settings = std::map<std::string, const raw_statement*, std::less<>>;

void apply(settings& s, const std::vector<raw_statement>& statements) {
  for (const auto& st : statements)
    if (st.option != "listen")
      s[st.option] = &st;
}

const std::string* value_of(const settings& s, std::string_view option) {
  const auto it = s.find(option);
  return it == s.end() ? nullptr : &it->second->value;
}

std::string value_or(const settings& s, std::string_view option, std::string fallback) {
  const std::string* v = value_of(s, option);
  return v != nullptr ? *v : std::move(fallback);
}

std::string seen_nodes(const raw_resource& res) {
  std::vector<std::string_view> seen;
  std::string names;
  for (const auto& section : res.nodes) {
    if (std::find(seen.begin(), seen.end(), section.node) != seen.end())
      continue;
    seen.push_back(section.node);
    if (!names.empty())
      names += ", ";
    names += section.node;
  }
  return names;
}

std::string this_node_names(const std::string& node) {
  const auto brief = short_name(node);
  return brief == node ? node : node + " or " + std::string{brief};
}

/// This node's section says `role witness`: it holds no data and arbitrates
/// the resource's failover (docs/FAILOVER.md).
resource_config resolve_witness(const raw_resource& res, const raw_node_section& mine,
                                const settings& in_force) {
  const raw_statement* role_line = nullptr;
  const raw_statement* state_file = nullptr;
  for (const auto& st : mine.statements) {
    if (st.option == "role")
      role_line = &st;
    else if (st.option == "local")
      state_file = &st;
    else if (st.option == "remote" || st.option == "source" || st.option == "name"
             || st.option == "nbd" || st.option == "nbd-allow" || st.option == "device"
             || st.option == "witness")
      throw config_error(st.where, st.option,
                         "not allowed in the witness's section: the witness holds no data and "
                         "serves no export ('local' may name its state file)");
  }
  const source_location where = role_line != nullptr ? role_line->where : mine.where;
  resource_config out;
  out.name = res.name;
  out.where = res.where;
  out.provider_name = res.name;
  out.is_witness = true;
  out.failover = failover_mode::automatic;
  out.remote = "none";
  out.device = false;
  // Only the witness's own section names its state file: a resource-wide
  // `local` is the data nodes' disk.
  out.local = state_file != nullptr ? state_file->value : "";
  for (const auto& section : res.nodes)
    if (&section != &mine && !node_matches(section.node, mine.node)
        && std::find(out.members.begin(), out.members.end(), section.node) == out.members.end())
      out.members.push_back(section.node);
  if (out.members.size() != 2)
    throw config_error(where, "role",
                       "resource " + res.name + ": a witness arbitrates between exactly two data "
                           "nodes; found " + std::to_string(out.members.size()) + " other 'on' sections");
  if (const auto* v = value_of(in_force, "timeout"))
    out.timeout = *parse_timeout(*v);
  out.exec = value_or(in_force, "exec", "");
  out.nbd = "";
  out.secret = value_or(in_force, "secret", "");
  if (const auto it = in_force.find("secret"); it != in_force.end())
    out.secret_where = it->second->where;
  if (const auto* v = value_of(in_force, "encryption"))
    out.encryption = *v == "on";
  if (out.secret.empty())
    throw config_error(where, "role",
                       "resource " + res.name + ": the witness needs 'secret': only nodes that know "
                       "the key may take the lease");
  return out;
}

resource_config resolve_resource(const raw_resource& res, const settings& inherited,
                                 const std::string& node, settings& in_force) {
  in_force = inherited;
  apply(in_force, res.statements);
  const raw_node_section* mine = nullptr;
  for (const auto& section : res.nodes) {
    if (!node_matches(section.node, node))
      continue;
    if (mine == nullptr)
      mine = &section;
    apply(in_force, section.statements);
  }
  // A resource with `on` sections is meant for those nodes only; one with
  // none applies to every node.
  if (!res.nodes.empty() && mine == nullptr)
    throw config_error(res.where, "on",
                       "resource " + res.name + " has no 'on' section for this node (" +
                           this_node_names(node) + "); acceptable node names seen: " +
                           seen_nodes(res));
  const source_location& here = mine != nullptr ? mine->where : res.where;
  if (mine != nullptr && value_of(in_force, "role") != nullptr)
    return resolve_witness(res, *mine, in_force);

  resource_config out;
  out.name = res.name;
  out.where = res.where;
  out.provider_name = value_or(in_force, "name", res.name);
  const std::string* local = value_of(in_force, "local");
  if (local == nullptr)
    throw config_error(res.where, "local",
                       "no local provider for resource " + res.name + " on node " + node +
                           "; expected 'local <path>' in the resource or its 'on " + node + "' section");
  out.local = *local;
  const std::string* remote = value_of(in_force, "remote");
  if (remote == nullptr)
    throw config_error(here, "remote",
                       "no remote address for resource " + res.name + " on node " + node +
                           "; expected 'remote <address>' or 'remote none' in its 'on " + node +
                           "' section");
  out.remote = *remote;
  out.source = value_or(in_force, "source", "");
  if (const auto* v = value_of(in_force, "replication"))
    out.replication = *parse_replication(*v);
  if (const auto* v = value_of(in_force, "checksum"))
    out.checksum = *parse_checksum(*v);
  if (const auto* v = value_of(in_force, "compression"))
    out.compression = *parse_compression(*v);
  if (const auto* v = value_of(in_force, "timeout"))
    out.timeout = *parse_timeout(*v);
  out.exec = value_or(in_force, "exec", "");
  if (const auto* v = value_of(in_force, "metaflush"))
    out.metaflush = *v == "on";
  if (const auto* v = value_of(in_force, "resync-checksum"))
    out.resync_checksum = *v == "on";
  if (const auto* v = value_of(in_force, "syncrate"))
    out.syncrate = *parse_syncrate(*v);
  out.nbd = value_or(in_force, "nbd", "uds:///var/run/hast/" + res.name + ".sock");
  if (const auto* v = value_of(in_force, "nbd-allow"))
    out.nbd_allow = *parse_allow_list(*v);
  if (const auto* v = value_of(in_force, "device"))
    out.device = *v == "on";
  out.secret = value_or(in_force, "secret", "");
  if (const auto it = in_force.find("secret"); it != in_force.end())
    out.secret_where = it->second->where;
  if (const auto* v = value_of(in_force, "encryption"))
    out.encryption = *v == "on";
  if (const auto* v = value_of(in_force, "lease-lost"))
    out.lease_lost = *parse_lease_loss(*v);
  out.witness = value_or(in_force, "witness", "");
  if (const auto it = in_force.find("failover"); it != in_force.end()) {
    out.failover = *parse_failover(it->second->value);
    const auto& where = it->second->where;
    auto need = [&](bool ok, const std::string& why) {
      if (!ok)
        throw config_error(where, "failover", "resource " + res.name + ": failover auto " + why);
    };
    if (out.automatic()) {
      need(!out.witness.empty(), "needs 'witness <address>': the third node that grants the lease");
      need(!out.secret.empty(),
           "needs 'secret': only nodes that know the key may take the lease from the witness");
      need(!out.standalone(), "needs a remote node ('remote none' has nobody to fail over to)");
      need(out.replication != replication_mode::async,
           "needs replication memsync or fullsync: async acknowledges writes the secondary may "
           "not have, and a failover would lose them");
    }
  }
  return out;
}

// Two resources on this node must not share what only one can own.
void check_unique(const std::vector<resource_config>& resources,
                  const std::vector<settings>& in_force, std::string_view option,
                  const std::function<std::string(const resource_config&)>& key,
                  std::string_view what) {
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < resources.size(); ++i) {
    const auto [it, fresh] = seen.emplace(key(resources[i]), i);
    if (fresh)
      continue;
    const resource_config& first = resources[it->second];
    const auto st = in_force[i].find(option);
    const source_location where = st != in_force[i].end() ? st->second->where : resources[i].where;
    throw config_error(where, std::string{option},
                       std::string{what} + " '" + it->first + "' of resource " + resources[i].name +
                           " is already used by resource " + first.name + " (line " +
                           std::to_string(first.where.line) + ")");
  }
}

} // namespace

bool is_known_option(std::string_view option) {
  return find_rule(option) != nullptr;
}

std::string unknown_option_message(std::string_view) {
  std::string names;
  for (const auto& rule : option_rules()) {
    if (!names.empty())
      names += ", ";
    names += rule.name;
  }
  return "unknown option; expected one of " + names + ", or a 'resource' or 'on' section";
}

bool node_matches(std::string_view section, std::string_view node) {
  return section == node || section == short_name(node) || short_name(section) == node;
}

node_config resolve(const raw_config& raw, const std::string& node) {
  validate_all(raw);

  node_config out;
  out.path = raw.path;
  out.node = node;

  settings global;
  apply(global, raw.statements);
  for (const auto& st : raw.statements)
    if (st.option == "listen")
      out.listen.push_back(st.value);
  for (const auto& section : raw.nodes) {
    if (!node_matches(section.node, node))
      continue;
    apply(global, section.statements);
    for (const auto& st : section.statements)
      if (st.option == "listen")
        out.listen.push_back(st.value);
  }
  if (out.listen.empty())
    out.listen = {default_listen_tcp4, default_listen_tcp6};
  out.control = value_or(global, "control", default_control);
  out.pidfile = value_or(global, "pidfile", default_pidfile);
  out.metrics = value_or(global, "metrics", "");

  std::map<std::string, const raw_resource*> names;
  for (const auto& res : raw.resources) {
    if (!valid_resource_name(res.name))
      throw config_error(res.where, "resource",
                         "expected a resource name of letters, digits, '.', '_', '-' or ':', got '" +
                             res.name + "'");
    const auto [it, fresh] = names.emplace(res.name, &res);
    if (!fresh)
      throw config_error(res.where, "resource",
                         "resource " + res.name + " is configured more than once (first at line " +
                             std::to_string(it->second->where.line) + ")");
  }

  std::vector<settings> in_force(raw.resources.size());
  for (std::size_t i = 0; i < raw.resources.size(); ++i)
    out.resources.push_back(resolve_resource(raw.resources[i], global, node, in_force[i]));

  check_unique(out.resources, in_force, "local",
               [](const resource_config& r) {
                 if (r.is_witness)  // its state file; the default is per resource
                   return "witness state " + (r.local.empty() ? r.name : r.local);
                 return std::filesystem::path{r.local}.lexically_normal().string();
               },
               "local provider");
  check_unique(out.resources, in_force, "name",
               [](const resource_config& r) { return r.provider_name; }, "provider name");
  return out;
}

} // namespace detail

// --- Entry points -----------------------------------------------------------

node_config parse_config(const std::string& text, const std::string& path, const std::string& node) {
  const detail::raw_config raw = detail::looks_like_toml(text, path)
                                     ? detail::parse_toml(text, path)
                                     : detail::parse_hastconf(text, path);
  return detail::resolve(raw, node);
}

node_config load_config(const std::string& path, const std::string& node) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw config_error({path, 0}, "", "cannot read the configuration: it is a directory");
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw config_error({path, 0}, "",
                       std::string{"cannot read the configuration: "} + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw config_error({path, 0}, "",
                       std::string{"cannot read the configuration: "} + std::strerror(errno));
  return parse_config(text.str(), path, node);
}

void read_secrets(node_config& config) {
  for (auto& res : config.resources) {
    if (res.secret.empty())
      continue;
    auto refuse = [&](const std::string& why) {
      throw config_error(res.secret_where, "secret",
                         "resource " + res.name + ": the key file " + res.secret + " " + why +
                             "; the resource would run without authentication, refusing");
    };
    const int fd = ::open(res.secret.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      refuse(std::string{"cannot be read: "} + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int error = errno;
      ::close(fd);
      refuse(std::string{"cannot be read: "} + std::strerror(error));
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      refuse("is a directory");
    }
    // A key others can read is a key others may hold.
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      ::close(fd);
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      refuse(std::string{"is accessible by group or others (mode "} + mode
             + "); make it readable by its owner only (chmod 600)");
    }
    std::string key;
    char chunk[4096];
    for (;;) {
      const auto n = ::read(fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        const int error = errno;
        ::close(fd);
        refuse(std::string{"cannot be read: "} + std::strerror(error));
      }
      if (n == 0)
        break;
      key.append(chunk, static_cast<size_t>(n));
    }
    ::close(fd);
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r'))
      key.pop_back();
    if (key.empty())
      refuse("is empty");
    if (key.size() < min_key_bytes)
      refuse("holds " + std::to_string(key.size()) + " bytes, fewer than "
             + std::to_string(min_key_bytes)
             + "; make a longer one (head -c 32 /dev/urandom | base64 > FILE)");
    res.secret_key = std::move(key);
  }
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "localhost.localdomain")
    return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6))
      return true;
    // ::ffff:127.x.y.z
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;  // a host name may name any address
}

std::optional<std::vector<std::string>> parse_allow_list(const std::string& value) {
  std::vector<std::string> out;
  std::string_view rest = value;
  while (true) {
    const auto comma = rest.find(',');
    auto item = std::string{rest.substr(0, comma)};
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!detail::valid_allow_entry(item))
      return std::nullopt;
    out.push_back(item);
    if (comma == std::string_view::npos)
      break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

std::vector<std::string> unauthenticated_links(const node_config& config) {
  std::vector<std::string> out;
  for (const auto& res : config.resources) {
    if (res.is_witness || res.standalone() || !res.secret.empty())
      continue;
    std::string host;
    uint16_t port = 0;
    if (split_tcp_address(res.remote, host, port) && is_loopback_host(host))
      continue;
    out.push_back("resource " + res.name + ": the link to " + res.remote
                  + " has no 'secret': anyone who can reach the peer port may connect as the "
                    "peer and data crosses the network unauthenticated");
  }
  return out;
}

std::string render_effective(const node_config& config) {
  auto or_dash = [](const std::string& s) { return s.empty() ? std::string{"-"} : s; };
  std::ostringstream out;
  out << "node: " << config.node << '\n';
  out << "control: " << config.control << '\n';
  out << "pidfile: " << config.pidfile << '\n';
  if (!config.metrics.empty())
    out << "metrics: " << config.metrics << '\n';
  for (const auto& address : config.listen)
    out << "listen: " << address << '\n';
  for (const auto& res : config.resources) {
    out << "resource " << res.name << ":\n";
    if (res.is_witness) {
      out << "  role: witness\n";
      out << "  members: " << res.members.front() << ", " << res.members.back() << '\n';
      out << "  state: " << (res.local.empty() ? "/var/lib/hast/" + res.name + ".witness" : res.local)
          << '\n';
      out << "  timeout: " << res.timeout << '\n';
      out << "  secret: " << or_dash(res.secret) << '\n';
      continue;
    }
    out << "  name: " << res.provider_name << '\n';
    out << "  local: " << res.local << '\n';
    out << "  remote: " << res.remote << '\n';
    out << "  source: " << or_dash(res.source) << '\n';
    out << "  replication: " << to_string(res.replication) << '\n';
    out << "  checksum: " << to_string(res.checksum) << '\n';
    out << "  compression: " << to_string(res.compression) << '\n';
    out << "  timeout: " << res.timeout << '\n';
    out << "  exec: " << or_dash(res.exec) << '\n';
    out << "  metaflush: " << (res.metaflush ? "on" : "off") << '\n';
    out << "  resync-checksum: " << (res.resync_checksum ? "on" : "off") << '\n';
    out << "  syncrate: "
        << (res.syncrate == 0 ? std::string{"unlimited"} : std::to_string(res.syncrate) + " bytes/s")
        << '\n';
    out << "  nbd: " << res.nbd << '\n';
    {
      std::string allow;
      for (const auto& a : res.nbd_allow)
        allow += (allow.empty() ? "" : ",") + a;
      out << "  nbd-allow: " << or_dash(allow) << '\n';
    }
    out << "  device: " << (res.device ? "on" : "off") << '\n';
    out << "  secret: " << or_dash(res.secret) << '\n';
    if (res.automatic()) {  // a manual resource's lines stay as they were before failover
      out << "  failover: " << to_string(res.failover) << '\n';
      out << "  witness: " << res.witness << '\n';
      out << "  lease-lost: " << to_string(res.lease_lost) << '\n';
    }
  }
  return out.str();
}

std::string link_changes(const resource_config& a, const resource_config& b) {
  std::vector<std::string> out;
  if (a.remote != b.remote) out.push_back("remote");
  if (a.source != b.source) out.push_back("source");
  if (a.replication != b.replication) out.push_back("replication");
  if (a.checksum != b.checksum) out.push_back("checksum");
  if (a.compression != b.compression) out.push_back("compression");
  if (a.timeout != b.timeout) out.push_back("timeout");
  if (a.secret != b.secret || a.secret_key != b.secret_key) out.push_back("secret");
  if (a.encryption != b.encryption) out.push_back("encryption");
  std::string text;
  for (auto& x : out)
    text += (text.empty() ? "" : ", ") + x;
  return text;
}

} // namespace hast
