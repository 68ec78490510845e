// The disk engine keeps the provider's semantics whichever way it does the
// I/O: every kind (io_uring, threads, posted to a context that a thread of
// the test runs), on an O_DIRECT provider (/var/tmp) and
// on a buffered one (/dev/shm, tmpfs), so that the ring's aligned path, its
// hand-off of unaligned O_DIRECT I/O to the provider, and its unaligned
// buffered path all run.

#include "io/net/asio.hpp"
#include "io/storage/disk_engine.hpp"
#include "tests/scratch_dir.hpp"

#include <liburing.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <stdlib.h>
#include <unistd.h>

namespace hast {
namespace {

using namespace std::chrono_literals;
using op_kind = disk_op::kind;

constexpr auto deadline = 60s;
constexpr uint64_t provider_size = 16 << 20;

/// Bytes that depend on their position and a seed, so that data landing at
/// the wrong offset or from the wrong write is noticed.
std::vector<uint8_t> pattern(uint64_t off, size_t len, uint8_t seed = 1) {
  std::vector<uint8_t> bytes(len);
  for (size_t i = 0; i < len; ++i) {
    auto pos = off + i;
    bytes[i] = static_cast<uint8_t>(pos * 131 + (pos >> 12) * 7 + seed) | 1; // never zero
  }
  return bytes;
}

buffer_ptr to_buffer(const std::vector<uint8_t>& bytes) {
  auto buf = make_buffer(bytes.size());
  std::copy(bytes.begin(), bytes.end(), buf->data());
  return buf;
}

std::vector<uint8_t> to_bytes(const buffer_ptr& buf) {
  return {buf->data(), buf->data() + buf->size()};
}

disk_op write_op(uint64_t off, const std::vector<uint8_t>& bytes, uint64_t tag, bool fua = false) {
  disk_op op;
  op.op = op_kind::write;
  op.offset = off;
  op.length = bytes.size();
  op.data = to_buffer(bytes);
  op.fua = fua;
  op.tag = tag;
  return op;
}

disk_op read_op(uint64_t off, uint64_t len, uint64_t tag) {
  disk_op op;
  op.op = op_kind::read;
  op.offset = off;
  op.length = len;
  op.tag = tag;
  return op;
}

disk_op range_op(op_kind kind, uint64_t off, uint64_t len, uint64_t tag, bool may_punch = false) {
  disk_op op;
  op.op = kind;
  op.offset = off;
  op.length = len;
  op.may_punch = may_punch;
  op.tag = tag;
  return op;
}

/// Fails the ops of the kinds given that overlap a range (a flush: every
/// flush), each with its errno. Counts the questions, from any thread.
class range_faults final : public fault_source {
public:
  struct rule {
    io_kind kind;
    uint64_t begin;
    uint64_t length;
    int error;
  };
  explicit range_faults(std::vector<rule> rules) : rules_(std::move(rules)) {}

  int fault(io_kind kind, uint64_t offset, uint64_t length) const override {
    ++asked;
    for (auto& r : rules_)
      if (r.kind == kind
          && (kind == io_kind::flush
              || (length > 0 && offset < r.begin + r.length && r.begin < offset + length)))
        return r.error;
    return 0;
  }

  mutable std::atomic<size_t> asked{0};

private:
  std::vector<rule> rules_;
};

/// Gathers completions from whichever threads deliver them.
class collector {
public:
  disk_completion_fn callback() {
    return [this](std::vector<disk_completion> batch) {
      if (on_batch)
        on_batch(batch.size());
      std::lock_guard lock{mutex_};
      threads_.insert(std::this_thread::get_id());
      for (auto& c : batch)
        done_.push_back(std::move(c));
      arrived_.notify_all();
    };
  }

  /// Waits until `total` completions have arrived; false at the deadline.
  bool wait_for(size_t total) {
    std::unique_lock lock{mutex_};
    return arrived_.wait_for(lock, deadline, [&] { return done_.size() >= total; });
  }

  size_t count() const {
    std::lock_guard lock{mutex_};
    return done_.size();
  }

  /// Completions from the `first`-th on, by tag; a tag seen twice is a failure.
  std::map<uint64_t, disk_completion> since(size_t first) const {
    std::lock_guard lock{mutex_};
    std::map<uint64_t, disk_completion> by_tag;
    for (size_t i = first; i < done_.size(); ++i)
      if (!by_tag.emplace(done_[i].tag, done_[i]).second)
        ADD_FAILURE() << "tag " << done_[i].tag << " completed twice";
    return by_tag;
  }

  std::set<std::thread::id> threads() const {
    std::lock_guard lock{mutex_};
    return threads_;
  }

  /// Runs in the engine's callback before the batch is recorded; set it
  /// before submitting.
  std::function<void(size_t)> on_batch;

private:
  mutable std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<disk_completion> done_;
  std::set<std::thread::id> threads_;
};

/// Reads and writes the provider directly, bypassing the engine.
struct provider_access {
  /// Writes `bytes` at `off` through the provider, bypassing the engine.
  void fill(uint64_t off, const std::vector<uint8_t>& bytes) {
    ASSERT_TRUE(prov_->write(bytes.data(), bytes.size(), off));
  }

  /// Reads through the provider, bypassing the engine.
  std::vector<uint8_t> peek(uint64_t off, size_t len) {
    std::vector<uint8_t> bytes(len);
    EXPECT_TRUE(prov_->read(bytes.data(), len, off));
    return bytes;
  }

