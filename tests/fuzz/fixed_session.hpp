#pragma once

// The session the frame_reader target fuzzes after authentication: keys
// derived by the real key schedule (io/net/secure_frames.hpp) from a fixed
// shared key, fixed nonces and a fixed transcript, so that the seeds
// fuzz_make_corpus seals are opened by the target, and mutations of them
// hit the AEAD open. The target plays the server: it opens what the client
// sealed (client_to_server).

#include "io/net/secure_frames.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace hast::fuzz {

/// The shared key and the handshake of the fixed session; the pre-
/// authentication states of the target use the same key and resource.
inline std::vector<uint8_t> fixed_key() {
  std::vector<uint8_t> key(32);
  for (std::size_t i = 0; i < key.size(); ++i)
    key[i] = static_cast<uint8_t>(0xa0 + i);
  return key;
}
inline constexpr const char* fixed_resource = "shared";

inline const peer::session_keys& fixed_session_keys() {
  static const peer::session_keys keys = [] {
    std::array<uint8_t, 32> client_nonce{};
    std::array<uint8_t, 32> server_nonce{};
    std::array<uint8_t, 32> transcript{};
    for (std::size_t i = 0; i < 32; ++i) {
      client_nonce[i] = static_cast<uint8_t>(i);
      server_nonce[i] = static_cast<uint8_t>(0x40 + i);
      transcript[i] = static_cast<uint8_t>(0x80 + i);
    }
    return peer::derive_session_keys(fixed_key(), client_nonce, server_nonce, transcript);
  }();
  return keys;
}

/// One direction of the fixed session, client to server.
inline std::unique_ptr<peer::frame_cipher> fixed_cipher(peer::frame_cipher::direction dir,
                                                        peer::aead_cipher cipher, bool encrypt) {
  return std::make_unique<peer::frame_cipher>(dir, cipher, encrypt,
                                              fixed_session_keys().client_to_server);
}

} // namespace hast::fuzz
