#include "config/config.hpp"

#include <gtest/gtest.h>

namespace hast {
namespace {

const char* with_rate(const char* rate_line) {
  static std::string text;
  text = std::string{"resource r {\n  local /tmp/r.img\n  "} + rate_line
         + "\n  on a {\n    remote none\n  }\n}\n";
  return text.c_str();
}

TEST(syncrate, is_unlimited_by_default) {
  auto cfg = parse_config(with_rate(""), "hast.conf", "a");
  EXPECT_EQ(cfg.resources.at(0).syncrate, 0u);
}

TEST(syncrate, accepts_a_rate_with_a_binary_suffix) {
  auto cfg = parse_config(with_rate("syncrate 50M"), "hast.conf", "a");
  EXPECT_EQ(cfg.resources.at(0).syncrate, 50ull << 20);
  EXPECT_EQ(parse_config(with_rate("syncrate unlimited"), "hast.conf", "a").resources[0].syncrate,
            0u);
}

TEST(syncrate, is_the_same_in_toml) {
  auto toml = "[resource.r]\nlocal = \"/tmp/r.img\"\nsyncrate = \"50M\"\n"
              "[resource.r.on.a]\nremote = \"none\"\n";
  auto cfg = parse_config(toml, "hast.toml", "a");
  EXPECT_EQ(cfg.resources.at(0).syncrate, 50ull << 20);
}

TEST(syncrate, rejects_a_bad_value_naming_file_line_and_option) {
  try {
    parse_config(with_rate("syncrate fast"), "hast.conf", "a");
    FAIL() << "accepted 'syncrate fast'";
  } catch (const config_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("hast.conf:3"), std::string::npos) << what;
    EXPECT_NE(what.find("syncrate"), std::string::npos) << what;
  }
}

} // namespace
} // namespace hast
