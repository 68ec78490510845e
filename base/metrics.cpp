#include "base/metrics.hpp"

#include <fmt/format.h>

#include <functional>

namespace hast {

namespace {

std::string escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

/// A number as Prometheus reads it (integers exactly, the rest as %g).
std::string number(double v) {
  return fmt::format("{}", v);
}

/// One metric family: HELP, TYPE, then a series per resource (or more).
class family {
public:
  family(std::string& out, std::string name, const char* type, const char* help)
    : out_(out), name_(std::move(name)) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name_, help, name_, type);
  }

  void add(const resource_status& r, double value, const std::string& more_labels = "") {
    series(name_, "resource=\"" + escape(r.name) + "\"" + more_labels, value);
  }

  void histogram(const resource_status& r, const latency_histogram& h,
                 const std::string& more_labels = "") {
    const auto labels = "resource=\"" + escape(r.name) + "\"" + more_labels;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < latency_histogram::bounds.size(); ++i) {
      cumulative += h.counts[i];
      series(name_ + "_bucket",
             labels + ",le=\"" + number(latency_histogram::bounds[i]) + "\"", double(cumulative));
    }
    series(name_ + "_bucket", labels + ",le=\"+Inf\"", double(h.count));
    series(name_ + "_sum", labels, h.sum);
    series(name_ + "_count", labels, double(h.count));
  }

  void series(const std::string& name, const std::string& labels, double value) {
    out_ += fmt::format("{}{{{}}} {}\n", name, labels, number(value));
  }

private:
  std::string& out_;
  std::string name_;
};

std::string label(const char* key, const std::string& value) {
  return fmt::format(",{}=\"{}\"", key, escape(value));
}

using resources_t = std::vector<resource_status>;

/// A family with one value per data resource (witness records have none).
void per_resource(std::string& out, const resources_t& rs, const char* name, const char* type,
                  const char* help, const std::function<double(const resource_status&)>& value) {
  family f{out, name, type, help};
  for (const auto& r : rs)
    if (r.error == 0 && !r.witness_node)
      f.add(r, value(r));
}

/// A family with one series per data resource and value of label `key`.
void per_label(std::string& out, const resources_t& rs, const char* name, const char* type,
               const char* help, const char* key,
               std::initializer_list<std::pair<const char*, std::function<double(const resource_status&)>>>
                 values) {
  family f{out, name, type, help};
  for (const auto& r : rs)
    if (r.error == 0 && !r.witness_node)
      for (const auto& [value, get] : values)
        f.add(r, get(r), label(key, value));
}

} // namespace

