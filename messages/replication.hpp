#pragma once

// A replication mode is an acknowledgement protocol: which acknowledgements
// complete a client's write. The data plane (actors/data_plane.cpp, with the
// write tracker) consults this table; it has no per-mode branches of its own.
//
//   mode      client sees completion after            wire flag      queue
//   fullsync  local write + secondary's "done"        -              the replication window:
//   memsync   local write + secondary's "received"    memsync        1024 requests / 64 MiB not
//                                                                     yet written there; further
//                                                                     writes wait for room
//   async     local write                             -              bounded bytes in flight:
//                                                                     overflow marks extents
//                                                                     dirty instead
//
// In every mode the extent leaves the activemap only after the secondary's
// "done" (or is kept for resync when that never comes).

#include "base/kinds.hpp"

#include <cstdint>

namespace hast {

/// The acknowledgements a replicated write can collect.
enum class remote_stage : uint8_t { received, written, failed };

struct replication_policy {
  bool ask_received;     // request a "received" acknowledgement (memsync)
  bool wait_received;    // the client waits for "received"
  bool wait_written;     // the client waits for "written"
  bool bounded_queue;    // overflow degrades to dirty extents instead of waiting

  /// Does this acknowledgement complete the remote part for the client?
  bool satisfies(remote_stage stage) const {
    if (stage == remote_stage::failed)
      return true;  // the extent stays dirty; the local write stands
    if (stage == remote_stage::written)
      return true;
    return wait_received;  // received
  }
  bool client_waits() const { return wait_received || wait_written; }
};

constexpr replication_policy policy_for(replication_mode mode) {
  switch (mode) {
    case replication_mode::fullsync: return {false, false, true, false};
    case replication_mode::memsync: return {true, true, false, false};
    case replication_mode::async: return {false, false, false, true};
  }
  return {false, false, true, false};
}

/// Bound of async replication: payload bytes sent to the secondary and not
/// yet written there (so it bounds the send queue and the secondary's
/// backlog alike).
inline constexpr uint64_t async_queue_limit = 64u << 20;

} // namespace hast
