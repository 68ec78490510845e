#include "io/process/block_device.hpp"

#include "config/config.hpp"
#include "io/net/nbd_server.hpp"
#include "io/process/spawn.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <linux/fs.h>
#include <linux/loop.h>
#include <poll.h>
#include <sstream>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace hast {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr auto tool_time_limit = 30s;   // losetup, fusermount3, nbd-client
constexpr auto nbdfuse_ready_limit = 15s;
constexpr auto nbdfuse_exit_limit = 5s;
constexpr const char* fuse_hint = " (is libnbd-bin/fuse3 installed? /dev/fuse missing?)";

fs::path state_dir(const std::string& link_name) {
  return fs::path{device_state_root} / link_name;
}

fs::path link_path(const std::string& link_name) {
  return fs::path{device_link_root} / link_name;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r'))
    s.pop_back();
  return s;
}

/// The last non-empty line of a program's output: its error, usually.
std::string last_line(const std::string& text) {
  auto t = trim(text);
  auto pos = t.rfind('\n');
  return pos == std::string::npos ? t : t.substr(pos + 1);
}

// ---- child processes ------------------------------------------------------------------------

struct run_result {
  int exit_code = -1;  // -1: did not run, killed, or timed out
  std::string out;
  std::string err;
};

/// Runs a program to completion (at most `limit`, then it is killed),
/// capturing its stdout and stderr.
run_result run(const std::vector<std::string>& argv,
               std::chrono::steady_clock::duration limit = tool_time_limit) {
  run_result r;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    r.err = std::strerror(errno);
    return r;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    r.err = std::strerror(errno);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  spawn_options options;
  options.stdout_fd = out_pipe[1];
  options.stderr_fd = err_pipe[1];
  options.search_path = true;
  // Nobody would read its output or wait for it once the caller is gone.
  options.ends_with_starter = true;
  auto child = spawn_program(argv, options);
  auto pid = child.pid;
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (!child) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    r.err = argv[0] + ": " + std::strerror(child.error);
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + limit;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* into[2] = {&r.out, &r.err};
  int open_pipes = 2;
  bool timed_out = false;
  while (open_pipes > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        into[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0)
      ::close(f.fd);
  if (timed_out) {
    ::kill(pid, SIGKILL);
    r.err = argv[0] + " did not finish within "
            + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(limit).count())
            + " s";
  }
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!timed_out && WIFEXITED(wstatus))
    r.exit_code = WEXITSTATUS(wstatus);
  return r;
}

/// The error text of a failed run: its stderr's last line, or why it did not run.
std::string why(const run_result& r) {
  auto text = last_line(r.err);
  if (text.empty())
    text = last_line(r.out);
  if (text.empty())
    text = "exit status " + std::to_string(r.exit_code);
  return text;
}

bool in_path(const std::string& program) {
  return !find_in_path(program).empty();
}

