"""The invariant checker (issue 2, item 10): a list of violations, empty when all hold.

Documented quirks of the series (docs/semantics.md sections 7-9) are recorded on the memcg where
they fire; the counter equations are not asserted there, only non-negativity.
"""


def check(engine) -> list:
    bad = []
    page = engine.page
    live = list(engine.root.walk())
    pages_of = {}
    descriptors = {}     # cache -> {slab: off-slab descriptors it holds} (alloc_slabmgmt)
    for c in engine.caches:
        for slab in _slabs(c):
            if slab.mgmt:
                mcache, mslab = slab.mgmt
                held = descriptors.setdefault(mcache, {})
                held[mslab] = held.get(mslab, 0) + 1
                if mcache.destroyed or mcache.root is not c.root.slabp_cache:
                    bad.append(f"{c.name}: slab descriptor in {mcache.name}, not in a copy of "
                               f"its slabp_cache")
            elif c.off_slab and slab.mgmt is None:   # () marks one not modelled (boot, SLUB)
                bad.append(f"{c.name}: off-slab slab without a descriptor")
    for c in engine.caches:
        pages_of[c] = c.nr_slabs * c.pages * page
        bad += _check_cache(c, descriptors.get(c, {}))
        if c.is_copy and not c.dead and c.memcg.slabs.get(c.orig.id) is not c:
            bad.append(f"{c.name}: live copy not in its memcg's slabs[]")
        if c.dead and c.nr_slabs == 0:
            bad.append(f"{c.name}: dead cache with no slab pages was not destroyed")
    for m in live:
        where = m.path()
        for name in ("res", "memsw", "kmem", "tcp"):
            ctr = getattr(m, name)
            if ctr.usage < 0 or ctr.failcnt < 0:
                bad.append(f"{where}: {name} negative")
            if not m.is_root and ctr.usage > ctr.limit and not engine.policy.forces_past_limit:
                bad.append(f"{where}: {name} usage {ctr.usage} over limit {ctr.limit}")
        if min(m.kmem_bypassed, m.cache_bytes, m.rss_bytes, m.under_oom) < 0:
            bad.append(f"{where}: negative ledger or page count")
        for pid, t in m.tasks.items():
            if engine.tasks.get(pid) is not t or t.memcg is not m:
                bad.append(f"{where}: task {pid} membership inconsistent")
        if m.quirks:
            continue
        kids = list(m.children.values())
        if not m.is_root:
            own = sum(pages_of[c] for c in m.slabs.values())
            below = sum(k.kmem.usage for k in kids if k.kmem.parent is m.kmem)
            if m.kmem.usage + m.kmem_bypassed != own + below + m.kmem_leaked:
                bad.append(f"{where}: kmem {m.kmem.usage} + bypassed {m.kmem_bypassed} != "
                           f"cache pages {own} + children {below} + leaked {m.kmem_leaked}")
            stock = engine.stock_pages(m) * page
            user = m.rss_bytes + m.cache_bytes + stock
            below = sum(k.res.usage for k in kids if k.res.parent is m.res)
            if m.res.usage != user + m.kmem_in_res + below:
                bad.append(f"{where}: res {m.res.usage} != user {user} + kmem "
                           f"{m.kmem_in_res} + children {below}")
            if engine.config.swap_account:
                below = sum(k.memsw.usage for k in kids if k.memsw.parent is m.memsw)
                if m.memsw.usage != user + m.kmem_in_memsw + below:
                    bad.append(f"{where}: memsw {m.memsw.usage} != user {user} + kmem "
                               f"{m.kmem_in_memsw} + children {below}")
            if not m.independent_kmem_limit and m.kmem_in_res != m.kmem.usage - sum(
                    k.kmem.usage for k in kids if k.kmem.parent is m.kmem) - m.kmem_leaked:
                bad.append(f"{where}: kmem in res {m.kmem_in_res} != own kmem usage")
        if m.use_hierarchy and m.res.usage < sum(k.res.usage for k in kids):
            bad.append(f"{where}: hierarchical res below the children's sum")
    if engine.config.acct_root and not engine.root.quirks:
        want = sum(pages_of[c] for c in engine.caches if c.memcg is None or c.memcg.is_root)
        want += sum(m.kmem_bypassed for m in live)
        if engine.root.kmem.usage != want:
            bad.append(f"/: root kmem {engine.root.kmem.usage} != unattributed slab {want}")
    bad += _check_subtree(live)
    for pid, t in engine.tasks.items():
        if t.memcg.removed or t.memcg.tasks.get(pid) is not t:
            bad.append(f"task {pid}: not in its memcg")
    if engine.stock[0] is not None and engine.stock[0].removed:
        bad.append("stock held for a removed memcg")
    return bad


