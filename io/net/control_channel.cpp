#include "io/net/control_channel.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace hast::control {

namespace {

std::string errno_text(int error) {
  return std::strerror(error);
}

status io_all(int fd, void* data, size_t len, bool writing) {
  auto* p = static_cast<uint8_t*>(data);
  while (len > 0) {
    auto n = writing ? ::send(fd, p, len, MSG_NOSIGNAL) : ::recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return {errc::io_error, errno == EAGAIN ? "timed out" : errno_text(errno)};
    if (n == 0)
      return {errc::disconnected, "connection closed"};
    p += n;
    len -= static_cast<size_t>(n);
  }
  return status::ok();
}

bool make_address(const std::string& path, sockaddr_un& addr) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

void set_timeouts(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

} // namespace

std::string to_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string to_text(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string encode_frame(const std::string& body) {
  std::string out(4, '\0');
  const auto n = static_cast<uint32_t>(body.size());
  for (int i = 0; i < 4; ++i)
    out[i] = static_cast<char>(n >> (8 * i));
  return out + body;
}

status write_frame(int fd, const std::string& body) {
  if (body.size() > max_frame)
    return {errc::invalid_argument, "message too large"};
  auto frame = encode_frame(body);
  return io_all(fd, frame.data(), frame.size(), true);
}

result<std::string> read_frame(int fd) {
  uint8_t header[4];
  if (auto st = io_all(fd, header, 4, false); !st)
    return st;
  auto length = decode_frame_length(header);
  if (!length)
    return length.error();
  const uint32_t n = *length;
  std::string body(n, '\0');
  if (auto st = io_all(fd, body.data(), n, false); !st)
    return st;
  return body;
}

result<uint32_t> decode_frame_length(const uint8_t (&header)[4]) {
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i)
    n |= uint32_t{header[i]} << (8 * i);
  if (n > max_frame)
    return status{errc::protocol_error,
                  "frame of " + std::to_string(n) + " bytes exceeds the limit of "
                    + std::to_string(max_frame)};
  return n;
}

result<nlohmann::json> parse_request(std::string_view body) {
  nlohmann::json request;
  try {
    request = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    return status{errc::protocol_error, std::string{"request is not JSON ("} + e.what() + ")"};
  }
  if (!request.is_object() || !request.contains("command") || !request["command"].is_string())
    return status{errc::protocol_error, "request has no \"command\""};
  return request;
}

server::server(std::string path, handler handle, stream_handler stream)
  : path_(std::move(path)), handle_(std::move(handle)), stream_(std::move(stream)) {
}

server::~server() {
  stop();
}

status server::start() {
  sockaddr_un addr;
  if (!make_address(path_, addr))
    return {errc::invalid_argument, "control socket path too long: " + path_};
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
  // A socket left by a crashed daemon is replaced; a live daemon answers.
  // Anything else at the path (a file, a directory, a link) is someone
  // else's and is never removed.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return {errc::busy, "the control socket path " + path_
                              + " exists and is not a socket; not removing it"};
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool alive = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(probe);
    if (alive)
      return {errc::busy, "another hastd is serving the control socket " + path_};
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
      return {errc::io_error,
              "cannot remove the stale control socket " + path_ + ": " + errno_text(errno)};
  } else if (errno != ENOENT) {
    return {errc::io_error, "cannot examine the control socket path " + path_ + ": "
                                + errno_text(errno)};
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0)
    return {errc::io_error, "socket: " + errno_text(errno)};
  auto old_mask = ::umask(0177);
  auto rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  if (rc != 0 || ::chmod(path_.c_str(), 0600) != 0 || ::listen(listen_fd_, 8) != 0) {
    auto text = errno_text(errno);
    ::close(listen_fd_);
    listen_fd_ = -1;
    return {errc::io_error, "cannot listen on control socket " + path_ + ": " + text};
  }
  bound_ = true;
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0)
    return {errc::io_error, "pipe: " + errno_text(errno)};
  thread_ = std::thread{[this] { run(); }};
  return status::ok();
}

