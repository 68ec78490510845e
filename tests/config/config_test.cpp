#include "config/config.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hast {
namespace {

const std::string conf_path = "/etc/hast.conf";
const std::string toml_path = "/etc/hast.toml";

// The seed example: the same file on both FreeBSD nodes.
const std::string seed = R"(listen tcp://0.0.0.0
resource shared {
    local /dev/ada0p4
    on fbsd_h1 {
        remote tcp://10.0.0.231
    }
    on fbsd_h2 {
         remote tcp://10.0.0.233
    }
}
)";

// The error `text` raises, or nullopt (and a test failure) if it parses.
std::optional<config_error> error_of(const std::string& text, const std::string& path = conf_path,
                                     const std::string& node = "h1") {
  try {
    parse_config(text, path, node);
  } catch (const config_error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a config_error for:\n" << text;
  return std::nullopt;
}

// Checks what() names file:line and option and says `expected`.
void expect_error(const std::string& text, int line, const std::string& option,
                  const std::string& expected, const std::string& path = conf_path,
                  const std::string& node = "h1") {
  const auto error = error_of(text, path, node);
  if (!error)
    return;
  const std::string what = error->what();
  EXPECT_NE(what.find(path + ":" + std::to_string(line) + ": "), std::string::npos) << what;
  EXPECT_EQ(error->where().line, line) << what;
  EXPECT_EQ(error->option(), option) << what;
  if (!option.empty()) {
    EXPECT_NE(what.find(": " + option + ": "), std::string::npos) << what;
  }
  EXPECT_NE(what.find(expected), std::string::npos) << what;
}

// The same configuration with the source locations blanked, to compare the
// meaning of files whose lines differ.
node_config without_locations(node_config config) {
  config.path.clear();
  for (auto& res : config.resources) {
    res.where = {};
    res.secret_where = {};
  }
  return config;
}

// A minimal resource for tests that are about something else.
const std::string minimal_resource = R"(resource r0 {
  local /dev/r0
  on h1 {
    remote tcp://10.0.0.2
  }
}
)";

// --- The seed example -------------------------------------------------------

TEST(Config, SeedExampleGivesTheFirstNodeItsLocalProviderAndPeer) {
  const auto config = parse_config(seed, conf_path, "fbsd_h1");
  EXPECT_EQ(config.node, "fbsd_h1");
  EXPECT_EQ(config.path, conf_path);
  EXPECT_EQ(config.listen, std::vector<std::string>{"tcp://0.0.0.0"});
  ASSERT_EQ(config.resources.size(), 1u);
  const auto& res = config.resources[0];
  EXPECT_EQ(res.name, "shared");
  EXPECT_EQ(res.local, "/dev/ada0p4");
  EXPECT_EQ(res.remote, "tcp://10.0.0.231");
  EXPECT_EQ(res.where.line, 2);
  EXPECT_EQ(res.where.file, conf_path);
}

TEST(Config, SeedExampleGivesTheSecondNodeTheOtherPeer) {
  const auto config = parse_config(seed, conf_path, "fbsd_h2");
  ASSERT_EQ(config.resources.size(), 1u);
  EXPECT_EQ(config.resources[0].local, "/dev/ada0p4");
  EXPECT_EQ(config.resources[0].remote, "tcp://10.0.0.233");
}

TEST(Config, SeedExampleRendersItsEffectiveSettings) {
  const auto text = render_effective(parse_config(seed, conf_path, "fbsd_h1"));
  EXPECT_EQ(text,
            "node: fbsd_h1\n"
            "control: uds:///var/run/hastctl\n"
            "pidfile: /var/run/hastd.pid\n"
            "listen: tcp://0.0.0.0\n"
            "resource shared:\n"
            "  name: shared\n"
            "  local: /dev/ada0p4\n"
            "  remote: tcp://10.0.0.231\n"
            "  source: -\n"
            "  replication: memsync\n"
            "  checksum: none\n"
            "  compression: hole\n"
            "  timeout: 20\n"
            "  exec: -\n"
            "  metaflush: on\n"
            "  resync-checksum: off\n"
            "  syncrate: unlimited\n"
            "  nbd: uds:///var/run/hast/shared.sock\n"
            "  nbd-allow: -\n"
            "  device: on\n"
            "  secret: -\n");
}

TEST(Config, NbdAllowTakesAddressesAndPrefixesAndRefusesAnythingElse) {
  auto with_allow = [](const std::string& allow) {
    return "resource r {\n nbd tcp://0.0.0.0:10809\n nbd-allow " + allow
           + "\n on a {\n  local /dev/r\n  remote none\n }\n}\n";
  };
  const auto config = parse_config(with_allow("10.0.0.5,10.0.1.0/24,fd00::/8,::1"), "hast.conf", "a");
  EXPECT_EQ(config.resources.at(0).nbd_allow,
            (std::vector<std::string>{"10.0.0.5", "10.0.1.0/24", "fd00::/8", "::1"}));
  const auto toml = parse_config("[resource.r]\nnbd = \"tcp://0.0.0.0:10809\"\n"
                                 "nbd-allow = \"192.168.0.0/16\"\n[resource.r.on.a]\n"
                                 "local = \"/dev/r\"\nremote = \"none\"\n",
                                 "hast.toml", "a");
  EXPECT_EQ(toml.resources.at(0).nbd_allow, std::vector<std::string>{"192.168.0.0/16"});
  const auto unset =
      parse_config("resource r {\n on a {\n  local /dev/r\n  remote none\n }\n}\n", "hast.conf", "a");
  EXPECT_TRUE(unset.resources.at(0).nbd_allow.empty());
  for (const char* bad : {"host.example", "10.0.0.0/33", "fd00::/129", "10.0.0.1,", "10.0.0.1/",
                          "10.0.0.1/x"}) {
    try {
      parse_config(with_allow(bad), "hast.conf", "a");
      ADD_FAILURE() << "nbd-allow " << bad << " was accepted";
    } catch (const config_error& e) {
      EXPECT_EQ(e.option(), "nbd-allow") << e.what();
    }
  }
}

// --- Defaults ---------------------------------------------------------------

TEST(Config, EveryOptionHasHastsDefault) {
  const auto config = parse_config(minimal_resource, conf_path, "h1");
  EXPECT_EQ(config.control, "uds:///var/run/hastctl");
  EXPECT_EQ(config.pidfile, "/var/run/hastd.pid");
  EXPECT_EQ(config.listen, (std::vector<std::string>{"tcp4://0.0.0.0:8457", "tcp6://[::]:8457"}));
  ASSERT_EQ(config.resources.size(), 1u);
  const auto& res = config.resources[0];
  EXPECT_EQ(res.provider_name, "r0");
  EXPECT_EQ(res.source, "");
  EXPECT_EQ(res.replication, replication_mode::memsync);
  EXPECT_EQ(res.checksum, checksum_kind::none);
  EXPECT_EQ(res.compression, compression_kind::hole);
  EXPECT_EQ(res.timeout, 20);
  EXPECT_EQ(res.exec, "");
  EXPECT_TRUE(res.metaflush);
  EXPECT_EQ(res.nbd, "uds:///var/run/hast/r0.sock");
  EXPECT_TRUE(res.device);
  EXPECT_EQ(res.secret, "");
  EXPECT_FALSE(res.standalone());
}

TEST(Config, EmptyFileGivesNoResourcesAndDefaultDaemonSettings) {
  const auto config = parse_config("# nothing here\n", conf_path, "h1");
  EXPECT_TRUE(config.resources.empty());
  EXPECT_EQ(config.control, default_control);
  EXPECT_EQ(config.listen.size(), 2u);
}

