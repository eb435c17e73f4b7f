"""Worked examples, one per feature of the seed cover letter ("[PATCH 00/10] memcg: Kernel Memory
Accounting.", 27 Feb 2012). Every number follows from the test catalogue's geometry
(tests/engine_helpers.py): dentry 192 B x20 per 1-page slab, inode_cache 552 B x7 per 1-page slab,
task_struct 1584 B x5 per 2-page slab, size-128 x30 per page; a first fork in a cgroup grows 14
pages."""
import errno

import pytest

from kmemfs.engine import GFP_KERNEL, GFP_NOFS, GFP_NOIO, EngineError, Gfp, check, render

from engine_helpers import FIRST_SPAWN_BYTES, PAGE, events, make_engine


def stat(engine, memcg):
    return {k: int(v) for k, v in (l.split() for l in render.memory_stat(engine, memcg).splitlines())}


def test_independent_kmem_limit_reached():
    """Cover letter: "It's possible to have a limit to the kernel memory by setting
    memory.kmem.independent_kmem_limit to 1 and setting the limit in
    memory.kmem.limit_in_bytes" (01/10 memcg_charge_kmem, independent mode).

    64 KiB = 16 pages of kmem. n files need ceil(n/20) dentry pages + ceil(n/7) inode pages:
    80 files use 4 + 12 = 16 pages; the 81st needs a 5th dentry slab and fails with ENOMEM,
    no reclaim and no OOM; memory.usage_in_bytes never sees the kernel memory."""
    e = make_engine()
    box = e.mkdir(e.root, "box")
    e.set_independent(box, 1)
    e.set_kmem_limit(box, 64 * 1024)
    e.set_limit(box, 1024 * 1024)
    e.charge_user(box, "file", 10 * PAGE)
    made = 0
    while True:
        r = e.touch(box, 1)
        if not r.ok:
            break
        made += 1
    assert made == 80
    assert r.status == "nomem" and r.done == 0
    assert box.kmem.usage == 16 * PAGE == box.kmem.limit
    assert box.kmem.failcnt == 1
    assert box.res.usage == 10 * PAGE and box.cache_bytes == 10 * PAGE   # nothing reclaimed
    assert box.files["cached"] == 80
    assert box.slabs[e.cache("dentry").id].active_objs == 80
    assert box.slabs[e.cache("inode_cache").id].active_objs == 80
    assert not events(e, "reclaim") and not events(e, "oom_kill")
    assert check(e) == []


def test_dependent_mode_reclaim_then_oom():
    """Cover letter: "If memory.kmem.independent_kmem_limit is unset, kernel memory also gets
    counted in the cgroup's memory.usage_in_bytes, and kernel memory allocations may trigger
    memcg reclaim or OOM" (01/10; 3.3.8 __mem_cgroup_try_charge).

    job: limit 256 pages = 15 (two forks, FIRST_SPAWN_BYTES) + 100 + 120 (anon of worker, hog)
    + 21 page cache. touch(100) needs 5 dentry + 15 inode pages: the first grow reclaims the 21
    cache pages. The second touch(100) finds 1 page free, nothing to reclaim: after the retries the OOM
    killer kills hog (120 pages, the bulkiest), and the touch completes (5 dentry pages and
    14 inode pages, since the 15th inode slab still had 5 free objects)."""
    e = make_engine()
    job = e.mkdir(e.root, "job")
    worker, _ = e.spawn(job)
    hog, _ = e.spawn(job)
    e.charge_user(job, "anon", 100 * PAGE, task=worker)
    e.charge_user(job, "anon", 120 * PAGE, task=hog)
    e.charge_user(job, "file", 21 * PAGE)
    assert job.res.usage == 256 * PAGE and job.kmem.usage == FIRST_SPAWN_BYTES
    e.set_limit(job, 1024 * 1024)

    r = e.touch(job, 100, task=worker)
    assert r.ok and r.done == 100
    assert [f["pages"] for _, f in events(e, "reclaim")] == [21]
    assert job.cache_bytes == 0
    assert job.kmem.usage == (15 + 20) * PAGE and job.res.usage == 255 * PAGE

    r = e.touch(job, 100, task=worker)
    assert r.ok and r.done == 100
    kills = events(e, "oom_kill")
    assert [(f["pid"], f["rss"]) for _, f in kills] == [(hog.pid, 120 * PAGE)]
    assert hog.pid not in e.tasks and worker.pid in e.tasks
    # 5 more dentry pages; 100 more inodes: 5 fill the 15th inode slab, 95 need 14 more
    assert job.kmem.usage == (15 + 20 + 19) * PAGE
    assert job.res.usage == (54 + 100) * PAGE
    assert job.res.failcnt >= 2 and job.kmem.failcnt == 0
    s = stat(e, job)
    assert s["rss"] == 100 * PAGE and s["cache"] == 0 and s["kernel_bypassed_memory"] == 0
    assert check(e) == []


