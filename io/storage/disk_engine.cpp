#include "io/storage/disk_engine.hpp"

#include "io/net/asio.hpp"

#include <fmt/format.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <thread>
#include <utility>

namespace hast {

std::string to_string(disk_engine_kind kind) {
  switch (kind) {
  case disk_engine_kind::uring:
    return "io_uring";
  case disk_engine_kind::threads:
    return "threads";
  case disk_engine_kind::posted:
    return "posted";
  }
  return "unknown";
}

std::optional<disk_engine_kind> parse_disk_engine_kind(std::string_view text) {
  if (text == "uring" || text == "io_uring")
    return disk_engine_kind::uring;
  if (text == "threads")
    return disk_engine_kind::threads;
  return std::nullopt;
}

disk_engine::~disk_engine() = default;

namespace {

using op_kind = disk_op::kind;

constexpr unsigned ring_entries = 256;
constexpr size_t uring_pool_threads = 2;
constexpr size_t threads_engine_threads = 4;
constexpr uint64_t align = provider::alignment;
// io_uring_prep_read/write take a 32-bit length and the kernel moves at most
// 2 GiB - 4 KiB per call; a longer op goes through the ring in pieces.
constexpr uint64_t max_ring_piece = uint64_t{1} << 30;
// user_data of the engine's own NOPs. Every other user_data is
// first_slot_tag + the index of the op's slot in the engine's ring table.
constexpr uint64_t wake_tag = 1;
constexpr uint64_t stop_tag = 2;
constexpr uint64_t first_slot_tag = 3;

/// One submitted op on its way to its completion.
struct request {
  disk_op op;
  buffer_ptr read_data; // read: the buffer being filled, allocated once
  uint64_t done = 0;    // read, write: bytes transferred so far, always from the start
};
using request_ptr = std::unique_ptr<request>;

/// The ring or the engine broke an invariant the engine relies on (the SQ
/// has room, io_uring_enter accepts the ring): continuing would lose
/// completions that callers wait for, so stop loudly.
[[noreturn]] void fatal(const char* what, int error) {
  fmt::print(stderr, "hast disk engine: {}: {}\n", what, std::strerror(error));
  std::abort();
}

disk_completion complete(request& r, int error) {
  disk_completion c{r.op.tag, error, nullptr};
  if (error == 0 && r.op.op == op_kind::read)
    c.data = std::move(r.read_data);
  return c;
}

uint8_t* bytes(request& r) {
  return r.op.op == op_kind::read ? r.read_data->data() : r.op.data->data();
}

/// The errno that makes `op` fail before it touches the disk, or 0. Checked
/// before any buffer is allocated, so that an absurd length is an EINVAL and
/// not an allocation.
int precheck(const provider& p, const disk_op& op) {
  if (op.op == op_kind::flush)
    return 0;
  if (op.op == op_kind::write && (!op.data || op.data->size() != op.length))
    return EINVAL;
  return op.offset <= p.size() && op.length <= p.size() - op.offset ? 0 : EINVAL;
}

/// The errno with which the provider's fault source fails `op`, or 0. A FUA
/// write flushes too, so a failing flush fails it (as provider::flush would
/// after the write on the threads path).
int injected_fault(const provider& p, const disk_op& op) {
  switch (op.op) {
  case op_kind::read:
    return p.fault(io_kind::read, op.offset, op.length);
  case op_kind::write:
    if (int error = p.fault(io_kind::write, op.offset, op.length))
      return error;
    return op.fua ? p.fault(io_kind::flush, 0, 0) : 0;
  case op_kind::flush:
    return p.fault(io_kind::flush, 0, 0);
  case op_kind::discard:
    return p.fault(io_kind::discard, op.offset, op.length);
  case op_kind::write_zeroes:
    return p.fault(io_kind::write_zeroes, op.offset, op.length);
  }
  return 0;
}

/// provider's status carries an errc, not the errno behind it.
int to_errno(const status& st) {
  return st.code() == errc::invalid_argument ? EINVAL : EIO;
}

/// Allocates a read's buffer unless it has one; false when memory is short.
bool allocate(request& r) {
  if (r.read_data)
    return true;
  try {
    r.read_data = make_buffer(r.op.length);
    return true;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

/// Runs the rest of `r` (from r.done on) through the provider's blocking
/// calls; returns 0 or an errno.
int perform(const provider& p, request& r) {
  auto& op = r.op;
  if (int error = precheck(p, op))
    return error;
  // A fresh op that the fault source fails; the provider's calls below ask
  // it again, but then report EIO and not the source's errno.
  if (r.done == 0)
    if (int error = injected_fault(p, op))
      return error;
  auto off = op.offset + r.done;
  auto len = op.length - r.done;
  status st;
  switch (op.op) {
  case op_kind::read:
    if (!allocate(r))
      return ENOMEM;
    st = p.read(bytes(r) + r.done, len, off);
    break;
  case op_kind::write:
    st = p.write(bytes(r) + r.done, len, off);
    if (st && op.fua)
      st = p.flush();
    break;
  case op_kind::flush:
    st = p.flush();
    break;
  case op_kind::discard:
    st = p.discard(op.offset, op.length);
    break;
  case op_kind::write_zeroes:
    st = p.write_zeroes(op.offset, op.length, op.may_punch);
    break;
  }
  return st ? 0 : to_errno(st);
}

/// Whether the rest of `r` can go through the ring as one read, write or
/// fsync with the provider's semantics. What cannot (zeroing, discards,
/// O_DIRECT I/O that is not 4 KiB aligned, invalid or empty ops) runs through
/// the provider instead, which bounces, locks, falls back and reports errors
/// as provider callers expect.
bool ring_can_issue(const provider& p, const request& r) {
  auto& op = r.op;
  if (op.op == op_kind::flush)
    return true;
  if (op.op != op_kind::read && op.op != op_kind::write)
    return false;
  if (precheck(p, op) != 0 || r.done == op.length)
    return false;
  if (op.op == op_kind::read && !r.read_data)
    return false;
  if (!p.direct())
    return true;
  // block_buffer data starts 4 KiB aligned, so the address is aligned exactly
  // when the progress into it is.
  return (op.offset + r.done) % align == 0 && (op.length - r.done) % align == 0
         && r.done % align == 0;
}

/// Threads that take requests from one queue and run a handler on each. The
/// destructor lets them finish the queue, then joins them.
class worker_pool {
public:
  using handler = std::function<void(request_ptr)>;

  worker_pool(size_t threads, handler run) : run_(std::move(run)) {
    try {
      for (size_t i = 0; i < threads; ++i)
        threads_.emplace_back([this] { work(); });
    } catch (...) {
      stop();
      throw;
    }
  }
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;
  ~worker_pool() { stop(); }

  void push(std::vector<request_ptr> requests) {
    if (requests.empty())
      return;
    {
      std::lock_guard lock{mutex_};
      for (auto& r : requests)
        queue_.push_back(std::move(r));
    }
    if (requests.size() == 1)
      ready_.notify_one();
    else
      ready_.notify_all();
  }

private:
  void work() {
    for (;;) {
      request_ptr r;
      {
        std::unique_lock lock{mutex_};
        ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty())
          return;
        r = std::move(queue_.front());
        queue_.pop_front();
      }
      run_(std::move(r));
    }
  }

  void stop() {
    {
      std::lock_guard lock{mutex_};
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_)
      t.join();
    threads_.clear();
  }

  handler run_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<request_ptr> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// ---------------------------------------------------------------------------
// threads: every op through the provider on a pool; each thread delivers its
// own op's completion as a batch of one.

class thread_engine final : public disk_engine {
public:
  thread_engine(std::shared_ptr<const provider> local, disk_completion_fn on_complete)
      : local_(std::move(local)), on_complete_(std::move(on_complete)),
        pool_(threads_engine_threads, [this](request_ptr r) { run(std::move(r)); }) {}

  ~thread_engine() override {
    std::unique_lock lock{mutex_};
    drained_.wait(lock, [&] { return in_flight_ == 0; });
  }

  void submit(std::vector<disk_op> ops) override {
    std::vector<request_ptr> requests;
    requests.reserve(ops.size());
    for (auto& op : ops)
      requests.push_back(std::make_unique<request>(request{std::move(op), nullptr, 0}));
    {
      std::lock_guard lock{mutex_};
      in_flight_ += requests.size();
    }
    pool_.push(std::move(requests));
  }

  disk_engine_kind kind() const override { return disk_engine_kind::threads; }

  size_t in_flight() const override {
    std::lock_guard lock{mutex_};
    return in_flight_;
  }

private:
  void run(request_ptr r) {
    int error = perform(*local_, *r);
    std::vector<disk_completion> batch;
    batch.push_back(complete(*r, error));
    on_complete_(std::move(batch));
    std::lock_guard lock{mutex_};
    // Notified under the lock: the destructor cannot return (and free the
    // condition variable) before this thread is done with it.
    if (--in_flight_ == 0)
      drained_.notify_all();
  }

  std::shared_ptr<const provider> local_;
  disk_completion_fn on_complete_;
  mutable std::mutex mutex_;
  std::condition_variable drained_;
  size_t in_flight_ = 0;
  worker_pool pool_; // last: its threads use everything above
};

// ---------------------------------------------------------------------------
// posted: no thread of its own. Every op goes through the provider in a
// handler posted to the home context, on the thread that runs or polls it;
// a test that polls the context on its own thread does the I/O there, in an
// order it controls.

class posted_engine final : public disk_engine {
public:
  posted_engine(std::shared_ptr<const provider> local, disk_completion_fn on_complete,
                asio::io_context& home)
      : home_(home), state_(std::make_shared<state>()) {
    state_->local = std::move(local);
    state_->on_complete = std::move(on_complete);
  }

  ~posted_engine() override {
    // A handler still in the context finds `stopping` and does nothing; one
    // that is running finishes first. What is left runs here.
    std::vector<request_ptr> left;
    {
      std::unique_lock lock{state_->mutex};
      state_->stopping = true;
      state_->idle.wait(lock, [&] { return !state_->running; });
      left.swap(state_->queue);
    }
    state_->deliver(std::move(left));
    std::lock_guard lock{state_->mutex};
    state_->on_complete = nullptr;
    state_->local = nullptr;
  }

  void submit(std::vector<disk_op> ops) override {
    if (ops.empty())
      return;
    bool post = false;
    {
      std::lock_guard lock{state_->mutex};
      for (auto& op : ops)
        state_->queue.push_back(std::make_unique<request>(request{std::move(op), nullptr, 0}));
      state_->in_flight += ops.size();
      post = !state_->posted;
      state_->posted = true;
    }
    if (post)
      asio::post(home_, [s = state_] { s->round(); });
  }

  disk_engine_kind kind() const override { return disk_engine_kind::posted; }

  size_t in_flight() const override {
    std::lock_guard lock{state_->mutex};
    return state_->in_flight;
  }

private:
  /// Shared with the handlers in the context, which may outlive the engine.
  struct state {
    std::shared_ptr<const provider> local;
    disk_completion_fn on_complete;
    mutable std::mutex mutex;
    std::condition_variable idle;
    std::vector<request_ptr> queue;  // submitted, not yet taken by a round
    size_t in_flight = 0;
    bool posted = false;    // a round is in the context
    bool running = false;   // a round runs ops now
    bool stopping = false;  // the engine is being destroyed

    /// The handler: every op queued so far, in order, then one batch.
    void round() {
      std::vector<request_ptr> taken;
      {
        std::lock_guard lock{mutex};
        posted = false;
        if (stopping)
          return;
        running = true;
        taken.swap(queue);
      }
      deliver(std::move(taken));
      std::lock_guard lock{mutex};
      running = false;
      idle.notify_all();
    }

    void deliver(std::vector<request_ptr> taken) {
      if (taken.empty())
        return;
      std::vector<disk_completion> batch;
      batch.reserve(taken.size());
      for (auto& r : taken)
        batch.push_back(complete(*r, perform(*local, *r)));
      on_complete(std::move(batch));
      std::lock_guard lock{mutex};
      in_flight -= taken.size();
    }
  };

  asio::io_context& home_;
  std::shared_ptr<state> state_;
};

// ---------------------------------------------------------------------------
// uring: reads, writes and flushes through one ring; the rest on a small pool
// whose completions are merged into the completion thread's stream, so that
// on_complete only ever runs on that one thread.
//
// Only the completion thread submits ops to the kernel. io_uring ties a
// request to the task that submitted it, and when that task exits, work the
// kernel queued for it (a buffered write waiting on the file, an O_DIRECT
// write that could not go without blocking) and has not started is cancelled
// with ECANCELED. Callers' threads (a detached actor's) come and go, so
// submit() only queues and wakes the completion thread with a NOP, which
// completes inline; that thread issues the whole backlog with one
// io_uring_submit and outlives every request.

struct ring_deleter {
  void operator()(io_uring* ring) const {
    io_uring_queue_exit(ring);
    delete ring;
  }
};
using ring_ptr = std::unique_ptr<io_uring, ring_deleter>;

/// A ring that supports every opcode the engine issues, or null and why not.
ring_ptr open_ring(std::string& why, unsigned flags = 0) {
  auto raw = std::make_unique<io_uring>();
  if (int r = io_uring_queue_init(ring_entries, raw.get(), flags); r < 0) {
    const char* hint = "";
    if (r == -EPERM)
      hint = " (kernel.io_uring_disabled, or a seccomp filter)";
    else if (r == -ENOSYS)
      hint = " (a kernel without io_uring, or a seccomp filter)";
    else if (r == -ENOMEM)
      hint = " (RLIMIT_MEMLOCK too low for the ring on kernels before 5.12?)";
    why = fmt::format("io_uring_queue_init: {}{}", std::strerror(-r), hint);
    return nullptr;
  }
  ring_ptr ring{raw.release()};
  io_uring_probe* probe = io_uring_get_probe_ring(ring.get());
  if (probe == nullptr) {
    why = "io_uring cannot list its opcodes (a kernel older than 5.6)";
    return nullptr;
  }
  std::string missing;
  for (auto [op, name] : {std::pair{IORING_OP_READ, "READ"}, std::pair{IORING_OP_WRITE, "WRITE"},
                          std::pair{IORING_OP_FSYNC, "FSYNC"}, std::pair{IORING_OP_NOP, "NOP"}})
    if (!io_uring_opcode_supported(probe, op))
      missing += fmt::format(" IORING_OP_{}", name);
  io_uring_free_probe(probe);
  if (!missing.empty()) {
    why = fmt::format("io_uring lacks{}", missing);
    return nullptr;
  }
  return ring;
}

/// With a home context the engine has no thread of its own: the thread that
/// runs the context submits, and learns of completions through an eventfd
/// registered with the ring. With DEFER_TASKRUN the kernel completes the
/// ring's requests only when that thread asks (io_uring_get_events), so no
/// other thread ever runs on their behalf.
struct home_ring {
  asio::io_context* io = nullptr;
  bool defer = false;  // IORING_SETUP_DEFER_TASKRUN
};

class uring_engine final : public disk_engine {
public:
  uring_engine(std::shared_ptr<const provider> local, disk_completion_fn on_complete, ring_ptr ring,
               bool submit_inline, home_ring home = {})
      : local_(std::move(local)), on_complete_(std::move(on_complete)), ring_(std::move(ring)),
        submit_inline_(submit_inline || home.io != nullptr), home_(home),
        // Room in the SQ, and so in the twice as large CQ, for the engine's
        // wake and stop NOPs on top of a full ring of ops.
        capacity_(std::min(ring_->sq.ring_entries, ring_->cq.ring_entries) - 2),
        pool_(uring_pool_threads, [this](request_ptr r) { run_on_pool(std::move(r)); }) {
    in_ring_slots_.resize(capacity_);
    free_slots_.reserve(capacity_);
    for (unsigned slot = capacity_; slot > 0; --slot)
      free_slots_.push_back(slot - 1);
    if (home_.io == nullptr) {
      completer_ = std::thread{[this] { reap(); }};
      return;
    }
    home_thread_ = std::this_thread::get_id();
    int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0)
      throw std::system_error(errno, std::generic_category(), "eventfd");
    waiter_ = std::make_unique<asio::posix::stream_descriptor>(*home_.io, efd);
    if (int r = io_uring_register_eventfd(ring_.get(), efd); r < 0)
      throw std::system_error(-r, std::generic_category(), "io_uring_register_eventfd");
    arm();
  }

  ~uring_engine() override {
    if (home_.io != nullptr) {
      leave_home();
      return;
    }
    std::unique_lock lock{mutex_};
    drained_.wait(lock, [&] { return in_flight_ == 0; });
    auto* sqe = next_sqe_locked();
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, stop_tag);
    submit_locked();
    lock.unlock();
    completer_.join();
  }

  void submit(std::vector<disk_op> ops) override {
    if (ops.empty())
      return;
    std::vector<request_ptr> to_ring;
    std::vector<request_ptr> to_pool;
    std::vector<disk_completion> faulted; // failed by the fault source, untouched
    for (auto& op : ops) {
      auto r = std::make_unique<request>(request{std::move(op), nullptr, 0});
      if (precheck(*local_, r->op) == 0) {
        if (int error = injected_fault(*local_, r->op)) {
          faulted.push_back(complete(*r, error));
          continue;
        }
        if (r->op.op == op_kind::read && r->op.length > 0)
          allocate(*r);
      }
      (ring_can_issue(*local_, *r) ? to_ring : to_pool).push_back(std::move(r));
    }
    {
      std::lock_guard lock{mutex_};
      in_flight_ += ops.size();
      for (auto& r : to_ring)
        backlog_.push_back(std::move(r));
      if (!faulted.empty()) {
        // Delivered by the completion thread's next round, never from here.
        for (auto& c : faulted)
          side_done_.push_back(std::move(c));
        wake_locked();
      }
      if (!to_ring.empty()) {
        if (submit_inline_)
          issue_locked();
        else
          wake_locked();
      }
    }
    pool_.push(std::move(to_pool));
  }

  disk_engine_kind kind() const override { return disk_engine_kind::uring; }

  size_t in_flight() const override {
    std::lock_guard lock{mutex_};
    return in_flight_;
  }

private:
  /// Moves backlog into the ring while it has room, then submits everything
  /// prepared with one io_uring_submit.
  void issue_locked() {
    while (!backlog_.empty() && !free_slots_.empty()) {
      prepare_locked(std::move(backlog_.front()));
      backlog_.pop_front();
    }
    submit_locked();
  }

  io_uring_sqe* next_sqe_locked() {
    // At most capacity_ ops, one wake and one stop NOP are ever in the ring,
    // and submit_locked() leaves the SQ empty: there is always an entry.
    auto* sqe = io_uring_get_sqe(ring_.get());
    if (sqe == nullptr)
      fatal("io_uring_get_sqe: the submission queue is full", EBUSY);
    return sqe;
  }

  void prepare_locked(request_ptr r) {
    auto* sqe = next_sqe_locked();
    auto& op = r->op;
    auto off = op.offset + r->done;
    auto len = static_cast<unsigned>(std::min(op.length - r->done, max_ring_piece));
    // ring_can_issue() admitted only reads, writes and flushes.
    if (op.op == op_kind::read) {
      io_uring_prep_read(sqe, local_->fd(), bytes(*r) + r->done, len, off);
    } else if (op.op == op_kind::write) {
      io_uring_prep_write(sqe, local_->fd(), bytes(*r) + r->done, len, off);
      // FUA as a per-write O_DSYNC: the write completes once its data (and
      // what is needed to read it back) is on stable storage, with one SQE
      // and no second completion to pair; on an O_DIRECT block device the
      // kernel sends a FUA write rather than flushing the whole cache as a
      // linked fsync would.
      if (op.fua)
        sqe->rw_flags = RWF_DSYNC;
    } else {
      io_uring_prep_fsync(sqe, local_->fd(), IORING_FSYNC_DATASYNC);
    }
    // The request stays in the engine's table while the kernel has it,
    // rather than only as a pointer in the ring's shared memory: whatever
    // inspects the engine's memory (a leak checker, a core dump) finds it.
    // issue_locked() prepares an op only while a slot is free.
    const unsigned slot = free_slots_.back();
    free_slots_.pop_back();
    in_ring_slots_[slot] = std::move(r);
    io_uring_sqe_set_data64(sqe, first_slot_tag + slot);
  }

  /// Hands every prepared SQE to the kernel. Without SQPOLL the kernel takes
  /// them during the call; it may take fewer (a failed allocation), and the
  /// rest stays queued for the next round.
  void submit_locked() {
    while (io_uring_sq_ready(ring_.get()) > 0) {
      int r = io_uring_submit(ring_.get());
      if (r > 0)
        continue;
      if (r == 0 || r == -EINTR || r == -EAGAIN || r == -EBUSY) {
        std::this_thread::yield();
        continue;
      }
      fatal("io_uring_submit", -r);
    }
  }

  /// Pool threads: the provider's blocking call, then the completion joins
  /// the completion thread's next batch.
  void run_on_pool(request_ptr r) {
    int error = perform(*local_, *r);
    std::lock_guard lock{mutex_};
    side_done_.push_back(complete(*r, error));
    wake_locked();
  }

  /// Makes the completion thread run a round (take side_done_, issue the
  /// backlog) unless a wake-up is already on its way. A NOP completes within
  /// io_uring_submit, so any thread may send one and exit.
  void wake_locked() {
    if (wake_pending_)
      return;
    wake_pending_ = true;
    if (home_.io != nullptr) {
      asio::post(*home_.io, [this, alive = std::weak_ptr<void>(alive_)] {
        if (!alive.expired())
          home_round();
      });
      return;
    }
    auto* sqe = next_sqe_locked();
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, wake_tag);
    submit_locked();
  }

