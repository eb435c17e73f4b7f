"""Following live host processes into a running model (`kmemfs mount -o follow`).

A host pid written to a kmemfs `tasks` file is followed: its real slab allocations are
charged in the model, as they happen, to the cgroup its task is in, and their frees give the
objects back. The tracefs side is live.py; this module is what happens to the text it reads
(pure: text and clock values in, engine changes out; no tracefs, no trio):

  - both trace_pipes are parsed incrementally (parse.Parser); the system-wide free lines go
    through a text pre-filter first (merge.keep_free_lines: pointers the followed tasks
    allocated, pids they are);
  - a merge.Merger merges them by time and releases what is older than the watermark
    (every event up to it has been read);
  - a replay.Session applies them to the engine with the usual charge logic; its resolve hook
    maps a pid to its host Task in the tree (attached by the `tasks` write), so a pid in /web
    charges /web. A fork of a followed task puts the child in its parent's cgroup (cgroup_fork:
    it shows in that `tasks` file), its exit ends the following; its objects outlive it
    (dentries, inodes) until their frees are seen.

Never followed: the daemon's own threads (a `tasks` write of the daemon's pid is recorded,
but no event of it is applied), tasks in the root cgroup (a move to root stops following).
Lost events (the kernel's per-CPU dropped/overrun counts grew) make the model inexact: a
`follow_lost` event says so and `.kmemfs/config` shows `follow inexact lost=N`.
"""
from __future__ import annotations

import codecs
import collections
import time

from .merge import Merger
from .parse import Parser
from .replay import Session

WINDOW_NS = 2_000_000       # how late a record may be committed after its timestamp (the
                            # ring buffer reserves and commits with preemption off: µs)
LATENCY_SAMPLES = 1 << 16


