#pragma once

// /dev/hast/<name>: a block device backed by a resource's NBD export, as
// FreeBSD's hastd makes one on `role primary`. With the kernel's nbd module
// (/sys/block/nbd0) and nbd-client installed, nbd-client makes /dev/nbdN;
// otherwise nbdfuse exposes the export as a file in a FUSE mount and a loop
// device turns that file into /dev/loopN. /dev/hast/<name> is a symlink to
// either.
//
// What was made is recorded in <state_root>/<name>/state.json as each step
// completes, so that a later call (after hastd or hastctl was killed -9) can
// take apart exactly what is left, and nothing else: a loop device is only
// unbound while it is still bound to the recorded file, a process is only
// signalled while it is still the recorded nbdfuse.
//
// Every call here blocks (it runs losetup, nbdfuse, fusermount3, nbd-client
// and waits for them), except mount_point(), find_device() and
// device_in_use(); the daemon runs the blocking ones on a device_worker.
// Calls for the same machine are serialised by a lock file in state_root, so
// hastd and hastctl never take the same device apart at once.

#include "base/errc.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace hast {

/// Where the device links live: /dev/hast/<name>, as on FreeBSD.
inline constexpr const char* device_link_root = "/dev/hast";
/// Where each device's record lives: <state_root>/<name>/state.json.
inline constexpr const char* device_state_root = "/run/hast/attach";

/// A device that make_device() made (or that a record describes).
struct made_device {
  std::string link;    // "/dev/hast/<name>"
  std::string device;  // "/dev/loopN" or "/dev/nbdN"
  std::string method;  // "nbdfuse" (FUSE file + loop device) or "nbd-client"
  /// NBD connections the device holds open to the export (nbdfuse -C 1,
  /// nbd-client -C 1): the export's clients beyond these are someone else's.
  int connections = 1;
};

/// Whether the processes a device needs (nbdfuse) end with the thread that
/// made the device. hastd's devices end with it (kill -9 included: the
/// kernel sends SIGTERM, io/process/spawn.hpp), as FreeBSD's hastd destroys a dead
/// worker's device; `hastctl attach` returns while its device stays.
enum class helper_lifetime { outlives_caller, ends_with_caller };

/// Makes /dev/hast/<link_name> backed by the export `export_name` served at
/// `nbd_address` ("uds:///path", "unix:///path", "/path" or "tcp://host:port").
/// With nbdfuse and a nonzero `data_size` (the resource's data size now),
/// nbdfuse reads the export's device view (nbd::device_view_name), whose
/// file has the size the resource can grow to, and the loop device is
/// limited to `data_size`, so that resize_device() can grow it in place.
/// `data_size` 0, or kernel nbd-client: the plain export, a device that
/// keeps the size it was made with.
/// Left-overs of an earlier device under this name (a record, a dead or
/// still running nbdfuse, a stale FUSE mount, a loop device bound to it, a
/// dangling link) are taken apart first, unless something still holds them
/// (a mounted file system): then it fails naming the mount point. On failure
/// the one-sentence error says why, and nothing new is left behind.
result<made_device> make_device(const std::string& link_name, const std::string& export_name,
                                const std::string& nbd_address,
                                helper_lifetime lifetime = helper_lifetime::outlives_caller,
                                uint64_t data_size = 0);

/// For hastd's start, once per configured resource: takes apart what an
/// earlier run left under `link_name` for this export: a record, an nbdfuse
/// still connected to the old daemon, a stale FUSE mount, a loop device
/// bound to a file of a dead mount, a dangling /dev/hast/<link_name>. A live
/// device of another export (another node on this machine) and one in use
/// (mounted) are left, with errc::busy and a sentence saying why. ok with an
/// empty detail: nothing was there; ok with a detail: what was taken apart.
status clear_stale_device(const std::string& link_name, const std::string& export_name,
                          const std::string& nbd_address);

/// Undoes make_device(). A device in use (mounted, or open exclusively) is
/// refused with errc::busy and a sentence naming the mount point, unless
/// `force`: then it is taken apart as far as the kernel allows (a busy loop
/// device is set to clear itself when its last user closes it, the FUSE
/// mount is detached lazily, nbd-client disconnects under the file system),
/// and the returned status is ok with a detail saying so. Nothing recorded
/// under this name: ok, nothing to do.
status remove_device(const std::string& link_name, bool force);

/// Grows the device recorded under `link_name` to `data_size` bytes while
/// it stays in use (a mounted file system then grows with resize2fs): sets
/// the loop device's size limit (LOOP_SET_STATUS64; the kernel announces
/// the new capacity) and records it. ok with an empty detail: nothing is
/// recorded under this name; ok with a detail: the device's new size. An
/// error, with a sentence saying what to do, for a device that cannot grow
/// in place: a kernel nbd device (not done), one made without a size limit
/// (an older hast, or `data_size` 0), one not in place, or a size past the
/// ceiling it was made with.
status resize_device(const std::string& link_name, uint64_t data_size);

/// The device recorded under `link_name` if it is still in place (its loop
/// device bound to the recorded file, or its nbd device connected).
std::optional<made_device> find_device(const std::string& link_name);

/// True if a record exists under `link_name`, in place or left over.
bool device_recorded(const std::string& link_name);

/// Where the device behind /dev/hast/<link_name> is mounted, from
/// /proc/self/mountinfo by device number; "" if it is not mounted or there
/// is no such device. Reads two small files; starts no process.
std::string mount_point(const std::string& link_name);

/// True if someone holds the block device `device` exclusively: a mounted
/// file system, a device-mapper or md holder, a running mkfs (O_EXCL open
/// fails with EBUSY).
bool device_in_use(const std::string& device);

/// One thread that runs posted jobs in order, so that the blocking calls
/// above never run on an actor's thread. The destructor runs the jobs still
/// queued (and those they post), then joins the thread; jobs posted from
/// other threads once it has begun are dropped.
class device_worker {
public:
  device_worker();
  ~device_worker();
  device_worker(const device_worker&) = delete;
  device_worker& operator=(const device_worker&) = delete;

  /// Queues `job`; returns at once. Jobs run one at a time, in post order.
  void post(std::function<void()> job);

private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

} // namespace hast
