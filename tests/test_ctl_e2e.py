"""End-to-end tests of the control plane `.kmemfs/` (docs/ctl.md): a real kmemfs is mounted and
driven with `echo ... > .kmemfs/ctl`, os calls on one open fd, and `kmemfs ctl`.

Numbers come from the small catalogue tests/data/test.slabinfo mounted with `noboot_slabs`
(tests/engine_helpers.py: GEOMETRY, slab_bytes, free_limit, FIRST_SPAWN_BYTES); the rules and
their sources from docs/semantics.md sections 4-11.
"""
import errno
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from engine_helpers import FIRST_SPAWN_BYTES, GEOMETRY, PAGE, free_limit, slab_bytes
from mounting import ROOT, sh

pytestmark = pytest.mark.e2e

CATALOGUE = os.path.join(ROOT, "tests", "data", "test.slabinfo")
KMEMFS = os.path.join(os.path.dirname(sys.executable), "kmemfs")
SIM_PID = 5_000_000          # the first simulated pid (engine SIM_PID_BASE)
WAIT = 30                    # generous bound on anything we wait for (never asserted on)


# ------------------------------------------------------------------ helpers
@pytest.fixture
def tm(mount_factory):
    """A mount on the test catalogue with empty original caches, no array caches (frees
    reach the slabs at once) and no charge stock (charge_batch=0; 3.3's 32 is the default):
    exact numbers. test_slab_arrays.py covers the arrays."""
    return mount_factory(slabinfo=CATALOGUE,
                         options=["noboot_slabs", "noarray_caches", "charge_batch=0"])


def run(m, text: str):
    """One open(O_RDWR) of ctl, one write(2) of `text`, then read the results on the same fd.
    Returns (errno or 0, [result lines])."""
    fd = os.open(m.p(".kmemfs", "ctl"), os.O_RDWR)
    try:
        try:
            n = os.write(fd, text.encode())
            assert n == len(text.encode())
            rc = 0
        except OSError as e:
            rc = e.errno
        out = b""
        while chunk := os.read(fd, 65536):
            out += chunk
    finally:
        os.close(fd)
    return rc, out.decode().splitlines()


def ok(m, line: str) -> str:
    rc, out = run(m, line + "\n")
    assert rc == 0 and len(out) == 1 and out[0].startswith("ok "), (line, rc, out)
    return out[0]


def fails(m, line: str, want: int) -> str:
    rc, out = run(m, line + "\n")
    name = errno.errorcode[want]
    assert rc == want and len(out) == 1 and out[0].startswith(f"error: {name}: "), \
        (line, errno.errorcode.get(rc, rc), out)
    return out[0]


def read(path) -> str:
    with open(path) as f:
        return f.read()


def num(m, *parts) -> int:
    return int(read(m.p(*parts)))


def slabs(m, *where) -> dict:
    """name -> (active_objs, num_objs) from `.kmemfs/slabinfo` (default) or a memory.kmem.slabinfo."""
    text = read(m.p(*where) if where else m.p(".kmemfs", "slabinfo"))
    rows = {}
    for line in text.splitlines():
        if line.startswith(("slabinfo -", "#")):
            continue
        f = line.split()
        rows[f[0]] = (int(f[1]), int(f[2]))
    return rows


def events(m) -> list:
    """[(seq, type, {key: value})] of the whole event log."""
    out = []
    for line in read(m.p(".kmemfs", "events")).splitlines():
        seq, kind, *kv = line.split(" ")
        fields = dict(x.split("=", 1) for x in kv)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", fields.pop("time"))
        out.append((int(seq), kind, fields))
    return out


def kinds(m, kind: str) -> list:
    return [f for _, k, f in events(m) if k == kind]


def wait_for(pred, what: str):
    deadline = time.monotonic() + WAIT
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def under_oom(m, cg: str) -> int:
    return int(re.search(r"under_oom (\d)", read(m.p(cg, "memory.oom_control"))).group(1))


def cli(m, *command):
    return subprocess.run([KMEMFS, "ctl", m.path, *command], capture_output=True, text=True,
                          timeout=WAIT)


# ------------------------------------------------------------------ 1. commands and results
def test_alloc_and_free_result_lines(tm):
    os.mkdir(tm.p("a"))
    r = sh(f"echo 'alloc dentry 10 cg=/a' > {tm.p('.kmemfs/ctl')}")
    assert r.returncode == 0, r.stderr
    assert slabs(tm)["dentry(a)"] == (10, 20)
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == slab_bytes("dentry")
    assert ok(tm, "alloc dentry 5 cg=/a") == \
        "ok alloc cache=dentry(a) count=5 cgroup=/a gfp=GFP_KERNEL"
    # The original name frees the cgroup's objects of that type.
    assert ok(tm, "free dentry 4 cg=/a") == "ok free cache=dentry count=4 cgroup=/a"
    assert slabs(tm)["dentry(a)"] == (11, 20)
    # A concrete copy name frees from that cache; default count is 1.
    assert ok(tm, "free dentry(a) cg=/a") == "ok free cache=dentry(a) count=1 cgroup=/a"
    assert ok(tm, "free dentry(a) 10") == "ok free cache=dentry(a) count=10 cgroup=/"
    assert slabs(tm)["dentry(a)"] == (0, 20)
    # Freeing more than the cgroup holds: EINVAL, what it had is freed.
    ok(tm, "alloc dentry 3 cg=/a")
    assert "freed 3 of 5" in fails(tm, "free dentry 5 cg=/a", errno.EINVAL)
    assert slabs(tm)["dentry(a)"] == (0, 20)
    assert "no cache named" in fails(tm, "free nosuch(a) 1", errno.EINVAL)


def test_free_by_original_name_is_newest_first_across_caches(tm):
    """GFP_NOFS with no copy yet: served by the global cache and a creation is queued (05/10
    mem_cgroup_get_kmem_cache); after `workqueue` the copy serves. `free dentry` takes the newest
    objects first."""
    os.mkdir(tm.p("a"))
    assert ok(tm, "alloc dentry 3 gfp=GFP_NOFS cg=/a") == \
        "ok alloc cache=dentry count=3 cgroup=/a gfp=GFP_NOFS"
    assert ok(tm, "workqueue") == "ok workqueue created=1 dentry(a)"
    assert ok(tm, "alloc dentry 2 gfp=GFP_NOFS cg=/a") == \
        "ok alloc cache=dentry(a) count=2 cgroup=/a gfp=GFP_NOFS"
    ok(tm, "alloc dentry 4 cg=/a")             # more in the copy, newest of all
    assert ok(tm, "free dentry 7 cg=/a") == "ok free cache=dentry count=7 cgroup=/a"
    s = slabs(tm)
    assert s["dentry(a)"][0] == 0 and s["dentry"][0] == 2
    ok(tm, "free dentry 2 cg=/a")
    assert slabs(tm)["dentry"][0] == 0
    # Only the copy is charged: the global cache's slab is nobody's (no acct_root).
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == slab_bytes("dentry")


