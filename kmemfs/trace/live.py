"""The tracefs side of `kmemfs mount -o follow`: the second module that touches tracefs
(capture.py is the first; this one reuses its Instance, Tracefs and stale-instance cleanup).

Two private instances of the daemon (never the top-level buffer):

  kmemfs_<pid>_follow_alloc  kmem:kmem_cache_alloc, kmem:kmalloc, sched:sched_process_fork/exit
                             of the followed tasks: set_event_pid + options/event-fork (the
                             kernel adds a child at fork and drops a pid when its task is freed)
  kmemfs_<pid>_follow_free   kmem:kmem_cache_free, kmem:kfree, system-wide

Same settings as `kmemfs trace`: trace_clock mono (CLOCK_MONOTONIC, so the daemon can place
its watermark with time.monotonic_ns()), real pointers, no overwrite, big buffers. Nothing is
enabled until a first pid is written to set_event_pid: an empty set_event_pid traces every
task. A pid is added with O_APPEND (`>>`: the kernel merges it into the list); one is removed
by writing the list anew, which clears the filter for an instant (open with O_TRUNC), so the
daemon drops events of pids it does not follow itself. When the last pid goes, the alloc
instance is stopped before the filter is emptied. close() disables and removes both
instances; a daemon killed with SIGKILL leaves them, and the next daemon (or `kmemfs trace`)
removes them at start (capture.remove_stale_instances: their pid is dead).
"""
from __future__ import annotations

import contextlib
import os

from . import capture
from .capture import ALLOC_EVENTS, FREE_EVENTS, Instance, TraceError, Tracefs

DEFAULT_BUFFER_KB = 64 * 1024        # per CPU and instance


class LiveTracer:
    """The daemon's two follow instances. Raises TraceError (one line) when it cannot."""

    def __init__(self, buffer_kb: int = DEFAULT_BUFFER_KB, log=None):
        self.buffer_kb = buffer_kb
        self.log = log or (lambda msg: None)
        self.tfs = None
        self.alloc = self.free = None
        self.alloc_fd = self.free_fd = None
        self.clock = None
        self.pids: set[int] = set()       # what we wrote; the kernel adds forks on its own
        self.alloc_on = self.free_on = False

    def open(self) -> "LiveTracer":
        if os.geteuid() != 0:
            raise TraceError("-o follow needs root (tracefs and the kmem tracepoints)")
        self.tfs = Tracefs().__enter__()
        try:
            for name in capture.remove_stale_instances(self.tfs.path):
                self.log(f"removed a stale tracefs instance {name}")
            capture.check_events(self.tfs.path)
            self.clock = capture.pick_clock(self.tfs.path)
            me = os.getpid()
            self.alloc = Instance(self.tfs.path, f"kmemfs_{me}_follow_alloc")
            self.free = Instance(self.tfs.path, f"kmemfs_{me}_follow_free")
            self.alloc.setup(self.clock, self.buffer_kb, ALLOC_EVENTS)
            self.free.setup(self.clock, self.buffer_kb, FREE_EVENTS)
            capture._write(self.alloc.f("options/event-fork"), 1)
            for inst in (self.alloc, self.free):
                # poll(2) on trace_pipe wakes at buffer_percent full (6.x): at once, please
                with contextlib.suppress(OSError, TraceError):
                    capture._write(inst.f("buffer_percent"), 0)
            self.alloc_fd = self.alloc.open_pipe()
            self.free_fd = self.free.open_pipe()
        except BaseException:
            self.close()
            raise
        return self

    def add_pid(self, pid: int) -> None:
        """Follow pid (and what it forks from now on): appended, then tracing starts."""
        _write_pids(self.alloc.f("set_event_pid"), os.O_APPEND, [pid])   # merged in
        self.pids.add(pid)
        if not self.free_on:            # frees first: no followed allocation misses its free
            self.free.enable()
            self.free_on = True
        if not self.alloc_on:
            self.alloc.enable()
            self.alloc_on = True

    def remove_pid(self, pid: int) -> None:
        """Stop following pid (its cgroup is root now, or the model killed it)."""
        self.pids.discard(pid)
        try:
            listed = {int(w) for w in capture._read(self.alloc.f("set_event_pid")).split()}
        except (OSError, ValueError):
            listed = set(self.pids)
        if pid not in listed:
            return
        keep = listed - {pid}
        if not keep:
            # an empty set_event_pid traces every task: stop before emptying it
            self.alloc.stop()
            with contextlib.suppress(OSError, TraceError):
                capture._write(self.alloc.f("events/enable"), 0)
            self.alloc_on = False
        _write_pids(self.alloc.f("set_event_pid"), os.O_TRUNC, sorted(keep))  # the new list

    def lost(self) -> int:
        """Events the kernel dropped (buffer full) or overwrote, both instances, all CPUs."""
        return sum(c["lost"] + c["overrun"] for inst in (self.alloc, self.free)
                   if inst is not None for c in inst.lost().values())

    def close(self) -> None:
        """Always: disable, remove both instances, unmount a private tracefs."""
        errors = []
        for inst in (self.alloc, self.free):
            if inst is not None:
                try:
                    inst.close()
                except TraceError as e:
                    errors.append(str(e))
        self.alloc = self.free = None
        self.alloc_fd = self.free_fd = None
        if self.tfs is not None:
            self.tfs.__exit__(None, None, None)
            self.tfs = None
        if errors:
            raise TraceError("; ".join(errors))


def _write_pids(path: str, flag: int, pids) -> None:
    """One write(2) (open(..., "a") would lseek, which tracefs refuses with EINVAL)."""
    fd = os.open(path, os.O_WRONLY | flag)
    try:
        if pids:
            os.write(fd, "".join(f"{p}\n" for p in pids).encode())
    finally:
        os.close(fd)
