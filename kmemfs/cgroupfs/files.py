"""The control-file table: every file of a memory cgroup, declared once, as the kernel's
cftype arrays do (3.3 kernel/cgroup.c `files[]`, mm/memcontrol.c `mem_cgroup_files[]`,
`memsw_cgroup_files[]`, net/ipv4/tcp_memcontrol.c, and patch 01/10 + 09/10 of the series).

Each entry names its read handler (-> text) and its write handler; `kind` says how the cgroup
core parses a write before the handler sees it (3.3.8 kernel/cgroup.c): "u64" (cgroup_write_X64),
"string" (cgroup_write_string) or "trigger" (content ignored).
"""
import errno
import stat
from dataclasses import dataclass
from typing import Callable, Optional

from ..engine import render
from ..engine.errors import EngineError
from . import parse

PATH_MAX = 4096


@dataclass(frozen=True)
class CFType:
    name: str
    read: Optional[Callable] = None     # (fs, memcg) -> str
    write: Optional[Callable] = None    # (fs, memcg, value, req) -> None
    kind: str = ""                      # "u64" | "string" | "trigger"
    where: str = "all"                  # "all" | "root" (release_agent)
    swap: bool = False                  # exists only with swap accounting
    mode: Optional[int] = None          # explicit cft->mode
    max_write_len: int = parse.CGROUP_LOCAL_BUFFER_SIZE - 1
    event: Optional[str] = None         # register_event kind: "usage" | "memsw" | "oom"

    @property
    def file_mode(self) -> int:
        """cgroup_file_mode: readable -> S_IRUGO, writable -> S_IWUSR (3.3.8 kernel/cgroup.c)."""
        if self.mode is not None:
            return self.mode
        return (0o444 if self.read else 0) | (0o200 if self.write else 0)

    def exists_in(self, memcg, config) -> bool:
        if self.where == "root" and not memcg.is_root:
            return False
        return config.swap_account or not self.swap


def u64(value) -> str:
    return f"{value}\n"


def _counter(name, field):
    return lambda fs, m: u64(getattr(getattr(m, name), field))


def _limit_write(setter, root_einval=True):
    """mem_cgroup_write RES_LIMIT: root is refused before the value is parsed (3.3.8
    mm/memcontrol.c; 01/10 for kmem)."""
    def write(fs, m, s, req):
        if root_einval and m.is_root:
            raise EngineError(errno.EINVAL, "no limits on the root cgroup")
        setter(fs.engine)(m, parse.memparse_write_strategy(s, fs.engine.page))
    return write


def _reset(fn, name):
    return lambda fs, m, _, req: fn(fs.engine)(getattr(m, name))


def _setting(setter):
    return lambda fs, m, val, req: setter(fs.engine)(m, val)


def _flag(attr):
    def write(fs, m, val, req):
        setattr(m, attr, bool(val))
    return write


# --- cgroup core files (3.3 kernel/cgroup.c) ---------------------------------------------
CORE = (
    CFType("tasks", lambda fs, m: fs.tasks_read(m, threads=True),
           lambda fs, m, v, req: fs.tasks_write(m, v, req), "u64"),
    CFType("cgroup.procs", lambda fs, m: fs.tasks_read(m, threads=False),
           lambda fs, m, v, req: fs.tasks_write(m, v, req), "u64"),
    CFType("notify_on_release", lambda fs, m: u64(int(m.notify_on_release)),
           _flag("notify_on_release"), "u64"),
    CFType("cgroup.event_control", None, lambda fs, m, s, req: fs.event_control(m, s, req),
           "string", mode=0o222),
    CFType("cgroup.clone_children", lambda fs, m: u64(int(fs.clone_children.get(m.id, 0))),
           lambda fs, m, v, req: fs.clone_children.__setitem__(m.id, int(bool(v))), "u64"),
    CFType("release_agent", lambda fs, m: fs.release_agent + "\n",
           lambda fs, m, s, req: fs.set_release_agent(s), "string", where="root",
           max_write_len=PATH_MAX),
)

