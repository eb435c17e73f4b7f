"""`kmemfs mount -o follow`: the stateful merge (kmemfs/trace/merge.py), the Follower on a
file system without a mount (kmemfs/trace/follow.py, fixture text in tracefs's format), and
real follows through tracefs (root + tracefs only; they skip elsewhere and say why).

tracefs behaviour relied on (Documentation/trace/ftrace.rst, 6.18; kernel/trace/
trace_events.c): set_event_pid opened with O_TRUNC is cleared, a write otherwise adds to the
list; options/event-fork adds a child at fork, a task's pid leaves the list when it is freed.
Kernel semantics: a forked child starts in its parent's cgroup (kernel/cgroup.c cgroup_fork),
a slab object stays charged to the cache copy it came from until freed (spec 3.1, 3.3).
"""
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from kmemfs.cgroupfs.control import control_files
from kmemfs.cgroupfs.host import Host
from kmemfs.cgroupfs.tree import ROOT_INO, CgroupFS, Request
from kmemfs.engine import Config, Engine, load_catalogue
from kmemfs.trace import capture
from kmemfs.trace.follow import Follower
from kmemfs.trace.format import Event
from kmemfs.trace.merge import Merger

from mounting import Mount, sh

PY = sys.executable


def E(t, op, ptr=0, pid=1, child=0):
    return Event(0, t, pid, op, "c", ptr, 8, 8, "GFP_KERNEL", "task", False, "f+0x1/0x2",
                 child, "x")


# --- Merger: push / release by a watermark (pure) -------------------------------------------

def test_release_stops_at_the_watermark_and_keeps_the_rest():
    m = Merger([1])
    m.push([E(10, "alloc", 0xa), E(30, "alloc", 0xb)], [E(20, "free", 0xa, pid=99)])
    got = m.release(25)
    assert [(e.time_ns, e.op) for e in got] == [(10, "alloc"), (20, "free")]
    assert m.pending() == 1
    m.push([], [E(40, "free", 0xb, pid=99)])
    assert [(e.time_ns, e.seq) for e in m.release(100)] == [(30, 2), (40, 3)]
    assert m.late == 0


def test_an_event_older_than_the_last_watermark_is_released_late():
    m = Merger([1])
    m.push([E(10, "alloc", 0xa)], [])
    m.release(50)
    m.push([E(40, "alloc", 0xb)], [])
    assert [e.time_ns for e in m.release(60)] == [40]
    assert m.late == 1


def test_state_lives_across_releases():
    """An object allocated in one release and freed (by an unrelated task, a kworker) in a
    later one is matched; an unrelated free is dropped."""
    m = Merger([1])
    m.push([E(10, "alloc", 0xa)], [])
    m.release(20)
    m.push([], [E(30, "free", 0xa, pid=99), E(31, "free", 0xdead, pid=99)])
    assert [(e.op, e.ptr) for e in m.release(40)] == [("free", 0xa)]
    assert m.dropped == 1


def test_prefilter_words_follow_pushes_and_frees():
    def line(pid, ptr):
        return (f"{'x':>16}-{pid:<7} [001] ..s1.   10.000001: kfree: "
                f"call_site=rcu_do_batch+0x1b7/0x530 ptr={ptr:016x}")
    m = Merger([5])
    m.push([E(1, "alloc", 0xffff888100000040, pid=5), E(2, "fork", pid=5, child=6)], [])
    lines = [line(99, 0xffff888100000040), line(6, 0xffff888100000080),
             line(99, 0xffff888100000100)]
    assert m.keep_free_lines(lines) == lines[:2]
    m.push([], [E(3, "free", 0xffff888100000040, pid=99)])
    m.release(10)
    assert m.keep_free_lines(lines[:1]) == []         # freed: its pointer no longer passes
    assert m.prefiltered == [2]


# --- Follower on a file system, fixture text (pure) -------------------------------------------

def alloc_line(pid, t_us, ptr, name="dentry", comm="sh"):
    return (f"{comm:>16}-{pid:<7} [000] .....  {t_us // 10**6:5d}.{t_us % 10**6:06d}: "
            f"kmem_cache_alloc: call_site=__d_alloc+0x2d/0x230 ptr={ptr:016x} name={name} "
            f"bytes_req=192 bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=false\n")


