#include "io/net/peer_transport.hpp"

#include "config/config.hpp"
#include "io/net/asio.hpp"
#include "io/net/secure_frames.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>

namespace hast::peer {

namespace {

using tcp = asio::ip::tcp;
using strand_type = asio::strand<asio::io_context::executor_type>;
/// A socket whose handlers run on its connection's strand by default.
using socket_type = tcp::socket::rebind_executor<strand_type>::other;
using timer_type = asio::basic_waitable_timer<std::chrono::steady_clock,
                                              asio::wait_traits<std::chrono::steady_clock>, strand_type>;
using clock = std::chrono::steady_clock;

/// Frames gathered into one sendmsg, up to three iovecs each (header,
/// payload, tag). Asio's own gathered writes stop at 64 buffers per
/// syscall, which is why the connection calls sendmsg itself; the kernel
/// takes up to IOV_MAX.
constexpr std::size_t max_frames_per_write = 341;
static_assert(3 * max_frames_per_write <= IOV_MAX);
/// Encrypted payloads of one gathered write go through a per-connection
/// scratch buffer (the caller's payload is shared and must not change).
/// A write takes frames up to this many payload bytes (at least one frame),
/// so the scratch stays this size unless a single frame is larger.
constexpr std::size_t seal_batch_bytes = 4u << 20;
/// How long close() waits for frames queued before it (a refusing
/// hello_reply, a goodbye) to be written before the socket is closed.
constexpr auto close_grace = std::chrono::seconds(1);
/// Pause before accepting again after an accept error such as EMFILE.
constexpr auto accept_retry = std::chrono::milliseconds(100);

std::string format_endpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6())
    return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

std::string format_seconds(std::chrono::milliseconds d) {
  return fmt::format("{:g}", static_cast<double>(d.count()) / 1000.0);
}

std::size_t size_of(const buffer_ptr& b) {
  return b ? b->size() : 0;
}

/// Whether a failure to open or bind means "this machine has no such
/// address family" (HAST's family_supported rule): then the address is
/// skipped if another one binds. Opening a socket of a family the kernel
/// lacks fails outright; with IPv6 disabled by sysctl the socket opens but
/// [::] / [::1] cannot be bound. A mistyped address must not look like that.
bool family_missing(const std::error_code& ec, const tcp::endpoint& endpoint, bool opening) {
  if (ec == std::errc::address_family_not_supported || ec == std::errc::protocol_not_supported)
    return opening;
  const auto& a = endpoint.address();
  return !opening && ec == std::errc::address_not_available && a.is_v6() &&
         (a.is_unspecified() || a.is_loopback());
}

/// split_tcp_address, plus port 0 ("any free port"), which the listener
/// accepts for tests and the connect source for "any local port".
bool split_address(const std::string& address, std::string& host, uint16_t& port,
                   uint16_t fallback_port) {
  std::string_view rest = address;
  if (const auto scheme = rest.find("://"); scheme != std::string_view::npos)
    rest.remove_prefix(scheme + 3);
  const bool bracketed = !rest.empty() && rest.front() == '[' && rest.ends_with("]:0");
  const bool one_colon = std::count(rest.begin(), rest.end(), ':') == 1 && rest.ends_with(":0");
  if (bracketed || one_colon) {
    if (!split_tcp_address(address.substr(0, address.size() - 2), host, port, fallback_port))
      return false;
    port = 0;
    return true;
  }
  return split_tcp_address(address, host, port, fallback_port);
}

/// One frame waiting to be written: the encoded header and the payload,
/// which is referenced, not copied.
struct outgoing {
  std::array<uint8_t, header_size> head;
  buffer_ptr payload;
  bool sealed = false;  // in a session: sealed when written, a tag follows the payload
  std::array<uint8_t, tag_size> tag{};
  std::size_t wire_size() const { return header_size + size_of(payload) + (sealed ? tag_size : 0); }
};

/// Connections a listener accepted that have not yet proved anything
/// (docs/SECURITY.md, "Peer and witness links"). A connection holds a
/// slot from accept until it is authenticated (or, without a `secret`,
/// started) or closed.
struct pending_counts {
  std::mutex mutex;
  std::size_t total = 0;
  std::map<std::string, std::size_t> by_address;
};

/// Runs `fn` on an I/O thread; an exception (std::bad_alloc from a payload
/// buffer, say) ends `conn`'s connection with the reason, not the daemon.
template <class Conn, class Fn>
void guarded(Conn& conn, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    conn.fail(fmt::format("internal error on the connection: {}", e.what()));
  } catch (...) {
    conn.fail("internal error on the connection");
  }
}

/// Result of reading the first frame of an accepted connection.
using first_frame_handler = std::function<void(const std::string& error, const header&, buffer_ptr)>;

} // namespace

// --- One connection ----------------------------------------------------------------------

struct connection::impl : std::enable_shared_from_this<connection::impl> {
  explicit impl(socket_type socket)
      : strand(socket.get_executor()), socket(std::move(socket)), tick_timer(strand),
        grace_timer(strand) {
    std::error_code ec;
    const auto ep = this->socket.remote_endpoint(ec);
    if (!ec) {
      address = format_endpoint(ep);
      ip = ep.address().to_string();
    } else {
      address = ip = "unknown";
    }
  }

  // --- API entry points (any thread) -------------------------------------------

