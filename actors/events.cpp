#include "actors/events.hpp"

#include "io/net/control_channel.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
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

/// Writes what the socket takes now; false when the connection is gone.
bool flush(event_stream& st) {
  size_t sent = 0;
  while (sent < st.backlog.size()) {
    auto k = ::send(st.sub.fd, st.backlog.data() + sent, st.backlog.size() - sent,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (k <= 0)
      return false;
    sent += static_cast<size_t>(k);
  }
  st.backlog.erase(0, sent);
  return true;
}

void drop(hub_ptr self, size_t i, const char* why) {
  auto& streams = self->state.streams;
  spdlog::info("events: closing a subscriber: {}", why);
  ::close(streams[i].sub.fd);
  streams.erase(streams.begin() + static_cast<std::ptrdiff_t>(i));
}

/// Writes every subscriber's backlog; drops those that went away or fell
/// too far behind.
void flush_all(hub_ptr self) {
  auto& streams = self->state.streams;
  for (size_t i = streams.size(); i-- > 0;) {
    if (!flush(streams[i]))
      drop(self, i, "its connection is closed");
    else if (streams[i].backlog.size() > event_backlog_limit)
      drop(self, i, "it does not read its events (backlog full)");
  }
}

void schedule_tick(hub_ptr self) {
  auto& s = self->state;
  if (s.tick_pending || s.streams.empty())
    return;
  const bool waiting = std::any_of(s.streams.begin(), s.streams.end(),
                                   [](const event_stream& st) { return !st.backlog.empty(); });
  s.tick_pending = true;
  self->delayed_send(self, waiting ? std::chrono::milliseconds(event_retry)
                                   : std::chrono::milliseconds(event_hangup_check),
                     atom::events_tick_v);
}

} // namespace

event_hub_state::~event_hub_state() {
  for (auto& st : streams)
    ::close(st.sub.fd);
}

event_hub_actor::behavior_type event_hub(hub_ptr self) {
  return {
    [self](atom::event, const event_record& e) {
      auto& streams = self->state.streams;
      if (streams.empty())
        return;
      const auto bytes = control::encode_frame(control::to_text(to_json(e)));
      for (auto& st : streams)
        if (wants(st.sub, e.resource))
          st.backlog += bytes;
      flush_all(self);
      schedule_tick(self);
    },
    [self](atom::subscribe, event_subscriber sub) {
      ::fcntl(sub.fd, F_SETFL, ::fcntl(sub.fd, F_GETFL) | O_NONBLOCK);
      self->state.streams.push_back({std::move(sub), {}});
      schedule_tick(self);
    },
    [self](atom::events_tick) {
      auto& s = self->state;
      s.tick_pending = false;
      flush_all(self);
      // A subscriber sends nothing after its request: anything readable is
      // a hang-up (or a breach of the protocol, which closes it as well).
      for (size_t i = s.streams.size(); i-- > 0;) {
        pollfd p{s.streams[i].sub.fd, POLLIN | POLLRDHUP, 0};
        if (::poll(&p, 1, 0) > 0 && p.revents != 0)
          drop(self, i, "it hung up");
      }
      schedule_tick(self);
    },
  };
}

} // namespace hast
