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

import bisect
import errno
import operator
import re
from itertools import chain, islice
from dataclasses import dataclass, field
from typing import NamedTuple

from ..engine import Config, Engine, EngineError, catalogue as _catalogue, policy
from . import names
from .format import CONTEXTS, OPS, Event

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


@dataclass(slots=True)        # slots: counted on every event
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
    refused_frees: int = 0        # frees of objects whose allocation the model refused
    reused_live: int = 0          # an allocation at a live pointer: its free was never seen
    reordered: int = 0            # a free just before its own allocation (same clock tick)
    late: int = 0                 # records beyond the watermark (replayed out of order)
    dropped_memcg_only: int = 0   # today's memcg bookkeeping (obj_exts): not in the series
    dropped_unmapped: int = 0     # larger than the largest size-N
    dropped_killed: int = 0       # events of tasks the model killed
    dropped_unfollowed: int = 0   # follow: allocations of a task no longer followed
    freed_by_kill: int = 0        # objects the model freed when it killed their task
    killed: list = field(default_factory=list)   # [(trace pid, comm)]
    failures: int = 0
    first_failure: Failure | None = None
    caches: dict = field(default_factory=dict)   # catalogue name -> CacheStats
    inexact: list = field(default_factory=list)  # why the numbers are not exact


class _Obj(NamedTuple):
    """A live object: the cache copy and slab it came from, who holds it, its size."""
    cache: object
    slab: object
    owner: object
    size: int
    charged: bool


_new = tuple.__new__       # an _Obj without NamedTuple's Python-level __new__ (every allocation)


class _Kind:
    __slots__ = ("orig", "cs", "bits", "irq", "accounted", "why", "size", "host", "dropped",
                 "attempts", "done", "charged")

    def __init__(self, orig, cs, bits, irq, accounted, why, size, host, dropped):
        self.orig, self.cs, self.bits, self.irq, self.accounted = orig, cs, bits, irq, accounted
        self.why, self.size, self.host, self.dropped = why, size, host, dropped
        self.attempts = self.done = self.charged = 0    # folded into Stats by finish()