// --- Every option -----------------------------------------------------------

TEST(Config, EveryGlobalOptionIsParsed) {
  const auto config = parse_config(R"(control uds:///run/hast/ctl
pidfile /run/hastd.pid
listen tcp://0.0.0.0:7000
listen tcp6://[::1]:7001
)" + minimal_resource,
                                   conf_path, "h1");
  EXPECT_EQ(config.control, "uds:///run/hast/ctl");
  EXPECT_EQ(config.pidfile, "/run/hastd.pid");
  EXPECT_EQ(config.listen, (std::vector<std::string>{"tcp://0.0.0.0:7000", "tcp6://[::1]:7001"}));
}

TEST(Config, EveryResourceOptionIsParsed) {
  const auto config = parse_config(R"(resource data {
  name disk0
  local /var/lib/hast/data.img
  replication fullsync
  checksum crc32c
  compression lz4
  timeout 7
  exec /usr/local/sbin/hast-hook
  metaflush off
  resync-checksum on
  nbd tcp://127.0.0.1:10809
  device off
  secret /etc/hast/data.key
  on h1 {
    remote tcp://10.0.0.2:9000
    source 10.0.0.1
  }
}
)",
                                   conf_path, "h1");
  ASSERT_EQ(config.resources.size(), 1u);
  const auto& res = config.resources[0];
  EXPECT_EQ(res.name, "data");
  EXPECT_EQ(res.provider_name, "disk0");
  EXPECT_EQ(res.local, "/var/lib/hast/data.img");
  EXPECT_EQ(res.remote, "tcp://10.0.0.2:9000");
  EXPECT_EQ(res.source, "10.0.0.1");
  EXPECT_EQ(res.replication, replication_mode::fullsync);
  EXPECT_EQ(res.checksum, checksum_kind::crc32c);
  EXPECT_EQ(res.compression, compression_kind::lz4);
  EXPECT_EQ(res.timeout, 7);
  EXPECT_EQ(res.exec, "/usr/local/sbin/hast-hook");
  EXPECT_FALSE(res.metaflush);
  EXPECT_TRUE(res.resync_checksum);
  EXPECT_EQ(res.nbd, "tcp://127.0.0.1:10809");
  EXPECT_FALSE(res.device);
  EXPECT_EQ(res.secret, "/etc/hast/data.key");
}

TEST(Config, EveryEnumeratedValueIsAccepted) {
  for (const char* mode : {"fullsync", "memsync", "async"})
    for (const char* sum : {"none", "crc32", "crc32c", "sha256"})
      for (const char* codec : {"none", "hole", "lzf", "lz4"}) {
        const auto config = parse_config(std::string{"replication "} + mode + "\nchecksum " + sum +
                                             "\ncompression " + codec + "\n" + minimal_resource,
                                         conf_path, "h1");
        const auto& res = config.resources.at(0);
        EXPECT_EQ(to_string(res.replication), mode);
        EXPECT_EQ(to_string(res.checksum), sum);
        EXPECT_EQ(to_string(res.compression), codec);
      }
}

TEST(Config, RemoteNoneMakesAStandaloneResource) {
  const auto config = parse_config("resource solo {\n local /dev/x\n on h1 {\n remote none\n }\n}\n",
                                   conf_path, "h1");
  EXPECT_TRUE(config.resources.at(0).standalone());
}

TEST(Config, RemoteIsKeptAsWritten) {
  for (const char* remote : {"tcp://10.0.0.2", "tcp4://10.0.0.2:7000", "tcp6://[fd00::2]:7000",
                             "10.0.0.2", "peer.example.com:7000"}) {
    const auto config = parse_config(
        std::string{"resource r {\n local /dev/x\n on h1 {\n remote "} + remote + "\n }\n}\n", conf_path,
        "h1");
    EXPECT_EQ(config.resources.at(0).remote, remote);
  }
}

TEST(Config, QuotedValuesMayHoldSpaces) {
  const auto config = parse_config(
      "exec \"/usr/local/libexec/hast hook\"\n" + minimal_resource, conf_path, "h1");
  EXPECT_EQ(config.resources.at(0).exec, "/usr/local/libexec/hast hook");
}

TEST(Config, StatementsMayShareALineWithBraces) {
  const auto config =
      parse_config("resource r { local /dev/x\n on h1 { remote tcp://h2 } }\n", conf_path, "h1");
  EXPECT_EQ(config.resources.at(0).remote, "tcp://h2");
}

TEST(Config, SectionBraceMayOpenOnTheNextLine) {
  const auto config =
      parse_config("resource r\n{\n local /dev/x\n on h1\n {\n remote tcp://h2\n }\n}\n", conf_path, "h1");
  EXPECT_EQ(config.resources.at(0).local, "/dev/x");
}

TEST(Config, ResourcesKeepFileOrder) {
  const auto config = parse_config(R"(resource b { local /dev/b
 remote none }
resource a { local /dev/a
 remote none }
resource c { local /dev/c
 remote none }
)",
                                   conf_path, "h1");
  ASSERT_EQ(config.resources.size(), 3u);
  EXPECT_EQ(config.resources[0].name, "b");
  EXPECT_EQ(config.resources[1].name, "a");
  EXPECT_EQ(config.resources[2].name, "c");
  EXPECT_EQ(config.find("a"), &config.resources[1]);
  EXPECT_EQ(config.find("zz"), nullptr);
}

// --- Inheritance ------------------------------------------------------------

TEST(Config, GlobalValuesAreInheritedByEveryResource) {
  const auto config = parse_config("replication async\ntimeout 5\nexec /bin/hook\nmetaflush off\n"
                                   "nbd tcp://0.0.0.0:10809\nsecret /k\nchecksum sha256\n"
                                   "compression lzf\n" +
                                       minimal_resource,
                                   conf_path, "h1");
  const auto& res = config.resources.at(0);
  EXPECT_EQ(res.replication, replication_mode::async);
  EXPECT_EQ(res.timeout, 5);
  EXPECT_EQ(res.exec, "/bin/hook");
  EXPECT_FALSE(res.metaflush);
  EXPECT_EQ(res.nbd, "tcp://0.0.0.0:10809");
  EXPECT_EQ(res.secret, "/k");
  EXPECT_EQ(res.checksum, checksum_kind::sha256);
  EXPECT_EQ(res.compression, compression_kind::lzf);
}

TEST(Config, GlobalNodeSectionOverridesGlobalValuesForThisNodeOnly) {
  const std::string text = R"(timeout 5
control uds:///run/a
pidfile /run/a.pid
on h1 {
  timeout 6
  control uds:///run/h1
  pidfile /run/h1.pid
}
on h2 {
  timeout 7
}
resource r {
  local /dev/r
  on h1 {
    remote tcp://h2
  }
  on h2 {
    remote tcp://h1
  }
  on h3 {
    remote tcp://h1
  }
}
)";
  const auto h1 = parse_config(text, conf_path, "h1");
  EXPECT_EQ(h1.resources.at(0).timeout, 6);
  EXPECT_EQ(h1.control, "uds:///run/h1");
  EXPECT_EQ(h1.pidfile, "/run/h1.pid");
  const auto h2 = parse_config(text, conf_path, "h2");
  EXPECT_EQ(h2.resources.at(0).timeout, 7);
  EXPECT_EQ(h2.control, "uds:///run/a");
  EXPECT_EQ(h2.pidfile, "/run/a.pid");
  EXPECT_EQ(parse_config(text, conf_path, "h3").resources.at(0).timeout, 5);
}

