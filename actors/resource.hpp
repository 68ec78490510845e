#pragma once

#include "io/activemap.hpp"
#include "io/metadata.hpp"
#include "messages/actors.hpp"

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

namespace asio {
class io_context;
}

namespace hast {

class provider;
namespace nbd {
class server;
}

/// The Asio context the NBD export runs on, wrapped so that CAF's spawn
/// machinery never needs the complete Asio type.
struct io_ref {
  asio::io_context* io = nullptr;
  /// Replaces the TCP connector of a primary's peer (tests script the
  /// secondary with it); empty in the daemon.
  std::function<void(std::function<void(status, peer_link_ptr)>)> connect;
};

/// One client write (or trim, or write_zeroes) on its way to both disks.
/// The client hears back once the mode's policy is satisfied; the extent
/// leaves the activemap only when both sides are final.
struct write_track {
  nbd_call call;
  bool local_done = false;
  uint32_t local_error = 0;
  bool remote_satisfied = false;  // the policy's acknowledgement arrived
  bool remote_final = false;      // "done" or failure arrived
  bool remote_failed = false;
  bool client_told = false;
};

/// The resync of dirty extents from the primary to the secondary.
struct sync_state {
  bool active = false;
  bool from_secondary = false;                  // this primary was the stale side
  bool pending_from_secondary = false;          // the handshake said so; starts with sync_start
  uint64_t cursor = 0;                          // next extent to look at
  std::map<uint64_t, uint64_t> ids;             // replicate id -> extent
  std::set<uint64_t> extents;                   // extents being copied now
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t wire_bytes = 0;                      // payload bytes sent, for tests and benchmarks
  std::chrono::steady_clock::time_point started;
  uint64_t since_persist = 0;                   // extents cleared since the map was last written
  uint64_t started_bytes = 0;                   // bytes whose copy has begun (rate limit)
  bool tick_pending = false;                    // a rate-limit wake-up is scheduled
};

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

  // Replication.
  std::string node;                 // this node's name, for the handshake
  io_ref io;                        // where the NBD export and the peer link run
  std::set<caf::actor_addr> retired;  // children we stopped; their exits are expected
  std::string peer_error;           // why the peer is not connected
  peer_actor link;                  // the peer actor while primary or secondary with a remote
  bool connected = false;           // handshake complete
  std::string remote_address;
  replication_policy policy = policy_for(replication_mode::memsync);
  uint64_t next_id = 1;
  std::unordered_map<uint64_t, write_track> tracks;       // replicated writes by id
  std::unordered_map<uint64_t, uint32_t> busy;            // extent -> client writes in flight
  std::vector<nbd_call> deferred;                         // writes waiting for an extent's sync
  // Client writes whose local part is running, by id: [offset, end). A write
  // overlapping one of them waits in `ordered`, so that both nodes apply
  // overlapping writes in the same (arrival) order.
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> local_ranges;
  std::deque<nbd_call> ordered;
  sync_state sync;
  bool bumped = false;              // localcnt raised for the current outage
  bool split_brain = false;         // both nodes wrote apart; never resolved silently
  bool discard_local = false;       // hastctl resync --discard-local: give up our changes
  uint64_t synced_total = 0;        // bytes copied by resyncs since start

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


/// Spawns the resource in role init and starts listening on its NBD address.
resource_actor::behavior_type resource(resource_actor::stateful_pointer<resource_state> self,
                                       resource_config config, std::string node, io_ref io);

/// Resync extents copied concurrently.
inline constexpr size_t sync_extents_in_flight = 4;

/// Disk-IO actors per resource: enough concurrency for queue depth 32.
inline constexpr size_t disk_io_actors_per_resource = 8;

} // namespace hast
