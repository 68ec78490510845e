#include "io/nbd_server.hpp"

#include "config/config.hpp"
#include "io/asio.hpp"
#include "io/nbd_protocol.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <list>
#include <mutex>
#include <optional>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

namespace hast::nbd {

namespace {

using stream = asio::generic::stream_protocol;
using strand_type = asio::strand<asio::io_context::executor_type>;
/// A socket whose handlers run on its session's strand by default.
using socket_type = stream::socket::rebind_executor<strand_type>::other;

/// Options a client may send in one handshake before we call it abuse.
constexpr std::size_t max_options = 64;
/// Reading of new requests pauses while this many requests, or requests
/// carrying this many payload bytes, wait for their replies to be written.
/// Bounds the memory one pipelining client can pin.
constexpr std::size_t max_outstanding_requests = 512;
constexpr uint64_t max_outstanding_bytes = 128u << 20;
/// Replies gathered into one write (one writev).
constexpr std::size_t max_replies_per_write = 64;
/// Block sizes we advertise: any alignment works, 4 KiB is best.
constexpr uint32_t minimum_block = 1;
constexpr uint32_t preferred_block = 4096;
/// Chunk used to skip the payload of a WRITE we refuse.
constexpr std::size_t discard_chunk = 64u << 10;

std::string errno_text(int error) {
  return std::strerror(error);
}

/// Only the error values the protocol defines may go on the wire.
uint32_t wire_error(uint32_t error) {
  switch (error) {
  case 0:
  case eperm:
  case eio:
  case enomem:
  case einval:
  case enospc:
  case eoverflow:
  case enotsup:
  case eshutdown:
    return error;
  }
  return eio;
}

std::string describe_tcp(const asio::ip::tcp::endpoint& ep) {
  if (ep.address().is_v6())
    return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

std::optional<asio::ip::tcp::endpoint> as_tcp(const stream::endpoint& ep) {
  const int family = ep.protocol().family();
  if (family != AF_INET && family != AF_INET6)
    return std::nullopt;
  asio::ip::tcp::endpoint out;
  std::memcpy(out.data(), ep.data(), std::min<std::size_t>(ep.size(), out.capacity()));
  out.resize(ep.size());
  return out;
}

/// "10.0.0.1:51234", or for a Unix socket the peer's process and user.
template <class Socket> std::string describe_peer(Socket& socket) {
  std::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (!ec) {
    if (auto tcp = as_tcp(ep))
      return describe_tcp(*tcp);
  }
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
    return fmt::format("pid {} uid {}", cred.pid, cred.uid);
  return "unix peer";
}

class session;

} // namespace

// --- The listening side ----------------------------------------------------------

struct server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& io, std::string export_name, std::string address, backend_factory factory)
      : io(io), strand(asio::make_strand(io)), export_name(std::move(export_name)),
        address(std::move(address)), factory(std::move(factory)), acceptor(strand),
        retry_timer(strand) {}

  status start();
  void accept();
  void on_accept(std::error_code ec, socket_type socket);
  void shut_down();
  void close_sessions(const std::string& why);
  void session_ended() { connections.fetch_sub(1, std::memory_order_relaxed); }

  status failure(errc code, const std::string& why) const {
    return {code, fmt::format("nbd {}: cannot listen on {}: {}", export_name, address, why)};
  }

  asio::io_context& io;
  strand_type strand;
  const std::string export_name;
  const std::string address;
  const backend_factory factory;
  asio::basic_socket_acceptor<stream, strand_type> acceptor;
  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, strand_type>
      retry_timer;
  std::atomic<std::size_t> connections{0};
  std::atomic<bool> stopping{false};
  uint64_t accepted = 0; // numbers the connections in log lines

  // Touched only on `strand`.
  std::list<std::weak_ptr<session>> sessions;
  bool shut = false;

