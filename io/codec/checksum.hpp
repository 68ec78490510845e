#pragma once

// Data checksums and the few cryptographic primitives the peer protocol
// needs: the digest of a replicated payload (crc32, crc32c or sha256, as the
// resource's `checksum` option says) and HMAC-SHA256 for the shared-secret
// challenge of the handshake. SHA-256 and HMAC come from OpenSSL; CRC-32 is
// our own table so that its value never depends on a library's build.

#include "config/config.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace hast {

/// zlib-compatible CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320).
/// `seed` is a previous result, so crc32_ieee(b, nb, crc32_ieee(a, na)) is
/// the CRC of a followed by b. crc32_ieee("123456789", 9) == 0xCBF43926.
uint32_t crc32_ieee(const void* data, size_t n, uint32_t seed = 0);

/// SHA-256 of `n` bytes.
std::array<uint8_t, 32> sha256(const void* data, size_t n);

/// HMAC-SHA256 (RFC 2104) of `data` under `key`.
std::array<uint8_t, 32> hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data);

/// The digest field of a frame: crc32 and crc32c go into the first 4 bytes,
/// little-endian, the rest zero; sha256 fills all 32; none is all zeros.
void compute_digest(checksum_kind kind, const void* data, size_t n, std::array<uint8_t, 32>& out);

/// Equality whose running time does not depend on where the inputs differ
/// (for comparing MACs). Different lengths compare unequal.
bool constant_time_equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

/// 32 bytes from the kernel's CSPRNG (getrandom), for challenge nonces.
std::array<uint8_t, 32> random_nonce();

} // namespace hast
