"""End-to-end tests of the mounted cgroup filesystem: a real kmemfs is mounted (FUSE) and
driven with cat/echo/mkdir/rmdir/mv/ls and os calls, as a user of a 3.3 memcg would.

The rules and their sources are in docs/semantics.md; each test names its source: patch 01/10 (the
series' kmem files), 09/10 (memory.kmem.slabinfo), 3.3.8 mm/memcontrol.c and kernel/cgroup.c (the
memcg v1 baseline). The `kernel` tests run one shell script of shared rules against kmemfs and
against the real cgroup v1 memory controller and compare the outputs.
"""
import contextlib
import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid

import pytest

from mounting import ROOT, Mount, sh

pytestmark = pytest.mark.e2e

HERE = os.path.dirname(os.path.abspath(__file__))
RULES_SH = os.path.join(HERE, "data", "cgroup_shared_rules.sh")
RESOURCE_MAX = 9223372036854775807
KERNEL_MEMCG = "/sys/fs/cgroup/memory"
EINVAL, E2BIG, EBUSY, EEXIST, ESRCH = (errno.EINVAL, errno.E2BIG, errno.EBUSY, errno.EEXIST,
                                       errno.ESRCH)


class Err(int):
    """An expected errno in a table (so that it is never mistaken for a parsed value)."""

    def __repr__(self):
        return errno.errorcode[int(self)]


XINVAL, X2BIG = Err(EINVAL), Err(E2BIG)


# ------------------------------------------------------------------ helpers
def write(path, data: bytes) -> int:
    """One open(O_WRONLY) + one write(2) of exactly `data`: 0 on success, else the errno."""
    fd = os.open(path, os.O_WRONLY)
    try:
        n = os.write(fd, data)
        assert n == len(data), f"short write {n} of {len(data)}"
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def read(path) -> str:
    with open(path) as f:
        return f.read()


def errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def ctl(m, line: str) -> str:
    """One command through .kmemfs/ctl; returns its result line, fails the test on error."""
    fd = os.open(m.p(".kmemfs", "ctl"), os.O_RDWR)
    try:
        rc = errno_of(os.write, fd, line.encode() + b"\n")
        out = os.read(fd, 65536).decode()
    finally:
        os.close(fd)
    assert rc == 0 and out.startswith("ok"), f"ctl {line!r}: {out!r}"
    return out


_seq = iter(range(1, 1 << 30))


def fresh(m, prefix="cg") -> str:
    """A new, empty child cgroup of root with a unique name; returns its path."""
    name = f"{prefix}{next(_seq)}"
    os.mkdir(m.p(name))
    return m.p(name)


