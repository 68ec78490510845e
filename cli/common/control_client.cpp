#include "cli/common/control_client.hpp"

#include "cli/exit_status.hpp"
#include "io/net/control_channel.hpp"

#include <iostream>

namespace hast::cli {

node_config load(const cli_options& options) {
  return load_config(options.config_path, select_node(options.node));
}

daemon_reply request_daemon(const cli_options& options, const nlohmann::json& request) {
  auto config = load(options);
  auto path = unix_socket_path(config.control);
  if (path.empty())
    return {{}, EX_CONFIG, "control address " + config.control + " is not a Unix socket (uds://PATH)"};
  auto reply = control::call(path, request, 150);
  if (!reply) {
    // FreeBSD's hastctl: no connection is EX_OSERR, a lost exchange
    // EX_UNAVAILABLE. control::call says which by its message.
    auto text = reply.error().message();
    bool unreachable = text.rfind("hastd is not running", 0) == 0 || text.rfind("socket:", 0) == 0
                       || text.rfind("control socket path too long", 0) == 0;
    return {{}, unreachable ? EX_OSERR : EX_UNAVAILABLE, text};
  }
  if (reply->contains("error")) {
    const auto& e = reply->at("error");
    return {{}, EX_SOFTWARE, e.is_string() ? e.get<std::string>() : e.dump()};
  }
  return {std::move(*reply), 0, ""};
}

int report_failure(const daemon_reply& reply) {
  std::cerr << "hastctl: " << reply.error << '\n';
  return reply.exit_status;
}

int report_results(const nlohmann::json& reply,
                   const std::function<void(const nlohmann::json&)>& success) {
  int rc = 0;
  for (auto& r : reply.at("results")) {
    auto err = r.value("error", "");
    if (err.empty()) {
      success(r);
      continue;
    }
    // A hastd that gives no number still fails the command.
    auto number = r.value("error_number", 0);
    if (number == 0)
      number = EX_SOFTWARE;
    std::cerr << "hastctl: " << r.value("resource", "") << ": Received error " << number
              << " from hastd: " << err << '\n';
    if (rc == 0)
      rc = number;
  }
  return rc;
}

} // namespace hast::cli
