#!/usr/bin/env python3
"""Fuzz kmemfs through its mount: hostile writes to every control file, reads at odd offsets,
valid and malformed control commands, tree operations with odd names. Every answer is judged
by an oracle built from docs/semantics.md and docs/ctl.md (the errnos each file may give, and
exact expectations where they are cheap to compute); `check` runs every --check-every steps
and at the end; the daemon must stay alive and the mount must answer.

    scripts/fuzz.py [--ops N] [--seconds S] [--seed N] [--inprocess] [MOUNTPOINT]

With no MOUNTPOINT a kmemfs of our own is mounted in a temp dir (small caps so they are hit)
and always unmounted. --inprocess fuzzes the cgroupfs layer directly (no FUSE): the same
operations and oracle, much faster. Exit status 0 when nothing was found.
"""
import argparse
import errno
import os
import random
import re
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

E = errno
U64 = (1 << 64) - 1
RESOURCE_MAX = (1 << 63) - 1
SPACE = b" \t\n\v\f\r\xa0"          # the kernel's isspace(), 0xA0 included
NAME_MAX = 255
SIM_PID_BASE = 5_000_000
OWN_MOUNT_OPTIONS = ("max_memcgs=48", "max_tasks=300", "max_objects=50000")

# ---------------------------------------------------------------------------------- oracle
# file -> (kind, errnos its handler may give once the value parsed). Kinds: "u64"
# (cgroup_write_X64), "mem" (string + memparse), "string", "trigger", "ro" (read-only).
# From docs/semantics.md §8, §9, §12, §14.
FILES = {
    "tasks": ("u64", {E.ESRCH, E.ENOMEM}),
    "cgroup.procs": ("u64", {E.ESRCH, E.ENOMEM}),
    "notify_on_release": ("u64", set()),
    "cgroup.event_control": ("event", {E.EINVAL, E.EBADF}),
    "cgroup.clone_children": ("u64", set()),
    "release_agent": ("string", set()),
    "memory.usage_in_bytes": ("ro", None),
    "memory.max_usage_in_bytes": ("trigger", set()),
    "memory.limit_in_bytes": ("mem", {E.EINVAL, E.EBUSY}),
    "memory.soft_limit_in_bytes": ("mem", set()),
    "memory.failcnt": ("trigger", set()),
    "memory.stat": ("ro", None),
    "memory.force_empty": ("trigger", {E.EBUSY, E.EINTR}),
    "memory.use_hierarchy": ("u64", {E.EINVAL, E.EBUSY}),
    "memory.swappiness": ("u64", {E.EINVAL}),
    "memory.move_charge_at_immigrate": ("u64", set()),
    "memory.oom_control": ("u64", {E.EINVAL}),
    "memory.numa_stat": ("ro", None),
    "memory.memsw.usage_in_bytes": ("ro", None),
    "memory.memsw.max_usage_in_bytes": ("trigger", set()),
    "memory.memsw.limit_in_bytes": ("mem", {E.EINVAL, E.EBUSY}),
    "memory.memsw.failcnt": ("trigger", set()),
    "memory.kmem.tcp.limit_in_bytes": ("mem", set()),
    "memory.kmem.tcp.usage_in_bytes": ("ro", None),
    "memory.kmem.tcp.failcnt": ("trigger", set()),
    "memory.kmem.tcp.max_usage_in_bytes": ("trigger", set()),
    "memory.kmem.usage_in_bytes": ("ro", None),
    "memory.kmem.limit_in_bytes": ("mem", {E.EINVAL, E.EBUSY}),
    "memory.kmem.independent_kmem_limit": ("u64", set()),
    "memory.kmem.slabinfo": ("ro", None),
}
WRITE_ONLY = {"cgroup.event_control", "memory.force_empty"}
ROOT_EINVAL = {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
               "memory.kmem.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes",
               "memory.swappiness", "memory.oom_control"}
CTL_ERRNOS = {E.EINVAL, E.ENOENT, E.ESRCH, E.ENOMEM, E.E2BIG, E.ENOSPC}
CTL_NAMES = {"EINVAL": E.EINVAL, "ENOENT": E.ENOENT, "ESRCH": E.ESRCH, "ENOMEM": E.ENOMEM,
             "E2BIG": E.E2BIG, "EINTR": E.EINTR, "ENOSPC": E.ENOSPC, "ENODEV": E.ENODEV,
             "EBUSY": E.EBUSY, "EIO": E.EIO}
VERBS = ("alloc", "free", "kmalloc", "kfree", "charge", "uncharge", "spawn", "exit", "touch",
         "unlink", "drop_caches", "reap", "workqueue", "check")


def strtoull(s: bytes):
    """simple_strtoull base 0: (value mod 2^64, bytes consumed)."""
    base, i = 10, 0
    if s[:1] == b"0":
        base = 8
        if s[1:2] in (b"x", b"X") and s[2:3] and s[2:3] in b"0123456789abcdefABCDEF":
            base, i = 16, 2
    val = 0
    while i < len(s):
        d = int(chr(s[i]), 36) if chr(s[i]).isalnum() and chr(s[i]).isascii() else 99
        if d >= base:
            break
        val = (val * base + d) & U64
        i += 1
    return val, i


def cstr(buf: bytes) -> bytes:
    return buf.split(b"\0", 1)[0].strip(SPACE)


def parse_u64(buf: bytes):
    """cgroup_write_X64 -> (errno or None, value)."""
    if not buf:
        return E.EINVAL, None
    if len(buf) >= 64:
        return E.E2BIG, None
    s = cstr(buf)
    val, i = strtoull(s)
    return (None, val) if i == len(s) else (E.EINVAL, None)