@contextlib.contextmanager
def sleepers(n=1):
    """n `sleep` processes this test owns; killed and reaped on exit."""
    procs = [subprocess.Popen(["sleep", "300"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def pids(path) -> list:
    return [int(x) for x in read(path).split()]


def wait_until(cond, timeout=60.0):
    """Poll `cond` (never assert on timing: the timeout is only a safety net)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One mount for the table-driven tests; each case works in its own fresh cgroup."""
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.skip("FUSE is not available")
    m = Mount(tmp_path_factory.mktemp("fs_e2e") / "mnt")
    m.start()
    try:
        yield m
    finally:
        m.stop()


# ------------------------------------------------------------------ 1. file list and modes
CORE = {"tasks": 0o644, "cgroup.procs": 0o644, "notify_on_release": 0o644,
        "cgroup.event_control": 0o222, "cgroup.clone_children": 0o644}
ROOT_ONLY = {"release_agent": 0o644}
MEMORY = {
    "memory.usage_in_bytes": 0o444, "memory.max_usage_in_bytes": 0o644,
    "memory.limit_in_bytes": 0o644, "memory.soft_limit_in_bytes": 0o644,
    "memory.failcnt": 0o644, "memory.stat": 0o444, "memory.force_empty": 0o200,
    "memory.use_hierarchy": 0o644, "memory.swappiness": 0o644,
    "memory.move_charge_at_immigrate": 0o644, "memory.oom_control": 0o644,
    "memory.numa_stat": 0o444,
    # 3.3 net/ipv4/tcp_memcontrol.c tcp_files[]: four files, every memcg
    "memory.kmem.tcp.limit_in_bytes": 0o644, "memory.kmem.tcp.usage_in_bytes": 0o444,
    "memory.kmem.tcp.failcnt": 0o644, "memory.kmem.tcp.max_usage_in_bytes": 0o644,
    # patch 01/10 + 09/10 (kmem_cgroup_files[]): in every memcg, root included
    "memory.kmem.independent_kmem_limit": 0o644, "memory.kmem.limit_in_bytes": 0o644,
    "memory.kmem.usage_in_bytes": 0o444, "memory.kmem.slabinfo": 0o444,
}
MEMSW = {"memory.memsw.usage_in_bytes": 0o444, "memory.memsw.max_usage_in_bytes": 0o644,
         "memory.memsw.limit_in_bytes": 0o644, "memory.memsw.failcnt": 0o644}
LS_MODE = {0o644: "-rw-r--r--", 0o444: "-r--r--r--", 0o200: "--w-------", 0o222: "--w--w--w-"}


def expected_files(root: bool, swap: bool = True) -> dict:
    return {**CORE, **MEMORY, **(MEMSW if swap else {}), **(ROOT_ONLY if root else {})}


def check_listing(path, files: dict, children=()):
    names = set(os.listdir(path))
    assert names == set(files) | set(children)
    for name, mode in files.items():
        st = os.stat(os.path.join(path, name))
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == mode, f"{name}: {oct(st.st_mode)} != {oct(mode)}"
        assert st.st_size == 0, name
    for name in children:
        assert stat.S_ISDIR(os.stat(os.path.join(path, name)).st_mode)
    # ls -l shows the same modes and sizes
    r = sh(f"ls -l {path}")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[-1]: line.split() for line in r.stdout.splitlines()[1:]}
    assert set(rows) == names
    for name, mode in files.items():
        assert rows[name][0] == LS_MODE[mode], (name, rows[name])
        assert rows[name][4] == "0", (name, rows[name])


def test_root_and_child_file_lists_and_modes(mnt):
    """3.3.8 mem_cgroup_files[] and kernel/cgroup.c files[] (release_agent root-only;
    cgroup_file_mode: read -> 0444, write -> 0200, cgroup.event_control 0222) and 01/10
    kmem_cgroup_files[] (the four kmem files in every memcg, root included;
    kmem.limit/independent 0644, kmem.usage/slabinfo 0444); st_size 0 everywhere."""
    os.mkdir(mnt.p("child"))
    check_listing(mnt.path, expected_files(root=True), children=["child"])
    check_listing(mnt.p("child"), expected_files(root=False))
    assert stat.S_ISDIR(os.stat(mnt.p("child")).st_mode)
    assert not os.path.exists(mnt.p("child", "release_agent"))
    # 01/10 kmem_cgroup_files[]: no kmem failcnt / max_usage / soft_limit files in this series
    for name in ("memory.kmem.failcnt", "memory.kmem.max_usage_in_bytes",
                 "memory.kmem.soft_limit_in_bytes"):
        assert not os.path.exists(mnt.p(name)) and not os.path.exists(mnt.p("child", name))


def test_noswapaccount_has_no_memsw_files(mount_factory):
    """3.3.8 register_memsw_files: memory.memsw.* exist only with swap accounting;
    mem_control_stat_show: memory.stat then has
    no swap / total_swap / hierarchical_memsw_limit."""
    m = mount_factory(options=("noswapaccount",))
    os.mkdir(m.p("child"))
    check_listing(m.path, expected_files(root=True, swap=False), children=["child"])
    check_listing(m.p("child"), expected_files(root=False, swap=False))
    keys = [line.split()[0] for line in read(m.p("child", "memory.stat")).splitlines()]
    assert not {"swap", "total_swap", "hierarchical_memsw_limit"} & set(keys)


def test_memory_stat_keys_with_swap_accounting(shared):
    """3.3.8 memcg_stat_strings[]: key order of memory.stat with swap accounting, patch 07/10's
    kernel_bypassed_memory after unevictable and total_kernel_bypassed_memory at the end."""
    local = ["cache", "rss", "mapped_file", "pgpgin", "pgpgout", "swap", "pgfault",
             "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file",
             "unevictable", "kernel_bypassed_memory"]
    want = local + ["hierarchical_memory_limit", "hierarchical_memsw_limit"] + \
        ["total_" + k for k in local]
    text = read(os.path.join(fresh(shared), "memory.stat"))
    keys = [line.split()[0] for line in text.splitlines()]
    assert keys == want


def test_hidden_control_dir(mnt):
    """`.kmemfs` is not listed by readdir (not even ls -a) but can be entered."""
    assert ".kmemfs" not in os.listdir(mnt.path)
    r = sh(f"ls -a {mnt.path}")
    assert r.returncode == 0 and ".kmemfs" not in r.stdout.split()
    r = sh(f"ls {mnt.path}/.kmemfs")
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"ctl", "events", "slabinfo", "config", "snapshot"}
    assert stat.S_ISDIR(os.stat(mnt.p(".kmemfs")).st_mode)


# ------------------------------------------------------------------ 2. write parsing (3.3.8)
# u64 files (cgroup_write_X64): file -> (accepts(v), rendering of v once written)
def _bit(v):
    return f"{int(bool(v))}\n"


U64_FILES = {
    "memory.use_hierarchy": (lambda v: v in (0, 1), lambda v: f"{v}\n"),
    "memory.swappiness": (lambda v: v <= 100, lambda v: f"{v}\n"),
    "memory.move_charge_at_immigrate": (lambda v: v < 4, lambda v: f"{v}\n"),
    "memory.oom_control": (lambda v: v in (0, 1),
                           lambda v: f"oom_kill_disable {v}\nunder_oom 0\n"),
    "memory.kmem.independent_kmem_limit": (lambda v: True, _bit),   # stored as !!val (01/10)
    "notify_on_release": (lambda v: True, _bit),
    "cgroup.clone_children": (lambda v: True, _bit),
}
# (bytes written, value parsed) or (bytes written, errno)
U64_CASES = [
    (b"0", 0), (b"1", 1), (b"7", 7), (b"0x1", 1), (b"0X1f", 31), (b"01", 1), (b"010", 8),
    (b"  1 \n", 1), (b"\t0x1\n", 1), (b"\xa01\xa0", 1),          # isspace() includes 0xA0
    (b"\n", 0),                       # strips to "": strtoull stops at the NUL -> 0
    (b"1\x00junk", 1),                # the C string ends at the NUL
    (b"0" * 62 + b"1", 1),            # 63 bytes: the longest write accepted
    (b"1" * 64, X2BIG), (b" " * 63 + b"1", X2BIG), (b"1" * 100, X2BIG),
    (b"1x", XINVAL), (b"1 2", XINVAL), (b"0x", XINVAL), (b"08", XINVAL), (b"1K", XINVAL),
    (b"-1", XINVAL), (b"+1", XINVAL), (b"junk", XINVAL),
]


@pytest.mark.parametrize("data,parsed", U64_CASES, ids=[repr(c[0])[:20] for c in U64_CASES])
@pytest.mark.parametrize("name", sorted(U64_FILES))
def test_u64_write_parsing(shared, name, data, parsed):
    """3.3.8 cgroup_write_X64, u64 writes: >= 64 bytes E2BIG, whitespace stripped, strtoull base 0
    (0x hex, leading-0 octal), trailing junk EINVAL, no sign. Then each handler's range (3.3.8
    mem_cgroup_*_write: use_hierarchy/oom_control 0|1, swappiness <= 100, move_charge < 4; 01/10
    independent_kmem_limit, and notify_on_release / clone_children, store !!val). A refused write
    leaves the value as it was."""
    cg = fresh(shared)
    path = os.path.join(cg, name)
    before = read(path)
    accepts, render = U64_FILES[name]
    if isinstance(parsed, Err):
        want_errno, want = parsed, before
    elif accepts(parsed):
        want_errno, want = 0, render(parsed)
    else:
        want_errno, want = EINVAL, before
    assert write(path, data) == want_errno
    assert read(path) == want


def test_u64_zero_byte_write(shared):
    """3.3.8 kernel/cgroup.c: a u64 write of 0 bytes gives EINVAL (cgroup_write_X64 `if
    (!nbytes)`). FUSE never forwards a zero-byte write(2) (the kernel returns 0 itself), so
    through the mount it is a no-op; the rule itself holds in the cgroupfs layer."""
    from kmemfs.fuse.daemon import build
    from kmemfs.engine import Config, EngineError
    fs = build(Config(boot_slabs=False))
    cg = fresh(shared)
    for name in sorted(U64_FILES) + ["tasks", "cgroup.procs"]:
        before = read(os.path.join(cg, name))
        assert write(os.path.join(cg, name), b"") == 0, name
        assert read(os.path.join(cg, name)) == before
        fh = fs.open(fs.lookup(1, name).ino)
        with pytest.raises(EngineError) as e:
            fs.write(fh, 0, b"")
        assert e.value.errno == EINVAL, name


STRING_FILES = ["memory.limit_in_bytes", "memory.soft_limit_in_bytes",
                "memory.memsw.limit_in_bytes", "memory.kmem.limit_in_bytes",
                "memory.kmem.tcp.limit_in_bytes"]
STRING_CASES = [
    (b"1", 4096), (b"1\n", 4096), (b"0", 0), (b"4096", 4096), (b"4097", 8192),
    (b"1K", 4096), (b"1k", 4096), (b"8K", 8192), (b"1m", 1 << 20), (b"1M", 1 << 20),
    (b"1G", 1 << 30), (b"2g", 2 << 30), (b"0x1000", 4096), (b"010", 4096),
    (b"0x10K", 16384), (b"010M", 8 << 20), (b"  1G \n", 1 << 30),
    (b"\n", 0),                                      # "" parses to 0
    (b"-1", RESOURCE_MAX), (b"-1\n", RESOURCE_MAX), (b"-01", RESOURCE_MAX),
    (b"-2", XINVAL), (b"-1K", XINVAL), (b"--1", XINVAL), (b"-0x1", XINVAL),
    (b"1.5G", XINVAL), (b"1T", XINVAL), (b"1P", XINVAL), (b"1KB", XINVAL), (b"1 G", XINVAL),
    (b"junk", XINVAL), (b"1x", XINVAL),
    (b"0" * 61 + b"1", 4096),                        # 62 bytes: still accepted
    (b"0" * 62 + b"1", X2BIG), (b"1" * 100, X2BIG),  # 63 bytes or more: E2BIG
]


def _string_setup(cg, name):
    if name == "memory.memsw.limit_in_bytes":
        assert write(os.path.join(cg, "memory.limit_in_bytes"), b"0") == 0   # memsw >= limit
    if name == "memory.kmem.limit_in_bytes":
        assert write(os.path.join(cg, "memory.kmem.independent_kmem_limit"), b"1") == 0


@pytest.mark.parametrize("data,want", STRING_CASES, ids=[repr(c[0])[:20] for c in STRING_CASES])
@pytest.mark.parametrize("name", STRING_FILES)
def test_memparse_write_parsing(shared, name, data, want):
    """3.3.8 (cgroup_write_string: >= 63 bytes E2BIG, whitespace stripped;
    res_counter_memparse_write_strategy: only "-1" negative = RESOURCE_MAX, memparse base 0
    with one K/M/G suffix and no T/P in 3.3, junk EINVAL, PAGE_ALIGN up), the same for
    memory.kmem.limit_in_bytes (01/10). A refused write leaves the value as it was."""
    cg = fresh(shared)
    _string_setup(cg, name)
    path = os.path.join(cg, name)
    before = read(path)
    assert before == f"{RESOURCE_MAX}\n"
    if isinstance(want, Err):
        assert write(path, data) == want
        assert read(path) == before
    else:
        assert write(path, data) == 0
        assert read(path) == f"{want}\n"


def test_limit_llong_max_rounds_above_memsw_limit(shared):
    """3.3.8 res_counter_memparse_write_strategy, mem_cgroup_write: "9223372036854775807" rounds
    up above LLONG_MAX and then fails the memsw check (EINVAL); only "-1" gives exactly unlimited."""
    cg = fresh(shared)
    path = os.path.join(cg, "memory.limit_in_bytes")
    assert write(path, b"1G") == 0
    assert write(path, b"9223372036854775807") == EINVAL
    assert read(path) == f"{1 << 30}\n"
    assert write(path, b"-1") == 0
    assert read(path) == f"{RESOURCE_MAX}\n"


def test_root_limits(mount_factory):
    """3.3.8 mem_cgroup_write: memory.limit_in_bytes (and memsw) on root EINVAL; the kmem
    limit on root EINVAL (01/10), even with independent_kmem_limit=1 (01/10
    mem_cgroup_independent_kmem_limit_write: the flag itself can be set on root), and E2BIG
    (cgroup_write_string) comes first; soft_limit is allowed on root."""
    m = mount_factory()
    for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
                 "memory.kmem.limit_in_bytes"):
        assert write(m.p(name), b"1G") == EINVAL, name
        assert write(m.p(name), b"-1") == EINVAL, name
        assert write(m.p(name), b"1" * 63) == E2BIG, name
        assert read(m.p(name)) == f"{RESOURCE_MAX}\n"
    assert write(m.p("memory.kmem.independent_kmem_limit"), b"1") == 0
    assert read(m.p("memory.kmem.independent_kmem_limit")) == "1\n"
    assert write(m.p("memory.kmem.limit_in_bytes"), b"1G") == EINVAL
    assert write(m.p("memory.soft_limit_in_bytes"), b"1G") == 0
    assert read(m.p("memory.soft_limit_in_bytes")) == f"{1 << 30}\n"
    r = sh(f"echo 1G > {m.p('memory.limit_in_bytes')}")
    assert r.returncode == 1 and "Invalid argument" in r.stderr