/// True while `pid` runs. Reaps it if it is our child that has exited, so a
/// child of the daemon never lingers as a zombie that kill(pid, 0) would
/// report alive.
bool alive(pid_t pid) {
  if (pid <= 0)
    return false;
  auto r = ::waitpid(pid, nullptr, WNOHANG);
  if (r == pid)
    return false;
  if (r == 0)
    return true;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

/// True if `pid` is the nbdfuse serving `mountpoint` (not a process that
/// reused the pid after it died).
bool is_nbdfuse_of(pid_t pid, const std::string& mountpoint) {
  if (!alive(pid) || mountpoint.empty())
    return false;
  std::ifstream in{"/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary};
  std::string cmdline{std::istreambuf_iterator<char>{in}, {}};
  return cmdline.find("nbdfuse") != std::string::npos
         && cmdline.find(mountpoint) != std::string::npos;
}

/// Waits until `pid` has exited, at most `limit`.
bool wait_gone(pid_t pid, std::chrono::steady_clock::duration limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (alive(pid)) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

/// An nbdfuse left running behind a lazily detached mount exits when the
/// loop device's last user lets go; if it is our child, reap it then.
void reap_when_done(pid_t pid) {
  if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0)
    std::thread{[pid] { ::waitpid(pid, nullptr, 0); }}.detach();
}

// ---- addresses --------------------------------------------------------------------------------

std::string percent_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

/// The export as a libnbd URI and as nbd-client arguments, and its device
/// view (nbd::device_view_name) as a libnbd URI.
struct export_address {
  std::string uri;
  std::vector<std::string> nbd_client_args;
  std::string view_uri;

  /// Whether a record's URI names this export (plainly or its device view).
  bool names(const std::string& recorded) const { return recorded == uri || recorded == view_uri; }
};

std::optional<export_address> address_of(const std::string& export_name,
                                         const std::string& nbd_address) {
  auto view = nbd::device_view_name(export_name);
  if (auto path = unix_socket_path(nbd_address); !path.empty())
    return export_address{
      "nbd+unix:///" + percent_encode(export_name) + "?socket=" + percent_encode(path),
      {"-unix", path},
      "nbd+unix:///" + percent_encode(view) + "?socket=" + percent_encode(path)};
  std::string host;
  uint16_t port = 0;
  if (nbd_address.rfind("tcp", 0) != 0 || !split_tcp_address(nbd_address, host, port, 10809))
    return std::nullopt;
  auto host_part = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  auto base = "nbd://" + host_part + ":" + std::to_string(port) + "/";
  return export_address{base + percent_encode(export_name), {host, std::to_string(port)},
                        base + percent_encode(view)};
}

// ---- the record -------------------------------------------------------------------------------

std::optional<nlohmann::json> read_state(const std::string& link_name) {
  std::ifstream in{state_dir(link_name) / "state.json"};
  if (!in)
    return std::nullopt;
  try {
    auto state = nlohmann::json::parse(in);
    if (state.is_object())
      return state;
  } catch (const nlohmann::json::exception&) {
  }
  // A torn or foreign file: nothing in it can be trusted, so nothing in it
  // is taken apart; an empty record still lets the directory go.
  return nlohmann::json::object();
}

/// Replaces state.json atomically: a reader sees the old or the new record.
status write_state(const std::string& link_name, const nlohmann::json& state) {
  auto dir = state_dir(link_name);
  auto tmp = dir / "state.json.new";
  {
    std::ofstream out{tmp, std::ios::trunc};
    out << state.dump() << '\n';
    if (!out.flush())
      return {errc::io_error, "cannot write " + tmp.string()};
  }
  std::error_code ec;
  fs::rename(tmp, dir / "state.json", ec);
  if (ec)
    return {errc::io_error, "cannot write " + (dir / "state.json").string() + ": " + ec.message()};
  return status::ok();
}

made_device device_of(const std::string& link_name, const nlohmann::json& state) {
  return made_device{link_path(link_name).string(), state.value("device", ""),
                     state.value("method", ""), state.value("connections", 1)};
}

/// Holds the machine-wide lock of device_state_root (flock on the directory)
/// while a device is made or taken apart.
class state_lock {
public:
  state_lock() {
    std::error_code ec;
    fs::create_directories(device_state_root, ec);
    fd_ = ::open(device_state_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ >= 0)
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
  }
  ~state_lock() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  state_lock(const state_lock&) = delete;
  state_lock& operator=(const state_lock&) = delete;

private:
  int fd_ = -1;
};

// ---- devices and mounts -----------------------------------------------------------------------

std::optional<dev_t> block_device_number(const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode))
    return std::nullopt;
  return st.st_rdev;
}

