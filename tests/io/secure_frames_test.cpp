// The session layer without sockets: HKDF against RFC 5869 and an
// independently computed split, the AEAD sealing and opening frames in both
// modes and both ciphers, every kind of tampering refused, and the
// handshake halves agreeing with each other and refusing a wrong key or an
// altered transcript.

#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace hast::peer {
namespace {

std::vector<uint8_t> from_hex(const std::string& text) {
  std::vector<uint8_t> out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16)));
  return out;
}

template <std::size_t N>
std::vector<uint8_t> bytes(const std::array<uint8_t, N>& a) {
  return {a.begin(), a.end()};
}

std::vector<uint8_t> key_bytes(const std::string& s) {
  return {s.begin(), s.end()};
}

TEST(SecureFrames, HkdfMatchesRfc5869TestCaseOne) {
  const auto ikm = from_hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  const auto salt = from_hex("000102030405060708090a0b0c");
  const auto info = from_hex("f0f1f2f3f4f5f6f7f8f9");
  std::vector<uint8_t> okm(42);
  hkdf_sha256(ikm, salt, info, okm);
  EXPECT_EQ(okm, from_hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                          "34007208d5b887185865"));
}

// Expected values computed with Python's hmac/hashlib (HKDF by hand):
// salt = nonces, info = "hast/2 session" || transcript, 128 bytes split c2s, s2c, cconf, sconf.
TEST(SecureFrames, SessionKeysSplitTheKeyScheduleInTheDocumentedOrder) {
  std::array<uint8_t, 32> client{}, server{}, transcript{};
  for (int i = 0; i < 32; ++i) {
    client[i] = static_cast<uint8_t>(i);
    server[i] = static_cast<uint8_t>(32 + i);
    transcript[i] = 0xaa;
  }
  const auto k = derive_session_keys(key_bytes("0123456789abcdef0123456789abcdef"), client, server,
                                     transcript);
  EXPECT_EQ(bytes(k.client_to_server),
            from_hex("ac702ae49701cacb3eac5fac797122879e6260bf5608ffc8b1c97c860f312fe1"));
  EXPECT_EQ(bytes(k.server_to_client),
            from_hex("c65d097aa71e637a0eb7db3f194ffb5b980f23b8f9b8d251d39167d48b2a9317"));
  EXPECT_EQ(bytes(k.client_confirm),
            from_hex("df3a59918a4ff275ca421f805e8af5d4a69a8b554e419ca06bc9f1ce8b5916eb"));
  EXPECT_EQ(bytes(k.server_confirm),
            from_hex("2fd54e7d4e28c611cb1c176786d3864c4079d4d0abb4b5905a4056d873c8b434"));
}

TEST(SecureFrames, AnotherNonceOrTranscriptGivesOtherKeys) {
  std::array<uint8_t, 32> a{}, b{}, t{};
  b[0] = 1;
  const auto key = key_bytes("a shared key of enough bytes");
  const auto base = derive_session_keys(key, a, a, t);
  EXPECT_NE(base.client_to_server, derive_session_keys(key, b, a, t).client_to_server);
  EXPECT_NE(base.client_to_server, derive_session_keys(key, a, b, t).client_to_server);
  EXPECT_NE(base.client_to_server, derive_session_keys(key, a, a, b).client_to_server);
  EXPECT_NE(base.client_to_server, base.server_to_client);
}

/// A frame as the transport builds it: the encoded header (payload_length
/// counting the tag), the payload, and the tag.
struct wire_frame {
  std::array<uint8_t, header_size> head{};
  std::vector<uint8_t> text;
  std::array<uint8_t, tag_size> tag{};
};

wire_frame seal_one(frame_cipher& sealer, msg_type type, uint64_t seq, std::vector<uint8_t> data) {
  header h;
  h.type = type;
  h.seq = seq;
  h.payload_length = static_cast<uint32_t>(data.size() + tag_size);
  wire_frame f;
  f.head = encode_header(h);
  f.text.resize(data.size());
  EXPECT_TRUE(sealer.seal(f.head, data.data(), f.text.data(), data.size(), f.tag));
  if (!sealer.encrypting())
    f.text = data;  // integrity only: the payload travels as it is
  return f;
}

bool open_one(frame_cipher& opener, wire_frame f, std::vector<uint8_t>* out = nullptr) {
  std::vector<uint8_t> plain(f.text.size());
  const bool ok = opener.open(f.head, f.text.data(), plain.data(), f.text.size(), f.tag);
  if (ok && out != nullptr)
    *out = opener.encrypting() ? plain : f.text;
  return ok;
}