  // The Unix socket file we created, to remove on stop (only if it is still
  // ours: same device and inode).
  std::string socket_path;
  dev_t socket_dev = 0;
  ino_t socket_ino = 0;

  mutable std::mutex bound_mutex;
  std::string bound;
};

// --- One connection --------------------------------------------------------------------

namespace {

/// One message to send: an option reply (handshake), or a simple reply with,
/// for READ, the data buffer sent as is.
struct outgoing {
  std::vector<uint8_t> bytes;                     // handshake messages
  std::array<uint8_t, simple_reply_size> reply{}; // transmission replies
  buffer_ptr data;                                // READ payload, not copied
  uint32_t data_length = 0;
  bool answers_request = false;
  uint64_t charged_bytes = 0; // released when written
};

class session : public std::enable_shared_from_this<session> {
public:
  session(std::shared_ptr<server::impl> owner, socket_type socket, std::string peer)
      : owner_(std::move(owner)), strand_(socket.get_executor()), socket_(std::move(socket)),
        peer_(std::move(peer)) {}

  ~session() {
    // Only reached with close() still owed when handlers were dropped
    // without running (io_context destroyed): honour "exactly once".
    if (opened_ && !backend_closed_)
      backend_->close();
    if (!counted_out_)
      owner_->session_ended();
  }

  void start() {
    asio::post(strand_, [self = shared_from_this()] {
      spdlog::debug("nbd {}: {}: connected", self->owner_->export_name, self->peer_);
      const auto handshake = encode_handshake();
      self->enqueue_bytes(std::vector<uint8_t>(handshake.begin(), handshake.end()));
      self->read_client_flags();
    });
  }

  /// Ends the connection at once. Any thread.
  void stop(std::string why) {
    asio::post(strand_,
               [self = shared_from_this(), why = std::move(why)] { self->close(why, false); });
  }

private:
  // --- Handshake ---------------------------------------------------------------

  void read_client_flags() {
    asio::async_read(socket_, asio::buffer(small_, 4),
                     [self = shared_from_this()](std::error_code ec, std::size_t) {
                       self->on_client_flags(ec);
                     });
  }

  void on_client_flags(std::error_code ec) {
    if (closed_)
      return;
    if (ec)
      return socket_failed(ec, "reading the client flags");
    const uint32_t flags = get_be32(small_);
    if ((flags & ~known_client_flags) != 0)
      return close(fmt::format("unknown client flags {:#x}", flags), true);
    no_zeroes_ = (flags & flag_c_no_zeroes) != 0;
    read_option();
  }

  void read_option() {
    if (closed_)
      return;
    asio::async_read(socket_, asio::buffer(small_, option_header_size),
                     [self = shared_from_this()](std::error_code ec, std::size_t) {
                       self->on_option_header(ec);
                     });
  }

  void on_option_header(std::error_code ec) {
    if (closed_)
      return;
    if (ec)
      return socket_failed(ec, "reading an option");
    auto header = decode_option_header(small_);
    if (!header)
      return close(fmt::format("bad option magic {:#018x}", get_be64(small_)), true);
    if (header->length > max_option_length)
      return close(fmt::format("option {} of {} bytes (more than {})", option_name(header->option),
                               header->length, max_option_length),
                   true);
    // Counted when the next one arrives, so that the reply to the last
    // allowed option is not dropped by the close.
    if (++options_seen_ > max_options)
      return close(fmt::format("more than {} options in one handshake", max_options), true);
    option_data_.resize(header->length);
    if (header->length == 0)
      return handle_option(header->option);
    asio::async_read(
        socket_, asio::buffer(option_data_),
        [self = shared_from_this(), option = header->option](std::error_code ec, std::size_t) {
          if (self->closed_)
            return;
          if (ec)
            return self->socket_failed(ec, "reading an option");
          self->handle_option(option);
        });
  }

