#include "actors/lease_book.hpp"

#include <fmt/format.h>

namespace hast {

namespace {

std::string seconds(std::chrono::milliseconds ms) {
  return fmt::format("{:.1f} s", static_cast<double>(ms.count()) / 1000.0);
}

} // namespace

lease_book::lease_book(std::chrono::milliseconds lease, lease_record record,
                       clock::time_point started)
  : lease_(lease), margin_(lease / 4), record_(std::move(record)), started_(started) {
  // Whatever the holder had before a restart ends within the lease; it
  // counts from now, so the same holder may go on renewing.
  expires_ = started;
}

void lease_book::set_lease(std::chrono::milliseconds lease) {
  lease_ = lease;
  margin_ = lease / 4;
}

std::chrono::milliseconds lease_book::remaining(clock::time_point now) const {
  if (record_.holder.empty() || now >= expires_)
    return std::chrono::milliseconds{0};
  return std::chrono::duration_cast<std::chrono::milliseconds>(expires_ - now);
}

peer::lease_reply lease_book::decide(const peer::lease_request& req, clock::time_point now,
                                     bool& changed) {
  changed = false;
  if (req.kind == "renew")
    return renew(req, now, changed);
  if (req.kind == "claim")
    return claim(req, now, changed);
  return release(req, now, changed);
}

peer::lease_reply lease_book::refuse(std::string reason) const {
  peer::lease_reply r;
  r.granted = false;
  r.epoch = record_.epoch;
  r.holder = record_.holder;
  r.reason = std::move(reason);
  return r;
}

peer::lease_reply lease_book::grant(clock::time_point now) {
  expires_ = now + lease_;
  released_ = false;
  peer::lease_reply r;
  r.granted = true;
  r.epoch = record_.epoch;
  r.holder = record_.holder;
  r.lease_ms = static_cast<uint32_t>(lease_.count());
  return r;
}

peer::lease_reply lease_book::renew(const peer::lease_request& req, clock::time_point now,
                                    bool& changed) {
  if (record_.holder.empty())
    return refuse("the witness has no record of a primary; run 'hastctl role primary' on the "
                  "node that should be primary");
  if (req.node != record_.holder || req.epoch != record_.epoch)
    return refuse(fmt::format("{} holds the lease (epoch {})", record_.holder, record_.epoch));
  if (released_)
    return refuse("the lease was released; claim it again");
  auto next = record_;
  next.resuid = req.resuid;
  next.localcnt = req.localcnt;
  next.in_sync = req.in_sync;
  changed = next != record_;
  record_ = next;
  return grant(now);
}

std::string lease_book::ineligible(const peer::lease_request& req) const {
  if (record_.holder.empty())
    return "the witness has never heard of a primary for this resource";
  if (req.resuid != record_.resuid)
    return fmt::format("its resource id {} is not the primary's {}", req.resuid, record_.resuid);
  if (!record_.in_sync)
    return "the primary reported that this node was missing writes (not in sync)";
  if (req.remotecnt < record_.localcnt)
    return fmt::format("its data is older than the primary's (generation {} < {})", req.remotecnt,
                       record_.localcnt);
  return "";
}

peer::lease_reply lease_book::claim(const peer::lease_request& req, clock::time_point now,
                                    bool& changed) {
  // The holder taking its own lease back (it stepped down, or restarted):
  // nobody else can have written since.
  if (!record_.holder.empty() && req.node == record_.holder && (!released_ || req.manual)) {
    ++record_.epoch;
    record_.resuid = req.resuid;
    record_.localcnt = req.localcnt;
    record_.in_sync = false;
    changed = true;
    return grant(now);
  }
  // A witness that never granted a lease has none to wait out.
  auto quiet = started_ + lease_ + margin_;
  if (!record_.holder.empty() && now < quiet)
    return refuse(fmt::format("the witness started recently and waits {} for leases it may have "
                              "granted before",
                              seconds(std::chrono::duration_cast<std::chrono::milliseconds>(quiet - now))));
  if (!record_.holder.empty()) {
    auto free_at = released_ ? expires_ : expires_ + margin_;
    if (now < free_at)
      return refuse(fmt::format("{} holds the lease for {} more", record_.holder,
                                seconds(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  free_at - now))));
  }
  if (!req.manual && req.node == record_.holder)
    return refuse("it gave the lease away (hastctl role secondary); make it primary by hand");
  if (!req.manual)
    if (auto why = ineligible(req); !why.empty())
      return refuse("not eligible: " + why);
  record_.holder = req.node;
  ++record_.epoch;
  record_.resuid = req.resuid;
  record_.localcnt = req.localcnt;
  record_.in_sync = false;  // its new secondary has yet to catch up
  changed = true;
  return grant(now);
}

peer::lease_reply lease_book::release(const peer::lease_request& req, clock::time_point now,
                                      bool& changed) {
  if (req.node != record_.holder || req.epoch != record_.epoch)
    return refuse(fmt::format("{} holds the lease (epoch {})", record_.holder, record_.epoch));
  // The holder stopped completing writes before it asked: the other node
  // may take over at once, if its data is up to date.
  auto next = record_;
  next.localcnt = req.localcnt;
  next.in_sync = req.in_sync;
  changed = next != record_;
  record_ = next;
  expires_ = now;
  released_ = true;
  peer::lease_reply r = refuse("released");
  r.granted = true;
  return r;
}

} // namespace hast