class Session:
    """Replays events into `engine`; tasks are created in `memcg` (an engine Memcg)."""

    def __init__(self, engine: Engine, memcg, aliases=None, header=None, inexact=False):
        self.engine = engine
        self.memcg = memcg
        self.mapper = names.Mapper({n: c.objsize for n, c in engine.originals.items()},
                                   aliases)
        self.stats = Stats(design=engine.policy.name)
        self.live = {}             # ptr -> _Obj
        self.kinds = {}            # what an allocation event's fields make of it: _Kind
        self.tasks = {}            # trace pid -> engine Task
        self.trace_pid = {}        # engine pid -> trace pid
        self.killed = set()        # trace pids the model killed (and children they forked)
        self.pending_free = {}     # ptr -> time_ns of a free seen before any allocation
        self.refused = set()       # pointers whose allocation the model refused
        self.seen_event = engine.event_seq
        self.resolution = header.time_resolution_ns if header is not None else 1000
        self.blocked = None        # ctl: a Blocked-raising hook for status "wait"
        # follow (trace/follow.py): (pid, comm, memcg or None) -> the engine task a traced pid
        # charges as (a host task of the tree), or None to drop its events; None: simulated
        # tasks spawned in self.memcg
        self.resolve = None
        self.handlers = {"alloc": self._alloc, "free": self._free, "fork": self._fork,
                         "exit": self._exit}
        self.timeline = []         # run(step_ns=N): (ns since start, live charged, kmem usage)
        self.start_ns = None       # the first event's time (with step_ns)
        if header is not None and header.inexact:
            self.stats.inexact.append("the capture lost events: " +
                                      ("; ".join(header.notes) or "see the trace header"))
        elif inexact:
            self.stats.inexact.append("the capture lost events (see the trace header)")

    # ------------------------------------------------------------------ tasks
    def task(self, pid: int, comm: str, memcg=None):
        t = self.tasks.get(pid)
        if t is not None and t.pid in self.engine.tasks:
            return t
        if self.resolve is not None:
            t = self.resolve(pid, comm, memcg)
            if t is None:
                return None
        else:
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
        if parent is None:                        # follow: not a followed task
            return
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
            if kind == "task_exit" and f["pid"] in self.trace_pid:
                if f.get("reason") == "oom_kill":
                    victims.add(f["pid"])
                else:                      # exited from outside (ctl `exit`): made anew
                    self.tasks.pop(self.trace_pid.pop(f["pid"]), None)
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

    def _kind(self, ev):
        """What the rules make of an allocation event: its catalogue cache, 3.3 gfp bits,
        context, why the designs differ. Memoised: a trace repeats few kinds."""
        key = (ev[4], ev[6:12])
        k = self.kinds.get(key)
        if k is None:
            m = self.mapper(ev)
            if m.name is None:
                k = _Kind(None, None, 0, False, False, None, 0, ev.cache,
                          "memcg-only" if m.rule == "memcg-only" else "unmapped")
            else:
                orig = self.engine.originals[m.name]
                cs = self.stats.caches.get(m.name)
                if cs is None:
                    cs = self.stats.caches[m.name] = CacheStats(flagged=m.flagged)
                bits = names.gfp_info(ev.gfp).bits
                irq = ev.context != "task"
                k = _Kind(orig, cs, bits, irq, ev.accounted, policy.why(bits, irq, ev.accounted),
                          orig.objsize, ev.cache, None)
            self.kinds[key] = k
        return k

    def _alloc(self, ev) -> None:
        s = self.stats
        s.allocs += 1
        pid = ev[2]                              # fields by index: every allocation
        if pid in self.killed:
            s.dropped_killed += 1
            return
        k = self.kinds.get((ev[4], ev[6:12])) or self._kind(ev)   # (cache, bytes_req..call_site)
        k.attempts += 1
        if k.orig is None:
            if k.dropped == "memcg-only":
                s.dropped_memcg_only += 1
            else:
                s.dropped_unmapped += 1
            return
        t = self.tasks.get(pid) or self.task(pid, ev.comm)
        if t is None:                             # follow: not a followed task
            s.dropped_unfollowed += 1
            return
        ptr = ev[5]
        live = self.live
        if self.refused:
            self.refused.discard(ptr)
        if ptr in live:
            s.reused_live += 1
            self._free_obj(live.pop(ptr))
        owner = t.objs
        cache, slab, r = self.engine.alloc_object(k.orig, t.memcg, k.bits, k.irq, t, owner,
                                                  k.accounted)
        if r is not None:
            if r.status == "wait" and self.blocked is not None:
                s.allocs -= 1                 # fed again once the OOM sleep ends
                s.events -= 1
                k.attempts -= 1
                self.blocked(r, ev)           # ctl: raises, the write sleeps
            if not r.done:
                if r.status == "wait":
                    self.engine.end_oom_wait(r.wait_on)
                s.failures += 1
                self.refused.add(ptr)
                if s.first_failure is None:
                    s.first_failure = Failure(ev.seq, ev.time_ns, pid, ev.comm, ev.cache,
                                              cache.name, ev.gfp, ev.call_site, r.status)
                return
        k.done += 1
        charged = cache.orig is not None
        if charged:
            k.charged += 1
        if slab is None:                   # the allocation killed its own task: gone with it
            s.freed_by_kill += 1
            return
        size = k.size
        if charged:
            n = s.live_charged_bytes = s.live_charged_bytes + size
            if n > s.peak_live_charged_bytes:
                s.peak_live_charged_bytes = n
        n = s.live_bytes = s.live_bytes + size
        if n > s.peak_live_bytes:
            s.peak_live_bytes = n
        o = _new(_Obj, (cache, slab, owner, size, charged))
        if self.pending_free:
            t0 = self.pending_free.pop(ptr, None)
            if t0 is not None and ev[1] - t0 <= self.resolution:
                s.reordered += 1              # its free came first within one clock tick
                s.unmatched_frees -= 1
                self._free_obj(o)
                return
        live[ptr] = o

    def finish(self) -> Stats:
        """Fold the per-kind counts into the per-cache ones."""
        if self.engine.event_seq != self.seen_event:
            self._kills()
        s = self.stats
        for k in self.kinds.values():
            cs = k.cs
            if cs is not None and k.attempts:
                cs.hosts[k.host] = cs.hosts.get(k.host, 0) + k.attempts
                if k.why is not None:
                    cs.why[k.why] = cs.why.get(k.why, 0) + k.attempts * k.size
                cs.objects += k.done
                cs.bytes += k.done * k.size
                cs.charged_objects += k.charged
                cs.charged_bytes += k.charged * k.size
                s.objects += k.done
                s.bytes += k.done * k.size
                s.charged_objects += k.charged
                s.charged_bytes += k.charged * k.size
            k.attempts = k.done = k.charged = 0
        return s

    def _free_obj(self, o: _Obj) -> None:
        self.engine.free_object(o.cache, o.owner, o.slab)
        self._forget(o)

    def _free(self, ev) -> None:
        s = self.stats
        s.frees += 1
        if ev[2] in self.killed:                 # [2]: pid
            s.dropped_killed += 1
            return
        ptr = ev[5]                              # [5]: ptr
        o = self.live.pop(ptr, None)
        if o is not None:
            self.engine.free_object(o[0], o[2], o[1])      # cache, owner, slab
            s.live_bytes -= o[3]                 # size
            if o[4]:                             # charged
                s.live_charged_bytes -= o[3]
        elif self.refused and ptr in self.refused:
            self.refused.discard(ptr)
            s.refused_frees += 1
        elif ptr:
            s.unmatched_frees += 1
            if len(self.pending_free) > 100_000:
                self.pending_free.clear()
            self.pending_free[ptr] = ev[1]

    # ------------------------------------------------------------------ driving
    def feed(self, ev) -> None:
        """One event (the ctl `replay ev` verb, follow)."""
        self.feed_all((ev,))

    def feed_all(self, events) -> None:
        """Replay events in the order given (run orders a trace's)."""
        e, s, handlers = self.engine, self.stats, self.handlers
        for ev in events:
            s.events += 1
            if e.event_seq != self.seen_event:
                self._kills()      # the last event's OOM kills (or a ctl `exit` of our tasks)
            if e.create_queue:
                # A copy queued by a non-GFP_KERNEL allocation (05/10 mem_cgroup_get_kmem_cache):
                # the kernel's work item runs promptly, so it exists for the next event.
                e.run_workqueue()
            handlers[ev[3]](ev)                  # [3]: op

    def run(self, events, window_ns: int = WINDOW_NS, step_ns: int = 0) -> Stats:
        """Replay everything. step_ns > 0: a point of (ns since the first event, live charged
        bytes, charged slab bytes) in self.timeline every step_ns of trace time."""
        evs = ordered(events, window_ns, self.stats)
        self.feed_all(self._sampled(evs, step_ns) if step_ns else evs)
        self.engine.run_workqueue()
        return self.finish()

    def _sampled(self, events, step_ns: int):
        t0 = nxt = None
        t = 0
        for ev in events:
            t = ev[1]                            # [1]: time_ns
            if nxt is None:
                t0 = nxt = t
            if t >= nxt:
                self.sample(t - t0)
                nxt = t + step_ns
            yield ev
        if t0 is not None:
            self.sample(t - t0)
        self.start_ns = t0

    def sample(self, t: int) -> None:
        self.timeline.append((t, self.stats.live_charged_bytes, self.memcg.kmem.usage))


