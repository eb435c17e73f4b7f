"""The accounting engine: 3.3 memcg v1 with the Feb-2012 kmem series applied.

Everything here is synchronous and deterministic. Rules and their sources:
docs/semantics.md. A charge that would sleep on a memcg whose OOM killer is
disabled does not block: the operation stops, reports `status == "wait"`, and leaves the
memcg marked under_oom; the caller waits for `oom_wake_seq` to change (memcg_oom_recover),
calls `end_oom_wait`, and re-issues what is left.

The Engine is one object; its operations live in modules named for what they hold:
caches.py (caches and objects), charge.py (charging, reclaim, OOM), tree.py (the memcg tree
and its settings), tasks.py (tasks and workloads).
"""
from collections import deque
from itertools import islice

from . import catalogue as _catalogue
from . import policy as _policy
from .caches import CacheOps
from .charge import ChargePath
from .config import Config
from .memcg import Memcg
from .slab import Owner
from .tasks import SIM_PID_BASE, TaskOps
from .tree import TreeOps


class Engine(CacheOps, ChargePath, TreeOps, TaskOps):
    def __init__(self, config: Config = Config(), specs=None, source: str = "built-in"):
        self.config = config
        _policy.design(config.design)         # an unknown design is refused here
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
        self.cpu = 0                          # the CPU the current operation runs on (§4a)
        for spec in reversed(specs if specs is not None else _catalogue.load()):
            self.kmem_cache_create(spec)
        self.kmalloc = sorted((c.objsize, c.id, c) for c in self.originals.values()
                              if _catalogue.is_general(c.name))
        self.kmalloc = [(size, c) for size, _, c in self.kmalloc]
        self.root = Memcg("", None, id=1, swappiness=config.vm_swappiness)
        self.nr_memcgs = 1
        self.last_memcg_id = 1                # ids are never reused: inode numbers derive from them
        # patch 08/10: boot-time slab is copied into root's usage; max_usage is not updated.
        self.root.kmem.usage = self.pre_memcg_kmem_bytes

    @property
    def policy(self):
        """The accounting design (engine/policy.py), derived from the config: not state."""
        return _policy.DESIGNS[self.config.design]

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, **fields) -> None:
        self.event_seq += 1
        self.events.append((self.event_seq, kind, fields))

    def events_since(self, seq: int):
        # O(new events), not O(log): this runs after every write once an event is registered.
        n = min(self.event_seq - seq, len(self.events))   # older ones fell off the bounded log
        return list(islice(reversed(self.events), n))[::-1] if n > 0 else []