  /// The result of one ring step of `r`: complete it, or queue its rest.
  void advance(request_ptr r, int res, std::vector<disk_completion>& batch,
               std::vector<request_ptr>& again, std::vector<request_ptr>& to_pool) {
    auto& op = r->op;
    if (res == -EINTR || res == -EAGAIN) {
      again.push_back(std::move(r));
      return;
    }
    if (res < 0) {
      batch.push_back(complete(*r, -res));
      return;
    }
    if (op.op == op_kind::flush) {
      batch.push_back(complete(*r, 0));
      return;
    }
    if (res == 0) {
      // A read at end of file before `length` bytes (the file shrank): an
      // error, as in provider::read. A write that made no progress: as
      // provider's pwrite loop, out of space.
      batch.push_back(complete(*r, op.op == op_kind::read ? EIO : ENOSPC));
      return;
    }
    r->done += static_cast<uint64_t>(res);
    if (r->done >= op.length)
      batch.push_back(complete(*r, 0));
    else if (ring_can_issue(*local_, *r))
      again.push_back(std::move(r));
    else
      to_pool.push_back(std::move(r));
  }

  /// The completion thread: one batch per wake-up, made of every ready CQE
  /// and every pool completion, delivered outside the lock.
  void reap() {
    std::vector<std::pair<uint64_t, int>> ready; // user_data, res of each CQE taken
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      if (int r = io_uring_wait_cqe(ring_.get(), &cqe); r < 0) {
        if (r == -EINTR || r == -EAGAIN)
          continue;
        fatal("io_uring_wait_cqe", -r);
      }
      take_cqes(ready);
      if (round(ready))
        return;
    }
  }

