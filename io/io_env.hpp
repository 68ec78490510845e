#pragma once

// The I/O environment (LevelDB's `Env` pattern): how the daemon opens its
// local providers and dials its peer. The program chooses one at start-up
// and hands it down; hastd uses `default_io_env()`, which opens providers
// as they are and dials over TCP. A test program passes an environment whose
// providers fail chosen operations (tests/fault/), or whose peer is a
// scripted secondary (tests/actors/replication_test.cpp), so no test switch
// lives in the daemon itself.

#include "io/net/peer_link.hpp"
#include "io/storage/provider.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace asio {
class io_context;
} // namespace asio

namespace hast {

class io_env {
public:
  virtual ~io_env() = default;
  /// Opens a provider (see provider::open). An environment may attach a
  /// fault source to it before it is shared.
  virtual result<provider> open_provider(const std::string& path, bool writable) const = 0;
  /// The connector of a primary's link to its secondary at `remote`, from
  /// `source`, run on `io` (which must outlive it). By default the plain
  /// TCP connector (io/net/peer_link.hpp tcp_connector); the peer authenticates
  /// the links it gets (with_session) whatever the environment.
  virtual link_connector peer_connector(asio::io_context& io, const std::string& remote,
                                        const std::string& source,
                                        std::chrono::milliseconds keepalive,
                                        std::chrono::milliseconds timeout) const;
};

/// Providers as they are, the peer over TCP: no faults.
std::shared_ptr<const io_env> default_io_env();

} // namespace hast