struct mode {
  aead_cipher cipher;
  bool encrypt;
};

class SealedFrames : public ::testing::TestWithParam<mode> {
protected:
  std::array<uint8_t, 32> key{1, 2, 3, 4, 5};
  frame_cipher sealer{frame_cipher::direction::seal, GetParam().cipher, GetParam().encrypt, key};
  frame_cipher opener{frame_cipher::direction::open, GetParam().cipher, GetParam().encrypt, key};
  std::vector<uint8_t> data = std::vector<uint8_t>(4096, 0x5a);
};

TEST_P(SealedFrames, RoundTripInOrderWithAndWithoutPayload) {
  std::vector<uint8_t> got;
  auto f = seal_one(sealer, msg_type::write, 1, data);
  EXPECT_EQ(f.text == data, !GetParam().encrypt);  // encrypted unless integrity only
  ASSERT_TRUE(open_one(opener, f, &got));
  EXPECT_EQ(got, data);
  ASSERT_TRUE(open_one(opener, seal_one(sealer, msg_type::keepalive, 0, {})));
  ASSERT_TRUE(open_one(opener, seal_one(sealer, msg_type::write, 2, data), &got));
  EXPECT_EQ(got, data);
  EXPECT_EQ(opener.sequence(), 3u);
}

TEST_P(SealedFrames, AFlippedBitAnywhereIsRefused) {
  const auto good = seal_one(sealer, msg_type::write, 1, data);
  for (std::size_t where : {std::size_t{5}, std::size_t{16}, std::size_t{header_size - 1}}) {
    auto bad = good;
    bad.head[where] ^= 1;
    EXPECT_FALSE(open_one(opener, bad)) << "header byte " << where;
  }
  auto bad = good;
  bad.text[100] ^= 0x80;
  EXPECT_FALSE(open_one(opener, bad)) << "payload";
  bad = good;
  bad.tag[0] ^= 1;
  EXPECT_FALSE(open_one(opener, bad)) << "tag";
  EXPECT_EQ(opener.sequence(), 0u);  // nothing was accepted
  EXPECT_TRUE(open_one(opener, good));
}

TEST_P(SealedFrames, AReplayedFrameIsRefused) {
  const auto f = seal_one(sealer, msg_type::write, 1, data);
  ASSERT_TRUE(open_one(opener, f));
  EXPECT_FALSE(open_one(opener, f));
}

TEST_P(SealedFrames, ReorderedFramesAreRefused) {
  const auto first = seal_one(sealer, msg_type::write, 1, data);
  const auto second = seal_one(sealer, msg_type::write, 2, data);
  EXPECT_FALSE(open_one(opener, second));
  ASSERT_TRUE(open_one(opener, first));
  EXPECT_TRUE(open_one(opener, second));
}

TEST_P(SealedFrames, ADroppedFrameMakesTheNextOneFail) {
  (void)seal_one(sealer, msg_type::write, 1, data);
  EXPECT_FALSE(open_one(opener, seal_one(sealer, msg_type::write, 2, data)));
}

TEST_P(SealedFrames, ATruncatedPayloadIsRefused) {
  auto f = seal_one(sealer, msg_type::write, 1, data);
  f.text.resize(f.text.size() - 1);
  EXPECT_FALSE(open_one(opener, f));
}

TEST_P(SealedFrames, AnInjectedFrameUnderAnotherKeyIsRefused) {
  std::array<uint8_t, 32> other{9};
  frame_cipher stranger{frame_cipher::direction::seal, GetParam().cipher, GetParam().encrypt, other};
  EXPECT_FALSE(open_one(opener, seal_one(stranger, msg_type::write, 1, data)));
}

INSTANTIATE_TEST_SUITE_P(AllModes, SealedFrames,
                         ::testing::Values(mode{aead_cipher::aes_256_gcm, true},
                                           mode{aead_cipher::aes_256_gcm, false},
                                           mode{aead_cipher::chacha20_poly1305, true},
                                           mode{aead_cipher::chacha20_poly1305, false}));

session_params params_of(const std::string& key, bool encrypt = true,
                         aead_cipher cipher = aead_cipher::aes_256_gcm) {
  return {key_bytes(key), "r0", "node", "peer", encrypt, cipher};
}

