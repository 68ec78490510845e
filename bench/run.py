#!/usr/bin/env python3
"""hast against the raw disk and nbdkit, side by side, on the same storage.

    python3 bench/run.py [--quick] [--build DIR] [--backing DIR] [--out docs/BENCHMARKS.md]

Contenders (each on a file in --backing, default a fresh directory under
/var/tmp):
  raw              fio on the backing file (libaio + O_DIRECT where the file
                   system allows it, else psync buffered)
  nbdkit           `nbdkit file` on a Unix socket, fio --ioengine=nbd
  qemu-nbd         `qemu-nbd --cache=none --aio=io_uring` (native AIO if
                   io_uring is refused) on a Unix socket, fio --ioengine=nbd
  hast standalone  hastd with `remote none`, fio --ioengine=nbd on its export
  hast <mode> <d>  a hastd pair on 127.0.0.1, replication async / memsync /
                   fullsync; d = "direct" (the primary connects straight to
                   the secondary) or 0, 0.5, 5 ms one-way delay added by
                   tests/integration/lib/relay.py between them

Workloads: 4k randwrite QD1 and QD32, 4k randread QD32, 1M seqwrite QD8,
4k randwrite QD1 with fsync every 32 writes. Then the resync test (writes
while the secondary is down, time to `complete`, bytes on the wire against
a plain TCP copy, peak RSS; then the largest resync again under a 4k QD1
client writer, with the client's latency during it against a baseline), the
verify test (`hastctl verify` of 1 GiB: time, wire bytes, against O_DIRECT
reads of one and of both provider files), and (default mode) a perf profile
of hastd.

--quick runs every code path once in under a minute: raw, nbdkit, qemu-nbd,
standalone, one pair direct (memsync) and one through the relay (async
0 ms), a small resync, a small verify and a short profile (when perf
exists), on a 16 MiB region at 0.2 s per workload. Its figures are only a
smoke test.

Writes a Markdown report (--out) and a PNG chart next to it
(benchmarks.png). Every process it starts is stopped by pid and every file
removed, on success, failure and Ctrl-C. Nothing here asserts a figure.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# The relay (delay, bandwidth, byte counters) is the one the integration tests use.
RELAY = os.path.join(HERE, os.pardir, "tests", "integration", "lib", "relay.py")
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration", "lib"))
import chart  # noqa: E402
from ports import free_port  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")

WORKLOADS = [
    {"key": "randwrite4k_qd1", "title": "4k random write, QD1", "rw": "randwrite", "bs": "4k", "iodepth": 1},
    {"key": "randwrite4k_qd32", "title": "4k random write, QD32", "rw": "randwrite", "bs": "4k", "iodepth": 32},
    {"key": "randread4k_qd32", "title": "4k random read, QD32", "rw": "randread", "bs": "4k", "iodepth": 32},
    {"key": "seqwrite1m_qd8", "title": "1M sequential write, QD8", "rw": "write", "bs": "1M", "iodepth": 8},
    {"key": "randwrite4k_fsync32", "title": "4k random write, QD1, fsync every 32 writes", "rw": "randwrite",
     "bs": "4k", "iodepth": 1, "fsync": 32},
]
MODES = ["async", "memsync", "fullsync"]
DELAYS = ["direct", 0.0, 0.5, 5.0]
# --quick: one pair straight to the secondary and one through the relay.
QUICK_PAIRS = [("memsync", "direct"), ("async", 0.0)]


def pair_label(mode, delay):
    return f"hast {mode} " + ("direct" if delay == "direct" else f"{delay:g} ms")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Interrupted(Exception):
    pass


class Failure(Exception):
    """A contender, workload or phase failed; the message goes into the report."""


# --- Processes: everything we start is tracked by pid and stopped by pid ------------------

class Procs:
    def __init__(self):
        self.live = []  # Popen objects, in start order

    def start(self, cmd, log_path=None, stdout=None):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            # A session of its own: Ctrl-C reaches only us; we stop the child.
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout or out,
                                 stderr=out, start_new_session=True)
        finally:
            if log_path:
                out.close()
        p.cmdline = cmd
        self.live.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=15.0):
        """Signals p, waits up to `timeout`, then SIGKILL. Returns the exit status."""
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.live:
            self.live.remove(p)
        if p.stdout:
            p.stdout.close()
        return p.returncode

    def run(self, cmd, timeout, log_path=None):
        """Runs cmd to completion (tracked, so Ctrl-C stops it too)."""
        p = self.start(cmd, log_path=log_path)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(p, signal.SIGKILL)
            raise Failure(f"{os.path.basename(cmd[0])} did not finish within {timeout:.0f}s")
        self.live.remove(p)
        return p.returncode

    def stop_all(self):
        for p in reversed(list(self.live)):
            self.stop(p, timeout=5.0)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux >= 4.0).
    False when the kernel or our permissions refuse it: VmHWM then covers the process's life."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def lat_stats(samples_us):
    """p50 / p99 / max (nearest rank) and the count of a list of latencies in µs."""
    if not samples_us:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    s = sorted(samples_us)

    def rank(q):
        return s[max(0, min(len(s) - 1, -(-len(s) * q // 100) - 1))]
    return {"n": len(s), "p50": rank(50), "p99": rank(99), "max": s[-1]}


def read_clat_log(path, t_from=None, t_to=None):
    """Completion latencies (µs) of a fio clat log written with --log_unix_epoch=1, optionally
    only those completed within [t_from, t_to] (Unix seconds)."""
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split(",")
            if len(parts) < 2:
                continue
            t = int(parts[0]) / 1000.0
            if (t_from is not None and t < t_from) or (t_to is not None and t > t_to):
                continue
            out.append(int(parts[1]) / 1000.0)
    return out




def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def read_first_line(p, timeout=10.0):
    """The first stdout line of a helper that prints its port."""
    import select
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            ch = os.read(p.stdout.fileno(), 64)
            if not ch:
                break
            buf += ch
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode()
        if p.poll() is not None:
            break
    raise Failure(f"{' '.join(p.cmdline[:3])} did not report its port")


# --- The bench --------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.build = os.path.abspath(args.build)
        self.hastd = os.path.join(self.build, "hastd")
        self.hastctl = os.path.join(self.build, "hastctl")
        self.procs = Procs()
        if self.quick:
            self.file_size = 24 * MiB
            self.fio_size = 16 * MiB
            self.runtime = 0.2
            self.resync_sizes = [8]
        else:
            self.file_size = 288 * MiB
            self.fio_size = 256 * MiB
            self.runtime = 5
            self.resync_sizes = [64, 256, 1024]
        if args.runtime:
            self.runtime = args.runtime
        base = args.backing or "/var/tmp"
        os.makedirs(base, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="hast-bench.", dir=base)
        # Unix socket paths are limited to 108 bytes: keep them short.
        self.socks = tempfile.mkdtemp(prefix="hb.", dir="/tmp")
        self.results = {}      # contender name -> {"workloads": {key: row}, "error": str, ...}
        self.order = []        # contender names in run order
        self.commands = {}     # what -> exact command line
        self.notes = []
        self.resync = []
        self.resync_error = None
        self.resync_load = None  # the resync under a client writer (run_resync)
        self.verify = None       # the verify section (run_verify)
        self.profile = None
        self.rtt = {}

    # ---- environment ----
    def machine(self):
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
        fstype = run_text(["findmnt", "-n", "-o", "FSTYPE", "--target", self.work]).strip()
        source = run_text(["findmnt", "-n", "-o", "SOURCE", "--target", self.work]).strip()
        if not fstype:
            lines = run_text(["df", "-T", self.work]).splitlines()
            fstype = lines[-1].split()[1] if len(lines) > 1 else "unknown"
        statf = run_text(["stat", "-f", "-c", "%T", self.work]).strip()
        commit = run_text(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip() or "unknown"
        if run_text(["git", "-C", REPO, "status", "--porcelain", "--", "actors", "io", "config", "messages",
                     "cli", "CMakeLists.txt"]).strip():
            commit += " (with uncommitted changes to the sources)"
        return {
            "cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem / GiB,
            "kernel": platform.release(), "os": os_name(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "backing": self.work, "fstype": fstype, "fs_source": source, "stat_f": statf,
            "fio": run_text(["fio", "--version"]).strip(),
            "nbdkit": run_text(["nbdkit", "--version"]).strip(),
            "qemu_nbd": (run_text(["qemu-nbd", "--version"]).strip().splitlines() or [""])[0],
            "commit": commit,
        }

    def probe_direct(self):
        """Can the backing file system do O_DIRECT? Decides the raw contender's engine."""
        path = os.path.join(self.work, "direct-probe")
        import mmap
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
            try:
                buf = mmap.mmap(-1, 4096)
                os.pwrite(fd, buf, 0)
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            if os.path.exists(path):
                os.unlink(path)

    # ---- fio ----
    def fio_cmd(self, target, wl, out, size=None, time_based=True, offset=None):
        cmd = ["fio", f"--name={wl['key']}", *target, f"--rw={wl['rw']}", f"--bs={wl['bs']}",
               f"--iodepth={wl['iodepth']}", f"--size={size or self.fio_size}",
               "--percentile_list=50:99:99.9", "--randrepeat=0", "--output-format=json", f"--output={out}"]
        if time_based:
            cmd += ["--time_based", f"--runtime={int(self.runtime * 1000)}ms"]
        if self.quick:
            # Skips fio's TSC calibration at start-up: ~0.15 s of each of ~40 fio runs.
            cmd.append("--clocksource=clock_gettime")
        if wl.get("fsync"):
            cmd.append(f"--fsync={wl['fsync']}")
        if offset is not None:
            cmd.append(f"--offset={offset}")
        return cmd

    def fio(self, target, wl, tag, **kw):
        out = os.path.join(self.work, f"fio-{tag}.json")
        cmd = self.fio_cmd(target, wl, out, **kw)
        timeout = self.runtime + 120 if kw.get("time_based", True) else 600
        rc = self.procs.run(cmd, timeout, log_path=os.path.join(self.work, f"fio-{tag}.log"))
        try:
            with open(out) as f:
                text = f.read()
            # Some engines print a line before the JSON document.
            j = json.loads(text[text.index("{"):])
        except (OSError, ValueError):
            raise Failure(f"fio exited {rc} without a JSON report: "
                          + tail(os.path.join(self.work, f"fio-{tag}.log"), 5).strip())
        job = j["jobs"][0]
        if rc != 0 or job.get("error"):
            raise Failure(f"fio exited {rc}, job error {job.get('error')}: "
                          + tail(os.path.join(self.work, f"fio-{tag}.log"), 5).strip())
        side = job["read"] if wl["rw"].endswith("read") else job["write"]
        pct = side["clat_ns"].get("percentile", {})

        def p(q):
            v = pct.get(q)
            return v / 1000.0 if v is not None else None
        return {
            "iops": side["iops"], "mibs": side["bw_bytes"] / MiB, "bytes": side["io_bytes"],
            "p50": p("50.000000"), "p99": p("99.000000"), "p999": p("99.900000"),
            "max": side["clat_ns"]["max"] / 1000.0 if side["clat_ns"].get("max") is not None else None,
            "runtime_s": side["runtime"] / 1000.0, "cmd": cmd,
        }

    # ---- hast helpers ----
    def ctl(self, conf, node, *args, timeout=30):
        r = subprocess.run([self.hastctl, "-c", conf, "-n", node, *args], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise Failure(f"hastctl -n {node} {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def listj(self, conf, node, res):
        return json.loads(self.ctl(conf, node, "list", "--json", res))["resources"][0]

    def start_hastd(self, conf, node, logp, args=()):
        cmd = [self.hastd, "-F", "-c", conf, "-n", node, *args]
        p = self.procs.start(cmd, log_path=logp)
        for _ in range(150):
            try:
                self.ctl(conf, node, "status", timeout=5)
                return p
            except (Failure, subprocess.TimeoutExpired):
                pass
            if p.poll() is not None:
                raise Failure(f"hastd {node} exited ({p.returncode}) during start-up: {tail(logp, 5).strip()}")
            time.sleep(0.1)
        raise Failure(f"hastd {node} did not answer on its control socket")

    def stop_hastd(self, p, what):
        rc = self.procs.stop(p, timeout=20.0)
        if rc not in (0, None):
            self.notes.append(f"{what}: hastd exited with status {rc} after SIGTERM")
        return rc

    def wait_status(self, conf, node, res, word, timeout, drained=False):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                last = self.listj(conf, node, res)
                if last["status"] == word and (not drained or not any(last["queues"].values())):
                    return last
            except (Failure, subprocess.TimeoutExpired, ValueError):
                pass
            time.sleep(0.05)
        raise Failure(f"{node}: {res} did not reach '{word}' within {timeout}s"
                      + (f" (status {last['status']}, dirty {last['dirty_bytes']}, queues {last['queues']})"
                         if last else ""))

    def wait_drained(self, conf, res, timeout):
        """Until the primary is `complete` with empty queues. Returns None, or a
        warning when it stays `degraded` with nothing queued and no resync
        running for 5 s (extents left dirty that nothing will copy while the
        link stays up); then it only waits for the queues to empty."""
        end = time.monotonic() + timeout
        idle_since = None
        last = None
        while time.monotonic() < end:
            try:
                last = self.listj(conf, "nodeA", res)
            except (Failure, subprocess.TimeoutExpired, ValueError):
                time.sleep(0.05)
                continue
            empty = not any(last["queues"].values())
            if empty and last["status"] == "complete":
                return None
            if empty and not last["sync"].get("active") and last["connected"]:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= (2.0 if self.quick else 5.0):
                    return (f"the primary stayed degraded with {last['dirty_bytes']} dirty bytes, empty queues "
                            f"and no resync running while connected for {2 if self.quick else 5} s")
            else:
                idle_since = None
            time.sleep(0.05)
        raise Failure(f"nodeA: {res} did not drain within {timeout}s"
                      + (f" (status {last['status']}, dirty {last['dirty_bytes']}, queues {last['queues']}, "
                         f"sync {last['sync']})" if last else ""))

    def pair_config(self, d, res, mode, port_a, port_b, remote_a, extra=""):
        conf = os.path.join(d, "hast.conf")
        s = self.sock_dir(d)
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
  replication {mode}
  timeout 20
{extra}  on nodeA {{
    local {d}/a.img
    remote tcp://127.0.0.1:{remote_a}
    nbd uds://{s}/a.nbd
  }}
  on nodeB {{
    local {d}/b.img
    remote tcp://127.0.0.1:{port_a}
    nbd uds://{s}/b.nbd
  }}
}}
"""
        with open(conf, "w") as f:
            f.write(text)
        return conf, text

    def sock_dir(self, d):
        s = os.path.join(self.socks, os.path.basename(d))
        os.makedirs(s, exist_ok=True)
        return s

    def start_relay(self, target_port, delay_ms, d, name):
        stats = os.path.join(d, f"{name}.stats.json")
        cmd = [sys.executable, RELAY, "--target", f"127.0.0.1:{target_port}",
               "--delay-ms", str(delay_ms), "--stats", stats]
        p = self.procs.start(cmd, log_path=os.path.join(d, f"{name}.log"), stdout=subprocess.PIPE)
        port = int(read_first_line(p))
        return p, port, stats

    # ---- contenders ----
    def contenders(self):
        """(name, fn, delay or None) in run order, after --quick / --only. --only picks from the
        full list (also with --quick); --quick alone runs QUICK_PAIRS as its pairs."""
        out = [("raw", self.run_raw, None), ("nbdkit", self.run_nbdkit, None),
               ("qemu-nbd", self.run_qemu_nbd, None), ("hast standalone", self.run_standalone, None),
               ("hast threads engine", self.run_threads_engine, None)]
        only = self.args.only
        for mode in MODES:
            for delay in DELAYS:
                if self.quick and not only and (mode, delay) not in QUICK_PAIRS:
                    continue
                label = pair_label(mode, delay)
                out.append((label, lambda mode=mode, delay=delay, label=label: self.run_pair(label, mode, delay),
                            delay))
        if only:
            out = [c for c in out if any(o in c[0] for o in only)]
        return out

    def measure(self, name, target, pids, counters=None, drain=None):
        """Prefills, then runs every workload, with CPU and RSS of `pids`."""
        r = self.results[name]
        t0 = time.monotonic()
        self.fio(target, {"key": "prefill", "rw": "write", "bs": "1M", "iodepth": 8}, f"{slug(name)}-prefill",
                 time_based=False)
        if drain:
            warn = drain()
            if warn:
                r.setdefault("warnings", []).append(f"after the prefill: {warn}")
        r["prefill_s"] = time.monotonic() - t0
        for wl in WORKLOADS:
            tag = f"{slug(name)}-{wl['key']}"
            try:
                before = {k: cpu_seconds(p) for k, p in pids.items()}
                c0 = counters() if counters else None
                row = self.fio(target, wl, tag)
                if drain:
                    warn = drain()
                    if warn:
                        row["warning"] = warn
                        r.setdefault("warnings", []).append(f"after {wl['key']}: {warn}")
                        log(f"  {name}: {wl['key']}: {warn}")
                after = {k: cpu_seconds(p) for k, p in pids.items()}
                cpu = sum(after[k] - before[k] for k in pids)
                row["cpu"] = {k: after[k] - before[k] for k in pids}
                row["cpu_per_gib"] = cpu / (row["bytes"] / GiB) if pids and row["bytes"] else None
                if counters:
                    c1 = counters()
                    writes = c1["writes"] - c0["writes"]
                    row["md_updates"] = c1["activemap_updates"] - c0["activemap_updates"]
                    row["md_per_1k"] = 1000.0 * row["md_updates"] / writes if writes else None
                r["workloads"][wl["key"]] = row
                self.commands.setdefault(f"fio {wl['key']} ({r['engine']})", shlex.join(row.pop("cmd")))
                log(f"  {name:24s} {wl['key']:20s} {row['iops']:10.0f} IOPS {row['mibs']:8.1f} MiB/s "
                    f"p50 {fmt_us(row['p50'])} p99 {fmt_us(row['p99'])}")
            except Failure as e:
                r["workloads"][wl["key"]] = {"error": str(e), "log": self.log_tails(name)}
                log(f"  {name}: {wl['key']} FAILED: {e}")
                if self.args.keep_logs:
                    self.keep_logs(name, wl["key"])
        r["rss_kib"] = {k: peak_rss_kib(p) for k, p in pids.items()}

    def run_raw(self, name, d):
        path = os.path.join(d, "raw.img")
        with open(path, "wb") as f:
            f.truncate(self.file_size)
        if self.direct:
            target = ["--ioengine=libaio", "--direct=1", f"--filename={path}"]
            self.results[name]["engine"] = "libaio, direct=1"
        else:
            target = ["--ioengine=psync", "--direct=0", f"--filename={path}"]
            self.results[name]["engine"] = "psync, buffered (O_DIRECT refused by the file system)"
        self.measure(name, target, {})

    def run_nbdkit(self, name, d):
        path = os.path.join(d, "nbdkit.img")
        with open(path, "wb") as f:
            f.truncate(self.file_size)
        sock = os.path.join(self.sock_dir(d), "nbdkit.sock")
        cmd = ["nbdkit", "--exit-with-parent", "-f", "-U", sock, "file", path]
        self.commands["nbdkit"] = shlex.join(cmd)
        p = self.procs.start(cmd, log_path=os.path.join(d, "nbdkit.log"))
        wait_for(lambda: os.path.exists(sock), 10, "nbdkit did not create its socket", p)
        self.results[name]["engine"] = "nbd"
        self.measure(name, ["--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}"], {"nbdkit": p.pid})
        self.procs.stop(p)

    def run_qemu_nbd(self, name, d):
        """qemu-nbd with O_DIRECT (--cache=none) and io_uring; native AIO if io_uring is refused."""
        path = os.path.join(d, "qemu-nbd.img")
        with open(path, "wb") as f:
            f.truncate(self.file_size)
        sock = os.path.join(self.sock_dir(d), "qemu-nbd.sock")
        logp = os.path.join(d, "qemu-nbd.log")
        self.results[name]["logs"] = [logp]
        p = None
        for aio in ("io_uring", "native"):
            cmd = ["qemu-nbd", "--cache=none", f"--aio={aio}", "--format=raw", "--persistent", "--shared=8",
                   f"--socket={sock}", path]
            p = self.procs.start(cmd, log_path=logp)
            try:
                wait_for(lambda: os.path.exists(sock), 10, f"qemu-nbd --aio={aio} did not create its socket", p)
                break
            except Failure as e:
                self.procs.stop(p)
                if aio == "native":
                    raise
                why = tail(logp, 3).strip() or str(e)
                self.notes.append(f"qemu-nbd refused `--aio=io_uring` ({why}); it ran with `--aio=native`.")
                log(f"  qemu-nbd: --aio=io_uring refused ({why}); falling back to --aio=native")
                if os.path.exists(sock):
                    os.unlink(sock)
        self.commands["qemu-nbd"] = shlex.join(p.cmdline)
        self.results[name]["aio"] = aio
        self.results[name]["engine"] = "nbd"
        self.measure(name, ["--ioengine=nbd", f"--uri=nbd+unix:///?socket={sock}"], {"qemu-nbd": p.pid})
        self.procs.stop(p)

    def run_threads_engine(self, name, d):
        """hast standalone with the fallback disk engine (a thread pool, where io_uring is refused)."""
        return self.run_standalone(name, d, hastd_args=("--io-engine", "threads"))

    def run_standalone(self, name, d, extra="", size=None, hastd_args=()):
        res = "bench"
        s = self.sock_dir(d)
        conf = os.path.join(d, "hast.conf")
        text = f"""control uds://{s}/ctl