  std::shared_ptr<provider> prov_;
};

struct engine_case {
  disk_engine_kind kind;
  bool direct; // the provider uses O_DIRECT
};

void PrintTo(const engine_case& c, std::ostream* os) {
  *os << to_string(c.kind) << (c.direct ? " on an O_DIRECT provider" : " on a buffered provider");
}

class disk_engine_test : public testing::TestWithParam<engine_case>, protected provider_access {
protected:
  void SetUp() override {
    auto [kind, direct] = GetParam();
    auto base = std::filesystem::path{direct ? "/var/tmp" : "/dev/shm"};
    try {
      scratch_.emplace("engine", base);
    } catch (const std::system_error& e) {
      GTEST_SKIP() << "cannot create a directory in " << base << ": " << e.what();
    }
    dir_ = scratch_->dir();
    auto opened = provider::create_file((dir_ / "p.img").string(), provider_size);
    ASSERT_TRUE(opened.has_value()) << opened.error().message();
    // tmpfs accepts O_DIRECT since Linux 6.6; there, a buffered provider
    // needs /dev/shm to be something else (e.g. ramfs in a mount namespace).
    if (opened->direct() != direct)
      GTEST_SKIP() << base << (direct ? " refuses" : " accepts") << " O_DIRECT here";
    prov_ = std::make_shared<provider>(std::move(*opened));
    start();
  }

  void TearDown() override {
    engine_.reset();
    if (home_.joinable()) {
      guard_.reset();
      home_io_.stop();
      home_.join();
    }
    prov_.reset();
    scratch_.reset();
  }

  void start() {
    std::string why;
    const bool posted = GetParam().kind == disk_engine_kind::posted;
    // The posted engine's home: a context that a thread of the test runs,
    // so that it does its I/O off the submitting thread like the others.
    if (posted && !home_.joinable())
      home_ = std::thread{[this] { home_io_.run(); }};
    engine_ = disk_engine::make(prov_, GetParam().kind, got_.callback(), &why, false,
                                posted ? &home_io_ : nullptr);
    if (engine_->kind() != GetParam().kind)
      GTEST_SKIP() << "io_uring is not available here: " << why;
  }

  /// Attaches a fault source. It must precede sharing the provider: the
  /// engine restarts.
  void attach(std::shared_ptr<const fault_source> faults) {
    engine_.reset();
    prov_->set_fault_source(std::move(faults));
    start();
  }

  /// Submits one batch and waits for its completions, by tag.
  std::map<uint64_t, disk_completion> run(std::vector<disk_op> ops) {
    auto first = got_.count();
    auto n = ops.size();
    engine_->submit(std::move(ops));
    if (!got_.wait_for(first + n))
      ADD_FAILURE() << "only " << got_.count() - first << " of " << n << " ops completed";
    return got_.since(first);
  }


