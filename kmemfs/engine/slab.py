"""The SLAB allocator of 3.3 (mm/slab.c) as far as accounting can see it (05/10 kmem_getpages,
kmem_freepages).

A cache holds slabs of `num` objects on `pagesperslab` pages, on three lists (partial, full, free;
the full list is implicit). Only a grow charges (the slow path, 05/10 kmem_getpages). Objects are
counted, not materialised: an owner remembers runs of (slab, count), so N objects cost O(slabs
touched), not O(N).

In front of the slabs sit SLAB's per-CPU array caches and the node's shared array
(struct array_cache): frees go to the CPU's array and reach the slabs in batches
(cache_flusharray -> free_block), allocation pops the array and refills it by batchcount
(cache_alloc_refill), cache_reap drains a fifth of an array per pass (drain_array). Objects in
an array are still in use as far as their slab is concerned, so /proc/slabinfo (s_show) counts
them as active. An array holds runs of [slab, count], bottom (entry[0]) first.
"""
from collections import deque

BATCHREFILL_LIMIT = 16          # mm/slab.c: a refill of an untouched array takes at most this


class Slab:
    __slots__ = ("inuse", "mgmt")

    def __init__(self):
        self.inuse = 0
        self.mgmt = None        # off-slab caches: (cache, slab) holding this slab's descriptor,
                                # () where it is not modelled (boot slabs, no size-N cache)


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


def _give(runs, slab, k: int, seq: int) -> None:
    """k objects of `slab` to an owner's runs of one cache, allocated at `seq`."""
    if runs and runs[-1][0] is slab:
        last = runs[-1]
        last[1] += k
        last[2] = seq
    else:
        runs.append([slab, k, seq])


class ArrayCache:
    """struct array_cache: `avail` objects as runs [slab, count], bottom first; LIFO at the top."""
    __slots__ = ("runs", "avail", "limit", "batchcount", "touched")

    def __init__(self, limit: int, batchcount: int):
        self.runs = deque()
        self.avail = 0
        self.limit = limit
        self.batchcount = batchcount
        self.touched = False

    def push(self, slab, k: int) -> None:
        runs = self.runs
        if runs and runs[-1][0] is slab:
            runs[-1][1] += k
        else:
            runs.append([slab, k])
        self.avail += k

    def pop_top(self, k: int) -> list:
        """The top k entries, in the order they are popped (newest first)."""
        return self._pop(k, -1)

    def pop_bottom(self, k: int) -> list:
        """entry[0 .. k), in array order (what free_block(ac->entry, k) walks)."""
        return self._pop(k, 0)

    def _pop(self, k: int, end: int) -> list:
        out, runs = [], self.runs
        self.avail -= k
        while k:
            run = runs[end]
            n = min(run[1], k)
            out.append((run[0], n))
            run[1] -= n
            if not run[1]:
                runs.pop() if end else runs.popleft()
            k -= n
        return out


