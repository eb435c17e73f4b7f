"""One time-ordered stream out of the two tracefs instances' (pure: Events in, Events out).

The allocation instance records the followed tasks' allocations, forks and exits; the free
instance records every free of the system (frees run in RCU callbacks, softirqs and kworkers,
not only in the followed tasks). A `Merger` keeps the frees that matter, those of an object a
followed task allocated, or done by a followed task (of an object from before the trace:
replay counts those), and merges them with the allocations by time. Its state (live
pointers, followed pids, the next seq) lives across calls, so the same merge serves a whole
capture at once (capture.merge) and a live stream released by a watermark (push/release,
`kmemfs mount -o follow`).
"""
from __future__ import annotations

import bisect
import operator
from typing import Iterable, Iterator

from .format import Event

_TIME = operator.itemgetter(1)          # Event.time_ns


def keep_free_lines(lines, ptrs: set, pids: set, dropped: list) -> list:
    """A cheap text pre-filter of free lines: only a free of a pointer in `ptrs` (16 hex
    digits, as hash-ptr 0 prints it) or by a pid in `pids` (decimal strings) can matter; the
    merge decides exactly. Most system-wide frees are other tasks' and are dropped here, unparsed
    (dropped[0] counts them). Lines of any other shape (lost-events markers) pass through."""
    out = []
    n = 0
    for line in lines:
        i = line.find(" ptr=", 40)
        if i < 0 or line[16:17] != "-":
            out.append(line)
            continue
        j = line.find(" ", i + 5)
        if (line[i + 5:j] if j > 0 else line[i + 5:]) in ptrs or \
                line[17:line.find(" ", 17)] in pids:
            out.append(line)
        else:
            n += 1
    dropped[0] += n
    return out


class Merger:
    """Merge state: objects the followed tasks hold (live), the followed pids (tree), seq."""

    def __init__(self, pids: Iterable[int] = ()):
        self.live: set[int] = set()
        self.tree: set[int] = set(pids)
        self.dropped = 0                # frees that did not matter
        self.seq = 0
        # push/release only
        self._a: list = []
        self._f: list = []
        self.released_ns = -1           # the last watermark
        self.late = 0                   # events that came after their time was released
        self.ptr_words: set[str] = set()    # pushed allocations' pointers, for keep_free_lines
        self.pid_words: set[str] = {str(p) for p in self.tree}
        self.prefiltered = [0]
        self.newest_a = self.newest_f = -1     # the newest time pushed on each side

    # ------------------------------------------------------------------ the followed pids
    def add_pid(self, pid: int) -> None:
        self.tree.add(pid)
        self.pid_words.add(str(pid))

    def remove_pid(self, pid: int) -> None:
        self.tree.discard(pid)
        self.pid_words.discard(str(pid))

    # ------------------------------------------------------------------ one pass
    def merge(self, a_it: Iterator[Event], f_it: Iterator[Event]) -> Iterator[Event]:
        """Merge two time-sorted iterators. Events with the same (microsecond) time from the
        two instances are interleaved pointer-aware: a free whose object is live goes first
        (its slot is then reused by the alloc), a free of an object allocated in the same
        microsecond goes after that alloc. Renumbers seq."""
        live, tree = self.live, self.tree
        new = tuple.__new__
        a = next(a_it, None)
        f = next(f_it, None)
        while a is not None or f is not None:
            if f is None or (a is not None and a[1] < f[1]):        # [1]: time_ns
                if a[3] == "alloc":
                    live.add(a[5])
                elif a[3] == "fork":
                    tree.add(a[12])
                yield new(Event, (self.seq,) + a[1:])
                self.seq += 1
                a = next(a_it, None)
            elif a is None or f[1] < a[1]:
                if f[5] in live:
                    live.discard(f[5])
                elif f[2] not in tree:
                    self.dropped += 1
                    f = next(f_it, None)
                    continue
                yield new(Event, (self.seq,) + f[1:])
                self.seq += 1
                f = next(f_it, None)
            else:                               # both instances at one microsecond
                t = a[1]
                group_a, group_f = [], []
                while a is not None and a[1] == t:
                    group_a.append(a)
                    a = next(a_it, None)
                while f is not None and f[1] == t:
                    group_f.append(f)
                    f = next(f_it, None)
                for ev in _interleave(group_a, group_f, live, tree):
                    if ev is None:
                        self.dropped += 1
                        continue
                    yield new(Event, (self.seq,) + ev[1:])
                    self.seq += 1

    # ------------------------------------------------------------------ a live stream
    def push(self, allocs: list, frees: list) -> None:
        """Events just read (each list nearly in time order, as trace_pipe gives them)."""
        if allocs:
            self._a += allocs
            self.newest_a = max(self.newest_a, allocs[-1][1])
            for ev in allocs:
                if ev[3] == "alloc":
                    self.ptr_words.add(f"{ev[5]:016x}")
                elif ev[3] == "fork":
                    self.pid_words.add(str(ev[12]))
        if frees:
            self._f += frees
            self.newest_f = max(self.newest_f, frees[-1][1])

    def keep_free_lines(self, lines) -> list:
        """Pre-filter free lines read before the allocation pipe was last drained (an object's
        allocation is committed before its free, so it has been pushed already)."""
        return keep_free_lines(lines, self.ptr_words, self.pid_words, self.prefiltered)

    def pending(self) -> int:
        return len(self._a) + len(self._f)

    def oldest_alloc_ns(self):
        """The time of the oldest allocation-side event waiting for the watermark, or None."""
        return min(ev[1] for ev in self._a[:64]) if self._a else None

    def release(self, upto_ns: int) -> list:
        """The merged events up to the watermark upto_ns (every event at or before it has been
        pushed); a later one is still released, in the next call, and counted in late."""
        a, f = self._a, self._f
        a.sort(key=_TIME)
        f.sort(key=_TIME)
        ia = bisect.bisect_right(a, upto_ns, key=_TIME)
        jf = bisect.bisect_right(f, upto_ns, key=_TIME)
        if not ia and not jf:
            self.released_ns = max(self.released_ns, upto_ns)
            return []
        ca, cf = a[:ia], f[:jf]
        del a[:ia], f[:jf]
        prev = self.released_ns
        self.late += bisect.bisect_right(ca, prev, key=_TIME) + \
            bisect.bisect_right(cf, prev, key=_TIME)
        self.released_ns = max(prev, upto_ns)
        out = list(self.merge(iter(ca), iter(cf)))
        ptr_words = self.ptr_words
        live = self.live
        for ev in cf:                     # a freed object's pointer no longer passes the filter
            if ev[5] not in live:
                ptr_words.discard(f"{ev[5]:016x}")
        return out


def _interleave(group_a, group_f, live, tree):
    """One microsecond's events of both instances, in a consistent order (see merge); None
    for a free that does not matter."""
    pending_alloc = {ev.ptr for ev in group_a if ev.op == "alloc"}
    i = j = 0
    while i < len(group_a) or j < len(group_f):
        fr = group_f[j] if j < len(group_f) else None
        al = group_a[i] if i < len(group_a) else None
        if fr is not None and (al is None or fr.ptr in live or fr.ptr not in pending_alloc):
            j += 1
            if fr.ptr in live:
                live.discard(fr.ptr)
                yield fr
            elif fr.pid in tree:
                yield fr
            else:
                yield None
            continue
        i += 1
        if al.op == "alloc":
            pending_alloc.discard(al.ptr)
            live.add(al.ptr)
        elif al.op == "fork":
            tree.add(al.child)
        yield al
