"""Replaying into a mount: the ctl `replay` verb (in process) and `kmemfs replay --into` on a
real mount. Geometry of kmemfs/engine/data/3.4.0-rc6.slabinfo: dentry 192 bytes, 20 a slab
of one page (see tests/test_replay.py)."""
import errno
import os
import subprocess
import sys

import pytest

from kmemfs.cgroupfs.control import control_files
from kmemfs.cgroupfs.tree import CTL_DIR_INO, CgroupFS, Request
from kmemfs.engine import Config, Engine, EngineError
from kmemfs.trace.format import Header, write_trace
from kmemfs.trace.replay import Setup, from_wire, replay, to_wire
from test_replay import allocs, ev

PAGE = 4096
KMEMFS = os.path.join(os.path.dirname(sys.executable), "kmemfs")


def ctl(config=Config()):
    fs = CgroupFS(Engine(config), special_files=control_files())
    fs.mkdir(1, "web")
    fh = fs.open(fs.lookup(CTL_DIR_INO, "ctl").ino, Request(pid=1))

    pos = 0          # the file offset, as a real client's write/read move it

    def send(*lines):
        nonlocal pos
        data = ("\n".join(lines) + "\n").encode()
        fs.write(fh, pos, data, Request(pid=1))
        out = fs.read(fh, pos + len(data), 1 << 20)
        pos += len(data) + len(out)
        return out.decode().splitlines()
    return fs, send


def test_wire_round_trip_with_spaces_and_equals():
    e = ev(7, 123, "alloc", cache="", ptr=0xffff888100000040, call_site="f+0x1/0x2 [ext4]",
           comm="a b=c\\d", context="softirq", accounted=True)
    words = to_wire(e).split()
    assert words[:2] == ["replay", "ev"] and not any("=" in w for w in words)
    assert from_wire(words[2:]) == e


def test_ctl_replay_gives_the_offline_numbers():
    """The daemon's Session is the offline one: same trace, same counters. 8K independent kmem
    limit = 40 dentries; the 41st fails."""
    events = allocs(43)
    fs, send = ctl()
    send("replay begin cg=/web")
    for name in ("memory.kmem.independent_kmem_limit", "memory.kmem.limit_in_bytes"):
        h = fs.open(fs.lookup(fs.dir_ino(fs.by_path("/web")), name).ino)
        fs.write(h, 0, b"1" if "independent" in name else b"8K")
    out = send(*(to_wire(e) for e in events))
    assert out == ["ok replay"] * 43
    end = send("replay end")[0]
    assert end.startswith("ok replay end events=43 objects=40 ")
    assert "failures=3" in end and "first_failure=40:dentry:dentry(web):GFP_KERNEL:" in end
    off = replay(Header(), iter(events), Setup(cg="/web", sets=(
        "memory.kmem.independent_kmem_limit=1", "memory.kmem.limit_in_bytes=8K")))
    assert off.stats.failures == 3 and off.stats.first_failure.seq == 40
    assert fs.by_path("/web").kmem.usage == 2 * PAGE


def test_ctl_replay_errors():
    fs, send = ctl()
    with pytest.raises(EngineError) as e:
        send(to_wire(ev(0, 1, "alloc", ptr=1)))
    assert e.value.errno == errno.EINVAL           # no begin on this open file
    send("replay begin cg=/web")
    with pytest.raises(EngineError):
        send("replay ev 1 2 3")
    with pytest.raises(EngineError):
        send("replay ev 0 1 100 boom dentry 1 192 192 GFP_KERNEL task 0 - 0 sh")
    with pytest.raises(EngineError):
        send("replay launch")


