// Writes the generated seeds of the fuzz corpus: valid inputs built with the
// encoders the daemon and its clients use, plus hand-made edge cases.
//
//   fuzz_make_corpus tests/fuzz/corpus
//
// writes gen-*.bin files into corpus/<target>/ (existing files are
// replaced; regress-* files found by fuzzing are not touched).

#include "io/storage/activemap.hpp"
#include "io/codec/block_hash.hpp"
#include "io/storage/metadata.hpp"
#include "io/net/nbd_protocol.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"
#include "tests/fuzz/fixed_session.hpp"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace hast;
namespace fs = std::filesystem;

namespace {

using bytes = std::vector<uint8_t>;

fs::path root;

void put(bytes& out, std::span<const uint8_t> more) {
  out.insert(out.end(), more.begin(), more.end());
}
void put(bytes& out, std::string_view more) {
  out.insert(out.end(), more.begin(), more.end());
}
template <class T>
void put_le(bytes& out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
}

void write(const std::string& target, const std::string& name, std::span<const uint8_t> data) {
  fs::create_directories(root / target);
  const auto path = root / target / ("gen-" + name);
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  std::printf("%s (%zu bytes)\n", path.c_str(), data.size());
}

// --- NBD -------------------------------------------------------------------------------

bytes client_flags(uint32_t flags) {
  bytes out(4);
  nbd::put_be32(out.data(), flags);
  return out;
}

bytes option(uint32_t option, std::span<const uint8_t> data) {
  bytes out;
  put(out, nbd::encode_option_header({option, static_cast<uint32_t>(data.size())}));
  put(out, data);
  return out;
}

void nbd_options() {
  const auto flags = client_flags(nbd::flag_c_fixed_newstyle | nbd::flag_c_no_zeroes);
  {
    bytes in = flags;
    put(in, option(nbd::opt_list, {}));
    put(in, option(nbd::opt_info, nbd::encode_info_request({"", {nbd::info_name, nbd::info_block_size}})));
    put(in, option(nbd::opt_go, nbd::encode_info_request({"r0", {}})));
    write("nbd_options", "list-info-go", in);
  }
  {
    bytes in = client_flags(nbd::flag_c_fixed_newstyle);
    put(in, option(nbd::opt_export_name, bytes{'r', '0'}));
    write("nbd_options", "export-name", in);
  }
  {
    bytes in = flags;
    put(in, option(nbd::opt_structured_reply, {}));
    put(in, option(nbd::opt_starttls, {}));
    put(in, option(nbd::opt_list, bytes{1, 2, 3}));
    put(in, option(nbd::opt_info, bytes{0, 0, 0, 9, 'x'}));
    put(in, option(nbd::opt_abort, {}));
    write("nbd_options", "unsupported-invalid-abort", in);
  }
  {
    bytes in = flags;
    put(in, nbd::encode_option_header({nbd::opt_go, 0xffffffffu}));
    write("nbd_options", "length-4gib", in);
  }
  {
    bytes in = flags;
    for (int i = 0; i < 66; ++i)
      put(in, option(nbd::opt_list, {}));
    write("nbd_options", "too-many-options", in);
  }
  write("nbd_options", "unknown-client-flags", client_flags(0x80000001u));
}

bytes export_of(uint64_t size, uint16_t flags) {
  bytes out(10);
  nbd::put_be64(out.data(), size);
  nbd::put_be16(out.data() + 8, flags);
  return out;
}

bytes request(uint16_t type, uint16_t flags, uint64_t offset, uint32_t length) {
  static uint64_t cookie = 1;
  auto out = nbd::encode_request({flags, type, cookie++, offset, length});
  return bytes(out.begin(), out.end());
}

void nbd_requests() {
  nbd::export_info info;
  info.size = 1u << 20;
  info.can_flush = info.can_fua = info.can_trim = info.can_write_zeroes = info.can_multi_conn = true;
  const uint16_t all = nbd::transmission_flags(info);
  {
    bytes in = export_of(info.size, all);
    put(in, request(nbd::cmd_read, 0, 0, 4096));
    put(in, request(nbd::cmd_write, nbd::cmd_flag_fua, 4096, 512));
    put(in, bytes(512, 0xab));
    put(in, request(nbd::cmd_flush, 0, 0, 0));
    put(in, request(nbd::cmd_trim, 0, 8192, 65536));
    put(in, request(nbd::cmd_write_zeroes, nbd::cmd_flag_no_hole, 0, 1u << 20));
    put(in, request(nbd::cmd_disc, 0, 0, 0));
    write("nbd_requests", "every-command", in);
  }
  {
    bytes in = export_of(info.size, all);
    put(in, request(nbd::cmd_read, 0, info.size - 512, 1024));             // past the end
    put(in, request(nbd::cmd_read, 0, ~uint64_t{0} - 100, 4096));          // offset overflow
    put(in, request(nbd::cmd_write, 0, info.size, 16));                    // ENOSPC, payload skipped
    put(in, bytes(16, 0x11));
    put(in, request(nbd::cmd_cache, 0, 0, 512));                           // never advertised
    put(in, request(nbd::cmd_block_status, 0, 0, 512));
    put(in, request(nbd::cmd_read, nbd::cmd_flag_df | 0x8000, 0, 512));   // bad flags
    put(in, request(nbd::cmd_flush, 0, 1, 0));
    put(in, request(nbd::cmd_read, 0, 0, 0));
    put(in, request(nbd::cmd_write, 0, 0, 0xffffffffu));                   // closes
    write("nbd_requests", "refusals", in);
  }
  {
    info.read_only = true;
    bytes in = export_of(info.size, nbd::transmission_flags(info));
    put(in, request(nbd::cmd_write, 0, 0, 8));
    put(in, bytes(8, 1));
    put(in, request(nbd::cmd_trim, 0, 0, 4096));
    put(in, request(nbd::cmd_read, 0, 0, nbd::max_payload + 1));
    bytes bad(nbd::request_size, 0);
    put(in, bad);
    write("nbd_requests", "read-only-then-bad-magic", in);
  }
}

// --- Peer frames -----------------------------------------------------------------------

bytes frame(peer::header h, buffer_ptr payload) {
  h.payload_length = payload ? static_cast<uint32_t>(payload->size()) : 0;
  bytes out;
  put(out, peer::encode_header(h));
  if (payload)
    put(out, std::span<const uint8_t>(payload->data(), payload->size()));
  return out;
}

bytes sealed(peer::msg_type type, bytes data, compression_kind compression, checksum_kind checksum) {
  peer::header h;
  h.type = type;
  h.seq = 7;
  h.offset = 4096;
  buffer_ptr payload = make_buffer(data.size());
  std::memcpy(payload->data(), data.data(), data.size());
  if (!peer::seal_payload(h, payload, compression, checksum))
    std::abort();
  return frame(h, payload);
}

void peer_frames() {
  peer::hello_message hello;
  hello.resource = "r0";
  hello.node = "h1";
  hello.role = "primary";
  hello.datasize = 1u << 30;
  hello.extent_size = 2u << 20;
  hello.resuid = 0x1234;
  hello.localcnt = 3;
  hello.remotecnt = 2;
  {
    bytes in{0};
    peer::header h;
    h.type = peer::msg_type::hello;
    put(in, frame(h, peer::encode_hello(hello)));
    peer::hello_message reply = hello;
    reply.node = "h2";
    reply.role = "secondary";
    reply.sync_source = "primary";
    reply.bitmap = {0x01, 0x80, 0xff, 0};
    h.type = peer::msg_type::hello_reply;
    put(in, frame(h, peer::encode_hello(reply)));
    peer::session_open_message open;
    open.version = 2;
    open.resource = "shared";
    open.node = "h1";
    open.link = "peer";
    open.nonce = {1, 2, 3};
    open.ciphers = {peer::aead_cipher::aes_256_gcm, peer::aead_cipher::chacha20_poly1305};
    h.type = peer::msg_type::session_open;
    put(in, frame(h, peer::encode_session_open(open)));
    peer::session_accept_message accept;
    accept.nonce = {7, 8, 9};
    auto body = peer::encode_session_accept_body(accept);
    body.resize(body.size() + 32, 0x11);  // the proof
    auto accept_payload = make_buffer(body.size());
    std::memcpy(accept_payload->data(), body.data(), body.size());
    h.type = peer::msg_type::session_accept;
    put(in, frame(h, accept_payload));
    h.type = peer::msg_type::session_proof;
    put(in, frame(h, peer::encode_nonce({4, 5, 6})));
    write("peer_frame", "handshake", in);
  }
  {
    bytes in{0};
    bytes text(8192);
    for (std::size_t i = 0; i < text.size(); ++i)
      text[i] = static_cast<uint8_t>("hast replicates blocks "[i % 23]);
    put(in, sealed(peer::msg_type::write, text, compression_kind::lz4, checksum_kind::crc32c));
    put(in, sealed(peer::msg_type::write, bytes(4096, 0), compression_kind::hole, checksum_kind::crc32));
    put(in, sealed(peer::msg_type::read_reply, bytes(512, 0x5a), compression_kind::none,
                   checksum_kind::sha256));
    peer::header h;
    h.type = peer::msg_type::read;
    h.length = 4096;
    put(in, frame(h, nullptr));
    h.type = peer::msg_type::done;
    h.error = 5;
    put(in, frame(h, nullptr));
    h = {};
    h.type = peer::msg_type::keepalive;
    put(in, frame(h, nullptr));
    h.type = peer::msg_type::goodbye;
    buffer_ptr reason = make_buffer(8);
    std::memcpy(reason->data(), "shutdown", 8);
    put(in, frame(h, reason));
    write("peer_frame", "data", in);
  }
  {
    // lz4 that claims to expand a few bytes to the largest payload (mode 3:
    // checksums are recomputed, so only the claim is wrong).
    bytes in{3};
    peer::header h;
    h.type = peer::msg_type::write;
    h.compression = compression_kind::lz4;
    h.length = peer::max_payload;
    bytes lz4{0x10, 'x'};
    buffer_ptr payload = make_buffer(lz4.size());
    std::memcpy(payload->data(), lz4.data(), lz4.size());
    put(in, frame(h, payload));
    write("peer_frame", "lz4-claims-64mib", in);
  }
  {
    bytes in{1};
    peer::header h;
    h.type = peer::msg_type::write;
    auto raw = peer::encode_header(h);
    raw[32] = raw[33] = raw[34] = raw[35] = 0xff; // payload_length 4 GiB - 1
    put(in, raw);
    write("peer_frame", "payload-length-4gib", in);
  }
  {
    bytes in{0};
    peer::header h;
    h.type = peer::msg_type::hello;
    buffer_ptr payload = make_buffer(4 + 9);
    const bytes json = {9, 0, 0, 0, '{', '"', 'v', '"', ':', '1', '}', 0, 0};
    std::memcpy(payload->data(), json.data(), json.size());
    put(in, frame(h, payload));
    write("peer_frame", "hello-missing-fields", in);
  }
  {
    // An online verify: the request, then its reply of three block hashes.
    bytes in{0};
    peer::header h;
    h.type = peer::msg_type::verify;
    h.seq = 9;
    h.length = 3 * verify_block_size;
    put(in, frame(h, nullptr));
    block_hashes hashes;
    hashes.hashes = {0x1111, 0x2222, 0x3333};
    h.type = peer::msg_type::verify_reply;
    h.length = 0;
    put(in, frame(h, encode_block_hashes(hashes)));
    write("peer_frame", "verify", in);
  }
}

// --- The frame reader (a connection's byte stream) --------------------------------------

buffer_ptr buffer_of(std::string_view text) {
  auto b = make_buffer(text.size());
  std::memcpy(b->data(), text.data(), text.size());
  return b;
}

buffer_ptr pattern(std::size_t n, uint8_t seed) {
  auto b = make_buffer(n);
  uint32_t x = seed;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    b->data()[i] = static_cast<uint8_t>(x >> 16);  // incompressible
  }
  return b;
}