  void handle_option(uint32_t option) {
    switch (option) {
    case opt_export_name:
      return export_name_option();
    case opt_abort:
      enqueue_bytes(encode_option_reply(option, rep_ack));
      close_when_flushed_ = true;
      return after_write();
    case opt_list:
      if (!option_data_.empty()) {
        enqueue_bytes(encode_option_reply(option, rep_err_invalid,
                                          std::string_view{"NBD_OPT_LIST carries no data"}));
      } else {
        enqueue_bytes(encode_server_reply(owner_->export_name));
        enqueue_bytes(encode_option_reply(option, rep_ack));
      }
      return read_option();
    case opt_info:
    case opt_go:
      return info_option(option);
    default:
      // STRUCTURED_REPLY, STARTTLS, meta contexts, extended headers and
      // anything unknown: we offer only the baseline.
      spdlog::debug("nbd {}: {}: option {} ({}) not supported", owner_->export_name, peer_,
                    option_name(option), option);
      enqueue_bytes(encode_option_reply(option, rep_err_unsup));
      return read_option();
    }
  }

  bool names_our_export(std::string_view name) const {
    return name.empty() || name == owner_->export_name;
  }

  void export_name_option() {
    std::string name(option_data_.begin(), option_data_.end());
    if (!names_our_export(name))
      return close(fmt::format("NBD_OPT_EXPORT_NAME for unknown export '{}'", name), true);
    open_export([this, self = shared_from_this()](const std::string& error) {
      if (!error.empty())
        return close(fmt::format("refused: {}", error), true);
      enqueue_bytes(encode_export_name_reply(info_.size, flags_, no_zeroes_));
      enter_transmission();
    });
  }

  void info_option(uint32_t option) {
    auto request = decode_info_request(option_data_);
    if (!request) {
      enqueue_bytes(encode_option_reply(
          option, rep_err_invalid, std::string_view{"malformed NBD_OPT_INFO/NBD_OPT_GO data"}));
      return read_option();
    }
    if (!names_our_export(request->name)) {
      enqueue_bytes(encode_option_reply(option, rep_err_unknown,
                                        fmt::format("no export named '{}' here (this is '{}')",
                                                    request->name, owner_->export_name)));
      return read_option();
    }
    open_export([this, self = shared_from_this(), option](const std::string& error) {
      if (!error.empty()) {
        spdlog::info("nbd {}: {}: export refused: {}", owner_->export_name, peer_, error);
        enqueue_bytes(encode_option_reply(option, rep_err_unknown, error));
        return read_option();
      }
      // NAME and BLOCK_SIZE are sent whether asked for or not, as the
      // protocol allows; the block size tells clients that no alignment is
      // needed and how large a request may be.
      enqueue_bytes(encode_info_export(option, info_.size, flags_));
      enqueue_bytes(encode_info_name(option, owner_->export_name));
      if (!info_.description.empty())
        enqueue_bytes(encode_info_description(option, info_.description));
      enqueue_bytes(encode_info_block_size(option, minimum_block, preferred_block, max_payload));
      enqueue_bytes(encode_option_reply(option, rep_ack));
      if (option == opt_go)
        return enter_transmission();
      read_option();
    });
  }

  /// Opens the export through the backend (once per connection; a refusal
  /// may be retried). `then` runs on the strand with an empty string on
  /// success or the refusal's message.
  template <class Then> void open_export(Then then) {
    if (opened_)
      return then(std::string{});
    if (!backend_) {
      if (owner_->factory)
        backend_ = owner_->factory();
      if (!backend_)
        return then(fmt::format("export {} is not available", owner_->export_name));
    }
    open_pending_ = true;
    backend_->open([self = shared_from_this(), then = std::move(then)](open_result result) mutable {
      asio::post(self->strand_,
                 [self, then = std::move(then), result = std::move(result)]() mutable {
                   self->open_pending_ = false;
                   if (result.error.empty()) {
                     self->opened_ = true;
                     self->info_ = std::move(result.info);
                     self->flags_ = transmission_flags(self->info_);
                   }
                   if (self->closed_)
                     return self->release_backend();
                   then(result.error);
                 });
    });
  }

