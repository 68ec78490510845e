// The NBD transmission phase as io/net/nbd_server.cpp reads it: a stream of
// 28-byte request headers, each judged by decode_request_step against an
// export, WRITE payloads framed off (served or refused alike), until a bad
// magic, DISC or an oversized WRITE ends the connection. The first ten
// bytes choose the export: its size (u64, big-endian) and the transmission
// flags it was advertised with (u16).

#include "io/net/nbd_protocol.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

using namespace hast::nbd;
using hast::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  hast::fuzz::fuzz_bytes in{data, size};
  uint8_t export_bytes[10];
  if (!in.take_into(export_bytes))
    return 0;
  const uint64_t export_size = get_be64(export_bytes);
  const uint16_t advertised = get_be16(export_bytes + 8);

  for (;;) {
    uint8_t header[request_size];
    if (!in.take_into(header))
      return 0;
    const auto step = decode_request_step(header, export_size, advertised);
    if (step.kind == request_step::bad_magic)
      return 0;
    check(encode_request(step.header) == std::to_array(header));
    const request_header& req = step.header;
    switch (step.kind) {
    case request_step::bad_magic:
    case request_step::disconnect:
      return 0;
    case request_step::oversized_write:
      check(req.type == cmd_write && req.length > max_payload);
      return 0;
    case request_step::refuse:
      check(step.error != 0);
      (void)error_name(step.error);
      (void)encode_simple_reply(step.error, req.cookie);
      break;
    case request_step::serve: {
      // What the backend may rely on for a served request.
      check(step.error == 0 && command_of(req.type) == step.cmd);
      check(req.offset <= export_size && req.length <= export_size - req.offset);
      if (step.cmd == hast::nbd::command::flush)
        check(req.offset == 0 && req.length == 0);
      else
        check(req.length > 0);
      if (step.cmd == hast::nbd::command::read || step.cmd == hast::nbd::command::write)
        check(req.length <= max_payload);
      if ((advertised & flag_read_only) != 0)
        check(step.cmd == hast::nbd::command::read || step.cmd == hast::nbd::command::flush);
      (void)command_name(req.type);
      break;
    }
    }
    // A WRITE's payload follows its header whether it is served or not.
    if (!in.take(step.payload()))
      return 0;
  }
}
