"""Replay a captured trace through the engine (docs/trace.md, Replay).

A `Session` feeds events, in time order, to an Engine: each traced pid becomes a simulated
task (fork and exit from the sched events), each allocation is one object of the catalogue
cache the host name maps onto, remembered by pointer with the cache copy and slab it came
from, and each free gives back exactly that object. The engine decides, under the design of
its Config (engine/policy.py), whether the object is charged; its limits, reclaim and OOM
killer act as for any other workload. A Session drives an engine in this process (offline
replay, compare) or the daemon's own engine (the ctl `replay` verb, `--into`).

No host I/O here besides reading the trace file.
"""
from __future__ import annotations

import heapq
import errno
from dataclasses import dataclass, field

from ..engine import Config, Engine, EngineError, catalogue as _catalogue, policy
from . import names

DEFAULT_CG = "/traced"
# The watermark: events are released in time order once the newest one seen is this much
# later. Records of one CPU are ordered; two CPUs' (and the two tracefs instances') are
# merged by the capture, but a late record within this window still lands in place.
WINDOW_NS = 50_000_000


class ReplayError(Exception):
    pass


@dataclass
class Failure:
    """The first allocation the model refused."""
    seq: int
    time_ns: int
    pid: int
    comm: str
    cache: str            # host name
    model_cache: str      # the cache copy that could not grow
    gfp: str
    call_site: str
    status: str           # nomem | wait (oom_kill_disable: it would sleep for ever)


@dataclass
class CacheStats:
    objects: int = 0
    bytes: int = 0
    charged_objects: int = 0
    charged_bytes: int = 0
    flagged: bool = False                       # mapped by size only: no 3.4 counterpart
    hosts: dict = field(default_factory=dict)   # host name -> objects
    why: dict = field(default_factory=dict)     # reason the designs differ -> bytes


@dataclass
class Stats:
    design: str = "series"
    events: int = 0
    allocs: int = 0
    frees: int = 0
    forks: int = 0
    exits: int = 0
    objects: int = 0              # objects allocated in the model
    bytes: int = 0                # their bytes (catalogue object sizes)
    charged_objects: int = 0      # of them, charged to a cgroup (in a per-cgroup copy)
    charged_bytes: int = 0
    live_bytes: int = 0
    peak_live_bytes: int = 0
    live_charged_bytes: int = 0
    peak_live_charged_bytes: int = 0
    unmatched_frees: int = 0      # objects allocated before the trace started
    reused_live: int = 0          # an allocation at a live pointer: its free was never seen
    reordered: int = 0            # a free just before its own allocation (same clock tick)
    late: int = 0                 # records beyond the watermark (replayed out of order)
    dropped_memcg_only: int = 0   # today's memcg bookkeeping (obj_exts): not in the series
    dropped_unmapped: int = 0     # larger than the largest size-N
    dropped_killed: int = 0       # events of tasks the model killed
    freed_by_kill: int = 0        # objects the model freed when it killed their task
    killed: list = field(default_factory=list)   # [(trace pid, comm)]
    failures: int = 0
    first_failure: Failure | None = None
    caches: dict = field(default_factory=dict)   # catalogue name -> CacheStats
    inexact: list = field(default_factory=list)  # why the numbers are not exact


class _Obj:
    __slots__ = ("cache", "slab", "owner", "size", "charged", "stats")

    def __init__(self, cache, slab, owner, size, charged, stats):
        self.cache, self.slab, self.owner = cache, slab, owner
        self.size, self.charged, self.stats = size, charged, stats


