// Frames from a peer as io/net/peer_transport.cpp and the peer actor take them:
// an 80-byte header (decode_header), its payload_length bytes, then the
// payload opened (open_payload: checksum, hole, lz4) and, for the handshake
// messages and a verify's reply, decoded (decode_hello, decode_session_open, decode_nonce,
// decode_block_hashes). Frames follow each other
// until one is malformed or the input ends.
//
// The first input byte is a mode: with bit 0 set, each header's CRC-32C is
// recomputed before decoding, so that mutations reach the fields behind the
// checksum; with bit 1 set, each payload's digest is recomputed for the
// checksum kind the header names, so that mutations reach decompression.

#include "io/codec/block_hash.hpp"
#include "io/codec/checksum.hpp"
#include "io/codec/crc32c.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

#include <cstring>

using namespace hast;
using namespace hast::peer;
using hast::fuzz::check;

namespace {

constexpr std::size_t crc_offset = header_size - 4;
constexpr std::size_t checksum_offset = 40;
constexpr std::size_t digest_offset = 44;

void put_crc(uint8_t* header) {
  const uint32_t crc = crc32c(header, crc_offset);
  for (std::size_t i = 0; i < 4; ++i)
    header[crc_offset + i] = static_cast<uint8_t>(crc >> (8 * i));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  hast::fuzz::fuzz_bytes in{data, size};
  const auto mode = in.take_le<uint8_t>();
  const bool fix_crc = (mode & 1) != 0;
  const bool fix_digest = (mode & 2) != 0;

  for (;;) {
    uint8_t bytes[header_size];
    if (!in.take_into(bytes))
      return 0;
    const auto peek_length = [&] {
      uint32_t n = 0;
      for (std::size_t i = 0; i < 4; ++i)
        n |= uint32_t{bytes[32 + i]} << (8 * i);
      return n;
    }();
    const auto wire_bytes = in.take(std::min<std::size_t>(peek_length, in.size()));
    if (fix_digest && bytes[checksum_offset] <= static_cast<uint8_t>(checksum_kind::sha256)) {
      std::array<uint8_t, 32> digest{};
      compute_digest(static_cast<checksum_kind>(bytes[checksum_offset]), wire_bytes->data(),
                     wire_bytes->size(), digest);
      std::memcpy(bytes + digest_offset, digest.data(), digest.size());
    }
    if (fix_crc)
      put_crc(bytes);

    const auto decoded = decode_header(std::span<const uint8_t, header_size>(bytes));
    if (!decoded)
      return 0; // the transport fails the connection
    const header& h = *decoded;
    check(h.payload_length <= max_wire_payload);
    check(encode_header(h) == std::to_array(bytes));
    (void)describe(h);
    if (wire_bytes->size() < h.payload_length)
      return 0; // the rest of the payload never came

    buffer_ptr payload;
    if (h.payload_length > 0) {
      payload = make_buffer(h.payload_length);
      std::memcpy(payload->data(), wire_bytes->data(), h.payload_length);
    }
    switch (h.type) {
    case msg_type::hello:
    case msg_type::hello_reply:
      if (auto hello = decode_hello(payload)) {
        const auto again = decode_hello(encode_hello(*hello));
        check(again && *again == *hello);
      }
      break;
    case msg_type::session_open:
      if (auto open = decode_session_open(payload)) {
        const auto again = decode_session_open(encode_session_open(*open));
        check(again && again->resource == open->resource && again->nonce == open->nonce);
      }
      break;
    case msg_type::session_accept:
      if (payload && payload->size() > 32)
        (void)decode_session_accept_body({payload->data(), payload->size() - 32});
      break;
    case msg_type::session_proof:
      (void)decode_nonce(payload);
      break;
    case msg_type::verify_reply:
      if (auto hashes = decode_block_hashes(payload)) {
        const auto again = decode_block_hashes(encode_block_hashes(*hashes));
        check(again && *again == *hashes);
      }
      break;
    default:
      if (auto opened = open_payload(h, payload)) {
        check(*opened != nullptr && (*opened)->size() == h.length);
        // What we would send back for it opens to the same bytes.
        if (h.length > 0 && h.length <= (64u << 10)) {
          header back;
          back.type = msg_type::write;
          buffer_ptr copy = *opened;
          check(seal_payload(back, copy, compression_kind::lz4, checksum_kind::crc32c).is_ok());
          const auto reopened = open_payload(back, copy);
          check(reopened && (*reopened)->size() == h.length &&
                std::memcmp((*reopened)->data(), (*opened)->data(), h.length) == 0);
        }
      }
      break;
    }
  }
}
