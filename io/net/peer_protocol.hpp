#pragma once

// The wire protocol between the two nodes of a resource: fixed 80-byte
// frame headers, each followed by `payload_length` payload bytes. Pure
// functions only (encode, decode, seal, open); the socket side is
// io/net/peer_transport.hpp. The full description, with the handshake and the
// acknowledgement sequences of the replication modes, is docs/PROTOCOL.md.

#include "config/config.hpp"
#include "io/codec/buffer.hpp"
#include "base/errc.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hast::peer {

/// "HAST" read as a little-endian u32: the first four bytes of every frame.
inline constexpr uint32_t magic = 0x54534148;
/// The one protocol version this build speaks. 2: the session layer
/// (io/net/secure_frames.hpp) replaced the HMAC challenge of version 1.
inline constexpr uint8_t protocol_version = 2;
inline constexpr std::size_t header_size = 80;
/// Largest payload of one frame; larger requests are split by the sender.
inline constexpr uint32_t max_payload = 64u << 20;
/// Largest payload_length on the wire: a sealed frame carries its 16-byte
/// authentication tag behind the payload.
inline constexpr uint32_t max_wire_payload = max_payload + 16;
inline constexpr std::chrono::seconds default_keepalive{5};

enum class msg_type : uint8_t {
  hello = 1,           // primary → secondary: who I am, my generation counters
  hello_reply = 2,     // secondary → primary: accepted (sync direction, maps) or refused
  session_open = 5,    // client → server, with a secret: who, a nonce, ciphers (io/net/secure_frames.hpp)
  session_accept = 6,  // server → client: its nonce, the cipher, the server's proof of the key
  session_proof = 7,   // client → server: the client's proof; every later frame is sealed
  write = 10,          // primary → secondary: data at offset
  trim = 11,           // primary → secondary: discard a range (no payload)
  write_zeroes = 12,   // primary → secondary: zero a range (no payload)
  flush = 13,          // primary → secondary: make earlier writes durable
  read = 14,           // either way: ask for `length` bytes at offset
  keepalive = 15,      // either way: "still here"; consumed by the transport
  received = 20,       // secondary → primary: memsync, the data is in memory
  done = 21,           // reply to write/trim/write_zeroes/flush: completed (or `error`)
  read_reply = 22,     // reply to read: the data (or `error`)
  sync_done = 16,      // primary → secondary: resync complete; `offset` carries the primary's localcnt
  verify = 17,         // primary → secondary: hash the blocks of `length` bytes at offset (no payload)
  verify_reply = 23,   // reply to verify: the block hashes (io/codec/block_hash.hpp), or `error`
  grow = 18,           // primary → secondary: grow to the data size in `offset` (online growth)
  grow_reply = 24,     // reply to grow: `offset` = the secondary's data size, or `error` and a reason
  goodbye = 30,        // either way: orderly close; the payload may hold a reason
  witness_hello = 40,  // data node → witness: which resource and node (a hello_message)
  lease_request = 41,  // data node → witness: renew, claim or release the lease (lease_request)
  lease_reply = 42,    // witness → data node: the answer (lease_reply)
};

/// Header flags.
inline constexpr uint16_t flag_memsync = 1;   // answer `received` before the disk write
inline constexpr uint16_t flag_fua = 2;       // the write must be durable when `done`
inline constexpr uint16_t flag_sync = 4;      // resynchronisation data, not an application write
inline constexpr uint16_t flag_may_trim = 8;  // write_zeroes: the range may be trimmed
inline constexpr uint16_t flag_digest = 16;   // verify: SHA-256 per block (the checksum resync)

/// One frame header in host form. seq ties a reply to its request.
struct header {
  msg_type type = msg_type::keepalive;
  uint16_t flags = 0;
  uint64_t seq = 0;
  uint64_t offset = 0;
  uint64_t length = 0;          // logical length: data bytes before compression, or the trim/zero range
  uint32_t payload_length = 0;  // bytes on the wire after the header
  uint32_t error = 0;           // hast::errc of a reply, 0 = ok
  checksum_kind checksum = checksum_kind::none;
  compression_kind compression = compression_kind::none;
  std::array<uint8_t, 32> digest{};

  bool operator==(const header&) const = default;
};

/// Little-endian: magic u32, version u8, type u8, flags u16, seq u64,
/// offset u64, length u64, payload_length u32, error u32, checksum u8,
/// compression u8, reserved u16 (0), digest 32 bytes, header_crc u32 =
/// crc32c of the preceding 76 bytes. In a session (io/net/secure_frames.hpp)
/// payload_length counts the 16-byte tag behind the payload as well.
/// A header of `type` and `seq`, everything else zero; the link fills in
/// payload_length when it sends (peer_link::send).
inline header make_header(msg_type type, uint64_t seq = 0) {
  header h;
  h.type = type;
  h.seq = seq;
  return h;
}
std::array<uint8_t, header_size> encode_header(const header& h);

