// failover auto and the witness (docs/FAILOVER.md, docs/CONFIG.md): what
// each node resolves, and the errors that name file, line and option.

#include "config/config.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace hast {
namespace {

const std::string path = "/etc/hast.conf";

const std::string three_nodes = R"(resource shared {
    failover auto
    witness tcp://10.0.0.3
    secret /etc/hast/shared.key
    timeout 4
    on nodeA {
        local /dev/sdb
        remote 10.0.0.2
    }
    on nodeB {
        local /dev/sdc
        remote 10.0.0.1
        lease-lost suspend
    }
    on nodeW {
        role witness
        local /var/lib/hast/w.state
    }
}
)";

std::optional<config_error> error_of(const std::string& text, const std::string& node,
                                     const std::string& file = path) {
  try {
    parse_config(text, file, node);
  } catch (const config_error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a config_error for " << node << ":\n" << text;
  return std::nullopt;
}

void expect_error(const std::string& text, const std::string& node, int line,
                  const std::string& option, const std::string& expected) {
  auto e = error_of(text, node);
  if (!e)
    return;
  std::string what = e->what();
  EXPECT_EQ(e->where().line, line) << what;
  EXPECT_EQ(e->option(), option) << what;
  EXPECT_NE(what.find(path + ":" + std::to_string(line) + ": "), std::string::npos) << what;
  EXPECT_NE(what.find(expected), std::string::npos) << what;
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos)
    text.replace(at, from.size(), to);
  return text;
}

TEST(failover_config, data_nodes_resolve_the_witness_and_the_lease_action) {
  auto a = parse_config(three_nodes, path, "nodeA");
  ASSERT_EQ(a.resources.size(), 1u);
  const auto& ra = a.resources[0];
  EXPECT_TRUE(ra.automatic());
  EXPECT_FALSE(ra.is_witness);
  EXPECT_EQ(ra.witness, "tcp://10.0.0.3");
  EXPECT_EQ(ra.lease_lost, lease_loss_action::io_error);
  EXPECT_EQ(ra.local, "/dev/sdb");
  auto b = parse_config(three_nodes, path, "nodeB");
  EXPECT_EQ(b.resources[0].lease_lost, lease_loss_action::suspend);
}

TEST(failover_config, the_witness_node_holds_no_data) {
  auto w = parse_config(three_nodes, path, "nodeW");
  ASSERT_EQ(w.resources.size(), 1u);
  const auto& r = w.resources[0];
  EXPECT_TRUE(r.is_witness);
  EXPECT_TRUE(r.standalone());
  EXPECT_EQ(r.local, "/var/lib/hast/w.state") << "its own section's local: the state file";
  EXPECT_EQ(r.members, (std::vector<std::string>{"nodeA", "nodeB"}));
  EXPECT_EQ(r.timeout, 4);
  EXPECT_EQ(r.secret, "/etc/hast/shared.key");
  auto text = render_effective(w);
  EXPECT_NE(text.find("role: witness"), std::string::npos) << text;
  EXPECT_NE(text.find("members: nodeA, nodeB"), std::string::npos) << text;
}

TEST(failover_config, a_resource_wide_local_is_never_the_witness_state_file) {
  auto text = replace(three_nodes, "        local /var/lib/hast/w.state\n", "");
  text = replace(text, "    timeout 4\n", "    timeout 4\n    local /dev/sdz\n");
  auto w = parse_config(text, path, "nodeW");
  EXPECT_EQ(w.resources[0].local, "") << "the default state file, not the data disk";
}

TEST(failover_config, manual_is_the_default_and_the_witness_section_is_ignored_then) {
  auto text = replace(three_nodes, "    failover auto\n", "");
  auto a = parse_config(text, path, "nodeA");
  EXPECT_EQ(a.resources[0].failover, failover_mode::manual);
  EXPECT_EQ(to_string(a.resources[0].failover), "manual");
}

TEST(failover_config, bad_values_name_the_line) {
  expect_error(replace(three_nodes, "failover auto", "failover sometimes"), "nodeA", 2, "failover",
               "manual or auto");
  expect_error(replace(three_nodes, "lease-lost suspend", "lease-lost panic"), "nodeA", 13,
               "lease-lost", "io-error or suspend");
  expect_error(replace(three_nodes, "role witness", "role primary"), "nodeA", 16, "role",
               "hastctl role");
  expect_error(replace(three_nodes, "witness tcp://10.0.0.3", "witness none"), "nodeA", 3,
               "witness", "witness's address");
  expect_error("role witness\n" + three_nodes, "nodeA", 1, "role", "not allowed at global level");
}

TEST(failover_config, auto_needs_a_witness_a_secret_a_remote_and_a_synchronous_mode) {
  expect_error(replace(three_nodes, "    witness tcp://10.0.0.3\n", ""), "nodeA", 2, "failover",
               "needs 'witness <address>'");
  expect_error(replace(three_nodes, "    secret /etc/hast/shared.key\n", ""), "nodeA", 2,
               "failover", "needs 'secret'");
  expect_error(replace(three_nodes, "remote 10.0.0.2", "remote none"), "nodeA", 2, "failover",
               "needs a remote node");
  expect_error(replace(three_nodes, "    timeout 4\n", "    timeout 4\n    replication async\n"),
               "nodeA", 2, "failover", "async acknowledges writes");
}

TEST(failover_config, the_witness_section_refuses_data_options_and_needs_two_data_nodes) {
  expect_error(replace(three_nodes, "role witness\n", "role witness\n        remote 10.0.0.1\n"),
               "nodeW", 17, "remote", "the witness holds no data");
  expect_error(replace(three_nodes, "role witness\n", "role witness\n        nbd tcp://0.0.0.0:10809\n"),
               "nodeW", 17, "nbd", "the witness holds no data");
  auto one_data_node = replace(three_nodes,
                               "    on nodeB {\n        local /dev/sdc\n        remote 10.0.0.1\n"
                               "        lease-lost suspend\n    }\n",
                               "");
  expect_error(one_data_node, "nodeW", 11, "role", "exactly two data nodes");
  expect_error(replace(three_nodes, "    secret /etc/hast/shared.key\n", ""), "nodeW", 15, "role",
               "needs 'secret'");
}

TEST(failover_config, toml_says_the_same) {
  const std::string toml = R"(
[resource.shared]
failover = "auto"
witness = "tcp://10.0.0.3"
secret = "/etc/hast/shared.key"
lease-lost = "suspend"

[resource.shared.on.nodeA]
local = "/dev/sdb"
remote = "10.0.0.2"

[resource.shared.on.nodeB]
local = "/dev/sdc"
remote = "10.0.0.1"

[resource.shared.on.nodeW]
role = "witness"
)";
  auto a = parse_config(toml, "/etc/hast.toml", "nodeA");
  EXPECT_TRUE(a.resources[0].automatic());
  EXPECT_EQ(a.resources[0].lease_lost, lease_loss_action::suspend);
  auto w = parse_config(toml, "/etc/hast.toml", "nodeW");
  EXPECT_TRUE(w.resources[0].is_witness);
  EXPECT_EQ(w.resources[0].members.size(), 2u);
  auto bad = toml;
  bad.replace(bad.find("role = \"witness\""), 16, "role = \"boss\"");
  auto e = error_of(bad, "nodeW", "/etc/hast.toml");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->option(), "role");
  EXPECT_EQ(e->where().line, 17);
}

} // namespace
} // namespace hast
