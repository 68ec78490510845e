#!/usr/bin/python3
"""Real applications on ext4: hast against qemu-nbd, through the same block-device path.

    bench/app.py [--quick] [--build DIR] [--backing DIR] [--seconds N] [--only sqlite|pgbench]
                 [--contenders NAME...] [--out FILE.md] [--json FILE.json]

Contenders, each an ext4 file system (mkfs.ext4, default mount options) on a
block device of the same size:
  qemu-nbd         `qemu-nbd --cache=none --aio=io_uring` (native AIO if io_uring
                   is refused) exporting a file on a Unix socket, made a block
                   device exactly as hastd makes /dev/hast/<name> without the nbd
                   kernel module: `nbdfuse -C 1 -P PIDFILE MNT/disk URI`, then
                   `losetup --find --show --direct-io=off MNT/disk`
  hast standalone  hastd, `remote none`, the primary's /dev/hast/<name>
  hast memsync     a hastd pair on 127.0.0.1, replication memsync, the
                   primary's /dev/hast/<name>

Workloads on each file system:
  sqlite   Python's sqlite3, journal_mode=WAL, synchronous=FULL, one INSERT of a
           small row per transaction, committed one at a time, for --seconds
           (default 20): commits/s and commit latency
  pgbench  PostgreSQL (the Debian package): initdb on the file system (as user
           postgres), postgres on a Unix socket in a temp dir (listen_addresses
           ''), default durability (fsync, synchronous_commit, full_page_writes
           on); `pgbench -i -s 10`, CHECKPOINT, then `pgbench -c 1 -j 1 -T N`
           and `pgbench -c 8 -j 2 -T N` (--pg-seconds, default 30): TPS

--quick: a smoke test, a few seconds per workload, `pgbench -i -s 1`, 512 MiB
devices. Its figures mean nothing.

Prints a Markdown table (and writes it with --out) and writes JSON with --json.
Every process it starts is stopped by pid; every mount, loop device, FUSE
mount, temp dir and file it made is removed on success, on failure and on
Ctrl-C / SIGTERM. Network: 127.0.0.1 and Unix sockets only. Runs as root.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import pwd
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration", "lib"))
from ports import free_port  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
HAST_LINK_ROOT = "/dev/hast"
HAST_STATE_ROOT = "/run/hast/attach"
CONTENDERS = ["qemu-nbd", "hast standalone", "hast memsync"]
MKFS = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


class Failure(Exception):
    """A contender or workload failed; the message goes into the report."""


def tail(path, n=8):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return ""




def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def session_members(sid):
    """Pids of the live processes in session `sid` (the session of a process we started)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def mounted_at(path):
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].encode().decode("unicode_escape")
                if mp == path:
                    return True
    except OSError:
        pass
    return False