void server::stop() {
  if (thread_.joinable()) {
    char c = 1;
    [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
    thread_.join();
  }
  for (int* fd : {&listen_fd_, &wake_pipe_[0], &wake_pipe_[1]}) {
    if (*fd >= 0)
      ::close(*fd);
    *fd = -1;
  }
  // Only a socket this server bound is removed: a refused second daemon
  // must not take the running one's socket away.
  if (bound_)
    ::unlink(path_.c_str());
  bound_ = false;
}

void server::run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      spdlog::error("control: poll failed: {}", errno_text(errno));
      return;
    }
    if (fds[1].revents != 0)
      return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    if (serve(fd))
      ::close(fd);
  }
}

bool server::serve(int fd) {
  set_timeouts(fd, 5);
  auto body = read_frame(fd);
  if (!body) {
    spdlog::warn("control: closing connection: {}", body.error().message());
    return true;
  }
  auto request = parse_request(*body);
  if (!request) {
    spdlog::warn("control: closing connection: {}", request.error().detail());
    return true;
  }
  if (is_streaming(*request) && stream_) {
    if (auto st = write_frame(fd, R"({"streaming":true})"); !st) {
      spdlog::warn("control: cannot confirm a stream: {}", st.message());
      return true;
    }
    stream_(*request, fd);
    return false;
  }
  nlohmann::json reply;
  try {
    reply = handle_(*request);
  } catch (const std::exception& e) {
    spdlog::warn("control: malformed request: {}", e.what());
    reply = {{"error", std::string{"malformed request: "} + e.what()}};
  }
  // Role changes may take long; the reply goes out whenever it is ready.
  set_timeouts(fd, 5);
  if (auto st = write_frame(fd, to_text(reply)); !st)
    spdlog::warn("control: cannot send reply: {}", st.message());
  return true;
}

namespace {

/// Connects and sends `request`; the descriptor, or why not.
result<int> send_request(const std::string& path, const nlohmann::json& request,
                         int timeout_seconds) {
  sockaddr_un addr;
  if (!make_address(path, addr))
    return status{errc::invalid_argument, "control socket path too long: " + path};
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return status{errc::io_error, "socket: " + errno_text(errno)};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    auto error = errno;
    ::close(fd);
    return status{errc::disconnected,
                  "hastd is not running (cannot connect to " + path + ": " + errno_text(error) + ")"};
  }
  set_timeouts(fd, timeout_seconds);
  auto st = write_frame(fd, request.dump());
  if (!st) {
    ::close(fd);
    return st;
  }
  return fd;
}

} // namespace

result<int> open_stream(const std::string& path, const nlohmann::json& request,
                        int timeout_seconds) {
  auto fd = send_request(path, request, timeout_seconds);
  if (!fd)
    return fd;
  auto body = read_frame(*fd);
  if (!body) {
    ::close(*fd);
    return status{body.error().code(), "no reply from hastd: " + body.error().message()};
  }
  auto reply = nlohmann::json::parse(*body, nullptr, false);
  if (!reply.is_object() || !reply.value("streaming", false)) {
    ::close(*fd);
    if (reply.is_object() && reply.contains("error") && reply["error"].is_string())
      return status{errc::invalid_argument, reply["error"].get<std::string>()};
    return status{errc::protocol_error, "hastd did not start the stream (an older hastd?)"};
  }
  set_timeouts(*fd, 0);  // events come when they happen
  return *fd;
}

result<nlohmann::json> call(const std::string& path, const nlohmann::json& request,
                            int timeout_seconds) {
  auto fd_or = send_request(path, request, timeout_seconds);
  if (!fd_or)
    return fd_or.error();
  int fd = *fd_or;
  auto body = read_frame(fd);
  ::close(fd);
  if (!body)
    return status{body.error().code(), "no reply from hastd: " + body.error().message()};
  try {
    return nlohmann::json::parse(*body);
  } catch (const nlohmann::json::exception& e) {
    return status{errc::protocol_error, std::string{"bad reply from hastd: "} + e.what()};
  }
}

} // namespace hast::control