def free_line(pid, t_us, ptr, name="dentry", comm="kworker/0:1"):
    return (f"{comm:>16}-{pid:<7} [001] ..s1.  {t_us // 10**6:5d}.{t_us % 10**6:06d}: "
            f"kmem_cache_free: call_site=rcu_do_batch+0x1b7/0x530 ptr={ptr:016x} "
            f"name={name}\n")


def fork_line(pid, t_us, child):
    return (f"{'sh':>16}-{pid:<7} [000] .....  {t_us // 10**6:5d}.{t_us % 10**6:06d}: "
            f"sched_process_fork: comm=sh pid={pid} child_comm=sh child_pid={child}\n")


def exit_line(pid, t_us):
    return (f"{'sh':>16}-{pid:<7} [000] .....  {t_us // 10**6:5d}.{t_us % 10**6:06d}: "
            f"sched_process_exit: comm=sh pid={pid} prio=120 group_dead=true\n")


class FakeHost(Host):
    def __init__(self, pids):
        self.alive = set(pids)

    def exists(self, pid):
        return pid in self.alive

    def pids(self):
        return sorted(self.alive)

    tids = pids

    def tgid(self, pid):
        return pid

    def comm(self, pid):
        return "sh"

    def creds(self, pid):
        return (0, 0, 0)


class FakeTracer:
    def __init__(self):
        self.calls = []

    def add_pid(self, pid):
        self.calls.append(("add", pid))

    def remove_pid(self, pid):
        self.calls.append(("remove", pid))


DAEMON = 4000
PTR = 0xffff888100000000


@pytest.fixture
def fol():
    """A file system with /web, a Follower hung on it (as fuse/follow.py does)."""
    engine = Engine(Config(), load_catalogue(None))
    fs = CgroupFS(engine, FakeHost({100, 101, 102, DAEMON}), special_files=control_files())
    fs.mkdir(ROOT_INO, "web")
    tracer = FakeTracer()
    fs.follow = Follower(engine, tracer, is_me=lambda pid: pid == DAEMON)
    fs.tracer = tracer
    return fs


def write_tasks(fs, path, pid):
    memcg = fs.by_path(path)
    fs.tasks_write(memcg, pid, Request())


def read(fs, path, name):
    memcg = fs.by_path(path)
    fh = fs.open(fs.lookup(fs.dir_ino(memcg), name).ino)
    try:
        return fs.read(fh, 0, 1 << 20).decode()
    finally:
        fs.release(fh)


def dentries(fs, path="/web"):
    for line in read(fs, path, "memory.kmem.slabinfo").splitlines():
        if line.startswith("dentry("):
            return int(line.split()[1])
    return 0


def test_a_followed_pid_charges_its_cgroup(fol):
    write_tasks(fol, "/web", 100)
    assert fol.tracer.calls == [("add", 100)]
    fol.follow.feed_alloc("".join(alloc_line(100, 1000 + i, PTR + 192 * i)
                                  for i in range(300)).encode())
    assert fol.follow.release(10**9) == 300
    assert dentries(fol) == 300
    assert int(read(fol, "/web", "memory.kmem.usage_in_bytes")) > 0
    # kworkers free them (RCU): each free gives its object back
    fol.follow.feed_free("".join(free_line(7, 5000 + i, PTR + 192 * i)
                                 for i in range(100)).encode())
    fol.follow.release(10**9)
    assert len(fol.follow.session.live) == 200    # (slabinfo counts array-cached as active)


def test_a_fork_follows_its_parent_into_the_cgroup_and_exit_ends_it(fol):
    write_tasks(fol, "/web", 100)
    f = fol.follow
    f.feed_alloc((fork_line(100, 1000, 101) + alloc_line(101, 1001, PTR)
                  + exit_line(101, 1002)).encode())
    f.release(10**9)
    assert f.session.stats.live_charged_bytes == 192
    assert not f.follows(101) and 101 not in fol.engine.tasks
    f.feed_alloc(fork_line(100, 2000, 101).encode())      # cgroup_fork: child in /web
    f.release(10**9)
    assert "101" in read(fol, "/web", "tasks").split()
    # the child exited unseen (pruned from the host): what it allocated stays charged
    f.feed_alloc(alloc_line(101, 2001, PTR + 192).encode())
    f.release(10**9)
    fol.host.alive.discard(101)
    fol.prune_tasks()
    assert 101 not in fol.engine.tasks
    assert f.session.stats.live_charged_bytes == 2 * 192
    f.feed_free(free_line(7, 3000, PTR + 192).encode())
    f.release(10**9)
    assert f.session.stats.live_charged_bytes == 192


