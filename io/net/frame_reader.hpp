#pragma once

// The receiving half of a peer or witness connection at the byte level:
// bytes as they come off the socket are accumulated, each 80-byte header is
// checked (decode_header, then the payload cap of the connection's state),
// the payload is gathered, and in a session (io/net/secure_frames.hpp) the
// sealed frame is opened and verified before anything of it is handed out.
// io/net/peer_transport.cpp's connection reads with exactly this and nothing
// else, so that a test (or tests/fuzz/frame_reader_fuzz.cpp) that feeds
// bytes to a frame_reader runs what the daemon runs. No socket here.
//
// Use: next() until it says `more`; read into space() (a socket read of at
// most space().size() bytes, or exactly that many when reading_large());
// filled(n); next() again.

#include "io/codec/buffer.hpp"
#include "io/net/peer_protocol.hpp"
#include "io/net/secure_frames.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace hast::peer {

/// One received frame. `payload` is the raw wire payload in a block_buffer
/// of its own (nullptr when h.payload_length is 0); pass it to
/// open_payload() for data messages. In a session the tag is gone already:
/// h.payload_length is the opened payload's size.
struct frame {
  header h;
  buffer_ptr payload;
};

class frame_reader {
public:
  /// Before the other side proved anything: frames of at most
  /// unauthenticated_frame_limit payload bytes, an 8 KiB buffer.
  frame_reader();
  frame_reader(frame_reader&&) noexcept;
  frame_reader& operator=(frame_reader&&) noexcept;
  ~frame_reader();

  enum class step {
    frame,  // `out` holds the next frame
    more,   // the bytes so far end inside a frame: read into space()
    failed  // `error` says why; the connection must end, nothing more is read
  };

  /// The next complete frame of the bytes received so far. A malformed
  /// header, a payload over the current cap, or (in a session) a frame
  /// shorter than its tag or whose tag does not verify is `failed`; after
  /// that the reader must not be used any more.
  step next(frame& out, std::string& error);

  /// Where the next read goes, after next() said `more` (never empty): the
  /// free tail of the receive buffer (the unparsed bytes are moved to its
  /// front first) or, while a large payload is read straight into its own
  /// buffer, its next chunk (at most 1 MiB, so that a slow link still shows
  /// traffic), which must be filled completely.
  std::span<uint8_t> space();
  bool reading_large() const { return large_ != nullptr; }
  /// `n` bytes were read into space().
  void filled(std::size_t n);

  /// Full-size frames and a full-size receive buffer: the other side is
  /// authenticated, or (without a `secret`) its link was accepted.
  void lift_limits();
  /// From now on every frame is sealed: opened with `opener` (encrypted,
  /// or integrity only when `encrypt` is false) before it is handed out.
  /// Lifts the limits too.
  void open_with(std::unique_ptr<frame_cipher> opener, bool encrypt);

  /// The largest payload_length accepted now.
  std::size_t frame_limit() const { return limit_; }
  /// Bytes received and not yet handed out as frames.
  std::size_t buffered() const;

private:
  step finish_large(frame& out, std::string& error);
  std::string rejected(const header& h) const;

  std::unique_ptr<uint8_t[]> in_;  // receive buffer of capacity_ bytes; unparsed: [begin_, end_)
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t limit_ = unauthenticated_frame_limit;
  std::unique_ptr<frame_cipher> opener_;
  bool encrypt_ = true;
  // A frame whose payload is too large to wait in the receive buffer: the
  // rest of it is read straight into `large_`.
  header large_header_;
  std::array<uint8_t, header_size> large_head_{};  // its wire bytes (the AEAD's associated data)
  buffer_ptr large_;
  std::size_t large_done_ = 0;
};

} // namespace hast::peer
