#!/usr/bin/env python3
"""Stress kmemfs with concurrent clients for a bounded time: mkdir/rmdir races on the same
names, reads of files of cgroups being removed, limit writes while control commands allocate,
simulated tasks spawned, moved and exited, real short-lived child processes written to
`tasks`, OOM sleeps and their relief. Every answer must be an errno the documented rules
allow for that operation. At the end everything is cleaned up and must leave nothing behind:
no cgroup, no simulated task, no per-cgroup cache copy in `.kmemfs/slabinfo`, and `check`
passes.

    scripts/stress.py [--threads 8] [--seconds S] [--seed N] [MOUNTPOINT]
"""
import argparse
import errno
import os
import random
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

E = errno
SIM_PID_BASE = 5_000_000
GROUPS = ["s0", "s1", "s2", "s3", "s0/n0", "s0/n1", "s1/n0"]     # tasks live here
CHURN = ["c0", "c1", "c2", "c0/d0", "c1/d0"]                 # no tasks: created and removed
ALL = GROUPS + CHURN
READABLE = ["memory.usage_in_bytes", "memory.stat", "memory.kmem.slabinfo", "tasks",
            "memory.kmem.usage_in_bytes", "memory.oom_control", "memory.limit_in_bytes",
            "memory.numa_stat", "cgroup.procs"]
CACHES = ["dentry", "inode_cache", "size-64", "size-512", "task_struct", "radix_tree_node",
          "buffer_head", "vm_area_struct"]
KMALLOC_SIZES = [32, 100, 1000, 4096]
MANY = 10 ** 7                    # a count above what any cleanup can find
GONE = {E.ENOENT}                 # the cgroup (or its parent) is not there (any more)
STALE = {E.ENODEV}                # a file of a cgroup removed after the open
# op -> errnos the rules allow besides success (docs/semantics.md §9, §12-14; docs/ctl.md)
ALLOWED = {
    "mkdir": {E.EEXIST, E.ENOENT, E.ENOSPC},
    "rmdir": {E.ENOENT, E.EBUSY},
    "rename": {E.ENOENT, E.EEXIST},
    "read": GONE | STALE,
    "limit": GONE | STALE | {E.EBUSY, E.EINVAL},
    "oom_control": GONE | STALE | {E.EINVAL},
    "use_hierarchy": GONE | STALE | {E.EINVAL, E.EBUSY},
    "alloc": {E.ENOENT, E.ENOMEM, E.EINVAL, E.ESRCH, E.ENODEV},
    "free": {E.ENOENT, E.EINVAL},
    "spawn": {E.ENOENT, E.ENOMEM, E.ENOSPC, E.ENODEV},   # slept, then its cgroup went
    "move": GONE | STALE | {E.ESRCH, E.ENOMEM},
    "exit": {E.ESRCH},
    "child": GONE | STALE | {E.ESRCH, E.ENOMEM},
    "check": set(),
    "reclaim": {E.ENOENT},
    "force_empty": GONE | STALE | {E.EBUSY},
}


