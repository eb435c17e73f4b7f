"""One test (or a few) per rule of the engine. Each docstring names its source (docs/semantics.md
lists them): a patch of the series ("05/10") or a 3.3.8 file or function."""
import errno
import time

import pytest

from kmemfs.engine import (GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_NOWAIT,
                           RESOURCE_MAX, EngineError, Gfp, check, parse_catalogue, parse_gfp)
from kmemfs.engine import render
from kmemfs.engine.tasks import FORK_RECIPE
from kmemfs.engine.res_counter import ResCounter
from kmemfs.engine.result import OOM_DIE

from engine_helpers import (BOOT_BYTES, CATALOGUE, FIRST_SPAWN_BYTES, HEADER, PAGE, events,
                            free_limit, make_engine, row, slab_bytes)


def raises(err):
    """pytest.raises for an EngineError with this errno."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(EngineError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            r = self.ctx.__exit__(*exc)
            assert self.info.value.errno == err, self.info.value
            return r
    return _Ctx()


@pytest.fixture
def e():
    eng = make_engine()
    yield eng
    assert check(eng) == []


def copy_of(e, memcg, name):
    return memcg.slabs.get(e.cache(name).id)


# ============================================================== res_counter (3.3.8, 07/10)

def test_res_counter_hierarchical_charge_is_all_or_nothing():
    """3.3.8 res_counter_charge: charge walks up the chain; a refusal undoes the lower levels and
    bumps failcnt only at the refusing level."""
    top = ResCounter()
    mid = ResCounter(top)
    low = ResCounter(mid)
    top.limit = 10 * PAGE
    assert low.charge(8 * PAGE) is None
    assert (low.usage, mid.usage, top.usage) == (8 * PAGE,) * 3
    assert low.charge(4 * PAGE) is top
    assert (low.usage, mid.usage, top.usage) == (8 * PAGE,) * 3
    assert (low.failcnt, mid.failcnt, top.failcnt) == (0, 0, 1)
    mid.limit = 9 * PAGE
    assert low.charge(2 * PAGE) is mid
    assert (low.failcnt, mid.failcnt, top.failcnt) == (0, 1, 1)
    # res_counter_charge_locked bumps max_usage at each level it passes, and the undo does
    # not lower it: the failed 4-page charge leaves a transient peak at the lower levels.
    assert (low.max_usage, mid.max_usage, top.max_usage) == (12 * PAGE, 12 * PAGE, 8 * PAGE)


def test_res_counter_uncharge_clamps_at_zero():
    """Patch 07/10 (res_counter_uncharge_locked): uncharge clamps each level at 0 and reports the
    shortfall."""
    top = ResCounter()
    low = ResCounter(top)
    low.charge(PAGE)
    top.charge(3 * PAGE)  # top holds more than low
    under = low.uncharge(2 * PAGE)
    assert under == [(low, PAGE)]
    assert low.usage == 0 and top.usage == 2 * PAGE


def test_res_counter_set_limit_ebusy_over_usage():
    """3.3.8 res_counter_set_limit refuses a limit below usage with EBUSY."""
    c = ResCounter()
    c.charge(2 * PAGE)
    with raises(errno.EBUSY):
        c.set_limit(PAGE)
    c.set_limit(2 * PAGE)
    assert c.limit == 2 * PAGE


def test_uncharge_underflow_event_when_freed_after_toggle(e):
    """01/10 memcg_uncharge_kmem, 07/10: charged while independent, freed while dependent: res is
    uncharged for memory it never held, clamps at 0 and an `uncharge_underflow` event fires."""
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.alloc(e.cache("dentry"), 1, a)
    assert (a.kmem.usage, a.res.usage) == (PAGE, 0)
    e.set_independent(a, 0)
    seq = e.event_seq
    e.free_named("dentry", 1, a)
    e.reap()
    assert a.kmem.usage == 0 and a.res.usage == 0
    under = events(e, "uncharge_underflow", seq)
    assert under == [("uncharge_underflow", {"cgroup": "/a", "counter": "res", "bytes": PAGE})]
    assert "underflow" in a.quirks


# ============================================================== hierarchy and settings (01/10, 3.3.8)

def test_kmem_counter_parent_only_for_hierarchical_non_root_parent(e):
    """01/10 memcg_kmem_init: the kmem counter's parent is the parent's kmem only if the parent
    has use_hierarchy=1 and is not root; res/memsw follow use_hierarchy alone (3.3)."""
    e.set_use_hierarchy(e.root, 1)
    a = e.mkdir(e.root, "a")
    assert a.kmem.parent is None
    assert a.res.parent is e.root.res and a.memsw.parent is e.root.memsw
    b = e.mkdir(a, "b")             # a inherited use_hierarchy=1
    assert a.use_hierarchy and b.kmem.parent is a.kmem and b.res.parent is a.res
    e2 = make_engine()
    p = e2.mkdir(e2.root, "p")
    c = e2.mkdir(p, "c")
    assert c.kmem.parent is None and c.res.parent is None


def test_child_kmem_charge_limited_by_ancestor_kmem_limit(e):
    """01/10 memcg_charge_kmem: a child's kmem charge also charges non-root ancestors; an
    ancestor's kmem limit can refuse it (failcnt at that level), and the charge undoes itself."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.set_independent(p, 1)
    e.set_independent(c, 1)
    e.set_kmem_limit(p, PAGE)
    r = e.alloc(e.cache("task_struct"), 1, c)          # a 2-page slab
    assert r.status == "nomem" and r.done == 0
    assert (c.kmem.usage, p.kmem.usage) == (0, 0)
    assert (c.kmem.failcnt, p.kmem.failcnt) == (0, 1)
    r = e.alloc(e.cache("dentry"), 1, c)               # a 1-page slab fits
    assert r.ok and (c.kmem.usage, p.kmem.usage) == (PAGE, PAGE)


def test_use_hierarchy_rules(e):
    """3.3.8 mem_cgroup_hierarchy_write: use_hierarchy takes 0/1 (else EINVAL), EINVAL under a
    hierarchical parent, EBUSY with children (even for the same value); root may change it while
    childless."""
    with raises(errno.EINVAL):
        e.set_use_hierarchy(e.root, 2)
    e.set_use_hierarchy(e.root, 1)
    e.set_use_hierarchy(e.root, 0)
    a = e.mkdir(e.root, "a")
    with raises(errno.EBUSY):
        e.set_use_hierarchy(e.root, 1)
    with raises(errno.EBUSY):
        e.set_use_hierarchy(e.root, 0)
    e.set_use_hierarchy(a, 1)
    b = e.mkdir(a, "b")
    assert b.use_hierarchy               # copied at creation
    with raises(errno.EINVAL):
        e.set_use_hierarchy(b, 0)        # parent is hierarchical
    with raises(errno.EBUSY):
        e.set_use_hierarchy(a, 0)


def test_swappiness_rules_and_inheritance(e):
    """3.3.8 mem_cgroup_swappiness_write: swappiness > 100 or on root EINVAL; EINVAL under a
    hierarchical parent or when hierarchical with children; copied from the parent (root:
    vm.swappiness) at mkdir."""
    assert e.swappiness(e.root) == 60
    a = e.mkdir(e.root, "a")
    assert a.swappiness == 60
    with raises(errno.EINVAL):
        e.set_swappiness(e.root, 10)
    with raises(errno.EINVAL):
        e.set_swappiness(a, 101)
    e.set_swappiness(a, 100)
    b = e.mkdir(a, "b")
    assert b.swappiness == 100
    e.set_swappiness(a, 30)              # a is not hierarchical: children do not lock it
    e.rmdir(b)
    e.set_use_hierarchy(a, 1)
    e.set_swappiness(a, 20)              # hierarchical but childless
    b = e.mkdir(a, "b")
    with raises(errno.EINVAL):
        e.set_swappiness(a, 10)
    with raises(errno.EINVAL):
        e.set_swappiness(b, 10)
    assert (a.swappiness, b.swappiness) == (20, 20)


def test_oom_control_rules_and_inheritance(e):
    """3.3.8 mem_cgroup_oom_control_write: oom_kill_disable takes 0/1, not on root, same hierarchy
    locks as swappiness, copied from the parent at mkdir."""
    a = e.mkdir(e.root, "a")
    for bad in (2, 7):
        with raises(errno.EINVAL):
            e.set_oom_kill_disable(a, bad)
    with raises(errno.EINVAL):
        e.set_oom_kill_disable(e.root, 1)
    e.set_oom_kill_disable(a, 1)
    assert render.oom_control(a) == "oom_kill_disable 1\nunder_oom 0\n"
    b = e.mkdir(a, "b")
    assert b.oom_kill_disable
    e.set_use_hierarchy(b, 1)
    c = e.mkdir(b, "c")
    assert c.oom_kill_disable and c.use_hierarchy
    with raises(errno.EINVAL):
        e.set_oom_kill_disable(b, 0)     # hierarchical with children
    with raises(errno.EINVAL):
        e.set_oom_kill_disable(c, 0)     # parent hierarchical


def test_move_charge_validation_not_inherited(e):
    """3.3.8 mem_cgroup_move_charge_write: move_charge_at_immigrate >= 4 is EINVAL; 3.3 sets it to
    0 at creation."""
    a = e.mkdir(e.root, "a")
    with raises(errno.EINVAL):
        e.set_move_charge(a, 4)
    e.set_move_charge(a, 3)
    assert a.move_charge_at_immigrate == 3
    assert e.mkdir(a, "b").move_charge_at_immigrate == 0


