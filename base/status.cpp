#include "base/status.hpp"

namespace hast {

namespace {

nlohmann::json verify_json(const verify_progress& v) {
  auto ranges = nlohmann::json::array();
  for (auto& r : v.differences)
    ranges.push_back({{"offset", r.offset}, {"length", r.length}});
  return {{"active", v.active},
          {"repair", v.repair},
          {"outcome", v.outcome},
          {"done_bytes", v.done_bytes},
          {"total_bytes", v.total_bytes},
          {"skipped_bytes", v.skipped_bytes},
          {"bytes_per_second", v.bytes_per_second},
          {"eta_seconds", v.eta_seconds},
          {"block_size", v.block_size},
          {"differing_blocks", v.differing_blocks},
          {"repaired_bytes", v.repaired_bytes},
          {"differences", ranges},
          {"differences_truncated", v.differences_truncated}};
}

verify_progress verify_from_json(const nlohmann::json& j) {
  verify_progress v;
  v.active = j.value("active", false);
  v.repair = j.value("repair", false);
  v.outcome = j.value("outcome", "none");
  v.done_bytes = j.value("done_bytes", uint64_t{0});
  v.total_bytes = j.value("total_bytes", uint64_t{0});
  v.skipped_bytes = j.value("skipped_bytes", uint64_t{0});
  v.bytes_per_second = j.value("bytes_per_second", uint64_t{0});
  v.eta_seconds = j.value("eta_seconds", uint64_t{0});
  v.block_size = j.value("block_size", uint32_t{0});
  v.differing_blocks = j.value("differing_blocks", uint64_t{0});
  v.repaired_bytes = j.value("repaired_bytes", uint64_t{0});
  if (auto d = j.find("differences"); d != j.end() && d->is_array())
    for (auto& r : *d)
      v.differences.push_back({r.value("offset", uint64_t{0}), r.value("length", uint64_t{0})});
  v.differences_truncated = j.value("differences_truncated", false);
  return v;
}

} // namespace

nlohmann::json to_json(const resource_status& x) {
  const auto& c = x.counters;
  return {
    {"name", x.name},
    {"error", x.error},
    {"provider_name", x.provider_name},
    {"role", x.witness_node ? std::string{"witness"} : to_string(x.current_role)},
    {"status", x.status},
    {"workerpid", x.workerpid},
    {"connected", x.connected},
    {"local", x.local},
    {"remote", x.remote},
    {"source", x.source},
    {"nbd", x.nbd},
    {"replication", to_string(x.replication)},
    {"checksum", to_string(x.checksum)},
    {"compression", to_string(x.compression)},
    {"datasize", x.datasize},
    {"extent_size", x.extent_size},
    {"keepdirty", x.keepdirty},
    {"dirty_bytes", x.dirty_bytes},
    {"synced_bytes", x.synced_bytes},
    {"split_brain", x.split_brain},
    {"nbd_connections", x.nbd_connections},
    {"queues",
     {{"local", x.queue_local},
      {"send", x.queue_send},
      {"recv", x.queue_recv},
      {"done", x.queue_done},
      {"idle", x.queue_idle}}},
    {"local_failing", x.local_failing},
    {"device", x.device},
    {"device_error", x.device_error},
    {"failover", x.failover},
    {"witness_node", x.witness_node},
    {"witness", x.witness},
    {"witness_address", x.witness_address},
    {"lease", x.lease},
    {"lease_remaining_ms", x.lease_remaining_ms},
    {"lease_holder", x.lease_holder},
    {"lease_epoch", x.lease_epoch},
    {"lease_waiting_writes", x.lease_waiting_writes},
    {"lease_waiting_reads", x.lease_waiting_reads},
    {"eligible", x.eligible},
    {"eligibility", x.eligibility},
    {"members_connected", x.members_connected},
    {"sync",
     {{"active", x.sync.active},
      {"direction", x.sync.direction},
      {"done_bytes", x.sync.done_bytes},
      {"total_bytes", x.sync.total_bytes},
      {"bytes_per_second", x.sync.bytes_per_second}}},
    {"verify", verify_json(x.verify)},
    {"counters",
     {{"reads", c.reads},
      {"writes", c.writes},
      {"deletes", c.deletes},
      {"flushes", c.flushes},
      {"activemap_updates", c.activemap_updates},
      {"read_errors", c.read_errors},
      {"write_errors", c.write_errors},
      {"delete_errors", c.delete_errors},
      {"flush_errors", c.flush_errors},
      {"read_bytes", c.read_bytes},
      {"write_bytes", c.write_bytes},
      {"delete_bytes", c.delete_bytes},
      {"remote_errors", c.remote_errors}}},
    {"last_error", x.last_error},
  };
}

resource_status status_from_json(const nlohmann::json& j) {
  resource_status x;
  x.name = j.value("name", "");
  x.error = j.value("error", 0);
  x.provider_name = j.value("provider_name", "");
  x.current_role = parse_role(j.value("role", "init")).value_or(role::init);
  x.status = j.value("status", "-");
  x.workerpid = j.value("workerpid", uint64_t{0});
  x.connected = j.value("connected", false);
  x.local = j.value("local", "");
  x.remote = j.value("remote", "");
  x.source = j.value("source", "");
  x.nbd = j.value("nbd", "");
  x.replication = parse_replication(j.value("replication", "memsync")).value_or(replication_mode::memsync);
  x.checksum = parse_checksum(j.value("checksum", "none")).value_or(checksum_kind::none);
  x.compression = parse_compression(j.value("compression", "none")).value_or(compression_kind::none);
  x.datasize = j.value("datasize", uint64_t{0});
  x.extent_size = j.value("extent_size", uint32_t{0});
  x.keepdirty = j.value("keepdirty", uint32_t{0});
  x.dirty_bytes = j.value("dirty_bytes", uint64_t{0});
  x.synced_bytes = j.value("synced_bytes", uint64_t{0});
  x.split_brain = j.value("split_brain", false);
  x.nbd_connections = j.value("nbd_connections", uint64_t{0});
  if (auto q = j.find("queues"); q != j.end()) {
    x.queue_local = q->value("local", uint64_t{0});
    x.queue_send = q->value("send", uint64_t{0});
    x.queue_recv = q->value("recv", uint64_t{0});
    x.queue_done = q->value("done", uint64_t{0});
    x.queue_idle = q->value("idle", uint64_t{0});
  }
  x.local_failing = j.value("local_failing", false);
  x.device = j.value("device", "");
  x.device_error = j.value("device_error", "");
  x.failover = j.value("failover", "manual");
  x.witness_node = j.value("witness_node", false);
  x.witness = j.value("witness", "");
  x.witness_address = j.value("witness_address", "");
  x.lease = j.value("lease", "");
  x.lease_remaining_ms = j.value("lease_remaining_ms", uint64_t{0});
  x.lease_holder = j.value("lease_holder", "");
  x.lease_epoch = j.value("lease_epoch", uint64_t{0});
  x.lease_waiting_writes = j.value("lease_waiting_writes", uint64_t{0});
  x.lease_waiting_reads = j.value("lease_waiting_reads", uint64_t{0});
  x.eligible = j.value("eligible", false);
  x.eligibility = j.value("eligibility", "");
  x.members_connected = j.value("members_connected", std::vector<std::string>{});
  if (auto s = j.find("sync"); s != j.end()) {
    x.sync.active = s->value("active", false);
    x.sync.direction = s->value("direction", "");
    x.sync.done_bytes = s->value("done_bytes", uint64_t{0});
    x.sync.total_bytes = s->value("total_bytes", uint64_t{0});
    x.sync.bytes_per_second = s->value("bytes_per_second", uint64_t{0});
  }
  if (auto v = j.find("verify"); v != j.end() && v->is_object())
    x.verify = verify_from_json(*v);
  if (auto c = j.find("counters"); c != j.end()) {
    auto& o = x.counters;
    o.reads = c->value("reads", uint64_t{0});
    o.writes = c->value("writes", uint64_t{0});
    o.deletes = c->value("deletes", uint64_t{0});
    o.flushes = c->value("flushes", uint64_t{0});
    o.activemap_updates = c->value("activemap_updates", uint64_t{0});
    o.read_errors = c->value("read_errors", uint64_t{0});
    o.write_errors = c->value("write_errors", uint64_t{0});
    o.delete_errors = c->value("delete_errors", uint64_t{0});
    o.flush_errors = c->value("flush_errors", uint64_t{0});
    o.read_bytes = c->value("read_bytes", uint64_t{0});
    o.write_bytes = c->value("write_bytes", uint64_t{0});
    o.delete_bytes = c->value("delete_bytes", uint64_t{0});
    o.remote_errors = c->value("remote_errors", uint64_t{0});
  }
  x.last_error = j.value("last_error", "");
  return x;
}

} // namespace hast
