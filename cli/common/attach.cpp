// hastctl attach/detach: make /dev/hast/<res> a real block device backed by
// the primary's NBD export. With the kernel's nbd module, nbd-client does it;
// without it (many cloud and CI kernels), nbdfuse exposes the export as a
// file in a FUSE mount and a loop device turns that file into a block device.
// Detach undoes exactly what attach recorded in /run/hast/attach/<res>/.

#include "cli/common/commands.hpp"
#include "cli/common/control_client.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace hast::cli {

namespace fs = std::filesystem;

namespace {

const fs::path attach_root = "/run/hast/attach";
const fs::path device_dir = "/dev/hast";

int fail(const std::string& message) {
  std::cerr << "hastctl: " << message << '\n';
  return 1;
}

/// Runs a program to completion; its stdout is captured when `out` is given.
int run(const std::vector<std::string>& argv, std::string* out = nullptr,
        std::string* err_text = nullptr) {
  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0)
    return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  auto rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  auto drain = [](int fd, std::string* into) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
      if (into)
        into->append(buf, static_cast<size_t>(n));
    ::close(fd);
  };
  std::string err_local;
  drain(out_pipe[0], out);
  drain(err_pipe[0], err_text ? err_text : &err_local);
  if (rc != 0)
    return -1;
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

/// Starts a long-running helper (nbdfuse) in its own session; returns its pid.
pid_t start_background(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  auto rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return rc == 0 ? pid : -1;
}