def test_independent_flag_not_inherited_and_unchecked(e):
    """01/10 memcg_kmem_init, mem_cgroup_independent_kmem_limit_write: every memcg starts with
    independent=0; the flag can change at any time (with children, in root, under a hierarchical
    parent); writes store !!val."""
    e.set_use_hierarchy(e.root, 1)
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 5)
    assert a.independent_kmem_limit is True
    b = e.mkdir(a, "b")
    assert b.independent_kmem_limit is False
    e.set_independent(b, 1)
    e.set_independent(e.root, 1)
    e.set_independent(a, 0)
    assert not a.independent_kmem_limit


def test_mkdir_rmdir_errors(e):
    """3.3.8 cgroup_rmdir: rmdir is EBUSY with tasks or children; the root cannot go; names are
    unique."""
    a = e.mkdir(e.root, "a")
    with raises(errno.EEXIST):
        e.mkdir(e.root, "a")
    b = e.mkdir(a, "b")
    with raises(errno.EBUSY):
        e.rmdir(a)
    t = e.attach(b, 4242)
    with raises(errno.EBUSY):
        e.rmdir(b)
    e.attach(e.root, t.pid)
    e.rmdir(b)
    e.rmdir(a)
    with raises(errno.EBUSY):
        e.rmdir(e.root)


def test_memory_limit_rules(e):
    """3.3.8 mem_cgroup_write, mem_cgroup_resize_limit, mem_cgroup_resize_memsw_limit: root
    EINVAL; limit above memsw limit EINVAL; memsw below limit EINVAL; shrinking reclaims page
    cache, EBUSY when usage cannot fall."""
    a = e.mkdir(e.root, "a")
    with raises(errno.EINVAL):
        e.set_limit(e.root, PAGE)
    e.set_limit(a, 10 * PAGE)
    with raises(errno.EINVAL):
        e.set_memsw_limit(a, 9 * PAGE)
    e.set_memsw_limit(a, 10 * PAGE)
    with raises(errno.EINVAL):
        e.set_limit(a, 11 * PAGE)
    e.charge_user(a, "file", 6 * PAGE)
    e.charge_user(a, "anon", 2 * PAGE)
    e.set_limit(a, 4 * PAGE)             # reclaims page cache down to 2 pages
    assert a.res.limit == 4 * PAGE and a.cache_bytes <= 2 * PAGE
    assert a.res.usage <= 4 * PAGE
    with raises(errno.EBUSY):
        e.set_limit(a, PAGE)             # anon cannot be reclaimed (no swap)


# ============================================================== slab charging (05/10)

def test_charge_only_on_slab_grow(e):
    """05/10 kmem_getpages: a charge happens only when a slab grows, for pagesperslab x PAGE_SIZE."""
    a = e.mkdir(e.root, "a")
    dentry = e.cache("dentry")
    e.alloc(dentry, 1, a)
    assert (a.kmem.usage, a.res.usage) == (PAGE, PAGE)
    e.alloc(dentry, 19, a)               # fills the first 20-object slab
    assert a.kmem.usage == PAGE
    e.alloc(dentry, 1, a)
    assert a.kmem.usage == 2 * PAGE
    r = e.alloc(e.cache("task_struct"), 1, a)
    assert r.cache.name == "task_struct(a)"
    assert a.kmem.usage == 2 * PAGE + slab_bytes("task_struct") == 4 * PAGE
    e.alloc(e.cache("task_struct"), 4, a)
    assert a.kmem.usage == 4 * PAGE
    assert a.kmem.max_usage == 4 * PAGE


def test_bulk_alloc_counts_are_per_slab():
    """05/10 kmem_getpages / slab.py: N objects in one call cost O(slabs); counts are exact."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    n = 1_000_000
    t0 = time.perf_counter()
    r = e.alloc(e.cache("dentry"), n, a)
    elapsed = time.perf_counter() - t0
    c = r.cache
    assert r.ok and r.done == n
    assert c.nr_slabs == n // 20 and c.active_objs == n and c.free_objects == 0
    assert a.kmem.usage == n // 20 * PAGE == a.res.usage
    assert len(a.pool.runs[c]) == n // 20          # one run per slab, not per object
    assert elapsed < 5
    assert e.free_named("dentry", n - 7, a) == n - 7
    assert c.active_objs == 7
    assert check(e) == []


def test_free_limit_keeps_empty_slabs_then_destroys():
    """3.3.8 mm/slab.c free_block: an emptied slab is kept while free_objects <=
    free_limit = (1+nr_cpus)*batchcount+num; beyond it the slab is destroyed and uncharged."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    assert free_limit("dentry") == 140
    r = e.alloc(e.cache("dentry"), 200, a)      # 10 slabs
    c = r.cache
    assert c.free_limit == 140 and a.kmem.usage == 10 * PAGE
    e.free_named("dentry", 200, a)
    # 7 empty slabs (140 free objects) stay; the 8th, 9th, 10th go.
    assert (c.nr_slabs, len(c.free), c.active_objs) == (7, 7, 0)
    assert a.kmem.usage == 7 * PAGE == a.res.usage
    e2 = make_engine(nr_cpus=2)                 # free_limit = 3*60+20 = 200: all kept
    b = e2.mkdir(e2.root, "b")
    r = e2.alloc(e2.cache("dentry"), 200, b)
    e2.free_named("dentry", 200, b)
    assert r.cache.free_limit == 200 and r.cache.nr_slabs == 10 and b.kmem.usage == 10 * PAGE
    assert check(e) == [] and check(e2) == []


def test_reap_destroys_all_empty_slabs(e):
    """3.3.8 mm/slab.c (cache_reap / drain_freelist), 05/10 kmem_freepages: reaping frees every
    empty slab and uncharges."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 45, a)           # 3 slabs
    e.free_named("dentry", 45, a)
    assert a.kmem.usage == 3 * PAGE
    assert e.reap() == 3
    assert a.kmem.usage == 0 and a.res.usage == 0
    assert copy_of(e, a, "dentry").nr_slabs == 0
    assert copy_of(e, a, "dentry") in e.caches  # a live copy with no slabs stays (05/10)


def test_partial_slabs_are_used_before_growing(e):
    """3.3.8 cache_alloc_refill, cache_grow: objects come from partial slabs first, then free
    slabs, then a grow."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 40, a)          # 2 full slabs
    e.free_named("dentry", 25, a)              # newest first: slab 2 empty, slab 1 has 15
    c = copy_of(e, a, "dentry")
    assert (c.nr_slabs, len(c.free), c.active_objs) == (2, 1, 15)
    e.alloc(e.cache("dentry"), 25, a)          # 5 into slab 1, 20 into the free slab
    assert c.nr_slabs == 2 and c.active_objs == 40 and a.kmem.usage == 2 * PAGE


# ============================================================== cache selection (05/10)

def test_copy_created_synchronously_for_gfp_kernel(e):
    """05/10 mem_cgroup_get_kmem_cache, memcg_create_kmem_cache: GFP_KERNEL creates
    `orig(basename)` at once and is accounted; the copy is id -1, in orig's children, at the head
    of the global list."""
    a = e.mkdir(e.root, "a")
    seq = e.event_seq
    r = e.alloc(e.cache("dentry"), 1, a, GFP_KERNEL)
    c = r.cache
    assert c.name == "dentry(a)" and c.is_copy and c.id == -1 and c.memcg is a
    assert c.orig is e.cache("dentry") and c in e.cache("dentry").children
    assert a.slabs == {e.cache("dentry").id: c}
    assert next(iter(e.caches_newest_first())) is c
    assert a.kmem.usage == PAGE
    assert events(e, "cache_create", seq) == [("cache_create", {"cache": "dentry(a)",
                                                                 "cgroup": "/a"})]
    assert (c.objsize, c.num, c.pages, c.limit, c.batchcount, c.shared) == (192, 20, 1, 120, 60, 8)
    r = e.alloc(e.cache("size-64(DMA)"), 1, a)
    assert r.cache.name == "size-64(DMA)(a)"
    r = e.alloc(e.cache("dentry"), 1, a, GFP_KERNEL | Gfp.NORETRY)
    assert r.cache is c


@pytest.mark.parametrize("gfp", [GFP_NOFS, GFP_NOIO, GFP_ATOMIC, GFP_NOWAIT],
                         ids=["NOFS", "NOIO", "ATOMIC", "NOWAIT"])
def test_copy_creation_queued_for_non_kernel_gfp(e, gfp):
    """05/10 mem_cgroup_get_kmem_cache, memcg_create_cache_enqueue: without all GFP_KERNEL bits
    the creation is queued (duplicates dropped) and this allocation is served unaccounted from the
    global cache until run_workqueue()."""
    a = e.mkdir(e.root, "a")
    dentry = e.cache("dentry")
    r = e.alloc(dentry, 1, a, gfp)
    assert r.ok and r.cache is dentry and a.kmem.usage == 0 and a.res.usage == 0
    assert dentry.nr_slabs == 1 and not a.slabs
    e.alloc(dentry, 1, a, gfp)
    assert list(e.create_queue) == [(a, dentry)]
    made = e.run_workqueue()
    assert [c.name for c in made] == ["dentry(a)"] and not e.create_queue
    r = e.alloc(dentry, 1, a, gfp)
    assert r.cache.name == "dentry(a)" and a.kmem.usage == PAGE
    assert e.run_workqueue() == []


