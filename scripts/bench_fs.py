#!/usr/bin/env python3
"""Benchmark kmemfs through FUSE, side by side with a minimal pyfuse3 file system and the
real kernel cgroup v1 memory controller, in one run.

    .venv/bin/python scripts/bench_fs.py [--quick] [--profile] [--tree N]

  (a) open+read+close of memory.usage_in_bytes: kmemfs vs a minimal pyfuse3 fs serving one
      constant file (same options: direct_io, entry/attr timeout 1 s, default_permissions)
      vs /sys/fs/cgroup/memory/kmemfs_bench_<pid>/. Target: kmemfs <= 1.25x the minimal fs.
  (b) mkdir and rmdir rates, kmemfs vs the kernel. Target: kmemfs at least as fast.
  (c) cat (open, read to EOF, close) of a leaf's memory.stat and memory.kmem.slabinfo in a
      kmemfs tree of 1 cgroup and one of N (default 10,000) cgroups. Target: <= 1.2x; root's
      memory.stat at N children within 1.2x a leaf's (issue 13).
  (d) a monitor's sweep: 6 files (usage, limit, max_usage, failcnt, kmem.usage, stat) of each
      of 1,000 cgroups, kmemfs default vs kmemfs -o page_cache vs the kernel, each sweep after
      a 1.1 s pause (a monitor polling every second: what a 1 s entry timeout used to lose).
      Beside them the FUSE floor: the minimal pyfuse3 fs with the same tree, timeouts and
      requests a file (open, read, read at EOF, release; with page cache: open, release).
      Targets, as ratios to the kernel: <= 20x default, <= 10x -o page_cache.
  (e) `find MP -type f | xargs cat` at 1,000 and 10,000 cgroups, kmemfs vs the kernel (info).
  (f) kmemfs's own tools at 1,000 cgroups: `kmemfs top`'s first screen on a pty of 80x24
      and 160x50 (a fresh process, until the panes are drawn), `kmemfs top --once` (every
      row), and `kmemfs record`'s sample period at --interval 0.1 (in-process, 3 s); on
      kmemfs (they read .kmemfs/snapshot) and on the kernel tree (file by file).
      Targets: top's first screen <= 0.5 s, record keeps 0.1 s, both on kmemfs.

Contenders run interleaved in rounds (A, B, C, then C, B, A, ...) so drift hits all alike;
the tables give the median over rounds of each contender's time (or rate) and, as the ratio,
the median over rounds of the per-round ratio. By default the client and every daemon are
pinned to one CPU (--no-pin to let them float): see the comment in main(). When kmemfs misses a target (or with --profile)
a fresh kmemfs daemon is run under cProfile (python -m cProfile -m kmemfs mount ...) through
the same workloads and the top of its profile printed.

Only cgroups named kmemfs_bench_* are made in the kernel's hierarchy; all are removed, and
every FUSE mount unmounted (fusermount3 -u, then -uz), in finally blocks. Needs root, FUSE
and a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (the kernel column is skipped
without one). Not part of the test suite.
"""
import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import _bench as B

sys.path.insert(0, os.path.join(B.ROOT, "tests"))
from mounting import is_stale  # noqa: E402  (tests/mounting.py)

perf = time.perf_counter
KERNEL_MEMCG = "/sys/fs/cgroup/memory"
BENCH_PREFIX = "kmemfs_bench_"
FILE = "memory.usage_in_bytes"