def test_dependent_mode_with_the_default_stock():
    """The same dependent accounting with 3.3's default per-CPU charge stock (CHARGE_BATCH =
    32 pages, 3.3.8 mm/memcontrol.c __mem_cgroup_try_charge / consume_stock / refill_stock,
    03/10's multi-page consume_stock), the mount's default. Every number from 3.3's rules:

    10 page-cache pages: the first takes a batch of 32 (31 to the stock), 9 come from it
    (22 left); 20 files = 1 dentry + 3 inode slabs take 4 more from the stock (18 left):
    usage 32 pages for 14 real ones. Lowering the limit to 20 pages reclaims the 10 cache
    pages (mem_cgroup_resize_limit -> mem_cgroup_reclaim(SHRINK) stops at the first pass with
    progress) and then, with nothing left and margin against the old limit, never drains the
    stock: usage stays at 22 pages, EBUSY. Another cgroup's batch (refill_stock) gives the 18
    pages back; then the limit fits."""
    e = make_engine(charge_batch=32)
    job = e.mkdir(e.root, "job")
    e.charge_user(job, "file", 10 * PAGE)
    assert (job.res.usage, e.stock_pages(job)) == (32 * PAGE, 22)
    assert e.touch(job, 20).ok
    assert job.kmem.usage == 4 * PAGE
    assert (job.res.usage, e.stock_pages(job)) == (32 * PAGE, 18)
    assert render.usage(e, job) == 32 * PAGE
    with pytest.raises(EngineError) as err:
        e.set_limit(job, 20 * PAGE)
    assert err.value.errno == errno.EBUSY
    assert job.cache_bytes == 0 and job.res.usage == 22 * PAGE and e.stock_pages(job) == 18
    other = e.mkdir(e.root, "other")
    e.charge_user(other, "file", PAGE)
    assert e.stock_pages(job) == 0 and job.res.usage == 4 * PAGE
    e.set_limit(job, 20 * PAGE)
    assert job.res.limit == 20 * PAGE and job.res.failcnt == 0
    assert check(e) == []


def test_per_cgroup_cache_creation_and_naming():
    """Cover letter: "Slab gets accounted per-page, by using per-cgroup kmem_caches that get
    created the first time an allocation of that type is done by that cgroup ... A per-cgroup
    kmem_cache will appear in slabinfo named like its original cache, with the cgroup's name
    in parenthesis" (05/10 mem_cgroup_get_kmem_cache, memcg_create_kmem_cache; 09/10)."""
    e = make_engine()
    foo = e.mkdir(e.root, "foo")
    size128 = e.kmalloc_cache(100)
    assert size128.name == "size-128"
    # A GFP_KERNEL kmalloc(100) of 45 objects: copy made on the spot, 2 pages charged.
    r = e.alloc(size128, 45, foo, GFP_KERNEL)
    assert r.cache.name == "size-128(foo)" and foo.kmem.usage == 2 * PAGE
    # A GFP_NOFS dentry allocation cannot create the copy: queued, served by `dentry`.
    r = e.alloc(e.cache("dentry"), 3, foo, GFP_NOFS)
    assert r.cache.name == "dentry" and foo.kmem.usage == 2 * PAGE
    assert [c.name for c in e.run_workqueue()] == ["dentry(foo)"]
    r = e.alloc(e.cache("dentry"), 3, foo, GFP_NOFS)
    assert r.cache.name == "dentry(foo)" and foo.kmem.usage == 3 * PAGE
    assert render.memcg_slabinfo(e, foo) == (
        "# name            <active_objs> <num_objs> <objsize>\n"
        "dentry(foo)            3     20    192\n"
        "size-128(foo)         45     60    128\n")
    lines = render.slabinfo(e).splitlines()
    assert lines[2].startswith("dentry(foo)            3     20    192   20    1 : tunables  120")
    assert lines[3].startswith("size-128(foo)         45     60    128   30    1 : tunables  120")
    # the 3 unaccounted dentries stay in the global cache
    assert e.cache("dentry").active_objs == 3
    assert check(e) == []