  std::optional<scratch_dir> scratch_;
  std::filesystem::path dir_;
  collector got_; // outlives the engine that calls it
  asio::io_context home_io_; // posted: the engine's home, run by home_
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(home_io_);
  std::thread home_;
  std::unique_ptr<disk_engine> engine_;
};

TEST_P(disk_engine_test, a_batch_of_writes_then_reads_returns_the_same_bytes) {
  std::vector<disk_op> writes;
  std::vector<std::pair<uint64_t, size_t>> extents;
  uint64_t off = 0;
  for (uint64_t i = 0; i < 64; ++i) {
    size_t len = 4096 * (1 + i % 16);
    extents.emplace_back(off, len);
    writes.push_back(write_op(off, pattern(off, len), i));
    off += len + 4096;
  }
  auto wrote = run(std::move(writes));
  ASSERT_EQ(wrote.size(), extents.size());
  for (auto& [tag, c] : wrote) {
    EXPECT_EQ(c.error, 0) << "write " << tag << ": " << std::strerror(c.error);
    EXPECT_EQ(c.data, nullptr);
  }
  std::vector<disk_op> reads;
  for (uint64_t i = 0; i < extents.size(); ++i)
    reads.push_back(read_op(extents[i].first, extents[i].second, 100 + i));
  auto read = run(std::move(reads));
  ASSERT_EQ(read.size(), extents.size());
  for (uint64_t i = 0; i < extents.size(); ++i) {
    auto& c = read[100 + i];
    ASSERT_EQ(c.error, 0) << "read " << i << ": " << std::strerror(c.error);
    ASSERT_NE(c.data, nullptr);
    ASSERT_EQ(c.data->size(), extents[i].second);
    EXPECT_EQ(to_bytes(c.data), pattern(extents[i].first, extents[i].second)) << "extent " << i;
  }
}

TEST_P(disk_engine_test, a_fua_write_completes_once_its_bytes_are_on_the_provider) {
  auto aligned = pattern(1 << 20, 8192, 3);
  auto odd = pattern((2 << 20) + 17, 1000, 4);
  auto done = run({write_op(1 << 20, aligned, 1, true), write_op((2 << 20) + 17, odd, 2, true)});
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[1].error, 0) << std::strerror(done[1].error);
  EXPECT_EQ(done[2].error, 0) << std::strerror(done[2].error);
  EXPECT_EQ(peek(1 << 20, aligned.size()), aligned);
  EXPECT_EQ(peek((2 << 20) + 17, odd.size()), odd);
}

TEST_P(disk_engine_test, a_flush_completes_without_error_and_without_data) {
  auto bytes = pattern(0, 4096);
  ASSERT_EQ(run({write_op(0, bytes, 1)})[1].error, 0);
  auto done = run({range_op(op_kind::flush, 0, 0, 7), range_op(op_kind::flush, 0, 0, 8)});
  ASSERT_EQ(done.size(), 2u);
  for (auto tag : {7u, 8u}) {
    EXPECT_EQ(done[tag].error, 0) << std::strerror(done[tag].error);
    EXPECT_EQ(done[tag].data, nullptr);
  }
}

TEST_P(disk_engine_test, discarded_and_zeroed_ranges_read_back_as_zeros) {
  constexpr uint64_t span = 1 << 20;
  auto original = pattern(0, span);
  fill(0, original);
  struct zeroed {
    op_kind kind;
    uint64_t off, len;
    bool may_punch;
  };
  std::vector<zeroed> ranges{
      {op_kind::discard, 64 << 10, (64 << 10) + 512, false}, // unaligned end
      {op_kind::write_zeroes, (256 << 10) + 100, 44 << 10, false},
      {op_kind::write_zeroes, 512 << 10, 64 << 10, true},
      {op_kind::write_zeroes, (700 << 10) + 3, 5, true}, // inside one block
  };
  std::vector<disk_op> ops;
  for (uint64_t i = 0; i < ranges.size(); ++i)
    ops.push_back(range_op(ranges[i].kind, ranges[i].off, ranges[i].len, i, ranges[i].may_punch));
  auto done = run(std::move(ops));
  ASSERT_EQ(done.size(), ranges.size());
  for (auto& [tag, c] : done)
    EXPECT_EQ(c.error, 0) << "op " << tag << ": " << std::strerror(c.error);
  auto back = run({read_op(0, span, 99)});
  ASSERT_EQ(back[99].error, 0) << std::strerror(back[99].error);
  auto want = original;
  for (auto& r : ranges)
    std::fill_n(want.begin() + static_cast<std::ptrdiff_t>(r.off), r.len, uint8_t{0});
  auto bytes = to_bytes(back[99].data);
  ASSERT_EQ(bytes.size(), want.size());
  for (size_t i = 0; i < span; ++i)
    ASSERT_EQ(bytes[i], want[i]) << "first difference at byte " << i;
}

TEST_P(disk_engine_test, unaligned_writes_and_reads_round_trip) {
  // Disjoint, back to back, in one batch: neighbours share 4 KiB blocks, so
  // on O_DIRECT their read-modify-writes run concurrently on one block.
  std::vector<std::pair<uint64_t, size_t>> pieces;
  uint64_t off = 40960 + 1;
  for (size_t len : {1, 511, 4095, 4097, 3, 10000, 7, 8191, 4096, 12288, 2}) {
    pieces.emplace_back(off, len);
    off += len;
  }
  std::vector<disk_op> writes;
  for (uint64_t i = 0; i < pieces.size(); ++i)
    writes.push_back(write_op(pieces[i].first, pattern(pieces[i].first, pieces[i].second, 9), i));
  for (auto& [tag, c] : run(std::move(writes)))
    ASSERT_EQ(c.error, 0) << "write " << tag << ": " << std::strerror(c.error);
  std::vector<disk_op> reads;
  for (uint64_t i = 0; i < pieces.size(); ++i)
    reads.push_back(read_op(pieces[i].first, pieces[i].second, 50 + i));
  auto first = pieces.front().first;
  auto all = off - first;
  reads.push_back(read_op(first, all, 99));
  auto done = run(std::move(reads));
  ASSERT_EQ(done.size(), pieces.size() + 1);
  for (uint64_t i = 0; i < pieces.size(); ++i) {
    auto& c = done[50 + i];
    ASSERT_EQ(c.error, 0) << "read " << i << ": " << std::strerror(c.error);
    EXPECT_EQ(to_bytes(c.data), pattern(pieces[i].first, pieces[i].second, 9))
        << pieces[i].second << " bytes at " << pieces[i].first;
  }
  ASSERT_EQ(done[99].error, 0);
  EXPECT_EQ(to_bytes(done[99].data), pattern(first, all, 9)) << "a neighbour's write was lost";
}

TEST_P(disk_engine_test, ops_beyond_the_end_fail_with_einval_and_the_last_block_reads) {
  auto done = run({
      read_op(provider_size - 4096, 8192, 1),
      read_op(provider_size + 4096, 4096, 2),
      read_op(provider_size - 1, 2, 3),
      write_op(provider_size - 4096, pattern(0, 8192), 4),
      range_op(op_kind::write_zeroes, provider_size, 1, 5),
      read_op(provider_size - 4096, 4096, 6),
  });
  ASSERT_EQ(done.size(), 6u);
  for (auto tag : {1u, 2u, 3u, 4u, 5u}) {
    EXPECT_EQ(done[tag].error, EINVAL) << "op " << tag << ": " << std::strerror(done[tag].error);
    EXPECT_EQ(done[tag].data, nullptr);
  }
  EXPECT_EQ(done[6].error, 0) << std::strerror(done[6].error);
  ASSERT_NE(done[6].data, nullptr);
  EXPECT_EQ(done[6].data->size(), 4096u);
}

TEST_P(disk_engine_test, a_read_past_the_end_of_a_file_that_shrank_fails_with_eio) {
  // The provider keeps the size it saw at open, so the request passes its
  // range check and the read meets end of file partway: a short read whose
  // remainder reads nothing.
  ASSERT_EQ(::truncate((dir_ / "p.img").c_str(), provider_size / 2), 0) << std::strerror(errno);
  auto done = run({read_op(provider_size / 2 - 4096, 8192, 1), read_op(0, 4096, 2)});
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[1].error, EIO) << std::strerror(done[1].error);
  EXPECT_EQ(done[1].data, nullptr);
  EXPECT_EQ(done[2].error, 0) << std::strerror(done[2].error);
}

TEST_P(disk_engine_test, a_write_whose_length_is_not_its_buffers_fails_with_einval) {
  auto op = write_op(0, pattern(0, 4096), 1);
  op.length = 8192;
  auto empty = write_op(4096, {}, 2);
  empty.data = nullptr;
  empty.length = 4096;
  auto done = run({op, empty});
  EXPECT_EQ(done[1].error, EINVAL);
  EXPECT_EQ(done[2].error, EINVAL);
}

