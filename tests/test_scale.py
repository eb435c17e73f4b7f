"""Issue 13: reads that do not walk the tree, long FUSE cache lifetimes that stay correct,
`-o page_cache`, and `.kmemfs/snapshot` (docs/performance.md, docs/semantics.md, docs/ctl.md)."""
import errno
import json
import mmap
import os
import select

import stat
import subprocess
import sys
import time

import pytest

from kmemfs.engine import Config, check, render
from kmemfs.tools import cgread

from engine_helpers import make_engine
from mounting import ROOT, sh



def ctl(m, *lines):
    with open(m.p(".kmemfs", "ctl"), "w") as f:
        f.write("".join(f"{ln}\n" for ln in lines))


def busy_tree(m):
    """Hierarchy, limits, failures, tasks, caches, user pages: every snapshot field moves."""
    os.mkdir(m.p("a"))
    with open(m.p("a", "memory.use_hierarchy"), "w") as f:
        f.write("1")
    os.mkdir(m.p("a", "b"))
    os.mkdir(m.p("a", "b c"))                      # a name with a space
    os.mkdir(m.p("d"))
    with open(m.p("d", "memory.limit_in_bytes"), "w") as f:
        f.write("64K")
    with open(m.p("d", "memory.oom_control"), "w") as f:
        f.write("1")
    ctl(m, "alloc dentry 100 cg=/a/b", "charge anon 1M cg=/a", "spawn cg=/a",
        "charge file 40K cg=/d", "kmalloc 100 7 cg=/d")
    try:
        ctl(m, "alloc size-4096 100 cg=/d gfp=GFP_NOWAIT")     # fails: failcnt moves
    except OSError:
        pass
    os.rmdir(m.p("a", "b"))                          # its pages go to /a, its caches die


# ---------------------------------------------------------------------- engine: O(1) totals
def test_root_totals_follow_charges_and_rmdir_as_3_3_walks():
    """3.3.8 mm/memcontrol.c mem_cgroup_usage: root's usage_in_bytes is
    mem_cgroup_recursive_stat(CACHE) + (RSS), not res_counter; mem_cgroup_get_total_stat sums
    for_each_mem_cgroup_tree, which skips a removed memcg (css_tryget fails), so a removed
    child's pgpgin/pgpgout leave root's totals while its pages move to the parent."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    b = e.mkdir(a, "b")
    e.charge_user(b, "file", 8 * 4096)
    e.charge_user(a, "anon", 4096)
    assert render.usage(e, e.root) == 9 * 4096
    assert "total_pgpgin 9\n" in render.memory_stat(e, e.root)
    e.uncharge_user(b, "file", 2 * 4096)
    e.rmdir(b)                              # 6 pages move to /a; b's 8 in / 2 out vanish
    text = render.memory_stat(e, e.root)
    assert render.usage(e, e.root) == 7 * 4096
    assert "total_cache 24576\n" in text and "total_pgpgin 1\n" in text
    assert "total_pgpgout 0\n" in text
    assert check(e) == []


def test_checker_catches_wrong_subtree_sums():
    e = make_engine()
    a = e.mkdir(e.root, "a")
    e.charge_user(a, "file", 4096)
    a.parent.subtree[0] += 4096
    assert any("subtree sums" in b for b in check(e))


def test_sums_survive_a_state_round_trip():
    """State files (kmemfs/fuse/state.py) hold the local counters; the subtree sums are
    derived and rebuilt on load."""
    from kmemfs.fuse import state
    from kmemfs.fuse.daemon import build
    fs = build(Config(boot_slabs=False))
    e = fs.engine
    a = e.mkdir(e.root, "a")
    b = e.mkdir(a, "b")
    fs.memcgs.update({a.id: a, b.id: b})
    e.charge_user(b, "anon", 3 * 4096)
    doc = state.encode(fs)
    assert "subtree" not in doc["objects"]["Memcg"][0]
    e2 = state.loads(state.dumps(fs))["engine"]
    assert check(e2) == [] and e2.root.subtree == e.root.subtree
    assert render.memory_stat(e2, e2.root) == render.memory_stat(e, e.root)


# ---------------------------------------------------------------------- .kmemfs/snapshot
@pytest.mark.parametrize("options", [(), ("noswapaccount",)])
def test_snapshot_equals_a_walk_of_the_files(mount_factory, options):
    """cgread.read_tree reads `.kmemfs/snapshot` on kmemfs: the same dict, key for key and
    in the same order, as reading every cgroup's files one by one."""
    m = mount_factory(options)
    busy_tree(m)
    fast = cgread.read_tree(m.path)
    slow = cgread.read_tree(m.path, snapshot=False)
    assert list(fast) == list(slow) == ["/", "/a", "/a/b c", "/d"]
    assert fast == slow
    assert fast["/a"]["tasks"] == 1
    assert (fast["/d"]["memsw_usage"] is None) == ("noswapaccount" in options)


