#include "io/codec/size.hpp"

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

// Expected strings are what FreeBSD's humanize_number(buf, 5, n, "",
// HN_AUTOSCALE, HN_NOSPACE | HN_DECIMAL) writes, followed by "B".
TEST(HumanizeNumber, PrintsBytesBelowOneThousandAsTheyAre) {
  EXPECT_EQ(humanize_number(0), "0B");
  EXPECT_EQ(humanize_number(1), "1B");
  EXPECT_EQ(humanize_number(10), "10B");
  EXPECT_EQ(humanize_number(999), "999B");
}

TEST(HumanizeNumber, MovesToKilobytesFromOneThousand) {
  EXPECT_EQ(humanize_number(1000), "1.0KB");
  EXPECT_EQ(humanize_number(1023), "1.0KB");
  EXPECT_EQ(humanize_number(1024), "1.0KB");
}

TEST(HumanizeNumber, RoundsTheDecimalToNearest) {
  EXPECT_EQ(humanize_number(1536), "1.5KB");
  EXPECT_EQ(humanize_number(1587), "1.5KB"); // 1.5498 K
  EXPECT_EQ(humanize_number(1588), "1.6KB"); // 1.5508 K
  EXPECT_EQ(humanize_number(9728), "9.5KB");
}

TEST(HumanizeNumber, DropsTheDecimalFromNinePointNineFiveUp) {
  EXPECT_EQ(humanize_number(10188), "9.9KB"); // 9 K + 972: below ceil(.95 * 1024)
  EXPECT_EQ(humanize_number(10189), "10KB");  // 9 K + 973
  EXPECT_EQ(humanize_number(10239), "10KB");
  EXPECT_EQ(humanize_number(10240), "10KB");
}

TEST(HumanizeNumber, RoundsWholeUnitsHalfUp) {
  EXPECT_EQ(humanize_number(10751), "10KB"); // 10 K + 511
  EXPECT_EQ(humanize_number(10752), "11KB"); // 10 K + 512
  EXPECT_EQ(humanize_number(102400), "100KB");
  EXPECT_EQ(humanize_number(511488), "500KB");
}

TEST(HumanizeNumber, GoesUpAUnitRatherThanRoundToOneThousand) {
  EXPECT_EQ(humanize_number(1023487), "999KB"); // 999 K + 511
  EXPECT_EQ(humanize_number(1023488), "1.0MB"); // 999 K + 512
  EXPECT_EQ(humanize_number(1048575), "1.0MB");
  EXPECT_EQ(humanize_number(1047527424), "999MB");
  EXPECT_EQ(humanize_number(1048576000), "1.0GB");
}

TEST(HumanizeNumber, NamesEveryUnitUpToExabytes) {
  EXPECT_EQ(humanize_number(1ull << 20), "1.0MB");
  EXPECT_EQ(humanize_number(2ull << 20), "2.0MB"); // the default extent size
  EXPECT_EQ(humanize_number(64ull << 20), "64MB");
  EXPECT_EQ(humanize_number(67100672), "64MB"); // 63.99 MiB
  EXPECT_EQ(humanize_number(128ull << 20), "128MB");
  EXPECT_EQ(humanize_number(1ull << 30), "1.0GB");
  EXPECT_EQ(humanize_number(1ull << 40), "1.0TB");
  EXPECT_EQ(humanize_number(1ull << 50), "1.0PB");
  EXPECT_EQ(humanize_number(1ull << 60), "1.0EB");
  EXPECT_EQ(humanize_number(INT64_MAX), "8.0EB");
}

TEST(HumanizeNumber, PrintsCountsAboveInt64MaxAsFreeBsdsCastDoes) {
  EXPECT_EQ(humanize_number(UINT64_MAX), "-1B");
  EXPECT_EQ(humanize_number(9ull << 60), "-7.0B"); // "-7.0E" cut to 4 characters
  EXPECT_EQ(humanize_number(1ull << 63), "-922B");
}

} // namespace
} // namespace hast