  void start(frames_handler frames_cb, close_handler close_cb, std::chrono::milliseconds keepalive_,
             std::chrono::milliseconds timeout_) {
    asio::post(strand, [self = shared_from_this(), frames_cb = std::move(frames_cb),
                            close_cb = std::move(close_cb), keepalive_, timeout_]() mutable {
      if (self->started) {
        spdlog::warn("peer {}: start() called twice; ignored", self->address);
        return;
      }
      self->started = true;
      if (self->closed) {
        // Closed before anyone listened: the reason is still owed.
        if (close_cb)
          close_cb(self->close_reason);
        return;
      }
      // Started: the owner accepted the link (authenticated, or without a
      // `secret` as the configuration allows): full-size frames from here.
      self->lift_limits();
      self->on_frames = std::move(frames_cb);
      self->on_close = std::move(close_cb);
      // The peer drops a link it has not heard from for `timeout`: an idle
      // link must carry a keepalive well within it, also when `timeout` is
      // shorter than the keepalive default.
      self->keepalive = keepalive_;
      if (timeout_.count() > 0 && keepalive_.count() > 0)
        self->keepalive = std::min(keepalive_, timeout_ / 3);
      self->timeout = timeout_;
      self->last_received = self->last_sent = clock::now();
      self->schedule_tick();
      // Bytes read_first() took in behind the first frame are parsed
      // before anything new is read.
      if (!self->reading)
        guarded(*self, [&] { self->parse(); });
    });
  }

  void send(header h, buffer_ptr payload) {
    if (payload && payload->size() == 0)
      payload = nullptr;
    const std::size_t n = size_of(payload);
    if (n > max_payload) {
      close(fmt::format("refusing to send a {} frame of {} bytes (limit {})", to_string(h.type), n,
                        max_payload),
            false);
      return;
    }
    // Whether a session is up is settled before anyone but the handshake
    // (on the strand) can send: the link is handed out afterwards.
    const bool sealed = seal_sends.load(std::memory_order_acquire);
    h.payload_length = static_cast<uint32_t>(n + (sealed ? tag_size : 0));
    outgoing f{encode_header(h), std::move(payload), sealed};
    bool kick = false;
    {
      std::lock_guard lock(queue_mutex);
      if (closing)
        return;
      queued_bytes.fetch_add(f.wire_size(), std::memory_order_relaxed);
      queue.push_back(std::move(f));
      if (!writing) {
        writing = true;
        kick = true;
      }
    }
    // Sends made before the posted write_some() runs go out with it, in one
    // sendmsg.
    if (kick)
      asio::post(strand, [self = shared_from_this()] { guarded(*self, [&] { self->write_some(); }); });
  }

  /// Posted, never run inline: on_close must not run inside the caller's
  /// close() (the caller may hold a lock its on_close takes).
  void close(std::string reason, bool linger) {
    close_requested.store(true, std::memory_order_release);
    asio::post(strand, [self = shared_from_this(), reason = std::move(reason), linger]() mutable {
      self->begin_close(std::move(reason), linger);
    });
  }

  /// Reads until the first frame is complete, then stops reading; `done`
  /// gets the frame or the reason it could not be read (then the
  /// connection is closed). Bytes read behind the first frame stay in the
  /// receive buffer for start().
  void read_first(std::chrono::milliseconds limit, first_frame_handler done) {
    asio::dispatch(strand, [self = shared_from_this(), limit, done = std::move(done)]() mutable {
      self->deadline = clock::now() + limit;
      self->deadline_text = fmt::format("no first frame within {} s", format_seconds(limit));
      self->await_frame(std::move(done));
    });
  }

  /// Strand: reads one more frame (before start()) within `deadline`.
  void await_frame(first_frame_handler done) {
    if (closed)
      return done(close_reason, header{}, nullptr);
    first_frame = std::move(done);
    grace_timer.expires_at(deadline);
    grace_timer.async_wait([self = shared_from_this()](std::error_code ec) {
      if (ec || !self->first_frame)
        return;
      self->fail_first(self->deadline_text);
    });
    guarded(*this, [&] { parse(); });
  }

  /// Full-size frames and receive buffer: the other side is authenticated,
  /// or (without a `secret`) its link was accepted by the resource.
  void lift_limits() {
    pending_slot.reset();
    reader.lift_limits();
  }

  /// Strand: from now on every frame is sealed both ways.
  void activate(session_ciphers c) {
    spdlog::info("peer {}: the other side proved the shared key; frames are sealed with {} ({})",
                 address, to_string(c.cipher), c.encrypt ? "encrypted" : "integrity only");
    reader.open_with(std::move(c.opener), c.encrypt);
    session = std::move(c);
    seal_sends.store(true, std::memory_order_release);
    lift_limits();
  }

  /// Client side of the session handshake (docs/PROTOCOL.md, "Session").
  void open_session(session_params params, std::chrono::milliseconds limit,
                    std::function<void(status)> done) {
    asio::dispatch(strand, [self = shared_from_this(), params = std::move(params), limit,
                            done = std::move(done)]() mutable {
      std::shared_ptr<client_handshake> hs;
      try {
        hs = std::make_shared<client_handshake>(std::move(params));
      } catch (const std::exception& e) {
        self->begin_close(e.what(), false);
        return done({errc::io_error, e.what()});
      }
      header h;
      h.type = msg_type::session_open;
      self->send(h, hs->open_payload());
      self->deadline = clock::now() + limit;
      self->deadline_text =
        fmt::format("the other side did not authenticate within {} s", format_seconds(limit));
      self->await_frame([self, hs, done = std::move(done)](const std::string& error,
                                                           const header& h, buffer_ptr payload) {
        if (!error.empty())
          return done({errc::disconnected, "closed during authentication: " + error});
        auto refuse = [&](const std::string& why) {
          self->begin_close(why, false);
          done({errc::protocol_error, why});
        };
        if (h.type != msg_type::session_accept)
          return refuse(fmt::format("expected session_accept, got {}", to_string(h.type)));
        session_ciphers c;
        auto proof = hs->on_accept(payload, c);
        if (!proof)
          return refuse(proof.error().detail());
        header p;
        p.type = msg_type::session_proof;
        self->send(p, std::move(*proof));
        self->activate(std::move(c));
        done(status::ok());
      });
    });
  }

