"""Every example script under scripts/examples/ runs against a real mount of the default
catalogue (the 3.4.0-rc6 SLAB dump), and its numbers are checked against the geometry."""
import math
import os
import re

import pytest

from kmemfs.engine import load_catalogue
from kmemfs.engine.catalogue import is_general, off_slab
from kmemfs.engine.tasks import FORK_RECIPE
from mounting import ROOT, sh

pytestmark = pytest.mark.e2e
PAGE = 4096
GEO = {s.name: s for s in load_catalogue()}


def run(mnt, name):
    r = sh(f"bash {os.path.join(ROOT, 'scripts', 'examples', name)} {mnt.path}")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(re.findall(r"^(\w+)=(-?\d+)$", r.stdout, re.M)), r.stdout


def pages(name, objects):
    s = GEO[name]
    return math.ceil(objects / s.objperslab) * s.pagesperslab


def descriptor_pages(name, objects):
    """Pages of size-N slabs holding the off-slab slab descriptors of `objects` objects of
    `name` (3.3 mm/slab.c kmem_cache_create CFLGS_OFF_SLAB, alloc_slabmgmt from slabp_cache)."""
    s = GEO[name]
    off, slab_size = off_slab(s.name, s.objsize, s.objperslab, s.pagesperslab)
    if not off:
        return 0
    general = min((g for g in GEO.values() if is_general(g.name) and g.objsize >= slab_size),
                  key=lambda g: g.objsize)
    return pages(general.name, math.ceil(objects / s.objperslab))


def test_independent_limit_stops_dentry_flood(mnt):
    """01/10 memcg_charge_kmem, independent mode: files are made one by one (dentry, then inode)
    until the 1M kmem limit refuses a slab; nothing reaches memory.usage_in_bytes."""
    v, out = run(mnt, "01-independent-limit.sh")
    limit_pages = (1 << 20) // PAGE
    files = 0
    while pages("dentry", files + 1) + pages("inode_cache", files + 1) <= limit_pages:
        files += 1
    assert "write while dependent: EINVAL" in out
    assert int(v["files"]) == files == 1323
    assert int(v["kmem_usage"]) == 1 << 20
    assert int(v["usage"]) == 0


def test_dependent_reclaim_then_oom(mnt):
    """01/10 (dependent mode), 3.3.8 __mem_cgroup_try_charge, oom_badness: kmem at the limit
    reclaims page cache first, then OOM-kills the task with the most memory, then the smaller one."""
    v, out = run(mnt, "02-dependent-reclaim-oom.sh")
    assert v["first_victim"] == v["big"]
    assert int(v["reclaimed_pages"]) == 256          # all of the 1M page cache
    assert int(v["oom_kills"]) == 2
    assert int(v["cache"]) == int(v["rss"]) == 0
    assert int(v["tasks"]) == 0
    assert int(v["usage"]) == int(v["kmem_usage"]) <= 2 << 20
    assert int(v["failcnt"]) > 0
    assert out.index(" reclaim ") < out.index(" oom_kill ")


def test_fork_bomb_contained(mnt):
    """01/10, 05/10 mem_cgroup_get_kmem_cache: each fork allocates FORK_RECIPE from per-cgroup
    caches; the 200K kmem limit (50 pages) stops fork at the first task whose objects need a page
    too many."""
    v, _ = run(mnt, "03-fork-bomb.sh")

    def fork_pages(n):    # the slabs, and the size-64 slabs of signal_cache's descriptors
        return sum(pages(name, n * k) + descriptor_pages(name, n * k) for name, k in FORK_RECIPE)
    n = 0
    while fork_pages(n + 1) <= 50:
        n += 1
    assert int(v["forks"]) == int(v["tasks"]) == n
    assert int(v["kmem_usage"]) <= 200 * 1024
    assert int(v["usage"]) == 0


def test_per_cgroup_caches(mnt):
    """05/10 mem_cgroup_get_kmem_cache, memcg_create_kmem_cache: orig(basename) copies, newest
    first; NOFS queues creation; basenames can repeat."""
    v, out = run(mnt, "04-per-cgroup-caches.sh")
    assert "ok kmalloc cache=size-128(a) count=5" in out
    assert "ok alloc cache=inode_cache count=1 cgroup=/a gfp=GFP_NOFS" in out
    assert "ok workqueue created=1 inode_cache(a)" in out
    assert int(v["kmem_usage_after_nofs"]) == (pages("dentry", 30) + pages("size-128", 5)) * PAGE
    assert int(v["web_copies"]) == 2
    assert int(v["a_kmem"]) == int(v["kmem_usage_after_nofs"]) + pages("inode_cache", 1) * PAGE
    assert int(v["b_kmem"]) == pages("dentry", 5) * PAGE
    assert "inode_cache(a),size-128(a),dentry(a)" in out


def test_dead_caches_after_rmdir(mnt):
    """05/10 memcg_slab_move, kmem_cache_drop_ref: rmdir renames copies ...dead; drop_caches frees
    the objects but empty slabs stay (free_limit) until reap destroys them, and the caches with
    them."""
    v, out = run(mnt, "05-dead-caches.sh")
    assert int(v["kmem_before"]) == (pages("dentry", 100) + pages("inode_cache", 100)) * PAGE
    assert int(v["dead_after_rmdir"]) == 2
    assert int(v["dead_after_drop"]) == 2
    assert int(v["dead_after_reap"]) == 0
    assert "dentry(t)dead        100    100    192" in out


def test_noaccount_and_noio(mnt):
    """04/10, 05/10: __GFP_NOACCOUNT is never charged; 01/10 may_oom and the cover letter:
    GFP_NOIO fails at the limit without OOM, GFP_KERNEL OOM-kills."""
    v, out = run(mnt, "06-noaccount-noio.sh")
    assert int(v["kmem_after_noaccount"]) == 0
    assert int(v["usage_full"]) == 256 * 1024
    # The slab's free objects, no more: the spawn made size-64(n) for signal_cache's off-slab
    # descriptor (one object), `alloc size-64 1` took a second one.
    per_slab = GEO["size-64"].objperslab
    assert f"allocated {per_slab - 2} of 100" in out
    assert int(v["noio_oom_kills"]) == 0
    assert int(v["kernel_oom_kills"]) == 1
    assert int(v["tasks"]) == 0


def test_root_accounting(mount_factory):
    """08/10: boot slab in root's kmem; NOACCOUNT growth charged to root; rmdir moves
    the remaining kmem to root; the dead cache's pages come off root when destroyed."""
    mnt = mount_factory(options=["acct_root"])
    v, out = run(mnt, "07-root-accounting.sh")
    boot = sum(s.num_slabs * s.pagesperslab for s in GEO.values()) * PAGE
    assert int(v["root_kmem_boot"]) == boot
    assert int(v["r_kmem"]) == pages("dentry", 100) * PAGE
    assert int(v["root_kmem_unchanged"]) == 1
    assert int(v["root_kmem_after_noaccount"]) == 3 * GEO["size-4096"].pagesperslab * PAGE
    assert int(v["root_kmem_moved"]) == pages("dentry", 100) * PAGE
    assert int(v["dead_in_root_file"]) == 0         # memcg is root, not NULL (09/10)
    assert int(v["dead_left"]) == 0
    assert int(v["root_kmem_reaped"]) >= pages("dentry", 100) * PAGE


def test_root_accounting_refused_without_option(mnt):
    r = sh(f"bash {os.path.join(ROOT, 'scripts', 'examples', '07-root-accounting.sh')} {mnt.path}")
    assert r.returncode == 2 and "acct_root" in r.stderr
