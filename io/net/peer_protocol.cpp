#include "io/net/peer_protocol.hpp"

#include "io/codec/checksum.hpp"
#include "io/codec/compression.hpp"
#include "io/codec/crc32c.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <limits>

namespace hast::peer {

namespace {

// Field offsets of the wire header; header_crc covers [0, crc_offset).
constexpr std::size_t magic_offset = 0;
constexpr std::size_t version_offset = 4;
constexpr std::size_t type_offset = 5;
constexpr std::size_t flags_offset = 6;
constexpr std::size_t seq_offset = 8;
constexpr std::size_t offset_offset = 16;
constexpr std::size_t length_offset = 24;
constexpr std::size_t payload_length_offset = 32;
constexpr std::size_t error_offset = 36;
constexpr std::size_t checksum_offset = 40;
constexpr std::size_t compression_offset = 41;
constexpr std::size_t reserved_offset = 42;
constexpr std::size_t digest_offset = 44;
constexpr std::size_t crc_offset = 76;
static_assert(crc_offset + 4 == header_size);

template <class T>
void put_le(uint8_t* out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    out[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

template <class T>
T get_le(const uint8_t* in) {
  uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return static_cast<T>(v);
}

bool known_type(uint8_t t) {
  switch (static_cast<msg_type>(t)) {
    case msg_type::hello:
    case msg_type::hello_reply:
    case msg_type::session_open:
    case msg_type::session_accept:
    case msg_type::session_proof:
    case msg_type::write:
    case msg_type::trim:
    case msg_type::write_zeroes:
    case msg_type::flush:
    case msg_type::read:
    case msg_type::keepalive:
    case msg_type::received:
    case msg_type::done:
    case msg_type::read_reply:
    case msg_type::sync_done:
    case msg_type::verify:
    case msg_type::verify_reply:
    case msg_type::grow:
    case msg_type::grow_reply:
    case msg_type::goodbye:
    case msg_type::witness_hello:
    case msg_type::lease_request:
    case msg_type::lease_reply:
      return true;
  }
  return false;
}

status refused(std::string why) {
  return {errc::protocol_error, std::move(why)};
}

const uint8_t* bytes_of(const buffer_ptr& b) {
  static const uint8_t nothing = 0;
  return b && b->size() > 0 ? b->data() : &nothing;
}

std::size_t size_of(const buffer_ptr& b) {
  return b ? b->size() : 0;
}

} // namespace

// --- Header -------------------------------------------------------------------------

std::array<uint8_t, header_size> encode_header(const header& h) {
  std::array<uint8_t, header_size> out{};
  uint8_t* p = out.data();
  put_le<uint32_t>(p + magic_offset, magic);
  p[version_offset] = protocol_version;
  p[type_offset] = static_cast<uint8_t>(h.type);
  put_le<uint16_t>(p + flags_offset, h.flags);
  put_le<uint64_t>(p + seq_offset, h.seq);
  put_le<uint64_t>(p + offset_offset, h.offset);
  put_le<uint64_t>(p + length_offset, h.length);
  put_le<uint32_t>(p + payload_length_offset, h.payload_length);
  put_le<uint32_t>(p + error_offset, h.error);
  p[checksum_offset] = static_cast<uint8_t>(h.checksum);
  p[compression_offset] = static_cast<uint8_t>(h.compression);
  put_le<uint16_t>(p + reserved_offset, 0);
  std::memcpy(p + digest_offset, h.digest.data(), h.digest.size());
  put_le<uint32_t>(p + crc_offset, crc32c(p, crc_offset));
  return out;
}

result<header> decode_header(std::span<const uint8_t, header_size> bytes) {
  const uint8_t* p = bytes.data();
  // Magic and version first: a peer of another version may lay out the
  // rest differently, and "version 2, we speak 1" is the useful message.
  if (const auto m = get_le<uint32_t>(p + magic_offset); m != magic)
    return refused(fmt::format("bad frame magic {:#010x} (expected {:#010x}): not a hast peer", m,
                               magic));
  if (p[version_offset] != protocol_version)
    return refused(fmt::format("protocol version {} is not supported (this node speaks {})",
                               p[version_offset], protocol_version));
  if (const auto want = get_le<uint32_t>(p + crc_offset), got = crc32c(p, crc_offset); want != got)
    return refused(fmt::format("bad header checksum {:#010x} (computed {:#010x})", want, got));
  if (!known_type(p[type_offset]))
    return refused(fmt::format("unknown message type {}", p[type_offset]));
  header h;
  h.type = static_cast<msg_type>(p[type_offset]);
  h.flags = get_le<uint16_t>(p + flags_offset);
  h.seq = get_le<uint64_t>(p + seq_offset);
  h.offset = get_le<uint64_t>(p + offset_offset);
  h.length = get_le<uint64_t>(p + length_offset);
  h.payload_length = get_le<uint32_t>(p + payload_length_offset);
  h.error = get_le<uint32_t>(p + error_offset);
  if (h.payload_length > max_wire_payload)
    return refused(fmt::format("{} payload of {} bytes exceeds the limit of {}", to_string(h.type),
                               h.payload_length, max_wire_payload));
  if (p[checksum_offset] > static_cast<uint8_t>(checksum_kind::sha256))
    return refused(fmt::format("unknown checksum kind {}", p[checksum_offset]));
  if (p[compression_offset] > static_cast<uint8_t>(compression_kind::lz4))
    return refused(fmt::format("unknown compression kind {}", p[compression_offset]));
  if (const auto r = get_le<uint16_t>(p + reserved_offset); r != 0)
    return refused(fmt::format("reserved header bytes are {:#06x}, not zero", r));
  h.checksum = static_cast<checksum_kind>(p[checksum_offset]);
  h.compression = static_cast<compression_kind>(p[compression_offset]);
  std::memcpy(h.digest.data(), p + digest_offset, h.digest.size());
  return h;
}

// --- Payload pipeline ------------------------------------------------------------------

status seal_payload(header& h, buffer_ptr& data, compression_kind wanted, checksum_kind checksum) {
  const std::size_t n = size_of(data);
  if (n > max_payload)
    return {errc::invalid_argument,
            fmt::format("{} of {} bytes exceeds the frame limit of {}", to_string(h.type), n,
                        max_payload)};
  h.length = n;
  h.compression = compression_kind::none;
  if (n > 0 && wanted != compression_kind::none) {
    // lzf is accepted for hast.conf compatibility and sent as lz4: both
    // sides are ours, and lz4 is faster at a similar ratio.
    const bool lz4 = wanted == compression_kind::lz4 || wanted == compression_kind::lzf;
    if (all_zero(data->data(), n)) {
      data = nullptr;
      h.compression = compression_kind::hole;
    } else if (lz4) {
      if (auto packed = lz4_compress(data->data(), n)) {
        data = std::move(*packed);
        h.compression = compression_kind::lz4;
      }
    }
  }
  if (data && data->size() == 0)
    data = nullptr;
  h.payload_length = static_cast<uint32_t>(size_of(data));
  h.checksum = checksum;
  compute_digest(checksum, bytes_of(data), size_of(data), h.digest);
  return status::ok();
}

result<buffer_ptr> open_payload(const header& h, buffer_ptr wire) {
  const std::size_t n = size_of(wire);
  if (n != h.payload_length)
    return refused(fmt::format("{} seq {}: {} payload bytes, the header says {}", to_string(h.type),
                               h.seq, n, h.payload_length));
  if (h.checksum != checksum_kind::none) {
    std::array<uint8_t, 32> digest{};
    compute_digest(h.checksum, bytes_of(wire), n, digest);
    if (!constant_time_equal(digest, h.digest))
      return refused(fmt::format("{} seq {} offset {}: payload checksum mismatch ({})",
                                 to_string(h.type), h.seq, h.offset, hast::to_string(h.checksum)));
  }
  if (h.length > max_payload)
    return refused(fmt::format("{} seq {}: data length {} exceeds the limit of {}",
                               to_string(h.type), h.seq, h.length, max_payload));
  switch (h.compression) {
    case compression_kind::none:
      if (h.length != n)
        return refused(fmt::format("{} seq {}: uncompressed payload of {} bytes, length says {}",
                                   to_string(h.type), h.seq, n, h.length));
      return wire ? wire : make_buffer(0);
    case compression_kind::hole: {
      if (n != 0)
        return refused(fmt::format("{} seq {}: hole carries {} payload bytes", to_string(h.type),
                                   h.seq, n));
      auto zeros = make_buffer(h.length);
      std::memset(zeros->data(), 0, zeros->size());
      return zeros;
    }
    case compression_kind::lzf:
    case compression_kind::lz4: {
      auto data = lz4_decompress(bytes_of(wire), n, h.length);
      if (!data)
        return refused(fmt::format("{} seq {}: {}", to_string(h.type), h.seq,
                                   data.error().detail()));
      return std::move(*data);
    }
  }
  return refused("unknown compression");
}

// --- Handshake payloads ------------------------------------------------------------------

buffer_ptr encode_hello(const hello_message& m) {
  const nlohmann::json j = {
    {"version", m.version},         {"resource", m.resource},   {"node", m.node},
    {"role", m.role},               {"datasize", m.datasize},   {"extent_size", m.extent_size},
    {"resuid", m.resuid},           {"localcnt", m.localcnt},   {"remotecnt", m.remotecnt},
    {"virgin", m.virgin},           {"refusal", m.refusal},     {"sync_source", m.sync_source},
  };
  const std::string text = j.dump();
  auto out = make_buffer(4 + text.size() + m.bitmap.size());
  put_le<uint32_t>(out->data(), static_cast<uint32_t>(text.size()));
  std::memcpy(out->data() + 4, text.data(), text.size());
  if (!m.bitmap.empty())
    std::memcpy(out->data() + 4 + text.size(), m.bitmap.data(), m.bitmap.size());
  return out;
}

namespace {

/// Reads `key` into `out` if present; false (with `why`) if of the wrong type.
template <class T>
bool read_field(const nlohmann::json& j, const char* key, T& out, bool required, std::string& why) {
  const auto it = j.find(key);
  if (it == j.end()) {
    if (required)
      why = fmt::format("hello lacks \"{}\"", key);
    return !required;
  }
  bool ok = false;
  if constexpr (std::is_same_v<T, bool>) {
    ok = it->is_boolean();
  } else if constexpr (std::is_same_v<T, std::string>) {
    ok = it->is_string();
  } else {
    ok = it->is_number_unsigned() &&
         it->template get<uint64_t>() <= std::numeric_limits<T>::max();
  }
  if (!ok) {
    why = fmt::format("hello field \"{}\" has a wrong type or range: {}", key, it->dump());
    return false;
  }
  out = it->template get<T>();
  return true;
}

} // namespace

result<hello_message> decode_hello(const buffer_ptr& payload) {
  const std::size_t n = size_of(payload);
  if (n < 4)
    return refused(fmt::format("hello payload of {} bytes is too short", n));
  const auto json_length = get_le<uint32_t>(payload->data());
  if (json_length > n - 4)
    return refused(fmt::format("hello JSON of {} bytes runs past the {}-byte payload", json_length, n));
  const auto* text = reinterpret_cast<const char*>(payload->data() + 4);
  const auto j = nlohmann::json::parse(text, text + json_length, nullptr, false);
  if (j.is_discarded())
    return refused("hello carries malformed JSON");
  if (!j.is_object())
    return refused("hello JSON is not an object");
  hello_message m;
  std::string why;
  const bool ok = read_field(j, "version", m.version, true, why) &&
                  read_field(j, "resource", m.resource, true, why) &&
                  read_field(j, "node", m.node, true, why) &&
                  read_field(j, "role", m.role, true, why) &&
                  read_field(j, "datasize", m.datasize, false, why) &&
                  read_field(j, "extent_size", m.extent_size, false, why) &&
                  read_field(j, "resuid", m.resuid, false, why) &&
                  read_field(j, "localcnt", m.localcnt, false, why) &&
                  read_field(j, "remotecnt", m.remotecnt, false, why) &&
                  read_field(j, "virgin", m.virgin, false, why) &&
                  read_field(j, "refusal", m.refusal, false, why) &&
                  read_field(j, "sync_source", m.sync_source, false, why);
  if (!ok)
    return refused(why);
  const uint8_t* bitmap = payload->data() + 4 + json_length;
  m.bitmap.assign(bitmap, static_cast<const uint8_t*>(payload->data()) + n);
  return m;
}

namespace {

buffer_ptr json_payload(const nlohmann::json& j) {
  const std::string text = j.dump();
  auto out = make_buffer(text.size());
  std::memcpy(out->data(), text.data(), text.size());
  return out;
}

result<nlohmann::json> json_object(const buffer_ptr& payload, const char* what) {
  const auto* text = reinterpret_cast<const char*>(payload ? payload->data() : nullptr);
  const auto j = nlohmann::json::parse(text, text + size_of(payload), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return refused(fmt::format("{} carries malformed JSON", what));
  return j;
}

} // namespace

buffer_ptr encode_lease_request(const lease_request& m) {
  return json_payload({{"kind", m.kind},           {"node", m.node},
                       {"epoch", m.epoch},         {"resuid", m.resuid},
                       {"localcnt", m.localcnt},   {"remotecnt", m.remotecnt},
                       {"in_sync", m.in_sync},     {"manual", m.manual}});
}

result<lease_request> decode_lease_request(const buffer_ptr& payload) {
  auto j = json_object(payload, "lease_request");
  if (!j)
    return j.error();
  lease_request m;
  std::string why;
  const bool ok = read_field(*j, "kind", m.kind, true, why) && read_field(*j, "node", m.node, true, why)
                  && read_field(*j, "epoch", m.epoch, false, why)
                  && read_field(*j, "resuid", m.resuid, false, why)
                  && read_field(*j, "localcnt", m.localcnt, false, why)
                  && read_field(*j, "remotecnt", m.remotecnt, false, why)
                  && read_field(*j, "in_sync", m.in_sync, false, why)
                  && read_field(*j, "manual", m.manual, false, why);
  if (!ok)
    return refused(why);
  if (m.kind != "renew" && m.kind != "claim" && m.kind != "release")
    return refused("lease_request of unknown kind '" + m.kind + "'");
  return m;
}

buffer_ptr encode_lease_reply(const lease_reply& m) {
  return json_payload({{"granted", m.granted}, {"epoch", m.epoch},   {"holder", m.holder},
                       {"lease_ms", m.lease_ms}, {"reason", m.reason}});
}

result<lease_reply> decode_lease_reply(const buffer_ptr& payload) {
  auto j = json_object(payload, "lease_reply");
  if (!j)
    return j.error();
  lease_reply m;
  std::string why;
  const bool ok = read_field(*j, "granted", m.granted, true, why)
                  && read_field(*j, "epoch", m.epoch, false, why)
                  && read_field(*j, "holder", m.holder, false, why)
                  && read_field(*j, "lease_ms", m.lease_ms, false, why)
                  && read_field(*j, "reason", m.reason, false, why);
  if (!ok)
    return refused(why);
  return m;
}

buffer_ptr encode_nonce(const std::array<uint8_t, 32>& nonce) {
  auto out = make_buffer(nonce.size());
  std::memcpy(out->data(), nonce.data(), nonce.size());
  return out;
}

result<std::array<uint8_t, 32>> decode_nonce(const buffer_ptr& payload) {
  std::array<uint8_t, 32> out{};
  if (size_of(payload) != out.size())
    return refused(fmt::format("authentication payload of {} bytes (expected {})", size_of(payload),
                               out.size()));
  std::memcpy(out.data(), payload->data(), out.size());
  return out;
}

// --- Logging -----------------------------------------------------------------------------

std::string_view to_string(msg_type type) {
  switch (type) {
    case msg_type::hello: return "hello";
    case msg_type::hello_reply: return "hello_reply";
    case msg_type::session_open: return "session_open";
    case msg_type::session_accept: return "session_accept";
    case msg_type::session_proof: return "session_proof";
    case msg_type::write: return "write";
    case msg_type::trim: return "trim";
    case msg_type::write_zeroes: return "write_zeroes";
    case msg_type::flush: return "flush";
    case msg_type::read: return "read";
    case msg_type::keepalive: return "keepalive";
    case msg_type::received: return "received";
    case msg_type::done: return "done";
    case msg_type::read_reply: return "read_reply";
    case msg_type::sync_done: return "sync_done";
    case msg_type::verify: return "verify";
    case msg_type::verify_reply: return "verify_reply";
    case msg_type::grow: return "grow";
    case msg_type::grow_reply: return "grow_reply";
    case msg_type::goodbye: return "goodbye";
    case msg_type::witness_hello: return "witness_hello";
    case msg_type::lease_request: return "lease_request";
    case msg_type::lease_reply: return "lease_reply";
  }
  return "unknown";
}

std::string describe(const header& h) {
  std::string out = fmt::format("{} seq={} offset={} length={} payload={}", to_string(h.type), h.seq,
                                h.offset, h.length, h.payload_length);
  if (h.compression != compression_kind::none)
    out += fmt::format(" {}", hast::to_string(h.compression));
  if (h.checksum != checksum_kind::none)
    out += fmt::format(" {}", hast::to_string(h.checksum));
  static constexpr std::pair<uint16_t, const char*> names[] = {
    {flag_memsync, "memsync"}, {flag_fua, "fua"}, {flag_sync, "sync"}, {flag_may_trim, "may_trim"},
    {flag_digest, "digest"}};
  for (const auto& [bit, name] : names)
    if ((h.flags & bit) != 0)
      out += fmt::format(" {}", name);
  if (const uint16_t unknown = h.flags
                                 & ~(flag_memsync | flag_fua | flag_sync | flag_may_trim | flag_digest))
    out += fmt::format(" flags={:#x}", unknown);
  if (h.error != 0) {
    const auto code = static_cast<errc>(h.error);
    out += h.error <= static_cast<uint32_t>(errc::shutting_down)
             ? fmt::format(" error={} ({})", h.error, hast::describe(code))
             : fmt::format(" error={}", h.error);
  }
  return out;
}

} // namespace hast::peer