/// Undoes mountinfo's octal escapes (\040 for a space, ...).
std::string unescape(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && std::isdigit(field[i + 1])
        && std::isdigit(field[i + 2]) && std::isdigit(field[i + 3])) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8
                               + (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

struct mount_entry {
  unsigned major = 0, minor = 0;
  std::string target;
};

std::vector<mount_entry> mounts() {
  std::vector<mount_entry> entries;
  std::ifstream in{"/proc/self/mountinfo"};
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint ...
    std::istringstream fields{line};
    std::string id, parent, numbers, root, target;
    if (!(fields >> id >> parent >> numbers >> root >> target))
      continue;
    mount_entry e;
    if (std::sscanf(numbers.c_str(), "%u:%u", &e.major, &e.minor) != 2)
      continue;
    e.target = unescape(target);
    entries.push_back(std::move(e));
  }
  return entries;
}

std::string mount_point_of(const std::string& device) {
  auto number = block_device_number(device);
  if (!number)
    return "";
  for (auto& m : mounts())
    if (m.major == ::major(*number) && m.minor == ::minor(*number))
      return m.target;
  return "";
}

bool is_mounted_at(const std::string& target) {
  if (target.empty())
    return false;
  for (auto& m : mounts())
    if (m.target == target)
      return true;
  return false;
}

/// What a loop device is bound to now.
enum class loop_binding { free, ours, other };

/// Compares the loop device's backing file with the recorded one (device
/// and inode), so that a loop device freed meanwhile and reused by someone
/// else is never unbound. Without a record of the file, a bound device
/// counts as ours.
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

bool nbd_connected(const std::string& device) {
  auto name = fs::path{device}.filename().string();
  return fs::exists("/sys/block/" + name + "/pid");
}

/// The recorded device is still bound: its loop device to the recorded
/// file, or its nbd device to a connection. It may be broken (nbdfuse died)
/// and still mounted.
bool bound(const nlohmann::json& state) {
  auto device = state.value("device", "");
  if (device.empty())
    return false;
  if (state.value("method", "") == "nbd-client")
    return nbd_connected(device);
  return loop_bound_to(device, state) == loop_binding::ours;
}

/// The recorded device is bound and works: for nbdfuse, its process runs.
bool in_place(const nlohmann::json& state) {
  if (!bound(state))
    return false;
  return state.value("method", "") == "nbd-client"
         || is_nbdfuse_of(state.value("pid", -1), state.value("mountpoint", ""));
}

/// "/dev/hast/x (/dev/loop3) is mounted on /mnt" or "... is in use".
std::string holder_sentence(const std::string& link_name, const std::string& device) {
  auto where = mount_point_of(device);
  auto what = link_path(link_name).string() + " (" + device + ")";
  if (!where.empty())
    return what + " is mounted on " + where;
  return what + " is in use (held open exclusively, e.g. by device-mapper or a running mkfs)";
}

// ---- taking a device apart --------------------------------------------------------------------

/// Removes the record's files and directory; the FUSE mount point must no
/// longer be a mount point (never a recursive removal: that would walk into
/// a mount).
void remove_record(const std::string& link_name) {
  auto dir = state_dir(link_name);
  std::error_code ec;
  for (auto name : {"state.json", "state.json.new", "nbdfuse.pid", "nbdfuse.log"})
    fs::remove(dir / name, ec);
  fs::remove(dir / "fuse", ec);
  fs::remove(dir, ec);
}

/// Removes /dev/hast/<link_name> if it is a symlink (it is never anything
/// else of ours).
void remove_link(const std::string& link_name) {
  std::error_code ec;
  auto link = link_path(link_name);
  if (fs::is_symlink(fs::symlink_status(link, ec)))
    fs::remove(link, ec);
}