def test_tcp_files_as_3_3_has_them(mount_factory):
    """3.3 net/ipv4/tcp_memcontrol.c: tcp_files[] has limit_in_bytes, usage_in_bytes, failcnt
    and max_usage_in_bytes (the last two read_u64 + trigger: 0644, cgroup_file_mode) on every
    memcg. Root has no cg_proto: tcp_cgroup_read gives RESOURCE_MAX / usage / 0 / 0,
    tcp_cgroup_write parses first (res_counter_memparse_write_strategy: junk EINVAL) and then
    tcp_update_limit is EINVAL, tcp_cgroup_reset returns 0. A child's limit is clamped to
    RESOURCE_MAX (tcp_update_limit); its triggers take any content."""
    m = mount_factory()
    tcp = lambda *p: m.p(*p[:-1], f"memory.kmem.tcp.{p[-1]}")
    for where in ((), ("t",)):
        if where:
            os.mkdir(m.p(*where))
        assert read(tcp(*where, "limit_in_bytes")) == f"{RESOURCE_MAX}\n"
        for f in ("usage_in_bytes", "failcnt", "max_usage_in_bytes"):
            assert read(tcp(*where, f)) == "0\n"
        assert write(tcp(*where, "failcnt"), b"abc") == 0
        assert write(tcp(*where, "max_usage_in_bytes"), b"") == 0
        assert write(tcp(*where, "usage_in_bytes"), b"5") == EINVAL
    assert write(tcp("limit_in_bytes"), b"1G") == EINVAL
    assert write(tcp("limit_in_bytes"), b"junk") == EINVAL
    assert write(tcp("limit_in_bytes"), b"1" * 70) == E2BIG
    limit = tcp("t", "limit_in_bytes")
    assert write(limit, b"1") == 0 and read(limit) == "4096\n"
    assert write(limit, str(RESOURCE_MAX).encode()) == 0     # PAGE_ALIGN rounds above it
    assert read(limit) == f"{RESOURCE_MAX}\n"


def test_memsw_limit_must_stay_above_memory_limit(shared):
    """3.3.8 mem_cgroup_resize_limit, mem_cgroup_resize_memsw_limit: memsw limit < memory.limit
    EINVAL; memory.limit > memsw limit EINVAL."""
    cg = fresh(shared)
    lim, memsw = os.path.join(cg, "memory.limit_in_bytes"), \
        os.path.join(cg, "memory.memsw.limit_in_bytes")
    assert write(lim, b"1G") == 0
    assert write(memsw, b"512M") == EINVAL
    assert read(memsw) == f"{RESOURCE_MAX}\n"
    assert write(memsw, b"1G") == 0               # equal is fine
    assert write(lim, b"2G") == EINVAL
    assert read(lim) == f"{1 << 30}\n"
    assert write(lim, b"512M") == 0
    assert write(memsw, b"512M") == 0


def test_kmem_limit_needs_independent_and_covers_usage(shared):
    """01/10: kmem.limit_in_bytes EINVAL while independent_kmem_limit=0
    (checked before usage: EINVAL, not EBUSY), settable after writing 1, EBUSY when kmem
    usage exceeds the new limit (no reclaim), the old limit stays when the flag is cleared
    (v1/10), and independent_kmem_limit can change with usage (01/10
    mem_cgroup_independent_kmem_limit_write: no checks)."""
    cg = fresh(shared)
    name = os.path.basename(cg)
    lim = os.path.join(cg, "memory.kmem.limit_in_bytes")
    ind = os.path.join(cg, "memory.kmem.independent_kmem_limit")
    assert read(ind) == "0\n"
    assert write(lim, b"1G") == EINVAL
    assert read(lim) == f"{RESOURCE_MAX}\n"
    ctl(shared, f"alloc dentry 100 cg=/{name}")
    usage = int(read(os.path.join(cg, "memory.kmem.usage_in_bytes")))
    assert usage > 4096
    assert write(lim, b"4096") == EINVAL          # step 4 before step 5
    assert write(ind, b"1") == 0                  # 01/10: allowed with usage
    assert read(ind) == "1\n"
    assert write(lim, b"4096") == EBUSY
    assert read(lim) == f"{RESOURCE_MAX}\n"
    r = sh(f"echo 4096 > {lim}")
    assert r.returncode == 1 and "Device or resource busy" in r.stderr
    assert write(lim, str(usage).encode()) == 0   # usage <= limit is fine
    assert read(lim) == f"{usage}\n"
    assert write(lim, b"1G") == 0
    assert write(ind, b"0") == 0
    assert read(lim) == f"{1 << 30}\n"            # v1/10 keeps the old limit (01/10)
    assert write(lim, b"2G") == EINVAL


def test_kmem_limit_on_fresh_cgroup(shared):
    """01/10: after independent=1 with no usage, any limit (even 0) is accepted."""
    cg = fresh(shared)
    assert write(os.path.join(cg, "memory.kmem.independent_kmem_limit"), b"1") == 0
    assert write(os.path.join(cg, "memory.kmem.limit_in_bytes"), b"0") == 0
    assert read(os.path.join(cg, "memory.kmem.limit_in_bytes")) == "0\n"


TRIGGERS = ["memory.failcnt", "memory.max_usage_in_bytes", "memory.memsw.failcnt",
            "memory.memsw.max_usage_in_bytes", "memory.force_empty"]


@pytest.mark.parametrize("name", TRIGGERS)
def test_triggers_accept_any_content(shared, name):
    """3.3.8 mem_cgroup_reset: failcnt / max_usage_in_bytes (and memsw's) are triggers whose
    content is ignored; mem_cgroup_force_empty_write: force_empty takes any write (on a cgroup
    without tasks or children)."""
    cg = fresh(shared)
    for data in (b"0", b"abc", b"\n", b"-5", b"x" * 100, b"1.5G"):
        assert write(os.path.join(cg, name), data) == 0, data


