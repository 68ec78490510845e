#include "cli/common/control_client.hpp"

#include "io/control_channel.hpp"

#include <iostream>

namespace hast::cli {

result<node_config> load(const cli_options& options) {
  try {
    return load_config(options.config_path, select_node(options.node));
  } catch (const config_error& e) {
    return status{errc::invalid_argument, e.what()};
  }
}

result<nlohmann::json> request_daemon(const cli_options& options, const nlohmann::json& request) {
  auto config = load(options);
  if (!config)
    return config.error();
  auto path = unix_socket_path(config->control);
  if (path.empty())
    return status{errc::invalid_argument, "control address " + config->control
                                            + " is not a Unix socket (uds://PATH)"};
  auto reply = control::call(path, request, 150);
  if (!reply)
    return reply.error();
  if (reply->contains("error"))
    return status{errc::invalid_argument, reply->at("error").get<std::string>()};
  return reply;
}

int report_results(const nlohmann::json& reply,
                   const std::function<void(const nlohmann::json&)>& success) {
  int rc = 0;
  for (auto& r : reply.at("results")) {
    auto err = r.value("error", "");
    if (!err.empty()) {
      std::cerr << "hastctl: " << r.value("resource", "") << ": " << err << '\n';
      rc = 1;
    } else {
      success(r);
    }
  }
  return rc;
}

} // namespace hast::cli
