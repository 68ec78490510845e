#include "io/net/nbd_server.hpp"

#include "config/config.hpp"
#include "io/net/asio.hpp"
#include "io/net/nbd_protocol.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <list>
#include <map>
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
/// Parsing of new requests pauses while this many requests, or requests
/// carrying this many payload bytes, wait for their replies to be written.
/// Bounds the memory one pipelining client can pin, and so the size of one
/// batch.
constexpr std::size_t max_outstanding_requests = 512;
constexpr uint64_t max_outstanding_bytes = 128u << 20;
/// Replies gathered into one write: up to two iovecs each (header, READ
/// data), half of Linux's IOV_MAX.
constexpr std::size_t max_replies_per_write = 512;
/// What one read from the socket may bring in: thousands of request headers,
/// or small writes with their payloads.
constexpr std::size_t receive_buffer_size = 256u << 10;
/// Block sizes we advertise: any alignment works, 4 KiB is best.
constexpr uint32_t minimum_block = 1;
constexpr uint32_t preferred_block = 4096;

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

// The access rules of every export, by name (see set_access).
std::mutex access_mutex;
std::map<std::string, access>& access_table() {
  static std::map<std::string, access> table;
  return table;
}

/// An allow entry parsed: the address and how many leading bits must match.
struct allow_entry {
  asio::ip::address address;
  unsigned prefix = 0;
};

std::optional<allow_entry> parse_allow_entry(const std::string& entry) {
  const auto slash = entry.find('/');
  std::error_code ec;
  auto address = asio::ip::make_address(entry.substr(0, slash), ec);
  if (ec)
    return std::nullopt;
  const unsigned bits = address.is_v4() ? 32 : 128;
  unsigned prefix = bits;
  if (slash != std::string::npos) {
    const auto digits = entry.substr(slash + 1);
    if (digits.empty() || digits.size() > 3
        || digits.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    prefix = static_cast<unsigned>(std::stoul(digits));
    if (prefix > bits)
      return std::nullopt;
  }
  return allow_entry{address, prefix};
}

/// The address's bytes, an IPv4-mapped IPv6 address as IPv4.
std::vector<uint8_t> address_bytes(asio::ip::address a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  if (a.is_v4()) {
    auto b = a.to_v4().to_bytes();
    return {b.begin(), b.end()};
  }
  auto b = a.to_v6().to_bytes();
  return {b.begin(), b.end()};
}

bool is_loopback(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  return a.is_loopback();
}

} // namespace

void set_access(const std::string& export_name, access rules) {
  std::lock_guard lock{access_mutex};
  access_table()[export_name] = std::move(rules);
}

access access_of(const std::string& export_name) {
  std::lock_guard lock{access_mutex};
  auto it = access_table().find(export_name);
  return it == access_table().end() ? access{} : it->second;
}

bool allowed(const std::string& address, const std::vector<std::string>& allow) {
  std::error_code ec;
  const auto client = asio::ip::make_address(address, ec);
  if (ec)
    return false;
  const auto have = address_bytes(client);
  for (const auto& text : allow) {
    const auto entry = parse_allow_entry(text);
    if (!entry)
      continue;
    const auto want = address_bytes(entry->address);
    if (want.size() != have.size())
      continue;
    // A v4-mapped entry compares as IPv4: its prefix counts the last 32 bits.
    unsigned prefix = entry->prefix;
    if (entry->address.is_v6() && want.size() == 4)
      prefix = prefix > 96 ? prefix - 96 : 0;
    unsigned full = prefix / 8;
    bool match = std::equal(want.begin(), want.begin() + full, have.begin());
    if (match && prefix % 8 != 0) {
      const auto mask = static_cast<uint8_t>(0xFF << (8 - prefix % 8));
      match = (want[full] & mask) == (have[full] & mask);
    }
    if (match)
      return true;
  }
  return false;
}

// --- The listening side ----------------------------------------------------------

struct server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& io, std::string export_name, std::string address, backend_factory factory,
       std::chrono::milliseconds handshake_limit)
      : io(io), strand(asio::make_strand(io)), export_name(std::move(export_name)),
        address(std::move(address)), factory(std::move(factory)),
        handshake_limit(handshake_limit), acceptor(strand), retry_timer(strand) {}

  void start(std::function<void(status)> done);
  status prepare_unix_socket(const std::string& path, stream::endpoint& endpoint);
  status listen_on(const stream::endpoint& endpoint, const std::string& path);
  void accept();
  void on_accept(std::error_code ec, socket_type socket);
  /// Why a freshly accepted connection may not stay ("" if it may): the
  /// export's connection cap, and for TCP its access list.
  std::string refusal(socket_type& socket) const;
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
  const std::chrono::milliseconds handshake_limit;
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
  std::optional<status> outcome;  // of start(), once known
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