class Stress:
    def __init__(self, mountpoint, threads=8, seconds=10.0, seed=0, daemon=None, log=None):
        self.mp = mountpoint
        self.nthreads, self.seconds, self.seed = threads, seconds, seed
        self.daemon = daemon
        self.log = log
        self.lock = threading.Lock()
        self.sim = set()              # simulated pids believed alive
        self.counts = {}              # (op, errno name) -> n
        self.ops = 0
        self.violations = []
        self.busy = {}                # thread index -> (start, description)
        self.reliefs = 0
        self.children = 0
        self.stop = threading.Event()
        self.cleanup_report = {}

    def p(self, *parts):
        return os.path.join(self.mp, *parts)

    # ------------------------------------------------------------------ bookkeeping
    def record(self, op, err, what=""):
        with self.lock:
            self.ops += 1
            key = (op, harness.errname(err))
            self.counts[key] = self.counts.get(key, 0) + 1
            if err is not None and err not in ALLOWED[op]:
                self.violations.append(f"{op} {what}: {harness.errname(err)} is not allowed")
                if self.log:
                    self.log(f"VIOLATION {self.violations[-1]}")
            if err == E.ENOTCONN:
                self.stop.set()

    def call(self, i, desc, fn, *args):
        self.busy[i] = (time.monotonic(), desc)
        try:
            return None, fn(*args)
        except OSError as e:
            return e.errno, getattr(e, "results", None)
        finally:
            self.busy.pop(i, None)

    def write(self, path, data):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data.encode() if isinstance(data, str) else data)
        finally:
            os.close(fd)

    def read(self, path, pause=0.0):
        fd = os.open(path, os.O_RDONLY)
        try:
            if pause:
                time.sleep(pause)
            return os.read(fd, 65536)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ one client
    def worker(self, i):
        rng = random.Random(self.seed * 1000 + i)
        ops = [(self.op_mkdir, 14), (self.op_rmdir, 12), (self.op_read, 14), (self.op_limit, 10),
               (self.op_alloc, 20), (self.op_spawn, 6), (self.op_move, 8), (self.op_exit, 6),
               (self.op_child, 3), (self.op_oom, 3), (self.op_check, 2), (self.op_misc, 5)]
        fns, weights = [o for o, _ in ops], [w for _, w in ops]
        while not self.stop.is_set():
            rng.choices(fns, weights)[0](i, rng)

    def g(self, rng):
        return rng.choice(ALL)

    def op_mkdir(self, i, rng):
        g = self.g(rng)
        err, _ = self.call(i, f"mkdir {g}", os.mkdir, self.p(g))
        self.record("mkdir", err, g)

    def op_rmdir(self, i, rng):
        g = self.g(rng)
        err, _ = self.call(i, f"rmdir {g}", os.rmdir, self.p(g))
        self.record("rmdir", err, g)

    def op_read(self, i, rng):
        g, f = self.g(rng), rng.choice(READABLE)
        err, _ = self.call(i, f"read {g}/{f}", self.read, self.p(g, f),
                           rng.choice([0, 0, 0.001, 0.01]))
        self.record("read", err, f"{g}/{f}")

    def op_limit(self, i, rng):
        g = self.g(rng)
        f = rng.choice(["memory.limit_in_bytes", "memory.limit_in_bytes",
                        "memory.memsw.limit_in_bytes", "memory.kmem.limit_in_bytes",
                        "memory.soft_limit_in_bytes"])
        v = rng.choice(["-1", "-1", "256K", "1M", "4M", "16M", "64M"])
        err, _ = self.call(i, f"write {g}/{f} {v}", self.write, self.p(g, f), v)
        self.record("limit", err, f"{g}/{f}={v}")

    def ctl(self, i, op, text):
        err, out = self.call(i, f"ctl {text}", harness.ctl, self.mp, text)
        self.record(op, err, text)
        return err, out

    def op_alloc(self, i, rng):
        g = self.g(rng)
        if rng.random() < 0.2:
            cmd = rng.choice([f"free {rng.choice(CACHES)} {rng.randrange(1, 100)}",
                              f"kfree {rng.choice([32, 100, 1000])} {rng.randrange(1, 30)}",
                              f"unlink {rng.randrange(1, 50)}"])
            return self.ctl(i, "free", f"{cmd} cg=/{g}")
        cmd = rng.choice([
            f"alloc {rng.choice(CACHES)} {rng.randrange(1, 400)}",
            f"alloc {rng.choice(CACHES)} {rng.randrange(1, 50)} gfp=GFP_NOFS",
            f"kmalloc {rng.choice(KMALLOC_SIZES)} {rng.randrange(1, 100)}",
            f"touch {rng.randrange(1, 300)}",
            f"charge {rng.choice(['anon', 'file'])} {rng.choice(['64K', '256K', '1M', '3M'])}",
            f"uncharge {rng.choice(['anon', 'file'])} {rng.choice(['64K', '1M'])}",
            "workqueue", "drop_caches", "reap"])
        self.ctl(i, "alloc", f"{cmd} cg=/{g}")

    def op_spawn(self, i, rng):
        g = rng.choice(GROUPS)
        err, out = self.ctl(i, "spawn", f"spawn cg=/{g}")
        if err is None:
            m = re.search(r"pid=(\d+)", out)
            with self.lock:
                self.sim.add(int(m.group(1)))

    def some_sim(self, rng):
        with self.lock:
            return rng.choice(sorted(self.sim)) if self.sim else SIM_PID_BASE

    def op_move(self, i, rng):
        g = rng.choice(GROUPS + [""])
        pid = self.some_sim(rng)
        err, _ = self.call(i, f"move {pid} to {g}", self.write, self.p(g, "tasks"), str(pid))
        self.record("move", err, f"{pid} -> /{g}")
        if err == E.ESRCH:
            with self.lock:
                self.sim.discard(pid)

    def op_exit(self, i, rng):
        pid = self.some_sim(rng)
        err, _ = self.ctl(i, "exit", f"exit {pid}")
        with self.lock:
            self.sim.discard(pid)

    def op_child(self, i, rng):
        """A real process, short-lived, written to `tasks` of a cgroup (maybe being removed)."""
        g = self.g(rng)
        child = subprocess.Popen(["sleep", rng.choice(["0", "0.01", "0.05"])])
        try:
            err, _ = self.call(i, f"child {child.pid} to {g}", self.write,
                               self.p(g, "tasks"), str(child.pid))
            self.record("child", err, f"{child.pid} -> /{g}")
        finally:
            child.wait()
        with self.lock:
            self.children += 1

    def op_oom(self, i, rng):
        """oom_kill_disable on and off: allocations in the cgroup may sleep until relieved
        (by a limit raise, an uncharge or oom_control 0 from another client)."""
        g = self.g(rng)
        v = rng.choice(["0", "0", "1"])
        err, _ = self.call(i, f"oom_control {g} {v}", self.write,
                           self.p(g, "memory.oom_control"), v)
        self.record("oom_control", err, f"{g}={v}")

    def op_check(self, i, rng):
        err, out = self.ctl(i, "check", "check")
        if err:
            with self.lock:
                self.violations.append(f"check failed: {out}")

    def op_misc(self, i, rng):
        g = self.g(rng)
        kind = rng.choice(["use_hierarchy", "force_empty", "reclaim", "rename"])
        if kind == "rename":
            a, b = rng.sample(["c0", "c1", "c2"], 2)
            err, _ = self.call(i, f"rename {a} {b}", os.rename, self.p(a), self.p(b))
            self.record("rename", err, f"{a} -> {b}")
        elif kind == "use_hierarchy":
            v = rng.choice(["0", "1"])
            err, _ = self.call(i, f"use_hierarchy {g}", self.write,
                               self.p(g, "memory.use_hierarchy"), v)
            self.record("use_hierarchy", err, f"{g}={v}")
        elif kind == "force_empty":
            err, _ = self.call(i, f"force_empty {g}", self.write,
                               self.p(g, "memory.force_empty"), "0")
            self.record("force_empty", err, g)
        else:
            self.ctl(i, "reclaim", f"uncharge file 1M cg=/{g}")

    # ------------------------------------------------------------------ watchdog
    def relieve(self):
        """End every OOM sleep: oom_control 0 (where allowed) and no limits."""
        self.reliefs += 1
        for g in sorted(ALL, key=len):
            for f, v in (("memory.oom_control", "0"), ("memory.memsw.limit_in_bytes", "-1"),
                         ("memory.limit_in_bytes", "-1")):
                try:
                    self.write(self.p(g, f), v)
                except OSError:
                    pass

    def watchdog(self, hang_after=30.0):
        """Relieve (every second) while an operation has been sleeping for over a second;
        an operation older than `hang_after` is a hang: recorded, and our daemon is killed
        so the run ends."""
        last = 0.0
        while not self.stop.wait(0.2) or self.busy:
            now = time.monotonic()
            ages = [(now - b[0], i, b[1]) for i, b in list(self.busy.items())]
            if not ages:
                if self.stop.is_set():
                    return
                continue
            age, i, desc = max(ages)
            if age > 1.0 and now - last > 1.0:
                last = now
                self.relieve()
            if age > hang_after:
                with self.lock:
                    self.violations.append(f"hang: thread {i}: {desc} for {age:.0f} s")
                self.stop.set()
                if self.daemon:
                    os.kill(self.daemon, 9)
                return

    # ------------------------------------------------------------------ run and clean up
    def run(self, quiet=False):
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                   for i in range(self.nthreads)]
        wd = threading.Thread(target=self.watchdog, daemon=True)
        start = time.monotonic()
        with harness.Progress("stress", None, self.seconds, quiet) as prog:
            try:
                for t in threads:
                    t.start()
                wd.start()
                while time.monotonic() - start < self.seconds and not self.stop.is_set():
                    time.sleep(0.2)
                    prog.update(self.ops)
                    if self.daemon and not harness.alive(self.daemon):
                        self.violations.append("the daemon died")
                        break
            finally:      # also on SIGTERM/^C: no client may outlive the mount (it would
                self.stop.set()     # create its cgroups in the bare directory below)
                for t in threads:
                    if t.is_alive():
                        t.join(60)
            self.elapsed = time.monotonic() - start
            wd.join(1)
        if any(t.is_alive() for t in threads):
            self.violations.append("a client thread did not finish")
        if self.daemon and not harness.alive(self.daemon):
            if "the daemon died" not in self.violations:
                self.violations.append("the daemon died")
            return self
        self.cleanup()
        return self

    def cleanup(self):
        """Undo everything; then nothing may be left: no cgroup, no simulated task, no
        per-cgroup cache copy, and `check` passes."""
        r = self.cleanup_report
        self.relieve()
        pids = set()
        for dirpath, dirs, files in os.walk(self.mp):
            dirs[:] = [d for d in dirs if d != ".kmemfs"]
            with open(os.path.join(dirpath, "tasks")) as f:
                pids |= {int(x) for x in f.read().split() if int(x) >= SIM_PID_BASE}
        r["simulated tasks exited"] = len(pids)
        if pids:
            harness.ctl(self.mp, "".join(f"exit {p}\n" for p in sorted(pids)))
        removed = 0
        for _ in range(3):
            for dirpath, dirs, _files in os.walk(self.mp, topdown=False):
                if dirpath == self.mp or "/.kmemfs" in dirpath[len(self.mp):]:
                    continue
                try:
                    os.rmdir(dirpath)
                    removed += 1
                except OSError as e:
                    if e.errno != E.ENOENT:
                        r.setdefault("rmdir failures", []).append(
                            f"{dirpath[len(self.mp):]}: {harness.errname(e.errno)}")
            if not [d for d in os.listdir(self.mp) if d != ".kmemfs" and os.path.isdir(self.p(d))]:
                r.pop("rmdir failures", None)
                break
            time.sleep(0.1)       # a real child still exiting
        r["cgroups removed"] = removed
        # A removed cgroup's objects in global caches went to root's pool (rmdir, docs/
        # semantics.md section 9): free them too, or an off-slab slab among them keeps its
        # descriptor in the dead size-N copy of the cgroup that grew it.
        held = [f"free {c}" for c in CACHES] + [f"kfree {n}" for n in KMALLOC_SIZES]
        for cmd in held:
            try:
                harness.ctl(self.mp, f"{cmd} {MANY} cg=/\n")
            except OSError as e:
                if e.errno != E.EINVAL:
                    raise     # EINVAL: fewer than MANY, and all of them are freed
        harness.ctl(self.mp, "drop_caches\n")
        # objects made with `alloc`/`kmalloc` are pinned until freed: free the dead copies'
        # (a reap first drains the array caches, so active objects are the held ones, plus
        # off-slab slab descriptors, which go with their slabs in the last reap)
        harness.ctl(self.mp, "reap\n")
        freed = 0
        for _ in range(5):    # a slab destroyed in one copy frees its descriptor in another
            pinned = self.copies()
            if not pinned:
                break
            for n, c in pinned:
                try:
                    if c:
                        harness.ctl(self.mp, f"free {n} {c} cg=/\n")
                except OSError:
                    pass          # freed what it holds; the rest are descriptors
            harness.ctl(self.mp, "reap\n")
            freed += sum(c for _, c in pinned)
        r["pinned objects freed"] = freed
        left = self.copies()
        if left:
            self.violations.append(f"cache copies left after cleanup: {left[:8]}")
        dirs = [d for d in os.listdir(self.mp) if os.path.isdir(self.p(d)) and d != ".kmemfs"]
        if dirs:
            self.violations.append(f"cgroups left after cleanup: {dirs}")
        with open(self.p("tasks")) as f:
            sims = [int(x) for x in f.read().split() if int(x) >= SIM_PID_BASE]
        if sims:
            self.violations.append(f"simulated tasks left in root: {sims[:8]}")
        try:
            harness.ctl(self.mp, "check\n")
            r["check"] = "ok"
        except OSError as e:
            r["check"] = e.results
            self.violations.append(f"check after cleanup: {e.results}")

    def copies(self):
        """(name, active objects) of every per-cgroup cache copy in /proc/slabinfo."""
        with open(self.p(".kmemfs", "slabinfo")) as f:
            rows = f.read().splitlines()[2:]
        out = []
        for row in rows:
            name = row.split()[0]
            if "(" in name and not name.endswith("(DMA)"):
                out.append((name, int(row.split()[1])))
        return out

    def summary(self) -> str:
        rate = self.ops / self.elapsed if self.elapsed else 0
        ops = {}
        for (op, name), n in self.counts.items():
            ops.setdefault(op, []).append(f"{name}:{n}")
        lines = [f"stress: {self.nthreads} threads, {self.elapsed:.1f} s, {self.ops} operations "
                 f"({rate:.0f} ops/s), {self.children} real child processes, "
                 f"{self.reliefs} reliefs, {len(self.violations)} violations"]
        lines += [f"  {op}: " + " ".join(sorted(v)) for op, v in sorted(ops.items())]
        lines.append("  cleanup: " + ", ".join(f"{k}={v}" for k, v in self.cleanup_report.items()))
        lines += [f"  ! {v}" for v in self.violations[:20]]
        return "\n".join(lines)