/// Unmounts nbdfuse's FUSE mount and lets nbdfuse exit. `lazily`: the mount
/// may still be in use (a busy loop device set to clear itself); it is
/// detached now and goes away with its last user.
status stop_nbdfuse(const std::string& mountpoint, pid_t pid, bool lazily) {
  if (is_mounted_at(mountpoint)) {
    // The loop device just unbound may hold the file for a moment longer.
    auto r = run({"fusermount3", "-u", "-q", mountpoint});
    for (int i = 0; i < 20 && !lazily && r.exit_code != 0 && is_mounted_at(mountpoint); ++i) {
      std::this_thread::sleep_for(100ms);
      r = run({"fusermount3", "-u", "-q", mountpoint});
    }
    if (r.exit_code != 0 && is_mounted_at(mountpoint)) {
      auto lazy = run({"fusermount3", "-u", "-z", "-q", mountpoint});
      if (lazy.exit_code != 0 && is_mounted_at(mountpoint))
        return {errc::io_error, "cannot unmount the FUSE mount " + mountpoint + ": " + why(r)};
      lazily = true;
    }
  }
  if (!is_nbdfuse_of(pid, mountpoint)) {
    // Dead already, exiting (its cmdline is gone before it is a zombie),
    // or not nbdfuse any more: reap it if it is our child, once it exits.
    reap_when_done(pid);
    return status::ok();
  }
  if (lazily) {
    reap_when_done(pid);
    return status::ok();
  }
  if (!wait_gone(pid, nbdfuse_exit_limit)) {
    ::kill(pid, SIGTERM);
    if (!wait_gone(pid, nbdfuse_exit_limit)) {
      ::kill(pid, SIGKILL);
      wait_gone(pid, nbdfuse_exit_limit);
    }
  }
  return status::ok();
}

/// Takes apart what `state` records under `link_name`. Not `force` and in
/// use: errc::busy naming the holder, nothing touched. `note` gets what a
/// forced removal could only do lazily.
status take_apart(const std::string& link_name, const nlohmann::json& record, bool force,
                  std::string& note) {
  const auto& state = record.is_object() ? record : nlohmann::json::object();
  auto device = state.value("device", "");
  auto method = state.value("method", "");
  bool ours = bound(state);
  bool busy = ours && device_in_use(device);
  if (busy && !force)
    return {errc::busy, holder_sentence(link_name, device) + "; unmount it first"};
  if (busy)
    note = holder_sentence(link_name, device);

  if (method == "nbd-client") {
    if (ours) {
      auto r = run({"nbd-client", "-d", device});
      if (r.exit_code != 0 && nbd_connected(device))
        return {errc::io_error, "nbd-client -d " + device + " failed: " + why(r)};
      if (busy)
        note += "; nbd-client disconnected it under the file system, whose I/O now fails";
    }
  } else {
    if (!device.empty() && loop_bound_to(device, state) == loop_binding::ours) {
      // On a busy loop device the kernel only sets autoclear: it unbinds
      // when its last user (the mount) lets go.
      auto r = run({"losetup", "-d", device});
      if (r.exit_code != 0 && loop_bound_to(device, state) == loop_binding::ours && !busy)
        return {errc::io_error, "losetup -d " + device + " failed: " + why(r)};
    }
    auto st = stop_nbdfuse(state.value("mountpoint", ""), state.value("pid", -1), busy);
    if (!st)
      return st;
    if (busy)
      note += "; " + device
              + " clears itself and nbdfuse exits once it is unmounted; until then its I/O fails "
                "once the export is gone";
  }
  remove_link(link_name);
  remove_record(link_name);
  return status::ok();
}

/// Clears whatever an earlier device under `link_name` left, so that a new
/// one can be made. Fails while it is held, or while it is a live device of
/// another export.
status clear_leftovers(const std::string& link_name, const export_address& addr) {
  auto link = link_path(link_name);
  std::error_code ec;
  auto link_status = fs::symlink_status(link, ec);
  if (fs::exists(link_status) && !fs::is_symlink(link_status))
    return {errc::busy, link.string() + " exists and is not a link made by hast; remove it first"};

  auto state = read_state(link_name);
  if (!state) {
    remove_link(link_name);
    // A directory without a record: a start that died before writing one.
    auto mountpoint = (state_dir(link_name) / "fuse").string();
    if (is_mounted_at(mountpoint))
      run({"fusermount3", "-u", "-z", "-q", mountpoint});
    remove_record(link_name);
    return status::ok();
  }
  auto device = state->value("device", "");
  if (!addr.names(state->value("uri", addr.uri)) && in_place(*state))
    return {errc::busy, link.string() + " is already made for " + state->value("uri", "")
                          + " (" + device + "); remove it first"};
  std::string note;
  auto st = take_apart(link_name, *state, false, note);
  if (st.code() == errc::busy)
    return {errc::busy, "a " + link.string() + " from an earlier run is still in use: "
                          + st.detail()};
  if (!st)
    return {st.code(), "cannot clear a " + link.string() + " from an earlier run: " + st.detail()};
  return status::ok();
}