def test_max_usage_trigger_resets_to_usage(shared):
    """3.3.8 mem_cgroup_reset: any write to max_usage_in_bytes resets max to the current usage."""
    cg = fresh(shared)
    name = os.path.basename(cg)
    ctl(shared, f"charge anon 1M cg=/{name}")
    ctl(shared, f"uncharge anon 1M cg=/{name}")
    for f in ("memory.max_usage_in_bytes", "memory.memsw.max_usage_in_bytes"):
        path = os.path.join(cg, f)
        assert read(path) == f"{1 << 20}\n"
        assert write(path, b"junk") == 0
        assert read(path) == "0\n"


def test_force_empty_is_write_only(shared):
    """3.3.8 mem_cgroup_files[], cgroup_file_mode: memory.force_empty is W only (mode 0200):
    reading it is EINVAL."""
    cg = fresh(shared)
    assert errno_of(read, os.path.join(cg, "memory.force_empty")) == EINVAL
    r = sh(f"cat {cg}/memory.force_empty")
    assert r.returncode == 1 and "Invalid argument" in r.stderr


READ_ONLY = [n for n, mode in {**MEMORY, **MEMSW}.items() if mode == 0o444]


@pytest.mark.parametrize("name", READ_ONLY)
def test_read_only_files_refuse_writes(shared, name):
    """3.3.8 kernel/cgroup.c, 01/10: files with no write handler (mode 0444) give EINVAL on write."""
    cg = fresh(shared)
    before = read(os.path.join(cg, name))
    assert write(os.path.join(cg, name), b"0") == EINVAL
    assert write(os.path.join(shared.path, name), b"0") == EINVAL
    assert read(os.path.join(cg, name)) == before


def test_event_control_is_write_only_and_parsed(shared):
    """3.3.8 cgroup_write_event_control: cgroup.event_control (0222) takes "<event_fd> <fd>
    [args]"; junk EINVAL."""
    cg = fresh(shared)
    path = os.path.join(cg, "cgroup.event_control")
    assert errno_of(read, path) == EINVAL
    for data in (b"junk", b"1", b"1x 2", b"\n"):
        assert write(path, data) == EINVAL, data


def test_release_agent_is_a_path_max_string(mnt):
    """3.3.8 kernel/cgroup.c: release_agent (root only) is a string file whose limit is PATH_MAX
    (cgroup_write_string: nbytes >= max_write_len -> E2BIG)."""
    path = mnt.p("release_agent")
    assert read(path) == "\n"
    assert write(path, b" /bin/true \n") == 0
    assert read(path) == "/bin/true\n"
    assert write(path, b"/" * 4096) == E2BIG
    assert write(path, b"/" * 4095) == 0
    assert read(path) == "/" * 4095 + "\n"


def test_release_agent_is_never_run(mnt, tmp_path):
    """3.3.8 kernel/cgroup.c: check_for_release queues a cgroup with notify_on_release once
    it has neither tasks nor children after a task left or a child was removed, and
    cgroup_release_agent runs release_agent as root (call_usermodehelper, argv = agent and
    the cgroup's path). kmemfs never runs it (docs/semantics.md §13: a root daemon must not
    execute a path a user wrote); it logs a `release` event where 3.3 would have."""
    marker = tmp_path / "ran"
    agent = tmp_path / "agent.sh"
    agent.write_text(f"#!/bin/sh\necho \"$1\" > {marker}\n")
    agent.chmod(0o755)
    assert write(mnt.p("release_agent"), str(agent).encode()) == 0
    os.mkdir(mnt.p("p"))
    assert write(mnt.p("p", "notify_on_release"), b"1") == 0
    os.mkdir(mnt.p("p", "c"))                         # inherits notify_on_release
    assert read(mnt.p("p", "c", "notify_on_release")) == "1\n"
    os.rmdir(mnt.p("p", "c"))                         # p: child removed, now empty
    pid = re.search(r"pid=(\d+)", ctl(mnt, "spawn cg=/p")).group(1)
    ctl(mnt, f"exit {pid}")                            # p: its last task left
    events = read(mnt.p(".kmemfs", "events"))
    assert re.findall(r" release cgroup=(\S+)", events) == ["/p", "/p"]
    time.sleep(0.2)                                   # a run agent would have written by now
    assert not marker.exists()


def test_use_hierarchy_rules(mount_factory):
    """3.3.8 mem_cgroup_hierarchy_write: only 0/1; EBUSY with children (for 0 as well); EINVAL
    when the parent has use_hierarchy=1; root may change it while it has no children; children
    copy the parent's value at creation (mem_cgroup_create)."""
    m = mount_factory()
    assert write(m.p("memory.use_hierarchy"), b"2") == EINVAL
    assert write(m.p("memory.use_hierarchy"), b"1") == 0        # root, no children yet
    os.makedirs(m.p("h", "c"))
    assert read(m.p("h", "memory.use_hierarchy")) == "1\n"
    assert read(m.p("h", "c", "memory.use_hierarchy")) == "1\n"
    for v in (b"0", b"1"):
        assert write(m.p("h", "memory.use_hierarchy"), v) == EINVAL   # parent hierarchical
        assert write(m.p("h", "c", "memory.use_hierarchy"), v) == EINVAL
    assert write(m.p("memory.use_hierarchy"), b"0") == EBUSY      # root has children now
    r = sh(f"echo 0 > {m.p('memory.use_hierarchy')}")
    assert r.returncode == 1 and "Device or resource busy" in r.stderr
    assert read(m.p("memory.use_hierarchy")) == "1\n"


def test_use_hierarchy_ebusy_with_children(shared):
    """3.3.8 mem_cgroup_hierarchy_write: use_hierarchy may change only while the cgroup has no
    children."""
    cg = fresh(shared)
    path = os.path.join(cg, "memory.use_hierarchy")
    assert write(path, b"1") == 0
    assert write(path, b"0") == 0
    os.mkdir(os.path.join(cg, "kid"))
    assert write(path, b"1") == EBUSY
    assert write(path, b"0") == EBUSY
    assert write(path, b"2") == EINVAL
    os.rmdir(os.path.join(cg, "kid"))
    assert write(path, b"1") == 0


def test_swappiness_rules(shared):
    """3.3.8 mem_cgroup_swappiness_write: > 100 EINVAL; root EINVAL (root shows the global
    vm.swappiness, 60); EINVAL if the parent uses hierarchy, or this cgroup uses hierarchy
    and has children."""
    cg = fresh(shared)
    path = os.path.join(cg, "memory.swappiness")
    assert read(path) == "60\n"
    assert write(path, b"101") == EINVAL
    assert write(path, b"100") == 0 and read(path) == "100\n"
    assert write(path, b"0") == 0 and read(path) == "0\n"
    assert read(shared.p("memory.swappiness")) == "60\n"
    assert write(shared.p("memory.swappiness"), b"60") == EINVAL
    assert write(shared.p("memory.swappiness"), b"10") == EINVAL
    assert write(os.path.join(cg, "memory.use_hierarchy"), b"1") == 0
    assert write(path, b"30") == 0                 # hierarchical but no children: allowed
    os.mkdir(os.path.join(cg, "kid"))
    assert write(path, b"40") == EINVAL            # uses hierarchy and has children
    assert write(os.path.join(cg, "kid", "memory.swappiness"), b"40") == EINVAL  # parent
    assert read(path) == "30\n"


def test_oom_control_rules(shared):
    """3.3.8 mem_cgroup_oom_control_write: only 0/1 (2 EINVAL); root EINVAL; EINVAL if the parent
    uses hierarchy, or this cgroup uses hierarchy and has children; two-line read format."""
    cg = fresh(shared)
    path = os.path.join(cg, "memory.oom_control")
    assert read(path) == "oom_kill_disable 0\nunder_oom 0\n"
    assert write(path, b"2") == EINVAL
    assert write(path, b"1") == 0
    assert read(path) == "oom_kill_disable 1\nunder_oom 0\n"
    assert write(shared.p("memory.oom_control"), b"1") == EINVAL
    assert write(shared.p("memory.oom_control"), b"0") == EINVAL
    assert read(shared.p("memory.oom_control")) == "oom_kill_disable 0\nunder_oom 0\n"
    assert write(os.path.join(cg, "memory.use_hierarchy"), b"1") == 0
    os.mkdir(os.path.join(cg, "kid"))
    assert write(path, b"0") == EINVAL
    assert write(os.path.join(cg, "kid", "memory.oom_control"), b"0") == EINVAL
    r = sh(f"echo 2 > {cg}/memory.oom_control")
    assert r.returncode == 1 and "Invalid argument" in r.stderr


