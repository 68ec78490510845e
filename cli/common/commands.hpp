#pragma once

// hastctl's commands. Each takes the global options and the arguments after
// the command word, prints its output on stdout, one line per error on stderr
// ("hastctl: <what>: <why>"), and returns the exit status: 0, one of
// FreeBSD's sysexits values, or the first resource's error number
// (cli/exit_status.hpp; hastctl(8), EXIT STATUS).
// cli/hastctl.cpp maps command words to these in one table.

#include "cli/common/args.hpp"

#include <string>
#include <vector>

namespace hast::cli {

using command_fn = int (*)(const cli_options &, const std::vector<std::string> &args);

/// Prints "hastctl: <message>" on stderr and returns `exit_status`: how a
/// command reports the error that ends it.
int fail(int exit_status, const std::string& message);

// Local commands (cli/common/local_commands.cpp): no daemon needed.

/// create [-e extentsize] [-k keepdirty] [-m mediasize] [-M maxsize] all|<res>...
int run_create(const cli_options &options, const std::vector<std::string> &args);
/// dump [--json] [all|<res>...]  (no operand: all)
int run_dump(const cli_options &options, const std::vector<std::string> &args);

// Daemon commands (cli/common/control_commands.cpp): over the control socket.

/// role [-f] init|primary|secondary all|<res>...
int run_role(const cli_options &options, const std::vector<std::string> &args);
/// status [--json] [all|<res>...]
int run_status(const cli_options &options, const std::vector<std::string> &args);
/// list [--json] [all|<res>...]
int run_list(const cli_options &options, const std::vector<std::string> &args);

/// events [--json] [--now] [all|<res>...]  (cli/common/events_command.cpp):
/// the state, then every state change as it happens, until interrupted.
int run_events(const cli_options& options, const std::vector<std::string>& args);

/// resync --discard-local all|<res>...  (cli/common/resync_command.cpp)
int run_resync(const cli_options& options, const std::vector<std::string>& args);
/// verify [--repair | --stop] all|<res>...  (cli/common/resync_command.cpp)
int run_verify(const cli_options& options, const std::vector<std::string>& args);
/// hastctl grow [--assume-clean] <res>...: on the primary, after both
/// nodes' providers grew (docs/METADATA.md, "Online growth").
int run_grow(const cli_options& options, const std::vector<std::string>& args);

// Block device (cli/common/attach.cpp): on the primary's node.

/// attach <res>: /dev/hast/<res> backed by the NBD export.
int run_attach(const cli_options &options, const std::vector<std::string> &args);
/// detach [-f] <res>: undoes attach (-f: even while mounted, as far as the kernel allows).
int run_detach(const cli_options &options, const std::vector<std::string> &args);

} // namespace hast::cli
