#pragma once

#include "messages/actors.hpp"

#include <memory>

namespace asio {
class io_context;
}

namespace hast {

class provider;

/// The data thread's context a disk_io actor lives on (see disk_io); null:
/// none. A struct, because CAF's spawn inspects pointer arguments.
struct disk_home {
  asio::io_context* io = nullptr;
};

struct disk_io_state {
  std::unique_ptr<disk_engine> engine;  // drains its in-flight operations when destroyed
  uint64_t data_offset = 0;             // where the data region starts in the provider
  uint64_t area = 0;                    // bytes of the data region (grows: atom::grow)
  static inline const char* name = "hast.disk_io";
};

/// The data disk of one resource. A scheduled (not detached) actor: it only
/// hands batches to the engine, whose completion thread reports to `owner`
/// with one `disk_done` message per reap. `kind` is the engine asked for; a
/// refused io_uring falls back to threads (logged once, here).
///
/// `home`: the context of the resource's data thread, to which this actor
/// is pinned before its first activation (spawned with caf::lazy_init). The
/// ring is then that thread's own and completions arrive there; the engine
/// is destroyed when the actor ends, on that thread. Null: the engine has
/// its own completion thread.
disk_io_actor::behavior_type disk_io(disk_io_actor::stateful_pointer<disk_io_state> self,
                                     std::shared_ptr<const provider> local, uint64_t data_offset,
                                     uint64_t datasize, disk_engine_kind kind,
                                     resource_actor owner, disk_home home);

} // namespace hast
