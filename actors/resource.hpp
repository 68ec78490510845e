#pragma once

// The resource actor: one replicated resource's control plane. It steers
// the resource's data plane (actors/data_plane.hpp: every request from
// arrival to answer, the activemap and its group commit) and owns what is
// not on the per-request path, one concept per file:
//   resource.cpp   roles, the drain, the export, /dev/hast, the link, status;
//                  carrying out what the data plane asks for
//   resync.cpp     copying dirty extents between the nodes (whole, or with
//                  resync-checksum only the blocks whose digests differ)
//   verify.cpp     the online verify: comparing both nodes' block hashes
//   failover.cpp   the lease (failover auto)
//   handshake.cpp  what the secondary answers a connecting primary
//                  (generations, split brain) and what the primary does
//                  with the answer
//   grow.cpp       online growth (hastctl grow), offline in role init
// The functions they share are declared at the end of this header.

#include "actors/data_plane.hpp"
#include "actors/runtime.hpp"
#include "messages/actors.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

namespace hast {

class provider;
class device_worker;
class data_thread;
namespace nbd {
class server;
}

/// One extent being copied.
struct sync_extent {
  uint64_t bytes = 0;     // what its copy moves
  uint32_t pending = 0;   // ranges not yet written on the other node
  uint32_t reading = 0;   // ranges still being read here (not yet queued for the peer)
  bool ok = true;         // no range failed
  uint64_t serial = 0;    // tells this copy's answers from an earlier one's
  // `resync-checksum on`: both nodes' block digests of the extent, and our
  // copy of it (read to be digested; the differing blocks go from it).
  std::optional<block_digests> ours;
  std::optional<block_digests> theirs;
  buffer_ptr data;
};

/// The resync of dirty extents between the nodes.
struct sync_state {
  bool active = false;
  bool from_secondary = false;                  // this primary was the stale side
  bool pending_from_secondary = false;          // the handshake said so; starts with sync_start
  uint64_t cursor = 0;                          // next extent to look at
  std::map<uint64_t, uint64_t> ids;             // replicate id -> extent
  std::map<uint64_t, sync_extent> extents;      // extents being copied now
  uint64_t bytes_in_flight = 0;                 // of those extents
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t wire_bytes = 0;                      // data bytes moved between the nodes
  uint64_t same_bytes = 0;                      // resync-checksum: found identical, not moved
  std::chrono::steady_clock::time_point started;
  uint64_t since_persist = 0;                   // extents cleared since the map was last written
  uint64_t started_bytes = 0;                   // bytes whose copy has begun (rate limit)
  bool tick_pending = false;                    // a rate-limit wake-up is scheduled
  std::chrono::steady_clock::time_point reported;  // the last `sync` progress event
};

/// One extent being verified on the primary: both sides' block hashes.
struct verify_extent {
  std::optional<block_hashes> local;
  std::optional<block_hashes> remote;
};

/// The online verify (primary). After it ends, its figures stay for status.
struct verify_state {
  bool active = false;
  bool repair = false;
  std::string outcome = "none";
  uint64_t run = 0;                              // answers from an earlier run are ignored
  uint64_t cursor = 0;                           // next extent to look at
  std::deque<uint64_t> later;                    // passed over while clients wrote to them
  std::map<uint64_t, verify_extent> extents;     // being compared now
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t skipped_bytes = 0;
  uint64_t started_bytes = 0;                    // rate limit
  uint64_t differing_blocks = 0;
  uint64_t repaired_bytes = 0;
  std::map<uint64_t, uint64_t> differences;     // offset -> length, adjacent ones merged
  bool truncated = false;                        // more than verify_ranges_listed
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point ended;
  bool tick_pending = false;
};

/// Secondary: a verify's hash request waiting for writes to its range.
struct hash_request {
  uint64_t offset = 0;
  uint32_t length = 0;
  std::function<void()> run;               // reads, hashes and answers
  std::function<void(caf::error)> refuse;  // answers with an error instead
};

/// failover auto (actors/failover.cpp, docs/FAILOVER.md): the lease as this
/// node knows it, and what waits for it.
struct lease_state {
  witness_link_actor link;                 // to the witness; for the actor's whole life
  bool witness_up = false;
  std::string witness_error;
  bool held = false;                       // we hold the lease
  std::chrono::steady_clock::time_point valid_until{};  // ... until here (our clock)
  uint64_t epoch = 0;
  std::string holder;                      // as the witness last said
  bool asking = false;                     // a request is at the witness
  bool again = false;                      // ask again when it returns
  uint64_t serial = 0;                     // renews sent
  uint64_t in_sync_serial = 0;             // the last renew that said in_sync = true
  bool behind_known = false;               // the witness knows the secondary misses writes
  bool lost = false;                       // lease-lost fired for this episode
  bool auto_role = true;                   // take part (false after hastctl role init)
  bool tick_pending = false;
  std::chrono::steady_clock::time_point last_join{};  // role init: last attempt to be secondary
  bool promoting = false;                  // a granted claim waits for the supervisor
  std::string eligibility;                 // the witness's last word on our claim
  bool eligible = false;
  std::vector<uint64_t> waiting;           // writes that would run without the secondary
  std::vector<std::pair<nbd::reply_sink_ptr, nbd::reply>> answers;  // successes held back
  std::vector<std::pair<nbd::request, nbd::reply_sink_ptr>> reads;  // client reads held back
};

/// What a resource owns. Only the resource actor touches it.
struct resource_state {
  resource_config config;
  role current = role::init;
  std::string last_error;