TEST(Config, ResourceValueOverridesTheGlobalNodeSection) {
  const auto config = parse_config(R"(on h1 {
  replication async
}
resource r {
  replication fullsync
  local /dev/r
  on h1 {
    remote none
  }
}
)",
                                   conf_path, "h1");
  EXPECT_EQ(config.resources.at(0).replication, replication_mode::fullsync);
}

TEST(Config, ResourceNodeSectionOverridesTheResourceValue) {
  const std::string text = R"(resource r {
  name prov
  local /dev/a
  metaflush off
  checksum crc32
  on h1 {
    name prov1
    local /dev/b
    metaflush on
    checksum sha256
    remote tcp://h2
  }
  on h2 {
    remote tcp://h1
  }
}
)";
  const auto h1 = parse_config(text, conf_path, "h1").resources.at(0);
  EXPECT_EQ(h1.provider_name, "prov1");
  EXPECT_EQ(h1.local, "/dev/b");
  EXPECT_TRUE(h1.metaflush);
  EXPECT_EQ(h1.checksum, checksum_kind::sha256);
  const auto h2 = parse_config(text, conf_path, "h2").resources.at(0);
  EXPECT_EQ(h2.provider_name, "prov");
  EXPECT_EQ(h2.local, "/dev/a");
  EXPECT_FALSE(h2.metaflush);
  EXPECT_EQ(h2.checksum, checksum_kind::crc32);
}

TEST(Config, NodeSectionListenLinesAddToTheGlobalOnes) {
  const std::string text = R"(listen tcp://0.0.0.0:7000
on h1 {
  listen tcp://127.0.0.1:7001
  listen uds:///run/h1.sock
}
on h2 {
  listen tcp://127.0.0.1:7002
}
)";
  EXPECT_EQ(parse_config(text, conf_path, "h1").listen,
            (std::vector<std::string>{"tcp://0.0.0.0:7000", "tcp://127.0.0.1:7001", "uds:///run/h1.sock"}));
  EXPECT_EQ(parse_config(text, conf_path, "h2").listen,
            (std::vector<std::string>{"tcp://0.0.0.0:7000", "tcp://127.0.0.1:7002"}));
}

TEST(Config, ListenOnlyInANodeSectionReplacesTheDefaults) {
  const auto config = parse_config("on h1 {\n listen tcp://127.0.0.1:7001\n}\n", conf_path, "h1");
  EXPECT_EQ(config.listen, std::vector<std::string>{"tcp://127.0.0.1:7001"});
}

TEST(Config, RemoteAndSourceAreAcceptedAtResourceLevel) {
  const auto config = parse_config(
      "resource r {\n local /dev/r\n remote tcp://peer\n source 10.0.0.1\n}\n", conf_path, "any");
  EXPECT_EQ(config.resources.at(0).remote, "tcp://peer");
  EXPECT_EQ(config.resources.at(0).source, "10.0.0.1");
}

TEST(Config, LaterStatementInTheSameSectionWins) {
  const auto config = parse_config("timeout 3\ntimeout 4\n" + minimal_resource, conf_path, "h1");
  EXPECT_EQ(config.resources.at(0).timeout, 4);
}

// --- Node matching ----------------------------------------------------------

TEST(Config, SectionNamedByTheShortHostNameMatchesTheFullNodeName) {
  const auto config = parse_config(seed, conf_path, "fbsd_h1.example.org");
  EXPECT_EQ(config.resources.at(0).remote, "tcp://10.0.0.231");
}

TEST(Config, SectionNamedByTheFullHostNameMatchesTheShortNodeName) {
  const auto config = parse_config(
      "resource r {\n local /dev/r\n on h1.example.org {\n remote tcp://h2\n }\n}\n", conf_path, "h1");
  EXPECT_EQ(config.resources.at(0).remote, "tcp://h2");
}

TEST(Config, SectionForAnotherDomainStillNeedsAnExactOrShortMatch) {
  const auto error = error_of(
      "resource r {\n local /dev/r\n on h1.a.org {\n remote tcp://h2\n }\n}\n", conf_path, "h1.b.org");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->option(), "on");
}

TEST(Config, SelectNodePrefersTheExplicitNameThenHastNodeThenTheHostName) {
  const char* saved = std::getenv("HAST_NODE");
  const std::string saved_value = saved != nullptr ? saved : "";
  ::setenv("HAST_NODE", "from-env", 1);
  EXPECT_EQ(select_node("explicit"), "explicit");
  EXPECT_EQ(select_node(""), "from-env");
  ::unsetenv("HAST_NODE");
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(select_node(""), host);
  if (saved != nullptr)
    ::setenv("HAST_NODE", saved_value.c_str(), 1);
}

// --- TOML -------------------------------------------------------------------

const std::string full_conf = R"(# two resources, every level used
control uds:///run/hast/ctl
pidfile /run/hastd.pid
listen tcp://0.0.0.0:7000
replication fullsync
checksum crc32
timeout 9
on h1 {
  listen tcp://127.0.0.1:7001
  compression lzf
  secret /etc/hast/h1.key
}
on h2 {
  control uds:///run/hast/ctl2
  exec /bin/h2-hook
  device off
}
resource alpha {
  local /dev/alpha
  metaflush off
  on h1 {
    remote tcp://10.0.0.2:7000
    source 10.0.0.1
  }
  on h2 {
    name alpha2
    remote tcp://10.0.0.1:7000
    nbd tcp://127.0.0.1:10810
  }
}
resource beta {
  replication async
  compression none
  on h1 {
    local /dev/beta1
    remote none
    timeout 30
    device off
  }
  on h2 {
    local /dev/beta2
    remote none
    checksum sha256
  }
}
)";

const std::string full_toml = R"(# two resources, every level used
control = "uds:///run/hast/ctl"
pidfile = "/run/hastd.pid"
listen = "tcp://0.0.0.0:7000"
replication = "fullsync"
checksum = "crc32"
timeout = 9

[on.h1]
listen = ["tcp://127.0.0.1:7001"]
compression = "lzf"
secret = "/etc/hast/h1.key"

[on.h2]
control = "uds:///run/hast/ctl2"
exec = "/bin/h2-hook"
device = false

[resource.alpha]
local = "/dev/alpha"
metaflush = false

[resource.alpha.on.h1]
remote = "tcp://10.0.0.2:7000"
source = "10.0.0.1"

[resource.alpha.on.h2]
name = "alpha2"
remote = "tcp://10.0.0.1:7000"
nbd = "tcp://127.0.0.1:10810"

[resource.beta]
replication = "async"
compression = "none"
on.h1 = { local = "/dev/beta1", remote = "none", timeout = 30, device = "off" }
on.h2 = { local = "/dev/beta2", remote = "none", checksum = "sha256" }
)";