class Interleavings:
    """The same clients without FUSE: the daemon runs one request at a time, so concurrency
    is the order of whole requests plus the control writes that sleep on an OOM in between.
    A seeded random order of the stress operations, sleeping writes parked and resumed when
    memcg_oom_recover runs, and `engine.check` after every step: deterministic, so a
    violation comes with the exact operations that led to it."""

    def __init__(self, seed=0, steps=2000):
        from kmemfs.cgroupfs.tree import Request
        from kmemfs.fuse.daemon import build
        from kmemfs.engine import Config
        self.rng, self.steps = random.Random(seed), steps
        self.fs = build(Config())
        self.req = Request(os.getpid())
        self.parked, self.sims, self.log = [], [], []
        self.violations = []
        self.ops = 0

    def ino(self, path):
        i = 1
        for part in filter(None, path.split("/")):
            i = self.fs.lookup(i, part).ino
        return i

    def write(self, path, data):
        d, _, f = path.rpartition("/")
        fh = self.fs.open(self.fs.lookup(self.ino(d), f).ino, self.req)
        try:
            return self.fs.write(fh, 0, data.encode(), self.req)
        finally:
            self.fs.release(fh)

    def ctl(self, text):
        fh = self.fs.open(self.fs.lookup(2, "ctl").ino, self.req)
        r = self.fs.write(fh, 0, text.encode(), self.req)
        if not isinstance(r, int):
            self.parked.append((r, self.fs.engine.oom_wake_seq, text))
            return "[asleep on an OOM]"
        out = self.fs.read(fh, 0, 65536).decode(errors="replace")
        self.sims += [int(x) for x in re.findall(r"ok spawn pid=(\d+)", out)]
        return out.strip()

    def step(self):
        from kmemfs.engine import EngineError
        rng, fs = self.rng, self.fs
        g = rng.choice(ALL)
        d, _, n = g.rpartition("/")
        k = rng.randrange(14)
        try:
            if k == 0:
                op = f"mkdir {g}"
                fs.mkdir(self.ino(d), n)
            elif k == 1:
                op = f"rmdir {g}"
                fs.rmdir(self.ino(d), n)
            elif k == 2:
                v = rng.choice(["-1", "256K", "1M", "4M", "16M"])
                f = rng.choice(["memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
                                "memory.kmem.limit_in_bytes"])
                op = f"echo {v} > {g}/{f}"
                self.write(f"{g}/{f}", v)
            elif k == 3:
                v = rng.choice(["0", "1"])
                op = f"echo {v} > {g}/memory.oom_control"
                self.write(f"{g}/memory.oom_control", v)
            elif k == 4:
                v = rng.choice(["0", "1"])
                op = f"echo {v} > {g}/memory.use_hierarchy"
                self.write(f"{g}/memory.use_hierarchy", v)
            elif k == 5:
                a, b = rng.sample(["c0", "c1", "c2"], 2)
                op = f"mv {a} {b}"
                fs.rename(1, a, 1, b)
            elif k == 6:
                op = f"echo 0 > {g}/memory.force_empty"
                self.write(f"{g}/memory.force_empty", "0")
            elif k == 7 and self.sims:
                pid = rng.choice(self.sims)
                op = f"echo {pid} > {g}/tasks"
                self.write(f"{g}/tasks", str(pid))
            else:
                cmd = rng.choice([
                    f"alloc {rng.choice(CACHES)} {rng.randrange(1, 400)}",
                    f"alloc {rng.choice(CACHES)} {rng.randrange(1, 50)} gfp=GFP_NOFS",
                    f"touch {rng.randrange(1, 300)}",
                    f"charge {rng.choice(['anon', 'file'])} {rng.choice(['64K', '1M', '3M'])}",
                    f"uncharge {rng.choice(['anon', 'file'])} 1M", "spawn",
                    f"exit {rng.choice(self.sims) if self.sims else 1}",
                    f"free {rng.choice(CACHES)} {rng.randrange(1, 100)}", "drop_caches",
                    "reap", "workqueue"])
                if cmd == "spawn":
                    g = rng.choice(GROUPS)
                op = f"ctl {cmd} cg=/{g}"
                op += " -> " + self.ctl(f"{cmd} cg=/{g}\n")
        except EngineError as e:
            op += f" -> {e}"
        self.log.append(op)
        for item in list(self.parked):          # memcg_oom_recover ran: the sleepers retry
            pending, seq, text = item
            if self.fs.engine.oom_wake_seq == seq:
                continue
            self.parked.remove(item)
            try:
                r = pending.resume()
                if isinstance(r, int):
                    self.log.append(f"  woken: {text.strip()} -> done")
                else:
                    self.parked.append((r, self.fs.engine.oom_wake_seq, text))
                    self.log.append(f"  woken: {text.strip()} -> asleep again")
            except EngineError as e:
                self.log.append(f"  woken: {text.strip()} -> {e}")

    def run(self):
        from kmemfs.engine import check
        for i in range(self.steps):
            self.ops += 1
            self.step()
            bad = check(self.fs.engine)
            if bad:
                self.violations.append(f"step {i}: {bad[:3]}; last operations:\n    "
                                       + "\n    ".join(self.log[-12:]))
                break
        for pending, _, _ in self.parked:
            pending.cancel()
        return self