@pytest.mark.parametrize("gfp", ["GFP_NOFS", "GFP_NOIO", "GFP_ATOMIC"])
def test_non_kernel_gfp_first_allocation_uses_global_cache(tm, gfp):
    os.mkdir(tm.p("w"))
    assert ok(tm, f"alloc inode_cache 2 gfp={gfp} cg=/w") == \
        f"ok alloc cache=inode_cache count=2 cgroup=/w gfp={gfp}"
    assert ok(tm, f"kmalloc 60 gfp={gfp} cg=/w") == \
        f"ok kmalloc cache=size-64 count=1 cgroup=/w gfp={gfp}"
    assert "inode_cache(w)" not in slabs(tm)
    assert num(tm, "w", "memory.kmem.usage_in_bytes") == 0
    assert ok(tm, "workqueue") == "ok workqueue created=2 inode_cache(w) size-64(w)"
    assert [f["cache"] for f in kinds(tm, "cache_create")] == ["inode_cache(w)", "size-64(w)"]
    assert ok(tm, "workqueue") == "ok workqueue created=0"
    assert ok(tm, f"alloc inode_cache 1 gfp={gfp} cg=/w") == \
        f"ok alloc cache=inode_cache(w) count=1 cgroup=/w gfp={gfp}"
    assert num(tm, "w", "memory.kmem.usage_in_bytes") == slab_bytes("inode_cache")
    # NOACCOUNT never uses a copy (05/10 mem_cgroup_get_kmem_cache); the CLI joins its words into
    # one command.
    r = cli(tm, "alloc", "dentry", "5", "gfp=GFP_KERNEL|__GFP_NOACCOUNT", "cg=/w")
    assert r.returncode == 0 and r.stdout == \
        "ok alloc cache=dentry count=5 cgroup=/w gfp=GFP_KERNEL|__GFP_NOACCOUNT\n", r


def test_kmalloc_uses_smallest_fitting_size_cache(tm):
    os.mkdir(tm.p("a"))
    for size, cache in [("1", "size-32"), ("32", "size-32"), ("33", "size-64"),
                        ("100", "size-128"), ("129", "size-192"), ("4K", "size-4096")]:
        assert ok(tm, f"kmalloc {size} 2 cg=/a") == \
            f"ok kmalloc cache={cache}(a) count=2 cgroup=/a gfp=GFP_KERNEL"
    assert ok(tm, "kmalloc 100 3 irq=1 cg=/a") == \
        "ok kmalloc cache=size-128 count=3 cgroup=/a gfp=GFP_KERNEL"      # interrupt: global
    assert ok(tm, "kfree 100 2 cg=/a") == "ok kfree cache=size-128 count=2 cgroup=/a"
    s = slabs(tm)
    assert s["size-128(a)"][0] + s["size-128"][0] == 3
    assert "larger than the largest" in fails(tm, "kmalloc 4097 cg=/a", errno.ENOMEM)
    # kmalloc(0) is ZERO_SIZE_PTR (3.3.8 mm/slab.c __find_general_cachep): nothing happens
    assert ok(tm, "kmalloc 0 5 cg=/a") == \
        "ok kmalloc cache=ZERO_SIZE_PTR count=5 cgroup=/a gfp=GFP_KERNEL"
    assert ok(tm, "kfree 0 5 cg=/a") == "ok kfree cache=ZERO_SIZE_PTR count=5 cgroup=/a"
    want = sum(slab_bytes(c) for c in ("size-32", "size-64", "size-128", "size-192", "size-4096"))
    want += slab_bytes("size-4096")          # two 4096-byte objects: two one-object slabs
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == want


def test_charge_and_uncharge_user_pages(tm):
    os.mkdir(tm.p("a"))
    assert ok(tm, "charge anon 1M cg=/a") == "ok charge anon pages=256 cgroup=/a"
    assert ok(tm, "charge file 8K cg=/a") == "ok charge file pages=2 cgroup=/a"
    assert ok(tm, "charge file 1 cg=/a") == "ok charge file pages=1 cgroup=/a"   # page rounding
    assert num(tm, "a", "memory.usage_in_bytes") == (256 + 3) * PAGE
    stat_ = dict(l.split() for l in read(tm.p("a", "memory.stat")).splitlines())
    assert int(stat_["rss"]) == 256 * PAGE and int(stat_["cache"]) == 3 * PAGE
    assert ok(tm, "uncharge file 4K cg=/a") == "ok uncharge file pages=1 cgroup=/a"
    assert ok(tm, "uncharge anon 1M cg=/a") == "ok uncharge anon pages=256 cgroup=/a"
    assert ok(tm, "charge file 1G cg=/a") == "ok charge file pages=262144 cgroup=/a"
    assert ok(tm, "uncharge file 2G cg=/a") == "ok uncharge file pages=262146 cgroup=/a"
    assert num(tm, "a", "memory.usage_in_bytes") == 0
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == 0


def test_spawn_and_exit(tm):
    os.mkdir(tm.p("a"))
    line = ok(tm, "spawn cg=/a")
    assert line == f"ok spawn pid={SIM_PID} cgroup=/a"
    assert str(SIM_PID) in read(tm.p("a", "tasks")).split()
    # The first fork in a cgroup grows one slab in every FORK_RECIPE cache.
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == FIRST_SPAWN_BYTES
    assert num(tm, "a", "memory.usage_in_bytes") == FIRST_SPAWN_BYTES
    assert slabs(tm, "a", "memory.kmem.slabinfo")["vm_area_struct(a)"] == (8, 23)
    assert ok(tm, "spawn cg=/a") == f"ok spawn pid={SIM_PID + 1} cgroup=/a"
    assert ok(tm, f"exit {SIM_PID}") == f"ok exit pid={SIM_PID}"
    assert read(tm.p("a", "tasks")).split() == [str(SIM_PID + 1)]
    r = cli(tm, "exit", str(SIM_PID + 1))
    assert r.returncode == 0 and r.stdout == f"ok exit pid={SIM_PID + 1}\n"
    assert read(tm.p("a", "tasks")) == ""
    # Objects are freed; the empty slabs stay on the free lists until reaped.
    assert slabs(tm)["task_struct(a)"] == (0, 5)
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == FIRST_SPAWN_BYTES
    # one slab in each of the 11 caches, then the size-64 slab that held signal_cache's
    # off-slab descriptor (mm/slab.c slab_destroy frees it from slabp_cache)
    assert ok(tm, "reap") == "ok reap slabs=12"
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == 0
    assert [f["pid"] for f in kinds(tm, "task_spawn")] == [str(SIM_PID), str(SIM_PID + 1)]
    assert [f["reason"] for f in kinds(tm, "task_exit")] == ["exit", "exit"]


