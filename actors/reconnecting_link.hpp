#pragma once

// The link an actor keeps to another node, as the peer actor (both sides)
// and the witness link hold it: the current link and its epoch, and on the
// dialing side (the primary, a data node towards its witness) the dial
// itself. A dial connects, proves the shared key both ways within the
// handshake timeout (io/net/peer_link.hpp with_session) and hands the link over
// as peer_connected; a failed dial, or the loss of the link, dials again
// after a fixed interval; shutdown closes the link and dials no more.
//
// It lives in the actor's state and talks to its actor only through the
// messages every link-owning interface has: connect (time to dial),
// peer_connected (a dial's outcome), peer_frame and peer_closed (tagged with
// the link's epoch, so that what an older link said is dropped). What the
// actor does with a link (hello, frames, telling its resource) stays in the
// actor. See docs/DESIGN.md, "Links".

#include "messages/actors.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hast {

/// How long a dialing side waits after a failed dial, or after losing its
/// link, before it dials again. Fixed, not growing: a node wants its peer
/// back as soon as it listens again, and a dial that finds nothing
/// listening costs one refused SYN.
inline constexpr std::chrono::milliseconds peer_redial_interval = std::chrono::seconds(2);
/// The witness link's: shorter, since a lease must be renewed within its
/// length (failover auto, docs/FAILOVER.md).
inline constexpr std::chrono::milliseconds witness_redial_interval = std::chrono::milliseconds(500);

/// `Actor`: a typed actor handle whose interface reacts to atom::connect,
/// (atom::peer_connected, uint64_t, status, peer_link_ptr), (atom::peer_frame,
/// peer_frames) and (atom::peer_closed, uint64_t, std::string). The member
/// templates take the actor's `self` pointer; call them from its handlers only.
template <class Actor>
class reconnecting_link {
public:
  /// Sees every batch of frames on the io thread that read it, before the
  /// batch goes to the actor (the secondary answers "received" there).
  using frames_tap = std::function<void(peer_link&, const std::vector<peer::frame>&)>;

  /// The accepting side: holds links it is given, never dials.
  reconnecting_link() = default;

  /// The dialing side: `base` opens a connection (io/net/peer_link.hpp
  /// tcp_connector); with a key in `session`, every link proves it both ways
  /// before it is handed over, within the handshake timeout derived from the
  /// link's `link_timeout` (io/net/peer_transport.hpp proof_timeout).
  reconnecting_link(link_connector base, peer::session_params session,
                    std::chrono::milliseconds link_timeout, std::chrono::milliseconds redial_interval)
    : connect_(with_session(std::move(base), std::move(session), peer::proof_timeout(link_timeout))),
      redial_interval_(redial_interval) {}

  /// The current link; null while there is none.
  const peer_link_ptr& link() const { return link_; }
  /// The number of the current (or last) link; bumps with every link.
  uint64_t epoch() const { return epoch_; }
  /// Whether a message tagged `epoch` concerns the current link.
  bool is_current(uint64_t epoch) const { return link_ && epoch == epoch_; }

  /// Starts a dial unless this side does not dial, a link is up or a dial
  /// runs; the outcome reaches `self` as peer_connected. False: nothing started.
  template <class Self>
  bool dial(Self self) {
    if (!connect_ || link_ || dialing_ || stopped_)
      return false;
    dialing_ = true;
    auto hdl = caf::actor_cast<Actor>(self);
    connect_([hdl](status st, peer_link_ptr link) {
      caf::anon_send(hdl, atom::peer_connected_v, uint64_t{0}, std::move(st), std::move(link));
    });
    return true;
  }

  /// A dial's outcome (from peer_connected). On success the link becomes the
  /// current one, started as attach() does, and ok is returned; on failure
  /// the next dial is scheduled and the error returned.
  template <class Self>
  status dialed(Self self, status st, peer_link_ptr link, frames_tap tap = {}) {
    dialing_ = false;
    if (st && !link)
      st = status{errc::io_error, "the connector answered without a link"};
    if (stopped_) {
      if (link)
        link->close("the link's owner stopped");
      return status{errc::disconnected, "the link's owner stopped"};
    }
    if (!st) {
      redial_later(self);
      return st;
    }
    attach(self, std::move(link), std::move(tap));
    return status::ok();
  }

  /// Makes `link` the current one under a new epoch and starts it: its
  /// frames reach `self` as peer_frame, its end as peer_closed, both tagged
  /// with that epoch. The caller has dropped any previous link.
  template <class Self>
  uint64_t attach(Self self, peer_link_ptr link, frames_tap tap = {}) {
    auto epoch = ++epoch_;
    link_ = std::move(link);
    auto hdl = caf::actor_cast<Actor>(self);
    std::weak_ptr<peer_link> weak = link_;
    link_->start(
      [hdl, epoch, weak, tap = std::move(tap)](std::vector<peer::frame> frames) {
        if (tap)
          if (auto l = weak.lock())
            tap(*l, frames);
        caf::anon_send(hdl, atom::peer_frame_v, peer_frames{epoch, std::move(frames)});
      },
      [hdl, epoch](const std::string& reason) {
        caf::anon_send(hdl, atom::peer_closed_v, epoch, reason);
      });
    return epoch;
  }

  /// Ends the link of `epoch` if it is the current one: closes it with
  /// `reason` and, on the dialing side, dials again after the interval.
  /// False, and nothing done, for an older link or none.
  template <class Self>
  bool drop(Self self, uint64_t epoch, const std::string& reason) {
    if (!is_current(epoch))
      return false;
    link_->close(reason);
    link_.reset();
    if (connect_)
      redial_later(self);
    return true;
  }

  /// On shutdown: closes the current link; no dial starts after this.
  void close(const std::string& reason) {
    stopped_ = true;
    if (link_)
      link_->close(reason);
    link_.reset();
  }

private:
  template <class Self>
  void redial_later(Self self) {
    if (!stopped_)
      self->delayed_send(self, redial_interval_, atom::connect_v);
  }

  link_connector connect_;  // empty: the accepting side
  std::chrono::milliseconds redial_interval_{0};
  peer_link_ptr link_;
  uint64_t epoch_ = 0;
  bool dialing_ = false;
  bool stopped_ = false;
};

} // namespace hast
