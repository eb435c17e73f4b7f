"""`kmemfs trace`: record a command's slab allocations and every free, through tracefs.

The only module that touches tracefs. Two private instances (never the top-level buffer):

  kmemfs_<pid>_alloc  kmem:kmem_cache_alloc, kmem:kmalloc, sched:sched_process_fork/exit,
                      filtered by set_event_pid = COMMAND's pid (written before any event is
                      enabled: an empty set_event_pid traces every task) + options/event-fork
  kmemfs_<pid>_free   kmem:kmem_cache_free, kmem:kfree, system-wide: frees run in RCU
                      callbacks, softirqs and kworkers, not only in the tree

Both use one trace_clock (mono), real pointers (options/hash-ptr 0), no overwrite
(options/overwrite 0: a full buffer drops new events and counts them) and big buffers.
COMMAND is forked stopped on a pipe, its pid written to set_event_pid, the events enabled,
then it is released to exec. While it runs both trace_pipes are copied raw to spool files
(cheap, so the buffers don't fill); frees keep being recorded for --free-tail seconds after it
exits (RCU-deferred frees). Then the spools are parsed and merged by time (merge()) into the
trace file (format.py). The instances are always removed, also on Ctrl-C, SIGTERM or error.
"""
from __future__ import annotations

import bisect
import contextlib
import errno
import gzip
import itertools
import operator
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterable, Iterator

from . import format as tformat
from .merge import Merger, keep_free_lines
from .parse import Parser, ParseStats

ALLOC_EVENTS = ("kmem/kmem_cache_alloc", "kmem/kmalloc", "sched/sched_process_fork",
                "sched/sched_process_exit")
FREE_EVENTS = ("kmem/kmem_cache_free", "kmem/kfree")
CLOCKS = ("mono", "global")          # both count ns and agree across CPUs; first available
DEFAULT_BUFFER_KB = 128 * 1024       # per CPU and instance
DEFAULT_FREE_TAIL = 1.0
TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# kmemfs trace's, and a following daemon's (live.py)
INSTANCE_RE = re.compile(r"^kmemfs_(\d+)_(alloc|free|follow_alloc|follow_free)$")
# trace_pipe reads (kmemfs trace and -o follow), under glibc's mmap threshold (128 KiB): a 1 MiB
# buffer is mmap'ed and munmap'ed on every read, and those frees (vm_area_struct,
# anon_vma_chain) are recorded by the system-wide free instance; a following daemon's pipe then
# never read empty (100k frees/s of its own, a CPU). Also the chunk in which the spools are
# parsed and copied out: the size changes neither the events nor the file's bytes.
READ_CHUNK = 64 << 10


class TraceError(Exception):
    """A one-line reason the capture cannot run or went wrong."""


class Interrupted(TraceError):
    pass


# --- tracefs ---------------------------------------------------------------------------------

def _is_tracefs(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "instances"))


def _mounted_tracefs() -> Iterator[str]:
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "tracefs":
                    yield parts[1].replace("\\040", " ")
    except OSError:
        return


PRIVATE_PREFIX = "kmemfs_tracefs_"   # private tracefs mounts: tempdir/kmemfs_tracefs_*


class Tracefs(contextlib.AbstractContextManager):
    """A usable tracefs: an existing mount, else one mounted at a private directory (and
    unmounted on exit)."""

    def __init__(self):
        self.path = None
        self._mounted = None

    def __enter__(self):
        for p in itertools.chain(TRACEFS_CANDIDATES, _mounted_tracefs()):
            if _is_tracefs(p):
                self.path = p
                return self
        d = tempfile.mkdtemp(prefix=PRIVATE_PREFIX)
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", d], capture_output=True,
                           text=True)
        if r.returncode != 0 or not _is_tracefs(d):
            os.rmdir(d)
            raise TraceError("no tracefs: none mounted and `mount -t tracefs nodev DIR` failed"
                             f" ({(r.stderr or '').strip() or 'no instances directory'})")
        self.path = self._mounted = d
        return self

    def __exit__(self, *exc):
        if self._mounted:
            subprocess.run(["umount", self._mounted], capture_output=True)
            with contextlib.suppress(OSError):
                os.rmdir(self._mounted)
            self._mounted = None
        return False