std::string render_metrics(const resources_t& rs, const std::string& version) {
  std::string out;
  {
    family f{out, "hast_build_info", "gauge", "The hastd serving these metrics (always 1)."};
    f.series("hast_build_info", "version=\"" + escape(version) + "\"", 1);
  }
  {
    family f{out, "hast_role", "gauge", "1 for the resource's current role on this node, else 0."};
    for (const auto& r : rs) {
      if (r.error != 0)
        continue;
      const std::string current = r.witness_node ? "witness" : to_string(r.current_role);
      for (const char* name : {"init", "primary", "secondary", "witness"})
        f.add(r, current == name ? 1 : 0, label("role", name));
    }
  }
  {
    // A resource with `remote none` has no link to speak of: no series.
    family f{out, "hast_connected", "gauge", "1 while the link to the other data node is up."};
    for (const auto& r : rs)
      if (r.error == 0 && !r.witness_node && r.remote != "none")
        f.add(r, r.connected ? 1 : 0);
  }
  per_resource(out, rs, "hast_split_brain", "gauge", "1 once both nodes were written apart.",
               [](auto& r) { return r.split_brain ? 1 : 0; });
  per_resource(out, rs, "hast_local_failing", "gauge",
               "1 while the local disk fails writes (they complete on the secondary).",
               [](auto& r) { return r.local_failing ? 1 : 0; });
  per_resource(out, rs, "hast_size_bytes", "gauge", "Size of the replicated data.",
               [](auto& r) { return double(r.datasize); });
  per_resource(out, rs, "hast_dirty_bytes", "gauge",
               "Bytes marked out of sync with the other node (activemap).",
               [](auto& r) { return double(r.dirty_bytes); });
  per_resource(out, rs, "hast_sync_active", "gauge", "1 while a resynchronization runs.",
               [](auto& r) { return r.sync.active ? 1 : 0; });
  per_resource(out, rs, "hast_sync_remaining_bytes", "gauge",
               "Bytes the running resynchronization still has to copy.", [](auto& r) {
                 return r.sync.active && r.sync.total_bytes > r.sync.done_bytes
                            ? double(r.sync.total_bytes - r.sync.done_bytes) : 0.0;
               });
  per_resource(out, rs, "hast_sync_progress_ratio", "gauge",
               "Done share of the running resynchronization (1 when none runs).", [](auto& r) {
                 return r.sync.active && r.sync.total_bytes > 0
                            ? double(r.sync.done_bytes) / double(r.sync.total_bytes) : 1.0;
               });
  per_resource(out, rs, "hast_synced_bytes_total", "counter",
               "Bytes copied by resynchronizations since hastd started.",
               [](auto& r) { return double(r.synced_bytes); });
  per_resource(out, rs, "hast_nbd_connections", "gauge", "Open NBD client connections.",
               [](auto& r) { return double(r.nbd_connections); });
  using value_of = std::function<double(const resource_status&)>;
  auto counter = [](uint64_t resource_counters::*field) -> value_of {
    return [field](const resource_status& r) { return double(r.counters.*field); };
  };
  per_label(out, rs, "hast_queue_requests", "gauge", "Requests in each queue of the resource.", "queue",
            {{"local", [](auto& r) { return double(r.queue_local); }},
             {"send", [](auto& r) { return double(r.queue_send); }},
             {"recv", [](auto& r) { return double(r.queue_recv); }},
             {"done", [](auto& r) { return double(r.queue_done); }},
             {"idle", [](auto& r) { return double(r.queue_idle); }}});
  per_label(out, rs, "hast_requests_total", "counter", "Client requests served, by operation.", "op",
            {{"read", counter(&resource_counters::reads)},
             {"write", counter(&resource_counters::writes)},
             {"trim", counter(&resource_counters::deletes)},
             {"flush", counter(&resource_counters::flushes)}});
  per_label(out, rs, "hast_request_bytes_total", "counter", "Bytes of client requests, by operation.",
            "op",
            {{"read", counter(&resource_counters::read_bytes)},
             {"write", counter(&resource_counters::write_bytes)},
             {"trim", counter(&resource_counters::delete_bytes)}});
  per_label(out, rs, "hast_request_errors_total", "counter",
            "Requests the local disk failed, by operation.", "op",
            {{"read", counter(&resource_counters::read_errors)},
             {"write", counter(&resource_counters::write_errors)},
             {"trim", counter(&resource_counters::delete_errors)},
             {"flush", counter(&resource_counters::flush_errors)}});
  per_resource(out, rs, "hast_remote_errors_total", "counter",
               "Replicated requests the secondary failed or the link lost.",
               [](auto& r) { return double(r.counters.remote_errors); });
  per_resource(out, rs, "hast_activemap_writes_total", "counter",
               "Writes of the activemap and metadata to the local disk.",
               [](auto& r) { return double(r.counters.activemap_updates); });
  {
    family f{out, "hast_request_duration_seconds", "histogram",
             "Client requests from arrival at the export to the answer, by operation."};
    for (const auto& r : rs)
      if (r.error == 0 && !r.witness_node)
        for (size_t op = 0; op < io_op_count; ++op)
          f.histogram(r, r.client_latency[op], label("op", io_op_names[op]));
  }
  {
    family f{out, "hast_replication_ack_duration_seconds", "histogram",
             "Client writes from sending to the secondary until it reports them written."};
    for (const auto& r : rs)
      if (r.error == 0 && !r.witness_node)
        f.histogram(r, r.replication_latency);
  }
  {
    family f{out, "hast_witness_connected", "gauge",
             "failover auto: 1 while the link to the witness is up."};
    for (const auto& r : rs)
      if (r.error == 0 && !r.witness_node && r.failover == "auto")
        f.add(r, r.witness == "connected" ? 1 : 0);
  }
  {
    family f{out, "hast_lease_held", "gauge", "failover auto: 1 while this node holds the lease."};
    for (const auto& r : rs)
      if (r.error == 0 && !r.witness_node && r.failover == "auto")
        f.add(r, r.lease == "held" ? 1 : 0);
  }
  return out;
}

} // namespace hast
