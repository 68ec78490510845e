#pragma once

// The session layer of the peer and witness links, as pure byte-level code
// (docs/PROTOCOL.md, "Session"): the three handshake messages that prove the
// shared key in both directions (session_open, session_accept,
// session_proof), the key schedule that turns the key, the two nonces and
// the handshake transcript into per-direction session keys (HKDF-SHA256),
// and the AEAD that seals every later frame (AES-256-GCM or
// ChaCha20-Poly1305, the header as associated data, a per-direction 64-bit
// sequence number as nonce). io/net/peer_transport.cpp runs the handshake and
// seals/opens frames with this; nothing here touches a socket.

#include "io/codec/buffer.hpp"
#include "base/errc.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace hast::peer {

/// Bytes of the authentication tag that ends every sealed frame's payload.
inline constexpr std::size_t tag_size = 16;
/// Largest payload of any frame read before the other side proved the key
/// (session_open, session_accept, session_proof; without a `secret`, the
/// hello): the listener reads no more from a stranger than this.
inline constexpr uint32_t unauthenticated_frame_limit = 4096;

enum class aead_cipher : uint8_t {
  aes_256_gcm = 1,
  chacha20_poly1305 = 2,
};

/// "aes-256-gcm", "chacha20-poly1305".
std::string_view to_string(aead_cipher c);
/// This machine's choice: AES-256-GCM where the CPU has AES and carry-less
/// multiplication instructions (x86 AES-NI + PCLMUL, ARMv8 AES + PMULL),
/// ChaCha20-Poly1305 elsewhere (faster without them, constant-time in software).
aead_cipher preferred_cipher();

/// What one side brings to a session.
struct session_params {
  std::vector<uint8_t> key;  // the shared secret (the `secret` key file's bytes)
  std::string resource;
  std::string node;
  std::string link;          // "peer" or "witness"
  bool encrypt = true;       // false: integrity only (`encryption off`)
  aead_cipher cipher = preferred_cipher();
};

/// The client's first message (session_open's payload), decoded.
struct session_open_message {
  uint32_t version = 0;
  std::string resource;
  std::string node;
  std::string link;
  std::array<uint8_t, 32> nonce{};
  std::vector<aead_cipher> ciphers;  // the client's preference order
  bool encrypt = true;
};

/// What the server chose and its nonce (session_accept's payload before the proof).
struct session_accept_message {
  std::array<uint8_t, 32> nonce{};
  aead_cipher cipher = aead_cipher::aes_256_gcm;
  bool encrypt = true;
};

buffer_ptr encode_session_open(const session_open_message& m);
/// Strict, and refuses more than unauthenticated_frame_limit bytes.
result<session_open_message> decode_session_open(const buffer_ptr& payload);
/// The accept message's bytes without the proof (they enter the transcript).
std::vector<uint8_t> encode_session_accept_body(const session_accept_message& m);
result<session_accept_message> decode_session_accept_body(std::span<const uint8_t> body);

/// SHA-256 over u32le(len(open)) ‖ open ‖ u32le(len(accept_body)) ‖ accept_body:
/// the handshake as both sides sent and received it.
std::array<uint8_t, 32> transcript_hash(std::span<const uint8_t> open_payload,
                                        std::span<const uint8_t> accept_body);

/// HKDF-SHA256 (RFC 5869) through OpenSSL's EVP_PKEY_HKDF: `out.size()`
/// bytes (at most 255 * 32). Throws std::runtime_error if OpenSSL fails.
void hkdf_sha256(std::span<const uint8_t> key, std::span<const uint8_t> salt,
                 std::span<const uint8_t> info, std::span<uint8_t> out);

/// The key schedule: OKM = HKDF(IKM = key, salt = client nonce ‖ server
/// nonce, info = "hast/2 session" ‖ transcript hash), 128 bytes split in
/// this order. The proofs are HMAC-SHA256 under the confirm keys over the
/// transcript hash (proof()).
struct session_keys {
  std::array<uint8_t, 32> client_to_server{};
  std::array<uint8_t, 32> server_to_client{};
  std::array<uint8_t, 32> client_confirm{};
  std::array<uint8_t, 32> server_confirm{};
};
session_keys derive_session_keys(std::span<const uint8_t> key,
                                 const std::array<uint8_t, 32>& client_nonce,
                                 const std::array<uint8_t, 32>& server_nonce,
                                 const std::array<uint8_t, 32>& transcript);