peer::hello_message sample_hello() {
  peer::hello_message hello;
  hello.resource = "shared";
  hello.node = "h1";
  hello.role = "primary";
  hello.datasize = 1u << 30;
  hello.extent_size = 2u << 20;
  hello.resuid = 0x1234;
  hello.localcnt = 3;
  hello.remotecnt = 2;
  return hello;
}

/// The frames of an established link, in a typical order, as (header, payload).
std::vector<std::pair<peer::header, buffer_ptr>> link_frames() {
  std::vector<std::pair<peer::header, buffer_ptr>> out;
  peer::header h;
  auto reply = sample_hello();
  reply.node = "h2";
  reply.role = "secondary";
  reply.sync_source = "primary";
  reply.bitmap = {0x01, 0x80};
  h.type = peer::msg_type::hello_reply;
  out.emplace_back(h, peer::encode_hello(reply));
  // A small compressible write, then one too large for the receive buffer's
  // small-frame rule (read into a buffer of its own).
  for (std::size_t n : {std::size_t{4096}, std::size_t{17000}}) {
    peer::header w;
    w.type = peer::msg_type::write;
    w.seq = n;
    w.offset = 8192;
    buffer_ptr data = n == 4096 ? buffer_of(std::string(4096, 'h')) : pattern(n, 7);
    if (!peer::seal_payload(w, data, compression_kind::lz4, checksum_kind::crc32c))
      std::abort();
    out.emplace_back(w, data);
  }
  h = {};
  h.type = peer::msg_type::keepalive;
  out.emplace_back(h, nullptr);
  h.type = peer::msg_type::done;
  h.seq = 4096;
  out.emplace_back(h, nullptr);
  block_hashes hashes;
  hashes.hashes = {1, 2, 3};
  h.type = peer::msg_type::verify_reply;
  out.emplace_back(h, encode_block_hashes(hashes));
  peer::lease_request lease;
  lease.kind = "claim";
  lease.node = "h1";
  lease.epoch = 4;
  lease.manual = true;
  h.type = peer::msg_type::lease_request;
  out.emplace_back(h, peer::encode_lease_request(lease));
  peer::lease_reply granted;
  granted.granted = true;
  granted.epoch = 5;
  granted.holder = "h1";
  granted.lease_ms = 3000;
  h.type = peer::msg_type::lease_reply;
  out.emplace_back(h, peer::encode_lease_reply(granted));
  h.type = peer::msg_type::goodbye;
  out.emplace_back(h, buffer_of("shutting down \xff\xfe"));
  return out;
}

