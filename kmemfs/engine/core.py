"""The accounting engine: 3.3 memcg v1 with the Feb-2012 kmem series applied.

Everything here is synchronous and deterministic. Section numbers refer to
shared/spec/patchset-spec.md. A charge that would sleep on a memcg whose OOM killer is
disabled does not block: the operation stops, reports `status == "wait"`, and leaves the
memcg marked under_oom; the caller waits for `oom_wake_seq` to change (memcg_oom_recover),
calls `end_oom_wait`, and re-issues what is left.
"""
import errno
from collections import deque
from itertools import islice
from dataclasses import dataclass, field

from . import catalogue as _catalogue
from .config import RESOURCE_MAX, Config
from .errors import EngineError
from .gfp import GFP_KERNEL, Gfp
from .memcg import Memcg, Task
from .slab import KmemCache, Owner

MEM_CGROUP_RECLAIM_RETRIES = 5
SWAP_CLUSTER_MAX = 32
SIM_PID_BASE = 5_000_000   # above PID_MAX_LIMIT (4194304): never a host pid

# Charge-path outcomes (3.3 CHARGE_* plus the series' bypass).
OK, RETRY, WOULDBLOCK, NOMEM, OOM_DIE, WAIT, NOVICTIM = range(7)

# What a fork allocates (kernel/fork.c copy_process, dup_mm; pid from alloc_pid).
FORK_RECIPE = (("task_struct", 1), ("cred_jar", 1), ("signal_cache", 1), ("sighand_cache", 1),
               ("files_cache", 1), ("fs_cache", 1), ("mm_struct", 1), ("vm_area_struct", 8),
               ("anon_vma", 1), ("anon_vma_chain", 8), ("pid", 1))
DENTRY, INODE = "dentry", "inode_cache"
# Plain int: `gfp & (Gfp.A | Gfp.B)` builds IntFlag members on every allocation, which was
# half the cost of a 1-object alloc+free (scripts/bench_engine.py).
_NO_COPY = int(Gfp.NOACCOUNT | Gfp.NOFAIL)