  /// Every CQE the ring holds, as (user_data, res).
  void take_cqes(std::vector<std::pair<uint64_t, int>>& ready) {
    ready.clear();
    unsigned head;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
      ready.emplace_back(io_uring_cqe_get_data64(cqe), cqe->res);
    }
    io_uring_cq_advance(ring_.get(), static_cast<unsigned>(ready.size()));
  }

  /// One batch: the CQEs taken and the pool's completions; issues what
  /// waits, then delivers. True when the stop NOP was among the CQEs.
  bool round(const std::vector<std::pair<uint64_t, int>>& ready) {
    std::vector<disk_completion> batch;
    std::vector<request_ptr> to_pool;
    bool stop = false;
    {
      // The requests are touched only under the lock that submit() held
      // while preparing them: the kernel's barriers between SQE and CQE
      // are no happens-before in the C++ memory model (nor to TSan).
      std::lock_guard lock{mutex_};
      std::vector<request_ptr> again;
      for (auto [data, res] : ready) {
        if (data == wake_tag) {
          // Cleared together with taking side_done_ below: a pool
          // completion pushed after this sees no pending wake and sends one.
          wake_pending_ = false;
        } else if (data == stop_tag) {
          stop = true;
        } else {
          const auto slot = static_cast<unsigned>(data - first_slot_tag);
          request_ptr r = std::move(in_ring_slots_[slot]);
          free_slots_.push_back(slot);
          advance(std::move(r), res, batch, again, to_pool);
        }
      }
      if (home_.io != nullptr)
        wake_pending_ = false;  // a home round is the wake-up
      // Continuations of ops already under way go before newer ops.
      for (auto it = again.rbegin(); it != again.rend(); ++it)
        backlog_.push_front(std::move(*it));
      for (auto& c : side_done_)
        batch.push_back(std::move(c));
      side_done_.clear();
      issue_locked();
    }
    pool_.push(std::move(to_pool));
    if (!batch.empty()) {
      auto delivered = batch.size();
      on_complete_(std::move(batch));
      std::lock_guard lock{mutex_};
      in_flight_ -= delivered;
      if (in_flight_ == 0)
        drained_.notify_all();
    }
    return stop;
  }

  /// Home: the eventfd said the ring has news (or may have: the counter is
  /// cleared before the ring is read, so a completion after this read
  /// wakes the context again and is never missed).
  void arm() {
    waiter_->async_wait(asio::posix::stream_descriptor::wait_read,
                        [this, alive = std::weak_ptr<void>(alive_)](const std::error_code& ec) {
                          if (ec || alive.expired())
                            return;
                          uint64_t count = 0;
                          [[maybe_unused]] auto n = ::read(waiter_->native_handle(), &count,
                                                           sizeof count);
                          home_round();
                          arm();
                        });
  }

  /// Home: one round on the home thread.
  void home_round() {
    // DEFER_TASKRUN: the kernel finishes the completed requests here.
    if (home_.defer)
      io_uring_get_events(ring_.get());
    take_cqes(home_ready_);
    round(home_ready_);
  }

  /// Home, destruction: every op submitted completes and is delivered
  /// before the ring goes (on the home thread: the ring is its alone).
  void leave_home() {
    // Off the home thread the ring cannot be waited on (it is the home
    // thread's), and the eventfd's wait handler could be running there
    // while its engine goes: the owner destroys the engine at home
    // (disk_io: while the actor ends, on its data thread).
    if (std::this_thread::get_id() != home_thread_ && in_flight() > 0)
      fatal("destroyed off its home thread with operations in flight", EDEADLK);
    while (in_flight() > 0) {
      bool ring_busy;
      {
        std::lock_guard lock{mutex_};
        ring_busy = free_slots_.size() < capacity_;
      }
      if (ring_busy) {
        io_uring_cqe* cqe = nullptr;
        if (int r = io_uring_wait_cqe(ring_.get(), &cqe); r < 0 && r != -EINTR && r != -EAGAIN)
          fatal("io_uring_wait_cqe", -r);
      } else {
        // Only the pool's ops remain; their completions reach side_done_.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      home_round();
    }
    alive_.reset();
    waiter_.reset();  // closes the eventfd; its wait ends as aborted
  }

  std::shared_ptr<const provider> local_;
  disk_completion_fn on_complete_;
  ring_ptr ring_;
  const bool submit_inline_;  // submit() issues to the kernel itself
  const home_ring home_;      // io null: the engine's own completion thread
  std::thread::id home_thread_;
  std::unique_ptr<asio::posix::stream_descriptor> waiter_;  // home: the ring's eventfd
  std::shared_ptr<void> alive_ = std::make_shared<int>(0);  // home handlers check it
  std::vector<std::pair<uint64_t, int>> home_ready_;
  const unsigned capacity_; // ops in the ring at most, so the CQ never overflows

  // Guards the SQ side of the ring and everything below. The completion
  // thread reads the CQ without it: it is the CQ's only reader.
  mutable std::mutex mutex_;
  std::condition_variable drained_;
  std::deque<request_ptr> backlog_;        // ring ops waiting for room in the ring
  std::vector<request_ptr> in_ring_slots_; // ring ops the kernel has, by slot
  std::vector<unsigned> free_slots_;       // slots of in_ring_slots_ not in use
  std::vector<disk_completion> side_done_; // pool completions not yet in a batch
  size_t in_flight_ = 0;                   // ops submitted and not yet delivered
  bool wake_pending_ = false;              // a wake NOP is in the ring, not yet reaped

  worker_pool pool_; // after what its threads use
  std::thread completer_;
};

} // namespace