def test_touch_unlink_drop_caches_reap(tm):
    os.mkdir(tm.p("a"))
    assert ok(tm, "touch 10 cg=/a") == "ok touch files=10 cgroup=/a"
    s = slabs(tm)
    assert s["dentry(a)"] == (10, 20) and s["inode_cache(a)"] == (10, 14)
    assert ok(tm, "unlink 4 cg=/a") == "ok unlink files=4 cgroup=/a"
    s = slabs(tm)
    assert s["dentry(a)"] == (10, 20) and s["inode_cache(a)"] == (6, 14)   # negative dentries
    assert "only 6 file(s)" in fails(tm, "unlink 7 cg=/a", errno.EINVAL)
    assert ok(tm, "drop_caches") == "ok drop_caches objects=16"
    s = slabs(tm)
    assert s["dentry(a)"] == (0, 20) and s["inode_cache(a)"] == (0, 14)
    assert ok(tm, "reap") == "ok reap slabs=3"
    assert slabs(tm)["inode_cache(a)"] == (0, 0)
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == 0
    assert ok(tm, "reap") == "ok reap slabs=0"
    assert ok(tm, "check") == "ok check invariants=hold"


def test_multi_line_write_runs_in_order_and_stops_at_first_error(tm):
    os.mkdir(tm.p("a"))
    rc, out = run(tm, "# a comment\nalloc dentry 1 cg=/a\n\nalloc dentry 2 cg=/a\nfrobnicate\n"
                      "alloc dentry 4 cg=/a\n")
    assert rc == errno.EINVAL
    assert out == ["ok alloc cache=dentry(a) count=1 cgroup=/a gfp=GFP_KERNEL",
                   "ok alloc cache=dentry(a) count=2 cgroup=/a gfp=GFP_KERNEL",
                   "error: EINVAL: unknown command 'frobnicate'; 'help' lists the commands"]
    assert slabs(tm)["dentry(a)"][0] == 3
    rc, out = run(tm, "spawn cg=/a\ncheck\nworkqueue\n")
    assert rc == 0 and out == [f"ok spawn pid={SIM_PID} cgroup=/a", "ok check invariants=hold",
                               "ok workqueue created=0"]
    # Through a shell: the fd kept open, the results read back on it in a stream.
    ctl_ = tm.p(".kmemfs", "ctl")
    r = sh(f"exec 3<>{ctl_}; echo 'alloc dentry 1 cg=/a' >&3; echo 'free dentry 9 cg=/a' >&3;"
           f" echo rc=$?; cat <&3; echo 'check' >&3; cat <&3")
    assert r.stdout.splitlines() == [
        "rc=1", "ok alloc cache=dentry(a) count=1 cgroup=/a gfp=GFP_KERNEL",
        "error: EINVAL: free dentry: freed 4 of 9: /a holds no more", "ok check invariants=hold"]


# ------------------------------------------------------------------ 2. errors
@pytest.mark.parametrize("line, want, text", [
    ("alloc", errno.EINVAL, "alloc: wrong number of arguments"),
    ("alloc dentry 1 2", errno.EINVAL, "wrong number of arguments"),
    ("frobnicate 1", errno.EINVAL, "unknown command 'frobnicate'"),
    ("alloc dentry x", errno.EINVAL, "COUNT must be a decimal number"),
    ("alloc dentry -1", errno.EINVAL, "COUNT must be a decimal number"),
    ("alloc nosuch 1", errno.EINVAL, "no cache named 'nosuch'"),
    ("alloc dentry(a) 1", errno.EINVAL, "no cache named"),
    ("alloc dentry 1 gfp=GFP_BOGUS", errno.EINVAL, "unknown gfp flag"),
    ("alloc dentry 1 gfp=GFP_KERNEL|GFP_NOFS", errno.EINVAL, "more than one base gfp"),
    ("alloc dentry 1 irq=2", errno.EINVAL, "irq takes 0 or 1"),
    ("alloc dentry 1 color=red", errno.EINVAL, "unknown option 'color'"),
    ("alloc dentry 1 cg=/a cg=/a", errno.EINVAL, "option cg given twice"),
    ("alloc dentry cg=/a 1", errno.EINVAL, "after options"),
    ("free dentry 1 gfp=GFP_KERNEL", errno.EINVAL, "free takes no gfp="),
    ("charge swap 4K", errno.EINVAL, "charge takes anon or file"),
    ("charge anon 4X", errno.EINVAL, "bad size"),
    ("spawn 1", errno.EINVAL, "wrong number of arguments"),
    ("alloc dentry 1 cg=/nope", errno.ENOENT, "no cgroup '/nope'"),
    ("spawn cg=/a/nope", errno.ENOENT, "no cgroup"),
    ("alloc dentry 1 task=999999999", errno.ESRCH, "no task 999999999"),
    ("exit 999999999", errno.ESRCH, "no simulated task 999999999"),
    ("alloc dentry 100000001 cg=/a", errno.E2BIG, "over the per-command cap"),
    ("charge anon 1000G cg=/a", errno.E2BIG, "pages"),
    ("touch 100000001 cg=/a", errno.E2BIG, "over the per-command cap"),
    ("kmalloc 4097 cg=/a", errno.ENOMEM, "larger than the largest"),
])
def test_errors_and_errnos(tm, line, want, text):
    os.mkdir(tm.p("a"))
    assert text in fails(tm, line, want)
    # the shell sees the same errno
    r = sh(f"echo '{line}' > {tm.p('.kmemfs/ctl')}")
    assert r.returncode == 1 and os.strerror(want) in r.stderr, r.stderr
    # kmemfs ctl: non-zero, the error line and the errno text on stderr
    r = cli(tm, *line.split())
    assert r.returncode != 0 and r.stdout == ""
    assert f"error: {errno.errorcode[want]}: " in r.stderr and os.strerror(want) in r.stderr


