#pragma once

// The NBD wire codec: constants, big-endian helpers, request decoding and
// validation, and the encoders for the replies hast sends. Pure functions
// with no I/O, so that every rule of the protocol can be tested directly.
// io/net/nbd_server.cpp speaks the protocol with these; docs/NBD.md says what we
// advertise. Names follow doc/proto.md of the NBD project, in lower case so
// they cannot collide with the macros of <linux/nbd.h>.

#include "io/net/nbd_backend.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hast::nbd {

// --- Magic numbers ----------------------------------------------------------
inline constexpr uint64_t init_magic = 0x4e42444d41474943;   // "NBDMAGIC"
inline constexpr uint64_t option_magic = 0x49484156454f5054; // "IHAVEOPT"
inline constexpr uint64_t option_reply_magic = 0x3e889045565a9;
inline constexpr uint32_t request_magic = 0x25609513;
inline constexpr uint32_t simple_reply_magic = 0x67446698;
inline constexpr uint32_t structured_reply_magic = 0x668e33ef;

// --- Sizes on the wire -------------------------------------------------------
inline constexpr std::size_t handshake_size = 18;     // magic, magic, 16-bit flags
inline constexpr std::size_t option_header_size = 16; // magic, option, length
inline constexpr std::size_t option_reply_header_size = 20;
inline constexpr std::size_t request_size = 28;
inline constexpr std::size_t simple_reply_size = 16;
inline constexpr std::size_t export_name_zeroes = 124; // after an NBD_OPT_EXPORT_NAME reply

/// The largest READ or WRITE payload we accept (and advertise as maximum
/// block size). A client may not rely on more than this without negotiation.
inline constexpr uint32_t max_payload = 32u << 20;
/// The largest option payload we read during the handshake; larger closes.
inline constexpr uint32_t max_option_length = 64u << 10;
/// The most options one handshake may carry; one more closes the connection.
inline constexpr std::size_t max_options = 64;
/// Strings (export names, messages) longer than this violate the protocol.
inline constexpr std::size_t max_string_length = 4096;

// --- Handshake flags (server, 16 bits) and client flags (32 bits) -------------
inline constexpr uint16_t flag_fixed_newstyle = 1u << 0;
inline constexpr uint16_t flag_no_zeroes = 1u << 1;
inline constexpr uint32_t flag_c_fixed_newstyle = 1u << 0;
inline constexpr uint32_t flag_c_no_zeroes = 1u << 1;

// --- Options ---------------------------------------------------------------------
inline constexpr uint32_t opt_export_name = 1;
inline constexpr uint32_t opt_abort = 2;
inline constexpr uint32_t opt_list = 3;
inline constexpr uint32_t opt_peek_export = 4;
inline constexpr uint32_t opt_starttls = 5;
inline constexpr uint32_t opt_info = 6;
inline constexpr uint32_t opt_go = 7;
inline constexpr uint32_t opt_structured_reply = 8;
inline constexpr uint32_t opt_list_meta_context = 9;
inline constexpr uint32_t opt_set_meta_context = 10;
inline constexpr uint32_t opt_extended_headers = 11;

// --- Option reply types ------------------------------------------------------------
inline constexpr uint32_t rep_ack = 1;
inline constexpr uint32_t rep_server = 2;
inline constexpr uint32_t rep_info = 3;
inline constexpr uint32_t rep_meta_context = 4;
inline constexpr uint32_t rep_flag_error = 1u << 31;
inline constexpr uint32_t rep_err_unsup = rep_flag_error + 1;
inline constexpr uint32_t rep_err_policy = rep_flag_error + 2;
inline constexpr uint32_t rep_err_invalid = rep_flag_error + 3;
inline constexpr uint32_t rep_err_platform = rep_flag_error + 4;
inline constexpr uint32_t rep_err_tls_reqd = rep_flag_error + 5;
inline constexpr uint32_t rep_err_unknown = rep_flag_error + 6;
inline constexpr uint32_t rep_err_shutdown = rep_flag_error + 7;
inline constexpr uint32_t rep_err_block_size_reqd = rep_flag_error + 8;
inline constexpr uint32_t rep_err_too_big = rep_flag_error + 9;

// --- Information types (NBD_OPT_INFO / NBD_OPT_GO) --------------------------------
inline constexpr uint16_t info_export = 0;
inline constexpr uint16_t info_name = 1;
inline constexpr uint16_t info_description = 2;
inline constexpr uint16_t info_block_size = 3;

