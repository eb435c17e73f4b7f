"""SLAB internals of 3.3 that accounting can see (issue 10 items 4 and 9, issue 11's SLUB rows):
off-slab slab descriptors, the per-CPU and shared array caches, cache_reap, and the geometry
and tunables derived for a SLUB /proc/slabinfo. Sources: 3.3.8 mm/slab.c (the functions named
in each docstring) and "[PATCH 05/10] memcg: Slab accounting." (27 Feb 2012). Expected numbers
are derived by hand from those rules and the catalogue's geometry (tests/engine_helpers.py:
dentry 192 bytes, 20 per page, limit 120, batchcount 60, shared 8)."""
import errno
import os
from pathlib import Path

import pytest

from kmemfs.engine import GFP_ATOMIC, Config, Engine, EngineError, check, load_catalogue
from kmemfs.engine.catalogue import (enable_cpucache, off_slab, parse as parse_catalogue,
                                     slab_geometry)

from engine_helpers import CATALOGUE, PAGE, make_engine

DATA = Path(__file__).parent / "data"
SLUB = DATA / "6.18-slub.slabinfo"     # this machine's /proc/slabinfo (6.18, SLUB), captured


def arrays(**config):
    return make_engine(array_caches=True, **config)


def copy_of(e, memcg, name):
    return memcg.slabs[e.cache(name).id]


# ============================================================== geometry (item 4)

def test_geometry_rules_reproduce_the_3_4_slab_dump():
    """mm/slab.c cache_estimate + calculate_slab_order (slab_max_order 1, x86_64 struct slab 48
    bytes, 4-byte bufctls) give every row of the real 3.4.0-rc6 SLAB dump its objperslab and
    pagesperslab, except caches whose flags a row does not show: SLAB_RECLAIM_ACCOUNT stops at
    order 0 (ext4_inode_cache, ext4_io_end, bdev_cache), and skbuff_fclone_cache, below
    PAGE_SIZE/8 before its alignment to 512 (so on-slab)."""
    exceptions = {"ext4_inode_cache", "ext4_io_end", "bdev_cache", "skbuff_fclone_cache"}
    wrong = [s.name for s in load_catalogue() if s.name not in exceptions and
             slab_geometry(s.objsize)[1:] != (s.objperslab, s.pagesperslab)
             and s.name != "kmem_cache"]
    assert wrong == []


@pytest.mark.parametrize("name,size,num,pages,want", [
    # size >= PAGE_SIZE/8 starts off-slab; left-over bytes that hold the aligned descriptor
    # (ALIGN(48 + 4 * num, align)) move it back on-slab (kmem_cache_create).
    ("size-512", 512, 8, 1, (True, 80)),          # left 0 < 128: off, from size-128
    ("size-1024", 1024, 4, 1, (True, 64)),        # left 0 < 64: off, from size-64
    ("size-4096", 4096, 1, 1, (True, 52)),
    ("size-8192", 8192, 1, 2, (True, 52)),
    ("signal_cache", 1024, 4, 1, (True, 64)),
    ("inode_cache", 552, 7, 1, (False, 0)),       # left 232 >= ALIGN(76, 8) = 80: on-slab
    ("task_struct", 1584, 5, 2, (False, 0)),      # left 272 >= ALIGN(68, 16) = 80
    ("mm_struct", 896, 4, 1, (False, 0)),         # left 512 >= 64
    ("skbuff_fclone_cache", 512, 7, 1, (False, 0)),  # 7 is the on-slab estimate: raw size < 512
    ("dentry", 192, 20, 1, (False, 0)),           # below PAGE_SIZE/8
    ("kmem_cache", 4096, 1, 1, (False, 0)),       # cache_cache: on-slab (kmem_cache_init)
])
def test_off_slab_decision(name, size, num, pages, want):
    """mm/slab.c kmem_cache_create: CFLGS_OFF_SLAB, slab_mgmt_size, the reshuffle on-slab."""
    assert off_slab(name, size, num, pages) == want