// ---- making a device --------------------------------------------------------------------------

result<std::string> start_nbd_client(const std::string& link_name, const export_address& addr,
                                     const std::string& export_name) {
  std::string device;
  for (int i = 0; fs::exists("/sys/block/nbd" + std::to_string(i)); ++i)
    if (!fs::exists("/sys/block/nbd" + std::to_string(i) + "/pid")) {
      device = "/dev/nbd" + std::to_string(i);
      break;
    }
  if (device.empty())
    return status{errc::busy, "no free /dev/nbd device"};
  if (auto st = write_state(link_name, {{"method", "nbd-client"}, {"uri", addr.uri},
                                        {"device", device}, {"connections", 1}});
      !st)
    return st;
  std::vector<std::string> argv{"nbd-client"};
  argv.insert(argv.end(), addr.nbd_client_args.begin(), addr.nbd_client_args.end());
  argv.insert(argv.end(), {device, "-N", export_name, "-b", "4096", "-C", "1"});
  auto r = run(argv);
  if (r.exit_code != 0)
    return status{errc::io_error, "nbd-client failed: " + why(r)};
  return device;
}

/// nbdfuse on the export (`data_size` 0) or on its device view, whose file
/// has the export's growth ceiling as its size: then the loop device is
/// limited to `data_size` (--sizelimit), and resize_device() widens it.
result<std::string> start_nbdfuse(const std::string& link_name, const export_address& addr,
                                  helper_lifetime lifetime, uint64_t data_size,
                                  nlohmann::json& state) {
  for (auto program : {"nbdfuse", "fusermount3"})
    if (!in_path(program))
      return status{errc::io_error, std::string{program} + " is not in PATH" + fuse_hint};
  if (!fs::exists("/dev/fuse"))
    return status{errc::io_error, std::string{"nbdfuse cannot mount without FUSE"} + fuse_hint};
  if (!in_path("losetup"))
    return status{errc::io_error, "losetup is not installed (util-linux)"};
  auto dir = state_dir(link_name);
  auto mountpoint = dir / "fuse";
  auto file = mountpoint / "disk";
  auto pidfile = dir / "nbdfuse.pid";
  std::error_code ec;
  fs::create_directories(mountpoint, ec);
  if (ec)
    return status{errc::io_error, "cannot create " + mountpoint.string() + ": " + ec.message()};

  auto log_path = dir / "nbdfuse.log";
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0)
    return status{errc::io_error, "cannot create " + log_path.string() + ": " + std::strerror(errno)};
  spawn_options options;
  options.stdout_fd = log_fd;
  options.stderr_fd = log_fd;
  options.search_path = true;
  options.new_session = true;
  options.ends_with_starter = lifetime == helper_lifetime::ends_with_caller;
  // One connection (no multi-conn): the export's other clients can then be
  // told apart from this device's.
  const auto& uri = data_size > 0 ? addr.view_uri : addr.uri;
  auto child = spawn_program(
    {"nbdfuse", "-C", "1", "-P", pidfile.string(), file.string(), uri}, options);
  ::close(log_fd);
  if (!child)
    return status{errc::io_error, std::string{"cannot start nbdfuse: "}
                                    + std::strerror(child.error) + fuse_hint};
  auto pid = child.pid;
  state = {{"method", "nbdfuse"}, {"uri", uri}, {"pid", pid},
           {"mountpoint", mountpoint.string()}, {"connections", 1}};
  if (auto st = write_state(link_name, state); !st)
    return st;
  auto deadline = std::chrono::steady_clock::now() + nbdfuse_ready_limit;
  while (!fs::exists(pidfile) && alive(pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  if (!fs::exists(pidfile)) {
    std::ifstream log{dir / "nbdfuse.log"};
    auto text = last_line(std::string{std::istreambuf_iterator<char>{log}, {}});
    if (text.empty())
      text = alive(pid) ? "not ready within " + std::to_string(nbdfuse_ready_limit.count()) + " s"
                        : "exited";
    bool fuse_trouble = text.find("fuse") != std::string::npos
                        || text.find("FUSE") != std::string::npos || !fs::exists("/dev/fuse");
    return status{errc::io_error, "nbdfuse could not serve " + uri + ": " + text
                                    + (fuse_trouble ? fuse_hint : "")};
  }
  std::vector<std::string> losetup{"losetup", "--find", "--show", "--direct-io=off"};
  if (data_size > 0) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0)
      return status{errc::io_error, "cannot stat " + file.string() + ": " + std::strerror(errno)};
    auto ceiling = static_cast<uint64_t>(st.st_size);
    if (ceiling < data_size)
      return status{errc::io_error, uri + " offers " + std::to_string(ceiling)
                                      + " bytes, less than the data size of "
                                      + std::to_string(data_size)};
    state["ceiling"] = ceiling;
    state["sizelimit"] = data_size;
    losetup.insert(losetup.end(), {"--sizelimit", std::to_string(data_size)});
  }
  losetup.push_back(file.string());
  auto r = run(losetup);
  if (r.exit_code != 0)
    return status{errc::io_error, "losetup failed: " + why(r)};
  auto device = trim(r.out);
  state["device"] = device;
  // Which file the loop device is bound to, so that taking it apart later
  // recognises it.
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0) {
    state["backing_dev"] = static_cast<uint64_t>(st.st_dev);
    state["backing_ino"] = static_cast<uint64_t>(st.st_ino);
  }
  if (auto written = write_state(link_name, state); !written)
    return written;
  return device;
}