def test_move_charge_rules(shared):
    """3.3.8 mem_cgroup_move_charge_write: bitmask of bits 0 and 1; value >= 4 EINVAL."""
    cg = fresh(shared)
    path = os.path.join(cg, "memory.move_charge_at_immigrate")
    assert read(path) == "0\n"
    for v in (3, 2, 1, 0):
        assert write(path, str(v).encode()) == 0 and read(path) == f"{v}\n"
    assert write(path, b"4") == EINVAL
    assert write(path, b"0x4") == EINVAL
    r = sh(f"echo 4 > {path}")
    assert r.returncode == 1 and "Invalid argument" in r.stderr


def test_children_inherit_settings(shared):
    """3.3.8 mem_cgroup_create: children copy use_hierarchy, swappiness and oom_kill_disable from
    the parent but NOT move_charge_at_immigrate (3.3 sets 0); 01/10 memcg_kmem_init: every memcg
    starts with independent_kmem_limit=0 (not inherited in this series)."""
    p = fresh(shared)
    for f, v in (("memory.swappiness", b"30"), ("memory.oom_control", b"1"),
                 ("memory.move_charge_at_immigrate", b"3"),
                 ("memory.kmem.independent_kmem_limit", b"1"),
                 ("memory.use_hierarchy", b"1")):
        assert write(os.path.join(p, f), v) == 0, f
    os.mkdir(os.path.join(p, "kid"))
    kid = os.path.join(p, "kid")
    assert read(os.path.join(kid, "memory.use_hierarchy")) == "1\n"
    assert read(os.path.join(kid, "memory.swappiness")) == "30\n"
    assert read(os.path.join(kid, "memory.oom_control")).startswith("oom_kill_disable 1\n")
    assert read(os.path.join(kid, "memory.move_charge_at_immigrate")) == "0\n"
    assert read(os.path.join(kid, "memory.kmem.independent_kmem_limit")) == "0\n"


def test_cgroup_core_flags_are_copied_at_creation(shared):
    """3.3.8 kernel/cgroup.c cgroup_create copies notify_on_release and clone_children from the
    parent."""
    p = fresh(shared)
    assert write(os.path.join(p, "notify_on_release"), b"1") == 0
    assert write(os.path.join(p, "cgroup.clone_children"), b"1") == 0
    os.mkdir(os.path.join(p, "kid"))
    assert read(os.path.join(p, "kid", "notify_on_release")) == "1\n"
    assert read(os.path.join(p, "kid", "cgroup.clone_children")) == "1\n"
    q = fresh(shared)
    os.mkdir(os.path.join(q, "kid"))
    assert read(os.path.join(q, "kid", "notify_on_release")) == "0\n"
    assert read(os.path.join(q, "kid", "cgroup.clone_children")) == "0\n"


# ------------------------------------------------------------------ 3. tree rules (3.3.8)
def test_mkdir_rules(shared):
    """3.3.8 cgroup_mkdir / cgroup_lookup: an existing cgroup or control-file name EEXIST, names
    over NAME_MAX (255 bytes) ENAMETOOLONG, 255 bytes fine; release_agent is a free name
    below root (a root-only file)."""
    cg = fresh(shared)
    os.mkdir(os.path.join(cg, "a"))
    assert errno_of(os.mkdir, os.path.join(cg, "a")) == EEXIST
    for name in ("memory.stat", "tasks", "memory.kmem.slabinfo"):
        assert errno_of(os.mkdir, os.path.join(cg, name)) == EEXIST, name
    assert errno_of(os.mkdir, os.path.join(cg, "release_agent")) == 0   # root-only file
    assert errno_of(os.mkdir, shared.p("release_agent")) == EEXIST
    assert errno_of(os.mkdir, shared.p(".kmemfs")) == EEXIST
    assert errno_of(os.mkdir, os.path.join(cg, "n" * 256)) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, os.path.join(cg, "n" * 255)) == 0
    r = sh(f"cd {cg} && mkdir a; mkdir memory.stat")
    assert r.stderr.count("File exists") == 2


def test_rmdir_rules(shared):
    """3.3.8 cgroup_rmdir: EBUSY with children or tasks; a control file ENOTDIR; missing
    ENOENT; an emptied cgroup can go."""
    cg = fresh(shared)
    os.makedirs(os.path.join(cg, "a", "b"))
    assert errno_of(os.rmdir, os.path.join(cg, "a")) == EBUSY
    r = sh(f"rmdir {cg}/a")
    assert r.returncode == 1 and "Device or resource busy" in r.stderr
    assert errno_of(os.rmdir, os.path.join(cg, "a", "memory.stat")) == errno.ENOTDIR
    assert errno_of(os.rmdir, os.path.join(cg, "nope")) == errno.ENOENT
    with sleepers() as (p,):
        os.rmdir(os.path.join(cg, "a", "b"))
        assert write(os.path.join(cg, "a", "tasks"), str(p.pid).encode()) == 0
        assert errno_of(os.rmdir, os.path.join(cg, "a")) == EBUSY
        r = sh(f"echo {p.pid} > {cg}/tasks")            # move it out again
        assert r.returncode == 0, r.stderr
        os.rmdir(os.path.join(cg, "a"))
    assert not os.path.exists(os.path.join(cg, "a"))


def test_rename_rules(shared):
    """3.3.8 cgroup_rename: within the parent OK
    (the cgroup keeps its settings and children), across parents EIO, onto an
    existing name EEXIST, a control file ENOTDIR."""
    cg = fresh(shared)
    a, b = os.path.join(cg, "a"), os.path.join(cg, "b")
    os.makedirs(os.path.join(a, "kid"))
    assert write(os.path.join(a, "memory.swappiness"), b"33") == 0
    assert write(os.path.join(a, "memory.limit_in_bytes"), b"1G") == 0
    r = sh(f"cd {cg} && mv a b")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(cg)) == sorted(list(expected_files(root=False)) + ["b"])
    assert read(os.path.join(b, "memory.swappiness")) == "33\n"
    assert read(os.path.join(b, "memory.limit_in_bytes")) == f"{1 << 30}\n"
    assert os.path.isdir(os.path.join(b, "kid"))
    # across parents
    os.mkdir(os.path.join(cg, "c"))
    r = sh(f"cd {cg} && mv b/kid c/kid")
    assert r.returncode == 1 and "Input/output error" in r.stderr
    assert errno_of(os.rename, os.path.join(b, "kid"), os.path.join(cg, "kid")) == errno.EIO
    assert os.path.isdir(os.path.join(b, "kid"))
    # onto an existing cgroup
    assert errno_of(os.rename, b, os.path.join(cg, "c")) == EEXIST
    r = sh(f"cd {cg} && mv -T b c")
    assert r.returncode == 1 and "File exists" in r.stderr
    # a control file
    assert errno_of(os.rename, os.path.join(b, "memory.stat"),
                    os.path.join(b, "zz")) == errno.ENOTDIR
    r = sh(f"cd {cg} && mv b/memory.stat b/zz")
    assert r.returncode == 1 and "Not a directory" in r.stderr
    assert os.path.exists(os.path.join(b, "memory.stat"))
    # the renamed cgroup is addressable by its new path in the control plane
    ctl(shared, f"charge anon 8K cg=/{os.path.basename(cg)}/b")
    assert "rss 8192\n" in read(os.path.join(b, "memory.stat"))


