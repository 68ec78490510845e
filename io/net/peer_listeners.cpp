#include "io/net/peer_listeners.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace hast {

namespace {

std::string join(const std::vector<std::string>& addresses) {
  std::string text;
  for (const auto& a : addresses)
    text += (text.empty() ? "" : ", ") + a;
  return text.empty() ? "(none)" : text;
}

/// A listener stopped just before closes its sockets on its own strand a
/// moment later, so an address it held may still be taken: how long to try
/// again then.
constexpr auto after_close = std::chrono::milliseconds(2000);

} // namespace

std::vector<std::string> wanted_listen(const node_config& config) {
  bool needed = std::any_of(config.resources.begin(), config.resources.end(),
                            [](const resource_config& r) { return !r.standalone() || r.is_witness; });
  return needed ? config.listen : std::vector<std::string>{};
}

peer_listeners::peer_listeners(asio::io_context& io, std::shared_ptr<peer_router> router,
                               std::chrono::milliseconds first_frame_timeout)
  : io_(io), router_(std::move(router)), first_frame_timeout_(first_frame_timeout) {}

peer_listeners::~peer_listeners() {
  stop();
}

status peer_listeners::open(const std::vector<std::string>& addresses) {
  if (addresses.empty())
    return status::ok();
  return open_group(addresses);
}

std::string peer_listeners::apply(const std::vector<std::string>& wanted) {
  std::vector<std::string> now = addresses();
  std::vector<std::string> added;
  std::vector<std::string> removed;
  for (const auto& a : wanted)
    if (std::find(now.begin(), now.end(), a) == now.end()
        && std::find(added.begin(), added.end(), a) == added.end())
      added.push_back(a);
  for (const auto& a : now)
    if (std::find(wanted.begin(), wanted.end(), a) == wanted.end())
      removed.push_back(a);
  if (added.empty() && removed.empty())
    return "";
  bool closed_first = false;
  if (!added.empty()) {
    auto st = open_group(added);
    if (!st && !removed.empty()) {
      // A removed address may hold the port an added one wants (0.0.0.0:P
      // replacing 127.0.0.1:P): close the removed ones first and retry.
      close_groups(removed);
      closed_first = true;
      st = open_group(added, after_close);
      if (!st)
        reopen_closed();
    }
    if (!st) {
      spdlog::error("reload: the peer listen addresses stay {}: {}", join(now), st.message());
      return "";
    }
  }
  if (!closed_first)
    close_groups(removed);
  // The rest of each closed group opens again.
  for (auto& g : closed_) {
    std::vector<std::string> rest;
    for (const auto& a : g)
      if (std::find(removed.begin(), removed.end(), a) == removed.end())
        rest.push_back(a);
    if (rest.empty())
      continue;
    if (auto st = open_group(rest, after_close); !st)
      spdlog::error("reload: cannot listen on {} again: {}", join(rest), st.message());
  }
  closed_.clear();
  std::string change;
  for (const auto& a : added)
    change += (change.empty() ? "+" : ", +") + a;
  for (const auto& a : removed)
    change += (change.empty() ? "-" : ", -") + a;
  return change;
}

void peer_listeners::stop() {
  for (auto& g : groups_)
    g.listener->stop();
  groups_.clear();
}

std::vector<std::string> peer_listeners::addresses() const {
  std::vector<std::string> all;
  for (const auto& g : groups_)
    all.insert(all.end(), g.addresses.begin(), g.addresses.end());
  return all;
}

std::vector<std::string> peer_listeners::local_addresses() const {
  std::vector<std::string> all;
  for (const auto& g : groups_) {
    auto bound = g.listener->local_addresses();
    all.insert(all.end(), bound.begin(), bound.end());
  }
  return all;
}

/// Opens `addresses` as one group. `retry_for`: a listener stopped just
/// before may still hold an address (after_close); try again until then.
status peer_listeners::open_group(const std::vector<std::string>& addresses,
                                  std::chrono::milliseconds retry_for) {
  auto until = std::chrono::steady_clock::now() + retry_for;
  for (;;) {
    auto listener = std::make_unique<peer::listener>(
      io_, addresses,
      [router = router_](std::shared_ptr<peer::connection> conn, const peer::header& h,
                         buffer_ptr payload) { router->route(std::move(conn), h, payload); },
      first_frame_timeout_,
      peer::admission{[router = router_](const std::string& ip) { return router->allows(ip); }});
    auto st = listener->start();
    if (st) {
      groups_.push_back({addresses, std::move(listener)});
      return status::ok();
    }
    if (std::chrono::steady_clock::now() >= until)
      return status{st.code(), "cannot listen for peers: " + st.message()};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void peer_listeners::close_groups(const std::vector<std::string>& removed) {
  for (auto it = groups_.begin(); it != groups_.end();) {
    const bool touched =
      std::any_of(it->addresses.begin(), it->addresses.end(), [&](const std::string& a) {
        return std::find(removed.begin(), removed.end(), a) != removed.end();
      });
    if (!touched) {
      ++it;
      continue;
    }
    it->listener->stop();
    closed_.push_back(it->addresses);
    it = groups_.erase(it);
  }
}

/// Undoes close_groups() after the added addresses could not be opened.
void peer_listeners::reopen_closed() {
  for (auto& addresses : closed_)
    if (auto st = open_group(addresses, after_close); !st)
      spdlog::error("reload: cannot listen on {} again: {}", join(addresses), st.message());
  closed_.clear();
}

} // namespace hast