def test_queue_flushed_on_any_rmdir(e):
    """05/10 memcg_slab_move flushes the whole creation queue (all memcgs)."""
    a = e.mkdir(e.root, "a")
    b = e.mkdir(e.root, "b")
    e.alloc(e.cache("dentry"), 1, a, GFP_NOFS)
    e.alloc(e.cache("pid"), 1, b, GFP_ATOMIC)
    assert len(e.create_queue) == 2
    e.rmdir(b)
    assert not e.create_queue and e.run_workqueue() == []
    e.alloc(e.cache("dentry"), 1, a, GFP_NOFS)      # re-queued on the next allocation
    assert [c.name for c in e.run_workqueue()] == ["dentry(a)"]


@pytest.mark.parametrize("case", ["noaccount", "nofail", "irq", "root", "noaccount_existing"])
def test_global_cache_cases(e, case):
    """05/10 mem_cgroup_get_kmem_cache, 04/10: __GFP_NOACCOUNT, __GFP_NOFAIL, interrupt context
    and the root memcg use the original cache: no copy, nothing queued, nothing charged (even if a
    copy exists)."""
    a = e.mkdir(e.root, "a")
    dentry = e.cache("dentry")
    gfp, irq, memcg = GFP_KERNEL, False, a
    if case.startswith("noaccount"):
        gfp = GFP_KERNEL | Gfp.NOACCOUNT
    elif case == "nofail":
        gfp = GFP_KERNEL | Gfp.NOFAIL
    elif case == "irq":
        gfp = GFP_ATOMIC
        irq = True
    else:
        memcg = e.root
    if case == "noaccount_existing":
        e.alloc(dentry, 20, a)                       # the copy exists, one full slab
    before = a.kmem.usage
    r = e.alloc(dentry, 1, memcg, gfp, irq=irq)
    assert r.ok and r.cache is dentry
    assert a.kmem.usage == before and e.root.kmem.usage == 0
    assert not e.create_queue
    if case != "noaccount_existing":
        assert not a.slabs


def test_same_basename_gives_identical_copy_names(e):
    """05/10 memcg_create_kmem_cache ("%s(%s)"), __kmem_cache_create: the name uses the cgroup
    basename only, so duplicates are possible."""
    x = e.mkdir(e.root, "x")
    y = e.mkdir(e.root, "y")
    fx, fy = e.mkdir(x, "foo"), e.mkdir(y, "foo")
    c1 = e.alloc(e.cache("dentry"), 1, fx).cache
    c2 = e.alloc(e.cache("dentry"), 1, fy).cache
    assert c1 is not c2 and c1.name == c2.name == "dentry(foo)"
    assert render.slabinfo(e).count("\ndentry(foo) ") == 2


def test_kmalloc_picks_smallest_size_n(e):
    """3.3.8 __find_general_cachep, 05/10 __do_kmalloc: kmalloc(size) uses the smallest non-DMA
    size-N cache that fits."""
    pick = lambda n: e.kmalloc_cache(n).name
    assert [pick(n) for n in (1, 32, 33, 64, 65, 128, 129, 192, 193, 4096)] == [
        "size-32", "size-32", "size-64", "size-64", "size-128", "size-128", "size-192",
        "size-192", "size-256", "size-4096"]
    with raises(errno.ENOMEM):
        e.kmalloc_cache(4097)


def test_kmalloc_0_is_zero_size_ptr(e):
    """3.3.8 mm/slab.c __find_general_cachep: `if (!size) return ZERO_SIZE_PTR;`, and
    __do_kmalloc returns it before 05/10's mem_cgroup_get_kmem_cache ("[PATCH 05/10] memcg:
    Slab accounting.", 27 Feb 2012): no cache, no object, no copy, no charge."""
    assert e.kmalloc_cache(0) is None


def test_parse_gfp():
    """3.3.8 include/linux/gfp.h, 04/10: gfp names; one base mask plus modifiers; NOACCOUNT is
    0x2000."""
    assert parse_gfp("GFP_KERNEL|__GFP_NOACCOUNT") == GFP_KERNEL | Gfp.NOACCOUNT
    assert int(Gfp.NOACCOUNT) == 0x2000
    assert parse_gfp("__GFP_NORETRY") == GFP_KERNEL | Gfp.NORETRY
    with raises(errno.EINVAL):
        parse_gfp("GFP_KERNEL|GFP_NOFS")
    with raises(errno.EINVAL):
        parse_gfp("GFP_BOGUS")


# ============================================================== counters by mode (01/10)

def test_dependent_charges_res_memsw_and_kmem(e):
    """01/10 memcg_charge_kmem: independent=0 charges kmem, res and memsw (swap accounting on)."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("task_struct"), 1, a)
    assert (a.kmem.usage, a.res.usage, a.memsw.usage) == (2 * PAGE,) * 3


def test_independent_charges_only_kmem(e):
    """01/10 memcg_charge_kmem: independent=1 charges only the kmem counter."""
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.alloc(e.cache("task_struct"), 1, a)
    assert (a.kmem.usage, a.res.usage, a.memsw.usage) == (2 * PAGE, 0, 0)


def test_no_memsw_without_swap_accounting():
    """3.3.8 enable_swap_account (swapaccount=0): without swap accounting memsw is never charged."""
    e = make_engine(swap_account=False)
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    assert (a.kmem.usage, a.res.usage, a.memsw.usage) == (PAGE, PAGE, 0)
    assert check(e) == []


def test_memsw_charged_but_never_uncharged_for_kmem(e):
    """01/10 memcg_uncharge_kmem: kmem uncharge returns res and kmem but not memsw."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    e.free_named("dentry", 1, a)
    e.reap()
    assert (a.kmem.usage, a.res.usage, a.memsw.usage) == (0, 0, PAGE)
    assert a.kmem_in_memsw == PAGE


def test_root_usage_is_recursive_cache_plus_rss(e):
    """3.3.8 mem_cgroup_usage: root's usage_in_bytes is cache+rss over the whole tree, never kmem."""
    a = e.mkdir(e.root, "a")
    b = e.mkdir(a, "b")
    e.charge_user(e.root, "file", 3 * PAGE)
    e.charge_user(a, "anon", 2 * PAGE)
    e.charge_user(b, "file", PAGE)
    e.alloc(e.cache("dentry"), 1, a)
    e.alloc(e.cache("dentry"), 1, e.root)
    assert render.usage(e, e.root) == 6 * PAGE
    assert render.usage(e, a) == 3 * PAGE             # a's res: anon + kmem
    assert e.root.kmem.usage == 0


# ============================================================== kmem limit writes (01/10)

def test_kmem_limit_writable_only_when_independent(e):
    """01/10 + 3.3.8 mem_cgroup_write: root EINVAL; dependent EINVAL; independent sets it; EBUSY
    below usage."""
    a = e.mkdir(e.root, "a")
    assert a.kmem.limit == RESOURCE_MAX
    with raises(errno.EINVAL):
        e.set_kmem_limit(a, 10 * PAGE)
    e.set_independent(e.root, 1)
    with raises(errno.EINVAL):
        e.set_kmem_limit(e.root, 10 * PAGE)
    e.set_independent(a, 1)
    e.set_kmem_limit(a, 10 * PAGE)
    assert a.kmem.limit == 10 * PAGE
    e.alloc(e.cache("dentry"), 60, a)                 # 3 pages
    with raises(errno.EBUSY):
        e.set_kmem_limit(a, 2 * PAGE)
    e.set_kmem_limit(a, 3 * PAGE)
    assert a.kmem.limit == 3 * PAGE
    e.set_independent(a, 0)                           # v1: the old limit stays
    assert a.kmem.limit == 3 * PAGE


def test_independent_limit_fails_without_reclaim_or_oom(e):
    """01/10 memcg_charge_kmem, independent: over the kmem limit -> ENOMEM, kmem failcnt++, no
    reclaim, no OOM, for every gfp."""
    a = e.mkdir(e.root, "a")
    t = e.spawn(a)[0]
    e.set_independent(a, 1)
    e.charge_user(a, "file", 5 * PAGE)
    e.set_kmem_limit(a, a.kmem.usage + PAGE)
    base = a.kmem.usage
    for gfp in (GFP_KERNEL, GFP_NOFS, GFP_ATOMIC):
        r = e.alloc(e.cache("task_struct"), 5 + 1, a, gfp)  # copy exists: 1 more needs 2 pages
        assert r.status == "nomem" and r.done == 4           # the slab had 4 free objects
        e.free_named("task_struct", 4, a)
    assert a.kmem.failcnt == 3 and a.res.failcnt == 0
    assert a.kmem.usage == base and a.cache_bytes == 5 * PAGE
    assert t.pid in e.tasks and not events(e, "oom_kill") and not events(e, "reclaim")