def test_no_regular_files_links_or_nodes(shared):
    """3.3.8 kernel/cgroup.c: a cgroup directory holds only its control files and child cgroups
    (3.3 cgroupfs has no ->create, ->unlink, ->link, ->symlink or ->mknod): creating a file is
    EACCES, rm / ln / ln -s / mknod / mkfifo are EPERM."""
    cg = fresh(shared)
    assert errno_of(os.open, os.path.join(cg, "newfile"), os.O_CREAT | os.O_WRONLY) == \
        errno.EACCES
    cases = {
        f"touch {cg}/x": "Permission denied",
        f"echo > {cg}/newfile": "Permission denied",
        f"rm {cg}/memory.stat": "Operation not permitted",
        f"rm -f {cg}/memory.stat": "Operation not permitted",
        f"ln {cg}/memory.stat {cg}/hard": "Operation not permitted",
        f"ln -s memory.stat {cg}/sym": "Operation not permitted",
        f"mknod {cg}/null c 1 3": "Operation not permitted",
        f"mkfifo {cg}/fifo": "Operation not permitted",
    }
    for cmd, text in cases.items():
        r = sh(cmd)
        assert r.returncode != 0 and text in r.stderr, (cmd, r.stderr)
    assert errno_of(os.unlink, os.path.join(cg, "memory.stat")) == errno.EPERM
    assert errno_of(os.link, os.path.join(cg, "memory.stat"), os.path.join(cg, "h")) == \
        errno.EPERM
    assert errno_of(os.symlink, "x", os.path.join(cg, "s")) == errno.EPERM
    assert errno_of(os.mkfifo, os.path.join(cg, "f")) == errno.EPERM
    assert set(os.listdir(cg)) == set(expected_files(root=False))


def test_open_file_of_removed_cgroup_is_enodev(shared):
    """3.3.8 cgroup_rmdir (+ cgroup_file_read/write): once the cgroup is removed, an open fd
    of one of its files gives ENODEV on read and on write (also after the name is reused)."""
    cg = fresh(shared)
    rfd = os.open(os.path.join(cg, "memory.stat"), os.O_RDONLY)
    wfd = os.open(os.path.join(cg, "memory.swappiness"), os.O_WRONLY)
    try:
        assert os.read(rfd, 5)
        os.rmdir(cg)
        assert errno_of(os.pread, rfd, 100, 0) == errno.ENODEV
        assert errno_of(os.write, wfd, b"10") == errno.ENODEV
        os.mkdir(cg)
        assert errno_of(os.pread, rfd, 100, 0) == errno.ENODEV
        assert errno_of(os.write, wfd, b"10") == errno.ENODEV
        assert read(os.path.join(cg, "memory.swappiness")) == "60\n"
    finally:
        os.close(rfd)
        os.close(wfd)


# ------------------------------------------------------------------ 4. reads
def chunked(path, size) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        while True:
            b = os.read(fd, size)
            if not b:
                return b"".join(out)
            assert len(b) <= size
            out.append(b)
    finally:
        os.close(fd)


def test_chunked_reads_match_one_read(shared):
    """seq_file reads: memory.stat and memory.kmem.slabinfo read 1, 7 or 100
    bytes at a time on one fd give the same text as one read."""
    cg = fresh(shared)
    name = os.path.basename(cg)
    ctl(shared, f"alloc dentry 100 cg=/{name}")
    ctl(shared, f"kmalloc 64 50 cg=/{name}")
    ctl(shared, f"charge anon 1M cg=/{name}")
    for path in (os.path.join(cg, "memory.stat"), os.path.join(cg, "memory.kmem.slabinfo"),
                 shared.p("memory.kmem.slabinfo"), shared.p("memory.stat")):
        whole = read(path).encode()
        assert whole.count(b"\n") >= 2
        for size in (1, 7, 100):
            assert chunked(path, size) == whole, (path, size)
    slab = read(os.path.join(cg, "memory.kmem.slabinfo")).splitlines()
    assert slab[0] == "# name            <active_objs> <num_objs> <objsize>"
    assert any(line.startswith(f"dentry({name})") for line in slab[1:])


def test_pread_serves_the_offset_zero_snapshot(shared):
    """memory.kmem.slabinfo and memory.stat are seq_files: the text is made by the read at offset
    0; reads at later offsets serve that snapshot even if usage (kmem.usage_in_bytes, rss) changed
    in between, until a new read at offset 0."""
    cg = fresh(shared)
    name = os.path.basename(cg)
    fd = os.open(os.path.join(cg, "memory.kmem.usage_in_bytes"), os.O_RDONLY)
    sfd = os.open(os.path.join(cg, "memory.kmem.slabinfo"), os.O_RDONLY)
    stat_fd = os.open(os.path.join(cg, "memory.stat"), os.O_RDONLY)
    try:
        assert os.pread(fd, 1, 0) == b"0"
        header = os.pread(sfd, 10, 0)
        stat0 = os.pread(stat_fd, 1, 0)
        ctl(shared, f"alloc dentry 100 cg=/{name}")
        ctl(shared, f"charge anon 1M cg=/{name}")
        usage = read(os.path.join(cg, "memory.kmem.usage_in_bytes"))
        assert usage != "0\n"
        assert os.pread(fd, 100, 1) == b"\n"                    # rest of "0\n"
        assert os.pread(fd, 100, 1) == b"\n"                    # still the old snapshot
        old_slab = header + os.pread(sfd, 4096, 10)
        assert old_slab == b"# name            <active_objs> <num_objs> <objsize>\n"
        old_stat = stat0 + os.pread(stat_fd, 8192, 1)
        assert b"\nrss 0\n" in old_stat
        # a new read at offset 0 makes a new snapshot
        assert os.pread(fd, 100, 0) == usage.encode()
        assert os.pread(fd, 100, 2) == usage.encode()[2:]
        new_slab = os.pread(sfd, 8192, 0)
        assert f"\ndentry({name})".encode() in new_slab
        assert f"\nrss {1 << 20}\n".encode() in os.pread(stat_fd, 8192, 0)
        assert os.pread(fd, 100, 1000) == b""
    finally:
        for f in (fd, sfd, stat_fd):
            os.close(f)


# ------------------------------------------------------------------ 5. tasks / cgroup.procs
def test_echo_dollar_dollar_into_tasks(shared):
    """3.3.8 attach_task_by_pid: `echo $$ > tasks` moves the shell; it then sees itself listed, in
    tasks and cgroup.procs."""
    cg = fresh(shared)
    r = sh(f"cd {cg} && echo $$ > tasks && echo pid=$$ && cat tasks && echo procs && "
           "cat cgroup.procs")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    pid = lines[0].split("=")[1]
    i = lines.index("procs")
    assert pid in lines[1:i] and pid in lines[i + 1:]


def test_echo_zero_means_the_writer(shared):
    """3.3.8 cgroup_write_X64 and attach_task_by_pid: pid 0 is the writer."""
    cg = fresh(shared)
    r = sh(f"echo 0 > {cg}/tasks && echo $$ && cat {cg}/tasks")
    assert r.returncode == 0, r.stderr
    me, *listed = r.stdout.split()
    assert me in listed
    cg2 = fresh(shared)
    r = sh(f"printf '\\n' > {cg2}/cgroup.procs && echo $$ && cat {cg2}/cgroup.procs")
    assert r.returncode == 0, r.stderr                  # "" parses to 0 (cgroup_write_X64)
    me, *listed = r.stdout.split()
    assert me in listed


def test_tasks_write_parsing_and_esrch(shared):
    """3.3.8 cgroup_write_X64, attach_task_by_pid: tasks / cgroup.procs are u64 files (base 0,
    whitespace, E2BIG, junk EINVAL) and an unknown pid is ESRCH."""
    cg = fresh(shared)
    tasks = os.path.join(cg, "tasks")
    with sleepers() as (p,):
        for data in (oct(p.pid).replace("0o", "0").encode(), hex(p.pid).encode(),
                     f"  {p.pid} \n".encode(), str(p.pid).encode()):
            assert write(os.path.join(shared.path, "tasks"), str(p.pid).encode()) == 0
            assert p.pid not in pids(tasks)
            assert write(tasks, data) == 0, data
            assert pids(tasks) == [p.pid], data
        for data, want in ((f"{p.pid}x".encode(), EINVAL), (b"-1", EINVAL), (b"1K", EINVAL),
                           (b"1" * 64, E2BIG), (b"999999999", ESRCH), (b"4000000", ESRCH),
                           (b"99999999999", ESRCH)):
            for f in ("tasks", "cgroup.procs"):
                assert write(os.path.join(shared.path, f), data) == want, (f, data)
                assert write(os.path.join(cg, f), data) == want, (f, data)
        assert pids(tasks) == [p.pid]
    for bogus in ("999999999", "4000000"):
        r = sh(f"echo {bogus} > {tasks}")
        assert r.returncode == 1 and "No such process" in r.stderr