/// The reply_sink a session gives its backend. It keeps the session alive
/// while the backend holds it, so that every submitted request is accounted
/// for before the backend is closed; the session detaches it once the
/// backend is closed, which also breaks the cycle if the backend keeps it.
class session_sink final : public reply_sink {
public:
  explicit session_sink(std::shared_ptr<session> s) : session_(std::move(s)) {}
  void deliver(std::vector<reply> replies) override;
  void detach() {
    std::shared_ptr<session> last;
    std::lock_guard lock{mutex_};
    last = std::move(session_); // destroyed after the lock is released
  }

private:
  std::mutex mutex_;
  std::shared_ptr<session> session_;
};

class session : public std::enable_shared_from_this<session> {
public:
  session(std::shared_ptr<server::impl> owner, socket_type socket, std::string peer)
      : owner_(std::move(owner)), strand_(socket.get_executor()), socket_(std::move(socket)),
        peer_(std::move(peer)), handshake_timer_(strand_) {}

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
      self->arm_handshake_timer(self->owner_->handshake_limit);
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

  /// A client that does not reach the transmission phase in time is cut
  /// off; the time the backend takes to open the export is not held
  /// against it.
  void arm_handshake_timer(std::chrono::milliseconds limit) {
    handshake_timer_.expires_after(limit);
    handshake_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (ec || self->closed_ || self->in_transmission_)
        return;
      if (self->open_pending_)
        return self->arm_handshake_timer(self->owner_->handshake_limit);
      self->close(fmt::format("no complete handshake within {} ms",
                              self->owner_->handshake_limit.count()),
                  true);
    });
  }

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
    uint8_t bytes[4];
    std::memcpy(bytes, small_, sizeof bytes);
    const auto flags = decode_client_flags(bytes);
    if (!flags)
      return close(fmt::format("unknown client flags {:#x}", get_be32(small_)), true);
    no_zeroes_ = (*flags & flag_c_no_zeroes) != 0;
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
    auto step = decode_option(option, option_data_);
    switch (step.kind) {
    case option_step::export_name:
      return export_name_option(std::move(step.request.name));
    case option_step::abort:
      enqueue_bytes(encode_option_reply(option, rep_ack));
      close_when_flushed_ = true;
      return after_write();
    case option_step::list:
      enqueue_bytes(encode_server_reply(owner_->export_name));
      enqueue_bytes(encode_option_reply(option, rep_ack));
      return read_option();
    case option_step::info:
      return info_option(option, step.request);
    case option_step::invalid:
      enqueue_bytes(encode_option_reply(option, rep_err_invalid, step.message));
      return read_option();
    case option_step::unsupported:
      spdlog::debug("nbd {}: {}: option {} ({}) not supported", owner_->export_name, peer_,
                    option_name(option), option);
      enqueue_bytes(encode_option_reply(option, rep_err_unsup));
      return read_option();
    }
  }

  bool names_our_export(std::string_view name) const {
    return name.empty() || name == owner_->export_name
           || name == device_view_name(owner_->export_name);
  }

  /// The size this connection advertises and checks requests against: the
  /// growth ceiling in the device view, the data size otherwise.
  uint64_t advertised_size() const {
    return device_view_ ? std::max(info_.size, info_.ceiling) : info_.size;
  }

  void export_name_option(std::string name) {
    if (!names_our_export(name))
      return close(fmt::format("NBD_OPT_EXPORT_NAME for unknown export '{}'", name), true);
    device_view_ = name == device_view_name(owner_->export_name);
    open_export([this, self = shared_from_this()](const std::string& error) {
      if (!error.empty())
        return close(fmt::format("refused: {}", error), true);
      enqueue_bytes(encode_export_name_reply(advertised_size(), flags_, no_zeroes_));
      enter_transmission();
    });
  }

  void info_option(uint32_t option, const info_request& request) {
    if (!names_our_export(request.name)) {
      enqueue_bytes(encode_option_reply(option, rep_err_unknown,
                                        fmt::format("no export named '{}' here (this is '{}')",
                                                    request.name, owner_->export_name)));
      return read_option();
    }
    device_view_ = request.name == device_view_name(owner_->export_name);
    open_export([this, self = shared_from_this(), option](const std::string& error) {
      if (!error.empty()) {
        spdlog::info("nbd {}: {}: export refused: {}", owner_->export_name, peer_, error);
        enqueue_bytes(encode_option_reply(option, rep_err_unknown, error));
        return read_option();
      }
      // NAME and BLOCK_SIZE are sent whether asked for or not, as the
      // protocol allows; the block size tells clients that no alignment is
      // needed and how large a request may be.
      enqueue_bytes(encode_info_export(option, advertised_size(), flags_));
      enqueue_bytes(encode_info_name(option, device_view_ ? device_view_name(owner_->export_name)
                                                          : owner_->export_name));
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
    handshake_timer_.cancel();
    spdlog::info("nbd {}: {}: attached ({} bytes{}{}{})", owner_->export_name, peer_,
                 advertised_size(), device_view_ ? ", device view" : "",
                 info_.read_only ? ", read-only" : "",
                 (flags_ & flag_can_multi_conn) != 0 ? ", multi-conn" : "");
    // The handshake reads exact sizes, so nothing of the transmission phase
    // has been consumed from the socket yet.
    rx_.resize(receive_buffer_size);
    receive();
  }

  // --- Transmission --------------------------------------------------------------
  //
  // The receive buffer holds [rx_begin_, rx_end_) not yet parsed. A parse
  // pass takes every complete request from it; the pass ends, and the batch
  // collected so far goes to the backend in one submit(), whenever the
  // session must wait: for more bytes from the socket, for the rest of a
  // write payload, or for replies to be written (outstanding limits).

  std::size_t buffered() const { return rx_end_ - rx_begin_; }

  /// Reads whatever the client has sent, up to the free space. Called only
  /// when the buffer holds no complete request (or a refused payload is
  /// being skipped), so the space is at least the buffer minus one header.
  void receive() {
    if (closed_ || disconnecting_)
      return;
    if (rx_begin_ == rx_end_) {
      rx_begin_ = rx_end_ = 0;
    } else if (rx_begin_ > 0) {
      std::memmove(rx_.data(), rx_.data() + rx_begin_, buffered());
      rx_end_ -= rx_begin_;
      rx_begin_ = 0;
    }
    socket_.async_read_some(asio::buffer(rx_.data() + rx_end_, rx_.size() - rx_end_),
                            [self = shared_from_this()](std::error_code ec, std::size_t n) {
                              if (self->closed_)
                                return;
                              if (ec)
                                return self->socket_failed(ec, "reading a request");
                              self->rx_end_ += n;
                              self->parse();
                            });
  }

  void parse() {
    if (closed_ || disconnecting_)
      return;
    if (skip_remaining_ > 0) {
      const auto n = std::min<std::size_t>(buffered(), skip_remaining_);
      rx_begin_ += n;
      skip_remaining_ -= static_cast<uint32_t>(n);
      if (skip_remaining_ > 0)
        return receive();
      // The refused write is framed off: answer it, as the client sent it
      // correctly and the connection stays usable.
      queue_reply(skipped_.cookie, skipped_.error, nullptr, 0, skipped_.charged);
    }
    while (skip_remaining_ == 0 && buffered() >= request_size) {
      if (outstanding_ >= max_outstanding_requests || outstanding_bytes_ >= max_outstanding_bytes) {
        // after_write() resumes parsing from the buffer once replies are out.
        read_paused_ = true;
        return end_pass();
      }
      if (!take_request())
        return;
    }
    end_pass();
    receive();
  }

  /// Hands the collected batch to the backend and starts writing the
  /// replies queued during the pass. A lone request is a batch of one: a
  /// pass never waits for company.
  void end_pass() {
    if (!batch_.empty()) {
      backend_pending_ += batch_.size();
      const auto now = std::chrono::steady_clock::now();
      for (auto& r : batch_)
        r.arrived = now;
      auto sink = sink_.lock();
      if (!sink) {
        sink = std::make_shared<session_sink>(shared_from_this());
        sink_ = sink;
      }
      backend_->submit(std::exchange(batch_, {}), std::move(sink));
    }
    write_queued();
  }

  /// Takes the request at the front of the buffer (at least a header is
  /// there). False when this pass must stop: the connection is closing, the
  /// client disconnected, or the rest of a write payload is being read.
  bool take_request() {
    uint8_t header[request_size];
    std::memcpy(header, rx_.data() + rx_begin_, request_size);
    const auto step = decode_request_step(header, advertised_size(), flags_);
    if (step.kind == request_step::bad_magic) {
      // What was parsed before it still goes to the backend, as if read
      // one by one; its replies are dropped with the connection.
      end_pass();
      close(fmt::format("bad request magic {:#010x}", get_be32(header)), true);
      return false;
    }
    rx_begin_ += request_size;
    const request_header& req = step.header;

    if (step.kind == request_step::disconnect) {
      spdlog::debug("nbd {}: {}: NBD_CMD_DISC", owner_->export_name, peer_);
      disconnecting_ = true;
      end_pass();
      after_write();
      return false;
    }
    if (step.kind == request_step::oversized_write) {
      // Its payload may not even be meant to follow; the stream cannot be
      // resynchronised safely.
      end_pass();
      close(fmt::format("NBD_CMD_WRITE of {} bytes (more than {})", req.length, max_payload), true);
      return false;
    }

    uint32_t error = step.error;
    // The device view: what lies past the data size reads as zeros and
    // takes no writes; a read across the end is served short and padded.
    uint32_t served_length = req.length;
    if (error == 0 && device_view_ && step.cmd != command::flush) {
      const uint64_t limit = data_size_now();
      if (req.offset + req.length > limit) {
        if (step.cmd != command::read)
          error = enospc;
        else if (req.offset >= limit)
          return answer_zeroes(req);
        else
          served_length = static_cast<uint32_t>(limit - req.offset);
      }
    }
    if (error != 0)
      spdlog::debug("nbd {}: {}: {} offset {} length {} flags {:#x}: {}", owner_->export_name,
                    peer_, command_name(req.type), req.offset, req.length, req.flags,
                    error_name(error));

    const uint64_t payload = req.type == cmd_read || req.type == cmd_write ? req.length : 0;
    ++outstanding_;
    outstanding_bytes_ += payload;

    if (error != 0) {
      if (req.type == cmd_write) {
        // Skip the payload (framed correctly, at most max_payload), then
        // answer; what is not here yet is skipped as it arrives.
        const auto present = std::min<std::size_t>(buffered(), req.length);
        rx_begin_ += present;
        if (present < req.length) {
          skip_remaining_ = req.length - static_cast<uint32_t>(present);
          skipped_ = {req.cookie, error, payload};
          return true; // the buffer is empty now: the pass ends and reads on
        }
      }
      queue_reply(req.cookie, error, nullptr, 0, payload);
      return true;
    }

    request r;
    r.kind = step.cmd;
    r.cookie = req.cookie;
    r.offset = req.offset;
    r.length = req.length; // validate() made it 0 for FLUSH
    if (served_length < req.length) {
      r.length = served_length;
      padded_.emplace(req.cookie, req.length);
    }
    r.fua = (req.flags & cmd_flag_fua) != 0;
    r.may_trim = req.type == cmd_write_zeroes && (req.flags & cmd_flag_no_hole) == 0;
    if (req.type == cmd_write) {
      r.data = make_buffer(req.length);
      const auto present = std::min<std::size_t>(buffered(), req.length);
      std::memcpy(r.data->data(), rx_.data() + rx_begin_, present);
      rx_begin_ += present;
      if (present < req.length) {
        read_payload_rest(std::move(r), present);
        return false;
      }
    }
    batch_.push_back(std::move(r));
    return true;
  }

  /// The data size now, for the device view: the backend's, which grows,
  /// never more than the ceiling advertised.
  uint64_t data_size_now() const {
    const uint64_t now = backend_ ? backend_->size_now() : 0;
    return std::min(now != 0 ? now : info_.size, advertised_size());
  }

  /// A read wholly past the data size in the device view: zeros, answered
  /// here (counted as outstanding, as every request).
  bool answer_zeroes(const request_header& req) {
    ++outstanding_;
    outstanding_bytes_ += req.length;
    auto zeroes = make_buffer(req.length);
    std::memset(zeroes->data(), 0, req.length);
    queue_reply(req.cookie, 0, std::move(zeroes), req.length, req.length);
    return true;
  }

  /// A reply to a read the device view shortened: back to the length the
  /// client asked for, zeros after the data.
  void pad(reply& r) {
    auto it = padded_.find(r.cookie);
    if (it == padded_.end())
      return;
    const uint32_t full = it->second;
    padded_.erase(it);
    if (r.error == 0 && r.data && r.data->size() >= r.length) {
      auto whole = make_buffer(full);
      std::memcpy(whole->data(), r.data->data(), r.length);
      std::memset(whole->data() + r.length, 0, full - r.length);
      r.data = std::move(whole);
    }
    r.length = full;
  }

  /// Reads the part of a write payload that has not arrived yet straight
  /// into its block (a large write is copied only as far as it had reached
  /// the receive buffer), then parsing goes on. The requests before it need
  /// not wait for it: they are submitted first.
  void read_payload_rest(request r, std::size_t present) {
    end_pass();
    auto* rest = r.data->data() + present;
    const auto size = r.length - present;
    asio::async_read(
        socket_, asio::buffer(rest, size), whole_buffers,
        [self = shared_from_this(), r = std::move(r)](std::error_code ec, std::size_t) mutable {
          if (self->closed_)
            return;
          if (ec)
            return self->socket_failed(ec, "reading a write payload");
          self->batch_.push_back(std::move(r));
          self->parse();
        });
  }

public:
  /// A batch of replies from the backend; any thread. One hand-off to the
  /// strand for the whole batch.
  void post_replies(std::vector<reply> replies) {
    asio::post(strand_, [self = shared_from_this(), replies = std::move(replies)]() mutable {
      self->on_replies(std::move(replies));
    });
  }

private:
  void on_replies(std::vector<reply> replies) {
    for (auto& r : replies) {
      if (backend_pending_ == 0) {
        // More replies than requests: the backend answered something twice.
        // Sending it would give the client a cookie it no longer waits for.
        spdlog::error("nbd {}: {}: the backend answered cookie {:#x} with no request pending",
                      owner_->export_name, peer_, r.cookie);
        continue;
      }
      --backend_pending_;
      if (!padded_.empty() && r.kind == command::read)
        pad(r);
      if (closed_)
        continue;
      const bool has_payload = r.kind == command::read || r.kind == command::write;
      const uint64_t charged = has_payload ? r.length : 0;
      uint32_t error = wire_error(r.error);
      if (r.kind == command::read && error == 0 && (!r.data || r.data->size() < r.length)) {
        // A simple reply cannot carry a short read: the whole length or an error.
        spdlog::warn("nbd {}: {}: backend returned {} of {} bytes for a read", owner_->export_name,
                     peer_, r.data ? r.data->size() : 0, r.length);
        error = eio;
      }
      const bool sends_data = r.kind == command::read && error == 0;
      queue_reply(r.cookie, error, sends_data ? std::move(r.data) : nullptr,
                  sends_data ? r.length : 0, charged);
    }
    if (closed_)
      return release_backend();
    write_queued();
  }

  // --- Writing -------------------------------------------------------------------

  void enqueue_bytes(std::vector<uint8_t> bytes) {
    outgoing out;
    out.bytes = std::move(bytes);
    queue_.push_back(std::move(out));
    write_queued();
  }

  /// Queues a simple reply; the caller starts the write (write_queued) once
  /// it has queued all it has, so that they leave together.
  void queue_reply(uint64_t cookie, uint32_t error, buffer_ptr data, uint32_t data_length,
                   uint64_t charged) {
    outgoing out;
    out.reply = encode_simple_reply(error, cookie);
    out.data = std::move(data);
    out.data_length = out.data ? data_length : 0;
    out.answers_request = true;
    out.charged_bytes = charged;
    queue_.push_back(std::move(out));
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
    // Reply headers are packed side by side so that a run of replies without
    // data (write, flush, trim acknowledgements, errors) is one iovec: Asio
    // passes at most 64 iovecs to each writev.
    headers_.resize(in_write_.size() * simple_reply_size);
    uint8_t* next_header = headers_.data();
    bool extends_header_run = false;
    gather_.clear();
    for (const auto& out : in_write_) {
      if (!out.answers_request) {
        gather_.push_back(asio::buffer(out.bytes));
        extends_header_run = false;
        continue;
      }
      std::memcpy(next_header, out.reply.data(), simple_reply_size);
      if (extends_header_run)
        gather_.back()
            = asio::buffer(gather_.back().data(), gather_.back().size() + simple_reply_size);
      else
        gather_.push_back(asio::buffer(next_header, simple_reply_size));
      next_header += simple_reply_size;
      extends_header_run = true;
      if (out.data_length > 0) {
        gather_.push_back(asio::buffer(out.data->data(), out.data_length));
        extends_header_run = false;
      }
    }
    asio::async_write(
        socket_, gather_, whole_buffers,
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

  /// Resumes paused parsing, and ends the connection once everything owed
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
      parse();
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
    handshake_timer_.cancel();
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
      if (auto sink = sink_.lock())
        sink->detach();
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
  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, strand_type>
      handshake_timer_;

  // The export, once opened.
  bool open_pending_ = false;
  bool opened_ = false;
  bool backend_closed_ = false;
  export_info info_;
  uint16_t flags_ = 0;
  bool device_view_ = false;  // the client asked for device_view_name()
  // Reads the device view shortened at the data size: cookie -> the length
  // asked for.
  std::multimap<uint64_t, uint32_t> padded_;

  // Transmission.
  bool in_transmission_ = false;
  std::vector<uint8_t> rx_; // receive buffer; [rx_begin_, rx_end_) is unparsed
  std::size_t rx_begin_ = 0;
  std::size_t rx_end_ = 0;
  std::vector<request> batch_;  // parsed in this pass, not yet submitted
  uint32_t skip_remaining_ = 0; // payload bytes of a refused WRITE still to skip
  struct refused_write {
    uint64_t cookie = 0;
    uint32_t error = 0;
    uint64_t charged = 0;
  };
  refused_write skipped_;            // that WRITE, answered once skipped
  std::weak_ptr<session_sink> sink_; // held by the backend while it owes replies
  std::size_t backend_pending_ = 0;  // submitted requests the backend has not answered
  std::size_t outstanding_ = 0;      // requests read whose reply is not yet written
  uint64_t outstanding_bytes_ = 0;   // READ/WRITE payload bytes of those
  bool read_paused_ = false;         // at an outstanding limit; after_write() resumes
  bool disconnecting_ = false;       // NBD_CMD_DISC received
  bool close_when_flushed_ = false;  // NBD_OPT_ABORT answered

  // Replies, written in completion order.
  std::deque<outgoing> queue_;
  std::vector<outgoing> in_write_;
  std::vector<uint8_t> headers_; // reply headers of in_write_, side by side
  std::vector<asio::const_buffer> gather_;
  bool writing_ = false;

  bool closed_ = false;
  bool counted_out_ = false;
};

void session_sink::deliver(std::vector<reply> replies) {
  if (replies.empty())
    return;
  std::shared_ptr<session> s;
  {
    std::lock_guard lock{mutex_};
    s = session_;
  }
  // Detached: the backend was closed, so nothing can be owed any more.
  if (s)
    s->post_replies(std::move(replies));
}

} // namespace

// --- server::impl ------------------------------------------------------------------------

void server::impl::start(std::function<void(status)> done) {
  auto finish = [this, done = std::move(done)](status st) {
    {
      std::lock_guard lock{bound_mutex};
      outcome = st;
    }
    if (done)
      done(std::move(st));
  };
  if (stopping)
    return finish({errc::shutting_down, fmt::format("nbd {}: the server was stopped", export_name)});
  const std::string path = unix_socket_path(address);
  if (!path.empty()) {
    stream::endpoint endpoint;
    if (auto st = prepare_unix_socket(path, endpoint); !st)
      return finish(std::move(st));
    return finish(listen_on(endpoint, path));
  }
  std::string host;
  uint16_t port = 0;
  if (address.rfind("tcp", 0) != 0 || !split_tcp_address(address, host, port, default_nbd_port))
    return finish(failure(errc::invalid_argument, "expected uds:///path or tcp://host:port"));
  // A numeric address needs no name service; a host name is resolved by
  // Asio's asynchronous resolver, never on the caller's thread.
  std::error_code ec;
  auto numeric = asio::ip::make_address(host, ec);
  if (!ec) {
    if ((address.rfind("tcp4://", 0) == 0 && !numeric.is_v4())
        || (address.rfind("tcp6://", 0) == 0 && !numeric.is_v6()))
      return finish(failure(errc::invalid_argument,
                            fmt::format("{} is not an address of that family", host)));
    return finish(listen_on(stream::endpoint(asio::ip::tcp::endpoint(numeric, port)), ""));
  }
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(io);
  auto flags = asio::ip::resolver_base::passive | asio::ip::resolver_base::numeric_service;
  auto resolved = [self = shared_from_this(), resolver, host, finish = std::move(finish)](
                      std::error_code rec, asio::ip::tcp::resolver::results_type results) mutable {
    if (rec)
      return finish(self->failure(errc::invalid_argument,
                                  fmt::format("cannot resolve {}: {}", host, rec.message())));
    if (results.empty())
      return finish(self->failure(errc::invalid_argument, fmt::format("{} has no address", host)));
    auto endpoint = stream::endpoint(results.begin()->endpoint());
    asio::post(self->strand, [self, endpoint, finish = std::move(finish)]() mutable {
      finish(self->stopping ? status{errc::shutting_down, "the server was stopped"}
                            : self->listen_on(endpoint, ""));
    });
  };
  if (address.rfind("tcp4://", 0) == 0)
    resolver->async_resolve(asio::ip::tcp::v4(), host, std::to_string(port), flags,
                            std::move(resolved));
  else if (address.rfind("tcp6://", 0) == 0)
    resolver->async_resolve(asio::ip::tcp::v6(), host, std::to_string(port), flags,
                            std::move(resolved));
  else
    resolver->async_resolve(host, std::to_string(port), flags, std::move(resolved));
}

status server::impl::prepare_unix_socket(const std::string& path, stream::endpoint& endpoint) {
  std::error_code ec;
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
    // A socket file: live if someone accepts on it, stale otherwise. The
    // probe does not block: a listener whose backlog is full answers
    // EAGAIN, which also means it is alive.
    asio::local::stream_protocol::socket probe(io);
    probe.open(asio::local::stream_protocol(), ec);
    if (!ec)
      probe.non_blocking(true, ec);
    if (ec)
      return failure(errc::io_error, fmt::format("cannot probe {}: {}", path, ec.message()));
    probe.connect(asio::local::stream_protocol::endpoint(path), ec);
    if (!ec || ec == asio::error::would_block || ec == asio::error::try_again)
      return failure(errc::busy, "another server is listening on it");
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return failure(errc::io_error, fmt::format("cannot remove the stale socket {}: {}", path,
                                                 errno_text(errno)));
  }
  endpoint = stream::endpoint(asio::local::stream_protocol::endpoint(path));
  return status::ok();
}

status server::impl::listen_on(const stream::endpoint& endpoint, const std::string& path) {
  std::error_code ec;
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
  // Refused before anything is read or allocated for the connection.
  if (auto why = refusal(socket); !why.empty()) {
    spdlog::warn("nbd {}: {}: refused: {}", export_name, peer, why);
    socket.close(ignored);
    return accept();
  }
  connections.fetch_add(1, std::memory_order_relaxed);
  auto s = std::make_shared<session>(shared_from_this(), std::move(socket), std::move(peer));
  sessions.remove_if([](const std::weak_ptr<session>& w) { return w.expired(); });
  sessions.push_back(s);
  s->start();
  accept();
}

std::string server::impl::refusal(socket_type& socket) const {
  const auto rules = access_of(export_name);
  const auto open = connections.load(std::memory_order_relaxed);
  if (open >= rules.max_connections)
    return fmt::format("{} connections are open, the most this export takes", open);
  if (!socket_path.empty())
    return "";  // a Unix socket: its file's mode decides who connects
  std::error_code ec;
  auto ep = as_tcp(socket.remote_endpoint(ec));
  if (ec || !ep)
    return "its address is unknown";
  const auto& address = ep->address();
  if (rules.allow.empty())
    return is_loopback(address) ? ""
                                : fmt::format("{} is not a loopback address and the export has "
                                              "no nbd-allow list",
                                              address.to_string());
  return allowed(address.to_string(), rules.allow)
             ? ""
             : fmt::format("{} is not in nbd-allow", address.to_string());
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
               backend_factory factory, std::chrono::milliseconds handshake_limit)
    : impl_(std::make_shared<impl>(io, std::move(export_name), std::move(address),
                                   std::move(factory), handshake_limit)) {}

server::~server() {
  stop();
}

void server::start(std::function<void(status)> done) {
  impl_->start(std::move(done));
}

status server::start() {
  std::promise<status> result;
  auto outcome = result.get_future();
  impl_->start([&result](status st) { result.set_value(std::move(st)); });
  return outcome.get();
}

std::optional<status> server::start_outcome() const {
  std::lock_guard lock{impl_->bound_mutex};
  return impl_->outcome;
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
