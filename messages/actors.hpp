#pragma once

// The vocabulary of hastd: every atom, message struct and typed actor
// interface, and the one place that registers them. Reading this file alone
// tells a newcomer how the daemon talks.
//
//   control socket ──▶ supervisor ──role/status/reload/stop──▶ resource (control plane,
//   (daemon.cpp)        │    ▲                                   │   steering its data plane)
//                       │    └── failover requests (lease) ──────┤
//                       ▼                                        ├──▶ disk_io (io_uring: data and
//                  event hub ◀── state changes (every actor) ───┤        metadata slot writes)
//                  (hastctl events)                              ├──▶ peer (the other node:
//                                                                │        replicated requests,
//   witness (role witness: grants the lease) ◀── witness_link ◀──┘        acknowledgements)
//
// NBD sessions hand the resource batches of requests; the resource, its
// disk_io and its peer run on the resource's data thread
// (actors/data_thread.hpp), the rest on CAF's workers.
//
// Every data-path message carries a batch: an NBD session hands over every
// request it decoded from one read, the disk answers with every completion
// of one reap. A lone request is a batch of one and waits for no company.
//
// Messages carrying callbacks or shared buffers never leave the process; they
// are registered as local-only ("unsafe") types.

#include "config/config.hpp"
#include "io/codec/block_hash.hpp"
#include "io/codec/buffer.hpp"
#include "io/storage/disk_engine.hpp"
#include "io/storage/metadata.hpp"
#include "io/net/nbd_backend.hpp"
#include "io/net/peer_link.hpp"
#include "io/net/peer_protocol.hpp"
#include "messages/replication.hpp"
#include "base/errc.hpp"
#include "base/events.hpp"
#include "base/status.hpp"

#include <caf/all.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hast {

/// Requests for the resource: what an NBD session decoded from one read, or
/// what the secondary's peer received from the primary. Each request is
/// answered exactly once through `sink`; the resource gathers the replies of
/// one activation into one deliver() per sink.
struct nbd_batch {
  std::vector<nbd::request> requests;
  nbd::reply_sink_ptr sink;
  bool from_peer = false;  // replicated by the primary (secondary role only)
  // from_peer: resynchronisation data. The activemap does not mark it: the
  // primary keeps the extent dirty until the secondary's `done`, so a crash
  // here loses nothing the primary would not send again.
  bool resync = false;
};

/// Operations for the disk, and what the disk finished (one reap).
using disk_batch = std::vector<disk_op>;
using disk_results = std::vector<disk_completion>;

/// A session asks to use the export.
struct nbd_open_call {
  std::function<void(nbd::open_result)> done;
};

/// The error numbers hastd answers for one resource of a request that names
/// several (hastctl exits with the first, as FreeBSD's does): FreeBSD's
/// EHAST_NOENTRY for a name that is not configured, EHAST_INVALID for a
/// request that does not apply to the resource; other failures carry an
/// errno value (resource_status::error likewise).
inline constexpr int ehast_noentry = 1;
inline constexpr int ehast_invalid = 2;

/// The outcome of a role change for one resource.
struct role_outcome {
  std::string resource;
  role previous = role::init;
  std::string error;      // empty on success
  int error_number = 0;   // with `error`: see ehast_noentry
};

/// What hastctl verify started or stopped on one resource.
struct verify_outcome {
  std::string resource;
  std::string message;    // on success: what happened, one line
  std::string error;      // empty on success
  int error_number = 0;   // with `error`: see ehast_noentry
};

/// A role change request as hastctl sends it.
struct role_request {
  role target = role::init;
  std::vector<std::string> resources;  // or {"all"}
  bool force = false;
};

/// The frames of one read from the link, tagged with the link's epoch so
/// that frames of a replaced connection are recognised and dropped.
struct peer_frames {
  uint64_t epoch = 0;
  std::vector<peer::frame> frames;
};

/// A connection the listener accepted for this resource, with its hello.
struct accepted_link {
  peer_link_ptr link;
  peer::hello_message hello;
};

/// A control connection handed to the event hub after the control server
/// confirmed its `events` request; the hub owns `fd` from then on.
struct event_subscriber {
  int fd = -1;
  std::vector<std::string> resources;  // empty: every resource
};

