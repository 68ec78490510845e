// io/net/frame_reader: the bytes of a peer or witness connection become frames
// the same whatever the reads look like; caps and the session's AEAD are
// applied before anything is handed out.

#include "io/net/frame_reader.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace hast::peer {
namespace {

using bytes = std::vector<uint8_t>;

bytes wire_frame(header h, const bytes& payload) {
  h.payload_length = static_cast<uint32_t>(payload.size());
  const auto head = encode_header(h);
  bytes out(header_size + payload.size());
  std::memcpy(out.data(), head.data(), header_size);
  if (!payload.empty())
    std::memcpy(out.data() + header_size, payload.data(), payload.size());
  return out;
}

bytes pattern(std::size_t n) {
  bytes out(n);
  for (std::size_t i = 0; i < n; ++i)
    out[i] = static_cast<uint8_t>(i * 7 + i / 251);
  return out;
}

/// Feeds `wire` in reads of at most `step` bytes; the frames, and the error
/// if the reader failed.
struct outcome {
  std::vector<frame> frames;
  std::string error;
  std::size_t reads = 0;
};

outcome feed(frame_reader& reader, const bytes& wire, std::size_t step) {
  outcome out;
  std::size_t pos = 0;
  for (;;) {
    frame f;
    switch (reader.next(f, out.error)) {
    case frame_reader::step::frame:
      out.frames.push_back(std::move(f));
      continue;
    case frame_reader::step::failed:
      return out;
    case frame_reader::step::more:
      break;
    }
    if (pos == wire.size())
      return out;
    auto space = reader.space();
    EXPECT_FALSE(space.empty());
    std::size_t n = std::min(space.size(), wire.size() - pos);
    if (!reader.reading_large())
      n = std::min(n, step);
    std::memcpy(space.data(), wire.data() + pos, n);
    reader.filled(n);
    pos += n;
    ++out.reads;
  }
}

TEST(FrameReader, FramesComeOutTheSameWhateverTheReadSizes) {
  bytes wire;
  for (std::size_t size : {0u, 1u, 100u, 16000u, 70000u, 5u}) {
    header h;
    h.type = msg_type::write;
    h.seq = size;
    const auto f = wire_frame(h, pattern(size));
    wire.insert(wire.end(), f.begin(), f.end());
  }
  for (std::size_t step : {std::size_t{1}, std::size_t{79}, std::size_t{4096}, wire.size()}) {
    frame_reader reader;
    reader.lift_limits();
    auto out = feed(reader, wire, step);
    EXPECT_EQ(out.error, "") << "reads of " << step;
    ASSERT_EQ(out.frames.size(), 6u) << "reads of " << step;
    std::size_t i = 0;
    for (std::size_t size : {0u, 1u, 100u, 16000u, 70000u, 5u}) {
      const auto& f = out.frames[i++];
      EXPECT_EQ(f.h.seq, size);
      ASSERT_EQ(f.payload ? f.payload->size() : 0, size);
      if (size > 0) {
        EXPECT_EQ(std::memcmp(f.payload->data(), pattern(size).data(), size), 0);
      }
    }
  }
}

TEST(FrameReader, BeforeAuthenticationAFrameOverTheLimitFailsAtItsHeader) {
  header h;
  h.type = msg_type::session_open;
  frame_reader reader;
  auto at_limit = feed(reader, wire_frame(h, bytes(unauthenticated_frame_limit, '{')), 4096);
  EXPECT_EQ(at_limit.error, "");
  EXPECT_EQ(at_limit.frames.size(), 1u);

  frame_reader fresh;
  auto head = encode_header([&] {
    header big = h;
    big.payload_length = unauthenticated_frame_limit + 1;
    return big;
  }());
  auto over = feed(fresh, bytes(head.begin(), head.end()), 4096);
  EXPECT_TRUE(over.frames.empty());
  EXPECT_NE(over.error.find("before authentication"), std::string::npos) << over.error;
  EXPECT_EQ(fresh.buffered(), header_size) << "nothing of the payload was awaited";
}

class sealed_frames : public ::testing::Test {
protected:
  sealed_frames() {
    for (std::size_t i = 0; i < key.size(); ++i)
      key[i] = static_cast<uint8_t>(i + 1);
  }

  bytes seal(frame_cipher& sealer, header h, const bytes& payload) {
    h.payload_length = static_cast<uint32_t>(payload.size() + tag_size);
    const auto head = encode_header(h);
    bytes text(payload.size());
    std::array<uint8_t, tag_size> tag{};
    EXPECT_TRUE(sealer.seal(head, payload.empty() ? nullptr : payload.data(),
                            payload.empty() ? nullptr : text.data(), payload.size(), tag));
    bytes out(header_size + text.size() + tag_size);
    std::memcpy(out.data(), head.data(), header_size);
    if (!text.empty())
      std::memcpy(out.data() + header_size, text.data(), text.size());
    std::memcpy(out.data() + header_size + text.size(), tag.data(), tag_size);
    return out;
  }

  std::array<uint8_t, 32> key{};
};

TEST_F(sealed_frames, AreOpenedInOrderWithTheTagStripped) {
  frame_cipher sealer(frame_cipher::direction::seal, aead_cipher::aes_256_gcm, true, key);
  bytes wire;
  for (std::size_t size : {0u, 300u, 50000u}) {
    header h;
    h.type = msg_type::read_reply;
    h.seq = size;
    const auto f = seal(sealer, h, pattern(size));
    wire.insert(wire.end(), f.begin(), f.end());
  }
  frame_reader reader;
  reader.open_with(
    std::make_unique<frame_cipher>(frame_cipher::direction::open, aead_cipher::aes_256_gcm, true, key),
    true);
  auto out = feed(reader, wire, 1000);
  EXPECT_EQ(out.error, "");
  ASSERT_EQ(out.frames.size(), 3u);
  EXPECT_EQ(out.frames[0].payload, nullptr);
  EXPECT_EQ(out.frames[0].h.payload_length, 0u);
  ASSERT_NE(out.frames[2].payload, nullptr);
  EXPECT_EQ(out.frames[2].h.payload_length, 50000u);
  EXPECT_EQ(std::memcmp(out.frames[2].payload->data(), pattern(50000).data(), 50000), 0);
}

TEST_F(sealed_frames, AReplayedFrameFailsAndNothingOfItComesOut) {
  frame_cipher sealer(frame_cipher::direction::seal, aead_cipher::chacha20_poly1305, true, key);
  header h;
  h.type = msg_type::write;
  auto wire = seal(sealer, h, pattern(64));
  const bytes first = wire;
  wire.insert(wire.end(), first.begin(), first.end());
  frame_reader reader;
  reader.open_with(std::make_unique<frame_cipher>(frame_cipher::direction::open,
                                                  aead_cipher::chacha20_poly1305, true, key),
                   true);
  auto out = feed(reader, wire, wire.size());
  EXPECT_EQ(out.frames.size(), 1u);
  EXPECT_NE(out.error.find("fails authentication"), std::string::npos) << out.error;
}

} // namespace
} // namespace hast::peer
