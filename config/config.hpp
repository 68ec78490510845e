#pragma once

// The configuration model: what hast.conf (FreeBSD syntax) or hast.toml says,
// resolved for one node. Parsing lives in config/hastconf_parser.cpp and
// config/toml_parser.cpp; both produce the same `raw_config` and share the
// resolution and validation in config/config.cpp, so the two syntaxes cannot
// drift apart.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/kinds.hpp"

namespace hast {

// HAST's defaults.
inline constexpr const char* default_config_path = "/etc/hast.conf";
inline constexpr const char* default_control = "uds:///var/run/hastctl";
inline constexpr const char* default_pidfile = "/var/run/hastd.pid";
inline constexpr const char* default_listen_tcp4 = "tcp4://0.0.0.0:8457";
inline constexpr const char* default_listen_tcp6 = "tcp6://[::]:8457";
inline constexpr uint16_t default_port = 8457;
inline constexpr int default_timeout_seconds = 20;

/// Where a statement came from, for error messages.
struct source_location {
  std::string file;
  int line = 0;

  bool operator==(const source_location&) const = default;
};

/// A configuration error: names file, line and option, and says what was
/// expected. what() is the one line hastd/hastctl print.
class config_error : public std::runtime_error {
public:
  config_error(source_location where, std::string option, std::string message);
  const source_location& where() const { return where_; }
  const std::string& option() const { return option_; }
  const std::string& message() const { return message_; }

private:
  source_location where_;
  std::string option_;
  std::string message_;
};

/// One resource's effective settings on this node.
struct resource_config {
  std::string name;           // resource name (the `resource <name>` word)
  std::string provider_name;  // `name`: the device name, /dev/hast/<provider_name>
  std::string local;          // provider path: block device or regular file
  std::string remote;         // as written ("tcp://host[:port]", "host", ...) or "none"
  std::string source;         // local address for outgoing connections, may be empty
  replication_mode replication = replication_mode::memsync;
  checksum_kind checksum = checksum_kind::none;
  compression_kind compression = compression_kind::hole;
  int timeout = default_timeout_seconds;  // seconds, > 0
  std::string exec;           // event hook program, may be empty
  bool metaflush = true;
  /// `resync-checksum on`: the resync compares SHA-256 block digests with
  /// the secondary first and copies only the blocks that differ.
  bool resync_checksum = false;
  uint64_t syncrate = 0;      // resync bytes per second; 0: unlimited
  std::string nbd;            // "uds:///path" or "tcp://addr:port"
  std::vector<std::string> nbd_allow;  // `nbd-allow`: who may connect over TCP; empty: loopback only
  bool device = true;         // `device on|off`: make /dev/hast/<provider_name> on role primary
  std::string secret;         // path of the shared-key file, may be empty
  source_location secret_where;  // the `secret` line, when there is one
  std::string secret_key;     // the key itself, filled by read_secrets()
  bool encryption = true;     // `encryption on|off`: with a secret, encrypt frames (off: integrity only)
  source_location where;      // the `resource` line
  failover_mode failover = failover_mode::manual;   // `failover manual|auto`
  std::string witness;                              // `witness tcp://host[:port]` (data nodes); empty if unset
  lease_loss_action lease_lost = lease_loss_action::io_error;  // `lease-lost io-error|suspend`
  bool is_witness = false;                          // this node's `on` section says `role witness`
  std::vector<std::string> members;                 // witness node: the resource's two data nodes, in file order

  bool standalone() const { return remote == "none"; }
  bool automatic() const { return failover == failover_mode::automatic; }
  bool operator==(const resource_config&) const = default;
};

/// The link settings that differ between `a` and `b` ("remote, timeout"),
/// empty when none: a running resource reconnects its link for them.
std::string link_changes(const resource_config& a, const resource_config& b);

/// The whole configuration as seen by one node.
struct node_config {
  std::string path;                 // the file it was read from
  std::string node;                 // the node name it was resolved for
  std::string control;              // "uds:///path": always a Unix socket
  std::vector<std::string> listen;  // peer listen addresses
  std::string pidfile;
  std::string metrics;              // "tcp://host:port" of /metrics; empty: off
  std::vector<resource_config> resources;

  const resource_config* find(std::string_view name) const;
  bool operator==(const node_config&) const = default;
};

/// Reads and validates a configuration file for `node`. The syntax (FreeBSD
/// hast.conf or TOML) is recognised from the content; a `.toml` name also
/// says TOML. Throws config_error on any problem.
node_config load_config(const std::string& path, const std::string& node);

/// The same from text in memory; `path` is only used in messages.
node_config parse_config(const std::string& text, const std::string& path,
                         const std::string& node);

/// The shortest key a key file may hold (after trailing newlines).
inline constexpr std::size_t min_key_bytes = 16;

/// Reads the key file of every resource that has a `secret`. A missing,
/// unreadable or empty key file, one shorter than min_key_bytes, and one
/// that group or others may access (mode & 077) throw config_error naming
/// the file and the `secret` line: a resource that is meant to authenticate
/// never runs without a key that is its own.
/// hastd calls this on start, --check-config and reload; hastctl does not
/// need the keys.
void read_secrets(node_config& config);

/// One sentence per resource whose replication link runs without
/// authentication: it has a `remote` that is not a loopback address (a
/// host name counts as not loopback, except `localhost`) and no `secret`.
/// hastd logs each as a warning when it starts and on reload.
std::vector<std::string> unauthenticated_links(const node_config& config);

/// `nbd-allow`'s value: comma-separated IPv4 or IPv6 addresses, each with
/// an optional /prefix length; nothing if any entry is not one.
std::optional<std::vector<std::string>> parse_allow_list(const std::string& value);

/// True for 127.0.0.0/8, ::1, ::ffff:127.x.y.z and `localhost`.
bool is_loopback_host(const std::string& host);

/// The node name to use: `explicit_node` if non-empty, else $HAST_NODE,
/// else the host name.
std::string select_node(const std::string& explicit_node);

/// Renders the effective settings, as `hastd --check-config` prints them.
std::string render_effective(const node_config& config);

/// Splits "uds:///p", "unix:///p" or "/p" into a filesystem path; empty if the
/// address is not a Unix-socket address.
std::string unix_socket_path(const std::string& address);

/// Splits "tcp://host[:port]", "tcp4://", "tcp6://[addr]:port" or "host[:port]"
/// into host and port (default `default_port`). Returns false if malformed.
bool split_tcp_address(const std::string& address, std::string& host, uint16_t& port,
                       uint16_t fallback_port = default_port);

} // namespace hast
