// The control socket's decoding, driven without a socket: the frame length
// check and the reading of a request body.

#include "io/control_channel.hpp"

#include <gtest/gtest.h>

namespace hast::control {
namespace {

TEST(ControlChannel, AFrameLengthOverTheLimitIsRefusedBeforeAnyAllocation) {
  const uint8_t largest[4] = {0x00, 0x00, 0x10, 0x00}; // 1 MiB, little-endian
  ASSERT_TRUE(decode_frame_length(largest));
  EXPECT_EQ(*decode_frame_length(largest), max_frame);
  const uint8_t over[4] = {0x01, 0x00, 0x10, 0x00};
  EXPECT_FALSE(decode_frame_length(over));
  const uint8_t four_gib[4] = {0xff, 0xff, 0xff, 0xff};
  const auto refused = decode_frame_length(four_gib);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::protocol_error);
}

TEST(ControlChannel, ARequestIsAJsonObjectWithAStringCommand) {
  const auto ok = parse_request(R"({"command":"status","resources":["r0"]})");
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["command"], "status");
  for (const char* bad : {"", "{", "[]", R"({"cmd":"status"})", R"({"command":1})", "\"status\""}) {
    const auto refused = parse_request(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().code(), errc::protocol_error) << bad;
  }
}

} // namespace
} // namespace hast::control
