// hastctl: the command-line control program. Local commands (create, dump)
// work on the provider directly; the others talk to hastd over its control
// socket. One table maps command words to their functions.

#include "cli/common/args.hpp"
#include "cli/common/commands.hpp"
#include "cli/exit_status.hpp"
#include "config/config.hpp"

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
    {"grow", hast::cli::run_grow},
    {"attach", hast::cli::run_attach}, {"detach", hast::cli::run_detach},
    {"events", hast::cli::run_events},
};

} // namespace

int main(int argc, char **argv) {
  std::string error;
  auto parsed = hast::cli::parse_command_line(argc, argv, error);
  if (!parsed) {
    std::cerr << "hastctl: " << error << " (see 'hastctl -h')\n";
    return EX_USAGE;
  }
  if (parsed->options.help) {
    std::cout << hast::cli::usage();
    return 0;
  }
  if (parsed->command.empty()) {
    std::cerr << "hastctl: no command given (see 'hastctl -h')\n";
    return EX_USAGE;
  }
  for (const auto &entry : commands) {
    if (entry.name != parsed->command)
      continue;
    try {
      return entry.run(parsed->options, parsed->args);
    } catch (const hast::config_error &e) {
      // file, line, option, why; EX_OSFILE when the file cannot be read.
      std::cerr << "hastctl: " << e.what() << '\n';
      return hast::cli::config_failure_status(parsed->options.config_path);
    } catch (const std::exception &e) {
      std::cerr << "hastctl: " << e.what() << '\n';
      return EX_SOFTWARE;
    }
  }
  std::cerr << "hastctl: unknown command '" << parsed->command << "' (see 'hastctl -h')\n";
  return EX_USAGE;
}
