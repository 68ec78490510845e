// hastctl's commands that talk to hastd over the control socket: role,
// status, list. Output formats follow FreeBSD's hastctl (SPEC.md).

#include "cli/common/commands.hpp"
#include "cli/common/control_client.hpp"
#include "io/size.hpp"
#include "messages/status.hpp"

#include <cstdio>
#include <iostream>

namespace hast::cli {

namespace {

int fail(const std::string& message) {
  std::cerr << "hastctl: " << message << '\n';
  return 1;
}

std::string clock(uint64_t seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu",
                static_cast<unsigned long long>(seconds / 3600),
                static_cast<unsigned long long>(seconds / 60 % 60),
                static_cast<unsigned long long>(seconds % 60));
  return buf;
}

std::string eta(const sync_progress& s) {
  if (!s.active || s.bytes_per_second == 0 || s.total_bytes <= s.done_bytes)
    return "-";
  return clock((s.total_bytes - s.done_bytes) / s.bytes_per_second);
}

/// "verify: running 45.0% (...)" or the outcome of the last one.
void print_verify(const verify_progress& v) {
  if (v.outcome == "none") {
    std::cout << "  verify: none\n";
    return;
  }
  auto pct = v.total_bytes == 0 ? 100.0 : 100.0 * v.done_bytes / v.total_bytes;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s%s %.1f%% (%s of %s, %s/s, ETA %s), %llu differing blocks",
                v.outcome.c_str(), v.repair ? " (repair)" : "", pct,
                humanize(v.done_bytes).c_str(), humanize(v.total_bytes).c_str(),
                humanize(v.bytes_per_second).c_str(), v.active ? clock(v.eta_seconds).c_str() : "-",
                static_cast<unsigned long long>(v.differing_blocks));
  std::cout << "  verify: " << buf;
  if (v.skipped_bytes > 0)
    std::cout << ", " << humanize(v.skipped_bytes) << " skipped (dirty)";
  if (v.repair)
    std::cout << ", " << humanize(v.repaired_bytes) << " repaired";
  std::cout << "\n";
  for (auto& d : v.differences)
    std::cout << "    differs: offset " << d.offset << " length " << d.length << "\n";
  if (v.differences_truncated)
    std::cout << "    (more differences are in the log)\n";
}

void print_list(const resource_status& r) {
  auto& c = r.counters;
  std::cout << r.name << ":\n"
            << "  role: " << to_string(r.current_role) << "\n"
            << "  provname: " << r.provider_name << "\n"
            << "  localpath: " << r.local << "\n"
            << "  extentsize: " << r.extent_size << " (" << humanize(r.extent_size) << ")\n"
            << "  keepdirty: " << r.keepdirty << "\n"
            << "  remoteaddr: " << r.remote << "\n";
  if (!r.source.empty())
    std::cout << "  sourceaddr: " << r.source << "\n";
  std::cout << "  replication: " << to_string(r.replication) << "\n"
            << "  checksum: " << to_string(r.checksum) << "\n"
            << "  compression: " << to_string(r.compression) << "\n"
            << "  status: " << r.status << "\n"
            << "  nbd: " << r.nbd << " (" << r.nbd_connections << " client(s))\n"
            << "  datasize: " << r.datasize << " (" << humanize(r.datasize) << ")\n"
            << "  dirty: " << r.dirty_bytes << " (" << humanize(r.dirty_bytes) << ")\n";
  if (r.sync.active) {
    auto pct = r.sync.total_bytes == 0 ? 100.0 : 100.0 * r.sync.done_bytes / r.sync.total_bytes;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s %.1f%% (%s of %s, %s/s, ETA %s)", r.sync.direction.c_str(),
                  pct, humanize(r.sync.done_bytes).c_str(), humanize(r.sync.total_bytes).c_str(),
                  humanize(r.sync.bytes_per_second).c_str(), eta(r.sync).c_str());
    std::cout << "  synchronization: " << buf << "\n";
  } else {
    std::cout << "  synchronization: idle\n";
  }
  print_verify(r.verify);
  if (!r.last_error.empty())
    std::cout << "  error: " << r.last_error << "\n";
  std::cout << "  statistics:\n"
            << "    reads: " << c.reads << "\n"
            << "    writes: " << c.writes << "\n"
            << "    deletes: " << c.deletes << "\n"
            << "    flushes: " << c.flushes << "\n"
            << "    activemap updates: " << c.activemap_updates << "\n"
            << "    local errors: read: " << c.read_errors << ", write: " << c.write_errors
            << ", delete: " << c.delete_errors << ", flush: " << c.flush_errors << "\n"
            << "    queues: local: " << r.queue_local << ", send: " << r.queue_send
            << ", recv: " << r.queue_recv << "\n";
}

void print_status_row(const resource_status& r) {
  auto status = r.status;
  if (r.sync.active)
    status = "syncing";
  std::printf("%s\t", r.name.c_str());
  // FreeBSD's columns; a longer word ("split-brain") keeps one space.
  std::printf("%-9s", (status.size() >= 9 ? status + " " : status).c_str());
  std::printf("%-15s", to_string(r.current_role).c_str());
  std::printf("%s\t", r.local.c_str());
  std::printf("%s\n", r.remote.c_str());
}

int query(const cli_options& options, const std::vector<std::string>& operands, bool list) {
  auto reply = request_daemon(options, {{"command", "status"}, {"resources", operands}});
  if (!reply)
    return fail(reply.error().message());
  if (options.json) {
    std::cout << reply->dump(2) << '\n';
    return 0;
  }
  if (!list)
    std::printf("Name\tStatus\t Role\t\tComponents\n");
  for (auto& entry : reply->at("resources")) {
    auto r = status_from_json(entry);
    if (list)
      print_list(r);
    else
      print_status_row(r);
  }
  std::fflush(stdout);
  return 0;
}

} // namespace

int run_status(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json"}, error);
  if (!parsed)
    return fail("status: " + error);
  auto opts = options;
  opts.json = opts.json || !parsed->flags.empty();
  return query(opts, parsed->operands, false);
}

int run_list(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json"}, error);
  if (!parsed)
    return fail("list: " + error);
  auto opts = options;
  opts.json = opts.json || !parsed->flags.empty();
  return query(opts, parsed->operands, true);
}

int run_role(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "f", {"--force"}, error);
  if (!parsed)
    return fail("role: " + error);
  auto& ops = parsed->operands;
  if (ops.size() < 2)
    return fail("role: expected 'role init|primary|secondary all|<resource>...'");
  if (!parse_role(ops[0]))
    return fail("role: unknown role '" + ops[0] + "' (expected init, primary or secondary)");
  bool force = !parsed->options.empty() || !parsed->flags.empty();
  std::vector<std::string> names(ops.begin() + 1, ops.end());
  auto reply = request_daemon(
    options, {{"command", "role"}, {"role", ops[0]}, {"resources", names}, {"force", force}});
  if (!reply)
    return fail(reply.error().message());
  return report_results(*reply, [&](const nlohmann::json& r) {
    if (options.debug > 0)
      std::cout << r.value("resource", "") << ": " << r.value("previous", "") << " -> " << ops[0]
                << '\n';
  });
}

} // namespace hast::cli