def test_exit_of_host_pid_and_overlong_line(tm):
    os.mkdir(tm.p("a"))
    with subprocess.Popen(["sleep", "60"]) as p:
        try:
            sh(f"echo {p.pid} > {tm.p('a', 'tasks')}", check=True)
            assert "no simulated task" in fails(tm, f"exit {p.pid}", errno.ESRCH)
        finally:
            p.kill()
    rc, out = run(tm, "alloc dentry 1 cg=/a " + "#" * 5000 + "\n")
    assert rc == errno.E2BIG and out == []
    r = cli(tm)                     # no command: commands from stdin (none here)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_enomem_keeps_what_was_allocated(tm):
    """01/10 memcg_charge_kmem, independent mode: the kmem limit refuses the 11th slab, no
    reclaim, no OOM."""
    os.mkdir(tm.p("a"))
    sh(f"cd {tm.path}/a && echo 1 > memory.kmem.independent_kmem_limit && "
       "echo 40K > memory.kmem.limit_in_bytes", check=True)
    assert num(tm, "a", "memory.kmem.limit_in_bytes") == 40960
    line = fails(tm, "alloc dentry 1000 cg=/a", errno.ENOMEM)
    assert line == ("error: ENOMEM: alloc cache=dentry(a) count=200 cgroup=/a gfp=GFP_KERNEL: "
                    "allocated 200 of 1000")
    assert slabs(tm)["dentry(a)"] == (200, 200)
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == 40960
    r = cli(tm, "alloc", "dentry", "5", "cg=/a")
    assert r.returncode == 1
    assert r.stderr == ("error: ENOMEM: alloc cache=dentry(a) count=0 cgroup=/a "
                        "gfp=GFP_KERNEL: allocated 0 of 5\nkmemfs: Cannot allocate memory\n")
    assert "spawn: task_struct(a) allocation failed in /a" in fails(tm, "spawn cg=/a",
                                                                 errno.ENOMEM)
    assert slabs(tm)["dentry(a)"] == (200, 200)
    assert read(tm.p("a", "tasks")) == ""     # fork is all or nothing
    assert "touch: created 0 of 3" in fails(tm, "touch 3 cg=/a", errno.ENOMEM)
    assert ok(tm, "check") == "ok check invariants=hold"


# ------------------------------------------------------------------ 3. attribution
def test_writer_and_its_children_charge_the_writers_cgroup(tm):
    os.mkdir(tm.p("a"))
    ctl_ = tm.p(".kmemfs", "ctl")
    py = f"import os; fd = os.open({ctl_!r}, os.O_RDWR); os.write(fd, b'alloc dentry 3\\n'); " \
         "print(os.read(fd, 4096).decode(), end='')"
    r = sh(f"echo $$ > {tm.p('a', 'tasks')}\n"
           f"exec 3<>{ctl_}; echo 'alloc dentry 5' >&3; cat <&3; exec 3>&-\n"
           f"bash -c 'echo alloc dentry 7 > {ctl_}'\n"
           f"{sys.executable} -c \"{py}\"\n"
           f"{KMEMFS} ctl {tm.path} alloc dentry 2\n", check=True)
    assert r.stdout.splitlines() == [
        "ok alloc cache=dentry(a) count=5 cgroup=/a gfp=GFP_KERNEL",
        "ok alloc cache=dentry(a) count=3 cgroup=/a gfp=GFP_KERNEL",
        "ok alloc cache=dentry(a) count=2 cgroup=/a gfp=GFP_KERNEL"]
    assert slabs(tm)["dentry(a)"] == (17, 20)
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == slab_bytes("dentry")


def test_process_in_no_cgroup_charges_root(tm):
    os.mkdir(tm.p("a"))
    assert ok(tm, "alloc dentry 4") == "ok alloc cache=dentry count=4 cgroup=/ gfp=GFP_KERNEL"
    assert ok(tm, f"alloc dentry 1 task={os.getpid()}") == \
        "ok alloc cache=dentry count=1 cgroup=/ gfp=GFP_KERNEL"
    assert slabs(tm)["dentry"] == (5, 20)
    assert set(slabs(tm)) == set(GEOMETRY)                       # no memcg copy anywhere
    assert slabs(tm, "memory.kmem.slabinfo")["dentry"] == (5, 20)
    assert num(tm, "memory.kmem.usage_in_bytes") == 0            # no acct_root
    assert num(tm, "memory.usage_in_bytes") == 0
    assert kinds(tm, "cache_create") == []


def test_task_and_cg_options(tm):
    os.makedirs(tm.p("a", "b"))
    line = ok(tm, "spawn cg=/a")
    pid = int(re.search(r"pid=(\d+)", line).group(1))
    assert ok(tm, f"alloc dentry 2 task={pid}") == \
        "ok alloc cache=dentry(a) count=2 cgroup=/a gfp=GFP_KERNEL"
    assert ok(tm, f"spawn task={pid}") == f"ok spawn pid={pid + 1} cgroup=/a"
    assert ok(tm, "alloc dentry 3 cg=/a/b") == \
        "ok alloc cache=dentry(b) count=3 cgroup=/a/b gfp=GFP_KERNEL"
    assert ok(tm, f"alloc dentry 1 task={pid} cg=/a/b") == \
        "ok alloc cache=dentry(b) count=1 cgroup=/a/b gfp=GFP_KERNEL"   # cg= wins
    with subprocess.Popen(["sleep", "60"]) as p:               # a host pid in a cgroup's tasks
        try:
            sh(f"echo {p.pid} > {tm.p('a', 'b', 'tasks')}", check=True)
            assert ok(tm, f"kmalloc 64 task={p.pid}") == \
                "ok kmalloc cache=size-64(b) count=1 cgroup=/a/b gfp=GFP_KERNEL"
        finally:
            p.kill()
    assert slabs(tm, "a", "memory.kmem.slabinfo")["dentry(a)"] == (2, 20)
    assert slabs(tm, "a", "b", "memory.kmem.slabinfo")["dentry(b)"] == (4, 20)
    assert num(tm, "a", "b", "memory.kmem.usage_in_bytes") == \
        slab_bytes("dentry") + slab_bytes("size-64")