def stress_mount(mountpoint, threads=8, seconds=10.0, seed=0, daemon=None, quiet=False):
    s = Stress(mountpoint, threads, seconds, seed, daemon,
               log=None if quiet else (lambda t: print(t, file=sys.stderr, flush=True)))
    return s.run(quiet)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--model", type=int, metavar="N",
                   help="instead: N seeds of the in-process interleaving model (no FUSE)")
    p.add_argument("--steps", type=int, default=2000, help="steps per --model seed")
    a = p.parse_args(argv)
    if a.model:
        t0, ops, bad = time.monotonic(), 0, []
        for seed in range(a.seed, a.seed + a.model):
            m = Interleavings(seed, a.steps).run()
            ops += m.ops
            bad += [f"seed {seed}: {v}" for v in m.violations]
        print(f"interleavings: {a.model} seeds, {ops} steps in {time.monotonic() - t0:.1f} s, "
              f"check after every step, {len(bad)} violations")
        for v in bad[:5]:
            print(f"  ! {v}")
        return 1 if bad else 0
    with harness.kmemfs_mount(a.mountpoint) as (mp, pid):
        s = stress_mount(mp, a.threads, a.seconds, a.seed, pid, a.quiet)
    print(s.summary())
    return 1 if s.violations else 0


if __name__ == "__main__":
    sys.exit(main())