TEST(Config, BothSyntaxesGiveIdenticalSettingsForEveryNode) {
  for (const char* node : {"h1", "h2"}) {
    const auto conf = parse_config(full_conf, conf_path, node);
    const auto toml = parse_config(full_toml, toml_path, node);
    EXPECT_EQ(without_locations(conf), without_locations(toml)) << node << ":\n"
                                                                << render_effective(conf) << "---\n"
                                                                << render_effective(toml);
    EXPECT_EQ(render_effective(conf), render_effective(toml));
  }
  const auto h1 = parse_config(full_toml, toml_path, "h1");
  ASSERT_EQ(h1.resources.size(), 2u);
  EXPECT_EQ(h1.resources[0].name, "alpha");
  EXPECT_EQ(h1.resources[1].name, "beta");
  EXPECT_EQ(h1.resources[1].timeout, 30);
  EXPECT_EQ(h1.resources[0].compression, compression_kind::lzf);
  EXPECT_FALSE(h1.resources[0].metaflush);
  EXPECT_EQ(h1.listen, (std::vector<std::string>{"tcp://0.0.0.0:7000", "tcp://127.0.0.1:7001"}));
  const auto h2 = parse_config(full_toml, toml_path, "h2");
  EXPECT_EQ(h2.control, "uds:///run/hast/ctl2");
  EXPECT_EQ(h2.resources[0].provider_name, "alpha2");
  EXPECT_EQ(h2.resources[1].checksum, checksum_kind::sha256);
  EXPECT_TRUE(h1.resources[0].device);
  EXPECT_FALSE(h1.resources[1].device);
  EXPECT_FALSE(h2.resources[0].device);
  EXPECT_FALSE(h2.resources[1].device);
}

TEST(Config, DeviceIsOnByDefaultAndEachLevelMayTurnItOff) {
  const std::string text = R"(device off
on h2 {
  device on
}
resource r {
  local /dev/r
  on h1 {
    remote none
  }
  on h2 {
    remote none
  }
}
resource s {
  local /dev/s
  device on
  on h1 {
    remote none
  }
  on h2 {
    remote none
    device off
  }
}
)";
  const auto h1 = parse_config(text, conf_path, "h1");
  EXPECT_FALSE(h1.resources.at(0).device);  // global
  EXPECT_TRUE(h1.resources.at(1).device);   // resource over global
  const auto h2 = parse_config(text, conf_path, "h2");
  EXPECT_TRUE(h2.resources.at(0).device);   // global node section over global
  EXPECT_FALSE(h2.resources.at(1).device);  // resource node section over resource
  EXPECT_NE(render_effective(h2).find("resource s:\n"), std::string::npos);
  EXPECT_NE(render_effective(h2).find("  device: off\n"), std::string::npos);
  EXPECT_NE(render_effective(h2).find("  device: on\n"), std::string::npos);
}

TEST(Config, SeedExampleInTomlGivesTheSameSettings) {
  const std::string toml = R"(listen = "tcp://0.0.0.0"
[resource.shared]
local = "/dev/ada0p4"
[resource.shared.on.fbsd_h1]
remote = "tcp://10.0.0.231"
[resource.shared.on.fbsd_h2]
remote = "tcp://10.0.0.233"
)";
  // Same lines, same path: even the source locations agree.
  for (const char* node : {"fbsd_h1", "fbsd_h2"})
    EXPECT_EQ(parse_config(seed, conf_path, node), parse_config(toml, conf_path, node));
}

TEST(Config, DeeplyNestedTomlIsAnErrorNotAStackOverflow) {
  // toml11 recurses once per level: 20000 of them used to overflow the stack.
  for (const char* open : {"[", "{b="}) {
    std::string text = "listen = ";
    for (int i = 0; i < 20000; ++i)
      text += open;
    expect_error(text, 1, "", "nested more than 32 deep", toml_path);
  }
  expect_error("timeout = 5\n\nlisten = " + std::string(33, '[') + "\"x\"" + std::string(33, ']'),
               3, "", "nested more than 32 deep", toml_path);
}

TEST(Config, TomlThatIsNotUtf8IsAnError) {
  // toml11's own report of a bad sequence in a literal string read past its
  // buffer; such files are refused before toml11 sees them.
  expect_error("timeout = 5\nexec = '/bin/\x92\xa5'\n", 2, "", "not valid UTF-8", toml_path);
  expect_error("exec = \"/bin/\xed\xa0\x80\"\n", 1, "", "not valid UTF-8", toml_path);  // a surrogate
  expect_error("# \xc0\xaf overlong\n", 1, "", "not valid UTF-8", toml_path);
  const auto config =
      parse_config("exec = \"/bin/h\xc3\xa4st-\xf0\x9f\x98\x80\"\n", toml_path, "h1");
  EXPECT_EQ(config.resources.size(), 0u);
}

TEST(Config, TomlBracketsInStringsAndCommentsAreNotNesting) {
  const std::string many(40, '[');
  const auto config = parse_config("# " + many + "\n"
                                   "exec = '/bin/" + many + "'\n"
                                   "pidfile = \"/run/" + many + "\\\"\"\n"
                                   "control = \"\"\"/run/x\"\"\"\"\n"
                                   "[resource.r0]\n"
                                   "local = '''/dev/" + many + "\n" + many + "'''\n"
                                   "on.h1 = { remote = \"none\" }\n",
                                   toml_path, "h1");
  EXPECT_EQ(config.pidfile, "/run/" + many + "\"");
  EXPECT_EQ(config.control, "/run/x\"");
  ASSERT_EQ(config.resources.size(), 1u);
  EXPECT_EQ(config.resources[0].local, "/dev/" + many + "\n" + many);
}

TEST(Config, TomlLocationsNameTheResourceTableLine) {
  const auto config = parse_config(full_toml, toml_path, "h1");
  EXPECT_EQ(config.resources.at(0).where.line, 19);
  EXPECT_EQ(config.resources.at(0).where.file, toml_path);
  EXPECT_EQ(config.resources.at(1).where.line, 32);
}

TEST(Config, TomlIsRecognisedFromContentOrFromTheFileName) {
  // A TOML file under a .conf name, starting with a table.
  EXPECT_EQ(parse_config("\n# c\n[resource.r]\nlocal = \"/dev/r\"\nremote = \"none\"\n", conf_path, "h1")
                .resources.at(0)
                .local,
            "/dev/r");
  // An empty .toml file is TOML (hast.conf would accept it too).
  EXPECT_TRUE(parse_config("", toml_path, "h1").resources.empty());
  // `key = value` under a .toml name: a hast.conf line there is a TOML error.
  const auto error = error_of("listen tcp://0.0.0.0\n", toml_path);
  ASSERT_TRUE(error);
  EXPECT_NE(std::string{error->what()}.find(toml_path + ":1: "), std::string::npos) << error->what();
}

TEST(Config, TomlMetaflushAcceptsBooleansAndOnOff) {
  EXPECT_FALSE(parse_config("metaflush = \"off\"\n[resource.r]\nlocal = \"/x\"\nremote = \"none\"\n",
                            conf_path, "h1")
                   .resources.at(0)
                   .metaflush);
  EXPECT_TRUE(parse_config("metaflush = true\n[resource.r]\nlocal = \"/x\"\nremote = \"none\"\n",
                           conf_path, "h1")
                  .resources.at(0)
                  .metaflush);
}

// --- Errors: both syntaxes name file, line and option ------------------------

TEST(ConfigError, UnknownOptionIsRejected) {
  expect_error("listen tcp://0.0.0.0\nfrobnicate yes\n", 2, "frobnicate", "unknown option");
}

TEST(ConfigError, UnknownOptionInsideAResourceIsRejected) {
  expect_error("resource r {\n  local /dev/r\n  frobnicate\n}\n", 3, "frobnicate", "unknown option");
}

TEST(ConfigError, UnknownOptionInTomlIsRejected) {
  expect_error("[resource.r]\nlocal = \"/dev/r\"\nfrobnicate = 1\n", 3, "frobnicate", "unknown option",
               toml_path);
}

