#pragma once

#include "io/activemap.hpp"
#include "io/metadata.hpp"
#include "messages/actors.hpp"

#include <deque>
#include <memory>
#include <optional>

namespace asio {
class io_context;
}

namespace hast {

class provider;
namespace nbd {
class server;
}

/// What a resource owns. Only the resource actor touches it.
struct resource_state {
  resource_config config;
  role current = role::init;
  std::string last_error;

  // Present while the role is not init.
  std::shared_ptr<const provider> local;
  metadata md;
  std::optional<activemap> map;
  std::vector<disk_io_actor> disks;  // data I/O, round robin
  size_t next_disk = 0;
  disk_io_actor metadata_writer;     // serialises metadata slot writes

  // The export; listens for the whole life of the actor, serves only a primary.
  std::shared_ptr<nbd::server> server;
  uint64_t nbd_clients = 0;

  // I/O accounting.
  uint64_t in_flight = 0;
  resource_counters counters;
  std::vector<caf::typed_response_promise<role>> drained;  // role changes waiting for in_flight == 0
  std::vector<caf::typed_response_promise<bool>> stopped;  // stop requests waiting likewise
  std::optional<role> pending_role;                        // role being entered after the drain
  bool draining = false;

  ~resource_state();

  static inline const char* name = "hast.resource";
};

/// The Asio context the NBD export runs on, wrapped so that CAF's spawn
/// machinery never needs the complete Asio type.
struct io_ref {
  asio::io_context* io = nullptr;
};

/// Spawns the resource in role init and starts listening on its NBD address.
resource_actor::behavior_type resource(resource_actor::stateful_pointer<resource_state> self,
                                       resource_config config, io_ref io);

/// Disk-IO actors per resource: enough concurrency for queue depth 32.
inline constexpr size_t disk_io_actors_per_resource = 8;

} // namespace hast
