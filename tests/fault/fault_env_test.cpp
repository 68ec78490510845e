// The rules file's parser, the rules' matching, and the environment whose
// providers follow the file as it changes.

#include "tests/fault/fault_env.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <stdlib.h>

namespace hast::fault {
namespace {

using namespace std::chrono_literals;

TEST(fault_rules, a_rule_names_kinds_a_provider_an_optional_range_and_an_errno) {
  std::vector<std::string> complaints;
  auto r = parse_rules("write /a 4096 8192\n"
                       "read /b ENOSPC\n"
                       "  flush /c 0x1000 0x10 5  # a comment\n"
                       "\n"
                       "# only a comment\n"
                       "any /d\n",
                       &complaints);
  EXPECT_TRUE(complaints.empty()) << complaints.front();
  ASSERT_EQ(r.list.size(), 4u);
  EXPECT_EQ(r.list[0].path, "/a");
  EXPECT_FALSE(r.list[0].whole);
  EXPECT_EQ(r.list[0].offset, 4096u);
  EXPECT_EQ(r.list[0].length, 8192u);
  EXPECT_EQ(r.list[0].error, EIO);
  EXPECT_TRUE(r.list[1].whole);
  EXPECT_EQ(r.list[1].error, ENOSPC);
  EXPECT_EQ(r.list[2].offset, 4096u);
  EXPECT_EQ(r.list[2].length, 16u);
  EXPECT_EQ(r.list[2].error, 5);
  EXPECT_TRUE(r.list[3].whole);
}

TEST(fault_rules, a_malformed_line_is_reported_with_its_number_and_the_others_kept) {
  std::vector<std::string> complaints;
  auto r = parse_rules("write /a\n"
                       "scribble /a\n"
                       "read relative/path\n"
                       "read /a 4096\n"
                       "read /a 4096 0\n"
                       "read /a 10 x\n"
                       "read /a 0 10 EWHATEVER\n"
                       "read\n"
                       "read /a 0 1 EIO extra\n"
                       "discard /b\n",
                       &complaints);
  ASSERT_EQ(r.list.size(), 2u);
  EXPECT_EQ(r.list[0].path, "/a");
  EXPECT_EQ(r.list[1].path, "/b");
  ASSERT_EQ(complaints.size(), 8u);
  EXPECT_EQ(complaints[0].rfind("line 2: 'scribble'", 0), 0u) << complaints[0];
  EXPECT_EQ(complaints[1].rfind("line 3: ", 0), 0u) << complaints[1];
  EXPECT_NE(complaints[2].find("an offset needs a length"), std::string::npos) << complaints[2];
  EXPECT_NE(complaints[3].find("empty"), std::string::npos) << complaints[3];
  EXPECT_EQ(complaints[7].rfind("line 9: ", 0), 0u) << complaints[7];
}

TEST(fault_rules, errnos_are_names_or_numbers) {
  EXPECT_EQ(parse_errno("EIO"), EIO);
  EXPECT_EQ(parse_errno("EROFS"), EROFS);
  EXPECT_EQ(parse_errno("28"), 28);
  EXPECT_EQ(parse_errno("0"), 0);
  EXPECT_EQ(parse_errno("eio"), 0);
  EXPECT_EQ(parse_errno(""), 0);
}

TEST(fault_rules, a_rule_fails_overlapping_ops_of_its_kinds_on_its_provider_only) {
  auto r
      = parse_rules("write /a 4096 4096 ENOSPC\nread /a\ndiscard /b 0 10\nflush /b 0 1\n", nullptr);
  EXPECT_EQ(r.fault("/a", io_kind::write, 4096, 1), ENOSPC);
  EXPECT_EQ(r.fault("/a", io_kind::write, 0, 4097), ENOSPC);
  EXPECT_EQ(r.fault("/a", io_kind::write, 8191, 100), ENOSPC);
  EXPECT_EQ(r.fault("/a", io_kind::write, 0, 4096), 0);
  EXPECT_EQ(r.fault("/a", io_kind::write, 8192, 4096), 0);
  EXPECT_EQ(r.fault("/a", io_kind::write, 4096, 0), 0) << "an empty op overlaps nothing";
  EXPECT_EQ(r.fault("/a", io_kind::write_zeroes, 4096, 4096), ENOSPC) << "zeroing writes";
  EXPECT_EQ(r.fault("/a", io_kind::discard, 4096, 4096), 0);
  EXPECT_EQ(r.fault("/a", io_kind::read, 1 << 30, 1), EIO) << "no range: the whole provider";
  EXPECT_EQ(r.fault("/a", io_kind::flush, 0, 0), 0);
  EXPECT_EQ(r.fault("/b", io_kind::discard, 5, 1), EIO);
  EXPECT_EQ(r.fault("/b", io_kind::read, 5, 1), 0);
  EXPECT_EQ(r.fault("/b", io_kind::flush, 0, 0), EIO) << "a flush has no range";
  EXPECT_EQ(r.fault("/c", io_kind::read, 0, 1), 0);
}

TEST(fault_rules, the_first_matching_rule_wins) {
  auto r = parse_rules("write /a 0 10 EROFS\nany /a ENOSPC\n", nullptr);
  EXPECT_EQ(r.fault("/a", io_kind::write, 0, 1), EROFS);
  EXPECT_EQ(r.fault("/a", io_kind::write, 10, 1), ENOSPC);
  EXPECT_EQ(r.fault("/a", io_kind::flush, 0, 0), ENOSPC);
}

class fault_env_test : public testing::Test {
protected:
  void SetUp() override {
    auto tmpl = (std::filesystem::temp_directory_path() / "hast-fault-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    disk_ = (dir_ / "p.img").string();
    ASSERT_TRUE(provider::create_file(disk_, 1 << 20));
    rules_ = (dir_ / "faults").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  /// Replaces the rules file as a test should: a new file renamed over it.
  void write_rules(const std::string& text) {
    auto tmp = rules_ + ".new";
    std::ofstream{tmp} << text;
    std::filesystem::rename(tmp, rules_);
  }

  std::filesystem::path dir_;
  std::string disk_;
  std::string rules_;
};

TEST_F(fault_env_test, its_providers_fail_what_the_file_says_and_follow_its_changes) {
  write_rules("write " + disk_ + " 8192 4096\n");
  fault_env env{rules_, 0ms};
  auto p = env.open_provider(disk_, true);
  ASSERT_TRUE(p) << p.error().message();
  std::vector<uint8_t> buf(4096, 1);
  EXPECT_TRUE(p->write(buf.data(), buf.size(), 4096));
  auto st = p->write(buf.data(), buf.size(), 8192);
  EXPECT_NE(st.message().find("(injected)"), std::string::npos) << st.message();
  EXPECT_TRUE(p->read(buf.data(), buf.size(), 8192));

  write_rules("read " + disk_ + " EROFS\n");
  EXPECT_TRUE(p->write(buf.data(), buf.size(), 8192));
  EXPECT_EQ(p->fault(io_kind::read, 0, 1), EROFS);

  write_rules("");
  EXPECT_EQ(p->fault(io_kind::read, 0, 1), 0) << "an empty file: no faults";
  write_rules("any " + disk_ + "\n");
  EXPECT_EQ(p->fault(io_kind::flush, 0, 0), EIO);
  std::filesystem::remove(rules_);
  EXPECT_EQ(p->fault(io_kind::flush, 0, 0), 0) << "a missing file: no faults";
}

TEST_F(fault_env_test, the_file_is_checked_at_most_once_per_interval) {
  write_rules("read " + disk_ + "\n");
  fault_env env{rules_, 1h};
  auto p = env.open_provider(disk_, true);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->fault(io_kind::read, 0, 1), EIO);
  write_rules("");
  EXPECT_EQ(p->fault(io_kind::read, 0, 1), EIO) << "not re-read within the hour";
}

TEST_F(fault_env_test, a_rule_names_a_provider_by_any_path_to_it) {
  std::filesystem::create_symlink(disk_, dir_ / "link");
  write_rules("read " + (dir_ / "." / "link").string() + "\n");
  fault_env env{rules_, 0ms};
  auto p = env.open_provider(disk_, false);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->fault(io_kind::read, 0, 1), EIO);
  auto other = (dir_ / "q.img").string();
  ASSERT_TRUE(provider::create_file(other, 1 << 20));
  auto q = env.open_provider(other, false);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->fault(io_kind::read, 0, 1), 0);
}

TEST_F(fault_env_test, a_missing_provider_is_the_default_environments_error) {
  fault_env env{rules_};
  auto p = env.open_provider((dir_ / "missing").string(), true);
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("missing"), std::string::npos);
}

TEST_F(fault_env_test, threads_may_ask_while_the_file_changes) {
  write_rules("");
  fault_env env{rules_, 0ms};
  auto p = env.open_provider(disk_, true);
  ASSERT_TRUE(p);
  std::atomic<bool> stop{false};
  std::atomic<size_t> faults{0};
  std::vector<std::thread> askers;
  for (int i = 0; i < 4; ++i)
    askers.emplace_back([&] {
      while (!stop)
        if (p->fault(io_kind::write, 0, 4096) != 0)
          ++faults;
    });
  for (int i = 0; i < 50; ++i) {
    write_rules(i % 2 ? "" : "write " + disk_ + "\n");
    std::this_thread::sleep_for(1ms);
  }
  write_rules("write " + disk_ + "\n");
  EXPECT_EQ(p->fault(io_kind::write, 0, 4096), EIO);
  stop = true;
  for (auto& t : askers)
    t.join();
  EXPECT_GT(faults.load(), 0u);
}

} // namespace
} // namespace hast::fault
