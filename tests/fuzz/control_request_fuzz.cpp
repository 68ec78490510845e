// A request on the control socket as hastd's control server reads it
// (io/net/control_channel.cpp): the 4-byte frame header (decode_frame_length,
// which bounds the body before it is allocated), that many bytes of body,
// then parse_request (JSON object with a string "command"). A request the
// daemon accepts is dumped again, as the daemon's reply path does with the
// strings a request carries.

#include "io/net/control_channel.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

#include <string_view>

using hast::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  hast::fuzz::fuzz_bytes in{data, size};
  uint8_t header[4];
  if (!in.take_into(header))
    return 0;
  const auto length = hast::control::decode_frame_length(header);
  if (!length)
    return 0; // closed before anything is allocated
  check(*length <= hast::control::max_frame);
  const auto body = in.take(*length);
  if (!body)
    return 0; // the client went away mid-frame
  const auto request = hast::control::parse_request(
      std::string_view{reinterpret_cast<const char*>(body->data()), body->size()});
  if (!request)
    return 0;
  check(request->is_object() && (*request)["command"].is_string());
  const auto again = hast::control::parse_request(request->dump());
  check(again && *again == *request);
  return 0;
}