bool valid_link_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos
         && name.find('\0') == std::string::npos;
}

/// ok, or invalid_argument saying why `name` cannot name a device.
status check_link_name(const std::string& name) {
  if (valid_link_name(name))
    return status::ok();
  return {errc::invalid_argument,
          "'" + name + "' cannot name a device in " + std::string{device_link_root}};
}

} // namespace

result<made_device> make_device(const std::string& link_name, const std::string& export_name,
                                const std::string& nbd_address, helper_lifetime lifetime,
                                uint64_t data_size) {
  auto link = link_path(link_name);
  auto fail = [&](const status& st) {
    return status{st.code(), "cannot make " + link.string() + ": " + st.detail()};
  };
  if (auto st = check_link_name(link_name); !st)
    return st;
  auto addr = address_of(export_name, nbd_address);
  if (!addr)
    return fail({errc::invalid_argument, "cannot use NBD address " + nbd_address});
  state_lock lock;
  if (auto st = clear_leftovers(link_name, *addr); !st)
    return st;
  std::error_code ec;
  for (auto dir : {state_dir(link_name), fs::path{device_link_root}}) {
    fs::create_directories(dir, ec);
    if (ec)
      return fail({errc::io_error, "cannot create " + dir.string() + ": " + ec.message()});
  }

  bool kernel_nbd = fs::exists("/sys/block/nbd0") && in_path("nbd-client");
  auto state = nlohmann::json::object();
  auto device = kernel_nbd ? start_nbd_client(link_name, *addr, export_name)
                           : start_nbdfuse(link_name, *addr, lifetime, data_size, state);
  // From here on, a failure takes apart whatever the record says was made.
  auto undo = [&](const status& st) {
    std::string ignored;
    auto record = read_state(link_name);
    take_apart(link_name, record ? *record : state, true, ignored);
    remove_record(link_name);
    return fail(st);
  };
  if (!device)
    return undo(device.error());
  auto tmp = fs::path{device_link_root} / ("." + link_name + ".new");
  fs::remove(tmp, ec);
  fs::create_symlink(*device, tmp, ec);
  if (!ec)
    fs::rename(tmp, link, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return undo({errc::io_error, "cannot create the link: " + ec.message()});
  }
  auto record = read_state(link_name);
  return device_of(link_name, record ? *record : nlohmann::json::object());
}

