#!/usr/bin/env python3
"""The chaos suite's driver: seeded trials of single faults against a hastd
pair under acked_writer.py load, each trial checked for lost acknowledged
writes, diverging data regions and a wedged daemon.

  chaos.py --build DIR [--trials N] [--seed S] [--summary FILE] [--keep DIR]

Trial i runs with seed S+i; everything it does is drawn from
random.Random(seed), so `--seed X --trials 1` replays trial X alone (the
replay line printed for a failing trial does exactly that).

A trial:
  1. a fresh pair: nodeA primary, nodeB secondary, both on loopback, the peer
     link through relay.py (two routes, so the link crosses the relay
     whichever node is primary), `timeout` TIMEOUT seconds; replication is
     fullsync, memsync or async, from the seed (seed % 8 == 7: async,
     otherwise even seeds fullsync, odd ones memsync); an async trial's
     first fault is always a kill -9 of the primary and a failover (the
     case in which async loses acknowledged writes), with the link delayed
     0, 20 or 100 ms in the second before it;
  2. acked_writer.py against the primary's NBD export;
  3. 2 or 3 single faults, one at a time: each is injected while the writer
     runs, held, healed (process continued, node restarted and given its
     role, link back to pass), and the pair must be `complete` again before
     the next one. The faults:
       kill_primary    kill -9 of the primary; then either the operator's
                       failover (`role primary` on the secondary, every
                       acknowledged write is read back from it at once, the
                       writer goes on against its export, the old primary
                       restarts and is made `role secondary`) or a restart
                       of the old primary as primary;
       kill_secondary  kill -9 of the secondary, restart, `role secondary`;
       stop_primary,   SIGSTOP of that hastd for a while (sometimes longer
       stop_secondary  than `timeout`), then SIGCONT;
       cut             the relay resets every connection and refuses new ones;
       blackhole       the relay drops every byte, old and new connections;
       delay           the relay holds every chunk 5-200 ms;
  4. the writer stops; both nodes must be `complete`, answer `hastctl
     status` within its timeout, and the final primary must return every
     acknowledged write through its export (verify_acked.py; async: the loss
     is counted, not asserted); both stop cleanly on SIGTERM and their data
     regions are byte-identical.

Prints one line per trial and, for a failing one, its seed, the reason and
the replay command; its directory (daemon, relay and writer logs, ack logs,
metadata dumps) is kept under --keep. The figures go to --summary as JSON.
Exit 0 when every trial passed, 1 otherwise.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from ports import free_port  # noqa: E402
from relay import control as relay_control  # noqa: E402

RES = "chaos"
MEDIA = "64M"
SPAN_BLOCKS = 4096           # the writer's 16 MiB
TIMEOUT = 3                  # hast.conf `timeout`, seconds
COMPLETE_WITHIN = 60         # a healed pair must be complete again within this
STABLE_S = 0.6              # `complete` must hold this long to count
STATUS_TIMEOUT = 10          # `hastctl status` must answer within this, else the daemon is wedged
ASYNC_QUEUE_BYTES = 64 << 20  # docs/DESIGN.md: async bound, bytes sent and not yet written
FAULTS = ["kill_primary", "kill_secondary", "stop_primary", "stop_secondary", "cut", "blackhole", "delay"]


def mode_of(seed):
    return "async" if seed % 8 == 7 else ("fullsync" if seed % 2 == 0 else "memsync")


class TrialFailure(Exception):
    def __init__(self, reason, wedge=False):
        super().__init__(reason)
        self.wedge = wedge




class Trial:
    def __init__(self, build, seed, root):
        self.build = build
        self.seed = seed
        self.mode = mode_of(seed)
        self.rng = random.Random("chaos/%d" % seed)
        self.t = tempfile.mkdtemp(prefix="s%d." % seed, dir=root)
        self.procs = []  # every process this trial started
        self.pid = {}  # node -> Popen of its hastd
        self.stopped = set()  # nodes under SIGSTOP
        self.primary, self.secondary = "nodeA", "nodeB"
        self.writer = None
        self.writer_runs = 0
        self.ack_args = []
        self.faults = []
        self.failovers = []  # (acked, lost) read from each promoted node
        self.wedges = 0
        self.events = open(os.path.join(self.t, "events.log"), "a")
        self.t0 = time.monotonic()

    # ---- bookkeeping ----
    def note(self, text):
        self.events.write("%8.3f %s\n" % (time.monotonic() - self.t0, text))
        self.events.flush()

    def path(self, *parts):
        return os.path.join(self.t, *parts)

    def node_dir(self, node):
        return self.path("a" if node == "nodeA" else "b")

    def start(self, cmd, log, **kw):
        out = open(log, "ab")
        p = subprocess.Popen(cmd, stdout=kw.pop("stdout", out), stderr=out, **kw)
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                except ProcessLookupError:
                    pass
        self.events.close()

    # ---- the pair ----
    def ctl(self, node, *args, timeout=STATUS_TIMEOUT, check=True):
        cmd = [os.path.join(self.build, "hastctl"), "-c", self.path("hast.conf"), "-n", node] + list(args)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.wedges += 1
            raise TrialFailure("%s: `hastctl %s` did not answer within %ds (wedged)"
                               % (node, " ".join(args), timeout), wedge=True)
        if check and r.returncode != 0:
            raise TrialFailure("%s: `hastctl %s` failed: %s" % (node, " ".join(args), r.stderr.strip()))
        return r

    def status(self, node):
        """(role, status) of the resource on NODE."""
        r = self.ctl(node, "status", "--json", RES)
        j = json.loads(r.stdout)["resources"][0]
        return j.get("role"), j.get("status")

    def write_config(self):
        self.port = {"nodeA": free_port(), "nodeB": free_port()}
        relay = self.start([sys.executable, os.path.join(HERE, "relay.py"),
                            "--route", "0:%d" % self.port["nodeB"], "--route", "0:%d" % self.port["nodeA"],
                            "--control", self.path("relay.ctl"), "--log", self.path("relay.log")],
                           self.path("relay.log"), stdout=subprocess.PIPE)
        line = relay.stdout.readline().split()
        if len(line) != 2:
            raise TrialFailure("relay.py did not start")
        via = {"nodeA": int(line[0]), "nodeB": int(line[1])}  # the relay port each node connects to
        os.makedirs(self.path("a"))
        os.makedirs(self.path("b"))
        text = ""
        for node in ("nodeA", "nodeB"):
            d = self.node_dir(node)
            text += "on %s {\n  control uds://%s/ctl.sock\n  pidfile %s/hastd.pid\n  listen tcp://127.0.0.1:%d\n}\n" \
                % (node, d, d, self.port[node])
        # No /dev/hast device: the writer goes through the NBD export, and a
        # device is a loop device, a FUSE mount and an nbdfuse process of the
        # whole machine that a primary killed with -9 leaves behind.
        text += "resource %s {\n  replication %s\n  timeout %d\n  device off\n" % (RES, self.mode, TIMEOUT)
        for node in ("nodeA", "nodeB"):
            d = self.node_dir(node)
            text += "  on %s {\n    local %s/%s.img\n    remote tcp://127.0.0.1:%d\n    nbd uds://%s/%s.nbd\n  }\n" \
                % (node, d, RES, via[node], d, RES)
        text += "}\n"
        with open(self.path("hast.conf"), "w") as f:
            f.write(text)

    def relay(self, command):
        answer = relay_control(self.path("relay.ctl"), command)
        if not answer.startswith("ok"):
            raise TrialFailure("relay: %s: %s" % (command, answer))
        self.note("relay %s" % command)

    def start_node(self, node):
        p = self.start([os.path.join(self.build, "hastd"), "-F", "-c", self.path("hast.conf"), "-n", node],
                       self.path("%s.log" % node))
        self.pid[node] = p
        self.note("start %s (pid %d)" % (node, p.pid))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise TrialFailure("hastd %s exited with %d during start-up" % (node, p.returncode))
            if self.ctl(node, "status", check=False, timeout=STATUS_TIMEOUT).returncode == 0:
                return
            time.sleep(0.05)
        raise TrialFailure("hastd %s did not answer on its control socket" % node)

    def set_role(self, node, role):
        self.ctl(node, "role", role, RES, timeout=30)
        self.note("role %s on %s" % (role, node))

    def kill9(self, node):
        p = self.pid[node]
        p.kill()
        p.wait()
        self.stopped.discard(node)
        self.note("kill -9 %s" % node)

    def signal(self, node, sig):
        os.kill(self.pid[node].pid, sig)
        if sig == signal.SIGSTOP:
            self.stopped.add(node)
        else:
            self.stopped.discard(node)
        self.note("%s %s" % (signal.Signals(sig).name, node))

    def check_alive(self):
        for node, p in self.pid.items():
            if p.poll() is not None:
                raise TrialFailure("hastd %s exited with %d (crash)" % (node, p.returncode))

    def wait_complete(self, since=None, within=COMPLETE_WITHIN):
        """Seconds from SINCE (default: now) until the pair is complete: the
        primary says complete for STABLE_S without a break, then the
        secondary says so too. The time is that of the first answer of the
        final unbroken run, so a stale `complete` (a node that has not yet
        noticed a dead link) is neither counted nor mistaken for recovery."""
        start = time.monotonic() if since is None else since
        deadline = time.monotonic() + within
        streak = None
        while True:
            self.check_alive()
            now = time.monotonic()
            role, st = self.status(self.primary)
            if st == "complete":
                streak = now if streak is None else streak
                if now - streak >= STABLE_S:
                    break
            else:
                streak = None
            if now > deadline:
                raise TrialFailure("%s (%s) still '%s' %ds after the fault was healed"
                                   % (self.primary, role, st, within))
            time.sleep(0.05)
        while True:
            role, st = self.status(self.secondary)
            if st == "complete":
                break
            if time.monotonic() > deadline:
                raise TrialFailure("%s (%s) still '%s' while %s is complete"
                                   % (self.secondary, role, st, self.primary))
            time.sleep(0.05)
        return streak - start

    def wait_holes_closed(self, within=COMPLETE_WITHIN):
        """Until both ends dropped every connection the black hole swallowed
        bytes of (each end must notice by its own timeout)."""
        deadline = time.monotonic() + within
        while True:
            answer = relay_control(self.path("relay.ctl"), "status")
            holed = int(answer.split("holed=")[1].split()[0])
            if holed == 0:
                return
            if time.monotonic() > deadline:
                raise TrialFailure("%d black-holed connection(s) still open %ds after the heal: "
                                   "an end does not notice a silent peer" % (holed, within))
            time.sleep(0.05)

    def setup(self):
        self.write_config()
        for node in ("nodeA", "nodeB"):
            subprocess.run([os.path.join(self.build, "hastctl"), "-c", self.path("hast.conf"), "-n", node,
                            "create", "-m", MEDIA, RES], check=True, capture_output=True)
        self.start_node("nodeA")
        self.start_node("nodeB")
        self.set_role("nodeB", "secondary")
        self.set_role("nodeA", "primary")
        self.wait_complete(within=30)

    # ---- the writer ----
    def acks(self):
        if self.writer is None:
            return 0
        try:
            with open(self.writer["ack"]) as f:
                return sum(1 for line in f if not line.startswith("#"))
        except OSError:
            return 0

    def start_writer(self):
        self.writer_runs += 1
        n = self.writer_runs
        ack, issued, out = self.path("ack.%d" % n), self.path("issued.%d" % n), self.path("writer.%d.out" % n)
        d = self.node_dir(self.primary)
        p = self.start([sys.executable, os.path.join(HERE, "acked_writer.py"), "--socket", "%s/%s.nbd" % (d, RES),
                        "--export", RES, "--seed", str(self.seed * 100 + n), "--seq-base", str(n * 100000000),
                        "--ack-log", ack, "--issued-log", issued, "--depth", "8",
                        "--span-blocks", str(SPAN_BLOCKS)], out)
        self.writer = {"p": p, "ack": ack, "out": out, "node": self.primary}
        self.ack_args += ["--ack-log", ack, "--issued-log", issued]
        self.note("writer %d against %s (pid %d)" % (n, self.primary, p.pid))
        self.writer_progress(15)

    def writer_progress(self, within):
        """The writer gets at least one more acknowledgement within WITHIN seconds."""
        before = self.acks()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.acks() > before:
                return
            if self.writer["p"].poll() is not None:
                break
            time.sleep(0.05)
        raise TrialFailure("the writer against %s got no acknowledgement for %ds (%s)"
                           % (self.writer["node"], within, self.writer_output()))

    def writer_output(self):
        try:
            with open(self.writer["out"]) as f:
                return f.read().strip() or "running"
        except OSError:
            return "no output"

    def writer_gone(self):
        """After the primary's death: the writer ends with 'connection lost'."""
        p = self.writer["p"]
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            raise TrialFailure("the writer did not notice the primary's death")
        if rc not in (0, 3):
            raise TrialFailure("writer exited %d: %s" % (rc, self.writer_output()))
        self.note("writer ended: %s" % self.writer_output())

    def stop_writer(self):
        p = self.writer["p"]
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(60)
        except subprocess.TimeoutExpired:
            raise TrialFailure("the writer did not drain within 60 s after SIGTERM")
        self.note("writer stopped: %s" % self.writer_output())
        if rc != 0:
            raise TrialFailure("writer exited %d while the primary ran: %s" % (rc, self.writer_output()))

    # ---- faults ----
    def hold_time(self):
        """Shorter than `timeout` or longer, about evenly."""
        if self.rng.random() < 0.5:
            return round(self.rng.uniform(0.3, TIMEOUT - 0.5), 2)
        return round(self.rng.uniform(TIMEOUT + 0.5, 2 * TIMEOUT + 1), 2)

    def fault(self, kind, force_failover=False, lag_ms=0):
        rng = self.rng
        rec = {"kind": kind}
        self.faults.append(rec)  # before it runs: a failing trial lists it
        if kind == "kill_primary":
            old = self.primary
            failover = rng.random() < 0.6 or force_failover
            hold = round(rng.uniform(0.2, 2.0), 2)
            rec.update(variant="failover" if failover else "restart", hold_s=hold)
            self.kill9(old)
            self.writer_gone()
            if lag_ms:
                rec["link_delay_ms"] = lag_ms
                self.relay("pass")
            time.sleep(hold)
            if failover:
                self.set_role(self.secondary, "primary")
                self.primary, self.secondary = self.secondary, old
                # What the promoted node lacks is what the failover lost.
                acked, lost = self.verify("right after the failover")
                self.failovers.append({"acked": acked, "lost": lost})
                rec.update(acked_at_failover=acked, lost_at_failover=lost)
                self.start_writer()
                self.start_node(old)
                self.set_role(old, "secondary")
                healed = time.monotonic()
            else:
                self.start_node(old)
                self.set_role(old, "primary")
                healed = time.monotonic()
                self.start_writer()
        elif kind == "kill_secondary":
            hold = round(rng.uniform(0.3, 3.0), 2)
            rec.update(hold_s=hold)
            self.kill9(self.secondary)
            time.sleep(hold)
            self.writer_progress(15)  # the primary goes on alone
            self.start_node(self.secondary)
            self.set_role(self.secondary, "secondary")
            healed = time.monotonic()
        elif kind in ("stop_primary", "stop_secondary"):
            node = self.primary if kind == "stop_primary" else self.secondary
            hold = self.hold_time()
            rec.update(hold_s=hold, beyond_timeout=hold > TIMEOUT)
            self.signal(node, signal.SIGSTOP)
            time.sleep(hold)
            self.signal(node, signal.SIGCONT)
            healed = time.monotonic()
        elif kind in ("cut", "blackhole"):
            hold = self.hold_time()
            rec.update(hold_s=hold, beyond_timeout=hold > TIMEOUT)
            self.relay(kind)
            time.sleep(hold)
            self.relay("pass")
            healed = time.monotonic()
            if kind == "blackhole":
                self.wait_holes_closed()
        elif kind == "delay":
            ms = rng.choice([5, 20, 50, 200])
            hold = round(rng.uniform(1.0, 4.0), 2)
            rec.update(hold_s=hold, delay_ms=ms)
            self.relay("delay %d" % ms)
            time.sleep(hold)
            self.relay("pass")
            healed = time.monotonic()
        rec["to_complete_s"] = round(self.wait_complete(since=healed), 3)
        self.note("%s healed; complete %.3f s after the heal" % (kind, rec["to_complete_s"]))
        self.writer_progress(15)

    # ---- the checks at the end ----
    def region(self, node, out):
        r = self.ctl(node, "dump", "--json", RES)
        md = json.loads(r.stdout)["resources"][0]
        with open(self.path("dump-%s.json" % node), "w") as f:
            f.write(r.stdout)
        with open(os.path.join(self.node_dir(node), RES + ".img"), "rb") as f, open(out, "wb") as g:
            f.seek(md["localoff"])
            left = md["datasize"]
            while left:
                b = f.read(min(left, 1 << 20))
                if not b:
                    break
                g.write(b)
                left -= len(b)

    def verify(self, where):
        """(acked, lost) of every acknowledged write so far, read back through
        the current primary's export; a loss fails fullsync and memsync."""
        d = self.node_dir(self.primary)
        v = subprocess.run([sys.executable, os.path.join(HERE, "verify_acked.py"), "--socket",
                            "%s/%s.nbd" % (d, RES), "--export", RES] + self.ack_args,
                           capture_output=True, text=True, timeout=300)
        with open(self.path("verify.out"), "a") as f:
            f.write("== %s, %s\n%s%s" % (where, self.primary, v.stdout, v.stderr))
        first = v.stdout.splitlines()[0] if v.stdout else ""
        if v.returncode > 1 or not first.startswith("verify: acked="):
            raise TrialFailure("verify_acked.py could not read %s's export: %s" % (self.primary, v.stdout.strip()))
        fields = dict(w.split("=") for w in first.split() if "=" in w and not w.startswith("("))
        acked, lost = int(fields["acked"]), int(fields["lost"])
        self.note("verify %s on %s: %s" % (where, self.primary, first))
        if lost and self.mode != "async":
            raise TrialFailure("%s: %d of %d acknowledged writes lost on %s (%s): %s"
                               % (self.mode, lost, acked, self.primary, where,
                                  " | ".join(v.stdout.strip().splitlines())))
        return acked, lost

    def finish(self):
        result = {}
        self.stop_writer()
        self.wait_complete(within=30)
        for node in (self.primary, self.secondary):
            self.ctl(node, "status")  # answers within STATUS_TIMEOUT, or a wedge
        result["acked"], result["lost"] = self.verify("at the end")
        result["failovers"] = self.failovers
        # Both stop cleanly, the primary first; then the regions compare.
        for node in (self.primary, self.secondary):
            p = self.pid[node]
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                self.wedges += 1
                raise TrialFailure("hastd %s did not exit within 30 s of SIGTERM (wedged)" % node, wedge=True)
            if rc != 0:
                raise TrialFailure("hastd %s exited %d after SIGTERM" % (node, rc))
        ra, rb = self.path("region-a"), self.path("region-b")
        self.region("nodeA", ra)
        self.region("nodeB", rb)
        same = subprocess.run(["cmp", "-s", ra, rb]).returncode == 0
        if not same:
            diff = subprocess.run(["cmp", "-l", ra, rb], capture_output=True, text=True).stdout.splitlines()
            first_off = int(diff[0].split()[0]) - 1 if diff else -1
            raise TrialFailure("data regions differ after complete: %d bytes, first at offset %d"
                               % (len(diff), first_off))
        os.unlink(ra)
        os.unlink(rb)
        return result

    def run(self):
        self.note("seed %d mode %s" % (self.seed, self.mode))
        self.setup()
        self.start_writer()
        for i in range(self.rng.randint(2, 3)):
            kind = self.rng.choice(FAULTS)
            # async loses writes only when its primary dies and the other node
            # takes over: every async trial starts with that, the link
            # delayed 0, 20 or 100 ms for a while before, so that the
            # secondary lags behind.
            forced = self.mode == "async" and i == 0
            lag = 0
            if forced:
                kind = "kill_primary"
                lag = self.rng.choice([0, 20, 100])
                if lag:
                    self.relay("delay %d" % lag)
            time.sleep(self.rng.uniform(0.3, 1.2))  # writes before the fault
            self.note("fault %s (primary %s)" % (kind, self.primary))
            self.fault(kind, force_failover=forced, lag_ms=lag)
        time.sleep(0.3)
        return self.finish()


