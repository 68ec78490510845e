#include "io/net/nbd_protocol.hpp"

#include <algorithm>

namespace hast::nbd {

namespace {

std::vector<uint8_t> option_reply(uint32_t option, uint32_t type, std::size_t payload_length) {
  std::vector<uint8_t> out(option_reply_header_size + payload_length);
  put_be64(out.data(), option_reply_magic);
  put_be32(out.data() + 8, option);
  put_be32(out.data() + 12, type);
  put_be32(out.data() + 16, static_cast<uint32_t>(payload_length));
  return out;
}

/// An NBD_REP_INFO reply whose payload is the 16-bit type and then `text`.
std::vector<uint8_t> info_text(uint32_t option, uint16_t type, std::string_view text) {
  auto out = option_reply(option, rep_info, 2 + text.size());
  put_be16(out.data() + option_reply_header_size, type);
  std::copy(text.begin(), text.end(), out.begin() + option_reply_header_size + 2);
  return out;
}

bool writes_data(uint16_t type) {
  return type == cmd_write || type == cmd_trim || type == cmd_write_zeroes;
}

} // namespace

std::array<uint8_t, handshake_size> encode_handshake() {
  std::array<uint8_t, handshake_size> out{};
  put_be64(out.data(), init_magic);
  put_be64(out.data() + 8, option_magic);
  put_be16(out.data() + 16, flag_fixed_newstyle | flag_no_zeroes);
  return out;
}

std::optional<uint32_t> decode_client_flags(const uint8_t (&bytes)[4]) {
  const uint32_t flags = get_be32(bytes);
  if ((flags & ~known_client_flags) != 0)
    return std::nullopt;
  return flags;
}

std::optional<option_header> decode_option_header(const uint8_t (&bytes)[option_header_size]) {
  if (get_be64(bytes) != option_magic)
    return std::nullopt;
  return option_header{get_be32(bytes + 8), get_be32(bytes + 12)};
}

std::array<uint8_t, option_header_size> encode_option_header(const option_header& header) {
  std::array<uint8_t, option_header_size> out{};
  put_be64(out.data(), option_magic);
  put_be32(out.data() + 8, header.option);
  put_be32(out.data() + 12, header.length);
  return out;
}

std::optional<info_request> decode_info_request(std::span<const uint8_t> data) {
  if (data.size() < 6)
    return std::nullopt;
  uint64_t name_length = get_be32(data.data());
  if (name_length > max_string_length || 4 + name_length + 2 > data.size())
    return std::nullopt;
  const uint8_t* p = data.data() + 4;
  info_request out;
  out.name.assign(reinterpret_cast<const char*>(p), name_length);
  p += name_length;
  std::size_t count = get_be16(p);
  p += 2;
  if (4 + name_length + 2 + 2 * count != data.size())
    return std::nullopt;
  out.requests.reserve(count);
  for (std::size_t i = 0; i < count; ++i, p += 2)
    out.requests.push_back(get_be16(p));
  return out;
}

std::vector<uint8_t> encode_info_request(const info_request& request) {
  std::vector<uint8_t> out(4 + request.name.size() + 2 + 2 * request.requests.size());
  put_be32(out.data(), static_cast<uint32_t>(request.name.size()));
  std::copy(request.name.begin(), request.name.end(), out.begin() + 4);
  uint8_t* p = out.data() + 4 + request.name.size();
  put_be16(p, static_cast<uint16_t>(request.requests.size()));
  p += 2;
  for (auto type : request.requests) {
    put_be16(p, type);
    p += 2;
  }
  return out;
}

option_step decode_option(uint32_t option, std::span<const uint8_t> data) {
  option_step step;
  switch (option) {
  case opt_export_name:
    step.kind = option_step::export_name;
    step.request.name.assign(data.begin(), data.end());
    break;
  case opt_abort:
    step.kind = option_step::abort;
    break;
  case opt_list:
    step.kind = data.empty() ? option_step::list : option_step::invalid;
    if (!data.empty())
      step.message = "NBD_OPT_LIST carries no data";
    break;
  case opt_info:
  case opt_go:
    if (auto request = decode_info_request(data)) {
      step.kind = option_step::info;
      step.request = std::move(*request);
    } else {
      step.kind = option_step::invalid;
      step.message = "malformed NBD_OPT_INFO/NBD_OPT_GO data";
    }
    break;
  default:
    // STRUCTURED_REPLY, STARTTLS, meta contexts, extended headers and
    // anything unknown: we offer only the baseline.
    step.kind = option_step::unsupported;
    break;
  }
  return step;
}

std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t type,
                                         std::span<const uint8_t> payload) {
  auto out = option_reply(option, type, payload.size());
  std::copy(payload.begin(), payload.end(), out.begin() + option_reply_header_size);
  return out;
}