status clear_stale_device(const std::string& link_name, const std::string& export_name,
                          const std::string& nbd_address) {
  if (auto st = check_link_name(link_name); !st)
    return st;
  auto addr = address_of(export_name, nbd_address);
  if (!addr)
    return {errc::invalid_argument, "cannot use NBD address " + nbd_address};
  state_lock lock;
  auto link = link_path(link_name);
  std::error_code ec;
  auto link_status = fs::symlink_status(link, ec);
  bool link_left = fs::is_symlink(link_status);
  bool record_left = fs::exists(state_dir(link_name), ec);
  if (!link_left && !record_left)
    return status::ok();
  std::vector<std::string> what;
  if (link_left)
    what.push_back(link.string() + " -> " + fs::read_symlink(link, ec).string());
  if (auto state = read_state(link_name)) {
    if (!addr->names(state->value("uri", addr->uri)) && in_place(*state))
      return {errc::busy, link.string() + " is a live device of " + state->value("uri", "")
                            + ", not of this export; left as it is"};
    if (auto device = state->value("device", ""); !device.empty() && bound(*state))
      what.push_back(device);
    if (auto mp = state->value("mountpoint", ""); is_mounted_at(mp))
      what.push_back("the FUSE mount " + mp);
    if (is_nbdfuse_of(state->value("pid", -1), state->value("mountpoint", "")))
      what.push_back("nbdfuse (pid " + std::to_string(state->value("pid", -1)) + ")");
  }
  if (record_left)
    what.push_back("the record in " + state_dir(link_name).string());
  if (auto st = clear_leftovers(link_name, *addr); !st)
    return st;
  std::string text = "took apart what an earlier run left:";
  for (size_t i = 0; i < what.size(); ++i)
    text += (i ? ", " : " ") + what[i];
  return {errc::none, text};
}

status remove_device(const std::string& link_name, bool force) {
  if (auto st = check_link_name(link_name); !st)
    return st;
  state_lock lock;
  auto state = read_state(link_name);
  if (!state)
    return status::ok();
  std::string note;
  auto st = take_apart(link_name, *state, force, note);
  if (st.code() == errc::busy)
    return st;
  if (!st)
    return {st.code(), "cannot remove " + link_path(link_name).string() + ": " + st.detail()};
  if (!note.empty())
    return {errc::none, "removed " + link_path(link_name).string() + " although " + note};
  return status::ok();
}