  void enter_transmission() {
    in_transmission_ = true;
    spdlog::info("nbd {}: {}: attached ({} bytes{}{})", owner_->export_name, peer_, info_.size,
                 info_.read_only ? ", read-only" : "",
                 (flags_ & flag_can_multi_conn) != 0 ? ", multi-conn" : "");
    read_request();
  }

  // --- Transmission --------------------------------------------------------------

  void read_request() {
    if (closed_ || disconnecting_)
      return;
    if (outstanding_ >= max_outstanding_requests || outstanding_bytes_ >= max_outstanding_bytes) {
      read_paused_ = true;
      return;
    }
    asio::async_read(
        socket_, asio::buffer(request_),
        [self = shared_from_this()](std::error_code ec, std::size_t) { self->on_request(ec); });
  }

  void on_request(std::error_code ec) {
    if (closed_)
      return;
    if (ec)
      return socket_failed(ec, "reading a request");
    auto request = decode_request(request_);
    if (!request)
      return close(fmt::format("bad request magic {:#010x}", get_be32(request_)), true);
    const request_header req = *request;

    if (req.type == cmd_disc) {
      spdlog::debug("nbd {}: {}: NBD_CMD_DISC", owner_->export_name, peer_);
      disconnecting_ = true;
      return after_write();
    }

    const uint32_t error = validate(req, info_.size, flags_);
    if (req.type == cmd_write && req.length > max_payload) {
      // Its payload may not even be meant to follow; the stream cannot be
      // resynchronised safely.
      return close(fmt::format("NBD_CMD_WRITE of {} bytes (more than {})", req.length, max_payload),
                   true);
    }
    if (error != 0)
      spdlog::debug("nbd {}: {}: {} offset {} length {} flags {:#x}: {}", owner_->export_name,
                    peer_, command_name(req.type), req.offset, req.length, req.flags,
                    error_name(error));

    const uint64_t payload = req.type == cmd_read || req.type == cmd_write ? req.length : 0;
    ++outstanding_;
    outstanding_bytes_ += payload;

    if (req.type == cmd_write) {
      if (error != 0)
        return discard_payload(req.length, req.cookie, error, payload);
      auto data = make_buffer(req.length);
      asio::async_read(socket_, asio::buffer(data->data(), req.length),
                       [self = shared_from_this(), req, data](std::error_code ec, std::size_t) {
                         if (self->closed_)
                           return;
                         if (ec)
                           return self->socket_failed(ec, "reading a write payload");
                         self->dispatch(req, data);
                         self->read_request();
                       });
      return;
    }

    if (error != 0)
      enqueue_reply(req.cookie, error, nullptr, 0, payload);
    else
      dispatch(req, nullptr);
    read_request();
  }

  /// Skips the payload of a refused WRITE, then answers it: the client
  /// framed it correctly, so the connection stays usable.
  void discard_payload(uint32_t remaining, uint64_t cookie, uint32_t error, uint64_t charged) {
    if (remaining == 0) {
      enqueue_reply(cookie, error, nullptr, 0, charged);
      return read_request();
    }
    discard_.resize(discard_chunk);
    const auto chunk = std::min<std::size_t>(remaining, discard_.size());
    asio::async_read(socket_, asio::buffer(discard_.data(), chunk),
                     [self = shared_from_this(), remaining, cookie, error, charged,
                      chunk](std::error_code ec, std::size_t) {
                       if (self->closed_)
                         return;
                       if (ec)
                         return self->socket_failed(ec, "skipping a refused write payload");
                       self->discard_payload(remaining - static_cast<uint32_t>(chunk), cookie,
                                             error, charged);
                     });
  }

