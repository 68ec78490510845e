#pragma once

// The vocabulary of hastd: every atom, message struct and typed actor
// interface, and the one place that registers them. Reading this file alone
// tells a newcomer how the daemon talks.
//
//   supervisor ──role/status/reload/stop──▶ resource ──read/write/flush──▶ disk_io (×N, detached)
//        ▲                                     ▲  └──────metadata─────────▶ disk_io (metadata writer)
//   control thread (Unix socket)          NBD sessions (Asio threads)
//
// Messages carrying callbacks or shared buffers never leave the process; they
// are registered as local-only ("unsafe") types.

#include "config/config.hpp"
#include "io/buffer.hpp"
#include "io/metadata.hpp"
#include "io/nbd_backend.hpp"
#include "io/peer_protocol.hpp"
#include "messages/replication.hpp"
#include "messages/errc.hpp"
#include "messages/status.hpp"

#include <caf/all.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hast {

/// One NBD request from a session to the resource actor. The completion runs
/// on the resource actor's thread; the NBD server re-posts it to its strand.
struct nbd_call {
  enum class op : uint8_t { read, write, flush, trim, write_zeroes };
  op kind = op::read;
  uint64_t offset = 0;
  uint32_t length = 0;
  bool fua = false;
  bool may_trim = false;
  buffer_ptr data;             // the write payload, shared, never copied
  nbd::done_fn done;           // completion of everything but reads
  nbd::read_done_fn read_done; // completion of reads
  bool from_peer = false;      // replicated by the primary (secondary role only)
};

/// A session asks to use the export.
struct nbd_open_call {
  std::function<void(nbd::open_result)> done;
};

/// The outcome of a role change for one resource.
struct role_outcome {
  std::string resource;
  role previous = role::init;
  std::string error;  // empty on success
};

/// A role change request as hastctl sends it.
struct role_request {
  role target = role::init;
  std::vector<std::string> resources;  // or {"all"}
  bool force = false;
};

/// The connection to the other node, as the peer actor sees it. The real one
/// wraps an Asio TCP connection (io/peer_transport.hpp); tests script one.
using frame_fn = std::function<void(const peer::header&, buffer_ptr payload)>;
using close_fn = std::function<void(const std::string& reason)>;

class peer_link {
public:
  virtual ~peer_link() = default;
  /// Begins delivering frames; `on_close` runs exactly once.
  virtual void start(frame_fn on_frame, close_fn on_close) = 0;
  virtual void send(const peer::header& h, buffer_ptr payload) = 0;
  virtual void close(const std::string& reason) = 0;
  virtual uint64_t queued_bytes() const = 0;
  virtual std::string remote_address() const = 0;
};
using peer_link_ptr = std::shared_ptr<peer_link>;

/// A frame from the link, tagged with the link's epoch so that frames of a
/// replaced connection are recognised and dropped.
struct peer_frame {
  uint64_t epoch = 0;
  peer::header h;
  buffer_ptr payload;
};

/// A connection the listener accepted for this resource, with its hello.
struct accepted_link {
  peer_link_ptr link;
  peer::hello_message hello;
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
  CAF_ADD_ATOM(hast, hast::atom, metadata, "hmetadata")
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
  CAF_ADD_ATOM(hast, hast::atom, release, "hrelease")
  CAF_ADD_ATOM(hast, hast::atom, sync_done, "hsyncdone")
  CAF_ADD_ATOM(hast, hast::atom, split_brain, "hsplit")
  CAF_ADD_ATOM(hast, hast::atom, resync, "hresync")
  CAF_ADD_ATOM(hast, hast::atom, sync_tick, "hsynctick")
CAF_END_TYPE_ID_BLOCK(hast)

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::buffer_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::metadata)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::nbd_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::nbd_open_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::role)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::role_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::role_outcome)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<hast::role_outcome>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::resource_status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<hast::resource_status>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::resource_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::node_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_frame)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_link_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::accepted_link)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::replicate_call)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_session)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer_status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::peer::hello_message)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::remote_stage)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(hast::status)

CAF_ERROR_CODE_ENUM(hast::errc, "hast")

namespace hast {

/// Blocking provider I/O, off the CAF scheduler (spawned detached). Several
/// run per resource so that a queue depth of 32 gives real concurrency.
using disk_io_actor = caf::typed_actor<
  // Reads `length` bytes at data offset `offset`.
  caf::replies_to<atom::read, uint64_t, uint32_t>::with<buffer_ptr>,
  // Writes the buffer at `offset`; with `fua` it is on stable storage on return.
  caf::replies_to<atom::write, uint64_t, buffer_ptr, bool>::with<uint64_t>,
  // Makes every completed write durable (fdatasync).
  caf::replies_to<atom::flush>::with<uint64_t>,
  // Discards [offset, offset + length): hole punch or BLKDISCARD.
  caf::replies_to<atom::discard, uint64_t, uint64_t>::with<uint64_t>,
  // Writes zeroes over [offset, offset + length), punching a hole if allowed.
  caf::replies_to<atom::zeroes, uint64_t, uint64_t, bool>::with<uint64_t>,
  // Persists metadata and activemap (crash-safe slot switch), then flushes
  // if asked; answers the sequence number written.
  caf::replies_to<atom::metadata, metadata, bool>::with<uint64_t>>;

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
  // An NBD request; completes through its callback.
  caf::reacts_to<atom::nbd, nbd_call>,
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
  // An acknowledgement for replicated request `id`; `error` is an errc.
  caf::reacts_to<atom::remote_ack, uint64_t, remote_stage, uint32_t>,
  // Secondary: the primary's generation is `localcnt` and we hold its data
  // up to it; with `complete`, a resync just finished (nothing here is dirty).
  caf::reacts_to<atom::sync_done, uint64_t, bool>,
  // Primary: the secondary refused us because both were written apart.
  caf::reacts_to<atom::split_brain>,
  // hastctl resync --discard-local: this secondary gives up its own changes
  // at the next handshake and takes the primary's.
  caf::replies_to<atom::resync>::with<bool>,
  // The resync rate limit (`syncrate`) allows the next extent now.
  caf::reacts_to<atom::sync_tick>>;

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
  // A frame arrived on the link.
  caf::reacts_to<atom::peer_frame, peer_frame>,
  // The link closed (epoch, reason).
  caf::reacts_to<atom::peer_closed, uint64_t, std::string>,
  // Primary: send a request to the secondary; acks go to the resource.
  caf::reacts_to<atom::replicate, replicate_call>,
  // Primary: read from the secondary (a failed local read, or a sync from it).
  caf::replies_to<atom::remote_read, uint64_t, uint32_t>::with<buffer_ptr>,
  // Secondary: a request the resource finished; frees its range (id).
  caf::reacts_to<atom::release, uint64_t>,
  // Primary: tell the secondary our generation; `complete`: after a resync.
  caf::reacts_to<atom::sync_done, uint64_t, bool>,
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
  // The peer listener accepted a connection; route it to its resource.
  caf::reacts_to<atom::peer_accept, accepted_link>,
  // hastctl resync --discard-local: one outcome per named resource.
  caf::replies_to<atom::resync, std::vector<std::string>>::with<std::vector<role_outcome>>>;

} // namespace hast