def test_off_slab_descriptor_is_charged_to_the_allocating_cgroup():
    """mm/slab.c cache_grow -> alloc_slabmgmt: an off-slab cache takes struct slab + bufctls
    (48 + 4*4 = 64 bytes for size-1024) from slabp_cache = size-64 at every grow, which 05/10's
    mem_cgroup_get_kmem_cache sends to the current task's copy, so it is charged too;
    slab_destroy frees it (kmem_cache_free(cachep->slabp_cache, slabp))."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    r = e.alloc(e.cache("size-1024"), 5, a)               # 2 slabs of 4
    assert r.ok and r.cache.name == "size-1024(a)" and r.cache.nr_slabs == 2
    desc = copy_of(e, a, "size-64")
    assert (desc.nr_slabs, desc.active_objs) == (1, 2)     # two descriptors, one page
    assert a.kmem.usage == 3 * PAGE == a.res.usage
    e.free_named("size-1024", 5, a)
    assert e.reap() == 3                                  # 2 slabs, then the size-64 slab
    assert a.kmem.usage == 0 and desc.nr_slabs == 0
    assert check(e) == []


def test_global_objects_of_a_removed_cgroup_stay_freeable_and_release_its_dead_copy():
    """05/10 mem_cgroup_get_kmem_cache picks the *current* task's copy for the descriptor
    too: a GFP_ATOMIC size-1024 allocation goes to the global cache (the copy's creation is
    queued) but its slabs' descriptors come from a's existing size-64 copy. After rmdir that
    dead copy lives as long as those global slabs (as on 3.3). The objects pass to the
    parent's pool (docs/semantics.md section 9), so `free size-1024` in root still reaches
    them, and with their slabs goes the dead copy. scripts/stress.py found the leak."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    e.free(e.alloc(e.cache("size-64"), 1, a).cache, a.pool, 1)    # a's size-64 copy exists
    r = e.alloc(e.cache("size-1024"), 5, a, gfp=GFP_ATOMIC)
    assert r.ok and r.cache is e.cache("size-1024")               # 2 global slabs of 4
    desc = copy_of(e, a, "size-64")
    assert desc.active_objs == 2 and a.kmem.usage == PAGE          # only the descriptors' page
    e.rmdir(a)
    assert desc.dead and not desc.destroyed
    assert e.free_named("size-1024", 5, e.root) == 5
    e.reap()
    assert desc.destroyed and not any(c.dead for c in e.caches)
    assert check(e) == []


def test_the_parents_pool_frees_the_removed_cgroups_objects_newest_first():
    """The heir's runs and the removed cgroup's make one list ordered by each run's newest
    object (free_named's order): root's 3
    size-1024 objects, then a's 5 (one in root's slab, 4 in a new one whose descriptor is a's)
    so `free size-1024 5` in root frees a's and leaves root's own."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    e.free(e.alloc(e.cache("size-64"), 1, a).cache, a.pool, 1)
    e.alloc(e.cache("size-1024"), 3, e.root)
    e.alloc(e.cache("size-1024"), 5, a, gfp=GFP_ATOMIC)
    desc = copy_of(e, a, "size-64")
    assert desc.active_objs == 1
    e.rmdir(a)
    assert e.free_named("size-1024", 5, e.root) == 5
    e.reap()
    assert desc.destroyed and e.root.pool.count(e.cache("size-1024")) == 3
    assert check(e) == []


def test_a_failed_rmdir_keeps_the_cgroups_global_objects():
    """3.3.8 mem_cgroup_force_empty: a parent that cannot take the pages (limit, no reclaim
    possible) makes rmdir EBUSY and the cgroup stays, its objects with it."""
    e = make_engine()
    p = e.mkdir(e.root, "p")
    c = e.mkdir(p, "c")
    e.set_limit(p, 1 << 20)
    e.alloc(e.cache("size-1024"), 5, c, gfp=GFP_ATOMIC)
    e.charge_user(c, "anon", 2 << 20)
    with pytest.raises(EngineError) as ex:
        e.rmdir(c)
    assert ex.value.errno == errno.EBUSY and not c.removed
    assert e.free_named("size-1024", 5, p) == 0 and e.free_named("size-1024", 5, c) == 5
    assert check(e) == []


def test_interrupt_context_descriptor_comes_from_the_global_cache():
    """05/10 mem_cgroup_get_kmem_cache: in_interrupt() -> the original cache, for the object and
    for the descriptor alike: nothing is charged."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    r = e.alloc(e.cache("size-1024"), 1, a, irq=True)
    assert r.cache is e.cache("size-1024") and e.cache("size-64").active_objs == 1
    assert a.kmem.usage == 0 and not a.slabs
    assert check(e) == []