  /// Hands a valid request to the backend; its completion comes back to the
  /// strand and queues the reply.
  void dispatch(const request_header& req, buffer_ptr data) {
    const bool fua = (req.flags & cmd_flag_fua) != 0;
    const uint64_t cookie = req.cookie;
    const uint64_t charged = req.type == cmd_read || req.type == cmd_write ? req.length : 0;
    ++backend_pending_;
    auto done = [self = shared_from_this(), cookie, charged](uint32_t error) {
      asio::post(self->strand_, [self, cookie, charged, error] {
        --self->backend_pending_;
        if (self->closed_)
          return self->release_backend();
        self->enqueue_reply(cookie, wire_error(error), nullptr, 0, charged);
      });
    };
    switch (req.type) {
    case cmd_read: {
      const uint32_t length = req.length;
      backend_->read(req.offset, length,
                     [self = shared_from_this(), cookie, length](uint32_t error, buffer_ptr data) {
                       asio::post(self->strand_, [self, cookie, length, error,
                                                  data = std::move(data)]() mutable {
                         --self->backend_pending_;
                         if (self->closed_)
                           return self->release_backend();
                         self->read_done(cookie, length, wire_error(error), std::move(data));
                       });
                     });
      return;
    }
    case cmd_write:
      return backend_->write(req.offset, std::move(data), fua, std::move(done));
    case cmd_flush:
      return backend_->flush(std::move(done));
    case cmd_trim:
      return backend_->trim(req.offset, req.length, fua, std::move(done));
    case cmd_write_zeroes:
      return backend_->write_zeroes(req.offset, req.length, (req.flags & cmd_flag_no_hole) == 0,
                                    fua, std::move(done));
    default:
      // validate() admits nothing else (CACHE is never advertised).
      --backend_pending_;
      return enqueue_reply(cookie, einval, nullptr, 0, charged);
    }
  }

  void read_done(uint64_t cookie, uint32_t length, uint32_t error, buffer_ptr data) {
    if (error == 0 && (!data || data->size() < length)) {
      // A simple reply cannot carry a short read: the whole length or an error.
      spdlog::warn("nbd {}: {}: backend returned {} of {} bytes for a read", owner_->export_name,
                   peer_, data ? data->size() : 0, length);
      error = eio;
    }
    if (error != 0)
      return enqueue_reply(cookie, error, nullptr, 0, length);
    enqueue_reply(cookie, 0, std::move(data), length, length);
  }

  // --- Writing -------------------------------------------------------------------

  void enqueue_bytes(std::vector<uint8_t> bytes) {
    outgoing out;
    out.bytes = std::move(bytes);
    queue_.push_back(std::move(out));
    write_queued();
  }

  void enqueue_reply(uint64_t cookie, uint32_t error, buffer_ptr data, uint32_t data_length,
                     uint64_t charged) {
    outgoing out;
    out.reply = encode_simple_reply(error, cookie);
    out.data = std::move(data);
    out.data_length = out.data ? data_length : 0;
    out.answers_request = true;
    out.charged_bytes = charged;
    queue_.push_back(std::move(out));
    write_queued();
  }

