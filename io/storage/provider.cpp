#include "io/storage/provider.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hast {

namespace {

constexpr uint64_t align = provider::alignment;
constexpr size_t zero_chunk = 1 << 20;

uint64_t round_down(uint64_t x) {
  return x / align * align;
}
uint64_t round_up(uint64_t x) {
  return (x + align - 1) / align * align;
}

bool aligned(const void *buf, size_t len, uint64_t off) {
  return reinterpret_cast<uintptr_t>(buf) % align == 0 && len % align == 0 && off % align == 0;
}

struct free_deleter {
  void operator()(void *p) const { std::free(p); }
};
using aligned_bytes = std::unique_ptr<uint8_t, free_deleter>;

aligned_bytes allocate_aligned(size_t len) {
  auto p = static_cast<uint8_t *>(std::aligned_alloc(align, round_up(std::max<size_t>(len, 1))));
  if (p == nullptr)
    throw std::bad_alloc{};
  return aligned_bytes{p};
}

status open_error(const std::string &path, const char *what, int error) {
  return {errc::io_error, fmt::format("{}: {}: {}", path, what, std::strerror(error))};
}

} // namespace

const char *to_string(io_kind kind) {
  switch (kind) {
  case io_kind::read:
    return "read";
  case io_kind::write:
    return "write";
  case io_kind::flush:
    return "flush";
  case io_kind::discard:
    return "discard";
  case io_kind::write_zeroes:
    return "write_zeroes";
  }
  return "unknown";
}

provider::provider(int fd, std::string path, uint64_t size, bool direct, bool writable,
                   bool block_device)
    : fd_(fd), path_(std::move(path)), size_(size), direct_(direct), writable_(writable),
      block_device_(block_device) {}

provider::provider(provider &&other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)), size_(other.size_.load()),
      direct_(other.direct_), writable_(other.writable_), block_device_(other.block_device_),
      faults_(std::move(other.faults_)), rmw_locks_(other.rmw_locks_) {}

provider &provider::operator=(provider &&other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    size_ = other.size_.load();
    direct_ = other.direct_;
    writable_ = other.writable_;
    block_device_ = other.block_device_;
    faults_ = std::move(other.faults_);
    rmw_locks_ = other.rmw_locks_;
  }
  return *this;
}

provider::~provider() {
  close();
}

void provider::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

result<provider> provider::open(const std::string &path, bool writable) {
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  bool direct = true;
  int fd = ::open(path.c_str(), flags | O_DIRECT);
  if (fd < 0 && errno == EINVAL) {
    direct = false;
    fd = ::open(path.c_str(), flags);
  }
  if (fd < 0)
    return open_error(path, writable ? "cannot open for writing" : "cannot open", errno);
  provider prov{fd, path, 0, direct, writable, false};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return open_error(path, "cannot stat", errno);
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0)
      return open_error(path, "cannot get the device size", errno);
    prov.size_ = bytes;
    prov.block_device_ = true;
  } else if (S_ISREG(st.st_mode)) {
    prov.size_ = static_cast<uint64_t>(st.st_size);
  } else {
    return status{errc::invalid_argument,
                  fmt::format("{}: not a block device or regular file", path)};
  }
  return prov;
}

result<uint64_t> provider::refresh_size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0)
    return status{errc::io_error, fmt::format("{}: cannot stat: {}", path_, std::strerror(errno))};
  uint64_t bytes = 0;
  if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd_, BLKGETSIZE64, &bytes) != 0)
      return status{errc::io_error,
                    fmt::format("{}: cannot get the device size: {}", path_, std::strerror(errno))};
  } else {
    bytes = static_cast<uint64_t>(st.st_size);
  }
  // Only ever grows, even against a concurrent refresh that read less.
  auto now = size_.load(std::memory_order_acquire);
  while (bytes > now && !size_.compare_exchange_weak(now, bytes, std::memory_order_acq_rel))
    ;
  return std::max(bytes, now);
}

