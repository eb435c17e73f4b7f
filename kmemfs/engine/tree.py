"""The memcg tree and its settings: mkdir, rename, rmdir with the series' memcg_kmem_move,
force_empty (02/10), and every settable knob with its checks (3.3.8 mm/memcontrol.c, 01/10)."""
import errno

from .config import RESOURCE_MAX
from .errors import EngineError
from .gfp import GFP_KERNEL
from .memcg import Memcg
from .result import OK
from .charge import MEM_CGROUP_RECLAIM_RETRIES


class TreeOps:
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
        """cgroup_rmdir -> pre_destroy -> mem_cgroup_force_empty(free_all=false) with 02/10."""
        if memcg.is_root:
            raise EngineError(errno.EBUSY, "the root cgroup cannot be removed")
        self._check_empty(memcg)
        self.drain_all_stock(memcg)
        self.memcg_kmem_move(memcg)
        self._move_user_pages(memcg)
        if memcg.res.usage:
            # Left-over res (independent toggled with charges out, docs/semantics.md section 9):
            # the kernel's loop spins until a signal; we answer as the interrupted loop would.
            raise EngineError(errno.EINTR, f"res usage {memcg.res.usage} never drains "
                              "(independent_kmem_limit toggled with charges out, "
                              "docs/semantics.md section 9)")
        self._pool_to_parent(memcg)              # only once nothing can fail any more
        if memcg.memsw.parent is not None:       # its never-uncharged kmem stays up there
            memcg.parent.kmem_in_memsw += memcg.kmem_in_memsw
        del memcg.parent.children[memcg.name]
        memcg.detach()
        self.nr_memcgs -= 1
        for key in [k for k in self.create_queue if k[0] is memcg]:
            del self.create_queue[key]
        self.check_for_release(memcg.parent)
        # A control command can charge a cgroup it is not in (cg=) and sleep on its OOM;
        # the cgroup is gone now: wake the sleepers so they retry (and fail) instead of
        # waiting for an unrelated memcg_oom_recover.
        self._oom_recover()

    def check_for_release(self, memcg: Memcg) -> None:
        """3.3 kernel/cgroup.c: a task left `memcg` or a child of it was removed, so it is
        CGRP_RELEASABLE; with notify_on_release and neither tasks nor children left,
        check_for_release queues it for the release agent. kmemfs logs a `release` event and
        never runs the agent (docs/semantics.md §13)."""
        if (not memcg.is_root and not memcg.removed and memcg.notify_on_release
                and not memcg.tasks and not memcg.children):
            self.emit("release", cgroup=memcg.path())

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
        # 02/10 memcg_kmem_move: ancestors keep the bytes. Book them on the kmem parent only:
        # higher ancestors already see them inside that parent's usage (check.py sums children).
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
                # 02/10 + 08/10 memcg_kmem_move: a deleted child's bytes, kept here, were moved to
                # root when the child went; moving `amount` counts them in root a second time.
                self.root.quirks.add("kmem_leak_moved_twice")
            self.root.kmem.charge_nofail(amount)
            self.root.res.charge_nofail(amount)

    def _pool_to_parent(self, memcg: Memcg) -> None:
        """The cgroup's `alloc`/`kmalloc` objects in global caches (interrupt context,
        NOACCOUNT/NOFAIL, a copy not yet created) were never charged to it and outlive it, as
        on 3.3. The parent's pool takes them so that `free NAME` there still reaches them (a
        dead copy's stay, reached by the copy's name): else an off-slab one's descriptor, from
        this cgroup's size-N copy, would pin that dead copy for good. Nothing is charged."""
        pool, heir = memcg.pool, memcg.parent.pool
        for cache in [c for c in pool.runs if c.orig is None]:
            runs = pool.runs.pop(cache)
            del cache.holders[pool]
            if cache in heir.runs:     # one list, newest last: runs are [slab, count, seq]
                runs = sorted(heir.runs[cache] + runs, key=lambda r: r[2])
            else:
                cache.holders[heir] = None
            heir.runs[cache] = runs

    def _move_user_pages(self, memcg: Memcg) -> None:
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
            # ENOMEM from the parent: reclaim here once, then EBUSY (3.3.8
            # mem_cgroup_force_empty).
            self.reclaim(memcg, memcg.cache_bytes // self.page)
        raise EngineError(errno.EBUSY, "the parent cannot take the remaining pages")

    def _parent_takes(self, parent, pages) -> bool:
        """mem_cgroup_move_parent charges the parent page by page (no OOM)."""
        if self._bulk_charge(parent, pages):
            return True
        return self.try_charge(parent, GFP_KERNEL, pages, False) == OK

    def _reparent(self, memcg, parent) -> None:
        size = memcg.rss_bytes + memcg.cache_bytes
        if not memcg.is_root:
            self._uncharge(memcg.res, size, "res")
            if self.config.swap_account:
                self._uncharge(memcg.memsw, size, "memsw")
        parent.rss_bytes += memcg.rss_bytes
        parent.cache_bytes += memcg.cache_bytes
        self.memcg_check_events(parent)   # mem_cgroup_move_account: to, then from
        self.memcg_check_events(memcg)
        for t in self.tasks.values():
            if memcg in t.rss:
                t.rss[parent] = t.rss.get(parent, 0) + t.rss.pop(memcg)
        memcg.rss_bytes = memcg.cache_bytes = 0

    def force_empty(self, memcg: Memcg, host_tasks: bool = False) -> None:
        """memory.force_empty (free_all=true) with patch 02/10."""
        if memcg.is_root or host_tasks:
            raise EngineError(errno.EBUSY, "cgroup has tasks")
        self._check_empty(memcg)
        self.drain_all_stock(memcg)
        while memcg.cache_bytes:
            if not self.reclaim(memcg, memcg.cache_bytes // self.page):
                break
        self._move_user_pages(memcg)
        left = memcg.res.usage - (memcg.kmem.usage if not memcg.independent_kmem_limit else 0)
        if left:
            # The loop's exit test would never hold (or wraps: 02/10's unsigned long usage): it
            # spins until a signal; we answer as the interrupted loop would.
            raise EngineError(errno.EINTR, f"res - kmem = {left}: force_empty cannot finish")

    # ------------------------------------------------------------------ settings (3.3.8, 01/10)
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
            self.mem_cgroup_reclaim(memcg, (counter.usage - val) // self.page, shrink=True)
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
        """01/10 + 3.3.8 mem_cgroup_write: root EINVAL, only while independent (EINVAL), EBUSY
        over usage, no reclaim."""
        if memcg.is_root:
            raise EngineError(errno.EINVAL, "no limits on the root cgroup")
        if not memcg.independent_kmem_limit:
            raise EngineError(errno.EINVAL, "memory.kmem.independent_kmem_limit is 0")
        memcg.kmem.set_limit(val)

    def set_tcp_limit(self, memcg: Memcg, val: int) -> None:
        """3.3 tcp_update_limit, after the value parsed: root has no cg_proto (EINVAL);
        clamp to RESOURCE_MAX; res_counter_set_limit (EBUSY below usage)."""
        if memcg.is_root:
            raise EngineError(errno.EINVAL, "the root memcg has no tcp counter (no cg_proto)")
        memcg.tcp.set_limit(min(val, RESOURCE_MAX))

    def set_independent(self, memcg: Memcg, val: int) -> None:
        """01/10 mem_cgroup_independent_kmem_limit_write: no checks at all; the old kmem limit
        stays."""
        new = bool(val)
        if new != memcg.independent_kmem_limit and (memcg.kmem.usage or memcg.kmem_bypassed):
            memcg.quirks.add("independent_toggled")
            # The README's warning, made visible: usage_in_bytes stops adding up.
            self.emit("independent_toggled", cgroup=memcg.path(), to=int(new),
                      kmem_bytes=memcg.kmem.usage)
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
