"""`kmemfs trace` (kmemfs/trace/capture.py): the pure merge, the host description, and real
captures through tracefs (root + tracefs only; they skip elsewhere and say why).

tracefs behaviour relied on (Documentation/trace/ftrace.rst, 6.18): instances/ mkdir/rmdir,
set_event_pid + options/event-fork (children added at fork, removed at exit), options/
overwrite 0 (a full buffer drops new events, counted in per_cpu/cpuN/stats "dropped events"),
options/hash-ptr 0 (%p prints the real address), trace_pipe (consuming read, poll).
"""
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from kmemfs.trace import capture
from kmemfs.trace.capture import merge
from kmemfs.trace.format import Event, Header, read_trace

PY = sys.executable


def E(t, op, ptr=0, pid=1, child=0, cache="c"):
    return Event(0, t, pid, op, cache, ptr, 8, 8, "GFP_KERNEL", "task", False, "f+0x1/0x2",
                 child, "x")


def ops(evs):
    return [(e.time_ns, e.op, e.ptr) for e in evs]


# --- merge (pure) ----------------------------------------------------------------------------

def test_merge_orders_by_time_and_renumbers():
    allocs = [E(10, "alloc", 0xa), E(30, "alloc", 0xb)]
    frees = [E(20, "free", 0xa, pid=99), E(40, "free", 0xb, pid=99)]
    got = list(merge(allocs, frees, root_pid=1))
    assert ops(got) == [(10, "alloc", 0xa), (20, "free", 0xa), (30, "alloc", 0xb),
                        (40, "free", 0xb)]
    assert [e.seq for e in got] == [0, 1, 2, 3]


def test_same_microsecond_free_of_a_live_object_goes_first():
    """SLUB hands a just-freed object out again at once (LIFO freelist): free(p) then
    alloc(p) in one microsecond. The free must come first or the replay sees p allocated twice."""
    allocs = [E(5, "alloc", 0xa), E(10, "alloc", 0xa)]
    frees = [E(10, "free", 0xa, pid=99)]
    assert ops(merge(allocs, frees, 1)) == [(5, "alloc", 0xa), (10, "free", 0xa),
                                           (10, "alloc", 0xa)]


def test_same_microsecond_alloc_then_free_of_a_new_object():
    allocs = [E(10, "alloc", 0xa)]
    frees = [E(10, "free", 0xa, pid=99)]
    assert ops(merge(allocs, frees, 1)) == [(10, "alloc", 0xa), (10, "free", 0xa)]


def test_frees_that_do_not_matter_are_dropped_and_counted():
    """System-wide frees of objects the tree never allocated, by tasks outside it: dropped.
    The tree's own frees of older objects are kept (replay counts them as unmatched)."""
    allocs = [E(1, "alloc", 0xa), E(2, "fork", pid=1, child=7)]
    frees = [E(3, "free", 0xdead, pid=99), E(4, "free", 0xbeef, pid=1),
             E(5, "free", 0xf00, pid=7), E(6, "free", 0xa, pid=99)]
    stats = {}
    got = list(merge(allocs, frees, 1, stats=stats))
    assert ops(got) == [(1, "alloc", 0xa), (2, "fork", 0), (4, "free", 0xbeef),
                        (5, "free", 0xf00), (6, "free", 0xa)]
    assert stats["frees_dropped"] == 1


def test_nearly_sorted_streams_are_sorted():
    """trace_pipe merges per-CPU buffers by timestamp, but an event committed while the
    reader passed can come late: a window reorders it."""
    allocs = [E(10, "alloc", 1), E(30, "alloc", 3), E(20, "alloc", 2), E(40, "alloc", 4)]
    got = list(merge(allocs, [], 1, window_ns=100))
    assert [e.time_ns for e in got] == [10, 20, 30, 40]


def test_sorting_in_batches_keeps_stream_order_for_equal_times():
    evs = [Event(i, t, 1, "alloc", "c", i, 8, 8, "", "task", False, "", 0, "x")
           for i, t in enumerate([5, 1, 5, 2, 9, 7, 9, 8, 20, 15, 30, 25, 30])]
    got = list(capture._sorted(evs, window_ns=10, batch=3))
    assert [(e.time_ns, e.seq) for e in got] == sorted((e.time_ns, e.seq) for e in evs)
    burst = [Event(i, 100 + i % 7, 1, "alloc", "c", i, 8, 8, "", "task", False, "", 0, "x")
             for i in range(2000)]                 # all inside one window: no quadratic sort
    assert [e.time_ns for e in capture._sorted(burst, 10**9, batch=16)] == sorted(
        e.time_ns for e in burst)