def parse_mem(buf: bytes, page: int = 4096):
    """cgroup_write_string (63) + res_counter_memparse_write_strategy -> (errno, value)."""
    if len(buf) >= 63:
        return E.E2BIG, None
    s = cstr(buf)
    if s[:1] == b"-":
        val, i = _dec(s[1:])
        return (None, RESOURCE_MAX) if (val == 1 and i == len(s) - 1) else (E.EINVAL, None)
    val, i = strtoull(s)
    shift = {b"k": 10, b"m": 20, b"g": 30}.get(s[i:i + 1].lower())
    if shift:
        val, i = (val << shift) & U64, i + 1
    if i != len(s):
        return E.EINVAL, None
    return None, (val + page - 1) & ~(page - 1) & U64


def _dec(s: bytes):
    i, val = 0, 0
    while i < len(s) and 48 <= s[i] <= 57:
        val = (val * 10 + s[i] - 48) & U64
        i += 1
    return val, i


class Expect:
    """An exact errno (None = success) or a set of allowed errnos (None inside = success)."""

    def __init__(self, exact=..., allowed=None, why=""):
        self.exact, self.allowed, self.why = exact, allowed, why

    def ok(self, err) -> bool:
        if self.exact is not ...:
            return err == self.exact
        return err in self.allowed

    def __str__(self):
        if self.exact is not ...:
            return harness.errname(self.exact)
        return "{" + ",".join(sorted(harness.errname(e) for e in self.allowed)) + "}"


def exact(err, why=""):
    return Expect(err, why=why)


def allowed(errs, why=""):
    return Expect(allowed=set(errs) | {None}, why=why)


def write_expect(name: str, is_root: bool, data: bytes, removed: bool):
    """What a write of `data` to control file `name` may answer; and the value read back
    after a success (None: not checked)."""
    kind, errs = FILES[name]
    if not data:
        return exact(None, "FUSE sends no request for a 0-byte write"), None
    if removed:
        return exact(E.ENODEV, "file of a removed cgroup"), None
    if kind == "ro":
        return exact(E.EINVAL, "read-only file"), None
    if kind == "trigger":
        return allowed(errs, "trigger: content ignored"), None
    if kind == "u64":
        err, val = parse_u64(data)
        if err:
            return exact(err, "u64 parse"), None
        if name in ("notify_on_release", "cgroup.clone_children",
                    "memory.kmem.independent_kmem_limit"):
            return exact(None), b"%d\n" % bool(val)
        if name == "memory.move_charge_at_immigrate":
            return (exact(None), b"%d\n" % val) if val < 4 else (exact(E.EINVAL, ">= 4"), None)
        if name == "memory.swappiness":
            if is_root or val > 100:
                return exact(E.EINVAL, "root or > 100"), None
            return allowed(errs), b"%d\n" % val
        if name == "memory.oom_control":
            if is_root or val > 1:
                return exact(E.EINVAL, "root or not 0/1"), None
            return allowed(errs), None
        if name == "memory.use_hierarchy":
            if val > 1:
                return exact(E.EINVAL, "not 0/1"), None
            return allowed(errs), b"%d\n" % val
        if name in ("tasks", "cgroup.procs") and val >= 1 << 31:
            return exact(E.ESRCH, "pid >= 2^31"), None
        return allowed(errs), None
    if kind == "event":
        if len(data) >= 63:
            return exact(E.E2BIG, "string >= 63 bytes"), None
        return allowed(errs), None
    if kind == "string":     # release_agent: PATH_MAX
        if len(data) >= 4096:
            return exact(E.E2BIG, "release_agent >= 4096 bytes"), None
        return exact(None), cstr(data) + b"\n"
    # "mem": limits (root refused before parsing, 3.3.8 mem_cgroup_write), then memparse
    if len(data) >= 63:
        return exact(E.E2BIG, "string >= 63 bytes"), None
    if is_root and name in ROOT_EINVAL:
        return exact(E.EINVAL, "no limits on root"), None
    err, val = parse_mem(data)
    if err:
        return exact(err, "memparse"), None
    if name == "memory.soft_limit_in_bytes":
        return exact(None), b"%d\n" % val
    if name == "memory.kmem.tcp.limit_in_bytes":
        return exact(None), b"%d\n" % min(val, RESOURCE_MAX)
    return allowed(errs), b"%d\n" % val


# ---------------------------------------------------------------------------------- model
class Node:
    def __init__(self, name: bytes, parent=None):
        self.name, self.parent, self.children, self.removed = name, parent, {}, False

    @property
    def is_root(self):
        return self.parent is None

    def path(self) -> bytes:
        parts, n = [], self
        while n.parent is not None:
            parts.append(n.name)
            n = n.parent
        return b"/".join(reversed(parts))

    def walk(self):
        yield self
        for c in list(self.children.values()):
            yield from c.walk()