def test_failed_descriptor_gives_the_pages_back():
    """mm/slab.c cache_grow: when alloc_slabmgmt fails, opps1: kmem_freepages returns the pages
    (05/10 uncharges them): a 1-page kmem limit fits the size-1024 slab but not its size-64
    descriptor's slab, so the allocation fails with nothing charged."""
    e = make_engine()
    a = e.mkdir(e.root, "a")
    e.set_independent(a, 1)
    e.set_kmem_limit(a, PAGE)
    r = e.alloc(e.cache("size-1024"), 1, a)
    assert r.status == "nomem" and r.done == 0
    assert a.kmem.usage == 0 and a.kmem.failcnt == 1 and a.kmem.max_usage == PAGE
    assert copy_of(e, a, "size-1024").nr_slabs == 0
    assert check(e) == []


# ============================================================== array caches (item 9)

def test_allocation_refills_the_array_by_batches():
    """mm/slab.c ____cache_alloc / cache_alloc_refill: an untouched array's refill takes
    BATCHREFILL_LIMIT = 16, a touched one batchcount (60); a refill takes what the slabs have
    and grows only when they have nothing. s_show counts objects in arrays as active."""
    e = arrays()
    a = e.mkdir(e.root, "a")
    c = e.alloc(e.cache("dentry"), 1, a).cache
    ac = c.arrays[0]
    assert (c.active_objs, c.nr_slabs, ac.avail) == (16, 1, 15)
    assert c.slabinfo_row().split()[1:3] == ["16", "20"]
    e.alloc(e.cache("dentry"), 30, a)   # 15 from the array, 4 left in slab 1, grow, 20 taken
    assert (c.active_objs, c.nr_slabs, ac.avail, a.kmem.usage) == (40, 2, 9, 2 * PAGE)
    assert check(e) == []


