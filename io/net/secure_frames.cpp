#include "io/net/secure_frames.hpp"

#include "io/codec/checksum.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

namespace hast::peer {

namespace {

constexpr uint32_t session_version = 2;
constexpr std::string_view schedule_label = "hast/2 session";

status refused(std::string why) {
  return {errc::protocol_error, std::move(why)};
}

std::string hex(std::span<const uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

bool unhex(const std::string& text, std::array<uint8_t, 32>& out) {
  if (text.size() != out.size() * 2)
    return false;
  auto value = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = value(text[2 * i]), lo = value(text[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

bool cipher_named(const std::string& name, aead_cipher& out) {
  if (name == "aes-256-gcm")
    out = aead_cipher::aes_256_gcm;
  else if (name == "chacha20-poly1305")
    out = aead_cipher::chacha20_poly1305;
  else
    return false;
  return true;
}

const EVP_CIPHER* evp_cipher(aead_cipher c) {
  return c == aead_cipher::chacha20_poly1305 ? EVP_chacha20_poly1305() : EVP_aes_256_gcm();
}

buffer_ptr to_buffer(std::span<const uint8_t> bytes) {
  auto out = make_buffer(bytes.size());
  if (!bytes.empty())
    std::memcpy(out->data(), bytes.data(), bytes.size());
  return out;
}

std::span<const uint8_t> view(const buffer_ptr& b) {
  return b ? std::span<const uint8_t>(b->data(), b->size()) : std::span<const uint8_t>{};
}

nlohmann::json parse_object(std::span<const uint8_t> bytes) {
  const auto* text = reinterpret_cast<const char*>(bytes.data());
  return nlohmann::json::parse(text, text + bytes.size(), nullptr, false);
}

} // namespace

std::string_view to_string(aead_cipher c) {
  return c == aead_cipher::chacha20_poly1305 ? "chacha20-poly1305" : "aes-256-gcm";
}

aead_cipher preferred_cipher() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul"))
    return aead_cipher::aes_256_gcm;
  return aead_cipher::chacha20_poly1305;
#elif defined(__aarch64__)
  const auto caps = getauxval(AT_HWCAP);
  // HWCAP_AES (1 << 3) and HWCAP_PMULL (1 << 4).
  if ((caps & (1ul << 3)) != 0 && (caps & (1ul << 4)) != 0)
    return aead_cipher::aes_256_gcm;
  return aead_cipher::chacha20_poly1305;
#else
  return aead_cipher::chacha20_poly1305;
#endif
}

// --- Handshake messages ----------------------------------------------------------------------

buffer_ptr encode_session_open(const session_open_message& m) {
  nlohmann::json ciphers = nlohmann::json::array();
  for (auto c : m.ciphers)
    ciphers.push_back(std::string(to_string(c)));
  const nlohmann::json j = {{"version", m.version},   {"resource", m.resource},
                            {"node", m.node},         {"link", m.link},
                            {"nonce", hex(m.nonce)},  {"ciphers", ciphers},
                            {"encrypt", m.encrypt}};
  const std::string text = j.dump();
  return to_buffer({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

result<session_open_message> decode_session_open(const buffer_ptr& payload) {
  const auto bytes = view(payload);
  if (bytes.size() > unauthenticated_frame_limit)
    return refused(fmt::format("session_open of {} bytes exceeds the limit of {}", bytes.size(),
                               unauthenticated_frame_limit));
  const auto j = parse_object(bytes);
  if (j.is_discarded() || !j.is_object())
    return refused("session_open carries malformed JSON");
  session_open_message m;
  try {
    m.version = j.at("version").get<uint32_t>();
    m.resource = j.at("resource").get<std::string>();
    m.node = j.at("node").get<std::string>();
    m.link = j.at("link").get<std::string>();
    m.encrypt = j.at("encrypt").get<bool>();
    if (!unhex(j.at("nonce").get<std::string>(), m.nonce))
      return refused("session_open: the nonce is not 64 hex digits");
    for (const auto& c : j.at("ciphers")) {
      aead_cipher cipher{};
      if (cipher_named(c.get<std::string>(), cipher))
        m.ciphers.push_back(cipher);
    }
  } catch (const nlohmann::json::exception& e) {
    return refused(fmt::format("session_open: {}", e.what()));
  }
  if (m.link != "peer" && m.link != "witness")
    return refused("session_open: unknown link kind '" + m.link + "'");
  return m;
}

std::vector<uint8_t> encode_session_accept_body(const session_accept_message& m) {
  const nlohmann::json j = {{"nonce", hex(m.nonce)},
                            {"cipher", std::string(to_string(m.cipher))},
                            {"encrypt", m.encrypt}};
  const std::string text = j.dump();
  return {text.begin(), text.end()};
}

result<session_accept_message> decode_session_accept_body(std::span<const uint8_t> body) {
  const auto j = parse_object(body);
  if (j.is_discarded() || !j.is_object())
    return refused("session_accept carries malformed JSON");
  session_accept_message m;
  try {
    if (!unhex(j.at("nonce").get<std::string>(), m.nonce))
      return refused("session_accept: the nonce is not 64 hex digits");
    if (!cipher_named(j.at("cipher").get<std::string>(), m.cipher))
      return refused("session_accept: unknown cipher");
    m.encrypt = j.at("encrypt").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    return refused(fmt::format("session_accept: {}", e.what()));
  }
  return m;
}

std::array<uint8_t, 32> transcript_hash(std::span<const uint8_t> open_payload,
                                        std::span<const uint8_t> accept_body) {
  std::vector<uint8_t> all;
  all.reserve(8 + open_payload.size() + accept_body.size());
  auto put = [&](std::span<const uint8_t> part) {
    const auto n = static_cast<uint32_t>(part.size());
    for (int i = 0; i < 4; ++i)
      all.push_back(static_cast<uint8_t>(n >> (8 * i)));
    all.insert(all.end(), part.begin(), part.end());
  };
  put(open_payload);
  put(accept_body);
  return sha256(all.data(), all.size());
}

// --- Key schedule --------------------------------------------------------------------------------

void hkdf_sha256(std::span<const uint8_t> key, std::span<const uint8_t> salt,
                 std::span<const uint8_t> info, std::span<uint8_t> out) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
    EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr), &EVP_PKEY_CTX_free);
  std::size_t length = out.size();
  // OpenSSL wants non-null pointers even for empty inputs.
  static const uint8_t empty = 0;
  auto ptr = [](std::span<const uint8_t> s) { return s.empty() ? &empty : s.data(); };
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0
      || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) <= 0
      || EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), ptr(salt), static_cast<int>(salt.size())) <= 0
      || EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), ptr(key), static_cast<int>(key.size())) <= 0
      || EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), ptr(info), static_cast<int>(info.size())) <= 0
      || EVP_PKEY_derive(ctx.get(), out.data(), &length) <= 0 || length != out.size())
    throw std::runtime_error("OpenSSL HKDF-SHA256 failed");
}

