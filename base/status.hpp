#pragma once

// What a resource reports about itself: the data behind `hastctl status`,
// `list` and their --json form. Plain data, no CAF, so hastctl can share it.

#include "base/kinds.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace hast {

struct resource_counters {
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t deletes = 0;
  uint64_t flushes = 0;
  uint64_t activemap_updates = 0;
  uint64_t read_errors = 0;
  uint64_t write_errors = 0;
  uint64_t delete_errors = 0;
  uint64_t flush_errors = 0;
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;    // write and write_zeroes
  uint64_t delete_bytes = 0;   // trim
  uint64_t remote_errors = 0;  // replicated requests the secondary failed or the link lost
};

/// A latency distribution as Prometheus histograms count it: fixed bucket
/// bounds (seconds), a count per bucket (not cumulative), the sum. One
/// observation is a few compares; the resource actor keeps its own.
struct latency_histogram {
  static constexpr std::array<double, 17> bounds = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  std::array<uint64_t, bounds.size() + 1> counts{};  // the last: above every bound
  uint64_t count = 0;
  double sum = 0;  // seconds

  void observe(std::chrono::steady_clock::duration d) {
    const double seconds = std::chrono::duration<double>(d).count();
    size_t i = 0;
    while (i < bounds.size() && seconds > bounds[i])
      ++i;
    ++counts[i];
    ++count;
    sum += seconds;
  }
};

/// The client operations counted apart (write_zeroes counts as write).
enum class io_op : uint8_t { read, write, trim, flush };
inline constexpr size_t io_op_count = 4;
inline constexpr std::array<const char*, io_op_count> io_op_names = {"read", "write", "trim", "flush"};

struct sync_progress {
  bool active = false;
  std::string direction;  // "primary->secondary", "secondary->primary" or ""
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t bytes_per_second = 0;
};

/// An online verify (hastctl verify): the running one, or the last one.
struct verify_progress {
  bool active = false;
  bool repair = false;             // differences are copied from the primary as found
  std::string outcome = "none";    // "none", "running", "complete", "stopped" or "interrupted"
  uint64_t done_bytes = 0;         // compared so far (skipped bytes included)
  uint64_t total_bytes = 0;
  uint64_t skipped_bytes = 0;      // extents waiting for a resync: known to differ, not compared
  uint64_t bytes_per_second = 0;
  uint64_t eta_seconds = 0;
  uint32_t block_size = 0;
  uint64_t differing_blocks = 0;
  uint64_t repaired_bytes = 0;     // differing bytes copied from the primary
  struct range {
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  std::vector<range> differences;  // data-region byte ranges, adjacent blocks merged
  bool differences_truncated = false;
};

/// At most this many differing ranges are kept and listed (all are logged).
inline constexpr size_t verify_ranges_listed = 1000;

struct resource_status {
  std::string name;
  /// errno-style number of a failure to report on this resource (hastctl
  /// prints FreeBSD's "ERR<n>" row); 0 when the fields below are valid.
  int error = 0;
  std::string provider_name;
  role current_role = role::init;
  std::string status;        // "complete", "degraded" or "-" (init), as FreeBSD's
  uint64_t workerpid = 0;    // the hastd serving the resource; 0 in role init
  bool connected = false;
  std::string local;
  std::string remote;
  std::string source;
  std::string nbd;
  replication_mode replication = replication_mode::memsync;
  checksum_kind checksum = checksum_kind::none;
  compression_kind compression = compression_kind::hole;
  uint64_t datasize = 0;
  uint32_t extent_size = 0;
  uint32_t keepdirty = 0;
  uint64_t dirty_bytes = 0;
  uint64_t synced_bytes = 0;  // copied by resyncs since the daemon started
  bool split_brain = false;
  uint64_t nbd_connections = 0;
  uint64_t queue_local = 0;  // requests at the local disk
  uint64_t queue_send = 0;   // requests waiting to go to the peer
  uint64_t queue_recv = 0;   // requests waiting for the peer's answer
  uint64_t queue_done = 0;   // requests finished, waiting to be answered
  uint64_t queue_idle = 0;   // free request slots
  /// The local disk failed writes; they complete on the secondary.
  bool local_failing = false;
  std::string device;        // "/dev/hast/<name> -> /dev/loop3"; empty when none
  std::string device_error;  // why there is no device; empty when none is wanted or it exists
  // Automatic failover (docs/FAILOVER.md).
  std::string failover = "manual";     // "manual" or "auto"
  bool witness_node = false;           // this node is the resource's witness (role "witness")
  std::string witness;                 // data node, auto: "connected" or "disconnected"
  std::string witness_address;
  std::string lease;                   // "held", "waiting", "lost" or "none"
  uint64_t lease_remaining_ms = 0;
  std::string lease_holder;            // the holder the witness last named ("" if none)
  uint64_t lease_epoch = 0;
  uint64_t lease_waiting_writes = 0;   // primary, auto: writes held until the lease returns
  uint64_t lease_waiting_reads = 0;    // primary, auto: reads held until the lease returns
  bool eligible = false;               // a secondary the witness would promote
  std::string eligibility;             // why it is or is not
  std::vector<std::string> members_connected;  // witness node: data nodes with a link now
  sync_progress sync;
  verify_progress verify;
  resource_counters counters;
  // Latencies since the daemon started (for /metrics; not in the JSON form).
  std::array<latency_histogram, io_op_count> client_latency;  // arrival to answer, by io_op
  latency_histogram replication_latency;  // write sent to the secondary until written there
  std::string last_error;    // why the resource could not take its role, if so
};

nlohmann::json to_json(const resource_status& x);
resource_status status_from_json(const nlohmann::json& j);

} // namespace hast