def test_dependent_kmem_charge_fails_on_left_over_limit(e):
    """01/10 memcg_charge_kmem: dependent with a left-over kmem limit: the kmem charge fails
    after res was charged, and res is not undone."""
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.set_kmem_limit(a, PAGE)
    e.set_independent(a, 0)
    r = e.alloc(e.cache("task_struct"), 1, a)
    assert r.status == "nomem"
    assert (a.kmem.usage, a.res.usage, a.kmem.failcnt) == (0, 2 * PAGE, 1)
    assert "kmem_fail_after_res" in a.quirks


# ============================================================== dependent mode at the limit (3.3.8, 03/10)

def _dependent_at_limit(e, cache_pages=0, tasks=()):
    """`a` with a dentry copy holding one full slab and res exactly at its limit."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 20, a)               # 1 page, the slab is full
    ts = []
    for rss in tasks:
        t = e.attach(a, 1000 + len(ts))
        e.charge_user(a, "anon", rss * PAGE, task=t)
        ts.append(t)
    if cache_pages:
        e.charge_user(a, "file", cache_pages * PAGE)
    e.set_limit(a, a.res.usage)
    return a, ts


def test_dependent_limit_reclaims_page_cache(e):
    """3.3.8 mem_cgroup_do_charge, try_to_free_mem_cgroup_pages: GFP_KERNEL at the limit reclaims
    page cache (SWAP_CLUSTER_MAX at least), then the charge succeeds."""
    a, _ = _dependent_at_limit(e, cache_pages=40)
    limit = a.res.limit
    r = e.alloc(e.cache("dentry"), 1, a)
    assert r.ok and a.kmem.usage == 2 * PAGE
    assert a.cache_bytes == 40 * PAGE - 32 * PAGE      # one reclaim pass of 32 pages
    assert a.res.usage == limit - 31 * PAGE
    assert a.res.failcnt == 1


def test_dependent_limit_oom_kills_task_with_most_rss(e):
    """3.3.8 mem_cgroup_handle_oom, oom_badness: no cache left: after the retries the OOM killer
    kills the bulkiest task; the charge then succeeds."""
    a, (t0, t1, t2) = _dependent_at_limit(e, tasks=(2, 5, 3))
    seq = e.event_seq
    r = e.alloc(e.cache("dentry"), 1, a, task=t0)
    assert r.ok and a.kmem.usage == 2 * PAGE
    kills = events(e, "oom_kill", seq)
    assert len(kills) == 1 and kills[0][1]["pid"] == t1.pid and kills[0][1]["rss"] == 5 * PAGE
    assert t1.pid not in e.tasks and t0.pid in e.tasks and t2.pid in e.tasks
    assert a.rss_bytes == 5 * PAGE
    assert a.kmem_bypassed == 0


@pytest.mark.parametrize("gfp", [GFP_NOFS, GFP_NOIO], ids=["NOFS", "NOIO"])
def test_nofs_noio_reclaim_then_enomem_without_oom(e, gfp):
    """01/10 memcg_charge_kmem (may_oom): NOFS/NOIO (may_oom false) reclaim but end in ENOMEM,
    never OOM."""
    a, ts = _dependent_at_limit(e, cache_pages=3, tasks=(4,))
    r = e.alloc(e.cache("dentry"), 60, a, gfp)          # 3 new slabs: reclaim makes room
    assert r.ok and r.done == 60 and a.cache_bytes == 0
    assert a.kmem.usage == 4 * PAGE and a.res.failcnt == 1
    r = e.alloc(e.cache("dentry"), 1, a, gfp)           # nothing left to reclaim
    assert r.status == "nomem" and r.done == 0 and a.res.failcnt == 2
    assert not events(e, "oom_kill") and ts[0].pid in e.tasks and a.kmem_bypassed == 0


@pytest.mark.parametrize("gfp", [GFP_ATOMIC, GFP_NOWAIT, GFP_KERNEL | Gfp.NORETRY],
                         ids=["ATOMIC", "NOWAIT", "NORETRY"])
def test_no_wait_or_noretry_fails_at_once(e, gfp):
    """3.3.8 mem_cgroup_do_charge with 03/10: without __GFP_WAIT (WOULDBLOCK) or with
    __GFP_NORETRY the charge fails at once: no reclaim, no OOM."""
    a, ts = _dependent_at_limit(e, cache_pages=5, tasks=(2,))
    r = e.alloc(e.cache("dentry"), 1, a, gfp)
    assert r.status == "nomem"
    assert a.cache_bytes == 5 * PAGE and not events(e, "reclaim") and ts[0].pid in e.tasks
    assert a.res.failcnt == 1


def test_oom_kill_disable_waits(e):
    """3.3.8 mem_cgroup_handle_oom: with oom_kill_disable=1 the charge waits: status "wait",
    under_oom set; raising the limit bumps oom_wake_seq; end_oom_wait clears under_oom."""
    a, (t,) = _dependent_at_limit(e, tasks=(3,))
    e.set_oom_kill_disable(a, 1)
    r = e.alloc(e.cache("dentry"), 1, a, task=t)
    assert r.status == "wait" and r.wait_on is a and r.done == 0
    assert a.under_oom == 1 and render.oom_control(a) == "oom_kill_disable 1\nunder_oom 1\n"
    assert t.pid in e.tasks and a.kmem.usage == PAGE
    seq = e.oom_wake_seq
    e.set_limit(a, a.res.limit + PAGE)
    assert e.oom_wake_seq == seq + 1
    e.end_oom_wait(a)
    assert a.under_oom == 0 and render.oom_control(a).endswith("under_oom 0\n")
    assert e.alloc(e.cache("dentry"), 1, a, task=t).ok


def test_oom_wake_on_disable_and_uncharge(e):
    """3.3.8 mem_cgroup_oom_control_write, memcg_oom_recover: writing oom_kill_disable 0 wakes
    waiters; so does usage falling."""
    a, (t,) = _dependent_at_limit(e, tasks=(3,))
    e.set_oom_kill_disable(a, 1)
    assert e.alloc(e.cache("dentry"), 1, a).status == "wait"
    seq = e.oom_wake_seq
    e.uncharge_user(a, "anon", PAGE, task=t)
    assert e.oom_wake_seq == seq + 1
    e.set_oom_kill_disable(a, 0)
    assert e.oom_wake_seq == seq + 2
    e.end_oom_wait(a)
    e.end_oom_wait(a)                      # extra calls clamp at 0
    assert a.under_oom == 0 and e.nr_under_oom == 0


def test_under_oom_marks_hierarchical_subtree(e):
    """3.3.8 mem_cgroup_oom_lock, mem_cgroup_mark_under_oom: the OOM lock marks the over-limit
    memcg's hierarchical subtree; the waiter waits on the ancestor that is over its limit."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    e.set_oom_kill_disable(p, 1)
    c = e.mkdir(p, "c")
    assert c.oom_kill_disable and c.use_hierarchy
    e.alloc(e.cache("dentry"), 20, c)
    e.set_limit(p, PAGE)
    r = e.alloc(e.cache("dentry"), 1, c)
    assert r.status == "wait" and r.wait_on is p
    assert (p.under_oom, c.under_oom, e.root.under_oom) == (1, 1, 0)
    e.end_oom_wait(p)
    assert (p.under_oom, c.under_oom) == (0, 0)


# ============================================================== bypass (3.3.8, 07/10; issue 10 items 2-3)

def test_bypass_is_a_failure_on_3_3(e):
    """3.3.8 mm/memcontrol.c __mem_cgroup_try_charge: an OOM kill of the charger leaves
    through `bypass:` with -EINTR ("[PATCH v3] memcg: return -EINTR at bypassing
    try_charge()", Kamezawa, 21 Dec 2011, merged for 3.3); 01/10's memcg_charge_kmem returns
    -ENOMEM for any non-zero return (diff in "[PATCH 07/10] memcg: Stop res_counter
    underflows.", 27 Feb 2012), so the slab does not grow and 07/10's ledger never books:
    kernel_bypassed_memory reads 0. 07/10's comment (a bypass succeeds with no memcg) is not
    what this base does."""
    a, (t,) = _dependent_at_limit(e, tasks=(8,))
    usage, kmem = a.res.usage, a.kmem.usage
    seq = e.event_seq
    r = e.alloc(e.cache("dentry"), 1, a, task=t)
    assert r.status == "killed" and r.done == 0
    assert t.pid not in e.tasks
    assert a.kmem_bypassed == 0 and a.kmem.usage == kmem
    assert a.res.usage == usage - 8 * PAGE           # only the victim's rss went
    kinds = [k for k, _ in events(e, since=seq)]
    assert kinds.index("oom_kill") < kinds.index("bypass")
    assert events(e, "bypass", seq) == [("bypass", {"cgroup": "/a", "bytes": PAGE})]
    assert "kernel_bypassed_memory 0\n" in render.memory_stat(e, a)


def test_bypass_with_acct_root_charges_nothing():
    """3.3.8 __mem_cgroup_try_charge `bypass:` (-EINTR) + 01/10 + 08/10: the failed charge
    books nothing anywhere, root's kmem included (08/10 only pays for charges that
    succeed with no memcg)."""
    e = make_engine(acct_root=True)
    a, (t,) = _dependent_at_limit(e, tasks=(8,))
    before = e.root.kmem.usage
    assert e.alloc(e.cache("dentry"), 1, a, task=t).status == "killed"
    assert e.root.kmem.usage == before and a.kmem_bypassed == 0
    assert check(e) == []