def test_the_daemon_itself_is_never_followed(fol):
    write_tasks(fol, "/web", DAEMON)
    assert "4000" in read(fol, "/web", "tasks").split()      # recorded, as the kernel would
    assert fol.tracer.calls == [] and not fol.follow.follows(DAEMON)
    fol.follow.feed_alloc(alloc_line(DAEMON, 1000, PTR).encode())
    fol.follow.release(10**9)
    assert dentries(fol) == 0 and fol.follow.dropped == 1


def test_a_move_to_root_stops_following(fol):
    write_tasks(fol, "/web", 100)
    write_tasks(fol, "/", 100)
    assert fol.tracer.calls == [("add", 100), ("remove", 100)]
    fol.follow.feed_alloc(alloc_line(100, 1000, PTR).encode())
    fol.follow.release(10**9)
    assert dentries(fol) == 0


def test_text_cut_anywhere_is_parsed_whole(fol):
    write_tasks(fol, "/web", 100)
    data = "".join(alloc_line(100, 1000 + i, PTR + 192 * i) for i in range(50)).encode()
    for i in range(0, len(data), 37):
        fol.follow.feed_alloc(data[i:i + 37])
    fol.follow.release(10**9)
    assert len(fol.follow.session.live) == 50


def test_lost_events_mark_the_model_inexact(fol):
    """A fake lost counter: the first growth and each later one are one follow_lost event;
    .kmemfs/config says inexact with the total."""
    def config():
        return dict(line.split(" ", 1) for line in
                    fol.special["config"].render(fol).splitlines())
    f = fol.follow
    assert config()["follow"] == "exact"
    assert not f.set_lost(0)
    assert f.set_lost(12)
    assert not f.set_lost(12)
    assert f.set_lost(15)
    fol.after_change()
    assert config()["follow"] == "inexact lost=15"
    lost = [(k, fl) for _, k, fl in fol.engine.events_since(0) if k == "follow_lost"]
    assert [(fl["lost"], fl["total"]) for _, fl in lost] == [(12, 12), (3, 15)]


def test_latency_and_counts_in_follow_stats(fol):
    write_tasks(fol, "/web", 100)
    fol.follow.feed_alloc(alloc_line(100, 1000, PTR).encode())
    fol.follow.release(10**9, now_ns=1000 * 1000 + 7_000_000)
    words = dict(w.split("=") for w in fol.follow.stats().split())
    assert words["applied"] == "1" and words["latency_p50_us"] == "7000"


# --- real follows (root + tracefs) -----------------------------------------------------------

WHY_NOT = capture.unavailable()
needs_tracefs = pytest.mark.skipif(WHY_NOT is not None, reason=f"-o follow: {WHY_NOT}")


def follow_instances():
    """Names of kmemfs follow instances on this host's tracefs, wherever it is mounted."""
    with capture.Tracefs() as t:
        return sorted(n for n in os.listdir(os.path.join(t.path, "instances"))
                      if "_follow_" in n)


@pytest.fixture
def follow_mount(tmp_path):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("FUSE is not available")
    made = []

    def make(name="mnt"):
        m = Mount(tmp_path / name, ["follow"])
        made.append(m)
        return m.start()
    yield make
    for m in made:
        m.stop()