class KmemCache:
    __slots__ = ("name", "objsize", "num", "pages", "limit", "batchcount", "shared",
                 "id", "memcg", "orig", "children", "dead", "destroyed", "free_limit",
                 "partial", "free", "nr_slabs", "active_objs", "free_objects", "holders", "serial",
                 "arrays", "shared_array", "free_touched", "off_slab", "slab_size", "slabp_cache")

    def __init__(self, name, objsize, num, pages, limit, batchcount, shared, nr_cpus,
                 id=-1, memcg=None, orig=None, arrays=True, off_slab=False, slab_size=0):
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
        self.partial = {}           # ordered head first: allocation takes the head
        self.free = {}              # ordered tail first: list_add (the head) appends
        self.nr_slabs = 0
        self.active_objs = 0        # objects out of their slabs (in use or in an array)
        self.free_objects = 0       # free slots in all slabs, as l3->free_objects
        self.holders = {}           # Owner -> None, owners with runs in this cache
        self.serial = 0             # creation order: the global cache list is newest first
        # do_tune_cpucache / alloc_kmemlist: one array per CPU, a shared one when shared > 0.
        self.arrays = [ArrayCache(limit, batchcount) for _ in range(nr_cpus)] if arrays else []
        self.shared_array = (ArrayCache(shared * batchcount, 0xbaadf00d)
                             if arrays and shared else None)
        self.free_touched = False   # l3->free_touched
        self.off_slab = off_slab    # CFLGS_OFF_SLAB
        self.slab_size = slab_size  # cachep->slab_size: struct slab + bufctls
        self.slabp_cache = None     # off-slab: the size-N original the descriptor comes from

    @property
    def is_copy(self) -> bool:
        return self.orig is not None

    @property
    def root(self):
        return self.orig or self

    @property
    def active_slabs(self) -> int:
        return self.nr_slabs - len(self.free)

    @property
    def shared_avail(self) -> int:
        return self.shared_array.avail if self.shared_array is not None else 0

    def spare(self, cpu: int = 0) -> int:
        """Objects an allocation on `cpu` can have without a grow."""
        sh = self.shared_array
        return (self.free_objects + (sh.avail if sh is not None else 0)
                + (self.arrays[cpu].avail if self.arrays else 0))

    def add_slab(self) -> Slab:
        """cache_grow: the new slab goes on the free list (list_add_tail; the list is empty)."""
        slab = Slab()
        self.nr_slabs += 1
        self.free_objects += self.num
        self.free[slab] = None
        return slab

    # ------------------------------------------------------------------ the slab lists
    def take(self, count: int, sink) -> int:
        """Take up to `count` objects from the slab lists, partial head first, then the free
        list's head, without growing; `sink(slab, k)` receives them in order."""
        num, partial, free, done = self.num, self.partial, self.free, 0
        while done < count:
            if partial:
                slab = next(iter(partial))
            elif free:
                self.free_touched = True
                slab = free.popitem()[0]
                partial[slab] = None
            else:
                self.free_touched = True
                break
            k = min(num - slab.inuse, count - done)
            slab.inuse += k
            if slab.inuse == num:
                del partial[slab]
            sink(slab, k)
            done += k
        self.active_objs += done
        self.free_objects -= done
        return done

    def free_block(self, chunks, destroy) -> None:
        """mm/slab.c free_block: objects back into their slabs, in order. A slab that empties
        is destroyed when free_objects is over free_limit, else goes to the free list's head;
        any other slab moves to the partial list's tail."""
        partial, num = self.partial, self.num
        for slab, k in chunks:
            if slab.inuse < num:
                del partial[slab]
            slab.inuse -= k
            self.free_objects += k
            self.active_objs -= k
            if slab.inuse:
                partial[slab] = None
            elif self.free_objects > self.free_limit:
                self.free_objects -= num
                self.nr_slabs -= 1
                destroy(slab)
            else:
                self.free[slab] = None

    def drain_freelist(self, tofree: int, destroy) -> int:
        """Destroy up to `tofree` empty slabs from the free list's tail."""
        n = 0
        while n < tofree and self.free:
            slab = next(iter(self.free))
            del self.free[slab]
            self.nr_slabs -= 1
            self.free_objects -= self.num
            destroy(slab)
            n += 1
        return n

    # ------------------------------------------------------------------ allocation
    def alloc(self, count: int, owner: Owner, seq: int, grow, cpu: int = 0) -> int:
        """Take up to `count` objects for `owner`; `grow()` adds a charged slab to the free
        list and returns it, or None. Returns how many were taken (fewer when a grow failed)."""
        runs = owner.runs.get(self)
        if runs is None:
            runs = owner.runs[self] = []
            self.holders[owner] = None

        def give(slab, k):
            _give(runs, slab, k, seq)

        done = 0
        if not self.arrays:
            while done < count:
                done += self.take(count - done, give)
                if done < count and grow() is None:
                    break
        else:
            ac = self.arrays[cpu]
            while done < count:
                if not ac.avail and not self.refill(ac, grow):
                    break
                k = min(ac.avail, count - done)
                for slab, n in ac.pop_top(k):
                    give(slab, n)
                ac.touched = True
                done += k
        if runs:
            if owner.runs.get(self) is not runs:   # a grow's OOM kill freed the owner's runs
                owner.runs[self] = runs
                self.holders[owner] = None
        elif owner.runs.get(self) is runs:
            del owner.runs[self]
            del self.holders[owner]
        return done

    def alloc_obj(self, owner: Owner, seq: int, cpu: int = 0) -> Slab:
        """One object for `owner` when spare(cpu) says no grow is needed (replay's hot path):
        alloc(1, ...) without its grow and OOM-kill bookkeeping. Returns its slab."""
        slab = self.alloc_one(None, cpu)
        runs = owner.runs.get(self)
        if runs is None:
            runs = owner.runs[self] = []
            self.holders[owner] = None
        _give(runs, slab, 1, seq)
        return slab

    def alloc_one(self, grow, cpu: int = 0):
        """One object held by no owner (an off-slab descriptor): the slab it is in, or None."""
        got = []
        if not self.arrays:
            while not got:
                if not self.take(1, lambda slab, k: got.append(slab)) and grow() is None:
                    return None
            return got[0]
        ac = self.arrays[cpu]
        if not ac.avail and not self.refill(ac, grow):
            return None
        ac.touched = True
        run = ac.runs[-1]                  # pop_top(1) without its list
        run[1] -= 1
        if not run[1]:
            ac.runs.pop()
        ac.avail -= 1
        return run[0]

    def refill(self, ac: ArrayCache, grow) -> bool:
        """cache_alloc_refill up to the final pop: from the shared array, else batchcount
        objects from the slabs, else grow and retry. False when the grow failed."""
        while True:
            batch = ac.batchcount
            if not ac.touched and batch > BATCHREFILL_LIMIT:
                batch = BATCHREFILL_LIMIT
            sh = self.shared_array
            if sh is not None and sh.avail:
                # transfer_objects: the shared array's top entries, order kept
                for slab, n in reversed(sh.pop_top(min(sh.avail, batch, ac.limit - ac.avail))):
                    ac.push(slab, n)
                sh.touched = True
                return True
            if self.take(batch, ac.push):
                return True
            if grow() is None:
                return False

    # ------------------------------------------------------------------ freeing
    def free_objs(self, owner: Owner, count: int, destroy, cpu: int = 0) -> int:
        """Free up to `count` of `owner`'s objects, newest first (kmem_cache_free each);
        `destroy(slab)` releases a slab. Returns how many were freed."""
        runs = owner.runs.get(self)
        done = 0
        chunks = []
        while runs and done < count:
            run = runs[-1]
            k = min(run[1], count - done)
            run[1] -= k
            if not run[1]:
                runs.pop()
            chunks.append((run[0], k))
            done += k
        if runs is not None and not runs:
            del owner.runs[self]
            del self.holders[owner]
        self.put(chunks, destroy, cpu)
        return done

    def put(self, chunks, destroy, cpu: int = 0) -> None:
        """__cache_free of each object in `chunks` on `cpu`: into the CPU's array; a full array
        is first flushed by cache_flusharray."""
        if not self.arrays:
            self.free_block(chunks, destroy)
            return
        ac = self.arrays[cpu]
        for slab, k in chunks:
            while k:
                if ac.avail >= ac.limit:
                    self.flusharray(ac, destroy)
                n = min(k, ac.limit - ac.avail)
                ac.push(slab, n)
                k -= n

    def release(self, owner: Owner, slab: Slab) -> bool:
        """`owner` lets go of one object it holds on `slab` (kmem_cache_free of a known
        pointer, for replayed traces); the caller then puts it. False when owner holds none
        there."""
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
                    return True
        return False

    def put_one(self, slab: Slab, cpu: int = 0) -> bool:
        """put() of one object when the CPU's array has room: no flush, so no slab is freed.
        False, with nothing done, when put() must flush first (or there are no arrays)."""
        if self.arrays:
            ac = self.arrays[cpu]
            if ac.avail < ac.limit:
                ac.push(slab, 1)
                return True
        return False

    def flusharray(self, ac: ArrayCache, destroy) -> None:
        """cache_flusharray: batchcount entries from the bottom go to the shared array while it
        has room, else back to their slabs."""
        batch = ac.batchcount
        sh = self.shared_array
        if sh is not None and sh.limit > sh.avail:
            for slab, n in ac.pop_bottom(min(batch, sh.limit - sh.avail)):
                sh.push(slab, n)
            return
        self.free_block(ac.pop_bottom(batch), destroy)

    # ------------------------------------------------------------------ reaping
    def drain_array(self, ac, force: bool, destroy) -> None:
        """mm/slab.c drain_array: a touched array is only untouched; else about a fifth
        ((limit + 4) / 5, at most half of what is there), or all when forced."""
        if ac is None or not ac.avail:
            return
        if ac.touched and not force:
            ac.touched = False
            return
        tofree = ac.avail if force else (ac.limit + 4) // 5
        if tofree > ac.avail:
            tofree = (ac.avail + 1) // 2
        self.free_block(ac.pop_bottom(tofree), destroy)

    def cache_reap(self, destroy) -> None:
        """One cache_reap pass for this cache on every CPU, the node's part (shared array,
        free list) done once, as if its next_reap were due (mm/slab.c cache_reap)."""
        for ac in self.arrays:
            self.drain_array(ac, False, destroy)
        self.drain_array(self.shared_array, False, destroy)
        if self.free_touched:
            self.free_touched = False
        else:
            self.drain_freelist((self.free_limit + 5 * self.num - 1) // (5 * self.num), destroy)

    def shrink(self, destroy) -> int:
        """__cache_shrink: drain_cpu_caches (every array, then the shared one), then every
        empty slab. Returns slabs destroyed."""
        before = self.nr_slabs
        for ac in self.arrays:
            self.drain_array(ac, True, destroy)
        self.drain_array(self.shared_array, True, destroy)
        self.drain_freelist(len(self.free), destroy)
        for ac in self.arrays:
            ac.touched = False
        if self.shared_array is not None:
            self.shared_array.touched = False
        self.free_touched = False
        return before - self.nr_slabs

    # ------------------------------------------------------------------ views
    def slabinfo_row(self) -> str:
        """One /proc/slabinfo 2.1 row (mm/slab.c s_show, non-STATS build)."""
        return ("%-17s %6d %6d %6d %4d %4d : tunables %4d %4d %4d : slabdata %6d %6d %6d\n" % (
            self.name, self.active_objs, self.nr_slabs * self.num, self.objsize, self.num,
            self.pages, self.limit, self.batchcount, self.shared, self.active_slabs,
            self.nr_slabs, self.shared_avail))

    def memcg_slabinfo_row(self) -> str:
        """One memory.kmem.slabinfo row (patch 09/10 via v2 12/13: "%-17s %6lu %6lu %6u\\n")."""
        return "%-17s %6d %6d %6d\n" % (self.name, self.active_objs, self.nr_slabs * self.num,
                                        self.objsize)
