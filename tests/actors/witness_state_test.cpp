// The witness's record on disk: only a missing file is "no record". A file
// that exists but cannot be read may hold a lease granted before a restart;
// it is reported, and never replaced, so that no grant follows from a record
// the witness forgot.

#include "actors/witness.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace hast {
namespace {

class witness_state_file : public scratch_test {
protected:

  static lease_record held_by_a() {
    lease_record r;
    r.holder = "a";
    r.epoch = 7;
    r.resuid = 42;
    r.localcnt = 3;
    r.in_sync = true;
    return r;
  }

};

TEST_F(witness_state_file, a_missing_file_is_an_empty_record) {
  auto r = load_lease_record(path("r0.witness"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, lease_record{});
}

TEST_F(witness_state_file, a_saved_record_reads_back_and_may_be_replaced) {
  ASSERT_TRUE(save_lease_record(path("r0.witness"), held_by_a()));
  auto r = load_lease_record(path("r0.witness"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, held_by_a());
  auto next = held_by_a();
  next.epoch = 8;
  ASSERT_TRUE(save_lease_record(path("r0.witness"), next));
  EXPECT_EQ(*load_lease_record(path("r0.witness")), next);
}

TEST_F(witness_state_file, a_file_that_cannot_be_opened_is_an_error_not_an_empty_record) {
  // A loop of links: open fails with ELOOP.
  ASSERT_EQ(::symlink(path("r0.witness").c_str(), path("r0.witness").c_str()), 0);
  auto looped = load_lease_record(path("r0.witness"));
  ASSERT_FALSE(looped) << "a file that cannot be opened was taken for no record";
  EXPECT_NE(looped.error().message().find("r0.witness"), std::string::npos);
  // A path through a regular file: ENOTDIR.
  std::ofstream{path("plain")} << "x";
  EXPECT_FALSE(load_lease_record(path("plain") + "/r0.witness"));
  // A directory: EISDIR on read.
  std::filesystem::create_directory(path("dir.witness"));
  EXPECT_FALSE(load_lease_record(path("dir.witness")));
}

TEST_F(witness_state_file, a_record_that_cannot_be_read_is_never_replaced_so_no_grant_is_made) {
  // The witness persists a grant before it answers; a failed save refuses
  // the grant (actors/witness.cpp on_request).
  ASSERT_EQ(::symlink(path("r0.witness").c_str(), path("r0.witness").c_str()), 0);
  auto st = save_lease_record(path("r0.witness"), held_by_a());
  ASSERT_FALSE(st) << "the unreadable record was replaced";
  EXPECT_NE(st.message().find("not replacing"), std::string::npos) << st.message();
  EXPECT_TRUE(std::filesystem::is_symlink(path("r0.witness")));

  std::ofstream{path("r1.witness")} << "{\"holder\": \"a\", \"epo";  // damaged by hand
  EXPECT_FALSE(save_lease_record(path("r1.witness"), held_by_a()));
  std::ifstream in{path("r1.witness")};
  std::string text{std::istreambuf_iterator<char>{in}, {}};
  EXPECT_EQ(text, "{\"holder\": \"a\", \"epo");
}

} // namespace
} // namespace hast
