#pragma once

// hastd's whole program behind main(): the command line, the configuration,
// daemonizing, logging and the daemon's run. `env` decides how providers are
// opened (io/io_env.hpp): hastd passes default_io_env().

#include "io/io_env.hpp"

#include <memory>

namespace hast {

int hastd_main(int argc, char** argv, std::shared_ptr<const io_env> env);

} // namespace hast