TEST(ConfigError, ResourceOptionAtGlobalLevelIsRejected) {
  expect_error("local /dev/x\n", 1, "local", "not allowed at global level");
}

TEST(ConfigError, DaemonOptionInsideAResourceIsRejected) {
  expect_error("resource r {\n local /dev/r\n control uds:///x\n}\n", 3, "control",
               "not allowed in a resource section");
  expect_error("resource r {\n local /dev/r\n on h1 {\n listen tcp://0.0.0.0\n }\n}\n", 4, "listen",
               "not allowed in a resource's 'on <node>' section");
}

TEST(ConfigError, RemoteInAGlobalNodeSectionIsRejected) {
  expect_error("on h1 {\n remote tcp://x\n}\n", 2, "remote", "not allowed in a global 'on <node>' section");
}

TEST(ConfigError, OptionAtTheWrongLevelInTomlIsRejected) {
  expect_error("timeout = 3\nlocal = \"/dev/x\"\n", 2, "local", "not allowed at global level", toml_path);
  expect_error("[resource.r]\nlocal = \"/dev/x\"\npidfile = \"/p\"\n", 3, "pidfile",
               "not allowed in a resource section", toml_path);
}

TEST(ConfigError, BogusReplicationIsRejected) {
  expect_error("replication bogus\n", 1, "replication", "expected fullsync, memsync or async, got 'bogus'");
  expect_error("\nreplication = \"bogus\"\n", 2, "replication", "expected fullsync, memsync or async",
               toml_path);
}

TEST(ConfigError, BogusChecksumAndCompressionAreRejected) {
  expect_error("checksum md5\n", 1, "checksum", "expected none, crc32, crc32c or sha256");
  expect_error("resource r {\n compression gzip\n}\n", 2, "compression", "expected none, hole, lzf or lz4");
}

TEST(ConfigError, TimeoutMustBeAPositiveWholeNumber) {
  expect_error("timeout 0\n", 1, "timeout", "greater than 0");
  expect_error("\n\ntimeout soon\n", 3, "timeout", "got 'soon'");
  expect_error("timeout -5\n", 1, "timeout", "greater than 0");
  expect_error("timeout = 0\n", 1, "timeout", "greater than 0", toml_path);
  expect_error("timeout = 2.5\n", 1, "timeout", "whole number", toml_path);
}

TEST(ConfigError, MetaflushMustBeOnOrOff) {
  expect_error("resource r {\n on h1 {\n metaflush maybe\n }\n}\n", 3, "metaflush", "expected on or off");
}

TEST(ConfigError, DeviceMustBeOnOrOff) {
  expect_error("resource r {\n local /dev/r\n device maybe\n}\n", 3, "device",
               "expected on or off, got 'maybe'");
  expect_error("resource r {\n on h1 {\n  device 1\n }\n}\n", 3, "device", "expected on or off");
  expect_error("timeout = 3\ndevice = \"yes\"\n", 2, "device", "expected on or off", toml_path);
}

TEST(ConfigError, ControlMustBeAUnixSocketAndTheErrorSaysWhy) {
  for (const char* address : {"tcp://127.0.0.1:8458", "127.0.0.1:8458", "tcp4://0.0.0.0"}) {
    expect_error(std::string{"\ncontrol "} + address + "\n", 2, "control",
                 std::string{"got '"} + address + "'");
    expect_error(std::string{"\ncontrol "} + address + "\n", 2, "control",
                 "must be a Unix socket readable by root only (mode 0600)");
    expect_error(std::string{"\ncontrol "} + address + "\n", 2, "control", "change roles");
  }
  expect_error("on h1 {\n  control tcp://127.0.0.1:8458\n}\n", 2, "control", "Unix socket");
  expect_error("timeout = 3\ncontrol = \"tcp://127.0.0.1:8458\"\n", 2, "control", "Unix socket",
               toml_path);
  EXPECT_EQ(parse_config("control unix:///run/c\n", conf_path, "h1").control, "unix:///run/c");
  EXPECT_EQ(parse_config("control /run/c\n", conf_path, "h1").control, "/run/c");
}

TEST(ConfigError, MalformedAddressesAreRejected) {
  expect_error("listen tcp://host:99999\n", 1, "listen", "expected tcp://host[:port]");
  expect_error("control ftp://x\n", 1, "control", "expected uds:///path");
  expect_error("resource r {\n local /dev/r\n remote uds:///x\n}\n", 3, "remote", "or none");
  expect_error("nbd tcp://127.0.0.1\n", 1, "nbd", "expected uds:///path or tcp://addr:port");
  expect_error("exec hook.sh\n", 1, "exec", "absolute path");
}

TEST(ConfigError, MissingLocalIsRejected) {
  expect_error("resource r {\n on h1 {\n remote tcp://h2\n }\n}\n", 1, "local", "no local provider");
}

TEST(ConfigError, MissingRemoteIsRejected) {
  expect_error("resource r {\n local /dev/r\n on h1 {\n source 10.0.0.1\n }\n}\n", 3, "remote",
               "no remote address for resource r");
}

TEST(ConfigError, LocalForAnotherNodeOnlyIsMissingForThisOne) {
  expect_error("resource r {\n on h1 {\n remote tcp://h2\n }\n on h2 {\n local /dev/r\n remote tcp://h1\n }\n}\n",
               1, "local", "no local provider", conf_path, "h1");
}

TEST(ConfigError, DuplicateResourceNameIsRejected) {
  expect_error(minimal_resource + "\n" + minimal_resource, 8, "resource",
               "resource r0 is configured more than once (first at line 1)");
}

TEST(ConfigError, TwoResourcesOnTheSameLocalProviderAreRejected) {
  expect_error(R"(resource a {
  local /dev/disk
  remote none
}
resource b {
  remote none
  on h1 {
    local /dev/../dev/disk
  }
}
)",
               8, "local", "is already used by resource a (line 1)");
}

TEST(ConfigError, ResourceWithoutASectionForThisNodeListsTheNamesSeen) {
  const std::string text = seed;
  expect_error(text, 2, "on", "acceptable node names seen: fbsd_h1, fbsd_h2", conf_path, "fbsd_h3");
  expect_error(text, 2, "on", "this node (fbsd_h3)", conf_path, "fbsd_h3");
}

TEST(ConfigError, UnclosedSectionIsRejected) {
  expect_error("listen tcp://0.0.0.0\nresource r {\n local /dev/r\n on h1 {\n remote none\n}\n", 2,
               "resource", "is not closed; expected '}'");
}

TEST(ConfigError, StrayClosingBraceIsRejected) {
  expect_error(minimal_resource + "}\n", 7, "", "unexpected '}'");
}

TEST(ConfigError, SectionWithoutOpeningBraceIsRejected) {
  expect_error("resource r\n local /dev/r\n", 2, "resource", "expected '{' after 'resource r'");
}

TEST(ConfigError, OptionWithoutValueIsRejected) {
  expect_error("timeout\nlisten tcp://0.0.0.0\n", 1, "timeout", "expected a value");
}

TEST(ConfigError, OptionWithTwoValuesIsRejected) {
  expect_error("exec /bin/hook arg\n", 1, "exec", "expected one value, found also 'arg'");
}

TEST(ConfigError, NestedResourceIsRejected) {
  expect_error("resource a {\n resource b {\n }\n}\n", 2, "resource", "cannot be inside another section");
}