def test_dying_task_bypasses_at_the_top_of_try_charge(e):
    """3.3.8 mm/memcontrol.c __mem_cgroup_try_charge: `if (unlikely(test_thread_flag(TIF_MEMDIE)
    || fatal_signal_pending(current))) goto bypass;` comes first, before the root check:
    the OOM victim's later charges neither charge nor reclaim nor start a second OOM round
    (no `victim=none`)."""
    a, (t,) = _dependent_at_limit(e, tasks=(8,))
    seq = e.event_seq
    r = e.alloc(e.cache("dentry"), 41, a, task=t)          # would need 3 grows
    assert r.status == "killed" and r.done == 0
    assert len(events(e, "oom_kill", seq)) == 1
    assert t.memdie
    failcnt = a.res.failcnt
    seq = e.event_seq
    assert e.try_charge(a, GFP_KERNEL, 1, True, t) == OOM_DIE
    assert e.try_charge(e.root, GFP_KERNEL, 1, True, t) == OOM_DIE
    assert a.res.failcnt == failcnt
    assert e.charge_user(a, "anon", PAGE, task=t).status == "killed"
    assert a.rss_bytes == 0 and a.res.failcnt == failcnt
    assert [k for k, _ in events(e, since=seq)] == ["bypass"] * 3


# ============================================================== rmdir and dead caches (02/10, 05/10)

def test_rmdir_makes_dead_caches_and_forgets_kmem(e):
    """02/10 memcg_kmem_move, 05/10 memcg_slab_move: rmdir renames copies `orig(name)dead`, sets
    memcg None, forgets the kmem usage; frees still work; the dead copy is destroyed once it holds
    no slab pages."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 30, a)           # 2 slabs
    e.alloc(e.cache("pid"), 1, a)
    c = copy_of(e, a, "dentry")
    pool = a.pool
    e.rmdir(a)
    assert a.removed and "a" not in e.root.children
    assert c.name == "dentry(a)dead" and c.dead and c.memcg is None and c in e.caches
    assert "dentry(a)dead" in render.slabinfo(e)
    assert "dentry(a)dead" in render.memcg_slabinfo(e, e.root)
    assert e.alloc(e.cache("dentry"), 1, a).cache is e.cache("dentry")  # no way back in
    assert e.free(c, pool, 30) == 30            # frees still work; nothing is charged
    assert c.nr_slabs == 2 and c in e.caches    # empty slabs wait below free_limit
    seq = e.event_seq
    e.reap()
    assert c.destroyed and c not in e.caches and c not in e.cache("dentry").children
    assert ("cache_destroy", {"cache": "dentry(a)dead"}) in events(e, since=seq)
    assert e.root.kmem.usage == 0


def test_rmdir_destroys_empty_copies_at_once(e):
    """05/10 memcg_slab_move, kmem_cache_drop_ref: a copy holding no slab pages is destroyed when
    its cgroup goes."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    e.free_named("dentry", 1, a)
    e.reap()
    c = copy_of(e, a, "dentry")
    assert c in e.caches
    e.rmdir(a)
    assert c.destroyed and c not in e.caches


def test_rmdir_uncharges_res_and_moves_user_pages(e):
    """02/10 memcg_kmem_move, 3.3.8 mem_cgroup_force_empty: rmdir forgets kmem, uncharges it from
    res, and moves LRU pages to the parent."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.alloc(e.cache("task_struct"), 1, c)
    e.charge_user(c, "file", 3 * PAGE)
    assert (p.res.usage, p.kmem.usage) == (5 * PAGE, 2 * PAGE)
    e.rmdir(c)
    assert p.cache_bytes == 3 * PAGE and p.res.usage == 3 * PAGE


def test_rmdir_hierarchical_parent_keeps_kmem_bytes(e):
    """02/10 memcg_kmem_move (res_counter_uncharge_locked on its own counter): the deleted child's
    kmem stays in its non-root hierarchical parent's kmem counter for good; the dead cache's later
    frees uncharge nothing."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.alloc(e.cache("dentry"), 1, c)
    assert (c.kmem.usage, p.kmem.usage, p.res.usage) == (PAGE, PAGE, PAGE)
    dead = copy_of(e, c, "dentry")
    e.rmdir(c)
    assert (p.kmem.usage, p.res.usage, p.kmem_leaked) == (PAGE, 0, PAGE)
    e.free_named("dentry(c)dead", 1, p)
    e.reap()
    assert dead.destroyed and p.kmem.usage == PAGE


def test_rmdir_with_acct_root_moves_kmem_to_root():
    """08/10 memcg_kmem_move: with ACCT_ROOT the remaining kmem is charged to root's kmem and
    res; dead caches point at root and their frees uncharge root's kmem and res."""
    e = make_engine(acct_root=True)
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 25, a)           # 2 pages
    c = copy_of(e, a, "dentry")
    e.rmdir(a)
    assert c.memcg is e.root and c.name == "dentry(a)dead"
    assert (e.root.kmem.usage, e.root.res.usage) == (2 * PAGE, 2 * PAGE)
    # 09/10's root file lists memcg == NULL caches only ("[PATCH v2 12/13] memcg: Per-memcg
    # memory.kmem.slabinfo file.", 9 Mar 2012: root -> NULL): a dead copy pointing at root is
    # in no memory.kmem.slabinfo; /proc/slabinfo still has it
    assert "dentry(a)dead" not in render.memcg_slabinfo(e, e.root)
    assert "dentry(a)dead" in render.slabinfo(e)
    e.free(c, a.pool, 25)
    e.reap()
    assert (e.root.kmem.usage, e.root.res.usage) == (0, 0)
    assert render.usage(e, e.root) == 0        # stat-based (3.3.8 mem_cgroup_usage)
    assert not e.root.quirks                   # root's ACCT_ROOT equation is still checked
    assert check(e) == []


def test_acct_root_boot_slab_and_global_caches():
    """08/10 memcg_kmem_init (pre_memcg_kmem_bytes): boot-time slab is copied into root's kmem
    usage (max_usage untouched); every slab page not charged to a non-root memcg is charged to
    root's kmem."""
    e = make_engine(acct_root=True, boot_slabs=True)
    assert e.root.kmem.usage == BOOT_BYTES and e.root.kmem.max_usage == 0
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, e.root)
    e.alloc(e.cache("pid"), 1, a, GFP_KERNEL | Gfp.NOACCOUNT)
    e.alloc(e.cache("size-64"), 1, a, GFP_NOFS)        # queued: global cache meanwhile
    e.alloc(e.cache("inode_cache"), 1, a)              # accounted to a only
    assert e.root.kmem.usage == BOOT_BYTES + 3 * PAGE
    assert a.kmem.usage == PAGE and e.root.res.usage == 0
    assert check(e) == []
    e2 = make_engine(boot_slabs=True)
    e2.alloc(e2.cache("dentry"), 1, e2.root)
    assert e2.root.kmem.usage == 0 and check(e2) == []


# ============================================================== force_empty (02/10, 3.3.8)

def test_force_empty_errors(e):
    """3.3.8 mem_cgroup_force_empty: EBUSY with tasks or children (and on root)."""
    a = e.mkdir(e.root, "a")
    b = e.mkdir(a, "b")
    with raises(errno.EBUSY):
        e.force_empty(a)
    e.attach(b, 77)
    with raises(errno.EBUSY):
        e.force_empty(b)
    with raises(errno.EBUSY):
        e.force_empty(e.root)


def test_force_empty_keeps_kmem_and_live_copies(e):
    """02/10 mem_cgroup_force_empty: force_empty reclaims and moves user pages but does not move
    kmem; it finishes once res - kmem == 0; the copies stay live."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 21, a)          # 2 pages of kmem
    e.charge_user(a, "file", 4 * PAGE)
    e.charge_user(a, "anon", 3 * PAGE)
    e.force_empty(a)
    c = copy_of(e, a, "dentry")
    assert (a.cache_bytes, a.rss_bytes) == (0, 0)
    assert e.root.rss_bytes == 3 * PAGE        # anon moved to the parent
    assert a.res.usage == a.kmem.usage == 2 * PAGE
    assert not c.dead and c.name == "dentry(a)"


def test_force_empty_independent(e):
    """02/10 mem_cgroup_force_empty: with independent=1 kmem is not in res; res ends at 0."""
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.alloc(e.cache("dentry"), 1, a)
    e.charge_user(a, "file", PAGE)
    e.force_empty(a)
    assert (a.res.usage, a.kmem.usage) == (0, PAGE)


def test_force_empty_spins_after_hierarchical_leak(e):
    """02/10 mem_cgroup_force_empty (unsigned long usage), docs/semantics.md section 9 (Decision):
    after the hierarchical leak kmem > res, res - kmem wraps and the loop only ends on a signal:
    EINTR."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.alloc(e.cache("dentry"), 1, c)
    e.rmdir(c)
    with raises(errno.EINTR):
        e.force_empty(p)


# ============================================================== memory.stat (3.3.8, 07/10)

LOCAL = ["cache", "rss", "mapped_file", "pgpgin", "pgpgout", "swap", "pgfault", "pgmajfault",
         "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
         "kernel_bypassed_memory"]