# ------------------------------------------------------------------ 4. the hidden directory
def test_hidden_control_directory(tm):
    r = sh(f"ls -a {tm.path}")
    assert r.returncode == 0 and ".kmemfs" not in r.stdout.split()
    r = sh(f"ls {tm.path}/.kmemfs")
    assert r.stdout.split() == ["config", "ctl", "events", "slabinfo", "snapshot"]
    modes = {n: stat.S_IMODE(os.stat(tm.p(".kmemfs", n)).st_mode)
             for n in ("ctl", "events", "slabinfo", "config")}
    assert modes == {"ctl": 0o600, "events": 0o444, "slabinfo": 0o444, "config": 0o444}
    config = dict(l.split(" ", 1) for l in sh(f"cat {tm.path}/.kmemfs/config").stdout.splitlines())
    assert config["boot_slabs"] == "0" and config["acct_root"] == "0"
    assert config["catalogue"] == CATALOGUE and config["caches"] == str(len(GEOMETRY))
    text = sh(f"cat {tm.path}/.kmemfs/slabinfo").stdout.splitlines()
    assert text[0] == "slabinfo - version: 2.1" and text[1].startswith("# name            <active")
    assert [l.split()[0] for l in text[2:]] == list(GEOMETRY)     # newest first, as the dump
    assert set(slabs(tm).values()) == {(0, 0)}                  # noboot_slabs: all empty
    with pytest.raises(FileExistsError):
        os.mkdir(tm.p(".kmemfs"))
    assert sh(f"mkdir {tm.path}/.kmemfs").returncode != 0
    os.mkdir(tm.p("a"))
    os.mkdir(tm.p("a", ".kmemfs"))                 # only the root hides it
    os.rmdir(tm.p("a", ".kmemfs"))


# ------------------------------------------------------------------ 5. events
def test_events_of_every_kind(tm):
    # cache_create
    os.mkdir(tm.p("a"))
    ok(tm, "alloc dentry 20 cg=/a")
    assert kinds(tm, "cache_create") == [{"cache": "dentry(a)", "cgroup": "/a"}]
    # cache_dead, cache_destroy
    os.rmdir(tm.p("a"))
    assert kinds(tm, "cache_dead") == [{"cache": "dentry(a)dead", "cgroup": "/a", "slabs": "1"}]
    ok(tm, "free dentry(a)dead 20")
    assert kinds(tm, "cache_destroy") == []          # its empty slab waits for reap
    ok(tm, "reap")
    assert kinds(tm, "cache_destroy") == [{"cache": "dentry(a)dead"}]
    # task_spawn, task_exit
    os.mkdir(tm.p("t"))
    ok(tm, "spawn cg=/t")
    ok(tm, f"exit {SIM_PID}")
    assert kinds(tm, "task_spawn") == [{"pid": str(SIM_PID), "cgroup": "/t"}]
    assert kinds(tm, "task_exit") == [{"pid": str(SIM_PID), "cgroup": "/t", "reason": "exit"}]
    # charge_fail (kmem), independent mode
    os.mkdir(tm.p("i"))
    sh(f"cd {tm.path}/i && echo 1 > memory.kmem.independent_kmem_limit && "
       "echo 4K > memory.kmem.limit_in_bytes", check=True)
    fails(tm, "alloc dentry 21 cg=/i", errno.ENOMEM)
    assert kinds(tm, "charge_fail")[-1] == {"cgroup": "/i", "counter": "kmem", "bytes": "4096",
                                            "gfp": "GFP_KERNEL"}
    # reclaim, charge_fail (res), oom_kill: a 17-page cgroup, a task, page cache to reclaim
    os.mkdir(tm.p("o"))
    sh(f"echo 68K > {tm.p('o', 'memory.limit_in_bytes')}", check=True)
    pid = int(re.search(r"pid=(\d+)", ok(tm, "spawn cg=/o")).group(1))   # 15 pages
    ok(tm, "charge file 8K cg=/o")                                          # 17 pages
    ok(tm, f"charge anon 4K task={pid}")             # reclaims the page cache: 16 pages
    assert {"cgroup": "/o", "pages": "2"} in kinds(tm, "reclaim")
    assert {"cgroup": "/o", "counter": "res", "bytes": "4096", "gfp": "GFP_KERNEL"} in \
        kinds(tm, "charge_fail")
    assert "charged 1 of 3 pages" in fails(tm, f"charge anon 12K task={pid}", errno.ENOMEM)
    kill = kinds(tm, "oom_kill")
    assert kill == [{"cgroup": "/o", "pid": str(pid), "rss": str(2 * PAGE), "simulated": "1"}]
    assert kinds(tm, "task_exit")[-1] == {"pid": str(pid), "cgroup": "/o", "reason": "oom_kill"}
    assert read(tm.p("o", "tasks")) == ""
    # oom_kill with nothing to kill
    fails(tm, "charge anon 64K cg=/o", errno.ENOMEM)
    assert kinds(tm, "oom_kill")[-1] == {"cgroup": "/o", "pid": "0", "victim": "none"}
    # bypass: the current task is OOM-killed inside a kmem charge; 3.3's try_charge leaves
    # through `bypass:` with -EINTR, so the allocation fails (3.3.8 __mem_cgroup_try_charge)
    os.mkdir(tm.p("p"))
    sh(f"echo 68K > {tm.p('p', 'memory.limit_in_bytes')}", check=True)
    pid = int(re.search(r"pid=(\d+)", ok(tm, "spawn cg=/p")).group(1))
    ok(tm, f"charge anon 8K task={pid}")                                    # 17 pages: full
    assert "(the acting task was OOM-killed)" in fails(tm, f"alloc dentry 20 task={pid}",
                                                       errno.ENOMEM)
    # (/o's anon charge that OOM-killed its own task left through bypass: too)
    assert kinds(tm, "bypass") == [{"cgroup": "/o", "bytes": "4096"},
                                   {"cgroup": "/p", "bytes": "4096"}]
    st = dict(l.split() for l in read(tm.p("p", "memory.stat")).splitlines())
    assert st["kernel_bypassed_memory"] == "0"
    # uncharge_underflow: charged while independent, uncharged while dependent (01/10
    # memcg_uncharge_kmem)
    os.mkdir(tm.p("u"))
    sh(f"echo 1 > {tm.p('u', 'memory.kmem.independent_kmem_limit')}", check=True)
    ok(tm, "alloc dentry 20 cg=/u")
    sh(f"echo 0 > {tm.p('u', 'memory.kmem.independent_kmem_limit')}", check=True)
    ok(tm, "free dentry 20 cg=/u")
    ok(tm, "reap")
    assert kinds(tm, "uncharge_underflow") == [{"cgroup": "/u", "counter": "res",
                                                "bytes": "4096"}]
    # independent_toggled: the flips above, with kmem out (the README's warning)
    # (the first flip had nothing charged: no event)
    assert [f for f in kinds(tm, "independent_toggled") if f["cgroup"] == "/u"] == [
        {"cgroup": "/u", "to": "0", "kmem_bytes": "4096"}]
    # under_oom: a charge that sleeps (oom_kill_disable=1) until the limit is raised
    os.mkdir(tm.p("z"))
    sh(f"cd {tm.path}/z && echo 4K > memory.limit_in_bytes && echo 1 > memory.oom_control",
       check=True)
    w = subprocess.Popen(["bash", "-c", f"echo 'charge anon 8K cg=/z' > {tm.p('.kmemfs/ctl')}"])
    try:
        wait_for(lambda: kinds(tm, "under_oom"), "under_oom")
        assert kinds(tm, "under_oom") == [{"cgroup": "/z"}]
        sh(f"echo 8K > {tm.p('z', 'memory.limit_in_bytes')}", check=True)
        assert w.wait(timeout=WAIT) == 0
    finally:
        w.kill()
        w.wait()
    # sequence numbers are 1.. without gaps
    assert [s for s, _, _ in events(tm)] == list(range(1, len(events(tm)) + 1))
    assert {k for _, k, _ in events(tm)} == {
        "cache_create", "cache_dead", "cache_destroy", "charge_fail", "reclaim", "oom_kill",
        "under_oom", "bypass", "uncharge_underflow", "task_spawn", "task_exit",
        "independent_toggled"}