def wait_for(cond, timeout, msg, proc=None, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise Failure(f"{msg} (it exited with status {proc.returncode})")
        time.sleep(interval)
    raise Failure(msg)


# --- Processes: everything started is tracked by pid and stopped by pid -------------------

class Procs:
    def __init__(self):
        self.live = []

    def start(self, cmd, log_path=None, user=None, env=None):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        kw = {}
        if user:
            pw = pwd.getpwnam(user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        try:
            # A session of its own: Ctrl-C reaches only us, and we stop the child.
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, env=env, **kw)
        finally:
            if log_path:
                out.close()
        p.cmdline = cmd
        self.live.append(p)
        return p

    def stop(self, p, sigs=(signal.SIGTERM,), timeout=15.0):
        """Sends each signal in turn, waiting `timeout` after each, then SIGKILL; then stops
        whatever is left in its session (its own children). Returns the exit status."""
        for sig in list(sigs) + [signal.SIGKILL]:
            if p.poll() is not None:
                break
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout if sig != signal.SIGKILL else None)
            except subprocess.TimeoutExpired:
                pass
        left = session_members(p.pid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 5
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = session_members(p.pid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p in self.live:
            self.live.remove(p)
        return p.returncode

    def run(self, cmd, timeout=120, log_path=None, user=None, env=None, check=True):
        """Runs cmd to completion (tracked, so Ctrl-C stops it too); returns (rc, output)."""
        own_log = log_path is None
        if own_log:
            fd, log_path = tempfile.mkstemp(prefix="app-run.", dir="/tmp")
            os.close(fd)
        try:
            start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            p = self.start(cmd, log_path=log_path, user=user, env=env)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop(p, sigs=(signal.SIGTERM,), timeout=5)
                raise Failure(f"{shlex.join(cmd)} did not finish within {timeout:.0f} s")
            self.stop(p)
            with open(log_path, errors="replace") as f:
                f.seek(start)
                out = f.read()
        finally:
            if own_log:
                os.unlink(log_path)
        if check and p.returncode != 0:
            raise Failure(f"{shlex.join(cmd)} exited {p.returncode}: {out.strip()[-600:]}")
        return p.returncode, out

    def stop_all(self):
        for p in reversed(list(self.live)):
            self.stop(p, timeout=5.0)


# --- The bench ------------------------------------------------------------------------------

class AppBench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.build = os.path.abspath(args.build)
        self.hastd = os.path.join(self.build, "hastd")
        self.hastctl = os.path.join(self.build, "hastctl")
        self.pg_bin = args.pg_bin
        self.procs = Procs()
        if self.quick:
            self.size = 512 * MiB
            self.sqlite_s = args.seconds or 3.0
            self.pg_s = args.pg_seconds or 3
            self.scale = args.scale or 1
        else:
            self.size = 2 * GiB
            self.sqlite_s = args.seconds or 20.0
            self.pg_s = args.pg_seconds or 30
            self.scale = args.scale or 10
        if args.size_mib:
            self.size = args.size_mib * MiB
        self.clients = args.clients
        base = args.backing or "/var/tmp"
        os.makedirs(base, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="hast-app.", dir=base)
        os.chmod(self.work, 0o711)  # postgres traverses it to its data directory on the mount
        # Unix socket paths are limited to 108 bytes: keep them short.
        self.socks = tempfile.mkdtemp(prefix="ha.", dir="/tmp")
        self.link_names = []     # /dev/hast/<name> our hastd made (or may have made)
        self.own_dirs = [d for d in ("/run/hast/attach", "/run/hast", HAST_LINK_ROOT) if not os.path.exists(d)]
        self.undo = []           # (what, fn): cleanups of the contender now running, run in reverse
        self.results = []
        self.commands = {}
        self.notes = []

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    # ---- cleanup stack ----
    def push(self, what, fn):
        self.undo.append((what, fn))

    def unwind(self, mark=0):
        """Runs the cleanups pushed since `mark`, newest first. A step interrupted (Ctrl-C) stays on
        the stack, so that the final cleanup runs it again; one that fails is noted and dropped."""
        while len(self.undo) > mark:
            what, fn = self.undo[-1]
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a cleanup step never stops the others
                msg = f"cleanup '{what}' failed: {type(e).__name__}: {e}"
                self.notes.append(msg)
                log(msg)
            self.undo.pop()

    # ---- machine ----
    def machine(self):
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", self.work], capture_output=True,
                            text=True).stdout.split()
        pg = subprocess.run([os.path.join(self.pg_bin, "postgres"), "--version"], capture_output=True,
                            text=True).stdout.strip()
        qemu = (subprocess.run(["qemu-nbd", "--version"], capture_output=True, text=True).stdout.splitlines()
                or [""])[0]
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "unknown"
        if subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "actors", "io", "config", "messages",
                           "cli", "CMakeLists.txt"], capture_output=True, text=True).stdout.strip():
            commit += " (with uncommitted changes to the sources)"
        return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                "backing": self.work, "backing_fs": " on ".join(fs), "postgres": pg, "qemu_nbd": qemu,
                "sqlite": sqlite3.sqlite_version, "commit": commit, "hastd": self.hastd,
                "loadavg_start": os.getloadavg()[0]}

    # ---- helpers for hast ----
    def ctl(self, conf, node, *args, timeout=30):
        rc, out = self.procs.run([self.hastctl, "-c", conf, "-n", node, *args], timeout=timeout, check=False)
        if rc != 0:
            raise Failure(f"hastctl -n {node} {' '.join(args)}: {out.strip()}")
        return out

    def listj(self, conf, node, res):
        r = subprocess.run([self.hastctl, "-c", conf, "-n", node, "list", "--json", res], capture_output=True,
                           text=True, timeout=10, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise Failure(f"hastctl list: {r.stderr.strip()}")
        return json.loads(r.stdout)["resources"][0]

    def start_hastd(self, conf, node, logp):
        p = self.procs.start([self.hastd, "-F", "-c", conf, "-n", node], log_path=logp)
        for _ in range(150):
            try:
                subprocess.run([self.hastctl, "-c", conf, "-n", node, "status"], capture_output=True, timeout=5,
                               check=True, stdin=subprocess.DEVNULL)
                return p
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
            if p.poll() is not None:
                raise Failure(f"hastd {node} exited ({p.returncode}) during start-up: {tail(logp, 5)}")
            time.sleep(0.1)
        raise Failure(f"hastd {node} did not answer on its control socket")

    def wait_quiet(self, conf, res):
        """A pair: until the primary is `complete` with empty queues (60 s at most; a note otherwise)."""
        end = time.monotonic() + 60
        last = None
        while time.monotonic() < end:
            try:
                last = self.listj(conf, "nodeA", res)
                if last["status"] == "complete" and not any(last["queues"].values()):
                    return
            except (Failure, subprocess.TimeoutExpired, ValueError, KeyError):
                pass
            time.sleep(0.1)
        self.notes.append(f"the pair was not `complete` with empty queues within 60 s "
                          f"(status {last and last.get('status')}); measured anyway")

    def hast_device(self, conf, node, res, link_name, p):
        """Waits for /dev/hast/<link_name> made by `role primary`; returns (device, state record)."""
        link = os.path.join(HAST_LINK_ROOT, link_name)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if os.path.islink(link) and os.path.exists(link):
                try:
                    with open(os.path.join(HAST_STATE_ROOT, link_name, "state.json")) as f:
                        state = json.load(f)
                except (OSError, ValueError):
                    state = {}
                return link, state
            try:
                why = self.listj(conf, node, res).get("device_error")
                if why and why != "being made":
                    raise Failure(f"hastd made no {link}: {why}")
            except (subprocess.TimeoutExpired, ValueError, KeyError):
                pass
            if p.poll() is not None:
                raise Failure(f"hastd exited ({p.returncode}) before making {link}")
            time.sleep(0.1)
        raise Failure(f"{link} did not appear within 30 s")

    def take_apart_hast_device(self, link_name):
        """Fallback when hastd did not remove its device (it died, or refused): what dev_hast.sh's
        cleanup does, from hastd's own record. The nbdfuse is the one our hastd started."""
        d = os.path.join(HAST_STATE_ROOT, link_name)
        state = {}
        try:
            with open(os.path.join(d, "state.json")) as f:
                state = json.load(f)
        except (OSError, ValueError):
            pass
        mp = state.get("mountpoint") or os.path.join(d, "fuse")
        self.detach_loops(os.path.join(mp, "disk"))
        if mounted_at(mp):
            self.fuse_unmount(mp)
        pid = state.get("pid", -1)
        if isinstance(pid, int) and pid > 0:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                if "nbdfuse" in cmd and mp in cmd:
                    os.kill(pid, signal.SIGTERM)
            except (OSError, ProcessLookupError):
                pass
        link = os.path.join(HAST_LINK_ROOT, link_name)
        if os.path.islink(link):
            os.unlink(link)
        for name in ("state.json", "state.json.new", "nbdfuse.pid", "nbdfuse.log"):
            try:
                os.unlink(os.path.join(d, name))
            except OSError:
                pass
        for x in (os.path.join(d, "fuse"), d):
            try:
                os.rmdir(x)
            except OSError:
                pass

    # ---- block-device helpers ----
    def detach_loops(self, backing):
        """Detaches every loop device bound to `backing` (ours: the file is in our FUSE mount)."""
        r = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", backing], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        for dev in r.stdout.split():
            self.procs.run(["losetup", "-d", dev], timeout=30, check=False)

    def fuse_unmount(self, mp):
        for _ in range(30):
            if not mounted_at(mp):
                return
            self.procs.run(["fusermount3", "-u", "-q", mp], timeout=30, check=False)
            if mounted_at(mp):
                time.sleep(0.1)
        if mounted_at(mp):
            self.procs.run(["fusermount3", "-u", "-z", "-q", mp], timeout=30, check=False)
            self.notes.append(f"the FUSE mount {mp} was busy: detached lazily")

    def umount(self, mp):
        for _ in range(20):
            if not mounted_at(mp):
                return
            rc, out = self.procs.run(["umount", mp], timeout=120, check=False)
            if rc != 0 and mounted_at(mp):
                time.sleep(0.25)
        if mounted_at(mp):
            self.procs.run(["umount", "-l", mp], timeout=60, check=False)
            self.notes.append(f"{mp} was busy: unmounted lazily")

    def make_fs(self, dev, mp, r):
        t = time.monotonic()
        cmd = MKFS + [dev]
        self.commands.setdefault("mkfs", shlex.join(MKFS + ["DEVICE"]))
        _, out = self.procs.run(["blockdev", "--getsize64", dev], timeout=30)
        r["device_bytes"] = int(out.split()[0])
        self.procs.run(cmd, timeout=600)
        r["mkfs_s"] = time.monotonic() - t
        os.makedirs(mp, exist_ok=True)
        self.push(f"umount {mp}", lambda: self.umount(mp))
        self.procs.run(["mount", "-t", "ext4", dev, mp], timeout=120)
        self.commands.setdefault("mount", "mount -t ext4 DEVICE MOUNTPOINT (default options: relatime, "
                                          "data=ordered, barriers on)")
        os.chmod(mp, 0o755)

    # ---- contenders: each leaves an ext4 mounted at `mp` and returns the pids to account CPU to ----
    def setup_qemu_nbd(self, r, d, s, mp):
        img = os.path.join(d, "qemu.img")
        with open(img, "wb") as f:
            f.truncate(self.size)
        sock = os.path.join(s, "q.sock")
        logp = os.path.join(d, "qemu-nbd.log")
        r["logs"] = [logp]
        p = None
        for aio in ("io_uring", "native"):
            cmd = ["qemu-nbd", "--cache=none", f"--aio={aio}", "--format=raw", "--persistent", "--shared=8",
                   f"--socket={sock}", img]
            p = self.procs.start(cmd, log_path=logp)
            self.push("qemu-nbd", lambda p=p: self.procs.stop(p))
            try:
                wait_for(lambda: os.path.exists(sock), 10, f"qemu-nbd --aio={aio} did not create its socket", p)
                break
            except Failure as e:
                self.procs.stop(p)
                if aio == "native":
                    raise
                why = tail(logp, 3) or str(e)
                self.notes.append(f"qemu-nbd refused `--aio=io_uring` ({why}); it ran with `--aio=native`.")
                log(f"  qemu-nbd: --aio=io_uring refused ({why}); falling back to --aio=native")
                if os.path.exists(sock):
                    os.unlink(sock)
        r["aio"] = aio
        self.commands["qemu-nbd"] = shlex.join(p.cmdline).replace(img, "FILE").replace(sock, "SOCK")
        # The block device, as io/process/block_device.cpp makes /dev/hast/<name> without the nbd module.
        fuse_mp = os.path.join(d, "fuse")
        os.makedirs(fuse_mp)
        disk = os.path.join(fuse_mp, "disk")
        pidfile = os.path.join(d, "nbdfuse.pid")
        uri = f"nbd+unix:///?socket={sock}"
        nlog = os.path.join(d, "nbdfuse.log")
        r["logs"].append(nlog)
        cmd = ["nbdfuse", "-C", "1", "-P", pidfile, disk, uri]
        nf = self.procs.start(cmd, log_path=nlog)
        # Undone after the loop device and before qemu-nbd.
        self.push("nbdfuse", lambda: (self.fuse_unmount(fuse_mp), self.procs.stop(nf, timeout=5)))
        wait_for(lambda: os.path.exists(pidfile), 15, f"nbdfuse did not serve {uri}: {tail(nlog, 2)}", nf)
        self.push("loop device", lambda: self.detach_loops(disk))
        _, out = self.procs.run(["losetup", "--find", "--show", "--direct-io=off", disk], timeout=30)
        dev = out.strip().splitlines()[-1]
        self.commands["qemu-nbd device"] = ("nbdfuse -C 1 -P PIDFILE FUSEDIR/disk 'nbd+unix:///?socket=SOCK'; "
                                            "losetup --find --show --direct-io=off FUSEDIR/disk")
        r["device"] = f"{dev} (nbdfuse, loop)"
        self.make_fs(dev, mp, r)
        return {"server": [p.pid], "nbdfuse": [nf.pid]}, None

    def hast_conf(self, d, s, res, link_name, pair):
        common = ("  replication memsync\n" if pair else "") + f"  timeout 20\n  device on\n  name {link_name}\n"
        if pair:
            port_a, port_b = free_port(), free_port()
            text = f"""on nodeA {{
  control uds://{s}/a.ctl
  pidfile {d}/a.pid
  listen tcp://127.0.0.1:{port_a}
}}
on nodeB {{
  control uds://{s}/b.ctl
  pidfile {d}/b.pid
  listen tcp://127.0.0.1:{port_b}
}}
resource {res} {{
{common}  on nodeA {{
    local {d}/a.img
    remote tcp://127.0.0.1:{port_b}
    nbd uds://{s}/a.nbd
  }}
  on nodeB {{
    local {d}/b.img
    remote tcp://127.0.0.1:{port_a}
    nbd uds://{s}/b.nbd
  }}
}}
"""
        else:
            text = f"""control uds://{s}/a.ctl
pidfile {d}/a.pid
resource {res} {{
{common}  local {d}/a.img
  nbd uds://{s}/a.nbd
  on nodeA {{
    remote none
  }}
}}
"""
        conf = os.path.join(d, "hast.conf")
        with open(conf, "w") as f:
            f.write(text)
        return conf, text

    def setup_hast(self, r, d, s, mp, pair):
        res = "app"
        link_name = f"happ{os.getpid()}{'p' if pair else 's'}"
        conf, text = self.hast_conf(d, s, res, link_name, pair)
        self.commands[f"hast.conf ({'pair' if pair else 'standalone'})"] = (
            text.replace(link_name, "NAME").replace(d, "DIR").replace(s, "SOCKS"))
        nodes = ["nodeA", "nodeB"] if pair else ["nodeA"]
        for n in nodes:
            self.ctl(conf, n, "create", "-m", str(self.size), res)
        r["logs"] = [os.path.join(d, f"{n}.log") for n in nodes]
        self.link_names.append(link_name)
        # Runs last, once hastd has stopped: whatever it left of its device (it should leave nothing).
        self.push("/dev/hast leftovers", lambda: self.hast_leftovers(link_name))
        pids = {}
        procs = {}
        # Started B first, stopped A first (it drains and waits for the secondary).
        for n in reversed(nodes):
            p = self.start_hastd(conf, n, os.path.join(d, f"{n}.log"))
            procs[n] = p
            pids[n] = p.pid
            self.push(f"hastd {n}", lambda p=p, n=n: self.stop_hastd(p, n))
        self.commands["hastd"] = f"{self.hastd} -F -c hast.conf -n NODE"
        if pair:
            self.ctl(conf, "nodeB", "role", "secondary", res)
        # Undone after the umount, before hastd stops: `role init` removes the device (else hastd's
        # SIGTERM does, else hast_leftovers).
        self.push("/dev/hast device", lambda: self.remove_hast_device(conf, res, link_name))
        self.ctl(conf, "nodeA", "role", "primary", res)
        if pair:
            def complete():
                try:
                    return self.listj(conf, "nodeA", res)["status"] == "complete"
                except (Failure, subprocess.TimeoutExpired, ValueError, KeyError):
                    return False
            wait_for(complete, 30, "the pair did not reach `complete`", procs["nodeA"], interval=0.1)
        link, state = self.hast_device(conf, "nodeA", res, link_name, procs["nodeA"])
        method = state.get("method", "?")
        r["device"] = f"{link} -> {os.path.realpath(link)} ({method}" + (", loop)" if method == "nbdfuse" else ")")
        if method != "nbdfuse":
            self.notes.append(f"{r['name']}: hastd made its device with {method}, not nbdfuse + losetup as "
                              f"for qemu-nbd (the nbd kernel module is loaded): the paths differ.")
        nf = state.get("pid")
        self.make_fs(link, mp, r)
        quiet = (lambda: self.wait_quiet(conf, res)) if pair else None
        return {"server": list(pids.values()), "nbdfuse": [nf] if isinstance(nf, int) and nf > 0 else []}, quiet

    def stop_hastd(self, p, node):
        rc = self.procs.stop(p, timeout=20.0)
        if rc == -signal.SIGKILL:
            self.note(f"hastd {node} did not exit within 20 s of SIGTERM: killed (SIGKILL)")
        elif rc not in (0, None):
            self.note(f"hastd {node} exited with status {rc} after SIGTERM")

    def remove_hast_device(self, conf, res, link_name):
        try:
            self.ctl(conf, "nodeA", "role", "init", res, timeout=60)
        except (Failure, subprocess.TimeoutExpired) as e:
            self.notes.append(f"role init: {e}")
            return
        link = os.path.join(HAST_LINK_ROOT, link_name)
        try:
            wait_for(lambda: not os.path.lexists(link)
                     and not os.path.exists(os.path.join(HAST_STATE_ROOT, link_name)), 20, "")
        except Failure:
            self.notes.append(f"{link} or its record was still there 20 s after `role init`")

    def hast_leftovers(self, link_name):
        if os.path.lexists(os.path.join(HAST_LINK_ROOT, link_name)) or \
                os.path.exists(os.path.join(HAST_STATE_ROOT, link_name)):
            self.notes.append(f"hastd left /dev/hast/{link_name} or its record behind when it stopped; "
                              f"taken apart by app.py")
            self.take_apart_hast_device(link_name)

    # ---- workloads ----
    def run_sqlite(self, mp):
        d = os.path.join(mp, "sqlite")
        os.makedirs(d)
        path = os.path.join(d, "bench.db")
        con = sqlite3.connect(path, isolation_level=None)
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise Failure(f"journal_mode=WAL refused ({mode})")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts REAL NOT NULL, payload BLOB NOT NULL)")
            payload = os.urandom(100)
            # A short warm-up, not counted.
            warm = 0.0 if self.quick else 1.0
            end = time.monotonic() + warm
            while time.monotonic() < end:
                con.execute("BEGIN")
                con.execute("INSERT INTO t (ts, payload) VALUES (?, ?)", (time.time(), payload))
                con.execute("COMMIT")
            base = con.execute("SELECT count(*) FROM t").fetchone()[0]
            lat = []
            t0 = time.perf_counter()
            end = t0 + self.sqlite_s
            now = t0
            while now < end:
                con.execute("BEGIN")
                con.execute("INSERT INTO t (ts, payload) VALUES (?, ?)", (time.time(), payload))
                con.execute("COMMIT")
                t = time.perf_counter()
                lat.append(t - now)
                now = t
            elapsed = now - t0
            rows = con.execute("SELECT count(*) FROM t").fetchone()[0] - base
            if rows != len(lat):
                raise Failure(f"{len(lat)} commits but {rows} rows")
        finally:
            con.close()
        lat.sort()
        shutil.rmtree(d)

        def pct(q):
            return lat[min(len(lat) - 1, int(len(lat) * q / 100))] * 1000.0
        return {"commits": len(lat), "seconds": elapsed, "commits_s": len(lat) / elapsed,
                "lat_ms": {"mean": statistics.fmean(lat) * 1000.0, "p50": pct(50), "p99": pct(99),
                           "max": lat[-1] * 1000.0}}

    def pg_env(self):
        return {"PATH": f"{self.pg_bin}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C",
                "HOME": "/tmp", "PGDATABASE": "postgres", "PGUSER": "postgres"}

    def run_pgbench(self, r, d, mp, pids):
        user = self.args.pg_user
        pw = pwd.getpwnam(user)
        env = self.pg_env()
        bin_ = lambda name: os.path.join(self.pg_bin, name)  # noqa: E731
        data = os.path.join(mp, "pgdata")
        os.makedirs(data, mode=0o700)
        os.chown(data, pw.pw_uid, pw.pw_gid)
        sockdir = tempfile.mkdtemp(prefix="ha-pg.", dir="/tmp")
        self.push(f"rm {sockdir}", lambda: shutil.rmtree(sockdir, ignore_errors=True))
        os.chown(sockdir, pw.pw_uid, pw.pw_gid)
        logp = os.path.join(d, "postgres.log")
        with open(logp, "w"):
            pass
        os.chown(logp, pw.pw_uid, pw.pw_gid)
        r.setdefault("logs", []).append(logp)
        port = 5432
        conn = ["-h", sockdir, "-p", str(port), "-U", "postgres"]
        initdb = [bin_("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8"]
        self.procs.run(initdb, timeout=300, user=user, env=env, log_path=logp)
        self.commands["initdb"] = shlex.join(initdb).replace(data, "MNT/pgdata") + f"   (as user {user})"
        pg_cmd = [bin_("postgres"), "-D", data, "-k", sockdir, "-p", str(port), "-c", "listen_addresses="]
        self.commands["postgres"] = (shlex.join(pg_cmd).replace(data, "MNT/pgdata").replace(sockdir, "SOCKDIR")
                                     + "   (all other settings: initdb's defaults; fsync, synchronous_commit, "
                                       "full_page_writes on)")
        pg = self.procs.start(pg_cmd, log_path=logp, user=user, env=env)
        # SIGINT: fast shutdown (a checkpoint, then exit); SIGQUIT: immediate.
        self.push("postgres", lambda: self.procs.stop(pg, sigs=(signal.SIGINT, signal.SIGQUIT), timeout=60))

        def ready():
            rc = subprocess.run([bin_("pg_isready"), "-q", *conn], env=env, stdin=subprocess.DEVNULL).returncode
            return rc == 0
        wait_for(ready, 60, f"postgres did not start: {tail(logp, 3)}", pg, interval=0.2)
        out = {}
        t = time.monotonic()
        init = [bin_("pgbench"), "-i", "-s", str(self.scale), "-q", *conn, "postgres"]
        self.procs.run(init, timeout=1800, user=user, env=env)
        self.procs.run([bin_("psql"), "-X", "-q", *conn, "-c", "CHECKPOINT", "postgres"], timeout=600, user=user,
                       env=env)
        out["init_s"] = time.monotonic() - t
        self.commands["pgbench init"] = shlex.join(init).replace(sockdir, "SOCKDIR") + "; psql -c CHECKPOINT"
        out["scale"] = self.scale
        out["runs"] = {}
        for c in self.clients:
            if self.quiet:
                self.quiet()
            j = min(c, 2)
            cmd = [bin_("pgbench"), "-c", str(c), "-j", str(j), "-T", str(self.pg_s), *conn, "postgres"]
            self.commands[f"pgbench -c {c}"] = shlex.join(cmd).replace(sockdir, "SOCKDIR")
            cpu0 = self.cpu(pids)
            _, txt = self.procs.run(cmd, timeout=self.pg_s + 600, user=user, env=env)
            cpu1 = self.cpu(pids)
            m = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", txt, re.M)
            if not m:
                raise Failure(f"no tps in pgbench's output: {txt.strip()[-400:]}")
            lat = re.search(r"^latency average = ([\d.]+) ms", txt, re.M)
            n = re.search(r"^number of transactions actually processed: (\d+)", txt, re.M)
            failed = re.search(r"^number of failed transactions: (\d+)", txt, re.M)
            run = {"clients": c, "threads": j, "seconds": self.pg_s, "tps": float(m.group(1)),
                   "lat_ms": float(lat.group(1)) if lat else None, "transactions": int(n.group(1)) if n else None,
                   "failed": int(failed.group(1)) if failed else None, "cpu_s": self.cpu_delta(cpu0, cpu1)}
            out["runs"][str(c)] = run
            log(f"  pgbench -c {c}: {run['tps']:.1f} TPS, latency {run['lat_ms']} ms")
        self.procs.stop(pg, sigs=(signal.SIGINT, signal.SIGQUIT), timeout=60)
        if pg.returncode not in (0, None):
            self.notes.append(f"{r['name']}: postgres exited {pg.returncode} at its fast shutdown")
        return out

    def cpu(self, pids):
        return {k: sum(cpu_seconds(p) or 0.0 for p in v) for k, v in pids.items()}

    @staticmethod
    def cpu_delta(a, b):
        return {k: b[k] - a[k] for k in a}

    # ---- one contender ----
    def run_contender(self, name):
        r = {"name": name, "error": None}
        self.results.append(r)
        d = os.path.join(self.work, re.sub(r"[^a-z0-9]+", "-", name))
        s = os.path.join(self.socks, re.sub(r"[^a-z0-9]+", "", name)[:8])
        os.makedirs(d)
        os.makedirs(s)
        os.chmod(d, 0o711)
        self.push(f"rm {d}", lambda: shutil.rmtree(d, ignore_errors=True))
        self.push(f"rm {s}", lambda: shutil.rmtree(s, ignore_errors=True))
        mp = os.path.join(d, "mnt")
        log(name)
        self.quiet = None
        t0 = time.monotonic()
        try:
            if name == "qemu-nbd":
                pids, self.quiet = self.setup_qemu_nbd(r, d, s, mp)
            elif name == "hast standalone":
                pids, self.quiet = self.setup_hast(r, d, s, mp, pair=False)
            elif name == "hast memsync":
                pids, self.quiet = self.setup_hast(r, d, s, mp, pair=True)
            else:
                raise Failure(f"unknown contender {name}")
            log(f"  {r['device']}: ext4 made in {r['mkfs_s']:.1f} s")
            if self.args.only in (None, "sqlite"):
                try:
                    if self.quiet:
                        self.quiet()
                    c0 = self.cpu(pids)
                    r["sqlite"] = self.run_sqlite(mp)
                    r["sqlite"]["cpu_s"] = self.cpu_delta(c0, self.cpu(pids))
                    q = r["sqlite"]
                    log(f"  sqlite: {q['commits_s']:.1f} commits/s (p50 {q['lat_ms']['p50']:.2f} ms, "
                        f"p99 {q['lat_ms']['p99']:.2f} ms)")
                except (Failure, sqlite3.Error, OSError) as e:
                    r["sqlite"] = {"error": f"{type(e).__name__}: {e}"}
                    log(f"  sqlite FAILED: {e}")
            if self.args.only in (None, "pgbench"):
                mark = len(self.undo)
                try:
                    r["pgbench"] = self.run_pgbench(r, d, mp, pids)
                except (Failure, OSError, KeyError) as e:
                    r["pgbench"] = {"error": f"{type(e).__name__}: {e}", "log": tail(os.path.join(d, "postgres.log"))}
                    log(f"  pgbench FAILED: {e}\n{r['pgbench']['log']}")
                finally:
                    # postgres and its socket dir go now (the file system is unmounted next).
                    self.unwind(mark)
        except Failure as e:
            r["error"] = str(e)
            detail = "".join(f"\n{os.path.basename(lp)}: {tail(lp, 5)}" for lp in r.get("logs", []) if tail(lp, 5))
            r["error_log"] = detail
            log(f"  {name} FAILED: {e}{detail}")
        finally:
            self.unwind()
            r["seconds"] = time.monotonic() - t0

    def run(self):
        t0 = time.monotonic()
        self.info = self.machine()
        self.quiet = None
        log(f"work dir {self.work} ({self.info['backing_fs']}); device {self.size // MiB} MiB; "
            f"sqlite {self.sqlite_s:g} s, pgbench -s {self.scale}, -T {self.pg_s} with -c {self.clients}")
        for name in self.args.contenders:
            self.run_contender(name)
        self.info["loadavg_end"] = os.getloadavg()[0]
        self.elapsed = time.monotonic() - t0

    def cleanup(self):
        self.unwind()
        self.procs.stop_all()
        for link_name in self.link_names:
            if os.path.lexists(os.path.join(HAST_LINK_ROOT, link_name)) or \
                    os.path.exists(os.path.join(HAST_STATE_ROOT, link_name)):
                self.take_apart_hast_device(link_name)
        for d in self.own_dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.socks, ignore_errors=True)

    # ---- report ----
    def summary(self):
        """{contender: {"sqlite": x, "pg1": y, "pg8": z, ...}} of the figures in the table."""
        out = {}
        for r in self.results:
            row = {}
            sq = r.get("sqlite") or {}
            row["sqlite"] = sq.get("commits_s")
            pg = r.get("pgbench") or {}
            for c in self.clients:
                row[f"pg{c}"] = (pg.get("runs", {}).get(str(c)) or {}).get("tps")
            out[r["name"]] = row
        return out

    def markdown(self):
        i = self.info
        a = self.args
        lines = [f"## Applications on ext4{' (--quick: smoke test, figures meaningless)' if self.quick else ''}",
                 "",
                 f"`bench/app.py` on {i['date']}: {i['cpu']}, {i['cores']} cores, Linux {i['kernel']}, "
                 f"load average {i['loadavg_start']:.1f} at the start and {i['loadavg_end']:.1f} at the end; "
                 f"backing files on {i['backing_fs']}; commit {i['commit']}. "
                 f"Each contender: an ext4 file system on a {self.size // MiB} MiB block device "
                 f"(`{self.commands.get('mkfs', '')}`, default mount options), the device being `nbdfuse` + a "
                 f"loop device (`losetup --direct-io=off`) in front of the contender's NBD export, as hastd makes "
                 f"`/dev/hast/<name>` without the nbd kernel module. "
                 f"SQLite {i['sqlite']}: WAL, synchronous=FULL, one 100-byte row INSERT per transaction, "
                 f"{self.sqlite_s:g} s. {i['postgres']}: default settings, `pgbench -i -s {self.scale}`, "
                 f"then {', '.join(f'`-c {c}`' for c in self.clients)} for {self.pg_s} s each. "
                 f"Higher is better; × qemu-nbd = this row ÷ the qemu-nbd row.", ""]
        summ = self.summary()
        ref = summ.get("qemu-nbd", {})
        cols = []
        if a.only in (None, "sqlite"):
            cols.append(("sqlite", "SQLite commits/s"))
        if a.only in (None, "pgbench"):
            cols += [(f"pg{c}", f"pgbench TPS -c {c}") for c in self.clients]
        head = "| contender | " + " | ".join(f"{t} | × qemu-nbd" for _, t in cols) + " |"
        lines += [head, "|" + "---|" * (1 + 2 * len(cols))]
        for r in self.results:
            cells = [r["name"]]
            for k, _ in cols:
                v = summ[r["name"]].get(k)
                base = ref.get(k)
                if r.get("error"):
                    cells += ["failed", "-"]
                elif v is None:
                    src = r.get("sqlite" if k == "sqlite" else "pgbench") or {}
                    cells += ["failed" if src.get("error") else "-", "-"]
                else:
                    cells += [f"{v:.0f}" if v >= 100 else f"{v:.1f}",
                              f"{v / base:.2f}" if base else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        detail = []
        for r in self.results:
            sq = r.get("sqlite") or {}
            pg = r.get("pgbench") or {}
            bits = []
            if "lat_ms" in sq:
                bits.append(f"SQLite commit latency p50 {sq['lat_ms']['p50']:.2f} ms, p99 {sq['lat_ms']['p99']:.2f} "
                            f"ms, max {sq['lat_ms']['max']:.1f} ms ({sq['commits']} commits)")
            if "init_s" in pg:
                bits.append(f"pgbench -i + CHECKPOINT {pg['init_s']:.1f} s")
            for c, run in sorted((pg.get("runs") or {}).items(), key=lambda x: int(x[0])):
                bits.append(f"-c {c}: latency {run['lat_ms']} ms")
            if r.get("device"):
                bits.insert(0, f"device {r['device']}, {r['device_bytes'] / MiB:.1f} MiB, mkfs {r['mkfs_s']:.1f} s")
            if bits:
                detail.append(f"- {r['name']}: " + "; ".join(bits) + ".")
            if r.get("error"):
                detail.append(f"- {r['name']} FAILED: {r['error']}")
            for w in ("sqlite", "pgbench"):
                if (r.get(w) or {}).get("error"):
                    detail.append(f"- {r['name']}: {w} FAILED: {r[w]['error']}")
        lines += detail
        if detail:
            lines.append("")
        lines.append("Commands:")
        lines.append("")
        lines.append("```")
        for k, v in self.commands.items():
            if "\n" in v:
                lines.append(f"# {k}:")
                lines += [f"#   {x}" for x in v.rstrip().splitlines()]
            else:
                lines.append(f"# {k}: {v}")
        lines.append("```")
        for n in self.notes:
            lines.append("")
            lines.append(f"Note: {n}")
        return "\n".join(lines) + "\n"

    def as_json(self):
        res = []
        for r in self.results:
            res.append({k: v for k, v in r.items() if k != "logs"})
        return {"machine": self.info, "quick": self.quick, "device_bytes": self.size,
                "sqlite_seconds": self.sqlite_s, "pgbench_seconds": self.pg_s, "pgbench_scale": self.scale,
                "pgbench_clients": self.clients, "contenders": res, "summary": self.summary(),
                "commands": self.commands, "notes": self.notes, "elapsed_s": self.elapsed}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build"), help="directory with hastd and hastctl")
    ap.add_argument("--backing", help="directory for the backing files (default: a temp dir under /var/tmp)")
    ap.add_argument("--seconds", type=float, help="SQLite seconds (default 20, --quick 3)")
    ap.add_argument("--pg-seconds", type=int, help="seconds per pgbench run (default 30, --quick 3)")
    ap.add_argument("--scale", type=int, help="pgbench -i scale (default 10, --quick 1)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="pgbench client counts (default 1 8)")
    ap.add_argument("--size-mib", type=int, help="device size in MiB (default 2048, --quick 512)")
    ap.add_argument("--quick", action="store_true", help="smoke test: a few seconds per workload")
    ap.add_argument("--only", choices=["sqlite", "pgbench"], help="run only this workload")
    ap.add_argument("--contenders", nargs="+", default=CONTENDERS, choices=CONTENDERS,
                    help="contenders, in run order (default: all three)")
    ap.add_argument("--pg-bin", help="PostgreSQL's bin directory (default: the newest /usr/lib/postgresql/*/bin)")
    ap.add_argument("--pg-user", default="postgres", help="unprivileged user that runs PostgreSQL")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("app.py: run as root (mount, losetup, FUSE)", file=sys.stderr)
        return 1
    if not args.pg_bin and args.only != "sqlite":
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"),
                       key=lambda p: int(re.search(r"/(\d+)/bin", p).group(1)))
        if not found:
            print("app.py: PostgreSQL is not installed (apt-get install postgresql; scripts/bootstrap.sh --all)",
                  file=sys.stderr)
            return 1
        args.pg_bin = os.path.dirname(found[-1])
    args.pg_bin = args.pg_bin or "/usr/lib/postgresql/15/bin"
    for tool in ("qemu-nbd", "nbdfuse", "fusermount3", "losetup", "mkfs.ext4"):
        if not shutil.which(tool):
            print(f"app.py: {tool} is not installed (scripts/bootstrap.sh --all installs it)", file=sys.stderr)
            return 1
    if any(c.startswith("hast") for c in args.contenders):
        for prog in ("hastd", "hastctl"):
            if not os.access(os.path.join(args.build, prog), os.X_OK):
                print(f"app.py: {os.path.join(args.build, prog)} not found; build first or pass --build DIR",
                      file=sys.stderr)
                return 1
    try:
        pwd.getpwnam(args.pg_user)
    except KeyError:
        print(f"app.py: no user {args.pg_user} (--pg-user)", file=sys.stderr)
        return 1

    def on_signal(sig, _frame):
        raise Interrupted(signal.Signals(sig).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bench = AppBench(args)
    rc = 0
    try:
        bench.run()
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\napp.py: interrupted ({str(e) or 'SIGINT'}); stopping everything it started", file=sys.stderr)
        rc = 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        bench.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if rc:
        return rc
    md = bench.markdown()
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.as_json(), f, indent=2)
            f.write("\n")
    log(f"done in {bench.elapsed:.0f} s")
    failed = any(r.get("error") or (r.get("sqlite") or {}).get("error") or (r.get("pgbench") or {}).get("error")
                 for r in bench.results)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
