#pragma once

// The control socket between hastctl and hastd: a Unix stream socket (mode
// 0600), one request and one reply per connection; a streaming request
// (`events`) instead gets a confirmation, then frames until either side
// closes. A frame is a 4-byte
// little-endian length followed by that many bytes of JSON. A frame over
// `max_frame` bytes, bad JSON or a request without a "command" closes the
// connection with a logged reason; the daemon goes on.

#include "base/errc.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace hast::control {

inline constexpr uint32_t max_frame = 1u << 20;

/// Answers one request; runs on the control thread.
using handler = std::function<nlohmann::json(const nlohmann::json& request)>;

/// Takes over a connection whose request is a streaming one, after the
/// server sent the confirmation {"streaming": true}; owns `fd` from then on.
using stream_handler = std::function<void(const nlohmann::json& request, int fd)>;

/// The commands that stream instead of answering once.
inline bool is_streaming(const nlohmann::json& request) {
  return request.value("command", "") == "events";
}

/// Serves the control socket on its own thread.
class server {
public:
  server(std::string path, handler handle, stream_handler stream = {});
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds the socket (mode 0600, parent directory created), starts the thread.
  status start();
  /// Stops accepting and joins the thread.
  void stop();

private:
  void run();
  /// False when the connection was handed to the stream handler.
  bool serve(int fd);

  std::string path_;
  handler handle_;
  stream_handler stream_;
  int listen_fd_ = -1;
  bool bound_ = false;  // the socket file at path_ is ours
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
};

/// hastctl's side: sends `request`, waits for the reply. Errors say whether
/// the daemon is not running or the exchange failed.
result<nlohmann::json> call(const std::string& path, const nlohmann::json& request,
                            int timeout_seconds);

/// hastctl's side of a streaming request: sends it and waits for the
/// confirmation (or the daemon's error); returns the connection, on which
/// frames then arrive with no time limit.
result<int> open_stream(const std::string& path, const nlohmann::json& request,
                        int timeout_seconds);

/// The text of a reply or event: `j` as JSON, with any byte sequence that
/// is not UTF-8 replaced by U+FFFD. Strings that reach a reply may come
/// from a peer or a witness (a refusal, a goodbye); they must not make
/// serialising it fail.
std::string to_text(const nlohmann::json& j);
std::string to_text(const nlohmann::ordered_json& j);

/// Frame helpers, shared by both sides, the event hub and the tests.
/// encode_frame: the 4-byte little-endian length, then `body`.
std::string encode_frame(const std::string& body);
status write_frame(int fd, const std::string& body);
result<std::string> read_frame(int fd);

/// The body length a frame header announces; errc::protocol_error over
/// `max_frame` (checked before anything is allocated for the body).
result<uint32_t> decode_frame_length(const uint8_t (&header)[4]);

/// The daemon's reading of a request body: a JSON object whose "command" is
/// a string, else errc::protocol_error saying what is wrong.
result<nlohmann::json> parse_request(std::string_view body);

} // namespace hast::control
