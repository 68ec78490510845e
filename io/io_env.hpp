#pragma once

// The I/O environment (LevelDB's `Env` pattern): how the daemon opens its
// local providers. The program chooses one at start-up and hands it down;
// hastd uses `default_io_env()`, which opens providers as they are. A test
// program passes an environment whose providers fail chosen operations
// (tests/fault/), so no fault-injection switch lives in the daemon itself.

#include "io/provider.hpp"

#include <memory>
#include <string>

namespace hast {

class io_env {
public:
  virtual ~io_env() = default;
  /// Opens a provider (see provider::open). An environment may attach a
  /// fault source to it before it is shared.
  virtual result<provider> open_provider(const std::string& path, bool writable) const = 0;
};

/// Providers as they are: no faults.
std::shared_ptr<const io_env> default_io_env();

} // namespace hast