TEST_P(disk_engine_test, an_injected_read_fault_gives_eio_and_its_neighbours_read) {
  constexpr uint64_t bad = (1 << 20) + 4096;
  fill(bad - 4096, pattern(bad - 4096, 3 * 4096));
  attach(std::make_shared<range_faults>(
      std::vector<range_faults::rule>{{io_kind::read, bad, 4096, EIO}}));
  auto done = run({
      read_op(bad, 4096, 1),        // the faulty block
      read_op(bad - 4096, 4096, 2), // the block before
      read_op(bad + 4096, 4096, 3), // the block after
      read_op(bad - 4096, 8192, 4), // overlaps the fault
      read_op(bad + 4095, 1, 5),    // its last byte, unaligned
      read_op(bad - 100, 100, 6),   // the bytes right before, unaligned
  });
  ASSERT_EQ(done.size(), 6u);
  for (auto tag : {1u, 4u, 5u}) {
    EXPECT_EQ(done[tag].error, EIO) << "read " << tag << ": " << std::strerror(done[tag].error);
    EXPECT_EQ(done[tag].data, nullptr);
  }
  ASSERT_EQ(done[2].error, 0);
  EXPECT_EQ(to_bytes(done[2].data), pattern(bad - 4096, 4096));
  ASSERT_EQ(done[3].error, 0);
  EXPECT_EQ(to_bytes(done[3].data), pattern(bad + 4096, 4096));
  ASSERT_EQ(done[6].error, 0);
  EXPECT_EQ(to_bytes(done[6].data), pattern(bad - 100, 100));
}

TEST_P(disk_engine_test, faulted_ops_complete_with_their_errno_and_leave_the_disk_untouched) {
  constexpr uint64_t bad = 2 << 20;
  auto old = pattern(bad, 3 * 4096, 3);
  fill(bad, old);
  attach(std::make_shared<range_faults>(std::vector<range_faults::rule>{
      {io_kind::write, bad, 4096, ENOSPC},
      {io_kind::discard, bad + 4096, 4096, EIO},
      {io_kind::write_zeroes, bad + 8192, 4096, EROFS},
  }));
  auto done = run({
      write_op(bad, pattern(bad, 4096, 9), 1),           // aligned: the ring's path
      write_op(bad + 100, pattern(bad + 100, 50, 9), 2), // unaligned: the pool's
      range_op(op_kind::discard, bad + 4096, 4096, 3),
      range_op(op_kind::write_zeroes, bad + 8192, 4096, 4),
      write_op(bad + 4096, pattern(bad + 4096, 4096, 9), 5), // no write fault there
      range_op(op_kind::write_zeroes, bad, 4096, 6),         // nor a zeroing fault
      range_op(op_kind::flush, 0, 0, 7),
  });
  ASSERT_EQ(done.size(), 7u);
  EXPECT_EQ(done[1].error, ENOSPC);
  EXPECT_EQ(done[2].error, ENOSPC);
  EXPECT_EQ(done[3].error, EIO);
  EXPECT_EQ(done[4].error, EROFS);
  for (auto tag : {5u, 6u, 7u})
    EXPECT_EQ(done[tag].error, 0) << "op " << tag << ": " << std::strerror(done[tag].error);
  auto expected = old;
  std::fill_n(expected.begin(), 4096, 0);
  auto written = pattern(bad + 4096, 4096, 9);
  std::copy(written.begin(), written.end(), expected.begin() + 4096);
  EXPECT_EQ(peek(bad, 3 * 4096), expected);
}

TEST_P(disk_engine_test, a_failing_flush_fails_flushes_and_fua_writes) {
  attach(
      std::make_shared<range_faults>(std::vector<range_faults::rule>{{io_kind::flush, 0, 0, EIO}}));
  auto done = run({
      range_op(op_kind::flush, 0, 0, 1),
      write_op(0, pattern(0, 4096), 2, true),
      write_op(4096, pattern(4096, 4096), 3),
  });
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[1].error, EIO);
  EXPECT_EQ(done[2].error, EIO);
  EXPECT_EQ(done[3].error, 0);
}

TEST_P(disk_engine_test, every_op_asks_the_fault_source_before_it_runs) {
  auto faults = std::make_shared<range_faults>(std::vector<range_faults::rule>{});
  attach(faults);
  auto done = run({
      write_op(0, pattern(0, 4096), 1),
      read_op(0, 4096, 2),
      range_op(op_kind::flush, 0, 0, 3),
      range_op(op_kind::discard, 8192, 4096, 4),
  });
  ASSERT_EQ(done.size(), 4u);
  EXPECT_GE(faults->asked.load(), 4u);
}

TEST_P(disk_engine_test, two_thousand_ops_in_one_submit_all_complete_exactly_once) {
  constexpr uint64_t n = 2000; // well beyond the 256-entry ring
  std::vector<disk_op> writes;
  for (uint64_t i = 0; i < n; ++i)
    writes.push_back(write_op(i * 4096, pattern(i * 4096, 4096, 5), i));
  auto wrote = run(std::move(writes));
  ASSERT_EQ(wrote.size(), n);
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(wrote.count(i)) << "tag " << i << " never completed";
    ASSERT_EQ(wrote[i].error, 0) << "write " << i << ": " << std::strerror(wrote[i].error);
  }
  std::vector<disk_op> reads;
  for (uint64_t i = 0; i < n; ++i)
    reads.push_back(read_op(i * 4096, 4096, n + i));
  auto read = run(std::move(reads));
  ASSERT_EQ(read.size(), n);
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(read.count(n + i)) << "tag " << n + i << " never completed";
    ASSERT_EQ(read[n + i].error, 0) << "read " << i << ": " << std::strerror(read[n + i].error);
    ASSERT_EQ(to_bytes(read[n + i].data), pattern(i * 4096, 4096, 5)) << "block " << i;
  }
  engine_.reset(); // drains: nothing more may arrive
  EXPECT_EQ(got_.count(), 2 * n);
}

TEST_P(disk_engine_test, two_threads_submitting_at_once_each_get_every_completion) {
  constexpr uint64_t batches = 50, per_batch = 8, per_thread = batches * per_batch;
  auto submitter = [&](uint64_t thread) {
    for (uint64_t b = 0; b < batches; ++b) {
      std::vector<disk_op> ops;
      for (uint64_t k = 0; k < per_batch; ++k) {
        auto i = thread * per_thread + b * per_batch + k;
        // Thread 1's blocks are unaligned by 512 bytes: some go to the pool.
        auto off = i * 8192 + thread * 512;
        ops.push_back(write_op(off, pattern(off, 4096, 6), i));
      }
      engine_->submit(std::move(ops));
    }
  };
  std::thread a{submitter, 0};
  std::thread b{submitter, 1};
  a.join();
  b.join();
  ASSERT_TRUE(got_.wait_for(2 * per_thread)) << got_.count() << " completions";
  auto done = got_.since(0);
  ASSERT_EQ(done.size(), 2 * per_thread);
  for (auto& [tag, c] : done)
    ASSERT_EQ(c.error, 0) << "write " << tag << ": " << std::strerror(c.error);
  for (uint64_t i = 0; i < 2 * per_thread; ++i) {
    auto off = i * 8192 + (i / per_thread) * 512;
    ASSERT_EQ(peek(off, 4096), pattern(off, 4096, 6)) << "write " << i;
  }
}

