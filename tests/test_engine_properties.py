"""Property tests: random operation sequences keep `kmemfs.engine.check` silent, and a bulk
allocation equals the same number of single allocations.

The state machine draws limits around current usage, builds "crowded" cgroups (a task, some
anon, a tight limit) and lets tasks allocate, so reclaim, OOM kills, bypasses, OOM waits,
dead caches and the hierarchical leak all occur. A charge that would sleep ("wait") is
interrupted at once (end_oom_wait), as a signalled waiter would be."""
import errno

from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kmemfs.engine import (GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_NOWAIT,
                           RESOURCE_MAX, EngineError, Gfp, check, render)

from engine_helpers import GEOMETRY, PAGE, make_engine

CACHES = sorted(GEOMETRY)
GFPS = [GFP_KERNEL, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_ATOMIC, GFP_NOWAIT,
        GFP_KERNEL | Gfp.NORETRY, GFP_KERNEL | Gfp.NOACCOUNT, GFP_KERNEL | Gfp.NOFAIL,
        GFP_NOFS | Gfp.NORETRY]
NAMES = ["a", "b", "c"]
idx = st.integers(min_value=0, max_value=63)
delta = st.one_of(st.integers(min_value=-3, max_value=24), st.just(None))
# Expected refusals; anything else (or any other exception) is a bug.
EXPECTED = {errno.EINVAL, errno.EBUSY, errno.EEXIST, errno.ENOMEM, errno.EINTR, errno.ESRCH,
            errno.ENODEV, errno.ENOSPC}


def near(usage, d):
    """A limit d pages above the current usage (None: unlimited)."""
    return RESOURCE_MAX if d is None else max(0, usage + d * PAGE)