pidfile {d}/hastd.pid
resource {res} {{
{extra}  local {d}/{res}.img
  nbd uds://{s}/{res}.nbd
  on nodeA {{
    remote none
  }}
}}
"""
        with open(conf, "w") as f:
            f.write(text)
        self.commands.setdefault("hast.conf (standalone)", text)
        self.ctl(conf, "nodeA", "create", "-m", str(size or self.file_size), res)
        p = self.start_hastd(conf, "nodeA", os.path.join(d, "nodeA.log"), hastd_args)
        self.commands.setdefault("hastd" + (" (threads engine)" if hastd_args else ""), shlex.join(p.cmdline))
        self.ctl(conf, "nodeA", "role", "primary", res)
        target = ["--ioengine=nbd", f"--uri=nbd+unix:///{res}?socket={s}/{res}.nbd"]
        counters = lambda: self.listj(conf, "nodeA", res)["counters"]  # noqa: E731
        if name is None:  # used by the profile
            return p, conf, target, counters
        self.results[name]["engine"] = "nbd"
        self.results[name]["logs"] = [os.path.join(d, "nodeA.log")]
        self.measure(name, target, {"A": p.pid}, counters=counters)
        self.stop_hastd(p, name)

    def run_pair(self, name, mode, delay):
        d = self.results[name]["dir"]
        res = "bench"
        port_a, port_b = free_port(), free_port()
        remote_a = port_b
        if delay != "direct":
            relay, remote_a, _ = self.start_relay(port_b, delay, d, "relay")
            self.commands.setdefault("relay", shlex.join(relay.cmdline))
        conf, text = self.pair_config(d, res, mode, port_a, port_b, remote_a)
        self.commands.setdefault("hast.conf (pair)", text)
        self.ctl(conf, "nodeA", "create", "-m", str(self.file_size), res)
        self.ctl(conf, "nodeB", "create", "-m", str(self.file_size), res)
        b = self.start_hastd(conf, "nodeB", os.path.join(d, "nodeB.log"))
        a = self.start_hastd(conf, "nodeA", os.path.join(d, "nodeA.log"))
        self.results[name]["logs"] = [os.path.join(d, "nodeA.log"), os.path.join(d, "nodeB.log")]
        self.ctl(conf, "nodeB", "role", "secondary", res)
        self.ctl(conf, "nodeA", "role", "primary", res)
        self.wait_status(conf, "nodeA", res, "complete", 30)
        self.results[name]["engine"] = "nbd"
        target = ["--ioengine=nbd", f"--uri=nbd+unix:///{res}?socket={self.sock_dir(d)}/a.nbd"]
        counters = lambda: self.listj(conf, "nodeA", res)["counters"]  # noqa: E731
        drain = lambda: self.wait_drained(conf, res, 120)  # noqa: E731
        self.measure(name, target, {"A": a.pid, "B": b.pid}, counters=counters, drain=drain)
        # The primary first: it drains and waits for the secondary's last replies.
        self.stop_hastd(a, name + " nodeA")
        self.stop_hastd(b, name + " nodeB")

    def run_contenders(self):
        for name, fn, _ in self.contenders():
            d = os.path.join(self.work, slug(name))
            os.makedirs(d, exist_ok=True)
            self.order.append(name)
            self.results[name] = {"workloads": {}, "dir": d, "error": None, "engine": "?"}
            log(f"{name}")
            t0 = time.monotonic()
            before = set(self.procs.live)
            try:
                if fn in (self.run_raw, self.run_nbdkit, self.run_qemu_nbd, self.run_standalone,
                          self.run_threads_engine):
                    fn(name, d)
                else:
                    fn()
            except Failure as e:
                self.fail(name, str(e))
            except (OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
                self.fail(name, f"{type(e).__name__}: {e}")
            finally:
                for p in [p for p in self.procs.live if p not in before]:
                    self.procs.stop(p)
                self.results[name]["seconds"] = time.monotonic() - t0
                shutil.rmtree(d, ignore_errors=True)

    def log_tails(self, name, n=6):
        detail = ""
        for lp in self.results[name].get("logs", []):
            t = tail(lp, n).strip()
            if t:
                detail += f"\n{os.path.basename(lp)}:\n{t}"
        return detail

    def keep_logs(self, name, what):
        dst = os.path.join(os.path.abspath(self.args.keep_logs), f"{slug(name)}-{what}")
        os.makedirs(dst, exist_ok=True)
        for lp in self.results[name].get("logs", []):
            if os.path.exists(lp):
                shutil.copy(lp, dst)

    def fail(self, name, msg):
        detail = self.log_tails(name)
        if self.args.keep_logs:
            self.keep_logs(name, "failed")
        self.results[name]["error"] = msg
        self.results[name]["error_log"] = detail
        log(f"  {name} FAILED: {msg}{detail}")

    # ---- loopback round trip ----
    def measure_rtt(self):
        """Median round trip of a 4 KiB request and an 80-byte reply, direct and via the relay at each
        delay this run's pairs use."""
        used = {c[2] for c in self.contenders() if c[2] is not None}
        for delay in [d for d in DELAYS if d == "direct" or d in used]:
            d = os.path.join(self.work, f"rtt-{delay}")
            os.makedirs(d, exist_ok=True)
            echo = None
            relay = None
            try:
                echo = self.procs.start([sys.executable, os.path.join(HERE, "tcpcopy.py"), "echo"],
                                        stdout=subprocess.PIPE)
                port = int(read_first_line(echo))
                if delay != "direct":
                    relay, port, _ = self.start_relay(port, delay, d, "relay")
                s = socket.create_connection(("127.0.0.1", port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                msg = b"x" * 4096
                samples = []
                n = (50 if delay == 5.0 else 300) // (3 if self.quick else 1)
                for _ in range(n):
                    t = time.perf_counter()
                    s.sendall(msg)
                    got = 0
                    while got < 80:
                        b = s.recv(80 - got)
                        if not b:
                            raise Failure("echo closed")
                        got += len(b)
                    samples.append((time.perf_counter() - t) * 1e6)
                s.close()
                self.rtt[delay] = statistics.median(samples)
            except (Failure, OSError, ValueError) as e:
                self.rtt[delay] = None
                self.notes.append(f"round-trip measurement ({delay}) failed: {e}")
            finally:
                for p in (relay, echo):
                    if p:
                        self.procs.stop(p)
                shutil.rmtree(d, ignore_errors=True)

    # ---- resync ----
    def run_resync(self):
        d = os.path.join(self.work, "resync")
        os.makedirs(d, exist_ok=True)
        res = "bench"
        logs = [os.path.join(d, "nodeA.log"), os.path.join(d, "nodeB.log")]
        a = b = None
        try:
            port_a, port_b = free_port(), free_port()
            relay, relay_port, stats = self.start_relay(port_b, 0, d, "relay")
            conf, _ = self.pair_config(d, res, "memsync", port_a, port_b, relay_port)
            size = (max(self.resync_sizes) + (8 if self.quick else 64)) * MiB
            self.ctl(conf, "nodeA", "create", "-m", str(size), res)
            self.ctl(conf, "nodeB", "create", "-m", str(size), res)
            b = self.start_hastd(conf, "nodeB", logs[1])
            a = self.start_hastd(conf, "nodeA", logs[0])
            self.ctl(conf, "nodeB", "role", "secondary", res)
            self.ctl(conf, "nodeA", "role", "primary", res)
            self.wait_status(conf, "nodeA", res, "complete", 30)
            target = ["--ioengine=nbd", f"--uri=nbd+unix:///{res}?socket={self.sock_dir(d)}/a.nbd"]
            for i, dm in enumerate(self.resync_sizes):
                row = {"mib": dm}
                self.resync.append(row)
                try:
                    log(f"resync {dm} MiB")
                    self.stop_hastd(b, "resync nodeB")
                    self.wait_status(conf, "nodeA", res, "degraded", 30)
                    wl = {"key": "resync-write", "rw": "write", "bs": "1M", "iodepth": 8}
                    # Each round writes a fresh range so that only its own extents are dirty.
                    self.fio(target, wl, f"resync-{dm}", size=f"{dm}M", time_based=False)
                    st = self.listj(conf, "nodeA", res)
                    row["dirty_bytes"] = st["dirty_bytes"]
                    w0 = read_json(stats)
                    md0 = st["counters"]["activemap_updates"]
                    cpu0 = cpu_seconds(a.pid)
                    # Peak RSS during the resync: nodeA's high-water mark is reset here (it has run
                    # since the first round); nodeB's covers its life, which starts here.
                    row["rss_a_reset"] = reset_peak_rss(a.pid)
                    b = self.start_hastd(conf, "nodeB", logs[1])
                    cpub0 = cpu_seconds(b.pid)
                    t0 = time.monotonic()
                    self.ctl(conf, "nodeB", "role", "secondary", res)
                    rate = 0
                    t_conn = None
                    end = time.monotonic() + max(120, dm / 5)
                    while True:
                        st = self.listj(conf, "nodeA", res)
                        if st["connected"] and t_conn is None:
                            t_conn = time.monotonic()
                        if st["sync"].get("bytes_per_second"):
                            rate = max(rate, st["sync"]["bytes_per_second"])
                        if st["status"] == "complete":
                            break
                        if time.monotonic() > end:
                            raise Failure(f"no 'complete' within {end - t0:.0f}s (dirty {st['dirty_bytes']}, "
                                          f"sync {st['sync']})")
                        time.sleep(0.01)
                    row["connect_s"] = (t_conn or time.monotonic()) - t0
                    row["md_a"] = st["counters"]["activemap_updates"] - md0
                    try:
                        row["md_b"] = self.listj(conf, "nodeB", res)["counters"]["activemap_updates"]
                    except (Failure, subprocess.TimeoutExpired, ValueError, KeyError):
                        row["md_b"] = None
                    row["seconds"] = time.monotonic() - t0
                    row["cpu_s"] = (cpu_seconds(a.pid) - cpu0) + (cpu_seconds(b.pid) - cpub0)
                    self.peaks_and_wire(row, a, b, stats, w0)
                    row["reported_rate"] = rate
                    row["transfer_s"] = row["seconds"] - row["connect_s"]
                    row["mibs"] = dm / row["transfer_s"] if row["transfer_s"] > 0 else None
                    log(f"  resync {dm} MiB: {row['seconds']:.2f}s ({row['connect_s']:.2f}s to connect), "
                        f"{row['mibs'] or 0:.0f} MiB/s, dirty "
                        f"{row['dirty_bytes'] / MiB:.1f} MiB, wire {row['wire_up'] / MiB:.1f} MiB up")
                except Failure as e:
                    row["error"] = str(e)
                    log(f"  resync {dm} MiB FAILED: {e}")
                    if b is None or b.poll() is not None:
                        b = self.start_hastd(conf, "nodeB", logs[1])
                        self.ctl(conf, "nodeB", "role", "secondary", res)
                # The baseline: the same number of bytes over a plain TCP connection.
                for via in ("direct", "relay"):
                    try:
                        row[f"tcp_{via}_s"] = self.tcp_copy(dm * MiB, d, via == "relay")
                    except Failure as e:
                        row[f"tcp_{via}_s"] = None
                        self.notes.append(f"TCP copy of {dm} MiB ({via}) failed: {e}")
                # And what the disk allows: the same bytes copied from nodeA's provider to a
                # scratch file beside it, O_DIRECT both ways (both nodes share this disk here).
                try:
                    row["disk_copy_s"] = self.disk_copy(os.path.join(d, "a.img"), dm * MiB, d)
                except Failure as e:
                    row["disk_copy_s"] = None
                    self.notes.append(f"disk copy of {dm} MiB failed: {e}")
            # The same resync again, with a client writing through the primary meanwhile.
            b = self.resync_under_load(conf, res, a, b, target, stats, logs)
            self.stop_hastd(a, "resync nodeA")
            a = None
            self.stop_hastd(b, "resync nodeB")
            b = None
        except Failure as e:
            detail = "".join(f"\n{os.path.basename(lp)}:\n{tail(lp, 6).strip()}" for lp in logs)
            self.resync_error = f"{e}{detail}"
            log(f"resync FAILED: {e}{detail}")
        finally:
            for p in (a, b):
                if p:
                    self.procs.stop(p)
            shutil.rmtree(d, ignore_errors=True)

    def client_fio_cmd(self, target, tag, size, runtime):
        """4k random writes at QD1 (the client of the loaded resync), every completion logged with
        its Unix time (`--log_unix_epoch`) so that the latencies can be cut to a time window."""
        out = os.path.join(self.work, f"fio-{tag}.json")
        prefix = os.path.join(self.work, f"lat-{tag}")
        cmd = ["fio", f"--name={tag}", *target, "--rw=randwrite", "--bs=4k", "--iodepth=1", "--direct=1",
               f"--size={size}", "--time_based", f"--runtime={int(runtime * 1000)}ms", "--randrepeat=0",
               f"--write_lat_log={prefix}", "--log_unix_epoch=1", "--output-format=json", f"--output={out}"]
        if self.quick:
            cmd.append("--clocksource=clock_gettime")
        return cmd, out, f"{prefix}_clat.1.log"

    def client_fio_end(self, p, out, clat, tag, t_from=None, t_to=None):
        """Waits for (or, if it still runs, interrupts) the client fio; its latencies in the window."""
        if p.poll() is None:
            self.procs.stop(p, signal.SIGINT, timeout=30.0)
        else:
            self.procs.stop(p)
        try:
            with open(out) as f:
                text = f.read()
            job = json.loads(text[text.index("{"):])["jobs"][0]
        except (OSError, ValueError):
            raise Failure(f"client fio ({tag}) exited {p.returncode} without a JSON report: "
                          + tail(os.path.join(self.work, f"fio-{tag}.log"), 5).strip())
        if job.get("error"):
            raise Failure(f"client fio ({tag}) failed with error {job['error']}: "
                          + tail(os.path.join(self.work, f"fio-{tag}.log"), 5).strip())
        try:
            samples = read_clat_log(clat, t_from, t_to)
        except (OSError, ValueError) as e:
            raise Failure(f"client fio ({tag}): cannot read its latency log: {e}")
        row = lat_stats(samples)
        seconds = (t_to - t_from) if t_from is not None and t_to is not None else job["write"]["runtime"] / 1000.0
        row["seconds"] = seconds
        row["iops"] = row["n"] / seconds if seconds > 0 else None
        row["fio_writes"] = job["write"]["total_ios"]
        return row

    def resync_under_load(self, conf, res, a, b, target, stats, logs):
        """The largest resync again while fio writes 4k blocks at QD1 through the primary, against
        the same client on the same pair while `complete` just before. Returns nodeB's process."""
        dm = max(self.resync_sizes)
        row = {"mib": dm}
        self.resync_load = row
        runtime = max(self.runtime, 1.0)
        try:
            log(f"resync {dm} MiB under a 4k QD1 client writer")
            self.wait_status(conf, "nodeA", res, "complete", 60, drained=True)
            # Baseline: the client alone on the complete pair.
            cmd, out, clat = self.client_fio_cmd(target, "client-complete", f"{dm}M", runtime)
            self.commands.setdefault("fio client writer (resync under load)", shlex.join(cmd))
            p = self.procs.start(cmd, log_path=os.path.join(self.work, "fio-client-complete.log"))
            try:
                p.wait(runtime + 120)
            except subprocess.TimeoutExpired:
                pass
            row["baseline"] = self.client_fio_end(p, out, clat, "client-complete")
            self.wait_drained(conf, res, 120)
            # The outage and its dirty extents, as in the rows above.
            self.stop_hastd(b, "resync nodeB")
            b = None
            self.wait_status(conf, "nodeA", res, "degraded", 30)
            wl = {"key": "resync-write", "rw": "write", "bs": "1M", "iodepth": 8}
            self.fio(target, wl, f"resync-load-{dm}", size=f"{dm}M", time_based=False)
            st = self.listj(conf, "nodeA", res)
            row["dirty_bytes"] = st["dirty_bytes"]
            s0 = st["synced_bytes"]
            row["rss_a_reset"] = reset_peak_rss(a.pid)
            # The client starts before the secondary comes back (fio takes a while to start); only
            # its writes completed between the connection and `complete` count.
            cmd, out, clat = self.client_fio_cmd(target, "client-resync", f"{dm}M", 3600)
            p = self.procs.start(cmd, log_path=os.path.join(self.work, "fio-client-resync.log"))
            t_conn_wall = t_done_wall = None
            try:
                c0 = st["counters"]["writes"]
                wait_for(lambda: self.listj(conf, "nodeA", res)["counters"]["writes"] > c0, 30,
                         "the client fio did not start writing", p)
                w0 = read_json(stats)
                b = self.start_hastd(conf, "nodeB", logs[1])
                t0 = time.monotonic()
                self.ctl(conf, "nodeB", "role", "secondary", res)
                t_conn = None
                end = time.monotonic() + max(300, dm / 2)
                while True:
                    st = self.listj(conf, "nodeA", res)
                    if st["connected"] and t_conn is None:
                        t_conn, t_conn_wall = time.monotonic(), time.time()
                    if st["status"] == "complete":
                        t_done, t_done_wall = time.monotonic(), time.time()
                        break
                    if p.poll() is not None:
                        raise Failure(f"the client fio exited ({p.returncode}) during the resync")
                    if time.monotonic() > end:
                        raise Failure(f"no 'complete' within {end - t0:.0f}s under the client writer "
                                      f"(dirty {st['dirty_bytes']}, sync {st['sync']})")
                    time.sleep(0.01)
            except BaseException:
                self.procs.stop(p, signal.SIGINT)
                raise
            client = self.client_fio_end(p, out, clat, "client-resync", t_conn_wall, t_done_wall)
            row["client"] = client
            row["connect_s"] = t_conn - t0
            row["transfer_s"] = t_done - t_conn
            row["mibs"] = dm / row["transfer_s"] if row["transfer_s"] > 0 else None
            row["synced_bytes"] = st["synced_bytes"] - s0
            self.peaks_and_wire(row, a, b, stats, w0)
            base = row["baseline"]
            log(f"  resync {dm} MiB under load: {row['transfer_s']:.2f}s, {row['mibs'] or 0:.0f} MiB/s; client "
                f"{client['n']} writes, p50 {fmt_us(client['p50'])} p99 {fmt_us(client['p99'])} max "
                f"{fmt_us(client['max'])} (complete: p50 {fmt_us(base['p50'])} p99 {fmt_us(base['p99'])} max "
                f"{fmt_us(base['max'])})")
        except Failure as e:
            row["error"] = str(e)
            log(f"  resync under load FAILED: {e}")
        if b is None or b.poll() is not None:
            if b is not None:
                self.procs.stop(b)
            b = self.start_hastd(conf, "nodeB", logs[1])
            self.ctl(conf, "nodeB", "role", "secondary", res)
        return b

    @staticmethod
    def peaks_and_wire(row, a, b, stats, w0):
        """Both hastd's peak RSS, and the bytes the relay forwarded since the counters `w0`."""
        row["rss_a_kib"] = peak_rss_kib(a.pid)
        row["rss_b_kib"] = peak_rss_kib(b.pid)
        time.sleep(0.3)  # the relay writes its counters every 50 ms
        w1 = read_json(stats)
        row["wire_up"] = w1["up"] - w0["up"]
        row["wire_down"] = w1["down"] - w0["down"]

    def disk_copy(self, src, nbytes, d):
        """Seconds for `dd` to copy nbytes of src to a scratch file in d, O_DIRECT both ways, 2 MiB
        blocks (the resync's extent): the disk's own bound for a copy on this machine."""
        dst = os.path.join(d, "disk-copy.img")
        try:
            t0 = time.monotonic()
            r = subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=2M", f"count={nbytes // (2 * MiB)}",
                                "iflag=direct", "oflag=direct", "status=none"],
                               capture_output=True, text=True, timeout=300)
            seconds = time.monotonic() - t0
            if r.returncode != 0:
                raise Failure(r.stderr.strip()[-300:])
            return seconds
        finally:
            if os.path.exists(dst):
                os.unlink(dst)

    def tcp_copy(self, nbytes, d, via_relay):
        sink = self.procs.start([sys.executable, os.path.join(HERE, "tcpcopy.py"), "sink"],
                                stdout=subprocess.PIPE)
        relay = None
        try:
            port = int(read_first_line(sink))
            if via_relay:
                relay, port, _ = self.start_relay(port, 0, d, "copy-relay")
            r = subprocess.run([sys.executable, os.path.join(HERE, "tcpcopy.py"), "send", f"127.0.0.1:{port}",
                                str(nbytes)], capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise Failure(r.stderr.strip()[-300:])
            v = json.loads(r.stdout)
            if v.get("bytes") != nbytes:
                raise Failure(f"sink got {v.get('bytes')} of {nbytes} bytes")
            return v["sender_seconds"]
        finally:
            for p in (relay, sink):
                if p:
                    self.procs.stop(p)

    # ---- verify ----
    def run_verify(self):
        """`hastctl verify` of a complete memsync pair (through the relay, which counts the bytes) holding
        random data, against sequential O_DIRECT reads of the raw provider files: one alone, and both at
        once (the two nodes' files share one disk here, as the verify's two reads do)."""
        d = os.path.join(self.work, "verify")
        os.makedirs(d, exist_ok=True)
        res = "bench"
        logs = [os.path.join(d, "nodeA.log"), os.path.join(d, "nodeB.log")]
        v = {"mib": 16 if self.quick else 1024}
        self.verify = v
        a = b = relay = None
        try:
            log(f"verify {v['mib']} MiB")
            port_a, port_b = free_port(), free_port()
            relay, relay_port, stats = self.start_relay(port_b, 0, d, "relay")
            conf, _ = self.pair_config(d, res, "memsync", port_a, port_b, relay_port)
            # A media size of data + metadata, so that the data region is exactly the size asked for.
            want = v["mib"] * MiB
            self.ctl(conf, "nodeA", "create", "-m", str(want), res)
            off = json.loads(self.ctl(conf, "nodeA", "dump", "--json", res))["resources"][0]["localoff"]
            os.unlink(os.path.join(d, "a.img"))
            for node in ("nodeA", "nodeB"):
                self.ctl(conf, node, "create", "-m", str(want + off), res)
            md = json.loads(self.ctl(conf, "nodeA", "dump", "--json", res))["resources"][0]
            v["datasize"], v["localoff"] = md["datasize"], md["localoff"]
            if md["datasize"] != want:
                self.notes.append(f"verify: the data region is {md['datasize']} bytes, not {want}")
            b = self.start_hastd(conf, "nodeB", logs[1])
            a = self.start_hastd(conf, "nodeA", logs[0])
            self.ctl(conf, "nodeB", "role", "secondary", res)
            self.ctl(conf, "nodeA", "role", "primary", res)
            self.wait_status(conf, "nodeA", res, "complete", 30)
            target = ["--ioengine=nbd", f"--uri=nbd+unix:///{res}?socket={self.sock_dir(d)}/a.nbd"]
            size = v["datasize"] // MiB * MiB
            fill = {"key": "verify-fill", "rw": "write", "bs": "1M", "iodepth": 8}
            self.fio(target + ["--refill_buffers"], fill, "verify-fill", size=size, time_based=False)
            warn = self.wait_drained(conf, res, 300)
            if warn:
                raise Failure(f"after writing the data: {warn}")
            # The verify, from the command to outcome `complete`.
            rss_reset = reset_peak_rss(a.pid) and reset_peak_rss(b.pid)
            cpu0 = cpu_seconds(a.pid) + cpu_seconds(b.pid)
            w0 = read_json(stats)
            t0 = time.monotonic()
            self.ctl(conf, "nodeA", "verify", res)
            end = t0 + max(300, v["mib"] / 2)
            while True:
                st = self.listj(conf, "nodeA", res)
                vs = st.get("verify")
                if vs is None:
                    raise Failure("`hastctl list --json` has no 'verify' object")
                if not vs["active"] and vs["outcome"] != "running":
                    t1 = time.monotonic()
                    break
                if time.monotonic() > end:
                    raise Failure(f"the verify did not end within {end - t0:.0f}s ({vs})")
                time.sleep(0.1)
            if vs["outcome"] != "complete":
                raise Failure(f"the verify ended with outcome {vs['outcome']!r}: {vs}")
            v["cpu_s"] = cpu_seconds(a.pid) + cpu_seconds(b.pid) - cpu0
            v["rss_a_kib"], v["rss_b_kib"] = peak_rss_kib(a.pid), peak_rss_kib(b.pid)
            v["rss_reset"] = rss_reset
            time.sleep(0.3)  # the relay writes its counters every 50 ms
            w1 = read_json(stats)
            v["seconds"] = t1 - t0
            v["mibs"] = v["datasize"] / MiB / v["seconds"]
            v["reported_bps"] = vs["bytes_per_second"]
            v["done_bytes"] = vs["done_bytes"]
            v["skipped_bytes"] = vs["skipped_bytes"]
            v["differing_blocks"] = vs["differing_blocks"]
            v["wire_up"] = w1["up"] - w0["up"]
            v["wire_down"] = w1["down"] - w0["down"]
            log(f"  verify: {v['seconds']:.2f}s, {v['mibs']:.0f} MiB/s, wire {v['wire_up'] / MiB:.2f} MiB to B / "
                f"{v['wire_down'] / MiB:.2f} MiB to A, {v['differing_blocks']} differing blocks")
            self.stop_hastd(a, "verify nodeA")
            a = None
            self.stop_hastd(b, "verify nodeB")
            b = None
        except Failure as e:
            detail = "".join(f"\n{os.path.basename(lp)}:\n{tail(lp, 6).strip()}" for lp in logs)
            v["error"] = f"{e}{detail}"
            log(f"verify FAILED: {e}{detail}")
        finally:
            for p in (a, b, relay):
                if p:
                    self.procs.stop(p)
        # The baselines: the raw provider files, read sequentially with O_DIRECT (the daemons are stopped).
        try:
            if "datasize" not in v or not os.path.exists(os.path.join(d, "b.img")):
                raise Failure("no provider files (the verify setup failed)")
            if not self.direct:
                raise Failure("the backing file system refuses O_DIRECT")
            v["read_single"] = self.read_providers(d, v, ["a"])
            v["read_both"] = self.read_providers(d, v, ["a", "b"])
            log(f"  O_DIRECT read of one provider file: {v['read_single']['mibs']:.0f} MiB/s; both at once: "
                f"{v['read_both']['mibs']:.0f} MiB/s each ({v['read_both']['seconds']:.2f}s)")
        except Failure as e:
            v["read_error"] = str(e)
            log(f"  verify baselines FAILED: {e}")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def read_providers(self, d, v, nodes):
        """Sequential 1M QD8 O_DIRECT reads of the data region of these nodes' provider files, one fio job
        per file, all at once. Returns the slowest job's time and the rate per file."""
        tag = "verify-read-" + "".join(nodes)
        out = os.path.join(self.work, f"fio-{tag}.json")
        size = v["datasize"] // MiB * MiB
        cmd = ["fio", "--ioengine=libaio", "--direct=1", "--rw=read", "--bs=1M", "--iodepth=8",
               f"--offset={v['localoff']}", f"--size={size}", "--output-format=json", f"--output={out}"]
        if self.quick:
            cmd.append("--clocksource=clock_gettime")
        for n in nodes:
            cmd += [f"--name={n}", f"--filename={os.path.join(d, n + '.img')}"]
        self.commands.setdefault(f"fio provider read ({len(nodes)} file{'s' if len(nodes) > 1 else ''})",
                                 shlex.join(cmd))
        rc = self.procs.run(cmd, 600, log_path=os.path.join(self.work, f"fio-{tag}.log"))
        try:
            with open(out) as f:
                text = f.read()
            jobs = json.loads(text[text.index("{"):])["jobs"]
        except (OSError, ValueError):
            raise Failure(f"fio exited {rc} without a JSON report: "
                          + tail(os.path.join(self.work, f"fio-{tag}.log"), 5).strip())
        if rc != 0 or len(jobs) != len(nodes) or any(j.get("error") for j in jobs):
            raise Failure(f"fio exited {rc}: " + tail(os.path.join(self.work, f"fio-{tag}.log"), 5).strip())
        if any(j["read"]["io_bytes"] != size for j in jobs):
            raise Failure(f"fio read {[j['read']['io_bytes'] for j in jobs]} bytes, not {size} per file")
        seconds = max(j["read"]["runtime"] for j in jobs) / 1000.0
        return {"seconds": seconds, "mibs": size / MiB / seconds if seconds > 0 else None,
                "jobs_mibs": [j["read"]["bw_bytes"] / MiB for j in jobs]}

    # ---- profile (default mode) ----
    def run_profile(self):
        """perf on a standalone hastd: where a QD1 write's time goes, and what
        the metadata (activemap) writes cost at QD32."""
        if not shutil.which("perf"):
            self.profile = {"error": "perf is not installed"}
            return
        qd1 = next(w for w in WORKLOADS if w["key"] == "randwrite4k_qd1")
        qd32 = next(w for w in WORKLOADS if w["key"] == "randwrite4k_qd32")
        # inside the keepdirty window (64 extents x 2 MiB): no metadata writes
        small = min(48 * MiB, self.fio_size // 2)
        cases = [
            ("qd1-small", qd1, small, "", True),
            ("qd32-full", qd32, None, "", True),
            ("qd32-small", qd32, small, "", False),
            ("qd32-full-metaflush-off", qd32, None, "  metaflush off\n", False),
        ]
        if self.quick:  # one recorded case, one with `metaflush off`: every path once
            cases = [cases[0], cases[3]]
        self.profile = {"cases": []}
        for key, wl, size, extra, record in cases:
            d = os.path.join(self.work, "profile")
            os.makedirs(d, exist_ok=True)
            p = None
            case = {"key": key, "workload": wl["title"], "size_mib": (size or self.fio_size) // MiB,
                    "metaflush": "off" not in extra}
            self.profile["cases"].append(case)
            try:
                log(f"profile: standalone {wl['key']} over {case['size_mib']} MiB"
                    + ("" if case["metaflush"] else ", metaflush off"))
                p, conf, target, counters = self.run_standalone(None, d, extra=extra)
                if not self.quick:  # --quick: the contenders' prefills already ran this path
                    self.fio(target, {"key": "prefill", "rw": "write", "bs": "1M", "iodepth": 8},
                             "profile-prefill", time_based=False)
                c0 = counters()
                cpu0 = cpu_seconds(p.pid)
                if record:
                    data = os.path.join(d, "perf.data")
                    rec = self.procs.start(["perf", "record", "-F", "1999", "-g", "-p", str(p.pid), "-o", data],
                                           log_path=os.path.join(d, "perf.log"))
                    stat_out = os.path.join(d, "perf-stat.txt")
                    pst = self.procs.start(["perf", "stat", "-e", "task-clock,context-switches,cpu-migrations",
                                            "-p", str(p.pid), "-o", stat_out],
                                           log_path=os.path.join(d, "perf-stat.log"))
                    time.sleep(0.2 if self.quick else 0.5)  # perf attaches
                row = self.fio(target, wl, f"profile-{key}", size=size)
                row.pop("cmd", None)
                cpu = cpu_seconds(p.pid) - cpu0
                c1 = counters()
                writes = max(1, c1["writes"] - c0["writes"])
                row["md_per_1k"] = 1000.0 * (c1["activemap_updates"] - c0["activemap_updates"]) / writes
                row["cpu_us_per_io"] = cpu * 1e6 / writes
                case["row"] = row
                if record:
                    self.procs.stop(pst, signal.SIGINT)
                    self.procs.stop(rec, signal.SIGINT)
                    st = parse_perf_stat(tail(stat_out, 30))
                    case["stat"] = st
                    case["ctx_per_io"] = st.get("context-switches", 0) / writes if st else None
                    case["threads"] = perf_top(data, "comm", 6)
                    case["paths"] = perf_paths(data)
                    case["top"] = perf_top(data, "dso,symbol", 12)
                self.stop_hastd(p, "profile")
                p = None
            except Failure as e:
                case["error"] = str(e)
                log(f"  profile {key} FAILED: {e}")
            finally:
                for q in [q for q in self.procs.live if q.cmdline[0] == "perf"]:
                    self.procs.stop(q, signal.SIGINT)
                if p:
                    self.procs.stop(p)
                shutil.rmtree(d, ignore_errors=True)
        self.profile["record_cmd"] = "perf record -F 1999 -g -p <hastd pid>; perf stat -e task-clock," \
                                     "context-switches,cpu-migrations -p <hastd pid>"

    # ---- main ----
    def run(self):
        t0 = time.monotonic()
        self.direct = self.probe_direct()
        self.info = self.machine()
        log(f"backing {self.work} on {self.info['fstype']}; O_DIRECT {'works' if self.direct else 'refused'}")
        self.measure_rtt()
        self.run_contenders()
        only = self.args.only
        if not only or "resync" in only:
            self.run_resync()
        if not only or "verify" in only:
            self.run_verify()
        if (not only and not self.args.no_profile) or (only and "profile" in only):
            self.run_profile()
        self.elapsed = time.monotonic() - t0
        import report
        report.write(self, self.args.out)

    def cleanup(self):
        self.procs.stop_all()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.socks, ignore_errors=True)


# --- small helpers -------------------------------------------------------------------------

def run_text(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def read_json(path):
    for _ in range(50):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.05)
    raise Failure(f"cannot read {path}")


def wait_for(cond, timeout, msg, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise Failure(f"{msg} (it exited with status {proc.returncode})")
        time.sleep(0.05)
    raise Failure(msg)


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def fmt_us(v):
    return "-" if v is None else f"{v:.0f}us"


def parse_perf_stat(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,.]+)\s+(msec\s+)?([\w-]+)", line)
        if m and m.group(3) in ("task-clock", "context-switches", "cpu-migrations", "page-faults"):
            out[m.group(3)] = float(m.group(1).replace(",", ""))
    return out


def perf_top(data, sort, n):
    """[(percent, name)] of `perf report --sort <sort>`, self time, biggest first."""
    txt = run_text_long(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                         "--percent-limit", "0.5", "--sort", sort])
    rows = []
    for line in txt.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if not m:
            continue
        parts = [x for x in re.split(r"\s{2,}|\s+(?=\[[.k]\])", m.group(2)) if x and x != "-"]
        parts = [re.sub(r"(\s+-)+$", "", x).strip() for x in parts]
        if sort == "dso,symbol" and len(parts) >= 2:
            sym = re.sub(r"^\[[.k]\]\s*", "", parts[-1])
            name = f"{sym} ({os.path.basename(parts[0])})"
        else:
            name = " ".join(parts)
        rows.append((float(m.group(1)), name))
    return rows[:n]


def perf_paths(data):
    """Share of hastd's samples spent under a few entry points (callees included)."""
    txt = run_text_long(["perf", "report", "-i", data, "--stdio", "--children", "-g", "none",
                         "--sort", "symbol", "--percent-limit", "0.2"])
    keys = {"pwrite (data and metadata writes)": ("__x64_sys_pwrite64",),
            "fdatasync (metadata flush)": ("__x64_sys_fdatasync",),
            "futex (thread hand-offs: wake and wait)": ("__x64_sys_futex",),
            "clock_nanosleep (CAF scheduler polling)": ("__x64_sys_clock_nanosleep",),
            "io_uring_enter (disk submit and reap)": ("__x64_sys_io_uring_enter",),
            "epoll_wait / epoll_ctl (asio)": ("__x64_sys_epoll_wait", "__x64_sys_epoll_ctl"),
            "socket send / receive, eventfd (NBD, asio)": ("__x64_sys_sendmsg", "__x64_sys_recvfrom",
                                                           "__x64_sys_recvmsg", "__x64_sys_sendto",
                                                           "__x64_sys_write", "__x64_sys_read")}
    out = {}
    for line in txt.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(\S+)", line)
        if not m:
            continue
        for k, syms in keys.items():
            if m.group(3) in syms:
                out[k] = out.get(k, 0.0) + float(m.group(1))
    return out


def run_text_long(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="every code path once: small sizes, 0.2 s per workload, two pairs (< 1 minute)")
    ap.add_argument("--build", default=os.path.join(REPO, "build"), help="directory with hastd and hastctl")
    ap.add_argument("--backing", help="directory for the backing files (default: a temp dir under /var/tmp)")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "BENCHMARKS.md"),
                    help="the Markdown report; the chart goes next to it as benchmarks.png")
    ap.add_argument("--runtime", type=float, help="seconds per workload (default 5, --quick 0.2)")
    ap.add_argument("--only", nargs="*", help="debugging: only contenders whose name contains one of these, "
                                              "and the resync / verify / profile phases only if named ('resync', "
                                              "'verify', 'profile')")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the daemon logs of failed contenders here")
    ap.add_argument("--no-profile", action="store_true", help="skip the perf profile")
    args = ap.parse_args()
    for tool in ("fio", "nbdkit", "qemu-nbd"):
        if not shutil.which(tool):
            print(f"run.py: {tool} is not installed (scripts/bootstrap.sh --all installs it)", file=sys.stderr)
            return 1
    for prog in ("hastd", "hastctl"):
        if not os.access(os.path.join(args.build, prog), os.X_OK):
            print(f"run.py: {os.path.join(args.build, prog)} not found; build first or pass --build DIR",
                  file=sys.stderr)
            return 1

    def on_signal(sig, _frame):
        raise Interrupted(signal.Signals(sig).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bench = Bench(args)
    try:
        bench.run()
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\nrun.py: interrupted ({str(e) or 'SIGINT'}); stopping everything it started", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()
    log(f"report: {args.out} ({bench.elapsed:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