def test_events_reader_kept_open_sees_only_new_events(tm):
    path = tm.p(".kmemfs", "events")
    os.mkdir(tm.p("a"))
    ok(tm, "alloc dentry 1 cg=/a")
    untimed = lambda text: re.sub(r" time=\S+", "", text)          # noqa: E731
    with open(path, "rb", buffering=0) as f:
        first = f.read()
        assert untimed(first.decode()) == "1 cache_create cache=dentry(a) cgroup=/a\n"
        assert f.read() == b""
        # 11 FORK_RECIPE copies and size-64(a) (signal_cache's off-slab descriptors), the task
        ok(tm, "spawn cg=/a")
        ok(tm, "alloc dentry 1 cg=/a")                 # no event
        new = f.read().decode()
        lines = new.splitlines()
        assert [l.split()[:2] for l in lines] == \
            [[str(i), "cache_create"] for i in range(2, 14)] + [["14", "task_spawn"]]
        assert untimed(lines[-1]) == f"14 task_spawn pid={SIM_PID} cgroup=/a"
        assert f.read() == b""
        ok(tm, f"exit {SIM_PID}")
        last = f.read().decode()
        assert untimed(last) == f"15 task_exit pid={SIM_PID} cgroup=/a reason=exit\n"
    # Offsets are stable: a fresh reader at the same offset sees the same bytes; st_size is
    # the bytes ever written (the kernel may cache attributes for a moment).
    total = len(first) + len(new.encode()) + len(last)
    wait_for(lambda: os.stat(path).st_size == total, "st_size to catch up")
    with open(path, "rb") as f:
        f.seek(len(first))
        assert f.read().decode() == new + last


# ------------------------------------------------------------------ 6. a blocked writer
def _blocking_cgroup(m, name):
    os.mkdir(m.p(name))
    sh(f"cd {m.path}/{name} && echo 40K > memory.limit_in_bytes && echo 1 > memory.oom_control",
       check=True)


def test_blocked_writer_completes_when_the_limit_is_raised(tm):
    _blocking_cgroup(tm, "a")
    ctl_ = tm.p(".kmemfs", "ctl")
    w = subprocess.Popen(["bash", "-c", f"exec 3<>{ctl_}; echo 'alloc dentry 100000 cg=/a' >&3;"
                          " echo rc=$?; cat <&3"], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: under_oom(tm, "a") == 1, "under_oom 1")
        time.sleep(0.3)
        assert w.poll() is None                        # still blocked in write(2)
        # the rest of the file system keeps serving
        assert "oom_kill_disable 1\nunder_oom 1\n" == read(tm.p("a", "memory.oom_control"))
        assert num(tm, "a", "memory.kmem.usage_in_bytes") == 40960
        assert num(tm, "a", "memory.usage_in_bytes") == 40960
        assert "memory.stat" in sh(f"ls {tm.path}/a").stdout
        assert slabs(tm)["dentry(a)"] == (200, 200)
        assert kinds(tm, "under_oom") == [{"cgroup": "/a"}]
        os.mkdir(tm.p("other"))
        sh(f"echo 1M > {tm.p('other', 'memory.limit_in_bytes')}", check=True)
        assert num(tm, "other", "memory.limit_in_bytes") == 1 << 20
        # A second ctl writer queues behind the first in the kernel (FUSE direct writes hold
        # the inode lock): it must not deadlock, and runs once the first is released.
        w2 = subprocess.Popen(["bash", "-c", f"exec 3<>{ctl_}; echo 'alloc dentry 1 cg=/other'"
                               " >&3; cat <&3"], stdout=subprocess.PIPE, text=True)
        sh(f"echo -1 > {tm.p('a', 'memory.limit_in_bytes')}", check=True)
        out, _ = w.communicate(timeout=WAIT)
        out2, _ = w2.communicate(timeout=WAIT)
    finally:
        for p in (w, locals().get("w2")):
            if p is not None and p.poll() is None:
                sh(f"echo -1 > {tm.p('a', 'memory.limit_in_bytes')}")
                p.kill()
                p.wait()
    assert w.returncode == 0 and w2.returncode == 0
    assert out2 == "ok alloc cache=dentry(other) count=1 cgroup=/other gfp=GFP_KERNEL\n"
    assert out.splitlines() == ["rc=0", "ok alloc cache=dentry(a) count=100000 cgroup=/a "
                                        "gfp=GFP_KERNEL"]
    assert under_oom(tm, "a") == 0
    assert slabs(tm)["dentry(a)"] == (100000, 100000)
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == 100000 // 20 * PAGE


