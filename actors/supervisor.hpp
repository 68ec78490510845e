#pragma once

#include "actors/resource.hpp"

#include <map>

namespace asio {
class io_context;
}

namespace hast {

struct supervised_resource {
  resource_config config;
  resource_actor handle;
};

/// What the supervisor owns: the configuration and one actor per resource.
struct supervisor_state {
  node_config config;
  io_ref io;  // the Asio context and the disk engine every resource uses
  std::map<std::string, supervised_resource> resources;
  bool stopping = false;
  static inline const char* name = "hast.supervisor";
};

supervisor_actor::behavior_type supervisor(supervisor_actor::stateful_pointer<supervisor_state> self,
                                           node_config config, io_ref io);

} // namespace hast
