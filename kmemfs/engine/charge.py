"""The charge paths: kmem charge and uncharge with the bypass ledger (01/10 memcg_charge_kmem,
memcg_uncharge_kmem; 07/10), 3.3's memcg charge path with patch 03/10 and the per-CPU stock (3.3.8
consume_stock, refill_stock), reclaim, the memcg OOM killer, and user pages."""
import errno

from .errors import EngineError
from .gfp import GFP_KERNEL, GFP_THISNODE, Gfp, gfp_name
from .memcg import Memcg
from .result import NOMEM, NOVICTIM, OK, OOM_DIE, RETRY, WAIT, WOULDBLOCK, Result

MEM_CGROUP_RECLAIM_RETRIES = 5
MEM_CGROUP_MAX_RECLAIM_LOOPS = 100
SWAP_CLUSTER_MAX = 32


class ChargePath:
    # ------------------------------------------------------------------ kmem charge (01/10, 07/10)
    def memcg_charge_kmem(self, memcg, gfp: Gfp, delta: int, current=None) -> int:
        """01/10 + 07/10 + 08/10. Returns OK, or why the slab may not grow: NOMEM, WAIT, or
        OOM_DIE (the charger is dying: 3.3's try_charge left through `bypass:` with -EINTR,
        which 01/10 turns into -ENOMEM like any non-zero return)."""
        may_oom = bool(gfp & Gfp.WAIT and gfp & Gfp.FS and not gfp & Gfp.NORETRY)
        force = memcg is not None and self.policy.forces(int(gfp))
        if memcg is not None and not memcg.independent_kmem_limit:
            r = self.try_charge(memcg, gfp, delta // self.page, may_oom, current)
            if force and r in (NOMEM, OOM_DIE):    # a dying task's NOFAIL is forced too
                self._force(memcg, memcg.res, delta)
                if self.config.swap_account:
                    self._force(memcg, memcg.memsw, delta)
                r = OK
            if r != OK:
                return r
            # 07/10's `!_memcg` branch (the kmem_bypassed ledger) never fires on 3.3: a
            # zero return always leaves a memcg in *ptr ("memcg: return -EINTR at
            # bypassing try_charge()", Dec 2011, in 3.3).
            if not memcg.is_root:
                memcg.kmem_in_res += delta
                if self.config.swap_account:
                    memcg.kmem_in_memsw += delta
        if memcg is not None:
            failed = memcg.kmem.charge(delta)
            if failed is not None and force:
                self._force(memcg, memcg.kmem, delta)
                failed = None
            if failed is not None:
                self.emit("charge_fail", cgroup=failed.owner.path(), counter="kmem", bytes=delta,
                          gfp=gfp_name(gfp))
                if not memcg.independent_kmem_limit:
                    # 01/10 memcg_charge_kmem: dependent with a left-over kmem limit; res stays
                    # charged.
                    memcg.quirks.add("kmem_fail_after_res")
                return NOMEM
        elif self.config.acct_root:
            if self.root is None:
                self.pre_memcg_kmem_bytes += delta
            else:
                self.root.kmem.charge_nofail(delta)
        return OK

    def kmem_getpages_charge(self, memcg, gfp: Gfp, delta: int, current=None) -> int:
        """The charges of one slab grow (05/10 charges in kmem_getpages), as often as 3.3's
        SLAB calls kmem_getpages for it. Without CONFIG_NUMA once. With it (mm/slab.c
        __do_cache_alloc): cache_alloc_refill grows with flags|GFP_THISNODE, then
        ____cache_alloc_node grows with flags|GFP_THISNODE, then fallback_alloc (no other
        node has free objects: everything lives on node 0) calls kmem_getpages with the
        caller's flags. GFP_THISNODE carries __GFP_NORETRY, so the first two fail at the
        limit without reclaim (03/10), each counted in failcnt."""
        if self.config.numa:
            for _ in range(2):
                r = self.memcg_charge_kmem(memcg, gfp | GFP_THISNODE, delta, current)
                if r == OK:
                    return OK
        return self.memcg_charge_kmem(memcg, gfp, delta, current)

    def _force(self, memcg, counter, delta: int) -> None:
        """The optin design's __GFP_NOFAIL: charged past the limit (try_charge_memcg force:)."""
        counter.charge_nofail(delta)
        self.emit("charge_forced", cgroup=memcg.path(), bytes=delta)

    def memcg_uncharge_kmem(self, memcg, delta: int) -> None:
        """01/10 + 07/10 + 08/10. 07/10's ledger step (uncharge kmem_bypassed first) is left
        out: on 3.3 the ledger is always 0 (see memcg_charge_kmem)."""
        if memcg is not None:
            self._uncharge(memcg.kmem, delta, "kmem")
            if not memcg.independent_kmem_limit:
                if not memcg.is_root:   # as on the charge side: root (ACCT_ROOT dead caches)
                    memcg.kmem_in_res -= delta
                    if memcg.kmem_in_res < 0:
                        memcg.quirks.add("independent_toggled")
                self._uncharge(memcg.res, delta, "res")   # memsw is not uncharged (01/10)
                self._oom_recover()
        elif self.config.acct_root:
            self._uncharge(self.root.kmem, delta, "kmem")

    def _uncharge(self, counter, delta: int, name: str) -> None:
        for c, short in counter.uncharge(delta):
            for u in c.chain():    # the levels above lost `short` more than c did
                u.owner.quirks.add("underflow")
            self.emit("uncharge_underflow", cgroup=c.owner.path(), counter=name, bytes=short)

    # ------------------------------------------------------------------ memcg charge (3.3.8)
    def try_charge(self, memcg: Memcg, gfp: Gfp, n: int, may_oom: bool, current=None) -> int:
        """__mem_cgroup_try_charge of 3.3 with patch 03/10. Returns OK, NOMEM, WAIT or
        OOM_DIE (3.3's `bypass:` exit, -EINTR)."""
        if current is not None and current.memdie:
            # TIF_MEMDIE / fatal_signal_pending: leave at the top, before even root's check.
            return self._bypass(memcg, n)
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
            elif r == OOM_DIE:
                return self._bypass(memcg, n)
            else:
                return r     # WAIT

    def _bypass(self, memcg, n) -> int:
        """`bypass:` *ptr = root_mem_cgroup, return -EINTR: nothing is charged."""
        self.emit("bypass", cgroup=memcg.path(), bytes=n * self.page)
        return OOM_DIE

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
                  else "res", bytes=n * self.page, gfp=gfp_name(gfp))
        if not gfp & Gfp.WAIT:
            return WOULDBLOCK
        if gfp & Gfp.NORETRY:
            return NOMEM          # 03/10: NOMEM with no reclaim
        progress = self.mem_cgroup_reclaim(over, n)
        if failed.margin() >= n * self.page:
            return RETRY
        if progress:
            # 03/10 compares pages with bytes, so any progress retries (mem_cgroup_do_charge).
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

    def drain_all_stock(self, root_memcg: Memcg) -> None:
        """drain_all_stock: only a stock whose memcg is root_memcg or, when root_memcg is
        hierarchical, below it (mem_cgroup_same_or_subtree)."""
        cached = self.stock[0]
        if cached is not None and (cached is root_memcg or root_memcg.use_hierarchy
                                   and root_memcg in cached.ancestors()):
            self.drain_stock()

    def stock_pages(self, memcg) -> int:
        return self.stock[1] if self.stock[0] is memcg else 0

    # ------------------------------------------------------------------ reclaim and OOM
    def margin_pages(self, memcg: Memcg) -> int:
        """mem_cgroup_margin: what res (and memsw) can still take, in pages."""
        margin = memcg.res.margin()
        if self.config.swap_account:
            margin = min(margin, memcg.memsw.margin())
        return margin // self.page

    def mem_cgroup_reclaim(self, memcg: Memcg, n: int, shrink: bool = False) -> int:
        """3.3 mem_cgroup_reclaim: reclaim passes; from the second on, the subtree's stock is
        drained first (drain_all_stock_async, which on this one CPU drains at once). Stops
        when a limit shrinker made progress, when memcg has any margin, or when two passes
        freed nothing. So a limit write (shrink) drains the stock only if usage sits exactly
        at the old limit and nothing is reclaimable."""
        total = 0
        for loop in range(MEM_CGROUP_MAX_RECLAIM_LOOPS):
            if loop:
                self.drain_all_stock(memcg)
            total += self.reclaim(memcg, n)
            if (total and shrink) or self.margin_pages(memcg) or (loop and not total):
                break
        return total

    def reclaim(self, memcg: Memcg, n: int) -> int:
        """One pass of hierarchical reclaim (try_to_free_mem_cgroup_pages) of user pages: only
        page cache can go (no swap, and the series has no shrinker changes, so slab is never
        shrunk). Returns pages freed."""
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
        victim.memdie = True      # TIF_MEMDIE: its later charges bypass (try_charge)
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
        if task is not None and task.memdie:
            # try_charge's first test: -EINTR, the page is committed to root and freed
            # with the dying task; nothing stays charged.
            self._bypass(memcg, 1)
            res.status = "killed"
            return res
        if memcg.is_root or self._bulk_charge(memcg, pages):
            self._account_user(memcg, kind, pages, task)
            res.done = pages
            return res
        while res.done < pages:
            self._waiting = None
            r = self.try_charge(memcg, GFP_KERNEL, 1, True, task)
            if r == OK:
                self._account_user(memcg, kind, 1, task)
                res.done += 1
                continue
            res.status = {WAIT: "wait", OOM_DIE: "killed"}.get(r, "nomem")
            res.wait_on = self._waiting if r == WAIT else None
            break
        return res

    def _bulk_charge(self, memcg, pages) -> bool:
        """Charge `pages` one-page charges at once when none would fail: from the stock, then
        whole batches (each batch: one page charged, the rest to the stock), exactly as one
        by one (usage only rises, so max_usage ends the same). False, with nothing changed,
        when some page would need the slow path."""
        batch = self.config.charge_batch
        have = self.stock_pages(memcg) if batch else 0
        need = max(0, pages - have)
        size = (-(-need // batch) * batch if batch else need) * self.page
        counters = [memcg.res] + ([memcg.memsw] if self.config.swap_account else [])
        if size and any(c.usage + size > c.limit for ctr in counters for c in ctr.chain()):
            return False
        if size:
            for ctr in counters:
                ctr.charge_nofail(size)
        if have:
            self.stock[1] -= min(have, pages)
        if batch and need:
            self._refill_stock(memcg, size // self.page - need)
        return True

    def memcg_check_events(self, memcg: Memcg) -> None:
        """memcg_check_events -> mem_cgroup_threshold: thresholds of memcg and its
        hierarchical ancestors are looked at. 3.3 calls it only where a page's charge is
        committed, uncharged or moved, never from the slab charge path (kmem charges go
        through __mem_cgroup_try_charge alone). The 128-event ratelimit is not modelled."""
        for c in memcg.res.chain():
            c.owner.threshold_checks += 1

    def _account_user(self, memcg, kind, pages, task) -> None:
        self.memcg_check_events(memcg)    # __mem_cgroup_commit_charge
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
        self.memcg_check_events(memcg)    # __mem_cgroup_uncharge_common
        self._oom_recover()