TEST(ConfigError, UnterminatedQuoteIsRejected) {
  expect_error("\nexec \"/bin/hook\n", 2, "", "unterminated quoted string");
}

TEST(ConfigError, TomlSyntaxErrorNamesItsLine) {
  const auto error = error_of("timeout = 3\n\n[resource.r\nlocal = 1\n", toml_path);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->where().line, 3) << error->what();
  EXPECT_NE(std::string{error->what()}.find(toml_path + ":3: "), std::string::npos) << error->what();
  EXPECT_EQ(std::string{error->what()}.find('\n'), std::string::npos) << error->what();
}

TEST(ConfigError, TomlArrayIsOnlyAcceptedForListen) {
  expect_error("replication = [\"async\"]\n", 1, "replication", "expected a single value", toml_path);
}

TEST(ConfigError, TomlTableWhereAValueBelongsIsRejected) {
  expect_error("[resource.r]\nlocal = \"/x\"\n[resource.r.on.h1.resource.x]\nlocal = \"/y\"\n", 3,
               "resource", "cannot be inside", toml_path);
  expect_error("[frobnicate]\nx = 1\n", 1, "frobnicate", "unknown option", toml_path);
  expect_error("resource = 3\n", 1, "resource", "expected a table of sections", toml_path);
}

TEST(ConfigError, WhatIsOneLineNamingFileLineAndOption) {
  const auto error = error_of("replication bogus\n", "/tmp/x.conf");
  ASSERT_TRUE(error);
  EXPECT_EQ(std::string{error->what()},
            "/tmp/x.conf:1: replication: expected fullsync, memsync or async, got 'bogus'");
  EXPECT_EQ(error->message(), "expected fullsync, memsync or async, got 'bogus'");
}

// --- Automatic failover and the witness --------------------------------------

// Two data nodes and a witness, every failover option at the global level:
// the options are inherited like `timeout`.
const std::string failover_conf = R"(failover auto
witness tcp://10.0.0.3:8457
lease-lost suspend
on h2 {
  lease-lost io-error
}
resource r {
  secret /etc/hast/r.key
  on h1 {
    local /dev/r
    remote tcp://10.0.0.2
  }
  on h2 {
    local /dev/r
    remote tcp://10.0.0.1
  }
  on w {
    role witness
  }
}
)";

const std::string failover_toml = R"(failover = "auto"
witness = "tcp://10.0.0.3:8457"
lease-lost = "suspend"

[on.h2]
lease-lost = "io-error"

[resource.r]
secret = "/etc/hast/r.key"

[resource.r.on.h1]
local = "/dev/r"
remote = "tcp://10.0.0.2"

[resource.r.on.h2]
local = "/dev/r"
remote = "tcp://10.0.0.1"

[resource.r.on.w]
role = "witness"
)";

TEST(ConfigFailover, NamesOfTheModesAndActions) {
  EXPECT_EQ(to_string(failover_mode::manual), "manual");
  EXPECT_EQ(to_string(failover_mode::automatic), "auto");
  EXPECT_EQ(to_string(lease_loss_action::io_error), "io-error");
  EXPECT_EQ(to_string(lease_loss_action::suspend), "suspend");
  EXPECT_EQ(parse_failover("auto"), failover_mode::automatic);
  EXPECT_EQ(parse_failover("manual"), failover_mode::manual);
  EXPECT_EQ(parse_failover("automatic"), std::nullopt);
  EXPECT_EQ(parse_lease_loss("suspend"), lease_loss_action::suspend);
  EXPECT_EQ(parse_lease_loss("io-error"), lease_loss_action::io_error);
  EXPECT_EQ(parse_lease_loss("io_error"), std::nullopt);
}

TEST(ConfigFailover, ManualIsTheDefault) {
  const auto& res = parse_config(minimal_resource, conf_path, "h1").resources.at(0);
  EXPECT_EQ(res.failover, failover_mode::manual);
  EXPECT_FALSE(res.automatic());
  EXPECT_EQ(res.witness, "");
  EXPECT_EQ(res.lease_lost, lease_loss_action::io_error);
  EXPECT_FALSE(res.is_witness);
  EXPECT_TRUE(res.members.empty());
}

TEST(ConfigFailover, DataNodesInheritTheOptionsFromEveryLevel) {
  for (const auto& [text, path] : {std::pair{failover_conf, conf_path}, std::pair{failover_toml, toml_path}}) {
    const auto h1 = parse_config(text, path, "h1").resources.at(0);
    EXPECT_TRUE(h1.automatic()) << path;
    EXPECT_FALSE(h1.is_witness) << path;
    EXPECT_EQ(h1.witness, "tcp://10.0.0.3:8457") << path;
    EXPECT_EQ(h1.lease_lost, lease_loss_action::suspend) << path;
    EXPECT_EQ(h1.local, "/dev/r") << path;
    const auto h2 = parse_config(text, path, "h2").resources.at(0);
    EXPECT_EQ(h2.lease_lost, lease_loss_action::io_error) << path << ": the global 'on h2' section";
    EXPECT_EQ(h2.remote, "tcp://10.0.0.1") << path;
  }
}

TEST(ConfigFailover, TheWitnessNodeResolvesWithoutAProvider) {
  for (const auto& [text, path] : {std::pair{failover_conf, conf_path}, std::pair{failover_toml, toml_path}}) {
    const auto config = parse_config(text, path, "w");
    ASSERT_EQ(config.resources.size(), 1u) << path;
    const auto& res = config.resources[0];
    EXPECT_TRUE(res.is_witness) << path;
    EXPECT_TRUE(res.standalone()) << path;
    EXPECT_EQ(res.remote, "none") << path;
    EXPECT_EQ(res.local, "") << path;
    EXPECT_EQ(res.members, (std::vector<std::string>{"h1", "h2"})) << path;
    EXPECT_EQ(res.secret, "/etc/hast/r.key") << path;
  }
  EXPECT_EQ(without_locations(parse_config(failover_conf, conf_path, "w")),
            without_locations(parse_config(failover_toml, toml_path, "w")));
  EXPECT_EQ(without_locations(parse_config(failover_conf, conf_path, "h1")),
            without_locations(parse_config(failover_toml, toml_path, "h1")));
}

TEST(ConfigFailover, MembersAreTheOtherSectionsInFileOrder) {
  std::string text = failover_conf;
  const std::string witness = "  on w {\n    role witness\n  }\n";
  text.erase(text.find(witness), witness.size());
  text.insert(text.find("  on h1 {"), witness);
  std::string swapped = text;
  swapped.replace(swapped.find("on h1 {"), 7, "on h9 {");
  EXPECT_EQ(parse_config(swapped, conf_path, "w").resources.at(0).members,
            (std::vector<std::string>{"h9", "h2"}));
}

TEST(ConfigFailover, RenderShowsTheFailoverSettingsOfADataNode) {
  const auto text = render_effective(parse_config(failover_conf, conf_path, "h1"));
  EXPECT_NE(text.find("  failover: auto\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  witness: tcp://10.0.0.3:8457\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  lease-lost: suspend\n"), std::string::npos) << text;
  const auto manual = render_effective(parse_config(minimal_resource, conf_path, "h1"));
  EXPECT_EQ(manual.find("  failover:"), std::string::npos) << manual;
  EXPECT_EQ(manual.find("  witness:"), std::string::npos) << manual;
  EXPECT_EQ(manual.find("  lease-lost:"), std::string::npos) << manual;
}