@dataclass
class Result:
    """Outcome of an allocation or charge request."""
    wanted: int
    done: int = 0
    status: str = "ok"            # ok | nomem | wait | killed
    cache: KmemCache = None       # the cache objects were taken from
    wait_on: Memcg = None         # status == "wait": the memcg under OOM
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Engine:
    def __init__(self, config: Config = Config(), specs=None, source: str = "built-in"):
        self.config = config
        self.catalogue_source = source
        self.page = config.page_size
        self.root = None
        self.pre_memcg_kmem_bytes = 0        # ACCT_ROOT before the root memcg exists
        self.events = deque(maxlen=config.event_log_size)
        self.event_seq = 0
        self.caches = {}                      # every live cache, oldest first (list head = last)
        self.originals = {}                   # name -> original cache
        self.free_ids = list(range(config.max_kmem_cache_types))
        self.create_queue = {}                # (memcg, orig) -> None: async cache creation
        self.tasks = {}                       # pid -> Task, in creation order
        self.next_pid = SIM_PID_BASE
        self.nr_simulated = 0
        self.alloc_seq = 0
        self.stock = [None, 0]                # per-CPU charge stock of CPU 0: memcg, pages
        self.oom_wake_seq = 0
        self.nr_under_oom = 0
        self.nr_memcgs = 0
        self.boot = Owner("boot")
        self._waiting = None                  # the memcg a charge would sleep on
        self.cache_serial = 0
        for spec in reversed(specs if specs is not None else _catalogue.load()):
            self.kmem_cache_create(spec)
        self.kmalloc = sorted((c.objsize, c) for c in self.originals.values()
                              if c.name.startswith("size-") and not c.name.endswith("(DMA)"))
        self.root = Memcg("", None, id=1, swappiness=config.vm_swappiness)
        self.nr_memcgs = 1
        self.last_memcg_id = 1                # ids are never reused: inode numbers derive from them
        # patch 08/10: boot-time slab is copied into root's usage; max_usage is not updated.
        self.root.kmem.usage = self.pre_memcg_kmem_bytes

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, **fields) -> None:
        self.event_seq += 1
        self.events.append((self.event_seq, kind, fields))

    def events_since(self, seq: int):
        # O(new events), not O(log): this runs after every write once an event is registered.
        n = min(self.event_seq - seq, len(self.events))   # older ones fell off the bounded log
        return list(islice(reversed(self.events), n))[::-1] if n > 0 else []

    # ------------------------------------------------------------------ caches
    def kmem_cache_create(self, spec) -> KmemCache:
        if spec.name in self.originals:
            raise EngineError(errno.EEXIST, f"cache {spec.name} exists")
        if not self.free_ids:
            # The kernel BUG()s here (spec 3.2); we refuse instead.
            raise EngineError(errno.ENOSPC, f"more than MAX_KMEM_CACHE_TYPES="
                              f"{self.config.max_kmem_cache_types} caches")
        cid = self.free_ids.pop(0)  # the lowest free bit
        c = KmemCache(spec.name, spec.objsize, spec.objperslab, spec.pagesperslab, spec.limit,
                      spec.batchcount, spec.shared, self.config.nr_cpus, id=cid)
        self.originals[c.name] = c
        self._add_cache(c)
        if self.config.boot_slabs and spec.num_slabs:
            self._boot_fill(c, spec)
        return c

    def _boot_fill(self, c: KmemCache, spec) -> None:
        """Rebuild the dump's slab state: active objects spread over active slabs."""
        active, aslabs = spec.active_objs, spec.active_slabs
        if aslabs and active < aslabs:
            aslabs = active
        runs = self.boot.runs.setdefault(c, [])
        c.holders[self.boot] = None
        for i in range(spec.num_slabs):
            slab = c.add_slab()
            if self.config.acct_root:
                self.pre_memcg_kmem_bytes += c.pages * self.page
            n = active // aslabs + (i < active % aslabs) if i < aslabs else 0
            slab.inuse = n
            if n:
                runs.append([slab, n, 0])
            if n == 0:
                c.free[slab] = None
            elif n < c.num:
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

    def kmalloc_cache(self, size: int) -> KmemCache:
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
                      memcg=memcg, orig=orig)
        memcg.slabs[orig.id] = c
        orig.children.append(c)
        self._add_cache(c)
        self.emit("cache_create", cache=c.name, cgroup=memcg.path())
        return c

    def _select_cache(self, orig: KmemCache, memcg: Memcg, gfp: Gfp, irq: bool) -> KmemCache:
        """mem_cgroup_get_kmem_cache (spec 3.1): which cache serves this allocation."""
        if irq or int(gfp) & _NO_COPY or orig.is_copy or memcg is None \
                or memcg.is_root or memcg.removed:
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
        """Drain the async creation queue in order (one global work item, spec 3.1)."""
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
    def _grow(self, cache: KmemCache, gfp: Gfp, current, res: Result):
        """cache_grow -> kmem_getpages: charge first, then the page (spec 2.1)."""
        def grow():
            r = self.memcg_charge_kmem(cache.memcg, gfp, cache.pages * self.page, current)
            if r == OK:
                return cache.add_slab()
            if r == WAIT:
                res.status, res.wait_on = "wait", self._waiting
            elif r == OOM_DIE:
                res.status = "killed"
            else:
                res.status = "nomem"
            return None
        return grow

    def _slab_freed(self, cache: KmemCache):
        def destroy(slab):
            # kmem_freepages: the cache's memcg pays back, not the freeing task's (spec 2.1).
            self.memcg_uncharge_kmem(cache.memcg, cache.pages * self.page)
        return destroy

    def _after_free(self, cache: KmemCache) -> None:
        if cache.dead and cache.nr_slabs == 0 and not cache.destroyed:
            self._destroy_cache(cache)

    # ------------------------------------------------------------------ kmem charge (spec 2.2-2.3)
    def memcg_charge_kmem(self, memcg, gfp: Gfp, delta: int, current=None) -> int:
        may_oom = bool(gfp & Gfp.WAIT and gfp & Gfp.FS and not gfp & Gfp.NORETRY)
        if memcg is not None and not memcg.independent_kmem_limit:
            r = self.try_charge(memcg, gfp, delta // self.page, may_oom, current)
            if r in (NOMEM, WAIT):
                return r
            if r == OOM_DIE:
                if not memcg.is_root:
                    memcg.kmem_bypassed += delta
                    self.emit("bypass", cgroup=memcg.path(), bytes=delta)
                memcg = None
            elif not memcg.is_root:
                memcg.kmem_in_res += delta
                if self.config.swap_account:
                    memcg.kmem_in_memsw += delta
        if memcg is not None:
            failed = memcg.kmem.charge(delta)
            if failed is not None:
                self.emit("charge_fail", cgroup=failed.owner.path(), counter="kmem", bytes=delta,
                          gfp=int(gfp))
                if not memcg.independent_kmem_limit:
                    # spec 2.9 d: dependent with a left-over kmem limit; res stays charged.
                    memcg.quirks.add("kmem_fail_after_res")
                return NOMEM
        elif self.config.acct_root:
            if self.root is None:
                self.pre_memcg_kmem_bytes += delta
            else:
                self.root.kmem.charge_nofail(delta)
        return OK

    def memcg_uncharge_kmem(self, memcg, delta: int) -> None:
        if memcg is not None and memcg.kmem_bypassed > 0:
            b = min(memcg.kmem_bypassed, delta)
            self.memcg_uncharge_kmem(None, b)
            memcg.kmem_bypassed -= b
            delta -= b
            if not delta:
                return
        if memcg is not None:
            self._uncharge(memcg.kmem, delta, "kmem")
            if not memcg.independent_kmem_limit:
                if not memcg.is_root:   # as on the charge side: root (ACCT_ROOT dead caches)
                    memcg.kmem_in_res -= delta
                    if memcg.kmem_in_res < 0:
                        memcg.quirks.add("independent_toggled")
                self._uncharge(memcg.res, delta, "res")   # memsw is not uncharged (spec 2.3)
                self._oom_recover()
        elif self.config.acct_root:
            self._uncharge(self.root.kmem, delta, "kmem")

    def _uncharge(self, counter, delta: int, name: str) -> None:
        for c, short in counter.uncharge(delta):
            for u in c.chain():    # the levels above lost `short` more than c did
                u.owner.quirks.add("underflow")
            self.emit("uncharge_underflow", cgroup=c.owner.path(), counter=name, bytes=short)

    # ------------------------------------------------------------------ memcg charge (spec 2.4-2.5)
    def try_charge(self, memcg: Memcg, gfp: Gfp, n: int, may_oom: bool, current=None) -> int:
        """__mem_cgroup_try_charge with patch 03/10. Returns OK, NOMEM, WAIT or OOM_DIE."""
        if memcg.is_root:
            return OK
        batch = n
        if self.config.charge_batch:
            if self._consume_stock(memcg, n):
                return OK
            batch = max(self.config.charge_batch, n)
        oom_retries = MEM_CGROUP_RECLAIM_RETRIES
        while True:
            oom_check = False
            if may_oom and not oom_retries:
                oom_check = True
                oom_retries = MEM_CGROUP_RECLAIM_RETRIES
            r = self._do_charge(memcg, gfp, batch, n, oom_check, current)
            if r == OK:
                return OK
            if r == RETRY:
                batch = n
            elif r == WOULDBLOCK:
                return NOMEM
            elif r == NOMEM:
                if not may_oom:
                    return NOMEM
                oom_retries -= 1
            elif r == NOVICTIM:
                return NOMEM
            else:
                return r     # WAIT or OOM_DIE

    def _do_charge(self, memcg, gfp, batch, n, oom_check, current) -> int:
        size = batch * self.page
        failed = memcg.res.charge(size)
        if failed is None and self.config.swap_account:
            failed = memcg.memsw.charge(size)
            if failed is not None:
                memcg.res.uncharge(size)
        if failed is None:
            if batch > n:
                self._refill_stock(memcg, batch - n)
            return OK
        over = failed.owner
        if batch > n:
            return RETRY          # the batch did not fit: retry the exact size, no reclaim
        self.emit("charge_fail", cgroup=over.path(), counter="memsw" if failed is over.memsw
                  else "res", bytes=n * self.page, gfp=int(gfp))
        if not gfp & Gfp.WAIT:
            return WOULDBLOCK
        if gfp & Gfp.NORETRY:
            return NOMEM          # 03/10: NOMEM with no reclaim
        progress = self.reclaim(over, n)
        if failed.margin() >= n * self.page:
            return RETRY
        if progress:
            # 03/10 compares pages with bytes, so any progress retries (spec 2.4, 2.9 e).
            return RETRY
        if not oom_check:
            return NOMEM
        return self._handle_oom(over, gfp, current)

    def _consume_stock(self, memcg, n) -> bool:
        s = self.stock
        if s[0] is memcg and s[1] >= n:
            s[1] -= n
            return True
        return False

    def _refill_stock(self, memcg, n) -> None:
        if self.stock[0] is not memcg:
            self.drain_stock()
            self.stock[0] = memcg
        self.stock[1] += n

    def drain_stock(self) -> None:
        memcg, n = self.stock
        if memcg is not None and n:
            self._uncharge(memcg.res, n * self.page, "res")
            if self.config.swap_account:
                self._uncharge(memcg.memsw, n * self.page, "memsw")
            self._oom_recover()
        self.stock[:] = [None, 0]

    def stock_pages(self, memcg) -> int:
        return self.stock[1] if self.stock[0] is memcg else 0

    # ------------------------------------------------------------------ reclaim and OOM
    def reclaim(self, memcg: Memcg, n: int) -> int:
        """Hierarchical reclaim of user pages: only page cache can go (no swap, and the
        series has no shrinker changes, so slab is never shrunk). Returns pages freed."""
        if self.stock[0] is not None and self.stock[0] in set(memcg.tree()):
            self.drain_stock()
        want = max(n, SWAP_CLUSTER_MAX)
        freed = 0
        for m in memcg.tree():
            take = min(m.cache_bytes // self.page, want - freed)
            if take:
                self._uncharge_user(m, "file", take)
                freed += take
            if freed >= want:
                break
        self.emit("reclaim", cgroup=memcg.path(), pages=freed)
        return freed

    def _handle_oom(self, memcg: Memcg, gfp: Gfp, current) -> int:
        """mem_cgroup_handle_oom: sleep when the OOM killer is disabled, else kill."""
        if memcg.oom_kill_disable:
            for m in memcg.tree():
                m.under_oom += 1
            self.nr_under_oom += 1
            self._waiting = memcg
            self.emit("under_oom", cgroup=memcg.path())
            return WAIT
        victim = self.select_bad_process(memcg)
        if victim is None:
            # The kernel would retry for ever with nothing to kill; we fail the charge.
            self.emit("oom_kill", cgroup=memcg.path(), pid=0, victim="none")
            return NOVICTIM
        self.emit("oom_kill", cgroup=memcg.path(), pid=victim.pid,
                  rss=victim.rss_total(), simulated=int(victim.simulated))
        self._exit(victim, "oom_kill")
        if victim is current:
            return OOM_DIE
        return RETRY

    def end_oom_wait(self, memcg: Memcg) -> None:
        """The waiter left mem_cgroup_handle_oom (woken, or interrupted by a signal)."""
        for m in memcg.tree():
            m.under_oom = max(0, m.under_oom - 1)
        self.nr_under_oom = max(0, self.nr_under_oom - 1)

    def _oom_recover(self) -> None:
        if self.nr_under_oom:
            self.oom_wake_seq += 1

    def select_bad_process(self, memcg: Memcg):
        """3.3 oom_badness: rss scaled to 1000 of the memcg's limit, at least 1; the first
        task (oldest) wins a tie."""
        members = set(memcg.tree())
        total = max(1, min(memcg.res.limit, memcg.memsw.limit) // self.page)
        chosen, best = None, 0
        for t in self.tasks.values():
            if t.memcg not in members:
                continue
            points = t.rss_total() // self.page * 1000 // total
            points = min(max(points, 1), 1000)
            if points > best:
                chosen, best = t, points
        return chosen

    # ------------------------------------------------------------------ user pages
    def charge_user(self, memcg: Memcg, kind: str, nbytes: int, task=None) -> Result:
        """Page faults (anon) or page cache (file): pages charged one by one, with OOM."""
        if memcg.removed:     # a command that slept on this cgroup's OOM until its rmdir
            raise EngineError(errno.ENODEV, "cgroup was removed")
        pages = -(-nbytes // self.page)
        res = Result(pages)
        if memcg.is_root or self._bulk_fits(memcg, pages):
            self._account_user(memcg, kind, pages, task)
            res.done = pages
            return res
        while res.done < pages:
            self._waiting = None
            r = self.try_charge(memcg, GFP_KERNEL, 1, True, task)
            if r == OK:
                self._account_user(memcg, kind, 1, task, charged=True)
                res.done += 1
                continue
            res.status = {WAIT: "wait", OOM_DIE: "killed"}.get(r, "nomem")
            res.wait_on = self._waiting if r == WAIT else None
            break
        return res

    def _bulk_fits(self, memcg, pages) -> bool:
        if self.config.charge_batch:
            return False
        size = pages * self.page
        if memcg.res.charge(size) is not None:
            return False
        if self.config.swap_account and memcg.memsw.charge(size) is not None:
            memcg.res.uncharge(size)
            return False
        return True

    def _account_user(self, memcg, kind, pages, task, charged=True) -> None:
        size = pages * self.page
        memcg.pgpgin += pages
        if kind == "anon":
            memcg.rss_bytes += size
            memcg.pgfault += pages
            if task is not None:
                task.rss[memcg] = task.rss.get(memcg, 0) + size
        else:
            memcg.cache_bytes += size

    def uncharge_user(self, memcg: Memcg, kind: str, nbytes: int, task=None) -> int:
        """Free anon pages of `task` (or of the memcg) or page cache. Returns pages freed."""
        pages = -(-nbytes // self.page)
        if kind == "anon":
            owners = [task] if task is not None else [t for t in self.tasks.values()
                                                      if memcg in t.rss]
            freed = 0
            for t in owners:
                for m in list(t.rss):
                    if task is None and m is not memcg:
                        continue
                    k = min(pages - freed, t.rss[m] // self.page)
                    if k:
                        self._uncharge_user(m, "anon", k, t)
                        freed += k
            untracked = min(pages - freed, (memcg.rss_bytes // self.page) if task is None else 0)
            if untracked > 0:
                self._uncharge_user(memcg, "anon", untracked)
                freed += untracked
            return freed
        k = min(pages, memcg.cache_bytes // self.page)
        if k:
            self._uncharge_user(memcg, "file", k)
        return k

    def _uncharge_user(self, memcg, kind, pages, task=None) -> None:
        size = pages * self.page
        if kind == "anon":
            memcg.rss_bytes -= size
            if task is not None:
                left = task.rss[memcg] - size
                if left:
                    task.rss[memcg] = left
                else:
                    del task.rss[memcg]
        else:
            memcg.cache_bytes -= size
        memcg.pgpgout += pages
        if not memcg.is_root:
            self._uncharge(memcg.res, size, "res")
            if self.config.swap_account:
                self._uncharge(memcg.memsw, size, "memsw")
        self._oom_recover()

    # ------------------------------------------------------------------ object allocation
    def alloc(self, orig: KmemCache, count: int, memcg: Memcg, gfp: Gfp = GFP_KERNEL,
              irq: bool = False, task=None, owner=None) -> Result:
        """kmem_cache_alloc() `count` times by a task of `memcg` (spec 3.1, 2.1)."""
        res = Result(count)
        cache = self._select_cache(orig, memcg, gfp, irq)
        res.cache = cache
        owner = owner if owner is not None else (memcg.pool if memcg else self.boot)
        self.alloc_seq += 1
        self._waiting = None
        res.done = cache.alloc(count, owner, self.alloc_seq,
                               self._grow(cache, gfp, task, res))
        if task is not None and owner is task.objs and task.pid not in self.tasks:
            self.free_owner(owner)   # OOM-killed during this call: its exit frees these too
        return res

    def free(self, cache: KmemCache, owner: Owner, count: int) -> int:
        n = cache.free_objs(owner, count, self._slab_freed(cache))
        self._after_free(cache)
        return n

    def free_named(self, name: str, count: int, memcg: Memcg) -> int:
        """`free CACHE COUNT`: an original name frees the cgroup's objects of it (its copy and
        the global cache, newest first); a concrete name frees from that cache."""
        if name in self.originals:
            orig = self.originals[name]
            cands = [(c, memcg.pool) for c in (memcg.slabs.get(orig.id), orig) if c is not None]
        else:
            cands = [(c, o) for c in self.caches_newest_first() if c.name == name
                     for o in list(c.holders) if o is not self.boot]
            if not any(c.name == name for c in self.caches):
                raise EngineError(errno.EINVAL, f"no cache named {name!r}")
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
        """Destroy every empty slab of every cache (and so dead caches left with none)."""
        n = 0
        for cache in list(self.caches):
            if cache.free:
                n += cache.reap(self._slab_freed(cache))
            self._after_free(cache)
        return n

    # ------------------------------------------------------------------ tree
    def mkdir(self, parent: Memcg, name: str) -> Memcg:
        if parent.removed:
            raise EngineError(errno.ENODEV, "parent was removed")
        if name in parent.children:
            raise EngineError(errno.EEXIST, f"{name} exists")
        if self.nr_memcgs >= self.config.max_memcgs:
            raise EngineError(errno.ENOSPC, f"no css id left (limit {self.config.max_memcgs})")
        self.nr_memcgs += 1
        self.last_memcg_id += 1
        m = Memcg(name, parent, id=self.last_memcg_id, swappiness=self.swappiness(parent))
        parent.children[name] = m
        return m

    def rename(self, memcg: Memcg, new: str) -> None:
        if memcg.is_root:
            raise EngineError(errno.EBUSY, "cannot rename the root")
        if new in memcg.parent.children:
            raise EngineError(errno.EEXIST, f"{new} exists")
        del memcg.parent.children[memcg.name]
        memcg.name = new
        memcg.parent.children[new] = memcg   # existing copies keep their names

    def rmdir(self, memcg: Memcg) -> None:
        """cgroup_rmdir -> pre_destroy -> mem_cgroup_force_empty(free_all=false) (spec 4.1)."""
        if memcg.is_root:
            raise EngineError(errno.EBUSY, "the root cgroup cannot be removed")
        self._check_empty(memcg)
        self.drain_stock()
        self.memcg_kmem_move(memcg)
        self._move_user_pages(memcg, reclaim_first=False)
        if memcg.res.usage:
            # Left-over res (independent toggled with charges out, spec 1.4): the kernel's
            # loop spins until a signal; we answer as the interrupted loop would.
            raise EngineError(errno.EINTR, f"res usage {memcg.res.usage} never drains "
                              "(independent_kmem_limit toggled with charges out, spec 1.4)")
        if memcg.memsw.parent is not None:       # its never-uncharged kmem stays up there
            memcg.parent.kmem_in_memsw += memcg.kmem_in_memsw
        del memcg.parent.children[memcg.name]
        memcg.removed = True
        self.nr_memcgs -= 1
        for key in [k for k in self.create_queue if k[0] is memcg]:
            del self.create_queue[key]
        # A control command can charge a cgroup it is not in (cg=) and sleep on its OOM;
        # the cgroup is gone now: wake the sleepers so they retry (and fail) instead of
        # waiting for an unrelated memcg_oom_recover.
        self._oom_recover()

    def _check_empty(self, memcg):
        if memcg.tasks:
            raise EngineError(errno.EBUSY, f"cgroup has {len(memcg.tasks)} task(s)")
        if memcg.children:
            raise EngineError(errno.EBUSY, "cgroup has children")

    def memcg_kmem_move(self, memcg: Memcg) -> None:
        """patch 02/10 (+07, +08): caches go dead, kmem usage is forgotten (or moved to root)."""
        self.create_queue.clear()
        owner = self.root if self.config.acct_root else None
        for c in list(memcg.slabs.values()):
            c.memcg = owner
            c.name += "dead"
            c.dead = True
            self.emit("cache_dead", cache=c.name, cgroup=memcg.path(), slabs=c.nr_slabs)
            self._after_free(c)
        memcg.slabs.clear()
        memcg.kmem_bypassed = 0
        amount = memcg.kmem.usage
        memcg.kmem.usage = 0
        # spec 4.1 c: ancestors keep the bytes. Book them on the kmem parent only: higher
        # ancestors already see them inside that parent's usage (check.py sums children).
        if memcg.kmem.parent is not None:
            memcg.kmem.parent.owner.kmem_leaked += amount
        if not memcg.independent_kmem_limit:
            if memcg.kmem_in_res != amount:
                for m in (memcg, *memcg.ancestors()):
                    m.quirks.add("kmem_move_mismatch")
            self._uncharge(memcg.res, amount, "res")
            memcg.kmem_in_res = 0
        if self.config.acct_root and amount:
            if memcg.kmem_leaked:
                # spec 4.1 c + 2.8 step 5: a deleted child's bytes, kept here, were moved to
                # root when the child went; moving `amount` counts them in root a second time.
                self.root.quirks.add("kmem_leak_moved_twice")
            self.root.kmem.charge_nofail(amount)
            self.root.res.charge_nofail(amount)

    def _move_user_pages(self, memcg: Memcg, reclaim_first: bool) -> None:
        """mem_cgroup_move_parent for every LRU page; the parent may reclaim but not OOM."""
        parent = memcg.parent
        for _ in range(2):
            pages = (memcg.rss_bytes + memcg.cache_bytes) // self.page
            if not pages:
                return
            if parent.is_root or self._parent_takes(parent, pages):
                # Under hierarchy the parent's reclaim may have taken some of these very
                # pages: it was charged for them and they are gone, so it gives them back.
                gone = pages - (memcg.rss_bytes + memcg.cache_bytes) // self.page
                if gone and not parent.is_root:
                    self._uncharge(parent.res, gone * self.page, "res")
                    if self.config.swap_account:
                        self._uncharge(parent.memsw, gone * self.page, "memsw")
                self._reparent(memcg, parent)
                return
            # ENOMEM from the parent: reclaim here once, then EBUSY (spec 4.1).
            self.reclaim(memcg, memcg.cache_bytes // self.page)
        raise EngineError(errno.EBUSY, "the parent cannot take the remaining pages")

    def _parent_takes(self, parent, pages) -> bool:
        return self.try_charge(parent, GFP_KERNEL, pages, False) == OK

    def _reparent(self, memcg, parent) -> None:
        size = memcg.rss_bytes + memcg.cache_bytes
        if not memcg.is_root:
            self._uncharge(memcg.res, size, "res")
            if self.config.swap_account:
                self._uncharge(memcg.memsw, size, "memsw")
        parent.rss_bytes += memcg.rss_bytes
        parent.cache_bytes += memcg.cache_bytes
        for t in self.tasks.values():
            if memcg in t.rss:
                t.rss[parent] = t.rss.get(parent, 0) + t.rss.pop(memcg)
        memcg.rss_bytes = memcg.cache_bytes = 0

    def force_empty(self, memcg: Memcg, host_tasks: bool = False) -> None:
        """memory.force_empty (free_all=true) with patch 02/10 (spec 4.2)."""
        if memcg.is_root or host_tasks:
            raise EngineError(errno.EBUSY, "cgroup has tasks")
        self._check_empty(memcg)
        self.drain_stock()
        while memcg.cache_bytes:
            if not self.reclaim(memcg, memcg.cache_bytes // self.page):
                break
        self._move_user_pages(memcg, reclaim_first=True)
        left = memcg.res.usage - (memcg.kmem.usage if not memcg.independent_kmem_limit else 0)
        if left:
            # The loop's exit test would never hold (or wraps, spec 4.2 edge): it spins
            # until a signal; we answer as the interrupted loop would.
            raise EngineError(errno.EINTR, f"res - kmem = {left}: force_empty cannot finish")

    # ------------------------------------------------------------------ settings (spec 8.1-8.2, 1.2)
    def swappiness(self, memcg: Memcg) -> int:
        return self.config.vm_swappiness if memcg.is_root else memcg.swappiness

    def _hier_locked(self, memcg: Memcg) -> bool:
        return memcg.parent.use_hierarchy or (memcg.use_hierarchy and bool(memcg.children))

    def set_limit(self, memcg: Memcg, val: int) -> None:
        self._resize(memcg, val, memsw=False)

    def set_memsw_limit(self, memcg: Memcg, val: int) -> None:
        self._resize(memcg, val, memsw=True)

    def _resize(self, memcg: Memcg, val: int, memsw: bool) -> None:
        """mem_cgroup_resize_limit / _memsw_limit: reclaim and retry, EBUSY when stuck."""
        if memcg.is_root:
            raise EngineError(errno.EINVAL, "no limits on the root cgroup")
        counter = memcg.memsw if memsw else memcg.res
        enlarge = val > counter.limit
        retries = MEM_CGROUP_RECLAIM_RETRIES * sum(1 for _ in memcg.walk())
        old = counter.usage
        while True:
            if memsw and val < memcg.res.limit:
                raise EngineError(errno.EINVAL, "memsw limit below memory.limit_in_bytes")
            if not memsw and val > memcg.memsw.limit:
                raise EngineError(errno.EINVAL, "memory limit above memory.memsw.limit_in_bytes")
            if counter.usage <= val:
                counter.limit = val
                break
            self.reclaim(memcg, (counter.usage - val) // self.page)
            if counter.usage >= old:
                retries -= 1
                if not retries:
                    raise EngineError(errno.EBUSY, f"usage {counter.usage} stays above {val}")
            else:
                old = counter.usage
        if enlarge:
            self._oom_recover()

    def set_soft_limit(self, memcg: Memcg, val: int) -> None:
        memcg.res.soft_limit = val

    def set_kmem_limit(self, memcg: Memcg, val: int) -> None:
        """spec 1.2: root EINVAL, only while independent (EINVAL), EBUSY over usage, no reclaim."""
        if memcg.is_root:
            raise EngineError(errno.EINVAL, "no limits on the root cgroup")
        if not memcg.independent_kmem_limit:
            raise EngineError(errno.EINVAL, "memory.kmem.independent_kmem_limit is 0")
        memcg.kmem.set_limit(val)

    def set_tcp_limit(self, memcg: Memcg, val: int) -> None:
        memcg.tcp.set_limit(min(val, RESOURCE_MAX))   # tcp_update_limit clamps

    def set_independent(self, memcg: Memcg, val: int) -> None:
        """spec 1.4: no checks at all in v1/10; the old kmem limit stays."""
        new = bool(val)
        if new != memcg.independent_kmem_limit and (memcg.kmem.usage or memcg.kmem_bypassed):
            memcg.quirks.add("independent_toggled")
        memcg.independent_kmem_limit = new

    def set_use_hierarchy(self, memcg: Memcg, val: int) -> None:
        if (memcg.parent is None or not memcg.parent.use_hierarchy) and val in (0, 1):
            if memcg.children:
                raise EngineError(errno.EBUSY, "cgroup has children")
            memcg.use_hierarchy = bool(val)
        else:
            raise EngineError(errno.EINVAL, "parent uses hierarchy" if val in (0, 1)
                              else "use_hierarchy takes 0 or 1")

    def set_swappiness(self, memcg: Memcg, val: int) -> None:
        if val > 100 or memcg.is_root:
            raise EngineError(errno.EINVAL, "swappiness is 0..100 and not settable on root")
        if self._hier_locked(memcg):
            raise EngineError(errno.EINVAL, "hierarchy forbids changing swappiness here")
        memcg.swappiness = val

    def set_oom_kill_disable(self, memcg: Memcg, val: int) -> None:
        if memcg.is_root or val not in (0, 1):
            raise EngineError(errno.EINVAL, "oom_kill_disable takes 0 or 1, not on root")
        if self._hier_locked(memcg):
            raise EngineError(errno.EINVAL, "hierarchy forbids changing oom_control here")
        memcg.oom_kill_disable = bool(val)
        if not val:
            self._oom_recover()

    def set_move_charge(self, memcg: Memcg, val: int) -> None:
        if val >= 4:
            raise EngineError(errno.EINVAL, "move_charge_at_immigrate takes bits 0 and 1")
        memcg.move_charge_at_immigrate = val

    def reset_failcnt(self, counter) -> None:
        counter.failcnt = 0

    def reset_max_usage(self, counter) -> None:
        counter.reset_max()

    # ------------------------------------------------------------------ tasks
    def attach(self, memcg: Memcg, pid: int, comm: str = "") -> Task:
        """Write `pid` to memcg's tasks: join, leaving the old cgroup. Kernel charges stay
        behind; anon charges move only with move_charge_at_immigrate bit 0 (spec 4.1, 8.5)."""
        if memcg.removed:
            raise EngineError(errno.ENODEV, "cgroup was removed")
        t = self.tasks.get(pid)
        if t is None:
            t = self.tasks[pid] = Task(pid, memcg, simulated=False, comm=comm)
            memcg.tasks[pid] = t
            return t
        if t.memcg is memcg:
            return t
        if memcg.move_charge_at_immigrate & 1:
            self._move_task_charge(t, memcg)
        del t.memcg.tasks[pid]
        t.memcg = memcg
        memcg.tasks[pid] = t
        return t

    def _move_task_charge(self, t: Task, to: Memcg) -> None:
        old = t.memcg
        size = t.rss.get(old, 0)
        if not size:
            return
        if not to.is_root and self.try_charge(to, GFP_KERNEL, size // self.page, False) != OK:
            raise EngineError(errno.ENOMEM, "the destination cannot take the task's charges")
        self._uncharge_user(old, "anon", size // self.page, t)
        old.pgpgout -= size // self.page   # a move is not a page-out
        to.rss_bytes += size
        t.rss[to] = t.rss.get(to, 0) + size

    def spawn(self, memcg: Memcg, parent: Task = None) -> tuple:
        """fork(): allocate FORK_RECIPE in memcg's caches; all or nothing. Returns
        (Task or None, Result of the failing step or None)."""
        if memcg.removed:
            raise EngineError(errno.ENODEV, "cgroup was removed")
        if self.nr_simulated >= self.config.max_tasks:
            raise EngineError(errno.ENOSPC, f"{self.nr_simulated} simulated tasks: the cap "
                              f"(max_tasks={self.config.max_tasks}) is reached")
        recipe = [(self.cache(name), n) for name, n in FORK_RECIPE]
        pid = self.next_pid
        t = Task(pid, memcg, simulated=True, comm="sim")
        for cache, n in recipe:
            r = self.alloc(cache, n, memcg, GFP_KERNEL, task=parent, owner=t.objs)
            if not r.ok or r.done < n:
                self.free_owner(t.objs)
                if r.ok:
                    r.status = "nomem"
                return None, r
        self.next_pid += 1
        self.nr_simulated += 1
        self.tasks[pid] = t
        memcg.tasks[pid] = t
        self.emit("task_spawn", pid=pid, cgroup=memcg.path())
        return t, None

    def exit_task(self, pid: int, reason: str = "exit") -> Task:
        t = self.tasks.get(pid)
        if t is None:
            raise EngineError(errno.ESRCH, f"no task {pid}")
        self._exit(t, reason)
        return t

    def _exit(self, t: Task, reason: str) -> None:
        self.free_owner(t.objs)
        for m, size in list(t.rss.items()):
            self._uncharge_user(m, "anon", size // self.page, t)
        del t.memcg.tasks[t.pid]
        del self.tasks[t.pid]
        self.nr_simulated -= t.simulated
        self.emit("task_exit", pid=t.pid, cgroup=t.memcg.path(), reason=reason)

    # ------------------------------------------------------------------ the dcache
    def touch(self, memcg: Memcg, count: int, gfp: Gfp = GFP_KERNEL, task=None) -> Result:
        """Create files: a dentry then an inode each, kept in the dcache after the task.
        Files go one by one as in the kernel, but in runs that need no slab growth, so the
        cost is O(slabs): where the first failure falls is exactly as one-by-one."""
        dentry, inode = self.cache(DENTRY), self.cache(INODE)
        res = Result(count)
        while res.done < count:
            dc = self._select_cache(dentry, memcg, gfp, False)
            ic = self._select_cache(inode, memcg, gfp, False)
            k = max(1, min(dc.free_objects, ic.free_objects, count - res.done))
            d = self.alloc(dentry, k, memcg, gfp, task=task, owner=memcg.dcache)
            i = self.alloc(inode, d.done, memcg, gfp, task=task, owner=memcg.dcache)
            if i.done < d.done:
                self.free(d.cache, memcg.dcache, d.done - i.done)
            memcg.files["cached"] += i.done
            res.done += i.done
            if i.done < k:
                failed = i if i.done < d.done else d
                res.status, res.wait_on, res.cache = failed.status, failed.wait_on, failed.cache
                break
            res.cache = d.cache
        return res

    def unlink(self, memcg: Memcg, count: int) -> int:
        """Remove files: the inode goes, the dentry stays as an unused negative dentry."""
        f = memcg.files
        if count > f["cached"] + f["uncached"]:
            raise EngineError(errno.EINVAL, f"only {f['cached'] + f['uncached']} file(s) here")
        cached = min(count, f["cached"])
        inode = self.cache(INODE)
        for c in (memcg.slabs.get(inode.id), inode):
            if c is not None and cached:
                cached -= self.free(c, memcg.dcache, min(cached, memcg.dcache.count(c)))
        moved = min(count, f["cached"])
        f["cached"] -= moved
        f["negative"] += moved
        f["uncached"] -= count - moved
        return count

    def drop_caches(self) -> int:
        """echo 2 > drop_caches: every unused dentry and inode, dead caches' included."""
        n = 0
        for name in (DENTRY, INODE):
            orig = self.originals.get(name)
            if orig is None:
                continue
            for c in [orig, *orig.children]:
                for o in list(c.holders):
                    if o.memcg is not None and o is o.memcg.dcache:
                        n += self.free(c, o, o.count(c))
        for m in self.root.walk():
            m.files["uncached"] += m.files["cached"]
            m.files["cached"] = m.files["negative"] = 0
        return n
