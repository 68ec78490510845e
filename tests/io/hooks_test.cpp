// Hooks as hastd runs them: a clean environment (PATH, HOME and the locale,
// nothing else of hastd's, NOTIFY_SOCKET in particular), and no more than
// max_running_hooks at once, the rest queued in order. Real processes.

#include "io/process/hooks.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace hast {
namespace {

using namespace std::chrono_literals;

class Hooks : public scratch_test {
protected:

  /// The lines of `name` once it has `n` of them (empty after 20 s).
  std::vector<std::string> wait_lines(const std::string& name, size_t n) {
    for (int i = 0; i < 2000; ++i) {
      std::ifstream in{path(name)};
      std::vector<std::string> lines;
      for (std::string line; std::getline(in, line);)
        lines.push_back(line);
      if (lines.size() >= n)
        return lines;
      std::this_thread::sleep_for(10ms);
    }
    return {};
  }

};

TEST_F(Hooks, AHookGetsACleanEnvironmentWithoutTheServiceManagersSocket) {
  ::setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
  ::setenv("HAST_TEST_SECRET_VALUE", "leaked", 1);
  ::setenv("PATH", "/opt/evil/bin:/usr/bin:/bin", 1);
  run_hook("/bin/sh", {"-c", "env > '" + path("env.tmp") + "' && mv '" + path("env.tmp") + "' '"
                                 + path("env") + "'; echo done >> '" + path("done") + "'"});
  ASSERT_FALSE(wait_lines("done", 1).empty()) << "the hook did not run";
  std::ifstream in{path("env")};
  std::string text{std::istreambuf_iterator<char>{in}, {}};
  EXPECT_EQ(text.find("NOTIFY_SOCKET"), std::string::npos) << text;
  EXPECT_EQ(text.find("HAST_TEST_SECRET_VALUE"), std::string::npos) << text;
  EXPECT_NE(text.find(std::string{"PATH="} + hook_path + "\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("/opt/evil"), std::string::npos) << text;
}

TEST_F(Hooks, NoMoreThanTheLimitRunAtOnceAndTheRestRunLaterInOrder) {
  // Each hook notes its start and end; the log gives how many overlapped.
  // Hook i runs 0.3 + 0.2 i s, so the first ones end one at a time and
  // each frees room for one waiting hook: their starts are far apart.
  const size_t hooks = max_running_hooks + 6;
  const auto log = path("log");
  for (size_t i = 0; i < hooks; ++i)
    run_hook("/bin/sh", {"-c", "echo start " + std::to_string(i) + " >> '" + log + "'; sleep "
                                   + std::to_string(0.3 + 0.2 * static_cast<double>(i))
                                   + "; echo end " + std::to_string(i) + " >> '" + log + "'"});
  auto lines = wait_lines("log", 2 * hooks);
  ASSERT_EQ(lines.size(), 2 * hooks) << "not every hook ran";
  size_t running = 0;
  size_t most = 0;
  std::vector<int> started;
  for (auto& line : lines) {
    std::istringstream words{line};
    std::string what;
    int index = -1;
    words >> what >> index;
    if (what == "start") {
      most = std::max(most, ++running);
      started.push_back(index);
    } else {
      --running;
    }
  }
  EXPECT_LE(most, max_running_hooks);
  // The waiting ones started in the order they were requested, after the
  // first ones.
  std::vector<int> queued(started.begin() + static_cast<long>(max_running_hooks), started.end());
  EXPECT_TRUE(std::is_sorted(queued.begin(), queued.end()));
  for (int index : queued)
    EXPECT_GE(index, static_cast<int>(max_running_hooks));
}

} // namespace
} // namespace hast