def test_blocked_writer_killed_releases_the_wait(tm):
    _blocking_cgroup(tm, "b")
    w = subprocess.Popen(["bash", "-c",
                          f"echo 'alloc dentry 100000 cg=/b' > {tm.p('.kmemfs/ctl')}"])
    try:
        wait_for(lambda: under_oom(tm, "b") == 1, "under_oom 1")
        assert w.poll() is None
        w.send_signal(signal.SIGKILL)
        assert w.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if w.poll() is None:                          # never leave it stuck in the mount
            sh(f"echo -1 > {tm.p('b', 'memory.limit_in_bytes')}")
            w.kill()
            w.wait()
    wait_for(lambda: under_oom(tm, "b") == 0, "under_oom 0")
    # what was allocated before the wait stays allocated; the limit never moved
    assert slabs(tm)["dentry(b)"] == (200, 200)
    assert num(tm, "b", "memory.kmem.usage_in_bytes") == 40960
    assert num(tm, "b", "memory.limit_in_bytes") == 40960
    assert ok(tm, "check") == "ok check invariants=hold"


def test_signal_to_blocked_writer_gives_eintr(tm):
    """issue 4: a signal to a writer sleeping on the memcg OOM ends its write with EINTR
    (the kernel's mem_cgroup_handle_oom sleep is interruptible too)."""
    _blocking_cgroup(tm, "s")
    w = subprocess.Popen(["bash", "-c", "trap 'echo trapped' USR1; "
                          f"exec 3<>{tm.p('.kmemfs/ctl')}; "
                          "echo 'alloc dentry 100000 cg=/s' >&3 2>/dev/null; echo rc=$?; "
                          "cat <&3"], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: under_oom(tm, "s") == 1, "under_oom 1")
        w.send_signal(signal.SIGUSR1)
        out, _ = w.communicate(timeout=WAIT)
    finally:
        if w.poll() is None:
            sh(f"echo -1 > {tm.p('s', 'memory.limit_in_bytes')}")
            w.kill()
            w.wait()
    lines = out.splitlines()
    assert "trapped" in lines and "rc=1" in lines
    assert any(ln.startswith("error: EINTR") for ln in lines)
    assert under_oom(tm, "s") == 0
    assert slabs(tm)["dentry(s)"] == (200, 200)       # what it got before sleeping stays