  void write_queued() {
    if (writing_ || closed_ || queue_.empty())
      return;
    writing_ = true;
    in_write_.clear();
    while (!queue_.empty() && in_write_.size() < max_replies_per_write) {
      in_write_.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    gather_.clear();
    for (const auto& out : in_write_) {
      if (!out.bytes.empty()) {
        gather_.push_back(asio::buffer(out.bytes));
      } else {
        gather_.push_back(asio::buffer(out.reply));
        if (out.data_length > 0)
          gather_.push_back(asio::buffer(out.data->data(), out.data_length));
      }
    }
    asio::async_write(
        socket_, gather_,
        [self = shared_from_this()](std::error_code ec, std::size_t) { self->on_written(ec); });
  }

  void on_written(std::error_code ec) {
    writing_ = false;
    for (const auto& out : in_write_) {
      if (out.answers_request) {
        --outstanding_;
        outstanding_bytes_ -= out.charged_bytes;
      }
    }
    in_write_.clear();
    if (closed_)
      return;
    if (ec)
      return socket_failed(ec, "writing a reply");
    write_queued();
    after_write();
  }

  /// Resumes paused reading, and ends the connection once everything owed
  /// to the client is on the wire (after NBD_CMD_DISC or NBD_OPT_ABORT).
  void after_write() {
    if (closed_)
      return;
    const bool drained = !writing_ && queue_.empty();
    if (close_when_flushed_ && drained)
      return close("NBD_OPT_ABORT", false);
    if (disconnecting_) {
      if (drained && outstanding_ == 0)
        close("client disconnected", false);
      return;
    }
    if (read_paused_ && outstanding_ < max_outstanding_requests
        && outstanding_bytes_ < max_outstanding_bytes) {
      read_paused_ = false;
      read_request();
    }
  }

  // --- Ending ----------------------------------------------------------------------

  void socket_failed(std::error_code ec, std::string_view doing) {
    if (ec == asio::error::eof || ec == asio::error::connection_reset
        || ec == asio::error::broken_pipe) {
      // A client that goes away without NBD_CMD_DISC is common (killed
      // nbdinfo, kernel client teardown): not worth a warning.
      return close(in_transmission_ ? "connection closed without NBD_CMD_DISC"
                                    : "connection closed during the handshake",
                   false);
    }
    close(fmt::format("{}: {}", doing, ec.message()), true);
  }

  /// Closes the socket now; what is queued is dropped. The backend is
  /// closed once no call to it is outstanding.
  void close(const std::string& why, bool warn) {
    if (closed_)
      return;
    closed_ = true;
    if (warn)
      spdlog::warn("nbd {}: {}: closing the connection: {}", owner_->export_name, peer_, why);
    else if (in_transmission_)
      spdlog::info("nbd {}: {}: detached ({})", owner_->export_name, peer_, why);
    else
      spdlog::debug("nbd {}: {}: closed ({})", owner_->export_name, peer_, why);
    std::error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
    queue_.clear();
    if (!counted_out_) {
      counted_out_ = true;
      owner_->session_ended();
    }
    release_backend();
  }

  void release_backend() {
    if (opened_ && !backend_closed_ && backend_pending_ == 0 && !open_pending_) {
      backend_closed_ = true;
      backend_->close();
    }
  }

  std::shared_ptr<server::impl> owner_;
  strand_type strand_;
  socket_type socket_;
  const std::string peer_;
  std::shared_ptr<backend> backend_;

  // Handshake.
  uint8_t small_[option_header_size] = {};
  std::vector<uint8_t> option_data_;
  std::size_t options_seen_ = 0;
  bool no_zeroes_ = false;

  // The export, once opened.
  bool open_pending_ = false;
  bool opened_ = false;
  bool backend_closed_ = false;
  export_info info_;
  uint16_t flags_ = 0;

  // Transmission.
  bool in_transmission_ = false;
  uint8_t request_[request_size] = {};
  std::vector<uint8_t> discard_;
  std::size_t backend_pending_ = 0; // backend calls whose completion has not run
  std::size_t outstanding_ = 0;     // requests read whose reply is not yet written
  uint64_t outstanding_bytes_ = 0;  // READ/WRITE payload bytes of those
  bool read_paused_ = false;
  bool disconnecting_ = false;      // NBD_CMD_DISC received
  bool close_when_flushed_ = false; // NBD_OPT_ABORT answered

  // Replies, written in completion order.
  std::deque<outgoing> queue_;
  std::vector<outgoing> in_write_;
  std::vector<asio::const_buffer> gather_;
  bool writing_ = false;

  bool closed_ = false;
  bool counted_out_ = false;
};

} // namespace

// --- server::impl ------------------------------------------------------------------------

status server::impl::start() {
  if (stopping)
    return {errc::shutting_down, fmt::format("nbd {}: the server was stopped", export_name)};
  std::error_code ec;
  stream::endpoint endpoint;
  const std::string path = unix_socket_path(address);
  if (!path.empty()) {
    if (path.size() >= sizeof(sockaddr_un{}.sun_path))
      return failure(errc::invalid_argument, fmt::format("the socket path is longer than {} bytes",
                                                         sizeof(sockaddr_un{}.sun_path) - 1));
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      std::filesystem::create_directories(parent, ec);
      if (ec)
        return failure(errc::io_error, fmt::format("cannot create directory {}: {}",
                                                   parent.string(), ec.message()));
    }
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        return failure(errc::busy, fmt::format("{} exists and is not a socket", path));
      // A socket file: live if someone accepts on it, stale otherwise.
      asio::local::stream_protocol::socket probe(io);
      probe.connect(asio::local::stream_protocol::endpoint(path), ec);
      if (!ec)
        return failure(errc::busy, "another server is listening on it");
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return failure(errc::io_error, fmt::format("cannot remove the stale socket {}: {}", path,
                                                   errno_text(errno)));
    }
    endpoint = stream::endpoint(asio::local::stream_protocol::endpoint(path));
  } else {
    std::string host;
    uint16_t port = 0;
    if (address.rfind("tcp", 0) != 0 || !split_tcp_address(address, host, port, default_nbd_port))
      return failure(errc::invalid_argument, "expected uds:///path or tcp://host:port");
    asio::ip::tcp::resolver resolver(io);
    auto flags = asio::ip::resolver_base::passive | asio::ip::resolver_base::numeric_service;
    if (address.rfind("tcp4://", 0) == 0) {
      auto results = resolver.resolve(asio::ip::tcp::v4(), host, std::to_string(port), flags, ec);
      if (!ec && !results.empty())
        endpoint = stream::endpoint(results.begin()->endpoint());
    } else if (address.rfind("tcp6://", 0) == 0) {
      auto results = resolver.resolve(asio::ip::tcp::v6(), host, std::to_string(port), flags, ec);
      if (!ec && !results.empty())
        endpoint = stream::endpoint(results.begin()->endpoint());
    } else {
      auto results = resolver.resolve(host, std::to_string(port), flags, ec);
      if (!ec && !results.empty())
        endpoint = stream::endpoint(results.begin()->endpoint());
    }
    if (ec)
      return failure(errc::invalid_argument,
                     fmt::format("cannot resolve {}: {}", host, ec.message()));
    if (endpoint.size() == 0 || endpoint.protocol().family() == AF_UNSPEC)
      return failure(errc::invalid_argument, fmt::format("{} has no address", host));
  }

  acceptor.open(endpoint.protocol(), ec);
  if (ec)
    return failure(errc::io_error, ec.message());
  if (path.empty()) {
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (ec)
      return failure(errc::io_error, ec.message());
  }
  acceptor.bind(endpoint, ec);
  if (ec) {
    std::error_code ignored;
    acceptor.close(ignored);
    return failure(ec == asio::error::address_in_use ? errc::busy : errc::io_error, ec.message());
  }
  if (!path.empty()) {
    struct stat st {};
    if (::chmod(path.c_str(), 0660) != 0 || ::lstat(path.c_str(), &st) != 0) {
      const int error = errno;
      std::error_code ignored;
      acceptor.close(ignored);
      ::unlink(path.c_str());
      return failure(errc::io_error,
                     fmt::format("cannot set the mode of {}: {}", path, errno_text(error)));
    }
    socket_path = path;
    socket_dev = st.st_dev;
    socket_ino = st.st_ino;
  }
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::error_code ignored;
    acceptor.close(ignored);
    if (!socket_path.empty())
      ::unlink(socket_path.c_str());
    return failure(errc::io_error, ec.message());
  }

  {
    std::lock_guard lock{bound_mutex};
    if (!path.empty()) {
      bound = "uds://" + path;
    } else if (auto tcp = as_tcp(acceptor.local_endpoint(ec)); tcp && !ec) {
      bound = "tcp://" + describe_tcp(*tcp);
    }
  }
  spdlog::info("nbd {}: listening on {}", export_name, bound.empty() ? address : bound);
  asio::post(strand, [self = shared_from_this()] { self->accept(); });
  return status::ok();
}