bool alive(pid_t pid) {
  return pid > 0 && ::kill(pid, 0) == 0;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

bool have_kernel_nbd() {
  return fs::exists("/sys/block/nbd0") && run({"sh", "-c", "command -v nbd-client"}) == 0;
}

std::string free_nbd_device() {
  for (int i = 0; fs::exists("/sys/block/nbd" + std::to_string(i)); ++i)
    if (!fs::exists("/sys/block/nbd" + std::to_string(i) + "/pid"))
      return "/dev/nbd" + std::to_string(i);
  return "";
}

/// The export's libnbd URI and nbd-client arguments.
struct export_address {
  std::string uri;
  std::vector<std::string> nbd_client_args;
};

std::optional<export_address> address_of(const resource_config& res) {
  if (auto path = unix_socket_path(res.nbd); !path.empty())
    return export_address{"nbd+unix:///" + res.name + "?socket=" + path, {"-unix", path}};
  std::string host;
  uint16_t port = 0;
  if (!split_tcp_address(res.nbd, host, port, 10809))
    return std::nullopt;
  auto host_part = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return export_address{"nbd://" + host_part + ":" + std::to_string(port) + "/" + res.name,
                        {host, std::to_string(port)}};
}

void write_state(const fs::path& dir, const nlohmann::json& state) {
  std::ofstream{dir / "state.json"} << state.dump() << '\n';
}

/// A block device someone holds exclusively: a mounted file system, a
/// device-mapper or md holder, a running mkfs. Tearing it down now would pull
/// the disk from under them.
bool device_busy(const std::string& device) {
  int fd = ::open(device.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0)
    return errno == EBUSY;
  ::close(fd);
  return false;
}

/// What a loop device is bound to now.
enum class loop_binding { free, ours, other };

/// Compares the loop device's backing file with the one attach recorded
/// (device and inode), so that detach never unbinds a loop device that was
/// freed meanwhile and reused by someone else. Without a record (state from
/// an older hastctl) a bound device counts as ours.
loop_binding loop_bound_to(const std::string& device, const nlohmann::json& state) {
  int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return loop_binding::free;
  loop_info64 info{};
  auto rc = ::ioctl(fd, LOOP_GET_STATUS64, &info);
  auto error = errno;
  ::close(fd);
  if (rc != 0)
    return error == ENXIO ? loop_binding::free : loop_binding::ours;
  if (!state.contains("backing_ino"))
    return loop_binding::ours;
  return info.lo_inode == state.value("backing_ino", uint64_t{0})
             && info.lo_device == state.value("backing_dev", uint64_t{0})
           ? loop_binding::ours
           : loop_binding::other;
}

bool fuse_mounted(const std::string& mountpoint) {
  std::ifstream mounts{"/proc/self/mounts"};
  std::string source, target;
  while (mounts >> source >> target) {
    if (target == mountpoint)
      return true;
    mounts.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return false;
}

/// Unmounts nbdfuse's mount and waits for nbdfuse to exit (it does once
/// unmounted); terminates it if it does not. Returns false with `error` set
/// when something could not be undone.
bool stop_nbdfuse(const std::string& mountpoint, pid_t pid, std::string& error) {
  bool ok = true;
  if (!mountpoint.empty() && fuse_mounted(mountpoint)) {
    std::string err_text;
    if (run({"fusermount3", "-u", mountpoint}, nullptr, &err_text) != 0) {
      // Nothing may use it any more (the loop device is gone): detach lazily.
      if (run({"fusermount3", "-u", "-z", mountpoint}) != 0) {
        error = "fusermount3 -u " + mountpoint + ": " + trim(err_text);
        ok = false;
      }
    }
  }
  for (int i = 0; i < 100 && alive(pid); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (alive(pid)) {
    ::kill(pid, SIGTERM);
    std::cerr << "hastctl: nbdfuse (pid " << pid << ") did not exit; terminated it\n";
  }
  return ok;
}

} // namespace

int run_attach(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {}, error);
  if (!parsed)
    return fail("attach: " + error);
  if (parsed->operands.size() != 1)
    return fail("attach: expected exactly one resource name");
  auto name = parsed->operands[0];
  auto config = load(options);
  if (!config)
    return fail(config.error().message());
  auto res = config->find(name);
  if (res == nullptr)
    return fail("attach: unknown resource '" + name + "'");
  auto reply = request_daemon(options, {{"command", "status"}, {"resources", {name}}});
  if (!reply)
    return fail(reply.error().message());
  auto role = reply->at("resources").at(0).value("role", "init");
  if (role != "primary")
    return fail("attach: resource " + name + " is " + role + ", not primary");
  auto addr = address_of(*res);
  if (!addr)
    return fail("attach: cannot use NBD address " + res->nbd);
  auto dir = attach_root / name;
  if (fs::exists(dir / "state.json"))
    return fail("attach: " + name + " is already attached (see " + (dir / "state.json").string()
                + "); run 'hastctl detach " + name + "' first");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return fail("attach: cannot create " + dir.string() + ": " + ec.message());
  fs::create_directories(device_dir, ec);
  if (ec)
    return fail("attach: cannot create " + device_dir.string() + ": " + ec.message());

  nlohmann::json state;
  std::string device;
  if (have_kernel_nbd()) {
    device = free_nbd_device();
    if (device.empty())
      return fail("attach: no free /dev/nbd device");
    std::vector<std::string> argv{"nbd-client"};
    argv.insert(argv.end(), addr->nbd_client_args.begin(), addr->nbd_client_args.end());
    argv.insert(argv.end(), {device, "-N", name, "-b", "4096"});
    std::string err_text;
    if (run(argv, nullptr, &err_text) != 0) {
      fs::remove_all(dir, ec);
      return fail("attach: nbd-client failed: " + trim(err_text));
    }
    state = {{"method", "nbd-client"}, {"device", device}};
  } else {
    auto mountpoint = dir / "fuse";
    fs::create_directories(mountpoint, ec);
    auto pidfile = dir / "nbdfuse.pid";
    auto pid = start_background(
      {"nbdfuse", "-P", pidfile.string(), (mountpoint / "disk").string(), addr->uri},
      dir / "nbdfuse.log");
    if (pid < 0) {
      fs::remove_all(dir, ec);
      return fail("attach: cannot start nbdfuse (is libnbd-bin installed?)");
    }
    state = {{"method", "nbdfuse"}, {"pid", pid}, {"mountpoint", mountpoint.string()}};
    write_state(dir, state);
    for (int i = 0; i < 100 && !fs::exists(pidfile) && alive(pid); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!fs::exists(pidfile)) {
      std::ifstream log{dir / "nbdfuse.log"};
      std::string text{std::istreambuf_iterator<char>{log}, {}};
      if (alive(pid))
        ::kill(pid, SIGTERM);
      run({"fusermount3", "-u", mountpoint.string()});
      fs::remove_all(dir, ec);
      return fail("attach: nbdfuse did not start: " + trim(text));
    }
    std::string out, err_text;
    if (run({"losetup", "--find", "--show", "--direct-io=off", (mountpoint / "disk").string()}, &out,
            &err_text)
        != 0) {
      std::string ignored;
      stop_nbdfuse(mountpoint.string(), pid, ignored);
      fs::remove_all(dir, ec);
      return fail("attach: losetup failed: " + trim(err_text));
    }
    device = trim(out);
    state["device"] = device;
    // Who the loop device is bound to, so that detach recognises it.
    struct stat st {};
    if (::stat((mountpoint / "disk").c_str(), &st) == 0) {
      state["backing_dev"] = static_cast<uint64_t>(st.st_dev);
      state["backing_ino"] = static_cast<uint64_t>(st.st_ino);
    }
  }
  write_state(dir, state);
  auto link = device_dir / name;
  fs::remove(link, ec);
  fs::create_symlink(device, link, ec);
  if (ec)
    return fail("attach: cannot create " + link.string() + ": " + ec.message() + " (run 'hastctl detach "
                + name + "' to undo the attach)");
  std::cout << link.string() << " -> " << device << '\n';
  return 0;
}

int run_detach(const cli_options& options, const std::vector<std::string>& args) {
  std::string error;
  auto parsed = parse_command_args(args, "", {}, error);
  if (!parsed)
    return fail("detach: " + error);
  if (parsed->operands.size() != 1)
    return fail("detach: expected exactly one resource name");
  (void) options;
  auto name = parsed->operands[0];
  auto dir = attach_root / name;
  std::ifstream in{dir / "state.json"};
  if (!in)
    return fail("detach: " + name + " is not attached");
  nlohmann::json state;
  try {
    in >> state;
  } catch (const nlohmann::json::exception&) {
    return fail("detach: " + (dir / "state.json").string() + " is corrupt");
  }
  int rc = 0;
  std::string err_text;
  auto device = state.value("device", "");
  auto method = state.value("method", "");
  std::error_code ec;
  // In use (mounted, say): refuse before anything is torn down.
  if (!device.empty() && device_busy(device))
    return fail("detach: " + (device_dir / name).string() + " (" + device
                + ") is in use (mounted?); unmount it first");
  if (method == "nbd-client") {
    if (run({"nbd-client", "-d", device}, nullptr, &err_text) != 0) {
      std::cerr << "hastctl: detach: nbd-client -d " << device << ": " << trim(err_text) << '\n';
      rc = 1;
    }
  } else {
    if (!device.empty()) {
      switch (loop_bound_to(device, state)) {
      case loop_binding::free:
        break;  // already gone (nbdfuse died and the loop device was cleared)
      case loop_binding::other:
        std::cerr << "hastctl: detach: " << device
                  << " is now bound to another file; leaving it alone\n";
        break;
      case loop_binding::ours:
        if (run({"losetup", "-d", device}, nullptr, &err_text) != 0
            && loop_bound_to(device, state) == loop_binding::ours) {
          std::cerr << "hastctl: detach: losetup -d " << device << ": " << trim(err_text) << '\n';
          rc = 1;
        }
        break;
      }
    }
    if (rc == 0) {
      std::string error;
      if (!stop_nbdfuse(state.value("mountpoint", ""), state.value("pid", -1), error)) {
        std::cerr << "hastctl: detach: " << error << '\n';
        rc = 1;
      }
    }
  }
  auto link = device_dir / name;
  if (fs::is_symlink(link))
    fs::remove(link, ec);
  if (rc == 0)
    fs::remove_all(dir, ec);
  return rc;
}

} // namespace hast::cli
