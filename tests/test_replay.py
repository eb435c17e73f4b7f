"""Replaying traces into the engine (kmemfs/trace/replay.py, docs/trace.md "Replay").

Expected numbers come from the rules and the catalogue geometry of
kmemfs/engine/data/3.4.0-rc6.slabinfo: dentry is 192 bytes, 20 objects on a 1-page slab
(tunables 120 60 8, so free_limit = (1 + nr_cpus) * 60 + 20 = 140 with one CPU: mm/slab.c
free_block keeps empty slabs while l3->free_objects <= free_limit); size-64 is 64 bytes, 59 a
slab. Events are hand-made: kmemfs.trace.format.Event as the capture writes them.
"""
import pytest

from kmemfs.engine import Config, Engine, policy
from kmemfs.engine.caches import CacheOps
from kmemfs.trace.format import Event, Header
from kmemfs.trace.replay import ReplayError, Session, Setup, ordered, replay

PAGE = 4096
DENTRY = 192


def ev(seq, t, op, pid=100, cache="dentry", ptr=0, gfp="GFP_KERNEL", context="task",
       accounted=False, child=0, size=192, call_site="d_alloc+0x1a/0x90", comm="sh"):
    return Event(seq, t, pid, op, cache, ptr, size, size, gfp, context, accounted,
                 call_site, child, comm)


def allocs(n, start=0, pid=100, base=0x1000, t0=0, **kw):
    return [ev(start + i, t0 + (start + i) * 1000, "alloc", pid=pid, ptr=base + 0x100 * i, **kw)
            for i in range(n)]


def run(events, header=None, **setup):
    header = header or Header()
    return replay(header, iter(events), Setup(**setup))


def test_free_seen_before_its_alloc_is_put_back_in_time_order():
    """The free's record comes first in the file but is later in time: the watermark merge
    replays alloc then free, so nothing is left live and no free is unmatched."""
    events = [ev(0, 2000, "free", ptr=0xa0), ev(1, 1000, "alloc", ptr=0xa0)]
    out = run(events)
    s = out.stats
    assert (s.objects, s.unmatched_frees, s.live_bytes, s.late) == (1, 0, 0, 0)
    assert [e.seq for e in ordered(events, 10_000)] == [1, 0]


def test_free_in_the_same_clock_tick_before_its_alloc():
    """tracefs prints microseconds: a free that sorts before its own allocation within one
    tick is matched to it (counted as reordered), not left as an unmatched free + a leak."""
    out = run([ev(0, 5000, "free", ptr=0xa0), ev(1, 5000, "alloc", ptr=0xa0)])
    s = out.stats
    assert (s.objects, s.unmatched_frees, s.reordered, s.live_bytes) == (1, 0, 1, 0)


def test_pointer_reuse():
    events = [ev(0, 1000, "alloc", ptr=0xa0), ev(1, 2000, "free", ptr=0xa0),
              ev(2, 3000, "alloc", ptr=0xa0), ev(3, 4000, "free", ptr=0xa0),
              ev(4, 5000, "alloc", ptr=0xa0)]
    s = run(events).stats
    assert (s.objects, s.frees, s.unmatched_frees, s.reused_live) == (3, 2, 0, 0)
    assert s.live_bytes == DENTRY


def test_an_allocation_at_a_live_pointer_frees_the_old_object():
    """Its free was never seen (lost): the kernel cannot hand out a live pointer."""
    s = run([ev(0, 1000, "alloc", ptr=0xa0), ev(1, 2000, "alloc", ptr=0xa0)]).stats
    assert (s.objects, s.reused_live, s.live_bytes) == (2, 1, DENTRY)


def test_unmatched_frees_are_counted_and_ignored():
    """Objects allocated before the trace started: nothing in the model changes."""
    out = run([ev(0, 1000, "free", ptr=0xdead), ev(1, 2000, "free", ptr=0xbeef, cache="")],
              remove_at_end=False)
    s = out.stats
    assert (s.unmatched_frees, s.objects, s.live_bytes) == (2, 0, 0)
    assert out.kmem_final == 0


def test_kfree_null_is_not_an_unmatched_free():
    assert run([ev(0, 1000, "free", ptr=0, cache="")]).stats.unmatched_frees == 0


def test_lost_events_mark_the_result_inexact():
    h = Header(inexact=True, notes=["cpu1: 12 events lost"])
    s = run(allocs(3), header=h).stats
    assert s.inexact and "12 events lost" in s.inexact[0]
    assert not run(allocs(3)).stats.inexact


def test_series_charges_slab_pages_of_the_copy():
    """41 dentries: ceil(41/20) = 3 one-page slabs in dentry(traced), charged to /traced."""
    out = run(allocs(41), remove_at_end=False)
    assert out.stats.charged_objects == 41
    assert out.kmem_peak == out.kmem_final == 3 * PAGE
    assert out.stats.peak_live_charged_bytes == 41 * DENTRY
    assert out.caches_created == 1


