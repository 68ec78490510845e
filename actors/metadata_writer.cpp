#include "actors/metadata_writer.hpp"

#include "io/metadata.hpp"
#include "io/provider.hpp"

namespace hast {

metadata_writer_actor::behavior_type
metadata_writer(metadata_writer_actor::stateful_pointer<metadata_writer_state> self,
                std::shared_ptr<const provider> local, uint64_t metadata_sequence) {
  self->state.local = std::move(local);
  self->state.last_sequence = metadata_sequence;
  return {
    [=](atom::metadata, metadata& md, bool flush) -> caf::result<uint64_t> {
      // The writer owns the sequence: slots alternate by sequence parity, so
      // a torn write only ever damages the slot that is not the newest.
      auto& s = self->state;
      md.sequence = s.last_sequence;
      if (auto st = write_metadata(*s.local, md, flush); !st)
        return caf::make_error(errc::io_error, st.message());
      s.last_sequence = md.sequence;
      return md.sequence;
    },
  };
}

} // namespace hast