// --- Transmission flags (16 bits) ---------------------------------------------------
inline constexpr uint16_t flag_has_flags = 1u << 0;
inline constexpr uint16_t flag_read_only = 1u << 1;
inline constexpr uint16_t flag_send_flush = 1u << 2;
inline constexpr uint16_t flag_send_fua = 1u << 3;
inline constexpr uint16_t flag_rotational = 1u << 4;
inline constexpr uint16_t flag_send_trim = 1u << 5;
inline constexpr uint16_t flag_send_write_zeroes = 1u << 6;
inline constexpr uint16_t flag_send_df = 1u << 7;
inline constexpr uint16_t flag_can_multi_conn = 1u << 8;
inline constexpr uint16_t flag_send_resize = 1u << 9;
inline constexpr uint16_t flag_send_cache = 1u << 10;
inline constexpr uint16_t flag_send_fast_zero = 1u << 11;
inline constexpr uint16_t flag_block_status_payload = 1u << 12;

// --- Commands ---------------------------------------------------------------------------
inline constexpr uint16_t cmd_read = 0;
inline constexpr uint16_t cmd_write = 1;
inline constexpr uint16_t cmd_disc = 2;
inline constexpr uint16_t cmd_flush = 3;
inline constexpr uint16_t cmd_trim = 4;
inline constexpr uint16_t cmd_cache = 5;
inline constexpr uint16_t cmd_write_zeroes = 6;
inline constexpr uint16_t cmd_block_status = 7;
inline constexpr uint16_t cmd_resize = 8;

// --- Command flags ----------------------------------------------------------------------
inline constexpr uint16_t cmd_flag_fua = 1u << 0;
inline constexpr uint16_t cmd_flag_no_hole = 1u << 1;
inline constexpr uint16_t cmd_flag_df = 1u << 2;
inline constexpr uint16_t cmd_flag_req_one = 1u << 3;
inline constexpr uint16_t cmd_flag_fast_zero = 1u << 4;
inline constexpr uint16_t cmd_flag_payload_len = 1u << 5;

// --- Error values (the only ones a reply may carry) ----------------------------------------
inline constexpr uint32_t eperm = 1;
inline constexpr uint32_t eio = 5;
inline constexpr uint32_t enomem = 12;
inline constexpr uint32_t einval = 22;
inline constexpr uint32_t enospc = 28;
inline constexpr uint32_t eoverflow = 75;
inline constexpr uint32_t enotsup = 95;
inline constexpr uint32_t eshutdown = 108;

// --- Big-endian helpers ---------------------------------------------------------------------
inline void put_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8)
    p[i] = static_cast<uint8_t>(v);
}
inline void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8)
    p[i] = static_cast<uint8_t>(v);
}
inline uint16_t get_be16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
inline uint32_t get_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
inline uint64_t get_be64(const uint8_t* p) {
  return (uint64_t{get_be32(p)} << 32) | get_be32(p + 4);
}

// --- Handshake ---------------------------------------------------------------------------------

/// NBDMAGIC, IHAVEOPT and our handshake flags (FIXED_NEWSTYLE | NO_ZEROES).
std::array<uint8_t, handshake_size> encode_handshake();

/// The client flags we understand; a client setting any other bit is
/// dropped, as the protocol demands.
inline constexpr uint32_t known_client_flags = flag_c_fixed_newstyle | flag_c_no_zeroes;

/// The 32-bit client flags that answer our handshake. nullopt if a bit we
/// do not know is set: the client must then be dropped.
std::optional<uint32_t> decode_client_flags(const uint8_t (&bytes)[4]);

/// One option as the client frames it: IHAVEOPT, option, length of its data.
struct option_header {
  uint32_t option = 0;
  uint32_t length = 0;
};

/// nullopt if the magic is not IHAVEOPT.
std::optional<option_header> decode_option_header(const uint8_t (&bytes)[option_header_size]);
std::array<uint8_t, option_header_size> encode_option_header(const option_header& header);

/// The data of NBD_OPT_INFO and NBD_OPT_GO: an export name and the
/// information types the client asks for.
struct info_request {
  std::string name;
  std::vector<uint16_t> requests;
};

/// nullopt if the lengths inside `data` do not add up or the name is longer
/// than the protocol allows (answer NBD_REP_ERR_INVALID).
std::optional<info_request> decode_info_request(std::span<const uint8_t> data);
std::vector<uint8_t> encode_info_request(const info_request& request);

/// What the handshake does with one option, decided from the option number
/// and its data alone (io/net/nbd_server.cpp then acts on it).
struct option_step {
  enum kind_t : uint8_t {
    export_name, // NBD_OPT_EXPORT_NAME: request.name is the export asked for
    abort,       // NBD_OPT_ABORT: acknowledge, then close
    list,        // NBD_OPT_LIST without data: name our export
    info,        // NBD_OPT_INFO or NBD_OPT_GO with well-formed data in `request`
    invalid,     // malformed data: NBD_REP_ERR_INVALID carrying `message`
    unsupported, // anything else: NBD_REP_ERR_UNSUP
  };
  kind_t kind = unsupported;
  info_request request;
  std::string_view message;
};
option_step decode_option(uint32_t option, std::span<const uint8_t> data);

