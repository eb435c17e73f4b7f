"""The tracefs text parser (kmemfs/trace/parse.py).

Line layout from kernel/trace/trace_output.c (trace_print_context: "%16s-%-7d", "[%03d] ",
the irqs-off / need-resched / hardirq-softirq / preempt-depth / migrate-disable flags of
trace_print_lat_fmt, " %5lu.%06lu: "), and the event texts from include/trace/events/kmem.h
and sched.h as this kernel (6.18) prints them (their `format` files under tracefs events/).
"""
import gzip
import os

import pytest
from hypothesis import given, settings, strategies as st

from kmemfs.trace import parse
from kmemfs.trace.parse import Parser, context_of, parse_lines, parse_text

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")

ALLOC = ("            bash-9132    [000] .....   473.002466: kmem_cache_alloc: "
         "call_site=alloc_empty_file+0x3c/0x110 ptr=ffff8881050a7480 name=filp bytes_req=184 "
         "bytes_alloc=192 gfp_flags=GFP_KERNEL node=-1 accounted=true")
KMALLOC = ("            bash-9132    [000] .....   473.002874: kmalloc: "
           "call_site=tracepoint_add_func+0x10d/0x490 ptr=ffff88810676bd80 bytes_req=64 "
           "bytes_alloc=64 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO node=-1 accounted=true")
CFREE = ("            bash-9132    [000] .....   473.003091: kmem_cache_free: "
         "call_site=task_work_run+0x59/0x90 ptr=ffff8881050a7480 name=filp")
KFREE = ("              rm-9135    [001] ..s1.   473.008986: kfree: "
         "call_site=rcu_do_batch+0x1b7/0x530 ptr=ffff888101234560")
FORK = ("            bash-9132    [000] .....   473.003400: sched_process_fork: comm=bash "
        "pid=9132 child_comm=bash child_pid=9134")
EXIT = ("              rm-9135    [000] .....   473.009745: sched_process_exit: comm=rm "
        "pid=9135 prio=120 group_dead=true")


def one(line):
    evs, stats = parse_lines([line])
    assert len(evs) == 1, stats
    return evs[0]


def test_kmem_cache_alloc_fields():
    ev = one(ALLOC)
    assert ev == (0, 473_002_466_000, 9132, "alloc", "filp", 0xffff8881050a7480, 184, 192,
                  "GFP_KERNEL", "task", True, "alloc_empty_file+0x3c/0x110", 0, "bash")


def test_kmalloc_has_no_cache_name():
    ev = one(KMALLOC)
    assert (ev.op, ev.cache, ev.bytes_req, ev.bytes_alloc) == ("alloc", "", 64, 64)
    assert ev.gfp == "GFP_KERNEL_ACCOUNT|__GFP_ZERO" and ev.accounted


def test_frees():
    a, b = one(CFREE), one(KFREE)
    assert (a.op, a.cache, a.ptr) == ("free", "filp", 0xffff8881050a7480)
    assert (b.op, b.cache, b.ptr, b.context) == ("free", "", 0xffff888101234560, "softirq")


def test_fork_and_exit():
    f, e = one(FORK), one(EXIT)
    assert (f.op, f.pid, f.child, f.comm) == ("fork", 9132, 9134, "bash")
    assert (e.op, e.pid, e.comm) == ("exit", 9135, "rm")


def test_kfree_null_is_ignored():
    """kfree() traces before its ZERO_OR_NULL_PTR check (mm/slub.c kfree): NULL and
    ZERO_SIZE_PTR (16) are no objects."""
    lines = [KFREE.replace("ffff888101234560", "0000000000000000"),
             KFREE.replace("ffff888101234560", "0000000000000010")]
    evs, stats = parse_lines(lines)
    assert evs == [] and stats.null_frees == 2


def test_failed_allocation_is_not_an_object():
    evs, stats = parse_lines([ALLOC.replace("ffff8881050a7480", "0000000000000000")])
    assert evs == [] and stats.failed_allocs == 1


@pytest.mark.parametrize("comm", ["a b", "my-prog", "x - y-1", "kworker/u8:1-ev", "<...>",
                                  "sp  ace", "-", "15charsxxxxxxxx"])
def test_comm_with_spaces_and_dashes(comm):
    """The comm is %16s (right-aligned, at most 15 characters: TASK_COMM_LEN), then -pid."""
    line = f"{comm:>16}-{4242:<7} [001] .....   12.000001: " + ALLOC.split(": ", 1)[1]
    ev = one(line)
    assert (ev.comm, ev.pid) == (comm, 4242)