/// The frames sealed in order with the fixed session, as the other side's
/// connection writes them.
bytes sealed_stream(const std::vector<std::pair<peer::header, buffer_ptr>>& frames,
                    peer::aead_cipher cipher, bool encrypt) {
  auto sealer = fuzz::fixed_cipher(peer::frame_cipher::direction::seal, cipher, encrypt);
  bytes out;
  for (auto [h, payload] : frames) {
    const std::size_t n = payload ? payload->size() : 0;
    h.payload_length = static_cast<uint32_t>(n + peer::tag_size);
    const auto head = peer::encode_header(h);
    bytes text(n);
    std::array<uint8_t, peer::tag_size> tag{};
    const uint8_t* in = n > 0 ? payload->data() : nullptr;
    uint8_t* sealed = encrypt && n > 0 ? text.data() : nullptr;
    if (!sealer->seal(head, in, sealed, n, tag))
      std::abort();
    put(out, head);
    if (n > 0)
      put(out, std::span<const uint8_t>(sealed ? sealed : in, n));
    put(out, tag);
  }
  return out;
}

bytes plain_stream(const std::vector<std::pair<peer::header, buffer_ptr>>& frames) {
  bytes out;
  for (const auto& [h, payload] : frames)
    put(out, frame(h, payload));
  return out;
}