@pytest.mark.parametrize("design,charged", [("series", 0), ("optin", 0)])
def test_interrupt_context_goes_to_the_global_cache(design, charged):
    """series: patch 05/10 mem_cgroup_get_kmem_cache returns the original cache when
    in_interrupt(). optin: mainline's current_obj_cgroup() has no objcg outside task context
    (bar int_active_memcg, which the trace cannot show), even for an accounted allocation."""
    events = allocs(30, context="softirq", accounted=True)
    out = run(events, design=design, remove_at_end=False)
    assert out.stats.charged_objects == charged
    assert out.kmem_peak == 0 and out.caches_created == 0


@pytest.mark.parametrize("design,pages", [("series", 0), ("optin", 2)])
def test_nofail_goes_global_under_series_and_is_charged_under_optin(design, pages):
    """series: __GFP_NOFAIL never reaches a per-cgroup copy (patch 05/10). optin: an accounted
    NOFAIL allocation is charged. GFP_NOFS cannot create the copy in place: the first allocation
    queues its creation and is served by the global cache (05/10 mem_cgroup_get_kmem_cache); the
    work item has run by the next event, so 29 dentries are charged = 2 slabs."""
    events = allocs(30, gfp="GFP_NOFS|__GFP_NOFAIL", accounted=True)
    out = run(events, design=design, remove_at_end=False)
    assert out.kmem_peak == pages * PAGE
    assert out.stats.charged_objects == (29 if pages else 0)
    assert out.stats.caches[("dentry")].why == {policy.NOFAIL: 30 * DENTRY}


def test_optin_charges_only_what_is_marked():
    events = allocs(20, accounted=True) + allocs(20, start=20, base=0x9000, accounted=False)
    series = run(events, design="series", remove_at_end=False)
    optin = run(events, design="optin", remove_at_end=False)
    assert series.stats.charged_objects == 40 and series.kmem_peak == 2 * PAGE
    assert optin.stats.charged_objects == 20 and optin.kmem_peak == 1 * PAGE
    assert optin.stats.caches["dentry"].why == {policy.NOT_MARKED: 20 * DENTRY}


@pytest.mark.parametrize("freed,live,charged", [(0xa0, DENTRY, 0), (0xb0, DENTRY, DENTRY)])
def test_a_free_takes_its_bytes_off_live_and_off_charged_only_if_charged(freed, live, charged):
    """Under optin one dentry is marked (charged), one is not; freeing either takes its bytes
    off the live count, and off the charged count only when it was charged."""
    events = [ev(0, 1000, "alloc", ptr=0xa0, accounted=True),
              ev(1, 2000, "alloc", ptr=0xb0, accounted=False), ev(2, 3000, "free", ptr=freed)]
    s = run(events, design="optin", remove_at_end=False).stats
    assert (s.live_bytes, s.live_charged_bytes) == (live, charged)
    assert (s.peak_live_bytes, s.peak_live_charged_bytes) == (2 * DENTRY, DENTRY)


def test_timeline_samples_before_the_event_that_crosses_each_step():
    """Session.run(step_ns): a point (ns since the first event, live charged bytes, charged
    slab bytes) at the first event, before the first event at or past each step after the
    last point, and after the last event. Five dentries 1 us apart, steps of 2.5 us: points
    at 0 (nothing yet), at 3 us (three dentries, one 1-page slab of the copy), at the end."""
    from kmemfs.trace.replay import build
    fs, memcg = build(Setup(remove_at_end=False), Header())
    sess = Session(fs.engine, memcg)
    sess.run(allocs(5, t0=1000), step_ns=2500)
    assert sess.timeline == [(0, 0, 0), (3000, 3 * DENTRY, PAGE), (4000, 5 * DENTRY, PAGE)]
    assert sess.start_ns == 1000


def test_ordered_across_chunks_keeps_time_then_file_order_and_counts_late():
    """ordered() in chunks of 4 with a 15 ns window: each chunk releases what is older than
    its newest time minus the window and keeps the rest; equal times (40, 40) straddling a
    chunk keep file order; a record older than what was released (5, read in the third
    chunk after 60 went out) is replayed at once and counted late."""
    from kmemfs.trace.replay import Stats
    times = [10, 20, 30, 40, 40, 60, 70, 80, 5, 90, 100, 110]
    events = [ev(i, t, "alloc", ptr=0x100 * (i + 1)) for i, t in enumerate(times)]
    st = Stats()
    got = [(e.seq, e.time_ns) for e in ordered(events, 15, st, chunk=4)]
    assert got == [(0, 10), (1, 20), (2, 30), (3, 40), (4, 40), (5, 60), (8, 5), (6, 70),
                   (7, 80), (9, 90), (10, 100), (11, 110)]
    assert st.late == 1
    assert list(ordered([], 15, st, chunk=4)) == [] and st.late == 1


