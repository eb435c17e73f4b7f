"""Regressions for what fuzzing and stress found (docs/reliability.md, "Found and fixed")."""
import errno
import os

import pytest

from kmemfs.cgroupfs.tree import Request
from kmemfs.fuse.daemon import build
from kmemfs.engine import Config, EngineError, check


@pytest.fixture
def fs():
    return build(Config())


REQ = Request(os.getpid())


def write(fs, ino, name, data):
    fh = fs.open(fs.lookup(ino, name).ino, REQ)
    return fs.write(fh, 0, data, REQ)


def ctl(fs, text):
    """(errno or None, result text) of one ctl write; a sleeping write is returned as is."""
    fh = fs.open(fs.lookup(2, "ctl").ino, REQ)
    try:
        r = fs.write(fh, 0, text.encode(), REQ)
        err = None
    except EngineError as e:
        r, err = None, e.errno
    return err, r, fs.read(fh, 0, 1 << 16).decode()


@pytest.mark.parametrize("word", ["²", "٣", "１"])
def test_non_ascii_digits_are_einval_not_a_crash(fs, word):
    """int('²') raised ValueError: the write failed with EIO and the daemon logged a traceback."""
    for cmd in (f"alloc dentry {word}", f"spawn task={word}", f"exit {word}"):
        err, _, out = ctl(fs, cmd + "\n")
        assert err == errno.EINVAL and out.startswith("error: EINVAL:"), cmd


def test_a_command_line_over_4096_bytes_is_e2big_in_bytes_not_characters(fs):
    err, _, _ = ctl(fs, "alloc " + "é" * 2100 + "\n")       # 2106 characters, 4206 bytes
    assert err == errno.E2BIG


def test_a_newline_in_a_cgroup_name_keeps_one_result_line_per_command(fs):
    g = fs.mkdir(1, "a\nb").ino
    ctl(fs, "spawn cg=/\n")
    pid = next(w for w in fs.engine.tasks if fs.engine.tasks[w].simulated)
    write(fs, g, "tasks", str(pid).encode())
    err, _, out = ctl(fs, f"touch 1 task={pid}\nreap\n")
    assert err is None
    lines = out.split("\n")[:-1]                                 # what `read -r` sees
    assert len(lines) == 2 and lines[0].endswith("cgroup=/a\\012b")
    assert lines[1].startswith("ok reap")


def test_rmdir_wakes_a_command_asleep_on_that_cgroup(fs):
    """A `cg=` command slept on the cgroup's OOM; rmdir (no tasks, so allowed) left it asleep
    until some unrelated memcg_oom_recover, and its retry then charged the removed cgroup's
    counters — under hierarchy, a charge the live parent could never give back."""
    p = fs.mkdir(1, "p").ino
    write(fs, p, "memory.use_hierarchy", b"1")
    write(fs, p, "memory.oom_control", b"1")
    w = fs.mkdir(p, "w").ino
    write(fs, w, "memory.limit_in_bytes", b"1M")
    err, pending, _ = ctl(fs, "charge anon 2M cg=/p/w\n")
    assert err is None and not isinstance(pending, int)          # asleep on the OOM
    seq = fs.engine.oom_wake_seq
    fs.rmdir(p, "w")
    assert fs.engine.oom_wake_seq != seq                          # woken by the rmdir
    with pytest.raises(EngineError) as e:
        pending.resume()
    assert e.value.errno == errno.ENODEV
    assert check(fs.engine) == []
    p = fs.engine.root.children["p"]
    assert p.res.usage == p.rss_bytes == 1 << 20                  # w's anon moved up


def test_rmdir_under_hierarchy_when_the_parent_reclaims_the_childs_own_pages(fs):
    """mem_cgroup_move_parent: the parent was charged for all the child's pages before its
    reclaim freed some of them (they were the child's page cache): res stayed charged for
    pages that no longer existed, and `check` failed (found by the stress interleavings)."""
    p = fs.mkdir(1, "p").ino
    write(fs, p, "memory.use_hierarchy", b"1")
    write(fs, p, "memory.limit_in_bytes", b"4M")
    fs.mkdir(p, "d")
    assert ctl(fs, "charge file 3M cg=/p/d\n")[0] is None
    fs.rmdir(p, "d")
    parent = fs.engine.root.children["p"]
    assert check(fs.engine) == []
    assert parent.res.usage == parent.cache_bytes + parent.rss_bytes


def test_writes_stay_cheap_with_a_full_event_log_and_a_registration(fs):
    """events_since copied the whole bounded log (100,000 events) on every write once any
    cgroup.event_control registration existed: ~300x slower writes (the fuzz rate decayed)."""
    import time
    from kmemfs.cgroupfs.tree import Registration

    class Quiet:
        def signal(self):
            pass

        def close(self):
            pass
    g = fs.mkdir(1, "g").ino
    fh = fs.open(fs.lookup(g, "memory.soft_limit_in_bytes").ino, REQ)

    def cost():
        t = time.perf_counter()
        for _ in range(300):
            fs.write(fh, 0, b"1M", REQ)
        return time.perf_counter() - t
    for i in range(fs.engine.config.event_log_size):
        fs.engine.emit("reclaim", cgroup="/g", pages=0)
    fs.after_change()
    base = cost()
    fs.events.setdefault(fs.memcgs[max(fs.memcgs)].id, []).append(
        Registration("oom", None, Quiet(), 0))
    assert cost() < 20 * base + 0.01
    e = fs.engine                                    # and it still returns what it did
    assert [s for s, _, _ in e.events_since(e.event_seq - 3)] == [e.event_seq - 2,
                                                                e.event_seq - 1, e.event_seq]
    assert len(e.events_since(0)) == e.config.event_log_size
    assert e.events_since(e.event_seq) == []