  // The data plane, steered by this actor (`steer`); it holds the
  // metadata and, while the role is not init, the activemap.
  std::unique_ptr<data_plane::steering> steer;
  std::unique_ptr<data_plane> plane;

  // Present while the role is not init.
  std::shared_ptr<const provider> local;
  disk_io_actor disk;                    // data and metadata I/O

  // Replication.
  std::string node;                 // this node's name, for the handshake
  runtime io;                       // where the NBD export and the peer link run
  data_thread* home = nullptr;      // the data thread this resource runs on, if any
  std::set<caf::actor_addr> retired;  // children we stopped; their exits are expected
  std::string peer_error;           // why the peer is not connected
  peer_actor link;                  // the peer actor while primary or secondary with a remote
  bool connected = false;           // handshake complete
  std::string remote_address;
  replication_policy policy = policy_for(replication_mode::memsync);
  sync_state sync;
  // Extents a verify found different in part: their copy moves only these
  // (offset, length) ranges. Valid while connected; a whole-extent mark
  // drops them.
  std::map<uint64_t, std::vector<std::pair<uint64_t, uint64_t>>> repair_ranges;
  verify_state verify;
  lease_state lease;
  std::vector<hash_request> hash_waiting;  // secondary
  bool bumped = false;              // localcnt raised for the current outage
  bool split_brain = false;         // both nodes wrote apart; never resolved silently
  bool discard_local = false;       // hastctl resync --discard-local: give up our changes
  bool growing = false;             // hastctl grow (or the primary's grow request) under way
  uint64_t synced_total = 0;        // bytes copied by resyncs since start
  uint64_t sync_serial = 0;         // numbers every extent copy (sync_extent::serial)
  // A failing local disk (md.local_stale): writes it failed completed on the
  // secondary; the stale extents are copied back from there.
  bool local_error_reported = false;  // the `local-error` event fired for this episode
  std::chrono::steady_clock::time_point last_rebuild;  // last attempt to copy them back

  // The export; listens for the whole life of the actor, serves only a primary.
  std::shared_ptr<nbd::server> server;
  uint64_t nbd_clients = 0;
  // The data size the export's device view serves (nbd::backend::size_now),
  // read by the sessions' threads: set on every open and by a grow.
  std::shared_ptr<std::atomic<uint64_t>> export_size = std::make_shared<std::atomic<uint64_t>>(0);

  // /dev/hast/<provider_name> while primary (`device on`): made and removed
  // on a thread of its own (io/process/block_device.hpp).
  std::shared_ptr<device_worker> devices;
  uint64_t device_epoch = 0;          // results of older requests are ignored
  bool device_pending = false;        // a make is under way
  std::string device;                 // the device made ("/dev/hast/x -> /dev/loop3")
  int device_connections = 0;         // its NBD connections (not counted as clients)
  std::string device_error;           // why there is none
  bool leaving = false;               // removing the device before a drain
  // Grows of the device waiting for the device thread (resize_block_device),
  // by ticket.
  std::map<uint64_t, std::function<void(std::string)>> device_resizes;
  uint64_t device_resize_serial = 0;

