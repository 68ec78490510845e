// The control socket's decoding, driven without a socket: the frame length
// check and the reading of a request body.

#include "io/net/control_channel.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

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

/// A directory of its own for one test's socket, removed afterwards.
class ControlServer : public scratch_test {};

TEST_F(ControlServer, AReplyCarryingBytesThatAreNotUtf8IsSentWithReplacementCharacters) {
  // A witness's goodbye text, say, that reaches a status reply as it came.
  server srv{path("ctl.sock"), [](const nlohmann::json&) {
               return nlohmann::json{{"goodbye", std::string{"bye \xff\xfe now"}}};
             }};
  ASSERT_TRUE(srv.start());
  auto reply = call(path("ctl.sock"), {{"command", "status"}}, 5);
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ((*reply)["goodbye"], "bye \xEF\xBF\xBD\xEF\xBF\xBD now");
  // The server is still there for the next request.
  EXPECT_TRUE(call(path("ctl.sock"), {{"command", "status"}}, 5));
}

TEST(ControlChannel, ToTextReplacesInvalidUtf8InOrderedJsonToo) {
  nlohmann::ordered_json j{{"b", 1}, {"a", std::string{"\xc3"}}};
  EXPECT_EQ(to_text(j), "{\"b\":1,\"a\":\"\xEF\xBF\xBD\"}");
}

TEST_F(ControlServer, ARegularFileAtTheSocketPathIsNeverRemoved) {
  {
    std::ofstream f{path("ctl.sock")};
    f << "someone's file\n";
  }
  server srv{path("ctl.sock"), [](const nlohmann::json&) { return nlohmann::json::object(); }};
  auto st = srv.start();
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("not a socket"), std::string::npos) << st.message();
  std::ifstream f{path("ctl.sock")};
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "someone's file");
}

TEST_F(ControlServer, ADirectoryAtTheSocketPathIsNeverRemoved) {
  std::filesystem::create_directories(path("ctl.sock") + "/inside");
  server srv{path("ctl.sock"), [](const nlohmann::json&) { return nlohmann::json::object(); }};
  auto st = srv.start();
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("not a socket"), std::string::npos) << st.message();
  EXPECT_TRUE(std::filesystem::is_directory(path("ctl.sock") + "/inside"));
}

TEST_F(ControlServer, AStaleSocketLeftByACrashedDaemonIsReplaced) {
  {
    server first{path("ctl.sock"), [](const nlohmann::json&) { return nlohmann::json::object(); }};
    ASSERT_TRUE(first.start());
  }
  // stop() removed it; leave a socket file nobody listens on.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path("ctl.sock").c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  server srv{path("ctl.sock"), [](const nlohmann::json&) { return nlohmann::json{{"ok", true}}; }};
  ASSERT_TRUE(srv.start());
  auto reply = call(path("ctl.sock"), {{"command", "status"}}, 5);
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ((*reply)["ok"], true);
}

} // namespace
} // namespace hast::control
