#pragma once

// The witness's decisions for one resource, as a plain class: who holds the
// lease, until when, and whether the other node may take it over. No
// actors, no sockets, no files: the witness actor feeds it requests with
// the time they arrived and persists the record when it changes; tests
// drive it directly. The rules and why they are safe: docs/FAILOVER.md.

#include "io/net/peer_protocol.hpp"

#include <chrono>
#include <cstdint>
#include <string>

namespace hast {

/// What the witness must not forget across a restart.
struct lease_record {
  std::string holder;     // the node that holds (or last held) the lease; empty: none ever
  uint64_t epoch = 0;     // rises with every grant to a claimant
  uint64_t resuid = 0;    // the resource id the holder reported
  uint64_t localcnt = 0;  // the holder's generation, as last reported
  bool in_sync = false;   // the holder's last report: its secondary holds every acknowledged write

  bool operator==(const lease_record&) const = default;
};

class lease_book {
public:
  using clock = std::chrono::steady_clock;

  /// `lease`: how long a grant lasts (the resource's timeout). The margin,
  /// a quarter of it, covers clock-rate differences between the nodes.
  /// `started`: when this witness started; it grants nothing to a claimant
  /// before started + lease + margin, so that leases it granted before a
  /// restart have run out.
  lease_book(std::chrono::milliseconds lease, lease_record record, clock::time_point started);

  /// Decides a request that arrived at `now`. `changed` is set when the
  /// record changed and must be made durable before the reply is sent.
  peer::lease_reply decide(const peer::lease_request& req, clock::time_point now, bool& changed);

  const lease_record& record() const { return record_; }
  /// Time left on the current lease (zero when it ran out or there is none).
  std::chrono::milliseconds remaining(clock::time_point now) const;
  std::chrono::milliseconds lease() const { return lease_; }
  std::chrono::milliseconds margin() const { return margin_; }
  void set_lease(std::chrono::milliseconds lease);

private:
  peer::lease_reply renew(const peer::lease_request& req, clock::time_point now, bool& changed);
  peer::lease_reply claim(const peer::lease_request& req, clock::time_point now, bool& changed);
  peer::lease_reply release(const peer::lease_request& req, clock::time_point now, bool& changed);
  peer::lease_reply refuse(std::string reason) const;
  peer::lease_reply grant(clock::time_point now);
  /// Why `req`'s node may not take the lease automatically ("" if it may).
  std::string ineligible(const peer::lease_request& req) const;

  std::chrono::milliseconds lease_;
  std::chrono::milliseconds margin_;
  lease_record record_;
  clock::time_point started_;
  clock::time_point expires_{};   // the holder's lease runs until here (witness clock)
  bool released_ = false;         // the holder gave it back: no margin to wait
};

} // namespace hast