def test_ctl_replay_sleeps_on_oom_with_the_killer_disabled():
    """oom_kill_disable=1 and a full memory.limit_in_bytes: the event's charge sleeps like any
    charge (3.3.8 mem_cgroup_handle_oom): the write is Pending until the limit rises, then the
    same event is fed again and counted once."""
    from kmemfs.cgroupfs.control import Pending
    fs, send = ctl()
    web = fs.by_path("/web")
    fs.engine.set_limit(web, PAGE)
    web.oom_kill_disable = True
    send("replay begin cg=/web")
    fh = max(fs.handles)
    lines = [to_wire(e) for e in allocs(21)]
    r = fs.write(fh, 0, ("\n".join(lines) + "\n").encode(), Request(pid=1))
    assert isinstance(r, Pending)
    fs.engine.set_limit(web, 2 * PAGE)
    assert r.resume() == len(("\n".join(lines) + "\n").encode())
    sess = fs.handles[fh].state["executor"].replay
    assert sess.stats.allocs == 21 and sess.finish().objects == 21 and sess.stats.failures == 0


@pytest.mark.e2e
def test_replay_into_a_mount_fails_where_the_numbers_say(mount_factory, tmp_path):
    """A real mount, `kmemfs replay --into` with an 8K independent kmem limit: the 41st dentry
    is the first ENOMEM (2 slabs of 20), the mount's files show it."""
    m = mount_factory(options=["noboot_slabs"])
    trace = tmp_path / "t.trace"
    write_trace(trace, Header(argv=["touch"]), allocs(45))
    r = subprocess.run([KMEMFS, "replay", str(trace), "--into", m.path, "--cg", "/web",
                        "--set", "memory.kmem.independent_kmem_limit=1",
                        "--set", "memory.kmem.limit_in_bytes=8K"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "failures 5" in r.stdout and "event 40: dentry -> dentry(web)" in r.stdout
    with open(os.path.join(m.path, "web", "memory.kmem.usage_in_bytes")) as f:
        assert int(f.read()) == 2 * PAGE
    with open(os.path.join(m.path, "web", "memory.kmem.slabinfo")) as f:
        rows = [ln.split() for ln in f.read().splitlines()[1:]]
    assert ["dentry(web)", "40", "40", "192"] in rows
    with open(os.path.join(m.path, "web", "tasks")) as f:
        assert len(f.read().split()) == 1        # pid 100, a simulated task
    with open(os.path.join(m.path, ".kmemfs", "events")) as f:
        assert sum(" charge_fail cgroup=/web counter=kmem" in ln for ln in f) == 5


@pytest.mark.e2e
def test_replay_into_refuses_another_design(mount_factory, tmp_path):
    m = mount_factory(options=["design=optin"])
    trace = tmp_path / "t.trace"
    write_trace(trace, Header(), allocs(2))
    r = subprocess.run([KMEMFS, "replay", str(trace), "--into", m.path, "--design", "series"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "optin design" in r.stderr


def test_ctl_alloc_acct_under_the_optin_design():
    """design=optin charges only what is marked: `acct=1` is the ctl's __GFP_ACCOUNT."""
    fs, send = ctl(Config(design="optin"))
    assert send("alloc dentry 21 cg=/web")[0].startswith("ok alloc cache=dentry ")
    assert send("alloc dentry 21 acct=1 cg=/web")[0].startswith("ok alloc cache=dentry(web) ")
    assert fs.by_path("/web").kmem.usage == 2 * PAGE
    fs, send = ctl()
    assert send("alloc dentry 1 cg=/web")[0].startswith("ok alloc cache=dentry(web) ")


@pytest.mark.e2e
def test_replay_into_at_the_traces_pace(mount_factory, tmp_path):
    """--speed keeps the trace's timing (here 10x: 50 ms of trace); the result is the same."""
    m = mount_factory(options=["noboot_slabs"])
    trace = tmp_path / "t.trace"
    events = [e._replace(time_ns=e.seq * 1_000_000) for e in allocs(50)]
    write_trace(trace, Header(), events)
    r = subprocess.run([KMEMFS, "replay", str(trace), "--into", m.path, "--speed", "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "objects 50," in r.stdout
    with open(os.path.join(m.path, "traced", "memory.kmem.usage_in_bytes")) as f:
        assert int(f.read()) == 3 * PAGE