std::unique_ptr<disk_engine> disk_engine::make(std::shared_ptr<const provider> local,
                                               disk_engine_kind preferred,
                                               disk_completion_fn on_complete,
                                               std::string* fallback_reason,
                                               bool callers_outlive_io,
                                               asio::io_context* home) {
  if (fallback_reason != nullptr)
    fallback_reason->clear();
  if (preferred == disk_engine_kind::posted) {
    if (home != nullptr)
      return std::make_unique<posted_engine>(std::move(local), std::move(on_complete), *home);
    if (fallback_reason != nullptr)
      *fallback_reason = "the posted engine needs a home context";
    return std::make_unique<thread_engine>(std::move(local), std::move(on_complete));
  }
  if (preferred == disk_engine_kind::uring && home != nullptr) {
    // This thread's ring alone, completed only when it asks; kernels
    // before 6.1 refuse the flags and get a ring as any other.
    std::string why;
    bool defer = true;
    auto ring = open_ring(why, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (!ring) {
      defer = false;
      ring = open_ring(why);
    }
    if (ring)
      return std::make_unique<uring_engine>(std::move(local), std::move(on_complete),
                                            std::move(ring), true, home_ring{home, defer});
    if (fallback_reason != nullptr)
      *fallback_reason = std::move(why);
    return std::make_unique<thread_engine>(std::move(local), std::move(on_complete));
  }
  if (preferred == disk_engine_kind::uring) {
    std::string why;
    if (auto ring = open_ring(why))
      return std::make_unique<uring_engine>(std::move(local), std::move(on_complete),
                                            std::move(ring), callers_outlive_io);
    if (fallback_reason != nullptr)
      *fallback_reason = std::move(why);
  }
  return std::make_unique<thread_engine>(std::move(local), std::move(on_complete));
}

} // namespace hast
