// Bytes received on a peer or witness connection, through the code the
// daemon's connection reads with (io/net/frame_reader.hpp: accumulate, header
// checks and caps, payload, open and verify a sealed frame), in the
// connection's states, then the decoders the peer and witness actors apply
// to what comes out. Unlike peer_frame (which decodes one header and payload
// at a time), this runs the real loop: reads of any size split frames
// anywhere, a frame too large for the receive buffer is read into its own,
// and a session opens every frame with the AEAD.
//
// Input: a mode byte, a read-size byte, then the bytes on the wire.
//   mode & 3: the connection's state
//     0  accepted, nothing proved yet (the listener's side): the first frame
//        is capped at unauthenticated_frame_limit; a session_open goes to
//        the real server handshake (key and resource of fixed_session.hpp),
//        whose next frame must be session_proof; any other first frame is
//        decoded as a hello and, if it is one, the link is started without
//        a session (a resource without `secret`): full-size plain frames.
//     1  connecting, session_open sent: the first frame must be a
//        session_accept for the real client handshake.
//     2  authenticated: every frame is sealed with the fixed session
//        (fixed_session.hpp) and opened here; the bytes are used as they
//        are, so mutations hit the AEAD open. With mode & 32: a link started
//        without a session (plain full-size frames).
//     3  authenticated, trusted: the input holds plaintext frames, which the
//        target seals with the fixed session before feeding them (the
//        payload_length of each header is the plaintext's), so that
//        mutations reach the decoders behind the AEAD.
//   mode & 4: ChaCha20-Poly1305 instead of AES-256-GCM; mode & 8: integrity
//   only (`encryption off`); mode & 16: header CRCs are left as they are
//   (by default each header's CRC-32C is recomputed, so that mutations get
//   past it).
//   read-size byte r: 0 reads as much as the reader has room for; otherwise
//   each read takes 1 + (a pseudo-random number mod 64 r) bytes.

#include "io/codec/block_hash.hpp"
#include "io/net/control_channel.hpp"
#include "io/codec/crc32c.hpp"
#include "io/net/frame_reader.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"
#include "tests/fuzz/fixed_session.hpp"
#include "tests/fuzz/fuzz_bytes.hpp"

#include <cstring>
#include <optional>
#include <vector>

using namespace hast;
using namespace hast::peer;
using hast::fuzz::check;