class Session:
    """Replays events into `engine`; tasks are created in `memcg` (an engine Memcg)."""

    def __init__(self, engine: Engine, memcg, aliases=None, header=None):
        self.engine = engine
        self.memcg = memcg
        self.mapper = names.Mapper({n: c.objsize for n, c in engine.originals.items()},
                                   aliases)
        self.stats = Stats(design=engine.policy.name)
        self.live = {}             # ptr -> _Obj
        self.tasks = {}            # trace pid -> engine Task
        self.trace_pid = {}        # engine pid -> trace pid
        self.killed = set()        # trace pids the model killed (and children they forked)
        self.pending_free = {}     # ptr -> time_ns of a free seen before any allocation
        self.seen_event = engine.event_seq
        self.resolution = header.time_resolution_ns if header is not None else 1000
        self.blocked = None        # ctl: a Blocked-raising hook for status "wait"
        if header is not None and header.inexact:
            self.stats.inexact.append("the capture lost events: " +
                                      ("; ".join(header.notes) or "see the trace header"))

    # ------------------------------------------------------------------ tasks
    def task(self, pid: int, comm: str, memcg=None):
        t = self.tasks.get(pid)
        if t is not None and t.pid in self.engine.tasks:
            return t
        t, _ = self.engine.spawn(memcg or self.memcg, recipe=(), comm=comm or "traced")
        self.tasks[pid] = t
        self.trace_pid[t.pid] = pid
        return t

    def _fork(self, ev) -> None:
        self.stats.forks += 1
        if ev.pid in self.killed:
            self.killed.add(ev.child)     # a dead task forks nothing
            self.stats.dropped_killed += 1
            return
        parent = self.task(ev.pid, ev.comm)
        old = self.tasks.pop(ev.child, None)      # pid reuse: the old task exited unseen
        if old is not None and old.pid in self.engine.tasks:
            self.engine.exit_task(old.pid, keep_objects=True)
        self.killed.discard(ev.child)
        self.task(ev.child, ev.comm, parent.memcg)

    def _exit(self, ev) -> None:
        self.stats.exits += 1
        if ev.pid in self.killed:
            self.stats.dropped_killed += 1
            return
        t = self.tasks.pop(ev.pid, None)
        if t is not None and t.pid in self.engine.tasks:
            # What it allocated and the trace did not free outlives it (dentries, inodes).
            self.engine.exit_task(t.pid, keep_objects=True)

    def _kills(self) -> None:
        """The OOM killer chose victims: their objects went with them, their events go."""
        e = self.engine
        victims = set()
        for _, kind, f in e.events_since(self.seen_event):
            if kind == "task_exit" and f.get("reason") == "oom_kill" and f["pid"] in self.trace_pid:
                victims.add(f["pid"])
        self.seen_event = e.event_seq
        if not victims:
            return
        owners = set()
        for sim in victims:
            pid = self.trace_pid.pop(sim)
            t = self.tasks.pop(pid, None)
            self.killed.add(pid)
            self.stats.killed.append((pid, t.comm if t else ""))
            if t is not None:
                owners.add(t.objs)
        for ptr in [p for p, o in self.live.items() if o.owner in owners]:
            self._forget(self.live.pop(ptr))
            self.stats.freed_by_kill += 1

    # ------------------------------------------------------------------ objects
    def _forget(self, o: _Obj) -> None:
        s = self.stats
        s.live_bytes -= o.size
        if o.charged:
            s.live_charged_bytes -= o.size

    def _alloc(self, ev) -> None:
        s = self.stats
        s.allocs += 1
        if ev.pid in self.killed:
            s.dropped_killed += 1
            return
        m = self.mapper(ev)
        if m.name is None:
            if m.rule == "memcg-only":
                s.dropped_memcg_only += 1
            else:
                s.dropped_unmapped += 1
            return
        e = self.engine
        t = self.task(ev.pid, ev.comm)
        info = names.gfp_info(ev.gfp)
        irq = ev.context != "task"
        old = self.live.pop(ev.ptr, None)
        if old is not None:
            s.reused_live += 1
            self._free_obj(old)
        orig = e.originals[m.name]
        r = e.alloc(orig, 1, t.memcg, info.bits, irq, task=t, owner=t.objs,
                    accounted=ev.accounted)
        if r.status == "wait" and self.blocked is not None:
            self.blocked(r, ev)           # ctl: the write sleeps; retried from the start
        if e.event_seq != self.seen_event:
            self._kills()
        cs = s.caches.get(m.name)
        if cs is None:
            cs = s.caches[m.name] = CacheStats(flagged=m.flagged)
        cs.hosts[ev.cache] = cs.hosts.get(ev.cache, 0) + 1
        why = policy.why(info.bits, irq, ev.accounted)
        if why is not None:
            cs.why[why] = cs.why.get(why, 0) + orig.objsize
        if r.done != 1:
            if r.status == "wait":
                e.end_oom_wait(r.wait_on)
            s.failures += 1
            if s.first_failure is None:
                s.first_failure = Failure(ev.seq, ev.time_ns, ev.pid, ev.comm, ev.cache,
                                          r.cache.name, ev.gfp, ev.call_site, r.status)
            return
        size = orig.objsize
        s.objects += 1
        s.bytes += size
        cs.objects += 1
        cs.bytes += size
        cache = r.cache
        charged = cache.is_copy
        if charged:
            s.charged_objects += 1
            s.charged_bytes += size
            cs.charged_objects += 1
            cs.charged_bytes += size
        if ev.pid in self.killed:          # the allocation killed its own task: gone with it
            s.freed_by_kill += 1
            return
        if charged:
            s.live_charged_bytes += size
            if s.live_charged_bytes > s.peak_live_charged_bytes:
                s.peak_live_charged_bytes = s.live_charged_bytes
        s.live_bytes += size
        if s.live_bytes > s.peak_live_bytes:
            s.peak_live_bytes = s.live_bytes
        o = _Obj(cache, t.objs.runs[cache][-1][0], t.objs, size, charged, cs)
        t0 = self.pending_free.pop(ev.ptr, None) if self.pending_free else None
        if t0 is not None and ev.time_ns - t0 <= self.resolution:
            s.reordered += 1              # its free came first within one clock tick
            s.unmatched_frees -= 1
            self._free_obj(o)
            return
        self.live[ev.ptr] = o

    def _free_obj(self, o: _Obj) -> None:
        self.engine.free_object(o.cache, o.owner, o.slab)
        self._forget(o)

    def _free(self, ev) -> None:
        s = self.stats
        s.frees += 1
        if ev.pid in self.killed:
            s.dropped_killed += 1
            return
        o = self.live.pop(ev.ptr, None)
        if o is None:
            if ev.ptr:
                s.unmatched_frees += 1
                if len(self.pending_free) > 100_000:
                    self.pending_free.clear()
                self.pending_free[ev.ptr] = ev.time_ns
            return
        self._free_obj(o)
        if self.engine.event_seq != self.seen_event:
            self._kills()

    # ------------------------------------------------------------------ driving
    def feed(self, ev) -> None:
        self.stats.events += 1
        if self.engine.create_queue:
            # A copy queued by a non-GFP_KERNEL allocation (spec 3.1): the kernel's work item
            # runs promptly, so it exists for the next event.
            self.engine.run_workqueue()
        op = ev.op
        if op == "alloc":
            self._alloc(ev)
        elif op == "free":
            self._free(ev)
        elif op == "fork":
            self._fork(ev)
        elif op == "exit":
            self._exit(ev)

    def run(self, events, window_ns: int = WINDOW_NS) -> Stats:
        feed = self.feed
        for ev in ordered(events, window_ns, self.stats):
            feed(ev)
        self.engine.run_workqueue()
        return self.stats