_TIME = operator.itemgetter(1)          # Event.time_ns (an index: cheaper than the name)


def ordered(events, window_ns: int, stats: Stats = None, chunk: int = 4096):
    """Events by (time, file order), each released once an event window_ns later has been
    read. Read and sorted in chunks (islice and Timsort, which is linear on nearly sorted
    input: no Python step per event). The sort is stable and what is kept from the last chunk
    was read before the new one, so sorting by time alone keeps equal times in file order:
    (time, seq), seq being the position in the file, without a tuple key per event. A record
    that arrives after later ones were released is replayed anyway and counted in stats.late."""
    return chain.from_iterable(_released(events, window_ns, stats, chunk))


def _released(events, window_ns: int, stats, chunk: int):
    """ordered's lists of events released together (chain walks them in C: no generator step
    per event)."""
    events = iter(events)
    buf, newest, last, late = [], -1, -1, 0
    while True:
        want = max(chunk, len(buf))    # amortised: a wide window (long buffer) sorts less often
        new = list(islice(events, want))
        buf += new
        if len(new) < want:
            break
        newest = max(newest, max(map(_TIME, new)))
        buf.sort(key=_TIME)
        i = bisect.bisect_right(buf, newest - window_ns, key=_TIME)
        if i:
            late += bisect.bisect_left(buf, last, hi=i, key=_TIME)
            last = buf[i - 1].time_ns
            yield buf[:i]
            del buf[:i]
    buf.sort(key=_TIME)
    if buf:
        late += bisect.bisect_left(buf, last, key=_TIME)
    yield buf
    if stats is not None:
        stats.late += late


