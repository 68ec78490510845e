#pragma once

// Asynchronous I/O on a resource's local provider: one engine per resource
// takes batches of operations and hands back their completions in batches.
//
// Three kinds. The io_uring engine issues a whole batch of reads, writes and
// flushes with one io_uring_submit and reaps completions in batches, both on
// its one completion thread; what the ring cannot do as is (discard, zeroing, unaligned I/O on
// an O_DIRECT provider, invalid requests) it hands to two threads of its own
// that call the provider's blocking methods.
// The threads engine, for kernels or sandboxes without io_uring, runs every
// operation through the provider on four threads.
// The posted engine has no thread: it runs every operation through the
// provider in a handler posted to a home io_context, on whichever thread
// runs or polls that context. It exists for tests that drive everything
// from one thread (tests/actors/deterministic.hpp); hastd cannot be told to
// use it (parse_disk_engine_kind does not know it), because on a data
// thread it would stall the sockets behind every disk operation.
//
// All kinds keep the provider's semantics: the same bytes land, the same
// ranges read back as zeros, the same requests fail. Operations in one batch
// may run in any order and concurrently: a caller that needs a write to
// precede a read or a flush waits for its completion first.
//
// All ask the provider's fault source (provider::fault) about each op
// before it touches the disk: an op it fails completes with its errno and
// leaves the disk as it was.

#include "io/codec/buffer.hpp"
#include "io/storage/provider.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace asio {
class io_context;
}

namespace hast {

enum class disk_engine_kind : uint8_t { uring, threads, posted };

/// "io_uring", "threads" or "posted", for logs and status.
std::string to_string(disk_engine_kind kind);
/// "uring" or "io_uring", and "threads"; anything else is no kind (also
/// "posted": it is for tests, not for a daemon's configuration).
std::optional<disk_engine_kind> parse_disk_engine_kind(std::string_view text);

/// One operation on the provider.
struct disk_op {
  enum class kind : uint8_t { read, write, flush, discard, write_zeroes };
  kind op = kind::read;
  /// Byte offset in the provider (the caller adds the data region's start).
  uint64_t offset = 0;
  /// read, discard, write_zeroes: bytes; write: must equal data->size()
  /// (else the op fails with EINVAL); flush: ignored.
  uint64_t length = 0;
  /// write: the payload, shared and never copied; it must stay unmodified
  /// until the op completes. read: ignored, the engine allocates.
  buffer_ptr data;
  /// write: on stable storage when completed.
  bool fua = false;
  /// write_zeroes: blocks may be deallocated (as provider::write_zeroes).
  bool may_punch = false;
  /// The caller's, returned with the completion.
  uint64_t tag = 0;
  /// `offset` is already the provider's (a metadata slot), not the data
  /// region's: disk_io adds nothing to it.
  bool in_provider = false;
};

struct disk_completion {
  uint64_t tag = 0;
  /// 0, or an errno value: EINVAL for a range beyond the provider's end or a
  /// malformed op, the fault source's errno for an op it fails, EIO for a
  /// failed read, ... The threads
  /// path learns only the provider's errc, so it reports every I/O failure as
  /// EIO; the ring path reports the kernel's errno (ENOSPC, ...).
  int error = 0;
  /// A successful read: exactly `length` bytes. Otherwise null.
  buffer_ptr data;
};

/// Receives completions in batches. uring: always on the engine's one
/// completion thread (with a `home`, on the home context's thread). threads: on the pool's threads, possibly concurrently.
/// posted: on the thread that runs or polls the home context, one batch per
/// handler, and what is still queued when the engine is destroyed on the
/// destroying thread.
/// Never called from inside submit(). It may call submit(); it must not throw
/// and must not destroy the engine.
using disk_completion_fn = std::function<void(std::vector<disk_completion>)>;

class disk_engine {
public:
  /// An engine of the preferred kind. When io_uring cannot be set up (ENOSYS,
  /// EPERM from kernel.io_uring_disabled or seccomp, ENOMEM, a kernel without
  /// the opcodes used...), returns a threads engine and writes the reason into
  /// *fallback_reason (if non-null); the caller logs it once. Without a
  /// fallback, *fallback_reason is cleared. `local` must be non-null and is
  /// shared with the engine for its lifetime.
  ///
  /// `callers_outlive_io`: every thread that calls submit() lives until the
  /// engine is destroyed (a fixed pool, such as an actor system's workers).
  /// The uring engine then hands the batch to the kernel inside submit(),
  /// saving a wake-up of its completion thread per batch. Otherwise submit()
  /// leaves that to the completion thread, because io_uring cancels
  /// not-yet-started work of a submitting thread that exits.
  ///
  /// `home`: the uring engine has no thread of its own and lives on the one
  /// thread that runs this context (a resource's data thread). It must be
  /// made, fed (submit) and destroyed there; its ring is that thread's alone
  /// (IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN where the kernel has
  /// them), completions wake the context through an eventfd and are
  /// delivered from one of its handlers, never from inside submit(). The
  /// context must outlive the engine.
  ///
  /// posted: needs `home` (without one: a threads engine, and the reason in
  /// *fallback_reason). submit() posts a handler to `home` that runs every
  /// op queued by then, in order, and delivers their completions as one
  /// batch; nothing runs until the context's thread runs or polls it. It
  /// may be made, fed and destroyed on any thread; the destructor waits for
  /// a handler that is running, then runs what is still queued itself.
  static std::unique_ptr<disk_engine> make(std::shared_ptr<const provider> local,
                                           disk_engine_kind preferred,
                                           disk_completion_fn on_complete,
                                           std::string* fallback_reason,
                                           bool callers_outlive_io = false,
                                           asio::io_context* home = nullptr);

  disk_engine() = default;
  disk_engine(const disk_engine&) = delete;
  disk_engine& operator=(const disk_engine&) = delete;
  /// Waits until every submitted op has completed and its completion was
  /// delivered, then stops. No submit() may start once destruction has.
  virtual ~disk_engine();

  /// Queues the ops; the uring engine's completion thread issues the whole
  /// batch with one io_uring_submit (as much as fits in the ring; the rest as
  /// earlier ops complete), so the calling thread may exit at once. Never
  /// blocks on I/O. Thread-safe. Every op completes exactly once, also when
  /// it fails.
  virtual void submit(std::vector<disk_op> ops) = 0;
  virtual disk_engine_kind kind() const = 0;
  /// Ops submitted whose completion has not been delivered yet (a batch
  /// counts as delivered when on_complete returns).
  virtual size_t in_flight() const = 0;
};

} // namespace hast
