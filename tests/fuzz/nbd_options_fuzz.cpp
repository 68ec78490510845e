// The NBD handshake as io/net/nbd_server.cpp reads it from a client: the 32-bit
// client flags, then option after option (header, length limit, count
// limit, data) until one ends the handshake, each decided by decode_option.
// The replies the server would encode for each step are built too, and a
// decoded NBD_OPT_INFO/GO request must survive a round trip.

#include "io/net/nbd_protocol.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

using namespace hast::nbd;
using hast::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  hast::fuzz::fuzz_bytes in{data, size};
  uint8_t flag_bytes[4];
  if (!in.take_into(flag_bytes))
    return 0;
  const auto flags = decode_client_flags(flag_bytes);
  if (!flags)
    return 0;
  check((*flags & ~known_client_flags) == 0);
  const bool no_zeroes = (*flags & flag_c_no_zeroes) != 0;

  for (std::size_t seen = 0;;) {
    uint8_t header_bytes[option_header_size];
    if (!in.take_into(header_bytes))
      return 0;
    const auto header = decode_option_header(header_bytes);
    if (!header || header->length > max_option_length || ++seen > max_options)
      return 0; // the server closes
    check(encode_option_header(*header) ==
          std::to_array(header_bytes)); // nothing in a header is lost
    const auto option_data = in.take(header->length);
    if (!option_data)
      return 0; // the client went away mid-option
    const auto step = decode_option(header->option, *option_data);
    switch (step.kind) {
    case option_step::export_name:
      check(step.request.name.size() == header->length);
      (void)encode_export_name_reply(1u << 20, flag_has_flags, no_zeroes);
      return 0; // transmission starts
    case option_step::abort:
      (void)encode_option_reply(header->option, rep_ack);
      return 0;
    case option_step::list:
      check(option_data->empty());
      (void)encode_server_reply("export");
      break;
    case option_step::info: {
      check(header->option == opt_info || header->option == opt_go);
      check(step.request.name.size() <= max_string_length);
      const auto again = decode_info_request(encode_info_request(step.request));
      check(again && again->name == step.request.name && again->requests == step.request.requests);
      (void)encode_info_name(header->option, step.request.name);
      if (header->option == opt_go)
        return 0;
      break;
    }
    case option_step::invalid:
      check(!step.message.empty());
      (void)encode_option_reply(header->option, rep_err_invalid, step.message);
      break;
    case option_step::unsupported:
      (void)option_name(header->option);
      (void)encode_option_reply(header->option, rep_err_unsup);
      break;
    }
  }
}