void frame_reader_inputs() {
  const auto target = "frame_reader";
  auto with_mode = [](uint8_t mode, uint8_t reads, const bytes& stream) {
    bytes in{mode, reads};
    put(in, stream);
    return in;
  };
  peer::session_open_message open;
  open.version = 2;
  open.resource = fuzz::fixed_resource;
  open.node = "h1";
  open.link = "peer";
  open.nonce = {1, 2, 3};
  open.ciphers = {peer::aead_cipher::aes_256_gcm, peer::aead_cipher::chacha20_poly1305};
  peer::header h;
  h.type = peer::msg_type::session_open;
  bytes handshake = frame(h, peer::encode_session_open(open));
  h.type = peer::msg_type::session_proof;
  put(handshake, frame(h, peer::encode_nonce({9, 9, 9})));
  // The listener's side: session_open (accepted: the resource and key
  // match), then a proof that does not check out.
  write(target, "listener-session", with_mode(0, 0, handshake));
  write(target, "listener-session-small-reads", with_mode(0, 1, handshake));
  // Without a secret: a hello, then the link is started (full-size frames).
  {
    h = {};
    h.type = peer::msg_type::hello;
    bytes stream = frame(h, peer::encode_hello(sample_hello()));
    put(stream, plain_stream(link_frames()));
    write(target, "listener-hello-then-link", with_mode(0, 0, stream));
    write(target, "listener-hello-then-link-reads", with_mode(0, 50, stream));
  }
  // A first frame one byte over the cap, payload and all.
  {
    h = {};
    h.type = peer::msg_type::witness_hello;
    auto raw = peer::encode_header(h);
    const uint32_t over = peer::unauthenticated_frame_limit + 1;
    for (std::size_t i = 0; i < 4; ++i)
      raw[32 + i] = static_cast<uint8_t>(over >> (8 * i));
    bytes stream;
    put(stream, raw);
    put(stream, bytes(over, '{'));
    write(target, "listener-first-frame-over-cap", with_mode(0, 0, stream));
  }
  // The connecting side: a session_accept whose proof does not check out.
  {
    peer::session_accept_message accept;
    accept.nonce = {7, 8, 9};
    auto body = peer::encode_session_accept_body(accept);
    body.resize(body.size() + 32, 0x11);
    auto payload = make_buffer(body.size());
    std::memcpy(payload->data(), body.data(), body.size());
    h = {};
    h.type = peer::msg_type::session_accept;
    write(target, "client-accept", with_mode(1, 0, frame(h, payload)));
  }
  // An established session, every cipher and mode.
  const auto frames = link_frames();
  write(target, "sealed-aes", with_mode(2, 0, sealed_stream(frames, peer::aead_cipher::aes_256_gcm, true)));
  write(target, "sealed-aes-reads",
        with_mode(2, 9, sealed_stream(frames, peer::aead_cipher::aes_256_gcm, true)));
  write(target, "sealed-chacha",
        with_mode(4 | 2, 0, sealed_stream(frames, peer::aead_cipher::chacha20_poly1305, true)));
  write(target, "sealed-integrity",
        with_mode(8 | 2, 0, sealed_stream(frames, peer::aead_cipher::aes_256_gcm, false)));
  write(target, "sessionless-link", with_mode(32 | 2, 0, plain_stream(frames)));
  {
    // One bit flipped in the second frame's payload; the first frame replayed.
    auto stream = sealed_stream(frames, peer::aead_cipher::aes_256_gcm, true);
    auto flipped = stream;
    const std::size_t first = peer::header_size + frames[0].second->size() + peer::tag_size;
    flipped[first + peer::header_size + 5] ^= 0x20;
    write(target, "sealed-bit-flipped", with_mode(2, 0, flipped));
    bytes replayed(stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(first));
    put(replayed, std::span<const uint8_t>(stream.data(), first));
    write(target, "sealed-replayed", with_mode(2, 0, replayed));
  }
  // Trusted: plaintext frames the target seals itself.
  write(target, "trusted-aes", with_mode(3, 0, plain_stream(frames)));
  write(target, "trusted-chacha-integrity", with_mode(3 | 4 | 8, 0, plain_stream(frames)));
  {
    peer::hello_message refusing = sample_hello();
    refusing.refusal = "split-brain d\xc3\xa9tect\xc3\xa9";
    h = {};
    h.type = peer::msg_type::hello_reply;
    bytes stream = frame(h, peer::encode_hello(refusing));
    h.type = peer::msg_type::witness_hello;
    put(stream, frame(h, peer::encode_hello(sample_hello())));
    peer::lease_reply refused;
    refused.reason = "not eligible";
    h.type = peer::msg_type::lease_reply;
    put(stream, frame(h, peer::encode_lease_reply(refused)));
    write(target, "trusted-refusals", with_mode(3, 0, stream));
  }
}

