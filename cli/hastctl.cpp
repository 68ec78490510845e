// hastctl: the command-line control program. Local commands (create, dump)
// work on the provider directly; the others talk to hastd over its control
// socket. One table maps command words to their functions.

#include "cli/common/args.hpp"
#include "cli/common/commands.hpp"

#include <exception>
#include <iostream>
#include <string_view>

namespace {

struct command_entry {
  std::string_view name;
  hast::cli::command_fn run;
};

constexpr command_entry commands[] = {
    {"create", hast::cli::run_create}, {"dump", hast::cli::run_dump},
    {"role", hast::cli::run_role},     {"status", hast::cli::run_status},
    {"list", hast::cli::run_list},
    {"resync", hast::cli::run_resync}, {"verify", hast::cli::run_verify},
    {"attach", hast::cli::run_attach}, {"detach", hast::cli::run_detach},
    {"events", hast::cli::run_events},
};

} // namespace

int main(int argc, char **argv) {
  std::string error;
  auto parsed = hast::cli::parse_command_line(argc, argv, error);
  if (!parsed) {
    std::cerr << "hastctl: " << error << " (see 'hastctl -h')\n";
    return 1;
  }
  if (parsed->options.help) {
    std::cout << hast::cli::usage();
    return 0;
  }
  if (parsed->command.empty()) {
    std::cerr << "hastctl: no command given (see 'hastctl -h')\n";
    return 1;
  }
  for (const auto &entry : commands) {
    if (entry.name != parsed->command)
      continue;
    try {
      return entry.run(parsed->options, parsed->args);
    } catch (const std::exception &e) {
      // Configuration errors (file, line, option, why) and the like.
      std::cerr << "hastctl: " << e.what() << '\n';
      return 1;
    }
  }
  std::cerr << "hastctl: unknown command '" << parsed->command << "' (see 'hastctl -h')\n";
  return 1;
}