session_keys derive_session_keys(std::span<const uint8_t> key,
                                 const std::array<uint8_t, 32>& client_nonce,
                                 const std::array<uint8_t, 32>& server_nonce,
                                 const std::array<uint8_t, 32>& transcript) {
  std::array<uint8_t, 64> salt{};
  std::memcpy(salt.data(), client_nonce.data(), 32);
  std::memcpy(salt.data() + 32, server_nonce.data(), 32);
  std::vector<uint8_t> info(schedule_label.begin(), schedule_label.end());
  info.insert(info.end(), transcript.begin(), transcript.end());
  std::array<uint8_t, 128> okm{};
  hkdf_sha256(key, salt, info, okm);
  session_keys k;
  std::memcpy(k.client_to_server.data(), okm.data(), 32);
  std::memcpy(k.server_to_client.data(), okm.data() + 32, 32);
  std::memcpy(k.client_confirm.data(), okm.data() + 64, 32);
  std::memcpy(k.server_confirm.data(), okm.data() + 96, 32);
  return k;
}

std::array<uint8_t, 32> proof(const std::array<uint8_t, 32>& confirm_key, std::string_view label,
                              const std::array<uint8_t, 32>& transcript) {
  std::vector<uint8_t> data(label.begin(), label.end());
  data.insert(data.end(), transcript.begin(), transcript.end());
  return hmac_sha256(confirm_key, data);
}