/// An option reply: magic, option, reply type, payload length, payload.
std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t type,
                                         std::span<const uint8_t> payload = {});
/// An option reply whose payload is text (errors carry a message for the user).
std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t type, std::string_view text);

/// NBD_REP_SERVER for NBD_OPT_LIST: 32-bit name length, then the name.
std::vector<uint8_t> encode_server_reply(std::string_view export_name);

/// NBD_REP_INFO replies for NBD_OPT_INFO or NBD_OPT_GO (`option`).
std::vector<uint8_t> encode_info_export(uint32_t option, uint64_t size, uint16_t flags);
std::vector<uint8_t> encode_info_name(uint32_t option, std::string_view name);
std::vector<uint8_t> encode_info_description(uint32_t option, std::string_view description);
std::vector<uint8_t> encode_info_block_size(uint32_t option, uint32_t minimum, uint32_t preferred,
                                            uint32_t maximum);

/// The answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and the 124
/// reserved zero bytes unless the client negotiated NBD_FLAG_C_NO_ZEROES.
std::vector<uint8_t> encode_export_name_reply(uint64_t size, uint16_t flags, bool no_zeroes);

/// An option reply header as decoded by a client (used by tests).
struct option_reply_header {
  uint32_t option = 0;
  uint32_t type = 0;
  uint32_t length = 0;
};
std::optional<option_reply_header>
decode_option_reply_header(const uint8_t (&bytes)[option_reply_header_size]);

/// The transmission flags that describe an export.
uint16_t transmission_flags(const export_info& info);

// --- Transmission
// ---------------------------------------------------------------------------------

struct request_header {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;

  bool operator==(const request_header&) const = default;
};

/// nullopt if the magic is not NBD_REQUEST_MAGIC (the stream cannot be
/// trusted any further: close the connection).
std::optional<request_header> decode_request(const uint8_t (&bytes)[request_size]);
std::array<uint8_t, request_size> encode_request(const request_header& request);

/// Checks a request against the protocol's rules for an export of
/// `export_size` bytes advertised with `advertised_flags`. Returns 0 if
/// the request may be served, else the NBD error to reply with:
///  - an unknown command, or one whose support was not advertised: EINVAL;
///  - a command flag that is unknown, not advertised or not valid for the
///    command: EINVAL;
///  - a write, trim or write-zeroes on a read-only export: EPERM;
///  - FLUSH or DISC with a non-zero offset or length: EINVAL;
///  - a zero length: EINVAL;
///  - a READ or WRITE longer than max_payload: EINVAL (TRIM and WRITE_ZEROES
///    carry no payload and may be larger);
///  - a range reaching past the end (offset + length overflowing included):
///    ENOSPC for WRITE and WRITE_ZEROES, EINVAL otherwise.
uint32_t validate(const request_header& request, uint64_t export_size, uint16_t advertised_flags);

/// The backend command of a request type; nullopt for the types hast does
/// not serve through the backend (DISC, CACHE, BLOCK_STATUS, RESIZE, unknown).
std::optional<command> command_of(uint16_t type);

/// What the transmission phase does with one request header.
struct request_step {
  enum kind_t : uint8_t {
    bad_magic,       // close: nothing after it can be trusted
    disconnect,      // NBD_CMD_DISC
    oversized_write, // WRITE over max_payload: close, its payload cannot be framed safely
    refuse,          // answer `error` (a WRITE's payload is skipped first)
    serve,           // hand `cmd` to the backend
  };
  kind_t kind = bad_magic;
  request_header header;
  uint32_t error = 0;
  command cmd = command::read;
  /// Bytes that follow the header on the wire: a WRITE's length, else 0.
  uint32_t payload() const { return header.type == cmd_write ? header.length : 0; }
};
request_step decode_request_step(const uint8_t (&bytes)[request_size], uint64_t export_size,
                                 uint16_t advertised_flags);

struct simple_reply {
  uint32_t error = 0;
  uint64_t cookie = 0;
};

std::array<uint8_t, simple_reply_size> encode_simple_reply(uint32_t error, uint64_t cookie);
/// nullopt if the magic is not NBD_SIMPLE_REPLY_MAGIC (used by tests).
std::optional<simple_reply> decode_simple_reply(const uint8_t (&bytes)[simple_reply_size]);

// --- Names for log lines
// ----------------------------------------------------------------------------
std::string_view command_name(uint16_t type);
std::string_view option_name(uint32_t option);
std::string_view error_name(uint32_t error);

} // namespace hast::nbd
