"""Host cache names -> the 3.4 catalogue, and modern gfp text -> 3.3 bits (kmemfs/trace/names.py).

Sources: the 3.4.0-rc6 SLAB dump (kmemfs/engine/data), this machine's /proc/slabinfo and
/sys/kernel/slab (in the fixtures' headers), 3.3.8 include/linux/gfp.h, 6.18's gfp_types.h
(as printed in the kmem tracepoints' format files), mm/slab_common.c kmalloc_info[].
"""
import os
from collections import Counter

import pytest

from kmemfs.engine import catalogue
from kmemfs.engine.gfp import GFP_KERNEL, GFP_NOFS, Gfp
from kmemfs.trace import names
from kmemfs.trace.format import Event, read_trace
from kmemfs.trace.names import Catalogue, Mapper, call_site_function, gfp_info, gfp_to_33, map_cache

DATA = os.path.join(os.path.dirname(__file__), "data", "traces")
CAT = Catalogue.from_specs(catalogue.load())


def alloc(cache, nbytes=64, gfp="GFP_KERNEL", call_site="f+0x1/0x2", req=None):
    return Event(0, 0, 1, "alloc", cache, 0xffff888100000000, nbytes if req is None else req,
                 nbytes, gfp, "task", False, call_site, 0, "t")


def m(cache, nbytes=64, aliases=None, **kw):
    return map_cache(alloc(cache, nbytes, **kw), CAT, aliases)


# --- one test per rule ---------------------------------------------------------------------

def test_same_name():
    assert m("dentry", 192) == ("dentry", "same", False)
    assert m("names_cache", 4096) == ("names_cache", "same", False)


@pytest.mark.parametrize("host,old", [
    ("cred", "cred_jar"), ("kernfs_node_cache", "sysfs_dir_cache"),
    ("request_queue", "blkdev_queue"), ("biovec-max", "biovec-256"), ("rtable", "ip_dst_cache"),
    ("inet_peer", "inet_peer_cache"), ("xfrm_dst", "xfrm_dst_cache"), ("UNIX-STREAM", "UNIX"),
    ("aio_kiocb", "kiocb"), ("file_lease_cache", "file_lock_cache"),
    ("fanotify_mark", "fsnotify_mark"), ("fib6_node", "fib6_nodes"),
    ("bio-184", "bio-0"), ("bio-376", "bio-0")])
def test_renames(host, old):
    assert old in CAT.names
    assert m(host) == (old, "rename", False)


def test_every_rename_target_is_in_the_catalogue():
    assert set(names.RENAMES.values()) <= CAT.names


@pytest.mark.parametrize("host,nbytes,old", [
    ("kmalloc-8", 8, "size-32"), ("kmalloc-96", 96, "size-128"), ("kmalloc-192", 192, "size-192"),
    ("kmalloc-cg-1k", 1024, "size-1024"), ("kmalloc-rcl-64", 64, "size-64"),
    ("kmalloc-8k", 8192, "size-8192"), ("dma-kmalloc-512", 512, "size-512(DMA)"),
    ("memdup_user-2k", 2048, "size-2048"), ("msg_msg-96", 96, "size-128"),
    ("", 16, "size-32"), ("", 256, "size-256"), ("", 264, "size-512")])
def test_kmalloc_families_fit_the_smallest_size_cache(host, nbytes, old):
    """3.3 kmalloc picks the first size-N >= the size (include/linux/kmalloc_sizes.h); a
    kmalloc event carries no name."""
    assert m(host, nbytes) == (old, "kmalloc", False)


def test_named_kmalloc_without_bytes_uses_the_name():
    assert m("kmalloc-cg-512", 0) == ("size-512", "kmalloc", False)


def test_nameless_dma_kmalloc():
    assert m("", 100, gfp="GFP_KERNEL|GFP_DMA") == ("size-128(DMA)", "kmalloc", False)
    assert m("", 100, gfp="GFP_KERNEL|GFP_DMA32")[0] == "size-128"


@pytest.mark.parametrize("nbytes,old", [(16384, "size-16384"), (65536, "size-65536"),
                                        (4194304, "size-4194304")])
def test_large_kmalloc_pages_were_slab_in_33(nbytes, old):
    """Above KMALLOC_MAX_CACHE_SIZE (2 pages) SLUB's kmalloc_large takes pages (still traced as
    kmalloc); 3.3 SLAB served up to 4 MiB from size-N caches."""
    assert m("", nbytes) == (old, "kmalloc-large", False)


def test_larger_than_any_size_cache():
    assert m("", 8 << 20) == (None, "too-large", True)