def test_nofail_under_optin_is_forced_past_the_limit():
    """try_charge_memcg's force: a NOFAIL charge succeeds over memory.limit_in_bytes. GFP_NOFS
    may not OOM-kill; the first allocation is global (async copy creation, 05/10), the other
    40 fill two slabs: the second one's page is forced past the 4K limit."""
    sets = ("memory.limit_in_bytes=4K",)
    events = allocs(41, gfp="GFP_NOFS|__GFP_NOFAIL", accounted=True)
    out = run(events, design="optin", sets=sets, remove_at_end=False)
    assert out.stats.failures == 0 and not out.stats.killed
    assert out.kmem_peak == 2 * PAGE and out.res_peak == 2 * PAGE


def test_nofail_of_a_task_the_oom_killer_chose_is_forced_not_bypassed():
    """GFP_KERNEL|__GFP_NOFAIL over the limit: the OOM killer takes the only task (itself);
    today's kernel then forces the charge (task_is_dying -> nomem -> force:), so the page is
    the memcg's, not the series' bypass ledger's (patch 07/10)."""
    from kmemfs.trace.replay import build
    fs, memcg = build(Setup(design="optin", sets=("memory.limit_in_bytes=4K",)), Header())
    s = Session(fs.engine, memcg).run(iter(allocs(21, accounted=True,
                                                  gfp="GFP_KERNEL|__GFP_NOFAIL")))
    assert [p for p, _ in s.killed] == [100]
    assert memcg.kmem_bypassed == 0 and memcg.kmem.max_usage == 2 * PAGE


def test_first_failure_under_an_independent_kmem_limit():
    """8K = 2 one-page slabs = 40 dentries; the 41st cannot grow the cache: ENOMEM
    (memcg_charge_kmem: the kmem counter refuses, no reclaim), and so do the two after it."""
    sets = ("memory.kmem.independent_kmem_limit=1", "memory.kmem.limit_in_bytes=8K")
    events = allocs(43, call_site="d_alloc_parallel+0x40/0x4b0")
    out = run(events, sets=sets)
    s = out.stats
    f = s.first_failure
    assert (f.seq, f.cache, f.model_cache, f.gfp, f.status) == (40, "dentry", "dentry(traced)",
                                                               "GFP_KERNEL", "nomem")
    assert f.call_site == "d_alloc_parallel+0x40/0x4b0"
    assert s.failures == 3 and s.objects == 40
    # The same trace today: dentries are not marked in these events, nothing fails.
    assert run(events, sets=sets, design="optin").stats.failures == 0


def test_a_killed_tasks_later_events_are_dropped():
    """memory.limit_in_bytes=8K (dependent kmem, charged to res). pid 100 fills one slab,
    pid 200 a second, and its 21st dentry needs a third page: after the reclaim retries the
    memcg OOM killer picks the task with the highest badness; no task has rss, so every one
    scores 1 and the oldest (pid 100) goes first (3.3 select_bad_process takes the first of
    equals). That frees pid 100's 20 objects but not their page (the empty slab stays under
    free_limit), so the charge fails again and pid 200, the only task left, dies in its own
    allocation, which fails: on 3.3 a dying task's charge leaves try_charge through `bypass:`
    with -EINTR, which 01/10 turns into -ENOMEM ("memcg: return -EINTR at bypassing
    try_charge()", Dec 2011), so its 21st dentry is never made."""
    events = allocs(20, pid=100) + allocs(21, start=20, pid=200, base=0x90000)
    events += [ev(41, 50_000, "alloc", pid=100, ptr=0x5), ev(42, 51_000, "free", pid=100, ptr=0x1000),
               ev(43, 52_000, "free", pid=300, ptr=0x90000), ev(44, 53_000, "alloc", pid=300, ptr=0x7)]
    out = run(events, sets=("memory.limit_in_bytes=8K",), remove_at_end=False)
    s = out.stats
    assert [p for p, _ in s.killed] == [100, 200]
    assert s.dropped_killed == 2
    assert s.freed_by_kill == 20 + 20
    # pid 300 (a kworker's RCU free, then its own allocation) is alive: its free found the
    # object already gone with its killed owner, which is an unmatched free.
    assert s.unmatched_frees == 1 and s.objects == 41     # pid 200's 21st never made
    assert s.live_bytes == DENTRY