def test_memory_stat_key_order(e):
    """3.3.8 memcg_stat_strings[], 07/10: local keys (kernel_bypassed_memory after unevictable),
    hierarchical limits, then total_ keys with total_kernel_bypassed_memory last."""
    a = e.mkdir(e.root, "a")
    keys = [line.split()[0] for line in render.memory_stat(e, a).splitlines()]
    assert keys == LOCAL + ["hierarchical_memory_limit", "hierarchical_memsw_limit"] + [
        "total_" + k for k in LOCAL]
    assert keys[-1] == "total_kernel_bypassed_memory"


def test_memory_stat_without_swap_accounting():
    """3.3.8 mem_control_stat_show: no swap, hierarchical_memsw_limit or total_swap without swap
    accounting."""
    e = make_engine(swap_account=False)
    a = e.mkdir(e.root, "a")
    keys = [line.split()[0] for line in render.memory_stat(e, a).splitlines()]
    local = [k for k in LOCAL if k != "swap"]
    assert keys == local + ["hierarchical_memory_limit"] + ["total_" + k for k in local]


def test_memory_stat_values_and_totals(e):
    """3.3.8 mem_control_stat_show: values in bytes, pgpgin/out as counts; totals sum the subtree
    when use_hierarchy=1, otherwise only this cgroup."""
    p = e.mkdir(e.root, "p")
    c = e.mkdir(p, "c")
    e.charge_user(p, "file", 2 * PAGE)
    e.charge_user(c, "anon", 3 * PAGE)
    stat = dict(line.split() for line in render.memory_stat(e, p).splitlines())
    assert stat["cache"] == str(2 * PAGE) and stat["inactive_file"] == str(2 * PAGE)
    assert stat["pgpgin"] == "2" and stat["total_rss"] == "0"
    e.rmdir(c)
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.charge_user(c, "anon", 3 * PAGE)
    stat = dict(line.split() for line in render.memory_stat(e, p).splitlines())
    assert stat["rss"] == str(3 * PAGE)                 # c's anon was moved up at rmdir
    assert stat["total_rss"] == str(6 * PAGE) and stat["total_active_anon"] == str(6 * PAGE)
    # event counters stay with the removed cgroup; only the pages moved
    assert stat["total_pgfault"] == "3" and stat["total_cache"] == str(2 * PAGE)


def test_total_kernel_bypassed_memory_reads_0_on_3_3(e):
    """07/10 adds kernel_bypassed_memory / total_kernel_bypassed_memory (07/10
    mem_control_stat_show); on 3.3 the ledger never books (3.3.8 __mem_cgroup_try_charge returns
    -EINTR at `bypass:`), so both read 0 even after the charger is OOM-killed in a child."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    t = e.attach(c, 500)
    e.alloc(e.cache("dentry"), 20, c)
    e.charge_user(c, "anon", 4 * PAGE, task=t)
    e.set_limit(p, p.res.usage)
    assert e.alloc(e.cache("dentry"), 1, c, task=t).status == "killed"
    assert events(e, "bypass") and c.kmem_bypassed == 0
    stat = dict(line.split() for line in render.memory_stat(e, p).splitlines())
    assert stat["kernel_bypassed_memory"] == "0"
    assert stat["total_kernel_bypassed_memory"] == "0"


def test_hierarchical_memory_limit(e):
    """3.3.8 memcg_get_hierarchical_limit: the smallest limit up the chain while each ancestor has
    use_hierarchy=1."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    e.set_limit(p, 100 * PAGE)
    c = e.mkdir(p, "c")
    e.set_limit(c, 200 * PAGE)
    g = e.mkdir(c, "g")
    stat = lambda m: dict(line.split() for line in render.memory_stat(e, m).splitlines())
    assert stat(g)["hierarchical_memory_limit"] == str(100 * PAGE)
    assert stat(c)["hierarchical_memory_limit"] == str(100 * PAGE)
    assert stat(g)["hierarchical_memsw_limit"] == str(RESOURCE_MAX)
    q = e.mkdir(e.root, "q")
    e.set_limit(q, 10 * PAGE)
    r = e.mkdir(q, "r")
    assert stat(r)["hierarchical_memory_limit"] == str(RESOURCE_MAX)
    assert stat(e.root)["hierarchical_memory_limit"] == str(RESOURCE_MAX)


# ============================================================== slabinfo (09/10, 3.3.8 s_show)

def test_memcg_slabinfo_exact_format(e):
    """09/10 (v2 12/13 mem_cgroup_slabinfo_show): header `# name            <active_objs>
    <num_objs> <objsize>` then rows "%-17s %6lu %6lu %6u", newest cache first; long names run on."""
    a = e.mkdir(e.root, "a")
    assert render.memcg_slabinfo(e, a) == "# name            <active_objs> <num_objs> <objsize>\n"
    e.alloc(e.cache("dentry"), 42, a)
    e.alloc(e.cache("size-64(DMA)"), 118, a)
    assert render.memcg_slabinfo(e, a) == (
        "# name            <active_objs> <num_objs> <objsize>\n"
        "size-64(DMA)(a)      118    118     64\n"
        "dentry(a)             42     60    192\n")
    b = e.mkdir(e.root, "a-very-long-cgroup")
    e.alloc(e.cache("task_struct"), 1, b)
    assert render.memcg_slabinfo(e, b).splitlines()[1] == (
        "task_struct(a-very-long-cgroup)      1      5   1584")


def test_root_memcg_slabinfo_lists_originals_and_dead_copies(e):
    """09/10 (v2 12/13 mem_cgroup_slabinfo_show): root's file lists every cache with no memcg:
    originals and dead copies, not live copies; newest first."""
    a = e.mkdir(e.root, "a")
    b = e.mkdir(e.root, "b")
    e.alloc(e.cache("dentry"), 3, a)
    e.alloc(e.cache("pid"), 2, b)
    e.rmdir(a)
    lines = render.memcg_slabinfo(e, e.root).splitlines()
    names = [line.split()[0] for line in lines[1:]]
    assert names[0] == "dentry(a)dead"
    assert "pid(b)" not in names
    assert names[1:] == [c.name for c in e.originals.values()][::-1]
    assert lines[1] == "dentry(a)dead          3     20    192"


def test_global_slabinfo_newest_first(e):
    """3.3.8 mm/slab.c s_show, 05/10: /proc/slabinfo 2.1, every cache including copies, newest
    first, rows "%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u : slabdata %6lu %6lu %6lu"."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("pid"), 31, a)
    e.alloc(e.cache("dentry"), 5, a)
    e.free_named("dentry", 5, a)
    text = render.slabinfo(e)
    lines = text.splitlines()
    assert text.startswith(HEADER)
    assert lines[2] == ("dentry(a)              0     20    192   20    1 : tunables  120   60"
                        "    8 : slabdata      0      1      0")
    assert lines[3] == ("pid(a)                31     60    128   30    1 : tunables  120   60"
                        "    8 : slabdata      2      2      0")
    assert [line.split()[0] for line in lines[4:]] == [
        n for n in (r.split()[0] for r in CATALOGUE.splitlines()[2:])]


def test_boot_slabs_rebuild_the_dump():
    """docs/semantics.md section 2 (Decision) / catalogue: with boot_slabs the originals start
    with the dump's counts."""
    e = make_engine(boot_slabs=True)
    kc = e.cache("kmem_cache")
    assert (kc.active_objs, kc.nr_slabs, kc.free_objects) == (30, 2, 10)
    assert kc.slabinfo_row() == row("kmem_cache", 30, 40, 192, 20, 1, 120, 60, 8, 2, 2)
    assert check(e) == []


# ============================================================== catalogue (3.3.8 s_show; semantics.md 3)

@pytest.mark.parametrize("text", [
    "",
    "slabinfo - version: 1.1\n" + row("x", 0, 0, 32, 1, 1, 1, 1, 0, 0, 0),
    HEADER,
    HEADER + "x 0 0 32 1 1 : tunables 1 1 0 : slabdata 0 0\n",
    HEADER + "x 0 0 32 1 1 ; tunables 1 1 0 : slabdata 0 0 0\n",
    HEADER + row("x", 0, 0, 32, 1, 1, 1, 1, 0, 0, 0).replace(" 32 ", " 3z "),
    HEADER + row("x", 0, 0, 0, 1, 1, 1, 1, 0, 0, 0),
    HEADER + row("x", 0, 0, 32, 1, 1, 1, 0, 0, 0, 0),
    HEADER + row("x", 0, 0, 32, 1, 1, 1, 1, 0, 0, 0) * 2,
    HEADER + row("x", 5, 4, 32, 1, 1, 1, 1, 0, 4, 4),
    HEADER + row("x", 0, 4, 32, 1, 1, 1, 1, 0, 0, 3),
    HEADER + row("x", 0, 3, 32, 1, 1, 1, 1, 0, 4, 3),
], ids=["empty", "version", "no-rows", "short-row", "no-colon", "non-numeric", "objsize-0",
        "batch-0", "duplicate", "active>num", "num!=slabs*perslab", "aslabs>nslabs"])
def test_catalogue_parse_errors(text):
    """3.3.8 s_show (slabinfo 2.1 row format) / docs/semantics.md section 3 (Decision): a
    malformed catalogue is EINVAL."""
    with raises(errno.EINVAL):
        parse_catalogue(text)


