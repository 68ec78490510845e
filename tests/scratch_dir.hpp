// A scratch directory for one test: made under the temp directory when the
// test's fixture is built, removed with everything in it when it is
// destroyed, on success and on failure. The one fixture for every unit and
// actor test that needs files or sockets.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace hast {

/// A fresh directory (BASE/hast-TAG-XXXXXX, BASE by default $TMPDIR or
/// /tmp), removed on destruction.
class scratch_dir {
public:
  explicit scratch_dir(std::string_view tag = "test",
                       const std::filesystem::path& base = std::filesystem::temp_directory_path()) {
    auto pattern = (base / ("hast-" + std::string{tag} + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::system_error{errno, std::generic_category(), "mkdtemp " + pattern};
    dir_ = pattern;
  }
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  /// NAME inside the directory.
  std::string path(std::string_view name) const { return (dir_ / name).string(); }

private:
  std::filesystem::path dir_;
};

/// A GoogleTest fixture with a scratch directory: `dir_` and `path(name)`.
class scratch_test : public ::testing::Test {
protected:
  std::string path(std::string_view name) const { return scratch_.path(name); }

private:
  scratch_dir scratch_;  // made first: dir_ below refers to it

protected:
  const std::filesystem::path& dir_ = scratch_.dir();
};

}  // namespace hast