TEST_P(disk_engine_test, ops_submitted_by_threads_that_exit_at_once_still_complete) {
  // io_uring cancels the queued work of a task that exits: callers' threads
  // (detached actors') must be free to submit and go away. Writes from
  // several threads at once contend for the file and so get queued.
  constexpr uint64_t callers = 4, per_caller = 128, n = callers * per_caller;
  for (uint64_t round = 0; round < 8; ++round) {
    auto first = got_.count();
    auto seed = static_cast<uint8_t>(round);
    std::vector<std::thread> threads;
    for (uint64_t t = 0; t < callers; ++t)
      threads.emplace_back([&, t] {
        std::vector<disk_op> ops;
        for (uint64_t i = t * per_caller; i < (t + 1) * per_caller; ++i) {
          auto off = (round * n + i) * 4096 % provider_size;
          ops.push_back(write_op(off, pattern(off, 4096, seed), i, i % 2));
        }
        engine_->submit(std::move(ops));
      });
    for (auto& t : threads)
      t.join();
    ASSERT_TRUE(got_.wait_for(first + n)) << got_.count() - first << " of " << n;
    for (auto& [tag, c] : got_.since(first))
      ASSERT_EQ(c.error, 0) << "round " << round << ", write " << tag << ": "
                            << std::strerror(c.error);
  }
}

TEST_P(disk_engine_test, destroying_the_engine_delivers_every_op_in_flight) {
  constexpr uint64_t n = 600;
  std::vector<disk_op> ops;
  for (uint64_t i = 0; i < n; ++i) {
    switch (i % 5) {
    case 0:
      ops.push_back(write_op(i * 4096, pattern(i * 4096, 4096), i));
      break;
    case 1:
      ops.push_back(read_op(i * 4096, 4096, i));
      break;
    case 2:
      ops.push_back(range_op(op_kind::flush, 0, 0, i));
      break;
    case 3:
      ops.push_back(range_op(op_kind::write_zeroes, i * 4096 + 7, 100, i));
      break;
    default:
      ops.push_back(read_op(i * 4096 + 3, 10, i));
      break;
    }
  }
  engine_->submit(std::move(ops));
  engine_.reset();
  ASSERT_EQ(got_.count(), n) << "the destructor returned before every completion";
  auto done = got_.since(0);
  ASSERT_EQ(done.size(), n);
  for (auto& [tag, c] : done)
    EXPECT_EQ(c.error, 0) << "op " << tag << ": " << std::strerror(c.error);
}

TEST_P(disk_engine_test, in_flight_counts_ops_until_their_completion_is_delivered) {
  EXPECT_EQ(engine_->in_flight(), 0u);
  std::atomic<bool> undercounted{false};
  got_.on_batch = [&](size_t batch) {
    if (engine_->in_flight() < batch)
      undercounted = true;
  };
  std::vector<disk_op> ops;
  for (uint64_t i = 0; i < 300; ++i)
    ops.push_back(i % 2 ? read_op(i * 4096, 4096, i)
                        : range_op(op_kind::discard, i * 4096, 4096, i));
  auto done = run(std::move(ops));
  EXPECT_EQ(done.size(), 300u);
  EXPECT_FALSE(undercounted) << "a batch was delivered while in_flight() did not count it";
}

TEST_P(disk_engine_test, completions_arrive_off_the_submitting_thread_and_io_uring_uses_one) {
  // A mix of ring ops and ops the uring engine runs on its pool.
  std::vector<disk_op> ops;
  for (uint64_t i = 0; i < 200; ++i) {
    if (i % 4 == 0)
      ops.push_back(range_op(op_kind::write_zeroes, i * 4096, 4096, i, true));
    else if (i % 4 == 1)
      ops.push_back(read_op(i * 4096 + 1, 4000, i));
    else
      ops.push_back(read_op(i * 4096, 4096, i));
  }
  auto done = run(std::move(ops));
  EXPECT_EQ(done.size(), 200u);
  auto threads = got_.threads();
  EXPECT_FALSE(threads.count(std::this_thread::get_id())) << "on_complete ran inside submit()";
  if (GetParam().kind != disk_engine_kind::threads) {
    EXPECT_EQ(threads.size(), 1u) << to_string(GetParam().kind)
                                  << " completions came from several threads";
  }
}

INSTANTIATE_TEST_SUITE_P(kinds, disk_engine_test,
                         testing::Values(engine_case{disk_engine_kind::uring, true},
                                         engine_case{disk_engine_kind::uring, false},
                                         engine_case{disk_engine_kind::threads, true},
                                         engine_case{disk_engine_kind::threads, false},
                                         engine_case{disk_engine_kind::posted, true},
                                         engine_case{disk_engine_kind::posted, false}),
                         [](const testing::TestParamInfo<engine_case>& info) {
                           return to_string(info.param.kind)
                                  + (info.param.direct ? "_direct" : "_buffered");
                         });

// --- Home mode: no completion thread; the ring belongs to the thread that
// runs an io_context (a resource's data thread), which makes, feeds and
// destroys the engine and gets every completion.