namespace {

constexpr std::size_t crc_offset = header_size - 4;
constexpr std::size_t length_offset = 32;

uint32_t get_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

void put_le32(uint8_t* p, uint32_t v) {
  for (std::size_t i = 0; i < 4; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void put_crc(uint8_t* head) {
  put_le32(head + crc_offset, crc32c(head, crc_offset));
}

/// Recomputes the CRC of every header, walking the frames by their
/// payload_length fields.
void fix_crcs(std::vector<uint8_t>& wire) {
  std::size_t at = 0;
  while (wire.size() - at >= header_size) {
    put_crc(wire.data() + at);
    at += header_size + get_le32(wire.data() + at + length_offset);
    if (at > wire.size())
      break;
  }
}

/// Trusted mode: plaintext frames sealed in order, as the other side's
/// connection writes them.
std::vector<uint8_t> seal_frames(std::span<const uint8_t> plain, aead_cipher cipher, bool encrypt,
                                 bool keep_crc) {
  auto sealer = hast::fuzz::fixed_cipher(frame_cipher::direction::seal, cipher, encrypt);
  std::vector<uint8_t> wire;
  std::vector<uint8_t> text;
  while (plain.size() >= header_size) {
    std::array<uint8_t, header_size> head;
    std::memcpy(head.data(), plain.data(), header_size);
    plain = plain.subspan(header_size);
    const std::size_t n = std::min<std::size_t>(get_le32(head.data() + length_offset), plain.size());
    put_le32(head.data() + length_offset, static_cast<uint32_t>(n + tag_size));
    if (!keep_crc)
      put_crc(head.data());
    text.assign(n, 0);
    std::array<uint8_t, tag_size> tag{};
    const uint8_t* in = n > 0 ? plain.data() : nullptr;
    uint8_t* out = encrypt && n > 0 ? text.data() : nullptr;
    check(sealer->seal(head, in, out, n, tag));
    wire.insert(wire.end(), head.begin(), head.end());
    const uint8_t* body = out != nullptr ? out : in;
    if (n > 0)
      wire.insert(wire.end(), body, body + n);
    wire.insert(wire.end(), tag.begin(), tag.end());
    plain = plain.subspan(n);
  }
  wire.insert(wire.end(), plain.begin(), plain.end());
  return wire;
}

session_params fixed_params() {
  session_params p;
  p.key = hast::fuzz::fixed_key();
  p.resource = hast::fuzz::fixed_resource;
  p.node = "h2";
  p.link = "peer";
  return p;
}

/// What the peer and witness actors do with a frame of an established link.
void behind(const frame& f) {
  const header& h = f.h;
  switch (h.type) {
  case msg_type::hello:
  case msg_type::hello_reply:
  case msg_type::witness_hello:
    if (auto hello = decode_hello(f.payload)) {
      const auto again = decode_hello(encode_hello(*hello));
      check(again && *again == *hello);
      // A refusal's text reaches hastctl's replies and the events.
      const auto text = control::to_text(nlohmann::json{{"error", hello->refusal}});
      check(!nlohmann::json::parse(text, nullptr, false).is_discarded());
    }
    break;
  case msg_type::lease_request:
    if (auto req = decode_lease_request(f.payload)) {
      const auto again = decode_lease_request(encode_lease_request(*req));
      check(again && *again == *req);
    }
    break;
  case msg_type::lease_reply:
    if (auto reply = decode_lease_reply(f.payload)) {
      const auto again = decode_lease_reply(encode_lease_reply(*reply));
      check(again && *again == *reply);
      const auto text = control::to_text(nlohmann::json{{"reason", reply->reason}});
      check(!nlohmann::json::parse(text, nullptr, false).is_discarded());
    }
    break;
  case msg_type::verify_reply:
    if (auto hashes = decode_block_hashes(f.payload)) {
      const auto again = decode_block_hashes(encode_block_hashes(*hashes));
      check(again && *again == *hashes);
    }
    break;
  case msg_type::write:
  case msg_type::read_reply:
    if (auto opened = open_payload(h, f.payload))
      check(*opened != nullptr && (*opened)->size() == h.length);
    break;
  case msg_type::goodbye: {
    // The reason is logged and may reach a reply: it must serialise.
    std::string reason;
    if (f.payload)
      reason.assign(reinterpret_cast<const char*>(f.payload->data()), f.payload->size());
    const auto text = control::to_text(nlohmann::json{{"error", reason}});
    check(!nlohmann::json::parse(text, nullptr, false).is_discarded());
    break;
  }
  default:
    break;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  hast::fuzz::fuzz_bytes in{data, size};
  const auto mode = in.take_le<uint8_t>();
  const auto read_size = in.take_le<uint8_t>();
  const unsigned state = mode & 3;
  const aead_cipher cipher = (mode & 4) ? aead_cipher::chacha20_poly1305 : aead_cipher::aes_256_gcm;
  const bool encrypt = (mode & 8) == 0;
  const bool keep_crc = (mode & 16) != 0;
  const bool sessionless = state == 2 && (mode & 32) != 0;

  std::vector<uint8_t> wire;
  if (state == 3) {
    wire = seal_frames(in.rest(), cipher, encrypt, keep_crc);
  } else {
    wire.assign(in.rest().begin(), in.rest().end());
    if (!keep_crc)
      fix_crcs(wire);
  }

  frame_reader reader;
  enum class phase { first, proof, accept, started } at = phase::first;
  std::optional<server_handshake> server;
  if (state == 1)
    at = phase::accept;
  if (state >= 2) {
    at = phase::started;
    if (sessionless)
      reader.lift_limits();
    else
      reader.open_with(hast::fuzz::fixed_cipher(frame_cipher::direction::open, cipher, encrypt),
                       encrypt);
  }
  bool sealed = state >= 2 && !sessionless;

  // What the connection and its owner do with one frame; false: the
  // connection is closed.
  auto on_frame = [&](frame& f) -> bool {
    switch (at) {
    case phase::first:
      if (f.h.type == msg_type::session_open) {
        server.emplace(fixed_params(), f.payload);
        if (!server->accept_payload())
          return false;
        at = phase::proof;
        return true;
      }
      // Without a `secret` the first frame is a hello (or witness_hello);
      // a link that is one is started.
      if (!decode_hello(f.payload))
        return false;
      behind(f);
      reader.lift_limits();
      at = phase::started;
      return true;
    case phase::proof: {
      if (f.h.type != msg_type::session_proof)
        return false;
      session_ciphers c;
      if (!server->on_proof(f.payload, c))
        return false;
      reader.open_with(std::move(c.opener), c.encrypt);
      sealed = true;
      at = phase::started;
      return true;
    }
    case phase::accept: {
      if (f.h.type != msg_type::session_accept)
        return false;
      client_handshake client{fixed_params()};
      session_ciphers c;
      if (!client.on_accept(f.payload, c))
        return false;
      reader.open_with(std::move(c.opener), c.encrypt);
      sealed = true;
      at = phase::started;
      return true;
    }
    case phase::started:
      if (f.h.type != msg_type::keepalive)
        behind(f);
      return true;
    }
    return false;
  };

  uint32_t rng = 0x9e3779b9u ^ read_size;
  std::size_t pos = 0;
  for (;;) {
    frame f;
    std::string error;
    const auto step = reader.next(f, error);
    if (step == frame_reader::step::failed) {
      check(!error.empty());
      return 0;  // the connection closes with `error`
    }
    if (step == frame_reader::step::frame) {
      check(f.h.payload_length == (f.payload ? f.payload->size() : 0));
      check(!f.payload || f.payload->size() > 0);
      if (at != phase::started)
        check(f.h.payload_length <= unauthenticated_frame_limit);
      check(f.h.payload_length <= (sealed ? max_payload : max_wire_payload));
      if (!on_frame(f))
        return 0;
      continue;
    }
    if (pos == wire.size())
      return 0;  // the rest never came
    const auto space = reader.space();
    check(!space.empty());
    std::size_t n = std::min(space.size(), wire.size() - pos);
    if (read_size != 0 && !reader.reading_large()) {
      rng = rng * 1103515245u + 12345u;
      n = std::min<std::size_t>(n, 1 + (rng >> 8) % (64u * read_size));
    }
    std::memcpy(space.data(), wire.data() + pos, n);
    pos += n;
    reader.filled(n);
  }
}