// --- Control socket ----------------------------------------------------------------------

bytes control_frame(std::string_view body) {
  bytes out;
  put_le<uint32_t>(out, static_cast<uint32_t>(body.size()));
  put(out, body);
  return out;
}

void control_requests() {
  write("control_request", "status", control_frame(R"({"command":"status","resources":["r0"]})"));
  write("control_request", "role",
        control_frame(R"({"command":"role","role":"primary","resources":["r0","r1"],"force":true})"));
  write("control_request", "resync",
        control_frame(R"({"command":"resync","resources":[],"discard_local":true})"));
  write("control_request", "not-json", control_frame("{\"command\":"));
  write("control_request", "no-command", control_frame(R"({"cmd":"status"})"));
  write("control_request", "command-not-string", control_frame(R"({"command":7})"));
  write("control_request", "array", control_frame(R"([{"command":"status"}])"));
  write("control_request", "escapes",
        control_frame(R"({"command":"st\u00e4tus\ud83d\ude00","resources":["\"\\\n"]})"));
  bytes huge;
  put_le<uint32_t>(huge, 0xffffffffu);
  put(huge, std::string_view{"{}"});
  write("control_request", "length-4gib", huge);
}

/// Request bodies for the daemon's handler (two resources, r0 and r1).
void control_handler_inputs() {
  const auto target = "control_handler";
  auto body = [&](const std::string& name, std::string_view text) {
    write(target, name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  };
  body("status-all", R"({"command":"status","resources":[]})");
  body("status-r0-unknown", R"({"command":"status","resources":["r0","nosuch"]})");
  body("role-primary-r0", R"({"command":"role","role":"primary","resources":["r0"]})");
  body("role-init-all", R"({"command":"role","role":"init","resources":["all"]})");
  body("role-secondary-force", R"({"command":"role","role":"secondary","resources":["r1"],"force":true})");
  body("role-unknown", R"({"command":"role","role":"witness","resources":["r0"]})");
  body("role-missing", R"({"command":"role","resources":["r0"]})");
  body("role-not-string", R"({"command":"role","role":1,"resources":["r0"]})");
  body("force-not-bool", R"({"command":"role","role":"init","resources":["r0"],"force":"yes"})");
  body("resync-without-discard", R"({"command":"resync","resources":["r0"]})");
  body("resync-discard", R"({"command":"resync","resources":["r1"],"discard_local":true})");
  body("verify", R"({"command":"verify","resources":["r0"]})");
  body("verify-repair-stop", R"({"command":"verify","resources":["all"],"repair":true,"stop":true})");
  body("resources-not-array", R"({"command":"status","resources":"r0"})");
  body("resources-numbers", R"({"command":"status","resources":[1,2]})");
  body("unknown-command", R"({"command":"stätus"})");
  body("name-invalid-utf8", "{\"command\":\"role\",\"role\":\"init\",\"resources\":[\"r\xff\xfe\"]}");
  body("role-invalid-utf8", "{\"command\":\"role\",\"role\":\"pr\xc3\x28\",\"resources\":[\"r0\"]}");
  body("events", R"({"command":"events","resources":["all"]})");
  body("not-json", "{\"command\":");
}

// --- Metadata and activemap ----------------------------------------------------------------

// A provider image of `mediasize` bytes as create_metadata and one
// write_metadata leave it (sequence 0 in slot A rewritten as 2, 1 in B).
bytes provider_image(uint64_t mediasize, uint32_t extent_size, std::vector<uint8_t> dirty) {
  const auto l = compute_layout(mediasize, extent_size);
  if (!l)
    std::abort();
  metadata md;
  md.resource = "r0";
  md.datasize = l->datasize;
  md.extent_size = extent_size;
  md.keepdirty = 64;
  md.data_offset = l->data_offset;
  md.resuid = 0xfeedface;
  md.localcnt = 4;
  md.remotecnt = 3;
  md.prevrole = role::primary;
  md.bitmap.assign(l->bitmap_bytes, 0);
  for (std::size_t i = 0; i < dirty.size() && i < md.bitmap.size(); ++i)
    md.bitmap[i] = dirty[i];
  bytes image(mediasize, 0);
  md.sequence = 2;
  const auto a = encode_slot(md);
  std::memcpy(image.data(), a.data(), a.size());
  md.sequence = 1;
  md.bitmap.assign(l->bitmap_bytes, 0);
  const auto b = encode_slot(md);
  std::memcpy(image.data() + l->slot_size, b.data(), b.size());
  return image;
}

void metadata_images() {
  const auto image = provider_image(24576, 4096, {0x03});
  write("metadata", "two-slots", image);
  auto torn = image;
  torn[100] ^= 0xff; // slot A fails its checksum: slot B is taken
  write("metadata", "slot-a-torn", torn);
  write("metadata", "slot-a-only", std::span<const uint8_t>(image.data(), metadata_header_size));
  // Slot A's bitmap_bytes (header offset 204) set to 4 GiB - 1.
  auto huge_bitmap = image;
  for (std::size_t i = 204; i < 208; ++i)
    huge_bitmap[i] = 0xff;
  write("metadata", "bitmap-4gib", huge_bitmap);
  write("metadata", "empty", bytes{});
}

void activemap_inputs() {
  // 256 blocks, 4 KiB extents, keepdirty 4, a 5-byte bitmap (one longer than
  // the map), then a few operations.
  bytes in;
  put_le<uint32_t>(in, 256);
  in.push_back(0);
  in.push_back(4);
  put_le<uint16_t>(in, 5);
  put(in, bytes{0x81, 0x00, 0x10, 0xff, 0xff});
  auto op = [&](uint8_t kind, uint32_t offset, uint32_t length) {
    in.push_back(kind);
    put_le<uint32_t>(in, offset);
    put_le<uint32_t>(in, length);
  };
  op(0, 0, 16);       // write_start
  op(4, 0, 0);        // begin_commit
  op(5, 0, 512);      // end_commit ok
  op(8, 64, 100);     // write, commit, durable, complete
  op(1, 0, 16);       // write_complete
  op(3, 0, 0);        // clear first to sync
  op(2, 1000, 2000);  // mark_sync
  op(6, 0, 0);        // forget keepdirty
  op(7, 0, 0);        // merge again
  write("activemap", "ops", in);

  bytes odd;
  put_le<uint32_t>(odd, 13); // 13 blocks with 32 KiB extents: a partial last extent
  odd.push_back(3);
  odd.push_back(0);
  put_le<uint16_t>(odd, 1);
  odd.push_back(0xff);
  write("activemap", "partial-extent", odd);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  root = argv[1];
  nbd_options();
  nbd_requests();
  peer_frames();
  frame_reader_inputs();
  control_requests();
  control_handler_inputs();
  metadata_images();
  activemap_inputs();
  return 0;
}
