#include "actors/disk_io.hpp"

#include "io/provider.hpp"

#include <spdlog/spdlog.h>

namespace hast {

disk_io_actor::behavior_type disk_io(disk_io_actor::stateful_pointer<disk_io_state> self,
                                     std::shared_ptr<const provider> local, uint64_t data_offset,
                                     disk_engine_kind kind, resource_actor owner,
                                     disk_home home) {
  auto& s = self->state;
  s.data_offset = data_offset;
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
      for (auto& op : ops)
        if (!op.in_provider)
          op.offset += self->state.data_offset;
      self->state.engine->submit(std::move(ops));
    },
  };
}

} // namespace hast
