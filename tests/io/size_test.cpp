#include "io/size.hpp"

#include <gtest/gtest.h>

namespace hast {
namespace {

TEST(ParseSize, AcceptsPlainBytes) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("512B"), 512u);
  EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
}

TEST(ParseSize, AcceptsBinarySuffixesInAnyCase) {
  EXPECT_EQ(parse_size("4k"), 4096u);
  EXPECT_EQ(parse_size("4K"), 4096u);
  EXPECT_EQ(parse_size("64M"), 64ull << 20);
  EXPECT_EQ(parse_size("64MB"), 64ull << 20);
  EXPECT_EQ(parse_size("64MiB"), 64ull << 20);
  EXPECT_EQ(parse_size("64mib"), 64ull << 20);
  EXPECT_EQ(parse_size("2g"), 2ull << 30);
  EXPECT_EQ(parse_size("1T"), 1ull << 40);
  EXPECT_EQ(parse_size("1tb"), 1ull << 40);
  EXPECT_EQ(parse_size("3P"), 3ull << 50);
  EXPECT_EQ(parse_size("15E"), 15ull << 60);
}

TEST(ParseSize, RejectsMalformedText) {
  for (auto text :
       {"", "M", "-1", " 1", "1 ", "1.5G", "1X", "1MBB", "1Mi", "1KiBs", "0x10", "1iB", "1BB"})
    EXPECT_FALSE(parse_size(text).has_value()) << text;
}

TEST(ParseSize, RejectsOverflow) {
  EXPECT_FALSE(parse_size("18446744073709551616").has_value());
  EXPECT_FALSE(parse_size("16E").has_value());
  EXPECT_FALSE(parse_size("17179869184G").has_value());
  EXPECT_EQ(parse_size("17179869183G"), 17179869183ull << 30);
}

TEST(Humanize, UsesBinaryUnitsWithOneDecimalBelowTen) {
  EXPECT_EQ(humanize(0), "0B");
  EXPECT_EQ(humanize(1023), "1023B");
  EXPECT_EQ(humanize(1024), "1.0KiB");
  EXPECT_EQ(humanize(4096), "4.0KiB");
  EXPECT_EQ(humanize(2097152), "2.0MiB");
  EXPECT_EQ(humanize(1536ull << 20), "1.5GiB");
  EXPECT_EQ(humanize(60ull << 20), "60MiB");
  EXPECT_EQ(humanize(1ull << 40), "1.0TiB");
}

TEST(Humanize, MovesToTheNextUnitInsteadOfPrinting1024) {
  EXPECT_EQ(humanize((1ull << 20) - 1), "1.0MiB");
  EXPECT_EQ(humanize(UINT64_MAX), "16EiB");
}

TEST(Humanize, RoundTripsThroughParseSizeForWholeUnits) {
  for (auto text : {"512KiB", "64MiB", "20GiB"}) {
    auto bytes = parse_size(text);
    ASSERT_TRUE(bytes);
    EXPECT_EQ(humanize(*bytes), text);
  }
}

} // namespace
} // namespace hast