TEST(ConfigFailover, RenderShowsTheWitnessRoleAndNoProvider) {
  const auto text = render_effective(parse_config(failover_conf, conf_path, "w"));
  EXPECT_NE(text.find("resource r:\n  role: witness\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  members: h1, h2\n"), std::string::npos) << text;
  for (const char* line : {"  local:", "  remote:", "  name:", "  nbd:", "  device:", "  replication:"})
    EXPECT_EQ(text.find(line), std::string::npos) << line << " in\n" << text;
}

TEST(ConfigFailover, AManualDataNodeIgnoresTheWitnessSection) {
  std::string text = failover_conf;
  text.replace(text.find("failover auto"), 13, "failover manual");
  text.erase(text.find("  secret /etc/hast/r.key\n"), 25);
  const auto& res = parse_config(text, conf_path, "h1").resources.at(0);
  EXPECT_FALSE(res.automatic());
  EXPECT_FALSE(res.is_witness);
  EXPECT_EQ(res.secret, "");
}

TEST(ConfigFailoverError, BadValuesAreRejected) {
  expect_error("failover yes\n", 1, "failover", "expected manual or auto, got 'yes'");
  expect_error("lease-lost panic\n", 1, "lease-lost", "expected io-error or suspend, got 'panic'");
  expect_error("witness none\n", 1, "witness", "tcp://host[:port]");
  expect_error("witness tcp://\n", 1, "witness", "tcp://host[:port]");
  expect_error("failover = \"sometimes\"\n", 1, "failover", "manual or auto", toml_path);
  expect_error("lease-lost = \"panic\"\n", 1, "lease-lost", "io-error or suspend", toml_path);
}

TEST(ConfigFailoverError, RoleIsOnlyInAResourcesNodeSectionAndOnlyWitness) {
  expect_error("role witness\n", 1, "role", "not allowed at global level");
  expect_error("on h1 {\n role witness\n}\n", 2, "role", "not allowed in a global 'on <node>' section");
  expect_error("resource r {\n role witness\n on h1 {\n local /dev/r\n remote none\n }\n}\n", 2, "role",
               "not allowed in a resource section");
  expect_error("resource r {\n on h1 {\n role primary\n }\n}\n", 3, "role",
               "expected witness (primary and secondary are set at run time with hastctl role)");
  expect_error("[resource.r.on.h1]\nrole = \"secondary\"\n", 2, "role", "hastctl role", toml_path);
}

TEST(ConfigFailoverError, TheWitnessSectionTakesNoDataOptions) {
  const std::string head = "resource r {\n secret /k\n on a {\n local /dev/r\n remote tcp://b\n }\n"
                           " on b {\n local /dev/r\n remote tcp://a\n }\n on h1 {\n role witness\n";
  for (const char* option : {"remote tcp://a", "source tcp://a", "name r0", "nbd tcp://0.0.0.0:10809",
                             "device off"}) {
    const std::string name{option, std::string_view{option}.find(' ')};
    expect_error(head + " " + option + "\n }\n}\n", 13, name, "the witness holds no data");
  }
  // The same resource without the extra line is a valid witness.
  EXPECT_TRUE(parse_config(head + " }\n}\n", conf_path, "h1").resources.at(0).is_witness);
}

TEST(ConfigFailoverError, TheWitnessNeedsExactlyTwoDataNodes) {
  const std::string one = "resource r {\n secret /k\n on a {\n local /dev/r\n remote tcp://b\n }\n"
                          " on h1 {\n role witness\n }\n}\n";
  expect_error(one, 8, "role", "exactly two data nodes; found 1");
  const std::string three = "resource r {\n secret /k\n on a {\n local /dev/r\n remote tcp://b\n }\n"
                            " on b {\n local /dev/r\n remote tcp://a\n }\n on c {\n local /dev/r\n"
                            " remote tcp://a\n }\n on h1 {\n role witness\n }\n}\n";
  expect_error(three, 16, "role", "exactly two data nodes; found 3");
}

TEST(ConfigFailoverError, TheWitnessNeedsASecret) {
  std::string text = failover_conf;
  text.erase(text.find("  secret /etc/hast/r.key\n"), 25);
  expect_error(text, 17, "role", "only nodes that know the key may take the lease", conf_path, "w");
}

TEST(ConfigFailoverError, AutoOnADataNodeNeedsWitnessSecretRemoteAndASynchronousMode) {
  auto without = [](std::string text, const std::string& line) {
    text.erase(text.find(line), line.size());
    return text;
  };
  expect_error(without(failover_conf, "witness tcp://10.0.0.3:8457\n"), 1, "failover",
               "needs 'witness <address>'");
  expect_error(without(failover_conf, "  secret /etc/hast/r.key\n"), 1, "failover", "needs 'secret'");
  std::string alone = failover_conf;
  alone.replace(alone.find("remote tcp://10.0.0.2"), 21, "remote none");
  expect_error(alone, 1, "failover", "needs a remote node");
  std::string async = failover_conf;
  async.insert(async.find("  secret"), "  replication async\n");
  expect_error(async, 1, "failover",
               "async acknowledges writes the secondary may not have, and a failover would lose them");
  // The line of the `failover` in force, here the resource's.
  std::string local_line = without(failover_conf, "witness tcp://10.0.0.3:8457\n");
  local_line.insert(local_line.find("  secret"), "  failover auto\n");
  expect_error(local_line, 7, "failover", "needs 'witness <address>'");
  // TOML: the same error on the same key.
  expect_error(without(failover_toml, "witness = \"tcp://10.0.0.3:8457\"\n"), 1, "failover",
               "needs 'witness <address>'", toml_path);
  // Every existing data-node error is still there.
  expect_error(without(failover_conf, "    local /dev/r\n    remote tcp://10.0.0.2\n"), 7, "local",
               "no local provider");
}

// --- Files ------------------------------------------------------------------