std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t type, std::string_view text) {
  auto out = option_reply(option, type, text.size());
  std::copy(text.begin(), text.end(), out.begin() + option_reply_header_size);
  return out;
}

std::vector<uint8_t> encode_server_reply(std::string_view export_name) {
  auto out = option_reply(opt_list, rep_server, 4 + export_name.size());
  put_be32(out.data() + option_reply_header_size, static_cast<uint32_t>(export_name.size()));
  std::copy(export_name.begin(), export_name.end(), out.begin() + option_reply_header_size + 4);
  return out;
}

std::vector<uint8_t> encode_info_export(uint32_t option, uint64_t size, uint16_t flags) {
  auto out = option_reply(option, rep_info, 12);
  uint8_t* p = out.data() + option_reply_header_size;
  put_be16(p, info_export);
  put_be64(p + 2, size);
  put_be16(p + 10, flags);
  return out;
}

std::vector<uint8_t> encode_info_name(uint32_t option, std::string_view name) {
  return info_text(option, info_name, name);
}

std::vector<uint8_t> encode_info_description(uint32_t option, std::string_view description) {
  return info_text(option, info_description, description);
}

std::vector<uint8_t> encode_info_block_size(uint32_t option, uint32_t minimum, uint32_t preferred,
                                            uint32_t maximum) {
  auto out = option_reply(option, rep_info, 14);
  uint8_t* p = out.data() + option_reply_header_size;
  put_be16(p, info_block_size);
  put_be32(p + 2, minimum);
  put_be32(p + 6, preferred);
  put_be32(p + 10, maximum);
  return out;
}

std::vector<uint8_t> encode_export_name_reply(uint64_t size, uint16_t flags, bool no_zeroes) {
  std::vector<uint8_t> out(10 + (no_zeroes ? 0 : export_name_zeroes), 0);
  put_be64(out.data(), size);
  put_be16(out.data() + 8, flags);
  return out;
}

std::optional<option_reply_header>
decode_option_reply_header(const uint8_t (&bytes)[option_reply_header_size]) {
  if (get_be64(bytes) != option_reply_magic)
    return std::nullopt;
  return option_reply_header{get_be32(bytes + 8), get_be32(bytes + 12), get_be32(bytes + 16)};
}

uint16_t transmission_flags(const export_info& info) {
  uint16_t flags = flag_has_flags;
  if (info.read_only)
    flags |= flag_read_only;
  if (info.can_flush)
    flags |= flag_send_flush;
  if (info.can_fua)
    flags |= flag_send_fua;
  if (info.can_trim && !info.read_only)
    flags |= flag_send_trim;
  if (info.can_write_zeroes && !info.read_only)
    flags |= flag_send_write_zeroes;
  if (info.can_multi_conn)
    flags |= flag_can_multi_conn;
  return flags;
}

std::optional<request_header> decode_request(const uint8_t (&bytes)[request_size]) {
  if (get_be32(bytes) != request_magic)
    return std::nullopt;
  request_header out;
  out.flags = get_be16(bytes + 4);
  out.type = get_be16(bytes + 6);
  out.cookie = get_be64(bytes + 8);
  out.offset = get_be64(bytes + 16);
  out.length = get_be32(bytes + 24);
  return out;
}

std::array<uint8_t, request_size> encode_request(const request_header& request) {
  std::array<uint8_t, request_size> out{};
  put_be32(out.data(), request_magic);
  put_be16(out.data() + 4, request.flags);
  put_be16(out.data() + 6, request.type);
  put_be64(out.data() + 8, request.cookie);
  put_be64(out.data() + 16, request.offset);
  put_be32(out.data() + 24, request.length);
  return out;
}