/// An O_DIRECT provider and an io_context run by one thread of the test's,
/// the engine's home. Everything the engine is asked is asked there.
class disk_engine_home_test : public testing::Test, protected provider_access {
protected:
  void SetUp() override {
    try {
      scratch_.emplace("engine", "/var/tmp");
    } catch (const std::system_error& e) {
      GTEST_SKIP() << "cannot create a directory in /var/tmp: " << e.what();
    }
    dir_ = scratch_->dir();
    auto opened = provider::create_file((dir_ / "p.img").string(), provider_size);
    ASSERT_TRUE(opened.has_value()) << opened.error().message();
    if (!opened->direct())
      GTEST_SKIP() << "/var/tmp refuses O_DIRECT here";
    prov_ = std::make_shared<provider>(std::move(*opened));
    home_ = std::thread{[this] { io_.run(); }};
    home_id_ = home_.get_id();
    got_.on_batch = [this](size_t) {
      if (in_submit_)
        completed_inside_submit_ = true;
    };
    std::string why;
    at_home([&] {
      engine_ = disk_engine::make(prov_, disk_engine_kind::uring, got_.callback(), &why,
                                  /*callers_outlive_io=*/true, &io_);
    });
    ASSERT_NE(engine_, nullptr);
    if (engine_->kind() != disk_engine_kind::uring)
      GTEST_SKIP() << "io_uring is not available here: " << why;
  }

