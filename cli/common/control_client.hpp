#pragma once

#include "cli/common/args.hpp"
#include "config/config.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

namespace hast::cli {

/// Loads the configuration the options name. Throws config_error; hastctl's
/// main turns it into EX_OSFILE or EX_CONFIG (cli/exit_status.hpp).
node_config load(const cli_options& options);

/// hastd's answer to one request, or why there is none: `error` for stderr
/// and FreeBSD's exit status for it (EX_CONFIG: the control address is not a
/// Unix socket; EX_OSERR: hastd cannot be reached (not running);
/// EX_UNAVAILABLE: the request or the reply was lost; EX_SOFTWARE: hastd
/// refused the request as a whole).
struct daemon_reply {
  nlohmann::json body;
  int exit_status = 0;
  std::string error;

  explicit operator bool() const { return exit_status == 0; }
};

/// Sends one request to the daemon named by the configuration's control
/// address.
daemon_reply request_daemon(const cli_options& options, const nlohmann::json& request);

/// Prints why a request failed ("hastctl: <error>") and returns its exit status.
int report_failure(const daemon_reply& reply);

/// Prints a per-resource reply ("results": [{"resource", "error",
/// "error_number", ...}]): each error on stderr as FreeBSD's hastctl warns
/// ("hastctl: <resource>: Received error <n> from hastd: <error>"), each
/// success through `success`. Returns the first error number, as FreeBSD's
/// hastctl exits with it (0 when every resource succeeded).
int report_results(const nlohmann::json& reply,
                   const std::function<void(const nlohmann::json&)>& success);

} // namespace hast::cli