def test_frees_wait_in_the_array_and_cache_reap_drains_a_fifth():
    """mm/slab.c __cache_free puts frees in the CPU's array (limit 120): nothing returns to
    the slabs. cache_reap -> drain_array: a touched array is only untouched; then it frees
    (limit + 4) / 5 = 24, or half (rounded up) of fewer; drain_freelist then destroys up to
    (free_limit + 5*num - 1) / (5*num) = 2 free slabs unless free_touched was set by a refill
    (which the first pass clears)."""
    e = arrays()
    a = e.mkdir(e.root, "a")
    c = e.alloc(e.cache("dentry"), 1, a).cache
    e.alloc(e.cache("dentry"), 30, a)
    e.free_named("dentry", 31, a)
    ac = c.arrays[0]
    assert (c.active_objs, ac.avail, c.nr_slabs, a.kmem.usage) == (40, 40, 2, 2 * PAGE)
    steps = []
    for _ in range(8):
        e.cache_reap()
        steps.append((ac.avail, c.nr_slabs, a.kmem.usage // PAGE))
    # pass 1 untouches; 2 frees 24 (slab 2 empties, is destroyed); then 8, 4, 2, 1, 1
    assert steps == [(40, 2, 2), (16, 1, 1), (8, 1, 1), (4, 1, 1), (2, 1, 1), (1, 1, 1),
                     (0, 0, 0), (0, 0, 0)]
    assert check(e) == []


def test_a_descriptor_taken_from_the_array_touches_it():
    """mm/slab.c ____cache_alloc sets ac->touched on every array hit, the off-slab descriptor's
    kmem_cache_alloc(slabp_cache) included: the first cache_reap only untouches size-64(a)'s
    array, the second drains half (rounded up) of its 15 (cache_alloc_refill took
    BATCHREFILL_LIMIT = 16, one went to the size-1024 slab's descriptor)."""
    e = arrays()
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("size-1024"), 1, a)
    ac = copy_of(e, a, "size-64").arrays[0]
    assert (ac.avail, ac.touched) == (15, True)
    e.cache_reap()
    assert (ac.avail, ac.touched) == (15, False)
    e.cache_reap()
    assert ac.avail == 7
    assert check(e) == []


def test_reap_is_cache_reap_until_nothing_changes():
    """The control plane's `reap`: every array drained (__cache_shrink -> drain_cpu_caches),
    then every empty slab destroyed, as many cache_reap passes would."""
    e = arrays()
    a = e.mkdir(e.root, "a")
    c = e.alloc(e.cache("dentry"), 31, a).cache
    e.free_named("dentry", 31, a)
    assert e.reap() == 2
    assert (c.active_objs, c.nr_slabs, a.kmem.usage) == (0, 0, 0)
    assert check(e) == []


def test_flusharray_fills_the_shared_array_first():
    """mm/slab.c cache_flusharray: a full array (120) moves batchcount (60) entries from its
    bottom to the node's shared array (shared * batchcount = 480 entries) while it has room;
    cache_alloc_refill takes from the shared array before the slabs (transfer_objects). 200
    dentries allocated on CPU 0, freed on CPU 1: 120 pushed, flush 60, 60 more, flush 60,
    20 more: CPU 1 holds 80, the shared array 120; /proc/slabinfo's sharedavail shows it."""
    e = arrays(nr_cpus=2)
    a = e.mkdir(e.root, "a")
    c = e.alloc(e.cache("dentry"), 200, a).cache       # 10 slabs, each refill took one whole
    assert c.nr_slabs == 10 and [x.avail for x in c.arrays] == [0, 0]
    e.cpu = 1
    e.free_named("dentry", 200, a)
    assert ([x.avail for x in c.arrays], c.shared_avail, c.active_objs) == ([0, 80], 120, 200)
    e.cpu = 0
    e.alloc(e.cache("dentry"), 50, a)                  # 60 from the shared array, no grow
    assert ([x.avail for x in c.arrays], c.shared_avail) == ([10, 80], 60)
    assert a.kmem.usage == 10 * PAGE
    assert c.slabinfo_row().split()[-1] == "60"
    assert check(e) == []


def test_free_limit_applies_to_the_flushed_batches():
    """mm/slab.c cache_flusharray -> free_block: once the shared array is full (480), flushed
    batches go back to the slabs, and an emptied slab beyond free_limit (2*60 + 20 = 140) is
    destroyed. 800 dentries (40 slabs) freed on one CPU: a flush at every 60th push from the
    120th on (12 flushes up to the 780th): 8 fill the shared array, 4 (240 objects, 12 whole
    slabs, newest first) reach the slabs: 7 stay free (140 objects), 5 are destroyed; the array
    keeps 800 - 720 = 80."""
    e = arrays()
    a = e.mkdir(e.root, "a")
    c = e.alloc(e.cache("dentry"), 800, a).cache
    e.free_named("dentry", 800, a)
    assert (c.arrays[0].avail, c.shared_avail, c.nr_slabs, len(c.free)) == (80, 480, 35, 7)
    assert c.active_objs == 560 and a.kmem.usage == 35 * PAGE
    assert check(e) == []


def test_dead_cache_waits_for_its_arrays():
    """05/10: a dead copy is destroyed when its last slab page goes (kmem_cache_drop_ref in
    kmem_freepages); memcg_slab_move does not drain arrays, so objects freed into an array keep
    their slab (and the dead cache) until cache_reap or `reap` drains them; kmem_cache_destroy's
    __cache_shrink then has nothing left to drain."""
    e = arrays()
    a = e.mkdir(e.root, "a")
    e.alloc(e.cache("dentry"), 1, a)
    e.free_named("dentry", 1, a)
    c = copy_of(e, a, "dentry")
    e.rmdir(a)
    assert c.name == "dentry(a)dead" and c.active_objs == 16 and c in e.caches
    e.reap()
    assert c.destroyed and c not in e.caches
    assert check(e) == []


def test_noarray_caches_is_the_simple_model():
    """Config(array_caches=False) (`-o noarray_caches`): frees reach the slabs at once."""
    e = make_engine(array_caches=False)
    a = e.mkdir(e.root, "a")
    c = e.alloc(e.cache("dentry"), 1, a).cache
    assert (c.active_objs, c.arrays, c.shared_array) == (1, [], None)
    e.free_named("dentry", 1, a)
    assert c.active_objs == 0 and len(c.free) == 1


# ============================================================== SLUB slabinfo (issue 11)

@pytest.mark.parametrize("size,want1,want2", [
    (32, (120, 60, 0), (120, 60, 8)), (256, (120, 60, 0), (120, 60, 8)),
    (257, (54, 27, 0), (54, 27, 8)), (1024, (54, 27, 0), (54, 27, 8)),
    (1025, (24, 12, 0), (24, 12, 8)), (4096, (24, 12, 0), (24, 12, 8)),
    (4097, (8, 4, 0), (8, 4, 0)), (131072, (8, 4, 0), (8, 4, 0)), (131073, (1, 1, 0), (1, 1, 0)),
])
def test_enable_cpucache_bands(size, want1, want2):
    """mm/slab.c enable_cpucache: limit by size band, batchcount (limit + 1) / 2, shared 8
    only for objects up to PAGE_SIZE on more than one CPU."""
    assert enable_cpucache(size, 1) == want1 and enable_cpucache(size, 2) == want2


def test_slub_slabinfo_is_accepted_with_slab_geometry():
    """issue 11: a SLUB /proc/slabinfo (`tunables 0 0 0`, this machine's 6.18) is accepted; each
    row gets the geometry 3.3 SLAB would build for its object size and enable_cpucache's
    tunables; its active objects fill as many SLAB slabs as they need."""
    specs = {s.name: s for s in load_catalogue(SLUB)}
    rows = [line for line in SLUB.read_text().splitlines()[2:] if line.strip()]
    assert len(specs) == len(rows)
    e = Engine(Config(), list(specs.values()), str(SLUB))
    d = e.cache("dentry")
    assert (d.objsize, d.num, d.pages, d.limit, d.batchcount, d.shared) == (192, 20, 1, 120, 60, 0)
    assert d.nr_slabs == -(-specs["dentry"].active_objs // 20)
    k = e.cache("kmalloc-1k")
    assert (k.num, k.pages, k.limit, k.off_slab) == (4, 1, 54, True)
    assert e.kmalloc_cache(1000) is k                 # kmalloc-N are the general caches
    e2 = Engine(Config(nr_cpus=2), list(specs.values()), str(SLUB))
    assert e2.cache("dentry").shared == 8 and e2.cache("kmalloc-8k").shared == 0
    a = e.mkdir(e.root, "a")
    r = e.alloc(k, 5, a)                               # off-slab: descriptors in kmalloc-64(a)
    assert r.ok and copy_of(e, a, "kmalloc-64").active_objs == 16
    assert check(e) == [] and check(e2) == []


def test_bad_slab_rows_are_still_refused():
    """A SLAB row with batchcount 0 but a non-zero limit is no SLUB row: still refused."""
    bad = CATALOGUE.replace("  120   60    8 : slabdata      0      0", "  120    0    8 : "
                            "slabdata      0      0", 1)
    with pytest.raises(Exception) as exc:
        parse_catalogue(bad, "x")
    assert getattr(exc.value, "errno", None) == errno.EINVAL
    assert "batchcount must be positive" in str(exc.value)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                    reason="mounting needs root and /dev/fuse")
def test_mount_with_a_slub_slabinfo(mount_factory):
    """kmemfs mount --slabinfo of a SLUB dump: it mounts and shows SLAB rows."""
    mnt = mount_factory(slabinfo=SLUB)
    text = open(mnt.p(".kmemfs", "slabinfo")).read()
    row = next(line for line in text.splitlines() if line.startswith("dentry "))
    assert row.split()[3:6] == ["192", "20", "1"] and row.split()[8:11] == ["120", "60", "0"]


# ============================================================== the control plane

@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                    reason="mounting needs root and /dev/fuse")
def test_ctl_cache_reap_and_cpu(mount_factory, tmp_path):
    """docs/ctl.md: `cache_reap` is one mm/slab.c cache_reap pass; `cpu=N` runs a command on
    CPU N's array cache; `reap` still drains everything. Numbers as in
    test_frees_wait_in_the_array_and_cache_reap_drains_a_fifth and
    test_flusharray_fills_the_shared_array_first."""
    cat = tmp_path / "cat.slabinfo"
    cat.write_text(CATALOGUE)
    mnt = mount_factory(slabinfo=cat, options=["noboot_slabs", "nr_cpus=2"])

    os.mkdir(mnt.p("a"))
    fd = os.open(mnt.p(".kmemfs", "ctl"), os.O_RDWR)
    try:
        def run(line):
            os.write(fd, (line + "\n").encode())
            return os.read(fd, 4096).decode().strip()
        assert run("alloc dentry 200 cg=/a").startswith("ok alloc")
        assert run("free dentry 200 cg=/a cpu=1").startswith("ok free")
        row = next(l for l in open(mnt.p(".kmemfs", "slabinfo")) if l.startswith("dentry(a)"))
        assert row.split()[1] == "200" and row.split()[-1] == "120"
        assert run("cache_reap") == "ok cache_reap slabs=0"     # touched arrays: untouched
        with pytest.raises(OSError) as exc:
            run("alloc dentry 1 cg=/a cpu=2")                   # nr_cpus=2: CPUs 0 and 1
        assert exc.value.errno == errno.EINVAL
        assert os.read(fd, 4096).decode() == "error: EINVAL: cpu=2: the model has nr_cpus=2\n"
        assert run("reap") == "ok reap slabs=10"
        assert int(open(mnt.p("a", "memory.kmem.usage_in_bytes")).read()) == 0
    finally:
        os.close(fd)