def percentile(values, q):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q * (len(v) - 1)))))
    return round(v[k], 3)


def summarize(trials, elapsed, first_seed):
    modes = {}
    faults = {}
    for t in trials:
        m = modes.setdefault(t["mode"], {"trials": 0, "passed": 0, "failed": 0, "acked_checked": 0,
                                         "lost": 0, "lost_max": 0, "failovers": 0,
                                         "acked_checked_at_failover": 0, "lost_at_failover": 0,
                                         "lost_at_failover_max": 0})
        m["trials"] += 1
        m["passed" if t["ok"] else "failed"] += 1
        m["acked_checked"] += t.get("acked", 0)
        m["lost"] += t.get("lost", 0)
        m["lost_max"] = max(m["lost_max"], t.get("lost", 0))
        for f in t["faults"]:
            if "lost_at_failover" in f:
                m["failovers"] += 1
                m["acked_checked_at_failover"] += f["acked_at_failover"]
                m["lost_at_failover"] += f["lost_at_failover"]
                m["lost_at_failover_max"] = max(m["lost_at_failover_max"], f["lost_at_failover"])
        for f in t["faults"]:
            key = f["kind"] + ("/" + f["variant"] if "variant" in f else "")
            if "beyond_timeout" in f:
                key += " (held > timeout)" if f["beyond_timeout"] else " (held < timeout)"
            e = faults.setdefault(key, {"count": 0, "to_complete": []})
            e["count"] += 1
            if "to_complete_s" in f:
                e["to_complete"].append(f["to_complete_s"])
    for key, e in faults.items():
        tc = e.pop("to_complete")
        e["to_complete_s"] = {"n": len(tc), "median": round(statistics.median(tc), 3) if tc else None,
                              "p90": percentile(tc, 0.9), "max": round(max(tc), 3) if tc else None}
    a = modes.get("async")
    return {
        "first_seed": first_seed,
        "trials": len(trials),
        "passed": sum(1 for t in trials if t["ok"]),
        "failed_seeds": [t["seed"] for t in trials if not t["ok"]],
        "elapsed_s": round(elapsed, 1),
        "timeout_s": TIMEOUT,
        "modes": modes,
        "faults": dict(sorted(faults.items())),
        "async_loss": {
            "trials": a["trials"] if a else 0,
            "failovers": a["failovers"] if a else 0,
            "lost_at_failover_total_blocks": a["lost_at_failover"] if a else 0,
            "lost_at_failover_max_blocks": a["lost_at_failover_max"] if a else 0,
            "lost_at_failover_max_bytes": (a["lost_at_failover_max"] if a else 0) * 4096,
            "lost_at_end_total_blocks": a["lost"] if a else 0,
            "queue_bound_bytes": ASYNC_QUEUE_BYTES,
        },
        "wedges": sum(t.get("wedges", 0) for t in trials),
        "failures": [{"seed": t["seed"], "mode": t["mode"], "reason": t["reason"]} for t in trials if not t["ok"]],
        "per_trial": trials,
    }