/// Checks and decodes a header. errc::protocol_error, with the reason, for
/// a bad magic, a version we do not speak, a bad header checksum, an
/// unknown type, payload_length > max_wire_payload, an unknown checksum or
/// compression value, or nonzero reserved bytes.
result<header> decode_header(std::span<const uint8_t, header_size> bytes);

/// Prepares a data-carrying message for the wire. Sets h.length to
/// data->size(); with compression `hole` or `lz4` an all-zero buffer goes
/// as no payload (data = nullptr, h.compression = hole); with `lz4` a
/// compressible buffer is replaced by its compressed form (h.compression =
/// lz4); `lzf` is treated as `lz4` (we do not implement LZF; the option is
/// accepted for hast.conf compatibility). Otherwise data goes as is
/// (h.compression = none). Then sets h.payload_length, h.checksum and the
/// digest over the wire payload. `data` may be null for an empty message.
status seal_payload(header& h, buffer_ptr& data, compression_kind wanted, checksum_kind checksum);

/// The inverse on the receiving side: checks the digest ("payload checksum
/// mismatch"), expands hole (h.length zero bytes) or lz4 (exactly h.length
/// bytes) and returns the data buffer. `wire` may be null when
/// payload_length is 0; an empty message yields a buffer of size 0.
result<buffer_ptr> open_payload(const header& h, buffer_ptr wire);

/// The payload of hello and hello_reply: JSON plus an optional bitmap.
struct hello_message {
  uint32_t version = protocol_version;
  std::string resource;
  std::string node;
  std::string role;
  uint64_t datasize = 0;
  uint32_t extent_size = 0;
  uint64_t resuid = 0;
  uint64_t localcnt = 0;
  uint64_t remotecnt = 0;
  bool virgin = false;
  std::string refusal;      // non-empty in a refusing hello_reply: the reason
  std::string sync_source;  // hello_reply: "primary", "secondary", "none" or "split-brain"
  std::vector<uint8_t> bitmap;

  bool operator==(const hello_message&) const = default;
};

/// u32 LE length of the JSON, the JSON object, then the bitmap bytes.
buffer_ptr encode_hello(const hello_message& m);
/// Strict: a short buffer, a JSON length past the end, malformed JSON or a
/// field of the wrong type is errc::protocol_error.
result<hello_message> decode_hello(const buffer_ptr& payload);

/// A 32-byte value (a nonce or a MAC) as a payload.
buffer_ptr encode_nonce(const std::array<uint8_t, 32>& nonce);
/// Exactly 32 bytes, else errc::protocol_error.
result<std::array<uint8_t, 32>> decode_nonce(const buffer_ptr& payload);

/// What a data node asks the witness (docs/FAILOVER.md). JSON payload.
struct lease_request {
  std::string kind;        // "renew" (primary), "claim" (secondary), "release" (leaving primary)
  std::string node;
  uint64_t epoch = 0;      // renew: the epoch of the lease held
  uint64_t resuid = 0;
  uint64_t localcnt = 0;
  uint64_t remotecnt = 0;
  bool in_sync = false;    // renew: the secondary holds every acknowledged write
  bool manual = false;     // claim: from hastctl role primary (no eligibility check)

  bool operator==(const lease_request&) const = default;
};

/// The witness's answer, matched to the request by the header's seq.
struct lease_reply {
  bool granted = false;
  uint64_t epoch = 0;      // the epoch of the lease now
  std::string holder;      // who holds it (may be empty: nobody)
  uint32_t lease_ms = 0;   // granted: how long, counted from when the request was sent
  std::string reason;      // refused: why

  bool operator==(const lease_reply&) const = default;
};

buffer_ptr encode_lease_request(const lease_request& m);
/// Strict as decode_hello: malformed JSON or a wrong field type is errc::protocol_error.
result<lease_request> decode_lease_request(const buffer_ptr& payload);
buffer_ptr encode_lease_reply(const lease_reply& m);
result<lease_reply> decode_lease_reply(const buffer_ptr& payload);

/// "write", "done", ...
std::string_view to_string(msg_type type);

/// One line for logs: "write seq=7 offset=4096 length=65536 payload=812 lz4 crc32c".
std::string describe(const header& h);

} // namespace hast::peer