class EngineMachine(RuleBasedStateMachine):
    @initialize(acct_root=st.booleans(), swap=st.booleans(), nr_cpus=st.sampled_from([1, 2]),
                batch=st.sampled_from([0, 32, 32]), boot=st.booleans(),
                arrays=st.sampled_from([True, True, False]), numa=st.booleans())
    def setup(self, acct_root, swap, nr_cpus, batch, boot, arrays, numa):
        self.e = make_engine(acct_root=acct_root, swap_account=swap, nr_cpus=nr_cpus,
                             charge_batch=batch, boot_slabs=boot, array_caches=arrays,
                             numa=numa)
        self.next_host_pid = 100

    # ------------------------------------------------------------------ helpers
    def live(self):
        return list(self.e.root.walk())

    def pick(self, i):
        live = self.live()
        return live[i % len(live)]

    def pick_child(self, i):
        live = self.live()[1:]
        return live[i % len(live)] if live else None

    def pick_task(self, i):
        tasks = list(self.e.tasks.values())
        return tasks[i % len(tasks)] if tasks else None

    def call(self, fn, *args, **kw):
        try:
            r = fn(*args, **kw)
        except EngineError as err:
            assert err.errno in EXPECTED, err
            return None
        self.settle(r)
        return r

    def settle(self, r):
        """A charge that sleeps on a memcg OOM waitqueue: the waiter is interrupted."""
        if isinstance(r, tuple):
            r = r[1]
        if r is not None and getattr(r, "status", None) == "wait":
            assert r.wait_on is not None and r.wait_on.under_oom > 0
            self.e.end_oom_wait(r.wait_on)

    # ------------------------------------------------------------------ tree and settings
    @rule(i=idx, name=st.sampled_from(NAMES))
    def mkdir(self, i, name):
        self.call(self.e.mkdir, self.pick(i), name)

    @rule(i=idx)
    def rmdir(self, i):
        m = self.pick_child(i)
        if m is not None:
            self.call(self.e.rmdir, m)

    # Limits are drawn around the current usage so that they bite.
    @rule(i=idx, d=delta)
    def set_limit(self, i, d):
        m = self.pick(i)
        self.call(self.e.set_limit, m, near(m.res.usage, d))

    @rule(i=idx, d=delta)
    def set_memsw_limit(self, i, d):
        m = self.pick(i)
        self.call(self.e.set_memsw_limit, m, near(m.memsw.usage, d))

    @rule(i=idx, d=delta)
    def set_kmem_limit(self, i, d):
        m = self.pick(i)
        self.call(self.e.set_kmem_limit, m, near(m.kmem.usage, d))

    @rule(i=idx, name=st.sampled_from(NAMES), hier=st.booleans(), indep=st.booleans(),
          rss=st.integers(0, 30), slack=st.integers(0, 3), oom_off=st.booleans())
    def crowded_cgroup(self, i, name, hier, indep, rss, slack, oom_off):
        """A child with a task, some anon, and a limit just above its usage."""
        parent = self.pick(i)
        m = self.call(self.e.mkdir, parent, name)
        if m is None:
            return
        self.call(self.e.set_use_hierarchy, m, int(hier))
        self.call(self.e.set_oom_kill_disable, m, int(oom_off))
        if indep:
            self.call(self.e.set_independent, m, 1)
        r = self.call(self.e.spawn, m)
        if r is not None and r[0] is not None and rss:
            self.call(self.e.charge_user, m, "anon", rss * PAGE, task=r[0])
        if indep:
            self.call(self.e.set_kmem_limit, m, m.kmem.usage + slack * PAGE)
        else:
            self.call(self.e.set_limit, m, m.res.usage + slack * PAGE)

    @rule(i=idx, v=st.sampled_from([0, 1, 2]))
    def set_use_hierarchy(self, i, v):
        self.call(self.e.set_use_hierarchy, self.pick(i), v)

    @rule(i=idx, v=st.sampled_from([0, 1]), careful=st.sampled_from([True, True, False]))
    def set_independent(self, i, v, careful):
        """Careful toggles avoid the documented hazards (docs/semantics.md sections 6 step 3 and
        8) so that most memcgs stay free of quirks and fully checked; careless ones exercise them."""
        m = self.pick(i)
        if careful:
            if m.kmem.usage or m.kmem_bypassed or m.kmem_in_res:
                return
            if not v and m.independent_kmem_limit:
                self.call(self.e.set_kmem_limit, m, RESOURCE_MAX)
        self.call(self.e.set_independent, m, v)

    @rule(i=idx, v=st.sampled_from([0, 1, 2]))
    def set_oom_kill_disable(self, i, v):
        self.call(self.e.set_oom_kill_disable, self.pick(i), v)

    @rule(i=idx, v=st.integers(min_value=0, max_value=120))
    def set_swappiness(self, i, v):
        self.call(self.e.set_swappiness, self.pick(i), v)

    @rule(i=idx, v=st.integers(min_value=0, max_value=5))
    def set_move_charge(self, i, v):
        self.call(self.e.set_move_charge, self.pick(i), v)

    @rule(i=idx, name=st.sampled_from(NAMES + ["d"]))
    def rename(self, i, name):
        m = self.pick_child(i)
        if m is not None:
            self.call(self.e.rename, m, name)

    @rule(i=idx, to_parent=st.booleans())
    def evacuate_and_rmdir(self, i, to_parent):
        """Move the tasks out (to the parent or to root), then remove the cgroup."""
        m = self.pick_child(i)
        if m is None:
            return
        for pid in list(m.tasks):
            self.call(self.e.attach, m.parent if to_parent else self.e.root, pid)
        self.call(self.e.rmdir, m)

    @rule(t=idx, cache=st.sampled_from(CACHES), count=st.integers(1, 200),
          gfp=st.sampled_from([GFP_KERNEL, GFP_KERNEL, GFP_NOFS, GFP_ATOMIC]), own=st.booleans())
    def alloc_as_task(self, t, cache, count, gfp, own):
        """A task allocating in its own cgroup (the OOM killer may pick it: bypass), the
        objects going to the cgroup's pool or to the task itself."""
        task = self.pick_task(t)
        if task is not None:
            r = self.call(self.e.alloc, self.e.cache(cache), count, task.memcg, gfp, task=task,
                          owner=task.objs if own else None)
            if r is not None and own and task.pid not in self.e.tasks:
                assert not task.objs.runs      # killed during the call: nothing left held

    @rule(i=idx)
    def force_empty(self, i):
        self.call(self.e.force_empty, self.pick(i))

    # ------------------------------------------------------------------ kernel objects
    @rule(i=idx, cache=st.sampled_from(CACHES), count=st.integers(min_value=1, max_value=120),
          gfp=st.sampled_from(GFPS), irq=st.booleans(), t=st.one_of(st.none(), idx))
    def alloc(self, i, cache, count, gfp, irq, t):
        task = self.pick_task(t) if t is not None else None
        memcg = task.memcg if task is not None else self.pick(i)
        r = self.call(self.e.alloc, self.e.cache(cache), count, memcg, gfp,
                      irq=irq and not gfp & Gfp.WAIT, task=task)
        if r is not None:
            assert 0 <= r.done <= count
            assert r.ok == (r.done == count) or r.status == "ok"

    @rule(i=idx, size=st.integers(min_value=1, max_value=4096), count=st.integers(1, 40))
    def kmalloc(self, i, size, count):
        self.call(self.e.alloc, self.e.kmalloc_cache(size), count, self.pick(i))

    @rule(i=idx, cache=st.sampled_from(CACHES), count=st.integers(min_value=1, max_value=150))
    def free_named(self, i, cache, count):
        self.call(self.e.free_named, cache, count, self.pick(i))

    @rule(c=idx, o=idx, count=st.integers(min_value=1, max_value=150))
    def free_any(self, c, o, count):
        """Free objects of any holder of any cache, dead copies included (by concrete name)."""
        caches = [c_ for c_ in self.e.caches if c_.holders]
        if not caches:
            return
        cache = caches[c % len(caches)]
        holders = [h for h in cache.holders if h is not self.e.boot]
        if holders:
            self.call(self.e.free, cache, holders[o % len(holders)], count)
        else:
            self.call(self.e.free_named, cache.name, count, self.pick(0))

    @rule()
    def reap(self):
        self.e.reap()
        for c in self.e.caches:     # "until nothing changes": no array entry, no empty slab
            assert not c.free and not c.shared_avail and not any(a.avail for a in c.arrays)

    @rule()
    def cache_reap(self):
        self.e.cache_reap()

    @rule(cpu=st.integers(0, 3))
    def switch_cpu(self, cpu):
        """Later operations run on another CPU (its own array cache)."""
        self.e.cpu = cpu % self.e.config.nr_cpus

    @rule()
    def run_workqueue(self):
        self.e.run_workqueue()

    # ------------------------------------------------------------------ user pages and tasks
    @rule(i=idx, kind=st.sampled_from(["anon", "file"]), n=st.integers(1, 60),
          t=st.one_of(st.none(), idx))
    def charge_user(self, i, kind, n, t):
        task = self.pick_task(t) if t is not None else None
        memcg = task.memcg if task is not None else self.pick(i)
        self.call(self.e.charge_user, memcg, kind, n * PAGE, task=task)

    @rule(i=idx, kind=st.sampled_from(["anon", "file"]), n=st.integers(1, 60),
          t=st.one_of(st.none(), idx))
    def uncharge_user(self, i, kind, n, t):
        task = self.pick_task(t) if t is not None else None
        memcg = task.memcg if task is not None else self.pick(i)
        self.call(self.e.uncharge_user, memcg, kind, n * PAGE, task=task)

    @rule(i=idx, t=st.one_of(st.none(), idx))
    def spawn(self, i, t):
        parent = self.pick_task(t) if t is not None else None
        memcg = parent.memcg if parent is not None else self.pick(i)
        self.call(self.e.spawn, memcg, parent)

    @rule(t=idx)
    def exit(self, t):
        task = self.pick_task(t)
        if task is not None:
            self.call(self.e.exit_task, task.pid)

    @rule(i=idx, t=st.one_of(st.none(), idx))
    def attach(self, i, t):
        task = self.pick_task(t) if t is not None else None
        if task is None:
            self.next_host_pid += 1
            pid = self.next_host_pid
        else:
            pid = task.pid
        self.call(self.e.attach, self.pick(i), pid)

    @rule(i=idx, count=st.integers(1, 60), gfp=st.sampled_from(GFPS))
    def touch(self, i, count, gfp):
        self.call(self.e.touch, self.pick(i), count, gfp)

    @rule(i=idx, count=st.integers(1, 60))
    def unlink(self, i, count):
        self.call(self.e.unlink, self.pick(i), count)

    @rule()
    def drop_caches(self):
        self.e.drop_caches()

    # ------------------------------------------------------------------ invariants
    @invariant()
    def consistent(self):
        assert check(self.e) == []

    @invariant()
    def views_render(self):
        e = self.e
        render.slabinfo(e)
        for m in self.live():
            render.memory_stat(e, m)
            render.memcg_slabinfo(e, m)
            render.oom_control(m)
            assert render.usage(e, m) >= 0

    @invariant()
    def totals_equal_a_walk(self):
        """memory.stat's total_* and root's usage_in_bytes, now read from sums kept up to
        date on each charge, equal 3.3's walks: mem_cgroup_get_total_stat and
        mem_cgroup_recursive_stat over for_each_mem_cgroup_tree (3.3.8 mm/memcontrol.c)."""
        e = self.e
        for m in self.live():
            want = dict.fromkeys(m.stat(), 0)
            for it in m.tree():
                for k, v in it.stat().items():
                    want[k] += v
            assert m.total_stat() == want
        live = self.live()
        assert render.usage(e, e.root) == sum(m.cache_bytes + m.rss_bytes for m in live)


EngineMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestEngineMachine = EngineMachine.TestCase


# ---------------------------------------------------------------------- bulk == singles

def _snapshot(e, a, done):
    caches = [(c.name, c.nr_slabs, c.active_objs, c.free_objects, len(c.free),
               [a.avail for a in c.arrays], c.shared_avail)
              for c in e.caches_newest_first()]
    counters = [(x.usage, x.max_usage, x.failcnt) for x in (a.kmem, a.res, a.memsw)]
    return (done, caches, counters, a.cache_bytes, a.rss_bytes, sorted(e.tasks),
            e.root.kmem.usage, a.kmem_bypassed, len(e.create_queue))


def _setup(mode, limit_pages, warm, acct_root, cache, victims, arrays=False):
    e = make_engine(acct_root=acct_root, array_caches=arrays)
    a = e.mkdir(e.root, "a")
    for k in range(victims):                           # OOM victims with some anon
        e.charge_user(a, "anon", (k + 2) * PAGE, task=e.attach(a, 100 + k))
    if mode == "independent":
        e.set_independent(a, 1)
    if warm:
        e.alloc(e.cache(cache), 1, a)                  # the copy exists (and one object)
    if mode == "independent":
        try:
            e.set_kmem_limit(a, limit_pages * PAGE)
        except EngineError:
            pass
    elif mode == "dependent":
        e.charge_user(a, "file", 3 * PAGE)
        try:
            e.set_limit(a, max(limit_pages * PAGE, a.res.usage))
        except EngineError:
            pass
    return e, a


