"""Caches and objects: the catalogue's originals, per-memcg copies made on first use, the
async creation queue, slab growth (which charges) and slab destruction (which uncharges),
and object allocation and freeing (05/10, 06/10)."""
import errno

from .errors import EngineError
from .gfp import GFP_KERNEL, Gfp
from . import policy as _policy
from .memcg import Memcg
from .result import OK, OOM_DIE, WAIT, Result
from .catalogue import enable_cpucache, off_slab
from .slab import KmemCache, Owner

# Plain int: `gfp & (Gfp.A | Gfp.B)` builds IntFlag members on every allocation, which was
# half the cost of a 1-object alloc+free (scripts/bench_engine.py).
_NO_COPY = int(Gfp.NOACCOUNT | Gfp.NOFAIL)
# cache_grow's local_flags: GFP_RECLAIM_MASK bits of the caller, plus 05/10's NOACCOUNT carry.
_MGMT_GFP = int(Gfp.WAIT | Gfp.HIGH | Gfp.IO | Gfp.FS | Gfp.NOFAIL | Gfp.NORETRY | Gfp.NOACCOUNT)


class CacheOps:
    # ------------------------------------------------------------------ caches
    def kmem_cache_create(self, spec) -> KmemCache:
        if spec.name in self.originals:
            raise EngineError(errno.EEXIST, f"cache {spec.name} exists")
        if not self.free_ids:
            # The kernel BUG()s here (05/10 __kmem_cache_create); we refuse instead.
            raise EngineError(errno.ENOSPC, f"more than MAX_KMEM_CACHE_TYPES="
                              f"{self.config.max_kmem_cache_types} caches")
        cid = self.free_ids.pop(0)  # the lowest free bit
        cfg = self.config
        limit, batch, shared = spec.limit, spec.batchcount, spec.shared
        if spec.derived:            # a SLUB row: the tunables 3.3's enable_cpucache would pick
            limit, batch, shared = enable_cpucache(spec.objsize, cfg.nr_cpus, cfg.page_size)
        off, slab_size = off_slab(spec.name, spec.objsize, spec.objperslab, spec.pagesperslab,
                                  cfg.page_size)
        c = KmemCache(spec.name, spec.objsize, spec.objperslab, spec.pagesperslab, limit,
                      batch, shared, cfg.nr_cpus, id=cid, arrays=cfg.array_caches,
                      off_slab=off, slab_size=slab_size)
        self.originals[c.name] = c
        self._add_cache(c)
        if cfg.boot_slabs and spec.num_slabs:
            self._boot_fill(c, spec)
        return c

    def _boot_fill(self, c: KmemCache, spec) -> None:
        """Rebuild the dump's slab state: active objects spread over active slabs, held by
        the boot owner (arrays start empty). Boot slabs' off-slab descriptors are not
        modelled: they were allocated before any memcg existed."""
        active, aslabs = spec.active_objs, spec.active_slabs
        if aslabs and active < aslabs:
            aslabs = active
        runs = self.boot.runs.setdefault(c, [])
        c.holders[self.boot] = None
        for i in range(spec.num_slabs):
            slab = c.add_slab()
            if c.off_slab:
                slab.mgmt = ()
            if self.config.acct_root:
                self.pre_memcg_kmem_bytes += c.pages * self.page
            n = active // aslabs + (i < active % aslabs) if i < aslabs else 0
            if n:
                del c.free[slab]
                slab.inuse = n
                runs.append([slab, n, 0])
                if n < c.num:
                    c.partial[slab] = None
        c.active_objs = active
        c.free_objects = spec.num_slabs * c.num - active
        if not runs:
            del self.boot.runs[c]
            del c.holders[self.boot]

    def _add_cache(self, c: KmemCache) -> None:
        self.cache_serial += 1
        c.serial = self.cache_serial
        self.caches[c] = None

    def cache(self, name: str) -> KmemCache:
        c = self.originals.get(name)
        if c is None:
            raise EngineError(errno.EINVAL, f"no cache named {name!r}")
        return c

    def kmalloc_cache(self, size: int):
        """__find_general_cachep: the smallest size-N that fits; None for size 0, which is
        kmalloc's ZERO_SIZE_PTR (3.3.8 mm/slab.c): no cache, no object, no charge."""
        if not size:
            return None
        for objsize, c in self.kmalloc:
            if objsize >= size:
                return c
        raise EngineError(errno.ENOMEM, f"kmalloc({size}): larger than the largest size-N cache")

    def caches_newest_first(self):
        return reversed(self.caches)

    def _create_copy(self, memcg: Memcg, orig: KmemCache) -> KmemCache:
        """patch 05/10: `orig(basename)`, same geometry and tunables, SLAB_MEMCG, list head."""
        c = KmemCache(f"{orig.name}({memcg.name})", orig.objsize, orig.num, orig.pages,
                      orig.limit, orig.batchcount, orig.shared, self.config.nr_cpus,
                      memcg=memcg, orig=orig, arrays=self.config.array_caches,
                      off_slab=orig.off_slab, slab_size=orig.slab_size)
        memcg.slabs[orig.id] = c
        orig.children.append(c)
        self._add_cache(c)
        self.emit("cache_create", cache=c.name, cgroup=memcg.path())
        return c

    def _select_cache(self, orig: KmemCache, memcg: Memcg, gfp: Gfp, irq: bool,
                      accounted: bool = False) -> KmemCache:
        """mem_cgroup_get_kmem_cache (05/10): which cache serves this allocation. Whether
        it is charged at all is the design's decision (policy.py)."""
        # Cheapest tests first (every replayed allocation): a copy, no memcg, root, removed;
        # the design as Engine.policy gives it, without the property call.
        if orig.orig is not None or memcg is None or memcg.parent is None or memcg.removed \
                or not _policy.DESIGNS[self.config.design].charges(int(gfp), irq, accounted):
            return orig
        c = memcg.slabs.get(orig.id)
        if c is not None:
            return c
        if gfp & GFP_KERNEL == GFP_KERNEL:
            return self._create_copy(memcg, orig)
        if (memcg, orig) not in self.create_queue:
            self.create_queue[(memcg, orig)] = None
        return orig

    def run_workqueue(self) -> list:
        """Drain the async creation queue in order (one global work item, 05/10)."""
        made = []
        while self.create_queue:
            memcg, orig = key = next(iter(self.create_queue))
            del self.create_queue[key]
            if not memcg.removed and orig.id not in memcg.slabs:
                made.append(self._create_copy(memcg, orig))
        return made

    def _destroy_cache(self, c: KmemCache) -> None:
        c.destroyed = True
        del self.caches[c]
        if c.orig is not None:
            c.orig.children.remove(c)
        self.emit("cache_destroy", cache=c.name)

    # ------------------------------------------------------------------ slab pages
    def _grow(self, cache: KmemCache, gfp: Gfp, current, res: Result, memcg=None,
              irq: bool = False):
        """cache_grow -> kmem_getpages: charge first, then the page (05/10); an off-slab
        cache then allocates the slab descriptor (alloc_slabmgmt), a failure of which gives
        the pages back (opps1: kmem_freepages)."""
        def grow():
            r = self.kmem_getpages_charge(cache.memcg, gfp, cache.pages * self.page, current)
            if r != OK:
                if r == WAIT:
                    res.status, res.wait_on = "wait", self._waiting
                elif r == OOM_DIE:
                    res.status = "killed"
                else:
                    res.status = "nomem"
                return None
            mgmt = None
            if cache.off_slab:
                mgmt = self._alloc_slabmgmt(cache, gfp, current, res, memcg, irq)
                if mgmt is None:
                    self.memcg_uncharge_kmem(cache.memcg, cache.pages * self.page)
                    return None
            slab = cache.add_slab()
            slab.mgmt = mgmt
            return slab
        return grow

    def _alloc_slabmgmt(self, cache, gfp, current, res, memcg, irq):
        """alloc_slabmgmt: kmem_cache_alloc(cachep->slabp_cache) with cache_grow's
        local_flags (the reclaim bits, and 05/10 carries __GFP_NOACCOUNT), which 05/10's
        mem_cgroup_get_kmem_cache sends to the *current task's* copy of that size-N cache.
        Returns (cache, slab) of the descriptor, or None. No size-N cache big enough in the
        catalogue (a SLUB dump): the descriptor is not modelled."""
        orig = self._slabp_cache(cache)
        if orig is None:
            return ()
        mgfp = Gfp(int(gfp) & _MGMT_GFP)
        mcache = self._select_cache(orig, memcg, mgfp, irq)
        slab = mcache.alloc_one(self._grow(mcache, mgfp, current, res, memcg, irq), self.cpu)
        return None if slab is None else (mcache, slab)

    def _slabp_cache(self, cache):
        """kmem_find_general_cachep(slab_size, 0), looked up once per original."""
        root = cache.root
        if root.slabp_cache is None:
            fits = [c for size, c in self.kmalloc if size >= cache.slab_size]
            root.slabp_cache = fits[0] if fits else ()
        return root.slabp_cache or None

    def _slab_freed(self, cache: KmemCache):
        def destroy(slab):
            # kmem_freepages: the cache's memcg pays back, not the freeing task's (05/10
            # mem_cgroup_uncharge_slab).
            self.memcg_uncharge_kmem(cache.memcg, cache.pages * self.page)
            if slab.mgmt:   # slab_destroy: then kmem_cache_free(slabp_cache, slabp)
                mcache, mslab = slab.mgmt
                mcache.put([(mslab, 1)], self._slab_freed(mcache), self.cpu)
                self._after_free(mcache)
        return destroy

    def _after_free(self, cache: KmemCache) -> None:
        if cache.dead and cache.nr_slabs == 0 and not cache.destroyed:
            self._destroy_cache(cache)

    # ------------------------------------------------------------------ object allocation
    def alloc(self, orig: KmemCache, count: int, memcg: Memcg, gfp: Gfp = GFP_KERNEL,
              irq: bool = False, task=None, owner=None, accounted: bool = False) -> Result:
        """kmem_cache_alloc() `count` times by a task of `memcg` (05/10). `accounted`:
        the call or cache is marked for accounting (only the optin design looks at it)."""
        res = Result(count)
        cache = self._select_cache(orig, memcg, gfp, irq, accounted)
        res.cache = cache
        owner = owner if owner is not None else (memcg.pool if memcg else self.boot)
        self.alloc_seq += 1
        self._waiting = None
        res.done = cache.alloc(count, owner, self.alloc_seq,
                               self._grow(cache, gfp, task, res, memcg, irq), self.cpu)
        if task is not None and owner is task.objs and task.pid not in self.tasks:
            self.free_owner(owner)   # OOM-killed during this call: its exit frees these too
        return res

    def alloc_object(self, orig: KmemCache, memcg: Memcg, gfp, irq: bool, task, owner,
                     accounted: bool = False):
        """One object, remembered by identity: (cache, slab, None), or (cache, None, Result)
        when it failed. With a free object in the CPU's array, the shared array or a slab no
        slab grows, so nothing is charged and no task is killed: that fast path skips alloc's
        bookkeeping (replay's hot path, scripts/bench_trace.py replay)."""
        cache = self._select_cache(orig, memcg, gfp, irq, accounted)
        if cache.spare(self.cpu):
            self.alloc_seq += 1
            return cache, cache.alloc_obj(owner, self.alloc_seq, self.cpu), None
        r = self.alloc(orig, 1, memcg, gfp, irq, task, owner, accounted)
        runs = owner.runs.get(r.cache)
        if r.done and runs:
            return r.cache, runs[-1][0], r
        return r.cache, None, r

    def free(self, cache: KmemCache, owner: Owner, count: int) -> int:
        n = cache.free_objs(owner, count, self._slab_freed(cache), self.cpu)
        self._after_free(cache)
        return n

    def free_object(self, cache: KmemCache, owner: Owner, slab) -> bool:
        """Free one object by identity: the cache copy and slab it was allocated from. Into
        the CPU's array when it has room (replay's hot path: no slab can be freed there)."""
        if not cache.release(owner, slab):
            return False
        if not cache.put_one(slab, self.cpu):
            cache.put(((slab, 1),), self._slab_freed(cache), self.cpu)
            self._after_free(cache)
        return True

    def free_named(self, name: str, count: int, memcg: Memcg) -> int:
        """`free CACHE COUNT`: an original name frees the cgroup's objects of it (its copy and
        the global cache, newest first); a concrete name frees from that cache."""
        if name in self.originals:
            orig = self.originals[name]
            cands = [(c, memcg.pool) for c in (memcg.slabs.get(orig.id), orig) if c is not None]
        else:
            named = [c for c in self.caches_newest_first() if c.name == name]
            if not named:
                raise EngineError(errno.EINVAL, f"no cache named {name!r}")
            cands = [(c, o) for c in named for o in list(c.holders) if o is not self.boot]
        done = 0
        while done < count:
            live = [(o.newest(c), c, o) for c, o in cands if o.runs.get(c)]
            if not live:
                break
            _, c, o = max(live, key=lambda x: x[0])
            # free one run at a time so newest-first holds across caches
            done += self.free(c, o, min(count - done, o.runs[c][-1][1]))
        return done

    def free_owner(self, owner: Owner) -> int:
        n = 0
        for cache in list(owner.runs):
            n += self.free(cache, owner, owner.count(cache))
        return n

    def reap(self) -> int:
        """As if cache_reap had run until nothing changes: every array drained, then every
        empty slab destroyed (and so dead caches left with none). Returns slabs destroyed."""
        n, changed = 0, True
        while changed:      # a destroyed off-slab slab frees its descriptor into another cache
            changed = False
            for cache in list(self.caches):
                if cache.destroyed:
                    continue
                if cache.free or cache.shared_avail or any(ac.avail for ac in cache.arrays):
                    n += cache.shrink(self._slab_freed(cache))
                    changed = True
                self._after_free(cache)
        return n

    def cache_reap(self) -> int:
        """One pass of mm/slab.c cache_reap over the cache chain (newest first) on every CPU.
        Returns slabs destroyed."""
        before = sum(c.nr_slabs for c in self.caches)
        for cache in list(self.caches_newest_first()):
            if not cache.destroyed:
                cache.cache_reap(self._slab_freed(cache))
                self._after_free(cache)
        return before - sum(c.nr_slabs for c in self.caches)
