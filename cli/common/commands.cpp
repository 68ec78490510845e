#include "cli/common/commands.hpp"

#include <iostream>

namespace hast::cli {

int fail(int exit_status, const std::string& message) {
  std::cerr << "hastctl: " << message << '\n';
  return exit_status;
}

} // namespace hast::cli