def ordered(events, window_ns: int, stats: Stats = None):
    """Events by (time, file order), released once the newest seen is window_ns later."""
    heap, newest, last, late = [], -1, -1, 0
    push, pop = heapq.heappush, heapq.heappop
    for ev in events:
        t = ev.time_ns
        if t > newest:
            newest = t
        push(heap, (t, ev.seq, ev))
        limit = newest - window_ns
        while heap[0][0] <= limit:
            item = pop(heap)
            if item[0] < last:
                late += 1
            last = item[0]
            yield item[2]
    while heap:
        item = pop(heap)
        if item[0] < last:
            late += 1
        last = item[0]
        yield item[2]
    if stats is not None:
        stats.late += late


# ---------------------------------------------------------------------------- offline runs

@dataclass
class Setup:
    """What an offline replay replays into."""
    cg: str = DEFAULT_CG
    sets: tuple = ()               # ("memory.kmem.limit_in_bytes=2M", "/a/memory.x=1", ...)
    catalogue: str = "3.4"         # "3.4" (built-in) | "host" (the trace's own slabinfo)
    design: str = "series"
    remove_at_end: bool = True     # rmdir the cgroup after the trace: dead caches left
    window_ns: int = WINDOW_NS


def build(setup: Setup, header):
    """A CgroupFS over a fresh engine with setup.cg made and setup.sets written, as a user
    would with mkdir and echo: the cgroup layer's own parsing and rules (3.3 grammar)."""
    from ..cgroupfs.tree import CgroupFS, ROOT_INO
    specs, source = None, "built-in"
    if setup.catalogue == "host":
        if not header.slabinfo:
            raise ReplayError("--catalogue host: the trace header holds no slabinfo")
        try:
            specs = _catalogue.parse(header.slabinfo, "the trace's slabinfo")
        except EngineError as e:
            raise ReplayError(f"--catalogue host: the engine refuses the host's slabinfo "
                              f"({e.message}); replay with the built-in 3.4 catalogue") from None
        source = "trace"
    elif setup.catalogue != "3.4":
        raise ReplayError(f"unknown catalogue {setup.catalogue!r} (3.4 or host)")
    engine = Engine(Config(design=policy.design(setup.design).name), specs, source)
    fs = CgroupFS(engine)
    if not setup.cg.startswith("/"):
        raise ReplayError(f"--cg {setup.cg!r}: a path from the root, like /traced")
    ino = ROOT_INO
    for part in filter(None, setup.cg.split("/")):
        try:
            ino = fs.lookup(ino, part).ino
        except EngineError:
            ino = fs.mkdir(ino, part).ino
    for item in setup.sets:
        write_setting(fs, setup.cg, item)
    memcg = fs.by_path(setup.cg)
    return fs, memcg


