// The /metrics endpoint under a flood of idle connections: it holds no more
// than max_metrics_connections of them (the rest wait in the kernel's
// backlog), and once they go it answers a scrape again. A real server on
// a loopback port.

#include "io/net/metrics_server.hpp"

#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace hast {
namespace {

using namespace std::chrono_literals;

/// A loopback port nobody listens on right now.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// Descriptors open in this process.
size_t open_descriptors() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

TEST(MetricsServer, AFloodOfIdleConnectionsHoldsNoMoreThanTheCapAndScrapesResumeAfter) {
  metrics_server srv{[]() -> result<std::string> { return std::string{"hast_up 1\n"}; }};
  const auto port = free_port();
  ASSERT_TRUE(srv.start("tcp://127.0.0.1:" + std::to_string(port)));
  {
    httplib::Client client{"127.0.0.1", port};
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->body, "hast_up 1\n");
  }
  std::this_thread::sleep_for(200ms);
  const auto before = open_descriptors();
  constexpr size_t flood = 40;
  std::vector<int> idle;
  for (size_t i = 0; i < flood; ++i) {
    // Not waiting for the connection: once the server stops accepting, the
    // kernel's backlog fills and further handshakes wait for room.
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
    idle.push_back(fd);
    // Spaced, so that a server that accepts everything has accepted each
    // one before the next comes (a burst would overflow the backlog).
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(500ms);
  // The clients' descriptors, plus the server's accepted ones.
  const auto held = open_descriptors() - before - flood;
  EXPECT_LE(held, max_metrics_connections + 1)
      << "the server holds " << held << " of " << flood << " idle connections";
  for (int fd : idle)
    ::close(fd);
  httplib::Client client{"127.0.0.1", port};
  client.set_read_timeout(std::chrono::seconds(2 * metrics_io_timeout));
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << "no scrape after the flood";
  EXPECT_EQ(res->status, 200);
  srv.stop();
}

} // namespace
} // namespace hast