# --- memory controller (3.3 mm/memcontrol.c, plus the series) -----------------------------
MEMORY = (
    CFType("memory.usage_in_bytes", lambda fs, m: u64(render.usage(fs.engine, m)),
           event="usage"),
    CFType("memory.max_usage_in_bytes", _counter("res", "max_usage"),
           _reset(lambda e: e.reset_max_usage, "res"), "trigger"),
    CFType("memory.limit_in_bytes", _counter("res", "limit"),
           _limit_write(lambda e: e.set_limit), "string"),
    CFType("memory.soft_limit_in_bytes", _counter("res", "soft_limit"),
           _limit_write(lambda e: e.set_soft_limit, root_einval=False), "string"),
    CFType("memory.failcnt", _counter("res", "failcnt"),
           _reset(lambda e: e.reset_failcnt, "res"), "trigger"),
    CFType("memory.stat", lambda fs, m: render.memory_stat(fs.engine, m)),
    CFType("memory.force_empty", None, lambda fs, m, _, req: fs.force_empty(m), "trigger"),
    CFType("memory.use_hierarchy", lambda fs, m: u64(int(m.use_hierarchy)),
           _setting(lambda e: e.set_use_hierarchy), "u64"),
    CFType("memory.swappiness", lambda fs, m: u64(fs.engine.swappiness(m)),
           _setting(lambda e: e.set_swappiness), "u64"),
    CFType("memory.move_charge_at_immigrate", lambda fs, m: u64(m.move_charge_at_immigrate),
           _setting(lambda e: e.set_move_charge), "u64"),
    CFType("memory.oom_control", lambda fs, m: render.oom_control(m),
           _setting(lambda e: e.set_oom_kill_disable), "u64", event="oom"),
    CFType("memory.numa_stat", lambda fs, m: render.numa_stat(m, fs.engine.page)),
    CFType("memory.memsw.usage_in_bytes", lambda fs, m: u64(render.usage(fs.engine, m, True)),
           swap=True, event="memsw"),
    CFType("memory.memsw.max_usage_in_bytes", _counter("memsw", "max_usage"),
           _reset(lambda e: e.reset_max_usage, "memsw"), "trigger", swap=True),
    CFType("memory.memsw.limit_in_bytes", _counter("memsw", "limit"),
           _limit_write(lambda e: e.set_memsw_limit), "string", swap=True),
    CFType("memory.memsw.failcnt", _counter("memsw", "failcnt"),
           _reset(lambda e: e.reset_failcnt, "memsw"), "trigger", swap=True),
    # 3.3 net/ipv4/tcp_memcontrol.c tcp_files[], on every memcg: root has no cg_proto, so it
    # reads the defaults (RESOURCE_MAX, 0, 0, 0), its limit write is EINVAL after parsing
    # (tcp_update_limit) and its triggers do nothing (tcp_cgroup_reset returns 0).
    CFType("memory.kmem.tcp.limit_in_bytes", _counter("tcp", "limit"),
           _limit_write(lambda e: e.set_tcp_limit, root_einval=False), "string"),
    CFType("memory.kmem.tcp.usage_in_bytes", _counter("tcp", "usage")),
    CFType("memory.kmem.tcp.failcnt", _counter("tcp", "failcnt"),
           _reset(lambda e: e.reset_failcnt, "tcp"), "trigger"),
    CFType("memory.kmem.tcp.max_usage_in_bytes", _counter("tcp", "max_usage"),
           _reset(lambda e: e.reset_max_usage, "tcp"), "trigger"),
    # patch 01/10 (kmem_cgroup_files[]): no kmem failcnt/max_usage files in this series.
    CFType("memory.kmem.usage_in_bytes", _counter("kmem", "usage")),
    CFType("memory.kmem.limit_in_bytes", _counter("kmem", "limit"),
           _limit_write(lambda e: e.set_kmem_limit), "string"),
    CFType("memory.kmem.independent_kmem_limit", lambda fs, m: u64(int(m.independent_kmem_limit)),
           _setting(lambda e: e.set_independent), "u64"),
    # patch 09/10 (rebuilt from v2 12/13, docs/semantics.md section 11)
    CFType("memory.kmem.slabinfo", lambda fs, m: render.memcg_slabinfo(fs.engine, m)),
)

FILES = CORE + MEMORY
BY_NAME = {cft.name: cft for cft in FILES}
INDEX = {cft.name: i for i, cft in enumerate(FILES)}
assert len(FILES) < 63   # inode numbers reserve 6 bits for the file index

S_IFREG, S_IFDIR = stat.S_IFREG, stat.S_IFDIR
