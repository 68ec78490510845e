// hastctl's commands that talk to hastd over the control socket: role,
// status, list. Output formats follow FreeBSD's hastctl (SPEC.md).

#include "cli/common/commands.hpp"
#include "cli/common/control_client.hpp"
#include "cli/exit_status.hpp"
#include "io/codec/size.hpp"
#include "base/status.hpp"

#include <cstdio>
#include <iostream>

namespace hast::cli {

namespace {

/// A command line hastctl cannot act on: EX_USAGE, as FreeBSD's usage().
int usage_error(const std::string& message) {
  std::cerr << "hastctl: " << message << '\n';
  return EX_USAGE;
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

/// The Status column and `status:` line carry only FreeBSD's words.
std::string freebsd_status(const std::string& status) {
  if (status == "complete" || status == "degraded" || status == "-")
    return status;
  if (status.empty())
    return "-";
  return "degraded";
}

std::string yes_no(bool b) {
  return b ? "yes" : "no";
}

std::string device_line(const resource_status& r) {
  if (!r.device.empty())
    return r.device;
  if (!r.device_error.empty())
    return "none (" + r.device_error + ")";
  return "none";
}

std::string local_disk_line(const resource_status& r) {
  if (!r.local_failing)
    return "ok";
  return "failing (" + std::to_string(r.counters.write_errors)
         + " write errors); writes complete on the secondary";
}

std::string role_name(const resource_status& r) {
  return r.witness_node ? std::string{"witness"} : to_string(r.current_role);
}

std::string lease_line(const resource_status& r) {
  auto text = r.lease;
  if (r.lease_remaining_ms > 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, ", %.1f s left", static_cast<double>(r.lease_remaining_ms) / 1000.0);
    text += buf;
  }
  if (!r.lease_holder.empty())
    text += " (holder " + r.lease_holder + ", epoch " + std::to_string(r.lease_epoch) + ")";
  if (r.lease_waiting_writes + r.lease_waiting_reads > 0)
    text += "; waiting: " + std::to_string(r.lease_waiting_writes) + " write(s), "
            + std::to_string(r.lease_waiting_reads) + " read(s)";
  return text;
}

/// A witness node's view of a resource: who holds the lease, who is connected.
void print_witness(const resource_status& r) {
  std::string members;
  for (auto& m : r.members_connected)
    members += (members.empty() ? "" : ", ") + m;
  std::cout << "  role: witness\n"
            << "  state file: " << r.local << "\n"
            << "  workerpid: " << r.workerpid << "\n"
            << "  lease: " << lease_line(r) << "\n"
            << "  record: " << r.eligibility << "\n"
            << "  connected nodes: " << (members.empty() ? "none" : members) << "\n";
}

// FreeBSD's control_list() block first, field for field, then hast's own
// fields, each "  key: value".
void print_list(const resource_status& r) {
  std::printf("%s:\n", r.name.c_str());
  if (r.error != 0) {
    std::printf("  error: %d\n", r.error);
    if (!r.last_error.empty())
      std::printf("  reason: %s\n", r.last_error.c_str());
    return;
  }
  if (r.witness_node)
    return print_witness(r);
  auto& c = r.counters;
  std::cout << "  role: " << to_string(r.current_role) << "\n"
            << "  provname: " << r.provider_name << "\n"
            << "  localpath: " << r.local << "\n"
            << "  extentsize: " << r.extent_size << " (" << humanize_number(r.extent_size) << ")\n"
            << "  keepdirty: " << r.keepdirty << "\n"
            << "  remoteaddr: " << r.remote << "\n";
  if (!r.source.empty())
    std::cout << "  sourceaddr: " << r.source << "\n";
  std::cout << "  replication: " << to_string(r.replication) << "\n";
  if (r.current_role != role::init)
    std::cout << "  status: " << freebsd_status(r.status) << "\n";
  if (r.workerpid != 0)
    std::cout << "  workerpid: " << r.workerpid << "\n";
  std::cout << "  dirty: " << r.dirty_bytes << " (" << humanize_number(r.dirty_bytes) << ")\n"
            << "  statistics:\n"
            << "    reads: " << c.reads << "\n"
            << "    writes: " << c.writes << "\n"
            << "    deletes: " << c.deletes << "\n"
            << "    flushes: " << c.flushes << "\n"
            << "    activemap updates: " << c.activemap_updates << "\n"
            << "    local errors: read: " << c.read_errors << ", write: " << c.write_errors
            << ", delete: " << c.delete_errors << ", flush: " << c.flush_errors << "\n"
            << "    queues: local: " << r.queue_local << ", send: " << r.queue_send
            << ", recv: " << r.queue_recv << ", done: " << r.queue_done
            << ", idle: " << r.queue_idle << "\n";
  std::cout << "  checksum: " << to_string(r.checksum) << "\n"
            << "  compression: " << to_string(r.compression) << "\n"
            << "  connected: " << yes_no(r.connected) << "\n"
            << "  split brain: " << yes_no(r.split_brain) << "\n"
            << "  datasize: " << r.datasize << " (" << humanize_number(r.datasize) << ")\n"
            << "  nbd: " << r.nbd << " (" << r.nbd_connections << " client(s))\n"
            << "  device: " << device_line(r) << "\n"
            << "  local disk: " << local_disk_line(r) << "\n";
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
  // Only with failover auto: FreeBSD's block stays as it was otherwise.
  if (r.failover == "auto")
    std::cout << "  failover: auto\n"
              << "  witness: " << r.witness << " (" << r.witness_address << ")\n"
              << "  lease: " << lease_line(r) << "\n"
              << "  eligible: " << yes_no(r.eligible) << " (" << r.eligibility << ")\n";
  if (!r.last_error.empty())
    std::cout << "  error: " << r.last_error << "\n";
}

// FreeBSD's control_status() row, byte for byte.
void print_status_row(const resource_status& r) {
  std::printf("%s\t", r.name.c_str());
  if (r.error != 0) {
    std::printf("ERR%d\n", r.error);
    return;
  }
  std::printf("%-9s", freebsd_status(r.status).c_str());
  std::printf("%-15s", role_name(r).c_str());
  std::printf("%s\t", r.local.c_str());
  std::printf("%s\n", r.remote.c_str());
}

/// Prints the daemon's answer as `status` or `list`; exits with the first
/// resource's error number, as FreeBSD's hastctl does. A name hastd does not
/// know is one such resource (error 1), not a failure of the whole request.
/// --json (not FreeBSD's) exits 0 once hastd answered: each entry carries
/// its own "error", and scripts read the document whole.
int query(const cli_options& options, const std::vector<std::string>& operands, bool list) {
  auto reply = request_daemon(options, {{"command", "status"}, {"resources", operands}});
  if (!reply)
    return report_failure(reply);
  if (options.json) {
    std::cout << reply.body.dump(2) << '\n';
    return 0;
  }
  int rc = 0;
  for (auto& entry : reply.body.at("resources"))
    if (auto error = entry.value("error", 0); rc == 0 && error != 0)
      rc = error;
  bool header = false;
  // In the daemon's order (its configuration file's), not sorted.
  for (auto& entry : reply.body.at("resources")) {
    auto r = status_from_json(entry);
    if (list) {
      print_list(r);
      continue;
    }
    if (!header) {
      std::printf("Name\tStatus\t Role\t\tComponents\n");
      header = true;
    }
    print_status_row(r);
  }
  std::fflush(stdout);
  return rc;
}

} // namespace

int run_status(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json"}, error);
  if (!parsed)
    return usage_error("status: " + error);
  auto opts = options;
  opts.json = opts.json || !parsed->flags.empty();
  return query(opts, parsed->operands, false);
}

int run_list(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {"--json"}, error);
  if (!parsed)
    return usage_error("list: " + error);
  auto opts = options;
  opts.json = opts.json || !parsed->flags.empty();
  return query(opts, parsed->operands, true);
}

int run_role(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "f", {"--force"}, error);
  if (!parsed)
    return usage_error("role: " + error);
  auto& ops = parsed->operands;
  if (ops.size() < 2)
    return usage_error("role: expected 'role init|primary|secondary all|<resource>...'");
  if (!parse_role(ops[0]))
    return usage_error("role: unknown role '" + ops[0] + "' (expected init, primary or secondary)");
  bool force = !parsed->options.empty() || !parsed->flags.empty();
  std::vector<std::string> names(ops.begin() + 1, ops.end());
  auto reply = request_daemon(
    options, {{"command", "role"}, {"role", ops[0]}, {"resources", names}, {"force", force}});
  if (!reply)
    return report_failure(reply);
  return report_results(reply.body, [&](const nlohmann::json& r) {
    if (options.debug > 0)
      std::cout << r.value("resource", "") << ": " << r.value("previous", "") << " -> " << ops[0]
                << '\n';
  });
}

} // namespace hast::cli