// --- Frame AEAD --------------------------------------------------------------------------------

frame_cipher::frame_cipher(direction dir, aead_cipher cipher, bool encrypt,
                           std::span<const uint8_t, 32> key)
    : dir_(dir), encrypt_(encrypt) {
  auto* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr)
    throw std::bad_alloc();
  ctx_ = ctx;
  const int ok = dir == direction::seal
                   ? EVP_EncryptInit_ex(ctx, evp_cipher(cipher), nullptr, key.data(), nullptr)
                   : EVP_DecryptInit_ex(ctx, evp_cipher(cipher), nullptr, key.data(), nullptr);
  if (ok != 1) {
    EVP_CIPHER_CTX_free(ctx);
    ctx_ = nullptr;
    throw std::runtime_error("OpenSSL cannot set up " + std::string(to_string(cipher)));
  }
}

frame_cipher::~frame_cipher() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
}

bool frame_cipher::run(std::span<const uint8_t> head, const uint8_t* in, uint8_t* out,
                       std::size_t n, uint8_t* tag) {
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  if (seq_ == std::numeric_limits<uint64_t>::max() || n > static_cast<std::size_t>(INT32_MAX))
    return false;
  std::array<uint8_t, 12> iv{};
  for (int i = 0; i < 8; ++i)
    iv[4 + i] = static_cast<uint8_t>(seq_ >> (8 * i));
  const bool sealing = dir_ == direction::seal;
  auto init = sealing ? EVP_EncryptInit_ex : EVP_DecryptInit_ex;
  auto update = sealing ? EVP_EncryptUpdate : EVP_DecryptUpdate;
  int len = 0;
  if (init(ctx, nullptr, nullptr, nullptr, iv.data()) != 1)
    return false;
  if (update(ctx, nullptr, &len, head.data(), static_cast<int>(head.size())) != 1)
    return false;
  if (n > 0) {
    const int ok = encrypt_ ? update(ctx, out, &len, in, static_cast<int>(n))
                            : update(ctx, nullptr, &len, in, static_cast<int>(n));
    if (ok != 1)
      return false;
  }
  if (!sealing
      && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(tag_size), tag) != 1)
    return false;
  uint8_t rest[32];
  const int final_ok = sealing ? EVP_EncryptFinal_ex(ctx, rest, &len) : EVP_DecryptFinal_ex(ctx, rest, &len);
  if (final_ok != 1)
    return false;
  if (sealing
      && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(tag_size), tag) != 1)
    return false;
  ++seq_;
  return true;
}

bool frame_cipher::seal(std::span<const uint8_t> head, const uint8_t* in, uint8_t* out,
                        std::size_t n, std::span<uint8_t, tag_size> tag) {
  return dir_ == direction::seal && run(head, in, out, n, tag.data());
}

bool frame_cipher::open(std::span<const uint8_t> head, const uint8_t* in, uint8_t* out,
                        std::size_t n, std::span<const uint8_t, tag_size> tag) {
  std::array<uint8_t, tag_size> copy{};
  std::memcpy(copy.data(), tag.data(), tag_size);
  return dir_ == direction::open && run(head, in, out, n, copy.data());
}

// --- Handshake state -------------------------------------------------------------------------------

client_handshake::client_handshake(session_params params)
    : params_(std::move(params)), nonce_(random_nonce()) {
  session_open_message m;
  m.version = session_version;
  m.resource = params_.resource;
  m.node = params_.node;
  m.link = params_.link;
  m.nonce = nonce_;
  m.encrypt = params_.encrypt;
  m.ciphers = {params_.cipher, params_.cipher == aead_cipher::aes_256_gcm
                                 ? aead_cipher::chacha20_poly1305
                                 : aead_cipher::aes_256_gcm};
  open_ = encode_session_open(m);
}

