#!/usr/bin/env python3
"""The checksum resync (`resync-checksum on`) against the plain resync.

    bench/resync_checksum.py [--build DIR] [--size-mib N] [--rate-mib R] [--out FILE]

A memsync pair on loopback (nodeA primary, nodeB secondary), one resource
whose data region is --size-mib (default 1024) in 2 MiB extents, filled with
random data. For each link (direct; through tests/integration/lib/relay.py limited to
--rate-mib MiB/s each way, default 100, a link slower than the disk), each
share of differing 4 KiB blocks (1 %, 10 %, 100 %) and each variant (plain,
checksum), one outage: nodeB stops, the whole data region is written again
through nodeA's export (nbdcopy) with that share of its blocks changed (so
every extent is dirty), nodeB comes back as secondary, and nodeA's own
"synchronization complete" line gives the resync's time and the bytes it
moved; through the relay its counters give the bytes on the wire (both
directions: data, digests, headers). At the end both providers' data regions
are compared. Nothing here is a test; the report goes to --out (Markdown).
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
BLOCK = 4096
HERE = os.path.dirname(os.path.abspath(__file__))
# The relay (delay, bandwidth, byte counters) is the one the integration tests use.
RELAY = os.path.join(HERE, os.pardir, "tests", "integration", "lib", "relay.py")
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests", "integration", "lib"))
from ports import free_port  # noqa: E402




class Pair:
    def __init__(self, build, work, size_mib):
        self.build, self.work = build, work
        self.pa, self.pb = free_port(), free_port()
        self.procs = {}
        self.relay = None
        self.remote = self.pb
        self.checksum = "off"
        self.size_mib = size_mib

    def conf(self):
        d = self.work
        text = f"""on nodeA {{
  control uds://{d}/a.ctl
  pidfile {d}/a.pid
  listen tcp://127.0.0.1:{self.pa}
}}
on nodeB {{
  control uds://{d}/b.ctl
  pidfile {d}/b.pid
  listen tcp://127.0.0.1:{self.pb}
}}
resource r {{
  replication memsync
  device off
  resync-checksum {self.checksum}
  on nodeA {{
    local {d}/a.img
    remote tcp://127.0.0.1:{self.remote}
    nbd uds://{d}/a.nbd
  }}
  on nodeB {{
    local {d}/b.img
    remote tcp://127.0.0.1:{self.pa}
    nbd uds://{d}/b.nbd
  }}
}}
"""
        with open(os.path.join(d, "hast.conf"), "w") as f:
            f.write(text)

    def ctl(self, node, *args, check=True):
        cmd = [os.path.join(self.build, "hastctl"), "-c", os.path.join(self.work, "hast.conf"),
               "-n", node] + list(args)
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def log(self, node):
        return os.path.join(self.work, node + ".log")

    def start(self, node):
        out = open(self.log(node), "a")
        p = subprocess.Popen([os.path.join(self.build, "hastd"), "-F", "-c",
                              os.path.join(self.work, "hast.conf"), "-n", node],
                             stdout=out, stderr=subprocess.STDOUT)
        self.procs[node] = p
        for _ in range(100):
            if self.ctl(node, "status", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"hastd {node} did not start")

    def stop(self, node):
        p = self.procs.pop(node)
        p.send_signal(signal.SIGTERM)
        p.wait(60)

    def wait_status(self, word, secs=600):
        end = time.time() + secs
        while time.time() < end:
            out = self.ctl("nodeA", "status", "r", check=False).stdout
            if re.search(r"^r\s+" + word, out, re.M):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nodeA did not reach {word}")

    def reload(self, **changes):
        for k, v in changes.items():
            setattr(self, k, v)
        self.conf()
        marks = open(self.log("nodeA")).read().count("] configuration reloaded:")
        self.procs["nodeA"].send_signal(signal.SIGHUP)
        end = time.time() + 30
        while open(self.log("nodeA")).read().count("] configuration reloaded:") <= marks:
            if time.time() > end:
                raise RuntimeError("nodeA did not reload")
            time.sleep(0.05)

    def start_relay(self, rate_mib):
        stats = os.path.join(self.work, "relay.json")
        self.relay = subprocess.Popen([sys.executable, RELAY,
                                       "--target", f"127.0.0.1:{self.pb}",
                                       "--rate-mib", str(rate_mib), "--stats", stats],
                                      stdout=subprocess.PIPE, text=True)
        return int(self.relay.stdout.readline()), stats

    def close(self):
        for node in list(self.procs):
            try:
                self.stop(node)
            except Exception:
                self.procs.get(node) and self.procs[node].kill()
        if self.relay:
            self.relay.terminate()
            self.relay.wait()


def relay_bytes(stats):
    with open(stats) as f:
        j = json.load(f)
    return j["up"] + j["down"]


def plant(path, datasize, share, rng):
    """Changes `share` of the 4 KiB blocks of `path` (all of them for 1.0)."""
    blocks = datasize // BLOCK
    with open(path, "r+b") as f:
        if share >= 1.0:
            for at in range(0, datasize, MiB):
                f.seek(at)
                f.write(os.urandom(min(MiB, datasize - at)))
            return datasize
        chosen = rng.sample(range(blocks), int(round(blocks * share)))
        for b in chosen:
            f.seek(b * BLOCK)
            f.write(os.urandom(BLOCK))
        return len(chosen) * BLOCK


def last_sync(pair):
    lines = [l for l in open(pair.log("nodeA")) if "r: synchronization complete:" in l]
    m = re.search(r"complete: (\d+) bytes in ([\d.]+) s \((\d+) bytes moved, (\d+) found identical",
                  lines[-1])
    return {"bytes": int(m[1]), "seconds": float(m[2]), "moved": int(m[3]), "identical": int(m[4])}


def outage(pair, data, datasize, share, rng, stats):
    pair.stop("nodeB")
    pair.wait_status("degraded", 60)
    differing = plant(data, datasize, share, rng)
    uri = f"nbd+unix:///r?socket={pair.work}/a.nbd"
    subprocess.run(["nbdcopy", data, uri], check=True)
    before = relay_bytes(stats) if stats else 0
    t0 = time.time()
    pair.start("nodeB")
    pair.ctl("nodeB", "role", "secondary", "r")
    pair.wait_status("complete")
    row = last_sync(pair)
    row["wall"] = time.time() - t0
    time.sleep(0.3)  # the relay writes its counters every 50 ms
    row["differing"] = differing
    row["wire"] = relay_bytes(stats) - before if stats else None
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rate-mib", type=float, default=100.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    work = tempfile.mkdtemp(prefix="hast-rcsum.", dir="/var/tmp")
    pair = Pair(build, work, a.size_mib)
    rng = random.Random(1)
    rows = []
    try:
        pair.conf()
        for node in ("nodeA", "nodeB"):
            pair.ctl(node, "create", "-m", f"{a.size_mib + 8}M", "r")
        pair.start("nodeA")
        pair.start("nodeB")
        pair.ctl("nodeB", "role", "secondary", "r")
        pair.ctl("nodeA", "role", "primary", "r")
        pair.wait_status("complete", 60)
        dump = json.loads(pair.ctl("nodeA", "dump", "--json", "r").stdout)["resources"][0]
        datasize = min(dump["datasize"], a.size_mib * MiB)
        data = os.path.join(work, "data")
        with open(data, "wb") as f:
            f.truncate(datasize)
        plant(data, datasize, 1.0, rng)
        subprocess.run(["nbdcopy", data, f"nbd+unix:///r?socket={work}/a.nbd"], check=True)
        pair.wait_status("complete", 120)
        port, stats = pair.start_relay(a.rate_mib)
        for link in ("direct", f"relay {a.rate_mib:g} MiB/s"):
            if link != "direct":
                pair.reload(remote=port)
                pair.wait_status("complete", 120)
            for share in (0.01, 0.10, 1.0):
                for variant in ("plain", "checksum"):
                    pair.reload(checksum="on" if variant == "checksum" else "off")
                    row = outage(pair, data, datasize, share, rng, None if link == "direct" else stats)
                    row.update(link=link, share=share, variant=variant)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        # Both copies hold the same bytes after all of it.
        same = subprocess.run(["cmp", "-s", "-n", str(datasize), "-i",
                               f"{dump['localoff']}:{dump['localoff']}",
                               os.path.join(work, "a.img"), os.path.join(work, "b.img")]).returncode == 0
    finally:
        pair.close()
        shutil.rmtree(work, ignore_errors=True)
    report(rows, a, datasize, same)


def report(rows, a, datasize, same):
    hashes = (datasize // BLOCK) * 32
    out = []
    out.append("# Benchmarks: the checksum resync\n")
    out.append(f"Generated by `/usr/bin/python3 bench/resync_checksum.py --out docs/BENCHMARKS-resync.md` "
               f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
               f"load average at the end {os.getloadavg()[0]:.1f}. Nothing here is a test.\n")
    out.append(f"A memsync pair on loopback, {datasize // MiB} MiB data region in 2 MiB extents, filled "
               "with random data. Each row is one outage: nodeB stopped, the whole region written again "
               "through nodeA with the given share of its 4 KiB blocks changed (so every extent is dirty), "
               "nodeB back as secondary. *s* and *moved* are from nodeA's `synchronization complete` line "
               "(time from the resync's start; data bytes sent between the nodes); *wire* counts every byte "
               f"the relay forwarded in both directions (data, SHA-256 digests, frame headers). "
               f"The digests of the whole region are {hashes / MiB:.1f} MiB (32 bytes per 4 KiB block). "
               "No `secret` (frames are not sealed).\n")
    out.append("| link | differing | plain s | plain moved MiB | checksum s | checksum moved MiB | "
               "plain wire MiB | checksum wire MiB | checksum wire ÷ (differing + digests) | checksum ÷ plain time |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for link in dict.fromkeys(r["link"] for r in rows):
        for share in (0.01, 0.10, 1.0):
            p = next(r for r in rows if r["link"] == link and r["share"] == share and r["variant"] == "plain")
            c = next(r for r in rows if r["link"] == link and r["share"] == share and r["variant"] == "checksum")
            wire = lambda r: "–" if r["wire"] is None else f"{r['wire'] / MiB:,.1f}"
            ratio = "–" if c["wire"] is None else f"{c['wire'] / (c['differing'] + hashes):.3f}"
            out.append(f"| {link} | {share * 100:g} % ({c['differing'] / MiB:,.1f} MiB) | {p['seconds']:.2f} | "
                       f"{p['moved'] / MiB:,.1f} | {c['seconds']:.2f} | {c['moved'] / MiB:,.1f} | {wire(p)} | "
                       f"{wire(c)} | {ratio} | {c['seconds'] / p['seconds']:.2f}× |")
    out.append("")
    out.append(f"Both providers' data regions byte-identical at the end: {'yes' if same else 'NO'}.\n")
    out.append("Command:\n\n```sh\n/usr/bin/python3 bench/resync_checksum.py "
               f"--size-mib {a.size_mib} --rate-mib {a.rate_mib:g} --out docs/BENCHMARKS-resync.md\n```\n")
    text = "\n".join(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
