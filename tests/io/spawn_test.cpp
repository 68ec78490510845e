// Starting a program as hastd starts its hooks and the tools behind
// /dev/hast/<name>: one signal policy (empty mask, default actions), no
// descriptor of the starter's beyond 0-2, exec failures reported as errors,
// and a program tied to its starter ending with the thread that started
// it. Real processes.

#include "io/process/spawn.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace hast {
namespace {

class Spawn : public scratch_test {
protected:
  std::string read(const std::string& name) const {
    std::ifstream in{path(name)};
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

};

/// Waits for `pid` and returns its wait status.
int wait_for(pid_t pid) {
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  return wstatus;
}

TEST_F(Spawn, AProgramStartsWithACleanSignalStateAndNoDescriptorOfTheStarterBeyondTwo) {
  // What a daemon has: blocked and ignored signals, a descriptor that is
  // not close-on-exec.
  sigset_t blocked, previous;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &blocked, &previous), 0);
  auto old_hup = ::signal(SIGHUP, SIG_IGN);
  int inherited = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(inherited, 0);
  ASSERT_GE(::dup2(inherited, 57), 0);

  int out = ::open(path("out").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(out, 0);
  spawn_options options;
  options.stdout_fd = out;
  options.search_path = true;
  auto child = spawn_program(
    {"sh", "-c", "grep -E '^Sig(Blk|Ign):' /proc/self/status; ls /proc/self/fd"}, options);
  ::close(out);
  ::close(57);
  ::close(inherited);
  ::signal(SIGHUP, old_hup);
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ASSERT_TRUE(child) << std::strerror(child.error);
  auto wstatus = wait_for(child.pid);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << read("out");

  auto text = read("out");
  EXPECT_NE(text.find("SigBlk:\t0000000000000000"), std::string::npos) << text;
  EXPECT_NE(text.find("SigIgn:\t0000000000000000"), std::string::npos) << text;
  std::istringstream fds{text.substr(text.find("SigIgn"))};
  std::string line;
  std::getline(fds, line);  // the SigIgn line
  for (std::string fd; fds >> fd;)
    EXPECT_TRUE(fd == "0" || fd == "1" || fd == "2" || fd == "3") << "descriptor " << fd << " was "
                                                                  << "inherited: " << text;
}

TEST_F(Spawn, AProgramThatCannotStartIsAnErrorAndNoChild) {
  auto missing = spawn_program({path("no-such-program")}, {});
  EXPECT_FALSE(missing);
  EXPECT_EQ(missing.error, ENOENT);

  spawn_options in_path;
  in_path.search_path = true;
  auto not_in_path = spawn_program({"hast-no-such-program"}, in_path);
  EXPECT_FALSE(not_in_path);
  EXPECT_EQ(not_in_path.error, ENOENT);

  std::ofstream{path("not-executable")} << "#!/bin/sh\n";
  auto not_executable = spawn_program({path("not-executable")}, {});
  EXPECT_FALSE(not_executable);
  EXPECT_EQ(not_executable.error, EACCES);
  // No child was left to collect.
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST_F(Spawn, AProgramTiedToItsStarterGetsSigtermWhenTheStartingThreadEnds) {
  spawned child;
  std::thread starter{[&] {
    spawn_options options;
    options.search_path = true;
    options.ends_with_starter = true;
    child = spawn_program({"sleep", "120"}, options);
  }};
  starter.join();
  ASSERT_TRUE(child) << std::strerror(child.error);
  auto wstatus = wait_for(child.pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << "sleep 120 ended by itself: the signal never came";
  EXPECT_EQ(WTERMSIG(wstatus), starter_death_signal);
}

} // namespace
} // namespace hast