  /// Server side: answers the session_open already read, checks the
  /// client's proof, then reads the first sealed frame and hands it to `done`.
  void accept_session(session_params params, buffer_ptr open,
                      std::function<void(status, const header&, buffer_ptr)> done) {
    asio::dispatch(strand, [self = shared_from_this(), params = std::move(params),
                            open = std::move(open), done = std::move(done)]() mutable {
      auto fail_with = [&](status st) {
        self->begin_close(st.detail(), false);
        done(std::move(st), header{}, nullptr);
      };
      auto hs = std::make_shared<server_handshake>(std::move(params), std::move(open));
      result<buffer_ptr> accept = status{errc::io_error, "no accept"};
      try {
        accept = hs->accept_payload();
      } catch (const std::exception& e) {
        return fail_with({errc::io_error, e.what()});
      }
      if (!accept)
        return fail_with(accept.error());
      header h;
      h.type = msg_type::session_accept;
      self->send(h, std::move(*accept));
      self->deadline_text = "the other side did not authenticate in time";
      self->await_frame([self, hs, done = std::move(done)](const std::string& error,
                                                           const header& h, buffer_ptr payload) mutable {
        if (!error.empty())
          return done({errc::disconnected, "closed during authentication: " + error}, header{},
                      nullptr);
        auto refuse = [&](const std::string& why) {
          self->begin_close(why, false);
          done({errc::protocol_error, why}, header{}, nullptr);
        };
        if (h.type != msg_type::session_proof)
          return refuse(fmt::format("expected session_proof, got {}", to_string(h.type)));
        session_ciphers c;
        if (auto st = hs->on_proof(payload, c); !st)
          return refuse(st.detail());
        self->activate(std::move(c));
        // The first sealed frame (hello or witness_hello) follows; the
        // authenticated side gets the same deadline as the whole handshake.
        asio::post(self->strand, [self, done = std::move(done)]() mutable {
          self->await_frame([done = std::move(done)](const std::string& error, const header& h,
                                                     buffer_ptr payload) {
            if (!error.empty())
              return done({errc::disconnected, error}, header{}, nullptr);
            done(status::ok(), h, std::move(payload));
          });
        });
      });
    });
  }

  // --- Reading (strand) -----------------------------------------------------------------
  //
  // The bytes go through `reader` (io/net/frame_reader.hpp): it holds what was
  // read and not yet parsed, checks the headers and the caps and opens
  // sealed frames; this part only reads the socket and hands frames on.

  /// Takes every complete frame out of the reader into `batch`, hands the
  /// batch over and reads on. Stops instead when the first frame of an
  /// accepted connection is complete (the rest waits for start()), or on a
  /// malformed frame.
  void parse() {
    reading = true;
    for (;;) {
      frame f;
      std::string error;
      switch (reader.next(f, error)) {
      case frame_reader::step::frame:
        if (!take(f.h, std::move(f.payload)))
          return;
        continue;
      case frame_reader::step::failed:
        // The frames before the bad one were fine: they still count.
        deliver_batch();
        return fail(std::move(error));
      case frame_reader::step::more:
        // What is complete does not wait for a large payload on a slow link.
        deliver_batch();
        return read_more();
      }
    }
  }

  /// One complete frame: the first frame of an accepted connection goes to
  /// read_first()'s callback, a keepalive nowhere (it counted as traffic
  /// when read), any other into the batch. False when parsing must stop
  /// (the first frame was handed over).
  bool take(const header& h, buffer_ptr payload) {
    if (first_frame) {
      reading = false;
      grace_timer.cancel();
      auto done = std::move(first_frame);
      first_frame = nullptr;
      done(std::string{}, h, std::move(payload));
      return false;
    }
    if (h.type != msg_type::keepalive)
      batch.push_back(frame{h, std::move(payload)});
    return true;
  }

  void deliver_batch() {
    if (batch.empty())
      return;
    auto frames = std::move(batch);
    batch.clear();
    // After close() has returned, nothing is delivered any more.
    if (on_frames && !close_requested.load(std::memory_order_acquire))
      on_frames(std::move(frames));
  }

  /// Reads what the reader asks for: whatever the socket has, up to the
  /// free room of the receive buffer, or a large payload's next chunk whole.
  void read_more() {
    if (closed)
      return;
    const auto space = reader.space();
    auto on_read = [self = shared_from_this()](std::error_code ec, std::size_t n) {
      if (!self->received(ec, n))
        return;
      self->reader.filled(n);
      guarded(*self, [&] { self->parse(); });
    };
    if (reader.reading_large())
      asio::async_read(socket, asio::buffer(space.data(), space.size()), whole_buffers,
                       std::move(on_read));
    else
      socket.async_read_some(asio::buffer(space.data(), space.size()), std::move(on_read));
  }

  /// Counts `n` bytes read; false when reading stops (closed, or `ec`).
  bool received(std::error_code ec, std::size_t n) {
    bytes_received.fetch_add(n, std::memory_order_relaxed);
    if (closed)
      return false;
    if (ec) {
      read_failed(ec);
      return false;
    }
    last_received = clock::now();
    return true;
  }

  void read_failed(std::error_code ec) {
    if (ec == asio::error::eof)
      return fail("the peer closed the connection");
    if (ec == asio::error::operation_aborted)
      return fail("the connection was aborted");
    fail(fmt::format("read error: {}", ec.message()));
  }

  /// Ends the connection because of an error: no point in flushing.
  void fail(std::string reason) {
    if (first_frame)
      return fail_first(std::move(reason));
    begin_close(std::move(reason), false);
  }

  void fail_first(std::string reason) {
    auto done = std::move(first_frame);
    first_frame = nullptr;
    begin_close(reason, false);
    done(reason, header{}, nullptr);
  }

  // --- Writing (strand) -------------------------------------------------------------------