void server::impl::accept() {
  if (shut)
    return;
  acceptor.async_accept(asio::make_strand(io),
                        [self = shared_from_this()](std::error_code ec, socket_type socket) {
                          self->on_accept(ec, std::move(socket));
                        });
}

void server::impl::on_accept(std::error_code ec, socket_type socket) {
  if (shut)
    return;
  if (ec) {
    if (ec == asio::error::operation_aborted)
      return;
    // Out of descriptors or memory: wait a little rather than spin.
    spdlog::warn("nbd {}: accepting a connection failed: {}", export_name, ec.message());
    retry_timer.expires_after(std::chrono::milliseconds(100));
    retry_timer.async_wait([self = shared_from_this()](std::error_code wait_ec) {
      if (!wait_ec)
        self->accept();
    });
    return;
  }
  std::error_code ignored;
  if (socket_path.empty()) {
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket.set_option(asio::socket_base::keep_alive(true), ignored);
  }
  auto peer = fmt::format("#{} {}", ++accepted, describe_peer(socket));
  connections.fetch_add(1, std::memory_order_relaxed);
  auto s = std::make_shared<session>(shared_from_this(), std::move(socket), std::move(peer));
  sessions.remove_if([](const std::weak_ptr<session>& w) { return w.expired(); });
  sessions.push_back(s);
  s->start();
  accept();
}