result<provider> provider::create_file(const std::string &path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return open_error(path, "cannot create", errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int error = errno;
    ::close(fd);
    return open_error(path, "cannot stat", error);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return status{errc::invalid_argument,
                  fmt::format("{}: exists and is not a regular file", path)};
  }
  if (static_cast<uint64_t>(st.st_size) < size && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int error = errno;
    ::close(fd);
    return open_error(path, fmt::format("cannot extend to {} bytes", size).c_str(), error);
  }
  ::close(fd);
  return open(path, true);
}

status provider::fail(const char *what, uint64_t off, int error) const {
  return {errc::io_error,
          fmt::format("{}: {} at offset {}: {}", path_, what, off, std::strerror(error))};
}

status provider::injected(const char *what, uint64_t off, int error) const {
  return {errc::io_error,
          fmt::format("{}: {} at offset {}: {} (injected)", path_, what, off, std::strerror(error))};
}

status provider::pread_full(void *buf, size_t len, uint64_t off, size_t *done) const {
  auto p = static_cast<uint8_t *>(buf);
  size_t got = 0;
  while (got < len) {
    auto n = ::pread(fd_, p + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      *done = got;
      return fail("read", off + got, errno);
    }
    if (n == 0)
      break;
    got += static_cast<size_t>(n);
  }
  *done = got;
  return status::ok();
}

status provider::pwrite_full(const void *buf, size_t len, uint64_t off) const {
  auto p = static_cast<const uint8_t *>(buf);
  size_t put = 0;
  while (put < len) {
    auto n = ::pwrite(fd_, p + put, len - put, static_cast<off_t>(off + put));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return fail("write", off + put, errno);
    }
    if (n == 0)
      return fail("write", off + put, ENOSPC);
    put += static_cast<size_t>(n);
  }
  return status::ok();
}

status provider::read(void *buf, size_t len, uint64_t off) const {
  if (off > size_ || len > size_ - off)
    return {errc::invalid_argument,
            fmt::format("{}: read of {} bytes at offset {} beyond the end ({} bytes)", path_, len,
                        off, size())};
  if (int error = fault(io_kind::read, off, len))
    return injected("read", off, error);
  if (len == 0)
    return status::ok();
  size_t done = 0;
  if (!direct_ || aligned(buf, len, off)) {
    if (auto st = pread_full(buf, len, off, &done); !st)
      return st;
    if (done < len)
      return fail("read", off + done, ENODATA);
    return status::ok();
  }
  auto first = round_down(off);
  auto last = round_up(off + len);
  auto bounce = allocate_aligned(last - first);
  if (auto st = pread_full(bounce.get(), last - first, first, &done); !st)
    return st;
  if (first + done < off + len)
    return fail("read", first + done, ENODATA);
  std::memcpy(buf, bounce.get() + (off - first), len);
  return status::ok();
}

status provider::write(const void *buf, size_t len, uint64_t off) const {
  if (off > size_ || len > size_ - off)
    return {errc::invalid_argument,
            fmt::format("{}: write of {} bytes at offset {} beyond the end ({} bytes)", path_, len,
                        off, size())};
  if (int error = fault(io_kind::write, off, len))
    return injected("write", off, error);
  return write_bytes(buf, len, off);
}

