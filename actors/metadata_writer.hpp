#pragma once

#include "messages/actors.hpp"

#include <memory>

namespace hast {

class provider;

struct metadata_writer_state {
  std::shared_ptr<const provider> local;
  uint64_t last_sequence = 0;  // the sequence of the newest slot on disk
  static inline const char* name = "hast.metadata_writer";
};

/// Spawn with caf::detached: every write blocks in pwrite and fdatasync.
metadata_writer_actor::behavior_type
metadata_writer(metadata_writer_actor::stateful_pointer<metadata_writer_state> self,
                std::shared_ptr<const provider> local, uint64_t metadata_sequence);

} // namespace hast