def test_pid_belongs_to_one_cgroup_and_lists_are_sorted(shared):
    """3.3.8 attach_task_by_pid: writing a pid moves it (it leaves its old cgroup, root included);
    lists are sorted."""
    a, b = fresh(shared), fresh(shared)
    with sleepers(4) as procs:
        ps = sorted(p.pid for p in procs)
        for pid in reversed(ps):
            assert write(os.path.join(a, "tasks"), str(pid).encode()) == 0
        assert pids(os.path.join(a, "tasks")) == ps
        assert pids(os.path.join(a, "cgroup.procs")) == ps
        root = pids(shared.p("tasks"))
        assert root == sorted(root) and not set(ps) & set(root)
        assert write(os.path.join(b, "cgroup.procs"), str(ps[1]).encode()) == 0
        assert pids(os.path.join(a, "tasks")) == [ps[0]] + ps[2:]
        assert pids(os.path.join(b, "tasks")) == [ps[1]]
        assert write(shared.p("tasks"), str(ps[0]).encode()) == 0
        assert pids(os.path.join(a, "tasks")) == ps[2:]
        assert ps[0] in pids(shared.p("tasks"))


def test_exited_process_leaves_the_list(shared):
    """A process that exits drops out of tasks and no longer makes rmdir EBUSY (3.3.8
    cgroup_rmdir)."""
    cg = fresh(shared)
    with sleepers(2) as (p, q):
        for x in (p, q):
            assert write(os.path.join(cg, "tasks"), str(x.pid).encode()) == 0
        assert errno_of(os.rmdir, cg) == EBUSY
        p.kill()
        p.wait()
        assert pids(os.path.join(cg, "tasks")) == [q.pid]
        assert errno_of(os.rmdir, cg) == EBUSY
        q.kill()
        q.wait()
        assert read(os.path.join(cg, "tasks")) == ""
        assert read(os.path.join(cg, "cgroup.procs")) == ""
        assert errno_of(os.rmdir, cg) == 0


def test_rmdir_after_exit_without_reading_tasks(shared):
    """rmdir itself notices that the cgroup's only task exited (3.3.8 cgroup_rmdir)."""
    cg = fresh(shared)
    with sleepers() as (p,):
        assert write(os.path.join(cg, "tasks"), str(p.pid).encode()) == 0
        p.kill()
        p.wait()
        r = sh(f"rmdir {cg}")
        assert r.returncode == 0, r.stderr


def test_root_tasks_lists_host_pids(shared):
    """3.3.8 kernel/cgroup.c: the root cgroup holds every host task not in a child
    cgroup (root's tasks lists host pids, sorted; cgroup.procs lists thread-group ids)."""
    root = pids(shared.p("tasks"))
    assert root == sorted(root)
    assert os.getpid() in root and 1 in root
    procs = pids(shared.p("cgroup.procs"))
    assert procs == sorted(procs) and os.getpid() in procs
    with sleepers() as (p,):
        assert p.pid in pids(shared.p("tasks"))
        assert write(os.path.join(fresh(shared), "tasks"), str(p.pid).encode()) == 0
        assert p.pid not in pids(shared.p("tasks"))


# ------------------------------------------------------------------ 6. daemon robustness
def test_injected_read_fault_is_one_eio(mount_factory, monkeypatch):
    """One failing handler stays one EIO: with KMEMFS_INJECT_FAULT=read every read fails
    with EIO, yet ls, mkdir and writes still work and the daemon stays up."""
    monkeypatch.setenv("KMEMFS_INJECT_FAULT", "read")
    m = mount_factory()
    r = sh(f"cat {m.p('memory.usage_in_bytes')}")
    assert r.returncode == 1 and "Input/output error" in r.stderr
    assert errno_of(read, m.p("memory.stat")) == errno.EIO
    r = sh(f"ls {m.path} && mkdir {m.path}/a && ls -l {m.path}/a")
    assert r.returncode == 0, r.stderr
    assert "memory.stat" in r.stdout
    assert write(m.p("a", "memory.swappiness"), b"10") == 0
    os.rmdir(m.p("a"))
    assert m.proc.poll() is None and os.path.ismount(m.path)
    assert "fault injected into read" in m.read_log()


def test_sigterm_unmounts_cleanly(mount_factory):
    """SIGTERM to the daemon: it unmounts and exits 0."""
    m = mount_factory()
    os.mkdir(m.p("a"))
    m.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: not os.path.ismount(m.path))
    assert m.proc.wait(timeout=60) == 0
    assert m.path not in read("/proc/mounts")
    assert os.listdir(m.path) == []                  # the bare directory again


def kmemfs_cli(*args):
    exe = os.path.join(ROOT, ".venv", "bin", "kmemfs")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "kmemfs"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_kill_9_leaves_stale_mount_that_cli_mount_recovers(mount_factory):
    """After kill -9 the mount point is stale (ENOTCONN); `kmemfs mount` cleans it up and
    mounts again with no manual step; `kmemfs umount` then unmounts and the daemon exits."""
    m = mount_factory()
    m.proc.kill()
    m.proc.wait()
    assert errno_of(os.listdir, m.path) == errno.ENOTCONN
    # stat may be served from FUSE's attribute cache (entries and attributes live a day:
    # kmemfs/fuse/ops.py TIMEOUT); statvfs is answered by the daemon only
    assert errno_of(os.statvfs, m.path) == errno.ENOTCONN
    daemon_pid = None
    try:
        r = kmemfs_cli("mount", m.path)
        assert r.returncode == 0, r.stderr
        daemon_pid = int(r.stdout.split("(pid ")[1].split(")")[0])
        assert os.path.ismount(m.path)
        assert "memory.stat" in os.listdir(m.path)
        os.mkdir(m.p("back"))
        assert read(m.p("back", "memory.limit_in_bytes")) == f"{RESOURCE_MAX}\n"
        r = kmemfs_cli("umount", m.path)
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(m.path)
        assert wait_until(lambda: not _alive(daemon_pid))
    finally:
        _cleanup_cli_mount(m.path, daemon_pid)


def test_stale_mount_is_recognised_right_after_kill_9(mount_factory):
    """Right after kill -9 (root attributes still cached by FUSE), the mount check must
    still recognise the stale mount and clean it instead of refusing a busy mount point."""
    from kmemfs.fuse import daemon
    m = mount_factory()
    os.stat(m.path)                       # the root's attributes are now cached for 1 s
    t0 = time.monotonic()
    m.proc.kill()
    m.proc.wait()
    try:
        error = None
        try:
            daemon.check_mountpoint(m.path)
        except daemon.MountError as e:
            error = e
        if time.monotonic() - t0 > 0.8:
            pytest.skip("too slow to land inside the attribute-cache window")
        assert error is None, str(error)
        assert not os.path.ismount(m.path)
    finally:
        _cleanup_cli_mount(m.path, None)


def _cleanup_cli_mount(path, daemon_pid):
    if os.path.ismount(path) or errno_of(os.stat, path):
        subprocess.run(["fusermount3", "-uz", path], capture_output=True)
    if daemon_pid and _alive(daemon_pid):
        os.kill(daemon_pid, signal.SIGTERM)            # the daemon this test started
        wait_until(lambda: not _alive(daemon_pid), 30)


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_cli_mount_errors_are_one_line(mnt, tmp_path):
    """`kmemfs mount` on a missing path, a file, or an already-mounted directory prints one
    line on stderr and exits 1; the existing mount is untouched."""
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "missing", tmp_path / "file", mnt.path):
        r = kmemfs_cli("mount", str(path))
        assert r.returncode == 1, (path, r)
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kmemfs: "), (path, r.stderr)
        assert str(path) in lines[0]
    assert not os.path.exists(tmp_path / "missing")
    assert os.path.ismount(mnt.path) and mnt.proc.poll() is None
    assert "memory.stat" in os.listdir(mnt.path)