  /// Takes everything queued (up to max_frames_per_write) and writes it with
  /// one gathered sendmsg, more only if the socket buffer cannot take it all.
  void write_some() {
    if (socket_shut)
      return;
    {
      std::lock_guard lock(queue_mutex);
      if (queue.empty()) {
        writing = false;
        if (!closing)
          return;
      } else {
        // Encrypted payloads go through the scratch buffer: take no more
        // than seal_batch_bytes of them (but always one frame).
        const bool scratch = session.sealer && session.encrypt;
        std::size_t scratch_bytes = 0;
        while (!queue.empty() && inflight.size() < max_frames_per_write) {
          const std::size_t n = queue.front().sealed ? size_of(queue.front().payload) : 0;
          if (scratch && !inflight.empty() && scratch_bytes + n > seal_batch_bytes)
            break;
          scratch_bytes += n;
          inflight.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
    }
    if (inflight.empty())
      return shut_socket();  // closing, and everything queued is written
    out_iov.clear();
    out_next = 0;
    inflight_bytes = 0;
    std::size_t scratch_needed = 0;
    if (session.sealer && session.encrypt)
      for (auto& f : inflight)
        if (f.sealed)
          scratch_needed += size_of(f.payload);
    if (scratch_needed > scratch_capacity) {
      scratch = std::make_unique_for_overwrite<uint8_t[]>(scratch_needed);
      scratch_capacity = scratch_needed;
    }
    std::size_t scratch_used = 0;
    for (auto& f : inflight) {
      out_iov.push_back(iovec{f.head.data(), f.head.size()});
      const std::size_t n = size_of(f.payload);
      const uint8_t* text = n > 0 ? f.payload->data() : nullptr;
      if (f.sealed) {
        if (!session.sealer)
          return write_failed(std::make_error_code(std::errc::protocol_error));
        uint8_t* out = session.encrypt && n > 0 ? scratch.get() + scratch_used : nullptr;
        if (!session.sealer->seal(f.head, text, out, n, f.tag)) {
          spdlog::error("peer {}: cannot seal a {} frame", address,
                        to_string(static_cast<msg_type>(f.head[5])));
          return write_failed(std::make_error_code(std::errc::protocol_error));
        }
        if (out != nullptr) {
          text = out;
          scratch_used += n;
        }
      }
      if (n > 0)
        out_iov.push_back(iovec{const_cast<uint8_t*>(text), n});
      if (f.sealed)
        out_iov.push_back(iovec{f.tag.data(), f.tag.size()});
      inflight_bytes += f.wire_size();
    }
    send_inflight();
  }

  /// Writes out_iov[out_next..] without blocking; waits for the socket to
  /// become writable when its buffer is full.
  void send_inflight() {
    for (;;) {
      // A wait that completed just before the socket was shut.
      if (socket_shut)
        return write_failed(asio::error::operation_aborted);
      msghdr msg{};
      msg.msg_iov = out_iov.data() + out_next;
      msg.msg_iovlen = out_iov.size() - out_next;
      // MSG_NOSIGNAL: a peer that went away is a write error, not SIGPIPE.
      const ssize_t sent = ::sendmsg(socket.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0) {
        const int error = errno;
        if (error == EINTR)
          continue;
        if (error == EAGAIN || error == EWOULDBLOCK)
          return send_rest();
        return write_failed(std::error_code(error, std::system_category()));
      }
      write_calls.fetch_add(1, std::memory_order_relaxed);
      bytes_sent.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
      last_sent = clock::now();
      auto left = static_cast<std::size_t>(sent);
      while (out_next < out_iov.size() && left >= out_iov[out_next].iov_len)
        left -= out_iov[out_next++].iov_len;
      if (out_next == out_iov.size())
        return written();
      out_iov[out_next].iov_base = static_cast<uint8_t*>(out_iov[out_next].iov_base) + left;
      out_iov[out_next].iov_len -= left;
    }
  }

  /// The socket buffer is full: Asio writes the rest when the socket can
  /// take it. (Waiting for writability ourselves with async_wait stalled
  /// under load: a readiness edge that came before the wait was lost, and
  /// the link died of "no traffic".)
  void send_rest() {
    out_bufs.clear();
    for (auto i = out_next; i < out_iov.size(); ++i)
      out_bufs.emplace_back(out_iov[i].iov_base, out_iov[i].iov_len);
    asio::async_write(socket, out_bufs, whole_buffers,
                      [self = shared_from_this()](std::error_code ec, std::size_t n) {
                        if (ec)
                          return self->write_failed(ec);
                        self->bytes_sent.fetch_add(n, std::memory_order_relaxed);
                        self->last_sent = clock::now();
                        self->written();
                      });
  }

  void release_inflight() {
    queued_bytes.fetch_sub(inflight_bytes, std::memory_order_relaxed);
    inflight.clear();
    // One frame larger than a batch made the scratch buffer grow: give it back.
    if (scratch_capacity > seal_batch_bytes) {
      scratch.reset();
      scratch_capacity = 0;
    }
    out_iov.clear();
    out_next = 0;
    inflight_bytes = 0;
  }

  void written() {
    release_inflight();
    write_some();
  }

  void write_failed(std::error_code ec) {
    release_inflight();
    {
      std::lock_guard lock(queue_mutex);
      writing = false;
    }
    if (!closed)
      begin_close(ec == asio::error::operation_aborted
                    ? std::string("the connection was aborted")
                    : fmt::format("write error: {}", ec.message()),
                  false);
    shut_socket();
  }
  // --- Timers (strand) --------------------------------------------------------------------

  void schedule_tick() {
    auto shortest = std::chrono::milliseconds::max();
    if (keepalive.count() > 0)
      shortest = std::min(shortest, keepalive);
    if (timeout.count() > 0)
      shortest = std::min(shortest, timeout);
    if (shortest == std::chrono::milliseconds::max())
      return;  // both disabled
    const auto period = std::max(std::chrono::milliseconds(10), shortest / 4);
    tick_timer.expires_after(period);
    tick_timer.async_wait([self = shared_from_this()](std::error_code ec) {
      if (!ec && !self->closed)
        self->on_tick();
    });
  }

  void on_tick() {
    const auto now = clock::now();
    if (timeout.count() > 0 && now - last_received >= timeout)
      return begin_close(fmt::format("no traffic for {} s", format_seconds(timeout)), false);
    if (keepalive.count() > 0 && now - last_sent >= keepalive) {
      bool idle = false;
      {
        std::lock_guard lock(queue_mutex);
        idle = !writing;
      }
      // A write in flight is traffic already; a stuck one is not helped by more.
      if (idle) {
        header h;
        h.type = msg_type::keepalive;
        send(h, nullptr);
        last_sent = now;
      }
    }
    schedule_tick();
  }

  // --- Closing (strand) --------------------------------------------------------------------

  void begin_close(std::string reason, bool linger) {
    if (closed) {
      if (!linger)
        shut_socket();
      return;
    }
    closed = true;
    close_reason = reason;
    // A handshake waiting for its frame hears of the close now: once the
    // socket is shut, neither the read (it stops at `closed`) nor the
    // deadline (its timer is cancelled) would ever answer it.
    if (first_frame) {
      auto done = std::move(first_frame);
      first_frame = nullptr;
      asio::post(strand, [done = std::move(done), reason] { done(reason, header{}, nullptr); });
    }
    bool idle = false;
    {
      std::lock_guard lock(queue_mutex);
      closing = true;
      idle = !writing;
    }
    tick_timer.cancel();
    spdlog::debug("peer {}: connection closed: {}", address, reason);
    on_frames = nullptr;
    auto cb = std::move(on_close);
    on_close = nullptr;
    if (!linger || idle) {
      shut_socket();
    } else {
      grace_timer.expires_after(close_grace);
      grace_timer.async_wait([self = shared_from_this()](std::error_code ec) {
        if (!ec)
          self->shut_socket();
      });
    }
    if (started && cb)
      cb(reason);
  }

  void shut_socket() {
    if (socket_shut)
      return;
    socket_shut = true;
    pending_slot.reset();
    grace_timer.cancel();
    tick_timer.cancel();
    std::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    std::lock_guard lock(queue_mutex);
    for (const auto& f : queue)
      queued_bytes.fetch_sub(f.wire_size(), std::memory_order_relaxed);
    queue.clear();
  }

  strand_type strand;
  socket_type socket;
  timer_type tick_timer;
  timer_type grace_timer;  // first-frame deadline, then the close grace
  std::string address;
  std::string ip;

  /// See connection::rehome. Runs off the strand: the caller guarantees
  /// that nothing runs on it (the first frame was delivered, reading
  /// stopped, start() not called); a first-frame timer still armed finds
  /// `first_frame` empty and does nothing.
  std::shared_ptr<impl> rehome(asio::io_context& io) {
    std::error_code ec;
    auto protocol = socket.local_endpoint(ec).protocol();
    if (ec)
      protocol = tcp::v4();
    socket_type moved(asio::make_strand(io));
    auto fd = socket.release(ec);
    if (ec) {
      // Not movable (already closed): the new one starts closed.
      auto fresh = std::make_shared<impl>(std::move(moved));
      fresh->closed = true;
      fresh->close_reason = close_reason.empty() ? ec.message() : close_reason;
      return fresh;
    }
    moved.assign(protocol, fd, ec);
    if (ec) {
      ::close(fd);
      auto fresh = std::make_shared<impl>(socket_type(asio::make_strand(io)));
      fresh->closed = true;
      fresh->close_reason = "cannot move the connection: " + ec.message();
      closed = socket_shut = true;
      return fresh;
    }
    auto fresh = std::make_shared<impl>(std::move(moved));
    fresh->address = address;
    fresh->ip = ip;
    fresh->reader = std::move(reader);
    reader = frame_reader{};
    fresh->session = std::move(session);
    fresh->seal_sends.store(seal_sends.load());
    fresh->pending_slot = std::move(pending_slot);
    fresh->bytes_received.store(bytes_received.load());
    closed = socket_shut = true;
    close_reason = "moved to the resource's data thread";
    return fresh;
  }

  std::atomic<bool> close_requested{false};
  std::atomic<bool> seal_sends{false};  // send() marks frames to be sealed
  std::atomic<uint64_t> queued_bytes{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> write_calls{0};

  // Shared between send() callers and the strand.
  std::mutex queue_mutex;
  std::deque<outgoing> queue;
  bool writing = false;  // a write_some() is scheduled or in flight
  bool closing = false;  // send() drops frames

  // Strand only.
  std::vector<outgoing> inflight;
  std::vector<iovec> out_iov;  // inflight's header and payload bytes not yet written
  std::vector<asio::const_buffer> out_bufs;  // the rest of out_iov while Asio writes it
  std::size_t out_next = 0;
  uint64_t inflight_bytes = 0;
  /// What was read and not yet handed on; its payload cap is
  /// unauthenticated_frame_limit until lift_limits(), then max_wire_payload.
  frame_reader reader;
  /// Once the handshake proved the key: seals what is sent (the opener
  /// went to `reader`).
  session_ciphers session;
  std::unique_ptr<uint8_t[]> scratch;  // ciphertext of the frames being written
  std::size_t scratch_capacity = 0;
  std::shared_ptr<void> pending_slot;  // the listener's count of unauthenticated connections
  clock::time_point deadline;          // of the frame awaited before start()
  std::string deadline_text;
  std::vector<frame> batch;
  bool reading = false;  // parse() has run and not handed over a first frame
  bool started = false;
  bool closed = false;
  bool socket_shut = false;
  std::string close_reason;
  frames_handler on_frames;
  close_handler on_close;
  first_frame_handler first_frame;
  std::chrono::milliseconds keepalive{0};
  std::chrono::milliseconds timeout{0};
  clock::time_point last_received;
  clock::time_point last_sent;
};

connection::connection(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

connection::~connection() {
  // Nobody can send on it or close it any more: end it (on_close still runs).
  impl_->close("the connection object was released", true);
}

void connection::start(frames_handler on_frames, close_handler on_close,
                       std::chrono::milliseconds keepalive, std::chrono::milliseconds timeout) {
  impl_->start(std::move(on_frames), std::move(on_close), keepalive, timeout);
}

void connection::send(const header& h, buffer_ptr payload) {
  impl_->send(h, std::move(payload));
}

void connection::close(const std::string& reason) {
  impl_->close(reason, true);
}

void connection::open_session(session_params params, std::chrono::milliseconds timeout,
                              std::function<void(status)> done) {
  impl_->open_session(std::move(params), timeout, std::move(done));
}

void connection::accept_session(session_params params, buffer_ptr open,
                                std::function<void(status, const header&, buffer_ptr)> done) {
  impl_->accept_session(std::move(params), std::move(open), std::move(done));
}

bool connection::authenticated() const {
  return impl_->seal_sends.load(std::memory_order_acquire);
}

std::shared_ptr<connection> connection::rehome(asio::io_context& io) {
  return std::make_shared<connection>(impl_->rehome(io));
}

std::string connection::remote_address() const {
  return impl_->address;
}

std::string connection::remote_ip() const {
  return impl_->ip;
}

uint64_t connection::queued_bytes() const {
  return impl_->queued_bytes.load(std::memory_order_relaxed);
}

uint64_t connection::bytes_sent() const {
  return impl_->bytes_sent.load(std::memory_order_relaxed);
}

uint64_t connection::bytes_received() const {
  return impl_->bytes_received.load(std::memory_order_relaxed);
}

uint64_t connection::write_calls() const {
  return impl_->write_calls.load(std::memory_order_relaxed);
}

// --- Connecting ------------------------------------------------------------------------------

namespace {

struct connect_op : std::enable_shared_from_this<connect_op> {
  using callback = std::function<void(status, std::shared_ptr<connection>)>;

  connect_op(asio::io_context& io, std::string remote, callback done)
      : strand(asio::make_strand(io)), resolver(strand), socket(strand), timer(strand),
        remote(std::move(remote)), done(std::move(done)) {}

  void run(const std::string& host, uint16_t port, std::optional<tcp::endpoint> source,
           std::chrono::milliseconds timeout) {
    asio::dispatch(strand, [self = shared_from_this(), host, port, source, timeout] {
      self->source = source;
      self->timer.expires_after(timeout);
      self->timer.async_wait([self, timeout](std::error_code ec) {
        if (ec)
          return;
        self->finish({errc::timeout, fmt::format("cannot connect to {}: no connection within {} s",
                                                 self->remote, format_seconds(timeout))});
      });
      self->resolver.async_resolve(
        host, std::to_string(port), tcp::resolver::numeric_service,
        [self](std::error_code ec, tcp::resolver::results_type results) {
          if (self->finished)
            return;
          if (ec)
            return self->finish({errc::disconnected, fmt::format("cannot connect to {}: {}",
                                                                 self->remote, ec.message())});
          for (const auto& entry : results) {
            if (!self->source || entry.endpoint().protocol() == self->source->protocol())
              self->candidates.push_back(entry.endpoint());
          }
          if (self->candidates.empty())
            return self->finish(
              {errc::invalid_argument,
               fmt::format("cannot connect to {}: no address of the source address's family",
                           self->remote)});
          self->try_next();
        });
    });
  }

  void try_next() {
    if (finished)
      return;
    if (next == candidates.size())
      return finish({errc::disconnected,
                     fmt::format("cannot connect to {}: {}", remote, last_error.message())});
    const tcp::endpoint target = candidates[next++];
    std::error_code ec;
    socket.close(ec);
    socket.open(target.protocol(), ec);
    if (!ec && source) {
      if (source->port() != 0)
        socket.set_option(tcp::socket::reuse_address(true), ec);
      if (!ec)
        socket.bind(*source, ec);
      if (ec)
        return finish({errc::invalid_argument,
                       fmt::format("cannot connect to {}: cannot bind source {}: {}", remote,
                                   format_endpoint(*source), ec.message())});
    }
    if (ec) {
      last_error = ec;
      return try_next();
    }
    socket.async_connect(target, [self = shared_from_this(), target](std::error_code ec) {
      if (self->finished)
        return;
      if (ec) {
        spdlog::debug("peer: connecting to {} ({}): {}", self->remote, format_endpoint(target),
                      ec.message());
        self->last_error = ec;
        return self->try_next();
      }
      std::error_code ignored;
      self->socket.set_option(tcp::no_delay(true), ignored);
      self->finished = true;
      self->timer.cancel();
      auto conn = std::make_shared<connection>(
        std::make_shared<connection::impl>(std::move(self->socket)));
      auto done = std::move(self->done);
      done(status::ok(), std::move(conn));
    });
  }

  void finish(status error) {
    if (finished)
      return;
    finished = true;
    timer.cancel();
    resolver.cancel();
    std::error_code ignored;
    socket.close(ignored);
    auto cb = std::move(done);
    cb(std::move(error), nullptr);
  }

  strand_type strand;
  tcp::resolver::rebind_executor<strand_type>::other resolver;
  socket_type socket;
  timer_type timer;
  std::string remote;
  callback done;
  std::optional<tcp::endpoint> source;
  std::vector<tcp::endpoint> candidates;
  std::size_t next = 0;
  std::error_code last_error = asio::error::host_not_found;
  bool finished = false;
};

} // namespace

void connect(asio::io_context& io, const std::string& remote, const std::string& source,
             std::chrono::milliseconds timeout,
             std::function<void(status, std::shared_ptr<connection>)> done) {
  std::string host;
  uint16_t port = 0;
  auto fail = [&](std::string why) {
    asio::post(io, [done = std::move(done), why = std::move(why)] {
      done({errc::invalid_argument, why}, nullptr);
    });
  };
  if (!split_tcp_address(remote, host, port))
    return fail(fmt::format("cannot connect to {}: not a tcp://host[:port] address", remote));
  std::optional<tcp::endpoint> bind_to;
  if (!source.empty()) {
    std::string source_host;
    uint16_t source_port = 0;
    if (!split_address(source, source_host, source_port, 0))
      return fail(fmt::format("cannot connect to {}: bad source address {}", remote, source));
    std::error_code ec;
    const auto address = asio::ip::make_address(source_host, ec);
    if (ec)
      return fail(fmt::format("cannot connect to {}: source {} is not an IP address", remote, source));
    bind_to = tcp::endpoint(address, source_port);
  }
  auto op = std::make_shared<connect_op>(io, remote, std::move(done));
  op->run(host, port, bind_to, timeout);
}

// --- Listening ----------------------------------------------------------------------------------

struct listener::impl : std::enable_shared_from_this<listener::impl> {
  using acceptor_type = asio::basic_socket_acceptor<tcp, strand_type>;

  impl(asio::io_context& io, std::vector<std::string> addresses, hello_handler on_hello,
       std::chrono::milliseconds first_frame_timeout, admission rules)
      : io(io), strand(asio::make_strand(io)), addresses(std::move(addresses)),
        on_hello(std::move(on_hello)), first_frame_timeout(first_frame_timeout),
        rules(std::move(rules)) {}

  /// A pending slot for a connection from `ip`, or null when a cap is full.
  std::shared_ptr<void> take_slot(const std::string& ip);

  status start();
  status bind_one(const std::string& address, std::error_code& family_error);
  void accept(acceptor_type& acceptor);
  void on_accept(acceptor_type& acceptor, std::error_code ec, socket_type socket);
  void stop();

  asio::io_context& io;
  strand_type strand;
  const std::vector<std::string> addresses;
  const hello_handler on_hello;
  const std::chrono::milliseconds first_frame_timeout;
  const admission rules;
  const std::shared_ptr<pending_counts> counts = std::make_shared<pending_counts>();
  /// Refused connections since the last log line about them (strand).
  uint64_t refused_quietly = 0;
  clock::time_point last_refusal_log;

  // Strand only (and start(), before any handler runs).
  std::list<acceptor_type> acceptors;
  std::list<std::weak_ptr<connection::impl>> pending;
  bool stopped = false;
  std::unique_ptr<timer_type> retry_timer;

  mutable std::mutex bound_mutex;
  std::vector<std::string> bound;
};

status listener::impl::bind_one(const std::string& address, std::error_code& family_error) {
  std::string host;
  uint16_t port = 0;
  if (!split_address(address, host, port, default_port))
    return {errc::invalid_argument,
            fmt::format("cannot listen on {}: not a tcp://host[:port] address", address)};
  const bool only_v4 = address.rfind("tcp4://", 0) == 0;
  const bool only_v6 = address.rfind("tcp6://", 0) == 0;

  std::error_code ec;
  tcp::endpoint endpoint;
  if (const auto literal = asio::ip::make_address(host, ec); !ec) {
    endpoint = tcp::endpoint(literal, port);
  } else {
    tcp::resolver resolver(io);
    const auto flags = tcp::resolver::passive | tcp::resolver::numeric_service;
    const auto results = only_v4   ? resolver.resolve(tcp::v4(), host, std::to_string(port), flags, ec)
                         : only_v6 ? resolver.resolve(tcp::v6(), host, std::to_string(port), flags, ec)
                                   : resolver.resolve(host, std::to_string(port), flags, ec);
    if (ec || results.empty())
      return {errc::invalid_argument,
              fmt::format("cannot listen on {}: cannot resolve {}: {}", address, host,
                          ec ? ec.message() : std::string("no address"))};
    endpoint = results.begin()->endpoint();
  }
  if ((only_v4 && !endpoint.address().is_v4()) || (only_v6 && !endpoint.address().is_v6()))
    return {errc::invalid_argument,
            fmt::format("cannot listen on {}: {} is not of the scheme's address family", address,
                        host)};

  acceptor_type acceptor(strand);
  auto failed = [&](const char* step) -> status {
    if (family_missing(ec, endpoint, std::string_view(step) == "socket"))
      family_error = ec;
    return {errc::io_error,
            fmt::format("cannot listen on {}: {}: {}", address, step, ec.message())};
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec)
    return failed("socket");
  acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec)
    return failed("SO_REUSEADDR");
  if (endpoint.address().is_v6()) {
    // [::] and 0.0.0.0 on one port, as HAST's default listen pair wants.
    acceptor.set_option(asio::ip::v6_only(true), ec);
    if (ec)
      return failed("IPV6_V6ONLY");
  }
  acceptor.bind(endpoint, ec);
  if (ec)
    return failed("bind");
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return failed("listen");
  const auto local = acceptor.local_endpoint(ec);
  {
    std::lock_guard lock(bound_mutex);
    bound.push_back("tcp://" + format_endpoint(ec ? endpoint : local));
  }
  acceptors.push_back(std::move(acceptor));
  return status::ok();
}

status listener::impl::start() {
  if (addresses.empty())
    return {errc::invalid_argument, "no peer listen address configured"};
  std::vector<status> skipped;
  for (const auto& address : addresses) {
    std::error_code family_error;
    auto s = bind_one(address, family_error);
    if (s)
      continue;
    if (family_error) {
      skipped.push_back(std::move(s));
      continue;
    }
    acceptors.clear();
    std::lock_guard lock(bound_mutex);
    bound.clear();
    return s;
  }
  if (acceptors.empty())
    return skipped.front();
  for (const auto& s : skipped)
    spdlog::info("peer: {} (address family not supported here; skipped)", s.detail());
  {
    std::lock_guard lock(bound_mutex);
    for (const auto& b : bound)
      spdlog::info("peer: listening on {}", b);
  }
  asio::dispatch(strand, [self = shared_from_this()] {
    for (auto& acceptor : self->acceptors)
      self->accept(acceptor);
  });
  return status::ok();
}

void listener::impl::accept(acceptor_type& acceptor) {
  if (stopped)
    return;
  acceptor.async_accept(asio::make_strand(io),
                        [self = shared_from_this(), &acceptor](std::error_code ec, socket_type socket) {
                          self->on_accept(acceptor, ec, std::move(socket));
                        });
}

void listener::impl::on_accept(acceptor_type& acceptor, std::error_code ec, socket_type socket) {
  if (stopped)
    return;
  if (ec) {
    if (ec == asio::error::operation_aborted)
      return;
    // EMFILE and the like: try again shortly rather than spin.
    spdlog::warn("peer: accept failed: {}; retrying", ec.message());
    retry_timer = std::make_unique<timer_type>(strand);
    retry_timer->expires_after(accept_retry);
    retry_timer->async_wait([self = shared_from_this(), &acceptor](std::error_code wait_ec) {
      if (!wait_ec)
        self->accept(acceptor);
    });
    return;
  }
  std::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  // Nothing is read from an address nobody configured, nor beyond the caps.
  std::string ip;
  if (const auto ep = socket.remote_endpoint(ignored); !ignored)
    ip = ep.address().to_string();
  std::string refusal;
  std::shared_ptr<void> slot;
  if (ip.empty())
    refusal = "no remote address";
  else if (rules.allowed && !rules.allowed(ip))
    refusal = "not an address of any configured remote";
  else if (!(slot = take_slot(ip)))
    refusal = "too many connections waiting to authenticate";
  if (!refusal.empty()) {
    socket.close(ignored);
    // A flood must not flood the log: one line a second at most.
    ++refused_quietly;
    const auto now = clock::now();
    if (now - last_refusal_log >= std::chrono::seconds(1)) {
      spdlog::warn("peer: connection from {} refused: {}{}", ip.empty() ? "?" : ip, refusal,
                   refused_quietly > 1
                     ? fmt::format(" ({} refused since the last such line)", refused_quietly)
                     : std::string{});
      refused_quietly = 0;
      last_refusal_log = now;
    }
    return accept(acceptor);
  }
  auto conn = std::make_shared<connection::impl>(std::move(socket));
  conn->pending_slot = std::move(slot);
  spdlog::debug("peer: connection from {}", conn->address);
  pending.remove_if([](const auto& weak) { return weak.expired(); });
  pending.push_back(conn);
  conn->read_first(first_frame_timeout, [self = shared_from_this(), weak = std::weak_ptr(conn)](
                                          const std::string& error, const header& h,
                                          buffer_ptr payload) {
    auto conn = weak.lock();
    if (!conn)
      return;
    if (!error.empty()) {
      spdlog::warn("peer: connection from {} closed: {}", conn->address, error);
      return;
    }
    // The hand-over happens on the listener's strand, so that stop() and
    // the hand-over cannot cross.
    asio::dispatch(self->strand, [self, conn, h, payload = std::move(payload)]() mutable {
      self->pending.remove_if([&](const auto& weak) {
        auto p = weak.lock();
        return !p || p == conn;
      });
      if (self->stopped) {
        conn->close("the listener is stopping", false);
        return;
      }
      spdlog::debug("peer: first frame from {}: {}", conn->address, describe(h));
      if (self->on_hello)
        self->on_hello(std::make_shared<connection>(std::move(conn)), h, std::move(payload));
    });
  });
  accept(acceptor);
}

std::shared_ptr<void> listener::impl::take_slot(const std::string& ip) {
  std::lock_guard lock(counts->mutex);
  auto& mine = counts->by_address[ip];
  if (counts->total >= rules.max_pending || mine >= rules.max_pending_per_address) {
    if (mine == 0)
      counts->by_address.erase(ip);
    return nullptr;
  }
  ++counts->total;
  ++mine;
  // The slot frees itself when the connection authenticates or goes.
  struct slot {
    slot(std::shared_ptr<pending_counts> c, std::string a) : counts(std::move(c)), ip(std::move(a)) {}
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    std::shared_ptr<pending_counts> counts;
    std::string ip;
    ~slot() {
      std::lock_guard lock(counts->mutex);
      --counts->total;
      if (auto it = counts->by_address.find(ip); it != counts->by_address.end() && --it->second == 0)
        counts->by_address.erase(it);
    }
  };
  return std::make_shared<slot>(counts, ip);
}

void listener::impl::stop() {
  asio::dispatch(strand, [self = shared_from_this()] {
    if (self->stopped)
      return;
    self->stopped = true;
    std::error_code ignored;
    for (auto& acceptor : self->acceptors)
      acceptor.close(ignored);
    if (self->retry_timer)
      self->retry_timer->cancel();
    for (auto& weak : self->pending)
      if (auto conn = weak.lock())
        conn->close("the listener is stopping", false);
    self->pending.clear();
  });
}

listener::listener(asio::io_context& io, std::vector<std::string> addresses, hello_handler on_hello,
                   std::chrono::milliseconds first_frame_timeout, admission rules)
    : impl_(std::make_shared<impl>(io, std::move(addresses), std::move(on_hello),
                                   first_frame_timeout, std::move(rules))) {}

listener::~listener() {
  stop();
}

status listener::start() {
  return impl_->start();
}

void listener::stop() {
  impl_->stop();
}

std::vector<std::string> listener::local_addresses() const {
  std::lock_guard lock(impl_->bound_mutex);
  return impl_->bound;
}

} // namespace hast::peer