/// Runs both halves; true when both sides end with matching ciphers.
struct handshake_outcome {
  result<buffer_ptr> accept = status{errc::io_error, "not run"};
  result<buffer_ptr> client_proof = status{errc::io_error, "not run"};
  status server = status{errc::io_error, "not run"};
  session_ciphers client_side, server_side;
};

handshake_outcome run_handshake(session_params client_params, session_params server_params) {
  handshake_outcome out;
  client_handshake client(std::move(client_params));
  server_handshake server(std::move(server_params), client.open_payload());
  out.accept = server.accept_payload();
  if (!out.accept)
    return out;
  out.client_proof = client.on_accept(*out.accept, out.client_side);
  if (!out.client_proof)
    return out;
  out.server = server.on_proof(*out.client_proof, out.server_side);
  return out;
}

TEST(SessionHandshake, BothSidesWithTheSameKeyShareDirectionalCiphers) {
  auto out = run_handshake(params_of("the shared key!!"), params_of("the shared key!!"));
  ASSERT_TRUE(out.server) << out.server.message();
  std::vector<uint8_t> data(100, 7), got;
  ASSERT_TRUE(open_one(*out.server_side.opener,
                       seal_one(*out.client_side.sealer, msg_type::hello, 0, data), &got));
  EXPECT_EQ(got, data);
  ASSERT_TRUE(open_one(*out.client_side.opener,
                       seal_one(*out.server_side.sealer, msg_type::hello_reply, 0, data), &got));
  // A frame sealed for one direction does not open in the other.
  EXPECT_FALSE(open_one(*out.client_side.opener,
                        seal_one(*out.client_side.sealer, msg_type::write, 1, data)));
}

TEST(SessionHandshake, TheClientRefusesAServerWithAnotherKeyBeforeSendingItsProof) {
  auto out = run_handshake(params_of("the shared key!!"), params_of("another key....."));
  ASSERT_TRUE(out.accept);
  ASSERT_FALSE(out.client_proof);
  EXPECT_NE(out.client_proof.error().detail().find("does not know the shared key"),
            std::string::npos);
}

TEST(SessionHandshake, TheServerRefusesAClientProofMadeWithAnotherKey) {
  client_handshake honest(params_of("the shared key!!"));
  server_handshake server(params_of("the shared key!!"), honest.open_payload());
  ASSERT_TRUE(server.accept_payload());
  session_ciphers c;
  // A stranger that replays the open message and guesses a proof.
  auto guess = make_buffer(32);
  std::memset(guess->data(), 0x42, 32);
  EXPECT_FALSE(server.on_proof(guess, c));
  EXPECT_FALSE(c.opener);
}

TEST(SessionHandshake, AnAlteredOpenMessageIsDetectedByTheClient) {
  client_handshake client(params_of("the shared key!!"));
  // Someone on the path turns encryption off in the client's offer.
  auto open = client.open_payload();
  std::string text(reinterpret_cast<const char*>(open->data()), open->size());
  auto at = text.find("\"encrypt\":true");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 14, "\"encrypt\":fals");
  text.insert(at + 14, "e");
  auto altered = make_buffer(text.size());
  std::memcpy(altered->data(), text.data(), text.size());
  server_handshake server(params_of("the shared key!!", false), altered);
  auto accept = server.accept_payload();
  ASSERT_TRUE(accept) << accept.error().message();
  session_ciphers c;
  EXPECT_FALSE(client.on_accept(*accept, c));
}

TEST(SessionHandshake, AnAlteredAcceptMessageIsDetectedByTheClient) {
  client_handshake client(params_of("the shared key!!"));
  server_handshake server(params_of("the shared key!!"), client.open_payload());
  auto accept = server.accept_payload();
  ASSERT_TRUE(accept);
  (*accept)->data()[3] ^= 1;  // inside the nonce's hex digits
  session_ciphers c;
  EXPECT_FALSE(client.on_accept(*accept, c));
}

TEST(SessionHandshake, EitherSideAskingForEncryptionGetsIt) {
  auto a = run_handshake(params_of("the shared key!!", false), params_of("the shared key!!", true));
  ASSERT_TRUE(a.server);
  EXPECT_TRUE(a.client_side.encrypt);
  EXPECT_TRUE(a.server_side.encrypt);
  auto b = run_handshake(params_of("the shared key!!", true), params_of("the shared key!!", false));
  ASSERT_TRUE(b.server);
  EXPECT_TRUE(b.client_side.encrypt);
  auto c = run_handshake(params_of("the shared key!!", false), params_of("the shared key!!", false));
  ASSERT_TRUE(c.server);
  EXPECT_FALSE(c.client_side.encrypt);
}