class ConfigFile : public scratch_test {
protected:
  std::string write(const std::string& name, const std::string& text) {
    const auto path = (dir_ / name).string();
    std::ofstream{path} << text;
    return path;
  }
  /// A key file as hastd wants it: readable by its owner only.
  std::string write_key(const std::string& name, const std::string& text, mode_t mode = 0600) {
    const auto path = write(name, text);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  /// The failover configuration with its `secret` pointing at `key`, read
  /// for the witness node.
  node_config with_key(const std::string& key) {
    std::string text = failover_conf;
    text.replace(text.find("/etc/hast/r.key"), 15, key);
    return load_config(write("hast.conf", text), "w");
  }
  /// The message read_secrets refuses `config` with ("" if it does not).
  static std::string refusal(node_config config) {
    try {
      read_secrets(config);
    } catch (const config_error& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(ConfigFile, LoadConfigReadsBothSyntaxesFromFiles) {
  const auto conf = write("hast.conf", full_conf);
  const auto toml = write("hast.toml", full_toml);
  const auto from_conf = load_config(conf, "h1");
  EXPECT_EQ(from_conf.path, conf);
  EXPECT_EQ(from_conf.resources.at(0).where.file, conf);
  EXPECT_EQ(without_locations(from_conf), without_locations(load_config(toml, "h1")));
}

TEST_F(ConfigFile, ErrorsInAFileNameThatFile) {
  const auto path = write("bad.conf", "listen tcp://0.0.0.0\nreplication bogus\n");
  try {
    load_config(path, "h1");
    ADD_FAILURE() << "expected a config_error";
  } catch (const config_error& e) {
    EXPECT_NE(std::string{e.what()}.find(path + ":2: replication: "), std::string::npos) << e.what();
  }
}

TEST_F(ConfigFile, UnreadableFileIsAConfigError) {
  const auto missing = (dir_ / "missing.conf").string();
  try {
    load_config(missing, "h1");
    ADD_FAILURE() << "expected a config_error";
  } catch (const config_error& e) {
    EXPECT_NE(std::string{e.what()}.find(missing + ": cannot read"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_config(dir_.string(), "h1"), config_error);
}

TEST_F(ConfigFile, ReadSecretsReadsTheWitnessKey) {
  const auto key = write_key("r.key", "witness-key-0123456789\n");
  std::string text = failover_conf;
  text.replace(text.find("/etc/hast/r.key"), 15, key);
  auto config = load_config(write("hast.conf", text), "w");
  read_secrets(config);
  EXPECT_EQ(config.resources.at(0).secret_key, "witness-key-0123456789");
  std::filesystem::remove(key);
  auto missing = load_config(write("hast.conf", text), "w");
  EXPECT_THROW(read_secrets(missing), config_error);
}

TEST_F(ConfigFile, AKeyFileThatGroupOrOthersMayAccessIsRefusedNamingTheFile) {
  const std::string key_text = "0123456789abcdef0123456789abcdef\n";
  for (mode_t mode : {0644, 0640, 0604, 0660, 0602}) {
    const auto key = write_key("open.key", key_text, mode);
    const auto why = refusal(with_key(key));
    ASSERT_FALSE(why.empty()) << "mode " << std::oct << mode << " was accepted";
    EXPECT_NE(why.find(key), std::string::npos) << why;
    EXPECT_NE(why.find("group or others"), std::string::npos) << why;
  }
  for (mode_t mode : {0600, 0400}) {
    const auto key = write_key("own.key", key_text, mode);
    EXPECT_EQ(refusal(with_key(key)), "") << "mode " << std::oct << mode;
  }
}

TEST_F(ConfigFile, AKeyShorterThanSixteenBytesIsRefusedNamingTheFile) {
  const auto short_key = write_key("short.key", std::string(min_key_bytes - 1, 'k') + "\n");
  const auto why = refusal(with_key(short_key));
  ASSERT_FALSE(why.empty()) << "a key of 15 bytes was accepted";
  EXPECT_NE(why.find(short_key), std::string::npos) << why;
  EXPECT_NE(why.find("fewer than 16"), std::string::npos) << why;
  const auto one = write_key("one.key", "k");
  EXPECT_FALSE(refusal(with_key(one)).empty());
  const auto enough = write_key("enough.key", std::string(min_key_bytes, 'k') + "\n");
  auto config = with_key(enough);
  read_secrets(config);
  EXPECT_EQ(config.resources.at(0).secret_key, std::string(min_key_bytes, 'k'));
}

TEST(ConfigUnauthenticated, ALinkToANonLoopbackRemoteWithoutSecretIsNamed) {
  auto pair = [](const std::string& remote, const std::string& secret) {
    std::string text = "resource r {\n" + secret + " on a {\n  local /dev/r\n  remote " + remote
                       + "\n }\n on b {\n  local /dev/r\n  remote tcp://10.9.9.9\n }\n}\n";
    return parse_config(text, "hast.conf", "a");
  };
  auto open = unauthenticated_links(pair("tcp://10.0.0.2", ""));
  ASSERT_EQ(open.size(), 1u);
  EXPECT_NE(open[0].find("resource r"), std::string::npos) << open[0];
  EXPECT_NE(open[0].find("tcp://10.0.0.2"), std::string::npos) << open[0];
  EXPECT_EQ(unauthenticated_links(pair("peer.example.org", "")).size(), 1u);
  EXPECT_EQ(unauthenticated_links(pair("tcp6://[2001:db8::1]:7000", "")).size(), 1u);
  // Loopback, a secret, or no remote: nothing to warn about.
  EXPECT_TRUE(unauthenticated_links(pair("tcp://127.0.0.2:7771", "")).empty());
  EXPECT_TRUE(unauthenticated_links(pair("tcp6://[::1]:7000", "")).empty());
  EXPECT_TRUE(unauthenticated_links(pair("localhost", "")).empty());
  EXPECT_TRUE(unauthenticated_links(pair("none", "")).empty());
  EXPECT_TRUE(unauthenticated_links(pair("tcp://10.0.0.2", " secret /k\n")).empty());
}

// --- Helpers ----------------------------------------------------------------

TEST(ConfigHelpers, SplitTcpAddressHandlesEverySchemeAndDefaultsThePort) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(split_tcp_address("tcp://10.0.0.1", host, port));
  EXPECT_EQ(host, "10.0.0.1");
  EXPECT_EQ(port, 8457);
  ASSERT_TRUE(split_tcp_address("tcp4://0.0.0.0:7000", host, port));
  EXPECT_EQ(host, "0.0.0.0");
  EXPECT_EQ(port, 7000);
  ASSERT_TRUE(split_tcp_address("tcp6://[::1]:7001", host, port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 7001);
  ASSERT_TRUE(split_tcp_address("tcp6://[::]", host, port));
  EXPECT_EQ(host, "::");
  EXPECT_EQ(port, 8457);
  ASSERT_TRUE(split_tcp_address("peer.example.org:9", host, port));
  EXPECT_EQ(host, "peer.example.org");
  EXPECT_EQ(port, 9);
  ASSERT_TRUE(split_tcp_address("peer", host, port, 10809));
  EXPECT_EQ(port, 10809);
}

TEST(ConfigHelpers, SplitTcpAddressRejectsMalformedAddresses) {
  std::string host;
  uint16_t port = 0;
  for (const char* bad : {"tcp://h:", "tcp://h:0", "tcp://h:65536", "tcp://h:x1", "tcp://", "tcp6://[::1",
                          "tcp6://[::1]x", "uds:///x", "udp://h:1", "tcp://a/b"})
    EXPECT_FALSE(split_tcp_address(bad, host, port)) << bad;
}

TEST(ConfigHelpers, UnixSocketPathAcceptsUdsUnixAndAbsolutePaths) {
  EXPECT_EQ(unix_socket_path("uds:///var/run/hastctl"), "/var/run/hastctl");
  EXPECT_EQ(unix_socket_path("unix:///run/x.sock"), "/run/x.sock");
  EXPECT_EQ(unix_socket_path("/run/x.sock"), "/run/x.sock");
  EXPECT_EQ(unix_socket_path("tcp://127.0.0.1"), "");
  EXPECT_EQ(unix_socket_path("relative.sock"), "");
}

TEST(ConfigHelpers, EnumsRoundTripThroughText) {
  for (auto x : {replication_mode::fullsync, replication_mode::memsync, replication_mode::async})
    EXPECT_EQ(parse_replication(to_string(x)), x);
  for (auto x : {checksum_kind::none, checksum_kind::crc32, checksum_kind::crc32c, checksum_kind::sha256})
    EXPECT_EQ(parse_checksum(to_string(x)), x);
  for (auto x : {compression_kind::none, compression_kind::hole, compression_kind::lzf, compression_kind::lz4})
    EXPECT_EQ(parse_compression(to_string(x)), x);
  for (auto x : {role::init, role::primary, role::secondary})
    EXPECT_EQ(parse_role(to_string(x)), x);
  EXPECT_FALSE(parse_replication("sync"));
  EXPECT_FALSE(parse_checksum("md5"));
  EXPECT_FALSE(parse_compression("zstd"));
  EXPECT_FALSE(parse_role("master"));
}

} // namespace
} // namespace hast