  // Role changes.
  std::vector<caf::typed_response_promise<role>> drained;  // role changes waiting for in_flight == 0
  std::vector<caf::typed_response_promise<bool>> stopped;  // stop requests waiting likewise
  std::optional<role> pending_role;                        // role being entered after the drain
  bool draining = false;

  ~resource_state();

  static inline const char* name = "hast.resource";
};


/// Spawns the resource in role init and starts listening on its NBD address.
resource_actor::behavior_type resource(resource_actor::stateful_pointer<resource_state> self,
                                       resource_config config, std::string node, runtime io);

/// Changes no write waits for (extents leaving the image) reach the disk
/// within this time; writes that need an extent marked never wait for it.
inline constexpr auto lazy_commit_delay = std::chrono::milliseconds(100);

/// Resync: bytes read ahead, on the wire and not yet written on the other
/// node, at once. Enough to keep a fast link busy while one extent is read
/// and another written; it bounds the memory a resync takes on both nodes.
inline constexpr uint64_t sync_bytes_in_flight = 16u << 20;

/// A running resync tells the event stream its progress this often.
inline constexpr auto sync_progress_interval = std::chrono::seconds(1);

/// Verify: extents read and hashed on both nodes at once.
inline constexpr size_t verify_extents_in_flight = 8;

/// Client I/O keeps priority: while clients did I/O within `client_quiet`
/// (actors/data_plane.hpp),
/// the resync keeps only this much in flight (the verify two extents), so a
/// client's request queues behind little background I/O on the disks and
/// the link. (DRBD's c-min-rate idea, without a rate to configure.)
inline constexpr uint64_t sync_bytes_under_load = 4u << 20;
inline constexpr size_t verify_extents_under_load = 2;

/// A failing local disk: after a local I/O succeeds again, the stale
/// extents are copied back from the secondary, at most this often (a disk
/// that fails only some blocks would otherwise start a copy per request).
inline constexpr auto local_rebuild_interval = std::chrono::seconds(5);

// --- Shared by resource.cpp, resync.cpp and handshake.cpp ----------------------------------------

using resource_ptr = resource_actor::stateful_pointer<resource_state>;

/// Sends what one activation gathered: the disk batch and the replies.
/// Every handler of the resource ends with it (see `activation`).
void flush_activation(resource_ptr self);

/// The extents a byte range of the data region touches (a zero-length
/// range touches the extent of its offset), and the bytes of one extent
/// (the last one may be short).
inline uint64_t first_extent(resource_ptr self, uint64_t offset) {
  return self->state.plane->first_extent(offset);
}
inline uint64_t last_extent(resource_ptr self, uint64_t offset, uint64_t length) {
  return self->state.plane->last_extent(offset, length);
}
inline uint64_t extent_bytes(resource_ptr self, uint64_t extent) {
  return self->state.plane->extent_bytes(extent);
}
/// Did clients do I/O within `client_quiet`?
inline bool clients_busy(resource_ptr self) {
  return self->state.plane->clients_busy(std::chrono::steady_clock::now());
}

/// Flushes at the end of a handler's scope.
struct activation {
  resource_ptr self;
  ~activation() { flush_activation(self); }
};

/// A state change of this resource: runs the `exec` hook with `args`'
/// values (never waits) and tells the event stream `args` and `more`.
void event(resource_ptr self, const std::string& name, event_fields args = {},
           event_fields more = {});
/// Tells only the event stream (progress, which is no hook's business).
void announce(resource_ptr self, const std::string& name, event_fields fields);

/// Both nodes were written as primary while apart: report it once.
void detect_split_brain(resource_ptr self);

// resync.cpp
void sync_start(resource_ptr self);
void sync_stop(resource_ptr self, const std::string& why);
void sync_pump(resource_ptr self);
/// An acknowledgement for a resync request; false when `id` is not one.
bool sync_ack(resource_ptr self, uint64_t id, remote_stage stage, uint32_t error);
bool touches_sync(resource_ptr self, uint64_t offset, uint64_t length);
/// This primary catches up with the secondary: the read goes there.
bool read_from_secondary(resource_ptr self, uint64_t offset, uint64_t length);
/// Marks a range dirty for the resync (whole extents).
void mark_for_sync(resource_ptr self, uint64_t offset, uint64_t length);
/// Marks exactly these ranges of `extent` for copying to the secondary and
/// starts (or feeds) the resync.
void sync_ranges(resource_ptr self, uint64_t extent,
                 const std::vector<std::pair<uint64_t, uint64_t>>& ranges);

// resource.cpp
/// Primary, after a grow to `datasize`: the export's device view serves the
/// new size, and /dev/hast/<name>, hastd's or one `hastctl attach` made,
/// grows to it on the device thread. `then` runs (at once, or in a later
/// turn) with what to add to the grow's reply: "" when there is no device,
/// else a sentence with the device's new size or why it kept the old one
/// (also logged). The grow itself is done either way.
void resize_block_device(resource_ptr self, uint64_t datasize,
                         std::function<void(std::string)> then);

// grow.cpp
/// Primary: hastctl grow; grows the secondary, then this node.
caf::result<std::string> grow_command(resource_ptr self, bool assume_clean);
/// Secondary: the primary's grow request.
caf::result<uint64_t> grow_from_primary(resource_ptr self, uint64_t datasize);

// verify.cpp
caf::result<std::string> verify_command(resource_ptr self, bool repair, bool stop);
void verify_pump(resource_ptr self);
/// The verify cannot go on (the peer left, the role changed).
void verify_interrupt(resource_ptr self, const std::string& why);
bool verifying_extent(resource_ptr self, uint64_t extent);
bool touches_verify(resource_ptr self, uint64_t offset, uint64_t length);
verify_progress verify_status(resource_ptr self);
/// Secondary: answers the primary's hash request once no write to the
/// range is in flight.
caf::result<block_hashes> hash_range(resource_ptr self, uint64_t offset, uint32_t length);
/// The same with the checksum resync's digests (SHA-256 per block).
caf::result<block_digests> digest_range(resource_ptr self, uint64_t offset, uint32_t length);
/// Secondary: a write finished; hash requests waiting for it may go.
void serve_hash_requests(resource_ptr self);

// failover.cpp
/// Starts the witness link and the lease ticks (failover auto only).
void lease_start(resource_ptr self);
/// May a write be acknowledged, or run, without the secondary's copy? Always
/// with failover manual; with auto only while we hold the lease and the
/// witness knows the secondary is missing writes.
bool may_write_alone(resource_ptr self);
/// Write `id` would run without the secondary: it waits for may_write_alone.
void wait_for_lease(resource_ptr self, uint64_t id);
/// A successful answer given without the secondary's copy waits likewise.
void hold_answer(resource_ptr self, nbd::reply_sink_ptr sink, nbd::reply r);
/// May a client read be answered from the local copy? Always with failover
/// manual; with auto only while we hold a valid lease (no other node can
/// have been promoted meanwhile).
bool may_read_alone(resource_ptr self);
/// A client read has neither the lease nor a secondary: it waits for
/// may_read_alone, or fails as the writes waiting for the lease do.
void wait_for_lease_to_read(resource_ptr self, nbd::request r, nbd::reply_sink_ptr sink);
void lease_tick(resource_ptr self);
/// Primary: tell the witness now whether the secondary is in sync (after a
/// resync completes, rather than at the next renew).
void lease_report(resource_ptr self);
void lease_link_changed(resource_ptr self, bool up, const std::string& why);
/// hastctl role primary on an auto resource: the witness must grant the
/// lease first (a claim by hand); `then` runs with "" or why not.
void claim_by_hand(resource_ptr self, std::function<void(std::string)> then);
/// The node leaves primary: what waits for the lease fails (EIO) now, so
/// that the drain does not wait for it.
void lease_leaving(resource_ptr self);
/// We left primary (drained): give the lease back so the other node may go on.
void lease_release(resource_ptr self);
void lease_status(resource_ptr self, resource_status& st);

// handshake.cpp
peer::hello_message my_hello(resource_ptr self);
/// Secondary: what a connecting primary gets (or why not).
peer::hello_message answer_primary(resource_ptr self, const peer::hello_message& p);
/// The handshake completed (both roles).
void on_peer_up(resource_ptr self, peer_session& session);

} // namespace hast