TEST(SessionHandshake, TheServerPicksItsPreferredCipherAmongTheOffered) {
  auto out = run_handshake(params_of("the shared key!!", true, aead_cipher::aes_256_gcm),
                           params_of("the shared key!!", true, aead_cipher::chacha20_poly1305));
  ASSERT_TRUE(out.server);
  EXPECT_EQ(out.client_side.cipher, aead_cipher::chacha20_poly1305);
  EXPECT_EQ(out.server_side.cipher, aead_cipher::chacha20_poly1305);
}

TEST(SessionHandshake, TheServerRefusesAnOpenForAnotherResourceOrLink) {
  client_handshake client(params_of("the shared key!!"));
  auto mine = params_of("the shared key!!");
  mine.resource = "r1";
  server_handshake other_resource(mine, client.open_payload());
  EXPECT_FALSE(other_resource.accept_payload());
  mine = params_of("the shared key!!");
  mine.link = "witness";
  server_handshake other_link(mine, client.open_payload());
  EXPECT_FALSE(other_link.accept_payload());
}

TEST(SessionHandshake, BothSidesDeriveTheSameKeysFromTheSameExchange) {
  // What each side derives on its own, from the bytes it sent and received,
  // is the key schedule of the one transcript: the sealing key of one
  // direction is the opening key of the other, on both sides.
  client_handshake client(params_of("the shared key!!"));
  server_handshake server(params_of("the shared key!!"), client.open_payload());
  auto accept = server.accept_payload();
  ASSERT_TRUE(accept);
  auto open = decode_session_open(client.open_payload());
  ASSERT_TRUE(open);
  const auto whole = std::span<const uint8_t>((*accept)->data(), (*accept)->size());
  const auto body = whole.first(whole.size() - 32);
  auto accept_body = decode_session_accept_body(body);
  ASSERT_TRUE(accept_body);
  const auto th = transcript_hash(std::span<const uint8_t>(client.open_payload()->data(),
                                                           client.open_payload()->size()),
                                  body);
  const auto keys = derive_session_keys(key_bytes("the shared key!!"), open->nonce,
                                        accept_body->nonce, th);
  // The server's proof is the one this schedule gives.
  EXPECT_EQ(bytes(proof(keys.server_confirm, "server", th)),
            std::vector<uint8_t>(whole.end() - 32, whole.end()));
  session_ciphers client_side, server_side;
  auto client_proof = client.on_accept(*accept, client_side);
  ASSERT_TRUE(client_proof);
  EXPECT_EQ(std::vector<uint8_t>((*client_proof)->data(), (*client_proof)->data() + 32),
            bytes(proof(keys.client_confirm, "client", th)));
  ASSERT_TRUE(server.on_proof(*client_proof, server_side));
  // Frames sealed under the derived keys open on the other side, both ways.
  frame_cipher to_server(frame_cipher::direction::seal, client_side.cipher, client_side.encrypt,
                         keys.client_to_server);
  frame_cipher to_client(frame_cipher::direction::seal, server_side.cipher, server_side.encrypt,
                         keys.server_to_client);
  std::vector<uint8_t> data(64, 9), got;
  ASSERT_TRUE(open_one(*server_side.opener, seal_one(to_server, msg_type::write, 1, data), &got));
  EXPECT_EQ(got, data);
  ASSERT_TRUE(open_one(*client_side.opener, seal_one(to_client, msg_type::done, 1, data), &got));
  EXPECT_EQ(got, data);
}

TEST(SessionHandshake, AProofRecordedFromAnEarlierSessionIsRefused) {
  // A complete, honest exchange, recorded on the wire.
  client_handshake client(params_of("the shared key!!"));
  server_handshake first(params_of("the shared key!!"), client.open_payload());
  auto accept = first.accept_payload();
  ASSERT_TRUE(accept);
  session_ciphers c;
  auto recorded_proof = client.on_accept(*accept, c);
  ASSERT_TRUE(recorded_proof);
  // Someone without the key replays the client's open and proof to the
  // server: the server's fresh nonce makes the old proof worthless.
  server_handshake replayed(params_of("the shared key!!"), client.open_payload());
  ASSERT_TRUE(replayed.accept_payload());
  session_ciphers s;
  auto st = replayed.on_proof(*recorded_proof, s);
  EXPECT_FALSE(st);
  EXPECT_NE(st.message().find("does not know the shared key"), std::string::npos) << st.message();
  EXPECT_FALSE(s.opener);
  EXPECT_FALSE(s.sealer);
}