  void TearDown() override {
    if (home_.joinable()) {
      at_home([&] { engine_.reset(); });
      // Once the engine is gone nothing of it waits on the context: run()
      // returns by itself.
      guard_.reset();
      auto until = std::chrono::steady_clock::now() + 5s;
      while (!io_.stopped() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
      EXPECT_TRUE(io_.stopped()) << "the engine left work on its home context";
      io_.stop();
      home_.join();
    }
    prov_.reset();
    scratch_.reset();
  }

  /// Runs `f` on the home thread and waits for it.
  void at_home(std::function<void()> f) {
    std::promise<void> ran;
    asio::post(io_, [&] {
      f();
      ran.set_value();
    });
    if (ran.get_future().wait_for(deadline) != std::future_status::ready)
      ADD_FAILURE() << "the home thread did not run a handler";
  }

  /// Submits one batch on the home thread and waits for its completions.
  std::map<uint64_t, disk_completion> run(std::vector<disk_op> ops) {
    auto first = got_.count();
    auto n = ops.size();
    at_home([&] { submit_here(std::move(ops)); });
    if (!got_.wait_for(first + n))
      ADD_FAILURE() << "only " << got_.count() - first << " of " << n << " ops completed";
    return got_.since(first);
  }

  /// On the home thread: submit(), noting that it runs.
  void submit_here(std::vector<disk_op> ops) {
    in_submit_ = true;
    engine_->submit(std::move(ops));
    in_submit_ = false;
  }


  std::optional<scratch_dir> scratch_;
  std::filesystem::path dir_;
  collector got_; // outlives the engine that calls it
  asio::io_context io_{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(io_);
  std::thread home_;
  std::thread::id home_id_;
  std::unique_ptr<disk_engine> engine_; // made, used and destroyed on home_
  bool in_submit_ = false;              // home thread only
  std::atomic<bool> completed_inside_submit_{false};
};

TEST_F(disk_engine_home_test, writes_then_reads_complete_once_each_on_the_home_thread) {
  constexpr uint64_t n = 200;
  std::vector<disk_op> writes;
  for (uint64_t i = 0; i < n; ++i)
    writes.push_back(write_op(i * 4096, pattern(i * 4096, 4096, 11), i));
  auto wrote = run(std::move(writes));
  ASSERT_EQ(wrote.size(), n);
  for (auto& [tag, c] : wrote)
    ASSERT_EQ(c.error, 0) << "write " << tag << ": " << std::strerror(c.error);
  std::vector<disk_op> reads;
  for (uint64_t i = 0; i < n; ++i)
    reads.push_back(read_op(i * 4096, 4096, n + i));
  auto read = run(std::move(reads));
  ASSERT_EQ(read.size(), n);
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(read.count(n + i)) << "tag " << n + i << " never completed";
    auto& c = read[n + i];
    ASSERT_EQ(c.error, 0) << "read " << i << ": " << std::strerror(c.error);
    ASSERT_NE(c.data, nullptr);
    ASSERT_EQ(to_bytes(c.data), pattern(i * 4096, 4096, 11)) << "block " << i;
  }
  at_home([&] {
    EXPECT_EQ(engine_->in_flight(), 0u);
    engine_.reset();
  });
  EXPECT_EQ(got_.count(), 2 * n) << "a completion was delivered twice";
  EXPECT_EQ(got_.threads(), std::set<std::thread::id>{home_id_});
  EXPECT_FALSE(completed_inside_submit_) << "on_complete ran inside submit()";
}

TEST_F(disk_engine_home_test, ops_the_ring_cannot_do_complete_on_the_home_thread_too) {
  constexpr uint64_t span = 256 << 10;
  fill(0, pattern(0, span));
  auto odd = pattern(200000 + 17, 1000, 12);
  auto done = run({
      range_op(op_kind::discard, 0, 64 << 10, 1),
      range_op(op_kind::write_zeroes, (64 << 10) + 100, 5000, 2),
      range_op(op_kind::write_zeroes, 128 << 10, 16 << 10, 3, true),
      write_op(200000 + 17, odd, 4),                        // unaligned: the pool's
      read_op(150000 + 3, 777, 5),                          // unaligned: the pool's
      write_op(240 << 10, pattern(240 << 10, 4096, 12), 6), // aligned: the ring's
  });
  ASSERT_EQ(done.size(), 6u);
  for (auto& [tag, c] : done)
    EXPECT_EQ(c.error, 0) << "op " << tag << ": " << std::strerror(c.error);
  ASSERT_NE(done[5].data, nullptr);
  EXPECT_EQ(to_bytes(done[5].data), pattern(150000 + 3, 777));
  auto want = pattern(0, span);
  std::fill_n(want.begin(), 64 << 10, uint8_t{0});
  std::fill_n(want.begin() + (64 << 10) + 100, 5000, uint8_t{0});
  std::fill_n(want.begin() + (128 << 10), 16 << 10, uint8_t{0});
  std::copy(odd.begin(), odd.end(), want.begin() + 200000 + 17);
  auto aligned = pattern(240 << 10, 4096, 12);
  std::copy(aligned.begin(), aligned.end(), want.begin() + (240 << 10));
  auto bytes = peek(0, span);
  for (size_t i = 0; i < span; ++i)
    ASSERT_EQ(bytes[i], want[i]) << "first difference at byte " << i;
  EXPECT_EQ(got_.threads(), std::set<std::thread::id>{home_id_});
  EXPECT_FALSE(completed_inside_submit_) << "on_complete ran inside submit()";
}

TEST_F(disk_engine_home_test, destroying_it_at_home_delivers_every_op_in_flight_first) {
  constexpr uint64_t n = 300; // beyond the 256-entry ring
  std::vector<disk_op> ops;
  for (uint64_t i = 0; i < n; ++i) {
    switch (i % 5) {
    case 0:
      ops.push_back(write_op(i * 4096, pattern(i * 4096, 4096, 13), i));
      break;
    case 1:
      ops.push_back(read_op(i * 4096, 4096, i));
      break;
    case 2:
      ops.push_back(range_op(op_kind::flush, 0, 0, i));
      break;
    case 3:
      ops.push_back(range_op(op_kind::write_zeroes, i * 4096 + 7, 100, i));
      break;
    default:
      ops.push_back(read_op(i * 4096 + 3, 10, i));
      break;
    }
  }
  size_t at_return = 0;
  at_home([&] {
    submit_here(std::move(ops));
    engine_.reset();
    at_return = got_.count();
  });
  EXPECT_EQ(at_return, n) << "the destructor returned before every completion";
  auto done = got_.since(0);
  ASSERT_EQ(done.size(), n);
  for (auto& [tag, c] : done)
    EXPECT_EQ(c.error, 0) << "op " << tag << ": " << std::strerror(c.error);
  for (uint64_t i = 0; i < n; i += 5)
    ASSERT_EQ(peek(i * 4096, 4096), pattern(i * 4096, 4096, 13)) << "write " << i;
  EXPECT_EQ(got_.threads(), std::set<std::thread::id>{home_id_});
}

TEST_F(disk_engine_home_test, on_complete_may_submit_the_next_batch) {
  constexpr uint64_t batches = 20, per_batch = 10, n = batches * per_batch;
  // Every fourth write is unaligned: its completion comes from the pool.
  auto offset = [](uint64_t i) { return i * 8192 + (i % 4 == 3 ? 512 : 0); };
  auto batch = [=](uint64_t b) {
    std::vector<disk_op> ops;
    for (uint64_t i = b * per_batch; i < (b + 1) * per_batch; ++i)
      ops.push_back(write_op(offset(i), pattern(offset(i), 4096, 14), i));
    return ops;
  };
  // Home thread only; shared with the callback, which may outlive this body.
  auto sent = std::make_shared<uint64_t>(0);
  got_.on_batch = [this, sent, batch](size_t) {
    if (in_submit_)
      completed_inside_submit_ = true;
    if (*sent < batches)
      submit_here(batch((*sent)++));
  };
  at_home([&] { submit_here(batch((*sent)++)); });
  ASSERT_TRUE(got_.wait_for(n)) << got_.count() << " of " << n << " completions";
  auto done = got_.since(0);
  ASSERT_EQ(done.size(), n);
  for (auto& [tag, c] : done)
    ASSERT_EQ(c.error, 0) << "write " << tag << ": " << std::strerror(c.error);
  at_home([&] {
    EXPECT_EQ(*sent, batches);
    engine_.reset();
  });
  EXPECT_EQ(got_.count(), n);
  for (uint64_t i = 0; i < n; ++i)
    ASSERT_EQ(peek(offset(i), 4096), pattern(offset(i), 4096, 14)) << "write " << i;
  EXPECT_EQ(got_.threads(), std::set<std::thread::id>{home_id_});
  EXPECT_FALSE(completed_inside_submit_) << "on_complete ran inside submit()";
}

// --- The posted engine on a context that the test's own thread polls, as
// the deterministic actor tests use it (tests/actors/deterministic.hpp).

class disk_engine_posted_test : public testing::Test, protected provider_access {
protected:
  void SetUp() override {
    scratch_.emplace("engine", "/var/tmp");
    auto opened = provider::create_file((scratch_->dir() / "p.img").string(), provider_size);
    ASSERT_TRUE(opened.has_value()) << opened.error().message();
    prov_ = std::make_shared<provider>(std::move(*opened));
    got_.on_batch = [this](size_t n) {
      batches_.push_back(n);
      if (in_submit_)
        completed_inside_submit_ = true;
    };
    std::string why = "stale";
    engine_ = disk_engine::make(prov_, disk_engine_kind::posted, got_.callback(), &why,
                                false, &io_);
    EXPECT_EQ(why, "");
  }

  void TearDown() override {
    engine_.reset();
    prov_.reset();
    scratch_.reset();
  }

  void submit(std::vector<disk_op> ops) {
    in_submit_ = true;
    engine_->submit(std::move(ops));
    in_submit_ = false;
  }

