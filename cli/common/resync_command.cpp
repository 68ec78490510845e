// hastctl resync --discard-local <res>...: on the node chosen to lose a
// split brain (it must be secondary), give up its own changes; the next
// connection resyncs from the primary every extent either side changed.
//
// hastctl verify [--repair | --stop] <res>...: on the primary, compare both
// nodes' data online (docs/PROTOCOL.md, "Online verify").
//
// hastctl grow [--assume-clean] <res>...: on the primary, after both nodes'
// providers grew, grow the resource online (docs/METADATA.md, "Online
// growth").

#include "cli/common/commands.hpp"
#include "cli/common/control_client.hpp"
#include "cli/exit_status.hpp"

#include <algorithm>
#include <iostream>

namespace hast::cli {

int run_resync(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--discard-local"}, error);
  if (!parsed) {
    std::cerr << "hastctl: resync: " << error << '\n';
    return EX_USAGE;
  }
  if (parsed->flags.empty()) {
    std::cerr << "hastctl: resync: --discard-local is required: this node gives up its own "
                 "changes and takes the peer's\n";
    return EX_USAGE;
  }
  if (parsed->operands.empty()) {
    std::cerr << "hastctl: resync: expected 'resync --discard-local all|<resource>...'\n";
    return EX_USAGE;
  }
  auto reply = request_daemon(options, {{"command", "resync"},
                                        {"discard_local", true},
                                        {"resources", parsed->operands}});
  if (!reply)
    return report_failure(reply);
  return report_results(reply.body, [](const nlohmann::json& r) {
    std::cout << r.value("resource", "")
              << ": local changes will be discarded when the primary connects\n";
  });
}

int run_verify(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--repair", "--stop"}, error);
  if (!parsed) {
    std::cerr << "hastctl: verify: " << error << '\n';
    return EX_USAGE;
  }
  auto has = [&](const char* flag) {
    return std::find(parsed->flags.begin(), parsed->flags.end(), flag) != parsed->flags.end();
  };
  auto repair = has("--repair");
  auto stop = has("--stop");
  if (repair && stop) {
    std::cerr << "hastctl: verify: --repair and --stop exclude each other\n";
    return EX_USAGE;
  }
  if (parsed->operands.empty()) {
    std::cerr << "hastctl: verify: expected 'verify [--repair | --stop] all|<resource>...'\n";
    return EX_USAGE;
  }
  auto reply = request_daemon(options, {{"command", "verify"},
                                        {"repair", repair},
                                        {"stop", stop},
                                        {"resources", parsed->operands}});
  if (!reply)
    return report_failure(reply);
  return report_results(reply.body, [](const nlohmann::json& r) {
    std::cout << r.value("resource", "") << ": " << r.value("message", "") << '\n';
  });
}

int run_grow(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--assume-clean"}, error);
  if (!parsed) {
    std::cerr << "hastctl: grow: " << error << '\n';
    return EX_USAGE;
  }
  if (parsed->operands.empty()) {
    std::cerr << "hastctl: grow: expected 'grow [--assume-clean] all|<resource>...'\n";
    return EX_USAGE;
  }
  auto reply = request_daemon(options, {{"command", "grow"},
                                        {"assume_clean", !parsed->flags.empty()},
                                        {"resources", parsed->operands}});
  if (!reply)
    return report_failure(reply);
  return report_results(reply.body, [](const nlohmann::json& r) {
    std::cout << r.value("resource", "") << ": " << r.value("message", "") << '\n';
  });
}

} // namespace hast::cli