TEST(SessionHandshake, AnAcceptRecordedFromAnEarlierSessionIsRefusedByANewClient) {
  client_handshake earlier(params_of("the shared key!!"));
  server_handshake server(params_of("the shared key!!"), earlier.open_payload());
  auto recorded_accept = server.accept_payload();
  ASSERT_TRUE(recorded_accept);
  // A stranger posing as the server answers a new client with the old accept.
  client_handshake later(params_of("the shared key!!"));
  session_ciphers c;
  auto proof_payload = later.on_accept(*recorded_accept, c);
  EXPECT_FALSE(proof_payload);
  EXPECT_FALSE(c.opener);
  EXPECT_FALSE(c.sealer);
}

TEST(SessionHandshake, ATruncatedGarbledOrOverlongProofIsRefused) {
  client_handshake client(params_of("the shared key!!"));
  server_handshake server(params_of("the shared key!!"), client.open_payload());
  auto accept = server.accept_payload();
  ASSERT_TRUE(accept);
  session_ciphers c;
  auto good = client.on_accept(*accept, c);
  ASSERT_TRUE(good);
  const std::vector<uint8_t> honest((*good)->data(), (*good)->data() + (*good)->size());
  auto as_buffer = [](const std::vector<uint8_t>& v) {
    auto b = make_buffer(v.size());
    if (!v.empty())
      std::memcpy(b->data(), v.data(), v.size());
    return b;
  };
  std::vector<std::pair<std::string, buffer_ptr>> bad;
  bad.emplace_back("empty", as_buffer({}));
  bad.emplace_back("none", nullptr);
  bad.emplace_back("first byte", as_buffer({honest.begin(), honest.begin() + 1}));
  bad.emplace_back("31 bytes", as_buffer({honest.begin(), honest.end() - 1}));
  auto longer = honest;
  longer.push_back(0);
  bad.emplace_back("33 bytes", as_buffer(longer));
  for (std::size_t i : {std::size_t{0}, std::size_t{15}, std::size_t{31}}) {
    auto flipped = honest;
    flipped[i] ^= 0x80;
    bad.emplace_back("bit flipped in byte " + std::to_string(i), as_buffer(flipped));
  }
  for (auto& [what, payload] : bad) {
    session_ciphers s;
    EXPECT_FALSE(server.on_proof(payload, s)) << what;
    EXPECT_FALSE(s.opener) << what;
  }
  // The honest proof still completes the same handshake: a refusal above
  // changed nothing on the server's side.
  session_ciphers s;
  EXPECT_TRUE(server.on_proof(*good, s));
}

TEST(SessionHandshake, ATruncatedOrGarbledAcceptIsRefusedByTheClient) {
  client_handshake client(params_of("the shared key!!"));
  server_handshake server(params_of("the shared key!!"), client.open_payload());
  auto accept = server.accept_payload();
  ASSERT_TRUE(accept);
  const std::vector<uint8_t> honest((*accept)->data(), (*accept)->data() + (*accept)->size());
  for (std::size_t keep : {std::size_t{0}, std::size_t{1}, std::size_t{32}, honest.size() - 32,
                           honest.size() - 1}) {
    auto cut = make_buffer(keep);
    if (keep > 0)
      std::memcpy(cut->data(), honest.data(), keep);
    session_ciphers c;
    EXPECT_FALSE(client.on_accept(cut, c)) << keep << " of " << honest.size() << " bytes";
    EXPECT_FALSE(c.opener);
  }
  // The last byte of the proof altered.
  auto garbled = make_buffer(honest.size());
  std::memcpy(garbled->data(), honest.data(), honest.size());
  garbled->data()[honest.size() - 1] ^= 1;
  session_ciphers c;
  EXPECT_FALSE(client.on_accept(garbled, c));
  EXPECT_FALSE(c.opener);
}

TEST(SessionHandshake, AnOversizedOrMalformedOpenIsRefused) {
  auto big = make_buffer(unauthenticated_frame_limit + 1);
  std::memset(big->data(), '{', big->size());
  EXPECT_FALSE(decode_session_open(big));
  auto junk = make_buffer(3);
  std::memcpy(junk->data(), "{x}", 3);
  EXPECT_FALSE(decode_session_open(junk));
  EXPECT_FALSE(decode_session_open(nullptr));
}

} // namespace
} // namespace hast::peer
