"""Tasks and what they allocate: membership and migration, fork's objects, exit, and the
dcache workload (touch, unlink, drop_caches)."""
import errno

from .errors import EngineError
from .gfp import GFP_KERNEL, Gfp
from .memcg import Memcg, Task
from .result import OK, Result

SIM_PID_BASE = 5_000_000   # above PID_MAX_LIMIT (4194304): never a host pid

# What a fork allocates (kernel/fork.c copy_process, dup_mm; pid from alloc_pid).
FORK_RECIPE = (("task_struct", 1), ("cred_jar", 1), ("signal_cache", 1), ("sighand_cache", 1),
               ("files_cache", 1), ("fs_cache", 1), ("mm_struct", 1), ("vm_area_struct", 8),
               ("anon_vma", 1), ("anon_vma_chain", 8), ("pid", 1))
DENTRY, INODE = "dentry", "inode_cache"


class TaskOps:
    # ------------------------------------------------------------------ tasks
    def attach(self, memcg: Memcg, pid: int, comm: str = "") -> Task:
        """Write `pid` to memcg's tasks: join, leaving the old cgroup. Kernel charges stay behind;
        anon charges move only with move_charge_at_immigrate bit 0 (3.3.8 mem_cgroup_move_charge)."""
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
        old = t.memcg
        del old.tasks[pid]
        t.memcg = memcg
        memcg.tasks[pid] = t
        self.check_for_release(old)
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
        self.memcg_check_events(to)       # mem_cgroup_move_account

    def spawn(self, memcg: Memcg, parent: Task = None, recipe=FORK_RECIPE,
              comm: str = "sim") -> tuple:
        """fork(): allocate `recipe` (FORK_RECIPE; empty for a replayed task, whose trace
        holds its own allocations) in memcg's caches; all or nothing. Returns
        (Task or None, Result of the failing step or None)."""
        if memcg.removed:
            raise EngineError(errno.ENODEV, "cgroup was removed")
        if self.nr_simulated >= self.config.max_tasks:
            raise EngineError(errno.ENOSPC, f"{self.nr_simulated} simulated tasks: the cap "
                              f"(max_tasks={self.config.max_tasks}) is reached")
        recipe = [(self.cache(name), n) for name, n in recipe]
        pid = self.next_pid
        t = Task(pid, memcg, simulated=True, comm=comm)
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

    def exit_task(self, pid: int, reason: str = "exit", keep_objects: bool = False) -> Task:
        """`keep_objects`: what the task allocated outlives it (a replayed task's dentries;
        its trace frees the rest itself), held by its Owner `t.objs`."""
        t = self.tasks.get(pid)
        if t is None:
            raise EngineError(errno.ESRCH, f"no task {pid}")
        self._exit(t, reason, keep_objects)
        return t

    def _exit(self, t: Task, reason: str, keep_objects: bool = False) -> None:
        if not keep_objects:
            self.free_owner(t.objs)
        for m, size in list(t.rss.items()):
            self._uncharge_user(m, "anon", size // self.page, t)
        del t.memcg.tasks[t.pid]
        del self.tasks[t.pid]
        self.nr_simulated -= t.simulated
        self.emit("task_exit", pid=t.pid, cgroup=t.memcg.path(), reason=reason)
        self.check_for_release(t.memcg)

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
            k = max(1, min(dc.spare(self.cpu), ic.spare(self.cpu), count - res.done))
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
