"""The SLAB allocator of 3.3 (mm/slab.c) as far as accounting can see it (spec 2.1, 3.3-3.5).

A cache holds slabs of `num` objects on `pagesperslab` pages. Objects are taken from partial
slabs first, then from free slabs; only when none is left does the cache grow, and only a grow
charges (the allocator's slow path, spec 2.1). Objects are counted, not materialised: an owner
remembers runs of (slab, count), so N objects cost O(slabs touched), not O(N).
"""


class Slab:
    __slots__ = ("inuse",)

    def __init__(self):
        self.inuse = 0


class Owner:
    """Whoever holds objects: a task, a cgroup's pool of kernel objects, the boot state."""
    __slots__ = ("runs", "label", "memcg")

    def __init__(self, label: str, memcg=None):
        self.runs = {}     # KmemCache -> [[slab, count, seq], ...], newest last
        self.label = label
        self.memcg = memcg

    def count(self, cache) -> int:
        return sum(r[1] for r in self.runs.get(cache, ()))

    def newest(self, cache) -> int:
        runs = self.runs.get(cache)
        return runs[-1][2] if runs else -1


class KmemCache:
    __slots__ = ("name", "objsize", "num", "pages", "limit", "batchcount", "shared",
                 "id", "memcg", "orig", "children", "dead", "destroyed", "free_limit",
                 "partial", "free", "nr_slabs", "active_objs", "free_objects", "holders", "serial")

    def __init__(self, name, objsize, num, pages, limit, batchcount, shared, nr_cpus,
                 id=-1, memcg=None, orig=None):
        self.name = name
        self.objsize = objsize
        self.num = num              # objects per slab
        self.pages = pages          # pages per slab (PAGE_SIZE << gfporder)
        self.limit, self.batchcount, self.shared = limit, batchcount, shared
        self.id = id                # original caches: slot in memcg->slabs[]; copies: -1
        self.memcg = memcg          # None: global (or dead without ACCT_ROOT)
        self.orig = orig            # copies: the original cache
        self.children = []          # originals: their copies (patch 06/10)
        self.dead = False
        self.destroyed = False
        self.free_limit = (1 + nr_cpus) * batchcount + num
        self.partial = {}           # ordered: allocation takes the head
        self.free = {}              # LIFO: the newest empty slab is reused first
        self.nr_slabs = 0
        self.active_objs = 0
        self.free_objects = 0       # free slots in all slabs, as l3->free_objects
        self.holders = {}           # Owner -> None, owners with runs in this cache
        self.serial = 0             # creation order: the global cache list is newest first

    @property
    def is_copy(self) -> bool:
        return self.orig is not None

    @property
    def root(self):
        return self.orig or self

    @property
    def active_slabs(self) -> int:
        return self.nr_slabs - len(self.free)

    def add_slab(self) -> Slab:
        slab = Slab()
        self.nr_slabs += 1
        self.free_objects += self.num
        return slab

    def alloc(self, count: int, owner: Owner, seq: int, grow) -> int:
        """Take up to `count` objects for `owner`; `grow()` returns a charged new Slab or None.
        Returns how many were taken (fewer when a grow failed)."""
        runs = owner.runs.get(self)
        if runs is None:
            runs = owner.runs[self] = []
            self.holders[owner] = None
        num, partial, done = self.num, self.partial, 0
        while done < count:
            if partial:
                slab = next(iter(partial))
            elif self.free:
                slab = self.free.popitem()[0]
                partial[slab] = None
            else:
                slab = grow()
                if slab is None:
                    break
                partial[slab] = None
            take = min(num - slab.inuse, count - done)
            slab.inuse += take
            if slab.inuse == num:
                del partial[slab]
            if runs and runs[-1][0] is slab:
                runs[-1][1] += take
                runs[-1][2] = seq
            else:
                runs.append([slab, take, seq])
            done += take
        self.active_objs += done
        self.free_objects -= done
        if runs:
            if owner.runs.get(self) is not runs:   # a grow's OOM kill freed the owner's runs
                owner.runs[self] = runs
                self.holders[owner] = None
        elif owner.runs.get(self) is runs:
            del owner.runs[self]
            del self.holders[owner]
        return done

    def free_objs(self, owner: Owner, count: int, destroy) -> int:
        """Free up to `count` of `owner`'s objects, newest first; `destroy(slab)` releases a slab
        that went empty beyond free_limit (mm/slab.c free_block). Returns how many were freed."""
        runs = owner.runs.get(self)
        done = 0
        while runs and done < count:
            run = runs[-1]
            k = min(run[1], count - done)
            run[1] -= k
            if not run[1]:
                runs.pop()
            self._put(run[0], k, destroy)
            done += k
        self.active_objs -= done
        if runs is not None and not runs:
            del owner.runs[self]
            del self.holders[owner]
        return done

    def free_obj(self, owner: Owner, slab: Slab, destroy) -> bool:
        """Free one of `owner`'s objects that lives on `slab` (kmem_cache_free of a known
        pointer, for replayed traces). False when owner holds none there."""
        runs = owner.runs.get(self)
        if runs:
            for i in range(len(runs) - 1, -1, -1):     # recent objects die first, mostly
                run = runs[i]
                if run[0] is slab:
                    run[1] -= 1
                    if not run[1]:
                        del runs[i]
                        if not runs:
                            del owner.runs[self]
                            del self.holders[owner]
                    self._put(slab, 1, destroy)
                    self.active_objs -= 1
                    return True
        return False

    def _put(self, slab: Slab, k: int, destroy) -> None:
        """k objects go back to `slab`: partial, free, or destroyed past free_limit."""
        if slab.inuse == self.num:
            self.partial[slab] = None   # a full slab becomes partial, at the tail
        slab.inuse -= k
        self.free_objects += k
        if not slab.inuse:
            del self.partial[slab]
            if self.free_objects > self.free_limit:
                self.free_objects -= self.num
                self.nr_slabs -= 1
                destroy(slab)
            else:
                self.free[slab] = None

    def reap(self, destroy) -> int:
        """Destroy every empty slab (cache_reap / drain_freelist). Returns slabs destroyed."""
        n = len(self.free)
        for slab in self.free:
            destroy(slab)
        self.free.clear()
        self.nr_slabs -= n
        self.free_objects -= n * self.num
        return n

    def slabinfo_row(self) -> str:
        """One /proc/slabinfo 2.1 row (mm/slab.c s_show, non-STATS build)."""
        return ("%-17s %6d %6d %6d %4d %4d : tunables %4d %4d %4d : slabdata %6d %6d %6d\n" % (
            self.name, self.active_objs, self.nr_slabs * self.num, self.objsize, self.num,
            self.pages, self.limit, self.batchcount, self.shared, self.active_slabs,
            self.nr_slabs, 0))

    def memcg_slabinfo_row(self) -> str:
        """One memory.kmem.slabinfo row (patch 09/10 via v2 12/13: "%-17s %6lu %6lu %6u\\n")."""
        return "%-17s %6d %6d %6d\n" % (self.name, self.active_objs, self.nr_slabs * self.num,
                                        self.objsize)