def test_pointer_reuse_chain_in_one_microsecond():
    allocs = [E(1, "alloc", 0xa), E(9, "alloc", 0xa), E(9, "alloc", 0xa)]
    frees = [E(9, "free", 0xa, pid=99), E(9, "free", 0xa, pid=99)]
    assert ops(merge(allocs, frees, 1)) == [(1, "alloc", 0xa), (9, "free", 0xa),
                                           (9, "alloc", 0xa), (9, "free", 0xa),
                                           (9, "alloc", 0xa)]


def test_free_prefilter_keeps_what_merge_needs():
    """The system-wide free lines are filtered before parsing: a free of a pointer the tree
    allocated, or by a task of the tree, passes; other shapes (lost markers) pass too."""
    def line(pid, ptr, comm="x"):
        return (f"{comm:>16}-{pid:<7} [001] ..s1.   10.000001: kfree: "
                f"call_site=rcu_do_batch+0x1b7/0x530 ptr={ptr}")
    allocs = [E(1, "alloc", 0xffff888100000040, pid=5), E(2, "fork", pid=5, child=6)]
    keep = capture.free_filter(allocs, root_pid=5)
    lines = [line(99, "ffff888100000040"), line(6, "ffff888100000080"),
             line(5, "ffff8881000000c0"), line(99, "ffff888100000100"),
             "CPU:0 [LOST 3 EVENTS]", line(99, "ffff888100000040") + " name=filp"]
    assert keep(lines) == lines[:3] + lines[4:]
    assert keep.dropped == [1]


# --- host description --------------------------------------------------------------------------

def test_slub_aliases_from_sysfs_layout(tmp_path):
    """/sys/kernel/slab: a directory per real cache (":A-0000192"), a symlink per name; the
    reported name is the one /proc/slabinfo lists (mm/slub.c sysfs_slab_alias)."""
    for d in (":A-0000192", ":0000064", ":0000032"):
        (tmp_path / d).mkdir()
    for name, target in [("pid", ":A-0000192"), ("cred", ":A-0000192"),
                         ("anon_vma_chain", ":0000064"), ("fs_cache", ":0000064"),
                         ("eventpoll_pwq", ":0000064"), ("lonely", ":0000032")]:
        (tmp_path / name).symlink_to(target)
    slabinfo = ("slabinfo - version: 2.1\n# name ...\n"
                "pid  1 1 192 21 1 : tunables 0 0 0 : slabdata 1 1 0\n"
                "anon_vma_chain 1 1 64 64 1 : tunables 0 0 0 : slabdata 1 1 0\n"
                "lonely 1 1 32 128 1 : tunables 0 0 0 : slabdata 1 1 0\n")
    assert capture.slub_aliases(str(tmp_path), slabinfo) == {
        "cred": "pid", "eventpoll_pwq": "anon_vma_chain", "fs_cache": "anon_vma_chain"}


def test_lost_counts_from_per_cpu_stats(tmp_path):
    for cpu, dropped, overrun in ((0, 0, 0), (1, 12, 3)):
        d = tmp_path / "per_cpu" / f"cpu{cpu}"
        d.mkdir(parents=True)
        (d / "stats").write_text(f"entries: 5\noverrun: {overrun}\ncommit overrun: 1\n"
                                 f"bytes: 100\noldest event ts:   473.482762\n"
                                 f"now ts:   900.472075\ndropped events: {dropped}\n"
                                 f"read events: 4\n")
    inst = capture.Instance.__new__(capture.Instance)
    inst.path = str(tmp_path)
    assert inst.lost() == {"0": {"lost": 1, "overrun": 0}, "1": {"lost": 13, "overrun": 3}}