def _write(path: str, value) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{value}\n")
    except OSError as e:
        raise TraceError(f"cannot write {value!r} to {path}: {e.strerror}") from None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Instance:
    """One tracefs instance we created; close() disables it and removes it."""

    def __init__(self, tracefs: str, name: str):
        self.name = name
        self.path = os.path.join(tracefs, "instances", name)
        self.fd = None
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise TraceError(f"cannot create tracefs instance {self.path}: {e.strerror}") from None

    def f(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def setup(self, clock: str, buffer_kb: int, events: Iterable[str]) -> None:
        _write(self.f("tracing_on"), 0)
        _write(self.f("trace_clock"), clock)
        _write(self.f("options/overwrite"), 0)
        _write(self.f("options/hash-ptr"), 0)
        _write(self.f("buffer_size_kb"), buffer_kb)
        self.events = tuple(events)

    def enable(self) -> None:
        for e in self.events:
            _write(self.f(f"events/{e}/enable"), 1)
        _write(self.f("tracing_on"), 1)

    def open_pipe(self) -> int:
        self.fd = os.open(self.f("trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        return self.fd

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            _write(self.f("tracing_on"), 0)

    def lost(self) -> dict:
        """per_cpu/cpuN/stats: {cpu: {"lost": dropped + commit overrun, "overrun": n}}."""
        out = {}
        with contextlib.suppress(OSError):
            for d in sorted(os.listdir(self.f("per_cpu"))):
                if not d.startswith("cpu"):
                    continue
                st = {}
                for line in _read(self.f(f"per_cpu/{d}/stats")).splitlines():
                    k, _, v = line.partition(":")
                    with contextlib.suppress(ValueError):
                        st[k.strip()] = int(v.strip())
                out[d[3:]] = {"lost": st.get("dropped events", 0) + st.get("commit overrun", 0),
                              "overrun": st.get("overrun", 0)}
        return out

    def close(self) -> None:
        """Disable everything, close the pipe, remove the instance (rmdir frees the buffer)."""
        self.stop()
        with contextlib.suppress(OSError, TraceError):
            _write(self.f("events/enable"), 0)
        with contextlib.suppress(OSError, TraceError):
            _write(self.f("set_event_pid"), "")
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise TraceError(f"cannot remove {self.path}: {e.strerror}") from None
                time.sleep(0.1)
        raise TraceError(f"cannot remove {self.path}: busy")


def remove_stale_instances(tracefs: str) -> list[str]:
    """Instances a killed `kmemfs trace` left (its pid is gone): disable and remove them.
    Called before this run creates its own."""
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(os.path.join(tracefs, "instances")):
            m = INSTANCE_RE.match(name)
            # ours cannot exist yet: one with our pid is a dead process's that had it
            if m and (int(m.group(1)) == os.getpid() or not _pid_alive(int(m.group(1)))):
                inst = Instance.__new__(Instance)
                inst.name, inst.path, inst.fd = name, os.path.join(tracefs, "instances", name), None
                with contextlib.suppress(TraceError):
                    inst.close()
                    removed.append(name)
    return removed


def unavailable() -> str | None:
    """Why `kmemfs trace` cannot run here (for tests' skip reasons), or None."""
    if os.geteuid() != 0:
        return "needs root (tracefs)"
    if not (any(_is_tracefs(p) for p in TRACEFS_CANDIDATES)
            or any(_is_tracefs(p) for p in _mounted_tracefs())):
        with open("/proc/filesystems") as f:
            if "tracefs" not in f.read():
                return "the kernel has no tracefs"
        if shutil.which("mount") is None:
            return "tracefs is not mounted and there is no mount(8)"
    return None


def check_events(tracefs: str) -> None:
    for e in ALLOC_EVENTS + FREE_EVENTS:
        if not os.path.isdir(os.path.join(tracefs, "events", e)):
            raise TraceError(f"tracepoint {e.replace('/', ':')} is missing from this kernel "
                             f"({tracefs}/events/{e})")


def pick_clock(tracefs: str) -> str:
    have = _read(os.path.join(tracefs, "trace_clock")).replace("[", " ").replace("]", " ").split()
    for c in CLOCKS:
        if c in have:
            return c
    raise TraceError(f"no suitable trace_clock (want one of {', '.join(CLOCKS)}; have "
                     f"{' '.join(have)})")


# --- the host's description --------------------------------------------------------------------

def slub_aliases(slab_dir: str = "/sys/kernel/slab", slabinfo: str = "") -> dict:
    """{alias: the name the host reports} for SLUB-merged caches. /sys/kernel/slab has one
    directory per real cache (":A-0000192") and a symlink per cache name; the reported name
    (s->name, in /proc/slabinfo and in the tracepoints) is the one slabinfo lists."""
    listed = {line.split(None, 1)[0] for line in slabinfo.splitlines()[2:] if line.strip()}
    groups: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir(slab_dir):
            p = os.path.join(slab_dir, name)
            if os.path.islink(p):
                groups.setdefault(os.path.basename(os.readlink(p)), []).append(name)
    out = {}
    for names in groups.values():
        reported = [n for n in names if n in listed]
        if len(names) > 1 and len(reported) == 1:
            for n in names:
                if n != reported[0]:
                    out[n] = reported[0]
    return dict(sorted(out.items()))


def host_header(argv: list[str]) -> tformat.Header:
    def rd(p, default=""):
        try:
            return _read(p)
        except OSError:
            return default
    slabinfo = rd("/proc/slabinfo")
    slub = os.path.isdir("/sys/kernel/slab")
    cmdline = rd("/proc/cmdline").split()
    aliases = slub_aliases(slabinfo=slabinfo) if slub else {}
    nomerge = any(w in ("slab_nomerge", "slub_nomerge") for w in cmdline)
    return tformat.Header(
        kernel_release=os.uname().release, page_size=os.sysconf("SC_PAGE_SIZE"),
        boot_id=rd("/proc/sys/kernel/random/boot_id").strip(),
        slab_allocator="SLUB" if slub else "SLAB", slab_merge=slub and not nomerge and bool(aliases),
        slabinfo=slabinfo, slub_aliases=aliases, argv=list(argv), tracer_pid=os.getpid())


# --- the run -----------------------------------------------------------------------------------

class _Signals:
    """SIGINT/SIGTERM/SIGHUP: the first is forwarded to COMMAND (we keep tracing until it
    exits, then write the trace); a second one, or one before COMMAND started, aborts (the
    finally blocks clean up)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.child = None
        self.count = 0
        self.last = None
        self._old = {}

    def __enter__(self):
        for s in self.SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        # Never raise from here: an exception between a mkdir and its bookkeeping would leak
        # an instance. The run checks abort at safe points (check()).
        self.count += 1
        self.last = signum
        if self.count == 1 and self.child:
            with contextlib.suppress(OSError):
                os.kill(self.child, signum)

    @property
    def abort(self) -> bool:
        return self.count > 1 or (self.count == 1 and not self.child)

    def check(self) -> None:
        if self.abort:
            raise Interrupted(f"interrupted by {signal.Signals(self.last).name}: "
                              f"trace not written")

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _spawn_stopped(argv: list[str]) -> tuple[int, int, int]:
    """Fork COMMAND, held before exec until go(). Returns (pid, go_fd, err_fd)."""
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    os.set_inheritable(err_w, False)
    pid = os.fork()
    if pid == 0:                                  # the child: wait for the go, then exec
        try:
            os.close(go_w)
            os.close(err_r)
            # our handlers, and what Python ignores (SIGPIPE, SIGXFSZ), back to the defaults
            for s in _Signals.SIGNALS + (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(s, signal.SIG_DFL)
            if os.read(go_r, 1) != b"g":
                os._exit(126)
            os.close(go_r)
            os.set_inheritable(err_w, False)
            os.execvp(argv[0], argv)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.write(err_w, f"{argv[0]}: {e.strerror}".encode())
            os._exit(127)
        finally:
            os._exit(127)
    os.close(go_r)
    os.close(err_w)
    return pid, go_w, err_r


def _drain(fd: int, spool: int) -> int:
    """Copy what the trace_pipe holds now to the spool file. Returns bytes copied."""
    n = 0
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return n
        except InterruptedError:
            continue
        if not data:
            return n
        os.write(spool, data)
        n += len(data)


def _status(wstatus: int) -> int:
    if os.WIFSIGNALED(wstatus):
        return 128 + os.WTERMSIG(wstatus)
    return os.waitstatus_to_exitcode(wstatus)


def run(argv: list[str], output: str, free_tail: float = DEFAULT_FREE_TAIL,
        buffer_kb: int = DEFAULT_BUFFER_KB, log=None) -> tformat.Header:
    """Trace argv; write the trace to output. Returns the header (exit_status is COMMAND's).
    Raises TraceError with a one-line reason when it cannot."""
    log = log or (lambda msg: print(f"kmemfs trace: {msg}", file=sys.stderr))
    if not argv:
        raise TraceError("no command given")
    out_dir = os.path.dirname(os.path.abspath(output)) or "."
    if not os.path.isdir(out_dir):
        raise TraceError(f"{out_dir}: no such directory")
    if os.path.isdir(output):
        raise TraceError(f"{output}: is a directory")
    if os.geteuid() != 0:
        raise TraceError("must run as root (tracefs and the kmem tracepoints are root-only)")
    header = host_header(argv)
    header.free_tail_s, header.buffer_size_kb = free_tail, buffer_kb
    spool_dir = tempfile.mkdtemp(prefix="kmemfs_trace_")
    instances: list[Instance] = []
    spools: list[int] = []
    pipes: list[int] = []
    pid = None
    exec_err = ""
    try:
        with Tracefs() as tfs, _Signals() as sigs:
            for name in remove_stale_instances(tfs.path):
                log(f"removed a stale instance {name}")
            check_events(tfs.path)
            clock = header.clock = pick_clock(tfs.path)
            me = os.getpid()
            try:
                alloc = Instance(tfs.path, f"kmemfs_{me}_alloc")
                instances.append(alloc)
                free = Instance(tfs.path, f"kmemfs_{me}_free")
                instances.append(free)
                alloc.setup(clock, buffer_kb, ALLOC_EVENTS)
                free.setup(clock, buffer_kb, FREE_EVENTS)
                _write(alloc.f("options/event-fork"), 1)
                for i in instances:
                    spools.append(os.open(os.path.join(spool_dir, i.name),
                                          os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                fds = [i.open_pipe() for i in instances]
                sigs.check()

                pid, go, err = _spawn_stopped(argv)
                pipes = [go, err]
                sigs.child = header.root_pid = pid
                _write(alloc.f("set_event_pid"), pid)    # before any event is on
                free.enable()                            # frees first: no alloc misses its free
                alloc.enable()
                header.start_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                sigs.check()
                os.write(go, b"g")
                os.close(pipes.pop(0))
                wstatus = _follow(pid, fds, spools, sigs)
                header.run_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - header.start_ns
                pid = sigs.child = None              # from now on a signal aborts
                exec_err = os.read(err, 4096).decode(errors="replace")
                header.exit_status = _status(wstatus)
                tail_end = time.monotonic() + max(0.0, free_tail)
                while (left := tail_end - time.monotonic()) > 0:
                    sigs.check()
                    _poll(fds, spools, min(left, 0.1))
                for i in instances:
                    i.stop()
                header.end_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                for fd, sp in zip(fds, spools):
                    _drain(fd, sp)
                header.lost = {i.name.rsplit("_", 1)[1]: i.lost() for i in instances}
            finally:
                if pid is not None:                       # an error while COMMAND runs
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                for fd in spools + pipes:
                    os.close(fd)
                errors = []
                for i in reversed(instances):
                    try:
                        i.close()
                    except TraceError as e:
                        errors.append(str(e))
                if errors:
                    raise TraceError("; ".join(errors))
            if exec_err:
                raise TraceError(exec_err)
            if sigs.count:
                header.notes.append(f"{signal.Signals(sigs.last).name} forwarded to COMMAND")
        try:
            _write_trace(output, header, spool_dir, log)
        except OSError as e:
            raise TraceError(f"cannot write {output}: {e.strerror or e}") from None
        return header
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


def _poll(fds, spools, timeout: float) -> None:
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    with contextlib.suppress(InterruptedError):
        p.poll(timeout * 1000)
    for fd, sp in zip(fds, spools):
        _drain(fd, sp)


def _follow(pid: int, fds, spools, sigs: _Signals) -> int:
    """Copy the pipes until COMMAND exits; returns its wait status."""
    while True:
        sigs.check()
        try:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            raise TraceError("lost track of COMMAND") from None
        if done:
            return wstatus
        _poll(fds, spools, 0.05)


# --- spools -> trace file ------------------------------------------------------------------------

def _parse_spool(path: str, stats: ParseStats, keep=None) -> Iterator[tformat.Event]:
    """Events of a spooled trace_pipe; keep(lines) -> lines worth parsing (a pre-filter)."""
    p = Parser()
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        tail = ""
        while data := f.read(READ_CHUNK):
            data = tail + data
            end = data.rfind("\n")
            if end < 0:
                tail = data
                continue
            tail = data[end + 1:]
            lines = data[:end].split("\n")
            yield from p.parse_lines(keep(lines) if keep else lines)
    p.feed(tail)
    p.close()
    stats.merge(p.stats)


def free_filter(allocs: list[tformat.Event], root_pid: int):
    """A cheap pre-filter of the system-wide free lines: only a free of a pointer the tree
    allocated, or one by a task of the tree, can matter (merge() decides exactly). Most frees
    are other tasks' and are dropped here without being parsed. Lines of any other shape
    (lost-events markers, odd columns) pass through."""
    ptrs = {f"{e.ptr:016x}" for e in allocs if e.op == "alloc"}
    pids = {str(root_pid)} | {str(e.child) for e in allocs if e.op == "fork"}
    pids |= {str(e.pid) for e in allocs}
    dropped = [0]

    def keep(lines):
        return keep_free_lines(lines, ptrs, pids, dropped)
    keep.dropped = dropped
    return keep


def _sorted(events: Iterable[tformat.Event], window_ns: int,
            batch: int = 1 << 16) -> Iterator[tformat.Event]:
    """Time order out of trace_pipe's nearly sorted stream: trace_pipe merges the per-CPU
    buffers by timestamp, but an event committed while the reader passed may come late (by
    less than window_ns). Batches are sorted (Timsort is linear on nearly sorted input, and
    stable: stream order is kept among equal times); what is newer than the batch's last time
    minus the window waits for the next batch."""
    key = operator.itemgetter(1)            # time_ns
    buf: list = []
    limit = batch
    for ev in events:
        buf.append(ev)
        if len(buf) >= limit:
            buf.sort(key=key)
            cut = bisect.bisect_left(buf, buf[-1][1] - window_ns, key=key)
            yield from buf[:cut]
            del buf[:cut]
            limit = len(buf) + batch        # a burst inside the window: grow, stay linear
    buf.sort(key=key)
    yield from buf


def merge(allocs: Iterable[tformat.Event], frees: Iterable[tformat.Event],
          root_pid: int, window_ns: int = 1_000_000_000, stats: dict | None = None
          ) -> Iterator[tformat.Event]:
    """The tree's allocations (+fork/exit) and the system-wide frees of a whole capture, in
    one time-ordered stream of the frees that matter (merge.Merger). Renumbers seq."""
    stats = stats if stats is not None else {}
    m = Merger((root_pid,))
    yield from m.merge(_sorted(allocs, window_ns), _sorted(frees, window_ns))
    stats["frees_dropped"] = stats.get("frees_dropped", 0) + m.dropped


def _write_trace(output: str, header: tformat.Header, spool_dir: str, log) -> None:
    a_stats, f_stats = ParseStats(), ParseStats()
    me = os.getpid()
    allocs = list(_parse_spool(os.path.join(spool_dir, f"kmemfs_{me}_alloc"), a_stats))
    keep = free_filter(allocs, header.root_pid)
    frees = _parse_spool(os.path.join(spool_dir, f"kmemfs_{me}_free"), f_stats, keep)
    mstats: dict = {}
    counts = dict.fromkeys(tformat.OPS, 0)
    # The header goes first but holds the totals: write the records to a side file, then
    # header + records into a temporary next to the output, renamed over it at the end.
    body = os.path.join(spool_dir, "records")
    with open(body, "w", encoding="utf-8", newline="\n") as f:
        encode = tformat.encode
        for ev in merge(allocs, frees, header.root_pid, stats=mstats):
            counts[ev.op] += 1
            f.write(encode(ev) + "\n")
    header.counts = counts
    st = ParseStats()
    st.merge(a_stats)
    st.merge(f_stats)
    header.extra["parse"] = {"alloc": _stats_dict(a_stats), "free": _stats_dict(f_stats),
                             "frees_dropped_unrelated": mstats.get("frees_dropped", 0)
                             + keep.dropped[0]}
    # per_cpu stats and trace_pipe's "[LOST n EVENTS]" lines count the same drops
    lost = max(sum(c["lost"] for inst in header.lost.values() for c in inst.values()),
               sum(st.lost.values()))
    if lost:
        header.inexact = True
        header.notes.append(f"{lost} events lost (tracefs buffers full): the trace is inexact")
        log(f"warning: {lost} events lost; the trace is marked inexact "
            f"(try a bigger --buffer-kb)")
    if st.malformed or st.truncated:
        header.notes.append(f"{st.malformed} malformed and {st.truncated} truncated lines "
                            f"skipped")
    tmp = tempfile.NamedTemporaryFile(
        "wb", dir=os.path.dirname(os.path.abspath(output)),
        prefix=".kmemfs-trace-", delete=False)
    try:
        with tmp:
            if output.endswith(".gz"):
                dst = gzip.GzipFile(fileobj=tmp, mode="wb", compresslevel=tformat.GZIP_LEVEL,
                                    mtime=0)
            else:
                dst = tmp
            with dst:
                dst.write((header.to_json() + "\n").encode())
                with open(body, "rb") as src:
                    shutil.copyfileobj(src, dst, READ_CHUNK)
        _give_to_invoking_user(tmp.name)
        os.replace(tmp.name, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise


def _stats_dict(st: ParseStats) -> dict:
    return {"lines": st.lines, "events": st.events, "null_frees": st.null_frees,
            "failed_allocs": st.failed_allocs, "malformed": st.malformed,
            "truncated": st.truncated, "lost_markers": st.lost}


def _give_to_invoking_user(path: str) -> None:
    """Under sudo, the trace belongs to the user who asked for it (mode 0600: it holds real
    kernel addresses)."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if uid and gid and uid.isdigit() and gid.isdigit():
        with contextlib.suppress(OSError):
            os.chown(path, int(uid), int(gid))
