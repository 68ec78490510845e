#pragma once

// A resource's data plane: every client request (NBD) and every replicated
// request (the primary's, on a secondary) from arrival to answer, with the
// write tracker, the replication window, the activemap and its group
// commit. A plain class: no actor, no thread, no clock but the one it is
// given. The resource actor (actors/resource.cpp) steers it (role, link,
// policy, resync and verify interlocks, the lease) and carries out what it
// asks for at the end of each turn (`take`): disk operations (metadata slot
// writes among them: the activemap goes through the same disk ring as the
// data), requests for the secondary, and replies. Tests drive it directly
// (tests/actors/data_plane_test.cpp).
//
// One turn = one activation of the resource: call in (`batch`, `disk_done`,
// `remote_ack`, `metadata_written`, ...), then `end_turn` and `take`.

#include "actors/write_tracker.hpp"
#include "io/storage/activemap.hpp"
#include "io/storage/metadata.hpp"
#include "messages/actors.hpp"

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hast {

/// The replication window: a synchronous primary sends at most this many
/// requests (and bytes) that the secondary has not written yet; further
/// writes wait, so the secondary's backlog and the primary's memory stay
/// bounded and a slow secondary slows the client instead. (Async mode
/// bounds its bytes in flight in the peer and leaves the rest dirty.)
inline constexpr size_t replication_window_requests = 1024;
inline constexpr uint64_t replication_window_bytes = 64u << 20;

/// Client I/O keeps priority over the resync and the verify while clients
/// did I/O within this time.
inline constexpr auto client_quiet = std::chrono::milliseconds(200);

/// A request that changes data or durability (write, trim, write_zeroes,
/// flush), from arrival until its bookkeeping ends, with where its answer
/// goes. The write tracker holds its acknowledgement state under the same id.
struct client_write {
  nbd::request req;
  nbd::reply_sink_ptr sink;
  bool from_peer = false;
  bool resync = false;  // from_peer: resync data (never marked in the activemap)
  bool local_failed = false;  // the local disk failed it; the secondary's copy stands
  std::chrono::steady_clock::time_point replicated{};  // sent to the secondary
};

using disk_continuation = std::function<void(disk_completion&)>;

class data_plane {
public:
  /// What the data plane asks of the control plane. Every call happens
  /// inside a turn, on the thread that drives the data plane.
  class steering {
  public:
    virtual ~steering() = default;

    // --- where the resource stands ---
    /// Are requests served: from a client (primary, not draining) or from
    /// the primary (`from_peer`: secondary)?
    virtual bool serving(bool from_peer) const = 0;
    /// The link to the other node is up (handshake complete).
    virtual bool connected() const = 0;

    // --- interlocks with the resync and the verify ---
    /// Must a client write to [offset, offset+length) wait (its extent's
    /// resync data is being read, or it is being verified)? It is tried
    /// again at `release_deferred`.
    virtual bool must_wait(uint64_t offset, uint64_t length) = 0;
    /// This primary catches up with the secondary: the read goes there.
    virtual bool read_from_secondary(uint64_t offset, uint64_t length) = 0;
    /// Reads `r` from the secondary; its outcome comes back through
    /// `remote_read_done`. The request follows every replicated write sent
    /// before it on the same ordered link, and the secondary reads only
    /// after those writes to the range are on its disk.
    virtual void read_remote(nbd::request r, nbd::reply_sink_ptr sink) = 0;
    /// Marks a range dirty for the resync (whole extents).
    virtual void mark_for_sync(uint64_t offset, uint64_t length) = 0;
    /// The secondary did not confirm a write while the link is up: copy
    /// its extents now rather than at the next connection.
    virtual void resync_now() = 0;
    /// A write finished (its extents are no longer busy): hash requests,
    /// the resync and the verify may go on.
    virtual void write_finished() = 0;

    // --- generations and the lease (failover auto) ---
    /// The first write of the resource and of every outage raises localcnt
    /// (in `md()`); true when this write raised it, so that it waits for
    /// the metadata round that carries the new generation.
    virtual bool bump_generation() = 0;
    /// May a write run, or be acknowledged, without the secondary's copy?
    virtual bool may_write_alone() = 0;
    /// Write `id` waits for the lease; the control plane later calls
    /// `admit_alone(id)` or `refuse(id)`.
    virtual void wait_for_lease(uint64_t id) = 0;
    /// A success given without the secondary's copy waits likewise; the
    /// control plane later calls `answer`.
    virtual void hold_answer(nbd::reply_sink_ptr sink, nbd::reply r) = 0;
    /// May a client read be answered from this node's copy: no other node
    /// can have been promoted and written since (failover auto: the lease
    /// is valid; always true with failover manual)?
    virtual bool may_read_here() = 0;
    /// Client read `r` waits for the lease (no lease and no secondary to
    /// read from); the control plane later calls `read_after_lease` or
    /// `refuse_read`.
    virtual void wait_for_lease_to_read(nbd::request r, nbd::reply_sink_ptr sink) = 0;

    // --- a failing local disk ---
    /// Does the secondary hold every acknowledged write, so that a write
    /// the local disk fails can stand on the secondary's copy alone?
    virtual bool secondary_holds_everything() = 0;
    /// The local disk failed a request (an NBD error code); the data plane
    /// has already recorded the extents as stale here.
    virtual void local_disk_failed(uint32_t error) = 0;
    /// A local request succeeded (a failed disk may be back).
    virtual void local_disk_ok() = 0;

    // --- bookkeeping ---
    /// No request is in flight any more (a drain waits for this).
    virtual void idle() = 0;
  };

  /// What one turn produced, for the resource to send.
  struct output {
    disk_batch disk;                 // for the disk (data-region offsets)
    replicate_batch replicate;       // for the secondary
    std::vector<std::pair<nbd::reply_sink_ptr, std::vector<nbd::reply>>> replies;
    bool lazy_commit = false;        // schedule `commit_tick` after lazy_commit_delay

    bool empty() const { return disk.empty() && replicate.empty() && replies.empty(); }
  };

  data_plane(std::string name, bool standalone, replication_policy policy, steering& control);

  // --- configuration, from the control plane ---
  void set_policy(replication_policy policy);
  void set_standalone(bool standalone) { standalone_ = standalone; }
  /// metaflush: a metadata round is written with FUA (durable when it
  /// completes); off: a plain write.
  void set_metaflush(bool metaflush) { metaflush_ = metaflush; }

  /// The provider is open with `md`: the activemap starts from its bitmap
  /// (merged unless standalone, whose map only guards the next crash).
  void open(metadata md);
  /// The provider closes: map and group commit go.
  void close();
  bool is_open() const { return map_.has_value(); }

  metadata& md() { return md_; }
  const metadata& md() const { return md_; }
  /// Valid while open.
  activemap& map() { return *map_; }
  const activemap& map() const { return *map_; }

  // --- requests ---
  /// Requests from an NBD session (from_peer = false) or replicated by the
  /// primary (from_peer = true; `resync` for resync data).
  void batch(nbd_batch& batch, std::chrono::steady_clock::time_point now);
  /// What the disk finished.
  void disk_done(disk_results& done);
  /// The secondary acknowledged a client write (resync ids are the
  /// control plane's).
  void remote_ack(uint64_t id, remote_stage stage, uint32_t error);
  /// A read sent to the secondary ended: `data` on success, else EIO.
  void remote_read_done(const nbd::request& r, const nbd::reply_sink_ptr& sink,
                        buffer_ptr data, bool ok);
  /// The link went down: queued writes go (they only mark their extents).
  void link_down();
  /// The peer was stopped: what waits for its acknowledgements fails now.
  void peer_gone();
  /// A drain begins: writes waiting for an interlock fail with ESHUTDOWN.
  void drop_deferred();
  /// Client writes that waited for an interlock try again.
  void release_deferred();

  /// Write `id` waited for the lease: it runs (generation, mark, issue)...
  void admit_alone(uint64_t id);
  /// ... or does not happen on either node (EIO).
  void refuse(uint64_t id);
  /// Client read `r` waited for the lease: it runs now (the gate is asked
  /// again)...
  void read_after_lease(nbd::request r, nbd::reply_sink_ptr sink);
  /// ... or fails with EIO.
  void refuse_read(const nbd::request& r, const nbd::reply_sink_ptr& sink);
  /// Queues a reply for this turn; a client's request is timed here.
  void answer(const nbd::reply_sink_ptr& sink, nbd::reply r);

  // --- disk, secondary and metadata, for the control plane too ---
  /// Queues a disk operation (data-region offsets) for this turn.
  void submit(disk_op op, disk_continuation then);
  /// Queues a request for the secondary.
  void replicate(replicate_call rc) { out_.replicate.push_back(std::move(rc)); }
  /// Writes metadata and activemap; `then` runs with true once a write
  /// that started after this call is on disk (group commit).
  void persist(std::function<void(bool)> then);
  /// The lazy commit's timer fired.
  void commit_tick();
  /// Did the last metadata round fail?
  bool commit_failing() const { return commit_.failing; }
  /// A fresh request id (resync requests share the id space).
  uint64_t new_id() { return next_id_++; }

  /// Ends a turn: starts a metadata round if anything waits for one.
  void end_turn();
  /// What the turn produced; leaves it empty.
  output take();

  // --- what the control plane reads ---
  /// Client writes in flight on extent `e`.
  bool busy(uint64_t extent) const { return busy_.count(extent) != 0; }
  uint64_t in_flight() const { return in_flight_; }
  size_t writes_open() const { return writes_.size(); }
  bool clients_busy(std::chrono::steady_clock::time_point now) const {
    return now - last_client_io_ < client_quiet;
  }
  /// The local disk failed writes the secondary took: does the range
  /// touch an extent whose data here is stale?
  bool stale_here(uint64_t offset, uint64_t length) const;
  /// Does the range touch an extent still to be copied to the secondary
  /// (its copy there is older than this node's)?
  bool behind_there(uint64_t offset, uint64_t length) const;
  resource_counters& counters() { return counters_; }
  const std::array<latency_histogram, io_op_count>& client_latency() const {
    return client_latency_;
  }
  const latency_histogram& replication_latency() const { return replication_latency_; }

  /// The extents a byte range touches (a zero-length range touches the
  /// extent of its offset), and the bytes of one extent.
  uint64_t first_extent(uint64_t offset) const { return offset / md_.extent_size; }
  uint64_t last_extent(uint64_t offset, uint64_t length) const {
    return (offset + std::max<uint64_t>(length, 1) - 1) / md_.extent_size;
  }
  uint64_t extent_bytes(uint64_t extent) const {
    return std::min<uint64_t>(md_.extent_size, md_.datasize - extent * md_.extent_size);
  }

private:
  // Group commit of metadata and activemap: one write in flight at a time;
  // whatever asks for a write meanwhile is covered by the next one.
  struct map_commit {
    bool in_flight = false;
    bool tick_pending = false;                         // a lazy round is scheduled
    bool failing = false;                              // the last round could not be written
    uint64_t started = 0;                              // rounds begun
    uint64_t written = 0;                              // the newest round on disk
    std::vector<std::function<void(bool)>> this_round; // told when the round in flight ends
    std::vector<std::function<void(bool)>> next_round; // covered by the next round
  };
  // A write held until the activemap on disk covers it (and, after a
  // generation bump, until the round carrying the new generation is written).
  struct map_waiter {
    uint64_t id;
    uint64_t round;  // 0: any round that makes its extents durable
  };

  void arrive(nbd::request r, nbd::reply_sink_ptr sink, bool from_peer, bool resync);
  bool must_wait(std::pair<uint64_t, uint64_t> range);
  void admit(uint64_t id);
  void issue(uint64_t id, bool from_window = false);
  void issued_done(uint64_t id, disk_completion& c);
  void apply(uint64_t id, const write_tracker::outcome& o);
  void local_finished(uint64_t id, uint32_t error);
  void cover_local_failure(uint64_t id, uint32_t error);
  void finish_write(uint64_t id, bool remote_failed);
  void mark_busy(const nbd::request& r, int delta);
  bool window_full() const;
  void pump_window();
  void read(nbd::request r, nbd::reply_sink_ptr sink, bool from_peer);
  void client_read(nbd::request r, nbd::reply_sink_ptr sink);
  void read_for_primary(nbd::request r, nbd::reply_sink_ptr sink);
  void start_read_for_primary(uint64_t id);
  void io_done();
  void start_round();
  void end_round(uint64_t round, bool ok, uint64_t sequence, bool again = true);
  void admit_after_commit(bool ok);
  void count_error(const nbd::request& r);

  std::string name_;
  bool standalone_;
  bool metaflush_ = true;
  replication_policy policy_;
  steering& control_;

  metadata md_;
  std::optional<activemap> map_;
  map_commit commit_;
  uint64_t round_serial_ = 0;  // numbers every round across opens
  std::vector<map_waiter> map_waiters_;

  uint64_t next_id_ = 1;
  write_tracker writes_;
  std::unordered_map<uint64_t, client_write> calls_;  // by id, until finished
  std::unordered_map<uint64_t, uint32_t> busy_;       // extent -> client writes in flight
  std::vector<uint64_t> deferred_;                    // ids waiting for an interlock
  // Secondary: the primary's reads, by id (the write tracker's id space),
  // until their disk read is submitted; they wait there for earlier
  // overlapping writes from the primary.
  std::unordered_map<uint64_t, std::pair<nbd::request, nbd::reply_sink_ptr>> peer_reads_;
  // The replication window (fullsync, memsync): client writes sent to the
  // secondary and not yet written there, and the writes waiting for room.
  std::unordered_map<uint64_t, uint64_t> remote_open_;  // id -> payload bytes
  uint64_t remote_open_bytes_ = 0;
  std::deque<uint64_t> throttled_;

  uint64_t next_tag_ = 1;
  std::unordered_map<uint64_t, disk_continuation> disk_waiting_;  // tag -> what to do
  output out_;

  uint64_t in_flight_ = 0;
  std::chrono::steady_clock::time_point last_client_io_{};
  resource_counters counters_;
  std::array<latency_histogram, io_op_count> client_latency_;
  latency_histogram replication_latency_;
};

} // namespace hast
