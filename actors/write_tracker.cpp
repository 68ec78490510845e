#include "actors/write_tracker.hpp"

namespace hast {

namespace {

bool intersect(uint64_t b1, uint64_t e1, uint64_t b2, uint64_t e2) {
  return b1 < e2 && b2 < e1;
}

} // namespace

bool write_tracker::overlaps_running(uint64_t begin, uint64_t end) const {
  auto it = running_.lower_bound(end);  // first range starting at or after `end`
  if (it == running_.begin())
    return false;
  --it;  // the last range starting before `end`: the only candidate
  return it->second.first > begin;
}

bool write_tracker::overlaps_reading(uint64_t begin, uint64_t end) const {
  for (auto& [id, range] : reading_)
    if (intersect(begin, end, range.first, range.second))
      return true;
  return false;
}

bool write_tracker::arrive(uint64_t id, uint64_t begin, uint64_t end) {
  if (begin == end)
    return true;
  bool blocked = overlaps_running(begin, end) || overlaps_reading(begin, end);
  for (auto it = held_.begin(); !blocked && it != held_.end(); ++it)
    blocked = intersect(begin, end, it->begin, it->end);
  if (blocked) {
    held_.push_back({id, begin, end});
    return false;
  }
  running_[begin] = {end, id};
  running_begin_[id] = begin;
  return true;
}

bool write_tracker::arrive_read(uint64_t id, uint64_t begin, uint64_t end) {
  bool blocked = overlaps_running(begin, end);
  for (auto it = held_.begin(); !blocked && it != held_.end(); ++it)
    blocked = !it->read && intersect(begin, end, it->begin, it->end);
  if (blocked) {
    held_.push_back({id, begin, end, true});
    return false;
  }
  reading_[id] = {begin, end};
  return true;
}

std::vector<uint64_t> write_tracker::release(uint64_t id) {
  std::vector<uint64_t> ready;
  if (auto at = running_begin_.find(id); at != running_begin_.end()) {
    running_.erase(at->second);
    running_begin_.erase(at);
  } else if (!reading_.erase(id)) {
    return ready;
  }
  if (held_.empty())
    return ready;
  // A held write starts when it overlaps neither a running write or read
  // nor a write or read held before it; a held read, when it overlaps
  // neither a running write nor a write held before it. That keeps arrival
  // order among overlapping requests, except between reads.
  std::deque<waiting> still;
  for (auto& w : held_) {
    bool blocked =
      overlaps_running(w.begin, w.end) || (!w.read && overlaps_reading(w.begin, w.end));
    for (auto& earlier : still)
      blocked = blocked
                || ((!w.read || !earlier.read)
                    && intersect(w.begin, w.end, earlier.begin, earlier.end));
    if (blocked) {
      still.push_back(w);
    } else if (w.read) {
      reading_[w.id] = {w.begin, w.end};
      ready.push_back(w.id);
    } else {
      running_[w.begin] = {w.end, w.id};
      running_begin_[w.id] = w.begin;
      ready.push_back(w.id);
    }
  }
  held_ = std::move(still);
  return ready;
}

void write_tracker::start(uint64_t id, bool durable, bool replicated) {
  auto& t = tracks_[id];
  t.durable = durable;
  if (!replicated)
    t.remote_satisfied = t.remote_final = true;
}

write_tracker::outcome write_tracker::settle(std::unordered_map<uint64_t, track>::iterator it) {
  outcome out;
  auto& t = it->second;
  if (t.covered) {
    if (!t.answered && t.remote_final) {
      t.answered = true;
      out.answer = true;
      out.error = t.remote_failed ? t.local_error : 0;
    }
  } else if (!t.answered && t.local_done && (t.remote_satisfied || !policy_.client_waits())) {
    t.answered = true;
    out.answer = true;
    out.error = t.local_error;
    out.alone = t.remote_failed || !t.remote_satisfied;
  }
  if (t.local_done && t.remote_final) {
    out.finished = true;
    out.remote_failed = t.remote_failed;
    tracks_.erase(it);
  }
  return out;
}

write_tracker::outcome write_tracker::local_done(uint64_t id, uint32_t error) {
  auto it = tracks_.find(id);
  if (it == tracks_.end())
    return {};
  it->second.local_done = true;
  it->second.local_error = error;
  return settle(it);
}

write_tracker::outcome write_tracker::local_covered(uint64_t id, uint32_t error) {
  auto it = tracks_.find(id);
  if (it == tracks_.end())
    return {};
  it->second.local_done = true;
  it->second.local_error = error;
  it->second.covered = true;
  return settle(it);
}

write_tracker::outcome write_tracker::remote(uint64_t id, remote_stage stage) {
  auto it = tracks_.find(id);
  if (it == tracks_.end())
    return {};
  auto& t = it->second;
  switch (stage) {
    case remote_stage::received:
      // A durable write promises both disks: "received" is not enough.
      if (!t.durable)
        t.remote_satisfied = t.remote_satisfied || policy_.satisfies(stage);
      break;
    case remote_stage::written:
      t.remote_satisfied = t.remote_final = true;
      break;
    case remote_stage::failed:
      t.remote_satisfied = t.remote_final = t.remote_failed = true;
      break;
  }
  return settle(it);
}

std::vector<uint64_t> write_tracker::awaiting_remote() const {
  std::vector<uint64_t> ids;
  for (auto& [id, t] : tracks_)
    if (!t.remote_final)
      ids.push_back(id);
  return ids;
}

} // namespace hast
