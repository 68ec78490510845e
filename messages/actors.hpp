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
  caf::reacts_to<atom::nbd_close>>;

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
  caf::replies_to<atom::stop>::with<bool>>;

} // namespace hast