# A minimal pyfuse3 file system: /d/memory.usage_in_bytes holding "0\n". Same options and
# reply shapes as kmemfs (direct_io on open, entry/attr timeout 1 s, default_permissions),
# same depth as the kmemfs and kernel files it is compared with. Like any pyfuse3 fs that does
# not override them, it answers FLUSH/GETXATTR/... with ENOSYS. It also takes mkdir/rmdir of
# empty directories in its root: (b) shows that as the floor FUSE itself puts under kmemfs.
MINIMAL_FS = textwrap.dedent('''
    import errno, itertools, os, stat, sys
    import pyfuse3, trio

    DATA = b"0\\n"
    DIR, FILE = 2, 3
    NAMES = {(pyfuse3.ROOT_INODE, b"d"): DIR, (DIR, b"memory.usage_in_bytes"): FILE}
    DIRS = {pyfuse3.ROOT_INODE, DIR}
    FILES = {FILE}
    NEXT = itertools.count(4)
    # argv: MOUNTPOINT [TIMEOUT [N FILE...]]: N more directories kmemfs_bench_s<i> holding
    # the FILEs, for (d)'s sweep at the entry/attr timeout kmemfs uses
    TIMEOUT = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    # MINIMAL_PAGE_CACHE=1: what -o page_cache does (st_size, page cache kept across opens)
    PAGE_CACHE = os.environ.get("MINIMAL_PAGE_CACHE") == "1"
    for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 0):
        d = NAMES[(pyfuse3.ROOT_INODE, f"kmemfs_bench_s{i}".encode())] = next(NEXT)
        DIRS.add(d)
        for name in sys.argv[4:]:
            FILES.add(next(NEXT))
            NAMES[(d, name.encode())] = max(FILES)

    class Minimal(pyfuse3.Operations):
        def attr(self, ino):
            e = pyfuse3.EntryAttributes()
            e.st_ino = ino
            e.st_mode = (stat.S_IFDIR | 0o755) if ino in DIRS else (stat.S_IFREG | 0o444)
            e.st_nlink = 2 if ino in DIRS else 1
            e.st_size = len(DATA) if PAGE_CACHE and ino not in DIRS else 0
            e.st_blksize = 4096
            e.entry_timeout = e.attr_timeout = TIMEOUT
            return e

        async def lookup(self, parent, name, ctx=None):
            ino = NAMES.get((parent, name))
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self.attr(ino)

        async def getattr(self, inode, ctx=None):
            return self.attr(inode)

        async def opendir(self, inode, ctx):
            return inode

        async def readdir(self, fh, start, token):
            for i, ((p, name), ino) in enumerate(list(NAMES.items())[start:], start + 1):
                if p == fh and not pyfuse3.readdir_reply(token, name, self.attr(ino), i):
                    break

        async def open(self, inode, flags, ctx):
            if inode not in FILES:
                raise pyfuse3.FUSEError(errno.EISDIR)
            return pyfuse3.FileInfo(fh=inode, direct_io=not PAGE_CACHE, keep_cache=PAGE_CACHE)

        async def read(self, fh, off, size):
            return DATA[off:off + size]

        async def release(self, fh):
            pass

        # empty directories under the root only: the FUSE floor for (b)'s mkdir/rmdir
        async def mkdir(self, parent, name, mode, ctx):
            if parent != pyfuse3.ROOT_INODE:
                raise pyfuse3.FUSEError(errno.EPERM)
            if (parent, name) in NAMES:
                raise pyfuse3.FUSEError(errno.EEXIST)
            ino = NAMES[(parent, name)] = next(NEXT)
            DIRS.add(ino)
            return self.attr(ino)

        async def rmdir(self, parent, name, ctx):
            ino = NAMES.get((parent, name))
            if ino is None or ino == DIR:
                raise pyfuse3.FUSEError(errno.ENOENT if ino is None else errno.EBUSY)
            del NAMES[(parent, name)]
            DIRS.discard(ino)

    opts = set(pyfuse3.default_options) | {"fsname=minimal", "subtype=minimal"}
    pyfuse3.init(Minimal(), sys.argv[1], opts)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
''')


# ---------------------------------------------------------------------------- mounts
class Daemon:
    """A FUSE daemon in a subprocess; stop() always leaves the mount point unmounted."""

    def __init__(self, name, mountpoint, cmd, log, env=None):
        self.name, self.mp, self.cmd, self.log = name, mountpoint, cmd, log
        self.env = dict(os.environ, **env) if env else None
        self.proc = None

    def start(self):
        os.makedirs(self.mp, exist_ok=True)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, cwd=B.ROOT, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, env=self.env)
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mp):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not mount within 30 s")
            time.sleep(0.02)
        return self

    def stop(self):
        if os.path.ismount(self.mp) or is_stale(self.mp):
            if subprocess.run(["fusermount3", "-u", self.mp], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-uz", self.mp], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def p(self, *parts):
        return os.path.join(self.mp, *parts)


def kmemfs_daemon(tmp, name, profile_out=None, options=None):
    mp, log = os.path.join(tmp, name), os.path.join(tmp, name + ".log")
    cmd = [sys.executable]
    if profile_out:
        cmd += ["-m", "cProfile", "-o", profile_out]
    cmd += ["-m", "kmemfs", "mount", mp, "--foreground", "--log", log]
    if options:
        cmd += ["-o", options]
    return Daemon(name, mp, cmd, log)


def minimal_daemon(tmp, name="minimal", args=(), page_cache=False):
    script = os.path.join(tmp, "minimal_fs.py")
    with open(script, "w") as f:
        f.write(MINIMAL_FS)
    mp = os.path.join(tmp, name)
    return Daemon(name, mp, [sys.executable, script, mp, *map(str, args)],
                  os.path.join(tmp, name + ".log"), env={"MINIMAL_PAGE_CACHE": "1"}
                  if page_cache else None)


def safe_rmtree(path):
    """Remove a scratch directory unless something is still mounted below it."""
    with open("/proc/mounts") as f:
        mounted = [ln.split()[1] for ln in f]
    if any(m == path or m.startswith(path + "/") for m in mounted):
        B.say(f"warning: {path} still has a mount below it; left in place")
        return
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- operations
def read_once(path):
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 4096)
    os.close(fd)


