#!/usr/bin/env python3
"""Benchmark kmemfs through FUSE, side by side with a minimal pyfuse3 file system and the
real kernel cgroup v1 memory controller, in one run.

    .venv/bin/python scripts/bench_fs.py [--quick] [--profile] [--tree N]

  (a) open+read+close of memory.usage_in_bytes: kmemfs vs a minimal pyfuse3 fs serving one
      constant file (same options: direct_io, entry/attr timeout 1 s, default_permissions)
      vs /sys/fs/cgroup/memory/kmemfs_bench_<pid>/. Target: kmemfs <= 1.25x the minimal fs.
  (b) mkdir and rmdir rates, kmemfs vs the kernel. Target: kmemfs at least as fast.
  (c) cat (open, read to EOF, close) of a leaf's memory.stat and memory.kmem.slabinfo in a
      kmemfs tree of 1 cgroup and one of N (default 10,000) cgroups. Target: <= 1.2x.

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
    NEXT = itertools.count(4)

    class Minimal(pyfuse3.Operations):
        def attr(self, ino):
            e = pyfuse3.EntryAttributes()
            e.st_ino = ino
            e.st_mode = (stat.S_IFDIR | 0o755) if ino in DIRS else (stat.S_IFREG | 0o444)
            e.st_nlink = 2 if ino in DIRS else 1
            e.st_blksize = 4096
            e.entry_timeout = e.attr_timeout = 1.0
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
            if inode != FILE:
                raise pyfuse3.FUSEError(errno.EISDIR)
            return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

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

    def __init__(self, name, mountpoint, cmd, log):
        self.name, self.mp, self.cmd, self.log = name, mountpoint, cmd, log
        self.proc = None

    def start(self):
        os.makedirs(self.mp, exist_ok=True)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, cwd=B.ROOT, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf)
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


def kmemfs_daemon(tmp, name, profile_out=None):
    mp, log = os.path.join(tmp, name), os.path.join(tmp, name + ".log")
    cmd = [sys.executable]
    if profile_out:
        cmd += ["-m", "cProfile", "-o", profile_out]
    cmd += ["-m", "kmemfs", "mount", mp, "--foreground", "--log", log]
    return Daemon(name, mp, cmd, log)


def minimal_daemon(tmp):
    script = os.path.join(tmp, "minimal_fs.py")
    with open(script, "w") as f:
        f.write(MINIMAL_FS)
    mp = os.path.join(tmp, "minimal")
    return Daemon("minimal", mp, [sys.executable, script, mp], os.path.join(tmp, "minimal.log"))


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


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and operations")
    ap.add_argument("--profile", action="store_true",
                    help="always profile a kmemfs daemon through the workloads")
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

    # SIGTERM/SIGHUP unwind through the finally blocks like ^C does.
    def _term(sig, frame):
        raise KeyboardInterrupt(signal.Signals(sig).name)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)

    tmp = tempfile.mkdtemp(prefix="kmemfs_bench_")
    kernel = KernelCgroups()
    daemons = []
    B.say(f"kmemfs FUSE benchmarks ({'quick' if q else 'full'} run; {os.cpu_count()} CPUs, "
          f"pinned: {pin}; medians over interleaved rounds)")
    try:
        have_kernel = kernel.create()
        km = kmemfs_daemon(tmp, "kmemfs")
        mini = minimal_daemon(tmp)
        small = kmemfs_daemon(tmp, "tree1")
        big = kmemfs_daemon(tmp, "treeN")
        for d in (km, mini, small, big):
            daemons.append(d)
            d.start()
        os.mkdir(km.p("kmemfs_bench_r"))
        contenders = [("kmemfs", km.p("kmemfs_bench_r", FILE)),
                      ("minimal pyfuse3", mini.p("d", FILE))]
        if have_kernel:
            contenders.append(("kernel cgroupfs", os.path.join(kernel.top, FILE)))
        for label, path in contenders:
            with open(path) as f:
                assert f.read().strip().isdigit(), (label, path)

        with B.progress("(a) read latency", rounds_read) as p:
            reads = phase_read(contenders, rounds_read, n_read, p)
        mk_parents = [("kmemfs", km.mp), ("minimal pyfuse3", mini.mp)]
        if have_kernel:
            mk_parents.append(("kernel cgroupfs", kernel.top))
        with B.progress("(b) mkdir/rmdir", rounds_mk) as p:
            mkrm = phase_mkrm(mk_parents, rounds_mk, n_mk, p)
        t0 = perf()
        os.mkdir(small.p("leaf"))
        leaf_setup(small)
        with B.progress(f"(c) building a {args.tree:,}-cgroup tree", args.tree) as p:
            build_tree(big, args.tree, p)
        built = perf() - t0
        with B.progress("(c) leaf files", rounds_tree) as p:
            tree = phase_tree(small, big, rounds_tree, n_tree, p)
    finally:
        for d in daemons:
            d.stop()
        kernel.cleanup()

    # ------------------------------------------------------------------ report
    missed, profile_for = [], set()
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
    B.table(f"(c) cat in a tree of 1 vs {args.tree:,} cgroups ({rounds_tree} rounds x {n_tree})",
            ["file", "1 cgroup", f"{args.tree:,} cgroups", "ratio", "target", "result",
             "spread 1 / N"], rows)
    B.say(f"(building the {args.tree:,}-cgroup tree through FUSE took {built:.1f} s)")

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