/// HMAC-SHA256(confirm_key, label ‖ transcript), label "server" or "client".
std::array<uint8_t, 32> proof(const std::array<uint8_t, 32>& confirm_key, std::string_view label,
                              const std::array<uint8_t, 32>& transcript);

/// One direction of a session: seals (or opens) frames in order, the n-th
/// frame with nonce 0^32 ‖ u64le(n). One EVP_CIPHER_CTX per direction,
/// reused for every frame; nothing is allocated per frame. Not thread-safe:
/// the transport uses it on its connection's strand only.
class frame_cipher {
public:
  enum class direction { seal, open };

  frame_cipher(direction dir, aead_cipher cipher, bool encrypt, std::span<const uint8_t, 32> key);
  frame_cipher(const frame_cipher&) = delete;
  frame_cipher& operator=(const frame_cipher&) = delete;
  ~frame_cipher();

  /// Sealing: authenticates `head` (the encoded frame header) and the `n`
  /// payload bytes at `in`. Encrypting, writes the ciphertext to `out`
  /// (which may be `in`); integrity only, the payload is associated data
  /// and `out` is not written. Writes the tag. False only if OpenSSL fails
  /// or the sequence number is spent (then the link must end).
  bool seal(std::span<const uint8_t> head, const uint8_t* in, uint8_t* out, std::size_t n,
            std::span<uint8_t, tag_size> tag);
  /// Opening: the inverse; false when the tag does not verify (altered,
  /// injected, replayed, reordered or dropped frames all end here) — then
  /// `out` holds garbage that must not be used. The sequence number
  /// advances only on success.
  bool open(std::span<const uint8_t> head, const uint8_t* in, uint8_t* out, std::size_t n,
            std::span<const uint8_t, tag_size> tag);

  /// How many frames this direction has sealed or opened.
  uint64_t sequence() const { return seq_; }
  bool encrypting() const { return encrypt_; }

private:
  bool run(std::span<const uint8_t> head, const uint8_t* in, uint8_t* out, std::size_t n,
           uint8_t* tag);

  direction dir_;
  bool encrypt_;
  uint64_t seq_ = 0;
  void* ctx_ = nullptr;  // EVP_CIPHER_CTX, keyed once
};

/// Both directions of an established session, as one side holds them.
struct session_ciphers {
  std::unique_ptr<frame_cipher> sealer;
  std::unique_ptr<frame_cipher> opener;
  aead_cipher cipher = aead_cipher::aes_256_gcm;
  bool encrypt = true;
};

/// The client's half of the handshake: make the open message, then check
/// the server's accept and produce the client's proof and ciphers.
class client_handshake {
public:
  explicit client_handshake(session_params params);
  /// session_open's payload (a fresh nonce each time this object is made).
  buffer_ptr open_payload() const { return open_; }
  /// Checks session_accept's payload (body ‖ 32-byte proof). On success
  /// returns session_proof's payload and fills `out`; an error says why
  /// (a wrong key reads "the server does not know the shared key").
  result<buffer_ptr> on_accept(const buffer_ptr& accept, session_ciphers& out);

private:
  session_params params_;
  std::array<uint8_t, 32> nonce_{};
  buffer_ptr open_;
};

/// The server's half: answer a decoded session_open, then check the
/// client's proof.
class server_handshake {
public:
  /// `open` is session_open's raw payload (decoded again here).
  server_handshake(session_params params, buffer_ptr open);
  /// Checks the open message against `params` (resource, link, version,
  /// a cipher both speak) and returns session_accept's payload.
  result<buffer_ptr> accept_payload();
  /// Checks session_proof's payload and fills `out`.
  status on_proof(const buffer_ptr& proof_payload, session_ciphers& out);

private:
  session_params params_;
  buffer_ptr open_;
  session_open_message theirs_;
  session_keys keys_;
  std::array<uint8_t, 32> transcript_{};
  aead_cipher cipher_ = aead_cipher::aes_256_gcm;
  bool encrypt_ = true;
  bool accepted_ = false;
};

} // namespace hast::peer