uint32_t validate(const request_header& request, uint64_t export_size, uint16_t advertised_flags) {
  const auto advertised = [&](uint16_t flag) { return (advertised_flags & flag) != 0; };
  switch (request.type) {
  case cmd_read:
  case cmd_write:
  case cmd_disc:
    break;
  case cmd_flush:
    if (!advertised(flag_send_flush))
      return einval;
    break;
  case cmd_trim:
    if (!advertised(flag_send_trim))
      return einval;
    break;
  case cmd_write_zeroes:
    if (!advertised(flag_send_write_zeroes))
      return einval;
    break;
  case cmd_cache:
    if (!advertised(flag_send_cache))
      return einval;
    break;
  default:
    // BLOCK_STATUS needs structured replies, RESIZE was never offered, and
    // anything else is unknown.
    return einval;
  }

  // FUA is valid on every command once advertised; the others only where
  // the protocol documents them.
  uint16_t valid_flags = 0;
  if (advertised(flag_send_fua))
    valid_flags |= cmd_flag_fua;
  if (request.type == cmd_write_zeroes) {
    valid_flags |= cmd_flag_no_hole;
    if (advertised(flag_send_fast_zero))
      valid_flags |= cmd_flag_fast_zero;
  }
  if (request.type == cmd_read && advertised(flag_send_df))
    valid_flags |= cmd_flag_df;
  if ((request.flags & ~valid_flags) != 0)
    return einval;

  if (advertised(flag_read_only) && writes_data(request.type))
    return eperm;

  if (request.type == cmd_flush || request.type == cmd_disc)
    return request.offset == 0 && request.length == 0 ? 0 : einval;

  if (request.length == 0)
    return einval;
  if ((request.type == cmd_read || request.type == cmd_write) && request.length > max_payload)
    return einval;
  // Written so that offset + length cannot overflow.
  if (request.offset > export_size || request.length > export_size - request.offset)
    return request.type == cmd_write || request.type == cmd_write_zeroes ? enospc : einval;
  return 0;
}

std::optional<command> command_of(uint16_t type) {
  switch (type) {
  case cmd_read:
    return command::read;
  case cmd_write:
    return command::write;
  case cmd_flush:
    return command::flush;
  case cmd_trim:
    return command::trim;
  case cmd_write_zeroes:
    return command::write_zeroes;
  }
  return std::nullopt;
}

request_step decode_request_step(const uint8_t (&bytes)[request_size], uint64_t export_size,
                                 uint16_t advertised_flags) {
  request_step step;
  auto decoded = decode_request(bytes);
  if (!decoded)
    return step; // bad_magic
  step.header = *decoded;
  const request_header& req = step.header;
  if (req.type == cmd_disc) {
    step.kind = request_step::disconnect;
    return step;
  }
  if (req.type == cmd_write && req.length > max_payload) {
    step.kind = request_step::oversized_write;
    return step;
  }
  step.error = validate(req, export_size, advertised_flags);
  const auto cmd = command_of(req.type);
  if (step.error == 0 && !cmd)
    step.error = einval; // validate() admits nothing else (CACHE is never advertised)
  if (step.error != 0) {
    step.kind = request_step::refuse;
    return step;
  }
  step.kind = request_step::serve;
  step.cmd = *cmd;
  return step;
}

std::array<uint8_t, simple_reply_size> encode_simple_reply(uint32_t error, uint64_t cookie) {
  std::array<uint8_t, simple_reply_size> out{};
  put_be32(out.data(), simple_reply_magic);
  put_be32(out.data() + 4, error);
  put_be64(out.data() + 8, cookie);
  return out;
}

std::optional<simple_reply> decode_simple_reply(const uint8_t (&bytes)[simple_reply_size]) {
  if (get_be32(bytes) != simple_reply_magic)
    return std::nullopt;
  return simple_reply{get_be32(bytes + 4), get_be64(bytes + 8)};
}

std::string_view command_name(uint16_t type) {
  switch (type) {
  case cmd_read:
    return "READ";
  case cmd_write:
    return "WRITE";
  case cmd_disc:
    return "DISC";
  case cmd_flush:
    return "FLUSH";
  case cmd_trim:
    return "TRIM";
  case cmd_cache:
    return "CACHE";
  case cmd_write_zeroes:
    return "WRITE_ZEROES";
  case cmd_block_status:
    return "BLOCK_STATUS";
  case cmd_resize:
    return "RESIZE";
  }
  return "unknown command";
}

std::string_view option_name(uint32_t option) {
  switch (option) {
  case opt_export_name:
    return "EXPORT_NAME";
  case opt_abort:
    return "ABORT";
  case opt_list:
    return "LIST";
  case opt_peek_export:
    return "PEEK_EXPORT";
  case opt_starttls:
    return "STARTTLS";
  case opt_info:
    return "INFO";
  case opt_go:
    return "GO";
  case opt_structured_reply:
    return "STRUCTURED_REPLY";
  case opt_list_meta_context:
    return "LIST_META_CONTEXT";
  case opt_set_meta_context:
    return "SET_META_CONTEXT";
  case opt_extended_headers:
    return "EXTENDED_HEADERS";
  }
  return "unknown option";
}

std::string_view error_name(uint32_t error) {
  switch (error) {
  case 0:
    return "success";
  case eperm:
    return "EPERM";
  case eio:
    return "EIO";
  case enomem:
    return "ENOMEM";
  case einval:
    return "EINVAL";
  case enospc:
    return "ENOSPC";
  case eoverflow:
    return "EOVERFLOW";
  case enotsup:
    return "ENOTSUP";
  case eshutdown:
    return "ESHUTDOWN";
  }
  return "unknown error";
}

} // namespace hast::nbd
