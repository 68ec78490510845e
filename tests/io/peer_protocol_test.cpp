// The peer wire codec, the payload pipeline (compression and checksums) and
// the primitives under it, driven directly: no sockets.

#include "io/codec/checksum.hpp"
#include "io/codec/compression.hpp"
#include "io/codec/crc32c.hpp"
#include "io/net/peer_protocol.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <string_view>

namespace hast::peer {
namespace {

header sample_header() {
  header h;
  h.type = msg_type::write;
  h.flags = flag_memsync | flag_fua;
  h.seq = 0x0102030405060708ull;
  h.offset = 0x1122334455667788ull;
  h.length = 65536;
  h.payload_length = 4321;
  h.error = static_cast<uint32_t>(errc::io_error);
  h.checksum = checksum_kind::sha256;
  h.compression = compression_kind::lz4;
  for (std::size_t i = 0; i < h.digest.size(); ++i)
    h.digest[i] = static_cast<uint8_t>(0xA0 + i);
  return h;
}

/// Recomputes the header checksum after a test edited a field, so that the
/// field's own check is the one that must refuse.
void reseal(std::array<uint8_t, header_size>& bytes) {
  const uint32_t crc = crc32c(bytes.data(), header_size - 4);
  for (int i = 0; i < 4; ++i)
    bytes[header_size - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

std::string refusal_of(const std::array<uint8_t, header_size>& bytes) {
  auto decoded = decode_header(bytes);
  if (decoded)
    return "accepted";
  EXPECT_EQ(decoded.error().code(), errc::protocol_error);
  return decoded.error().detail();
}

buffer_ptr zero_block(std::size_t n) {
  auto b = make_buffer(n);
  std::memset(b->data(), 0, n);
  return b;
}

buffer_ptr random_block(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  auto b = make_buffer(n);
  for (std::size_t i = 0; i < n; ++i)
    b->data()[i] = static_cast<uint8_t>(gen());
  return b;
}

buffer_ptr text_block(std::size_t n) {
  const std::string_view phrase = "replicated block storage over tcp, extent by extent; ";
  auto b = make_buffer(n);
  for (std::size_t i = 0; i < n; ++i)
    b->data()[i] = static_cast<uint8_t>(phrase[i % phrase.size()]);
  return b;
}

bool same_bytes(const buffer_ptr& a, const buffer_ptr& b) {
  return a->size() == b->size() && std::memcmp(a->data(), b->data(), a->size()) == 0;
}

std::string hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (auto b : bytes) {
    static const char digits[] = "0123456789abcdef";
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// --- Header ---------------------------------------------------------------------------

TEST(PeerProtocol, HeaderRoundTripsEveryField) {
  const header h = sample_header();
  const auto bytes = encode_header(h);
  auto decoded = decode_header(bytes);
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(*decoded, h);
}

TEST(PeerProtocol, HeaderLayoutIsLittleEndianWithMagicFirst) {
  const auto bytes = encode_header(sample_header());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), 4), "HAST");
  EXPECT_EQ(bytes[4], protocol_version);
  EXPECT_EQ(bytes[5], static_cast<uint8_t>(msg_type::write));
  EXPECT_EQ(bytes[8], 0x08);  // seq, least significant byte first
  EXPECT_EQ(bytes[15], 0x01);
  EXPECT_EQ(bytes[42], 0);
  EXPECT_EQ(bytes[43], 0);
  EXPECT_EQ(bytes[44], 0xA0);  // digest
}

TEST(PeerProtocol, DecodeRefusesABadMagic) {
  auto bytes = encode_header(sample_header());
  bytes[0] = 'X';
  reseal(bytes);
  EXPECT_NE(refusal_of(bytes).find("bad frame magic"), std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesAVersionItDoesNotSpeak) {
  auto bytes = encode_header(sample_header());
  bytes[4] = 1;  // the version before sealed frames
  reseal(bytes);
  EXPECT_NE(refusal_of(bytes).find("protocol version 1 is not supported (this node speaks 2)"),
            std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesABadHeaderChecksum) {
  auto bytes = encode_header(sample_header());
  bytes[header_size - 1] ^= 0xFF;
  EXPECT_NE(refusal_of(bytes).find("bad header checksum"), std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesAnUnknownType) {
  auto bytes = encode_header(sample_header());
  bytes[5] = 99;
  reseal(bytes);
  EXPECT_NE(refusal_of(bytes).find("unknown message type 99"), std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesAPayloadLargerThanTheLimit) {
  header h = sample_header();
  // A sealed frame's payload carries its 16-byte tag as well.
  h.payload_length = max_wire_payload + 1;
  EXPECT_NE(refusal_of(encode_header(h)).find("exceeds the limit"), std::string::npos);
  h.payload_length = max_wire_payload;
  EXPECT_TRUE(decode_header(encode_header(h)));
}

TEST(PeerProtocol, DecodeRefusesAnUnknownChecksumKind) {
  auto bytes = encode_header(sample_header());
  bytes[40] = 4;
  reseal(bytes);
  EXPECT_NE(refusal_of(bytes).find("unknown checksum kind 4"), std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesAnUnknownCompressionKind) {
  auto bytes = encode_header(sample_header());
  bytes[41] = 7;
  reseal(bytes);
  EXPECT_NE(refusal_of(bytes).find("unknown compression kind 7"), std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesNonzeroReservedBytes) {
  auto bytes = encode_header(sample_header());
  bytes[43] = 1;
  reseal(bytes);
  EXPECT_NE(refusal_of(bytes).find("reserved header bytes"), std::string::npos);
}

TEST(PeerProtocol, DecodeRefusesAHeaderWithAnyByteFlipped) {
  const auto good = encode_header(sample_header());
  for (std::size_t i = 0; i < header_size; ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
      auto bytes = good;
      bytes[i] ^= mask;
      EXPECT_FALSE(decode_header(bytes)) << "byte " << i << " xor " << int(mask) << " accepted";
    }
  }
}

// --- Payload pipeline -------------------------------------------------------------------

struct pipeline_case {
  checksum_kind checksum;
  compression_kind compression;
};

class SealAndOpen : public ::testing::TestWithParam<pipeline_case> {};

TEST_P(SealAndOpen, RoundTripsZeroTextAndRandomData) {
  const auto [checksum, compression] = GetParam();
  const bool detects_holes = compression != compression_kind::none;
  const bool compresses = compression == compression_kind::lz4 || compression == compression_kind::lzf;
  for (const auto& original : {zero_block(65536), text_block(65536), random_block(65536, 7),
                               text_block(1), zero_block(512)}) {
    header h;
    h.type = msg_type::write;
    h.offset = 8192;
    buffer_ptr wire = original;
    ASSERT_TRUE(seal_payload(h, wire, compression, checksum));
    EXPECT_EQ(h.length, original->size());
    EXPECT_EQ(h.checksum, checksum);
    EXPECT_EQ(h.payload_length, wire ? wire->size() : 0u);

    const bool zero = all_zero(original->data(), original->size());
    if (zero && detects_holes) {
      EXPECT_EQ(h.compression, compression_kind::hole);
      EXPECT_EQ(wire, nullptr);
    } else if (!compresses) {
      EXPECT_EQ(h.compression, compression_kind::none);
      EXPECT_EQ(wire, original) << "uncompressed data must travel in its own buffer";
    }

    // The header goes through the codec as the transport would send it.
    auto decoded = decode_header(encode_header(h));
    ASSERT_TRUE(decoded) << decoded.error().message();
    auto data = open_payload(*decoded, wire);
    ASSERT_TRUE(data) << data.error().message();
    EXPECT_TRUE(same_bytes(*data, original));
  }
}

INSTANTIATE_TEST_SUITE_P(
  EveryChecksumAndCompression, SealAndOpen,
  ::testing::ValuesIn([] {
    std::vector<pipeline_case> cases;
    for (auto c : {checksum_kind::none, checksum_kind::crc32, checksum_kind::crc32c,
                   checksum_kind::sha256})
      for (auto z : {compression_kind::none, compression_kind::hole, compression_kind::lzf,
                     compression_kind::lz4})
        cases.push_back({c, z});
    return cases;
  }()),
  [](const auto& info) {
    return to_string(info.param.checksum) + "_" + to_string(info.param.compression);
  });

TEST(PeerProtocol, AnAllZeroBlockTravelsAsZeroPayloadBytes) {
  header h;
  h.type = msg_type::write;
  buffer_ptr data = zero_block(1 << 20);
  ASSERT_TRUE(seal_payload(h, data, compression_kind::hole, checksum_kind::crc32c));
  EXPECT_EQ(data, nullptr);
  EXPECT_EQ(h.payload_length, 0u);
  EXPECT_EQ(h.length, 1u << 20);
  EXPECT_EQ(h.compression, compression_kind::hole);
  auto opened = open_payload(h, nullptr);
  ASSERT_TRUE(opened);
  EXPECT_EQ((*opened)->size(), 1u << 20);
  EXPECT_TRUE(all_zero((*opened)->data(), (*opened)->size()));
}

TEST(PeerProtocol, Lz4ShrinksCompressibleDataAndRestoresItExactly) {
  header h;
  h.type = msg_type::write;
  const auto original = text_block(128 * 1024);
  buffer_ptr wire = original;
  ASSERT_TRUE(seal_payload(h, wire, compression_kind::lz4, checksum_kind::sha256));
  EXPECT_EQ(h.compression, compression_kind::lz4);
  EXPECT_LT(h.payload_length, original->size() / 8);
  auto opened = open_payload(h, wire);
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_TRUE(same_bytes(*opened, original));
}

TEST(PeerProtocol, IncompressibleDataIsLeftAsIs) {
  header h;
  h.type = msg_type::write;
  const auto original = random_block(65536, 42);
  buffer_ptr wire = original;
  ASSERT_TRUE(seal_payload(h, wire, compression_kind::lz4, checksum_kind::none));
  EXPECT_EQ(h.compression, compression_kind::none);
  EXPECT_EQ(wire, original);
  EXPECT_EQ(h.payload_length, 65536u);
}

TEST(PeerProtocol, AFlippedPayloadByteIsAChecksumMismatch) {
  for (auto checksum : {checksum_kind::crc32, checksum_kind::crc32c, checksum_kind::sha256}) {
    for (auto compression : {compression_kind::none, compression_kind::lz4}) {
      header h;
      h.type = msg_type::write;
      buffer_ptr wire = text_block(32768);
      ASSERT_TRUE(seal_payload(h, wire, compression, checksum));
      auto corrupt = make_buffer(wire->size());
      std::memcpy(corrupt->data(), wire->data(), wire->size());
      corrupt->data()[corrupt->size() / 2] ^= 0x04;
      auto opened = open_payload(h, corrupt);
      ASSERT_FALSE(opened) << to_string(checksum);
      EXPECT_EQ(opened.error().code(), errc::protocol_error);
      EXPECT_NE(opened.error().detail().find("payload checksum mismatch"), std::string::npos)
        << opened.error().detail();
    }
  }
}

TEST(PeerProtocol, OpenRefusesAPayloadOfAnotherSizeThanTheHeaderSays) {
  header h;
  h.type = msg_type::write;
  buffer_ptr wire = text_block(100);
  ASSERT_TRUE(seal_payload(h, wire, compression_kind::none, checksum_kind::none));
  EXPECT_FALSE(open_payload(h, text_block(99)));
  EXPECT_FALSE(open_payload(h, nullptr));
}

TEST(PeerProtocol, OpenRefusesCorruptLz4EvenWithoutAChecksum) {
  header h;
  h.type = msg_type::write;
  buffer_ptr wire = text_block(65536);
  ASSERT_TRUE(seal_payload(h, wire, compression_kind::lz4, checksum_kind::none));
  ASSERT_EQ(h.compression, compression_kind::lz4);
  header wrong_length = h;
  wrong_length.length = h.length - 1;
  EXPECT_FALSE(open_payload(wrong_length, wire));
  auto garbage = random_block(wire->size(), 3);
  EXPECT_FALSE(open_payload(h, garbage));
}

TEST(PeerProtocol, Lz4RefusesALengthItsPayloadCannotExpandTo) {
  // Two bytes claiming the largest payload: refused as impossible, not
  // after allocating 64 MiB and failing to fill it.
  const uint8_t tiny[] = {0x10, 'x'};
  const auto refused = lz4_decompress(tiny, sizeof tiny, max_payload);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().detail().find("cannot expand"), std::string::npos)
      << refused.error().detail();
}

TEST(PeerProtocol, Lz4AtItsHighestRatioStillOpens) {
  // One repeated byte compresses about as far as LZ4 can; the ratio bound
  // must not refuse it.
  header h;
  h.type = msg_type::write;
  buffer_ptr wire = make_buffer(4u << 20);
  std::memset(wire->data(), 'a', wire->size());
  ASSERT_TRUE(seal_payload(h, wire, compression_kind::lz4, checksum_kind::crc32c));
  ASSERT_EQ(h.compression, compression_kind::lz4);
  EXPECT_GT(h.length / h.payload_length, 200u);
  const auto opened = open_payload(h, wire);
  ASSERT_TRUE(opened);
  ASSERT_EQ((*opened)->size(), 4u << 20);
  EXPECT_EQ((*opened)->data()[(4u << 20) - 1], 'a');
}

TEST(PeerProtocol, OpenRefusesAHoleThatCarriesBytes) {
  header h;
  h.type = msg_type::write;
  h.length = 4096;
  h.compression = compression_kind::hole;
  h.payload_length = 16;
  EXPECT_FALSE(open_payload(h, text_block(16)));
}

TEST(PeerProtocol, AnEmptyMessageSealsToNoPayload) {
  header h;
  h.type = msg_type::flush;
  buffer_ptr none;
  ASSERT_TRUE(seal_payload(h, none, compression_kind::lz4, checksum_kind::crc32c));
  EXPECT_EQ(h.length, 0u);
  EXPECT_EQ(h.payload_length, 0u);
  auto opened = open_payload(h, nullptr);
  ASSERT_TRUE(opened);
  EXPECT_EQ((*opened)->size(), 0u);
}

// --- Handshake payloads -------------------------------------------------------------------

hello_message sample_hello() {
  hello_message m;
  m.resource = "shared";
  m.node = "hasta";
  m.role = "primary";
  m.datasize = 1ull << 40;
  m.extent_size = 2u << 20;
  m.resuid = 0xFEDCBA9876543210ull;
  m.localcnt = 17;
  m.remotecnt = 16;
  m.virgin = false;
  m.sync_source = "primary";
  m.bitmap = {0xFF, 0x00, 0x81, 0x7E, 0x01};
  return m;
}

TEST(PeerProtocol, HelloRoundTripsWithItsBitmap) {
  const auto m = sample_hello();
  auto decoded = decode_hello(encode_hello(m));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(*decoded, m);
}

TEST(PeerProtocol, ARefusingHelloReplyRoundTripsWithoutBitmap) {
  hello_message m;
  m.resource = "shared";
  m.node = "hastb";
  m.role = "secondary";
  m.refusal = "protocol version 2 is not supported (this node speaks 1)";
  auto decoded = decode_hello(encode_hello(m));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->refusal, m.refusal);
  EXPECT_TRUE(decoded->bitmap.empty());
}

TEST(PeerProtocol, ATruncatedHelloIsRefused) {
  const auto full = encode_hello(sample_hello());
  uint32_t json_length = 0;
  std::memcpy(&json_length, full->data(), 4);
  // Cutting anywhere inside the length prefix or the JSON must be refused.
  for (std::size_t keep : std::initializer_list<std::size_t>{0, 1, 3, 4, 5, json_length / 2,
                                                             4 + json_length - 1}) {
    auto cut = make_buffer(keep);
    std::memcpy(cut->data(), full->data(), keep);
    auto decoded = decode_hello(cut);
    ASSERT_FALSE(decoded) << "kept " << keep << " bytes";
    EXPECT_EQ(decoded.error().code(), errc::protocol_error);
  }
  EXPECT_FALSE(decode_hello(nullptr));
}

TEST(PeerProtocol, AHelloWithMalformedOrMistypedJsonIsRefused) {
  auto with_json = [](std::string_view json) {
    auto b = make_buffer(4 + json.size());
    const auto n = static_cast<uint32_t>(json.size());
    std::memcpy(b->data(), &n, 4);
    std::memcpy(b->data() + 4, json.data(), json.size());
    return b;
  };
  EXPECT_FALSE(decode_hello(with_json("{not json")));
  EXPECT_FALSE(decode_hello(with_json("[1,2]")));
  EXPECT_FALSE(decode_hello(with_json(R"({"version":1,"resource":"r","node":"n"})")));
  EXPECT_FALSE(decode_hello(with_json(R"({"version":"1","resource":"r","node":"n","role":"p"})")));
  EXPECT_FALSE(
    decode_hello(with_json(R"({"version":1,"resource":"r","node":"n","role":"p","datasize":-1})")));
  EXPECT_FALSE(decode_hello(
    with_json(R"({"version":1,"resource":"r","node":"n","role":"p","extent_size":4294967296})")));
  EXPECT_TRUE(decode_hello(with_json(R"({"version":1,"resource":"r","node":"n","role":"p"})")));
}

TEST(PeerProtocol, ANonceRoundTripsAndMustBeExactly32Bytes) {
  const auto nonce = random_nonce();
  auto decoded = decode_nonce(encode_nonce(nonce));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(*decoded, nonce);
  EXPECT_FALSE(decode_nonce(make_buffer(31)));
  EXPECT_FALSE(decode_nonce(make_buffer(33)));
  EXPECT_FALSE(decode_nonce(nullptr));
}

TEST(PeerProtocol, DescribeNamesTypeSequenceAndFlags) {
  header h = sample_header();
  const auto text = describe(h);
  EXPECT_NE(text.find("write seq=72623859790382856"), std::string::npos) << text;
  EXPECT_NE(text.find("lz4"), std::string::npos) << text;
  EXPECT_NE(text.find("sha256"), std::string::npos) << text;
  EXPECT_NE(text.find("memsync fua"), std::string::npos) << text;
  EXPECT_NE(text.find("error=1"), std::string::npos) << text;
}

// --- Checksums and compression primitives ---------------------------------------------------

TEST(Checksum, Crc32IeeeMatchesTheZlibCheckValue) {
  EXPECT_EQ(crc32_ieee("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32_ieee("", 0), 0u);
  EXPECT_EQ(crc32_ieee("6789", 4, crc32_ieee("12345", 5)), 0xCBF43926u);
}

TEST(Checksum, Sha256MatchesTheFipsVector) {
  EXPECT_EQ(hex(sha256("abc", 3)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Checksum, HmacSha256MatchesRfc4231TestCase2) {
  EXPECT_EQ(hex(hmac_sha256(bytes_of("Jefe"), bytes_of("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Checksum, DigestPutsCrcsLittleEndianInTheFirstFourBytes) {
  std::array<uint8_t, 32> out{};
  out.fill(0xEE);
  compute_digest(checksum_kind::crc32c, "123456789", 9, out);
  EXPECT_EQ(hex(out), "839206e3" + std::string(56, '0'));
  compute_digest(checksum_kind::crc32, "123456789", 9, out);
  EXPECT_EQ(hex(out), "2639f4cb" + std::string(56, '0'));
  compute_digest(checksum_kind::none, "123456789", 9, out);
  EXPECT_EQ(hex(out), std::string(64, '0'));
  compute_digest(checksum_kind::sha256, "abc", 3, out);
  EXPECT_EQ(out, sha256("abc", 3));
}

TEST(Checksum, ConstantTimeEqualComparesContentAndLength) {
  const std::array<uint8_t, 4> a{1, 2, 3, 4}, b{1, 2, 3, 4}, c{1, 2, 3, 5};
  EXPECT_TRUE(constant_time_equal(a, b));
  EXPECT_FALSE(constant_time_equal(a, c));
  EXPECT_FALSE(constant_time_equal(a, std::span<const uint8_t>(b).first(3)));
}

TEST(Checksum, RandomNoncesDiffer) {
  EXPECT_NE(random_nonce(), random_nonce());
}

TEST(Compression, AllZeroSeesANonzeroByteAtAnyPositionAndAlignment) {
  std::vector<uint8_t> bytes(300, 0);
  for (std::size_t start : {0, 1, 3, 7, 8}) {
    for (std::size_t n : {0, 1, 7, 8, 31, 32, 33, 200}) {
      EXPECT_TRUE(all_zero(bytes.data() + start, n));
      for (std::size_t i = 0; i < n; ++i) {
        bytes[start + i] = 1;
        EXPECT_FALSE(all_zero(bytes.data() + start, n)) << start << " " << n << " " << i;
        bytes[start + i] = 0;
      }
    }
  }
}

TEST(Compression, Lz4DecompressInsistsOnTheExactSize) {
  const auto text = text_block(10000);
  auto packed = lz4_compress(text->data(), text->size());
  ASSERT_TRUE(packed);
  EXPECT_TRUE(lz4_decompress((*packed)->data(), (*packed)->size(), 10000));
  EXPECT_FALSE(lz4_decompress((*packed)->data(), (*packed)->size(), 9999));
  EXPECT_FALSE(lz4_decompress((*packed)->data(), (*packed)->size(), 10001));
  EXPECT_FALSE(lz4_decompress((*packed)->data(), 0, 10000));
}

TEST(Compression, Lz4GivesUpUnlessItSavesAnEighth) {
  const auto noise = random_block(4096, 9);
  EXPECT_FALSE(lz4_compress(noise->data(), noise->size()));
  EXPECT_FALSE(lz4_compress(noise->data(), 0));
}

} // namespace
} // namespace hast::peer
