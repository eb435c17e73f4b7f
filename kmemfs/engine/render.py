"""Text of the read-only views: memory.stat, numa_stat, oom_control, slabinfo (09/10; 3.3.8
mem_control_stat_show)."""
from .memcg import STAT_KEYS

SLABINFO_HEADER = ("slabinfo - version: 2.1\n"
                   "# name            <active_objs> <num_objs> <objsize> <objperslab> "
                   "<pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata "
                   "<active_slabs> <num_slabs> <sharedavail>\n")
MEMCG_SLABINFO_HEADER = "# name            <active_objs> <num_objs> <objsize>\n"


def stat_keys(swap_account: bool):
    return [k for k in STAT_KEYS if swap_account or k != "swap"]


def hierarchical_limits(memcg):
    """memcg_get_hierarchical_limit: the minimum up the chain while use_hierarchy holds."""
    limit, memsw = memcg.res.limit, memcg.memsw.limit
    if memcg.use_hierarchy:
        for m in memcg.ancestors():
            if not m.use_hierarchy:
                break
            limit, memsw = min(limit, m.res.limit), min(memsw, m.memsw.limit)
    return limit, memsw


def memory_stat(engine, memcg) -> str:
    swap = engine.config.swap_account
    keys = stat_keys(swap)
    local = memcg.stat()
    out = [f"{k} {local[k]}\n" for k in keys]
    limit, memsw = hierarchical_limits(memcg)
    out.append(f"hierarchical_memory_limit {limit}\n")
    if swap:
        out.append(f"hierarchical_memsw_limit {memsw}\n")
    total = memcg.total_stat()          # kept up to date on each charge: O(1), no walk
    out += [f"total_{k} {total[k]}\n" for k in keys]
    return "".join(out)


def usage(engine, memcg, memsw: bool = False) -> int:
    """mem_cgroup_usage: root's value is recursive cache+rss (+swap, always 0 here), never
    the counter; mem_cgroup_recursive_stat's sum, kept up to date instead of walked."""
    if not memcg.is_root:
        return (memcg.memsw if memsw else memcg.res).usage
    total = memcg.total_stat()
    return total["cache"] + total["rss"]


def numa_stat(memcg, page: int) -> str:
    file, anon = memcg.cache_bytes // page, memcg.rss_bytes // page
    rows = (("total", file + anon), ("file", file), ("anon", anon), ("unevictable", 0))
    return "".join(f"{k}={v} N0={v}\n" for k, v in rows)


def oom_control(memcg) -> str:
    return f"oom_kill_disable {int(memcg.oom_kill_disable)}\nunder_oom {int(memcg.under_oom > 0)}\n"


def slabinfo(engine) -> str:
    """/proc/slabinfo 2.1: every cache, copies and dead copies included, newest first."""
    return SLABINFO_HEADER + "".join(c.slabinfo_row() for c in engine.caches_newest_first())


def memcg_slabinfo(engine, memcg) -> str:
    """memory.kmem.slabinfo: caches whose memcg is this one; root lists the caches with no
    memcg (originals and dead copies): mem_cgroup_slabinfo_show turns root into NULL ("[PATCH
    v2 12/13] memcg: Per-memcg memory.kmem.slabinfo file.", 9 Mar 2012). So with ACCT_ROOT,
    whose dead copies point at root, they are in no cgroup's file (docs/semantics.md §11)."""
    if memcg.is_root:
        rows = (c for c in engine.caches_newest_first() if c.memcg is None)
    else:
        rows = sorted(memcg.slabs.values(), key=lambda c: -c.serial)
    return MEMCG_SLABINFO_HEADER + "".join(c.memcg_slabinfo_row() for c in rows)