def test_lost_events_mark_the_trace_inexact(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    me = os.getpid()
    line = ("            bash-9132    [000] .....   473.002466: kmem_cache_alloc: "
            "call_site=f+0x3c/0x110 ptr=ffff8881050a7480 name=filp bytes_req=184 "
            "bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true\n")
    (spool / f"kmemfs_{me}_alloc").write_text(line + "CPU:1 [LOST 7 EVENTS]\n")
    (spool / f"kmemfs_{me}_free").write_text("")
    h = Header(root_pid=9132, lost={"free": {"0": {"lost": 2, "overrun": 0}}})
    msgs = []
    capture._write_trace(str(tmp_path / "t.trace"), h, str(spool), msgs.append)
    h2, it = read_trace(tmp_path / "t.trace")
    # the stats and the markers count the same drops: the larger, not the sum
    assert h2.inexact and "7 events lost" in h2.notes[0] and len(list(it)) == 1
    assert msgs and "inexact" in msgs[0]


def test_exit_status_of_a_signal():
    assert capture._status(signal.SIGTERM) == 128 + signal.SIGTERM   # WIFSIGNALED layout
    assert capture._status(7 << 8) == 7


def test_not_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(capture.TraceError, match="must run as root"):
        capture.run(["true"], str(tmp_path / "t"))


def test_output_is_a_directory(tmp_path):
    with pytest.raises(capture.TraceError, match="is a directory"):
        capture.run(["true"], str(tmp_path))


def test_no_command(tmp_path):
    with pytest.raises(capture.TraceError, match="no command"):
        capture.run([], str(tmp_path / "t"))


# --- real captures ---------------------------------------------------------------------------

WHY_NOT = capture.unavailable()
needs_tracefs = pytest.mark.skipif(WHY_NOT is not None, reason=f"kmemfs trace: {WHY_NOT}")


def ours(instances_dir):
    return {n for n in os.listdir(instances_dir) if capture.INSTANCE_RE.match(n)}


@pytest.fixture
def tracefs():
    """A tracefs mount for the test (the host's, or a private one, unmounted after); at
    teardown, any instance a test's capture left behind is disabled and removed, and the
    test fails if there was one."""
    with capture.Tracefs() as t:
        inst = os.path.join(t.path, "instances")
        before = ours(inst)
        yield t.path
        left = ours(inst) - before
        for name in left:
            i = capture.Instance.__new__(capture.Instance)
            i.name, i.path, i.fd = name, os.path.join(inst, name), None
            i.close()
        assert not left, f"instances left behind: {left}"


def kmemfs_trace(*args, **kw):
    return subprocess.run([PY, "-m", "kmemfs", "trace", *args], capture_output=True,
                          text=True, timeout=120, **kw)


@needs_tracefs
def test_traces_300_files(tracefs, tmp_path):
    """The tree's dentries: each of 300 new files gets one (d_alloc via lookup_open)."""
    out = tmp_path / "files.trace"
    work = tmp_path / "w"
    work.mkdir()
    r = kmemfs_trace("-o", str(out), "--free-tail", "0.5", "--", "sh", "-c",
                     'i=0; while [ $i -lt 300 ]; do : > f$i; i=$((i+1)); done; exit 7',
                     cwd=work)
    assert r.returncode == 7, r.stderr           # COMMAND's status passed through
    assert len(os.listdir(work)) == 300
    h, it = read_trace(out)
    evs = list(it)
    assert h.exit_status == 7 and h.argv[0] == "sh" and h.root_pid > 0
    assert not h.inexact, h.notes
    tree = {h.root_pid} | {e.child for e in evs if e.op == "fork"}
    dentries = [e for e in evs if e.op == "alloc" and e.cache == "dentry" and e.pid in tree]
    assert len(dentries) >= 300
    assert all(e.ptr > 0xffff000000000000 for e in dentries)    # real, unhashed pointers
    assert len({e.ptr for e in dentries}) >= 300                # all live at once: distinct
    assert re.search(r"\d+ allocations, \d+ frees", r.stderr)


@needs_tracefs
def test_the_tree_only_and_its_frees(tracefs, tmp_path):
    """Allocations come from COMMAND's tree only (set_event_pid + event-fork), frees from
    anywhere but only those that matter are kept."""
    out = tmp_path / "t.trace"
    r = kmemfs_trace("-o", str(out), "--free-tail", "0.2", "--", "sh", "-c",
                     "/bin/true; /bin/true")
    assert r.returncode == 0, r.stderr
    h, it = read_trace(out)
    evs = list(it)
    tree = {h.root_pid} | {e.child for e in evs if e.op == "fork"}
    assert len(tree) == 3
    assert {e.pid for e in evs if e.op == "alloc"} <= tree
    assert sum(e.op == "exit" for e in evs) >= 2
    allocated = {e.ptr for e in evs if e.op == "alloc"}
    assert all(e.pid in tree or e.ptr in allocated for e in evs if e.op == "free")


@needs_tracefs
def test_gzip_output(tracefs, tmp_path):
    out = tmp_path / "t.trace.gz"
    r = kmemfs_trace("-o", str(out), "--free-tail", "0", "--", "true")
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    assert read_trace(out)[0].exit_status == 0


@needs_tracefs
def test_command_not_found(tracefs, tmp_path):
    r = kmemfs_trace("-o", str(tmp_path / "t"), "--", "/nonexistent/cmd")
    assert r.returncode == 1
    assert r.stderr.strip() == "kmemfs trace: /nonexistent/cmd: No such file or directory"
    assert not (tmp_path / "t").exists()


@needs_tracefs
def test_missing_event(tracefs, tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "ALLOC_EVENTS", capture.ALLOC_EVENTS + ("kmem/no_such_event",))
    with pytest.raises(capture.TraceError, match="tracepoint kmem:no_such_event is missing"):
        capture.run(["true"], str(tmp_path / "t"))


def _wait_for_command(tracefs, timeout=30):
    """Until the alloc instance traces a pid (set_event_pid written, events enabled: COMMAND
    has been released to exec)."""
    inst = os.path.join(tracefs, "instances")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for m in ours(inst):
            if m.endswith("_alloc"):
                try:     # a new instance's files appear a moment after its directory
                    with open(os.path.join(inst, m, "events/kmem/kmalloc/enable")) as f:
                        on = f.read().strip() == "1"
                    with open(os.path.join(inst, m, "set_event_pid")) as f:
                        pids = f.read().strip()
                except FileNotFoundError:
                    continue
                if on and pids:
                    time.sleep(0.2)
                    return
        time.sleep(0.05)
    raise AssertionError("the capture never started")


def signalled(args, wait, signals, gap=0.3):
    """Run `kmemfs trace ARGS`, wait(), send each of signals (gap seconds apart); returns
    (exit status, stderr). Never leaves the process running."""
    p = subprocess.Popen([PY, "-m", "kmemfs", "trace", *args], stderr=subprocess.PIPE,
                         text=True)
    try:
        wait()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(gap)
            p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, err


@needs_tracefs
def test_a_signal_before_command_starts_aborts(tracefs, tmp_path):
    out = tmp_path / "t.trace"
    inst = os.path.join(tracefs, "instances")

    def first_instance():
        end = time.monotonic() + 30
        while not ours(inst) and time.monotonic() < end:
            time.sleep(0.01)
    rc, err = signalled(["-o", str(out), "--", "sleep", "60"], first_instance, [signal.SIGTERM])
    if "allocations" in err:             # too late: COMMAND was already running
        pytest.skip("the signal landed after COMMAND started")
    assert rc == 1 and "interrupted by SIGTERM" in err
    assert not out.exists()


@needs_tracefs
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_and_the_trace_written(tracefs, tmp_path, sig):
    """The first SIGINT/SIGTERM goes to COMMAND; the trace of what ran is written and the
    instances removed; kmemfs trace exits with COMMAND's status (128+N)."""
    out = tmp_path / "t.trace"
    rc, err = signalled(["-o", str(out), "--free-tail", "0", "--", "sleep", "60"],
                        lambda: _wait_for_command(tracefs), [sig])
    assert rc == 128 + sig, err
    h, _ = read_trace(out)
    assert h.exit_status == 128 + sig and any(signal.Signals(sig).name in n for n in h.notes)
    assert not ours(os.path.join(tracefs, "instances"))


@needs_tracefs
def test_second_signal_aborts_and_still_cleans_up(tracefs, tmp_path):
    out = tmp_path / "t.trace"
    bg = tmp_path / "bg.pid"
    try:
        # COMMAND ignores SIGTERM, so the first one does not end it
        rc, err = signalled(
            ["-o", str(out), "--", "sh", "-c",
             f"trap '' TERM; exec 2>/dev/null; sleep 60 & echo $! > {bg}; wait"],
            lambda: (_wait_for_command(tracefs), time.sleep(0.3)),
            [signal.SIGTERM, signal.SIGTERM])
    finally:
        if bg.exists():                      # the aborted COMMAND's orphan
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(bg.read_text()), signal.SIGKILL)
    assert rc == 1
    assert "interrupted by SIGTERM: trace not written" in err
    assert not out.exists()
    assert not ours(os.path.join(tracefs, "instances"))


@needs_tracefs
def test_stale_instances_of_a_killed_tracer_are_removed(tracefs):
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"kmemfs_{dead.pid}_alloc"
    path = os.path.join(tracefs, "instances", name)
    os.mkdir(path)
    try:
        assert name in capture.remove_stale_instances(tracefs)
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.rmdir(path)