def test_snapshot_format(mnt):
    busy_tree(mnt)
    text = open(mnt.p(".kmemfs", "snapshot")).read()
    rows = [json.loads(line) for line in text.splitlines()]
    head, cgroups = rows[0], [r for r in rows if r["type"] == "cgroup"]
    caches = [r for r in rows if r["type"] == "cache"]
    assert head["type"] == "header" and head["version"] == 1 and head["page_size"] == 4096
    assert head["cgroups"] == len(cgroups) == 4 and head["caches"] == len(caches)
    assert stat.S_IMODE(os.stat(mnt.p(".kmemfs", "snapshot")).st_mode) == 0o444
    d = next(c for c in cgroups if c["path"] == "/d")
    assert d["limit"] == 65536 and d["cache"] == 40960
    assert d["oom_kill_disable"] == 1
    with open(mnt.p("d", "memory.stat")) as f:
        assert f"cache {d['cache']}\n" in f.read()
    # the caches are .kmemfs/slabinfo's rows, newest first, with their cgroup
    with open(mnt.p(".kmemfs", "slabinfo")) as f:
        rows = cgread.parse_slabinfo(f.read())
    assert [c["name"] for c in caches] == [r["name"] for r in rows]
    for c, r in zip(caches, rows):
        assert {k: c[k] for k in r} == r
    dead = next(c for c in caches if c["name"] == "dentry(b)dead")
    assert dead["dead"] and dead["cgroup"] is None
    assert next(c for c in caches if c["name"] == "size-128(d)")["cgroup"] == "/d"
    # 0444: root's CAP_DAC_OVERRIDE opens it, the write is EINVAL (3.3.8 kernel/cgroup.c
    # cgroup_file_write: a file with no write handler); anyone else gets EACCES at open
    with pytest.raises(OSError) as e:
        with open(mnt.p(".kmemfs", "snapshot"), "w") as f:
            f.write("x")
    assert e.value.errno == (errno.EINVAL if os.geteuid() == 0 else errno.EACCES)


def test_read_tree_falls_back_to_the_files_without_a_snapshot(tmp_path):
    """A kernel's cgroupfs has no `.kmemfs/`: the walk reads the files."""
    (tmp_path / "x").mkdir()
    (tmp_path / "memory.usage_in_bytes").write_text("4096\n")
    (tmp_path / "x" / "memory.usage_in_bytes").write_text("0\n")
    assert cgread.read_snapshot(str(tmp_path)) is None
    tree = cgread.read_tree(str(tmp_path))
    assert list(tree) == ["/", "/x"] and tree["/"]["usage"] == 4096


