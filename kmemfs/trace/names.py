"""Host (Linux 6.x, SLUB) cache names and gfp text -> the 3.4-era catalogue and 3.3 gfp bits.

First the reported name is resolved to the real host cache (resolve_alias); then one table of
rules is tried in order (RULES); each rule is a function (event, host_name, ctx) -> catalogue
name | DROP | None (None: the next rule). docs/trace.md lists the table.

SLUB merges caches of the same geometry: an allocation from `cred` is reported under the name
of the cache it was merged into (`pid` here). The alias map in the trace header says which
names share a cache; ALIAS_CALL_SITES then recovers the real cache from the call site.
Pure: no host I/O.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping as MappingT, NamedTuple

from ..engine.gfp import Gfp

DROP = ""           # a rule's verdict: the allocation exists only because of today's memcg


class Mapping(NamedTuple):
    name: str | None    # catalogue cache; None = dropped (see rule)
    rule: str           # the rule that decided (RULES' names)
    flagged: bool       # no 3.4 counterpart: mapped onto size-M by size only


# --- the kmalloc families -----------------------------------------------------------------

# kmalloc-96, kmalloc-8k, kmalloc-cg-1k, kmalloc-rcl-64, dma-kmalloc-512, and the 6.11+
# dedicated bucket sets (memdup_user-N, msg_msg-N: kmem_buckets_create).
_KMALLOC_RE = re.compile(r"^(?:(dma-)?kmalloc(?:-cg|-rcl)?|memdup_user|msg_msg)-(\d+)(k?)$")

# Caches 6.x has that 3.4 did not, whose objects 3.4 kmalloc'ed: mapped like kmalloc, unflagged.
KMALLOCED_IN_34 = {
    "skbuff_small_head": "__alloc_skb's head: kmalloc in 3.4 (net/core/skbuff.c)",
    "vmap_area": "alloc_vmap_area: kmalloc_node in 3.4 (mm/vmalloc.c)",
    "seq_file": "seq_open: kmalloc in 3.4 (fs/seq_file.c)",
    "kernfs_iattrs_cache": "sysfs_sd_setattr: kzalloc of sysfs_inode_attrs in 3.4",
    "pde_opener": "proc_reg_open: kmalloc in 3.4 (fs/proc/inode.c)",
    "ip4-frags": "inet_frag_alloc: kzalloc(qsize) in 3.4 (net/ipv4/inet_fragment.c)",
    "ip6-frags": "inet_frag_alloc: kzalloc(qsize) in 3.4",
}

# --- renames: the same objects under another name in 3.4 ----------------------------------
RENAMES = {
    "cred": "cred_jar",                    # kernel/cred.c: cred_jar
    "kernfs_node_cache": "sysfs_dir_cache",  # sysfs_dirent became kernfs_node (3.14)
    "request_queue": "blkdev_queue",       # block/blk-core.c
    "biovec-max": "biovec-256",            # BIO_MAX_PAGES = 256
    "rtable": "ip_dst_cache",              # net/ipv4/route.c
    "inet_peer": "inet_peer_cache",
    "xfrm_dst": "xfrm_dst_cache",
    "fib6_node": "fib6_nodes",
    "UNIX-STREAM": "UNIX",                 # split from UNIX in 6.x
    "aio_kiocb": "kiocb",
    "file_lease_cache": "file_lock_cache",  # leases split from file locks (6.9)
    "fanotify_mark": "fsnotify_mark",      # fanotify_user.c: KMEM_CACHE(fsnotify_mark)
    "fanotify_fid_event": "fsnotify_event",
    "fanotify_path_event": "fsnotify_event",
    "fanotify_perm_event": "fsnotify_event",
}
_BIO_RE = re.compile(r"^bio-\d+$")       # bioset slabs, named by front pad; 3.4 has bio-0

# SLUB-merged caches: the call site tells which of the aliases an allocation really is.
# Function (call_site up to '+' or '.', without _noprof) -> host cache name.
ALIAS_CALL_SITES = {
    "prepare_creds": "cred", "prepare_kernel_cred": "cred", "cred_alloc_blank": "cred",
    "alloc_pid": "pid",
    "copy_fs_struct": "fs_cache",
    "ep_ptable_queue_proc": "eventpoll_pwq",
    "anon_vma_clone": "anon_vma_chain", "anon_vma_fork": "anon_vma_chain",
    "__anon_vma_prepare": "anon_vma_chain",
    "dup_fd": "files_cache",
    "copy_signal": "signal_cache", "copy_process": "signal_cache",
    "alloc_vfsmnt": "mnt_cache",
    "alloc_posix_timer": "posix_timers_cache",
    "create_nsproxy": "nsproxy", "create_new_namespaces": "nsproxy",
    "__sigqueue_alloc": "sigqueue", "__send_signal_locked": "sigqueue",
    "inotify_new_watch": "inotify_inode_mark",
    "fcntl_dirnotify": "dnotify_mark",
    "__delayacct_tsk_init": "task_delay_info",
    "inet_bind_bucket_create": "tcp_bind_bucket",
    "inet_bind2_bucket_create": "tcp_bind2_bucket",
    "ep_insert": "eventpoll_epi",
    "fasync_alloc": "fasync_cache",
    "create_user_ns": "user_namespace",
    "create_pid_namespace": "pid_namespace",
    "net_alloc": "net_namespace",
    "alloc_buffer_head": "buffer_head",
    "security_file_alloc": "lsm_file_cache",
    "security_inode_alloc": "lsm_inode_cache",
}
# Call sites that allocate from one family of a merged group: bio vectors (sgpool-N merges
# with biovec-N) and sockets (sk_prot_alloc allocates the protocol's cache).
BIOVEC_CALL_SITES = {"bvec_alloc", "mempool_alloc", "biovec_init_pool"}
SOCKET_CALL_SITES = {"sk_prot_alloc"}

# Allocations that exist only because of today's memcg: dropped (the series had none of them).
MEMCG_ONLY_CALL_SITES = {
    "alloc_slab_obj_exts": "slab obj_exts vector (per-object memcg pointers, 5.9+)",
    "memcg_alloc_slab_cgroups": "the same vector before 6.1",
    "obj_cgroup_alloc": "obj_cgroup (5.9+)",
    "memcg_list_lru_alloc": "per-memcg list_lru (memcg-aware shrinkers, 4.x+)",
}


def call_site_function(call_site: str) -> str:
    """'getname_flags.part.0+0x24/0x1f0' -> 'getname_flags'; 'mempool_alloc_noprof+0x5/0x9'
    -> 'mempool_alloc' (6.10+ memory-profiling wrappers)."""
    end = len(call_site)
    for sep in ("+", ".", " "):
        i = call_site.find(sep)
        if 0 <= i < end:
            end = i
    fn = call_site[:end]
    return fn[:-7] if fn.endswith("_noprof") else fn


def _is_socket_cache(name: str) -> bool:
    """Protocol caches are named in capitals: TCP, UDPv6, UNIX-STREAM, PINGv6, RAW, ..."""
    head = name.split("-", 1)[0]
    return head[:3].isupper()


def resolve_alias(event, aliases: MappingT[str, str]) -> str:
    """The host cache an allocation really came from, when SLUB reports a merged cache's
    name: recovered from the call site (ALIAS_CALL_SITES, BIOVEC_CALL_SITES,
    SOCKET_CALL_SITES); else the reported name."""
    host = event.cache
    group = [a for a, rep in aliases.items() if rep == host]
    if not group:
        return host
    fn = call_site_function(event.call_site)
    real = ALIAS_CALL_SITES.get(fn)
    if real is not None:
        return real if real in group else host
    if fn in BIOVEC_CALL_SITES and not host.startswith("biovec-"):
        bv = [a for a in group if a.startswith("biovec-")]
        return bv[0] if len(bv) == 1 else host
    if fn in SOCKET_CALL_SITES and not _is_socket_cache(host):
        socks = [a for a in group if _is_socket_cache(a)]
        if socks and len({RENAMES.get(a, a) for a in socks}) == 1:
            return socks[0]
    return host


# --- size-M ---------------------------------------------------------------------------------

class Catalogue:
    """The catalogue's names and the general caches' sizes, for fitting."""

    def __init__(self, sizes: MappingT[str, int]):
        self.names = frozenset(sizes)
        self.general = sorted(sizes[n] for n in sizes if re.fullmatch(r"size-\d+", n))
        self.general_dma = sorted(sizes[n] for n in sizes if re.fullmatch(r"size-\d+\(DMA\)", n))

    @classmethod
    def from_specs(cls, specs: Iterable) -> "Catalogue":
        return cls({s.name: s.objsize for s in specs})

    def fit(self, nbytes: int, dma: bool = False) -> str | None:
        """The smallest general cache holding nbytes (3.3 kmalloc's choice), None if too big."""
        sizes = self.general_dma if dma and self.general_dma else self.general
        for s in sizes:
            if s >= nbytes:
                return f"size-{s}(DMA)" if sizes is self.general_dma else f"size-{s}"
        return None


def _kmalloc_size(name: str) -> tuple[int, bool] | None:
    m = _KMALLOC_RE.match(name)
    if not m:
        return None
    n = int(m.group(2)) * (1024 if m.group(3) else 1)
    return n, bool(m.group(1))


class _Ctx(NamedTuple):
    cat: Catalogue
    aliases: MappingT[str, str]      # alias name -> name the host reports (merge target)


def _rule_memcg_only(ev, host, ctx):
    if "__GFP_NO_OBJ_EXT" in ev.gfp or call_site_function(ev.call_site) in MEMCG_ONLY_CALL_SITES:
        return DROP
    return None


def _rule_same(ev, host, ctx):
    return host if host in ctx.cat.names else None


def _rule_rename(ev, host, ctx):
    new = RENAMES.get(host)
    if new is None and _BIO_RE.match(host):
        new = "bio-0"
    return new if new in ctx.cat.names else None


def _is_dma(ev) -> bool:
    return "GFP_DMA" in ev.gfp and "GFP_DMA32" not in ev.gfp


# SLUB's KMALLOC_MAX_CACHE_SIZE (two pages): larger kmallocs go to the page allocator today
# (kmalloc_large, still traced as kmalloc) but came from size-16384 ... size-4194304 in 3.3.
KMALLOC_MAX_CACHE_SIZE = 8192


def _rule_kmalloc_large(ev, host, ctx):
    if host == "" and ev.bytes_alloc > KMALLOC_MAX_CACHE_SIZE:
        return ctx.cat.fit(ev.bytes_alloc, _is_dma(ev))
    return None


def _rule_kmalloc(ev, host, ctx):
    if host == "":                              # kmalloc events: no name, fit bytes_alloc
        return ctx.cat.fit(ev.bytes_alloc or ev.bytes_req, _is_dma(ev))
    k = _kmalloc_size(host)
    if k is not None:
        return ctx.cat.fit(ev.bytes_alloc or k[0], k[1])
    if host in KMALLOCED_IN_34:
        return ctx.cat.fit(ev.bytes_alloc or ev.bytes_req)
    return None


def _rule_by_size(ev, host, ctx):
    return ctx.cat.fit(ev.bytes_alloc or ev.bytes_req)


# (rule name, function, flagged). Order matters: first match wins.
RULES = (
    ("memcg-only", _rule_memcg_only, False),
    ("same", _rule_same, False),
    ("rename", _rule_rename, False),
    ("kmalloc-large", _rule_kmalloc_large, False),
    ("kmalloc", _rule_kmalloc, False),
    ("by-size", _rule_by_size, True),
)


def map_cache(event, catalogue: Catalogue | MappingT[str, int],
              aliases: MappingT[str, str] | None = None) -> Mapping:
    """Which catalogue cache an allocation event lands in (see RULES and docs/trace.md).

    catalogue: a Catalogue or {name: objsize}; aliases: the trace header's slub_aliases.
    """
    cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue(catalogue)
    ctx = _Ctx(cat, aliases or {})
    host = resolve_alias(event, ctx.aliases) if event.cache else ""
    prefix = "alias+" if host != event.cache else ""
    for name, rule, flagged in RULES:
        got = rule(event, host, ctx)
        if got is None:
            continue
        if got == DROP:
            return Mapping(None, name, False)
        return Mapping(got, prefix + name, flagged)
    return Mapping(None, prefix + "too-large", True)


class Mapper:
    """map_cache with a memo keyed by what the rules look at (replay calls it per event)."""

    def __init__(self, catalogue: Catalogue | MappingT[str, int],
                 aliases: MappingT[str, str] | None = None):
        self.cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue(catalogue)
        self.aliases = dict(aliases or {})
        self._memo: dict = {}

    def __call__(self, event) -> Mapping:
        key = (event.cache, event.bytes_alloc, event.bytes_req, event.gfp, event.call_site)
        m = self._memo.get(key)
        if m is None:
            m = self._memo[key] = map_cache(event, self.cat, self.aliases)
        return m


# --- gfp ------------------------------------------------------------------------------------

# 3.3 include/linux/gfp.h bit values.
G33 = {
    "DMA": 0x01, "HIGHMEM": 0x02, "DMA32": 0x04, "MOVABLE": 0x08, "WAIT": 0x10, "HIGH": 0x20,
    "IO": 0x40, "FS": 0x80, "COLD": 0x100, "NOWARN": 0x200, "REPEAT": 0x400, "NOFAIL": 0x800,
    "NORETRY": 0x1000, "COMP": 0x4000, "ZERO": 0x8000, "NOMEMALLOC": 0x10000,
    "HARDWALL": 0x20000, "THISNODE": 0x40000, "RECLAIMABLE": 0x80000, "NO_KSWAPD": 0x400000,
    "WRITE": 0x1000000,
}
assert G33["WAIT"] == Gfp.WAIT and G33["NOFAIL"] == Gfp.NOFAIL and G33["NORETRY"] == Gfp.NORETRY

# Modern (6.18 trace output) names -> 3.3 bits. __GFP_DIRECT_RECLAIM is 3.3's __GFP_WAIT (may
# sleep and reclaim); kswapd is woken in 3.3 unless __GFP_NO_KSWAPD, so __GFP_KSWAPD_RECLAIM
# has no bit of its own (its absence is NO_KSWAPD, see gfp_to_33). __GFP_RETRY_MAYFAIL is the
# old __GFP_REPEAT. __GFP_ACCOUNT, __GFP_ZEROTAGS, __GFP_NO_OBJ_EXT, __GFP_MEMALLOC: no 3.3 bit.
_MOD_BITS = {
    "__GFP_DMA": G33["DMA"], "__GFP_HIGHMEM": G33["HIGHMEM"], "__GFP_DMA32": G33["DMA32"],
    "__GFP_MOVABLE": G33["MOVABLE"], "__GFP_RECLAIMABLE": G33["RECLAIMABLE"],
    "__GFP_HIGH": G33["HIGH"], "__GFP_IO": G33["IO"], "__GFP_FS": G33["FS"],
    "__GFP_ZERO": G33["ZERO"], "__GFP_DIRECT_RECLAIM": G33["WAIT"], "__GFP_KSWAPD_RECLAIM": 0,
    "__GFP_RECLAIM": G33["WAIT"], "__GFP_WRITE": G33["WRITE"], "__GFP_NOWARN": G33["NOWARN"],
    "__GFP_RETRY_MAYFAIL": G33["REPEAT"], "__GFP_NOFAIL": G33["NOFAIL"],
    "__GFP_NORETRY": G33["NORETRY"], "__GFP_MEMALLOC": 0, "__GFP_COMP": G33["COMP"],
    "__GFP_NOMEMALLOC": G33["NOMEMALLOC"], "__GFP_HARDWALL": G33["HARDWALL"],
    "__GFP_THISNODE": G33["THISNODE"], "__GFP_ACCOUNT": 0, "__GFP_ZEROTAGS": 0,
    "__GFP_NO_OBJ_EXT": 0,
}
# The composite masks as 6.18 defines them (include/linux/gfp_types.h), in modern names.
_COMPOSITES = {
    "GFP_ATOMIC": ("__GFP_HIGH", "__GFP_KSWAPD_RECLAIM"),
    "GFP_KERNEL": ("__GFP_RECLAIM", "__GFP_IO", "__GFP_FS"),
    "GFP_KERNEL_ACCOUNT": ("__GFP_RECLAIM", "__GFP_IO", "__GFP_FS", "__GFP_ACCOUNT"),
    "GFP_NOWAIT": ("__GFP_KSWAPD_RECLAIM", "__GFP_NOWARN"),
    "GFP_NOIO": ("__GFP_RECLAIM",),
    "GFP_NOFS": ("__GFP_RECLAIM", "__GFP_IO"),
    "GFP_USER": ("__GFP_RECLAIM", "__GFP_IO", "__GFP_FS", "__GFP_HARDWALL"),
    "GFP_DMA": ("__GFP_DMA",), "GFP_DMA32": ("__GFP_DMA32",),
    "GFP_HIGHUSER": ("__GFP_RECLAIM", "__GFP_IO", "__GFP_FS", "__GFP_HARDWALL",
                     "__GFP_HIGHMEM"),
    "GFP_HIGHUSER_MOVABLE": ("__GFP_RECLAIM", "__GFP_IO", "__GFP_FS", "__GFP_HARDWALL",
                             "__GFP_HIGHMEM", "__GFP_MOVABLE"),
    "GFP_TRANSHUGE_LIGHT": ("__GFP_IO", "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM",
                            "__GFP_MOVABLE", "__GFP_COMP", "__GFP_NOMEMALLOC", "__GFP_NOWARN"),
    "GFP_TRANSHUGE": ("__GFP_IO", "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM",
                      "__GFP_MOVABLE", "__GFP_COMP", "__GFP_NOMEMALLOC", "__GFP_NOWARN",
                      "__GFP_DIRECT_RECLAIM"),
}


class GfpInfo(NamedTuple):
    bits: int           # 3.3 gfp value
    account: bool       # __GFP_ACCOUNT: today's opt-in marks it
    nofail: bool
    unknown: tuple      # words this table doesn't know (ignored)


def _modern_words(text: str) -> tuple[set, list]:
    words, unknown = set(), []
    if text in ("", "none"):
        return words, unknown
    for w in text.split("|"):
        if w in _COMPOSITES:
            words.update(_COMPOSITES[w])
        elif w in _MOD_BITS:
            words.add(w)
        elif w.startswith("0x"):
            unknown.append(w)          # __print_flags prints leftover bits in hex
        else:
            unknown.append(w)
    return words, unknown


_GFP_MEMO: dict[str, GfpInfo] = {}


def gfp_info(text: str) -> GfpInfo:
    """Parse a tracepoint's gfp_flags text ("GFP_KERNEL|__GFP_ZERO", "none")."""
    info = _GFP_MEMO.get(text)
    if info is None:
        words, unknown = _modern_words(text)
        bits = 0
        for w in words:
            bits |= _MOD_BITS[w]
        if "__GFP_KSWAPD_RECLAIM" not in words and "__GFP_RECLAIM" not in words:
            bits |= G33["NO_KSWAPD"]
        info = GfpInfo(bits, "__GFP_ACCOUNT" in words, "__GFP_NOFAIL" in words, tuple(unknown))
        if len(_GFP_MEMO) < 65536:
            _GFP_MEMO[text] = info
    return info


def gfp_to_33(text: str) -> int:
    """The 3.3 gfp bits of a modern gfp text (engine bits: kmemfs.engine.gfp.Gfp)."""
    return gfp_info(text).bits