/// write() past its checks; zeroing writes through it too, so that a fault
/// source sees one zeroing op and not its pieces.
status provider::write_bytes(const void *buf, size_t len, uint64_t off) const {
  if (len == 0)
    return status::ok();
  if (!direct_ || aligned(buf, len, off))
    return pwrite_full(buf, len, off);
  // Read-modify-write of the edge blocks through an aligned buffer, holding
  // the stripes of both edge blocks (in index order: no deadlock).
  auto first = round_down(off);
  auto last = round_up(off + len);
  auto& locks = *rmw_locks_;
  auto a = (first / align) % locks.size();
  auto b = ((last - align) / align) % locks.size();
  std::unique_lock<std::mutex> lock_a{locks[std::min(a, b)]};
  std::unique_lock<std::mutex> lock_b;
  if (a != b)
    lock_b = std::unique_lock<std::mutex>{locks[std::max(a, b)]};
  auto span = last - first;
  auto bounce = allocate_aligned(span);
  std::memset(bounce.get(), 0, span);
  size_t done = 0;
  if (off != first)
    if (auto st = pread_full(bounce.get(), align, first, &done); !st)
      return st;
  if (off + len != last && (last - align != first || off == first))
    if (auto st = pread_full(bounce.get() + span - align, align, last - align, &done); !st)
      return st;
  std::memcpy(bounce.get() + (off - first), buf, len);
  if (auto st = pwrite_full(bounce.get(), span, first); !st)
    return st;
  // A file whose size is not a multiple of 4 KiB grew by the padding.
  if (!block_device_ && last > size_ && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
    return fail("truncate", size_, errno);
  return status::ok();
}

status provider::flush() const {
  if (int error = fault(io_kind::flush, 0, 0))
    return injected("flush", 0, error);
  while (::fdatasync(fd_) != 0) {
    if (errno != EINTR)
      return fail("flush", 0, errno);
  }
  return status::ok();
}

status provider::fallocate_range(int mode, uint64_t off, uint64_t len, bool *supported) const {
  *supported = true;
  while (::fallocate(fd_, mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0) {
    if (errno == EINTR)
      continue;
    if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL || errno == ENODEV) {
      *supported = false;
      return status::ok();
    }
    return fail("fallocate", off, errno);
  }
  return status::ok();
}

status provider::write_zero_bytes(uint64_t off, uint64_t len) const {
  if (len == 0)
    return status::ok();
  auto chunk = static_cast<size_t>(std::min<uint64_t>(len, zero_chunk));
  auto zeros = allocate_aligned(chunk);
  std::memset(zeros.get(), 0, round_up(chunk));
  while (len > 0) {
    auto n = static_cast<size_t>(std::min<uint64_t>(len, chunk));
    if (auto st = write_bytes(zeros.get(), n, off); !st)
      return st;
    off += n;
    len -= n;
  }
  return status::ok();
}

status provider::write_zeroes(uint64_t off, uint64_t len, bool may_punch) const {
  if (off > size_ || len > size_ - off)
    return {errc::invalid_argument,
            fmt::format("{}: zeroing {} bytes at offset {} beyond the end ({} bytes)", path_, len,
                        off, size())};
  if (int error = fault(io_kind::write_zeroes, off, len))
    return injected("zeroing", off, error);
  return zero_range(off, len, may_punch);
}

status provider::discard(uint64_t off, uint64_t len) const {
  if (off > size_ || len > size_ - off)
    return {errc::invalid_argument,
            fmt::format("{}: discard of {} bytes at offset {} beyond the end ({} bytes)", path_,
                        len, off, size())};
  if (int error = fault(io_kind::discard, off, len))
    return injected("discard", off, error);
  return zero_range(off, len, true);
}

status provider::zero_range(uint64_t off, uint64_t len, bool may_punch) const {
  auto end = off + len;
  auto mid_begin = std::min(round_up(off), end);
  auto mid_end = std::max(round_down(end), mid_begin);
  if (auto st = write_zero_bytes(off, mid_begin - off); !st)
    return st;
  if (auto st = write_zero_bytes(mid_end, end - mid_end); !st)
    return st;
  if (mid_end == mid_begin)
    return status::ok();
  auto mid_len = mid_end - mid_begin;
  bool supported = false;
  if (may_punch) {
    // On a block device the kernel turns this into a discard that must read
    // back as zeros (never a plain BLKDISCARD, whose contents are undefined).
    if (auto st = fallocate_range(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, mid_begin, mid_len,
                                  &supported);
        !st || supported)
      return st;
  }
  if (auto st
      = fallocate_range(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, mid_begin, mid_len, &supported);
      !st || supported)
    return st;
  return write_zero_bytes(mid_begin, mid_len);
}

status provider::lock() const {
  while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR)
      continue;
    if (errno == EWOULDBLOCK)
      return {errc::busy, fmt::format("{}: in use by another process (hastd?)", path_)};
    if (errno == EOPNOTSUPP)
      return status::ok();
    return fail("lock", 0, errno);
  }
  return status::ok();
}

} // namespace hast