/// Primary → peer: one request for the secondary. `id` comes back in acks.
struct replicate_call {
  uint64_t id = 0;
  peer::msg_type type = peer::msg_type::write;
  uint16_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  buffer_ptr data;
};

/// Requests for the secondary gathered during one activation of the resource.
using replicate_batch = std::vector<replicate_call>;

/// One acknowledgement from the secondary; `error` is an errc.
struct remote_ack_item {
  uint64_t id = 0;
  remote_stage stage = remote_stage::written;
  uint32_t error = 0;
};
/// Every acknowledgement of one batch of frames, in arrival order.
using remote_acks = std::vector<remote_ack_item>;

/// What the peer reports to the resource once the handshake is complete.
struct peer_session {
  peer::hello_message theirs;  // the other side's hello or hello_reply
  std::string remote_address;
};

/// The peer's view, for status and list.
struct peer_status {
  bool connected = false;
  std::string remote_address;
  std::string last_error;
  uint64_t queued_bytes = 0;
  uint64_t in_flight = 0;
};

} // namespace hast

CAF_BEGIN_TYPE_ID_BLOCK(hast, caf::first_custom_type_id)
  // Atom texts are unique across the project (CAF 0.17: same text, same type).
  CAF_ADD_ATOM(hast, hast::atom, read, "hread")
  CAF_ADD_ATOM(hast, hast::atom, write, "hwrite")
  CAF_ADD_ATOM(hast, hast::atom, flush, "hflush")
  CAF_ADD_ATOM(hast, hast::atom, discard, "hdiscard")
  CAF_ADD_ATOM(hast, hast::atom, zeroes, "hzeroes")
  CAF_ADD_ATOM(hast, hast::atom, role, "hrole")
  CAF_ADD_ATOM(hast, hast::atom, status, "hstatus")
  CAF_ADD_ATOM(hast, hast::atom, reload, "hreload")
  CAF_ADD_ATOM(hast, hast::atom, stop, "hstop")
  CAF_ADD_ATOM(hast, hast::atom, nbd, "hnbd")
  CAF_ADD_ATOM(hast, hast::atom, nbd_open, "hnbdopen")
  CAF_ADD_ATOM(hast, hast::atom, nbd_close, "hnbdclose")
  CAF_ADD_ATOM(hast, hast::atom, configure, "hconfig")
  CAF_ADD_ATOM(hast, hast::atom, peer_frame, "hpframe")
  CAF_ADD_ATOM(hast, hast::atom, peer_closed, "hpclosed")
  CAF_ADD_ATOM(hast, hast::atom, peer_accept, "hpaccept")
  CAF_ADD_ATOM(hast, hast::atom, peer_connected, "hpconn")
  CAF_ADD_ATOM(hast, hast::atom, peer_up, "hpup")
  CAF_ADD_ATOM(hast, hast::atom, peer_down, "hpdown")
  CAF_ADD_ATOM(hast, hast::atom, peer_hello, "hphello")
  CAF_ADD_ATOM(hast, hast::atom, connect, "hpconnect")
  CAF_ADD_ATOM(hast, hast::atom, replicate, "hrepl")
  CAF_ADD_ATOM(hast, hast::atom, remote_ack, "hrack")
  CAF_ADD_ATOM(hast, hast::atom, remote_read, "hrread")
  CAF_ADD_ATOM(hast, hast::atom, sync_done, "hsyncdone")
  CAF_ADD_ATOM(hast, hast::atom, split_brain, "hsplit")
  CAF_ADD_ATOM(hast, hast::atom, resync, "hresync")
  CAF_ADD_ATOM(hast, hast::atom, sync_tick, "hsynctick")
  CAF_ADD_ATOM(hast, hast::atom, submit, "hsubmit")
  CAF_ADD_ATOM(hast, hast::atom, disk_done, "hdiskdone")
  CAF_ADD_ATOM(hast, hast::atom, commit_tick, "hcommtick")
  CAF_ADD_ATOM(hast, hast::atom, verify, "hverify")
  CAF_ADD_ATOM(hast, hast::atom, verify_range, "hvrange")
  CAF_ADD_ATOM(hast, hast::atom, verify_tick, "hvtick")
  CAF_ADD_ATOM(hast, hast::atom, range_digests, "hrdigests")
  CAF_ADD_ATOM(hast, hast::atom, restart, "hrestart")
  CAF_ADD_ATOM(hast, hast::atom, serving, "hserving")
  CAF_ADD_ATOM(hast, hast::atom, device, "hdevice")
  CAF_ADD_ATOM(hast, hast::atom, lease, "hlease")
  CAF_ADD_ATOM(hast, hast::atom, lease_tick, "hleasetick")
  CAF_ADD_ATOM(hast, hast::atom, lease_link, "hleaselink")
  CAF_ADD_ATOM(hast, hast::atom, failover, "hfailover")
  CAF_ADD_ATOM(hast, hast::atom, witness_accept, "hwaccept")
  CAF_ADD_ATOM(hast, hast::atom, event, "hevent")
  CAF_ADD_ATOM(hast, hast::atom, subscribe, "hsubscr")
  CAF_ADD_ATOM(hast, hast::atom, events_tick, "hevtick")
  CAF_ADD_ATOM(hast, hast::atom, export_closed, "hexpclosed")
  CAF_ADD_ATOM(hast, hast::atom, grow, "hgrow")