@settings(max_examples=150, deadline=None)
@given(cache=st.sampled_from(CACHES), n=st.integers(min_value=1, max_value=300),
       gfp=st.sampled_from(GFPS), mode=st.sampled_from(["none", "independent", "dependent"]),
       limit_pages=st.integers(min_value=0, max_value=20), warm=st.booleans(),
       acct_root=st.booleans(), victims=st.integers(0, 2), arrays=st.booleans())
def test_bulk_alloc_equals_single_allocs(cache, n, gfp, mode, limit_pages, warm, acct_root,
                                         victims, arrays):
    """05/10 kmem_getpages: charges follow slab grows only, so allocating N objects in one call
    leaves the same counters and slab state as N calls of one (stopping at the first failure),
    including reclaim and OOM kills at the limit, with or without SLAB's array caches (mm/slab.c
    ____cache_alloc / cache_alloc_refill)."""
    e1, a1 = _setup(mode, limit_pages, warm, acct_root, cache, victims, arrays)
    r = e1.alloc(e1.cache(cache), n, a1, gfp)
    bulk = _snapshot(e1, a1, r.done)

    e2, a2 = _setup(mode, limit_pages, warm, acct_root, cache, victims, arrays)
    done = 0
    for _ in range(n):
        r2 = e2.alloc(e2.cache(cache), 1, a2, gfp)
        done += r2.done
        if r2.done < 1:
            break
    assert r.status == r2.status
    assert _snapshot(e2, a2, done) == bulk
    assert check(e1) == [] and check(e2) == []