def test_catalogue_parse_ok_and_default_loads():
    """3.3.8 mm/slab.c (list order) / s_show: catalogue.parse keeps file order (newest first); the
    bundled dump loads."""
    specs = parse_catalogue(CATALOGUE)
    assert specs[0].name == "dentry" and specs[-1].name == "kmem_cache"
    d = specs[0]
    assert (d.objsize, d.objperslab, d.pagesperslab, d.limit, d.batchcount, d.shared) == (
        192, 20, 1, 120, 60, 8)
    from kmemfs.engine import Engine, Config
    eng = Engine(Config(boot_slabs=False))
    assert eng.cache("dentry").num == 20 and eng.kmalloc_cache(100).name == "size-128"
    assert eng.cache("size-64(DMA)").objsize == 64


# ============================================================== tasks and the dcache

def test_spawn_and_exit(e):
    """05/10 mem_cgroup_get_kmem_cache / FORK_RECIPE: fork allocates the recipe in the cgroup's
    copies (sync, since GFP_KERNEL); exit frees the objects, the empty slabs wait for reaping."""
    a = e.mkdir(e.root, "a")
    t, r = e.spawn(a)
    assert r is None and e.tasks[t.pid] is t and a.tasks == {t.pid: t}
    assert a.kmem.usage == FIRST_SPAWN_BYTES == a.res.usage
    # + size-64(a): signal_cache's off-slab slab descriptor (engine_helpers.FIRST_SPAWN_BYTES)
    assert sorted(c.name for c in a.slabs.values()) == sorted(
        [f"{n}(a)" for n, _ in FORK_RECIPE] + ["size-64(a)"])
    t2, _ = e.spawn(a)
    assert t2.pid == t.pid + 1 and a.kmem.usage == FIRST_SPAWN_BYTES
    e.exit_task(t.pid)
    e.exit_task(t2.pid)
    assert not a.tasks and a.kmem.usage == FIRST_SPAWN_BYTES
    # only the descriptor of signal_cache's slab, which lives until that slab is destroyed
    assert sum(c.active_objs for c in a.slabs.values()) == 1 == copy_of(e, a, "size-64").active_objs
    e.reap()
    assert a.kmem.usage == 0
    with raises(errno.ESRCH):
        e.exit_task(t.pid)


def test_spawn_is_all_or_nothing(e):
    """FORK_RECIPE / 3.3.8 copy_process: a fork failing part-way frees what it took (the grown
    slabs stay charged until reaped); no task is created."""
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.set_kmem_limit(a, FIRST_SPAWN_BYTES - PAGE)      # the last cache (pid) cannot grow
    t, r = e.spawn(a)
    assert t is None and r.status == "nomem" and r.cache.name == "pid(a)"
    assert not a.tasks and not e.tasks
    assert sum(c.active_objs for c in a.slabs.values()) == 1   # signal_cache's descriptor
    assert a.kmem.usage == FIRST_SPAWN_BYTES - PAGE
    e.reap()
    assert a.kmem.usage == 0


def test_touch_unlink_drop_caches(e):
    """docs/semantics.md section 15 (Decision), dcache model: touch makes a dentry and an inode
    per file; unlink frees the inode and leaves a negative dentry; drop_caches frees every dentry
    and inode."""
    a = e.mkdir(e.root, "a")
    r = e.touch(a, 10)
    assert r.ok and r.done == 10
    assert a.kmem.usage == (1 + 2) * PAGE               # 10 dentries: 1 slab; 10 inodes: 2
    assert a.files == {"cached": 10, "negative": 0, "uncached": 0}
    assert e.unlink(a, 4) == 4
    assert a.files == {"cached": 6, "negative": 4, "uncached": 0}
    assert copy_of(e, a, "inode_cache").active_objs == 6
    assert copy_of(e, a, "dentry").active_objs == 10
    with raises(errno.EINVAL):
        e.unlink(a, 7)
    assert e.drop_caches() == 16
    assert a.files == {"cached": 0, "negative": 0, "uncached": 6}
    assert a.kmem.usage == 3 * PAGE                     # empty slabs still cached
    e.reap()
    assert a.kmem.usage == 0
    e.unlink(a, 6)                                      # uncached files: nothing to free
    assert a.files["uncached"] == 0


def test_touch_partial_at_limit(e):
    """01/10 memcg_charge_kmem (independent limit), touch: when the inodes run out, surplus
    dentries are given back."""
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.set_kmem_limit(a, 2 * PAGE)                       # 1 dentry slab + 1 inode slab
    r = e.touch(a, 10)
    assert r.status == "nomem" and r.done == 7
    assert copy_of(e, a, "dentry").active_objs == 7 and a.files["cached"] == 7


def test_drop_caches_reaches_dead_caches(e):
    """05/10 memcg_slab_move (frees still work on dead caches), kmem_cache_drop_ref: drop_caches
    frees dcache objects of removed cgroups too (their dead copies)."""
    a = e.mkdir(e.root, "a")
    e.touch(a, 3)
    d = copy_of(e, a, "dentry")
    e.rmdir(a)
    assert d.dead and d.active_objs == 3
    assert e.drop_caches() == 6
    e.reap()
    assert d.destroyed


def test_attach_moves_anon_only_with_move_charge(e):
    """3.3.8 mem_cgroup_move_charge, 02/10: kmem charges never move; anon moves only with
    move_charge bit 0."""
    a = e.mkdir(e.root, "a")
    b = e.mkdir(e.root, "b")
    t, _ = e.spawn(a)
    e.charge_user(a, "anon", 3 * PAGE, task=t)
    e.attach(b, t.pid)
    assert t.memcg is b and a.rss_bytes == 3 * PAGE and b.rss_bytes == 0
    e.set_move_charge(a, 1)
    e.attach(a, t.pid)                                  # back to a: nothing of b's to move
    e.set_move_charge(b, 1)
    e.charge_user(a, "anon", PAGE, task=t)
    e.attach(b, t.pid)
    assert b.rss_bytes == 4 * PAGE and a.rss_bytes == 0 and b.res.usage == 4 * PAGE
    assert a.kmem.usage == FIRST_SPAWN_BYTES and b.kmem.usage == 0
    with raises(errno.ENODEV):
        c = e.mkdir(e.root, "c")
        e.rmdir(c)
        e.attach(c, 99)


# ============================================================== charge stock (3.3.8, 03/10)

def test_charge_batch_stock():
    """3.3.8 __mem_cgroup_try_charge stock slack / 03/10 consume_stock(memcg, nr_pages): with
    CHARGE_BATCH (3.3.8 mm/memcontrol.c, 32 pages) the res charge takes a batch of max(32, n)
    pages and keeps the surplus in the per-CPU stock; multi-page charges draw on it; kmem moves by
    exact slab sizes; another memcg's batch drains it (refill_stock); rmdir drains it."""
    e = make_engine(charge_batch=32)
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    assert (a.kmem.usage, a.res.usage, e.stock_pages(a)) == (PAGE, 32 * PAGE, 31)
    e.alloc(e.cache("task_struct"), 1, a)          # 2 pages from the stock
    assert (a.kmem.usage, a.res.usage, e.stock_pages(a)) == (3 * PAGE, 32 * PAGE, 29)
    assert check(e) == []
    b = e.mkdir(e.root, "b")
    e.alloc(e.cache("dentry"), 1, b)               # refill_stock: a's 29 pages go back
    assert e.stock_pages(b) == 31 and e.stock_pages(a) == 0 and a.res.usage == 3 * PAGE
    e.set_limit(a, 4 * PAGE)
    e.alloc(e.cache("pid"), 1, a)                  # the batch does not fit: exact size
    assert a.res.usage == 4 * PAGE and e.stock_pages(b) == 31 and a.res.failcnt == 1
    e.free_named("dentry", 1, b)
    e.reap()
    e.rmdir(b)
    assert e.stock == [None, 0]
    assert check(e) == []


def test_limit_write_does_not_drain_the_stock():
    """3.3.8 mm/memcontrol.c mem_cgroup_resize_limit -> mem_cgroup_reclaim(SHRINK): the drain
    (drain_all_stock_async) comes only from the second pass, and the loop stops after the
    first when mem_cgroup_margin — still against the old limit — is not 0. So a limit below
    usage-with-stock is EBUSY when nothing is reclaimable; only with usage exactly at the old
    limit does a second pass drain the stock."""
    e = make_engine(charge_batch=32)
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    assert a.res.usage == 32 * PAGE and e.stock_pages(a) == 31
    with raises(errno.EBUSY):
        e.set_limit(a, 20 * PAGE)
    assert e.stock_pages(a) == 31 and a.res.limit == RESOURCE_MAX
    e.set_limit(a, 32 * PAGE)                      # usage == limit: margin 0
    seq = e.event_seq
    e.set_limit(a, 20 * PAGE)                      # pass 1 frees nothing, pass 2 drains
    assert e.stock == [None, 0] and a.res.usage == PAGE and a.res.limit == 20 * PAGE
    assert [f["pages"] for _, f in events(e, "reclaim", seq)] == [0, 0]
    assert check(e) == []