void server::impl::close_sessions(const std::string& why) {
  for (auto& weak : sessions)
    if (auto s = weak.lock())
      s->stop(why);
  sessions.clear();
}

void server::impl::shut_down() {
  if (shut)
    return;
  shut = true;
  std::error_code ignored;
  acceptor.close(ignored);
  retry_timer.cancel();
  if (!socket_path.empty()) {
    // Remove the file only if it is still ours, not a successor's.
    struct stat st {};
    if (::lstat(socket_path.c_str(), &st) == 0 && st.st_dev == socket_dev
        && st.st_ino == socket_ino)
      ::unlink(socket_path.c_str());
  }
  close_sessions("the server is stopping");
  spdlog::info("nbd {}: stopped listening", export_name);
}

// --- server ------------------------------------------------------------------------------------

server::server(asio::io_context& io, std::string export_name, std::string address,
               backend_factory factory)
    : impl_(std::make_shared<impl>(io, std::move(export_name), std::move(address),
                                   std::move(factory))) {}

server::~server() {
  stop();
}

status server::start() {
  return impl_->start();
}

void server::stop(std::function<void()> stopped) {
  const bool first = !impl_->stopping.exchange(true);
  auto work = [self = impl_, first, stopped = std::move(stopped)] {
    if (first)
      self->shut_down();
    if (stopped)
      stopped();
  };
  // Inline only when nothing posted earlier could still be pending.
  if (first && impl_->strand.running_in_this_thread())
    return work();
  asio::post(impl_->strand, std::move(work));
}

void server::close_sessions() {
  asio::post(impl_->strand, [self = impl_] { self->close_sessions("the export is being closed"); });
}

std::size_t server::connections() const {
  return impl_->connections.load(std::memory_order_relaxed);
}

std::string server::local_address() const {
  std::lock_guard lock{impl_->bound_mutex};
  return impl_->bound.empty() ? impl_->address : impl_->bound;
}

const std::string& server::export_name() const {
  return impl_->export_name;
}

} // namespace hast::nbd
