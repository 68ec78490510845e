#pragma once

// The small vocabularies every layer speaks: a resource's role and the
// kinds of replication, checksum, compression, failover and lease loss,
// with their names in hast.conf, hastctl and the status formats.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hast {

enum class replication_mode : uint8_t { fullsync, memsync, async };
enum class checksum_kind : uint8_t { none, crc32, crc32c, sha256 };
enum class compression_kind : uint8_t { none, hole, lzf, lz4 };
enum class role : uint8_t { init, primary, secondary };
enum class failover_mode : uint8_t { manual, automatic };
enum class lease_loss_action : uint8_t { io_error, suspend };

std::string to_string(replication_mode x);
std::string to_string(checksum_kind x);
std::string to_string(compression_kind x);
std::string to_string(role x);
std::optional<replication_mode> parse_replication(std::string_view text);
std::optional<checksum_kind> parse_checksum(std::string_view text);
std::optional<compression_kind> parse_compression(std::string_view text);
std::optional<role> parse_role(std::string_view text);
std::string to_string(failover_mode x);          // "manual", "auto"
std::string to_string(lease_loss_action x);      // "io-error", "suspend"
std::optional<failover_mode> parse_failover(std::string_view text);
std::optional<lease_loss_action> parse_lease_loss(std::string_view text);

} // namespace hast
