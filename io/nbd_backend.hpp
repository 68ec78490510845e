#pragma once

// What an NBD session needs from the thing it exports. io/nbd_server.cpp
// speaks the protocol; actors/ implement this interface by sending typed
// messages to the resource actor. Completions may be called from any thread;
// the server re-posts them onto the session's strand.

#include "io/buffer.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace hast::nbd {

struct export_info {
  uint64_t size = 0;
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

/// `error` is an NBD error code (0 on success, NBD_EIO, NBD_ENOSPC, ...).
using done_fn = std::function<void(uint32_t error)>;
using read_done_fn = std::function<void(uint32_t error, buffer_ptr data)>;

class backend {
public:
  virtual ~backend() = default;

  /// The client asked for the export (NBD_OPT_GO/INFO). Refuse with a message
  /// when the resource is not primary.
  virtual void open(std::function<void(open_result)> done) = 0;

  virtual void read(uint64_t offset, uint32_t length, read_done_fn done) = 0;
  virtual void write(uint64_t offset, buffer_ptr data, bool fua, done_fn done) = 0;
  virtual void flush(done_fn done) = 0;
  virtual void trim(uint64_t offset, uint32_t length, bool fua, done_fn done) = 0;
  virtual void write_zeroes(uint64_t offset, uint32_t length, bool may_trim, bool fua,
                            done_fn done) = 0;

  /// The connection is gone; no more calls follow. Called exactly once if
  /// open() succeeded.
  virtual void close() = 0;
};

/// Makes one backend per accepted connection, for the export named `name`.
using backend_factory = std::function<std::shared_ptr<backend>()>;

} // namespace hast::nbd