def cat(path):
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 65536):
        pass
    os.close(fd)


def timed(op, path, n) -> float:
    """Seconds per op over n calls of op(path)."""
    t = perf()
    for _ in range(n):
        op(path)
    return (perf() - t) / n


def mk_rm(parent, names):
    """mkdir then rmdir every name under parent: (mkdirs/s, rmdirs/s)."""
    paths = [os.path.join(parent, n) for n in names]
    t = perf()
    for p in paths:
        os.mkdir(p)
    mk = len(paths) / (perf() - t)
    t = perf()
    for p in reversed(paths):
        os.rmdir(p)
    return mk, len(paths) / (perf() - t)


def ctl(mount, lines):
    """Run control commands (docs/ctl.md) in writes of under a page, so no line is split."""
    fd = os.open(mount.p(".kmemfs", "ctl"), os.O_RDWR)
    try:
        chunk = []
        for ln in lines + [None]:
            if ln is None or sum(map(len, chunk)) + len(ln) + 1 > 4000:
                if chunk:
                    os.write(fd, "".join(chunk).encode())
                chunk = []
            if ln is not None:
                chunk.append(ln + "\n")
    finally:
        os.close(fd)


LEAF_CACHES = ("dentry", "inode_cache", "task_struct", "size-32", "size-64", "size-128",
               "size-256", "size-512", "vm_area_struct", "anon_vma", "cred_jar", "files_cache",
               "mm_struct", "signal_cache", "sighand_cache", "fs_cache")


def leaf_setup(mount, leaf="/leaf"):
    """The leaf both trees read: some user pages and 16 per-cgroup caches."""
    ctl(mount, [f"charge file 4M cg={leaf}", f"charge anon 1M cg={leaf}"]
        + [f"alloc {c} 100 cg={leaf}" for c in LEAF_CACHES])


def build_tree(mount, n, prog=None):
    """n cgroups in all: n-1 siblings kmemfs_bench_<i> under root, then /leaf. Each sibling
    gets one dentry copy, so the global cache list is long too."""
    names = [f"{BENCH_PREFIX}{i}" for i in range(n - 1)]
    for i, name in enumerate(names):
        os.mkdir(mount.p(name))
        if prog is not None and i % 500 == 499:
            prog.advance(500)
    os.mkdir(mount.p("leaf"))
    ctl(mount, [f"alloc dentry 1 cg=/{name}" for name in names])
    leaf_setup(mount)


# ---------------------------------------------------------------------------- kernel cgroupfs
class KernelCgroups:
    """cgroups under /sys/fs/cgroup/memory/kmemfs_bench_<pid>; removed on cleanup."""

    def __init__(self):
        self.top = os.path.join(KERNEL_MEMCG, f"{BENCH_PREFIX}{os.getpid()}")
        self.ok = False

    def create(self):
        if not os.path.isdir(KERNEL_MEMCG) or not os.path.exists(
                os.path.join(KERNEL_MEMCG, FILE)):
            return False
        try:
            os.mkdir(self.top)
        except OSError as e:
            B.say(f"(kernel cgroupfs unavailable: {e}; its column is skipped)")
            return False
        self.ok = True
        return True

    def cleanup(self):
        if not os.path.isdir(self.top):
            return
        for name in os.listdir(self.top):
            p = os.path.join(self.top, name)
            if name.startswith(BENCH_PREFIX) and os.path.isdir(p):
                _rmdir_retry(p)
        _rmdir_retry(self.top)


def _rmdir_retry(p):
    for _ in range(50):
        try:
            os.rmdir(p)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    B.say(f"warning: could not remove {p}")


# ---------------------------------------------------------------------------- phases
def order(items, r):
    """Round r's order: A, B, C on even rounds, C, B, A on odd ones (no contender always
    runs first or right after another's burst)."""
    return items if r % 2 == 0 else items[::-1]


def paired(xs, ys) -> float:
    """Median over rounds of xs[r] / ys[r]: each round's two numbers were measured moments
    apart, so a disturbance that hits a whole round cancels out."""
    return B.median([x / y for x, y in zip(xs, ys)])