def config_of(m):
    with open(m.p(".kmemfs", "config")) as f:
        return dict(line.split(" ", 1) for line in f.read().splitlines())


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@needs_tracefs
def test_follow_charges_a_real_workload(follow_mount, tmp_path):
    m = follow_mount()
    os.mkdir(m.p("web"))
    d = tmp_path / "files"
    d.mkdir()
    p = subprocess.Popen(["sh", "-c", f"read x; for i in $(seq 300); do : > {d}/f$i; done"],
                         stdin=subprocess.PIPE)
    try:
        with open(m.p("web", "tasks"), "w") as f:
            f.write(f"{p.pid}\n")
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

    def dentry_objects():
        with open(m.p("web", "memory.kmem.slabinfo")) as f:
            for line in f:
                if line.startswith("dentry(web)"):
                    return int(line.split()[1])
        return 0
    assert wait_for(lambda: dentry_objects() >= 300), dentry_objects()
    with open(m.p("web", "memory.kmem.usage_in_bytes")) as f:
        assert int(f.read()) > 0
    cfg = config_of(m)
    assert cfg["follow"] in ("exact", ) or cfg["follow"].startswith("inexact lost=")
    # the workload exited: its exit ended the following, and it left its cgroup
    assert wait_for(lambda: open(m.p("web", "tasks")).read() == "")


@needs_tracefs
def test_the_daemon_pid_is_not_traced(follow_mount):
    m = follow_mount()
    os.mkdir(m.p("web"))
    with open(m.p("web", "tasks"), "w") as f:
        f.write(f"{m.proc.pid}\n")
    assert str(m.proc.pid) in open(m.p("web", "tasks")).read().split()
    with capture.Tracefs() as t:
        inst = os.path.join(t.path, "instances", f"kmemfs_{m.proc.pid}_follow_alloc")
        with open(os.path.join(inst, "set_event_pid")) as f:
            assert f.read().split() == []
        with open(os.path.join(inst, "tracing_on")) as f:
            assert f.read().strip() == "0"      # nothing followed: nothing enabled
    assert "pids=0 " in config_of(m)["follow_stats"]


def private_tracefs_mounts():
    with open("/proc/self/mounts") as f:
        return {ln.split()[1] for ln in f if ln.split()[2] == "tracefs"
                and os.path.basename(ln.split()[1]).startswith("kmemfs_tracefs_")}


@pytest.fixture
def no_leaked_tracefs():
    """A SIGKILLed daemon cannot unmount the private tracefs it mounted (when none was
    mounted at /sys/kernel/tracing): unmount the ones this test left, after its instances
    are gone."""
    before = private_tracefs_mounts()
    yield
    for path in private_tracefs_mounts() - before:
        if not [n for n in os.listdir(os.path.join(path, "instances"))
                if n.startswith("kmemfs_")]:
            subprocess.run(["umount", path], capture_output=True)
            with contextlib.suppress(OSError):
                os.rmdir(path)


@needs_tracefs
def test_instances_go_at_unmount_and_after_sigkill(no_leaked_tracefs, follow_mount):
    m = follow_mount("a")
    pid = m.proc.pid
    assert follow_instances() == [f"kmemfs_{pid}_follow_alloc", f"kmemfs_{pid}_follow_free"]
    m.stop()
    assert follow_instances() == []
    m = follow_mount("b")
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    assert len(follow_instances()) == 2              # a killed daemon cannot clean up
    m.stop()                                         # the stale FUSE mount
    m2 = follow_mount("c")
    assert follow_instances() == [f"kmemfs_{m2.proc.pid}_follow_alloc",
                                  f"kmemfs_{m2.proc.pid}_follow_free"]


def test_follow_needs_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root: the refusal is for other users")
    r = sh(f"{PY} -m kmemfs mount {tmp_path}/m -o follow", cwd=os.path.dirname(__file__))
    assert r.returncode == 1 and "root" in r.stderr


def test_follow_mount_options():
    """-o follow and -o follow_buffer_kb=N are the adapter's (never libfuse's); a buffer
    size must be a positive integer."""
    from kmemfs.fuse import follow as ffollow
    from kmemfs.fuse.daemon import ADAPTER_OPTIONS, MountError, parse_options
    _, opts = parse_options("follow,follow_buffer_kb=2048,allow_other")
    assert opts == {"follow", "follow_buffer_kb=2048", "allow_other"}
    assert ffollow.buffer_kb(opts) == 2048
    assert {o.partition("=")[0] for o in opts} - ADAPTER_OPTIONS == {"allow_other"}
    for bad in ("follow_buffer_kb", "follow_buffer_kb=0", "follow_buffer_kb=x"):
        with pytest.raises(MountError, match="bad value"):
            parse_options(bad)
