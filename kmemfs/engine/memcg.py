"""struct mem_cgroup of 3.3 with the series' kmem fields (01/10, 07/10), and tasks."""
from .res_counter import ResCounter
from .slab import Owner

# memory.stat local keys in 3.3 order; "swap" only with swap accounting (3.3.8
# memcg_stat_strings[]), kernel_bypassed_memory appended by patch 07/10.
STAT_KEYS = ("cache", "rss", "mapped_file", "pgpgin", "pgpgout", "swap", "pgfault", "pgmajfault",
             "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
             "kernel_bypassed_memory")

# The local counters memory.stat and root's usage_in_bytes sum over a tree (3.3
# mem_cgroup_get_total_stat, mem_cgroup_recursive_stat). Each memcg also keeps their sums over
# its whole subtree, updated on every change (O(depth)), so no read walks the tree.
COUNTED = ("cache_bytes", "rss_bytes", "pgpgin", "pgpgout", "pgfault", "kmem_bypassed")


def _counted(i: int, name: str) -> property:
    def get(self):
        return self.local[i]

    def set(self, value):
        d = value - self.local[i]
        self.local[i] = value
        m = self
        while m is not None:
            m.subtree[i] += d
            m = None if m.removed else m.parent     # a removed memcg left its ancestors' sums
    return property(get, set, doc=f"local {name}; assignments update the subtree sums above")


class Memcg:
    __slots__ = ("name", "parent", "children", "res", "memsw", "kmem", "tcp",
                 "use_hierarchy", "swappiness", "oom_kill_disable", "under_oom",
                 "move_charge_at_immigrate", "independent_kmem_limit",
                 "slabs", "tasks", "local", "subtree", "pool", "dcache", "files", "oom_wake_seq",
                 "removed", "kmem_leaked", "quirks",
                 "notify_on_release", "id", "kmem_in_res", "kmem_in_memsw", "threshold_checks")

    def __init__(self, name: str, parent=None, id: int = 0, swappiness: int = 60):
        self.name = name
        self.parent = parent
        self.id = id
        self.children = {}            # basename -> Memcg, in creation order
        hier = parent is not None and parent.use_hierarchy
        # 3.3 mem_cgroup_create: res/memsw parents only under a hierarchical parent.
        self.res = ResCounter(parent.res if hier else None, self)
        self.memsw = ResCounter(parent.memsw if hier else None, self)
        # patch 01/10: the kmem counter's parent only if the parent is hierarchical and not root.
        kparent = parent.kmem if hier and parent.parent is not None else None
        self.kmem = ResCounter(kparent, self)
        # 3.3 tcp_init_cgroup: the tcp counter's parent is the parent's cg_proto counter:
        # hierarchical (parent_mem_cgroup) and not root (tcp_proto_cgroup).
        self.tcp = ResCounter(parent.tcp if hier and parent.parent is not None else None, self)
        self.use_hierarchy = parent.use_hierarchy if parent else False
        self.oom_kill_disable = parent.oom_kill_disable if parent else False
        self.swappiness = swappiness
        self.move_charge_at_immigrate = 0   # 3.3 sets 0 at creation: not inherited
        self.notify_on_release = parent.notify_on_release if parent else False
        self.under_oom = 0
        self.independent_kmem_limit = False  # memcg_kmem_init: every memcg starts at 0
        self.removed = False
        self.local = [0] * len(COUNTED)       # COUNTED, this memcg's own
        self.subtree = [0] * len(COUNTED)     # COUNTED, summed over this memcg and its descendants
        self.slabs = {}               # original cache id -> this memcg's copy
        self.tasks = {}               # pid -> Task, membership
        # cache_bytes: page cache charged here (reclaimable); rss_bytes: anonymous pages
        self.pool = Owner(f"cgroup {name}", self)     # objects of `alloc`/`kmalloc`
        self.dcache = Owner(f"dcache {name}", self)   # dentries and inodes of `touch`
        self.files = {"cached": 0, "negative": 0, "uncached": 0}  # `touch`/`unlink` files
        self.oom_wake_seq = 0         # bumped by memcg_oom_recover: waiters re-try
        self.kmem_leaked = 0          # deleted children's kmem left here (02/10 memcg_kmem_move)
        self.quirks = set()           # documented quirks that relax the invariants here
        self.kmem_in_res = 0          # kmem bytes now held in res (for the invariant checker)
        self.kmem_in_memsw = 0        # kmem bytes ever charged to memsw: never uncharged (01/10)
        self.threshold_checks = 0     # times mem_cgroup_threshold looked at this memcg

    def detach(self) -> None:
        """rmdir: what is left here (the event counters) leaves the ancestors' sums, as a
        removed memcg leaves 3.3's mem_cgroup_iter (css_tryget fails)."""
        for m in self.ancestors():
            for i, v in enumerate(self.local):
                m.subtree[i] -= v
        self.removed = True

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def path(self) -> str:
        parts, m = [], self
        while m.parent is not None:
            parts.append(m.name)
            m = m.parent
        return "/" + "/".join(reversed(parts))

    def walk(self):
        """Pre-order walk of this subtree."""
        stack = [self]
        while stack:
            m = stack.pop()
            yield m
            stack.extend(reversed(list(m.children.values())))

    def tree(self):
        """for_each_mem_cgroup_tree: the subtree when hierarchical; 3.3's mem_cgroup_iter
        always walks the whole tree from root_mem_cgroup."""
        return self.walk() if self.use_hierarchy or self.parent is None else iter((self,))

    def ancestors(self):
        m = self.parent
        while m is not None:
            yield m
            m = m.parent

    def stat(self) -> dict:
        """The local memory.stat values (mem_cgroup_get_local_stat)."""
        return _stat(*self.local)

    def total_stat(self) -> dict:
        """The total_* values: summed over tree() (mem_cgroup_get_total_stat), which is
        the whole subtree when hierarchical or root, else this memcg alone."""
        return _stat(*(self.subtree if self.use_hierarchy or self.parent is None else self.local))

    def rebuild_subtree(self) -> None:
        """Recompute every subtree sum below here from the local counters (after a load)."""
        order = list(self.walk())
        for m in order:
            m.subtree = list(m.local)
        for m in reversed(order):
            if m is not self:
                for i, v in enumerate(m.subtree):
                    m.parent.subtree[i] += v


for _i, _name in enumerate(COUNTED):
    setattr(Memcg, _name, _counted(_i, _name))


def _stat(cache, rss, pgpgin, pgpgout, pgfault, bypassed) -> dict:
    return {
        "cache": cache, "rss": rss, "mapped_file": 0, "pgpgin": pgpgin, "pgpgout": pgpgout,
        "swap": 0, "pgfault": pgfault, "pgmajfault": 0,
        "inactive_anon": 0, "active_anon": rss,          # new anon: active list
        "inactive_file": cache, "active_file": 0,        # new file: inactive list
        "unevictable": 0, "kernel_bypassed_memory": bypassed,
    }


class Task:
    """A task the model knows: simulated (spawned) or a host pid written to `tasks`."""
    __slots__ = ("pid", "memcg", "simulated", "rss", "objs", "comm", "memdie")

    def __init__(self, pid: int, memcg: Memcg, simulated: bool, comm: str = ""):
        self.pid = pid
        self.memcg = memcg
        self.simulated = simulated
        self.rss = {}                 # Memcg -> anon bytes this task has charged there
        self.objs = Owner(f"task {pid}", memcg)
        self.comm = comm
        self.memdie = False           # TIF_MEMDIE: chosen by the OOM killer

    def rss_total(self) -> int:
        return sum(self.rss.values())