def _check_subtree(live) -> list:
    """The subtree sums every memory.stat total_* and root's usage read (memcg.py) equal a
    full walk (3.3 mem_cgroup_get_total_stat), summed bottom-up in one pass."""
    bad = []
    walked = {m: list(m.local) for m in live}
    for m in reversed(live):              # pre-order reversed: children before parents
        if m.parent is not None:
            walked[m.parent] = [a + b for a, b in zip(walked[m.parent], walked[m])]
    for m in live:
        if m.subtree != walked[m]:
            bad.append(f"{m.path()}: subtree sums {m.subtree} != walk {walked[m]}")
    return bad


def _slabs(c):
    """Every slab of a cache: those holding objects anywhere, and the free list."""
    found = dict.fromkeys(c.free)
    for owner in c.holders:
        for run in owner.runs.get(c, ()):
            found[run[0]] = None
    for ac in [*c.arrays, c.shared_array]:
        if ac is not None:
            for run in ac.runs:
                found[run[0]] = None
    found.update(dict.fromkeys(c.partial))
    return found


def _check_cache(c, descriptors) -> list:
    bad = []
    seen = {}
    for owner in c.holders:
        runs = owner.runs.get(c)
        if not runs:
            bad.append(f"{c.name}: holder {owner.label} with no runs")
            continue
        for slab, n, _ in runs:
            if n <= 0:
                bad.append(f"{c.name}: empty run")
            seen[slab] = seen.get(slab, 0) + n
    in_arrays = 0
    for ac in [*c.arrays, c.shared_array]:
        if ac is None:
            continue
        total = 0
        for slab, n in ac.runs:
            if n <= 0:
                bad.append(f"{c.name}: empty array run")
            seen[slab] = seen.get(slab, 0) + n
            total += n
        if total != ac.avail or ac.avail > ac.limit:
            bad.append(f"{c.name}: array avail {ac.avail} (limit {ac.limit}) != entries {total}")
        in_arrays += total
    for slab, n in descriptors.items():
        seen[slab] = seen.get(slab, 0) + n
    for slab, n in seen.items():
        if slab.inuse != n:
            bad.append(f"{c.name}: slab inuse {slab.inuse} != objects held {n}")
        if n and slab in c.free:
            bad.append(f"{c.name}: a slab with objects is on the free list")
        if 0 < n < c.num and slab not in c.partial:
            bad.append(f"{c.name}: partial slab not on the partial list")
    for slab in c.partial:
        if not 0 < slab.inuse < c.num:
            bad.append(f"{c.name}: partial slab with {slab.inuse}/{c.num} objects")
    for slab in c.free:
        if slab.inuse:
            bad.append(f"{c.name}: free slab in use")
    used = sum(1 for n in seen.values() if n)
    if used + len(c.free) != c.nr_slabs:
        bad.append(f"{c.name}: {used} used + {len(c.free)} free slabs != {c.nr_slabs}")
    active = sum(seen.values())
    if active != c.active_objs or c.nr_slabs * c.num - active != c.free_objects:
        bad.append(f"{c.name}: object counts inconsistent")
    return bad