CAF_END_TYPE_ID_BLOCK(hast)

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::buffer_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::nbd_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::disk_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::disk_results)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::nbd_open_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::role)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::role_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::role_outcome)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<hast::role_outcome>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::resource_status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<hast::resource_status>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::resource_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::node_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_frames)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_link_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::accepted_link)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::replicate_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::replicate_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::remote_acks)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_session)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer::hello_message)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::remote_stage)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::block_hashes)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::block_digests)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::verify_outcome)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer::lease_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer::lease_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<hast::verify_outcome>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::event_record)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::event_subscriber)

CAF_ERROR_CODE_ENUM(hast::errc, "hast")

namespace hast {

/// The event stream (actors/events.hpp): state changes in, subscribers' sockets out.
using event_hub_actor = caf::typed_actor<
  // A resource's state change.
  caf::reacts_to<atom::event, event_record>,
  // A control connection that asked for the stream (event_subscriber).
  caf::reacts_to<atom::subscribe, event_subscriber>,
  // Looks for subscribers that hung up.
  caf::reacts_to<atom::events_tick>>;

/// The data disk of one resource: owns an io_uring (or, where the kernel
/// refuses one, a small thread pool) and never blocks. Offsets are in the
/// data region; completions go to the resource as `disk_done`, one message
/// per reap, tagged as submitted.
using disk_io_actor = caf::typed_actor<
  // Issues every operation of the batch (io_uring: one io_uring_submit).
  caf::reacts_to<atom::submit, disk_batch>,
  // Online growth: the data area now holds this many bytes.
  caf::reacts_to<atom::grow, uint64_t>>;


/// One replicated resource: owns its role, metadata, activemap and counters.
using resource_actor = caf::typed_actor<
  // Changes the role; `force` overrides the refusal to demote with clients
  // attached. Answers the previous role.
  caf::replies_to<atom::role, role, bool>::with<role>,
  // Reports status and counters.
  caf::replies_to<atom::status>::with<resource_status>,
  // Applies a changed configuration (only live-changeable options differ).
  caf::replies_to<atom::configure, resource_config>::with<bool>,
  // Stops serving: fails new I/O, drains in-flight I/O, flushes, persists.
  caf::replies_to<atom::stop>::with<bool>,
  // An NBD client asks to use the export.
  caf::reacts_to<atom::nbd_open, nbd_open_call>,
  // Requests from an NBD session or the peer; answered through the sink.
  caf::reacts_to<atom::nbd, nbd_batch>,
  // What the disk finished since its last report.
  caf::reacts_to<atom::disk_done, disk_results>,
  // Time to write activemap changes that no write waited for.
  caf::reacts_to<atom::commit_tick>,
  // An NBD client that had opened the export is gone.
  caf::reacts_to<atom::nbd_close>,
  // The listener accepted a connection naming this resource.
  caf::reacts_to<atom::peer_accept, accepted_link>,
  // Secondary: the primary's hello; answers the hello_reply to send
  // (a refusal carries its reason).
  caf::replies_to<atom::peer_hello, peer::hello_message>::with<peer::hello_message>,
  // Primary: the counters and identity to put into our hello.
  caf::replies_to<atom::peer_hello>::with<peer::hello_message>,
  // The handshake is complete.
  caf::reacts_to<atom::peer_up, peer_session>,
  // The connection is gone (reason).
  caf::reacts_to<atom::peer_down, std::string>,
  // Acknowledgements of replicated requests, in arrival order.
  caf::reacts_to<atom::remote_ack, remote_acks>,
  // Secondary: the primary's generation is `localcnt` and we hold its data
  // up to it; with `complete`, a resync just finished (nothing here is dirty).
  caf::reacts_to<atom::sync_done, uint64_t, bool>,
  // Primary: the secondary refused us because both were written apart.
  caf::reacts_to<atom::split_brain>,
  // hastctl resync --discard-local: this secondary gives up its own changes
  // at the next handshake and takes the primary's.
  caf::replies_to<atom::resync>::with<bool>,
  // The resync rate limit (`syncrate`) allows the next extent now.
  caf::reacts_to<atom::sync_tick>,
  // Primary: hastctl verify; starts (`repair`: copying each difference
  // from here) or, with `stop`, stops an online verify. Answers one line.
  caf::replies_to<atom::verify, bool, bool>::with<std::string>,
  // Secondary: the block hashes of a data-region range, read once no write
  // to it is in flight.
  caf::replies_to<atom::verify_range, uint64_t, uint32_t>::with<block_hashes>,
  // Secondary: the SHA-256 of each block of a range, for the checksum
  // resync; read once no write to it is in flight.
  caf::replies_to<atom::range_digests, uint64_t, uint32_t>::with<block_digests>,
  // The rate limit (`syncrate`) allows the next verified extent now.
  caf::reacts_to<atom::verify_tick>,
  // /dev/hast/<name> was made or removed off the actor's threads: (epoch,
  // "made" or "removed", the device, the error or "").
  caf::reacts_to<atom::device, uint64_t, std::string, std::string, std::string>,
  // failover auto: the link to the witness came up (true) or went (false, why).
  caf::reacts_to<atom::lease_link, bool, std::string>,
  // failover auto: time to renew the lease (primary) or claim it (secondary).
  caf::reacts_to<atom::lease_tick>,
  // Primary: hastctl grow [--assume-clean]: grows the secondary, then this
  // node, to what the providers now hold (docs/METADATA.md, "Online
  // growth"). Answers one line.
  caf::replies_to<atom::grow, bool>::with<std::string>,
  // Secondary: the primary grows the resource to this data size; answers
  // the data size now, once it is in the metadata on disk.
  caf::replies_to<atom::grow, uint64_t>::with<uint64_t>>;

/// failover auto, on a data node: the link to the witness. Connects,
/// authenticates both ways, and carries the resource's lease requests;
/// tells the resource when the link comes and goes (lease_link).
using witness_link_actor = caf::typed_actor<
  caf::reacts_to<atom::connect>,
  caf::reacts_to<atom::peer_connected, uint64_t, status, peer_link_ptr>,
  caf::reacts_to<atom::peer_frame, peer_frames>,
  caf::reacts_to<atom::peer_closed, uint64_t, std::string>,
  // Asks the witness; fails with errc::disconnected without a link.
  caf::replies_to<atom::lease, peer::lease_request>::with<peer::lease_reply>>;

/// The witness node's arbiter: one lease record per resource it witnesses,
/// kept in a state file; answers the data nodes' lease requests.
using witness_actor = caf::typed_actor<
  // A connection whose first frame was witness_hello.
  caf::reacts_to<atom::peer_accept, accepted_link>,
  // Frames of one link (peer_frames.epoch is the link's number).
  caf::reacts_to<atom::peer_frame, peer_frames>,
  caf::reacts_to<atom::peer_closed, uint64_t, std::string>,
  // The status of one witnessed resource.
  caf::replies_to<atom::status, std::string>::with<resource_status>,
  // SIGHUP: the witnessed resources of the new configuration.
  caf::reacts_to<atom::configure, node_config>>;

/// The link to the other node for one resource: connects (primary) or
/// accepts (secondary), authenticates, shakes hands, moves frames, and on
/// the primary keeps the queue of requests awaiting the secondary's
/// acknowledgement (the sync queue).
using peer_actor = caf::typed_actor<
  // Primary: time to (re)connect.
  caf::reacts_to<atom::connect>,
  // Primary: the outcome of a connection attempt.
  caf::reacts_to<atom::peer_connected, uint64_t, status, peer_link_ptr>,
  // Secondary: a connection the listener accepted for us.
  caf::reacts_to<atom::peer_accept, accepted_link>,
  // Frames arrived on the link (one read's worth).
  caf::reacts_to<atom::peer_frame, peer_frames>,
  // The link closed (epoch, reason).
  caf::reacts_to<atom::peer_closed, uint64_t, std::string>,
  // Primary: send requests to the secondary; acks go to the resource.
  caf::reacts_to<atom::replicate, replicate_batch>,
  // Primary: read from the secondary (a failed local read, or a sync from it).
  caf::replies_to<atom::remote_read, uint64_t, uint32_t>::with<buffer_ptr>,
  // Primary: tell the secondary our generation; `complete`: after a resync.
  caf::reacts_to<atom::sync_done, uint64_t, bool>,
  // Primary: the secondary's block hashes of a range (online verify).
  caf::replies_to<atom::verify_range, uint64_t, uint32_t>::with<block_hashes>,
  // Primary: the secondary's block digests of a range (checksum resync).
  caf::replies_to<atom::range_digests, uint64_t, uint32_t>::with<block_digests>,
  // Primary: asks the secondary to grow to this data size (online
  // growth); answers its data size now, or its refusal.
  caf::replies_to<atom::grow, uint64_t>::with<uint64_t>,
  // Reports the link's state.
  caf::replies_to<atom::status>::with<peer_status>>;

/// Owns the resources: spawns, monitors and restarts them, changes roles,
/// applies reloads and shuts them down in order.
using supervisor_actor = caf::typed_actor<
  // hastctl role: answers one outcome per named resource.
  caf::replies_to<atom::role, role_request>::with<std::vector<role_outcome>>,
  // hastctl status/list: the named resources (empty or "all": every one).
  caf::replies_to<atom::status, std::vector<std::string>>::with<std::vector<resource_status>>,
  // SIGHUP: a freshly parsed configuration; answers a summary line.
  caf::replies_to<atom::reload, node_config>::with<std::string>,
  // SIGTERM/SIGINT: stop every resource in order; answers when done.
  caf::replies_to<atom::stop>::with<bool>,
  // Which actor serves the resource now: its address; null while a restart
  // waits for its back-off, and for a name that is no resource here.
  caf::replies_to<atom::serving, std::string>::with<caf::actor_addr>,
  // The peer listener accepted a connection; route it to its resource.
  caf::reacts_to<atom::peer_accept, accepted_link>,
  // hastctl resync --discard-local: one outcome per named resource.
  caf::replies_to<atom::resync, std::vector<std::string>>::with<std::vector<role_outcome>>,
  // hastctl verify [--repair|--stop]: one outcome per named resource.
  caf::replies_to<atom::verify, std::vector<std::string>, bool, bool>::with<
    std::vector<verify_outcome>>,
  // A resource that failed is due to be started again (back-off elapsed).
  caf::reacts_to<atom::restart, std::string>,
  // failover auto: a resource asks to change its own role (the witness
  // granted it the lease, or it lost it): name, target role, why.
  caf::reacts_to<atom::failover, std::string, role, std::string>,
  // The peer listener accepted a connection for the witness.
  caf::reacts_to<atom::witness_accept, accepted_link>,
  // hastctl grow [--assume-clean]: one outcome per named resource.
  caf::replies_to<atom::grow, std::vector<std::string>, bool>::with<
    std::vector<verify_outcome>>,
  // The resource actor at this address is gone and its NBD export has
  // stopped listening: a reload restart may now start its replacement.
  caf::reacts_to<atom::export_closed, caf::actor_addr>>;

} // namespace hast