def write_setting(fs, cg: str, item: str) -> None:
    """`memory.kmem.limit_in_bytes=2M` (into cg) or `/a/b/memory.limit_in_bytes=8M`."""
    key, eq, value = item.partition("=")
    if not eq:
        raise ReplayError(f"--set {item!r}: FILE=VALUE")
    path, _, fname = key.rpartition("/")
    path = path if key.startswith("/") else cg
    memcg = fs.by_path(path or "/")
    if memcg is None:
        raise ReplayError(f"--set {item!r}: no cgroup {path!r}")
    try:
        ino = fs.lookup(fs.dir_ino(memcg), fname).ino
        fh = fs.open(ino)
        try:
            fs.write(fh, 0, value.encode())
        finally:
            fs.release(fh)
    except EngineError as e:
        raise ReplayError(f"--set {item}: {errno.errorcode.get(e.errno, e.errno)}: "
                          f"{e.message}") from None


@dataclass
class Outcome:
    stats: Stats
    kmem_peak: int                 # bytes of slab pages charged (the kmem counter), peak
    kmem_final: int
    res_peak: int
    caches_created: int            # per-cgroup copies made over the run
    dead_caches: int               # copies left dead (with pages) after the rmdir at the end
    dead_bytes: int                # their slab pages
    removed: str                   # why the rmdir did not happen, or ""
    cg: str
    limits: tuple


def replay(header, events, setup: Setup) -> Outcome:
    fs, memcg = build(setup, header)
    e = fs.engine
    session = Session(e, memcg, header.slub_aliases, header)
    created0 = e.cache_serial
    n0 = len(e.originals)
    stats = session.run(events, setup.window_ns)
    kmem_peak, kmem_final, res_peak = memcg.kmem.max_usage, memcg.kmem.usage, memcg.res.max_usage
    created = e.cache_serial - created0 - (len(e.originals) - n0)
    removed = ""
    if setup.remove_at_end:
        removed = _remove(fs, e, memcg, setup.cg)
    dead = [c for c in e.caches if c.dead]
    return Outcome(stats, kmem_peak, kmem_final, res_peak, created, len(dead),
                   sum(c.nr_slabs * c.pages * e.page for c in dead), removed, setup.cg,
                   tuple(setup.sets))


def _remove(fs, e, memcg, cg) -> str:
    """The workload is over: its tasks exit (keeping their objects) and the cgroup goes."""
    for pid in list(memcg.tasks):
        e.exit_task(pid, keep_objects=True)
    parent, _, name = cg.rstrip("/").rpartition("/")
    try:
        fs.rmdir(fs.dir_ino(fs.by_path(parent or "/")), name)
    except EngineError as ex:
        return f"rmdir {cg}: {errno.errorcode.get(ex.errno, ex.errno)}: {ex.message}"
    return ""


def load(path):
    from .format import read_trace
    try:
        return read_trace(path)
    except OSError as e:
        raise ReplayError(f"{path}: {e.strerror}") from None
    except ValueError as e:
        raise ReplayError(f"{path}: {e}") from None
