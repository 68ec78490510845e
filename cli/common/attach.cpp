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
#include <spawn.h>
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
      run({"fusermount3", "-u", mountpoint.string()});
      fs::remove_all(dir, ec);
      return fail("attach: losetup failed: " + trim(err_text));
    }
    device = trim(out);
    state["device"] = device;
  }
  write_state(dir, state);
  auto link = device_dir / name;
  fs::remove(link, ec);
  fs::create_symlink(device, link, ec);
  if (ec)
    return fail("attach: cannot create " + link.string() + ": " + ec.message());
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
  if (method == "nbd-client") {
    if (run({"nbd-client", "-d", device}, nullptr, &err_text) != 0) {
      std::cerr << "hastctl: detach: nbd-client -d " << device << ": " << trim(err_text) << '\n';
      rc = 1;
    }
  } else {
    if (!device.empty() && run({"losetup", "-d", device}, nullptr, &err_text) != 0) {
      std::cerr << "hastctl: detach: losetup -d " << device << ": " << trim(err_text) << '\n';
      rc = 1;
    }
    auto mountpoint = state.value("mountpoint", "");
    pid_t pid = state.value("pid", -1);
    if (!mountpoint.empty())
      run({"fusermount3", "-u", mountpoint});
    for (int i = 0; i < 100 && alive(pid); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (alive(pid)) {
      ::kill(pid, SIGTERM);
      std::cerr << "hastctl: detach: nbdfuse (pid " << pid << ") did not exit; terminated it\n";
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
