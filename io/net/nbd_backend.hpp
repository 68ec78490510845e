#pragma once

// What an NBD session needs from the thing it exports. io/net/nbd_server.cpp
// speaks the protocol; actors/ implement this interface by sending typed
// messages to the resource actor.
//
// Requests travel in batches, as the client sent them: the session decodes
// every complete request it has received and submits them with one call, so
// that a pipelining client costs one hand-off per burst rather than one per
// request. Replies come back in batches too (reply_sink::deliver), each batch
// one hand-off to the session's strand.

#include "io/codec/buffer.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hast::nbd {

struct export_info {
  uint64_t size = 0;
  /// The size the export may grow to (hastctl grow), at least `size`; 0:
  /// `size`. The device view (device_view_name) advertises it.
  uint64_t ceiling = 0;
  bool read_only = false;
  bool can_flush = true;
  bool can_fua = true;
  bool can_trim = true;
  bool can_write_zeroes = true;
  bool can_multi_conn = true;
  std::string description;
};

/// Result of an open: an empty `error` means the export may be used.
struct open_result {
  std::string error;
  export_info info;
};

enum class command : uint8_t { read, write, flush, trim, write_zeroes };

/// One request the session has validated (nbd::validate): its range lies
/// inside the export and its command was advertised.
struct request {
  command kind = command::read;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0; // read/write/trim/write_zeroes bytes; 0 for flush
  bool fua = false;
  bool may_trim = false; // write_zeroes without NBD_CMD_FLAG_NO_HOLE
  buffer_ptr data;       // write: the payload, exactly `length` bytes, 4 KiB-aligned
  /// When the export handed it over (a client's request; the latency
  /// figures start here); unset for requests from the peer.
  std::chrono::steady_clock::time_point arrived{};
};

struct reply {
  uint64_t cookie = 0;
  command kind = command::read;
  uint32_t length = 0; // the request's length (the session charges/validates with it)
  uint32_t error = 0;  // NBD error code (0 = success); values the protocol lacks go out as EIO
  buffer_ptr data;     // read success: at least `length` bytes
  std::chrono::steady_clock::time_point arrived{};  // the request's
};

/// Builds the reply to `r` (copies cookie, kind, length).
inline reply make_reply(const request& r, uint32_t error, buffer_ptr data = nullptr) {
  return {r.cookie, r.kind, r.length, error, std::move(data), r.arrived};
}

/// Where a backend sends replies; implemented by the session. deliver() may
/// be called from any thread; each call costs one hand-off to the session's
/// strand, whatever the number of replies.
class reply_sink {
public:
  virtual ~reply_sink() = default;
  virtual void deliver(std::vector<reply> replies) = 0;
};
using reply_sink_ptr = std::shared_ptr<reply_sink>;

class backend {
public:
  virtual ~backend() = default;

  /// The client asked for the export (NBD_OPT_GO/INFO). Refuse with a message
  /// when the resource is not primary.
  virtual void open(std::function<void(open_result)> done) = 0;

  /// Valid requests in arrival order, decoded from what the client sent at
  /// once. Each is answered exactly once through `sink`, in any order and in
  /// batches of any size.
  virtual void submit(std::vector<request> batch, reply_sink_ptr sink) = 0;

  /// The connection is gone; no more calls follow. Called exactly once if
  /// open() succeeded, and only when no submitted request is unanswered.
  virtual void close() = 0;

  /// The export's size now: it grows while connections stay open (hastctl
  /// grow), while each connection keeps the size it negotiated. The device
  /// view asks before each request; 0: the size open() reported. Any thread.
  virtual uint64_t size_now() const { return 0; }
};

/// Makes one backend per accepted connection, for the export named `name`.
using backend_factory = std::function<std::shared_ptr<backend>()>;

/// Completions of one request inside the daemon (messages/actors.hpp's
/// nbd_call, which also carries replicated requests on a secondary). Not part
/// of the backend interface above; `error` is an NBD error code.
using done_fn = std::function<void(uint32_t error)>;
using read_done_fn = std::function<void(uint32_t error, buffer_ptr data)>;

} // namespace hast::nbd