# ---------------------------------------------------------------------------------- backends
class FuseBackend:
    """Operations through the mount, as any program does them."""
    vfs = True

    def __init__(self, mountpoint: str):
        self.mp = os.fsencode(mountpoint)

    def p(self, rel: bytes) -> bytes:
        return self.mp + b"/" + rel if rel else self.mp

    def open(self, rel, flags):
        return os.open(self.p(rel), flags)

    def close(self, fd):
        os.close(fd)

    def pwrite(self, fd, data, off):
        return os.pwrite(fd, data, off) if off else os.write(fd, data)

    def pread(self, fd, size, off):
        return os.pread(fd, size, off)

    def read_all(self, fd):
        out = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return out
            out += chunk

    def mkdir(self, rel):
        os.mkdir(self.p(rel))

    def rmdir(self, rel):
        os.rmdir(self.p(rel))

    def rename(self, a, b):
        os.rename(self.p(a), self.p(b))

    def listdir(self, rel):
        return os.listdir(self.p(rel))

    def create(self, rel):
        os.close(os.open(self.p(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    def unlink(self, rel):
        os.unlink(self.p(rel))

    def symlink(self, rel):
        os.symlink(b"target", self.p(rel))

    def link(self, a, b):
        os.link(self.p(a), self.p(b))

    def mkfifo(self, rel):
        os.mkfifo(self.p(rel))

    def responds(self):
        os.stat(self.mp)
        os.listdir(self.mp)


class InProcBackend:
    """The cgroupfs layer called directly, with what the kernel's VFS and FUSE do in front
    of the daemon emulated (0-byte writes, a rename onto itself, a dir onto a file)."""
    vfs = False

    def __init__(self, fs, relieve):
        from kmemfs.cgroupfs.tree import Request
        self.fs, self.relieve = fs, relieve
        self.req = Request(os.getpid(), 0, 0)
        self.crashes = []

    def _call(self, fn, *args):
        from kmemfs.engine import EngineError
        try:
            return fn(*args)
        except EngineError as e:
            raise OSError(e.errno, e.message) from None
        except Exception as e:          # what fuse.ops turns into EIO + a log line
            self.crashes.append(traceback.format_exc())
            raise OSError(E.EIO, f"crash: {type(e).__name__}: {e}") from None

    def ino(self, rel):
        ino = 1
        for part in filter(None, rel.split(b"/")):
            ino = self._call(self.fs.lookup, ino, os.fsdecode(part)).ino
        return ino

    def split(self, rel):
        head, _, tail = rel.rpartition(b"/")
        return self.ino(head), os.fsdecode(tail)

    def open(self, rel, flags):
        return self._call(self.fs.open, self.ino(rel), self.req)

    def close(self, fh):
        self.fs.release(fh)

    def pwrite(self, fh, data, off):
        if not data:
            return 0
        r = self._call(self.fs.write, fh, off, data, self.req)
        while not isinstance(r, int):        # a ctl write sleeping on a memcg OOM
            seq = self.fs.engine.oom_wake_seq
            self.relieve()
            if self.fs.engine.oom_wake_seq == seq:
                r.cancel()
                raise OSError(E.EINTR, "not relieved")
            r = self._call(r.resume)
        return r

    def pread(self, fh, size, off):
        return self._call(self.fs.read, fh, off, size)

    def read_all(self, fh):
        out = b""
        while True:
            chunk = self.pread(fh, 65536, len(out))
            if not chunk:
                return out
            out += chunk

    def mkdir(self, rel):
        p, name = self.split(rel)
        self._call(self.fs.mkdir, p, name, self.req)

    def rmdir(self, rel):
        p, name = self.split(rel)
        self._call(self.fs.rmdir, p, name)

    def rename(self, a, b):
        if a == b:
            return
        if len(b.rpartition(b"/")[2]) > 255:
            raise OSError(E.ENAMETOOLONG, "lookup of the new name")
        if b.startswith(a + b"/"):
            raise OSError(E.EINVAL, "VFS: into its own subtree")
        pa, na = self.split(a)
        pb, nb = self.split(b)
        try:
            target = self._call(self.fs.lookup, pb, nb)
        except OSError:
            target = None
        if target is not None and not target.mode & 0o040000:
            raise OSError(E.ENOTDIR, "VFS: a directory onto a file")
        self._call(self.fs.rename, pa, na, pb, nb)

    def listdir(self, rel):
        return [n for n, _ in self._call(self.fs.readdir, self.ino(rel))]

    def responds(self):
        self.fs.getattr(1)


# ---------------------------------------------------------------------------------- fuzzer
class Fuzzer:
    def __init__(self, backend, seed=0, check_every=50, log=None, daemon=None):
        self.b = backend
        self.rng = random.Random(seed)
        self.check_every = check_every
        self.log = log
        self.daemon = daemon           # pid of the daemon (FUSE), or None
        self.ops = 0
        self.counts = {}               # op kind -> n
        self.errnos = {}               # (kind, errno name) -> n
        self.violations = []
        self.checks = 0
        self.reliefs = 0
        self.events_registered = 0
        self.sim_pids = []
        self.fds = []                  # (fd, node, file name) kept open across steps
        self.busy = None               # (started, description) of the running op
        self.dead = False
        self.config = {}
        self.caches = []
        self.ctl_fd = None
        self.eventfds = []

    # ------------------------------------------------------------------ set-up
    def setup(self):
        fd = self.b.open(b".kmemfs/config", os.O_RDONLY)
        for line in self.b.read_all(fd).decode().splitlines():
            k, _, v = line.partition(" ")
            self.config[k] = v
        self.b.close(fd)
        fd = self.b.open(b".kmemfs/slabinfo", os.O_RDONLY)
        names = [ln.split()[0] for ln in self.b.read_all(fd).decode().splitlines()[2:]]
        self.b.close(fd)
        self.caches = [n for n in names if "(" not in n or n.endswith("(DMA)")]
        self.swap = self.config.get("swap_account") == "1"
        self.max_memcgs = int(self.config.get("max_memcgs", 65535))
        self.max_objects = int(self.config.get("max_objects", 100_000_000))
        self.root = Node(b"")
        self._load(self.root)
        self.ctl_fd = self.b.open(b".kmemfs/ctl", os.O_RDWR)

    def _load(self, node):
        for name in self.b.listdir(node.path()):
            name = os.fsencode(name)
            if os.fsdecode(name) not in FILES:
                child = node.children[name] = Node(name, node)
                self._load(child)

    def files_of(self, node):
        return [f for f in FILES if (self.swap or ".memsw." not in f)
                and (f != "release_agent" or node.is_root)]

    def live(self):
        return list(self.root.walk())

    # ------------------------------------------------------------------ bookkeeping
    def judge(self, kind, what, err, expect, extra=""):
        self.errnos[(kind, harness.errname(err))] = self.errnos.get(
            (kind, harness.errname(err)), 0) + 1
        if err == E.ENOTCONN or (self.daemon and not harness.alive(self.daemon)):
            self.dead = True
            self.violate(f"daemon gone during {kind} {what!r}")
            return
        if not expect.ok(err):
            self.violate(f"{kind} {what!r}: got {harness.errname(err)}, expected {expect}"
                         + (f" ({expect.why})" if expect.why else "") + extra)

    def violate(self, text):
        self.violations.append(f"op {self.ops}: {text}")
        if self.log:
            self.log(f"VIOLATION {self.violations[-1]}")

    def attempt(self, fn, *args):
        try:
            return None, fn(*args)
        except OSError as e:
            return e.errno, None

    # ------------------------------------------------------------------ values
    def value(self, name=""):
        r = self.rng
        own = os.getpid()
        pick = r.randrange(24)
        if pick == 0:
            return r.choice([b"0", b"1", b"2", b"3", b"4", b"60", b"100", b"101", b"0\n", b"1\n"])
        if pick == 1:
            return r.choice([b"-1", b"-01", b"-2", b"-", b"--1", b"-1K", b"-0", b" -1 \n", b"-1x"])
        if pick == 2:
            return b"%d" % r.randrange(1 << 64)
        if pick == 3:
            return b"%d" % (r.choice([1 << 64, 1 << 65, 10 ** 30, (1 << 64) + 4096])
                            + r.randrange(10))
        if pick == 4:
            return r.choice([b"0x10", b"0X1f", b"0x", b"0xg", b"0777", b"09", b"0b1", b"00",
                             b"0x" + b"f" * 17, b"0" * 40 + b"1"])
        if pick == 5:
            return (b"%d" % r.choice([1, 4, 64, 512, 4096, 65536]) +
                    r.choice([b"K", b"k", b"M", b"m", b"G", b"g", b"T", b"P", b"E", b"KB",
                              b"KK", b"K\n", b" K", b""]))
        if pick == 6:
            return r.choice([b"", b" ", b"\n", b"\t1\n", b" 1 ", b"\xa01\xa0", b"\xa0",
                             b"1\n\n", b"\v\f1\r", b"\n" * 62 + b"1", b"1" + b" " * 70])
        if pick == 7:
            return r.choice([b"1\x002", b"\x00", b"1\x00junk", b"\x001", b"64M\x00",
                             b"\x00" * 100])
        if pick == 8:
            return r.choice([b"1\n2\n", b"0\n1", b"64M\n128M\n", b"1\r\n", b"a\nb"])
        if pick == 9:
            n = r.choice([0, 1, 2, 62, 63, 64, 65, 100, 4095, 4096, 4097, 8192,
                          r.randrange(8193)])
            return bytes(r.randrange(256) for _ in range(n)) if n < 300 else \
                r.randbytes(n)
        if pick == 10:
            pids = [own, 0, 1, os.getppid(), self.daemon or 1, 1 << 31, (1 << 31) - 1,
                    4194304, 999999999] + self.sim_pids[-5:]
            return b"%d" % r.choice(pids)
        if pick == 11:
            n = r.choice([61, 62, 63, 64, 65])
            return b"1" * n
        if pick == 12:
            return b" " * r.choice([30, 61, 62]) + b"1"
        if pick == 13:
            return r.choice(["１".encode(), "²".encode(), "٣".encode(), "1\u2028".encode(),
                             "64Ｍ".encode(), "é".encode()])
        if pick == 14:
            return r.choice([b"%d %d" % (r.randrange(10), r.randrange(10)),
                             b"%d %d 1M" % (r.randrange(10), r.randrange(10)),
                             b"3 4 x", b"3", b"3 ", b" 3 4", b"-1 -1", b"99999999999 1"])
        if pick == 15:
            return b"%d%s" % (r.randrange(1, 1 << 20),
                              r.choice([b"", b"K", b"M", b"G", b"k"]))
        return b"%d" % r.choice([0, 1, 4096, 4097, 1 << 20, 64 << 20, 1 << 30, RESOURCE_MAX,
                                 RESOURCE_MAX + 1, U64, 2 ** 62, r.randrange(1 << 40)])

    def name(self):
        r = self.rng
        pick = r.randrange(16)
        if pick < 6:
            return r.choice([b"a", b"b", b"c", b"web", b"jail", b"x"])
        return r.choice([
            b"x y", "café".encode(), "😀".encode(), b"\xff\xfe", b"a\nb", b"dentry(x)dead",
            b"(", b"-", b"tasks", b"memory.stat", b"release_agent", b".kmemfs", b"n" * 255,
            b"n" * 256, "é".encode() * 127, "é".encode() * 128, b"\x01\x7f", b"'\"$`",
            b"memory.memsw.usage_in_bytes", b"%s%n", b"a" * 17 + b"b"])

    # ------------------------------------------------------------------ operations
    def step(self):
        r = self.rng
        ops = ((self.op_write, 34), (self.op_read, 18), (self.op_ctl, 22), (self.op_tree, 16),
               (self.op_listdir, 4), (self.op_event, 2), (self.op_misc, 4))
        fn = r.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]
        self.ops += 1
        self.counts[fn.__name__[3:]] = self.counts.get(fn.__name__[3:], 0) + 1
        fn()

    def run_op(self, desc, fn, *args):
        self.busy = (time.monotonic(), desc)
        try:
            return self.attempt(fn, *args)
        finally:
            self.busy = None

    def pick_file(self):
        """(fd or None, node, name, removed): an fd kept from before (maybe of a removed
        cgroup), or a fresh path."""
        r = self.rng
        if self.fds and r.random() < 0.3:
            fd, node, name = r.choice(self.fds)
            return fd, node, name, node.removed
        node = r.choice(self.live())
        return None, node, r.choice(self.files_of(node)), False

    def keep(self, fd, node, name):
        self.fds.append((fd, node, name))
        if len(self.fds) > 24:
            old = self.fds.pop(0)[0]
            self.attempt(self.b.close, old)

    def open_file(self, node, name, flags):
        err, fd = self.run_op(f"open {name}", self.b.open,
                              (node.path() + b"/" if node.path() else b"") + name.encode(),
                              flags)
        if err:
            self.judge("open", name, err, exact(None))
        return fd

    def op_write(self):
        r = self.rng
        fd, node, name, removed = self.pick_file()
        fresh = fd is None
        if fresh:
            fd = self.open_file(node, name, os.O_RDWR)
            if fd is None:
                return
        data = self.value(name)
        off = 0 if r.random() < 0.7 else r.choice([1, 7, 4096, r.randrange(1 << 20)])
        expect, readback = write_expect(name, node.is_root, data, removed)
        err, n = self.run_op(f"write {name}", self.b.pwrite, fd, data, off)
        self.judge("write:" + FILES[name][0], (node.path(), name, data[:80], off), err, expect)
        if err is None and n != len(data):
            self.violate(f"write {name}: {n} of {len(data)} bytes")
        if err is None and readback is not None and data:
            err2, got = self.run_op(f"read {name}", self.b.pread, fd, 4096, 0)
            if err2 is None and got != readback:
                self.violate(f"read back {node.path()!r}/{name} after writing {data[:80]!r}: "
                             f"{got!r}, expected {readback!r}")
        if fresh:
            if r.random() < 0.15:
                self.keep(fd, node, name)
            else:
                self.b.close(fd)

    def op_read(self):
        r = self.rng
        if r.random() < 0.15:
            name = r.choice(["ctl", "events", "slabinfo", "config"])
            err, fd = self.run_op("open", self.b.open, b".kmemfs/" + name.encode(), os.O_RDONLY)
            if err:
                return self.judge("open", name, err, exact(None))
            off = r.choice([0, 0, 1, r.randrange(1 << 16), 1 << 40])
            err, _ = self.run_op(f"read {name}", self.b.pread, fd, r.randrange(1, 1 << 16), off)
            self.judge("read:ctl", name, err, exact(None))
            self.b.close(fd)
            return
        fd, node, name, removed = self.pick_file()
        fresh = fd is None
        if fresh:
            fd = self.open_file(node, name, os.O_RDONLY)
            if fd is None:
                return
        off = r.choice([0, 0, 0, 1, 5, r.randrange(20000), 1 << 40])
        size = r.choice([1, 2, 64, 4096, 65536, r.randrange(1, 1 << 17)])
        err, data = self.run_op(f"read {name}", self.b.pread, fd, size, off)
        if removed:
            expect = exact(E.ENODEV, "file of a removed cgroup")
        elif name in WRITE_ONLY:
            expect = exact(E.EINVAL, "write-only file")
        else:
            expect = exact(None)
        self.judge("read", (node.path(), name, off, size), err, expect)
        if err is None and off == 0 and FILES[name][0] in ("u64", "mem") and size >= 32 \
                and name not in ("tasks", "cgroup.procs", "memory.oom_control") \
                and not re.fullmatch(rb"\d+\n", data):
            self.violate(f"read {name}: {data[:80]!r} is not a number")
        if fresh:
            self.b.close(fd)

    def ctl_command(self):
        r = self.rng
        verb = r.choice(VERBS + ("alloc", "alloc", "kmalloc", "touch", "spawn", "charge",
                                 "bogus", "ALLOC", ""))
        cache = lambda: r.choice(self.caches + ["dentry(a)", "dentry(a)dead", "nosuch",  # noqa
                                                "size-64(DMA)", "kmem_cache"])
        count = lambda: r.choice(["1", "10", "100", str(r.randrange(1, 2000)),  # noqa
                                  str(r.randrange(1, 2000)), "0", "-1", "1e3", "²", "٣",
                                  "0x10", str(1 << 64), str(10 ** 25),
                                  str(self.max_objects + 1),
                                  str(self.max_objects) if self.max_objects <= 100000 else "5"])
        size = lambda: r.choice(["1", "64", "100", "4096", "64K", "1M", "0", "129K", "4M",  # noqa
                                 "5M", "1G", "4T", "1x", "K", str(1 << 70), "²"])
        args = {"alloc": lambda: [cache()] + ([count()] if r.random() < .8 else []),
                "free": lambda: [cache()] + ([count()] if r.random() < .8 else []),
                "kmalloc": lambda: [size()] + ([count()] if r.random() < .8 else []),
                "kfree": lambda: [size()] + ([count()] if r.random() < .8 else []),
                "charge": lambda: [r.choice(["anon", "file", "swap"]), size()],
                "uncharge": lambda: [r.choice(["anon", "file"]), size()],
                "exit": lambda: [r.choice([str(p) for p in self.sim_pids[-8:]] +
                                          ["1", "5000000", "x", str(os.getpid())])],
                "touch": lambda: [count()], "unlink": lambda: [count()]}.get(verb, lambda: [])()
        if r.random() < 0.05:
            args.append(r.choice(["extra", "1", "=", "a=b"]))
        opts = []
        if r.random() < 0.6:
            opts.append("cg=" + r.choice([self.cg_path()] * 4 +
                                         ["/nosuch", "web", "", "//", "/a/../b"]))
        if r.random() < 0.25:
            opts.append("task=" + r.choice([str(p) for p in self.sim_pids[-8:]] +
                                           [str(os.getpid()), "1", "999999999", "x", "",
                                            str(1 << 64)]))
        if verb in ("alloc", "kmalloc", "touch") and r.random() < 0.4:
            opts.append("gfp=" + r.choice([
                "GFP_KERNEL", "GFP_NOFS", "GFP_NOIO", "GFP_ATOMIC", "GFP_NOWAIT",
                "GFP_KERNEL|__GFP_NOACCOUNT", "GFP_NOFS|__GFP_NORETRY", "__GFP_NOFAIL",
                "GFP_KERNEL|GFP_NOFS", "gfp_kernel", "", "|", "GFP_ATOMIC|__GFP_NOFAIL"]))
        if verb in ("alloc", "kmalloc") and r.random() < 0.2:
            opts.append("irq=" + r.choice(["0", "1", "2", ""]))
        if r.random() < 0.04:
            opts.append(r.choice(["bogus=1", "cg=/", "gfp=GFP_KERNEL"]))
        words = [verb] + args + opts
        if r.random() < 0.05:
            r.shuffle(words)
        return " ".join(words)

    def cg_path(self):
        """`/path` of a live cgroup that a command line can name (UTF-8, no spaces)."""
        node = self.rng.choice(self.live())
        try:
            text = "/" + node.path().decode()
        except UnicodeDecodeError:
            return "/"
        return text if not any(c.isspace() for c in text) else "/"

    def op_ctl(self):
        r = self.rng
        lines = [self.ctl_command() for _ in range(r.choice([1, 1, 1, 2, 3]))]
        if r.random() < 0.1:
            lines.insert(r.randrange(len(lines) + 1), r.choice(["", "# a comment", "   ",
                                                                "#alloc dentry 1"]))
        text = "\n".join(lines) + r.choice(["\n", "", "\n\n", "\r\n"])
        data = text.encode()
        if r.random() < 0.04:
            pad = r.choice(["x", "é"]) * r.choice([2100, 4090, 4097, 5000])
            data = ("alloc " + pad + "\n").encode()
        if r.random() < 0.03:
            data = r.choice([b"alloc dentry \xff\n", b"\xc3", r.randbytes(r.randrange(1, 300))])
        # the oracle
        decoded = data.decode("utf-8", "surrogateescape")     # names are bytes, so are words
        cmds = [ln for ln in decoded.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
        if any(len(ln.encode("utf-8", "surrogateescape")) > 4096 for ln in cmds):
            expect = exact(E.E2BIG, "a line over 4096 bytes")
        elif not cmds:
            expect = exact(None, "no commands")
        elif cmds[0].split()[0] not in VERBS:
            expect = exact(E.EINVAL, "unknown command")
        else:
            expect = allowed(CTL_ERRNOS)
        fd = self.ctl_fd
        if r.random() < 0.1:
            err, fd = self.run_op("open ctl", self.b.open, b".kmemfs/ctl", os.O_RDWR)
            if err:
                return self.judge("open", "ctl", err, exact(None))
        err, _ = self.run_op(f"ctl {data[:60]!r}", self.b.pwrite, fd, data,
                             0 if r.random() < 0.9 else r.randrange(1, 100))
        if err == E.EIO and any(ln.split()[:1] == ["check"] for ln in cmds):
            self.violate(f"invariant violated after ctl {data[:120]!r}")
        self.judge("ctl", data[:120], err, expect)
        rerr, out = self.run_op("read ctl", self.b.read_all, fd)
        if fd is not self.ctl_fd:
            self.b.close(fd)
        if rerr:
            return self.judge("read:ctl", "results", rerr, exact(None))
        results = out.decode(errors="replace").split("\n")[:-1]    # what `read -r` sees
        self.check_results(data, cmds, err, results)

    def check_results(self, data, cmds, err, results):
        """One result line per command run: `ok ...` lines, then `error: NAME: ...` when
        the write failed with that errno (docs/ctl.md)."""
        for line in results:
            m = re.search(r"\bpid=(\d+)", line)
            if line.startswith("ok spawn") and m:
                self.sim_pids.append(int(m.group(1)))
        if err in (E.EINVAL, E.E2BIG) and not results:
            return          # refused before any command ran (encoding, line length)
        if err is None:
            bad = [ln for ln in results if not ln.startswith("ok ")]
            if bad or len(results) != len(cmds):
                self.violate(f"ctl {data[:80]!r}: {len(results)} result lines for {len(cmds)} "
                             f"commands: {results[:4]!r}")
            return
        want = f"error: {harness.errname(err)}: "
        if not results or not results[-1].startswith(want) or \
                any(not ln.startswith("ok ") for ln in results[:-1]) or len(results) > len(cmds):
            self.violate(f"ctl {data[:80]!r} failed with {harness.errname(err)} but the results "
                         f"are {results[-3:]!r}")

    def op_tree(self):
        r = self.rng
        nodes = self.live()
        kind = r.choices(["mkdir", "rmdir", "rename", "rmdir_file", "mkdir_ctl"],
                         weights=[45, 30, 18, 4, 3])[0]
        if kind == "mkdir":
            parent = r.choice(nodes)
            name = self.name()
            rel = self._join(parent, name)
            if len(name) > NAME_MAX:
                expect = exact(E.ENAMETOOLONG)
            elif name in parent.children or os.fsdecode(name) in self.files_of(parent) or (
                    parent.is_root and name == b".kmemfs"):
                expect = exact(E.EEXIST)
            elif len(nodes) >= self.max_memcgs:
                expect = exact(E.ENOSPC, "max_memcgs")
            else:
                expect = exact(None)
            err, _ = self.run_op("mkdir", self.b.mkdir, rel)
            self.judge("mkdir", rel, err, expect)
            if err is None and name not in parent.children:
                parent.children[name] = Node(name, parent)
        elif kind == "rmdir":
            cands = [n for n in nodes if not n.is_root]
            if not cands:
                return
            node = r.choice(cands)
            rel = node.path()
            if node.children:
                expect = exact(E.EBUSY, "has children")
            else:
                expect = allowed({E.EBUSY, E.EINTR}, "tasks or pages left")
            err, _ = self.run_op("rmdir", self.b.rmdir, rel)
            self.judge("rmdir", rel, err, expect)
            if err is None:
                self._remove(node)
        elif kind == "rmdir_file":
            node = r.choice(nodes)
            rel = self._join(node, r.choice(self.files_of(node)).encode())
            err, _ = self.run_op("rmdir", self.b.rmdir, rel)
            self.judge("rmdir", rel, err, exact(E.ENOTDIR))
            rel = self._join(node, b"nosuch-dir")
            err, _ = self.run_op("rmdir", self.b.rmdir, rel)
            self.judge("rmdir", rel, err, exact(E.ENOENT))
        elif kind == "mkdir_ctl":
            err, _ = self.run_op("mkdir", self.b.mkdir, b".kmemfs/x")
            self.judge("mkdir", b".kmemfs/x", err, exact(E.EPERM))
            err, _ = self.run_op("rmdir", self.b.rmdir, b".kmemfs")
            self.judge("rmdir", b".kmemfs", err, exact(E.EBUSY))
        else:
            cands = [n for n in nodes if not n.is_root]
            if not cands:
                return
            node = r.choice(cands)
            across = r.random() < 0.2
            parent = r.choice(nodes) if across else node.parent
            name = self.name()
            rel = self._join(parent, name)
            inside = any(p is node for p in self._ancestors(parent))
            if node.parent is parent and name == node.name:
                expect = exact(None, "a rename onto itself")
            elif len(name) > NAME_MAX:
                expect = exact(E.ENAMETOOLONG, "lookup of the new name")
            elif inside:
                expect = exact(E.EINVAL, "VFS: into its own subtree")
            elif os.fsdecode(name) in self.files_of(parent):
                expect = exact(E.ENOTDIR, "a directory onto a control file")
            elif name in parent.children or (parent.is_root and name == b".kmemfs"):
                expect = Expect(allowed={E.EEXIST, E.ENOTEMPTY} if parent is not node.parent
                                else {E.EEXIST}, why="onto an existing cgroup (ENOTEMPTY: "
                                "onto its own ancestor, VFS)")
            elif parent is not node.parent:
                expect = exact(E.EIO, "across parents (cgroup_rename)")
            else:
                expect = exact(None)
            err, _ = self.run_op("rename", self.b.rename, node.path(), rel)
            self.judge("rename", (node.path(), rel), err, expect)
            if err is None and not (node.parent is parent and name == node.name):
                del node.parent.children[node.name]
                node.name = name
                node.parent = parent
                parent.children[name] = node

    def _join(self, node, name):
        return node.path() + b"/" + name if node.path() else name

    def _ancestors(self, node):
        while node is not None:
            yield node
            node = node.parent

    def _remove(self, node):
        for n in node.walk():
            n.removed = True
        del node.parent.children[node.name]

    def op_listdir(self):
        node = self.rng.choice(self.live())
        err, names = self.run_op("listdir", self.b.listdir, node.path())
        self.judge("listdir", node.path(), err, exact(None))
        if err is None:
            got = {os.fsencode(n) for n in names}
            want = set(node.children) | {f.encode() for f in self.files_of(node)}
            if got != want:
                self.violate(f"listdir {node.path()!r}: extra {sorted(got - want)[:5]}, "
                             f"missing {sorted(want - got)[:5]}")

    def op_event(self):
        """A real registration: an eventfd and an fd of memory.usage_in_bytes or oom_control
        (docs/semantics.md §14); capped so the daemon's descriptors stay few."""
        if not isinstance(self.b, FuseBackend) or self.events_registered >= 40:
            return self.op_read()
        r = self.rng
        node = r.choice(self.live())
        target = r.choice(["memory.usage_in_bytes", "memory.oom_control", "memory.stat"])
        efd = os.eventfd(0, os.EFD_NONBLOCK)
        err, cfd = self.run_op("open", self.b.open, self._join(node, target.encode()),
                               os.O_RDONLY)
        if err:
            os.close(efd)
            return self.judge("open", target, err, exact(None))
        arg = r.choice([b"", b" 1M", b" 4096", b" -1", b" junk", b" 0x10"])
        data = b"%d %d%s" % (efd, cfd, arg if target != "memory.oom_control" else b"")
        if target == "memory.stat":
            expect = exact(E.EINVAL, "that file takes no events")
        elif target == "memory.usage_in_bytes" and parse_mem(arg.strip())[0]:
            expect = exact(E.EINVAL, "bad threshold")
        else:
            expect = exact(None)
        err, fd = self.run_op("open", self.b.open, self._join(node, b"cgroup.event_control"),
                              os.O_WRONLY)
        if err is None:
            err, _ = self.run_op("write event_control", self.b.pwrite, fd, data, 0)
            self.judge("write:event", (node.path(), data), err, expect)
            self.b.close(fd)
            self.events_registered += err is None
        self.b.close(cfd)
        self.eventfds.append(efd)

    def op_misc(self):
        """What cgroupfs refuses: regular files, unlink, links, fifos."""
        if not isinstance(self.b, FuseBackend):
            return self.op_listdir()
        r = self.rng
        node = r.choice(self.live())
        kind = r.choice(["create", "unlink", "unlink_dir", "symlink", "link", "mkfifo"])
        if kind == "create":
            err, _ = self.run_op("create", self.b.create, self._join(node, b"newfile"))
            expect = exact(E.EACCES)
        elif kind == "unlink":
            err, _ = self.run_op("unlink", self.b.unlink,
                                 self._join(node, r.choice(self.files_of(node)).encode()))
            expect = exact(E.EPERM)
        elif kind == "unlink_dir":
            if not node.children:
                return
            err, _ = self.run_op("unlink", self.b.unlink,
                                 self._join(node, r.choice(list(node.children))))
            expect = exact(E.EISDIR)
        elif kind == "symlink":
            err, _ = self.run_op("symlink", self.b.symlink, self._join(node, b"sl"))
            expect = exact(E.EPERM)
        elif kind == "link":
            err, _ = self.run_op("link", self.b.link, self._join(node, b"tasks"),
                                 self._join(node, b"tasks2"))
            expect = exact(E.EPERM)
        else:
            err, _ = self.run_op("mkfifo", self.b.mkfifo, self._join(node, b"fifo"))
            expect = exact(E.EPERM)
        self.judge(kind, node.path(), err, expect)

    # ------------------------------------------------------------------ health
    def health(self):
        """`check` must pass; the daemon must be alive and the mount answer."""
        self.checks += 1
        if self.daemon and not harness.alive(self.daemon):
            self.dead = True
            self.violate("the daemon died")
            return
        err, _ = self.run_op("responds", self.b.responds)
        if err:
            self.violate(f"the mount does not answer: {harness.errname(err)}")
            self.dead = err == E.ENOTCONN
            return
        fd = self.b.open(b".kmemfs/ctl", os.O_RDWR)
        err, _ = self.run_op("check", self.b.pwrite, fd, b"check\n", 0)
        out = self.b.read_all(fd)
        self.b.close(fd)
        if err:
            self.violate(f"check failed ({harness.errname(err)}): {out.decode()[:600]}")

    def relieve_paths(self):
        """Paths whose writes end an OOM sleep: oom_control 0, limits unlimited."""
        out = []
        for n in self.live():
            if not n.is_root:
                for f in ("memory.oom_control", "memory.memsw.limit_in_bytes",
                          "memory.limit_in_bytes"):
                    if self.swap or "memsw" not in f:
                        out.append((self._join(n, f.encode()),
                                    b"0" if "oom" in f else b"-1"))
        return out

    def relieve(self):
        self.reliefs += 1
        for rel, data in self.relieve_paths():
            try:
                fd = self.b.open(rel, os.O_WRONLY)
                try:
                    self.b.pwrite(fd, data, 0)
                finally:
                    self.b.close(fd)
            except OSError:
                pass

    def cleanup(self):
        for fd, _, _ in self.fds:
            self.attempt(self.b.close, fd)
        self.fds.clear()
        if self.ctl_fd is not None:
            self.attempt(self.b.close, self.ctl_fd)
            self.ctl_fd = None
        for efd in self.eventfds:
            os.close(efd)
        self.eventfds.clear()

    def run(self, ops=None, seconds=None, progress=None):
        self.setup()
        start = time.monotonic()
        try:
            while not self.dead:
                if ops is not None and self.ops >= ops:
                    break
                if seconds is not None and time.monotonic() - start >= seconds:
                    break
                self.step()
                if self.ops % self.check_every == 0:
                    self.health()
                if progress:
                    progress.update(self.ops)
            if not self.dead:
                self.health()
        finally:
            self.elapsed = time.monotonic() - start
            if not self.dead:
                self.cleanup()
        return self

    def summary(self) -> str:
        rate = self.ops / self.elapsed if self.elapsed else 0
        lines = [f"fuzz: {self.ops} operations in {self.elapsed:.1f} s ({rate:.0f} ops/s), "
                 f"{self.checks} checks, {self.reliefs} OOM sleeps relieved, "
                 f"{self.events_registered} event registrations, "
                 f"{len(self.violations)} violations",
                 "  by kind: " + " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))]
        rej = {}
        for (kind, name), n in self.errnos.items():
            if name != "ok":
                rej.setdefault(kind, []).append(f"{name}:{n}")
        lines += [f"  {k}: " + " ".join(sorted(v)) for k, v in sorted(rej.items())]
        lines += [f"  ! {v}" for v in self.violations[:20]]
        return "\n".join(lines)


class Watchdog(threading.Thread):
    """Relieves a write that sleeps on a memcg OOM (after `relieve_after` s), and declares a
    hang when an operation outlives `hang_after` s (then kills our own daemon so the run ends)."""

    def __init__(self, fuzzer, relieve_after=1.0, hang_after=30.0, kill_on_hang=True):
        super().__init__(daemon=True)
        self.f, self.relieve_after, self.hang_after = fuzzer, relieve_after, hang_after
        self.kill_on_hang = kill_on_hang
        self.stop = threading.Event()

    def run(self):
        relieved = None
        while not self.stop.wait(0.1):
            busy = self.f.busy
            if busy is None:
                continue
            age = time.monotonic() - busy[0]
            if age > self.relieve_after and relieved is not busy:
                relieved = busy
                self.f.relieve()
            if age > self.hang_after:
                self.f.violate(f"hang: {busy[1]} did not return in {self.hang_after:.0f} s")
                self.f.dead = True
                if self.kill_on_hang and self.f.daemon:
                    os.kill(self.f.daemon, 9)
                return


def fuzz_mount(mountpoint, ops=None, seconds=None, seed=0, check_every=50, quiet=False,
               daemon=None):
    f = Fuzzer(FuseBackend(mountpoint), seed, check_every, daemon=daemon,
               log=None if quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    wd = Watchdog(f, kill_on_hang=daemon is not None)
    wd.start()
    try:
        with harness.Progress("fuzzing", ops, seconds, quiet) as p:
            f.run(ops, seconds, p)
    finally:
        wd.stop.set()
    return f


def fuzz_inprocess(ops=None, seconds=None, seed=0, check_every=50, options=OWN_MOUNT_OPTIONS,
                   quiet=True):
    """The same fuzzer against CgroupFS built as the daemon builds it, no FUSE."""
    from kmemfs.fuse.daemon import build, parse_options
    from kmemfs.engine import check
    config, _ = parse_options(",".join(options))
    fs = build(config)
    holder = {}
    b = InProcBackend(fs, lambda: holder["f"].relieve())
    f = holder["f"] = Fuzzer(b, seed, check_every,
                             log=None if quiet else (lambda s: print(s, file=sys.stderr)))
    with harness.Progress("fuzzing (in-process)", ops, seconds, quiet) as p:
        f.run(ops, seconds, p)
    for tb in b.crashes[:5]:
        f.violate("exception in the cgroupfs layer:\n" + tb)
    bad = check(fs.engine)
    if bad:
        f.violate(f"engine.check: {bad[:5]}")
    f.fs = fs
    return f


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mountpoint", nargs="?")
    p.add_argument("--ops", type=int, help="stop after N operations")
    p.add_argument("--seconds", type=float, help="stop after S seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-every", type=int, default=50, metavar="K")
    p.add_argument("--inprocess", action="store_true",
                   help="fuzz the cgroupfs layer in this process (no FUSE)")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.ops is None and a.seconds is None:
        a.ops = 5000
    if a.inprocess:
        f = fuzz_inprocess(a.ops, a.seconds, a.seed, a.check_every, quiet=a.quiet)
    else:
        with harness.kmemfs_mount(a.mountpoint, OWN_MOUNT_OPTIONS) as (mp, pid):
            f = fuzz_mount(mp, a.ops, a.seconds, a.seed, a.check_every, a.quiet, daemon=pid)
            alive = pid is None or harness.alive(pid)
        if not alive and not f.dead:
            f.violate("the daemon died")
    print(f.summary())
    return 1 if f.violations else 0


if __name__ == "__main__":
    sys.exit(main())
