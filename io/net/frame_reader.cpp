#include "io/net/frame_reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace hast::peer {

namespace {

/// Each read fills (part of) the receive buffer, and every complete frame
/// in it is handed out before the next read. A connection gets the large
/// buffer once the other side is authenticated (or, without a `secret`,
/// once it is started); before, the small one holds one frame of the
/// largest size allowed then.
constexpr std::size_t receive_buffer_size = 256u << 10;
constexpr std::size_t unauthenticated_receive_size = 8u << 10;
static_assert(header_size + unauthenticated_frame_limit < unauthenticated_receive_size);
/// A frame cut off by the end of a read whose payload is at most this large
/// stays in the receive buffer (moved to its front) until the next read
/// completes it: one memmove of a few KiB, and the frame can share a batch
/// with the ones behind it. A larger one gets its own block_buffer and the
/// rest of its payload is read straight into it, so that big payloads are
/// copied once at most.
constexpr std::size_t small_payload = 16u << 10;
static_assert(header_size + small_payload < receive_buffer_size,
              "a partial small frame plus room to read must fit the receive buffer");
static_assert(unauthenticated_frame_limit <= small_payload,
              "before authentication no frame is read into a buffer of its own");
/// Large payloads are read in chunks of this size so that a large frame on
/// a slow link still counts as traffic for the receive timeout.
constexpr std::size_t read_chunk = 1u << 20;

} // namespace

frame_reader::frame_reader()
    : in_(std::make_unique<uint8_t[]>(unauthenticated_receive_size)),
      capacity_(unauthenticated_receive_size) {}

frame_reader::frame_reader(frame_reader&&) noexcept = default;
frame_reader& frame_reader::operator=(frame_reader&&) noexcept = default;
frame_reader::~frame_reader() = default;

std::size_t frame_reader::buffered() const {
  return (end_ - begin_) + (large_ ? large_done_ + header_size : 0);
}

frame_reader::step frame_reader::next(frame& out, std::string& error) {
  if (large_)
    return large_done_ < large_->size() ? step::more : finish_large(out, error);
  const std::size_t available = end_ - begin_;
  if (available < header_size)
    return step::more;
  const uint8_t* at = in_.get() + begin_;
  auto decoded = decode_header(std::span<const uint8_t, header_size>(at, header_size));
  if (!decoded) {
    error = decoded.error().detail();
    return step::failed;
  }
  header h = *decoded;
  const std::size_t body = h.payload_length;
  if (body > limit_) {
    error = fmt::format("{} frame of {} bytes before authentication (limit {})", to_string(h.type),
                        body, limit_);
    return step::failed;
  }
  if (opener_ && body < tag_size) {
    error = fmt::format("{} frame of {} bytes is shorter than its tag", to_string(h.type), body);
    return step::failed;
  }
  const std::size_t present = available - header_size;
  if (present >= body) {
    buffer_ptr payload;
    if (opener_) {
      const std::size_t n = body - tag_size;
      if (n > 0)
        payload = make_buffer(n);
      uint8_t* text_out = payload ? payload->data() : nullptr;
      const uint8_t* text = at + header_size;
      // Integrity only: the payload is associated data, copied as it came.
      if (!encrypt_ && n > 0)
        std::memcpy(text_out, text, n);
      if (!opener_->open(std::span<const uint8_t>(at, header_size), encrypt_ ? text : text_out,
                         text_out, n, std::span<const uint8_t, tag_size>(text + n, tag_size))) {
        error = rejected(h);
        return step::failed;
      }
      h.payload_length = static_cast<uint32_t>(n);
    } else if (body > 0) {
      payload = make_buffer(body);
      std::memcpy(payload->data(), at + header_size, body);
    }
    begin_ += header_size + body;
    out = frame{h, std::move(payload)};
    return step::frame;
  }
  if (body <= small_payload && header_size + body < capacity_)
    return step::more;
  // Too large to wait in the receive buffer: the rest is read into its own.
  large_header_ = h;
  std::memcpy(large_head_.data(), at, header_size);
  large_ = make_buffer(body);
  std::memcpy(large_->data(), at + header_size, present);
  large_done_ = present;
  begin_ = end_ = 0;
  return step::more;
}

frame_reader::step frame_reader::finish_large(frame& out, std::string& error) {
  buffer_ptr payload = std::move(large_);
  large_ = nullptr;
  header h = large_header_;
  if (opener_) {
    const std::size_t n = payload->size() - tag_size;
    uint8_t* data = payload->data();
    if (!opener_->open(large_head_, data, data, n,
                       std::span<const uint8_t, tag_size>(data + n, tag_size))) {
      error = rejected(h);
      return step::failed;
    }
    payload->truncate(n);
    h.payload_length = static_cast<uint32_t>(n);
    if (n == 0)
      payload = nullptr;
  }
  out = frame{h, std::move(payload)};
  return step::frame;
}

std::span<uint8_t> frame_reader::space() {
  if (large_) {
    const std::size_t chunk = std::min(read_chunk, large_->size() - large_done_);
    return {large_->data() + large_done_, chunk};
  }
  if (begin_ == end_) {
    begin_ = end_ = 0;
  } else if (begin_ > 0) {
    std::memmove(in_.get(), in_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  return {in_.get() + end_, capacity_ - end_};
}

void frame_reader::filled(std::size_t n) {
  if (large_)
    large_done_ += n;
  else
    end_ += n;
}

void frame_reader::lift_limits() {
  if (limit_ == max_wire_payload)
    return;
  limit_ = max_wire_payload;
  auto bigger = std::make_unique<uint8_t[]>(receive_buffer_size);
  std::memcpy(bigger.get(), in_.get() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
  in_ = std::move(bigger);
  capacity_ = receive_buffer_size;
}

void frame_reader::open_with(std::unique_ptr<frame_cipher> opener, bool encrypt) {
  opener_ = std::move(opener);
  encrypt_ = encrypt;
  lift_limits();
}

std::string frame_reader::rejected(const header& h) const {
  return fmt::format("frame {} of the session ({}) fails authentication: altered, injected, "
                     "replayed, reordered or dropped on the way; nothing of it was used",
                     opener_->sequence(), to_string(h.type));
}

} // namespace hast::peer