status resize_device(const std::string& link_name, uint64_t data_size) {
  if (auto st = check_link_name(link_name); !st)
    return st;
  state_lock lock;
  auto state = read_state(link_name);
  if (!state)
    return status::ok();
  auto link = link_path(link_name).string();
  auto device = state->value("device", "");
  auto what = link + " (" + device + ")";
  auto remake = "; it shows the new size once made again (hastctl detach and attach, or a role "
                "change)";
  if (!in_place(*state))
    return {errc::io_error, link + " is not in place (its nbdfuse or device is gone)" + remake};
  if (state->value("method", "") == "nbd-client")
    return {errc::invalid_argument,
            what + " is a kernel nbd device: growing it in place is not done" + remake};
  if (!state->contains("sizelimit"))
    return {errc::invalid_argument,
            what + " was made without room to grow (by an older hast)" + remake};
  auto ceiling = state->value("ceiling", uint64_t{0});
  if (data_size > ceiling)
    return {errc::invalid_argument, what + " can grow to " + std::to_string(ceiling)
                                      + " bytes, not " + std::to_string(data_size) + remake};
  auto old = state->value("sizelimit", uint64_t{0});
  int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return {errc::io_error, "cannot open " + device + ": " + std::strerror(errno)};
  auto fail = [&](const std::string& doing) {
    status st{errc::io_error, doing + " on " + device + " failed: " + std::strerror(errno)};
    ::close(fd);
    return st;
  };
  loop_info64 info{};
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) != 0)
    return fail("LOOP_GET_STATUS64");
  if (info.lo_inode != state->value("backing_ino", uint64_t{0})
      || info.lo_device != state->value("backing_dev", uint64_t{0})) {
    ::close(fd);
    return {errc::busy, device + " is no longer bound to the file of " + link};
  }
  if (info.lo_sizelimit != data_size) {
    info.lo_sizelimit = data_size;
    // The kernel writes back and drops the device's page cache first, and
    // refuses with EAGAIN if pages were dirtied meanwhile; a few tries.
    int rc = -1;
    for (int i = 0; i < 10 && (rc = ::ioctl(fd, LOOP_SET_STATUS64, &info)) != 0 && errno == EAGAIN;
         ++i)
      std::this_thread::sleep_for(100ms);
    if (rc != 0)
      return fail("LOOP_SET_STATUS64 (sizelimit " + std::to_string(data_size) + ")");
  }
  uint64_t size = 0;
  if (::ioctl(fd, BLKGETSIZE64, &size) != 0)
    return fail("BLKGETSIZE64");
  ::close(fd);
  if (size != data_size)
    return {errc::io_error, what + " shows " + std::to_string(size) + " bytes after its size "
                              "limit was set to " + std::to_string(data_size)};
  (*state)["sizelimit"] = data_size;
  if (auto st = write_state(link_name, *state); !st)
    return st;
  // Read-ahead may have cached the zeros the device view returned past the
  // old end in the FUSE file's pages; the data there is read afresh.
  if (data_size > old) {
    auto file = fs::path{state->value("mountpoint", "")} / "disk";
    if (int f = ::open(file.c_str(), O_RDONLY | O_CLOEXEC); f >= 0) {
      ::posix_fadvise(f, static_cast<off_t>(old), static_cast<off_t>(data_size - old),
                      POSIX_FADV_DONTNEED);
      ::close(f);
    }
  }
  return {errc::none, what + " has " + std::to_string(data_size) + " bytes"};
}

std::optional<made_device> find_device(const std::string& link_name) {
  if (!valid_link_name(link_name))
    return std::nullopt;
  auto state = read_state(link_name);
  if (!state || !in_place(*state))
    return std::nullopt;
  return device_of(link_name, *state);
}

bool device_recorded(const std::string& link_name) {
  std::error_code ec;
  return valid_link_name(link_name) && fs::exists(state_dir(link_name) / "state.json", ec);
}

std::string mount_point(const std::string& link_name) {
  if (!valid_link_name(link_name))
    return "";
  std::string device;
  if (auto state = read_state(link_name))
    device = state->value("device", "");
  if (device.empty()) {
    std::error_code ec;
    auto target = fs::read_symlink(link_path(link_name), ec);
    if (ec)
      return "";
    device = target.string();
  }
  return mount_point_of(device);
}

bool device_in_use(const std::string& device) {
  int fd = ::open(device.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0)
    return errno == EBUSY;
  ::close(fd);
  return false;
}

// ---- device_worker ------------------------------------------------------------------------------

device_worker::device_worker() : thread_{[this] { run(); }} {
}

device_worker::~device_worker() {
  {
    std::lock_guard guard{mutex_};
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void device_worker::post(std::function<void()> job) {
  {
    std::lock_guard guard{mutex_};
    if (stopping_ && std::this_thread::get_id() != thread_.get_id())
      return;
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void device_worker::run() {
  std::unique_lock guard{mutex_};
  for (;;) {
    wake_.wait(guard, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty())
      return;
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    guard.unlock();
    job();
    guard.lock();
  }
}

} // namespace hast