def test_caches_3_4_kmalloced_map_like_kmalloc_unflagged():
    assert m("skbuff_small_head", 640) == ("size-1024", "kmalloc", False)
    assert m("seq_file", 120) == ("size-128", "kmalloc", False)


def test_no_counterpart_maps_by_size_flagged():
    assert m("maple_node", 256) == ("size-256", "by-size", True)
    assert m("lsm_file_cache", 24) == ("size-32", "by-size", True)


@pytest.mark.parametrize("ev", [
    alloc("", 64, call_site="alloc_slab_obj_exts+0x58/0x110"),
    alloc("", 64, gfp="GFP_KERNEL|__GFP_ZERO|__GFP_NO_OBJ_EXT"),
    alloc("kmalloc-64", 64, call_site="obj_cgroup_alloc+0x1/0x2"),
    alloc("", 64, call_site="memcg_list_lru_alloc.isra.0+0x1/0x2")])
def test_memcg_only_allocations_are_dropped(ev):
    assert map_cache(ev, CAT) == (None, "memcg-only", False)


# --- SLUB aliases ----------------------------------------------------------------------------

ALIASES = {"cred": "pid", "fs_cache": "anon_vma_chain", "eventpoll_pwq": "anon_vma_chain",
           "UNIX": "signal_cache", "UNIX-STREAM": "signal_cache", "biovec-16": "key_jar",
           "sgpool-8": "key_jar", "tcp_bind_bucket": "eventpoll_epi",
           "tcp_bind2_bucket": "eventpoll_epi", "fib6_node": "eventpoll_epi"}


@pytest.mark.parametrize("host,cs,want", [
    ("pid", "prepare_creds+0x24/0x3d0", ("cred_jar", "alias+rename", False)),
    ("pid", "alloc_pid+0x1/0x2", ("pid", "same", False)),
    ("anon_vma_chain", "copy_fs_struct+0x1/0x2", ("fs_cache", "alias+same", False)),
    ("anon_vma_chain", "anon_vma_clone+0x1/0x2", ("anon_vma_chain", "same", False)),
    ("signal_cache", "sk_prot_alloc+0x1/0x2", ("UNIX", "alias+same", False)),
    ("signal_cache", "copy_process+0x1/0x2", ("signal_cache", "same", False)),
    ("key_jar", "mempool_alloc_noprof+0x1/0x2", ("biovec-16", "alias+same", False)),
    ("key_jar", "bvec_alloc+0x1/0x2", ("biovec-16", "alias+same", False)),
    ("eventpoll_epi", "inet_bind_bucket_create+0x1/0x2", ("tcp_bind_bucket", "alias+same", False)),
    ("eventpoll_epi", "inet_bind2_bucket_create+0x1/0x2", ("size-128", "alias+by-size", True)),
    ("eventpoll_epi", "unknown_fn+0x1/0x2", ("eventpoll_epi", "same", False))])
def test_merged_caches_are_resolved_by_call_site(host, cs, want):
    """SLUB reports a merged cache under its first name (mm/slab_common.c
    find_mergeable/__kmem_cache_alias): the call site says which alias it really is."""
    assert m(host, 128, aliases=ALIASES, call_site=cs) == want


def test_alias_resolution_needs_the_alias_map():
    assert m("pid", 128, aliases={}, call_site="prepare_creds+0x1/0x2") == ("pid", "same", False)


@pytest.mark.parametrize("cs,fn", [("getname_flags.part.0+0x24/0x1f0", "getname_flags"),
                                   ("mempool_alloc_noprof+0x5/0x9", "mempool_alloc"),
                                   ("f+0x1/0x2 [ext4]", "f"), ("plain", "plain"), ("", "")])
def test_call_site_function(cs, fn):
    assert call_site_function(cs) == fn


def test_mapper_memoizes_and_agrees():
    mp = Mapper(CAT, ALIASES)
    e = alloc("pid", 192, call_site="prepare_creds+0x1/0x2")
    assert mp(e) == map_cache(e, CAT, ALIASES) == mp(e)
    assert Mapper({"size-32": 32, "dentry": 192})(alloc("", 20)) == ("size-32", "kmalloc", False)