def test_blocked_writer_fails_when_oom_kill_disable_is_cleared(tm):
    """memcg_oom_recover also runs when oom_kill_disable goes back to 0: the retried charge
    then calls the OOM killer, which finds no task in /c (`cg=` acts for nobody)."""
    _blocking_cgroup(tm, "c")
    w = subprocess.Popen([KMEMFS, "ctl", tm.path, "alloc", "dentry", "1000", "cg=/c"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: under_oom(tm, "c") == 1, "under_oom 1")
        sh(f"echo 0 > {tm.p('c', 'memory.oom_control')}", check=True)
        out, err = w.communicate(timeout=WAIT)
    finally:
        w.kill()
        w.wait()
    assert w.returncode == 1 and out == ""
    assert err.startswith("error: ENOMEM: alloc cache=dentry(c) count=200 cgroup=/c")
    assert "allocated 200 of 1000" in err
    assert under_oom(tm, "c") == 0
    assert kinds(tm, "oom_kill")[-1] == {"cgroup": "/c", "pid": "0", "victim": "none"}


# ------------------------------------------------------------------ 7. exact counters
def test_independent_mode_counters(tm):
    os.mkdir(tm.p("a"))
    r = sh(f"cd {tm.path}/a && echo 1 > memory.kmem.independent_kmem_limit && "
           "echo 40K > memory.kmem.limit_in_bytes && cat memory.kmem.limit_in_bytes")
    assert r.stdout == "40960\n"
    rc, out = run(tm, "alloc dentry 1000 cg=/a\n")
    per_slab = GEOMETRY["dentry"]["num"]
    n = 40960 // slab_bytes("dentry") * per_slab
    assert rc == errno.ENOMEM and n == 200
    assert out == [f"error: ENOMEM: alloc cache=dentry(a) count={n} cgroup=/a gfp=GFP_KERNEL: "
                   f"allocated {n} of 1000"]
    assert num(tm, "a", "memory.kmem.usage_in_bytes") == 40960
    assert num(tm, "a", "memory.usage_in_bytes") == 0
    assert num(tm, "a", "memory.failcnt") == 0
    assert read(tm.p("a", "memory.kmem.slabinfo")) == (
        "# name            <active_objs> <num_objs> <objsize>\n"
        "dentry(a)            200    200    192\n")
    # the limit cannot go below usage (EBUSY, no reclaim)
    r = sh(f"echo 36K > {tm.p('a', 'memory.kmem.limit_in_bytes')}")
    assert r.returncode == 1 and "busy" in r.stderr
    # user pages are limited by memory.limit_in_bytes only
    assert ok(tm, "charge anon 1M cg=/a") == "ok charge anon pages=256 cgroup=/a"
    assert num(tm, "a", "memory.usage_in_bytes") == 1 << 20


def test_dependent_mode_counters_and_dead_caches(tm):
    os.mkdir(tm.p("d"))
    ok(tm, "alloc dentry 1000 cg=/d")                             # 50 slabs
    ok(tm, "kmalloc 100 31 cg=/d")                                # size-128: 2 slabs
    ok(tm, "spawn cg=/d")
    kmem = 50 * slab_bytes("dentry") + 2 * slab_bytes("size-128") + FIRST_SPAWN_BYTES
    assert num(tm, "d", "memory.kmem.usage_in_bytes") == kmem
    assert num(tm, "d", "memory.usage_in_bytes") == kmem
    ok(tm, "charge file 8K cg=/d")
    assert num(tm, "d", "memory.usage_in_bytes") == kmem + 2 * PAGE
    assert num(tm, "d", "memory.max_usage_in_bytes") == kmem + 2 * PAGE
    # Freeing keeps up to free_limit objects' worth of empty slabs (mm/slab.c free_block).
    ok(tm, "free dentry 1000 cg=/d")
    kept = free_limit("dentry") // GEOMETRY["dentry"]["num"]
    assert kept == 7
    kmem -= (50 - kept) * slab_bytes("dentry")
    assert num(tm, "d", "memory.kmem.usage_in_bytes") == kmem
    assert num(tm, "d", "memory.usage_in_bytes") == kmem + 2 * PAGE
    assert ok(tm, "reap") == f"ok reap slabs={kept}"
    kmem -= kept * slab_bytes("dentry")
    assert num(tm, "d", "memory.kmem.usage_in_bytes") == kmem
    assert slabs(tm, "d", "memory.kmem.slabinfo")["dentry(d)"] == (0, 0)   # live: stays
    # rmdir: copies go dead; their kmem is forgotten (no acct_root), res gives it back
    ok(tm, "touch 5 cg=/d")
    ok(tm, f"exit {SIM_PID}")
    os.rmdir(tm.p("d"))
    glob, root_view = slabs(tm), slabs(tm, "memory.kmem.slabinfo")
    for name in ("dentry(d)dead", "inode_cache(d)dead", "size-128(d)dead"):
        assert name in glob and name in root_view
    assert glob["dentry(d)dead"] == (5, 20) and glob["size-128(d)dead"] == (31, 60)
    assert "dentry(d)" not in glob
    assert num(tm, "memory.kmem.usage_in_bytes") == 0
    ok(tm, "drop_caches")
    assert slabs(tm)["dentry(d)dead"] == (0, 20)
    ok(tm, "reap")
    glob = slabs(tm)
    assert "dentry(d)dead" not in glob and "inode_cache(d)dead" not in glob
    assert "dentry(d)dead" not in slabs(tm, "memory.kmem.slabinfo")
    assert glob["size-128(d)dead"] == (31, 60)                  # still holds objects
    assert ok(tm, "free size-128(d)dead 31") == "ok free cache=size-128(d)dead count=31 cgroup=/"
    ok(tm, "reap")
    assert not any(n.endswith("dead") for n in slabs(tm))
    assert not any(n.endswith("dead") for n in slabs(tm, "memory.kmem.slabinfo"))
    destroyed = {f["cache"] for f in kinds(tm, "cache_destroy")}
    assert {"dentry(d)dead", "inode_cache(d)dead", "size-128(d)dead"} <= destroyed
    assert ok(tm, "check") == "ok check invariants=hold"


# ------------------------------------------------------------------ discovery (issue 12)
def test_help_caches_tasks_status_answer_in_several_lines(tm):
    """The discovery verbs answer an `ok` line, then detail lines indented by two spaces."""
    rc, out = run(tm, "help\n")
    assert rc == 0 and out[0].startswith("ok help commands=alloc,free,")
    assert all(line.startswith("  ") for line in out[1:])
    assert any(line.strip().startswith("alloc CACHE [COUNT] [gfp=FLAGS] [irq=1]")
               for line in out)
    rc, out = run(tm, "help spawn\n")
    assert out[:2] == ["ok help spawn", "  spawn"]
    os.mkdir(tm.p("web"))
    ok(tm, "alloc dentry 3 cg=/web")
    rc, out = run(tm, "caches dentry\n")
    geo = GEOMETRY["dentry"]
    assert out[0] == "ok caches originals=1 copies=1"
    assert out[1].startswith(f"  dentry objsize={geo['objsize']} objperslab={geo['num']} "
                             f"pagesperslab={geo['pages']} ")
    assert out[2] == "    dentry(web) cgroup=/web dead=0 active_objs=3 slabs=1"
    rc, out = run(tm, "caches\n")
    assert out[0].startswith("ok caches originals=") and len(out) > 3
    pid = int(re.search(r"pid=(\d+)", ok_first(tm, "spawn cg=/web")).group(1))
    rc, out = run(tm, "tasks\n")
    assert out == ["ok tasks count=1 simulated=1",
                   f"  pid={pid} cgroup=/web simulated=1 rss=0 comm=sim"]
    rc, out = run(tm, "status\n")
    assert out[0].startswith("ok status cgroups=2 tasks=1 simulated=1 ")
    assert out[1] == "  acting cgroup=/"


def ok_first(m, line):
    rc, out = run(m, line + "\n")
    assert rc == 0, out
    return out[0]


def test_close_matches_copies_and_relative_cgroups(tm):
    """Typos answer with difflib's close matches; a copy's name says how copies are chosen;
    cg=web is cg=/web (a path is from the mount's root)."""
    assert "(did you mean: alloc" in fails(tm, "allok dentry", errno.EINVAL)
    assert "(did you mean: dentry?)" in fails(tm, "alloc dentri", errno.EINVAL)
    assert "(did you mean: dentry?)" in fails(tm, "free dentri", errno.EINVAL)
    os.mkdir(tm.p("web"))
    assert ok(tm, "alloc dentry 2 cg=web") == \
        "ok alloc cache=dentry(web) count=2 cgroup=/web gfp=GFP_KERNEL"
    msg = fails(tm, "alloc dentry(web) 1", errno.EINVAL)
    assert "copy of dentry" in msg and "charged cgroup chooses the copy" in msg
    assert "alloc dentry cg=/web" in msg
    assert "usage: alloc CACHE" in fails(tm, "alloc", errno.EINVAL)
    assert "no cgroup '/nope'" in fails(tm, "spawn cg=nope", errno.ENOENT)


def test_independent_flip_with_kmem_out_warns(tm):
    """README: flipping independent_kmem_limit with kernel memory charged leaves usage wrong:
    an event and a warning line in `status` say so."""
    os.mkdir(tm.p("w"))
    ok(tm, "alloc dentry 1 cg=/w")
    sh(f"echo 1 > {tm.p('w', 'memory.kmem.independent_kmem_limit')}", check=True)
    assert kinds(tm, "independent_toggled") == [
        {"cgroup": "/w", "to": "1", "kmem_bytes": str(slab_bytes("dentry"))}]
    rc, out = run(tm, "status\n")
    assert any(line.startswith("  warning cgroup=/w: independent_kmem_limit was flipped")
               for line in out)


def test_ctl_reads_commands_from_stdin(tm):
    """`kmemfs ctl MP -`: one command per line, each its own result; status 1 if any failed."""
    os.mkdir(tm.p("a"))
    r = subprocess.run([KMEMFS, "ctl", tm.path, "-"], input="alloc dentry 1 cg=/a\n# note\n\n"
                       "bogus\nalloc dentry 2 cg=/a\n", capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "ok alloc cache=dentry(a) count=1 cgroup=/a gfp=GFP_KERNEL",
        "ok alloc cache=dentry(a) count=2 cgroup=/a gfp=GFP_KERNEL"]
    assert "unknown command 'bogus'" in r.stderr
    assert slabs(tm)["dentry(a)"][0] == 3


def test_gfp_is_named_in_events(tm):
    os.mkdir(tm.p("n"))
    sh(f"echo 4K > {tm.p('n', 'memory.limit_in_bytes')}", check=True)
    fails(tm, "alloc dentry 100 gfp=GFP_KERNEL|__GFP_NORETRY cg=/n", errno.ENOMEM)
    assert kinds(tm, "charge_fail")[-1]["gfp"] == "GFP_KERNEL|__GFP_NORETRY"