# ------------------------------------------------------------------ 7. the real kernel
SHARED_RULES_EXPECTED = """\
mkdir: rc=0 
mkdir-exists: rc=1 File exists
mkdir-ctlfile: rc=1 File exists
rmdir-missing: rc=1 No such file or directory
rmdir-ctlfile: rc=1 Not a directory
touch: rc=1 Permission denied
redirect-create: rc=1 Permission denied
rm-ctlfile: rc=1 Operation not permitted
ln: rc=1 Operation not permitted
ln-s: rc=1 Operation not permitted
mkfifo: rc=1 Operation not permitted
mknod: rc=1 Operation not permitted
limit-junk: rc=1 Invalid argument
limit-minus-1: rc=0 
limit-minus-2: rc=1 Invalid argument
limit-1.5G: rc=1 Invalid argument
limit-1KB: rc=1 Invalid argument
limit-1G: rc=0 1073741824
limit-0x10K: rc=0 16384
limit-010M: rc=0 8388608
soft-limit-2g: rc=0 2147483648
swappiness-201: rc=1 Invalid argument
swappiness-junk: rc=1 Invalid argument
swappiness-minus-1: rc=1 Invalid argument
swappiness-0x10: rc=0 16
swappiness-010: rc=0 8
oom-2: rc=1 Invalid argument
oom-1: rc=0 
oom-read: rc=0 oom_kill_disable 1
move-charge-4: rc=1 Invalid argument
usage-write: rc=1 Invalid argument
stat-write: rc=1 Invalid argument
force-empty-read: rc=1 Invalid argument
force-empty: rc=0 
failcnt-trigger: rc=0 
max-usage-trigger: rc=0 
tcp-modes: rc=0 644 444 644 644 
tcp-limit-junk: rc=1 Invalid argument
tcp-limit-minus-2: rc=1 Invalid argument
tcp-limit-1.5G: rc=1 Invalid argument
tcp-limit-1KB: rc=1 Invalid argument
tcp-limit-1G: rc=0 1073741824
tcp-limit-0x10K: rc=0 16384
tcp-limit-010M: rc=0 8388608
tcp-usage-read: rc=0 0
tcp-usage-write: rc=1 Invalid argument
tcp-failcnt-trigger: rc=0 0
tcp-max-usage-trigger: rc=0 0
tasks-999999999: rc=1 No such process
tasks-4000000: rc=1 No such process
procs-999999999: rc=1 No such process
tasks-junk: rc=1 Invalid argument
mv-within: rc=0 
mv-new-name: rc=0 
mv-old-gone: rc=0 
mv-ctlfile: rc=1 Not a directory
mkdir-child: rc=0 
rmdir-with-child: rc=1 Device or resource busy
mv-across: rc=1 Input/output error
mkdir-d: rc=0 
mv-onto-cgroup: rc=1 File exists
rmdir-c: rc=0 
rmdir-b: rc=0 
rmdir-d: rc=0 
rmdir-gone: rc=1 No such file or directory
empty: rc=0 tasks
"""


def run_rules(base) -> str:
    r = subprocess.run(["bash", RULES_SH, base], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_shared_rules_script_on_kmemfs(mnt):
    """The shared-rules script (tests/data/cgroup_shared_rules.sh) gives the expected
    answers on kmemfs: 3.3.8 mm/memcontrol.c (ranges, triggers, read-only files),
    kernel/cgroup.c (tasks ESRCH, rmdir EBUSY, the tree rules), res_counter (memparse,
    -1 / -2, junk)."""
    os.mkdir(mnt.p("kmemfs_test_rules"))
    assert run_rules(mnt.p("kmemfs_test_rules")) == SHARED_RULES_EXPECTED
    os.rmdir(mnt.p("kmemfs_test_rules"))


def _kernel_available() -> bool:
    return os.geteuid() == 0 and os.path.exists(os.path.join(KERNEL_MEMCG, "memory.use_hierarchy"))


def _remove_tree(base):
    """rmdir every cgroup under (and including) a kmemfs_test_* directory, deepest first."""
    assert os.path.basename(base).startswith("kmemfs_test_")
    if not os.path.isdir(base):
        return
    for dirpath, dirnames, _ in sorted(os.walk(base), key=lambda t: -t[0].count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


@pytest.mark.kernel
@pytest.mark.skipif(not _kernel_available(),
                    reason="needs root and a cgroup v1 memory controller at /sys/fs/cgroup/memory")
def test_shared_rules_match_the_real_kernel(mnt):
    """The same script against kmemfs and against the real cgroup v1 memory controller
    (in a kmemfs_test_* cgroup) prints the same lines. Only rules both share are in it:
    not "1" -> 4096 (modern kernels round down), not use_hierarchy (forced to 1), not
    swappiness 101 (modern range is 0..200), not 1T (modern memparse has T), not the tcp
    limit's default or "-1" (modern: PAGE_COUNTER_MAX pages, 3.3: RESOURCE_MAX). The tcp
    files' modes, parse errors, read-only usage and triggers (3.3 tcp_files[]) are shared."""
    os.mkdir(mnt.p("kmemfs_test_rules"))
    ours = run_rules(mnt.p("kmemfs_test_rules"))
    base = os.path.join(KERNEL_MEMCG, f"kmemfs_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    os.mkdir(base)
    try:
        theirs = run_rules(base)
    finally:
        _remove_tree(base)
    assert not os.path.exists(base)
    assert theirs == ours
    assert ours.count("rc=1") >= 25


@pytest.mark.kernel
@pytest.mark.skipif(not _kernel_available(),
                    reason="needs root and a cgroup v1 memory controller at /sys/fs/cgroup/memory")
def test_kernel_and_kmemfs_share_u64_and_memparse_errnos(mnt):
    """Exact-byte writes (os.write) that the 3.3 grammar (3.3.8 kernel/cgroup.c, res_counter) and
    the modern kernel answer alike, compared file by file: junk, sign, suffix and range errors."""
    cases = [("memory.limit_in_bytes", b"1.5G"), ("memory.limit_in_bytes", b"-2"),
             ("memory.limit_in_bytes", b"1 G"), ("memory.limit_in_bytes", b"-1"),
             ("memory.limit_in_bytes", b"2G\n"), ("memory.soft_limit_in_bytes", b"junk"),
             ("memory.soft_limit_in_bytes", b"-1"), ("memory.swappiness", b"1x"),
             ("memory.swappiness", b"0x10"), ("memory.swappiness", b"-1"),
             ("memory.swappiness", b"1K"), ("memory.oom_control", b"2"),
             ("memory.oom_control", b"0"), ("memory.move_charge_at_immigrate", b"4"),
             ("memory.move_charge_at_immigrate", b"8"), ("tasks", b"999999999"),
             ("cgroup.procs", b"4000000"), ("tasks", b"x"), ("memory.usage_in_bytes", b"0"),
             ("memory.kmem.usage_in_bytes", b"0"), ("memory.numa_stat", b"0"),
             ("memory.max_usage_in_bytes", b"x"), ("memory.failcnt", b"0")]
    os.mkdir(mnt.p("kmemfs_test_bytes"))
    ours = [write(mnt.p("kmemfs_test_bytes", f), d) for f, d in cases]
    base = os.path.join(KERNEL_MEMCG, f"kmemfs_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    os.mkdir(base)
    try:
        theirs = [write(os.path.join(base, f), d) for f, d in cases]
    finally:
        _remove_tree(base)
    assert not os.path.exists(base)
    assert [(c, errno.errorcode.get(e, e)) for c, e in zip(cases, theirs)] == \
        [(c, errno.errorcode.get(e, e)) for c, e in zip(cases, ours)]
