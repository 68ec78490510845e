#pragma once

#include "cli/common/args.hpp"
#include "config/config.hpp"
#include "messages/errc.hpp"

#include <nlohmann/json.hpp>

#include <functional>

namespace hast::cli {

/// Loads the configuration the options name (config errors become status).
result<node_config> load(const cli_options& options);

/// Sends one request to the daemon named by the configuration's control
/// address. A reply carrying "error" becomes an error status.
result<nlohmann::json> request_daemon(const cli_options& options, const nlohmann::json& request);

/// Prints a per-resource reply ("results": [{"resource", "error", ...}]):
/// each error on stderr as "hastctl: <resource>: <error>", each success
/// through `success`. Returns the exit status (1 if any resource failed).
int report_results(const nlohmann::json& reply,
                   const std::function<void(const nlohmann::json&)>& success);

} // namespace hast::cli