def test_top_and_record_use_the_snapshot(mnt, monkeypatch):
    """On kmemfs neither viewer reads a cgroup's files one by one: the file walk is made to
    fail, and both still see the whole tree."""
    from kmemfs.tools import record, top
    busy_tree(mnt)
    want = cgread.read_tree(mnt.path, snapshot=False)

    def no_walk(*a):
        raise AssertionError("walked the files")
    monkeypatch.setattr(cgread, "read_cgroup", no_walk)
    tree, dead, complete = record.sweep(mnt.path)
    # b's 100 dentries at 20 a one-page slab (3.4.0-rc6 slabinfo): 5 pages left dead
    assert tree == want and complete and dead == {"dentry(b)dead": 5}
    view = top.View(mnt.path)
    try:
        view.refresh()
    finally:
        view.tail.close()
    assert view.tree == want and ("/a/b c", 2) in view.rows
    r = subprocess.run([sys.executable, "-m", "kmemfs", "top", mnt.path, "--once"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "b c" in r.stdout, r.stderr


# ---------------------------------------------------------------------- long cache lifetimes
def test_tree_changes_by_other_processes_are_seen_at_once(mnt):
    """Entries and attributes live for a day in the kernel's caches (fuse/ops.py TIMEOUT):
    every tree change passes through the kernel, which updates them, whoever makes it."""
    os.stat(mnt.p("memory.stat"))
    nlink = os.stat(mnt.path).st_nlink
    sh(f"mkdir {mnt.p('x')}", check=True)
    assert os.path.isdir(mnt.p("x")) and os.stat(mnt.path).st_nlink == nlink + 1
    assert "x" in os.listdir(mnt.path)
    sh(f"mv {mnt.p('x')} {mnt.p('y')} && chmod 700 {mnt.p('y')}", check=True)
    assert not os.path.exists(mnt.p("x"))
    assert stat.S_IMODE(os.stat(mnt.p("y")).st_mode) == 0o700
    os.stat(mnt.p("y", "memory.stat"))
    sh(f"rmdir {mnt.p('y')}", check=True)
    assert not os.path.exists(mnt.p("y")) and os.stat(mnt.path).st_nlink == nlink
    assert "y" not in os.listdir(mnt.path)
    sh(f"mkdir {mnt.p('y')}", check=True)            # a new cgroup under the old name
    assert os.stat(mnt.p("y")).st_nlink == 2 and os.path.exists(mnt.p("y", "tasks"))


def test_control_plane_changes_reach_every_reader(mnt):
    """What a ctl command changes is file content (read fresh, direct_io) or the event log's
    st_size (attribute timeout 0): a cgroup's tasks, caches and counters move at once."""
    os.mkdir(mnt.p("a"))
    ev = mnt.p(".kmemfs", "events")
    size = os.stat(ev).st_size
    ctl(mnt, "spawn cg=/a", "alloc dentry 10 cg=/a")
    assert os.stat(ev).st_size > size
    with open(mnt.p("a", "tasks")) as f:
        assert len(f.read().split()) == 1
    with open(mnt.p("a", "memory.kmem.slabinfo")) as f:
        assert "dentry(a)" in f.read()


def test_tail_f_follows_the_event_log(mnt):
    """tail -f polls fstat for a larger st_size: the event log's attributes are never
    cached (attr_timeout 0), so each new event shows."""
    tail = subprocess.Popen(["tail", "-n", "0", "-s", "0.1", "-f", mnt.p(".kmemfs", "events")],
                            stdout=subprocess.PIPE)
    try:
        time.sleep(0.5)
        for n in (1, 2):                      # each round a new cgroup: a new cache_create
            os.mkdir(mnt.p(f"a{n}"))
            ctl(mnt, f"alloc dentry 10 cg=/a{n}")
            want, out = f"cache_create cache=dentry(a{n})".encode(), b""
            deadline = time.monotonic() + 20
            while want not in out:
                left = deadline - time.monotonic()
                assert left > 0 and select.select([tail.stdout], [], [], left)[0], \
                    f"tail -f did not show {want!r}, only {out!r}"
                out += os.read(tail.stdout.fileno(), 65536)
    finally:
        tail.kill()
        tail.wait()


def test_removed_cgroup_keeps_failing_open_fds_with_enodev(mnt):
    os.mkdir(mnt.p("a"))
    fd = os.open(mnt.p("a", "memory.usage_in_bytes"), os.O_RDONLY)
    try:
        os.read(fd, 100)
        os.rmdir(mnt.p("a"))
        with pytest.raises(OSError) as e:
            os.pread(fd, 100, 0)
        assert e.value.errno == errno.ENODEV         # 3.3 cgroup_file_read
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- -o page_cache
@pytest.fixture
def pc(mount_factory):
    return mount_factory(("page_cache",))


def read(path) -> str:
    with open(path) as f:
        return f.read()


def test_page_cache_reads_are_fresh_after_every_change(pc):
    os.mkdir(pc.p("a"))
    usage, limit = pc.p("a", "memory.usage_in_bytes"), pc.p("a", "memory.limit_in_bytes")
    root = pc.p("memory.stat")
    assert read(usage) == "0\n" and "total_cache 0\n" in read(root)
    ctl(pc, "charge file 1M cg=/a")
    assert read(usage) == "1048576\n" and "total_cache 1048576\n" in read(root)
    assert os.stat(usage).st_size == len("1048576\n")
    with open(limit, "w") as f:
        f.write("2M")
    assert read(limit) == "2097152\n"
    ctl(pc, "uncharge file 1M cg=/a")
    assert read(usage) == "0\n" and os.stat(usage).st_size == 2    # shorter again
    assert read(usage) == "0\n"                                    # unchanged: kept cache


def test_page_cache_long_held_fds_see_changes(pc):
    """A monitor keeps fds open and re-reads at offset 0: an open page-cached inode is
    invalidated after each change, before the change's request is answered."""
    os.mkdir(pc.p("a"))
    fds = [os.open(pc.p("a", "memory.usage_in_bytes"), os.O_RDONLY),
           os.open(pc.p("memory.stat"), os.O_RDONLY),
           os.open(pc.p("a", "memory.limit_in_bytes"), os.O_RDONLY)]
    try:
        assert os.pread(fds[0], 4096, 0) == b"0\n"
        os.pread(fds[1], 4096, 0)
        ctl(pc, "charge anon 1M cg=/a")         # 256 pages > the 32-page batch: exact
        assert os.pread(fds[0], 4096, 0) == b"1048576\n"
        assert b"total_rss 1048576\n" in os.pread(fds[1], 4096, 0)
        with open(pc.p("a", "memory.limit_in_bytes"), "w") as f:
            f.write("1M")
        assert os.pread(fds[2], 4096, 0) == b"1048576\n"
        os.mkdir(pc.p("a", "b"))
        held = os.open(pc.p("a", "b", "memory.stat"), os.O_RDONLY)
        fds.append(held)
        os.pread(held, 4096, 0)
        os.rmdir(pc.p("a", "b"))
        with pytest.raises(OSError) as e:
            os.pread(held, 4096, 0)
        assert e.value.errno == errno.ENODEV
    finally:
        for fd in fds:
            os.close(fd)


def test_page_cache_differences_from_the_kernel(pc, mount_factory):
    """What -o page_cache changes (docs/semantics.md): st_size is the text's length, and
    mmap works; tasks and cgroup.procs stay direct (size 0); writes stay synchronous."""
    plain = mount_factory(name="plain")
    for m in (pc, plain):
        os.mkdir(m.p("a"))
        ctl(m, "spawn cg=/a")
    u = "memory.usage_in_bytes"
    text = read(pc.p("a", u)).encode()      # the task's pages and the 32-page batch's stock
    assert text == read(plain.p("a", u)).encode() and text != b"0\n"
    with open(pc.p("a", u), "rb") as f:
        assert os.fstat(f.fileno()).st_size == len(text)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            assert mm[:] == text
    with open(plain.p("a", u), "rb") as f:
        assert os.fstat(f.fileno()).st_size == 0
        with pytest.raises((ValueError, OSError)):
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    assert os.stat(pc.p("a", "tasks")).st_size == 0 and len(read(pc.p("a", "tasks")).split()) == 1
    with open(pc.p("a", "memory.limit_in_bytes"), "r+") as f:   # O_RDWR: direct
        f.write("4M")
        f.seek(0)
        assert f.read() == "4194304\n"


def test_page_cache_open_renders_only_after_a_change():
    """-o page_cache, in process (no mount): reopening a file of an unchanged model reuses
    the text the kernel already holds (keep_cache, no render); a change renders it anew; the
    kernel's FORGET drops both the inode and its cached text."""
    import types
    import trio
    from kmemfs.fuse import daemon
    from kmemfs.fuse.ops import Operations
    fs = daemon.build(Config())
    root = fs.dir_ino(fs.engine.root)
    a = fs.lookup(fs.mkdir(root, "a").ino, "memory.kmem.usage_in_bytes").ino
    ops = Operations(fs, "/nonexistent", page_cache=True)
    renders = []
    real = ops._render
    ops._render = lambda ino: renders.append(ino) or real(ino)
    ctx = types.SimpleNamespace(pid=os.getpid(), uid=0, gid=0, umask=0)

    async def reopen():
        fi = await ops.open(a, os.O_RDONLY, ctx)
        text = await ops.read(fi.fh, 0, 4096)
        await ops.release(fi.fh)
        return fi.keep_cache, text

    async def main():
        await reopen()
        assert renders == [a]
        assert await reopen() == (True, b"0\n") and renders == [a]     # nothing changed
        ctl_fh = fs.open(fs.lookup(fs.lookup(root, ".kmemfs").ino, "ctl").ino)
        fs.write(ctl_fh, 0, b"alloc dentry 1 cg=/a\n")
        keep, text = await reopen()
        assert renders == [a, a] and not keep and text == b"4096\n"
        await ops.forget([(a, 1)])
        assert a not in ops.cached
    trio.run(main)
