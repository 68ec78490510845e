// hastctl attach/detach: /dev/hast/<name> by hand, for resources with
// `device off` (with `device on`, hastd makes and removes it on role
// changes). The work is io/process/block_device's: kernel nbd-client where the nbd
// module exists, otherwise nbdfuse + a loop device, recorded in
// /run/hast/attach/<name>/.

#include "cli/common/commands.hpp"
#include "cli/common/control_client.hpp"
#include "cli/exit_status.hpp"
#include "io/process/block_device.hpp"

#include <iostream>
#include <optional>

namespace hast::cli {

namespace {

/// The device name of a resource on this node: its `name` option.
std::string link_name_of(const resource_config& res) {
  return res.provider_name.empty() ? res.name : res.provider_name;
}

std::string describe(const made_device& d) {
  return d.link + " -> " + d.device;
}

} // namespace

int run_attach(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {}, error);
  if (!parsed)
    return fail(EX_USAGE, "attach: " + error);
  if (parsed->operands.size() != 1)
    return fail(EX_USAGE, "attach: expected exactly one resource name");
  auto name = parsed->operands[0];
  auto config = load(options);
  auto res = config.find(name);
  if (res == nullptr)
    return fail(EX_DATAERR, "attach: unknown resource '" + name + "'");
  auto reply = request_daemon(options, {{"command", "status"}, {"resources", {name}}});
  if (!reply)
    return report_failure(reply);
  auto row = reply.body.at("resources").at(0);
  auto role = row.value("role", "init");
  if (role != "primary")
    return fail(EX_UNAVAILABLE, "attach: resource " + name + " is " + role + ", not primary");
  auto link_name = link_name_of(*res);
  auto existing = find_device(link_name);
  if (res->device) {
    // hastd makes the device itself on `role primary`.
    if (existing) {
      std::cout << describe(*existing) << " (already there: hastd made it, resource " << name
                << " has 'device on')\n";
      return 0;
    }
    auto why = row.value("device_error", "");
    if (!why.empty())
      return fail(EX_UNAVAILABLE, "attach: hastd could not make " + std::string{device_link_root} + "/" + link_name
                  + ": " + why);
    return fail(EX_UNAVAILABLE, "attach: resource " + name + " has 'device on': hastd makes "
                + std::string{device_link_root} + "/" + link_name + " itself, and it is not there yet");
  }
  if (existing)
    return fail(EX_UNAVAILABLE, "attach: " + name + " is already attached (" + describe(*existing)
                + "); run 'hastctl detach " + name + "' first");
  // Limited to the data size, so that hastd grows it in place on `hastctl
  // grow` (io/process/block_device.hpp, resize_device).
  auto size = row.value("datasize", uint64_t{0});
  auto made = make_device(link_name, res->name, res->nbd, helper_lifetime::outlives_caller, size);
  if (!made)
    return fail(made.error().code() == errc::busy ? EX_UNAVAILABLE : EX_OSERR,
                "attach: " + made.error().message());
  std::cout << describe(*made) << '\n';
  // A grow that finished while the device was being made found nothing to
  // grow: catch up with it.
  auto again = request_daemon(options, {{"command", "status"}, {"resources", {name}}});
  if (again && size != 0) {
    auto now = again.body.at("resources").at(0).value("datasize", size);
    if (now > size)
      if (auto st = resize_device(link_name, now); !st)
        std::cerr << "hastctl: attach: the resource grew to " << now << " bytes meanwhile, but "
                  << st.detail() << '\n';
  }
  return 0;
}

int run_detach(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "f", {}, error);
  if (!parsed)
    return fail(EX_USAGE, "detach: " + error);
  if (parsed->operands.size() != 1)
    return fail(EX_USAGE, "detach: expected exactly one resource name");
  bool force = !parsed->options.empty();
  auto name = parsed->operands[0];
  // The resource's `name` when the configuration knows it; otherwise the
  // operand itself, so that a device outlives a configuration change
  // without becoming impossible to remove.
  auto link_name = name;
  std::optional<node_config> config;
  try {
    config = load(options);
  } catch (const config_error&) {
  }
  if (config) {
    if (auto res = config->find(name)) {
      link_name = link_name_of(*res);
      if (res->device && device_recorded(link_name)) {
        auto reply = request_daemon(options, {{"command", "status"}, {"resources", {name}}});
        if (reply && reply.body.at("resources").at(0).value("role", "init") == "primary")
          return fail(EX_UNAVAILABLE, "detach: " + std::string{device_link_root} + "/" + link_name
                      + " belongs to hastd (resource " + name + " has 'device on'); 'hastctl role "
                      + "init " + name + "' removes it");
      }
    }
  }
  if (!device_recorded(link_name))
    return fail(EX_UNAVAILABLE, "detach: " + name + " is not attached");
  auto removed = remove_device(link_name, force);
  if (!removed)
    return fail(removed.code() == errc::busy ? EX_UNAVAILABLE : EX_OSERR,
                "detach: " + removed.message());
  if (!removed.detail().empty())
    std::cerr << "hastctl: detach: " << removed.detail() << '\n';
  return 0;
}

} // namespace hast::cli
