#pragma once

// The local provider: the block device or regular file that holds a
// resource's metadata and data. One open file descriptor, owned (move-only).
//
// I/O goes through O_DIRECT when the file system accepts it, so that a write
// that returned is not sitting in the page cache of this node only; buffers,
// lengths and offsets that are not 4 KiB aligned go through an aligned bounce
// buffer (an unaligned write is then a read-modify-write of its edge blocks,
// so concurrent unaligned writes to the same 4 KiB block must not overlap).
// All calls are safe to make concurrently from several threads, except
// set_fault_source(), which must precede sharing.
//
// A fault source (attached by a test's I/O environment, io/io_env.hpp) is
// consulted before every operation touches the disk, here and in the disk
// engine; an operation it fails changes nothing on disk.

#include "base/errc.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hast {

/// The operations a fault source can fail.
enum class io_kind : uint8_t { read, write, flush, discard, write_zeroes };

/// "read", "write", "flush", "discard", "write_zeroes".
const char* to_string(io_kind kind);

/// Decides which operations on one provider fail, as a failing disk would
/// (LevelDB's fault-injecting Env). Called from any thread, concurrently.
class fault_source {
public:
  virtual ~fault_source() = default;
  /// 0, or the errno with which the operation on [offset, offset + length)
  /// fails. Offsets are the provider's (metadata included); a flush has
  /// offset and length 0.
  virtual int fault(io_kind kind, uint64_t offset, uint64_t length) const = 0;
};

class provider {
public:
  /// Alignment of O_DIRECT I/O and of the metadata layout.
  static constexpr size_t alignment = 4096;

  /// Opens an existing block device or regular file. Tries O_DIRECT first
  /// and falls back to buffered I/O where it is refused (tmpfs: EINVAL).
  static result<provider> open(const std::string &path, bool writable);

  /// Creates a regular file of `size` bytes (sparse), or extends an existing
  /// smaller one (never shrinks it), then opens it writable. Fails if `path`
  /// exists and is not a regular file.
  static result<provider> create_file(const std::string &path, uint64_t size);

  provider(provider &&other) noexcept;
  provider &operator=(provider &&other) noexcept;
  provider(const provider &) = delete;
  provider &operator=(const provider &) = delete;
  ~provider();

  int fd() const { return fd_; }
  /// Bytes: BLKGETSIZE64 for a block device, st_size for a file, at open
  /// or at the last refresh_size().
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  /// Reads the size again (the device or file grew: online growth). Never
  /// shrinks what size() says: I/O that was in range stays so. Returns the
  /// size now.
  result<uint64_t> refresh_size() const;
  bool direct() const { return direct_; }
  bool writable() const { return writable_; }
  bool is_block_device() const { return block_device_; }
  const std::string &path() const { return path_; }

  /// Reads exactly `len` bytes at `off`; reading past the end is an error.
  status read(void *buf, size_t len, uint64_t off) const;
  /// Writes exactly `len` bytes at `off`.
  status write(const void *buf, size_t len, uint64_t off) const;
  /// Makes completed writes durable (fdatasync: also flushes the disk cache).
  status flush() const;
  /// Deallocates a range so that it reads back as zeros: fallocate
  /// (PUNCH_HOLE|KEEP_SIZE), which on a block device is a discard that
  /// guarantees zeros. Where unsupported, writes zeros instead: both nodes of
  /// a resource must read back the same bytes after a trim.
  status discard(uint64_t off, uint64_t len) const;
  /// Zeroes a range. With `may_punch` the blocks may be deallocated (as
  /// discard); without, they stay allocated (FALLOC_FL_ZERO_RANGE).
  /// Falls back to writing zeros.
  status write_zeroes(uint64_t off, uint64_t len, bool may_punch) const;

  /// Takes an exclusive advisory lock (flock, non-blocking) for as long as
  /// this provider is open, as hastd's worker does. Another holder gives
  /// errc::busy. File systems without flock are tolerated.
  status lock() const;

  /// Attaches the source of injected faults (null: none). An I/O
  /// environment calls it before the provider is shared.
  void set_fault_source(std::shared_ptr<const fault_source> faults) {
    faults_ = std::move(faults);
  }
  /// 0, or the errno with which the fault source fails this operation. Lets
  /// an I/O path that bypasses the calls above (io_uring) fail the same ones.
  int fault(io_kind kind, uint64_t off, uint64_t len) const {
    return faults_ ? faults_->fault(kind, off, len) : 0;
  }

private:
  provider(int fd, std::string path, uint64_t size, bool direct, bool writable, bool block_device);
  void close();
  status fail(const char *what, uint64_t off, int error) const;
  status pread_full(void *buf, size_t len, uint64_t off, size_t *done) const;
  status pwrite_full(const void *buf, size_t len, uint64_t off) const;
  status injected(const char *what, uint64_t off, int error) const;
  status write_bytes(const void *buf, size_t len, uint64_t off) const;
  status zero_range(uint64_t off, uint64_t len, bool may_punch) const;
  status write_zero_bytes(uint64_t off, uint64_t len) const;
  status fallocate_range(int mode, uint64_t off, uint64_t len, bool *supported) const;

  int fd_ = -1;
  std::string path_;
  // Atomic: refresh_size() may run while disk threads do I/O.
  mutable std::atomic<uint64_t> size_{0};
  bool direct_ = false;
  bool writable_ = false;
  bool block_device_ = false;
  std::shared_ptr<const fault_source> faults_;
  // Unaligned O_DIRECT writes read, modify and write whole 4 KiB blocks; two
  // of them touching one block (disjoint bytes, so legal for a client to
  // issue at once) would lose an update. They lock the block's stripe.
  std::shared_ptr<std::array<std::mutex, 64>> rmw_locks_ =
      std::make_shared<std::array<std::mutex, 64>>();
};

} // namespace hast