def test_fork_puts_the_child_in_the_parents_cgroup_and_exit_keeps_objects():
    events = [ev(0, 1000, "fork", pid=100, child=101, cache="", ptr=0),
              ev(1, 2000, "alloc", pid=101, ptr=0xa0), ev(2, 3000, "exit", pid=101, cache="")]
    setup = Setup(remove_at_end=False)
    from kmemfs.trace.replay import build
    fs, memcg = build(setup, Header())
    sess = Session(fs.engine, memcg)
    s = sess.run(iter(events))
    assert s.forks == 1 and s.exits == 1
    assert sess.live[0xa0].cache.name == "dentry(traced)"
    assert [t.comm for t in fs.engine.tasks.values()] == ["sh"]       # pid 100 only
    assert memcg.kmem.usage == PAGE


def test_rmdir_at_the_end_leaves_dead_caches_with_the_live_objects():
    """patch 02/10: rmdir renames the cgroup's copies to NAME(cg)dead; those holding
    objects keep their pages."""
    events = allocs(3) + [ev(3, 9000, "free", ptr=0x1000)]
    out = run(events)
    assert out.removed == "" and out.dead_caches == 1 and out.dead_bytes == PAGE


def test_unknown_setting_is_the_cgroup_layers_errno():
    with pytest.raises(ReplayError, match="EINVAL"):
        run(allocs(1), sets=("memory.kmem.limit_in_bytes=2M",))   # independent is 0
    with pytest.raises(ReplayError, match="ENOENT|no cgroup"):
        run(allocs(1), sets=("/nope/memory.limit_in_bytes=2M",))


def test_memcg_only_allocations_are_dropped():
    s = run([ev(0, 1000, "alloc", cache="", call_site="alloc_slab_obj_exts+0x1/0x2", ptr=5,
                size=64)]).stats
    assert s.dropped_memcg_only == 1 and s.objects == 0


def test_kmalloc_lands_in_the_smallest_size_cache():
    s = run([ev(0, 1000, "alloc", cache="kmalloc-64", size=64, ptr=5),
             ev(1, 2000, "alloc", cache="", size=100, ptr=6)]).stats
    assert set(s.caches) == {"size-64", "size-128"}


def test_host_catalogue_refusal_is_a_clear_error():
    slub = ("slabinfo - version: 2.1\n# name ...\n"
            "dentry 100 100 192 21 1 : tunables 0 0 0 : slabdata 5 5 0\n")
    try:
        out = run(allocs(2), header=Header(slabinfo=slub), catalogue="host")
    except ReplayError as e:
        assert "refuses the host's slabinfo" in str(e)
    else:   # once the engine derives SLAB tunables for SLUB dumps
        assert out.stats.objects == 2


def test_both_designs_run_through_the_same_charge_path(monkeypatch):
    """The design is a policy the one charge path consults (engine/policy.py), not a fork:
    both designs call the same _select_cache and memcg_charge_kmem."""
    calls = []
    real_select, real_charge = CacheOps._select_cache, Engine.memcg_charge_kmem

    def select(self, *a, **kw):
        calls.append(("select", self.policy.name))
        return real_select(self, *a, **kw)

    def charge(self, *a, **kw):
        calls.append(("charge", self.policy.name))
        return real_charge(self, *a, **kw)
    monkeypatch.setattr(CacheOps, "_select_cache", select)
    monkeypatch.setattr(Engine, "memcg_charge_kmem", charge)
    for design in ("series", "optin"):
        run(allocs(1, accounted=True), design=design)
    assert ("select", "series") in calls and ("select", "optin") in calls
    assert ("charge", "series") in calls and ("charge", "optin") in calls
    assert set(policy.DESIGNS) == {"series", "optin"}


def test_policy_rules():
    from kmemfs.engine.gfp import GFP_KERNEL, GFP_ATOMIC, Gfp
    S, O = policy.SERIES, policy.OPTIN
    k = int(GFP_KERNEL)
    assert S.charges(k, False, False) and not O.charges(k, False, False)
    assert O.charges(k, False, True)
    assert not S.charges(k | Gfp.NOFAIL, False, True) and O.charges(k | Gfp.NOFAIL, False, True)
    assert not S.charges(k | Gfp.NOACCOUNT, False, False)
    assert not S.charges(int(GFP_ATOMIC), True, True) and not O.charges(int(GFP_ATOMIC), True, True)
    assert O.forces(k | Gfp.NOFAIL) and not S.forces(k | Gfp.NOFAIL)
    assert policy.why(k, False, False) == policy.NOT_MARKED
    assert policy.why(k | Gfp.NOFAIL, False, True) == policy.NOFAIL
    assert policy.why(k, False, True) is None and policy.why(k, True, False) is None
    assert Engine(Config(design="optin")).policy is O
    with pytest.raises(ValueError):
        policy.design("both")
