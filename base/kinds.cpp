#include "base/kinds.hpp"

namespace hast {

std::string to_string(replication_mode x) {
  switch (x) {
    case replication_mode::fullsync: return "fullsync";
    case replication_mode::memsync: return "memsync";
    case replication_mode::async: return "async";
  }
  return "unknown";
}

std::string to_string(checksum_kind x) {
  switch (x) {
    case checksum_kind::none: return "none";
    case checksum_kind::crc32: return "crc32";
    case checksum_kind::crc32c: return "crc32c";
    case checksum_kind::sha256: return "sha256";
  }
  return "unknown";
}

std::string to_string(compression_kind x) {
  switch (x) {
    case compression_kind::none: return "none";
    case compression_kind::hole: return "hole";
    case compression_kind::lzf: return "lzf";
    case compression_kind::lz4: return "lz4";
  }
  return "unknown";
}

std::string to_string(role x) {
  switch (x) {
    case role::init: return "init";
    case role::primary: return "primary";
    case role::secondary: return "secondary";
  }
  return "unknown";
}

std::string to_string(failover_mode x) {
  return x == failover_mode::automatic ? "auto" : "manual";
}

std::string to_string(lease_loss_action x) {
  return x == lease_loss_action::suspend ? "suspend" : "io-error";
}

std::optional<failover_mode> parse_failover(std::string_view text) {
  if (text == "manual") return failover_mode::manual;
  if (text == "auto") return failover_mode::automatic;
  return std::nullopt;
}

std::optional<lease_loss_action> parse_lease_loss(std::string_view text) {
  if (text == "io-error") return lease_loss_action::io_error;
  if (text == "suspend") return lease_loss_action::suspend;
  return std::nullopt;
}

std::optional<replication_mode> parse_replication(std::string_view text) {
  if (text == "fullsync") return replication_mode::fullsync;
  if (text == "memsync") return replication_mode::memsync;
  if (text == "async") return replication_mode::async;
  return std::nullopt;
}

std::optional<checksum_kind> parse_checksum(std::string_view text) {
  if (text == "none") return checksum_kind::none;
  if (text == "crc32") return checksum_kind::crc32;
  if (text == "crc32c") return checksum_kind::crc32c;
  if (text == "sha256") return checksum_kind::sha256;
  return std::nullopt;
}

std::optional<compression_kind> parse_compression(std::string_view text) {
  if (text == "none") return compression_kind::none;
  if (text == "hole") return compression_kind::hole;
  if (text == "lzf") return compression_kind::lzf;
  if (text == "lz4") return compression_kind::lz4;
  return std::nullopt;
}

std::optional<role> parse_role(std::string_view text) {
  if (text == "init") return role::init;
  if (text == "primary") return role::primary;
  if (text == "secondary") return role::secondary;
  return std::nullopt;
}

} // namespace hast