# --- gfp -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,bits", [
    ("GFP_KERNEL", int(GFP_KERNEL)), ("GFP_NOFS", int(GFP_NOFS)), ("GFP_NOIO", int(Gfp.WAIT)),
    ("GFP_ATOMIC", int(Gfp.HIGH)), ("GFP_NOWAIT", 0x200),
    ("GFP_KERNEL_ACCOUNT", int(GFP_KERNEL)), ("GFP_KERNEL|__GFP_ZERO", int(GFP_KERNEL) | 0x8000),
    ("GFP_NOFS|__GFP_NOFAIL", int(GFP_NOFS | Gfp.NOFAIL)),
    ("GFP_KERNEL|__GFP_NORETRY|__GFP_NOWARN", int(GFP_KERNEL | Gfp.NORETRY) | 0x200),
    ("__GFP_DIRECT_RECLAIM|__GFP_KSWAPD_RECLAIM|__GFP_IO|__GFP_FS", int(GFP_KERNEL)),
    ("GFP_KERNEL|__GFP_RETRY_MAYFAIL", int(GFP_KERNEL) | 0x400),
    ("__GFP_IO", 0x40 | 0x400000)])
def test_gfp_to_33(text, bits):
    """6.18: __GFP_DIRECT_RECLAIM is 3.3's __GFP_WAIT (0x10); GFP_ATOMIC = __GFP_HIGH |
    __GFP_KSWAPD_RECLAIM = 3.3's __GFP_HIGH; GFP_NOWAIT = KSWAPD_RECLAIM | NOWARN = 3.3's
    (GFP_ATOMIC & ~__GFP_HIGH) | __GFP_NOWARN; no KSWAPD_RECLAIM = 3.3's __GFP_NO_KSWAPD
    (0x400000); __GFP_RETRY_MAYFAIL was __GFP_REPEAT (0x400)."""
    assert gfp_to_33(text) == bits


def test_gfp_account_and_nofail():
    i = gfp_info("GFP_NOFS|__GFP_ZERO|__GFP_NOFAIL|__GFP_HARDWALL|__GFP_ACCOUNT")
    assert i.account and i.nofail and i.bits & Gfp.NOFAIL and not i.unknown
    assert gfp_info("GFP_KERNEL_ACCOUNT").account
    assert not gfp_info("GFP_KERNEL").account and not gfp_info("GFP_KERNEL").nofail


def test_gfp_none_and_unknown_words():
    assert gfp_to_33("none") == 0x400000
    assert gfp_info("GFP_KERNEL|__GFP_FUTURE|0x1000000000").unknown == ("__GFP_FUTURE",
                                                                          "0x1000000000")


def test_every_gfp_word_of_the_fixtures_is_known():
    seen = set()
    for fx in ("forkloop", "files", "sockets"):
        _, it = read_trace(os.path.join(DATA, f"{fx}.trace.gz"))
        seen |= {e.gfp for e in it if e.op == "alloc"}
    assert seen and all(not gfp_info(g).unknown for g in seen)


# --- the fixtures: counts the workloads imply ----------------------------------------------

def mapped(fixture):
    h, it = read_trace(os.path.join(DATA, f"{fixture}.trace.gz"))
    mp = Mapper(CAT, h.slub_aliases)
    evs = list(it)
    return evs, Counter(mp(e).name for e in evs if e.op == "alloc"), mp


def test_forkloop_one_task_per_fork():
    """20 fork+exec of /bin/true: copy_process allocates one task_struct, signal_struct,
    sighand_struct and files_struct per fork (kernel/fork.c), prepare_creds one cred each."""
    evs, c, mp = mapped("forkloop")
    forks = sum(e.op == "fork" for e in evs)
    assert forks == 20
    for cache in ("task_struct", "signal_cache", "sighand_cache", "files_cache"):
        assert c[cache] == forks, cache
    assert c["cred_jar"] >= forks           # plus exec's prepare_exec_creds
    assert c["mm_struct"] >= forks          # exec's mm (the fork's mm copy too for sh)


def test_files_one_dentry_and_inode_per_file():
    """200 files + the directory: one dentry and one ext4 inode each (d_alloc, ext4_alloc_inode)."""
    _, c, _ = mapped("files")
    assert c["dentry"] >= 201 and c["ext4_inode_cache"] >= 201


def test_sockets_per_protocol_cache():
    """30 x (socketpair + TCP + UDP): 4 socket inodes per round; UNIX sockets are reported
    under signal_cache (SLUB merge) and recovered through sk_prot_alloc; each TCP bind makes
    one tcp_bind_bucket (inet_csk_get_port)."""
    _, c, _ = mapped("sockets")
    assert c["sock_inode_cache"] == 120
    assert c["TCP"] == 30 and c["UDP"] == 30 and c["UNIX"] == 60
    assert c["tcp_bind_bucket"] == 30


@pytest.mark.parametrize("fixture", ["forkloop", "files", "sockets"])
def test_every_fixture_allocation_maps(fixture):
    evs, c, mp = mapped(fixture)
    rules = Counter(mp(e).rule for e in evs if e.op == "alloc")
    assert c[None] == rules["memcg-only"]              # only memcg-only drops
    assert set(c) - {None} <= CAT.names