def report(s, path):
    print("chaos: %d trials, %d passed, %d failed %s, wedges %d; summary in %s"
          % (s["trials"], s["passed"], len(s["failed_seeds"]), s["failed_seeds"] or "", s["wedges"], path))
    for mode, m in sorted(s["modes"].items()):
        print("  %-8s trials %d acked checked %d lost %d (max %d in one trial); failovers %d: acked checked %d"
              " lost %d (max %d)" % (mode, m["trials"], m["acked_checked"], m["lost"], m["lost_max"],
                                     m["failovers"], m["acked_checked_at_failover"], m["lost_at_failover"],
                                     m["lost_at_failover_max"]))
    for kind, e in s["faults"].items():
        tc = e["to_complete_s"]
        print("  %-26s %3d  to complete: median %s p90 %s max %s s"
              % (kind, e["count"], tc["median"], tc["p90"], tc["max"]))


def markdown(s):
    """The figures as the tables of docs/RELIABILITY.md."""
    lines = ["| mode | trials | passed | acknowledged writes checked (end of trial) | lost | failovers |"
             " checked right after a failover | lost there (total / max) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in ("fullsync", "memsync", "async"):
        m = s["modes"].get(mode)
        if not m:
            continue
        lines.append("| %s | %d | %d | %d | %d | %d | %d | %d / %d |"
                     % (mode, m["trials"], m["passed"], m["acked_checked"], m["lost"], m["failovers"],
                        m["acked_checked_at_failover"], m["lost_at_failover"], m["lost_at_failover_max"]))
    lines += ["", "| fault | count | time from the heal to `complete`: median | p90 | max |",
              "|---|---:|---:|---:|---:|"]
    for kind, e in s["faults"].items():
        tc = e["to_complete_s"]
        lines.append("| %s | %d | %s s | %s s | %s s |" % (kind, e["count"], tc["median"], tc["p90"], tc["max"]))
    return "\n".join(lines)


def merge(out, inputs):
    """One summary from the summaries of several runs (e.g. chunks of seeds)."""
    trials, elapsed = [], 0.0
    for path in inputs:
        with open(path) as f:
            j = json.load(f)
        trials += j["per_trial"]
        elapsed += j["elapsed_s"]
    trials.sort(key=lambda t: t["seed"])
    s = summarize(trials, elapsed, min(t["seed"] for t in trials))
    with open(out, "w") as f:
        json.dump(s, f, indent=1)
    report(s, out)
    print(markdown(s))
    return 0 if not s["failed_seeds"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build")
    ap.add_argument("--merge", nargs="+", metavar="SUMMARY",
                    help="write --summary from these summaries instead of running trials")
    ap.add_argument("--trials", type=int, default=int(os.environ.get("CHAOS_TRIALS", "120")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    ap.add_argument("--summary", default=os.environ.get("CHAOS_SUMMARY"))
    ap.add_argument("--keep", default=os.environ.get("CHAOS_KEEP"))
    ap.add_argument("--keep-all", action="store_true", help="keep the logs of passing trials too")
    a = ap.parse_args()
    if a.merge:
        return merge(a.summary, a.merge)
    if not a.build:
        ap.error("--build is required")
    build = os.path.abspath(a.build)
    summary = a.summary or os.path.join(build, "chaos-summary.json")
    keep = a.keep or os.path.join(build, "chaos-failed")
    root = tempfile.mkdtemp(prefix="hast-chaos.")
    trials = []
    start = time.monotonic()
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for seed in range(a.seed, a.seed + a.trials):
            t0 = time.monotonic()
            trial = Trial(build, seed, root)
            rec = {"seed": seed, "mode": trial.mode, "ok": False}
            try:
                rec.update(trial.run())
                rec["ok"] = True
            except TrialFailure as e:
                rec["reason"] = str(e)
                trial.note("FAILED: %s" % e)
            except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                rec["reason"] = "driver error: %s: %s" % (type(e).__name__, e)
                trial.note("FAILED: %s" % rec["reason"])
            finally:
                trial.cleanup()
            rec["faults"] = trial.faults
            rec["wedges"] = trial.wedges
            rec["seconds"] = round(time.monotonic() - t0, 1)
            trials.append(rec)
            kinds = ",".join(f["kind"] + ("/" + f["variant"] if "variant" in f else "") for f in trial.faults)
            if rec["ok"] and a.keep_all:
                dest = os.path.join(keep, "seed-%d" % seed)
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(trial.t, dest, ignore=shutil.ignore_patterns("*.img", "region-*", "*.sock",
                                                                             "*.nbd", "relay.ctl"))
            if rec["ok"]:
                print("ok   seed %d %-8s %5.1fs acked %d lost %d  %s"
                      % (seed, trial.mode, rec["seconds"], rec["acked"], rec["lost"], kinds), flush=True)
                shutil.rmtree(trial.t, ignore_errors=True)
            else:
                dest = os.path.join(keep, "seed-%d" % seed)
                shutil.rmtree(dest, ignore_errors=True)
                os.makedirs(keep, exist_ok=True)
                shutil.copytree(trial.t, dest, ignore=shutil.ignore_patterns("*.img", "region-*", "*.sock",
                                                                             "*.nbd", "relay.ctl"))
                shutil.rmtree(trial.t, ignore_errors=True)
                print("FAIL seed %d %-8s %5.1fs: %s\n     faults so far: %s\n     logs: %s\n"
                      "     replay: CHAOS_SEED=%d CHAOS_TRIALS=1 bash tests/integration/long_chaos.sh %s"
                      % (seed, trial.mode, rec["seconds"], rec["reason"], kinds or "none", dest, seed, a.build),
                      flush=True)
    except KeyboardInterrupt:
        print("interrupted after %d trials" % len(trials), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    s = summarize(trials, time.monotonic() - start, a.seed)
    with open(summary, "w") as f:
        json.dump(s, f, indent=1)
    report(s, summary)
    return 0 if trials and not s["failed_seeds"] and not stop["flag"] else 1


if __name__ == "__main__":
    sys.exit(main())
