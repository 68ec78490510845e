// The disk actor's bounds: offsets come relative to the data area, and on a
// secondary from the peer. An operation that reaches past the area, or
// whose offset plus the data offset would wrap onto the metadata slots,
// completes with EINVAL and leaves the disk as it was; one inside it goes
// to the disk. A real provider file and the posted engine: the I/O is real,
// and runs on the test's thread when it polls `io`.

#include "actors/disk_io.hpp"
#include "io/codec/buffer.hpp"
#include "io/storage/provider.hpp"
#include "tests/actors/deterministic.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

namespace hast {
namespace {

constexpr uint64_t provider_size = 1u << 20;
constexpr uint64_t data_offset = 8192;
// What the metadata says; the provider has 8 KiB of slack after it.
constexpr uint64_t datasize = provider_size - data_offset - 8192;

class disk_bounds : public deterministic_actors {
protected:
  disk_bounds() {
    auto p = provider::create_file((dir / "disk.img").string(), provider_size);
    EXPECT_TRUE(p.has_value());
    local = std::make_shared<const provider>(std::move(*p));
    owner = sys.spawn([this](caf::event_based_actor*) -> caf::behavior {
      return {[this](atom::disk_done, disk_results& done) {
        for (auto& c : done)
          errors[c.tag] = c.error;
      }};
    });
    disk = sys.spawn(disk_io, local, data_offset, datasize, disk_engine_kind::posted,
                     caf::actor_cast<resource_actor>(owner), disk_home{&io});
  }

  ~disk_bounds() override {
    caf::anon_send_exit(disk, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
    drain();
  }

  static disk_op write_of(uint64_t offset, uint8_t fill, uint64_t tag) {
    disk_op op;
    op.op = disk_op::kind::write;
    op.offset = offset;
    op.length = 4096;
    op.data = make_buffer(4096);
    std::memset(op.data->data(), fill, 4096);
    op.tag = tag;
    return op;
  }

  /// Submits `ops` and waits for every completion.
  void submit(disk_batch ops) {
    auto expected = errors.size() + ops.size();
    self->send(disk, atom::submit_v, std::move(ops));
    ASSERT_TRUE(run_until([&] { return errors.size() == expected; }));
  }

  /// The provider's bytes at an absolute offset.
  std::vector<uint8_t> at(uint64_t offset, size_t length) {
    std::vector<uint8_t> out(length);
    EXPECT_TRUE(local->read(out.data(), length, offset));
    return out;
  }

  std::shared_ptr<const provider> local;
  caf::actor owner;
  disk_io_actor disk;
  std::map<uint64_t, int> errors;  // tag -> errno of its completion
};

TEST_F(disk_bounds, an_offset_that_wraps_onto_the_metadata_is_refused_and_never_written) {
  // UINT64_MAX - data_offset + 1 plus data_offset is 0: the first slot.
  disk_batch ops;
  ops.push_back(write_of(UINT64_MAX - data_offset + 1, 0xAB, 1));
  submit(std::move(ops));
  EXPECT_EQ(errors[1], EINVAL);
  EXPECT_EQ(at(0, 4096), std::vector<uint8_t>(4096, 0));
}

TEST_F(disk_bounds, a_range_past_the_data_area_is_refused_and_one_inside_it_is_written) {
  const uint64_t area = datasize;
  disk_batch ops;
  ops.push_back(write_of(area - 4096, 0x11, 1));  // the last block: fine
  ops.push_back(write_of(area - 2048, 0x22, 2));  // half past the end
  ops.push_back(write_of(area, 0x33, 3));         // just past the end
  disk_op huge;  // a read whose length wraps offset + length
  huge.op = disk_op::kind::read;
  huge.offset = 4096;
  huge.length = UINT64_MAX - 100;
  huge.tag = 4;
  ops.push_back(huge);
  submit(std::move(ops));
  EXPECT_EQ(errors[1], 0);
  EXPECT_EQ(errors[2], EINVAL);
  EXPECT_EQ(errors[3], EINVAL);
  EXPECT_EQ(errors[4], EINVAL);
  EXPECT_EQ(at(data_offset + area - 4096, 4096), std::vector<uint8_t>(4096, 0x11));
}

TEST_F(disk_bounds, the_slack_after_datasize_is_not_the_peers_to_write) {
  disk_batch ops;
  ops.push_back(write_of(datasize, 0x44, 1));  // inside the provider, past datasize
  submit(std::move(ops));
  EXPECT_EQ(errors[1], EINVAL);
  EXPECT_EQ(at(data_offset + datasize, 4096), std::vector<uint8_t>(4096, 0));
}

} // namespace
} // namespace hast
