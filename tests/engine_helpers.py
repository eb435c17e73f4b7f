"""Shared helpers for the engine tests: a small slabinfo 2.1 catalogue with exact geometry
and an `Engine` factory.

Geometry (objsize, objperslab, pagesperslab, tunables) is copied from the real 3.4.0-rc6
SLAB dump in kmemfs/engine/data, so the numbers in the tests are the kernel's own.
Rows are newest first, as /proc/slabinfo prints them; `kmem_cache` is the oldest cache.
Only `kmem_cache` and `size-4096` carry boot state (used with Config(boot_slabs=True)).
"""
from kmemfs.engine import Config, Engine, parse_catalogue

PAGE = 4096

_ROWS = [
    # name            active num objsize perslab pages  limit batch shared  aslabs nslabs
    ("dentry",            0,   0,  192, 20, 1, 120, 60, 8, 0, 0),
    ("inode_cache",       0,   0,  552,  7, 1,  54, 27, 8, 0, 0),
    ("task_struct",       0,   0, 1584,  5, 2,  24, 12, 8, 0, 0),
    ("cred_jar",          0,   0,  192, 20, 1, 120, 60, 8, 0, 0),
    ("signal_cache",      0,   0, 1024,  4, 1,  54, 27, 8, 0, 0),
    ("sighand_cache",     0,   0, 2112,  3, 2,  24, 12, 8, 0, 0),
    ("files_cache",       0,   0,  704, 11, 2,  54, 27, 8, 0, 0),
    ("fs_cache",          0,   0,   64, 59, 1, 120, 60, 8, 0, 0),
    ("mm_struct",         0,   0,  896,  4, 1,  54, 27, 8, 0, 0),
    ("vm_area_struct",    0,   0,  168, 23, 1, 120, 60, 8, 0, 0),
    ("anon_vma",          0,   0,   64, 59, 1, 120, 60, 8, 0, 0),
    ("anon_vma_chain",    0,   0,   48, 77, 1, 120, 60, 8, 0, 0),
    ("pid",               0,   0,  128, 30, 1, 120, 60, 8, 0, 0),
    ("size-4096",         3,   3, 4096,  1, 1,  24, 12, 8, 3, 3),
    ("size-2048",         0,   0, 2048,  2, 1,  24, 12, 8, 0, 0),
    ("size-1024",         0,   0, 1024,  4, 1,  54, 27, 8, 0, 0),
    ("size-512",          0,   0,  512,  8, 1,  54, 27, 8, 0, 0),
    ("size-256",          0,   0,  256, 15, 1, 120, 60, 8, 0, 0),
    ("size-192",          0,   0,  192, 20, 1, 120, 60, 8, 0, 0),
    ("size-128(DMA)",     0,   0,  128, 30, 1, 120, 60, 8, 0, 0),
    ("size-128",          0,   0,  128, 30, 1, 120, 60, 8, 0, 0),
    ("size-64(DMA)",      0,   0,   64, 59, 1, 120, 60, 8, 0, 0),
    ("size-64",           0,   0,   64, 59, 1, 120, 60, 8, 0, 0),
    ("size-32",           0,   0,   32, 112, 1, 120, 60, 8, 0, 0),
    ("kmem_cache",       30,  40,  192, 20, 1, 120, 60, 8, 2, 2),
]

HEADER = ("slabinfo - version: 2.1\n"
          "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : "
          "tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> "
          "<sharedavail>\n")


def row(name, active, num, objsize, perslab, pages, limit, batch, shared, aslabs, nslabs):
    return ("%-17s %6d %6d %6d %4d %4d : tunables %4d %4d %4d : slabdata %6d %6d %6d\n"
            % (name, active, num, objsize, perslab, pages, limit, batch, shared, aslabs,
               nslabs, 0))


CATALOGUE = HEADER + "".join(row(*r) for r in _ROWS)
GEOMETRY = {r[0]: {"objsize": r[3], "num": r[4], "pages": r[5], "batch": r[7]} for r in _ROWS}
# Boot slab pages of the catalogue (kmem_cache 2 + size-4096 3).
BOOT_BYTES = (2 + 3) * PAGE

# The first spawn in a fresh cgroup grows one slab in every FORK_RECIPE cache:
# task_struct 2 + cred_jar 1 + signal_cache 1 + sighand_cache 2 + files_cache 2 + fs_cache 1
# + mm_struct 1 + vm_area_struct 1 + anon_vma 1 + anon_vma_chain 1 + pid 1 = 14 pages, plus
# 1 page of size-64: signal_cache (1024 bytes, 4 per page, no room left) keeps its struct slab
# off-slab (mm/slab.c kmem_cache_create, CFLGS_OFF_SLAB) and alloc_slabmgmt takes 4*4+48 = 64
# bytes from the cgroup's size-64 copy (05/10 mem_cgroup_get_kmem_cache). 15 pages.
FIRST_SPAWN_BYTES = 15 * PAGE


def slab_bytes(name: str) -> int:
    return GEOMETRY[name]["pages"] * PAGE


def free_limit(name: str, nr_cpus: int = 1) -> int:
    g = GEOMETRY[name]
    return (1 + nr_cpus) * g["batch"] + g["num"]


def make_engine(**config) -> Engine:
    """An engine on the small catalogue; boot slabs, SLAB's array caches and the per-CPU
    charge stock off unless asked for (3.3's defaults are arrays on and charge_batch=32): tests
    of other rules use the simple SLAB model and exact counters."""
    config.setdefault("boot_slabs", False)
    config.setdefault("array_caches", False)
    config.setdefault("charge_batch", 0)
    return Engine(Config(**config), specs=parse_catalogue(CATALOGUE, "test-catalogue"))


def events(engine, kind=None, since=0):
    return [(k, f) for _, k, f in engine.events_since(since) if kind is None or k == kind]