class Stream:
    """One trace_pipe's bytes -> complete lines (a record may be cut anywhere)."""

    def __init__(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tail = ""

    def lines(self, data: bytes) -> list:
        text = self.tail + self.decoder.decode(data)
        end = text.rfind("\n")
        if end < 0:
            self.tail = text
            return []
        self.tail = text[end + 1:]
        return text[:end].split("\n")


class Follower:
    """tracer: add_pid(pid)/remove_pid(pid) of the kernel's pid filter (live.LiveTracer), or
    None. is_me(pid): the pid is one of the daemon's own threads."""

    def __init__(self, engine, tracer=None, is_me=lambda pid: False, aliases=None,
                 window_ns: int = WINDOW_NS):
        self.engine = engine
        self.tracer = tracer
        self.is_me = is_me
        self.window_ns = window_ns
        self.pids: set[int] = set()          # followed
        self.merger = Merger()
        self.session = Session(engine, engine.root, aliases or {})
        self.session.resolve = self._resolve
        self.alloc_in, self.free_in = Stream(), Stream()
        self.alloc_parser, self.free_parser = Parser(), Parser()
        self.seen_event = engine.event_seq
        self.lost = 0                        # events the kernel lost, all told
        self.applied = 0                     # events applied to the engine
        self.dropped = 0                     # events of pids not followed (any more)
        self.latency_ns = collections.deque(maxlen=LATENCY_SAMPLES)
        self.errors = []                     # tracer failures (the model is then inexact)

    # ------------------------------------------------------------------ the tree's side
    def follows(self, pid: int) -> bool:
        """Its objects outlive its task: the trace frees them, not its exit."""
        return pid in self.pids

    def attached(self, pid: int) -> None:
        """A `tasks` write put pid in a cgroup (engine.attach has run)."""
        t = self.engine.tasks.get(pid)
        if t is None or t.simulated:
            return
        if t.memcg.is_root or self.is_me(pid):
            self._unfollow(pid, tell_kernel=True)
            return
        if pid not in self.pids:
            self.session.killed.discard(pid)     # a pid the model killed, followed anew
            self._follow(pid)

    def _follow(self, pid: int) -> None:
        self.pids.add(pid)
        self.merger.add_pid(pid)
        if self.tracer is not None:
            try:
                self.tracer.add_pid(pid)
            except Exception as e:          # TraceError, OSError: the write itself succeeded
                self.error(f"cannot add pid {pid} to set_event_pid: {e}")

    def _unfollow(self, pid: int, tell_kernel: bool) -> None:
        if pid not in self.pids:
            return
        self.pids.discard(pid)
        self.merger.remove_pid(pid)
        if tell_kernel and self.tracer is not None:
            try:
                self.tracer.remove_pid(pid)
            except Exception as e:          # TraceError, OSError: the write itself succeeded
                self.error(f"cannot remove pid {pid} from set_event_pid: {e}")

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        self.engine.emit("follow_error", error=msg)

    def _resolve(self, pid: int, comm: str, memcg):
        """Session hook: the host task a followed pid charges as; with memcg, a child forked
        by a followed task, which starts in its parent's cgroup."""
        e = self.engine
        if memcg is not None:
            if memcg.removed or memcg.is_root or self.is_me(pid):
                return None
            old = e.tasks.get(pid)
            if old is not None and not old.simulated:     # the pid's last owner is gone
                e.exit_task(pid, "host_exit", keep_objects=pid in self.pids)
            t = e.attach(memcg, pid, comm)
            self.pids.add(pid)               # the kernel's filter added it (event-fork)
            self.merger.add_pid(pid)
            return t
        t = e.tasks.get(pid)
        if t is None or t.simulated or pid not in self.pids:
            return None
        return t

    # ------------------------------------------------------------------ the trace's side
    def feed_alloc(self, data: bytes) -> None:
        self.merger.push(self.alloc_parser.parse_lines(self.alloc_in.lines(data)), None)

    def feed_free(self, data: bytes) -> None:
        """Free text read before the alloc pipe was last drained: the allocations of its
        objects have been pushed (see Merger.keep_free_lines)."""
        lines = self.merger.keep_free_lines(self.free_in.lines(data))
        self.merger.push(None, self.free_parser.parse_lines(lines))

    def release(self, upto_ns: int, now_ns: int | None = None) -> int:
        """Apply every event up to the watermark; returns how many were applied."""
        evs = self.merger.release(upto_ns)
        pids = self.pids
        feed = self.session.feed
        n = 0
        for ev in evs:
            if ev[3] != "free" and ev[2] not in pids:    # [2] pid, [3] op
                self.dropped += 1
                continue
            feed(ev)
            n += 1
            if ev[3] == "exit":
                pid = ev[2]
                t = self.engine.tasks.get(pid)
                if t is not None and not t.simulated:    # it never allocated: not the Session's
                    self.engine.exit_task(pid, "exit", keep_objects=True)
                self._unfollow(pid, tell_kernel=False)   # the kernel drops it when freed
        self._engine_exits()
        if n:
            self.applied += n
            now = time.monotonic_ns() if now_ns is None else now_ns
            self.latency_ns.extend(now - ev[1] for ev in evs[::max(1, len(evs) // 1024)])
        return n

    def _engine_exits(self) -> None:
        """Followed tasks the engine ended: OOM-killed by the model (the real process lives
        on: stop tracing it), gone from the host (pruned), or exited in the trace."""
        e = self.engine
        if e.event_seq == self.seen_event:
            return
        for _, kind, f in e.events_since(self.seen_event):
            if kind == "task_exit" and f["pid"] in self.pids:
                self._unfollow(f["pid"], tell_kernel=f.get("reason") not in ("exit", "host_exit"))
        self.seen_event = e.event_seq

    def set_lost(self, total: int) -> bool:
        """The kernel's lost counts (and the pipes' LOST markers); True when they grew."""
        total = max(total, sum(self.alloc_parser.stats.lost.values())
                    + sum(self.free_parser.stats.lost.values()))
        if total <= self.lost:
            return False
        self.engine.emit("follow_lost", lost=total - self.lost, total=total)
        self.lost = total
        return True

    # ------------------------------------------------------------------ status
    @property
    def inexact(self) -> bool:
        return bool(self.lost or self.errors)

    def status(self) -> str:
        """The `follow` row of .kmemfs/config."""
        if not self.inexact:
            return "exact"
        why = f" lost={self.lost}" if self.lost else ""
        return f"inexact{why}" + (f" errors={len(self.errors)}" if self.errors else "")

    def stats(self) -> str:
        """The `follow_stats` row: counts and the latency from event to counter."""
        lat = sorted(self.latency_ns)

        def pct(p):
            return lat[min(len(lat) - 1, len(lat) * p // 100)] // 1000 if lat else 0
        s = self.session.stats
        return (f"pids={len(self.pids)} applied={self.applied} allocs={s.allocs} "
                f"frees={s.frees} forks={s.forks} exits={s.exits} "
                f"pending={self.merger.pending()} late={self.merger.late} "
                f"prefiltered={self.merger.prefiltered[0]} unrelated={self.merger.dropped} "
                f"latency_p50_us={pct(50)} latency_p99_us={pct(99)} "
                f"latency_max_us={lat[-1] // 1000 if lat else 0}")