def test_dead_caches_after_rmdir_and_their_destruction():
    """Cover letter: "On cgroup deletion, the accounting gets moved to the root cgroup and any
    existing cgroup kmem_cache gets "dead" appended to its name ... The dead caches get removed
    once they no longer have any active objects in them" (02/10 memcg_kmem_move; 05/10
    memcg_slab_move, kmem_cache_drop_ref; 08/10).

    With ACCT_ROOT: bar holds 10 files (1 dentry page + 2 inode pages) and 45 size-128
    objects (2 pages): 5 pages move to root's kmem and res at rmdir."""
    e = make_engine(acct_root=True)
    bar = e.mkdir(e.root, "bar")
    e.touch(bar, 10)
    e.alloc(e.kmalloc_cache(128), 45, bar)
    assert bar.kmem.usage == 5 * PAGE
    e.rmdir(bar)
    assert (e.root.kmem.usage, e.root.res.usage) == (5 * PAGE, 5 * PAGE)
    names = [l.split()[0] for l in render.slabinfo(e).splitlines()[2:5]]
    assert names == ["size-128(bar)dead", "inode_cache(bar)dead", "dentry(bar)dead"]
    # the dcache is dropped: dentries and inodes go, their empty slabs wait for the reaper
    assert e.drop_caches() == 20
    assert "dentry(bar)dead" in render.slabinfo(e)
    e.reap()
    text = render.slabinfo(e)
    assert "dentry(bar)dead" not in text and "inode_cache(bar)dead" not in text
    assert "size-128(bar)dead" in text                      # still 45 active objects
    assert (e.root.kmem.usage, e.root.res.usage) == (2 * PAGE, 2 * PAGE)
    # free the rest: 45 objects in 2 slabs; both stay under free_limit until reaped
    assert e.free_named("size-128(bar)dead", 45, bar) == 45
    e.reap()
    assert "(bar)dead" not in render.slabinfo(e)
    assert (e.root.kmem.usage, e.root.res.usage) == (0, 0)
    assert [f["cache"] for _, f in events(e, "cache_destroy")] == [
        "dentry(bar)dead", "inode_cache(bar)dead", "size-128(bar)dead"]
    assert check(e) == []


def test_dead_caches_without_acct_root_forget_the_kmem():
    """08/10 off (its Kconfig default): a deleted cgroup's remaining kmem disappears from the
    books; dead caches' frees uncharge nobody."""
    e = make_engine()
    bar = e.mkdir(e.root, "bar")
    e.touch(bar, 10)
    e.rmdir(bar)
    assert e.root.kmem.usage == 0 and e.root.res.usage == 0
    e.drop_caches()
    e.reap()
    assert "(bar)dead" not in render.slabinfo(e)
    assert not events(e, "uncharge_underflow")
    assert check(e) == []


def test_noaccount_allocations_are_not_charged():
    """Patch 04/10 "Introduce __GFP_NOACCOUNT" (05/10 mem_cgroup_get_kmem_cache): the allocation
    uses the original cache and is never charged to the cgroup; with ACCT_ROOT root pays."""
    for acct_root in (False, True):
        e = make_engine(acct_root=acct_root)
        foo = e.mkdir(e.root, "foo")
        r = e.alloc(e.cache("size-64"), 100, foo, GFP_KERNEL | Gfp.NOACCOUNT)
        assert r.ok and r.cache.name == "size-64"
        assert foo.kmem.usage == foo.res.usage == 0 and not foo.slabs
        assert e.root.kmem.usage == (2 * PAGE if acct_root else 0)    # 100 objs / 59 per slab
        r = e.alloc(e.cache("size-64"), 100, foo, GFP_KERNEL)
        assert r.cache.name == "size-64(foo)" and foo.kmem.usage == 2 * PAGE
        assert check(e) == []


def test_noio_allocation_fails_where_it_never_failed_before():
    """Cover letter caveat: "a GFP_NOIO slab allocation wouldn't fail, but now it might"
    (01/10 memcg_charge_kmem: may_oom is false without __GFP_FS, so at the limit it is -ENOMEM).

    Outside any limit (root) the same GFP_NOIO allocation succeeds; in a dependent cgroup at
    its limit with nothing reclaimable it fails, while a GFP_KERNEL one would OOM-kill."""
    e = make_engine()
    assert e.alloc(e.cache("task_struct"), 50, e.root, GFP_NOIO).ok
    io = e.mkdir(e.root, "io")
    t, _ = e.spawn(io)                                 # task_struct(io) and friends exist
    e.charge_user(io, "anon", 50 * PAGE, task=t)
    e.alloc(e.cache("task_struct"), 4, io)             # task_struct(io) slab now full
    e.set_limit(io, io.res.usage)
    r = e.alloc(e.cache("task_struct"), 1, io, GFP_NOIO)
    assert r.status == "nomem" and r.done == 0
    assert t.pid in e.tasks and not events(e, "oom_kill")
    # A first-time NOIO allocation of another type is served unaccounted, so it succeeds.
    r = e.alloc(e.cache("size-2048"), 1, io, GFP_NOIO)
    assert r.ok and r.cache.name == "size-2048"
    # GFP_KERNEL at the same point OOM-kills the only task (itself): 3.3's bypass is
    # -EINTR, so this allocation fails too (3.3.8 __mem_cgroup_try_charge).
    r = e.alloc(e.cache("task_struct"), 1, io, GFP_KERNEL, task=t)
    assert r.status == "killed" and t.pid not in e.tasks and io.kmem_bypassed == 0
    assert check(e) == []
