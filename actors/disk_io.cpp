#include "actors/disk_io.hpp"

#include "io/storage/provider.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace hast {

disk_io_actor::behavior_type disk_io(disk_io_actor::stateful_pointer<disk_io_state> self,
                                     std::shared_ptr<const provider> local, uint64_t data_offset,
                                     uint64_t datasize, disk_engine_kind kind,
                                     resource_actor owner, disk_home home) {
  auto& s = self->state;
  s.data_offset = data_offset;
  // The data area: the metadata's datasize, and never past the provider's
  // end (read_metadata checks that it fits; the slack after it is no one's).
  auto fitting = [local, data_offset](uint64_t size) {
    return std::min(size, local->size() > data_offset ? local->size() - data_offset : 0);
  };
  s.area = fitting(datasize);
  std::string why;
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(owner);
  s.engine = disk_engine::make(
    local, kind,
    [weak](std::vector<disk_completion> done) {
      // After the resource is gone its completions have no one to tell.
      if (auto hdl = caf::actor_cast<resource_actor>(weak.lock()))
        caf::anon_send(hdl, atom::disk_done_v, std::move(done));
    },
    &why, /*callers_outlive_io=*/true, home.io);  // CAF's workers live as long as the system
  // A home ring is its thread's alone. It goes with the state, which CAF
  // destroys while the actor ends (stateful_actor::on_exit), on the thread
  // running it: the home thread.
  if (!why.empty())
    spdlog::warn("{}: io_uring is not available ({}); using a thread pool for disk I/O",
                 local->path(), why);
  else
    spdlog::debug("{}: disk I/O through {}", local->path(), to_string(s.engine->kind()));
  return {
    [=](atom::submit, disk_batch& ops) {
      // Offsets are relative to the data area and may come from the peer.
      // One that reaches past the area, or whose sum with the data offset
      // would wrap onto the metadata slots, is given an offset the engine
      // refuses (EINVAL, completed like any other op): it never reaches the
      // disk. The data plane's metadata slot writes (`in_provider`) are the
      // provider's already.
      const auto base = self->state.data_offset;
      const auto area = self->state.area;
      for (auto& op : ops) {
        if (op.in_provider)
          continue;
        const bool ranged = op.op != disk_op::kind::flush;
        if (ranged && (op.offset > area || op.length > area - op.offset))
          op.offset = UINT64_MAX;
        else
          op.offset += base;
      }
      self->state.engine->submit(std::move(ops));
    },
    [=](atom::grow, uint64_t datasize) {
      // Online growth: the resource sends this before any request for the
      // new space (one sender: the mailbox keeps the order).
      self->state.area = std::max(self->state.area, fitting(datasize));
    },
  };
}

} // namespace hast
