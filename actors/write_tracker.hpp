#pragma once

// The acknowledgement protocol of client writes, as a plain class: which
// writes may run now (overlapping writes run one after the other, in arrival
// order, so that both nodes apply them in the same order), and when a write
// is answered (the replication mode's policy, messages/replication.hpp) and
// when it is over (both sides final: the activemap may let go of it).
//
// No actors, no clocks: the resource actor feeds it events and acts on the
// outcomes; tests drive it directly. "Write" covers every request that
// changes data or durability: write, trim, write_zeroes and flush (a flush
// has no range and never waits for other writes).
//
// Reads take part in the ordering only (a secondary's reads for the
// primary, which must see every write that arrived before them on the
// link): a read waits for earlier overlapping writes, a write for earlier
// overlapping reads and writes; reads never wait for each other.

#include "messages/replication.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hast {

class write_tracker {
public:
  explicit write_tracker(replication_policy policy) : policy_(policy) {}

  /// Applies to writes started from now on and to those still waiting.
  void set_policy(replication_policy policy) { policy_ = policy; }

  // --- Ordering -------------------------------------------------------------------------------

  /// Write `id` arrives for bytes [begin, end) (begin == end: no range, as a
  /// flush). True: it may start now, and its range is taken until release().
  /// False: it overlaps a running write or an earlier held one; release()
  /// hands it back when its turn comes.
  bool arrive(uint64_t id, uint64_t begin, uint64_t end);

  /// Read `id` arrives for bytes [begin, end) (begin < end). True: it may
  /// start now (its range is shared with other reads until release()).
  /// False: it overlaps a running write or an earlier held one; release()
  /// hands it back when its turn comes. It has no acknowledgement state.
  bool arrive_read(uint64_t id, uint64_t begin, uint64_t end);

  /// The local part of `id` (a write, or a read: its disk read is over) is
  /// over (or it will not run): its range is free. Returns the held writes
  /// and reads that may start now, in arrival order; their ranges are taken.
  std::vector<uint64_t> release(uint64_t id);

  /// Writes and reads held behind overlapping ones.
  size_t held() const { return held_.size(); }

  // --- Acknowledgements -----------------------------------------------------------------------

  /// Write `id` is issued locally and, when `replicated`, to the secondary.
  /// A `durable` write (FUA, flush) is answered only after the secondary's
  /// "written", whatever the mode's policy says about "received".
  void start(uint64_t id, bool durable, bool replicated);

  struct outcome {
    bool answer = false;         // answer the client now, with `error`
    uint32_t error = 0;          // the local error (an NBD error code), 0 on success
    bool finished = false;       // both sides final: the write is forgotten
    bool remote_failed = false;  // (finished) the secondary never confirmed it
    bool alone = false;          // (answer) answered without the secondary's copy
  };

  /// The local disk finished `id` (error: an NBD error code, 0 on success).
  outcome local_done(uint64_t id, uint32_t error);

  /// The local disk failed `id` (error: an NBD error code), and the write
  /// stands if the secondary writes it ("one success is enough", HAST's
  /// promise for a failing local disk): it is answered once the secondary's
  /// "written" arrives, whatever the mode; with `error` if that fails.
  outcome local_covered(uint64_t id, uint32_t error);

  /// The secondary acknowledged `id` (received, written, or failed: the link
  /// is gone or the secondary could not write).
  outcome remote(uint64_t id, remote_stage stage);

  /// Started writes whose remote part is not final yet.
  std::vector<uint64_t> awaiting_remote() const;

  /// Started writes not finished yet.
  size_t size() const { return tracks_.size(); }

private:
  struct track {
    bool durable = false;
    bool local_done = false;
    uint32_t local_error = 0;
    bool remote_satisfied = false;  // the policy's acknowledgement arrived
    bool remote_final = false;      // "written" or failure arrived
    bool remote_failed = false;
    bool answered = false;
    bool covered = false;           // local failed; the secondary's copy decides
  };

  outcome settle(std::unordered_map<uint64_t, track>::iterator it);
  bool overlaps_running(uint64_t begin, uint64_t end) const;
  bool overlaps_reading(uint64_t begin, uint64_t end) const;

  replication_policy policy_;
  std::unordered_map<uint64_t, track> tracks_;
  // Ranges of writes whose local part runs, by begin -> {end, id}. They
  // never overlap each other (an overlapping write is held), so one lookup
  // answers "does [b, e) overlap a running write?".
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> running_;
  std::unordered_map<uint64_t, uint64_t> running_begin_;  // id -> begin
  // Reads whose disk read runs, id -> [begin, end); they may overlap each
  // other. Few at a time (reads for the primary are a failure path).
  std::unordered_map<uint64_t, std::pair<uint64_t, uint64_t>> reading_;
  // Writes and reads waiting for an overlapping one, in arrival order.
  struct waiting {
    uint64_t id;
    uint64_t begin;
    uint64_t end;
    bool read = false;
  };
  std::deque<waiting> held_;
};

} // namespace hast
