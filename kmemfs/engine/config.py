"""Build-time and boot-time choices of the modelled kernel."""
from dataclasses import dataclass, fields

RESOURCE_MAX = 9223372036854775807  # LLONG_MAX: "unlimited" in res_counter


@dataclass(frozen=True)
class Config:
    # CONFIG_CGROUP_MEM_RES_CTLR_KMEM_ACCT_ROOT (patch 08/10), default n in its Kconfig.
    acct_root: bool = False
    # CONFIG_CGROUP_MEM_RES_CTLR_SWAP with swapaccount=1: the memsw counters and files.
    swap_account: bool = True
    page_size: int = 4096
    # Feeds SLAB's free_limit = (1 + nr_cpus) * batchcount + num; one array cache per CPU.
    nr_cpus: int = 1
    # SLAB's per-CPU array caches and shared array (mm/slab.c array_cache), on as in 3.3.
    # `noarray_caches`: frees reach the slabs at once (the simple model).
    array_caches: bool = True
    # CONFIG_NUMA: a slab grow first tries the local node with GFP_THISNODE (twice), then
    # fallback_alloc with the caller's flags (mm/slab.c __do_cache_alloc).
    numa: bool = False
    # Per-CPU charge stock: CHARGE_BATCH, always 32 pages in 3.3 (mm/memcontrol.c).
    # 0 is an option for exact counters (no stock), which 3.3 itself never has.
    charge_batch: int = 32
    # Populate the original caches with the catalogue's own object counts, as a booted machine has.
    boot_slabs: bool = True
    max_kmem_cache_types: int = 300   # MAX_KMEM_CACHE_TYPES in 05/10
    max_memcgs: int = 65535           # CSS_ID_MAX: mkdir beyond it is ENOSPC
    max_tasks: int = 100000           # simulated tasks: spawn beyond it is ENOSPC
    max_objects: int = 100_000_000    # objects (or pages) one control command may ask for: E2BIG
    vm_swappiness: int = 60           # what root's memory.swappiness shows
    event_log_size: int = 100000
    # Which allocations are charged (engine/policy.py): "series" (the Feb-2012 series) or
    # "optin" (mainline since 4.5: only those marked accounted; NOFAIL forced past the limit).
    design: str = "series"

    def items(self):
        return [(f.name, getattr(self, f.name)) for f in fields(self)]
