#include "cli/common/args.hpp"

#include <algorithm>

namespace hast::cli {

std::optional<parsed_command> parse_command_line(int argc, const char *const *argv,
                                                 std::string &error) {
  parsed_command out;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      if (out.command.empty())
        out.command = arg;
      else
        out.args.push_back(arg);
      continue;
    }
    if (arg == "--") {
      // After the command word "--" belongs to the command; before, it ends
      // the global options.
      if (!out.command.empty())
        out.args.push_back(arg);
      options_done = true;
      continue;
    }
    if (arg == "--json") {
      out.options.json = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      out.options.help = true;
      continue;
    }
    auto take_value = [&](std::string &target, char letter) -> bool {
      if (arg.size() > 2) {
        target = arg.substr(2);
        return true;
      }
      if (i + 1 >= argc) {
        error = std::string{"option -"} + letter + " requires a value";
        return false;
      }
      target = argv[++i];
      return true;
    };
    if (arg[0] == '-' && arg[1] == 'c') {
      if (!take_value(out.options.config_path, 'c'))
        return std::nullopt;
      continue;
    }
    if (arg[0] == '-' && arg[1] == 'n') {
      if (!take_value(out.options.node, 'n'))
        return std::nullopt;
      continue;
    }
    if (arg.find_first_not_of('d', 1) == std::string::npos) { // -d, -dd, ...
      out.options.debug += static_cast<int>(arg.size() - 1);
      continue;
    }
    if (out.command.empty()) {
      error = "unknown option " + arg;
      return std::nullopt;
    }
    // Anything else after the command word is the command's own option.
    out.args.push_back(arg);
  }
  return out;
}

std::optional<command_args> parse_command_args(const std::vector<std::string> &args,
                                               const std::string &spec,
                                               const std::vector<std::string> &flags,
                                               std::string &error) {
  command_args out;
  // Options and operands may be mixed ("create res -m 64M"); "--" ends
  // options. Resource names never start with '-'.
  for (size_t i = 0; i < args.size(); ++i) {
    const auto &arg = args[i];
    if (arg == "--") {
      out.operands.insert(out.operands.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      out.operands.push_back(arg);
      continue;
    }
    if (arg.rfind("--", 0) == 0) {
      if (std::find(flags.begin(), flags.end(), arg) == flags.end()) {
        error = "unknown option " + arg;
        return std::nullopt;
      }
      out.flags.push_back(arg);
      continue;
    }
    auto letter = arg[1];
    auto at = spec.find(letter);
    if (letter == ':' || at == std::string::npos) {
      error = std::string{"unknown option -"} + letter;
      return std::nullopt;
    }
    bool takes_value = at + 1 < spec.size() && spec[at + 1] == ':';
    if (!takes_value) {
      if (arg.size() != 2) {
        error = std::string{"option -"} + letter + " takes no value";
        return std::nullopt;
      }
      out.options.emplace_back(letter, std::string{});
    } else if (arg.size() > 2) {
      out.options.emplace_back(letter, arg.substr(2));
    } else if (i + 1 < args.size()) {
      out.options.emplace_back(letter, args[++i]);
    } else {
      error = std::string{"option -"} + letter + " requires a value";
      return std::nullopt;
    }
  }
  return out;
}

std::string usage() {
  return "usage: hastctl [-c config] [-n node] [-d] [--json] <command> [args]\n"
         "       hastctl create [-e extentsize] [-k keepdirty] [-m mediasize] [-M maxsize] all | name ...\n"
         "       hastctl role [-f] <init | primary | secondary> all | name ...\n"
         "       hastctl list [all | name ...]\n"
         "       hastctl status [all | name ...]\n"
         "       hastctl dump [all | name ...]\n"
         "       hastctl resync --discard-local all | name ...\n"
         "       hastctl verify [--repair | --stop] all | name ...\n"
         "       hastctl grow [--assume-clean] all | name ...\n"
         "       hastctl events [--json] [--now] [all | name ...]\n"
         "       hastctl attach name\n"
         "       hastctl detach [-f] name\n"
         "Global options may come before or after the command word.\n";
}

} // namespace hast::cli
