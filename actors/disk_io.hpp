#pragma once

#include "messages/actors.hpp"

#include <memory>

namespace hast {

class provider;

struct disk_io_state {
  std::shared_ptr<const provider> local;  // shared by the resource's disk actors
  uint64_t data_offset = 0;               // where the data region starts
  uint64_t last_sequence = 0;             // metadata writer only: last slot sequence
  static inline const char* name = "hast.disk_io";
};

/// Spawn with caf::detached: every handler blocks in a system call.
disk_io_actor::behavior_type disk_io(disk_io_actor::stateful_pointer<disk_io_state> self,
                                     std::shared_ptr<const provider> local, uint64_t data_offset,
                                     uint64_t metadata_sequence);

} // namespace hast