def test_page_charges_with_the_stock():
    """3.3.8 __mem_cgroup_try_charge for one page: consume_stock, else a batch of
    CHARGE_BATCH (32) with the surplus to refill_stock, else (batch over the limit: one
    failcnt, no reclaim) the single page. Charging many pages at once ends as one by one."""
    e = make_engine(charge_batch=32)
    a = e.mkdir(e.root, "a")
    e.charge_user(a, "file", 40 * PAGE)            # 2 batches: 64 pages, 24 in the stock
    assert (a.res.usage, e.stock_pages(a), a.res.failcnt) == (64 * PAGE, 24, 0)
    assert a.res.max_usage == 64 * PAGE
    e.charge_user(a, "file", 24 * PAGE)            # all from the stock
    assert (a.res.usage, e.stock_pages(a)) == (64 * PAGE, 0)
    e.set_limit(a, 70 * PAGE)
    e.charge_user(a, "file", 3 * PAGE)             # each batch fails: 3 single pages
    assert (a.res.usage, e.stock_pages(a), a.res.failcnt) == (67 * PAGE, 0, 3)
    assert a.cache_bytes == 67 * PAGE
    assert check(e) == []


def test_release_event_where_3_3_queues_the_agent(e):
    """3.3.8 kernel/cgroup.c: a task leaving (cgroup_task_migrate, cgroup_exit) or a child's
    cgroup_rmdir marks the cgroup releasable, and check_for_release queues it for the
    release agent when notify_on_release is set and it has no tasks and no children. kmemfs
    logs `release` there and runs nothing (docs/semantics.md §13)."""
    p = e.mkdir(e.root, "p")
    q = e.mkdir(e.root, "q")
    p.notify_on_release = True
    c = e.mkdir(p, "c")
    assert c.notify_on_release                       # inherited at creation
    t = e.attach(c, 4242)
    e.attach(q, 4242)                                # c's last task leaves
    e.rmdir(c)                                       # p's last child goes
    s, _ = e.spawn(p)
    e.exit_task(s.pid)                               # p's last task exits
    e.attach(q, 4343)
    e.attach(e.root, 4343)                           # q has no notify_on_release
    assert [f["cgroup"] for _, f in events(e, "release")] == ["/p/c", "/p", "/p"]
    assert t.memcg is q


def test_stock_drain_is_scoped_to_the_subtree():
    """3.3.8 mm/memcontrol.c drain_all_stock: a stock is drained only when its memcg is the
    target or, for a hierarchical target, below it (mem_cgroup_same_or_subtree); rmdir and
    force_empty (mem_cgroup_force_empty -> drain_all_stock_sync) of an unrelated cgroup
    leave another cgroup's stock alone."""
    e = make_engine(charge_batch=32)
    a = e.mkdir(e.root, "a")
    b = e.mkdir(e.root, "b")
    e.alloc(e.cache("dentry"), 1, b)
    assert e.stock_pages(b) == 31
    e.force_empty(a)
    e.rmdir(a)
    assert e.stock_pages(b) == 31 and b.res.usage == 32 * PAGE
    e.drain_all_stock(e.root)                      # root is not hierarchical here
    assert e.stock_pages(b) == 31
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.alloc(e.cache("dentry"), 1, c)
    assert e.stock_pages(c) == 31 and e.stock_pages(b) == 0   # refill_stock drained b's
    e.drain_all_stock(p)                           # hierarchical ancestor: c's stock goes
    assert e.stock == [None, 0] and c.res.usage == p.res.usage == PAGE
    assert check(e) == []


# ============================================================== regressions found by the property test

def test_oom_kill_of_current_task_owning_the_objects(e):
    """3.3.8 __mem_cgroup_try_charge (`bypass:` is -EINTR) + mm/slab.c
    cache_alloc_refill (a failed cache_grow with nothing in the array returns NULL): the task
    allocating into its own objects is OOM-killed mid-call: the allocation fails, the exit
    frees everything it held, and the cache's slab bookkeeping stays consistent."""
    a = e.mkdir(e.root, "a")
    t, _ = e.spawn(a)
    e.charge_user(a, "anon", 10 * PAGE, task=t)
    e.alloc(e.cache("dentry"), 20, a, task=t, owner=t.objs)
    e.set_limit(a, a.res.usage)
    r = e.alloc(e.cache("dentry"), 30, a, task=t, owner=t.objs)
    assert r.status == "killed" and r.done == 0
    assert t.pid not in e.tasks and not t.objs.runs
    # The kill emptied slab 1 (its 20 dentries were t's); no slab was added.
    c = copy_of(e, a, "dentry")
    assert c.active_objs == 0 and c.nr_slabs == 1 and len(c.free) == 1
    assert a.kmem_bypassed == 0 and a.kmem.usage == FIRST_SPAWN_BYTES + PAGE


def test_hierarchical_leak_bookkeeping_three_levels(e):
    """02/10 memcg_kmem_move: a grandchild's kmem kept by its ancestors after rmdir; check() holds
    (the leak is booked on the kmem parent only, the grandparent sees it through it)."""
    a = e.mkdir(e.root, "a")
    e.set_use_hierarchy(a, 1)
    b = e.mkdir(a, "b")
    c = e.mkdir(b, "c")
    e.alloc(e.cache("task_struct"), 1, c)
    e.rmdir(c)
    assert (a.kmem.usage, b.kmem.usage) == (2 * PAGE, 2 * PAGE)
    assert (a.kmem_leaked, b.kmem_leaked) == (0, 2 * PAGE)
    assert (a.res.usage, b.res.usage) == (0, 0)
    e.rmdir(b)
    assert a.kmem.usage == 2 * PAGE and a.kmem_leaked == 2 * PAGE


def test_acct_root_counts_a_leaked_child_twice():
    """02/10 + 08/10 memcg_kmem_move: with ACCT_ROOT the child's bytes reach root at its rmdir,
    and again inside its parent's kmem usage when the parent goes (flagged as a quirk on root)."""
    e = make_engine(acct_root=True)
    a = e.mkdir(e.root, "a")
    e.set_use_hierarchy(a, 1)
    e.set_independent(a, 1)
    b = e.mkdir(a, "b")
    e.alloc(e.cache("dentry"), 1, b)
    e.rmdir(b)
    assert e.root.kmem.usage == PAGE
    e.rmdir(a)
    assert e.root.kmem.usage == 2 * PAGE and "kmem_leak_moved_twice" in e.root.quirks
    assert check(e) == []


def test_res_underflow_in_child_marks_ancestors(e):
    """01/10 memcg_uncharge_kmem (the flag read at uncharge): charged independent, freed
    dependent: the child's res clamps at 0 while its hierarchical parent loses the full amount;
    both carry the quirk so check() holds."""
    p = e.mkdir(e.root, "p")
    e.set_use_hierarchy(p, 1)
    c = e.mkdir(p, "c")
    e.set_independent(c, 1)
    e.alloc(e.cache("dentry"), 1, c)
    e.charge_user(p, "file", 2 * PAGE)
    e.set_independent(c, 0)
    e.free_named("dentry", 1, c)
    e.reap()
    assert (c.res.usage, p.res.usage) == (0, PAGE)
    assert "underflow" in c.quirks and "underflow" in p.quirks


def test_oom_with_no_victim_fails_the_charge(e):
    """3.3.8 mem_cgroup_handle_oom, docs/semantics.md section 6 (Decision): GFP_KERNEL at the
    limit with nothing to reclaim and no task to kill. The kernel would loop; the engine's
    documented choice is to fail the charge (ENOMEM) after an `oom_kill` event with pid 0."""
    a, _ = _dependent_at_limit(e)
    r = e.alloc(e.cache("dentry"), 1, a)
    assert r.status == "nomem"
    assert events(e, "oom_kill") == [("oom_kill", {"cgroup": "/a", "pid": 0, "victim": "none"})]
    assert a.res.failcnt == 1 + 5                      # 5 NOMEM rounds, then the OOM round


def test_copy_names_are_fixed_at_creation(e):
    """05/10 memcg_create_kmem_cache: the copy takes the cgroup's basename when it is created; a
    later rename of the directory does not rename existing copies."""
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    e.rename(a, "z")
    e.alloc(e.cache("pid"), 1, a)
    assert sorted(c.name for c in a.slabs.values()) == ["dentry(a)", "pid(z)"]
    e.rmdir(a)
    assert {c.name for c in e.caches if c.dead} == {"dentry(a)dead", "pid(z)dead"}


@pytest.mark.parametrize("corrupt", ["kmem", "res", "memsw", "slab", "dead", "task", "root"])
def test_check_reports_corruption(corrupt):
    """docs/semantics.md sections 7-9 (Decisions) invariants: check() is not vacuous; each kind of
    corruption is reported."""
    e = make_engine(acct_root=True)
    a = e.mkdir(e.root, "a")
    t, _ = e.spawn(a)
    e.alloc(e.cache("dentry"), 5, a)
    e.alloc(e.cache("pid"), 1, e.root)
    assert check(e) == []
    if corrupt == "kmem":
        a.kmem.usage += PAGE
    elif corrupt == "res":
        a.res.usage -= PAGE
    elif corrupt == "memsw":
        a.memsw.usage += PAGE
    elif corrupt == "slab":
        next(iter(copy_of(e, a, "dentry").partial)).inuse += 1
    elif corrupt == "dead":
        c = copy_of(e, a, "dentry")
        e.free_named("dentry", 5, a)
        e.reap()
        c.dead = True
    elif corrupt == "task":
        del a.tasks[t.pid]
    else:
        e.root.kmem.usage += PAGE
    assert check(e) != []