# ---------------------------------------------------------------------------- the ctl wire
# `replay ev` lines of the ctl language carry one record as words: the format's fields, with
# "-" for an empty one and \ooo octal escapes for a space, '=' or backslash (docs/ctl.md).

WIRE = ("seq",) + tuple(f for f in Event._fields if f != "seq")
_ESC = {"\\": "\\134", " ": "\\040", "=": "\\075"}


def _word(v) -> str:
    if v is True or v is False:
        return "1" if v else "0"
    text = str(v)
    if not text:
        return "-"
    for ch, esc in _ESC.items():
        text = text.replace(ch, esc)
    return text


def to_wire(ev) -> str:
    return "replay ev " + " ".join(_word(v) for v in ev)


def _unword(w: str) -> str:
    if w == "-":
        return ""
    if "\\" in w:
        w = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), w)
    return w


def from_wire(words) -> Event:
    """The inverse of to_wire (ValueError on a malformed field)."""
    f = [_unword(w) for w in words]
    if f[3] not in OPS or f[9] not in CONTEXTS or f[10] not in ("0", "1"):
        raise ValueError("bad op, context or accounted field")
    return Event(int(f[0]), int(f[1]), int(f[2]), f[3], f[4], int(f[5]), int(f[6]), int(f[7]),
                 f[8], f[9], f[10] == "1", f[11], int(f[12]), f[13])


SUMMARY = ("events", "objects", "bytes", "charged_objects", "charged_bytes",
           "peak_live_charged_bytes", "live_charged_bytes", "failures", "unmatched_frees",
           "dropped_killed", "freed_by_kill")


def summary(s: Stats) -> str:
    """key=value words of a replay's result (the ctl `replay end` line)."""
    out = [f"{k}={getattr(s, k)}" for k in SUMMARY]
    out.append(f"killed={len(s.killed)}")
    f = s.first_failure
    if f is not None:
        out.append(f"first_failure={f.seq}:{_word(f.cache) or 'kmalloc'}:{_word(f.model_cache)}"
                   f":{_word(f.gfp)}:{_word(f.call_site)}")
    if s.inexact:
        out.append("inexact=1")
    return " ".join(out)


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
    timeline: list
    start_ns: int | None


def step_for(header, samples: int) -> int:
    """The sampling step for about `samples` points over the capture (10 ms if unknown)."""
    span = header.end_ns - header.start_ns if header.end_ns > header.start_ns else 0
    return max(1, span // samples) if span and samples else 10_000_000


def replay(header, events, setup: Setup, samples: int = 0) -> Outcome:
    fs, memcg = build(setup, header)
    e = fs.engine
    session = Session(e, memcg, header.slub_aliases, header)
    created0 = e.cache_serial
    n0 = len(e.originals)
    stats = session.run(events, setup.window_ns, step_for(header, samples) if samples else 0)
    kmem_peak, kmem_final, res_peak = memcg.kmem.max_usage, memcg.kmem.usage, memcg.res.max_usage
    created = e.cache_serial - created0 - (len(e.originals) - n0)
    removed = ""
    if setup.remove_at_end:
        removed = _remove(fs, e, memcg, setup.cg)
    dead = [c for c in e.caches if c.dead]
    return Outcome(stats, kmem_peak, kmem_final, res_peak, created, len(dead),
                   sum(c.nr_slabs * c.pages * e.page for c in dead), removed, setup.cg,
                   tuple(setup.sets), session.timeline, session.start_ns)


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