def phase_read(contenders, rounds, n, prog):
    """contenders: [(label, path)]. Returns {label: [seconds per op, one per round]}."""
    for _, path in contenders:
        for _ in range(max(50, n // 10)):      # warm: dentries cached, daemons hot
            read_once(path)
    res = {label: [] for label, _ in contenders}
    for r in range(rounds):
        for label, path in order(contenders, r):
            res[label].append(timed(read_once, path, n))
        prog.advance()
    return res


def phase_mkrm(contenders, rounds, n, prog):
    """contenders: [(label, parent dir)]. Returns {label: ([mkdir/s], [rmdir/s])}."""
    res = {label: ([], []) for label, _ in contenders}
    for r in range(rounds + 1):             # round 0 warms up and is discarded
        for label, parent in order(contenders, r):
            mk, rm = mk_rm(parent, [f"{BENCH_PREFIX}{r}_{i}" for i in range(n)])
            if r:
                res[label][0].append(mk)
                res[label][1].append(rm)
        if r:
            prog.advance()
    return res


def phase_tree(small, big, rounds, n, prog):
    files = ("memory.stat", "memory.kmem.slabinfo")
    cases = [(f, tree, m.p("leaf", f)) for f in files for tree, m in (("1", small), ("N", big))]
    cases += [("memory.stat (root)", tree, m.p("memory.stat"))
              for tree, m in (("1", small), ("N", big))]
    for _, _, path in cases:
        for _ in range(max(20, n // 10)):
            cat(path)
    res = {(f, tree): [] for f, tree, _ in cases}
    for r in range(rounds):
        for f, tree, path in order(cases, r):
            # root's memory.stat walks the whole tree: fewer reads keep the round short
            res[(f, tree)].append(timed(cat, path, n if "root" not in f else max(5, n // 20)))
        prog.advance()
    return res


def run_profile(tmp, workloads, tree_n, quick):
    """A fresh kmemfs under cProfile through the given workloads; the profile's top lines."""
    out = os.path.join(tmp, "kmemfs.prof")
    d = kmemfs_daemon(tmp, "profiled", profile_out=out)
    try:
        d.start()
        n = 2000 if quick else 10000
        if "read" in workloads:
            os.mkdir(d.p("kmemfs_bench_r"))
            for _ in range(n):
                read_once(d.p("kmemfs_bench_r", FILE))
        if "mkrm" in workloads:
            mk_rm(d.mp, [f"{BENCH_PREFIX}p{i}" for i in range(n // 5)])
        if "tree" in workloads:
            build_tree(d, tree_n)
            for _ in range(n // 5):
                cat(d.p("leaf", "memory.stat"))
                cat(d.p("leaf", "memory.kmem.slabinfo"))
    finally:
        d.stop()
    if not os.path.exists(out):
        return "(no profile written: see " + d.log + ")"
    st = pstats.Stats(out)
    total = sum(v[2] for v in st.stats.values())
    handlers = [(k, v) for k, v in st.stats.items()
                if k[0].endswith("fuse/ops.py") and k[2] == "wrapper"]
    calls = sum(v[1] for _, v in handlers)
    own = sum(v[3] for _, v in handlers)
    summary = (f"kmemfs request handlers (fuse.ops._fuse_errors wrapper): {calls:,} calls, "
               f"{own:.3f} s cumulative = {own / total:.0%} of the daemon's {total:.3f} s "
               "profiled time (the rest: pyfuse3 + trio per request, plus start-up)")
    ours = B.stats_text(st, top=15, sort="cumulative",
                        restrict=r"fuse/ops|cgroupfs|engine")
    return (f"{summary}\n\n-- top by own time, whole daemon --\n{B.stats_text(st, top=15)}"
            f"\n\n-- kmemfs code only, by cumulative time --\n{ours}")


SWEEP_N, FIND_BIG = 1_000, 10_000      # cgroups in (d)/(f) and (e)'s two sizes
SWEEP_PAUSE = 1.1                       # seconds idle before each sweep of (d)
SWEEP_FILES = ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.max_usage_in_bytes",
               "memory.failcnt", "memory.kmem.usage_in_bytes", "memory.stat")


def siblings(parent, n, first=0):
    """n empty cgroups kmemfs_bench_s<first..> under parent; their paths."""
    paths = [os.path.join(parent, f"{BENCH_PREFIX}s{i}") for i in range(first, first + n)]
    for p in paths:
        os.mkdir(p)
    return paths


def sweep_once(dirs):
    for d in dirs:
        for f in SWEEP_FILES:
            cat(os.path.join(d, f))


def phase_sweep(contenders, rounds, pause, prog):
    """contenders: [(label, [cgroup dirs])]. Each sweep after `pause` seconds idle.
    Returns {label: [seconds per sweep]}."""
    for _, dirs in contenders:
        sweep_once(dirs)                                # warm: the entries exist
    res = {label: [] for label, _ in contenders}
    for r in range(rounds):
        for label, dirs in order(contenders, r):
            time.sleep(pause)
            t = perf()
            sweep_once(dirs)
            res[label].append(perf() - t)
        prog.advance()
    return res


def find_cat(top) -> float:
    """`find TOP -type f -print0 | xargs -0 cat`: seconds (errors of write-only files and the
    .kmemfs control files are left out of the picture)."""
    t = perf()
    subprocess.run(f"find {top} -path '*/.kmemfs' -prune -o -type f -print0 "
                   "| xargs -0 cat >/dev/null 2>&1", shell=True)
    return perf() - t


def phase_find(contenders, rounds, prog):
    """contenders: [(label, top dir)] -> {label: [seconds]}."""
    res = {label: [] for label, _ in contenders}
    for r in range(rounds):
        for label, top in order(contenders, r):
            res[label].append(find_cat(top))
        prog.advance()
    return res


def top_first_frame(mp) -> float:
    """Wall time of `kmemfs top MP --once` in a fresh process: what a user waits for."""
    t = perf()
    r = subprocess.run([sys.executable, "-m", "kmemfs", "top", mp, "--once"], cwd=B.ROOT,
                       capture_output=True, env=dict(os.environ, COLUMNS="140"))
    took = perf() - t
    if r.returncode:
        raise RuntimeError(f"kmemfs top {mp} --once: {r.stderr.decode()[-300:]}")
    return took


def top_screen(mp, cols=80, lines=24) -> float:
    """Wall time from starting `kmemfs top MP` on a terminal (a pty of cols x lines) to its
    first screen (the caches and events panes drawn): what a user waits for. Then `q`."""
    import pty
    import struct
    import termios
    import fcntl
    t = perf()
    pid, fd = pty.fork()
    if pid == 0:                                     # the child: the pty is its terminal
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", lines, cols, 0, 0))
            os.chdir(B.ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "kmemfs", "top", mp])
        finally:
            os._exit(127)
    out, took = b"", None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:                          # EIO: the child is gone
                break
            if not chunk:
                break
            out += chunk
            if b"caches of" in out and b"events" in out:
                took = perf() - t
                os.write(fd, b"q")
                break
    finally:
        end = time.monotonic() + 5                   # `q` quits; past 5 s, or failed: kill
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if took is None or time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        os.close(fd)
    if took is None:
        raise RuntimeError(f"kmemfs top {mp}: no first screen: {out[-300:]!r}")
    return took


def record_period(mp, seconds, tmp) -> tuple:
    """kmemfs record at --interval 0.1 for `seconds`: (median gap between samples, median
    time one sample takes, samples)."""
    sys.path.insert(0, B.ROOT)
    from kmemfs.tools import record as rec
    out = os.path.join(tmp, "record.jsonl")
    rec.record(mp, out, interval=0.1, duration=seconds, warn=lambda msg: None)
    import json
    with open(out) as f:
        ts = [o["t"] for o in map(json.loads, f) if o["type"] == "sample"]
    took = []
    for _ in range(5):
        t = perf()
        rec.sweep(mp)
        took.append(perf() - t)
    gaps = [b - a for a, b in zip(ts, ts[1:])] or [float("inf")]
    return B.median(gaps), B.median(took), len(ts)


def python_start() -> float:
    """A bare `python -c pass`: the floor under any fresh-process tool."""
    t = perf()
    subprocess.run([sys.executable, "-c", "pass"])
    return perf() - t


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and operations")
    ap.add_argument("--profile", action="store_true",
                    help="always profile a kmemfs daemon through the workloads")
    ap.add_argument("--only", default="abcdef", metavar="PHASES",
                    help="run only these phases, e.g. --only def (default: abcdef)")
    ap.add_argument("--tree", type=int, default=10_000, metavar="N",
                    help="cgroups in the big tree of (c) (default 10,000)")
    ap.add_argument("--cpu", type=int, default=None, metavar="K",
                    help="pin this process and every daemon to CPU K (default: the last CPU "
                         "this process may use)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin: client and daemons float over all CPUs")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_fs.py needs root (FUSE mounts, the kernel cgroupfs)", file=sys.stderr)
        return 2
    if not shutil.which("fusermount3"):
        print("bench_fs.py needs fusermount3 (apt-get install fuse3)", file=sys.stderr)
        return 2
    q = args.quick
    # One CPU for the client and every daemon: each FUSE round trip is then a same-CPU switch.
    # Unpinned, whether the daemon wakes on the other (idle, virtual) CPU decides each
    # request's latency, and that flips between rounds and between daemons.
    pin = "none"
    if not args.no_pin:
        cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pin = f"CPU {cpu}"
    rounds_read, n_read = (7, 300) if q else (41, 500)
    rounds_mk, n_mk = (3, 100) if q else (11, 300)
    rounds_tree, n_tree = (7, 150) if q else (41, 300)
    rounds_sweep, rounds_find = (5, 1) if q else (15, 3)

    # SIGTERM/SIGHUP unwind through the finally blocks like ^C does.
    def _term(sig, frame):
        raise KeyboardInterrupt(signal.Signals(sig).name)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)

    tmp = tempfile.mkdtemp(prefix="kmemfs_bench_")
    kernel = KernelCgroups()
    daemons = []
    only = set(args.only)
    reads = mkrm = tree = sweeps = finds = None
    tools = {}
    B.say(f"kmemfs FUSE benchmarks ({'quick' if q else 'full'} run; {os.cpu_count()} CPUs, "
          f"pinned: {pin}; medians over interleaved rounds)")

    def start(d):
        daemons.append(d)
        return d.start()
    try:
        have_kernel = kernel.create()
        if only & set("ab"):
            km = start(kmemfs_daemon(tmp, "kmemfs"))
            mini = start(minimal_daemon(tmp))
            os.mkdir(km.p("kmemfs_bench_r"))
        if "a" in only:
            contenders = [("kmemfs", km.p("kmemfs_bench_r", FILE)),
                          ("minimal pyfuse3", mini.p("d", FILE))]
            if have_kernel:
                contenders.append(("kernel cgroupfs", os.path.join(kernel.top, FILE)))
            for label, path in contenders:
                with open(path) as f:
                    assert f.read().strip().isdigit(), (label, path)
            with B.progress("(a) read latency", rounds_read) as p:
                reads = phase_read(contenders, rounds_read, n_read, p)
        if "b" in only:
            mk_parents = [("kmemfs", km.mp), ("minimal pyfuse3", mini.mp)]
            if have_kernel:
                mk_parents.append(("kernel cgroupfs", kernel.top))
            with B.progress("(b) mkdir/rmdir", rounds_mk) as p:
                mkrm = phase_mkrm(mk_parents, rounds_mk, n_mk, p)
        if "c" in only:
            small = start(kmemfs_daemon(tmp, "tree1"))
            big = start(kmemfs_daemon(tmp, "treeN"))
            t0 = perf()
            os.mkdir(small.p("leaf"))
            leaf_setup(small)
            with B.progress(f"(c) building a {args.tree:,}-cgroup tree", args.tree) as p:
                build_tree(big, args.tree, p)
            built = perf() - t0
            with B.progress("(c) leaf files", rounds_tree) as p:
                tree = phase_tree(small, big, rounds_tree, n_tree, p)
        if only & set("def"):
            # 1,000 cgroups in each contender (10,000 for (e)'s second size)
            sw = start(kmemfs_daemon(tmp, "sweep"))
            pc = start(kmemfs_daemon(tmp, "sweep_pc", options="page_cache"))
            trees = [("kmemfs", sw.mp), ("kmemfs -o page_cache", pc.mp)]
            if have_kernel:
                trees.append(("kernel cgroupfs", kernel.top))
            dirs = {label: siblings(top, SWEEP_N) for label, top in trees}
            ctl(sw, [f"alloc dentry 1 cg=/{os.path.basename(d)}" for d in dirs["kmemfs"]])
        if "d" in only:
            # the FUSE floor under the sweep: a minimal pyfuse3 fs, the same tree shape and
            # timeouts, so the same 4 requests a file (open, read, read at EOF, release)
            mini = start(minimal_daemon(tmp, "sweep_min", (86400, SWEEP_N, *SWEEP_FILES)))
            dirs["minimal pyfuse3"] = [mini.p(f"{BENCH_PREFIX}s{i}") for i in range(SWEEP_N)]
            # and under -o page_cache: the same 2 requests a file (open, release)
            minpc = start(minimal_daemon(tmp, "sweep_min_pc", (86400, SWEEP_N, *SWEEP_FILES),
                                         page_cache=True))
            dirs["minimal pyfuse3, page cache"] = [minpc.p(f"{BENCH_PREFIX}s{i}")
                                                   for i in range(SWEEP_N)]
            with B.progress(f"(d) sweeps of {SWEEP_N:,} cgroups", rounds_sweep) as p:
                sweeps = phase_sweep(list(dirs.items()), rounds_sweep, SWEEP_PAUSE, p)
        if "f" in only:
            tools["python"] = B.median([python_start() for _ in range(3)])
            for label, top in trees:
                if label == "kmemfs -o page_cache":
                    continue
                tools[("top", label)] = B.median([top_screen(top) for _ in range(3)])
                tools[("top160", label)] = B.median([top_screen(top, 160, 50)
                                                     for _ in range(3)])
                tools[("once", label)] = B.median([top_first_frame(top) for _ in range(3)])
                tools[("record", label)] = record_period(top, 3.0, tmp)
        if "e" in only:
            finds = {}
            fc = [("kmemfs", sw.mp)] + ([("kernel cgroupfs", kernel.top)] if have_kernel else [])
            with B.progress(f"(e) find | xargs cat, {SWEEP_N:,} cgroups", rounds_find) as p:
                finds[SWEEP_N] = phase_find(fc, rounds_find, p)
            for label, top in fc:
                siblings(top, FIND_BIG - SWEEP_N, first=SWEEP_N)
            with B.progress(f"(e) find | xargs cat, {FIND_BIG:,} cgroups", rounds_find) as p:
                finds[FIND_BIG] = phase_find(fc, rounds_find, p)
    finally:
        for d in daemons:
            d.stop()
        kernel.cleanup()

    # ------------------------------------------------------------------ report
    missed, profile_for = [], set()
    if reads:
        rows = []
        for label, xs in reads.items():
            m = B.median(xs)
            ratio = paired(xs, reads["minimal pyfuse3"])
            if label == "kmemfs":
                res = B.verdict(ratio <= 1.25)
                if ratio > 1.25:
                    missed.append("(a) read latency")
                    profile_for.add("read")
                tgt = "<= 1.25x"
            else:
                res, tgt = "-", "-"
            rows.append([label, B.fmt_time(m), f"{ratio:.2f}x", tgt, res, B.spread(xs)])
        B.table(f"(a) open+read+close {FILE} ({rounds_read} rounds x {n_read}; ratio to the "
                "minimal pyfuse3 fs)", ["contender", "per op", "ratio", "target", "result",
                                        "spread"], rows)

    if mkrm:
        rows = []
        kern = mkrm.get("kernel cgroupfs")
        for label, (mks, rms) in mkrm.items():
            for what, xs, kx in (("mkdir", mks, kern[0] if kern else None),
                                 ("rmdir", rms, kern[1] if kern else None)):
                m = B.median(xs)
                r = paired(xs, kx) if kx else None
                ratio = f"{r:.2f}x" if kx else "-"
                if label == "kmemfs" and kx:
                    ok = r >= 1.0
                    if not ok:
                        missed.append(f"(b) {what}")
                        profile_for.add("mkrm")
                    rows.append([f"{what} {label}", B.fmt_rate(m), ratio, ">= 1.00x",
                                 B.verdict(ok), B.spread(xs)])
                else:
                    note = " (FUSE floor)" if label.startswith("minimal") else ""
                    rows.append([f"{what} {label}{note}", B.fmt_rate(m), ratio, "-", "-",
                                 B.spread(xs)])
        B.table(f"(b) mkdir / rmdir ({rounds_mk} rounds x {n_mk} cgroups; rate ratio to the "
                "kernel)", ["operation", "rate", "ratio", "target", "result", "spread"], rows)

    if tree:
        rows = []
        for f in ("memory.stat", "memory.kmem.slabinfo", "memory.stat (root)"):
            one, many = B.median(tree[(f, "1")]), B.median(tree[(f, "N")])
            ratio = paired(tree[(f, "N")], tree[(f, "1")])
            if "root" in f:
                res, tgt = "-", "(info)"
            else:
                ok = ratio <= 1.2
                res, tgt = B.verdict(ok), "<= 1.20x"
                if not ok:
                    missed.append(f"(c) {f}")
                    profile_for.add("tree")
            rows.append([f"cat leaf {f}" if "root" not in f else "cat root memory.stat",
                         B.fmt_time(one), B.fmt_time(many), f"{ratio:.2f}x", tgt, res,
                         f"{B.spread(tree[(f, '1')])} / {B.spread(tree[(f, 'N')])}"])
        root, leaf = tree[("memory.stat (root)", "N")], tree[("memory.stat", "N")]
        ratio = paired(root, leaf)
        if ratio > 1.2:
            missed.append("(c) root memory.stat vs a leaf's")
        rows.append([f"root vs leaf memory.stat, both at {args.tree:,}", B.fmt_time(B.median(leaf)),
                     B.fmt_time(B.median(root)), f"{ratio:.2f}x", "<= 1.20x",
                     B.verdict(ratio <= 1.2), ""])
        B.table(f"(c) cat in a tree of 1 vs {args.tree:,} cgroups ({rounds_tree} rounds x {n_tree})",
                ["file", "1 cgroup", f"{args.tree:,} cgroups", "ratio", "target", "result",
                 "spread 1 / N"], rows)
        B.say(f"(building the {args.tree:,}-cgroup tree through FUSE took {built:.1f} s)")

    if sweeps:
        rows = []
        kern = sweeps.get("kernel cgroupfs")
        for label, xs in sweeps.items():
            r = paired(xs, kern) if kern else None
            target = {"kmemfs": 20.0, "kmemfs -o page_cache": 10.0}.get(label)
            ok = r is not None and target is not None and r <= target
            if target and r is not None and not ok:
                missed.append(f"(d) sweep, {label}")
            floor = paired(xs, sweeps["minimal pyfuse3, page cache" if "page" in label
                                      else "minimal pyfuse3"])
            rows.append([label, B.fmt_time(B.median(xs)),
                         f"{B.median(xs) / (SWEEP_N * len(SWEEP_FILES)) * 1e6:.1f} us",
                         f"{r:.1f}x" if r else "-", f"{floor:.2f}x",
                         f"<= {target:g}x" if target else "-",
                         B.verdict(ok) if target and r is not None else "-", B.spread(xs)])
        B.table(f"(d) sweep: {len(SWEEP_FILES)} files x {SWEEP_N:,} cgroups, each after "
                f"{SWEEP_PAUSE} s idle ({rounds_sweep} rounds; ratios to the kernel and "
                "to the minimal pyfuse3 fs making the same requests)",
                ["contender", "per sweep", "per file", "ratio", "x floor", "target", "result",
                 "spread"], rows)
    if finds:
        rows = []
        for n, res in finds.items():
            kern = res.get("kernel cgroupfs")
            for label, xs in res.items():
                r = paired(xs, kern) if kern else None
                rows.append([f"{label}, {n:,} cgroups", B.fmt_time(B.median(xs)),
                             f"{r:.1f}x" if r else "-"])
        B.table(f"(e) find MP -type f | xargs cat ({rounds_find} round(s); ratio to the "
                "kernel)", ["contender", "time", "ratio"], rows)
    if tools:
        rows = [["python -c pass (the floor of a fresh process)",
                 B.fmt_time(tools["python"]), "-", "-"]]
        for key, v in tools.items():
            if key == "python":
                continue
            what, label = key
            on_kmemfs = label == "kmemfs"
            if what in ("top", "top160"):
                ok = v <= 0.5
                size = "80x24" if what == "top" else "160x50"
                rows.append([f"kmemfs top, first screen on a {size} terminal, {label}",
                             B.fmt_time(v), "<= 0.5 s" if on_kmemfs else "-",
                             B.verdict(ok) if on_kmemfs else "-"])
                if on_kmemfs and not ok:
                    missed.append(f"(f) top first screen {size}")
            elif what == "once":
                rows.append([f"kmemfs top --once (every row, {SWEEP_N + 1:,}), {label}",
                             B.fmt_time(v), "-", "-"])
            else:
                gap, took, n = v
                ok = gap <= 0.1 * 1.1          # the scheduler's slack on a 0.1 s tick
                rows.append([f"kmemfs record --interval 0.1, {label}: period "
                             f"(one sample takes {B.fmt_time(took)}; {n} samples in 3 s)",
                             B.fmt_time(gap), "0.1 s" if on_kmemfs else "-",
                             B.verdict(ok) if on_kmemfs else "-"])
                if on_kmemfs and not ok:
                    missed.append("(f) record period")
        B.table(f"(f) kmemfs's tools at {SWEEP_N:,} cgroups", ["what", "time", "target",
                                                                "result"], rows)

    if args.profile:
        profile_for = {"read", "mkrm", "tree"}
    if profile_for:
        B.say(f"\nprofiling a kmemfs daemon under cProfile through: {', '.join(sorted(profile_for))}")
        tmp2 = tempfile.mkdtemp(prefix="kmemfs_bench_prof_")
        try:
            B.say(run_profile(tmp2, profile_for, args.tree, q))
        finally:
            safe_rmtree(tmp2)
    B.say(f"\n{len(missed)} target(s) missed" + (f": {', '.join(missed)}" if missed else ""))
    safe_rmtree(tmp)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