  std::optional<scratch_dir> scratch_;
  collector got_;
  std::vector<size_t> batches_; // sizes of the batches delivered, in order
  bool in_submit_ = false;
  bool completed_inside_submit_ = false;
  asio::io_context io_;
  std::unique_ptr<disk_engine> engine_;
};

TEST_F(disk_engine_posted_test, nothing_runs_until_the_context_is_polled_then_all_on_the_polling_thread) {
  ASSERT_EQ(engine_->kind(), disk_engine_kind::posted);
  submit({write_op(0, pattern(0, 4096, 21), 1), write_op(8192, pattern(8192, 4096, 21), 2)});
  submit({range_op(op_kind::flush, 0, 0, 3)});
  EXPECT_EQ(got_.count(), 0u);
  EXPECT_EQ(engine_->in_flight(), 3u);
  EXPECT_EQ(peek(0, 4096), std::vector<uint8_t>(4096, 0)) << "a write ran before the context did";
  EXPECT_FALSE(completed_inside_submit_);

  EXPECT_EQ(io_.poll(), 1u) << "two submits before a poll make one round";
  EXPECT_EQ(batches_, std::vector<size_t>{3}) << "one round delivers one batch";
  EXPECT_EQ(engine_->in_flight(), 0u);
  EXPECT_EQ(got_.threads(), std::set<std::thread::id>{std::this_thread::get_id()});
  auto done = got_.since(0);
  ASSERT_EQ(done.size(), 3u);
  for (auto& [tag, c] : done)
    EXPECT_EQ(c.error, 0) << "op " << tag << ": " << std::strerror(c.error);
  EXPECT_EQ(peek(0, 4096), pattern(0, 4096, 21));
  EXPECT_EQ(peek(8192, 4096), pattern(8192, 4096, 21));

  // Reads come back with their bytes, a bad op with its errno.
  io_.restart();
  submit({read_op(8192, 4096, 4), read_op(provider_size, 4096, 5)});
  io_.poll();
  auto read = got_.since(3);
  ASSERT_EQ(read.size(), 2u);
  ASSERT_EQ(read[4].error, 0);
  EXPECT_EQ(to_bytes(read[4].data), pattern(8192, 4096, 21));
  EXPECT_EQ(read[5].error, EINVAL);
}

TEST_F(disk_engine_posted_test, on_complete_may_submit_and_the_next_round_runs_it) {
  got_.on_batch = [this](size_t) {
    if (got_.count() == 0) // the first batch, before it is recorded
      engine_->submit({write_op(4096, pattern(4096, 4096, 22), 2)});
  };
  submit({write_op(0, pattern(0, 4096, 22), 1)});
  EXPECT_EQ(io_.poll(), 2u) << "the op submitted from on_complete runs in a round of its own";
  EXPECT_EQ(got_.count(), 2u);
  EXPECT_EQ(peek(4096, 4096), pattern(4096, 4096, 22));
}

TEST_F(disk_engine_posted_test, destroying_it_runs_and_delivers_what_the_context_never_ran) {
  submit({write_op(0, pattern(0, 4096, 23), 1), read_op(0, 4096, 2)});
  engine_.reset();
  EXPECT_EQ(got_.count(), 2u) << "the destructor returned before every completion";
  EXPECT_EQ(peek(0, 4096), pattern(0, 4096, 23));
  EXPECT_EQ(io_.poll(), 1u) << "the round left in the context runs";
  EXPECT_EQ(got_.count(), 2u) << "and delivers nothing again";
}

TEST(disk_engine, make_without_a_home_gives_a_threads_engine_for_the_posted_kind_and_says_why) {
  scratch_dir scratch{"engine", "/var/tmp"};
  auto opened = provider::create_file((scratch.dir() / "p.img").string(), 1 << 20);
  ASSERT_TRUE(opened.has_value()) << opened.error().message();
  auto prov = std::make_shared<const provider>(std::move(*opened));
  std::string why;
  auto engine = disk_engine::make(prov, disk_engine_kind::posted,
                                  [](std::vector<disk_completion>) {}, &why);
  EXPECT_EQ(engine->kind(), disk_engine_kind::threads);
  EXPECT_NE(why.find("home"), std::string::npos) << why;
}

TEST(disk_engine, a_daemons_configuration_cannot_name_the_posted_engine) {
  EXPECT_EQ(parse_disk_engine_kind("posted"), std::nullopt);
  EXPECT_EQ(parse_disk_engine_kind(to_string(disk_engine_kind::posted)), std::nullopt);
  EXPECT_EQ(parse_disk_engine_kind("threads"), disk_engine_kind::threads);
}

TEST(disk_engine, make_gives_an_io_uring_engine_where_the_kernel_allows_io_uring) {
  io_uring ring;
  if (int r = io_uring_queue_init(8, &ring, 0); r < 0)
    GTEST_SKIP() << "io_uring_queue_init fails here: " << std::strerror(-r);
  io_uring_queue_exit(&ring);
  scratch_dir scratch{"engine", "/var/tmp"};
  const auto& dir = scratch.dir();
  {
    auto opened = provider::create_file((dir / "p.img").string(), 1 << 20);
    ASSERT_TRUE(opened.has_value()) << opened.error().message();
    auto prov = std::make_shared<const provider>(std::move(*opened));
    std::string why = "stale";
    disk_completion_fn ignore = [](std::vector<disk_completion>) {};
    auto engine = disk_engine::make(prov, disk_engine_kind::uring, ignore, &why);
    EXPECT_EQ(engine->kind(), disk_engine_kind::uring) << "fell back: " << why;
    EXPECT_EQ(why, "");
    auto threads = disk_engine::make(prov, disk_engine_kind::threads, ignore, &why);
    EXPECT_EQ(threads->kind(), disk_engine_kind::threads);
    EXPECT_EQ(why, "");
  }
}

TEST(disk_engine, kinds_parse_from_and_print_as_their_names) {
  EXPECT_EQ(parse_disk_engine_kind("uring"), disk_engine_kind::uring);
  EXPECT_EQ(parse_disk_engine_kind("io_uring"), disk_engine_kind::uring);
  EXPECT_EQ(parse_disk_engine_kind("threads"), disk_engine_kind::threads);
  EXPECT_EQ(parse_disk_engine_kind("aio"), std::nullopt);
  EXPECT_EQ(parse_disk_engine_kind(""), std::nullopt);
  EXPECT_EQ(to_string(disk_engine_kind::uring), "io_uring");
  EXPECT_EQ(to_string(disk_engine_kind::threads), "threads");
  for (auto kind : {disk_engine_kind::uring, disk_engine_kind::threads})
    EXPECT_EQ(parse_disk_engine_kind(to_string(kind)), kind);
}

} // namespace
} // namespace hast
