#include "actors/disk_io.hpp"

#include "io/metadata.hpp"
#include "io/provider.hpp"

#include <spdlog/spdlog.h>

namespace hast {

namespace {

caf::error io_failure(const status& st) {
  return caf::make_error(errc::io_error, st.message());
}

} // namespace

disk_io_actor::behavior_type disk_io(disk_io_actor::stateful_pointer<disk_io_state> self,
                                     std::shared_ptr<const provider> local, uint64_t data_offset,
                                     uint64_t metadata_sequence) {
  self->state.local = std::move(local);
  self->state.data_offset = data_offset;
  self->state.last_sequence = metadata_sequence;
  return {
    [=](atom::read, uint64_t offset, uint32_t length) -> caf::result<buffer_ptr> {
      auto buf = make_buffer(length);
      auto st = self->state.local->read(buf->data(), length, self->state.data_offset + offset);
      if (!st)
        return io_failure(st);
      return buf;
    },
    [=](atom::write, uint64_t offset, const buffer_ptr& data, bool fua) -> caf::result<uint64_t> {
      auto& s = self->state;
      if (auto st = s.local->write(data->data(), data->size(), s.data_offset + offset); !st)
        return io_failure(st);
      if (fua)
        if (auto st = s.local->flush(); !st)
          return io_failure(st);
      return static_cast<uint64_t>(data->size());
    },
    [=](atom::flush) -> caf::result<uint64_t> {
      if (auto st = self->state.local->flush(); !st)
        return io_failure(st);
      return uint64_t{0};
    },
    [=](atom::discard, uint64_t offset, uint64_t length) -> caf::result<uint64_t> {
      auto& s = self->state;
      if (auto st = s.local->discard(s.data_offset + offset, length); !st)
        return io_failure(st);
      return length;
    },
    [=](atom::zeroes, uint64_t offset, uint64_t length, bool may_punch) -> caf::result<uint64_t> {
      auto& s = self->state;
      if (auto st = s.local->write_zeroes(s.data_offset + offset, length, may_punch); !st)
        return io_failure(st);
      return length;
    },
    [=](atom::metadata, metadata& md, bool flush) -> caf::result<uint64_t> {
      // The writer owns the sequence: slots alternate by sequence parity, so
      // a torn write only ever damages the slot that is not the newest.
      auto& s = self->state;
      md.sequence = s.last_sequence;
      if (auto st = write_metadata(*s.local, md, flush); !st)
        return io_failure(st);
      s.last_sequence = md.sequence;
      return md.sequence;
    },
  };
}

} // namespace hast
