#include "actors/events.hpp"

#include "io/control_channel.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace hast {

namespace {

using hub_ptr = event_hub_actor::stateful_pointer<event_hub_state>;

bool wants(const event_subscriber& sub, const std::string& resource) {
  return sub.resources.empty()
         || std::find(sub.resources.begin(), sub.resources.end(), resource) != sub.resources.end();
}

/// One frame without waiting: the socket is non-blocking, and a frame that
/// does not fit whole is not started (the subscriber is closed instead).
bool send_now(int fd, const std::string& body) {
  std::string frame(4, '\0');
  const auto n = static_cast<uint32_t>(body.size());
  for (int i = 0; i < 4; ++i)
    frame[i] = static_cast<char>(n >> (8 * i));
  frame += body;
  size_t sent = 0;
  while (sent < frame.size()) {
    auto k = ::send(fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return false;
    sent += static_cast<size_t>(k);
  }
  return true;
}

void drop(hub_ptr self, size_t i, const char* why) {
  auto& subs = self->state.subscribers;
  spdlog::info("events: closing a subscriber: {}", why);
  ::close(subs[i].fd);
  subs.erase(subs.begin() + static_cast<std::ptrdiff_t>(i));
}

void schedule_tick(hub_ptr self) {
  auto& s = self->state;
  if (s.tick_pending || s.subscribers.empty())
    return;
  s.tick_pending = true;
  self->delayed_send(self, event_hangup_check, atom::events_tick_v);
}

} // namespace

event_hub_state::~event_hub_state() {
  for (auto& sub : subscribers)
    ::close(sub.fd);
}

event_hub_actor::behavior_type event_hub(hub_ptr self) {
  return {
    [self](atom::event, const event_record& e) {
      auto& subs = self->state.subscribers;
      if (subs.empty())
        return;
      const auto body = to_json(e).dump();
      for (size_t i = subs.size(); i-- > 0;) {
        if (!wants(subs[i], e.resource))
          continue;
        if (!send_now(subs[i].fd, body))
          drop(self, i, errno == EAGAIN || errno == EWOULDBLOCK
                          ? "it does not read its events (socket buffer full)"
                          : "its connection is closed");
      }
    },
    [self](atom::subscribe, event_subscriber sub) {
      ::fcntl(sub.fd, F_SETFL, ::fcntl(sub.fd, F_GETFL) | O_NONBLOCK);
      self->state.subscribers.push_back(std::move(sub));
      schedule_tick(self);
    },
    [self](atom::events_tick) {
      auto& s = self->state;
      s.tick_pending = false;
      // A subscriber sends nothing after its request: anything readable
      // is a hang-up (or a protocol breach, which closes it as well).
      for (size_t i = s.subscribers.size(); i-- > 0;) {
        pollfd p{s.subscribers[i].fd, POLLIN | POLLRDHUP, 0};
        if (::poll(&p, 1, 0) > 0 && p.revents != 0)
          drop(self, i, "it hung up");
      }
      schedule_tick(self);
    },
  };
}

} // namespace hast