result<buffer_ptr> client_handshake::on_accept(const buffer_ptr& accept, session_ciphers& out) {
  const auto bytes = view(accept);
  if (bytes.size() <= 32)
    return refused("session_accept is too short");
  const auto body = bytes.first(bytes.size() - 32);
  auto m = decode_session_accept_body(body);
  if (!m)
    return m.error();
  const auto th = transcript_hash(view(open_), body);
  const auto keys = derive_session_keys(params_.key, nonce_, m->nonce, th);
  const auto expected = proof(keys.server_confirm, "server", th);
  if (!constant_time_equal(expected, bytes.last(32)))
    return refused("authentication failed: the other side does not know the shared key "
                   "(or the handshake was altered on the way)");
  // A server may raise protection (encrypt when we asked for integrity
  // only), never lower it; the transcript already binds what it chose.
  if (params_.encrypt && !m->encrypt)
    return refused("the other side turned encryption off although this side wants it");
  out.cipher = m->cipher;
  out.encrypt = m->encrypt;
  out.sealer = std::make_unique<frame_cipher>(frame_cipher::direction::seal, m->cipher, m->encrypt,
                                              keys.client_to_server);
  out.opener = std::make_unique<frame_cipher>(frame_cipher::direction::open, m->cipher, m->encrypt,
                                              keys.server_to_client);
  const auto mine = proof(keys.client_confirm, "client", th);
  return to_buffer(mine);
}

server_handshake::server_handshake(session_params params, buffer_ptr open)
    : params_(std::move(params)), open_(std::move(open)) {}

result<buffer_ptr> server_handshake::accept_payload() {
  auto m = decode_session_open(open_);
  if (!m)
    return m.error();
  theirs_ = std::move(*m);
  if (theirs_.version != session_version)
    return refused(fmt::format("session version {} is not spoken here (we speak {})",
                               theirs_.version, session_version));
  if (theirs_.resource != params_.resource || theirs_.link != params_.link)
    return refused("session_open names another resource or link");
  if (params_.key.empty())
    return refused("no shared key here");
  // Our preference first, among what the client offers.
  const aead_cipher order[] = {params_.cipher, params_.cipher == aead_cipher::aes_256_gcm
                                                 ? aead_cipher::chacha20_poly1305
                                                 : aead_cipher::aes_256_gcm};
  bool found = false;
  for (auto c : order)
    if (!found && std::find(theirs_.ciphers.begin(), theirs_.ciphers.end(), c) != theirs_.ciphers.end()) {
      cipher_ = c;
      found = true;
    }
  if (!found)
    return refused("session_open offers no cipher spoken here");
  encrypt_ = params_.encrypt || theirs_.encrypt;
  session_accept_message mine;
  mine.nonce = random_nonce();
  mine.cipher = cipher_;
  mine.encrypt = encrypt_;
  const auto body = encode_session_accept_body(mine);
  transcript_ = transcript_hash(view(open_), body);
  keys_ = derive_session_keys(params_.key, theirs_.nonce, mine.nonce, transcript_);
  const auto p = proof(keys_.server_confirm, "server", transcript_);
  auto out = make_buffer(body.size() + p.size());
  std::memcpy(out->data(), body.data(), body.size());
  std::memcpy(out->data() + body.size(), p.data(), p.size());
  accepted_ = true;
  return out;
}

status server_handshake::on_proof(const buffer_ptr& proof_payload, session_ciphers& out) {
  if (!accepted_)
    return refused("session_proof before session_accept");
  const auto expected = proof(keys_.client_confirm, "client", transcript_);
  if (!constant_time_equal(expected, view(proof_payload)))
    return refused("authentication failed: the other side does not know the shared key "
                   "(or the handshake was altered on the way)");
  out.cipher = cipher_;
  out.encrypt = encrypt_;
  out.sealer = std::make_unique<frame_cipher>(frame_cipher::direction::seal, cipher_, encrypt_,
                                              keys_.server_to_client);
  out.opener = std::make_unique<frame_cipher>(frame_cipher::direction::open, cipher_, encrypt_,
                                              keys_.client_to_server);
  return status::ok();
}

} // namespace hast::peer
