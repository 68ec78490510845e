#pragma once

// hastctl's command line: global options, the command word and its
// arguments. Global options may appear before or after the command word
// (FreeBSD's hastctl parses them after it):
//
//   hastctl [-c config] [-n node] [-d]... [--json] <command> [args]

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hast::cli {

/// The options every command sees.
struct cli_options {
  std::string config_path = "/etc/hast.conf";
  std::string node;  // -n; empty: $HAST_NODE, else the host name
  int debug = 0;     // number of -d
  bool json = false; // --json
  bool help = false; // -h / --help
};

/// A parsed command line.
struct parsed_command {
  cli_options options;
  std::string command;           // empty if none was given
  std::vector<std::string> args; // everything else, in order (command options included)
};

/// Splits argv into global options, command word and the rest. Returns
/// nullopt and sets `error` on a malformed global option (e.g. -c without a
/// value or an unknown --long option). "--" ends option parsing.
std::optional<parsed_command> parse_command_line(int argc, const char *const *argv,
                                                 std::string &error);

/// A command's own options, getopt-style: `spec` lists the letters, a letter
/// followed by ':' takes a value ("e:k:m:"). Long options given in `flags`
/// (e.g. "--json") are boolean. Options and operands may be mixed; "--"
/// makes the rest operands.
struct command_args {
  std::vector<std::pair<char, std::string>> options; // in order
  std::vector<std::string> flags;                    // long flags seen
  std::vector<std::string> operands;
};
std::optional<command_args> parse_command_args(const std::vector<std::string> &args,
                                               const std::string &spec,
                                               const std::vector<std::string> &flags,
                                               std::string &error);

/// The usage text (every command), printed on a usage error and for -h.
std::string usage();

} // namespace hast::cli