def test_comm_column_of_another_width():
    """Wider pids (or a hand-written line) shift the columns: the last '-' before " [cpu]"."""
    ev = one("my prog-12345678 [003] b..1. 10.000001: " + ALLOC.split(": ", 1)[1])
    assert (ev.comm, ev.pid, ev.context) == ("my prog", 12345678, "softirq")


@pytest.mark.parametrize("flags,ctx", [
    (".....", "task"), ("..s..", "softirq"), ("b..1.", "softirq"), ("dNh2.", "hardirq"),
    ("d.H1.", "hardirq"), ("..z..", "nmi"), ("d.Z..", "nmi"), ("d..1.", "task"),
    (".N...", "task"), ("D..2.", "softirq"), ("d.s1", "softirq"), ("....", "task")])
def test_flags_column(flags, ctx):
    """trace_print_lat_fmt: the 3rd character is z/Z (NMI), h/H (hardirq), s (softirq);
    the 1st is b or D when bottom halves are disabled, which 3.3's in_softirq() (and so
    in_interrupt(), include/linux/hardirq.h) counts as softirq. Older kernels print 4."""
    assert context_of(flags) == ctx
    assert one(ALLOC.replace(".....", flags, 1)).context == ctx


def test_module_call_site():
    """%pS of a module symbol is "fn+0x1/0x2 [mod]": one more token (the slow path)."""
    ev = one(ALLOC.replace("alloc_empty_file+0x3c/0x110", "ext4_foo+0x1/0x20 [ext4]"))
    assert ev.call_site == "ext4_foo+0x1/0x20 [ext4]" and ev.cache == "filp"
    ev = one(KFREE.replace("rcu_do_batch+0x1b7/0x530", "f+0x1/0x2 [mod]"))
    assert ev.call_site == "f+0x1/0x2 [mod]" and ev.op == "free"


def test_lost_events_marker():
    """trace_pipe prints "CPU:%d [LOST %lu EVENTS]" where the ring buffer dropped events."""
    evs, stats = parse_lines(["CPU:1 [LOST 12 EVENTS]", ALLOC, "CPU:1 [LOST 3 EVENTS]",
                              "CPU:0 [LOST 1 EVENTS]"])
    assert len(evs) == 1 and stats.lost == {1: 15, 0: 1}


def test_truncated_last_line_is_dropped():
    text = ALLOC + "\n" + CFREE + "\n" + KMALLOC[:70]
    evs, stats = parse_text(text)
    assert [e.op for e in evs] == ["alloc", "free"] and stats.truncated == 1


def test_comments_and_other_events_are_skipped():
    evs, stats = parse_lines(["# tracer: nop", "", ALLOC.replace("kmem_cache_alloc",
                              "mm_page_alloc"), ALLOC])
    assert len(evs) == 1 and stats.skipped == 3 and stats.malformed == 0


def test_garbage_is_counted_not_raised():
    evs, stats = parse_lines(["            bash-9132    [000] .....   473.0: kmalloc: x",
                              "nonsense", ALLOC[:100]])
    assert evs == [] and stats.malformed == 3


def test_raw_counter_clock():
    """Clocks not in ns (counter, x86-tsc) print a bare integer timestamp."""
    ev = one(ALLOC.replace("473.002466:", "123456789:"))
    assert ev.time_ns == 123456789


def test_seq_counts_kept_events():
    evs, _ = parse_lines([ALLOC, "garbage", KFREE.replace("ffff888101234560", "0" * 16),
                          CFREE, FORK])
    assert [e.seq for e in evs] == [0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([ALLOC, KMALLOC, CFREE, KFREE, FORK, EXIT]), max_size=30),
       st.lists(st.integers(0, 10_000), max_size=8))
def test_feed_any_chunking_gives_the_same_events(lines, cuts):
    text = "".join(line + "\n" for line in lines)
    whole, _ = parse_text(text)
    p = Parser()
    got, last = [], 0
    for c in sorted(min(c, len(text)) for c in cuts) + [len(text)]:
        got += p.feed(text[last:c])
        last = c
    p.close()
    assert got == whole and len(whole) == len(lines)


def test_parses_this_kernels_real_output():
    """A real trace_pipe capture of this kernel (the 6.18 text): every line is understood."""
    with gzip.open(os.path.join(DATA, "trace_pipe.sample.gz"), "rt") as f:
        evs, stats = parse_text(f.read())
    assert stats.malformed == 0 and stats.truncated == 0
    assert stats.events == len(evs) > 1000
    assert {e.op for e in evs} == {"alloc", "free", "fork", "exit"}
    assert {e.context for e in evs} >= {"task", "softirq"}
